//! The storage contract (`modelhub::store::Backend`), checked against
//! every backend: creates, preconditions, cascade, apply atomicity, lists
//! at one revision, paging, history and 410, no-op writes, and revision
//! order on the change feed.
//!
//! Each check is a generic `async fn` over `B: Backend` that starts from an
//! empty store; [`suite!`] runs all of them against one backend. Another
//! backend runs them unchanged by adding one `suite!` line.

#[cfg(feature = "etcd")]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use modelhub::model::{AnyObject, Cell, Kind, ObjectMeta, Path, Realm, Selector, Space, Stack};
use modelhub::store::{
    Applied, Backend, Change, ChangeType, Document, ListQuery, Part, Store, StoreError,
    StoreOptions, WriteOp, WriteOutcome,
};

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        ..ObjectMeta::default()
    }
}

fn realm(name: &str) -> AnyObject {
    let mut r = Realm {
        meta: meta(name),
        ..Realm::default()
    };
    r.spec.namespace = format!("ns-{name}");
    AnyObject::Realm(r)
}

fn space(realm: &str, name: &str) -> AnyObject {
    let mut s = Space {
        meta: meta(name),
        ..Space::default()
    };
    s.spec.realm_name = realm.into();
    AnyObject::Space(s)
}

fn stack(realm: &str, space: &str, name: &str) -> AnyObject {
    let mut s = Stack {
        meta: meta(name),
        ..Stack::default()
    };
    s.spec.realm_name = realm.into();
    s.spec.space_name = space.into();
    s.spec.id = name.into();
    AnyObject::Stack(s)
}

fn cell(path: [&str; 3], name: &str, labels: &[(&str, &str)]) -> AnyObject {
    let mut c = Cell {
        meta: meta(name),
        ..Cell::default()
    };
    c.meta.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.spec.realm_name = path[0].into();
    c.spec.space_name = path[1].into();
    c.spec.stack_name = path[2].into();
    c.spec.id = name.into();
    AnyObject::Cell(c)
}

fn path(kind: Kind, names: &[&str]) -> Path {
    Path::new(kind, names.iter().map(|n| n.to_string()).collect())
}

fn list(kind: Kind, scope: &[&str], limit: Option<usize>) -> ListQuery {
    ListQuery {
        kind,
        scope: scope.iter().map(|s| Some(s.to_string())).collect(),
        selector: Selector::default(),
        limit,
        continue_token: None,
    }
}

async fn create<B: Backend>(b: &B, obj: AnyObject) -> u64 {
    b.write(WriteOp::Create(obj))
        .await
        .expect("create")
        .object
        .meta()
        .resource_version
}

/// Replaces `part` of `object` without a precondition.
async fn replace<B: Backend>(b: &B, object: AnyObject, part: Part) -> WriteOutcome {
    b.write(WriteOp::Replace {
        object,
        part,
        precondition: None,
    })
    .await
    .expect("replace")
}

/// Deletes the object at `path` without a precondition.
async fn delete<B: Backend>(b: &B, path: Path, cascade: bool) -> Result<WriteOutcome, StoreError> {
    b.write(WriteOp::Delete {
        path,
        cascade,
        precondition: None,
    })
    .await
}

/// realm r / space s / stack t, and cells c0..c{n} under it.
async fn tree<B: Backend>(b: &B, cells: usize) {
    create(b, realm("r")).await;
    create(b, space("r", "s")).await;
    create(b, stack("r", "s", "t")).await;
    for i in 0..cells {
        create(b, cell(["r", "s", "t"], &format!("c{i:03}"), &[])).await;
    }
}

/// No change after revision `rv` (the store's position may still move:
/// on etcd, other keys' writes move it).
async fn nothing_after<B: Backend>(b: &B, rv: u64) {
    assert!(b.revision().await.unwrap() >= rv);
    let page = b.events(rv, 10).unwrap();
    assert!(
        page.events.is_empty(),
        "changed after {rv}: {:?}",
        page.events
    );
}

/// What a change is, without the revision of the one before it (which
/// only the feed knows).
fn essence(changes: &[Change]) -> Vec<(u64, ChangeType, AnyObject)> {
    changes
        .iter()
        .map(|c| (c.revision, c.change, (*c.object).clone()))
        .collect()
}

/// Every change the feed publishes, in order.
fn record<B: Backend>(b: &B) -> Arc<Mutex<Vec<Change>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.feed().subscribe(Arc::new(move |c: &[Change]| {
        sink.lock().unwrap().extend_from_slice(c)
    }));
    seen
}

