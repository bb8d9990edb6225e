//! Writes: every request is one etcd transaction.
//!
//! The shared planner ([`plan`]) runs over a [`View`] of what the request
//! reads; every read becomes a compare of the write transaction (an
//! object's `mod_revision`, a parent's `create_revision`, a child range's
//! emptiness, and, for a cascade, that nothing in the ranges it removes
//! changed since the view), together with the prefix's storage format. A
//! compare that fails means someone wrote in between: the request is
//! planned again on a fresh view, after a jittered pause, until a deadline.
//! A request's first plan reads this replica's copy of the objects
//! (possibly behind; without a copy, the member's own data, serializable);
//! a refusal or no-op planned from it is confirmed on a fresh view (the
//! copy once it holds every acknowledged write, else a linearizable read),
//! so that a refused request never reaches etcd's log. Every transaction
//! also puts `P/m/written` (see `cache`). A cascade removes each descendant
//! kind's range with one `DeleteRange`, whose deleted keys are exactly the
//! changes reported. A write etcd may have applied without confirming it
//! is read back: a record identical to ours (a create carries its new uid)
//! is the write's success; anything else is `OutcomeUnknown`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

use super::cache::At;
use super::cache::Kv;
use super::error::{EtcdError, contention};
use super::inner::{EtcdStore, Inner};
use super::layout::prefix_end;
use crate::model::{AnyObject, Kind, Path, Timestamp};
use crate::store::change::{ApplyOutcome, Change, ChangeType, Document, WriteOp, WriteOutcome};
use crate::store::error::StoreError;
use crate::store::plan::{self, Plan, ReadView, Scanned, Step};
use crate::store::{codec, keys};

fn now() -> Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

