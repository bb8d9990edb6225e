//! The mutation rules, in one place and free of any engine: what a write
//! request does to the store, computed from a [`ReadView`] of it.
//!
//! A planner checks everything first (parent exists, no duplicate,
//! precondition, children without cascade) and only then answers the
//! [`Plan`]: the objects to put or delete, in the order their revisions are
//! to be handed out. It never writes, so a backend that executes plans
//! inside one transaction (redb) runs each plan once, and a backend that
//! retries on conflict (etcd) can run the planner again on a fresh view.
//!
//! The rules: a create gets a new uid, generation 1 and the creation time;
//! a write of labels and spec bumps the generation only if the spec
//! changed, and writes nothing if neither changed; a status write keeps
//! labels, spec and generation, and writes nothing if the status is the
//! same; a delete removes descendants (deepest kinds first) before the
//! object, and without cascade refuses an object that has any; apply
//! creates what is missing and configures the rest, each document seeing
//! the ones before it. Revisions are stamped by the backend as it executes
//! the plan, one per step.

use std::collections::HashMap;
use std::sync::Arc;

use super::change::{Applied, Change, ChangeType, Part, WriteOp, WriteOutcome};
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
}

/// What one request does: its steps in revision order, or nothing.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a plan is made and executed once per request, never stored"
)]
pub enum Plan {
    /// Nothing changes; the request answers this stored object.
    Unchanged(AnyObject),
    /// These steps, in order; the request answers the last one's object.
    Steps(Vec<Step>),
}

impl Plan {
    fn single(change: ChangeType, key: Vec<u8>, object: AnyObject) -> Plan {
        Plan::Steps(vec![Step {
            change,
            kind: object.kind(),
            key,
            object,
        }])
    }
}

/// Plans one write request. `now` is the creation time of a created
/// object.
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
            Ok(replace(key, stored, &object, part))
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
            Ok(replace(key, stored, &object, part))
        }
        WriteOp::Delete {
            path,
            cascade,
            precondition,
        } => {
            let (key, stored) = existing(view, &path, precondition)?;
            // Every descendant's key starts with this object's key; deepest
            // kinds first, so children always go before their parents.
            let mut steps = Vec::new();
            for kind in Kind::ALL.iter().rev().filter(|k| **k > path.kind()) {
                let limit = (!cascade).then_some(1);
                for (k, object) in view.scan(*kind, &key, limit)? {
                    if !cascade {
                        return Err(StoreError::HasChildren {
                            path,
                            child: Path::new(*kind, keys::decode(&k)),
                        });
                    }
                    steps.push(Step {
                        change: ChangeType::Deleted,
                        kind: *kind,
                        key: k,
                        object,
                    });
                }
            }
            steps.push(Step {
                change: ChangeType::Deleted,
                kind: path.kind(),
                key,
                object: stored,
            });
            Ok(Plan::Steps(steps))
        }
    }
}

/// Plans an apply: each object is created if missing, else gets its labels
/// and spec replaced; each sees the ones before it. Answers, per object in
/// order, what applying it does and its plan. A failure names the
/// document's index.
pub fn plan_apply(
    view: &mut impl ReadView,
    objects: Vec<AnyObject>,
    now: Timestamp,
) -> Result<Vec<(Applied, Plan)>, StoreError> {
    let mut view = Overlay {
        base: view,
        written: HashMap::new(),
    };
    let mut out = Vec::with_capacity(objects.len());
    for (index, object) in objects.into_iter().enumerate() {
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
            Some(stored) => match replace(key, stored, &object, Part::Main) {
                p @ Plan::Unchanged(_) => (Applied::Unchanged, p),
                p => (Applied::Configured, p),
            },
        };
        if let Plan::Steps(steps) = &planned.1 {
            for s in steps {
                let value = (s.change != ChangeType::Deleted).then(|| s.object.clone());
                view.written.insert((s.kind, s.key.clone()), value);
            }
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
        let mut merged: std::collections::BTreeMap<Vec<u8>, AnyObject> =
            self.base.scan(kind, prefix, None)?.into_iter().collect();
        for ((k, key), value) in &self.written {
            if *k == kind && key.starts_with(prefix) {
                match value {
                    Some(v) => merged.insert(key.clone(), v.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }
}

fn create(
    view: &mut impl ReadView,
    mut obj: AnyObject,
    now: Timestamp,
) -> Result<Plan, StoreError> {
    let path = obj.path();
    if let Some(parent) = path.parent()
        && !view.exists(parent.kind(), &keys::encode(parent.names()))?
    {
        return Err(StoreError::ParentNotFound { parent });
    }
    let key = keys::encode(path.names());
    if view.exists(path.kind(), &key)? {
        return Err(StoreError::AlreadyExists(path));
    }
    let meta = obj.meta_mut();
    meta.uid = uuid::Uuid::new_v4().to_string();
    meta.generation = 1;
    meta.creation_timestamp = now;
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

/// Writes `part` of `object` over `stored` (nothing if nothing changes).
fn replace(key: Vec<u8>, stored: AnyObject, object: &AnyObject, part: Part) -> Plan {
    let updated = match part {
        Part::Main => {
            let same_spec = stored.same_spec(object);
            if same_spec && stored.meta().labels == object.meta().labels {
                return Plan::Unchanged(stored);
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
                return Plan::Unchanged(stored);
            }
            stored.with_status_of(object)
        }
    };
    Plan::single(ChangeType::Modified, key, updated)
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

    fn steps(p: Plan) -> Vec<Step> {
        match p {
            Plan::Steps(s) => s,
            Plan::Unchanged(o) => panic!("unchanged {o:?}"),
        }
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
            Plan::Unchanged(o) => WriteOutcome {
                object: Arc::new(o),
                changes: Vec::new(),
            },
            Plan::Steps(steps) => {
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
                        }
                    })
                    .collect();
                let object = changes.last().expect("steps").object.clone();
                WriteOutcome { object, changes }
            }
        }
    }

    #[test]
    fn a_repeated_document_answers_the_earlier_write() {
        let mut view = MapView::default();
        let planned =
            plan_apply(&mut view, vec![realm("r", "n", 0), realm("r", "n", 0)], 0).unwrap();
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
            vec![realm("r", "n", 0), space("r", "s"), realm("r", "n2", 0)],
            0,
        )
        .unwrap();
        let applied: Vec<_> = planned.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            applied,
            [Applied::Created, Applied::Created, Applied::Configured]
        );
        let err = plan_apply(&mut view, vec![realm("r", "n", 0), space("x", "s")], 0).unwrap_err();
        assert!(
            matches!(err, StoreError::Document { index: 1, .. }),
            "{err:?}"
        );
        assert!(view.0.is_empty(), "planning never writes");
    }
}