fn names(items: &[AnyObject]) -> Vec<String> {
    items.iter().map(|o| o.meta().name.clone()).collect()
}

/// A create needs its parent, refuses a duplicate, and sets the server's
/// fields; a refused create takes no revision.
async fn create_checks_parent_duplicates_and_sets_server_fields<B: Backend>(b: B) {
    let err = b.write(WriteOp::Create(space("r", "s"))).await.unwrap_err();
    assert!(matches!(err, StoreError::ParentNotFound { .. }), "{err:?}");
    nothing_after(&b, 0).await;
    let out = b.write(WriteOp::Create(realm("r"))).await.unwrap();
    let m = out.object.meta();
    assert_eq!((m.generation, m.uid.len()), (1, 36));
    assert!(m.creation_timestamp > 0);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].change, ChangeType::Added);
    let err = b.write(WriteOp::Create(realm("r"))).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    nothing_after(&b, m.resource_version).await;
    assert_eq!(
        &b.get(&path(Kind::Realm, &["r"])).await.unwrap(),
        &*out.object
    );
    let err = b.get(&path(Kind::Realm, &["x"])).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

/// A stale `resourceVersion` refuses replace, update and delete, and
/// changes nothing; a current one is accepted.
async fn preconditions_refuse_stale_versions_and_change_nothing<B: Backend>(b: B) {
    let rv = create(&b, realm("r")).await;
    let mut changed = realm("r");
    if let AnyObject::Realm(r) = &mut changed {
        r.spec.namespace = "other".into();
    }
    let stale = Some(rv + 100);
    let ops = [
        WriteOp::Replace {
            object: changed.clone(),
            part: Part::Main,
            precondition: stale,
        },
        WriteOp::Update {
            path: path(Kind::Realm, &["r"]),
            part: Part::Main,
            precondition: stale,
            update: Arc::new(|o: &AnyObject| Ok(o.clone())),
        },
        WriteOp::Delete {
            path: path(Kind::Realm, &["r"]),
            cascade: true,
            precondition: stale,
        },
    ];
    for op in ops {
        let err = b.write(op).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { expected, actual, .. } if expected == rv + 100 && actual == rv),
            "{err:?}"
        );
    }
    nothing_after(&b, rv).await;
    let out = b
        .write(WriteOp::Replace {
            object: changed,
            part: Part::Main,
            precondition: Some(rv),
        })
        .await
        .unwrap();
    assert_eq!(out.object.meta().generation, 2, "the spec changed");
    assert!(out.object.meta().resource_version > rv);
}

/// Writing the same labels and spec, or the same status, writes nothing:
/// no revision, no change on the feed. A label-only write keeps the
/// generation; a status write keeps labels, spec and generation.
async fn no_op_writes_take_no_revision_and_status_keeps_the_spec<B: Backend>(b: B) {
    let rv = create(&b, realm("r")).await;
    let seen = record(&b);
    let same = replace(&b, realm("r"), Part::Main).await;
    assert!(same.changes.is_empty());
    assert_eq!(same.object.meta().resource_version, rv);
    nothing_after(&b, rv).await;
    assert!(seen.lock().unwrap().is_empty(), "nothing published");

    let mut labelled = realm("r");
    labelled.meta_mut().labels = BTreeMap::from([("a".into(), "1".into())]);
    let out = replace(&b, labelled, Part::Main).await;
    assert_eq!(out.object.meta().generation, 1, "labels only");

    let mut status = realm("r");
    if let AnyObject::Realm(r) = &mut status {
        r.spec.namespace = "ignored by a status write".into();
        r.status.cgroup_path = "/sys/fs/cgroup/r".into();
    }
    let out = replace(&b, status.clone(), Part::Status).await;
    let AnyObject::Realm(r) = &*out.object else {
        panic!("a realm")
    };
    assert_eq!(r.spec.namespace, "ns-r", "spec kept");
    assert_eq!(r.meta.labels.len(), 1, "labels kept");
    assert_eq!(r.meta.generation, 1, "generation kept");
    assert_eq!(r.status.cgroup_path, "/sys/fs/cgroup/r");
    let again = replace(&b, status, Part::Status).await;
    assert!(again.changes.is_empty(), "same status: nothing written");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// An update computes the new object from the stored one; it may refuse,
/// and may not move the object.
async fn updates_run_on_the_stored_object<B: Backend>(b: B) {
    create(&b, realm("r")).await;
    let p = path(Kind::Realm, &["r"]);
    let out = b
        .write(WriteOp::Update {
            path: p.clone(),
            part: Part::Main,
            precondition: None,
            update: Arc::new(|o: &AnyObject| {
                let mut o = o.clone();
                if let AnyObject::Realm(r) = &mut o {
                    r.spec.namespace.push_str("-x");
                }
                Ok(o)
            }),
        })
        .await
        .unwrap();
    let AnyObject::Realm(r) = &*out.object else {
        panic!("a realm")
    };
    assert_eq!(r.spec.namespace, "ns-r-x");
    let rv = b.revision().await.unwrap();
    let refused = b
        .write(WriteOp::Update {
            path: p.clone(),
            part: Part::Main,
            precondition: None,
            update: Arc::new(|_: &AnyObject| Err(StoreError::BadRequest("no".into()))),
        })
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::BadRequest(_)), "{refused:?}");
    let moved = b
        .write(WriteOp::Update {
            path: p,
            part: Part::Main,
            precondition: None,
            update: Arc::new(|_: &AnyObject| Ok(realm("elsewhere"))),
        })
        .await
        .unwrap_err();
    assert!(matches!(moved, StoreError::BadRequest(_)), "{moved:?}");
    assert_eq!(b.revision().await.unwrap(), rv, "refusals write nothing");
}

