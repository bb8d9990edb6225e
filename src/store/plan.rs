//! The mutation rules, in one place and free of any engine: what a write
//! request does to the store, computed from a [`ReadView`] of it.
//!
//! A planner checks everything first (parent exists, no duplicate,
//! precondition, children without cascade, nothing terminating in the
//! way) and only then answers the [`Plan`]: the objects to put or delete,
//! in the order their revisions are to be handed out. It never writes, so
//! a backend that executes plans inside one transaction (redb) runs each
//! plan once, and a backend that retries on conflict (etcd) can run the
//! planner again on a fresh view.
//!
//! The rules: a create gets a new uid, generation 1 and the creation time,
//! and is refused under a terminating ancestor; a write of labels and spec
//! bumps the generation only if the spec changed, and writes nothing if
//! nothing changed; a status write keeps labels, spec and generation; a
//! delete removes descendants (deepest kinds first) before the object, and
//! without cascade refuses an object that has any that are not
//! terminating; apply creates what is missing and configures the rest,
//! each document seeing the ones before it. Revisions are stamped by the
//! backend as it executes the plan, one per step.
//!
//! The deletion lifecycle: an object is *terminating* once it has
//! `deletion_timestamp`. A delete of an object with finalizers (or with
//! children that are all terminating, or with cascade over a subtree
//! holding finalizers) marks it instead of removing it; a terminating
//! object refuses spec, label and added-finalizer writes and creates
//! under it, and goes with the write that leaves it without finalizers and
//! without children. What such a write leads to beyond its own object
//! (the rest of a cascade, ancestors left empty) is [`settle`]'s: in the
//! same plan when the view [settles](ReadView::settles), else later.

use std::collections::HashMap;
use std::sync::Arc;

use super::change::{Applied, Before, Change, ChangeType, Document, Part, WriteOp, WriteOutcome};
use super::error::StoreError;
use super::keys;
use crate::model::{AnyObject, Kind, Path, Timestamp};

/// Objects of one kind under a key prefix, in key order, with their keys.
pub type Scanned = Result<Vec<(Vec<u8>, AnyObject)>, StoreError>;

/// The store as a write sees it (inside its transaction, for redb).
pub trait ReadView {
    /// The object of `kind` at `key`, if any.
    fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError>;
    /// Whether an object of `kind` exists at `key` (no decoding needed).
    fn exists(&mut self, kind: Kind, key: &[u8]) -> Result<bool, StoreError>;
    /// The objects of `kind` whose keys start with `prefix`, in key order,
    /// at most `limit` of them.
    fn scan(&mut self, kind: Kind, prefix: &[u8], limit: Option<usize>) -> Scanned;
    /// Whether the object of `kind` at `key` is terminating (`None`: there
    /// is none); a view may answer without decoding it all.
    fn terminating(&mut self, kind: Kind, key: &[u8]) -> Result<Option<bool>, StoreError> {
        Ok(self.get(kind, key)?.map(|o| o.meta().is_terminating()))
    }
    /// Whether a write carries out in its own plan what its deletions lead
    /// to ([`settle`]: the rest of a terminating subtree, ancestors left
    /// empty). Then terminating is closed downwards: every descendant of a
    /// terminating object is terminating. `false` (etcd, whose
    /// transactions are bounded): a write changes only the object it
    /// names, and a background process settles the rest.
    fn settles(&self) -> bool {
        true
    }
}

/// One object to put (`Added`, `Modified`) or delete (`Deleted`); it takes
/// the next revision when executed.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What happens to the object.
    pub change: ChangeType,
    /// Its kind.
    pub kind: Kind,
    /// Its key ([`keys::encode`] of its path).
    pub key: Vec<u8>,
    /// The object to store, or for `Deleted` its last state (its
    /// `resourceVersion` is stamped at execution).
    pub object: AnyObject,
    /// For `Modified`: what selectors saw of the stored version.
    pub before: Option<Arc<Before>>,
}

/// What one request does: its steps in revision order, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing changes; the request answers this stored object.
    Unchanged(AnyObject),
    /// These steps, in order; the request answers `steps[answer]`'s
    /// object (the object it names).
    Steps {
        /// The steps, in revision order.
        steps: Vec<Step>,
        /// The step of the request's own object.
        answer: usize,
    },
    /// These steps, which leave the request's own object as stored: the
    /// request answers it.
    Around {
        /// The steps, in revision order (not empty).
        steps: Vec<Step>,
        /// The request's object, unchanged.
        object: AnyObject,
    },
}

