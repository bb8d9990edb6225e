//! The single writer: every write request goes through one thread that
//! plans queued requests ([`crate::store::plan`]) and executes the plans in
//! one redb write transaction, committed once (group commit) and durable
//! before any is acknowledged: the batch's changes are appended to the
//! write-ahead log (module `wal`) and synced, then committed to redb
//! without durability; periodic checkpoints (durable redb commits) make the
//! log's contents redundant.
//!
//! Invariants:
//! - Each request is all-or-nothing: its plan is computed (every check
//!   made) before anything is written, so a refused request leaves no
//!   trace in the shared transaction. A storage failure aborts the whole
//!   batch and every request in it fails.
//! - Revisions: a request changing k objects takes the next k revisions,
//!   in order; the last one handed out is persisted in the same
//!   transaction. They are dense, so each change's `prev` is its revision
//!   minus one.
//! - The change feed is told about changes only after they are durable,
//!   before the replies are sent, exactly once.
//! - Failures: a request refused before its record reached the log gets
//!   507 (no space) or 503; one whose record may or may not be durable
//!   gets 504 (outcome unknown); one whose record was synced is
//!   acknowledged even if the redb commit after it failed. After a storage
//!   failure the writer refuses writes, and recovers by reopening the
//!   store from disk (replaying the log; a failed sync is never retried
//!   and trusted), once there is room again; the changes the replay
//!   brought back that were never published are published then. Below the
//!   free-space reserve or at the quota, every write but a delete is
//!   refused (507); the writer checks again every second while it refuses,
//!   so the refusal ends by itself once space is freed, without waiting
//!   for a write to notice.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::decoded::Decoded;
use super::error::engine_error;
use super::open;
use super::read;
use super::tables::{
    self, CLEAN_KEY, COMPACTED_KEY, EVENTS, META, REVISION_KEY, Sizes, TOKENS, WriteTables,
};
use super::wal::{self, AppendError, Appended, Journal, Wal};
use crate::auth::token::Token;
use crate::histogram::Histogram;
use crate::store::change::{
    ApplyOutcome, Change, ChangeType, Document, Part, WriteOp, WriteOutcome,
};
use crate::store::codec;
use crate::store::error::{EngineError, StoreError};
use crate::store::feed::Feed;
use crate::store::options::StoreOptions;
use crate::store::plan::{self, Plan};
use crate::store::query::{Refusal, RefusedCause};
use crate::store::recent::{Logged, Recent};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;

/// Least free space recovery waits for after a full disk: room for the
/// replay's commit (which also needs [`REPLAY_FACTOR`] times what the log
/// holds: each change is written as an object and an event).
const RECOVERY_ROOM: u64 = 8 * 1024 * 1024;

/// Room the replay needs per byte the log holds.
const REPLAY_FACTOR: u64 = 3;

/// Longest wait between recovery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Recovery attempts (with room enough) after which the process gives up.
const MAX_ATTEMPTS: u32 = 20;

/// Recoveries within [`FLAPPING_WINDOW`] after which a new failure (not a
/// full disk) stops the process instead of reopening once more.
const MAX_RECOVERIES: usize = 5;

/// See [`MAX_RECOVERIES`].
const FLAPPING_WINDOW: Duration = Duration::from_secs(60);

/// How often free space is checked again while writes are refused below
/// the reserve, so that the refusal (and `/readyz/writes`) ends once space
/// is freed even if no write arrives to notice it.
const SPACE_RECHECK: Duration = Duration::from_secs(1);

/// How often a spare file that could not be made is tried again.
const SPARE_RETRY: Duration = Duration::from_secs(1);

/// How long free space found above the reserve is trusted.
const FREE_RECHECK: Duration = Duration::from_millis(100);