/// A delete refuses an object with children unless cascading; a cascade
/// removes the subtree children first, one change and one revision each,
/// consecutive, with nothing left behind.
async fn cascade_deletes_children_first_in_consecutive_revisions<B: Backend>(b: B) {
    tree(&b, 3).await;
    create(&b, realm("other")).await;
    let before = b.revision().await.unwrap();
    let refused = delete(&b, path(Kind::Realm, &["r"]), false)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::HasChildren { .. }),
        "{refused:?}"
    );
    nothing_after(&b, before).await;
    let seen = record(&b);
    let out = delete(&b, path(Kind::Realm, &["r"]), true).await.unwrap();
    let kinds: Vec<Kind> = out.changes.iter().map(|c| c.object.kind()).collect();
    assert_eq!(
        kinds,
        [
            Kind::Cell,
            Kind::Cell,
            Kind::Cell,
            Kind::Stack,
            Kind::Space,
            Kind::Realm
        ]
    );
    assert!(out.changes.iter().all(|c| c.change == ChangeType::Deleted));
    for w in out.changes.windows(2) {
        assert_eq!(w[1].prev, w[0].revision, "consecutive in the feed");
        assert!(w[1].revision > w[0].revision);
    }
    assert_eq!(out.object.kind(), Kind::Realm, "answers the object itself");
    assert_eq!(essence(&seen.lock().unwrap()), essence(&out.changes));
    for kind in [Kind::Space, Kind::Stack, Kind::Cell] {
        let page = b.list_page(list(kind, &[], None)).await.unwrap();
        assert!(page.items.is_empty(), "{kind:?} left behind");
    }
    let realms = b.list_page(list(Kind::Realm, &[], None)).await.unwrap();
    assert_eq!(names(&realms.items), ["other"]);
}

/// Documents that leave their finalizers out.
fn docs(objects: Vec<AnyObject>) -> Vec<Document> {
    objects.into_iter().map(|o| (o, Part::Main)).collect()
}

