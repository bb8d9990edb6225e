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
//! - The change feed is told about changes only after commit, before the
//!   replies are sent.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::error::engine_error;
use super::tables::{self, COMPACTED_KEY, EVENTS, META, REVISION_KEY, WriteTables};
use super::wal::{self, Appended, Journal, Records, Wal};
use crate::model::AnyObject;
use crate::store::change::{ApplyOutcome, Change, ChangeType, WriteOp, WriteOutcome};
use crate::store::codec;
use crate::store::error::{EngineError, StoreError};
use crate::store::feed::Feed;
use crate::store::plan::{self, Plan};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;

/// Work for the writer thread.
#[expect(clippy::large_enum_variant, reason = "moved once, into the queue")]
pub(super) enum Job {
    /// A write request and where its answer goes.
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    /// Create or configure several objects in one transaction of their own,
    /// all or nothing (`dry_run`: never committed).
    Apply {
        objects: Vec<AnyObject>,
        dry_run: bool,
        reply: oneshot::Sender<Result<ApplyOutcome, StoreError>>,
    },
    /// Drop events older than the last `keep` revisions, one bounded chunk
    /// per transaction; answers how many were dropped.
    Compact {
        keep: u64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// Most events dropped by one compaction transaction, so that compaction
/// never holds the writer for long.
const COMPACT_CHUNK: u64 = 10_000;

/// Counters of the writer's work.
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    /// Write requests handled (including failed ones).
    pub requests: AtomicU64,
    /// Transactions committed to disk.
    pub commits: AtomicU64,
    /// Checkpoints of the write-ahead log into the database.
    pub checkpoints: AtomicU64,
    /// The newest revision committed or being committed by this writer
    /// (0 before its first commit): readers may see it from the moment its
    /// commit starts, before the feed has published it.
    pub committing: AtomicU64,
}

/// The writer thread's loop: runs until every sender is dropped.
pub(super) fn run(
    db: Arc<Database>,
    mut wal: Wal,
    rx: Receiver<Job>,
    feed: Arc<Feed>,
    stats: Arc<WriterStats>,
) {
    let mut pending: Option<Job> = None;
    loop {
        if wal.checkpoint_due() {
            checkpoint(&db, &mut wal, &stats);
        }
        let next = match (pending.take(), wal.until_checkpoint()) {
            (Some(job), _) => Ok(job),
            (None, Some(wait)) => rx.recv_timeout(wait),
            (None, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let first = match next {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                // Closing: leave nothing to replay.
                if wal.until_checkpoint().is_some() {
                    checkpoint(&db, &mut wal, &stats);
                }
                return;
            }
        };
        let (op, reply) = match first {
            Job::Compact { keep, reply } => {
                let _ = reply.send(compact(&db, &mut wal, keep));
                continue;
            }
            Job::Apply {
                objects,
                dry_run,
                reply,
            } => {
                let result = apply_documents(&db, &mut wal, objects, dry_run, &stats);
                if let Ok(outcome) = &result
                    && !dry_run
                {
                    feed.publish(&outcome.changes);
                }
                let _ = reply.send(result);
                continue;
            }
            Job::Write { op, reply } => (op, reply),
        };
        let (mut ops, mut replies) = (vec![op], vec![reply]);
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Job::Write { op, reply }) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Ok(compact) => {
                    pending = Some(compact);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        stats
            .requests
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        match commit_batch(&db, &mut wal, ops, &stats) {
            Ok(outcomes) => {
                for outcome in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
                    feed.publish(&outcome.changes);
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
}

/// One write transaction being filled: its tables, the journal of its
/// changes for the write-ahead log, and the last revision handed out.
struct Batch<'txn> {
    tables: WriteTables<'txn>,
    journal: Journal,
    revision: u64,
}

impl Batch<'_> {
    /// Executes a plan: each step takes the next revision, is stored (or
    /// removed) with its event, and is journaled.
    fn execute(&mut self, plan: Plan) -> Result<WriteOutcome, StoreError> {
        let steps = match plan {
            Plan::Unchanged(object) => {
                return Ok(WriteOutcome {
                    object: Arc::new(object),
                    changes: Vec::new(),
                });
            }
            Plan::Steps(steps) => steps,
        };
        let mut changes = Vec::with_capacity(steps.len());
        for step in steps {
            self.revision += 1;
            let revision = self.revision;
            let mut object = step.object;
            object.meta_mut().resource_version = revision;
            let record = codec::encode(&object);
            match step.change {
                ChangeType::Deleted => {
                    self.tables.of(step.kind).remove(step.key.as_slice())?;
                }
                ChangeType::Added | ChangeType::Modified => {
                    self.tables
                        .of(step.kind)
                        .insert(step.key.as_slice(), record.as_slice())?;
                }
            }
            // The event goes in the same transaction as the change; the
            // journal carries both to the write-ahead log.
            let event = codec::encode_event(step.change, step.kind, &record);
            self.tables.events().insert(revision, event.as_slice())?;
            self.journal
                .push(revision, step.change, step.kind, &step.key, &record);
            changes.push(Change {
                revision,
                prev: revision - 1,
                change: step.change,
                object: Arc::new(object),
            });
        }
        let object = changes.last().expect("a plan has steps").object.clone();
        Ok(WriteOutcome { object, changes })
    }
}

/// Runs `f` on a batch in a new write transaction, then commits it through
/// the log if it changed anything and `keep` is set, else aborts it.
/// Answers `f`'s result, and the revisions before and after.
fn with_batch<T>(
    db: &Database,
    wal: &mut Wal,
    stats: &WriterStats,
    keep: bool,
    f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError>,
) -> Result<(T, u64, u64), StoreError> {
    wal.check()?;
    let txn = db.begin_write()?;
    let (result, start, end, mut journal) = {
        let mut meta = txn.open_table(META)?;
        let start = tables::revision(&meta)?;
        let mut batch = Batch {
            tables: WriteTables::open(&txn)?,
            journal: Journal::default(),
            revision: start,
        };
        let result = f(&mut batch)?;
        if batch.revision != start && keep {
            meta.insert(REVISION_KEY, batch.revision)?;
        }
        (result, start, batch.revision, batch.journal)
    };
    if end != start && keep {
        commit(txn, wal, &mut journal, stats)?;
    } else {
        txn.abort()?;
    }
    Ok((result, start, end))
}

type Outcomes = Vec<Result<WriteOutcome, StoreError>>;

/// Plans and executes a batch of requests in one transaction; a refused
/// request fails alone, a storage failure fails them all.
fn commit_batch(
    db: &Database,
    wal: &mut Wal,
    ops: Vec<WriteOp>,
    stats: &WriterStats,
) -> Result<Outcomes, StoreError> {
    let now = now();
    let (outcomes, start, end) = with_batch(db, wal, stats, true, |batch| {
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let outcome = plan::plan(&mut batch.tables, op, now).and_then(|p| batch.execute(p));
            match outcome {
                Err(e) if e.is_storage_failure() => return Err(e),
                r => outcomes.push(r),
            }
        }
        Ok(outcomes)
    })?;
    if end != start {
        stats.commits.fetch_add(1, Ordering::Relaxed);
    }
    Ok(outcomes)
}

/// Applies documents in order in one transaction of their own: each is
/// created if missing, else gets its labels and spec replaced. Any failure
/// (tagged with the document's index) aborts the whole transaction.
fn apply_documents(
    db: &Database,
    wal: &mut Wal,
    objects: Vec<AnyObject>,
    dry_run: bool,
    stats: &WriterStats,
) -> Result<ApplyOutcome, StoreError> {
    let now = now();
    let ((items, changes), start, end) = with_batch(db, wal, stats, !dry_run, |batch| {
        let planned = plan::plan_apply(&mut batch.tables, objects, now)?;
        plan::execute_apply(planned, |p| batch.execute(p))
    })?;
    Ok(ApplyOutcome {
        items,
        changes,
        revision: if dry_run { start } else { end },
    })
}

/// Compaction is not logged: its transaction is committed durably, which
/// also checkpoints the log.
fn compact(db: &Database, wal: &mut Wal, keep: u64) -> Result<u64, StoreError> {
    wal.check()?;
    let txn = db.begin_write()?;
    let dropped = {
        let mut meta = txn.open_table(META)?;
        let revision = tables::revision(&meta)?;
        let done = meta.get(COMPACTED_KEY)?.map(|v| v.value()).unwrap_or(0);
        let target = revision.saturating_sub(keep).min(done + COMPACT_CHUNK);
        if target <= done {
            0
        } else {
            txn.open_table(EVENTS)?
                .retain_in(done + 1..=target, |_, _| false)?;
            meta.insert(COMPACTED_KEY, target)?;
            target - done
        }
    };
    if dropped == 0 {
        txn.abort()?;
    } else {
        if let Err(e) = txn.commit() {
            let e = engine_error("compaction commit failed", e);
            wal.fail(e.clone());
            return Err(e.into());
        }
        wal.reset();
        tracing::debug!(dropped, "compacted the event log");
    }
    Ok(dropped)
}

/// Makes a transaction's changes durable and visible: logged and synced,
/// then committed to redb without durability; if the log is full, committed
/// durably instead (which empties the log). `stats.committing` says so
/// before readers can see the changes.
fn commit(
    mut txn: WriteTransaction,
    wal: &mut Wal,
    journal: &mut Journal,
    stats: &WriterStats,
) -> Result<(), StoreError> {
    let last = journal.last();
    txn.set_durability(Durability::None)?;
    let appended = wal.append(journal)?;
    // Said just before readers can see it: not earlier (lists are served
    // from their cache only while nothing is in flight), not later.
    if let Some(last) = last {
        stats.committing.store(last, Ordering::SeqCst);
    }
    match appended {
        Appended::Logged => {
            if let Err(e) = txn.commit() {
                // Logged but maybe not applied: a restart replays it.
                let e = engine_error("commit failed after logging", e);
                wal.fail(e.clone());
                return Err(e.into());
            }
        }
        Appended::Full => {
            txn.set_durability(Durability::Immediate)?;
            if let Err(e) = txn.commit() {
                let e = engine_error("durable commit failed", e);
                wal.fail(e.clone());
                return Err(e.into());
            }
            wal.reset();
        }
    }
    Ok(())
}

/// A durable redb commit, after which the log starts over. After a failure
/// (redb then refuses further writes) the log keeps the changes for the
/// restart, and nothing more is written.
fn checkpoint(db: &Database, wal: &mut Wal, stats: &WriterStats) {
    match wal::checkpoint(db) {
        Ok(()) => {
            wal.reset();
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => wal.fail(EngineError::new("checkpoint failed", e)),
    }
}

fn now() -> crate::model::Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// Applies the log's records that continue `db`'s revision, in one
/// durable transaction; answers how many changes were applied. Records at
/// or below the database's revision are skipped; one that would leave a
/// gap, or holds records of another format, stops the start. `log` names
/// the log in errors.
pub(super) fn replay(
    db: &Database,
    records: &(impl Records + ?Sized),
    log: &FsPath,
) -> Result<u64, StoreError> {
    let txn = db.begin_write()?;
    let applied = {
        let mut meta = txn.open_table(META)?;
        let start = tables::revision(&meta)?;
        let mut rev = start;
        let mut tables = WriteTables::open(&txn)?;
        records.for_each_record(&mut |first, entries| {
            if entries.is_empty() || first + entries.len() as u64 - 1 <= rev {
                return Ok(());
            }
            if first != rev + 1 {
                return Err(StoreError::Engine(EngineError::msg(format!(
                    "the write-ahead log continues revision {} but the database is at revision \
                     {rev}: the database file was replaced or lost writes; if that was on \
                     purpose, move the log ({}) aside",
                    first - 1,
                    log.display()
                ))));
            }
            if let Some(e) = entries
                .iter()
                .find(|e| e.record.first() != Some(&codec::RECORD_FORMAT))
            {
                return Err(StoreError::Engine(EngineError::msg(format!(
                    "the write-ahead log {} holds records of format {:?}, and this build \
                     writes format {}: stop the server cleanly with the build that wrote it \
                     (a clean stop leaves the log empty), then start this one",
                    log.display(),
                    e.record.first(),
                    codec::RECORD_FORMAT
                ))));
            }
            for e in entries {
                rev += 1;
                match e.change {
                    ChangeType::Deleted => {
                        tables.of(e.kind).remove(e.key)?;
                    }
                    ChangeType::Added | ChangeType::Modified => {
                        tables.of(e.kind).insert(e.key, e.record)?;
                    }
                }
                let event = codec::encode_event(e.change, e.kind, e.record);
                tables.events().insert(rev, event.as_slice())?;
            }
            Ok(())
        })?;
        if rev != start {
            meta.insert(REVISION_KEY, rev)?;
        }
        rev - start
    };
    if applied > 0 {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::super::wal::tests::journal;
    use super::*;
    use crate::model::Kind;
    use redb::{ReadableDatabase, ReadableTable};

    fn db(dir: &tempfile::TempDir) -> Database {
        super::super::migrate::open(&dir.path().join("t.redb"), 1 << 20).unwrap()
    }

    fn run(db: &Database, bytes: &[u8]) -> Result<u64, StoreError> {
        replay(db, bytes, FsPath::new("t.redb.wal"))
    }

    fn revision(db: &Database) -> u64 {
        let txn = db.begin_read().unwrap();
        tables::read_meta(&txn, REVISION_KEY).unwrap().unwrap_or(0)
    }

    fn events(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(EVENTS).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    #[test]
    fn replay_applies_what_continues_the_database_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut bytes = journal(1, 3).encode();
        bytes.extend(journal(4, 2).encode());
        bytes.extend([0u8; 32]);
        assert_eq!(run(&db, &bytes).unwrap(), 5);
        assert_eq!(revision(&db), 5);
        assert_eq!(events(&db), vec![1, 2, 3, 4, 5]);
        // Replaying the same log again changes nothing.
        assert_eq!(run(&db, &bytes).unwrap(), 0);
        assert_eq!(revision(&db), 5);
    }

    #[test]
    fn replay_skips_stale_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        assert_eq!(run(&db, &journal(1, 5).encode()).unwrap(), 5);
        // A crash right after a checkpoint, before the next append: the
        // log still holds records the database already has.
        assert_eq!(run(&db, &journal(1, 5).encode()).unwrap(), 0);
        let mut bytes = journal(6, 2).encode();
        bytes.extend(journal(2, 3).encode());
        assert_eq!(run(&db, &bytes).unwrap(), 2);
        assert_eq!(revision(&db), 7);
        assert_eq!(events(&db), vec![1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_gap_between_database_and_log_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let err = run(&db, &journal(10, 1).encode()).unwrap_err().to_string();
        assert!(err.contains("continues revision 9"), "{err}");
        assert!(err.contains("at revision 0"), "{err}");
        assert_eq!(revision(&db), 0);
    }

    #[test]
    fn records_of_another_format_refuse_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut j = Journal::default();
        j.push(1, ChangeType::Added, Kind::Realm, b"k", b"\x09rec");
        let err = run(&db, &j.encode()).unwrap_err().to_string();
        assert!(
            err.contains("format Some(9)") && err.contains("clean"),
            "{err}"
        );
        assert_eq!(revision(&db), 0);
    }

    #[test]
    fn deletions_replay_as_removals() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut j = journal(1, 2);
        j.push(3, ChangeType::Deleted, Kind::Realm, b"k1", b"\x01rec");
        assert_eq!(run(&db, &j.encode()).unwrap(), 3);
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(tables::objects(Kind::Realm)).unwrap();
        let keys: Vec<Vec<u8>> = t
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_vec())
            .collect();
        assert_eq!(keys, vec![b"k2".to_vec()]);
    }
}
