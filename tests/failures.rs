//! Storage failures and writer bugs, in process, on a simulated disk: what
//! each request is answered, that the store says why it refuses writes,
//! that it recovers by itself, and that nothing acknowledged is lost
//! across a power cut afterwards.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelhub::model::{AnyObject, Kind, ObjectMeta, Path, Realm};
use modelhub::store::disk::sim::{Op, SimDisk};
use modelhub::store::{Backend, Part, RefusedCause, Store, StoreError, StoreOptions, WriteOp};

const DATA: &str = "/data/hub.redb";

fn realm(name: &str) -> AnyObject {
    let mut r = Realm {
        meta: ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        },
        ..Realm::default()
    };
    r.spec.namespace = format!("ns-{name}");
    AnyObject::Realm(r)
}

fn path(name: &str) -> Path {
    Path::new(Kind::Realm, vec![name.to_string()])
}

fn open(disk: &SimDisk) -> Store {
    let options = StoreOptions {
        disk: Arc::new(disk.clone()),
        min_free_bytes: 0,
        checkpoint_interval: Duration::from_secs(3600),
        cache_bytes: 4 << 20,
        ..StoreOptions::default()
    };
    Store::open(FsPath::new(DATA), options).expect("opens")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Retries creating `name` until the store accepts writes again (bounded).
async fn create_when_recovered(store: &Store, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.write(WriteOp::Create(realm(name))).await {
            Ok(_) => return,
            Err(StoreError::NoSpace(_) | StoreError::Unavailable(_)) => {
                assert!(Instant::now() < deadline, "the store never recovered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected answer while recovering: {e:?}"),
        }
    }
}

#[test]
fn eio_on_the_logs_sync_is_outcome_unknown_then_the_store_recovers() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        // The next sync is the log's, for the next write.
        disk.fail(Op::Sync, disk.counts().syncs + 1, std::io::ErrorKind::Other);
        let err = store
            .write(WriteOp::Create(realm("b")))
            .await
            .expect_err("the sync failed");
        assert!(matches!(err, StoreError::OutcomeUnknown(_)), "{err:?}");
        // The failure is counted; the refusal lasts until the recovery,
        // which may already be done.
        assert_eq!(store.stats().storage_errors_other, 1);
        if let Some(refusal) = store.writes_refused() {
            assert_eq!(refusal.cause, RefusedCause::StorageFailed);
        }
        // Reads answer, but for the moment of the reopen (503).
        match store.get(&path("a")).await {
            Ok(_) | Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
        create_when_recovered(&store, "c").await;
        assert!(store.get(&path("a")).await.is_ok());
        assert_eq!(store.writes_refused(), None);
        assert!(store.stats().recoveries >= 1);
        store.close();
        // After a power cut, everything acknowledged is there; "b" either
        // way.
        for seed in 0..8 {
            let after = open(&disk.crash(seed));
            for name in ["a", "c"] {
                assert!(after.get(&path(name)).await.is_ok(), "seed {seed}: {name}");
            }
            after.close();
        }
    });
}

#[test]
fn enospc_while_the_log_grows_refuses_with_507_and_nothing_written() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        // No room left: a record bigger than what the log has zero-filled
        // needs growth, which fails before the record is written (or the
        // database's pages spill first, which fails the same way).
        disk.set_capacity(Some(used(&disk)));
        let mut big = realm("big");
        big.meta_mut()
            .labels
            .insert("pad".into(), "x".repeat(5 << 20));
        let err = store
            .write(WriteOp::Create(big))
            .await
            .expect_err("no room");
        assert!(matches!(err, StoreError::NoSpace(_)), "{err:?}");
        assert!(matches!(
            store.get(&path("big")).await,
            Err(StoreError::NotFound(_))
        ));
        // While the disk stays full, writes are refused with 507 (or
        // accepted, if only the log's growth failed); once space returns
        // they resume by themselves, and the refused one is absent.
        match store.write(WriteOp::Create(realm("small"))).await {
            Ok(_) | Err(StoreError::NoSpace(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
        disk.set_capacity(None);
        create_when_recovered(&store, "after").await;
        assert!(matches!(
            store.get(&path("big")).await,
            Err(StoreError::NotFound(_))
        ));
        store.close();
        let after = open(&disk.crash(1));
        assert!(after.get(&path("a")).await.is_ok());
        assert!(after.get(&path("after")).await.is_ok());
        after.close();
    });
}

