//! The store: kukeon objects in redb, keyed by path, with one store-wide
//! revision.
//!
//! - [`keys`]: path -> key encoding (children of one parent are one range).
//! - [`codec`]: record encoding (format byte + postcard).
//! - `tables`: table definitions.
//! - [`writer`]: the single writer thread with group commit; every write is
//!   atomic and durable before it is acknowledged.
//! - `wal`: the write-ahead log that makes a batch durable with one
//!   sequential write and sync (`<db>.wal`), checkpointed into redb.
//! - `read`: point reads and snapshot list scans.
//! - [`migrate`]: storage format check and migrations.
//!
//! [`Store`] is the async facade the HTTP layer calls: redb work runs on the
//! writer thread or on tokio's blocking pool, never on the async workers.

pub mod codec;
mod error;
pub mod keys;
pub mod migrate;
mod read;
mod tables;
mod wal;
pub mod writer;

use std::path::{Path as FsPath, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::Database;
use tokio::sync::oneshot;

pub use error::StoreError;
pub use read::{EventsPage, ListIter, ListPage, ListQuery, RawEntry, Snapshots};
pub use writer::{
    Applied, ApplyOutcome, Change, ChangeType, CommitHook, Part, UpdateFn, WriteOp, WriteOutcome,
};

use crate::model::{AnyObject, Path};

/// Tunables of a [`Store`].
#[derive(Clone)]
pub struct StoreOptions {
    /// How long a paged list's snapshot lives.
    pub snapshot_ttl: Duration,
    /// How many paged-list snapshots may be live at once.
    pub max_snapshots: usize,
    /// Told about every committed change, in revision order.
    pub on_commit: Option<CommitHook>,
    /// redb's page cache, in bytes (bounds the resident memory).
    pub cache_bytes: usize,
    /// Longest time between checkpoints of the write-ahead log.
    pub checkpoint_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            snapshot_ttl: Duration::from_secs(300),
            max_snapshots: 1024,
            on_commit: None,
            cache_bytes: 128 * 1024 * 1024,
            checkpoint_interval: wal::DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

struct Inner {
    db: Arc<Database>,
    snapshots: Snapshots,
    path: PathBuf,
    stats: Arc<writer::WriterStats>,
}

/// The writer thread's queue and join handle (taken on close).
type WriterHandle = (mpsc::Sender<writer::Job>, JoinHandle<()>);

/// Handle to an open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    writer: Arc<Mutex<Option<WriterHandle>>>,
}

impl Store {
    /// Opens (creating or migrating) the database at `path`.
    pub fn open(path: &FsPath, options: StoreOptions) -> Result<Store, StoreError> {
        let db = Arc::new(migrate::open(path, options.cache_bytes)?);
        let wal = wal::Wal::open(&wal::path_for(path), &db, options.checkpoint_interval)?;
        let (tx, rx) = mpsc::channel();
        let hook = options.on_commit.clone();
        let writer_db = db.clone();
        let stats = Arc::new(writer::WriterStats::default());
        let writer_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("modelhub-writer".into())
            .spawn(move || writer::run(writer_db, wal, rx, hook, writer_stats))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                snapshots: Snapshots::new(options.snapshot_ttl, options.max_snapshots),
                path: path.to_path_buf(),
                stats,
            }),
            writer: Arc::new(Mutex::new(Some((tx, handle)))),
        })
    }

    /// Write requests handled and transactions committed so far (group
    /// commit makes the second smaller than the first under load).
    pub fn write_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.stats.requests.load(Relaxed),
            self.inner.stats.commits.load(Relaxed),
        )
    }

    /// The newest revision this process's writer has committed or is
    /// committing (0 before its first write): a read may already see it
    /// while the commit hook has not yet been told of it.
    pub fn committing_revision(&self) -> u64 {
        self.inner
            .stats
            .committing
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Checkpoints of the write-ahead log so far.
    pub fn checkpoints(&self) -> u64 {
        self.inner
            .stats
            .checkpoints
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &FsPath {
        &self.inner.path
    }

    /// The underlying database (for the watch log and tests).
    pub fn database(&self) -> &Arc<Database> {
        &self.inner.db
    }

    /// Queues a job for the writer thread and awaits its answer.
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> writer::Job,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.writer.lock().expect("writer handle");
            let (tx, _) = guard.as_ref().ok_or(StoreError::Closed)?;
            tx.send(job(reply)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a write request; resolves once it is durable (or failed).
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.submit(|reply| writer::Job::Write { op, reply }).await
    }

    /// Creates or configures `objects` in order, all in one transaction
    /// (`dry_run`: computed, never committed).
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

    /// Drops events older than the last `keep` revisions (one bounded chunk
    /// per call, interleaved with writes); answers how many were dropped.
    pub async fn compact(&self, keep: u64) -> Result<u64, StoreError> {
        self.submit(|reply| writer::Job::Compact { keep, reply })
            .await
    }

    /// Events after revision `after` (at most `max`), checked against the
    /// retained history; runs on the calling (blocking) thread.
    pub fn read_events(&self, after: u64, max: usize) -> Result<EventsPage, StoreError> {
        read::read_events(&self.inner.db, after, max)
    }

    /// Opens a read snapshot: the transaction and its revision.
    pub fn snapshot(&self) -> Result<(Arc<redb::ReadTransaction>, u64), StoreError> {
        read::snapshot(&self.inner.db)
    }

    /// A cursor over `query` within a snapshot from [`Store::snapshot`].
    pub fn list_in(
        &self,
        txn: Arc<redb::ReadTransaction>,
        revision: u64,
        query: &ListQuery,
    ) -> Result<ListIter, StoreError> {
        read::cursor(txn, revision, query, None)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    /// Reads one object. A point read runs on the calling task: a few
    /// B-tree pages, almost always in the page cache, cost less than
    /// handing the read to a blocking thread and back (two context
    /// switches, which made up a third of a GET's CPU).
    pub async fn get(&self, path: Path) -> Result<AnyObject, StoreError> {
        self.get_blocking(&path)
    }

    /// Reads one object on the calling (blocking) thread.
    pub fn get_blocking(&self, path: &Path) -> Result<AnyObject, StoreError> {
        read::get(&self.inner.db, path)
    }

    /// The current store-wide revision (a point read, like [`Store::get`]).
    pub async fn revision(&self) -> Result<u64, StoreError> {
        read::revision(&self.inner.db)
    }

    /// One page of a list (all of it when `query.limit` is `None`).
    pub async fn list_page(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        self.blocking(move |i| read::list_page(&i.db, &i.snapshots, &query))
            .await
    }

    /// A cursor over a whole list; iterate it off the async workers.
    pub fn list_all(&self, query: &ListQuery) -> Result<ListIter, StoreError> {
        read::list_all(&self.inner.db, query)
    }

    /// Whether the database answers reads.
    pub async fn ready(&self) -> bool {
        self.revision().await.is_ok()
    }

    /// Stops the writer after the queued requests and releases snapshots.
    /// The database file is closed when the last handle is dropped.
    pub fn close(&self) {
        let taken = self.writer.lock().expect("writer handle").take();
        if let Some((tx, handle)) = taken {
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("writer thread panicked");
            }
        }
        self.inner.snapshots.clear();
    }
}