impl Plan {
    fn single(change: ChangeType, key: Vec<u8>, object: AnyObject) -> Plan {
        Plan::Steps {
            steps: vec![step(change, key, object)],
            answer: 0,
        }
    }
}

fn step(change: ChangeType, key: Vec<u8>, object: AnyObject) -> Step {
    Step {
        change,
        kind: object.kind(),
        key,
        object,
        before: None,
    }
}

/// Plans one write request. `now` is the creation time of a created
/// object, and the deletion time of one it marks.
pub fn plan(view: &mut impl ReadView, op: WriteOp, now: Timestamp) -> Result<Plan, StoreError> {
    match op {
        WriteOp::Create(obj) => create(view, obj, now),
        WriteOp::Replace {
            object,
            part,
            precondition,
        } => {
            let path = object.path();
            let (key, stored) = existing(view, &path, precondition)?;
            replace(view, key, stored, &object, part)
        }
        WriteOp::Update {
            path,
            part,
            precondition,
            update,
        } => {
            let (key, stored) = existing(view, &path, precondition)?;
            let object = update(&stored)?;
            if object.path() != path {
                return Err(StoreError::BadRequest(format!(
                    "an update may not move {path} to {}",
                    object.path()
                )));
            }
            replace(view, key, stored, &object, part)
        }
        WriteOp::Delete {
            path,
            cascade,
            precondition,
        } => delete(view, path, cascade, precondition, now),
    }
}

fn delete(
    view: &mut impl ReadView,
    path: Path,
    cascade: bool,
    precondition: Option<u64>,
    now: Timestamp,
) -> Result<Plan, StoreError> {
    let (key, stored) = existing(view, &path, precondition)?;
    // A second delete changes nothing: the first one's course is set. On a
    // store that settles, it settles what is left to (a subtree restored
    // from a backup of a store that settles in the background may need
    // it).
    if stored.meta().is_terminating() {
        if !view.settles() {
            return Ok(Plan::Unchanged(stored));
        }
        let steps = settle(view, &path, now)?;
        if steps.is_empty() {
            return Ok(Plan::Unchanged(stored));
        }
        return Ok(match steps.iter().position(|s| s.key == key) {
            Some(answer) => Plan::Steps { steps, answer },
            None => Plan::Around {
                steps,
                object: stored,
            },
        });
    }
    if !cascade {
        // Children (and so descendants: none is left without its parent)
        // that are all terminating let the object wait for them.
        let children = match path.kind().child() {
            Some(kind) => view.scan(kind, &key, None)?,
            None => Vec::new(),
        };
        if let Some((k, child)) = children.iter().find(|(_, c)| !c.meta().is_terminating()) {
            return Err(StoreError::HasChildren {
                path,
                child: Path::new(child.kind(), keys::decode(k)),
            });
        }
        if children.is_empty() && stored.meta().finalizers.is_empty() {
            return gone(view, key, stored);
        }
        let before = Before::of(&stored);
        return Ok(Plan::Steps {
            steps: vec![Step {
                before: Some(before),
                ..step(ChangeType::Modified, key, marked(stored, now))
            }],
            answer: 0,
        });
    }
    // Every descendant's key starts with this object's key; deepest kinds
    // first, so children always go before their parents.
    let mut steps = Vec::new();
    for kind in Kind::ALL.iter().rev().filter(|k| **k > path.kind()) {
        for (k, object) in view.scan(*kind, &key, None)? {
            steps.push(step(ChangeType::Deleted, k, object));
        }
    }
    let finalized = |o: &AnyObject| !o.meta().finalizers.is_empty();
    if !finalized(&stored) && !steps.iter().any(|s| finalized(&s.object)) {
        steps.push(step(ChangeType::Deleted, key, stored));
        let answer = steps.len() - 1;
        return Ok(Plan::Steps { steps, answer });
    }
    // Marking the root is the request's one atomic step; the rest follows
    // in the same plan, or later (see `settle`).
    let before = Before::of(&stored);
    let mut steps = vec![Step {
        before: Some(before),
        ..step(ChangeType::Modified, key, marked(stored, now))
    }];
    if view.settles() {
        let rest = settle(&mut Overlay::over(view, &steps), &path, now)?;
        steps.extend(rest);
    }
    Ok(Plan::Steps { steps, answer: 0 })
}

