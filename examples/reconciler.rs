//! A small controller: watches Cells, "reconciles" each one (logs what it
//! would start or stop) and writes `status` back. It survives server
//! restarts: the watcher resumes from its last revision, or re-syncs on 410.
//!
//! ```sh
//! cargo run --release -- serve &
//! cargo run --example reconciler -- http://127.0.0.1:8080
//! ```

use futures_util::StreamExt;
use modelhub::client::watcher::{Event, Watcher};
use modelhub::client::{Client, WatchScope};
use modelhub::model::{AnyObject, CellState, ContainerState, ContainerStatus, Kind};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let client = Client::new(server);
    let scope = WatchScope {
        kinds: vec![Kind::Cell],
        ..WatchScope::default()
    };
    let watcher = Watcher::new(client.clone(), scope);
    let cache = watcher.cache();
    let mut events = Box::pin(watcher.run());
    while let Some(event) = events.next().await {
        match event {
            Event::Restarted(cells) => {
                tracing::info!(cells = cells.len(), "synced");
                for cell in cells {
                    reconcile(&client, cell).await;
                }
            }
            Event::Applied(cell) => reconcile(&client, cell).await,
            Event::Deleted(cell) => {
                if let AnyObject::Cell(c) = &cell {
                    for ctr in &c.spec.containers {
                        tracing::info!(cell = %cell.path(), container = %ctr.id, "would stop container");
                    }
                }
            }
        }
        tracing::debug!(cached = cache.len(), revision = cache.revision(), "cache");
    }
}

/// Brings a cell's status in line with its spec: every container Ready.
/// Writing an unchanged status is a no-op on the server (no new event), so
/// this converges.
async fn reconcile(client: &Client, cell: AnyObject) {
    let AnyObject::Cell(mut c) = cell else { return };
    let want: Vec<ContainerStatus> = c
        .spec
        .containers
        .iter()
        .map(|ctr| {
            let old = c.status.containers.iter().find(|s| s.id == ctr.id);
            ContainerStatus {
                name: ctr.id.clone(),
                id: ctr.id.clone(),
                state: ContainerState::Ready,
                start_time: old.and_then(|s| s.start_time).or_else(now),
                ..old.cloned().unwrap_or_default()
            }
        })
        .collect();
    for ctr in &c.spec.containers {
        if !c.status.containers.iter().any(|s| s.id == ctr.id) {
            tracing::info!(cell = %c.meta.name, container = %ctr.id, image = %ctr.image, "would start container");
        }
    }
    if c.status.state == CellState::Ready && c.status.containers == want {
        return;
    }
    c.status.state = CellState::Ready;
    c.status.ready_observed = true;
    c.status.containers = want;
    match client.replace_status(&AnyObject::Cell(c)).await {
        Ok(o) => {
            tracing::info!(cell = %o.path(), revision = o.meta().resource_version, "status written")
        }
        // 409: the cell changed meanwhile; its new version is on its way.
        Err(e) => tracing::warn!(error = %e, "status write failed"),
    }
}

fn now() -> Option<i128> {
    Some(time::OffsetDateTime::now_utc().unix_timestamp_nanos())
}
