//! Running the service: configuration, start-up, background compaction and
//! graceful shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::v1beta1::V1beta1Events;
use crate::http::auth::{Auth, Posture};
use crate::http::cache::{DocCache, ListCache};
use crate::http::listen::{Limits, Listen, ListenConfig, Listeners, TlsFiles};
use crate::http::{AppState, Metrics, router};
use crate::notify::NotifySocket;
use crate::store::{Backend, Change, Store, StoreError, StoreOptions};
use crate::watch::Hub;

/// Budget of the rendered-document cache.
const DOC_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Budget of the rendered-list cache (one list may take half).
const LIST_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (TCP and unix sockets).
    pub listen: Vec<Listen>,
    /// TLS on every TCP listener.
    pub tls: Option<TlsFiles>,
    /// Group of the unix sockets (name or gid; `None`: the server's
    /// primary group).
    pub socket_group: Option<String>,
    /// Connection-level limits and timeouts.
    pub limits: Limits,
    /// Database file.
    pub data: PathBuf,
    /// Keep at least this many revisions of event history.
    pub history_revisions: u64,
    /// BOOKMARK idle watch streams this often.
    pub bookmark_interval: Duration,
    /// How often to check whether the event log needs compacting.
    pub compaction_interval: Duration,
    /// Frames buffered in memory for live watchers; a watcher further
    /// behind catches up from the event log.
    pub watch_buffer: usize,
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// How long a paged list's continue token stays valid.
    pub continue_ttl: Duration,
    /// Longest time between checkpoints of the write-ahead log.
    pub checkpoint_interval: Duration,
    /// Log bytes that make a checkpoint due.
    pub checkpoint_bytes: u64,
    /// Free space kept on the data's filesystem: below it, every write
    /// but a delete is refused (507).
    pub min_free_bytes: u64,
    /// Storage quota on the stored records (0: none).
    pub quota_bytes: u64,
    /// Byte budget of the watch history (0: none).
    pub history_bytes: u64,
    /// Size of the spare file deleted when the disk fills up (0: none).
    pub spare_bytes: u64,
    /// Anonymous requests are admins while no token exists even on a
    /// listener that is not loopback.
    pub insecure_allow_anonymous: bool,
    /// `/metrics` needs no token.
    pub metrics_anonymous: bool,
    /// Writes that may wait for the writer before more are refused (429).
    pub write_queue: usize,
    /// Limits against hostile, broken or greedy clients.
    pub request_limits: crate::http::limits::Limits,
    /// Store on this etcd cluster instead of the redb file at `data`.
    pub etcd: Option<crate::store::EtcdOptions>,
    /// The service manager to tell `READY=1` once every listener is bound
    /// and the store is open, and `STOPPING=1` when the server begins to
    /// stop.
    pub notify: Option<NotifySocket>,
}

impl Config {
    /// The defaults for `listen` and `data`.
    pub fn new(listen: Vec<Listen>, data: PathBuf) -> Config {
        Config {
            listen,
            tls: None,
            socket_group: None,
            limits: Limits::default(),
            data,
            history_revisions: 100_000,
            bookmark_interval: Duration::from_secs(10),
            compaction_interval: Duration::from_secs(5),
            watch_buffer: crate::watch::HUB_CAPACITY,
            cache_bytes: StoreOptions::default().cache_bytes,
            continue_ttl: StoreOptions::default().snapshot_ttl,
            checkpoint_interval: StoreOptions::default().checkpoint_interval,
            checkpoint_bytes: StoreOptions::default().checkpoint_bytes,
            min_free_bytes: StoreOptions::default().min_free_bytes,
            quota_bytes: StoreOptions::default().quota_bytes,
            history_bytes: StoreOptions::default().history_bytes,
            spare_bytes: crate::store::options::DEFAULT_SPARE_BYTES,
            insecure_allow_anonymous: false,
            metrics_anonymous: false,
            write_queue: crate::store::options::DEFAULT_WRITE_QUEUE,
            request_limits: crate::http::limits::Limits::default(),
            etcd: None,
            notify: None,
        }
    }