/// Bytes all files of `disk` hold now.
fn used(disk: &SimDisk) -> u64 {
    disk.files()
        .iter()
        .filter_map(|f| disk.contents(f))
        .map(|c| c.len() as u64)
        .sum()
}

#[test]
fn a_panic_while_planning_fails_that_request_alone() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        let err = store
            .write(WriteOp::Update {
                path: path("a"),
                part: Part::Main,
                precondition: None,
                update: Arc::new(|_| panic!("a bug in an update")),
            })
            .await
            .expect_err("the planner panicked");
        assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        assert_eq!(store.writes_refused(), None, "no storage failure");
        store.write(WriteOp::Create(realm("b"))).await.unwrap();
        assert_eq!(store.stats().recoveries, 0);
        store.close();
    });
}

#[test]
fn a_panic_after_the_commit_recovers_the_store_and_keeps_the_write() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let armed = armed.clone();
            store.feed().subscribe(Arc::new(move |_| {
                if armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    panic!("a bug in a feed subscriber");
                }
            }));
        }
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = store
            .write(WriteOp::Create(realm("b")))
            .await
            .expect_err("the writer panicked after the commit");
        assert!(matches!(err, StoreError::OutcomeUnknown(_)), "{err:?}");
        // No zombie writer: the store recovers and takes writes again;
        // the write was durable, so it is there.
        create_when_recovered(&store, "c").await;
        assert!(store.stats().recoveries >= 1);
        for name in ["a", "b", "c"] {
            assert!(store.get(&path(name)).await.is_ok(), "{name}");
        }
        store.close();
    });
}

#[test]
fn an_io_error_on_a_read_answers_503_and_recovers_the_store() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let options = StoreOptions {
            disk: Arc::new(disk.clone()),
            min_free_bytes: 0,
            checkpoint_interval: Duration::from_secs(3600),
            // Too small to hold the objects: reads go to the disk.
            cache_bytes: 64 << 10,
            ..StoreOptions::default()
        };
        let store = Store::open(FsPath::new(DATA), options).expect("opens");
        for i in 0..300 {
            let mut r = realm(&format!("r{i}"));
            r.meta_mut().labels.insert("pad".into(), "x".repeat(2000));
            store.write(WriteOp::Create(r)).await.unwrap();
        }
        store.checkpoint().await.unwrap();
        disk.fail(Op::Read, disk.counts().reads + 1, std::io::ErrorKind::Other);
        let mut refused = 0;
        for i in 0..300 {
            match store.get(&path(&format!("r{i}"))).await {
                Ok(_) => {}
                Err(StoreError::Unavailable(_)) => refused += 1,
                Err(e) => panic!("a read's I/O error answered {e:?}"),
            }
            if refused > 0 {
                break;
            }
        }
        assert_eq!(refused, 1, "the failed read was answered 503");
        // The read told the writer: the store recovers by itself, with no
        // write to notice, and reads answer again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.stats().recoveries == 0 {
            assert!(Instant::now() < deadline, "never recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in (0..300).step_by(7) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match store.get(&path(&format!("r{i}"))).await {
                    Ok(_) => break,
                    Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("r{i}: {e:?}"),
                }
            }
        }
        store.close();
    });
}

