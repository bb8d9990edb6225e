//! Writes: every request is one etcd transaction.
//!
//! The shared planner ([`plan`]) runs over a [`View`] of what the request
//! reads, fetched in one read transaction; every read becomes a compare of
//! the write transaction (an object's `mod_revision`, a parent's
//! `create_revision`, a child range's emptiness), together with the
//! prefix's storage format. A compare that fails means someone wrote in
//! between: the request is planned again on a fresh read, up to
//! [`MAX_ATTEMPTS`] times. A create first tries without reading at all
//! (parent present, object absent). A cascade removes each descendant
//! kind's range with one `DeleteRange`, whose deleted keys are exactly the
//! changes reported. A write etcd may have applied without confirming it is
//! read back: a record identical to ours (a create carries its new uid) is
//! the write's success; anything else is `OutcomeUnknown`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::layout::prefix_end;
use super::{EtcdError, EtcdStore, Inner, Kv};
use crate::model::{AnyObject, Kind, Path, Timestamp};
use crate::store::change::{ApplyOutcome, Change, ChangeType, WriteOp, WriteOutcome};
use crate::store::error::StoreError;
use crate::store::plan::{self, Plan, ReadView, Scanned, Step};
use crate::store::{codec, keys};

/// Times a request is planned again after a conflicting write.
pub const MAX_ATTEMPTS: usize = 16;

/// The answer after [`MAX_ATTEMPTS`] conflicts.
pub fn contention() -> StoreError {
    StoreError::Unavailable(format!(
        "the object kept changing under this write ({MAX_ATTEMPTS} attempts, each overtaken by \
         another write): nothing was written; retry"
    ))
}

fn now() -> Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