/// Apply is all or nothing: a bad document anywhere writes none of them
/// and names its index; a dry run computes the outcome and commits
/// nothing; each document sees the ones before it.
async fn apply_is_atomic_and_reports_each_document<B: Backend>(b: B) {
    let seen = record(&b);
    let err = b
        .apply(
            docs(vec![realm("r"), space("r", "s"), space("missing", "s")]),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Document { index: 2, .. }),
        "{err:?}"
    );
    nothing_after(&b, 0).await;

    let err = b.get(&path(Kind::Realm, &["r"])).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    let dry = b
        .apply(docs(vec![realm("r"), space("r", "s")]), true)
        .await
        .unwrap();
    let applied: Vec<Applied> = dry.items.iter().map(|(a, _)| *a).collect();
    assert_eq!(applied, [Applied::Created, Applied::Created]);
    assert_eq!(dry.changes.len(), 2);
    assert!(dry.revision <= b.revision().await.unwrap());
    nothing_after(&b, 0).await;
    assert!(seen.lock().unwrap().is_empty(), "nor publishes");

    // The same document twice: created, then unchanged, both answering
    // the created object with its revision.
    let out = b
        .apply(docs(vec![realm("r"), space("r", "s"), realm("r")]), false)
        .await
        .unwrap();
    let applied: Vec<Applied> = out.items.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        applied,
        [Applied::Created, Applied::Created, Applied::Unchanged]
    );
    // The revision after the request covers its changes (on redb it is
    // the last one; on etcd "everything up to" its etcd revision).
    assert!(out.changes.iter().all(|c| c.revision <= out.revision));
    assert!(out.revision <= b.revision().await.unwrap());
    nothing_after(&b, out.changes.last().unwrap().revision).await;
    for ((_, item), change) in out.items.iter().zip(&out.changes) {
        assert_eq!(item.meta().resource_version, change.revision);
        assert_eq!(item.meta().generation, 1);
    }
    assert_eq!(out.items[2].1, out.items[0].1);
    let mut changed = realm("r");
    if let AnyObject::Realm(r) = &mut changed {
        r.spec.namespace = "other".into();
    }
    let out = b
        .apply(docs(vec![changed, space("r", "s")]), false)
        .await
        .unwrap();
    let applied: Vec<Applied> = out.items.iter().map(|(a, _)| *a).collect();
    assert_eq!(applied, [Applied::Configured, Applied::Unchanged]);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.items[0].1.meta().generation, 2);
    // Configured, then the same document again; and the same in a dry run.
    let mut again = realm("r");
    if let AnyObject::Realm(r) = &mut again {
        r.spec.namespace = "third".into();
    }
    for dry_run in [true, false] {
        let out = b
            .apply(docs(vec![again.clone(), again.clone()]), dry_run)
            .await
            .unwrap();
        let applied: Vec<Applied> = out.items.iter().map(|(a, _)| *a).collect();
        assert_eq!(applied, [Applied::Configured, Applied::Unchanged]);
        assert_eq!(out.items[1].1, out.items[0].1, "dry run: {dry_run}");
        assert_eq!(
            out.items[1].1.meta().resource_version,
            out.changes[0].revision
        );
    }
    let stored_space = b.get(&path(Kind::Space, &["r", "s"])).await.unwrap();
    assert_eq!(
        *out.items[1].1, stored_space,
        "unchanged answers the stored object"
    );
    assert_eq!(seen.lock().unwrap().len(), 4, "published once committed");
}

/// A snapshot lists the store as it was when taken, whatever is written
/// afterwards, for every kind.
async fn snapshots_list_one_revision<B: Backend>(b: B) {
    tree(&b, 2).await;
    let snap = b.snapshot().unwrap();
    let at = snap.revision();
    assert_eq!(at, b.revision().await.unwrap());
    create(&b, cell(["r", "s", "t"], "late", &[])).await;
    delete(&b, path(Kind::Cell, &["r", "s", "t", "c000"]), false)
        .await
        .unwrap();
    let listed: Vec<String> = snap
        .list(&list(Kind::Cell, &["r"], None))
        .unwrap()
        .map(|e| e.unwrap().1.meta().name.clone())
        .collect();
    assert_eq!(listed, ["c000", "c001"]);
    assert!(
        snap.get(&path(Kind::Cell, &["r", "s", "t", "late"]))
            .is_err()
    );
    assert!(
        snap.get(&path(Kind::Cell, &["r", "s", "t", "c000"]))
            .is_ok()
    );
    let now = b.list_page(list(Kind::Cell, &["r"], None)).await.unwrap();
    assert_eq!(names(&now.items), ["c001", "late"]);
    assert!(now.revision > at);
}