/// `object` marked terminating at `now`.
fn marked(mut object: AnyObject, now: Timestamp) -> AnyObject {
    object.meta_mut().deletion_timestamp = Some(now);
    object
}

/// Removes `object`, and the terminating ancestors that leaves empty.
fn gone(view: &mut impl ReadView, key: Vec<u8>, object: AnyObject) -> Result<Plan, StoreError> {
    let path = object.path();
    let mut steps = vec![step(ChangeType::Deleted, key, object)];
    if view.settles() {
        let up = emptied_ancestors(&mut Overlay::over(view, &steps), &path)?;
        steps.extend(up);
    }
    Ok(Plan::Steps { steps, answer: 0 })
}

/// Whether the object at `path` (key `key`) has any child.
fn has_children(view: &mut impl ReadView, path: &Path, key: &[u8]) -> Result<bool, StoreError> {
    match path.kind().child() {
        Some(kind) => Ok(!view.scan(kind, key, Some(1))?.is_empty()),
        None => Ok(false),
    }
}

/// The steps that carry the terminating subtree at `root` forward, as far
/// as the view allows: deepest kinds first, every object without
/// finalizers and without remaining children is removed, and every other
/// one not yet terminating is marked at `now`; a parent goes only after
/// all its children; if the root goes, so do the terminating ancestors it
/// leaves empty. Empty when the subtree is settled (or gone). Settling
/// again after these steps (or after any prefix of them, in order) is
/// what a background process does on a store whose transactions are
/// bounded.
pub fn settle(
    view: &mut impl ReadView,
    root: &Path,
    now: Timestamp,
) -> Result<Vec<Step>, StoreError> {
    let key = keys::encode(root.names());
    let Some(stored) = view.get(root.kind(), &key)? else {
        return Ok(Vec::new());
    };
    let mut all = Vec::new();
    for kind in Kind::ALL.iter().rev().filter(|k| **k > root.kind()) {
        all.extend(view.scan(*kind, &key, None)?);
    }
    all.push((key, stored));
    // Per parent key: how many of its children stay.
    let mut staying: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut steps = Vec::new();
    let mut root_gone = false;
    for (k, object) in all {
        let stays = !object.meta().finalizers.is_empty() || staying.get(&k).is_some_and(|n| *n > 0);
        if stays {
            if let Some(parent) = object.path().parent() {
                *staying.entry(keys::encode(parent.names())).or_default() += 1;
            }
            if !object.meta().is_terminating() {
                let before = Before::of(&object);
                steps.push(Step {
                    before: Some(before),
                    ..step(ChangeType::Modified, k, marked(object, now))
                });
            }
        } else {
            root_gone = object.kind() == root.kind();
            steps.push(step(ChangeType::Deleted, k, object));
        }
    }
    if root_gone {
        let up = emptied_ancestors(&mut Overlay::over(view, &steps), root)?;
        steps.extend(up);
    }
    Ok(steps)
}

/// The terminating ancestors of `path` that are left without finalizers
/// and without children (in the view, which has `path`'s removal laid
/// over it), nearest first, as deletions.
fn emptied_ancestors<V: ReadView>(
    view: &mut Overlay<'_, V>,
    path: &Path,
) -> Result<Vec<Step>, StoreError> {
    let mut steps = Vec::new();
    let mut next = path.parent();
    while let Some(p) = next {
        let key = keys::encode(p.names());
        let Some(object) = view.get(p.kind(), &key)? else {
            break;
        };
        if !object.meta().is_terminating()
            || !object.meta().finalizers.is_empty()
            || has_children(view, &p, &key)?
        {
            break;
        }
        view.written.insert((p.kind(), key.clone()), None);
        steps.push(step(ChangeType::Deleted, key, object));
        next = p.parent();
    }
    Ok(steps)
}