#[test]
fn storage_that_keeps_failing_after_recoveries_stops_the_store() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        // Each round: the next sync fails (the write's log sync, 504, or
        // one of redb's before it, 503), the store recovers, a write goes
        // through. After 5 recoveries within a
        // minute, the next failure is fatal rather than one more reopen.
        for round in 0..6 {
            disk.fail(Op::Sync, disk.counts().syncs + 1, std::io::ErrorKind::Other);
            let err = store
                .write(WriteOp::Create(realm(&format!("lost{round}"))))
                .await
                .expect_err("the sync failed");
            assert!(
                matches!(
                    err,
                    StoreError::OutcomeUnknown(_) | StoreError::Unavailable(_)
                ),
                "round {round}: {err:?}, recoveries {}",
                store.stats().recoveries
            );
            if round < 5 {
                create_when_recovered(&store, &format!("ok{round}")).await;
                assert_eq!(store.fatal(), None, "round {round}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.fatal().is_none() {
            assert!(Instant::now() < deadline, "never fatal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let msg = store.fatal().unwrap();
        assert!(msg.contains("5 recoveries"), "{msg}");
        assert_eq!(store.stats().recoveries, 5);
        store.close();
    });
}

#[test]
fn a_spare_file_without_room_at_start_is_made_once_there_is_room() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        disk.set_capacity(Some(6 << 20));
        let options = StoreOptions {
            disk: Arc::new(disk.clone()),
            min_free_bytes: 0,
            spare_bytes: 4 << 20,
            checkpoint_interval: Duration::from_secs(3600),
            cache_bytes: 4 << 20,
            ..StoreOptions::default()
        };
        let store = Store::open(FsPath::new(DATA), options).expect("opens");
        let spare = FsPath::new("/data/hub.redb.spare");
        assert_eq!(disk.contents(spare), None, "no room for it at start");
        disk.set_capacity(None);
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.write(WriteOp::Create(realm("b"))).await.unwrap();
        assert_eq!(
            disk.contents(spare).map(|c| c.len()),
            Some(4 << 20),
            "made once there was room"
        );
        store.close();
    });
}

#[test]
fn eio_on_a_tokens_durable_commit_is_outcome_unknown_then_the_store_recovers() {
    use modelhub::auth::Role;
    use modelhub::auth::token::{Secret, Token};
    let token = |name: &str| Token {
        name: name.into(),
        digest: Secret::generate().digest(),
        role: Role::Reader,
        realms: None,
        privileged: false,
        created: 0,
    };
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        store.create_token(token("kept")).await.unwrap();
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        // The next sync is the token commit's.
        disk.fail(Op::Sync, disk.counts().syncs + 1, std::io::ErrorKind::Other);
        let err = store
            .create_token(token("doubtful"))
            .await
            .expect_err("the sync failed");
        assert!(matches!(err, StoreError::OutcomeUnknown(_)), "{err:?}");
        // The store recovers from its log; the logged realm and the first
        // token are there; the doubtful token either way.
        create_when_recovered(&store, "b").await;
        assert!(store.get(&path("a")).await.is_ok());
        let names: Vec<String> = store
            .tokens()
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.contains(&"kept".to_string()), "{names:?}");
        store.close();
        for seed in 0..8 {
            let after = open(&disk.crash(seed));
            let tokens = after.tokens().await.unwrap();
            assert!(tokens.enabled, "seed {seed}");
            assert!(tokens.items.iter().any(|t| t.name == "kept"), "seed {seed}");
            for name in ["a", "b"] {
                assert!(after.get(&path(name)).await.is_ok(), "seed {seed}: {name}");
            }
            after.close();
        }
    });
}

