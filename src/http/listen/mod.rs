//! Listeners and connections: TCP (plain or TLS, [`tls`]) and unix
//! sockets ([`unix`]), each accepted connection served with HTTP/1.1 or
//! HTTP/2 (told by its first bytes), its writes [`Coalesce`]d, and every
//! request carrying the connection's [`Peer`] as an extension.
//!
//! Against slow and greedy clients: a connection that has not sent a
//! whole request head within the header timeout of opening (or, HTTP/1.1,
//! of the first byte of a later head) is dropped; one with no request in
//! flight for the idle timeout is closed (a watch stream is a request in
//! flight); a request
//! body that stalls for the body timeout fails the request; a TLS
//! handshake has its own timeout; request heads are bounded in bytes and
//! header count; and past the connection cap a TCP connection is closed at
//! once, while unix sockets keep [`UNIX_RESERVE`] more so an operator can
//! still get in.
//!
//! Shutdown: the accept loops stop, every connection is asked to finish
//! (HTTP/1.1 closes once its response is sent, HTTP/2 sends GOAWAY), and
//! [`Listeners::serve`] returns once every connection has ended.

pub mod tls;
pub mod unix;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::body::Held;
use super::conn::Coalesce;
use crate::auth::Peer;
pub use tls::TlsFiles;

/// Connections a unix socket may have beyond [`Limits::max_connections`].
pub const UNIX_RESERVE: usize = 64;
/// How long a connection closed for being idle or slow may take to end
/// gracefully before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// At most one warning about refused connections per this period.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where to listen: `HOST:PORT` or `unix:/path/modelhub.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (port 0: any free port).
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/modelhub/modelhub.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.parse().map(Listen::Tcp).map_err(|_| {
            format!("{s:?} is neither HOST:PORT (an IP address and a port) nor unix:/PATH")
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Connection-level limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A first request (any protocol) must arrive within this of the
    /// connection opening, and an HTTP/1.1 head within this of its first
    /// byte.
    pub header_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long fails.
    pub body_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub tls_handshake_timeout: Duration,
    /// Bytes of a request head (HTTP/1.1 read buffer, at least 8 KiB;
    /// HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Headers of a request (HTTP/1.1).
    pub max_headers: usize,
    /// Open connections (TCP and unix; unix sockets get
    /// [`UNIX_RESERVE`] more).
    pub max_connections: usize,
    /// Concurrent streams of an HTTP/2 connection.
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            max_streams: 200,
        }
    }
}

/// What the listeners are built from.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The addresses (TCP and unix).
    pub listen: Vec<Listen>,
    /// TLS for every TCP listener.
    pub tls: Option<TlsFiles>,
    /// Group of the unix sockets (name or gid; `None`: the server's
    /// primary group).
    pub socket_group: Option<String>,
    /// Limits and timeouts.
    pub limits: Limits,
}

enum Kind {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Unix(UnixListener, unix::SocketFile),
}

/// Bound listeners, not yet serving.
pub struct Listeners {
    bound: Vec<(Kind, String)>,
    reloads: Vec<Pin<Box<dyn Future<Output = ()> + Send>>>,
    limits: Limits,
}

