//! A small controller: watches Cells, "runs" each one (a file per running
//! cell in a directory it manages, standing in for its containers) and
//! writes `status` back. It owns the finalizer `example.com/reconciler`:
//! it adds it when it first sees a cell, and when the cell is terminating
//! it tears down (removes the cell's file), then removes its finalizer,
//! which lets the cell go. It survives server restarts (the watcher
//! resumes from its last revision, or re-syncs on 410) and its own: killed
//! in the middle of a teardown, it finds the cell still terminating with
//! its finalizer on the next sync, and finishes the job.
//!
//! ```sh
//! cargo run --release -- serve &
//! cargo run --example reconciler -- http://127.0.0.1:8080 /tmp/cells
//! ```
//!
//! `RECONCILER_TEARDOWN_MS` makes each teardown take that long (to watch
//! it, or to kill it in the middle).

use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use modelhub::client::watcher::{Event, Watcher};
use modelhub::client::{Client, ClientError, WatchScope};
use modelhub::model::{AnyObject, CellState, ContainerState, ContainerStatus, Kind};

/// This controller's finalizer.
const FINALIZER: &str = "example.com/reconciler";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "reconciled-cells".into()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let teardown = Duration::from_millis(
        std::env::var("RECONCILER_TEARDOWN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let r = Reconciler {
        client: Client::new(server),
        dir,
        teardown,
    };
    let scope = WatchScope {
        kinds: vec![Kind::Cell],
        ..WatchScope::default()
    };
    let watcher = Watcher::new(r.client.clone(), scope);
    let cache = watcher.cache();
    let mut events = Box::pin(watcher.run());
    while let Some(event) = events.next().await {
        match event {
            Event::Restarted(cells) => {
                tracing::info!(cells = cells.len(), "synced");
                for cell in cells {
                    r.reconcile(cell).await;
                }
            }
            Event::Applied(cell) => r.reconcile(cell).await,
            // Gone: our finalizer was removed after the teardown (or the
            // cell never had it); make sure nothing is left running.
            Event::Deleted(cell) => r.stop(&cell),
        }
        tracing::debug!(cached = cache.len(), revision = cache.revision(), "cache");
    }
}

struct Reconciler {
    client: Client,
    dir: PathBuf,
    teardown: Duration,
}

impl Reconciler {
    /// The file that stands for a running cell (names hold no `_`).
    fn file(&self, cell: &AnyObject) -> PathBuf {
        self.dir.join(cell.path().names().join("_"))
    }

    fn stop(&self, cell: &AnyObject) {
        let file = self.file(cell);
        match std::fs::remove_file(&file) {
            Ok(()) => tracing::info!(cell = %cell.path(), "stopped"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot stop"),
        }
    }

    async fn reconcile(&self, cell: AnyObject) {
        if cell.meta().is_terminating() {
            return self.tear_down(cell).await;
        }
        if !cell.meta().finalizers.iter().any(|f| f == FINALIZER) {
            // Take the cell on before running anything: from now on its
            // deletion waits for this controller. The write's event brings
            // the cell back here.
            let mut mine = cell.clone();
            mine.meta_mut().finalizers.push(FINALIZER.into());
            if let Err(e) = self.client.replace_finalizers(&mine).await {
                tracing::warn!(cell = %cell.path(), error = %e, "cannot add the finalizer");
            }
            return;
        }
        self.run(cell).await;
    }

    /// Tears a terminating cell down, then lets it go. Every step may be
    /// done again (after a crash): removing a missing file is fine, and
    /// the finalizer is removed from the cell as it is now.
    async fn tear_down(&self, cell: AnyObject) {
        if !cell.meta().finalizers.iter().any(|f| f == FINALIZER) {
            return;
        }
        tracing::info!(cell = %cell.path(), "tearing down");
        tokio::time::sleep(self.teardown).await;
        self.stop(&cell);
        let mut current = cell;
        for _ in 0..5 {
            let mut without = current.clone();
            without.meta_mut().finalizers.retain(|f| f != FINALIZER);
            match self.client.replace_finalizers(&without).await {
                Ok(_) => {
                    tracing::info!(cell = %current.path(), "finalizer removed");
                    return;
                }
                // The cell changed meanwhile (another controller's
                // finalizer, a status): re-read it and try again.
                Err(ClientError::Api { status: 409, .. }) => {
                    match self.client.get(&current.path()).await {
                        Ok(fresh) => current = fresh,
                        Err(e) => return tracing::warn!(error = %e, "cannot re-read"),
                    }
                }
                Err(ClientError::Api { status: 404, .. }) => return,
                Err(e) => {
                    return tracing::warn!(cell = %current.path(), error = %e, "cannot remove the finalizer");
                }
            }
        }
    }

    /// Runs the cell (creates its file) and brings its status in line with
    /// its spec: every container Ready. Writing an unchanged status is a
    /// no-op on the server (no new event), so this converges.
    async fn run(&self, cell: AnyObject) {
        let file = self.file(&cell);
        if !FsPath::new(&file).exists() {
            match std::fs::write(&file, cell.meta().uid.as_bytes()) {
                Ok(()) => tracing::info!(cell = %cell.path(), "started"),
                Err(e) => return tracing::warn!(file = %file.display(), error = %e, "cannot start"),
            }
        }
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
        if c.status.state == CellState::Ready && c.status.containers == want {
            return;
        }
        c.status.state = CellState::Ready;
        c.status.ready_observed = true;
        c.status.containers = want;
        match self.client.replace_status(&AnyObject::Cell(c)).await {
            Ok(o) => {
                tracing::info!(cell = %o.path(), revision = o.meta().resource_version, "status written")
            }
            // 409: the cell changed meanwhile; its new version is on its way.
            Err(e) => tracing::warn!(error = %e, "status write failed"),
        }
    }
}

fn now() -> Option<i128> {
    Some(time::OffsetDateTime::now_utc().unix_timestamp_nanos())
}
