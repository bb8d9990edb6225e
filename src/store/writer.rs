//! The single writer: every write request goes through one thread that
//! applies queued requests in one redb write transaction and commits once
//! (group commit), with immediate durability, before acknowledging any.
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
use std::sync::mpsc::{Receiver, TryRecvError};

use redb::{Database, ReadableTable};
use tokio::sync::oneshot;

use super::tables::{META, REVISION_KEY, WriteTables};
use super::{StoreError, codec, keys};
use crate::model::{AnyObject, Kind, Path};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;

/// A write request.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create an object at its own path; its parent must exist.
    Create(AnyObject),
    /// Replace labels and spec of an existing object (status kept).
    Replace {
        /// The new labels and spec (path from its name and coordinates).
        object: AnyObject,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
    },
    /// Replace the status of an existing object (labels, spec kept).
    ReplaceStatus {
        /// The new status.
        object: AnyObject,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
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
    /// deletion's revision).
    pub object: AnyObject,
}

/// The result of a successful write request.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// The object as stored after the write (delete: its last state).
    pub object: AnyObject,
    /// The changes, in revision order; empty when nothing changed.
    pub changes: Vec<Change>,
}

/// Called after each commit with the batch's changes, in revision order.
pub type CommitHook = Arc<dyn Fn(&[Change]) + Send + Sync>;

/// A queued request and where its answer goes.
pub(super) struct Job {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// The writer thread's loop: runs until every sender is dropped.
pub(super) fn run(db: Arc<Database>, rx: Receiver<Job>, hook: Option<CommitHook>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
        match commit_batch(&db, ops) {
            Ok(outcomes) => {
                if let Some(hook) = &hook {
                    let changes: Vec<Change> = outcomes
                        .iter()
                        .filter_map(|o| o.as_ref().ok())
                        .flat_map(|o| o.changes.iter().cloned())
                        .collect();
                    if !changes.is_empty() {
                        hook(&changes);
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

type Outcomes = Vec<Result<WriteOutcome, StoreError>>;

fn commit_batch(db: &Database, ops: Vec<WriteOp>) -> Result<Outcomes, StoreError> {
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let changed;
    {
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
    }
    if changed {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(outcomes)
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

fn put(tables: &mut WriteTables<'_>, key: &[u8], obj: &AnyObject) -> Result<(), StoreError> {
    tables
        .of(obj.kind())
        .insert(key, codec::encode(obj).as_slice())?;
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
            put(tables, &key, &obj)?;
            Ok(single(*rev, ChangeType::Added, obj))
        }
        WriteOp::Replace {
            object,
            precondition,
        } => {
            let path = object.path();
            let key = keys::encode(path.names());
            let stored = tables
                .get(path.kind(), &key)?
                .ok_or_else(|| StoreError::NotFound(path.clone()))?;
            check_precondition(&path, &stored, precondition)?;
            let same_spec = stored.same_spec(&object);
            if same_spec && stored.meta().labels == object.meta().labels {
                return Ok(unchanged(stored));
            }
            let mut updated = stored.with_spec_of(&object);
            *rev += 1;
            let meta = updated.meta_mut();
            meta.labels = object.meta().labels.clone();
            meta.resource_version = *rev;
            if !same_spec {
                meta.generation += 1;
            }
            put(tables, &key, &updated)?;
            Ok(single(*rev, ChangeType::Modified, updated))
        }
        WriteOp::ReplaceStatus {
            object,
            precondition,
        } => {
            let path = object.path();
            let key = keys::encode(path.names());
            let stored = tables
                .get(path.kind(), &key)?
                .ok_or_else(|| StoreError::NotFound(path.clone()))?;
            check_precondition(&path, &stored, precondition)?;
            if stored.same_status(&object) {
                return Ok(unchanged(stored));
            }
            let mut updated = stored.with_status_of(&object);
            *rev += 1;
            updated.meta_mut().resource_version = *rev;
            put(tables, &key, &updated)?;
            Ok(single(*rev, ChangeType::Modified, updated))
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
                changes.push(Change {
                    revision: *rev,
                    change: ChangeType::Deleted,
                    object: obj,
                });
            }
            tables.of(path.kind()).remove(key.as_slice())?;
            *rev += 1;
            let mut last = stored;
            last.meta_mut().resource_version = *rev;
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

fn single(revision: u64, change: ChangeType, object: AnyObject) -> WriteOutcome {
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
        object,
        changes: Vec::new(),
    }
}
