//! The redb backend: the whole store in one embedded database file, made
//! durable by a write-ahead log beside it.
//!
//! - `tables`: table definitions, and the write transaction as a
//!   [`crate::store::plan::ReadView`].
//! - `wal`: the write-ahead log (`<db>.wal`): one sequential write and
//!   sync per batch; checkpointed into redb.
//! - `writer`: the single writer thread: group commit, plan execution, the
//!   commit protocol, checkpoints, compaction, failure and recovery.
//! - `decoded`: the writer's last versions of the objects it modifies,
//!   decoded, so that read-modify-writes skip decoding their records.
//! - `read`: point reads, snapshots and list cursors, the paged-list
//!   snapshot registry.
//! - `open`: opening (and reopening after a failure): database file,
//!   identity, log, replay (`replay`), migration ([`migrate`]).
//! - `file`: the database file as redb's backend, through the store's
//!   file seam ([`crate::store::disk`]).
//! - `restore`: building a database from a backup, offline.
//! - `check`: the offline check of a database and its log.
//!
//! No type of the `redb` crate leaves this module: [`RedbStore`] answers in
//! the store's own types.

pub(super) mod check;
mod decoded;
mod error;
mod file;
pub mod migrate;
mod open;
pub(super) mod read;
mod replay;
pub(super) mod restore;
mod tables;
mod wal;
mod writer;

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::auth::token::Token;
use crate::model::{AnyObject, Path};
use crate::store::change::{ApplyOutcome, Document, WriteOp, WriteOutcome};
use crate::store::error::StoreError;
use crate::store::feed::Feed;
use crate::store::options::StoreOptions;
use crate::store::query::{EventsPage, ListPage, ListQuery, Refusal, StoreStats};

/// How long a token change waits for room in a full write queue.
const TOKEN_PATIENCE: Duration = Duration::from_secs(5);

/// The writer thread's queue and join handle (taken on close).
type WriterHandle = (mpsc::SyncSender<writer::Job>, JoinHandle<()>);

/// An open redb store; cloning it is one reference count (handlers clone
/// it per request).
#[derive(Clone)]
pub struct RedbStore(Arc<Inner>);

struct Inner {
    shared: Arc<writer::Shared>,
    feed: Arc<Feed>,
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<Option<WriterHandle>>,
}

impl RedbStore {
    /// Opens (creating or migrating) the database at `path`, replays what
    /// its write-ahead log holds, and starts the writer thread.
    pub fn open(path: &FsPath, options: &StoreOptions) -> Result<RedbStore, StoreError> {
        let opened = match open::open(path, options) {
            // A full disk at start: the spare file makes room for the
            // replay, once.
            Err(StoreError::Engine(e))
                if e.is_no_space() && open::release_spare(path, options) > 0 =>
            {
                tracing::warn!(error = %e, "the disk is full: deleted the spare file to start");
                open::open(path, options)
            }
            other => other,
        };
        let opened = opened.inspect_err(|e| {
            if e.is_storage_failure() {
                // The next start must not read what a failed sync left.
                open::drop_caches(path, options);
            }
        })?;
        let spare = open::ensure_spare(path, options);
        let revision = read::revision(&opened.db)?;
        // Bounded: a flood of writes is refused (`Busy`), not queued
        // without limit in memory.
        let (tx, rx) = mpsc::sync_channel(options.write_queue.max(1));
        let feed = Arc::new(Feed::default());
        let shared = Arc::new(writer::Shared {
            db: writer::Slot::default(),
            snapshots: Arc::new(read::Snapshots::new(
                options.snapshot_ttl,
                options.max_snapshots,
            )),
            stats: writer::WriterStats::default(),
            refused: Mutex::new(None),
            fatal: Mutex::new(None),
            recent: Default::default(),
        });
        shared.set_db(Some(opened.db.clone()));
        let mut w = writer::Writer::new(
            shared.clone(),
            path.to_owned(),
            options.clone(),
            feed.clone(),
            opened,
            revision,
        );
        if !spare {
            w.spare_missing();
        }
        let handle = std::thread::Builder::new()
            .name("modelhub-writer".into())
            .spawn(move || w.run(rx))?;
        Ok(RedbStore(Arc::new(Inner {
            shared,
            feed,
            path: path.to_owned(),
            options: options.clone(),
            writer: Mutex::new(Some((tx, handle))),
        })))
    }