/// Pages come in path order, all from the first page's snapshot; a token
/// from elsewhere is refused.
async fn pages_come_from_one_snapshot<B: Backend>(b: B) {
    tree(&b, 7).await;
    let first = b
        .list_page(list(Kind::Cell, &["r", "s", "t"], Some(3)))
        .await
        .unwrap();
    assert_eq!(names(&first.items), ["c000", "c001", "c002"]);
    // Written between pages, past the first page: not seen by the rest of
    // this list, which shows the store as it was at its first page.
    create(&b, cell(["r", "s", "t"], "c0035", &[])).await;
    delete(&b, path(Kind::Cell, &["r", "s", "t", "c005"]), false)
        .await
        .unwrap();
    let mut all = names(&first.items);
    let mut token = first.continue_token.clone();
    while let Some(t) = token {
        let mut q = list(Kind::Cell, &["r", "s", "t"], Some(3));
        q.continue_token = Some(t);
        let page = b.list_page(q).await.unwrap();
        assert_eq!(page.revision, first.revision, "same snapshot");
        all.extend(names(&page.items));
        token = page.continue_token;
    }
    assert_eq!(all, (0..7).map(|i| format!("c{i:03}")).collect::<Vec<_>>());
    let mut bad = list(Kind::Cell, &[], Some(3));
    bad.continue_token = Some("not a token".into());
    let err = b.list_page(bad).await.unwrap_err();
    assert!(
        matches!(err, StoreError::BadRequest(_) | StoreError::Gone(_)),
        "{err:?}"
    );
}

/// Lists filter by scope at any level and by label selector.
async fn lists_filter_by_scope_and_selector<B: Backend>(b: B) {
    tree(&b, 0).await;
    create(&b, stack("r", "s", "u")).await;
    create(&b, cell(["r", "s", "t"], "a", &[("tier", "front")])).await;
    create(&b, cell(["r", "s", "u"], "b", &[("tier", "back")])).await;
    let mut q = list(Kind::Cell, &[], None);
    q.scope = vec![Some("r".into()), None, Some("u".into())];
    assert_eq!(names(&b.list_page(q).await.unwrap().items), ["b"]);
    let mut q = list(Kind::Cell, &["r"], None);
    q.selector = Selector::parse("tier in (front)").unwrap();
    assert_eq!(names(&b.list_page(q).await.unwrap().items), ["a"]);
}

/// History answers every change after a revision, in order, as the feed
/// published them; a revision compacted away, or beyond the current one,
/// is `Gone`.
async fn history_matches_the_feed_and_ends_in_gone<B: Backend>(b: B) {
    let seen = record(&b);
    tree(&b, 3).await;
    delete(&b, path(Kind::Stack, &["r", "s", "t"]), true)
        .await
        .unwrap();
    let published: Vec<(u64, ChangeType, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.revision, c.change, c.object.path().to_string()))
        .collect();
    let current = b.revision().await.unwrap();
    let page = b.events(0, 1000).unwrap();
    assert_eq!(page.current, current);
    let logged: Vec<(u64, ChangeType, String)> = page
        .events
        .iter()
        .map(|(r, c, o, _)| (*r, *c, o.path().to_string()))
        .collect();
    assert_eq!(logged, published);
    let tail = b.events(logged[3].0, 2).unwrap();
    assert_eq!(tail.events.len(), 2);
    assert_eq!(tail.events[0].0, logged[4].0);
    assert!(b.events(current, 10).unwrap().events.is_empty());
    // Far beyond: on etcd a history read may itself move the position
    // (it writes a marker on servers whose progress is not trusted).
    let err = b.events(current + 1_000_000_000_000, 10).unwrap_err();
    assert!(matches!(err, StoreError::Gone(_)), "{err:?}");
    // Keeping the last 2 revisions: what is older is gone; what is newer
    // is all there.
    let current = b.revision().await.unwrap();
    let dropped = b.compact(2).await.unwrap();
    assert!(dropped > 0);
    let err = b.events(0, 10).unwrap_err();
    assert!(matches!(err, StoreError::Gone(_)), "{err:?}");
    let kept = b.events(current - 2, 10).unwrap();
    let newer: Vec<u64> = logged
        .iter()
        .map(|(r, ..)| *r)
        .filter(|r| *r > current - 2)
        .collect();
    let got: Vec<u64> = kept.events.iter().map(|(r, ..)| *r).collect();
    assert_eq!(got, newer);
}