/// Plans an apply: each object is created if missing, else gets its labels
/// and spec (and finalizers, if its document gave them) replaced; each
/// sees the ones before it. Answers, per object in order, what applying
/// it does and its plan. A failure names the document's index.
pub fn plan_apply(
    view: &mut impl ReadView,
    objects: Vec<Document>,
    now: Timestamp,
) -> Result<Vec<(Applied, Plan)>, StoreError> {
    let mut view = Overlay {
        base: view,
        written: HashMap::new(),
    };
    let mut out = Vec::with_capacity(objects.len());
    for (index, (object, part)) in objects.into_iter().enumerate() {
        let tag = |e: StoreError| {
            if e.is_storage_failure() {
                e
            } else {
                StoreError::Document {
                    index,
                    source: Box::new(e),
                }
            }
        };
        let path = object.path();
        let key = keys::encode(path.names());
        let planned = match view.get(path.kind(), &key).map_err(tag)? {
            None => (
                Applied::Created,
                create(&mut view, object, now).map_err(tag)?,
            ),
            Some(stored) => match replace(&mut view, key, stored, &object, part).map_err(tag)? {
                p @ Plan::Unchanged(_) => (Applied::Unchanged, p),
                p => (Applied::Configured, p),
            },
        };
        if let Plan::Steps { steps, .. } = &planned.1 {
            view.lay(steps);
        }
        out.push(planned);
    }
    Ok(out)
}

/// What applying each document answers, and every change, in order.
pub type AppliedItems = (Vec<(Applied, Arc<AnyObject>)>, Vec<Change>);

/// Runs the plans of [`plan_apply`] in order with `execute` (the engine's
/// way of running one plan, stamping revisions). A document the same as
/// one written earlier in the same apply answers that write's object, with
/// its revision (its plan holds the overlay's copy, which has none).
pub fn execute_apply(
    planned: Vec<(Applied, Plan)>,
    mut execute: impl FnMut(Plan) -> Result<WriteOutcome, StoreError>,
) -> Result<AppliedItems, StoreError> {
    let mut items = Vec::with_capacity(planned.len());
    let mut changes = Vec::new();
    let mut written = HashMap::new();
    for (applied, plan) in planned {
        let outcome = execute(plan)?;
        let object = match applied {
            Applied::Unchanged => written
                .get(&outcome.object.path())
                .cloned()
                .unwrap_or(outcome.object),
            Applied::Created | Applied::Configured => {
                written.insert(outcome.object.path(), outcome.object.clone());
                outcome.object
            }
        };
        changes.extend(outcome.changes);
        items.push((applied, object));
    }
    Ok((items, changes))
}

/// A view with the steps planned so far laid over it.
struct Overlay<'a, V> {
    base: &'a mut V,
    written: HashMap<(Kind, Vec<u8>), Option<AnyObject>>,
}

impl<'a, V: ReadView> Overlay<'a, V> {
    /// `base` with `steps` laid over it.
    fn over(base: &'a mut V, steps: &[Step]) -> Overlay<'a, V> {
        let mut view = Overlay {
            base,
            written: HashMap::new(),
        };
        view.lay(steps);
        view
    }

    fn lay(&mut self, steps: &[Step]) {
        for s in steps {
            let value = (s.change != ChangeType::Deleted).then(|| s.object.clone());
            self.written.insert((s.kind, s.key.clone()), value);
        }
    }
}

impl<V: ReadView> ReadView for Overlay<'_, V> {
    fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
        match self.written.get(&(kind, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(kind, key),
        }
    }

    fn exists(&mut self, kind: Kind, key: &[u8]) -> Result<bool, StoreError> {
        match self.written.get(&(kind, key.to_vec())) {
            Some(v) => Ok(v.is_some()),
            None => self.base.exists(kind, key),
        }
    }