impl Listeners {
    /// Binds every address of `config` (creating the unix sockets and
    /// loading the TLS files), or says why not.
    pub async fn bind(config: &ListenConfig) -> io::Result<Listeners> {
        let mut bound = Vec::new();
        let mut reloads: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        let mut acceptor = None;
        if let Some(files) = &config.tls {
            let (a, reload) = tls::acceptor(files)?;
            acceptor = Some(a);
            reloads.push(Box::pin(reload));
        }
        let mut gid = None;
        for listen in &config.listen {
            match listen {
                Listen::Tcp(addr) => {
                    let l = TcpListener::bind(addr).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                    })?;
                    let local = l.local_addr()?;
                    let scheme = if acceptor.is_some() { "https" } else { "http" };
                    bound.push((
                        Kind::Tcp(l, acceptor.clone()),
                        format!("{scheme}://{local}"),
                    ));
                }
                Listen::Unix(path) => {
                    let gid = match gid {
                        Some(g) => g,
                        None => *gid.insert(
                            unix::socket_gid(config.socket_group.as_deref())
                                .map_err(io::Error::other)?,
                        ),
                    };
                    let (l, file) = unix::bind(path, gid).map_err(io::Error::other)?;
                    bound.push((Kind::Unix(l, file), listen.to_string()));
                }
            }
        }
        Ok(Listeners {
            bound,
            reloads,
            limits: config.limits.clone(),
        })
    }

    /// What each listener is reachable at: `http://ADDR`, `https://ADDR`
    /// or `unix:/path`, in the order given.
    pub fn addresses(&self) -> Vec<String> {
        self.bound.iter().map(|(_, a)| a.clone()).collect()
    }

    /// Serves `app` on every listener until `shutdown` resolves, then
    /// drains the connections (see the module doc).
    pub async fn serve(self, app: Router, shutdown: impl Future<Output = ()> + Send) {
        let shared = Arc::new(Shared::new(self.limits));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut tasks = tokio::task::JoinSet::new();
        for reload in self.reloads {
            tasks.spawn(reload);
        }
        let mut sockets = Vec::new();
        for (kind, _) in self.bound {
            let (app, shared, stop, alive) = (
                app.clone(),
                shared.clone(),
                stop_rx.clone(),
                alive_tx.clone(),
            );
            match kind {
                Kind::Tcp(l, tls) => {
                    tasks.spawn(accept_tcp(l, tls, app, shared, stop, alive));
                }
                Kind::Unix(l, file) => {
                    sockets.push(file);
                    tasks.spawn(accept_unix(l, app, shared, stop, alive));
                }
            }
        }
        drop(alive_tx);
        shutdown.await;
        let _ = stop_tx.send(true);
        // The accept loops end at once (dropping their listeners); each
        // connection task holds a sender until it ends.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        drop(sockets);
        let _ = alive_rx.recv().await;
    }
}

/// What every connection shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    open: AtomicUsize,
    refused: AtomicU64,
    /// When the server began, and milliseconds after it of the last
    /// warning about refused connections or failed accepts.
    since: Instant,
    warned_ms: AtomicU64,
}