/// Concurrent writers: every change is published exactly once, before
/// its write is acknowledged, in strictly increasing revisions chained by
/// `prev`, and each request's changes are consecutive.
async fn the_feed_is_ordered_and_complete_under_concurrency<B: Backend + Clone>(b: B) {
    create(&b, realm("r")).await;
    let seen = record(&b);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (b, seen) = (b.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..20 {
                let name = format!("s{w}-{i}");
                let out = b.write(WriteOp::Create(space("r", &name))).await.unwrap();
                let rev = out.changes[0].revision;
                assert!(
                    seen.lock().unwrap().iter().any(|c| c.revision == rev),
                    "published before it was acknowledged"
                );
                outcomes.push(out.changes);
                if i % 5 == 4 {
                    let out = delete(&b, path(Kind::Space, &["r", &name]), true)
                        .await
                        .unwrap();
                    outcomes.push(out.changes);
                }
            }
            outcomes
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let seen = seen.lock().unwrap().clone();
    for w in seen.windows(2) {
        assert!(w[1].revision > w[0].revision, "strictly increasing");
        assert_eq!(w[1].prev, w[0].revision, "chained");
    }
    let mut from_acks: Vec<u64> = acknowledged.iter().flatten().map(|c| c.revision).collect();
    from_acks.sort_unstable();
    let published: Vec<u64> = seen.iter().map(|c| c.revision).collect();
    assert_eq!(published, from_acks, "every acknowledged change, once");
    nothing_after(&b, *published.last().unwrap()).await;
}

/// After close, requests answer `Closed`; reads of what was written before
/// remain correct up to then.
async fn close_refuses_later_writes<B: Backend>(b: B) {
    create(&b, realm("r")).await;
    assert!(b.ready().await);
    b.close();
    let err = b.write(WriteOp::Create(realm("x"))).await.unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
}

async fn tokens_are_unique_revocable_and_not_objects<B: Backend>(b: B) {
    use modelhub::auth::Role;
    use modelhub::auth::token::{Secret, Token};
    let none = b.tokens().await.unwrap();
    assert!(none.items.is_empty() && !none.enabled);
    let secret = Secret::generate();
    let t = Token {
        name: "ci".into(),
        digest: secret.digest(),
        role: Role::Writer,
        realms: Some(["a".to_string()].into()),
        privileged: true,
        created: 42,
    };
    create(&b, realm("r")).await;
    let before = b.revision().await.unwrap();
    b.create_token(t.clone()).await.unwrap();
    let err = b.create_token(t.clone()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenExists(n) if n == "ci"),
        "{err:?}"
    );
    assert_eq!(b.tokens().await.unwrap().items, vec![t.clone()]);
    // Tokens make no change and no event (on etcd they move the store's
    // position, as any key's write does).
    nothing_after(&b, before).await;
    let other = Token {
        name: "a-reader".into(),
        digest: Secret::generate().digest(),
        role: Role::Reader,
        realms: None,
        privileged: false,
        created: 43,
    };
    b.create_token(other.clone()).await.unwrap();
    let names: Vec<String> = b
        .tokens()
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a-reader", "ci"]);
    assert_eq!(b.revoke_token("ci").await.unwrap(), t);
    let err = b.revoke_token("ci").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenNotFound(n) if n == "ci"),
        "{err:?}"
    );
    assert_eq!(b.tokens().await.unwrap().items, vec![other.clone()]);
    // Once every token is revoked, the store still says one existed.
    b.revoke_token("a-reader").await.unwrap();
    let left = b.tokens().await.unwrap();
    assert!(left.items.is_empty() && left.enabled);
    // Objects are untouched, and writes go on.
    let r2 = create(&b, realm("r2")).await;
    assert!(r2 > before);
    let page = b.events(before, 10).unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].0, r2);
}

/// Runs every check against the backend `open()` makes (fresh and empty
/// each time); `open` may keep a guard (say, a temporary directory) in its
/// second value.
macro_rules! suite {
    ($name:ident, $open:expr) => {
        mod $name {
            use super::*;

            suite!(@tests $open;
                create_checks_parent_duplicates_and_sets_server_fields,
                preconditions_refuse_stale_versions_and_change_nothing,
                no_op_writes_take_no_revision_and_status_keeps_the_spec,
                updates_run_on_the_stored_object,
                cascade_deletes_children_first_in_consecutive_revisions,
                apply_is_atomic_and_reports_each_document,
                snapshots_list_one_revision,
                pages_come_from_one_snapshot,
                lists_filter_by_scope_and_selector,
                history_matches_the_feed_and_ends_in_gone,
                the_feed_is_ordered_and_complete_under_concurrency,
                close_refuses_later_writes,
                tokens_are_unique_revocable_and_not_objects
            );
        }
    };
    (@tests $open:expr; $($check:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (backend, _guard) = $open;
            super::$check(backend).await;
        }
    )*};
}

/// A redb store in a fresh temporary directory.
fn redb() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("b.redb"), StoreOptions::default()).unwrap();
    (store, dir)
}

suite!(redb_backend, redb());

