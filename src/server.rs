//! Running the service: configuration, start-up, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::http::{AppState, Metrics, router};
use crate::store::{Store, StoreError, StoreOptions};

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Database file.
    pub data: PathBuf,
}

/// Why the server could not run.
#[derive(Debug)]
pub enum ServeError {
    /// The database could not be opened.
    Store(StoreError),
    /// The socket could not be bound or served.
    Io(std::io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Store(e) => write!(f, "cannot open the database: {e}"),
            ServeError::Io(e) => write!(f, "cannot serve: {e}"),
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

/// Opens the store, serves until `shutdown` resolves, then finishes
/// in-flight requests and closes the database. Prints the bound address to
/// stdout once listening (tests and scripts read it when the port is 0).
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let data = config.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data, StoreOptions::default()))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
        .map_err(ServeError::Store)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(ServeError::Io)?;
    let addr = listener.local_addr().map_err(ServeError::Io)?;
    tracing::info!(%addr, data = %config.data.display(), "modelhub listening");
    println!("modelhub listening on http://{addr}");
    let state = AppState {
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("shutting down: closing the database");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    result.map_err(ServeError::Io)
}
