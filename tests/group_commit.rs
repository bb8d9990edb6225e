//! Group commit correctness, on the store itself: concurrent requests share
//! transactions, yet each keeps its own revisions and its own
//! all-or-nothing outcome.

use std::collections::BTreeSet;
use std::sync::Arc;

use modelhub::model::{AnyObject, Kind, ObjectMeta, Path, Realm, RealmSpec};
use modelhub::store::{Backend, Part, Store, StoreError, StoreOptions, WriteOp, WriteOutcome};

fn realm(name: &str, namespace: &str) -> AnyObject {
    AnyObject::Realm(Realm {
        meta: ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        },
        spec: RealmSpec {
            namespace: namespace.into(),
            ..RealmSpec::default()
        },
        status: Default::default(),
    })
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("g.redb"), StoreOptions::default()).unwrap()
}

async fn all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Creates every object from its own task at once; the outcomes in order.
async fn create_concurrently(
    store: &Store,
    objects: impl Iterator<Item = AnyObject>,
) -> Vec<Result<WriteOutcome, StoreError>> {
    let tasks = objects
        .map(|o| {
            let s = store.clone();
            tokio::spawn(async move { s.write(WriteOp::Create(o)).await })
        })
        .collect();
    all(tasks).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_let_exactly_one_win() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let results =
        create_concurrently(&store, (0..200).map(|i| realm("same", &format!("ns{i}")))).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let lost = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::AlreadyExists(_))))
        .count();
    assert_eq!((wins, lost), (1, 199));
    assert_eq!(
        store.revision().await.unwrap(),
        1,
        "only the winner took a revision"
    );
    let stats = store.stats();
    let (requests, commits) = (stats.requests, stats.commits);
    assert_eq!(requests, 200);
    assert_eq!(commits, 1, "refused requests commit nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_precondition_among_many_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let base = store
        .write(WriteOp::Create(realm("guarded", "v1")))
        .await
        .unwrap();
    let stale = base.object.meta().resource_version;
    // Move it on, so `stale` no longer matches.
    store
        .write(WriteOp::Replace {
            object: realm("guarded", "v2"),
            part: Part::Main,
            precondition: None,
        })
        .await
        .unwrap();
    let before = store.revision().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            if i == 50 {
                s.write(WriteOp::Replace {
                    object: realm("guarded", "v3"),
                    part: Part::Main,
                    precondition: Some(stale),
                })
                .await
            } else {
                s.write(WriteOp::Create(realm(&format!("r{i}"), "x"))).await
            }
        }));
    }
    let results = all(tasks).await;
    for (i, r) in results.iter().enumerate() {
        if i == 50 {
            assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
        } else {
            assert!(r.is_ok(), "request {i}: {r:?}");
        }
    }
    let revs: BTreeSet<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|o| o.object.meta().resource_version)
        .collect();
    assert_eq!(
        revs,
        (before + 1..=before + 99).collect(),
        "99 unique, consecutive revisions"
    );
    let guarded = store
        .get(&Path::new(Kind::Realm, vec!["guarded".into()]))
        .await
        .unwrap();
    let AnyObject::Realm(g) = guarded else {
        panic!()
    };
    assert_eq!(g.spec.namespace, "v2", "the stale write changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conflicting_updates_serialize_without_lost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .write(WriteOp::Create(realm("counter", "0")))
        .await
        .unwrap();
    // Each update appends its number to the namespace, read-modify-write
    // inside the transaction: none may be lost.
    let tasks = (0..64)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.write(WriteOp::Update {
                    path: Path::new(Kind::Realm, vec!["counter".into()]),
                    part: Part::Main,
                    precondition: None,
                    update: Arc::new(move |cur: &AnyObject| {
                        let AnyObject::Realm(r) = cur else {
                            unreachable!()
                        };
                        Ok(realm("counter", &format!("{},{i}", r.spec.namespace)))
                    }),
                })
                .await
            })
        })
        .collect();
    for r in all(tasks).await {
        r.unwrap();
    }
    let AnyObject::Realm(r) = store
        .get(&Path::new(Kind::Realm, vec!["counter".into()]))
        .await
        .unwrap()
    else {
        panic!()
    };
    let mut seen: Vec<u32> = r
        .spec
        .namespace
        .split(',')
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    assert_eq!(r.meta.generation, 65);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revisions_are_dense_ordered_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let created =
        create_concurrently(&store, (0..300).map(|i| realm(&format!("r{i:03}"), "x"))).await;
    let mut by_rev: Vec<(u64, String)> = created
        .into_iter()
        .map(|r| {
            let o = r.unwrap().object;
            (o.meta().resource_version, o.meta().name.clone())
        })
        .collect();
    by_rev.sort();
    assert_eq!(
        by_rev.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    let stats = store.stats();
    let (requests, commits) = (stats.requests, stats.commits);
    assert_eq!(requests, 300);
    assert!(
        commits < requests,
        "concurrent requests shared disk syncs: {commits} commits for {requests}"
    );
    // The event log agrees with the acknowledgements, in revision order.
    let s = store.clone();
    let page = tokio::task::spawn_blocking(move || s.events(0, 1000))
        .await
        .unwrap()
        .unwrap();
    let logged: Vec<(u64, String)> = page
        .events
        .iter()
        .map(|(r, _, o, _)| (*r, o.meta().name.clone()))
        .collect();
    assert_eq!(logged, by_rev);
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.close())
        .await
        .unwrap();
    drop(store);
    let store = Arc::new(open(&dir));
    assert_eq!(store.revision().await.unwrap(), 300);
    let next = store
        .write(WriteOp::Create(realm("after", "x")))
        .await
        .unwrap();
    assert_eq!(next.object.meta().resource_version, 301);
}

#[tokio::test]
async fn the_committing_revision_follows_commits_only() {
    // Readers compare it with what the change feed has published (the list
    // cache): it must cover every committed revision, and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.committing_revision(), 0, "nothing written yet");
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        store
            .write(WriteOp::Create(realm(name, "ns")))
            .await
            .unwrap();
        assert_eq!(store.committing_revision(), i as u64 + 1);
    }
    let refused = store.write(WriteOp::Create(realm("a", "other"))).await;
    assert!(matches!(refused, Err(StoreError::AlreadyExists(_))));
    assert_eq!(
        store.committing_revision(),
        2,
        "a refused write commits nothing"
    );
    let outcome = store
        .apply(
            vec![
                (realm("c", "ns"), Part::Main),
                (realm("d", "ns"), Part::Main),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcome.revision, 4);
    assert_eq!(store.committing_revision(), 4);
}