impl Shared {
    fn new(limits: Limits) -> Shared {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // The head timer is the connection's own (see `Activity`).
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(limits.max_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Shared {
            builder,
            limits,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            since: Instant::now(),
            warned_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Takes a connection slot if fewer than `cap` are open.
    fn admit(self: &Arc<Self>, cap: usize) -> Option<Slot> {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= cap {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.warn_refused();
                return None;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// Whether a warning may be logged now (at most one per
    /// [`WARN_EVERY`], whoever asks).
    fn may_warn(&self) -> bool {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.warned_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        (last == u64::MAX || now.saturating_sub(last) >= every)
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    fn warn_refused(&self) {
        if !self.may_warn() {
            return;
        }
        let refused = self.refused.swap(0, Ordering::Relaxed);
        tracing::warn!(
            open = self.open.load(Ordering::Relaxed),
            max = self.limits.max_connections,
            refused,
            "connection cap reached: closing new connections"
        );
    }
}

/// An open connection's place under the cap.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sleeps a little after an accept error that is about the process (out
/// of file descriptors), so that the loop does not spin.
async fn accept_failed(shared: &Shared, e: &io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    if shared.may_warn() {
        tracing::warn!(error = %e, "accept failed (warned at most every 10 s)");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn accept_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                accept_failed(&shared, &e).await;
                continue;
            }
        };
        let Some(slot) = shared.admit(shared.limits.max_connections) else {
            drop(stream);
            continue;
        };
        // Watch frames are small writes that must not wait for Nagle's
        // timer.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let local = local.unwrap_or(remote);
        let (app, shared, stop, alive, tls) = (
            app.clone(),
            shared.clone(),
            stop.clone(),
            alive.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _alive = alive;
            let _slot = slot;
            let mut stop = stop;
            let Some(tls) = tls else {
                let peer = Peer::Tcp {
                    remote,
                    local,
                    client_cn: None,
                };
                return serve_connection(stream, peer, app, &shared, stop).await;
            };
            let handshake =
                tokio::time::timeout(shared.limits.tls_handshake_timeout, tls.accept(stream));
            // A stop does not wait for handshakes.
            let handshake = tokio::select! {
                r = handshake => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let client_cn = tls::client_cn(stream.get_ref().1);
            if let Some(cn) = &client_cn {
                tracing::debug!(%remote, client_cn = %cn, "TLS client certificate verified");
            }
            let peer = Peer::Tcp {
                remote,
                local,
                client_cn,
            };
            serve_connection(stream, peer, app, &shared, stop).await;
        });
    }
}

async fn accept_unix(
    listener: UnixListener,
    app: Router,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                accept_failed(&shared, &e).await;
                continue;
            }
        };
        let Some(slot) = shared.admit(shared.limits.max_connections + UNIX_RESERVE) else {
            drop(stream);
            continue;
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials on a unix connection: closing it");
                continue;
            }
        };
        let peer = Peer::Unix {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        let (app, shared, stop, alive) = (app.clone(), shared.clone(), stop.clone(), alive.clone());
        tokio::spawn(async move {
            let _alive = alive;
            let _slot = slot;
            serve_connection(stream, peer, app, &shared, stop).await;
        });
    }
}

/// Serves one connection until it ends, the server stops (gracefully), it
/// sends no request within the header timeout (dropped) or it is idle
/// (gracefully, then dropped after [`CLOSE_GRACE`]).
async fn serve_connection<I>(
    io: I,
    peer: Peer,
    app: Router,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(?peer, "connection opened");
    let activity = Arc::new(Activity::new());
    let service = ConnService {
        app,
        peer,
        activity: activity.clone(),
        body_timeout: shared.limits.body_timeout,
    };
    let io = Watched {
        inner: io,
        activity: activity.clone(),
        head: Vec::with_capacity(3),
    };
    let conn = shared.builder.serve_connection(
        TokioIo::new(Coalesce::new(io)),
        TowerToHyperService::new(service),
    );
    tokio::pin!(conn);
    let limits = &shared.limits;
    // Closing: when it began, and whether the server is stopping (then the
    // connection may take as long as its requests need).
    let mut closing: Option<(Instant, bool)> = None;
    // Requests do not wake this loop: the deadline moves earlier only when
    // a head or a request begins, and then to at least the shorter of the
    // two timeouts away, so a check at least that often finds every
    // deadline on time.
    let recheck = limits.header_timeout.min(limits.idle_timeout);
    loop {
        let check = match closing {
            Some((_, true)) => None,
            Some((at, false)) => Some(at + CLOSE_GRACE),
            None => Some(activity.deadline(limits).min(Instant::now() + recheck)),
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.wait_for(|s| *s), if closing.is_none_or(|(_, s)| !s) => {
                // An error (the server dropped its end) means stopping too.
                let _ = changed;
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now(), true));
            }
            () = sleep_until(check) => {
                match closing {
                    Some(_) => {
                        tracing::debug!("connection did not close in time: dropping it");
                        return;
                    }
                    None if Instant::now() >= activity.deadline(limits) => {
                        if activity.in_flight.load(Ordering::Acquire) > 0 {
                            // A response sent nothing for the idle timeout:
                            // its client stopped reading. A graceful close
                            // would wait for it.
                            tracing::debug!("a response made no progress within the idle timeout: dropping the connection");
                            return;
                        }
                        if !activity.started() || activity.head_pending() {
                            // No request in flight, none ever began or a
                            // head is incomplete: nothing to finish (and
                            // an HTTP/2 goodbye would wait on the silent
                            // peer's answer to a ping).
                            tracing::debug!("no whole request head within the header timeout: closing");
                            return;
                        }
                        tracing::debug!("closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some((Instant::now(), false));
                    }
                    None => {}
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Requests in flight on a connection, since when it has had none, and
/// (HTTP/1.1) since when the head of the next request has been coming.
///
/// hyper's own header timer for HTTP/1.1 starts as soon as it waits for a
/// head, which is also while a kept-alive connection waits for its next
/// request: it cannot tell a slow head from an idle connection. So it is
/// off, and the head timer starts here at the first byte read while no
/// request is in flight. A head read ahead while the previous request was
/// still in flight (pipelining) is only bounded by the idle timeout.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended
    /// (`u64::MAX`: none has started yet).
    idle_since: AtomicU64,
    /// Milliseconds after `opened` of the first byte read since the last
    /// request began (`u64::MAX`: none), HTTP/1.1 only.
    head_since: AtomicU64,
    /// Milliseconds after `opened` of the last write that sent bytes, or
    /// of the last request's start if later: a response in flight that
    /// sends nothing for the idle timeout (its client stopped reading)
    /// ends the connection.
    wrote_at: AtomicU64,
    /// The connection speaks HTTP/2 (its streams are not timed here).
    http2: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(u64::MAX),
            head_since: AtomicU64::new(u64::MAX),
            wrote_at: AtomicU64::new(0),
            http2: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Bytes arrived: the start of a head if no request is in flight.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Relaxed) == u64::MAX
            && !self.http2.load(Ordering::Relaxed)
        {
            let _ = self.head_since.compare_exchange(
                u64::MAX,
                self.ms_now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether part of a head has come and no request is in flight.
    fn head_pending(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) != u64::MAX
    }

    fn started(&self) -> bool {
        self.idle_since.load(Ordering::Acquire) != u64::MAX
            || self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the connection is to be closed if nothing happens: the header
    /// timeout after opening until a first request arrives, or after the
    /// first byte of a later head; otherwise the idle timeout after the
    /// last request ended (far away while one is in flight).
    fn deadline(&self, limits: &Limits) -> Instant {
        let at = |ms| self.opened + Duration::from_millis(ms);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return at(self.wrote_at.load(Ordering::Acquire)) + limits.idle_timeout;
        }
        match (
            self.idle_since.load(Ordering::Acquire),
            self.head_since.load(Ordering::Acquire),
        ) {
            (u64::MAX, _) => self.opened + limits.header_timeout,
            (_, head) if head != u64::MAX => at(head) + limits.header_timeout,
            (idle, _) => at(idle) + limits.idle_timeout,
        }
    }

    /// Bytes went out.
    fn wrote(&self) {
        self.wrote_at.store(self.ms_now(), Ordering::Release);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.wrote();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(u64::MAX, Ordering::Release);
        // A first request counts as activity even before it ends.
        let _ = self.idle_since.compare_exchange(
            u64::MAX,
            self.ms_now(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        InFlight(self.clone())
    }

    fn ms_now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }
}

/// A request in flight: until its response body is sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.ms_now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream as read, telling its [`Activity`] when bytes
/// arrive and whether it speaks HTTP/2 (by the first three bytes, as
/// [`Coalesce`] does).
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// The first bytes, until three are known (then emptied).
    head: Vec<u8>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = out.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, out);
        let fresh = &out.filled()[before..];
        if !fresh.is_empty() {
            if this.head.capacity() > 0 {
                let take = (3 - this.head.len()).min(fresh.len());
                this.head.extend_from_slice(&fresh[..take]);
                if this.head.len() == 3 {
                    if this.head == b"PRI" {
                        this.activity.http2.store(true, Ordering::Relaxed);
                    }
                    this.head = Vec::new();
                }
            }
            this.activity.read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The app as one connection serves it: the request gets the
/// connection's [`Peer`] and a body that times out when it stalls; the
/// response body counts as in flight until sent.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: Peer,
    activity: Arc<Activity>,
    body_timeout: Duration,
}

impl tower::Service<http::Request<Incoming>> for ConnService {
    type Response = http::Response<Held<InFlight>>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Held<InFlight>>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(self.peer.clone());
        let body = axum::body::Body::new(StallTimeout {
            body,
            timeout: self.body_timeout,
            sleep: None,
        });
        let call = self
            .app
            .clone()
            .oneshot(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Held::new(body, in_flight)))
        })
    }
}

