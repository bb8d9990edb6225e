//! Running the service: configuration, start-up, background compaction and
//! graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::v1beta1::V1beta1Events;
use crate::http::cache::{DocCache, ListCache};
use crate::http::{AppState, Metrics, router};
use crate::store::{Backend, Change, Store, StoreError, StoreOptions};
use crate::watch::Hub;

/// Budget of the rendered-document cache.
const DOC_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Budget of the rendered-list cache (one list may take half).
const LIST_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
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
    /// Free space kept on the data's filesystem: below it, every write
    /// but a delete is refused (507).
    pub min_free_bytes: u64,
    /// Storage quota on the stored records (0: none).
    pub quota_bytes: u64,
    /// Byte budget of the watch history (0: none).
    pub history_bytes: u64,
    /// Size of the spare file deleted when the disk fills up (0: none).
    pub spare_bytes: u64,
    /// Writes that may wait for the writer before more are refused (429).
    pub write_queue: usize,
    /// Limits against hostile, broken or greedy clients.
    pub limits: crate::http::limits::Limits,
}

impl Config {
    /// The defaults for `listen` and `data`.
    pub fn new(listen: SocketAddr, data: PathBuf) -> Config {
        Config {
            listen,
            data,
            history_revisions: 100_000,
            bookmark_interval: Duration::from_secs(10),
            compaction_interval: Duration::from_secs(5),
            watch_buffer: crate::watch::HUB_CAPACITY,
            cache_bytes: StoreOptions::default().cache_bytes,
            continue_ttl: StoreOptions::default().snapshot_ttl,
            checkpoint_interval: StoreOptions::default().checkpoint_interval,
            min_free_bytes: StoreOptions::default().min_free_bytes,
            quota_bytes: StoreOptions::default().quota_bytes,
            history_bytes: StoreOptions::default().history_bytes,
            spare_bytes: crate::store::options::DEFAULT_SPARE_BYTES,
            write_queue: crate::store::options::DEFAULT_WRITE_QUEUE,
            limits: crate::http::limits::Limits::default(),
        }
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
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Store(e) => write!(f, "cannot open the database: {e}"),
            ServeError::Io(e) => write!(f, "cannot serve: {e}"),
            ServeError::Fatal(e) => write!(f, "stopped: {e}"),
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

/// Opens the store, serves until `shutdown` resolves, then ends watch
/// streams, finishes in-flight requests and closes the database. Prints the
/// bound address to stdout once listening (scripts read it when the port
/// is 0).
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
        min_free_bytes: config.min_free_bytes,
        quota_bytes: config.quota_bytes,
        history_bytes: config.history_bytes,
        spare_bytes: config.spare_bytes,
        write_queue: config.write_queue,
        ..StoreOptions::default()
    };
    let data = config.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data, options))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
        .map_err(ServeError::Store)?;
    // Subscribed before anything is served, so no change is missed.
    {
        let (watch, lists) = (hub.subscriber(), lists.clone());
        store.feed().subscribe(Arc::new(move |changes: &[Change]| {
            lists.observe(changes);
            watch(changes);
        }));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(ServeError::Io)?;
    let addr = listener.local_addr().map_err(ServeError::Io)?;
    tracing::info!(%addr, data = %config.data.display(), "modelhub listening");
    println!("modelhub listening on http://{addr}");
    let compaction = tokio::spawn(compaction_loop(
        store.clone(),
        config.history_revisions,
        config.compaction_interval,
    ));
    let state = AppState {
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
        hub: hub.clone(),
        docs: Arc::new(DocCache::new(DOC_CACHE_BYTES)),
        lists,
        limits: Arc::new(crate::http::limits::Gate::new(config.limits)),
    };
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
    // Watch frames are small writes that must not wait for Nagle's timer.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let result = axum::serve(crate::http::conn::Coalescing(listener), router(state))
        .with_graceful_shutdown(async move {
            if !stopped_early {
                tokio::select! {
                    () = shutdown => {}
                    () = watchdog => {}
                }
            }
            tracing::info!("shutdown requested: ending watch streams, draining requests");
            stop_streams.shutdown();
        })
        .await;
    compaction.abort();
    tracing::info!("closing the database");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    if let Some(msg) = fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(ServeError::Fatal(msg));
    }
    result.map_err(ServeError::Io)
}