    /// Whether every TCP listener is on a loopback address (true when
    /// there is none): only local processes can reach the server over TCP.
    pub fn tcp_loopback_only(&self) -> bool {
        self.listen.iter().all(|l| match l {
            Listen::Tcp(addr) => addr.ip().is_loopback(),
            Listen::Unix(_) => true,
        })
    }
}

/// Why the server could not run.
#[derive(Debug)]
pub enum ServeError {
    /// The database could not be opened.
    Store(StoreError),
    /// The socket could not be bound or served.
    Io(std::io::Error),
    /// The store failed and could not recover.
    Fatal(String),
    /// The configuration is unsafe or impossible.
    Config(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Store(e) => write!(f, "cannot open the store: {e}"),
            ServeError::Io(e) => write!(f, "cannot serve: {e}"),
            ServeError::Fatal(e) => write!(f, "stopped: {e}"),
            ServeError::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ServeError {}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Compacts the event log down to `keep` revisions, a chunk at a time.
async fn compaction_loop(store: Store, keep: u64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        loop {
            match store.compact(keep).await {
                Ok(0) => break,
                // etcd compacts all at once, and each compaction is itself
                // a write: once per tick.
                Ok(_) if store.is_etcd() => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(StoreError::Closed) => return,
                // A full write queue: compaction waits for the next tick.
                Err(StoreError::Busy { .. }) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "event log compaction failed");
                    break;
                }
            }
        }
    }
}

