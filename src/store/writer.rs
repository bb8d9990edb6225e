//! The single writer: every write request goes through one thread that
//! applies queued requests in one redb write transaction and commits once
//! (group commit), durable before any is acknowledged: the batch's changes
//! are appended to the write-ahead log (module `wal`) and synced, then
//! committed to redb without durability; periodic checkpoints (durable redb
//! commits) make the log's contents redundant.
//!
//! Invariants:
//! - Each request is all-or-nothing: an operation checks everything
//!   (existence, preconditions) before it mutates, so a failed request
//!   leaves no trace in the shared transaction. A storage failure aborts
//!   the whole batch and every request in it fails.
//! - Revisions: a request changing k objects takes the next k revisions,
//!   in order; the last one handed out is persisted in the same
//!   transaction.
//! - Observers ([`CommitHook`]) are told about changes only after commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::tables::{COMPACTED_KEY, EVENTS, META, REVISION_KEY, WriteTables};
use super::wal::{self, Appended, Journal, Wal};
use super::{StoreError, codec, keys};
use crate::model::{AnyObject, Kind, Path};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;

/// Which part of an object a replace or update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Labels and spec (status kept; generation +1 if the spec changed).
    Main,
    /// The status subresource (labels, spec and generation kept).
    Status,
}

/// Computes an object's new version from its stored one, inside the write
/// transaction (read-modify-write without a lost update). An error rejects
/// the request.
pub type UpdateFn = Box<dyn FnOnce(&AnyObject) -> Result<AnyObject, StoreError> + Send>;

/// A write request.
pub enum WriteOp {
    /// Create an object at its own path; its parent must exist.
    Create(AnyObject),
    /// Replace one part of an existing object.
    Replace {
        /// The new labels and spec, or status (path from its name and
        /// coordinates).
        object: AnyObject,
        /// Which part.
        part: Part,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
    },
    /// Replace one part of an existing object with what `update` computes
    /// from the stored object (e.g. a merge patch).
    Update {
        /// The object.
        path: Path,
        /// Which part.
        part: Part,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
        /// The new version from the stored one.
        update: UpdateFn,
    },
    /// Delete an object, with its subtree if `cascade`.
    Delete {
        /// The object.
        path: Path,
        /// Remove children too (children first).
        cascade: bool,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
    },
}

/// What a change did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Labels, spec or status replaced.
    Modified,
    /// Removed.
    Deleted,
}

/// One object changed at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The revision of this change (also the object's `resourceVersion`).
    pub revision: u64,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (for `Deleted`: its last state, with the
    /// deletion's revision). Shared with the request's outcome.
    pub object: Arc<AnyObject>,
}

/// The result of a successful write request.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// The object as stored after the write (delete: its last state).
    pub object: Arc<AnyObject>,
    /// The changes, in revision order; empty when nothing changed.
    pub changes: Vec<Change>,
}

/// What applying one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist: created.
    Created,
    /// It existed: labels or spec replaced.
    Configured,
    /// It existed with the same labels and spec: nothing written.
    Unchanged,
}

/// The result of an apply request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// Per document, in order: what happened and the object afterwards.
    pub items: Vec<(Applied, Arc<AnyObject>)>,
    /// The changes, in revision order (for a dry run: what would have been
    /// written; never committed or published).
    pub changes: Vec<Change>,
    /// The store revision after the request.
    pub revision: u64,
}

/// Called after each commit with the batch's changes, in revision order
/// (possibly in several calls, each with the next changes).
pub type CommitHook = Arc<dyn Fn(&[Change]) + Send + Sync>;

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
pub struct WriterStats {
    /// Write requests handled (including failed ones).
    pub requests: AtomicU64,
    /// Transactions committed to disk.
    pub commits: AtomicU64,
    /// Checkpoints of the write-ahead log into the database.
    pub checkpoints: AtomicU64,
    /// The newest revision committed or being committed by this writer
    /// (0 before its first commit): readers may see it from the moment its
    /// commit starts, before the commit hook has been told.
    pub committing: AtomicU64,
}