    /// Queues a job for the writer thread and awaits its answer; a full
    /// queue refuses it at once (`Busy`).
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> writer::Job,
    ) -> Result<T, StoreError> {
        self.submit_within(job, Duration::ZERO).await
    }

    /// [`RedbStore::submit`], waiting up to `patience` for room in a full
    /// queue (token changes: a revocation must not be refused because a
    /// flood of writes fills the queue).
    async fn submit_within<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> writer::Job,
        patience: Duration,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let mut job = job(reply);
        let deadline = std::time::Instant::now() + patience;
        loop {
            let queued = &self.0.shared.stats.queued;
            let sent = {
                let guard = self.0.writer.lock().expect("writer handle");
                let (tx, _) = guard.as_ref().ok_or(StoreError::Closed)?;
                // Counted before it can be taken, so the count never dips
                // below zero.
                queued.fetch_add(1, Ordering::Relaxed);
                tx.try_send(job).inspect_err(|_| {
                    queued.fetch_sub(1, Ordering::Relaxed);
                })
            };
            match sent {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(again)) if std::time::Instant::now() < deadline => {
                    job = again;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(mpsc::TrySendError::Full(_)) => {
                    return Err(StoreError::Busy {
                        queue: self.0.options.write_queue.max(1),
                    });
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            }
        }
        // Queued but never answered: the writer stopped (a bug) while the
        // request may have been applied.
        rx.await.map_err(|_| {
            StoreError::OutcomeUnknown(
                "the writer stopped while handling this request: it may or may not have been \
                 applied; read it back before retrying"
                    .into(),
            )
        })?
    }

    /// See [`crate::store::Backend::write`]. The operation is boxed before
    /// the future is made, so that the future stays small (request
    /// handlers' futures hold it, and are moved into a box per request).
    pub fn write(
        &self,
        op: WriteOp,
    ) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> + Send + '_ {
        let op = Box::new(op);
        self.submit(|reply| writer::Job::Write { op, reply })
    }

    /// See [`crate::store::Backend::apply`].
    pub async fn apply(
        &self,
        objects: Vec<Document>,
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

    /// See [`crate::store::Backend::create_token`].
    pub async fn create_token(&self, token: Token) -> Result<(), StoreError> {
        self.submit_within(
            |reply| writer::Job::Token {
                op: writer::TokenOp::Create(token),
                reply,
            },
            TOKEN_PATIENCE,
        )
        .await
        .map(|_| ())
    }

    /// See [`crate::store::Backend::revoke_token`].
    pub async fn revoke_token(&self, name: &str) -> Result<Token, StoreError> {
        let name = name.to_string();
        self.submit_within(
            |reply| writer::Job::Token {
                op: writer::TokenOp::Revoke(name.clone()),
                reply,
            },
            TOKEN_PATIENCE,
        )
        .await?
        .ok_or(StoreError::TokenNotFound(name))
    }

    /// See [`crate::store::Backend::tokens`].
    pub fn tokens(&self) -> Result<crate::auth::token::Tokens, StoreError> {
        self.read(read::tokens)
    }

    /// Checkpoints the log now (tests schedule checkpoints themselves).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.submit(|reply| writer::Job::Checkpoint { reply }).await
    }

    /// Runs a read on the open database (borrowed under the slot's read
    /// lock: no reference count is taken on the hot path).
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let slot = self.0.shared.db.read();
        let r = slot.as_ref().ok_or_else(writer::recovering)?;
        f(&r.db).map_err(|e| self.read_failed(r, e))
    }

    /// A read's failure as the store's answer ([`error::read_error`]); the
    /// first read to find the database failed by storage tells the
    /// writer, which recovers the store from disk.
    fn read_failed(&self, r: &writer::Readable, e: StoreError) -> StoreError {
        let e = error::read_error(e);
        if let StoreError::Unavailable(why) = &e
            && !r.failed.swap(true, Ordering::Relaxed)
        {
            let guard = self.0.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((tx, _)) = guard.as_ref() {
                // Counted like every job, as the writer uncounts each.
                let queued = &self.0.shared.stats.queued;
                queued.fetch_add(1, Ordering::Relaxed);
                if tx
                    .send(writer::Job::ReadFailed { why: why.clone() })
                    .is_err()
                {
                    queued.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        e
    }

    /// See [`crate::store::Backend::events`].
    pub fn events(&self, after: u64, max: usize) -> Result<EventsPage, StoreError> {
        self.read(|db| read::read_events_after(db, after, max, Some(&self.0.shared.recent)))
    }

    /// A read snapshot of the whole database.
    pub fn snapshot(&self) -> Result<read::RedbSnapshot, StoreError> {
        self.read(read::RedbSnapshot::open)
    }

    /// Reads one object on the calling thread: a few B-tree pages, almost
    /// always in the page cache, cost less than a hand-over to a blocking
    /// thread and back.
    pub fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        self.read(|db| read::get(db, path))
    }

    /// One object's record, not decoded past its metadata.
    pub fn get_entry(&self, path: &Path) -> Result<read::RedbEntry, StoreError> {
        self.read(|db| read::get_entry(db, path))
    }

    /// The current revision (a point read, like [`RedbStore::get`]).
    pub fn revision(&self) -> Result<u64, StoreError> {
        self.read(read::revision)
    }

    /// Whether reads are answered: the database answers, and no read has
    /// found it failed by storage since it was (re)opened (redb may still
    /// answer from its cache, as the revision is, while refusing the rest).
    pub fn ready(&self) -> bool {
        self.revision().is_ok()
            && self
                .0
                .shared
                .db
                .read()
                .as_ref()
                .is_some_and(|r| !r.failed.load(Ordering::Relaxed))
    }

    /// One page of a list (on a blocking thread).
    pub async fn list_page(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        let (store, snapshots) = (self.clone(), self.0.shared.snapshots.clone());
        tokio::task::spawn_blocking(move || {
            store.read(|db| read::list_page(db, &snapshots, &query))
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    /// The change feed of this store's writer.
    pub fn feed(&self) -> &Feed {
        &self.0.feed
    }

    /// The newest revision the writer has committed or is committing.
    pub fn committing_revision(&self) -> u64 {
        self.0.shared.stats.committing.load(Ordering::SeqCst)
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        let stats = &self.0.shared.stats;
        let disk = &*self.0.options.disk;
        StoreStats {
            requests: stats.requests.load(Ordering::Relaxed),
            commits: stats.commits.load(Ordering::Relaxed),
            checkpoints: stats.checkpoints.load(Ordering::Relaxed),
            decoded_kept: stats.decoded_kept.load(Ordering::Relaxed),
            decoded_records: stats.decoded_records.load(Ordering::Relaxed),
            storage_errors_full: stats.errors_full.load(Ordering::Relaxed),
            storage_errors_other: stats.errors_other.load(Ordering::Relaxed),
            recoveries: stats.recoveries.load(Ordering::Relaxed),
            database_bytes: disk.size(&self.0.path).unwrap_or(0),
            database_in_use_bytes: 0,
            log_bytes: disk.size(&wal::path_for(&self.0.path)).unwrap_or(0),
            free_bytes: disk.free_bytes(&self.0.path).unwrap_or(0),
            object_bytes: stats.object_bytes.load(Ordering::Relaxed),
            history_bytes: stats.event_bytes.load(Ordering::Relaxed),
            log_pending_bytes: stats.logged.load(Ordering::Relaxed),
            write_queue: stats.queued.load(Ordering::Relaxed),
            commit_time: Some(stats.commit_time.snapshot()),
            log_sync_time: Some(stats.log_sync_time.snapshot()),
            checkpoint_time: Some(stats.checkpoint_time.snapshot()),
            ..StoreStats::default()
        }
    }

    /// Why writes are refused, if they are.
    pub fn writes_refused(&self) -> Option<Refusal> {
        self.0
            .shared
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Set when the store failed and cannot recover: the process should
    /// exit (non-zero) so that its supervisor restarts it.
    pub fn fatal(&self) -> Option<String> {
        self.0
            .shared
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        self.0.shared.snapshots.clear();
    }
}