/// Work for the writer thread. Small: the futures that hold one while
/// waiting for room in the queue are moved into a box per request.
pub(super) enum Job {
    /// A write request and where its answer goes.
    Write {
        op: Box<WriteOp>,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    /// Create or configure several objects in one transaction of their own,
    /// all or nothing (`dry_run`: never committed).
    Apply {
        objects: Vec<Document>,
        dry_run: bool,
        reply: oneshot::Sender<Result<ApplyOutcome, StoreError>>,
    },
    /// Drop events older than the last `keep` revisions, one bounded chunk
    /// per transaction; answers how many were dropped once that is durable.
    Compact {
        keep: u64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Checkpoint the log now (tests schedule checkpoints themselves).
    Checkpoint {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A read found the database failed by storage: recover.
    ReadFailed { why: String },
    /// Store or remove a token, in a durable transaction of its own.
    Token {
        op: TokenOp,
        reply: oneshot::Sender<Result<Option<Token>, StoreError>>,
    },
}

/// A change to the tokens.
pub(super) enum TokenOp {
    /// Store a new token (refused if its name is taken).
    Create(Token),
    /// Remove the token with this name (answers it).
    Revoke(String),
}

/// Most events dropped by one compaction transaction, so that compaction
/// never holds the writer for long.
const COMPACT_CHUNK: u64 = 1_000;

/// Counters of the writer's work.
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    /// Write requests handled (including failed ones).
    pub requests: AtomicU64,
    /// Transactions committed to disk.
    pub commits: AtomicU64,
    /// Reads of read-modify-writes answered from the decoded objects.
    pub decoded_kept: AtomicU64,
    /// Reads of read-modify-writes that decoded the stored record.
    pub decoded_records: AtomicU64,
    /// Checkpoints of the write-ahead log into the database.
    pub checkpoints: AtomicU64,
    /// The newest revision committed or being committed by this writer
    /// (0 before its first commit): readers may see it from the moment its
    /// commit starts, before the feed has published it.
    pub committing: AtomicU64,
    /// Storage errors: the disk was full.
    pub errors_full: AtomicU64,
    /// Other storage errors.
    pub errors_other: AtomicU64,
    /// Recoveries.
    pub recoveries: AtomicU64,
    /// Bytes of stored object records.
    pub object_bytes: AtomicU64,
    /// Bytes of stored event records.
    pub event_bytes: AtomicU64,
    /// Batches' time from the start of their transaction to their commit
    /// (log sync included).
    pub commit_time: Histogram,
    /// Time to append a batch to the log and sync it.
    pub log_sync_time: Histogram,
    /// Time of a checkpoint (the writer waits for it).
    pub checkpoint_time: Histogram,
    /// Jobs queued for the writer and not taken yet.
    pub queued: AtomicU64,
    /// Bytes of log records since the last checkpoint.
    pub logged: AtomicU64,
}

impl WriterStats {
    /// Records the stored bytes after a commit.
    fn set_sizes(&self, sizes: Sizes) {
        self.object_bytes
            .store(sizes.objects.max(0) as u64, Ordering::Relaxed);
        self.event_bytes
            .store(sizes.events.max(0) as u64, Ordering::Relaxed);
    }

    /// The stored bytes as last committed.
    fn sizes(&self) -> Sizes {
        Sizes {
            objects: self.object_bytes.load(Ordering::Relaxed) as i64,
            events: self.event_bytes.load(Ordering::Relaxed) as i64,
        }
    }

    /// Objects and history, in bytes.
    fn stored(&self) -> u64 {
        self.object_bytes.load(Ordering::Relaxed) + self.event_bytes.load(Ordering::Relaxed)
    }
}

/// The open database, as readers get it.
#[derive(Clone)]
pub(super) struct Readable {
    pub db: Arc<Database>,
    /// Set once a read found this database failed by storage: redb then
    /// refuses it (every page not in its cache) until it is reopened, and
    /// the reopened database comes with a flag of its own.
    pub failed: Arc<AtomicBool>,
}

/// The answer to a read while the store is reopening.
pub(super) fn recovering() -> StoreError {
    StoreError::Unavailable("the store is recovering from a storage failure: retry shortly".into())
}

/// Shards of [`Slot`]: more than the threads that read at once.
const SLOT_SHARDS: usize = 16;

/// The open database as readers find it: one copy per shard, each behind
/// a lock on a cache line of its own, so that concurrent reads on
/// different threads never write to a shared line (a single lock's
/// counter would bounce between the cores on every read); recovery, the
/// only writer, takes every shard's lock in turn.
pub(super) struct Slot {
    shards: Box<[Shard]>,
}

#[repr(align(128))]
#[derive(Default)]
struct Shard(RwLock<Option<Readable>>);

impl Default for Slot {
    fn default() -> Self {
        Slot {
            shards: (0..SLOT_SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl Slot {
    /// This thread's copy.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Readable>> {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) as usize
            };
        }
        let i = SHARD.with(|s| *s) % self.shards.len();
        self.shards[i].0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every copy.
    fn set(&self, db: Option<Readable>) {
        for shard in self.shards.iter() {
            *shard.0.write().unwrap_or_else(|e| e.into_inner()) = db.clone();
        }
    }
}

/// What the writer shares with readers.
pub(super) struct Shared {
    /// The open database (`None` while reopening after a failure).
    pub db: Slot,
    /// Paged-list snapshots (dropped on recovery).
    pub snapshots: Arc<read::Snapshots>,
    /// Counters.
    pub stats: WriterStats,
    /// Why writes are refused, if they are.
    pub refused: Mutex<Option<Refusal>>,
    /// Set when the store cannot recover: the process should exit.
    pub fatal: Mutex<Option<String>>,
    /// The last changes committed, as event records (for watchers'
    /// catch-ups).
    pub recent: Recent<Logged>,
}

impl Shared {
    pub fn set_db(&self, db: Option<Arc<Database>>) {
        self.db.set(db.map(|db| Readable {
            db,
            failed: Arc::default(),
        }));
    }

    fn set_refused(&self, refusal: Option<Refusal>) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = refusal;
    }

    fn count_error(&self, e: &EngineError) {
        let counter = if e.is_no_space() {
            &self.stats.errors_full
        } else {
            &self.stats.errors_other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A storage failure being recovered from.
struct Failure {
    why: EngineError,
    /// Bytes the log held when storage failed (what the replay writes).
    logged: u64,
    next_try: Instant,
    attempts: u32,
    /// The store was closed for reopening (readers get 503).
    closed: bool,
}

/// The writer thread's state.
pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub path: PathBuf,
    pub options: StoreOptions,
    pub feed: Arc<Feed>,
    pub db: Option<Arc<Database>>,
    pub wal: Option<Wal>,
    /// The last revision published to the feed.
    pub published: u64,
    failure: Option<Failure>,
    /// The space refusal in force (low space or quota), if any.
    space: Option<RefusedCause>,
    /// The spare file was deleted to recover from a full disk: every
    /// write but a delete is refused until it is back.
    spare_released: bool,
    /// When making the missing spare file was last tried (`None`: it is
    /// there, or released on purpose).
    spare_tried: Option<Instant>,
    /// When the last recoveries happened (at most [`MAX_RECOVERIES`]).
    recoveries: std::collections::VecDeque<Instant>,
    /// When free space was last found above the reserve.
    room_checked: Option<Instant>,
    /// Compactions asked for, the first in progress: the writer drops one
    /// chunk of events per turn of its loop, between batches.
    compactions: std::collections::VecDeque<Compaction>,
    /// Compactions done but committed without durability: answered once
    /// a durable commit covers them, with how many events each dropped
    /// (an acknowledged compaction is durable).
    unacked: Vec<(oneshot::Sender<Result<u64, StoreError>>, u64)>,
    /// The last versions of the objects it modified lately, decoded.
    decoded: Decoded,
}

/// A compaction the writer is working through.
struct Compaction {
    keep: u64,
    /// Events dropped by its chunks so far (committed without durability).
    dropped: u64,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

impl Writer {
    /// A writer over a freshly opened store.
    pub fn new(
        shared: Arc<Shared>,
        path: PathBuf,
        options: StoreOptions,
        feed: Arc<Feed>,
        opened: open::Opened,
        published: u64,
    ) -> Writer {
        shared.stats.set_sizes(opened.sizes);
        shared.recent.start(published);
        Writer {
            shared,
            path,
            options,
            feed,
            db: Some(opened.db),
            wal: Some(opened.wal),
            published,
            failure: None,
            space: None,
            spare_released: false,
            spare_tried: None,
            recoveries: std::collections::VecDeque::new(),
            room_checked: None,
            compactions: std::collections::VecDeque::new(),
            unacked: Vec::new(),
            decoded: Decoded::default(),
        }
    }

    /// Notes that the spare file could not be made at start: it is tried
    /// again every [`SPARE_RETRY`] as writes arrive.
    pub fn spare_missing(&mut self) {
        self.spare_tried = Some(Instant::now());
    }

    /// The loop: runs until every sender is dropped. A panic while
    /// handling a job is a bug: its requests' outcome is unknown, and the
    /// store recovers from disk as from a storage failure.
    pub fn run(mut self, rx: Receiver<Job>) {
        // A panic outside a job's handling (recovery, a checkpoint) ends
        // the thread: the store is then failed for good, and says so.
        struct Fatal(Arc<Shared>);
        impl Drop for Fatal {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    *self.0.fatal.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some("the writer thread panicked (see the panic above)".into());
                }
            }
        }
        let _fatal = Fatal(self.shared.clone());
        let mut pending: Option<Job> = None;
        loop {
            self.recover_if_due();
            if self.failure.is_none() && self.space.is_some() {
                self.check_space();
            }
            self.compact_step();
            self.answer_durable_compactions();
            // Compactions waiting for durability are checkpointed as soon
            // as no write waits (under load, the log's bound comes first).
            if self.failure.is_none()
                && let Some(wal) = &self.wal
                && (wal.checkpoint_due()
                    || (!self.unacked.is_empty()
                        && self.compactions.is_empty()
                        && self.shared.stats.queued.load(Ordering::Relaxed) == 0))
            {
                self.checkpoint(false);
            }
            let logged = self.wal.as_ref().map_or(0, Wal::logged_bytes);
            self.shared.stats.logged.store(logged, Ordering::Relaxed);
            let wait = match &self.failure {
                Some(f) => Some(f.next_try.saturating_duration_since(Instant::now())),
                // A compaction in progress goes on with its next chunk
                // unless a job is waiting.
                None if !self.compactions.is_empty() => Some(Duration::ZERO),
                None => {
                    let checkpoint = self.wal.as_ref().and_then(Wal::until_checkpoint);
                    if self.space.is_some() {
                        Some(checkpoint.map_or(SPACE_RECHECK, |c| c.min(SPACE_RECHECK)))
                    } else {
                        checkpoint
                    }
                }
            };
            let queued = &self.shared.stats.queued;
            let taken = |job| {
                queued.fetch_sub(1, Ordering::Relaxed);
                job
            };
            let next = match (pending.take(), wait) {
                (Some(job), _) => Ok(job),
                (None, Some(wait)) => rx.recv_timeout(wait).map(taken),
                (None, None) => rx
                    .recv()
                    .map(taken)
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            let first = match next {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // Closing: leave nothing to replay, and say so.
                    if self.failure.is_none() {
                        self.checkpoint(true);
                    }
                    return;
                }
            };
            let mut batch = Vec::new();
            let job = match first {
                Job::Write { op, reply } => {
                    batch.push((*op, reply));
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv().map(taken) {
                            Ok(Job::Write { op, reply }) => batch.push((*op, reply)),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    None
                }
                other => Some(other),
            };
            let handled = catch_unwind(AssertUnwindSafe(|| match job {
                None => self.writes(batch),
                Some(job) => self.job(job),
            }));
            if handled.is_err() {
                let why = EngineError::msg("the writer hit a bug (see the panic above)");
                tracing::error!("the writer panicked; recovering the store from disk");
                if let Some(wal) = &mut self.wal {
                    wal.fail(why);
                }
                self.note_failure();
            }
        }
    }

    /// Drops one chunk of events for the compaction in progress; once
    /// a chunk drops nothing, the compaction waits for durability (or is
    /// answered at once if it dropped nothing at all).
    fn compact_step(&mut self) {
        let Some(mut c) = self.compactions.pop_front() else {
            return;
        };
        let result = match self.refusal() {
            Some(e) => Err(e),
            None => {
                let (shared, budget) = (self.shared.clone(), self.options.history_bytes);
                let (db, wal) = self.engine();
                compact(&db, wal, c.keep, budget, &shared.stats)
            }
        };
        self.note_failure();
        match result {
            Ok(0) if c.dropped == 0 => {
                let _ = c.reply.send(Ok(0));
            }
            Ok(0) => self.unacked.push((c.reply, c.dropped)),
            Ok(n) => {
                c.dropped += n;
                self.compactions.push_front(c);
            }
            // Earlier chunks were committed: whether they last is unknown.
            Err(e) if c.dropped > 0 => {
                let _ = c.reply.send(Err(StoreError::OutcomeUnknown(format!(
                    "the compaction failed after dropping {} events: {e}",
                    c.dropped
                ))));
            }
            Err(e) => {
                let _ = c.reply.send(Err(e));
            }
        }
    }

    /// Answers the compactions waiting for durability once a durable
    /// commit (a checkpoint, or a batch or token change committed
    /// durably) has covered them: the log then holds nothing and the
    /// database no commit it lacks.
    fn answer_durable_compactions(&mut self) {
        if !self.unacked.is_empty()
            && self.failure.is_none()
            && self.wal.as_ref().is_some_and(Wal::is_clean)
        {
            for (reply, dropped) in self.unacked.drain(..) {
                let _ = reply.send(Ok(dropped));
            }
        }
    }

    /// Refuses a job if the store failed; answers the refusal.
    fn refusal(&self) -> Option<StoreError> {
        self.failure.as_ref().map(|f| {
            let e = f.why.reworded(|what| {
                format!("storage failed ({what}); the store is recovering from its log")
            });
            e.refusal()
        })
    }

    /// Whether free space is below `min`; an answer of "no" is reused for
    /// [`FREE_RECHECK`] (a statfs per batch costs more than the reserve
    /// can lose in that time), "yes" is checked again each time.
    fn below_reserve(&mut self, min: u64) -> bool {
        if let Some(at) = self.room_checked
            && at.elapsed() < FREE_RECHECK
        {
            return false;
        }
        let low = self
            .options
            .disk
            .free_bytes(&self.path)
            .is_ok_and(|free| free < min);
        self.room_checked = (!low).then(Instant::now);
        low
    }

    /// The refusal of every write but a delete, if free space is below
    /// the reserve or the stored records reached the quota (checked once
    /// per batch; a change of state is logged once).
    fn check_space(&mut self) -> Option<StoreError> {
        let (min, quota) = (self.options.min_free_bytes, self.options.quota_bytes);
        let stored = self.shared.stats.stored();
        if self.spare_released {
            let need = self.options.spare_bytes.saturating_add(min);
            let room = self
                .options
                .disk
                .free_bytes(&self.path)
                .is_ok_and(|free| free >= need);
            if room && open::ensure_spare(&self.path, &self.options) {
                tracing::info!("the spare file is back");
                self.spare_released = false;
            }
        }
        if let Some(at) = self.spare_tried
            && !self.spare_released
            && at.elapsed() >= SPARE_RETRY
        {
            self.spare_tried = (!open::ensure_spare(&self.path, &self.options)).then(Instant::now);
        }
        let now = if self.spare_released {
            Some(RefusedCause::StorageFull)
        } else if min > 0 && self.below_reserve(min) {
            Some(RefusedCause::LowSpace)
        } else if quota > 0 && stored >= quota {
            Some(RefusedCause::QuotaExceeded)
        } else {
            None
        };
        let spare = self.options.spare_bytes;
        let message = |cause| match cause {
            RefusedCause::StorageFull => format!(
                "the disk filled up; its spare file was deleted so that reads and deletes keep \
                 working: every other write is refused until {spare} bytes (and the reserve) \
                 are free again"
            ),
            RefusedCause::LowSpace => format!(
                "free space is below the reserve of {min} bytes: every write but a delete is \
                 refused until space is freed"
            ),
            _ => format!(
                "the stored records ({stored} bytes of objects and history) reached the quota \
                 of {quota} bytes: every write but a delete is refused until deletes bring them \
                 under it (or the quota is raised)"
            ),
        };
        if now != self.space {
            self.space = now;
            match now {
                Some(cause) => {
                    tracing::warn!(cause = cause.name(), "{}", message(cause));
                    self.shared.set_refused(Some(Refusal {
                        cause,
                        message: message(cause),
                    }));
                }
                None if self.failure.is_none() => {
                    tracing::info!("space is available again: accepting writes");
                    self.shared.set_refused(None);
                }
                None => {}
            }
        }
        now.map(|cause| StoreError::NoSpace(format!("{}; nothing was written", message(cause))))
    }

    /// A batch of write requests.
    fn writes(&mut self, batch: Vec<(WriteOp, oneshot::Sender<Result<WriteOutcome, StoreError>>)>) {
        self.shared
            .stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(e) = self.refusal() {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        let refused = self.check_space();
        let mut ops = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (op, reply) in batch {
            // Deletions go on when space is short: deletes, and finalizer
            // writes (what lets a marked object go).
            let deletion = matches!(
                op,
                WriteOp::Delete { .. }
                    | WriteOp::Replace {
                        part: Part::Finalizers,
                        ..
                    }
                    | WriteOp::Update {
                        part: Part::Finalizers,
                        ..
                    }
            );
            if let Some(e) = refused.as_ref().filter(|_| !deletion) {
                let _ = reply.send(Err(e.clone()));
            } else {
                ops.push(op);
                replies.push(reply);
            }
        }
        if ops.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let (db, wal, decoded) = self.engine_and_decoded();
        let result = commit_batch(&db, wal, decoded, ops, &shared.stats);
        // The failure is on record before any client hears of it.
        self.note_failure();
        self.count_decoded();
        match result {
            Ok((outcomes, logged)) => {
                self.remember(&logged);
                for outcome in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
                    self.publish(&outcome.changes);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed; every request in it fails");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Any job but a write.
    fn job(&mut self, job: Job) {
        match job {
            Job::Write { .. } => unreachable!("writes are batched"),
            Job::ReadFailed { why } => {
                if self.failure.is_none()
                    && let Some(wal) = &mut self.wal
                {
                    wal.fail(EngineError::msg(format!(
                        "a read found the database failed by storage ({why})"
                    )));
                }
            }
            Job::Compact { keep, reply } => self.compactions.push_back(Compaction {
                keep,
                dropped: 0,
                reply,
            }),
            Job::Apply {
                objects,
                dry_run,
                reply,
            } => {
                if let Some(e) = self.refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                if !dry_run && let Some(e) = self.check_space() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let shared = self.shared.clone();
                let (db, wal, decoded) = self.engine_and_decoded();
                let decoded = (!dry_run).then_some(decoded);
                let result = apply_documents(&db, wal, decoded, objects, dry_run, &shared.stats);
                self.note_failure();
                self.count_decoded();
                let result = result.map(|(outcome, logged)| {
                    if !dry_run {
                        self.remember(&logged);
                        self.publish(&outcome.changes);
                    }
                    outcome
                });
                let _ = reply.send(result);
            }
            Job::Token { op, reply } => {
                if let Some(e) = self.refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                if matches!(op, TokenOp::Create(_))
                    && let Some(e) = self.check_space()
                {
                    let _ = reply.send(Err(e));
                    return;
                }
                let result = self.token(op);
                let _ = reply.send(result);
            }
            Job::Checkpoint { reply } => {
                let result = match self.refusal() {
                    Some(e) => Err(e),
                    None => {
                        self.checkpoint(false);
                        match self.wal.as_ref().and_then(Wal::failure) {
                            Some(e) => Err(e.refusal()),
                            None => Ok(()),
                        }
                    }
                };
                let _ = reply.send(result);
            }
        }
        self.note_failure();
    }

    /// Writes a token change in a durable commit, which also makes every
    /// earlier commit durable: the log then starts over, as after a
    /// checkpoint. A failed commit leaves the outcome unknown.
    fn token(&mut self, op: TokenOp) -> Result<Option<Token>, StoreError> {
        let (db, wal) = self.engine();
        let txn = db
            .begin_write()
            .map_err(|e| engine_error("could not start the commit", e));
        let txn = match txn {
            Ok(t) => t,
            Err(e) => {
                wal.fail(e.clone());
                return Err(e.refusal());
            }
        };
        let answer = {
            let mut table = txn
                .open_table(TOKENS)
                .map_err(|e| engine_error("could not open the tokens", e).refusal())?;
            match op {
                TokenOp::Create(t) => {
                    let taken = table
                        .get(t.name.as_str())
                        .map_err(|e| engine_error("could not read the tokens", e).refusal())?
                        .is_some();
                    if taken {
                        return Err(StoreError::TokenExists(t.name));
                    }
                    table
                        .insert(t.name.as_str(), codec::encode_token(&t).as_slice())
                        .map_err(|e| engine_error("could not store the token", e).refusal())?;
                    None
                }
                TokenOp::Revoke(name) => {
                    let old = table
                        .remove(name.as_str())
                        .map_err(|e| engine_error("could not remove the token", e).refusal())?
                        .map(|v| codec::decode_token(&name, v.value()))
                        .transpose()?;
                    match old {
                        Some(t) => Some(t),
                        None => return Err(StoreError::TokenNotFound(name)),
                    }
                }
            }
        };
        match commit_durably(txn) {
            Ok(()) => {
                wal.reset();
                Ok(answer)
            }
            Err(e) => {
                wal.fail(e.clone());
                Err(e.outcome_unknown())
            }
        }
    }

    /// The open database and log (only called while not failed).
    fn engine(&mut self) -> (Arc<Database>, &mut Wal) {
        let (db, wal, _) = self.engine_and_decoded();
        (db, wal)
    }

    /// [`Writer::engine`], and the decoded objects batches plan from.
    fn engine_and_decoded(&mut self) -> (Arc<Database>, &mut Wal, &mut Decoded) {
        let db = self.db.clone().expect("open while not failed");
        let wal = self.wal.as_mut().expect("open while not failed");
        (db, wal, &mut self.decoded)
    }

    /// Publishes how many reads the decoded objects answered.
    fn count_decoded(&self) {
        let (kept, decoded) = self.decoded.counts();
        let stats = &self.shared.stats;
        stats.decoded_kept.store(kept, Ordering::Relaxed);
        stats.decoded_records.store(decoded, Ordering::Relaxed);
    }

    /// Publishes changes, once each.
    fn publish(&mut self, changes: &[Change]) {
        let fresh: Vec<Change> = changes
            .iter()
            .filter(|c| c.revision > self.published)
            .cloned()
            .collect();
        if let Some(last) = fresh.last() {
            let last = last.revision;
            self.feed.publish(&fresh);
            self.published = last;
        }
    }

    /// Puts the records of a commit's changes (those not yet published)
    /// in the ring, before they are published: a watcher that finds a gap
    /// in the feed then catches up past it from the ring, as from the log
    /// ([`Recent::remember`]).
    fn remember(&self, logged: &[Logged]) {
        self.shared.recent.remember(self.published, logged);
    }

    /// Enters the failed state if the log says storage failed.
    fn note_failure(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let Some(why) = self.wal.as_ref().and_then(Wal::failure).cloned() else {
            return;
        };
        // A compaction not yet durable may or may not survive recovery.
        for (reply, _) in self.unacked.drain(..) {
            let e = why.reworded(|what| {
                format!("storage failed ({what}) before the compaction was durable")
            });
            let _ = reply.send(Err(e.outcome_unknown()));
        }
        self.shared.count_error(&why);
        if why.is_no_space() && !self.spare_released {
            let freed = open::release_spare(&self.path, &self.options);
            if freed > 0 {
                self.spare_released = true;
                tracing::warn!(
                    freed,
                    "the disk is full: deleted the spare file so that the store can recover \
                     from its log and serve reads and deletes"
                );
            }
        }
        let cause = if why.is_no_space() {
            RefusedCause::StorageFull
        } else {
            RefusedCause::StorageFailed
        };
        self.shared.set_refused(Some(Refusal {
            cause,
            message: format!(
                "storage failed ({why}); writes are refused until the store has recovered from \
                 its log{}",
                if cause == RefusedCause::StorageFull {
                    ", once space is freed"
                } else {
                    ""
                }
            ),
        }));
        let logged = self.wal.as_ref().map_or(0, Wal::logged_bytes);
        self.failure = Some(Failure {
            why,
            logged,
            next_try: Instant::now(),
            attempts: 0,
            closed: false,
        });
    }

    /// Whether storage keeps failing right after recovering
    /// ([`MAX_RECOVERIES`] recoveries within [`FLAPPING_WINDOW`], the cause
    /// not a full disk): then the process should stop.
    fn flapping(&self) -> bool {
        self.recoveries.len() >= MAX_RECOVERIES
            && self
                .recoveries
                .front()
                .is_some_and(|t| t.elapsed() < FLAPPING_WINDOW)
    }

    /// Tries to recover from a failure, if one is due: once there is room
    /// again (after a full disk), closes the store and reopens it from
    /// disk.
    fn recover_if_due(&mut self) {
        let flapping = self.flapping();
        let Some(f) = &mut self.failure else { return };
        let now = Instant::now();
        if now < f.next_try {
            return;
        }
        if flapping && !f.why.is_no_space() {
            let msg = format!(
                "storage failed again right after {MAX_RECOVERIES} recoveries within {}s: {}",
                FLAPPING_WINDOW.as_secs(),
                f.why
            );
            open::drop_caches(&self.path, &self.options);
            *self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
            f.next_try = now + Duration::from_secs(3600);
            return;
        }
        let waiting_for_space = f.why.is_no_space() && {
            // The replay's room only: the reserve is kept by refusing
            // writes once recovered.
            let need = RECOVERY_ROOM.max(f.logged.saturating_mul(REPLAY_FACTOR));
            self.options
                .disk
                .free_bytes(&self.path)
                .is_ok_and(|free| free < need)
        };
        if waiting_for_space {
            f.next_try = now + Duration::from_secs(1);
            return;
        }
        if !f.closed {
            // Readers keep the failed database (its cached pages still
            // answer) until now.
            f.closed = true;
            self.shared.set_db(None);
            self.shared.snapshots.clear();
            let weak = self.db.as_ref().map(Arc::downgrade);
            self.db = None;
            self.wal = None;
            // In-flight reads hold the database for a moment; it must be
            // closed (its lock released) before it is opened again.
            let deadline = Instant::now() + Duration::from_secs(5);
            while weak.as_ref().is_some_and(|w| w.strong_count() > 0) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        open::drop_caches(&self.path, &self.options);
        match open::open(&self.path, &self.options) {
            Ok(opened) => {
                let db = opened.db.clone();
                self.db = Some(opened.db);
                self.wal = Some(opened.wal);
                // Watchers hear of what the replay brought back before
                // readers can see it.
                self.publish_replayed(&db);
                self.shared.set_db(Some(db.clone()));
                self.shared.stats.recoveries.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.set_sizes(opened.sizes);
                self.failure = None;
                self.recoveries.push_back(Instant::now());
                while self.recoveries.len() > MAX_RECOVERIES {
                    self.recoveries.pop_front();
                }
                self.space = None;
                self.shared.set_refused(None);
                // Refusals that outlast the failure (the spare file is
                // gone, low space) are in force at once.
                self.check_space();
                tracing::info!(
                    replayed = opened.replayed,
                    "recovered from the storage failure; accepting writes again"
                );
            }
            Err(e) => {
                let f = self.failure.as_mut().expect("failed");
                f.attempts += 1;
                let backoff = Duration::from_millis(250u64 << f.attempts.min(5)).min(MAX_BACKOFF);
                f.next_try = Instant::now() + backoff;
                if f.attempts == 1 {
                    tracing::error!(error = %e, "could not reopen the store; retrying");
                }
                // A full disk (e.g. the replay needs more room than was
                // freed) is waited out, however long; other failures give
                // up after a while. Told by the error's kind: its wording
                // ("No space left on device") never says "full".
                let room = !matches!(&e, StoreError::Engine(e) if e.is_no_space());
                if room && f.attempts >= MAX_ATTEMPTS {
                    let msg = format!(
                        "the store could not recover from a storage failure after {} attempts: {e}",
                        f.attempts
                    );
                    open::drop_caches(&self.path, &self.options);
                    *self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                    f.next_try = Instant::now() + Duration::from_secs(3600);
                }
            }
        }
    }

    /// Publishes what the recovery's replay brought back that was never
    /// published (writes whose outcome was unknown, and turned out
    /// durable).
    fn publish_replayed(&mut self, db: &Database) {
        loop {
            let page = match read::read_events(db, self.published, 1024) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the replayed history");
                    return;
                }
            };
            if page.events.is_empty() {
                self.shared
                    .stats
                    .committing
                    .fetch_max(page.current, Ordering::SeqCst);
                return;
            }
            let mut prev = self.published;
            let changes: Vec<Change> = page
                .events
                .into_iter()
                .map(|(revision, change, object, before)| {
                    let c = Change {
                        revision,
                        prev,
                        change,
                        object: Arc::new(object),
                        before,
                    };
                    prev = revision;
                    c
                })
                .collect();
            self.publish(&changes);
            // Published without their records: the ring starts again after
            // them.
            self.shared.recent.start(self.published);
        }
    }

    /// A durable redb commit, after which the log starts over; `closing`
    /// marks the stop clean. After a failure (redb then refuses further
    /// writes) the log keeps the changes for the recovery.
    fn checkpoint(&mut self, closing: bool) {
        let (db, wal) = self.engine();
        let sabotage = wal.sabotage();
        if sabotage.clear_log_before_checkpoint {
            wal.reset();
        }
        let began = Instant::now();
        let done = (|| -> Result<(), StoreError> {
            if closing {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.set_quick_repair(true);
                txn.open_table(META)?.insert(CLEAN_KEY, 1)?;
                txn.commit()?;
                Ok(())
            } else {
                wal::checkpoint(&db)
            }
        })();
        match done {
            Ok(()) => {
                wal.reset();
                let stats = &self.shared.stats;
                stats.checkpoint_time.observe(began.elapsed());
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => wal.fail(match e {
                StoreError::Engine(e) => e.reworded(|w| format!("checkpoint failed: {w}")),
                other => EngineError::msg(format!("checkpoint failed: {other}")),
            }),
        }
        self.note_failure();
        self.answer_durable_compactions();
    }
}

/// One write transaction being filled: its tables, the journal of its
/// changes for the write-ahead log, and the last revision handed out.
struct Batch<'txn> {
    tables: WriteTables<'txn>,
    journal: Journal,
    revision: u64,
    logged: Vec<Logged>,
}

impl Batch<'_> {
    /// Executes a plan: each step takes the next revision, is stored (or
    /// removed) with its event, and is journaled.
    fn execute(&mut self, plan: Plan) -> Result<WriteOutcome, StoreError> {
        let (steps, answer) = match plan {
            Plan::Unchanged(object) => {
                return Ok(WriteOutcome {
                    object: Arc::new(object),
                    changes: Vec::new(),
                });
            }
            Plan::Steps { steps, answer } => (steps, Ok(answer)),
            // Steps around the request's object, which stays as it is.
            Plan::Around { steps, object } => (steps, Err(object)),
        };
        let mut changes = Vec::with_capacity(steps.len());
        for step in steps {
            self.revision += 1;
            let revision = self.revision;
            let mut object = step.object;
            object.meta_mut().resource_version = revision;
            let record = codec::encode(&object);
            let object = Arc::new(object);
            let event = self.tables.store_change(
                revision,
                step.change,
                step.kind,
                &step.key,
                &record,
                step.before.as_deref(),
            )?;
            self.logged.push(Logged::new(revision, event));
            self.journal
                .push(revision, step.change, step.kind, &step.key, &record);
            if let Some(decoded) = self.tables.decoded.as_deref_mut() {
                match step.change {
                    ChangeType::Modified => {
                        decoded.put(step.kind, &step.key, record, object.clone());
                    }
                    ChangeType::Added | ChangeType::Deleted => decoded.forget(step.kind, &step.key),
                }
            }
            changes.push(Change {
                revision,
                prev: revision - 1,
                change: step.change,
                object,
                before: step.before,
            });
        }
        let object = match answer {
            Ok(i) => changes[i].object.clone(),
            Err(object) => Arc::new(object),
        };
        Ok(WriteOutcome { object, changes })
    }
}

/// What [`with_batch`] did.
struct BatchRun<T> {
    /// `f`'s result.
    result: T,
    /// The revision before the batch.
    start: u64,
    /// The revision after it (`start` if it changed nothing).
    end: u64,
    /// The event record of each change committed (none when nothing is
    /// committed: no change, or not `keep`).
    logged: Vec<Logged>,
}

/// Runs `f` on a batch in a new write transaction, then commits it through
/// the log if it changed anything and `keep` is set, else aborts it. A
/// storage failure before the log was written refuses the batch (nothing
/// written) and stops the log; see [`commit`] for failures after.
fn with_batch<T>(
    db: &Database,
    wal: &mut Wal,
    decoded: Option<&mut Decoded>,
    stats: &WriterStats,
    keep: bool,
    f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError>,
) -> Result<BatchRun<T>, StoreError> {
    wal.check().map_err(|e| match e {
        StoreError::Engine(e) => e.refusal(),
        other => other,
    })?;
    let refuse = |wal: &mut Wal, e: StoreError| match e {
        StoreError::Engine(e) => {
            wal.fail(e.clone());
            e.refusal()
        }
        other => other,
    };
    let began = Instant::now();
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return Err(refuse(wal, e.into())),
    };
    type Planned<T> = (T, u64, u64, Journal, Vec<Logged>, Option<Sizes>);
    let planned = (|| -> Result<Planned<T>, StoreError> {
        let mut meta = txn.open_table(META)?;
        let start = tables::revision(&meta)?;
        let mut tables = WriteTables::open(&txn)?;
        tables.decoded = decoded;
        let mut batch = Batch {
            tables,
            journal: Journal::default(),
            revision: start,
            logged: Vec::new(),
        };
        let result = f(&mut batch)?;
        let mut sizes = None;
        if batch.revision != start && keep {
            meta.insert(REVISION_KEY, batch.revision)?;
            sizes = Some(Sizes::put(&mut meta, stats.sizes(), batch.tables.delta)?);
        }
        Ok((
            result,
            start,
            batch.revision,
            batch.journal,
            batch.logged,
            sizes,
        ))
    })();
    let (result, start, end, mut journal, mut logged, sizes) = match planned {
        Ok(p) => p,
        Err(e) if e.is_storage_failure() => return Err(refuse(wal, e)),
        Err(e) => return Err(e),
    };
    if end != start && keep {
        commit(txn, wal, &mut journal, stats)?;
        stats.commit_time.observe(began.elapsed());
        if let Some(sizes) = sizes {
            stats.set_sizes(sizes);
        }
    } else {
        logged.clear();
        if let Err(e) = txn.abort() {
            return Err(refuse(wal, e.into()));
        }
    }
    Ok(BatchRun {
        result,
        start,
        end,
        logged,
    })
}

type Outcomes = Vec<Result<WriteOutcome, StoreError>>;

/// Plans and executes a batch of requests in one transaction; a refused
/// request fails alone, a storage failure fails them all. A panic while
/// planning one request (a bug) fails that request alone: planning writes
/// nothing. Answers the outcomes and the event records of their changes.
fn commit_batch(
    db: &Database,
    wal: &mut Wal,
    decoded: &mut Decoded,
    ops: Vec<WriteOp>,
    stats: &WriterStats,
) -> Result<(Outcomes, Vec<Logged>), StoreError> {
    let now = now();
    let BatchRun {
        result: outcomes,
        start,
        end,
        logged,
    } = with_batch(db, wal, Some(decoded), stats, true, |batch| {
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let planned = catch_unwind(AssertUnwindSafe(|| plan::plan(&mut batch.tables, op, now)))
                .unwrap_or_else(|_| {
                    Err(StoreError::Internal(
                        "the server hit a bug planning this request (see its log); nothing was \
                         written"
                            .into(),
                    ))
                });
            let outcome = planned.and_then(|p| batch.execute(p));
            match outcome {
                Err(e) if matches!(e, StoreError::Engine(_)) => return Err(e),
                r => outcomes.push(r),
            }
        }
        Ok(outcomes)
    })?;
    if end != start {
        stats.commits.fetch_add(1, Ordering::Relaxed);
    }
    Ok((outcomes, logged))
}

/// Applies documents in order in one transaction of their own: each is
/// created if missing, else gets its labels and spec replaced. Any failure
/// (tagged with the document's index) aborts the whole transaction.
/// Answers the outcome and the event records of its changes.
fn apply_documents(
    db: &Database,
    wal: &mut Wal,
    decoded: Option<&mut Decoded>,
    objects: Vec<Document>,
    dry_run: bool,
    stats: &WriterStats,
) -> Result<(ApplyOutcome, Vec<Logged>), StoreError> {
    let now = now();
    let BatchRun {
        result: (items, changes),
        start,
        end,
        logged,
    } = with_batch(db, wal, decoded, stats, !dry_run, |batch| {
        let planned = plan::plan_apply(&mut batch.tables, objects, now)?;
        plan::execute_apply(planned, |p| batch.execute(p))
    })?;
    let outcome = ApplyOutcome {
        items,
        changes,
        revision: if dry_run { start } else { end },
    };
    Ok((outcome, logged))
}

/// Compaction is not logged: its transaction is committed without
/// durability, like a batch, and made durable by the next checkpoint (the
/// writer answers it then; lost in a crash before, it only leaves the
/// events in place). It drops the events older than the last `keep`
/// revisions and, while the history takes more than `budget` bytes (0: no
/// budget), the oldest beyond that, a bounded chunk at a time. A failure
/// before the commit refuses it (nothing was dropped); a failed commit
/// leaves the outcome unknown.
fn compact(
    db: &Database,
    wal: &mut Wal,
    keep: u64,
    budget: u64,
    stats: &WriterStats,
) -> Result<u64, StoreError> {
    wal.check()?;
    let run = || -> Result<Option<(WriteTransaction, u64, Option<Sizes>)>, StoreError> {
        let mut txn = db.begin_write()?;
        let (dropped, sizes) = {
            let mut meta = txn.open_table(META)?;
            let revision = tables::revision(&meta)?;
            let done = meta.get(COMPACTED_KEY)?.map(|v| v.value()).unwrap_or(0);
            let limit = revision.min(done + COMPACT_CHUNK);
            let mut target = revision.saturating_sub(keep).min(limit);
            let mut events = txn.open_table(EVENTS)?;
            let history = Sizes::read(&meta)?.map_or(0, |s| s.events.max(0) as u64);
            if budget > 0 && history > budget && target < limit {
                // The oldest events whose bytes bring the history under
                // its budget.
                let mut over = (history - budget) as i64;
                for entry in events.range(done + 1..=limit)? {
                    let (rev, value) = entry?;
                    target = target.max(rev.value());
                    over -= value.value().len() as i64;
                    if over <= 0 {
                        break;
                    }
                }
            }
            if target <= done {
                (0, None)
            } else {
                let mut freed = 0i64;
                events.retain_in(done + 1..=target, |_, v| {
                    freed += v.len() as i64;
                    false
                })?;
                meta.insert(COMPACTED_KEY, target)?;
                let sizes = Sizes::add(
                    &mut meta,
                    Sizes {
                        objects: 0,
                        events: -freed,
                    },
                )?;
                (target - done, sizes)
            }
        };
        if dropped == 0 {
            txn.abort()?;
            return Ok(None);
        }
        txn.set_durability(Durability::None)?;
        Ok(Some((txn, dropped, sizes)))
    };
    let (txn, dropped, sizes) = match run() {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(0),
        Err(StoreError::Engine(e)) => {
            wal.fail(e.clone());
            return Err(e.refusal());
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = txn.commit() {
        // The database is in doubt: recovery starts again from its last
        // durable state and the log.
        let e = engine_error("compaction commit failed", e);
        wal.fail(e.clone());
        return Err(e.outcome_unknown());
    }
    if let Some(sizes) = sizes {
        stats.set_sizes(sizes);
    }
    wal.unlogged_commit();
    tracing::debug!(
        dropped,
        "compacted the event log (durable at the next checkpoint)"
    );
    Ok(dropped)
}

/// Makes a transaction's changes durable and visible: logged and synced,
/// then committed to redb without durability; if the log is full, committed
/// durably instead (which empties the log). `stats.committing` says so
/// before readers can see the changes. A failure before the log was
/// written refuses the batch; one while it was written, or of a durable
/// commit, leaves the outcome unknown; a failure of the commit after the
/// log was synced is not the requests' failure (they are durable, and a
/// recovery replays them), so it is only recorded in the log's state.
fn commit(
    mut txn: WriteTransaction,
    wal: &mut Wal,
    journal: &mut Journal,
    stats: &WriterStats,
) -> Result<(), StoreError> {
    let last = journal.last();
    if let Err(e) = txn.set_durability(Durability::None) {
        let e = engine_error("could not start the commit", e);
        wal.fail(e.clone());
        return Err(e.refusal());
    }
    let syncing = Instant::now();
    let appended = wal.append(journal);
    if let Ok(Appended::Logged) = appended {
        stats.log_sync_time.observe(syncing.elapsed());
    }
    let appended = match appended {
        Ok(a) => a,
        Err(AppendError::Refused(StoreError::Engine(e))) => return Err(e.refusal()),
        Err(AppendError::Refused(e)) => return Err(e),
        Err(AppendError::Unknown(e)) => return Err(e.outcome_unknown()),
    };
    // Said just before readers can see it: not earlier (lists are served
    // from their cache only while nothing is in flight), not later.
    if let Some(last) = last {
        stats.committing.store(last, Ordering::SeqCst);
    }
    match appended {
        Appended::Logged => {
            if let Err(e) = txn.commit() {
                // Logged and synced: durable. The recovery replays it.
                wal.fail(engine_error("commit failed after logging", e));
            }
        }
        Appended::Full => {
            // A durable commit in place of the log: a checkpoint.
            let began = Instant::now();
            if let Err(e) = commit_durably(txn) {
                wal.fail(e.clone());
                return Err(e.outcome_unknown());
            }
            wal.reset();
            stats.checkpoint_time.observe(began.elapsed());
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Commits `txn` with an fsync (and quick repair), which makes every
/// earlier non-durable commit durable too.
fn commit_durably(mut txn: WriteTransaction) -> Result<(), EngineError> {
    txn.set_durability(Durability::Immediate)
        .map_err(|e| engine_error("durable commit failed", e))?;
    txn.set_quick_repair(true);
    txn.commit()
        .map_err(|e| engine_error("durable commit failed", e))
}

fn now() -> crate::model::Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}