/// A request body that stalled: nothing came within the body timeout
/// (the error a request body ends with then).
#[derive(Debug)]
pub(crate) struct BodyStalled(pub Duration);

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body sent nothing for {:?}", self.0)
    }
}

impl std::error::Error for BodyStalled {}

/// A request body that fails with [`BodyStalled`] once it has been
/// pending for its timeout (from the first poll after its last frame that
/// found nothing). The timer exists only while the body is pending: a body whose frames are ready when asked
/// (most are, having come with the head) costs no timer.
struct StallTimeout<B> {
    body: B,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> http_body::Body for StallTimeout<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyStalled(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = Result<http_body::Frame<bytes::Bytes>, Infallible>;
    type ChannelBody = http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<Frames>>;

    /// A body fed through a channel: its frames come when sent.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Frames>, StallTimeout<ChannelBody>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let body = StallTimeout {
            body: http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            timeout: Duration::from_secs(30),
            sleep: None,
        };
        (tx, body)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fails_once_it_stalls_for_its_timeout_and_not_before() {
        use http_body_util::BodyExt;
        let (tx, mut body) = channel_body();
        tx.send(Ok(http_body::Frame::data("a".into())))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.sleep.is_none(), "a ready frame arms no timer");
        // Pending for most of the timeout, then a frame: the timer starts
        // again from there.
        let feed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(29)).await;
            tx.send(Ok(http_body::Frame::data("b".into())))
                .await
                .unwrap();
            tx
        });
        let started = tokio::time::Instant::now();
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(29));
        let _tx = feed.await.unwrap();
        let started = tokio::time::Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(e.is::<BodyStalled>(), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:0".parse::<Listen>(),
            Ok(Listen::Tcp("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/m.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/m.sock".into()))
        );
        assert!("unix:".parse::<Listen>().is_err());
        assert!("localhost".parse::<Listen>().is_err());
        assert_eq!(
            Listen::Unix("/run/m.sock".into()).to_string(),
            "unix:/run/m.sock"
        );
    }

    #[test]
    fn a_connection_is_due_for_closing_when_silent_or_idle() {
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let a = Arc::new(Activity::new());
        assert_eq!(a.deadline(&limits), a.opened + limits.header_timeout);
        let req = a.begin();
        assert!(a.deadline(&limits) >= Instant::now() + Duration::from_secs(59));
        // A response that sends nothing is due the idle timeout after its
        // last write (or its start).
        a.wrote_at.store(0, Ordering::Release);
        assert_eq!(a.deadline(&limits), a.opened + limits.idle_timeout);
        a.wrote();
        assert!(a.deadline(&limits) >= Instant::now() + Duration::from_secs(59));
        drop(req);
        assert!(a.started() && !a.head_pending());
        let d = a.deadline(&limits);
        assert!(
            d > a.opened + Duration::from_secs(59) && d <= Instant::now() + limits.idle_timeout
        );
        // The next head's first byte starts the header timer again.
        a.read();
        assert!(a.head_pending());
        assert!(a.deadline(&limits) <= Instant::now() + limits.header_timeout);
        drop(a.begin());
        assert!(!a.head_pending());
        // HTTP/2 frames while idle are not a head.
        a.http2.store(true, Ordering::Relaxed);
        a.read();
        assert!(!a.head_pending());
    }
}