impl EtcdStore {
    /// Runs one write request as one transaction.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let inner = &self.0;
        inner.check_open()?;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        // Writes to one object through this replica take turns instead of
        // overtaking each other in etcd.
        let _turn = inner.turn(&op).await;
        let reads = reads_of(&op, inner.options.max_cascade_objects);
        let mut retry = Retry::new(inner);
        // The first plan reads this replica's copy of the objects (or,
        // without one, the member's: no round trip to the leader); its
        // transaction's compares make it exact. A refusal or a no-op
        // planned from it is confirmed on a linearizable read first, so a
        // refused write never reaches etcd's log.
        let mut local = true;
        loop {
            let mut view = if local {
                let cached = match inner.cache.lagging() {
                    true => None,
                    false => View::cached(inner, &reads, At::Any),
                };
                match cached {
                    Some(view) => view,
                    None => View::read_local(inner, &reads).await?,
                }
            } else {
                View::current(inner, &reads).await?
            };
            match plan::plan(&mut view, op.clone(), now()) {
                Err(e) if local && !e.is_storage_failure() => {
                    local = false;
                    continue;
                }
                Err(e) => return Err(e),
                Ok(Plan::Unchanged(_)) if local => {
                    local = false;
                    continue;
                }
                Ok(Plan::Unchanged(object)) => {
                    return Ok(WriteOutcome {
                        object: Arc::new(object),
                        changes: Vec::new(),
                    });
                }
                // Only a view that settles plans steps around an object.
                Ok(Plan::Around { .. }) => {
                    return Err(StoreError::Internal(
                        "the etcd write planner settled a subtree in a request".into(),
                    ));
                }
                Ok(Plan::Steps { steps, answer }) => {
                    match inner.execute(steps, answer, view, false).await {
                        Ok(Some(outcome)) => return Ok(outcome),
                        Ok(None) => {}
                        // A cascade counted on a copy that was behind:
                        // count again on a fresh view.
                        Err(StoreError::TooLarge(_)) if local => {
                            local = false;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            // A first plan on a copy that was behind is no conflict: plan
            // again at once, on a fresh view.
            if !std::mem::replace(&mut local, false) {
                retry.conflict().await?;
            }
        }
    }

    /// Creates or configures `objects` in one transaction.
    pub async fn apply(
        &self,
        objects: Vec<Document>,
        dry_run: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let inner = &self.0;
        inner.check_open()?;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        // What a create reads (its ancestors) and what a write of a
        // terminating object reads (whether it has children: one more than
        // the documents of its children may remove).
        let mut children_of: HashMap<Path, usize> = HashMap::new();
        for (o, _) in &objects {
            if let Some(parent) = o.path().parent() {
                *children_of.entry(parent).or_default() += 1;
            }
        }
        let reads: Vec<Read> = objects
            .iter()
            .flat_map(|(o, _)| {
                let path = o.path();
                let enough = 1 + children_of.get(&path).copied().unwrap_or(0);
                let mut r = ancestors(&path);
                r.extend(children(&path, Some(enough)));
                r
            })
            .collect();
        let mut retry = Retry::new(inner);
        loop {
            let mut view = View::current(inner, &reads).await?;
            let planned = plan::plan_apply(&mut view, objects.clone(), now())?;
            let mut steps = Vec::new();
            let mut written = HashMap::new();
            for (index, (_, p)) in planned.iter().enumerate() {
                if let Plan::Steps { steps: s, .. } = p {
                    for step in s {
                        if let Some(first) = written.insert((step.kind, step.key.clone()), index) {
                            return Err(StoreError::Document {
                                index,
                                source: Box::new(StoreError::Rejected {
                                    invalid: true,
                                    field: Some("metadata.name".into()),
                                    message: format!(
                                        "{} is also written by documents[{first}]: on etcd one \
                                         apply writes an object at most once (merge the two \
                                         documents)",
                                        step.object.path()
                                    ),
                                }),
                            });
                        }
                        steps.push(step.clone());
                    }
                }
            }
            let read_at = view.revision;
            let revision = if steps.is_empty() || dry_run {
                read_at + 1
            } else {
                let answer = steps.len().saturating_sub(1);
                match inner.execute(steps, answer, view, true).await? {
                    Some(outcome) => {
                        let first = outcome.changes.first().map_or(0, |c| c.revision);
                        inner.revs.split(first).map_or(0, |(r, _)| r)
                    }
                    None => {
                        retry.conflict().await?;
                        continue;
                    }
                }
            };
            let mut index = 0;
            let mut prev = inner.revs.position(revision - 1);
            let (items, changes) = plan::execute_apply(planned, |p| {
                Ok(stamp(inner, p, revision, &mut index, &mut prev))
            })?;
            let position = if changes.is_empty() || dry_run {
                inner.revs.position(read_at)
            } else {
                inner.revs.position(revision)
            };
            return Ok(ApplyOutcome {
                items,
                changes,
                revision: position,
            });
        }
    }
}

/// Retries after conflicting writes: with a growing, jittered pause, until
/// twice the etcd timeout has passed.
struct Retry<'a> {
    inner: &'a Inner,
    deadline: Instant,
    pause: Duration,
}

impl<'a> Retry<'a> {
    fn new(inner: &'a Inner) -> Retry<'a> {
        Retry {
            inner,
            deadline: Instant::now() + inner.options.timeout * 2,
            pause: Duration::from_millis(1),
        }
    }

    /// Counts a conflict and waits before the next attempt; `Err` once
    /// the deadline is near.
    async fn conflict(&mut self) -> Result<(), StoreError> {
        self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
        // 50% to 150% of the pause, so that writers who collided do not
        // collide again.
        let spread = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        let pause = self.pause * (500 + spread) / 1000;
        if Instant::now() + pause > self.deadline {
            return Err(contention());
        }
        tokio::time::sleep(pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(64));
        Ok(())
    }
}

/// Gives a plan's steps their resourceVersions in etcd revision `r`,
/// continuing at `index`.
fn stamp(inner: &Inner, plan: Plan, r: i64, index: &mut u64, prev: &mut u64) -> WriteOutcome {
    match plan {
        Plan::Unchanged(o) | Plan::Around { object: o, .. } => WriteOutcome {
            object: Arc::new(o),
            changes: Vec::new(),
        },
        Plan::Steps { steps, answer } => {
            let changes: Vec<Change> = steps
                .into_iter()
                .map(|mut s| {
                    let revision = inner.revs.rv(r, *index);
                    *index += 1;
                    s.object.meta_mut().resource_version = revision;
                    let c = Change {
                        revision,
                        prev: *prev,
                        change: s.change,
                        object: Arc::new(s.object),
                        before: s.before,
                    };
                    *prev = revision;
                    c
                })
                .collect();
            let object = changes[answer].object.clone();
            WriteOutcome { object, changes }
        }
    }
}

/// What a request reads before planning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Read {
    /// One object (or its absence).
    Object(Kind, Vec<u8>),
    /// The first objects (all: `None`) of `kind` under a key prefix.
    Under(Kind, Vec<u8>, Option<usize>),
    /// The same, for a cascade: a full read means the subtree may hold
    /// more, which the planner may see in part (more than
    /// `--max-cascade-objects` is refused anyway).
    Subtree(Kind, Vec<u8>, usize),
}

impl Read {
    /// The etcd read that answers it.
    fn request(&self, l: &super::layout::Layout) -> (Vec<u8>, GetOptions) {
        match self {
            Read::Object(kind, key) => (l.object(*kind, key), GetOptions::new()),
            Read::Under(kind, key, limit) => {
                let start = l.object(*kind, key);
                let end = prefix_end(&start);
                let options = GetOptions::new().with_range(end);
                match limit {
                    Some(n) => (start, options.with_limit(*n as i64)),
                    None => (start, options),
                }
            }
            Read::Subtree(kind, key, limit) => {
                Read::Under(*kind, key.clone(), Some(*limit)).request(l)
            }
        }
    }
}

impl Read {
    /// How many objects it reads under its prefix (`None`: all).
    fn limit(&self) -> Option<usize> {
        match self {
            Read::Object(..) => Some(1),
            Read::Under(_, _, limit) => *limit,
            Read::Subtree(_, _, limit) => Some(*limit),
        }
    }

    /// How many objects the planner may ask of it when it came back full:
    /// what it read (`None`: any number, since it read all, or it is a
    /// subtree, whose part is enough to plan from).
    fn bound(&self) -> Option<usize> {
        match self {
            Read::Under(_, _, limit) => *limit,
            _ => None,
        }
    }
}

/// The reads of the object at `path` and of every ancestor.
fn ancestors(path: &Path) -> Vec<Read> {
    let mut reads = Vec::new();
    let mut next = Some(path.clone());
    while let Some(p) = next {
        reads.push(Read::Object(p.kind(), keys::encode(p.names())));
        next = p.parent();
    }
    reads
}

/// The read of the first `limit` children of the object at `path`.
fn children(path: &Path, limit: Option<usize>) -> Option<Read> {
    let kind = path.kind().child()?;
    Some(Read::Under(kind, keys::encode(path.names()), limit))
}

/// `reads` without repeats, in order.
fn distinct(reads: &[Read]) -> Vec<&Read> {
    let mut seen = HashSet::new();
    reads.iter().filter(|r| seen.insert(*r)).collect()
}

/// What the planner reads for `op`: the object; for a create every
/// ancestor (none may be terminating); for a write whether it has children
/// (a terminating object left without finalizers goes only without); for
/// a delete its children (plain: all of them, to tell whether they are all
/// terminating), or for a cascade its subtree, up to one more object per
/// kind than `--max-cascade-objects` allows.
fn reads_of(op: &WriteOp, max_cascade: u64) -> Vec<Read> {
    let own = |path: &Path| Read::Object(path.kind(), keys::encode(path.names()));
    match op {
        WriteOp::Create(obj) => ancestors(&obj.path()),
        WriteOp::Replace { object, .. } => {
            let path = object.path();
            let mut r = vec![own(&path)];
            r.extend(children(&path, Some(1)));
            r
        }
        WriteOp::Update { path, .. } => {
            let mut r = vec![own(path)];
            r.extend(children(path, Some(1)));
            r
        }
        WriteOp::Delete {
            path,
            cascade: false,
            ..
        } => {
            let mut r = vec![own(path)];
            r.extend(children(path, None));
            r
        }
        WriteOp::Delete {
            path,
            cascade: true,
            ..
        } => {
            let key = keys::encode(path.names());
            let cap = usize::try_from(max_cascade)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let mut r = vec![own(path)];
            for kind in Kind::ALL.iter().filter(|k| **k > path.kind()) {
                r.push(Read::Subtree(*kind, key.clone(), cap));
            }
            r
        }
    }
}

/// Objects read under a key prefix.
struct Under {
    kvs: Vec<Kv>,
    /// The revision they were read at.
    at: i64,
    /// How many the planner may ask for (see [`Read::bound`]).
    bound: Option<usize>,
}

/// What the planner sees: the reads fetched before it ran, and the
/// compares they become.
struct View<'a> {
    inner: &'a Inner,
    objects: HashMap<(Kind, Vec<u8>), Option<Kv>>,
    /// Objects under a key prefix.
    under: HashMap<(Kind, Vec<u8>), Under>,
    /// Compares by etcd key (one per key; a read of an object's content
    /// outranks a check of its existence).
    compares: HashMap<Vec<u8>, (bool, Compare)>,
    /// Ranges the planner read whole, deepest kind first: what a cascade
    /// removes with one `DeleteRange` each.
    ranges: Vec<(Kind, Vec<u8>)>,
    /// etcd's revision when the reads were made.
    revision: i64,
}

impl<'a> View<'a> {
    fn empty(inner: &'a Inner) -> View<'a> {
        View {
            inner,
            objects: HashMap::new(),
            under: HashMap::new(),
            compares: HashMap::new(),
            ranges: Vec::new(),
            revision: 0,
        }
    }

    /// Fetches `reads` linearizably, in as few read transactions as etcd's
    /// limit allows.
    async fn read(inner: &'a Inner, reads: &[Read]) -> Result<View<'a>, StoreError> {
        let mut view = View::empty(inner);
        let reads = distinct(reads);
        for chunk in reads.chunks(inner.options.max_txn_ops.max(1)) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|r| {
                    let (key, options) = r.request(&inner.layout);
                    TxnOp::get(key, Some(options))
                })
                .collect();
            let resp = inner
                .read_txn(&Txn::new().and_then(ops))
                .await
                .map_err(EtcdError::read)?;
            if view.revision == 0 {
                view.revision = super::inner::header_revision(resp.header());
            }
            for (r, got) in chunk.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Get(g) = got else {
                    return Err(StoreError::Internal(
                        "etcd answered a read with a write".into(),
                    ));
                };
                view.record(r, &g);
            }
        }
        Ok(view)
    }

