//! The redb backend: the whole store in one embedded database file, made
//! durable by a write-ahead log beside it.
//!
//! - `tables`: table definitions, and the write transaction as a
//!   [`crate::store::plan::ReadView`].
//! - `wal`: the write-ahead log (`<db>.wal`): one sequential write and
//!   sync per batch; checkpointed into redb.
//! - `writer`: the single writer thread: group commit, plan execution, the
//!   commit protocol, checkpoints, compaction and log replay.
//! - `read`: point reads, snapshots and list cursors, the paged-list
//!   snapshot registry.
//! - `restore`: building a database from a backup, offline.
//! - [`migrate`]: storage format check and migrations.
//!
//! No type of the `redb` crate leaves this module: [`RedbStore`] answers in
//! the store's own types.

mod error;
pub mod migrate;
pub(super) mod read;
pub(super) mod restore;
mod tables;
mod wal;
mod writer;

use std::path::Path as FsPath;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::oneshot;

use crate::model::{AnyObject, Path};
use crate::store::change::{ApplyOutcome, WriteOp, WriteOutcome};
use crate::store::error::StoreError;
use crate::store::feed::Feed;
use crate::store::options::StoreOptions;
use crate::store::query::{EventsPage, ListPage, ListQuery, StoreStats};

/// The writer thread's queue and join handle (taken on close).
type WriterHandle = (mpsc::Sender<writer::Job>, JoinHandle<()>);

/// An open redb store; cloning it is one reference count (handlers clone
/// it per request).
#[derive(Clone)]
pub struct RedbStore(Arc<Inner>);

struct Inner {
    db: Arc<Database>,
    snapshots: Arc<read::Snapshots>,
    stats: Arc<writer::WriterStats>,
    feed: Arc<Feed>,
    writer: Mutex<Option<WriterHandle>>,
}

impl RedbStore {
    /// Opens (creating or migrating) the database at `path`, replays what
    /// its write-ahead log holds, and starts the writer thread.
    pub fn open(path: &FsPath, options: &StoreOptions) -> Result<RedbStore, StoreError> {
        let db = Arc::new(migrate::open(path, options.cache_bytes)?);
        let log = wal::path_for(path);
        let mut wal = wal::Wal::open(&log, options.checkpoint_interval)?;
        if wal.holds_records() {
            let replayed = writer::replay(&db, &wal, &log)?;
            if replayed > 0 {
                tracing::info!(replayed, path = %log.display(), "replayed the write-ahead log");
            }
            // What the log held is in the database now (replayed durably,
            // or already there).
            wal.clear()?;
        }
        let (tx, rx) = mpsc::channel();
        let feed = Arc::new(Feed::default());
        let stats = Arc::new(writer::WriterStats::default());
        let handle = {
            let (db, feed, stats) = (db.clone(), feed.clone(), stats.clone());
            std::thread::Builder::new()
                .name("modelhub-writer".into())
                .spawn(move || writer::run(db, wal, rx, feed, stats))?
        };
        Ok(RedbStore(Arc::new(Inner {
            db,
            snapshots: Arc::new(read::Snapshots::new(
                options.snapshot_ttl,
                options.max_snapshots,
            )),
            stats,
            feed,
            writer: Mutex::new(Some((tx, handle))),
        })))
    }

    /// Queues a job for the writer thread and awaits its answer.
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> writer::Job,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.0.writer.lock().expect("writer handle");
            let (tx, _) = guard.as_ref().ok_or(StoreError::Closed)?;
            tx.send(job(reply)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// See [`crate::store::Backend::write`].
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.submit(|reply| writer::Job::Write { op, reply }).await
    }

    /// See [`crate::store::Backend::apply`].
    pub async fn apply(
        &self,
        objects: Vec<AnyObject>,
        dry_run: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        self.submit(|reply| writer::Job::Apply {
            objects,
            dry_run,
            reply,
        })
        .await
    }

    /// See [`crate::store::Backend::compact`].
    pub async fn compact(&self, keep: u64) -> Result<u64, StoreError> {
        self.submit(|reply| writer::Job::Compact { keep, reply })
            .await
    }

    /// See [`crate::store::Backend::events`].
    pub fn events(&self, after: u64, max: usize) -> Result<EventsPage, StoreError> {
        read::read_events(&self.0.db, after, max)
    }

    /// A read snapshot of the whole database.
    pub fn snapshot(&self) -> Result<read::RedbSnapshot, StoreError> {
        read::RedbSnapshot::open(&self.0.db)
    }

    /// Reads one object on the calling thread: a few B-tree pages, almost
    /// always in the page cache, cost less than a hand-over to a blocking
    /// thread and back.
    pub fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        read::get(&self.0.db, path)
    }

    /// The current revision (a point read, like [`RedbStore::get`]).
    pub fn revision(&self) -> Result<u64, StoreError> {
        read::revision(&self.0.db)
    }

    /// One page of a list (on a blocking thread).
    pub async fn list_page(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        let (db, snapshots) = (self.0.db.clone(), self.0.snapshots.clone());
        tokio::task::spawn_blocking(move || read::list_page(&db, &snapshots, &query))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    /// The change feed of this store's writer.
    pub fn feed(&self) -> &Feed {
        &self.0.feed
    }

    /// The newest revision the writer has committed or is committing.
    pub fn committing_revision(&self) -> u64 {
        self.0.stats.committing.load(Ordering::SeqCst)
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            requests: self.0.stats.requests.load(Ordering::Relaxed),
            commits: self.0.stats.commits.load(Ordering::Relaxed),
            checkpoints: self.0.stats.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer after the queued requests and releases snapshots.
    /// The database file is closed when the last handle is dropped.
    pub fn close(&self) {
        let taken = self.0.writer.lock().expect("writer handle").take();
        if let Some((tx, handle)) = taken {
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("writer thread panicked");
            }
        }
        self.0.snapshots.clear();
    }
}
