//! Terminating subtrees, settled in the background.
//!
//! etcd bounds a transaction (`--max-txn-ops`, 128 by default), so a
//! cascade over a subtree holding finalizers marks only its root in the
//! request's transaction, and a write that removes an object leaves its
//! terminating ancestors where they are. This task does the rest with the
//! shared planner ([`plan::settle`]): from every terminating object without
//! a terminating ancestor, it marks what is not marked and removes, deepest
//! first, whatever has neither finalizers nor children, in as few
//! transactions as the limits allow.
//!
//! Every replica runs it, woken by the feed when a terminating object
//! changes (and once at start). Each transaction compares every object it
//! marks or removes, and that nothing came or changed under an object it
//! removes, since the view it planned from: two replicas never both apply
//! a step, and a replica that starts or restarts picks up what is left.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::cache::{At, Kv};
use super::inner::Inner;
use super::layout::prefix_end;
use crate::model::{AnyObject, Kind, Path};
use crate::store::change::ChangeType;
use crate::store::error::StoreError;
use crate::store::keys;
use crate::store::plan::{self, ReadView, Scanned, Step};

/// Objects per page when the copy is not there to read from.
const PAGE: i64 = 1000;

/// What one pass did.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Nothing is left to do.
    Done,
    /// One transaction of steps committed; more may be left.
    Progress,
    /// Someone wrote in between: plan again.
    Conflict,
}