    /// `reads` as of a linearizable read: from this replica's copy once it
    /// holds every acknowledged write, else from etcd.
    async fn current(inner: &'a Inner, reads: &[Read]) -> Result<View<'a>, StoreError> {
        if let Some(r) = inner.fresh().await?
            && let Some(view) = View::cached(inner, reads, At::From(r))
        {
            return Ok(view);
        }
        View::read(inner, reads).await
    }

    /// `reads` from this replica's copy of the objects, if it has one at a
    /// revision `at` allows (`At::Any`: possibly behind etcd).
    fn cached(inner: &'a Inner, reads: &[Read], at: At) -> Option<View<'a>> {
        let mut view = View::empty(inner);
        let reads = distinct(reads);
        let l = &inner.layout;
        inner.cache.with(at, |s| {
            view.revision = s.revision();
            for r in reads {
                match r {
                    Read::Object(kind, key) => {
                        view.objects
                            .insert((*kind, key.clone()), s.get(&l.object(*kind, key)));
                    }
                    Read::Under(kind, key, _) | Read::Subtree(kind, key, _) => {
                        let start = l.object(*kind, key);
                        let limit = r.limit().unwrap_or(usize::MAX);
                        let (kvs, _) = s.range(&start, &prefix_end(&start), limit);
                        let under = Under {
                            kvs,
                            at: s.revision(),
                            bound: r.bound(),
                        };
                        view.under.insert((*kind, key.clone()), under);
                    }
                }
            }
        })?;
        Some(view)
    }

    /// Fetches `reads` from the member's own copy (serializable: no round
    /// trip to the leader, possibly behind), all at once.
    async fn read_local(inner: &'a Inner, reads: &[Read]) -> Result<View<'a>, StoreError> {
        let mut view = View::empty(inner);
        let reads = distinct(reads);
        let fetches = reads.iter().map(|r| {
            let (key, options) = r.request(&inner.layout);
            inner.get(key, options.with_serializable())
        });
        let answers = futures_util::future::try_join_all(fetches)
            .await
            .map_err(EtcdError::read)?;
        for (r, g) in reads.iter().zip(&answers) {
            view.revision = view.revision.max(super::inner::header_revision(g.header()));
            view.record(r, g);
        }
        Ok(view)
    }

    fn record(&mut self, read: &Read, got: &GetResponse) {
        match read {
            Read::Object(kind, key) => {
                let first = got.kvs().first().map(Kv::from);
                self.objects.insert((*kind, key.clone()), first);
            }
            Read::Under(kind, key, _) | Read::Subtree(kind, key, _) => {
                let at = super::inner::header_revision(got.header());
                let kvs = got.kvs().iter().map(Kv::from).collect();
                let under = Under {
                    kvs,
                    at,
                    bound: read.bound(),
                };
                self.under.insert((*kind, key.clone()), under);
            }
        }
    }

    fn compare(&mut self, key: Vec<u8>, content: bool, c: Compare) {
        match self.compares.get(&key) {
            Some((true, _)) => {}
            Some((false, _)) if !content => {}
            _ => {
                self.compares.insert(key, (content, c));
            }
        }
    }

    fn missing(what: &str) -> StoreError {
        StoreError::Internal(format!(
            "the etcd write planner read {what}, which it did not fetch"
        ))
    }

    fn decode(&self, kind: Kind, kv: &Kv) -> Result<AnyObject, StoreError> {
        self.inner.decode(kind, kv)
    }
}

impl ReadView for View<'_> {
    fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
        let Some(found) = self.objects.get(&(kind, key.to_vec())) else {
            return Err(View::missing("an object"));
        };
        let (m, obj) = match found {
            Some(kv) => (kv.mod_revision, Some(self.decode(kind, kv)?)),
            None => (0, None),
        };
        let k = self.inner.layout.object(kind, key);
        self.compare(
            k.clone(),
            true,
            Compare::mod_revision(k, CompareOp::Equal, m),
        );
        Ok(obj)
    }

    fn exists(&mut self, kind: Kind, key: &[u8]) -> Result<bool, StoreError> {
        let k = self.inner.layout.object(kind, key);
        let Some(found) = self.objects.get(&(kind, key.to_vec())) else {
            return Err(View::missing("an object's existence"));
        };
        let c = found.as_ref().map_or(0, |kv| kv.create_revision);
        let exists = found.is_some();
        self.compare(
            k.clone(),
            false,
            Compare::create_revision(k, CompareOp::Equal, c),
        );
        Ok(exists)
    }

    fn scan(&mut self, kind: Kind, prefix: &[u8], limit: Option<usize>) -> Scanned {
        let Some(Under { kvs, at, bound }) = self.under.get(&(kind, prefix.to_vec())) else {
            return Err(View::missing("the objects under a prefix"));
        };
        let at = *at;
        // A read that came back full cannot answer for more than it holds.
        if let Some(n) = bound
            && kvs.len() >= *n
            && limit.is_none_or(|l| l > kvs.len())
        {
            return Err(View::missing("more objects under a prefix than it read"));
        }
        let mut found = Vec::new();
        for kv in kvs.iter().take(limit.unwrap_or(usize::MAX)) {
            let Some((k, key)) = self.inner.layout.parse(&kv.key) else {
                continue;
            };
            found.push((key, self.decode(k, kv)?));
        }
        // Nothing in the range changed since it was read: no object came,
        // none was written (so a cascade's `DeleteRange` removes exactly
        // what was read).
        let start = self.inner.layout.object(kind, prefix);
        let end = prefix_end(&start);
        self.compare(
            start.clone(),
            true,
            Compare::mod_revision(start, CompareOp::Less, at + 1).with_range(end),
        );
        if limit.is_none() {
            self.ranges.push((kind, prefix.to_vec()));
        }
        Ok(found)
    }

    fn settles(&self) -> bool {
        false
    }
}

/// Writes taking turns on one object.
const TURNS_KEPT: usize = 4096;

impl Inner {
    /// Waits for this replica's earlier writes of the object `op` writes
    /// (not for a create): without it, concurrent updates of one object
    /// through one replica would mostly fail their compares and retry.
    async fn turn(&self, op: &WriteOp) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let path = match op {
            WriteOp::Create(_) => return None,
            WriteOp::Replace { object, .. } => object.path(),
            WriteOp::Update { path, .. } | WriteOp::Delete { path, .. } => path.clone(),
        };
        let key = self.layout.object(path.kind(), &keys::encode(path.names()));
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            if turns.len() >= TURNS_KEPT {
                turns.retain(|_, l| Arc::strong_count(l) > 1);
            }
            turns.entry(key).or_default().clone()
        };
        Some(lock.lock_owned().await)
    }

    /// An object from its stored record: the record keeps the change's
    /// index within its transaction; the resourceVersion adds etcd's
    /// revision.
    pub(super) fn decode(&self, kind: Kind, kv: &Kv) -> Result<AnyObject, StoreError> {
        let mut obj = codec::decode(kind, &kv.value)?;
        let index = obj.meta().resource_version;
        obj.meta_mut().resource_version = self.revs.rv(kv.mod_revision, index);
        Ok(obj)
    }

    /// Runs `steps` as one transaction with the view's compares; the
    /// request answers `steps[answer]`. `None`: a compare failed (plan
    /// again). `apply`: the steps of several documents, answered by the
    /// caller.
    async fn execute(
        &self,
        steps: Vec<Step>,
        answer: usize,
        view: View<'_>,
        apply: bool,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        let l = &self.layout;
        let mut ops = Vec::new();
        let mut bytes = 0usize;
        let deleting = steps.iter().any(|s| s.change == ChangeType::Deleted);
        // A cascade removes each range it read whole with one operation,
        // then its root.
        let ranged =
            !view.ranges.is_empty() && steps.iter().all(|s| s.change == ChangeType::Deleted);
        if ranged {
            let max = self.options.max_cascade_objects;
            if steps.len() as u64 > max {
                return Err(StoreError::TooLarge(format!(
                    "this cascade would delete {}{} objects in one transaction; \
                     --max-cascade-objects allows {max}: nothing was deleted (delete the subtree \
                     in parts, children first, or give its root a finalizer: a subtree with \
                     finalizers is removed in the background, in as many transactions as it \
                     takes)",
                    steps.len(),
                    if steps.len() as u64 > max + 1 {
                        " or more"
                    } else {
                        ""
                    },
                )));
            }
            for (kind, prefix) in &view.ranges {
                let start = l.object(*kind, prefix);
                let end = prefix_end(&start);
                ops.push(TxnOp::delete(
                    start,
                    Some(DeleteOptions::new().with_range(end).with_prev_key()),
                ));
            }
            let root = &steps[answer];
            ops.push(TxnOp::delete(
                l.object(root.kind, &root.key),
                Some(DeleteOptions::new().with_prev_key()),
            ));
        } else {
            let mut puts = self.records(&steps).into_iter();
            for s in &steps {
                if s.change == ChangeType::Deleted {
                    ops.push(TxnOp::delete(l.object(s.kind, &s.key), None));
                } else if let Some((key, value)) = puts.next() {
                    bytes += key.len() + value.len();
                    ops.push(TxnOp::put(key, value, None));
                }
            }
        }
        // The last write's revision, for the copies' freshness checks.
        ops.push(TxnOp::put(l.meta("written"), "", None));
        let mut compares = vec![self.format_compare()];
        compares.extend(view.compares.into_values().map(|(_, c)| c));
        let max = self.options.max_txn_ops;
        if compares.len() > max || ops.len() > max {
            return Err(StoreError::TooLarge(format!(
                "this request needs {} conditions and {} operations in its one etcd transaction; \
                 the cluster allows {max} of each (etcd --max-txn-ops, modelhub \
                 --etcd-max-txn-ops): nothing was written (apply fewer documents at once)",
                compares.len(),
                ops.len()
            )));
        }
        if bytes > self.options.max_request_bytes {
            return Err(StoreError::TooLarge(format!(
                "this request writes {bytes} bytes in its one etcd transaction; the cluster accepts \
                 {} (etcd --max-request-bytes, modelhub --etcd-max-request-bytes): nothing was \
                 written",
                self.options.max_request_bytes
            )));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = match self.txn(&txn).await {
            Ok(resp) => resp,
            Err(e) => match self.settle(e, &txn, &steps, deleting).await? {
                Settled::Answered(resp) => resp,
                Settled::Stored(r) => return Ok(Some(self.committed(r, steps, answer).await)),
            },
        };
        if !resp.succeeded() {
            return Ok(None);
        }
        let r = super::inner::header_revision(resp.header());
        if apply || !ranged {
            return Ok(Some(self.committed(r, steps, answer).await));
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.published(r).await;
        self.outcome(&resp).map(Some)
    }

    /// The outcome of `steps` (one event each, in order), committed at
    /// etcd revision `r` (an apply takes only `r` from it: it numbers its
    /// documents' changes).
    async fn committed(&self, r: i64, steps: Vec<Step>, answer: usize) -> WriteOutcome {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.published(r).await;
        let mut prev = self.revs.position(r - 1);
        stamp(self, Plan::Steps { steps, answer }, r, &mut 0, &mut prev)
    }

    /// The changes a committed cascade made: what its deletes removed (as
    /// etcd reports them, in the order of its events); it answers its root,
    /// removed last.
    fn outcome(&self, resp: &TxnResponse) -> Result<WriteOutcome, StoreError> {
        let mut steps = Vec::new();
        {
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = op {
                    for kv in d.prev_kvs() {
                        let kv = Kv::from(kv);
                        let Some((kind, key)) = self.layout.parse(&kv.key) else {
                            continue;
                        };
                        steps.push(Step {
                            before: None,
                            change: ChangeType::Deleted,
                            kind,
                            object: self.decode(kind, &kv)?,
                            key,
                        });
                    }
                }
            }
            if steps.is_empty() {
                return Err(StoreError::Internal(
                    "a committed delete removed nothing".into(),
                ));
            }
        }
        let r = super::inner::header_revision(resp.header());
        let mut prev = self.revs.position(r - 1);
        let answer = steps.len() - 1;
        Ok(stamp(
            self,
            Plan::Steps { steps, answer },
            r,
            &mut 0,
            &mut prev,
        ))
    }

    /// A write etcd did not confirm. A refusal if nothing can have been
    /// written. Else the same transaction is sent again until the deadline:
    /// its compares let at most one of the two apply, so an answer to the
    /// second is the request's answer; if its compares fail (the first may
    /// have applied), or no answer comes, reading back settles it when the
    /// stored records are exactly the ones written (a create's carry its
    /// new uid); otherwise the outcome is unknown (`OutcomeUnknown`).
    async fn settle(
        &self,
        e: EtcdError,
        txn: &Txn,
        steps: &[Step],
        deleting: bool,
    ) -> Result<Settled, StoreError> {
        if e.too_large().is_some() || e.never_sent() {
            return Err(e.refusal_or_unknown());
        }
        tracing::warn!(error = %e.message(), "etcd did not confirm a write: sending it again");
        let deadline = Instant::now() + self.options.timeout * 2;
        let mut last = e;
        while Instant::now() < deadline && !last.is_no_space() {
            match self.txn(txn).await {
                Ok(resp) if resp.succeeded() => return Ok(Settled::Answered(resp)),
                Ok(_) => break,
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // A delete cannot be told from another's: only puts are settled.
        let puts = if deleting {
            Vec::new()
        } else {
            self.records(steps)
        };
        if let Some(r) = self.stored(&puts).await {
            tracing::info!(revision = r, "the unconfirmed write was applied");
            return Ok(Settled::Stored(r));
        }
        Err(last.refusal_or_unknown())
    }

    /// The keys and records of the puts of `steps` as the transaction
    /// writes them: each record keeps its change's index in the
    /// transaction (its step's).
    pub(super) fn records(&self, steps: &[Step]) -> Vec<(Vec<u8>, Vec<u8>)> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, step)| step.change != ChangeType::Deleted)
            .map(|(index, step)| {
                let mut obj = step.object.clone();
                obj.meta_mut().resource_version = index as u64;
                (
                    self.layout.object(step.kind, &step.key),
                    codec::encode(&obj),
                )
            })
            .collect()
    }

    /// The etcd revision at which every `(key, value)` of `puts` is stored
    /// exactly as given, if they are (one transaction wrote them).
    async fn stored(&self, puts: &[(Vec<u8>, Vec<u8>)]) -> Option<i64> {
        let mut at = None;
        for (key, value) in puts {
            let kv = self.get_raw(key).await.ok()??;
            if kv.value != value || at.is_some_and(|r| r != kv.mod_revision) {
                return None;
            }
            at = Some(kv.mod_revision);
        }
        at
    }
}

/// How an unconfirmed write was settled.
enum Settled {
    /// Sent again and answered (that answer is the request's).
    Answered(TxnResponse),
    /// Found stored, written at this etcd revision.
    Stored(i64),
}