/// Binds the listeners, opens the store, serves until `shutdown` resolves,
/// then ends watch streams, finishes in-flight requests and closes the
/// database (and removes the unix sockets). Prints one line per listener
/// to stdout once serving, in the order given (scripts read the address
/// when the port is 0). With `config.notify`, tells the service manager
/// `READY=1` once the listeners accept and `STOPPING=1` when it begins to
/// stop.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Poll `shutdown` once now, so that its signal handlers are installed
    // before anyone can learn that the server is up: a SIGTERM that comes
    // right after the "listening" line must still stop it gracefully.
    let mut shutdown = Box::pin(shutdown);
    let stopped_early = futures_util::poll!(shutdown.as_mut()).is_ready();
    let hub = Hub::new(
        Arc::new(V1beta1Events),
        config.watch_buffer,
        config.bookmark_interval,
    );
    let lists = Arc::new(ListCache::new(LIST_CACHE_BYTES));
    let options = StoreOptions {
        cache_bytes: config.cache_bytes,
        snapshot_ttl: config.continue_ttl,
        checkpoint_interval: config.checkpoint_interval,
        checkpoint_bytes: config.checkpoint_bytes,
        min_free_bytes: config.min_free_bytes,
        quota_bytes: config.quota_bytes,
        history_bytes: config.history_bytes,
        spare_bytes: config.spare_bytes,
        write_queue: config.write_queue,
        ..StoreOptions::default()
    };
    let store = match &config.etcd {
        Some(etcd) => Store::open_etcd(etcd).await.map_err(ServeError::Store)?,
        None => {
            let data = config.data.clone();
            tokio::task::spawn_blocking(move || Store::open(&data, options))
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
                .map_err(ServeError::Store)?
        }
    };
    // Subscribed before anything is served, so no change is missed.
    {
        let (watch, lists) = (hub.subscriber(), lists.clone());
        store.feed().subscribe(Arc::new(move |changes: &[Change]| {
            lists.observe(changes);
            watch(changes);
        }));
        store.feed().subscribe_progress(hub.progress_subscriber());
    }
    let posture = Posture {
        loopback_only: config.tcp_loopback_only(),
        insecure_allow_anonymous: config.insecure_allow_anonymous,
        metrics_anonymous: config.metrics_anonymous,
    };
    let auth = Arc::new(
        Auth::load(&store, posture)
            .await
            .map_err(ServeError::Store)?,
    );
    if !auth.any_token() {
        if !posture.loopback_only && !posture.insecure_allow_anonymous {
            store.close();
            return Err(ServeError::Config(
                "refusing to listen on a non-loopback address without authentication: no \
                 token exists yet, so anyone who can reach the port would be an admin. Create \
                 a token first (`modelhub token create` as root over the unix socket, or on \
                 a loopback listener), or pass --insecure-allow-anonymous on a trusted \
                 network"
                    .into(),
            ));
        }
        tracing::warn!(
            "NO AUTHENTICATION: no token exists, so every anonymous TCP request {} is an \
             admin (it can create privileged containers). Create a token (`modelhub token \
             create`) to require one",
            if posture.loopback_only {
                "from this host"
            } else {
                "from anywhere (--insecure-allow-anonymous)"
            }
        );
    }
    // Bound once the store is open and the posture is safe; nothing is
    // accepted until the router is built.
    let listeners = Listeners::bind(&ListenConfig {
        listen: config.listen.clone(),
        tls: config.tls.clone(),
        socket_group: config.socket_group.clone(),
        limits: config.limits.clone(),
    })
    .await;
    let listeners = match listeners {
        Ok(l) => l,
        Err(e) => {
            store.close();
            return Err(ServeError::Io(e));
        }
    };
    for address in listeners.addresses() {
        println!("modelhub listening on {address}");
    }
    tracing::info!(
        listen = ?listeners.addresses(),
        store = if config.etcd.is_some() { "etcd" } else { "redb" },
        data = %config.data.display(),
        "modelhub listening"
    );
    let compaction = tokio::spawn(compaction_loop(
        store.clone(),
        config.history_revisions,
        config.compaction_interval,
    ));
    let state = AppState::new(crate::http::Shared {
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
        hub: hub.clone(),
        docs: Arc::new(DocCache::new(DOC_CACHE_BYTES)),
        lists,
        auth,
        limits: Arc::new(crate::http::limits::Gate::new(config.request_limits)),
    });
    let token_refresh = tokio::spawn(crate::http::auth::refresh_loop(state.clone()));
    let stop_streams = hub.clone();
    // A store that cannot recover from a storage failure stops the
    // process (non-zero), so that its supervisor restarts it.
    let fatal = Arc::new(std::sync::Mutex::new(None::<String>));
    let watchdog = {
        let (store, fatal) = (store.clone(), fatal.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Some(msg) = store.fatal() {
                    *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                    return;
                }
            }
        }
    };
    let notify = config.notify.clone();
    let ready = crate::notify::ready_message(&listeners.addresses());
    listeners
        .serve(router(state), async move {
            // Polled once the accept loops are spawned.
            let why = if stopped_early {
                "shutdown requested"
            } else {
                if let Some(n) = &notify {
                    n.notify(&ready);
                }
                tokio::select! {
                    () = shutdown => "shutdown requested",
                    () = watchdog => "the store failed",
                }
            };
            if let Some(n) = &notify {
                n.notify(&crate::notify::stopping_message(why));
            }
            tracing::info!("{why}: ending watch streams, draining requests");
            stop_streams.shutdown();
        })
        .await;
    compaction.abort();
    token_refresh.abort();
    tracing::info!("closing the database");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    if let Some(msg) = fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(ServeError::Fatal(msg));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_means_every_tcp_listener() {
        let config = |listen: &[&str]| {
            Config::new(
                listen.iter().map(|l| l.parse().unwrap()).collect(),
                PathBuf::from("x"),
            )
        };
        assert!(config(&["127.0.0.1:0", "[::1]:1", "unix:/run/m.sock"]).tcp_loopback_only());
        assert!(config(&["unix:/run/m.sock"]).tcp_loopback_only());
        assert!(!config(&["127.0.0.1:0", "0.0.0.0:8080"]).tcp_loopback_only());
        assert!(!config(&["[::]:8080"]).tcp_loopback_only());
        assert!(!config(&["10.0.0.1:8080"]).tcp_loopback_only());
    }
}