/// The writer thread's loop: runs until every sender is dropped.
pub(super) fn run(
    db: Arc<Database>,
    mut wal: Wal,
    rx: Receiver<Job>,
    hook: Option<CommitHook>,
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
                if let (Ok(outcome), Some(hook)) = (&result, &hook)
                    && !dry_run
                    && !outcome.changes.is_empty()
                {
                    hook(&outcome.changes);
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
            Ok((outcomes, committed)) => {
                if committed {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(hook) = &hook {
                    for outcome in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
                        if !outcome.changes.is_empty() {
                            hook(&outcome.changes);
                        }
                    }
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

/// Applies documents in order in one transaction: each is created if
/// missing, else gets its labels and spec replaced. Any failure (tagged
/// with the document's index) aborts the whole transaction.
fn apply_documents(
    db: &Database,
    wal: &mut Wal,
    objects: Vec<AnyObject>,
    dry_run: bool,
    stats: &WriterStats,
) -> Result<ApplyOutcome, StoreError> {
    wal.check()?;
    let txn = db.begin_write()?;
    let mut items = Vec::with_capacity(objects.len());
    let mut changes = Vec::new();
    let (start, rev, mut journal) = {
        let mut meta = txn.open_table(META)?;
        let start = meta.get(REVISION_KEY)?.map(|v| v.value()).unwrap_or(0);
        let mut rev = start;
        let mut tables = WriteTables::open(&txn)?;
        let now = now();
        for (index, object) in objects.into_iter().enumerate() {
            let path = object.path();
            let key = keys::encode(path.names());
            let tag = |e: StoreError| match e {
                StoreError::Internal(_) => e,
                other => StoreError::Document {
                    index,
                    source: Box::new(other),
                },
            };
            let stored = tables.get(path.kind(), &key).map_err(tag)?;
            let (applied, outcome) = match stored {
                None => (
                    Applied::Created,
                    apply(&mut tables, &mut rev, now, WriteOp::Create(object)).map_err(tag)?,
                ),
                Some(stored) => {
                    let outcome = replace(&mut tables, &mut rev, &key, stored, &object, Part::Main)
                        .map_err(tag)?;
                    let applied = if outcome.changes.is_empty() {
                        Applied::Unchanged
                    } else {
                        Applied::Configured
                    };
                    (applied, outcome)
                }
            };
            changes.extend(outcome.changes);
            items.push((applied, outcome.object));
        }
        if rev != start && !dry_run {
            meta.insert(REVISION_KEY, rev)?;
        }
        (start, rev, std::mem::take(&mut tables.journal))
    };
    if rev != start && !dry_run {
        commit(txn, wal, &mut journal, stats)?;
    } else {
        txn.abort()?;
    }
    Ok(ApplyOutcome {
        items,
        changes,
        revision: if dry_run { start } else { rev },
    })
}

/// Compaction is not logged: its transaction is committed durably, which
/// also checkpoints the log.
fn compact(db: &Database, wal: &mut Wal, keep: u64) -> Result<u64, StoreError> {
    wal.check()?;
    let txn = db.begin_write()?;
    let dropped = {
        let mut meta = txn.open_table(META)?;
        let revision = meta.get(REVISION_KEY)?.map(|v| v.value()).unwrap_or(0);
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
            wal.fail(format!("compaction commit failed: {e}"));
            return Err(e.into());
        }
        wal.reset();
        tracing::debug!(dropped, "compacted the event log");
    }
    Ok(dropped)
}

type Outcomes = Vec<Result<WriteOutcome, StoreError>>;

/// Applies a batch in one transaction; answers the outcomes and whether
/// anything was committed.
fn commit_batch(
    db: &Database,
    wal: &mut Wal,
    ops: Vec<WriteOp>,
    stats: &WriterStats,
) -> Result<(Outcomes, bool), StoreError> {
    wal.check()?;
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let changed;
    let mut journal = {
        let mut meta = txn.open_table(META)?;
        let start = meta.get(REVISION_KEY)?.map(|v| v.value()).unwrap_or(0);
        let mut rev = start;
        let mut tables = WriteTables::open(&txn)?;
        let now = now();
        for op in ops {
            match apply(&mut tables, &mut rev, now, op) {
                Err(StoreError::Internal(e)) => return Err(StoreError::Internal(e)),
                r => outcomes.push(r),
            }
        }
        changed = rev != start;
        if changed {
            meta.insert(REVISION_KEY, rev)?;
        }
        std::mem::take(&mut tables.journal)
    };
    if changed {
        commit(txn, wal, &mut journal, stats)?;
    } else {
        txn.abort()?;
    }
    Ok((outcomes, changed))
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
                wal.fail(format!("commit failed after logging: {e}"));
                return Err(e.into());
            }
        }
        Appended::Full => {
            txn.set_durability(Durability::Immediate)?;
            if let Err(e) = txn.commit() {
                wal.fail(format!("durable commit failed: {e}"));
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
        Err(e) => wal.fail(format!("checkpoint failed: {e}")),
    }
}

fn now() -> crate::model::Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

fn check_precondition(
    path: &Path,
    stored: &AnyObject,
    want: Option<u64>,
) -> Result<(), StoreError> {
    match want {
        Some(expected) if expected != stored.meta().resource_version => Err(StoreError::Conflict {
            path: path.clone(),
            expected,
            actual: stored.meta().resource_version,
        }),
        _ => Ok(()),
    }
}

/// Stores an object and logs its change at `revision`.
fn put(
    tables: &mut WriteTables<'_>,
    key: &[u8],
    obj: &AnyObject,
    revision: u64,
    change: ChangeType,
) -> Result<(), StoreError> {
    let record = codec::encode(obj);
    tables.of(obj.kind()).insert(key, record.as_slice())?;
    log_event(tables, revision, change, obj.kind(), key, &record)
}

/// Appends an event to the log, in the same transaction as the change, and
/// journals the change for the write-ahead log.
fn log_event(
    tables: &mut WriteTables<'_>,
    revision: u64,
    change: ChangeType,
    kind: Kind,
    key: &[u8],
    record: &[u8],
) -> Result<(), StoreError> {
    let event = codec::encode_event(change, kind, record);
    tables.events().insert(revision, event.as_slice())?;
    tables.journal.push(revision, change, kind, key, record);
    Ok(())
}

fn apply(
    tables: &mut WriteTables<'_>,
    rev: &mut u64,
    now: crate::model::Timestamp,
    op: WriteOp,
) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::Create(mut obj) => {
            let path = obj.path();
            if let Some(parent) = path.parent()
                && tables
                    .of(parent.kind())
                    .get(keys::encode(parent.names()).as_slice())?
                    .is_none()
            {
                return Err(StoreError::ParentNotFound { parent });
            }
            let key = keys::encode(path.names());
            if tables.of(path.kind()).get(key.as_slice())?.is_some() {
                return Err(StoreError::AlreadyExists(path));
            }
            *rev += 1;
            let meta = obj.meta_mut();
            meta.uid = uuid::Uuid::new_v4().to_string();
            meta.resource_version = *rev;
            meta.generation = 1;
            meta.creation_timestamp = now;
            put(tables, &key, &obj, *rev, ChangeType::Added)?;
            Ok(single(*rev, ChangeType::Added, obj))
        }
        WriteOp::Replace {
            object,
            part,
            precondition,
        } => {
            let path = object.path();
            let key = keys::encode(path.names());
            let stored = tables
                .get(path.kind(), &key)?
                .ok_or_else(|| StoreError::NotFound(path.clone()))?;
            check_precondition(&path, &stored, precondition)?;
            replace(tables, rev, &key, stored, &object, part)
        }
        WriteOp::Update {
            path,
            part,
            precondition,
            update,
        } => {
            let key = keys::encode(path.names());
            let stored = tables
                .get(path.kind(), &key)?
                .ok_or_else(|| StoreError::NotFound(path.clone()))?;
            check_precondition(&path, &stored, precondition)?;
            let object = update(&stored)?;
            if object.path() != path {
                return Err(StoreError::BadRequest(format!(
                    "an update may not move {path} to {}",
                    object.path()
                )));
            }
            replace(tables, rev, &key, stored, &object, part)
        }
        WriteOp::Delete {
            path,
            cascade,
            precondition,
        } => {
            let key = keys::encode(path.names());
            let stored = tables
                .get(path.kind(), &key)?
                .ok_or_else(|| StoreError::NotFound(path.clone()))?;
            check_precondition(&path, &stored, precondition)?;
            // Every descendant's key starts with this object's key; deepest
            // kinds first, so children always go before their parents.
            let (start, end) = keys::prefix_range(&key);
            let end = end.expect("object keys are non-empty");
            let mut doomed: Vec<(Kind, Vec<u8>, Vec<u8>)> = Vec::new();
            for kind in Kind::ALL.iter().rev().filter(|k| **k > path.kind()) {
                for entry in tables.of(*kind).range(start.as_slice()..end.as_slice())? {
                    let (k, v) = entry?;
                    if !cascade {
                        return Err(StoreError::HasChildren {
                            path,
                            child: Path::new(*kind, keys::decode(k.value())),
                        });
                    }
                    doomed.push((*kind, k.value().to_vec(), v.value().to_vec()));
                }
            }
            let mut changes = Vec::with_capacity(doomed.len() + 1);
            for (kind, k, v) in doomed {
                let mut obj = codec::decode(kind, &v)?;
                tables.of(kind).remove(k.as_slice())?;
                *rev += 1;
                obj.meta_mut().resource_version = *rev;
                log_event(
                    tables,
                    *rev,
                    ChangeType::Deleted,
                    kind,
                    &k,
                    &codec::encode(&obj),
                )?;
                changes.push(Change {
                    revision: *rev,
                    change: ChangeType::Deleted,
                    object: Arc::new(obj),
                });
            }
            tables.of(path.kind()).remove(key.as_slice())?;
            *rev += 1;
            let mut last = stored;
            last.meta_mut().resource_version = *rev;
            log_event(
                tables,
                *rev,
                ChangeType::Deleted,
                path.kind(),
                &key,
                &codec::encode(&last),
            )?;
            let last = Arc::new(last);
            changes.push(Change {
                revision: *rev,
                change: ChangeType::Deleted,
                object: last.clone(),
            });
            Ok(WriteOutcome {
                object: last,
                changes,
            })
        }
    }
}