impl EtcdStore {
    /// Runs one write request as one transaction.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let inner = &self.0;
        inner.check_open()?;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        if let WriteOp::Create(obj) = &op {
            // Optimistic: the parent exists and the object does not; a
            // failed compare falls back to reading what is there.
            let mut view = View::optimistic(inner, obj);
            if let Plan::Steps(steps) = plan::plan(&mut view, op.clone(), now())?
                && let Some(outcome) = inner.execute(steps, view, false).await?
            {
                return Ok(outcome);
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut view = View::read(inner, &reads_of(&op)).await?;
            match plan::plan(&mut view, op.clone(), now())? {
                Plan::Unchanged(object) => {
                    return Ok(WriteOutcome {
                        object: Arc::new(object),
                        changes: Vec::new(),
                    });
                }
                Plan::Steps(steps) => {
                    if let Some(outcome) = inner.execute(steps, view, false).await? {
                        return Ok(outcome);
                    }
                }
            }
            inner.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        Err(contention())
    }

    /// Creates or configures `objects` in one transaction.
    pub async fn apply(
        &self,
        objects: Vec<AnyObject>,
        dry_run: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let inner = &self.0;
        inner.check_open()?;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        let reads: Vec<Read> = objects
            .iter()
            .flat_map(|o| {
                let path = o.path();
                let mut r = vec![Read::Object(path.kind(), keys::encode(path.names()))];
                if let Some(p) = path.parent() {
                    r.push(Read::Object(p.kind(), keys::encode(p.names())));
                }
                r
            })
            .collect();
        for _ in 0..MAX_ATTEMPTS {
            let mut view = View::read(inner, &reads).await?;
            let planned = plan::plan_apply(&mut view, objects.clone(), now())?;
            let mut steps = Vec::new();
            let mut written = HashMap::new();
            for (index, (_, p)) in planned.iter().enumerate() {
                if let Plan::Steps(s) = p {
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
                match inner.execute(steps, view, true).await? {
                    Some(outcome) => {
                        let first = outcome.changes.first().map_or(0, |c| c.revision);
                        inner.revs.split(first).map_or(0, |(r, _)| r)
                    }
                    None => {
                        inner.conflicts.fetch_add(1, Ordering::Relaxed);
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
        Err(contention())
    }
}

/// Gives a plan's steps their resourceVersions in etcd revision `r`,
/// continuing at `index`.
fn stamp(inner: &Inner, plan: Plan, r: i64, index: &mut u64, prev: &mut u64) -> WriteOutcome {
    match plan {
        Plan::Unchanged(o) => WriteOutcome {
            object: Arc::new(o),
            changes: Vec::new(),
        },
        Plan::Steps(steps) => {
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
                    };
                    *prev = revision;
                    c
                })
                .collect();
            let object = changes.last().expect("a plan has steps").object.clone();
            WriteOutcome { object, changes }
        }
    }
}

/// What a request reads before planning.
#[derive(Debug, Clone)]
enum Read {
    /// One object (or its absence).
    Object(Kind, Vec<u8>),
    /// The first child of `kind` under a key prefix.
    FirstChild(Kind, Vec<u8>),
    /// How many objects of `kind` are under a key prefix.
    Count(Kind, Vec<u8>),
}

fn reads_of(op: &WriteOp) -> Vec<Read> {
    let own = |path: &Path| Read::Object(path.kind(), keys::encode(path.names()));
    match op {
        WriteOp::Create(obj) => {
            let path = obj.path();
            let mut r = vec![own(&path)];
            if let Some(p) = path.parent() {
                r.push(own(&p));
            }
            r
        }
        WriteOp::Replace { object, .. } => vec![own(&object.path())],
        WriteOp::Update { path, .. } => vec![own(path)],
        WriteOp::Delete { path, cascade, .. } => {
            let key = keys::encode(path.names());
            let mut r = vec![own(path)];
            for kind in Kind::ALL.iter().filter(|k| **k > path.kind()) {
                r.push(if *cascade {
                    Read::Count(*kind, key.clone())
                } else {
                    Read::FirstChild(*kind, key.clone())
                });
            }
            r
        }
    }
}

/// What the planner sees: the reads fetched before it ran (or, for an
/// optimistic create, what the transaction will check), and the compares
/// they become.
struct View<'a> {
    inner: &'a Inner,
    /// The create this view assumes succeeds (optimistic), if any.
    optimistic: Option<(Kind, Vec<u8>)>,
    objects: HashMap<(Kind, Vec<u8>), Option<Kv>>,
    first_child: HashMap<(Kind, Vec<u8>), Option<Kv>>,
    counts: HashMap<(Kind, Vec<u8>), i64>,
    /// Compares by etcd key (one per key; a read of an object's content
    /// outranks a check of its existence).
    compares: HashMap<Vec<u8>, (bool, Compare)>,
    /// Ranges a cascade removes, deepest kind first.
    cascade: Vec<(Kind, Vec<u8>)>,
    /// etcd's revision when the reads were made.
    revision: i64,
}

impl<'a> View<'a> {
    fn optimistic(inner: &'a Inner, obj: &AnyObject) -> View<'a> {
        let path = obj.path();
        View {
            optimistic: Some((path.kind(), keys::encode(path.names()))),
            ..View::empty(inner)
        }
    }

    fn empty(inner: &'a Inner) -> View<'a> {
        View {
            inner,
            optimistic: None,
            objects: HashMap::new(),
            first_child: HashMap::new(),
            counts: HashMap::new(),
            compares: HashMap::new(),
            cascade: Vec::new(),
            revision: 0,
        }
    }

    /// Fetches `reads` in as few read transactions as etcd's limit allows.
    async fn read(inner: &'a Inner, reads: &[Read]) -> Result<View<'a>, StoreError> {
        let mut view = View::empty(inner);
        let l = &inner.layout;
        let mut seen = HashSet::new();
        let reads: Vec<&Read> = reads
            .iter()
            .filter(|r| seen.insert(format!("{r:?}")))
            .collect();
        for chunk in reads.chunks(inner.options.max_txn_ops.max(1)) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|r| match r {
                    Read::Object(kind, key) => TxnOp::get(l.object(*kind, key), None),
                    Read::FirstChild(kind, key) => {
                        let start = l.object(*kind, key);
                        let end = prefix_end(&start);
                        TxnOp::get(start, Some(GetOptions::new().with_range(end).with_limit(1)))
                    }
                    Read::Count(kind, key) => {
                        let start = l.object(*kind, key);
                        let end = prefix_end(&start);
                        TxnOp::get(
                            start,
                            Some(GetOptions::new().with_range(end).with_count_only()),
                        )
                    }
                })
                .collect();
            let resp = inner
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(EtcdError::read)?;
            if view.revision == 0 {
                view.revision = super::header_revision(resp.header());
            }
            for (r, got) in chunk.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Get(g) = got else {
                    return Err(StoreError::Internal(
                        "etcd answered a read with a write".into(),
                    ));
                };
                let first = g.kvs().first().map(Kv::from);
                match r {
                    Read::Object(kind, key) => {
                        view.objects.insert((*kind, key.clone()), first);
                    }
                    Read::FirstChild(kind, key) => {
                        view.first_child.insert((*kind, key.clone()), first);
                    }
                    Read::Count(kind, key) => {
                        view.counts.insert((*kind, key.clone()), g.count());
                    }
                }
            }
        }
        let total: i64 = view.counts.values().sum();
        if !view.counts.is_empty() && total as u64 + 1 > inner.options.max_cascade_objects {
            return Err(StoreError::TooLarge(format!(
                "this cascade would delete {} objects in one transaction; --max-cascade-objects \
                 allows {}: nothing was deleted (delete the subtree in parts, children first)",
                total + 1,
                inner.options.max_cascade_objects
            )));
        }
        Ok(view)
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
        if let Some(target) = &self.optimistic {
            let own = target.0 == kind && target.1 == key;
            let c = if own {
                Compare::create_revision(k.clone(), CompareOp::Equal, 0)
            } else {
                Compare::create_revision(k.clone(), CompareOp::Greater, 0)
            };
            self.compare(k, false, c);
            return Ok(!own);
        }
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
        if limit.is_none() {
            // A cascade: its DeleteRange reports what it removed.
            if !self.counts.contains_key(&(kind, prefix.to_vec())) {
                return Err(View::missing("a subtree"));
            }
            self.cascade.push((kind, prefix.to_vec()));
            return Ok(Vec::new());
        }
        let Some(first) = self.first_child.get(&(kind, prefix.to_vec())) else {
            return Err(View::missing("a first child"));
        };
        match first {
            Some(kv) => {
                let obj = self.decode(kind, kv)?;
                let key = keys::encode(obj.path().names());
                Ok(vec![(key, obj)])
            }
            None => {
                let start = self.inner.layout.object(kind, prefix);
                let end = prefix_end(&start);
                self.compare(
                    start.clone(),
                    false,
                    Compare::create_revision(start, CompareOp::Equal, 0).with_range(end),
                );
                Ok(Vec::new())
            }
        }
    }
}

impl Inner {
    /// An object from its stored record: the record keeps the change's
    /// index within its transaction; the resourceVersion adds etcd's
    /// revision.
    pub(super) fn decode(&self, kind: Kind, kv: &Kv) -> Result<AnyObject, StoreError> {
        let mut obj = codec::decode(kind, &kv.value)?;
        let index = obj.meta().resource_version;
        obj.meta_mut().resource_version = self.revs.rv(kv.mod_revision, index);
        Ok(obj)
    }

    /// Runs `steps` as one transaction with the view's compares. `None`: a
    /// compare failed (plan again). `apply`: the puts of several
    /// documents, answered by the caller.
    async fn execute(
        &self,
        steps: Vec<Step>,
        view: View<'_>,
        apply: bool,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        let l = &self.layout;
        let mut ops = Vec::new();
        let mut bytes = 0usize;
        let mut puts = Vec::new();
        let deleting = steps.iter().any(|s| s.change == ChangeType::Deleted);
        if deleting {
            for (kind, prefix) in &view.cascade {
                let start = l.object(*kind, prefix);
                let end = prefix_end(&start);
                ops.push(TxnOp::delete(
                    start,
                    Some(DeleteOptions::new().with_range(end).with_prev_key()),
                ));
            }
            let root = steps.last().expect("a plan has steps");
            ops.push(TxnOp::delete(
                l.object(root.kind, &root.key),
                Some(DeleteOptions::new().with_prev_key()),
            ));
        } else {
            for (index, step) in steps.iter().enumerate() {
                let mut obj = step.object.clone();
                obj.meta_mut().resource_version = index as u64;
                let key = l.object(step.kind, &step.key);
                let value = codec::encode(&obj);
                bytes += key.len() + value.len();
                puts.push((key.clone(), value.clone()));
                ops.push(TxnOp::put(key, value, None));
            }
        }
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
        let resp = match self.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => return self.settle(e, &steps, &puts, apply).await.map(Some),
        };
        if !resp.succeeded() {
            return Ok(None);
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.published(super::header_revision(resp.header())).await;
        if apply {
            // The caller numbers the documents' changes; it only needs R.
            let r = super::header_revision(resp.header());
            return Ok(Some(WriteOutcome {
                object: Arc::new(steps.last().expect("steps").object.clone()),
                changes: vec![Change {
                    revision: self.revs.rv(r, 0),
                    prev: 0,
                    change: ChangeType::Added,
                    object: Arc::new(steps[0].object.clone()),
                }],
            }));
        }
        self.outcome(&resp, steps, deleting).map(Some)
    }

    /// The changes a committed transaction made.
    fn outcome(
        &self,
        resp: &TxnResponse,
        steps: Vec<Step>,
        deleting: bool,
    ) -> Result<WriteOutcome, StoreError> {
        let r = super::header_revision(resp.header());
        let mut prev = self.revs.position(r - 1);
        let mut changes = Vec::new();
        let mut push = |changes: &mut Vec<Change>, change: ChangeType, mut obj: AnyObject| {
            let revision = self.revs.rv(r, changes.len() as u64);
            obj.meta_mut().resource_version = revision;
            changes.push(Change {
                revision,
                prev,
                change,
                object: Arc::new(obj),
            });
            prev = revision;
        };
        if deleting {
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = op {
                    for kv in d.prev_kvs() {
                        let kv = Kv::from(kv);
                        let Some((kind, _)) = self.layout.parse(&kv.key) else {
                            continue;
                        };
                        let obj = self.decode(kind, &kv)?;
                        push(&mut changes, ChangeType::Deleted, obj);
                    }
                }
            }
        } else {
            for s in steps {
                push(&mut changes, s.change, s.object);
            }
        }
        let object = changes
            .last()
            .ok_or_else(|| StoreError::Internal("a committed delete removed nothing".into()))?
            .object
            .clone();
        Ok(WriteOutcome { object, changes })
    }

    /// A write etcd did not confirm: a refusal if nothing can have been
    /// written; else the write's success if reading back finds exactly
    /// what it put (one object); else `OutcomeUnknown` (or `NoSpace`).
    async fn settle(
        &self,
        e: EtcdError,
        steps: &[Step],
        puts: &[(Vec<u8>, Vec<u8>)],
        apply: bool,
    ) -> Result<WriteOutcome, StoreError> {
        if e.too_large().is_some() || e.never_sent() {
            return Err(e.refusal_or_unknown());
        }
        tracing::warn!(error = %e.message(), "etcd did not confirm a write: reading it back");
        if let ([(key, value)], [step], false) = (puts, steps, apply) {
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                match self.get_raw(key).await {
                    Ok(Some(kv)) if &kv.value == value => {
                        let obj = self.decode(step.kind, &kv)?;
                        self.commits.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(path = %obj.path(), "the unconfirmed write was applied");
                        let obj = Arc::new(obj);
                        return Ok(WriteOutcome {
                            object: obj.clone(),
                            changes: vec![Change {
                                revision: obj.meta().resource_version,
                                prev: self.revs.position(kv.mod_revision - 1),
                                change: step.change,
                                object: obj,
                            }],
                        });
                    }
                    Ok(_) => break,
                    Err(_) => continue,
                }
            }
        }
        Err(e.refusal_or_unknown())
    }
}