/// redb: one compaction drops every event older than the revisions it
/// keeps, however many of its chunks that takes, while writes keep the
/// writer's queue busy all along; and it is answered once durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_one_compaction_drops_all_it_may_while_writes_go_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (b, _dir) = redb();
    create(&b, realm("r")).await;
    let fill = |tag: &'static str, stop: Option<Arc<AtomicBool>>| {
        (0..8)
            .map(|w| {
                let (b, stop) = (b.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while stop
                        .as_ref()
                        .map_or(i < 300, |s| !s.load(Ordering::Relaxed))
                    {
                        create(&b, space("r", &format!("{tag}{w}-{i}"))).await;
                        i += 1;
                    }
                    i
                })
            })
            .collect::<Vec<_>>()
    };
    for t in fill("s", None) {
        t.await.unwrap();
    }
    let before = b.revision().await.unwrap();
    assert!(before > 2_400, "more than two chunks of events: {before}");
    let stop = Arc::new(AtomicBool::new(false));
    let writers = fill("busy", Some(stop.clone()));
    let dropped = tokio::time::timeout(std::time::Duration::from_secs(60), b.compact(100))
        .await
        .expect("the compaction ends while writes go on")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for t in writers {
        written += t.await.unwrap();
    }
    assert!(written > 0, "writes went on during the compaction");
    assert!(dropped >= before - 100, "dropped {dropped} of {before}");
    let err = b.events(before - 101, 10).unwrap_err();
    assert!(matches!(err, StoreError::Gone(_)), "{err:?}");
    // What the compaction left: the revisions it kept, and every later one.
    let kept = b.events(dropped, 10).unwrap();
    assert_eq!(kept.events.first().map(|e| e.0), Some(dropped + 1));
}

/// redb: a catch-up served from the writer's ring of recent event records
/// is the one the event log gives (after a reopen, whose ring starts empty):
/// every page, from every revision, of creates, relabellings (which carry
/// the previous version), status writes, an apply and a cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_catch_ups_from_memory_are_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.redb");
    let b = Store::open(&file, StoreOptions::default()).unwrap();
    tree(&b, 4).await;
    let relabelled = cell(["r", "s", "t"], "c001", &[("tier", "web")]);
    replace(&b, relabelled, Part::Main).await;
    let mut status = cell(["r", "s", "t"], "c002", &[]);
    if let AnyObject::Cell(c) = &mut status {
        c.status.state = modelhub::model::CellState::Ready;
    }
    replace(&b, status, Part::Status).await;
    b.apply(
        docs(vec![
            cell(["r", "s", "t"], "c000", &[("tier", "db")]),
            cell(["r", "s", "t"], "c100", &[]),
        ]),
        false,
    )
    .await
    .unwrap();
    delete(&b, path(Kind::Stack, &["r", "s", "t"]), true)
        .await
        .unwrap();
    let current = b.revision().await.unwrap();
    // A page cut by `max` may end at its last event (the ring) or at the
    // current revision (the log); a whole page ends at the current one.
    let pages = |b: &Store| {
        let mut all = Vec::new();
        for after in 0..=current {
            for max in [1, 3, 1000] {
                let page = b.events(after, max).unwrap();
                let whole = max == 1000;
                all.push((after, max, whole.then_some(page.current), page.events));
            }
        }
        all
    };
    let from_memory = pages(&b);
    assert!(
        from_memory.iter().any(|(.., events)| events
            .iter()
            .any(|(_, change, _, before)| *change == ChangeType::Modified && before.is_some())),
        "some modification carries its previous version"
    );
    b.close();
    drop(b);
    let b = Store::open(&file, StoreOptions::default()).unwrap();
    assert_eq!(b.revision().await.unwrap(), current);
    assert_eq!(pages(&b), from_memory);
}

/// redb: by the time the feed delivers a change, a catch-up already
/// gives it (a watcher that finds a gap in the feed and catches up never
/// misses the change that showed it the gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_a_change_is_in_catch_ups_when_the_feed_delivers_it() {
    let (b, _dir) = redb();
    let missing = Arc::new(Mutex::new(Vec::new()));
    let (store, sink) = (b.clone(), missing.clone());
    b.feed().subscribe(Arc::new(move |changes: &[Change]| {
        for c in changes {
            let page = store.events(c.revision - 1, 1000).unwrap();
            if !page.events.iter().any(|(r, ..)| *r == c.revision) {
                sink.lock().unwrap().push(c.revision);
            }
        }
    }));
    tree(&b, 3).await;
    let writes = (0..40).map(|i| {
        let b = b.clone();
        tokio::spawn(
            async move { create(&b, cell(["r", "s", "t"], &format!("x{i:02}"), &[])).await },
        )
    });
    for w in writes {
        w.await.unwrap();
    }
    b.apply(
        docs(vec![cell(["r", "s", "t"], "x00", &[("tier", "web")])]),
        false,
    )
    .await
    .unwrap();
    assert!(b.revision().await.unwrap() > 40);
    assert_eq!(*missing.lock().unwrap(), Vec::<u64>::new());
}