/// Writes `part` of `object` over `stored` (no revision if nothing changes).
fn replace(
    tables: &mut WriteTables<'_>,
    rev: &mut u64,
    key: &[u8],
    stored: AnyObject,
    object: &AnyObject,
    part: Part,
) -> Result<WriteOutcome, StoreError> {
    let mut updated = match part {
        Part::Main => {
            let same_spec = stored.same_spec(object);
            if same_spec && stored.meta().labels == object.meta().labels {
                return Ok(unchanged(stored));
            }
            let mut updated = stored.with_spec_of(object);
            let meta = updated.meta_mut();
            meta.labels = object.meta().labels.clone();
            if !same_spec {
                meta.generation += 1;
            }
            updated
        }
        Part::Status => {
            if stored.same_status(object) {
                return Ok(unchanged(stored));
            }
            stored.with_status_of(object)
        }
    };
    *rev += 1;
    updated.meta_mut().resource_version = *rev;
    put(tables, key, &updated, *rev, ChangeType::Modified)?;
    Ok(single(*rev, ChangeType::Modified, updated))
}

fn single(revision: u64, change: ChangeType, object: AnyObject) -> WriteOutcome {
    let object = Arc::new(object);
    WriteOutcome {
        changes: vec![Change {
            revision,
            change,
            object: object.clone(),
        }],
        object,
    }
}

fn unchanged(object: AnyObject) -> WriteOutcome {
    WriteOutcome {
        object: Arc::new(object),
        changes: Vec::new(),
    }
}