/// A compaction is answered only once durable: when the checkpoint that
/// would make it so fails, it is answered outcome unknown (never `Ok`, and
/// never left waiting); the store recovers, and after a crash the history
/// is either compacted or whole.
#[test]
fn eio_on_the_checkpoint_of_a_compaction_is_outcome_unknown_then_the_store_recovers() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        for i in 0..20 {
            store
                .write(WriteOp::Create(realm(&format!("r{i}"))))
                .await
                .unwrap();
        }
        // The chunks commit without a sync: the next sync is the
        // checkpoint's.
        disk.fail(Op::Sync, disk.counts().syncs + 1, std::io::ErrorKind::Other);
        let err = store.compact(5).await.expect_err("the checkpoint failed");
        assert!(matches!(err, StoreError::OutcomeUnknown(_)), "{err:?}");
        create_when_recovered(&store, "after").await;
        store.close();
        for seed in 0..8 {
            let after = open(&disk.crash(seed));
            assert!(after.get(&path("r19")).await.is_ok(), "seed {seed}");
            assert!(after.get(&path("after")).await.is_ok(), "seed {seed}");
            match after.events(0, 100) {
                Ok(page) => assert_eq!(page.events.len(), 21, "seed {seed}: whole"),
                Err(StoreError::Gone(_)) => {
                    let kept = after.events(15, 100).unwrap();
                    assert_eq!(kept.events.len(), 6, "seed {seed}: compacted");
                }
                Err(e) => panic!("seed {seed}: {e:?}"),
            }
            after.close();
        }
    });
}

/// A status write of `path` setting `cgroup_path` to `to`, through the
/// stored version it is planned from; answers that stored version too.
async fn status_write(store: &Store, path: &Path, to: &str) -> Result<AnyObject, StoreError> {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (to, seen_by_update) = (to.to_string(), seen.clone());
    store
        .write(WriteOp::Update {
            path: path.clone(),
            part: Part::Status,
            precondition: None,
            update: Arc::new(move |stored: &AnyObject| {
                *seen_by_update.lock().unwrap() = Some(stored.clone());
                let mut next = stored.clone();
                if let AnyObject::Realm(r) = &mut next {
                    r.status.cgroup_path = to.clone();
                }
                Ok(next)
            }),
        })
        .await?;
    let planned_from = seen.lock().unwrap().take().expect("the update ran");
    Ok(planned_from)
}

/// The writer keeps the objects it modifies decoded for their next
/// read-modify-write; one whose batch failed is never planned from: the
/// next write starts from the version stored, whatever the failure left.
#[test]
fn a_failed_status_write_is_not_planned_from_after_recovery() {
    runtime().block_on(async {
        let disk = SimDisk::new();
        let store = open(&disk);
        store.write(WriteOp::Create(realm("a"))).await.unwrap();
        let a = path("a");
        status_write(&store, &a, "/one").await.unwrap();
        // Planned from the version the last write left, kept decoded.
        let stored = store.get(&a).await.unwrap();
        let kept = store.stats().decoded_kept;
        let from = status_write(&store, &a, "/two").await.unwrap();
        assert_eq!(from, stored, "planned from what is stored");
        assert_eq!(
            store.stats().decoded_kept,
            kept + 1,
            "taken from the kept object"
        );
        let AnyObject::Realm(r) = &from else {
            unreachable!()
        };
        assert_eq!(r.status.cgroup_path, "/one");
        // The next status write is planned, then its log write fails: its
        // outcome is unknown, and the log holds a torn record at most, so
        // the recovery keeps the version before.
        disk.fail(
            Op::Write,
            disk.counts().writes + 1,
            std::io::ErrorKind::Other,
        );
        let err = status_write(&store, &a, "/lost")
            .await
            .expect_err("the write failed");
        assert!(matches!(err, StoreError::OutcomeUnknown(_)), "{err:?}");
        create_when_recovered(&store, "b").await;
        // Whatever the recovery kept, the next write is planned from it.
        let stored = store.get(&a).await.unwrap();
        let from = status_write(&store, &a, "/three").await.unwrap();
        assert_eq!(from, stored, "planned from what is stored after recovery");
        let AnyObject::Realm(r) = store.get(&a).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(r.status.cgroup_path, "/three");
        store.close();
    });
}