/// The task: a pass at start and whenever woken, until nothing is left.
pub(super) async fn run(store: Weak<Inner>) {
    let mut due = true;
    let mut pause = Duration::from_millis(100);
    let mut contended = Duration::from_millis(10);
    loop {
        let Some(inner) = store.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if !due {
            // Woken when wanted; a second at most, so that a dropped store
            // is not kept alive by this task.
            due = tokio::time::timeout(Duration::from_secs(1), inner.reap.notified())
                .await
                .is_ok();
            continue;
        }
        match pass(&inner).await {
            Ok(Pass::Done) => {
                due = false;
                pause = Duration::from_millis(100);
                contended = Duration::from_millis(10);
            }
            Ok(Pass::Progress) => {
                pause = Duration::from_millis(100);
                contended = Duration::from_millis(10);
            }
            Ok(Pass::Conflict) => {
                // Another replica (or a request) wrote in between: 50% to
                // 150% of a pause that grows to a second.
                inner.conflicts.fetch_add(1, Ordering::Relaxed);
                let spread = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
                let wait = contended * (500 + spread) / 1000;
                contended = (contended * 2).min(Duration::from_secs(1));
                drop(inner);
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot settle terminating subtrees now; trying again");
                drop(inner);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Every object and its `mod_revision`, at one etcd revision.
#[derive(Default)]
struct Objects {
    map: BTreeMap<(Kind, Vec<u8>), (AnyObject, i64)>,
    revision: i64,
    /// The keys of records that could not be read.
    unreadable: Vec<Vec<u8>>,
}

impl ReadView for Objects {
    fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
        Ok(self.map.get(&(kind, key.to_vec())).map(|(o, _)| o.clone()))
    }

    fn exists(&mut self, kind: Kind, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.map.contains_key(&(kind, key.to_vec())))
    }

    fn scan(&mut self, kind: Kind, prefix: &[u8], limit: Option<usize>) -> Scanned {
        Ok(self
            .map
            .range((kind, prefix.to_vec())..)
            .take_while(|((k, key), _)| *k == kind && key.starts_with(prefix))
            .take(limit.unwrap_or(usize::MAX))
            .map(|((_, key), (o, _))| (key.clone(), o.clone()))
            .collect())
    }
}

impl Objects {
    /// The objects, from this replica's copy once it holds every
    /// acknowledged write (a plan from a copy behind would only conflict),
    /// or else from etcd, page by page at one revision.
    async fn read(inner: &Inner) -> Result<Objects, StoreError> {
        let start = inner.layout.objects();
        let end = prefix_end(&start);
        let copied = inner.fresh().await?.and_then(|r| {
            inner.cache.with(At::From(r), |s| {
                let (kvs, _) = s.range(&start, &end, usize::MAX);
                (kvs, s.revision())
            })
        });
        let (kvs, revision) = match copied {
            Some(c) => c,
            None => {
                let at = inner.current().await?;
                let mut kvs = Vec::new();
                let mut from = start.clone();
                loop {
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(PAGE)
                        .with_revision(at);
                    let resp = inner
                        .get(from.clone(), options)
                        .await
                        .map_err(|e| e.read())?;
                    kvs.extend(resp.kvs().iter().map(Kv::from));
                    match resp.kvs().last() {
                        Some(last) if resp.more() => {
                            from = last.key().to_vec();
                            from.push(0);
                        }
                        _ => break,
                    }
                }
                (kvs, at)
            }
        };
        let mut objects = Objects {
            map: BTreeMap::new(),
            revision,
            unreadable: Vec::new(),
        };
        for kv in kvs {
            let Some((kind, key)) = inner.layout.parse(&kv.key) else {
                continue;
            };
            match inner.decode(kind, &kv) {
                Ok(object) => {
                    objects.map.insert((kind, key), (object, kv.mod_revision));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an unreadable object: its ancestors stay");
                    objects.unreadable.push(key);
                }
            }
        }
        Ok(objects)
    }

    /// Whether `step` removes an ancestor of an unreadable object (which
    /// the plan did not see, so counted as gone).
    fn above_unreadable(&self, step: &Step) -> bool {
        step.change == ChangeType::Deleted
            && self
                .unreadable
                .iter()
                .any(|k| k.len() > step.key.len() && k.starts_with(&step.key))
    }

    /// The terminating objects without a terminating ancestor.
    fn roots(&self) -> Vec<Path> {
        let terminating = |p: &Path| {
            self.map
                .get(&(p.kind(), keys::encode(p.names())))
                .is_some_and(|(o, _)| o.meta().is_terminating())
        };
        self.map
            .values()
            .filter(|(o, _)| o.meta().is_terminating())
            .map(|(o, _)| o.path())
            .filter(|p| {
                let mut up = p.parent();
                while let Some(a) = up {
                    if terminating(&a) {
                        return false;
                    }
                    up = a.parent();
                }
                true
            })
            .collect()
    }

    fn mod_revision(&self, step: &Step) -> i64 {
        self.map
            .get(&(step.kind, step.key.clone()))
            .map_or(0, |(_, m)| *m)
    }
}

fn now() -> crate::model::Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// One pass: reads every object, plans what the terminating subtrees
/// need, and commits the first transaction's worth of it.
async fn pass(inner: &Inner) -> Result<Pass, StoreError> {
    inner.check_open()?;
    let mut objects = Objects::read(inner).await?;
    let roots = objects.roots();
    let now = now();
    let mut steps = Vec::new();
    for root in &roots {
        steps.extend(plan::settle(&mut objects, root, now)?);
    }
    steps.retain(|s| !objects.above_unreadable(s));
    if steps.is_empty() {
        return Ok(Pass::Done);
    }
    let l = &inner.layout;
    let max = inner.options.max_txn_ops.max(3);
    // One operation is the write marker, one compare the format's.
    let mut compares = vec![inner.format_compare()];
    let mut batch = Vec::new();
    let mut bytes = 0;
    let total = steps.len();
    for step in steps {
        let key = l.object(step.kind, &step.key);
        let mut c = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            objects.mod_revision(&step),
        )];
        if step.change == ChangeType::Deleted
            && let Some(child) = step.kind.child()
        {
            // Its children all go before it in this transaction: none
            // came and none changed since the objects were read.
            let start = l.object(child, &step.key);
            let end = prefix_end(&start);
            c.push(
                Compare::mod_revision(start, CompareOp::Less, objects.revision + 1).with_range(end),
            );
        }
        let size = match step.change {
            ChangeType::Deleted => key.len(),
            _ => key.len() + crate::store::codec::encode(&step.object).len(),
        };
        if batch.len() + 2 > max
            || compares.len() + c.len() > max
            || (!batch.is_empty() && bytes + size > inner.options.max_request_bytes)
        {
            break;
        }
        bytes += size;
        compares.extend(c);
        batch.push(step);
    }
    let mut ops = Vec::new();
    let mut puts = inner.records(&batch).into_iter();
    for s in &batch {
        if s.change == ChangeType::Deleted {
            ops.push(TxnOp::delete(l.object(s.kind, &s.key), None));
        } else if let Some((key, value)) = puts.next() {
            ops.push(TxnOp::put(key, value, None));
        }
    }
    ops.push(TxnOp::put(l.meta("written"), "", None));
    let txn = Txn::new().when(compares).and_then(ops);
    let resp = inner.txn(&txn).await.map_err(|e| e.refusal_or_unknown())?;
    if !resp.succeeded() {
        return Ok(Pass::Conflict);
    }
    let removed = batch
        .iter()
        .filter(|s| s.change == ChangeType::Deleted)
        .count();
    tracing::info!(
        subtrees = roots.len(),
        removed,
        marked = batch.len() - removed,
        left = total - batch.len(),
        revision = super::inner::header_revision(resp.header()),
        "settled part of the terminating subtrees"
    );
    Ok(Pass::Progress)
}