/// A store on a one-member etcd cluster of its own (compaction is
/// cluster-wide), `None` without an etcd binary (the reason is printed);
/// `cache`: whether the replica keeps its copy of the objects.
#[cfg(feature = "etcd")]
async fn etcd(cache: bool) -> Option<(Store, common::etcd::Cluster)> {
    let cluster = tokio::task::spawn_blocking(|| common::etcd::Cluster::start(1))
        .await
        .unwrap()?;
    let options = modelhub::store::EtcdOptions {
        endpoints: cluster.endpoints().split(',').map(String::from).collect(),
        prefix: common::etcd::next_prefix(),
        // Quiet: a heartbeat would move the position between two reads.
        heartbeat: std::time::Duration::from_secs(600),
        cache,
        ..modelhub::store::EtcdOptions::default()
    };
    Some((Store::open_etcd(&options).await.unwrap(), cluster))
}

#[cfg(feature = "etcd")]
suite!(
    etcd_backend,
    match etcd(true).await {
        Some(b) => b,
        None => return,
    }
);

// Every read from etcd itself (`--etcd-cache false`), the path a replica
// takes while its copy loads or lags.
#[cfg(feature = "etcd")]
suite!(
    etcd_uncached_backend,
    match etcd(false).await {
        Some(b) => b,
        None => return,
    }
);

/// A replica whose watch lags still answers every read with the writes
/// acknowledged before it (through another replica): it waits for its
/// copy to catch up, or, past the patience, reads etcd.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_copies_answer_linearizably_while_their_feed_lags() {
    use std::time::Duration;
    let Some(cluster) = tokio::task::spawn_blocking(|| common::etcd::Cluster::start(1))
        .await
        .unwrap()
    else {
        return;
    };
    let prefix = common::etcd::next_prefix();
    let open = |feed_delay: Duration| {
        let options = modelhub::store::EtcdOptions {
            endpoints: cluster.endpoints().split(',').map(String::from).collect(),
            prefix: prefix.clone(),
            heartbeat: Duration::from_secs(600),
            feed_delay,
            ..modelhub::store::EtcdOptions::default()
        };
        async move { Store::open_etcd(&options).await.unwrap() }
    };
    let a = open(Duration::ZERO).await;
    let slow = open(Duration::from_millis(300)).await;
    let stuck = open(Duration::from_millis(2500)).await;
    // Until each copy is loaded, reads go to etcd.
    for s in [&slow, &stuck] {
        let mut served = false;
        for _ in 0..100 {
            let before = s.stats().cache_reads;
            let _ = s.get(&path(Kind::Realm, &["none"])).await;
            if s.stats().cache_reads > before {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "the copy never served a read");
    }

    for n in 0..3 {
        let name = format!("r{n}");
        let made = a.write(WriteOp::Create(realm(&name))).await.unwrap();
        let rv = made.object.meta().resource_version;
        let (hits, misses) = (slow.stats().cache_reads, slow.stats().cache_misses);
        let got = slow.get(&path(Kind::Realm, &[&name])).await.unwrap();
        assert_eq!(got.meta().resource_version, rv);
        assert_eq!(
            (slow.stats().cache_reads, slow.stats().cache_misses),
            (hits + 1, misses),
            "served from the copy, after waiting for it"
        );
        let page = slow.list_page(list(Kind::Realm, &[], None)).await.unwrap();
        assert!(
            page.revision >= rv,
            "a list older than an acknowledged write"
        );
        assert_eq!(page.items.len(), n + 1);

        let misses = stuck.stats().cache_misses;
        let got = stuck.get(&path(Kind::Realm, &[&name])).await.unwrap();
        assert_eq!(got.meta().resource_version, rv, "read from etcd");
        assert_eq!(stuck.stats().cache_misses, misses + 1);
    }
    for s in [a, slow, stuck] {
        s.close();
    }
}