    fn scan(&mut self, kind: Kind, prefix: &[u8], limit: Option<usize>) -> Scanned {
        let laid = |(k, key): &(Kind, Vec<u8>)| *k == kind && key.starts_with(prefix);
        // The base need yield only as many more as the overlay removes.
        let removed = self
            .written
            .iter()
            .filter(|(k, v)| laid(k) && v.is_none())
            .count();
        let base_limit = limit.map(|l| l.saturating_add(removed));
        let mut merged: std::collections::BTreeMap<Vec<u8>, AnyObject> = self
            .base
            .scan(kind, prefix, base_limit)?
            .into_iter()
            .collect();
        for (k, value) in &self.written {
            if laid(k) {
                match value {
                    Some(v) => merged.insert(k.1.clone(), v.clone()),
                    None => merged.remove(&k.1),
                };
            }
        }
        Ok(merged
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }

    fn terminating(&mut self, kind: Kind, key: &[u8]) -> Result<Option<bool>, StoreError> {
        match self.written.get(&(kind, key.to_vec())) {
            Some(v) => Ok(v.as_ref().map(|o| o.meta().is_terminating())),
            None => self.base.terminating(kind, key),
        }
    }

    fn settles(&self) -> bool {
        self.base.settles()
    }
}

fn create(
    view: &mut impl ReadView,
    mut obj: AnyObject,
    now: Timestamp,
) -> Result<Plan, StoreError> {
    let path = obj.path();
    // The parent must exist, and no ancestor may be terminating (every
    // ancestor is read: a store restored from another engine's backup, or
    // etcd between two settling steps, may hold a terminating object whose
    // descendants are not marked yet).
    let mut next = path.parent();
    let mut parent = true;
    while let Some(a) = next {
        match view.terminating(a.kind(), &keys::encode(a.names()))? {
            None if parent => return Err(StoreError::ParentNotFound { parent: a }),
            None => break,
            Some(true) => {
                return Err(StoreError::Terminating {
                    message: format!("{path} cannot be created under it"),
                    path: a,
                    field: None,
                });
            }
            Some(false) => {}
        }
        parent = false;
        next = a.parent();
    }
    let key = keys::encode(path.names());
    if view.exists(path.kind(), &key)? {
        return Err(StoreError::AlreadyExists(path));
    }
    let meta = obj.meta_mut();
    meta.uid = uuid::Uuid::new_v4().to_string();
    meta.generation = 1;
    meta.creation_timestamp = now;
    meta.deletion_timestamp = None;
    Ok(Plan::single(ChangeType::Added, key, obj))
}

/// The stored object at `path` and its key, if `precondition` allows.
fn existing(
    view: &mut impl ReadView,
    path: &Path,
    precondition: Option<u64>,
) -> Result<(Vec<u8>, AnyObject), StoreError> {
    let key = keys::encode(path.names());
    let stored = view
        .get(path.kind(), &key)?
        .ok_or_else(|| StoreError::NotFound(path.clone()))?;
    match precondition {
        Some(expected) if expected != stored.meta().resource_version => Err(StoreError::Conflict {
            path: path.clone(),
            expected,
            actual: stored.meta().resource_version,
        }),
        _ => Ok((key, stored)),
    }
}

/// Refuses a terminating object's write of `field`.
fn terminating(stored: &AnyObject, field: &str, what: &str) -> StoreError {
    StoreError::Terminating {
        path: stored.path(),
        field: Some(field.into()),
        message: format!("{what} cannot change; status writes and finalizer removals can"),
    }
}

/// Refuses finalizers a terminating object does not have yet.
fn check_finalizers(stored: &AnyObject, finalizers: &[String]) -> Result<(), StoreError> {
    if !stored.meta().is_terminating() {
        return Ok(());
    }
    match finalizers
        .iter()
        .position(|f| !stored.meta().finalizers.contains(f))
    {
        Some(i) => Err(StoreError::Terminating {
            path: stored.path(),
            field: Some(format!("metadata.finalizers[{i}]")),
            message: format!(
                "finalizer {:?} cannot be added; finalizers can only be removed",
                finalizers[i]
            ),
        }),
        None => Ok(()),
    }
}

/// Writes `part` of `object` over `stored` (nothing if nothing changes).
/// A terminating object a write of its labels, spec or finalizers leaves
/// without finalizers goes, once it has no children (in the same write
/// when the view settles).
fn replace(
    view: &mut impl ReadView,
    key: Vec<u8>,
    stored: AnyObject,
    object: &AnyObject,
    part: Part,
) -> Result<Plan, StoreError> {
    let ending = stored.meta().is_terminating();
    // What selectors saw of the stored version (once something changes).
    let before;
    let updated = match part {
        Part::Main | Part::MainAndFinalizers => {
            let finalizers = match part {
                Part::MainAndFinalizers => &object.meta().finalizers,
                _ => &stored.meta().finalizers,
            };
            let same_spec = stored.same_spec(object);
            let same_labels = stored.meta().labels == object.meta().labels;
            if same_spec && same_labels && *finalizers == stored.meta().finalizers {
                return Ok(Plan::Unchanged(stored));
            }
            if ending && !same_spec {
                return Err(terminating(&stored, "spec", "its spec"));
            }
            if ending && !same_labels {
                return Err(terminating(&stored, "metadata.labels", "its labels"));
            }
            check_finalizers(&stored, finalizers)?;
            let finalizers = finalizers.clone();
            before = Before::of(&stored);
            let mut updated = stored.with_spec_of(object);
            let meta = updated.meta_mut();
            meta.labels = object.meta().labels.clone();
            meta.finalizers = finalizers;
            if !same_spec {
                meta.generation += 1;
            }
            updated
        }
        Part::Status => {
            if stored.same_status(object) {
                return Ok(Plan::Unchanged(stored));
            }
            before = Before::of(&stored);
            stored.with_status_of(object)
        }
        Part::Finalizers => {
            let finalizers = &object.meta().finalizers;
            if *finalizers == stored.meta().finalizers {
                return Ok(Plan::Unchanged(stored));
            }
            check_finalizers(&stored, finalizers)?;
            before = Before::of(&stored);
            let mut updated = stored;
            updated.meta_mut().finalizers = finalizers.clone();
            updated
        }
    };
    // A status write never removes (a terminating object left without
    // finalizers and children between two settling steps goes with the
    // next one). Nor does a write on a store that settles in the
    // background (etcd): a removal there is one `DeleteRange` whose event
    // carries the stored version, so the version without finalizers is
    // stored first, and the settling removes it.
    if ending
        && part != Part::Status
        && view.settles()
        && updated.meta().finalizers.is_empty()
        && !has_children(view, &updated.path(), &key)?
    {
        return gone(view, key, updated);
    }
    Ok(Plan::Steps {
        steps: vec![Step {
            before: Some(before),
            ..step(ChangeType::Modified, key, updated)
        }],
        answer: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectMeta, Realm, RealmSpec, Space};
    use std::collections::BTreeMap;

    /// A view over a plain map, as the planner's tests need.
    #[derive(Default)]
    struct MapView(BTreeMap<(Kind, Vec<u8>), AnyObject>);

    impl MapView {
        fn with(objects: &[AnyObject]) -> MapView {
            MapView(
                objects
                    .iter()
                    .map(|o| ((o.kind(), keys::encode(o.path().names())), o.clone()))
                    .collect(),
            )
        }
    }

    impl ReadView for MapView {
        fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<AnyObject>, StoreError> {
            Ok(self.0.get(&(kind, key.to_vec())).cloned())
        }
        fn exists(&mut self, kind: Kind, key: &[u8]) -> Result<bool, StoreError> {
            Ok(self.0.contains_key(&(kind, key.to_vec())))
        }
        fn scan(&mut self, kind: Kind, prefix: &[u8], limit: Option<usize>) -> Scanned {
            Ok(self
                .0
                .iter()
                .filter(|((k, key), _)| *k == kind && key.starts_with(prefix))
                .map(|((_, key), o)| (key.clone(), o.clone()))
                .take(limit.unwrap_or(usize::MAX))
                .collect())
        }
    }

    fn realm(name: &str, namespace: &str, rv: u64) -> AnyObject {
        AnyObject::Realm(Realm {
            meta: ObjectMeta {
                name: name.into(),
                resource_version: rv,
                generation: 1,
                ..ObjectMeta::default()
            },
            spec: RealmSpec {
                namespace: namespace.into(),
                ..RealmSpec::default()
            },
            status: Default::default(),
        })
    }

    fn space(realm: &str, name: &str) -> AnyObject {
        let mut s = Space::default();
        s.meta.name = name.into();
        s.spec.realm_name = realm.into();
        AnyObject::Space(s)
    }

    fn docs(objects: Vec<AnyObject>) -> Vec<Document> {
        objects.into_iter().map(|o| (o, Part::Main)).collect()
    }

    fn steps(p: Plan) -> Vec<Step> {
        match p {
            Plan::Steps { steps, .. } | Plan::Around { steps, .. } => steps,
            Plan::Unchanged(o) => panic!("unchanged {o:?}"),
        }
    }

    #[test]
    fn a_create_under_a_terminating_ancestor_is_refused_before_its_parent_is_marked() {
        // The realm is marked; its space not yet (etcd between two
        // settling steps).
        let mut r = realm("r", "n", 1);
        r.meta_mut().deletion_timestamp = Some(5);
        let mut view = MapView::with(&[r, space("r", "a")]);
        let mut stack = crate::model::Stack::default();
        stack.meta.name = "t".into();
        stack.spec.realm_name = "r".into();
        stack.spec.space_name = "a".into();
        let err = plan(&mut view, WriteOp::Create(AnyObject::Stack(stack)), 9).unwrap_err();
        match err {
            StoreError::Terminating { path, .. } => assert_eq!(path.to_string(), "Realm r"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_delete_settles_what_a_restore_left_unsettled() {
        // A terminating realm without finalizers whose space is not marked
        // (as a backup of etcd between two settling steps may hold).
        let mut r = realm("r", "n", 1);
        r.meta_mut().deletion_timestamp = Some(5);
        let mut view = MapView::with(&[r.clone(), space("r", "a")]);
        let op = || WriteOp::Delete {
            path: Path::new(Kind::Realm, vec!["r".into()]),
            cascade: false,
            precondition: None,
        };
        let Plan::Steps { steps, answer } = plan(&mut view, op(), 9).unwrap() else {
            panic!("the realm goes")
        };
        let order: Vec<_> = steps.iter().map(|s| (s.change, s.kind)).collect();
        assert_eq!(
            order,
            [
                (ChangeType::Deleted, Kind::Space),
                (ChangeType::Deleted, Kind::Realm)
            ]
        );
        assert_eq!(answer, 1);
        // With a finalizer on the space, it is marked and the realm stays:
        // the request answers the realm as stored.
        let mut sp = space("r", "a");
        sp.meta_mut().finalizers = vec!["a.io/x".into()];
        let mut view = MapView::with(&[r.clone(), sp]);
        let Plan::Around { steps, object } = plan(&mut view, op(), 9).unwrap() else {
            panic!("steps around the realm")
        };
        assert_eq!(object, r);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].change, ChangeType::Modified);
        assert_eq!(steps[0].object.meta().deletion_timestamp, Some(9));
        assert!(steps[0].before.as_ref().is_some_and(|b| !b.terminating));
        // Settled: nothing more.
        view.0
            .insert((Kind::Space, steps[0].key.clone()), steps[0].object.clone());
        assert!(matches!(
            plan(&mut view, op(), 9).unwrap(),
            Plan::Unchanged(_)
        ));
    }

    #[test]
    fn create_checks_parent_and_duplicates_and_sets_server_fields() {
        let mut view = MapView::with(&[realm("r", "n", 1)]);
        let err = plan(&mut view, WriteOp::Create(space("x", "s")), 7).unwrap_err();
        assert!(matches!(err, StoreError::ParentNotFound { .. }), "{err:?}");
        let err = plan(&mut view, WriteOp::Create(realm("r", "m", 0)), 7).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
        let s = steps(plan(&mut view, WriteOp::Create(space("r", "s")), 7).unwrap());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].change, ChangeType::Added);
        let meta = s[0].object.meta();
        assert_eq!((meta.generation, meta.creation_timestamp), (1, 7));
        assert_eq!(meta.uid.len(), 36);
    }

    #[test]
    fn replace_bumps_generation_only_for_spec_and_skips_no_ops() {
        let mut view = MapView::with(&[realm("r", "n", 5)]);
        let same = WriteOp::Replace {
            object: realm("r", "n", 0),
            part: Part::Main,
            precondition: None,
        };
        assert!(matches!(
            plan(&mut view, same, 0).unwrap(),
            Plan::Unchanged(_)
        ));
        let mut labelled = realm("r", "n", 0);
        labelled.meta_mut().labels.insert("a".into(), "b".into());
        let op = WriteOp::Replace {
            object: labelled,
            part: Part::Main,
            precondition: Some(5),
        };
        let s = steps(plan(&mut view, op, 0).unwrap());
        assert_eq!(s[0].object.meta().generation, 1, "labels only");
        let op = WriteOp::Replace {
            object: realm("r", "other", 0),
            part: Part::Main,
            precondition: None,
        };
        let s = steps(plan(&mut view, op, 0).unwrap());
        assert_eq!(s[0].object.meta().generation, 2, "spec changed");
        let stale = WriteOp::Replace {
            object: realm("r", "other", 0),
            part: Part::Main,
            precondition: Some(4),
        };
        let err = plan(&mut view, stale, 0).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Conflict {
                expected: 4,
                actual: 5,
                ..
            }
        ));
    }

    #[test]
    fn delete_orders_children_first_and_needs_cascade() {
        let mut view = MapView::with(&[realm("r", "n", 1), space("r", "a"), space("r", "b")]);
        let op = |cascade| WriteOp::Delete {
            path: Path::new(Kind::Realm, vec!["r".into()]),
            cascade,
            precondition: None,
        };
        let err = plan(&mut view, op(false), 0).unwrap_err();
        assert!(matches!(err, StoreError::HasChildren { .. }), "{err:?}");
        let s = steps(plan(&mut view, op(true), 0).unwrap());
        let order: Vec<_> = s.iter().map(|s| s.object.path().to_string()).collect();
        assert_eq!(order.len(), 3);
        assert!(s.iter().all(|s| s.change == ChangeType::Deleted));
        assert_eq!(s[2].kind, Kind::Realm, "the object itself goes last");
    }

    /// Runs a plan as an engine would: revisions from 100 on.
    fn stamp(next: &mut u64, plan: Plan) -> WriteOutcome {
        match plan {
            Plan::Unchanged(o) | Plan::Around { object: o, .. } => WriteOutcome {
                object: Arc::new(o),
                changes: Vec::new(),
            },
            Plan::Steps { steps, answer } => {
                let changes: Vec<Change> = steps
                    .into_iter()
                    .map(|mut s| {
                        *next += 1;
                        s.object.meta_mut().resource_version = *next;
                        Change {
                            revision: *next,
                            prev: *next - 1,
                            change: s.change,
                            object: Arc::new(s.object),
                            before: None,
                        }
                    })
                    .collect();
                let object = changes[answer].object.clone();
                WriteOutcome { object, changes }
            }
        }
    }

    #[test]
    fn a_repeated_document_answers_the_earlier_write() {
        let mut view = MapView::default();
        let planned = plan_apply(
            &mut view,
            docs(vec![realm("r", "n", 0), realm("r", "n", 0)]),
            0,
        )
        .unwrap();
        let mut next = 100;
        let (items, changes) = execute_apply(planned, |p| Ok(stamp(&mut next, p))).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(items[1].0, Applied::Unchanged);
        assert_eq!(items[1].1.meta().resource_version, 101);
        assert!(Arc::ptr_eq(&items[0].1, &items[1].1));
    }

    #[test]
    fn the_overlay_scans_with_its_writes_laid_over() {
        let mut base = MapView::with(&[realm("r", "n", 1), space("r", "a"), space("r", "b")]);
        let key = |name: &str| keys::encode(&["r", name]);
        let mut view = Overlay {
            base: &mut base,
            written: HashMap::from([
                ((Kind::Space, key("a")), None),
                ((Kind::Space, key("c")), Some(space("r", "c"))),
            ]),
        };
        let names = |v: Vec<(Vec<u8>, AnyObject)>| -> Vec<String> {
            v.into_iter().map(|(_, o)| o.meta().name.clone()).collect()
        };
        let prefix = keys::encode(&["r"]);
        assert_eq!(
            names(view.scan(Kind::Space, &prefix, None).unwrap()),
            ["b", "c"]
        );
        assert_eq!(
            names(view.scan(Kind::Space, &prefix, Some(1)).unwrap()),
            ["b"]
        );
        assert!(!view.exists(Kind::Space, &key("a")).unwrap());
        assert!(view.exists(Kind::Space, &key("c")).unwrap());
    }

    #[test]
    fn apply_sees_earlier_documents_and_tags_failures() {
        let mut view = MapView::default();
        let planned = plan_apply(
            &mut view,
            docs(vec![
                realm("r", "n", 0),
                space("r", "s"),
                realm("r", "n2", 0),
            ]),
            0,
        )
        .unwrap();
        let applied: Vec<_> = planned.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            applied,
            [Applied::Created, Applied::Created, Applied::Configured]
        );
        let err = plan_apply(
            &mut view,
            docs(vec![realm("r", "n", 0), space("x", "s")]),
            0,
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Document { index: 1, .. }),
            "{err:?}"
        );
        assert!(view.0.is_empty(), "planning never writes");
    }
}
