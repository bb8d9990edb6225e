//! Property: on the redb backend (and, with `MODELHUB_TEST_STORE=etcd`, on
//! etcd once its background process has settled each write), any sequence
//! of creates, deletes (with or without cascade), finalizer writes and
//! status writes keeps the deletion lifecycle's invariants
//! (`modelhub::store::plan`), checked through the library API after every
//! write:
//!
//! 1. no object is stored without its parent;
//! 2. terminating is closed downwards: every descendant of a terminating
//!    object is terminating (redb settles a subtree in the write itself);
//! 3. no terminating object without finalizers and without children
//!    remains (the write that left it so removed it);
//! 4. a removed object had no finalizers and no remaining children when
//!    it went (every `Deleted` change of the write's outcome, in order).
//!
//! Besides: a refused write changes nothing (neither the revision nor any
//! object) and is a refusal the store before it explains; a write's
//! changes lead exactly from the store before it to the store after it;
//! the history replayed from revision 0 is what the writes answered and
//! rebuilds the listed store; and once every finalizer is removed (deepest
//! kinds first), no terminating object is left.
//!
//! The objects come from a small universe (realms r1 r2, spaces s1 s2,
//! stacks t1 t2, cells c1 c2 c3, containers k1 k2), the first name of each
//! level the likeliest, so that deep paths often find their parents.
//! Cases: 64, or `PROPTEST_CASES`; failures persist in
//! `proptest-regressions/tests/lifecycle_props.txt`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use modelhub::model::{
    AnyObject, Cell, CellState, Container, ContainerState, Kind, Path, Realm, RealmState, Selector,
    Space, SpaceState, Stack, StackState,
};
use modelhub::store::{
    Backend, Before, ChangeType, ListQuery, Part, Store, StoreError, StoreOptions, WriteOp,
};
use proptest::prelude::*;

mod common;
use proptest::test_runner::FileFailurePersistence;

const REALMS: &[&str] = &["r1", "r2"];
const SPACES: &[&str] = &["s1", "s2"];
const STACKS: &[&str] = &["t1", "t2"];
const CELLS: &[&str] = &["c1", "c2", "c3"];
const CONTAINERS: &[&str] = &["k1", "k2"];
const FINALIZERS: &[&str] = &["a.io/x", "b.io/y", "c.io/z"];

/// Page size of the lists (small, so that lists take several pages).
const PAGE: usize = 5;

/// The store's objects by path.
type Objects = BTreeMap<Path, AnyObject>;

/// One change as the writes answered it, or as the history holds it.
type Event = (u64, ChangeType, Path);

/// One write request of a sequence.
#[derive(Clone)]
enum Op {
    /// Create the object at `path` with these finalizers.
    Create {
        path: Path,
        finalizers: &'static [&'static str],
    },
    /// Delete the object at `path`.
    Delete { path: Path, cascade: bool },
    /// Replace the finalizers of the object at `path` (`Part::Finalizers`)
    /// with its stored ones, edited.
    Finalizers { path: Path, edit: Edit },
    /// Replace the status of the object at `path` (`Part::Status`) with one
    /// in the state of this index (modulo the kind's states).
    Status { path: Path, state: usize },
}

/// How a finalizer write edits the stored finalizers.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// Remove the one at this index (modulo their number), if any.
    RemoveOne(usize),
    /// Remove them all.
    RemoveAll,
    /// Add this one, unless it is there already.
    Add(&'static str),
}

impl Edit {
    fn apply(self, finalizers: &mut Vec<String>) {
        match self {
            Edit::RemoveOne(i) => {
                if !finalizers.is_empty() {
                    finalizers.remove(i % finalizers.len());
                }
            }
            Edit::RemoveAll => finalizers.clear(),
            Edit::Add(f) => {
                if !finalizers.iter().any(|g| g == f) {
                    finalizers.push(f.into());
                }
            }
        }
    }
}

impl Op {
    /// The path the request names.
    fn path(&self) -> &Path {
        match self {
            Op::Create { path, .. }
            | Op::Delete { path, .. }
            | Op::Finalizers { path, .. }
            | Op::Status { path, .. } => path,
        }
    }
}

/// Paths printed as `Cell r1/s1/t1/c1`, so that a shrunk sequence reads.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { path, finalizers } => {
                write!(f, "create {path} with finalizers {finalizers:?}")
            }
            Op::Delete { path, cascade } => write!(f, "delete {path} (cascade: {cascade})"),
            Op::Finalizers { path, edit } => write!(f, "finalizers of {path}: {edit:?}"),
            Op::Status { path, state } => {
                let wanted = with_state(object(path, Vec::new()), *state);
                write!(f, "status of {path}: {}", wanted.state_name())
            }
        }
    }
}

/// An empty object at `path` (parent coordinates and id filled in) with
/// `finalizers`. The store's write path does not validate, so nothing else
/// is needed.
fn object(path: &Path, finalizers: Vec<String>) -> AnyObject {
    let mut object = match path.kind() {
        Kind::Realm => AnyObject::Realm(Realm::default()),
        Kind::Space => AnyObject::Space(Space::default()),
        Kind::Stack => AnyObject::Stack(Stack::default()),
        Kind::Cell => AnyObject::Cell(Cell::default()),
        Kind::Container => AnyObject::Container(Container::default()),
    };
    object
        .place(path)
        .expect("an empty object can be placed at any path");
    object.meta_mut().finalizers = finalizers;
    object
}

/// `object` with `status.state` the state of index `state` (modulo the
/// number of its kind's states).
fn with_state(mut object: AnyObject, state: usize) -> AnyObject {
    fn pick<T: Copy>(all: &[T], i: usize) -> T {
        all[i % all.len()]
    }
    match &mut object {
        AnyObject::Realm(o) => o.status.state = pick(RealmState::ALL, state),
        AnyObject::Space(o) => o.status.state = pick(SpaceState::ALL, state),
        AnyObject::Stack(o) => o.status.state = pick(StackState::ALL, state),
        AnyObject::Cell(o) => o.status.state = pick(CellState::ALL, state),
        AnyObject::Container(o) => o.status.state = pick(ContainerState::ALL, state),
    }
    object
}

/// A name of one level, the first three times as likely as each other.
fn name(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(names[0]),
        1 => proptest::sample::select(&names[1..]),
    ]
    .prop_map(String::from)
}

/// A path of `kind` in the universe.
fn at(kind: Kind) -> impl Strategy<Value = Path> {
    (
        name(REALMS),
        name(SPACES),
        name(STACKS),
        name(CELLS),
        name(CONTAINERS),
    )
        .prop_map(move |(r, s, t, c, k)| {
            Path::new(
                kind,
                [r, s, t, c, k].into_iter().take(kind.depth()).collect(),
            )
        })
}

/// A path of any kind, deeper kinds likelier (they have more paths).
fn path() -> impl Strategy<Value = Path> {
    prop_oneof![
        1 => at(Kind::Realm),
        2 => at(Kind::Space),
        2 => at(Kind::Stack),
        3 => at(Kind::Cell),
        3 => at(Kind::Container),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..2usize).prop_map(Edit::RemoveOne),
        Just(Edit::RemoveAll),
        proptest::sample::select(FINALIZERS).prop_map(Edit::Add),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (path(), 0..=2usize).prop_map(|(path, n)| Op::Create {
            path,
            finalizers: &FINALIZERS[..n],
        }),
        3 => (path(), any::<bool>()).prop_map(|(path, cascade)| Op::Delete { path, cascade }),
        3 => (path(), edit()).prop_map(|(path, edit)| Op::Finalizers { path, edit }),
        1 => (prop_oneof![at(Kind::Realm), at(Kind::Cell)], 0..8usize)
            .prop_map(|(path, state)| Op::Status { path, state }),
    ]
}

/// Up to 40 requests.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=40)
}

/// A store error where none may occur, as the case's failure.
fn broke(at: &str) -> impl Fn(StoreError) -> TestCaseError + '_ {
    move |e| TestCaseError::fail(format!("{at}: the store failed: {e}"))
}

/// Whether the store settles terminating subtrees in the write that
/// calls for it (redb): then every check is exact. On etcd a background
/// process settles them after the write, and each op waits for it.
fn exact(store: &Store) -> bool {
    !store.is_etcd()
}

/// Lists the store until its invariants hold (a background process
/// settling terminating subtrees is done), for 20 s at most.
async fn settled(store: &Store, at: &str) -> Result<Objects, TestCaseError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let objects = list_all(store, at).await?;
        match invariants(at, &objects) {
            Ok(()) => return Ok(objects),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// A store of its own in `dir`.
fn open(dir: &tempfile::TempDir) -> Store {
    let options = StoreOptions {
        // A list here pages through one snapshot at a time: keep few.
        max_snapshots: 4,
        ..StoreOptions::default()
    };
    Store::open(&dir.path().join("p.redb"), options).expect("the store opens")
}

/// Every object of every kind, through paged lists without a selector.
async fn list_all(store: &Store, at: &str) -> Result<Objects, TestCaseError> {
    let mut objects = Objects::new();
    for kind in Kind::ALL {
        let mut token = None;
        let mut revision = None;
        loop {
            let page = store
                .list_page(ListQuery {
                    kind,
                    scope: Vec::new(),
                    selector: Selector::default(),
                    limit: Some(PAGE),
                    continue_token: token,
                })
                .await
                .map_err(broke(at))?;
            prop_assert!(
                revision.is_none_or(|r| r == page.revision),
                "{at}: the pages of one list of {kind} show different revisions"
            );
            revision = Some(page.revision);
            for object in page.items {
                let path = object.path();
                prop_assert_eq!(
                    path.kind(),
                    kind,
                    "{}: a list of {} answered {}",
                    at,
                    kind,
                    path
                );
                prop_assert!(
                    objects.insert(path.clone(), object).is_none(),
                    "{at}: {path} listed twice"
                );
            }
            token = page.continue_token;
            if token.is_none() {
                break;
            }
        }
    }
    Ok(objects)
}

/// The children of the object at `path`.
fn children<'a>(
    objects: &'a Objects,
    path: &'a Path,
) -> impl Iterator<Item = (&'a Path, &'a AnyObject)> {
    objects
        .iter()
        .filter(move |(p, _)| p.parent().as_ref() == Some(path))
}

fn is_terminating(objects: &Objects, path: &Path) -> bool {
    objects.get(path).is_some_and(|o| o.meta().is_terminating())
}

/// The first difference between what was expected and what the store
/// holds, if any.
fn difference(expected: &Objects, actual: &Objects) -> Option<String> {
    let paths: BTreeSet<&Path> = expected.keys().chain(actual.keys()).collect();
    paths
        .into_iter()
        .find_map(|path| match (expected.get(path), actual.get(path)) {
            (Some(e), Some(a)) if e == a => None,
            (Some(e), Some(a)) => Some(format!("{path}: expected {e:?}, found {a:?}")),
            (Some(e), None) => Some(format!(
                "{path} (resourceVersion {}) is missing",
                e.meta().resource_version
            )),
            (None, Some(a)) => Some(format!(
                "{path} (resourceVersion {}) is there, unexpected",
                a.meta().resource_version
            )),
            (None, None) => None,
        })
}

/// Lays one change over `objects`, checking that it fits them; a removal
/// must be of an object without finalizers whose children are all gone
/// already (invariant 4).
fn lay(
    objects: &mut Objects,
    revision: u64,
    change: ChangeType,
    object: &AnyObject,
    at: &str,
) -> Result<(), TestCaseError> {
    let path = object.path();
    prop_assert_eq!(
        object.meta().resource_version,
        revision,
        "{}: {} does not carry the revision of its change",
        at,
        path
    );
    match change {
        ChangeType::Added => {
            let was = objects.insert(path.clone(), object.clone());
            prop_assert!(was.is_none(), "{at}: {path} added, but it existed");
        }
        ChangeType::Modified => {
            let was = objects.insert(path.clone(), object.clone());
            prop_assert!(was.is_some(), "{at}: {path} modified, but it did not exist");
        }
        ChangeType::Deleted => {
            let finalizers = &object.meta().finalizers;
            prop_assert!(
                finalizers.is_empty(),
                "{at}: {path} removed with finalizers {finalizers:?}"
            );
            let was = objects.remove(&path);
            prop_assert!(was.is_some(), "{at}: {path} removed, but it did not exist");
            if let Some((child, _)) = children(objects, &path).next() {
                return Err(TestCaseError::fail(format!(
                    "{at}: {path} removed while its child {child} remained"
                )));
            }
        }
    }
    Ok(())
}

/// Invariants 1 to 3 on the whole store.
fn invariants(at: &str, objects: &Objects) -> Result<(), TestCaseError> {
    for (path, object) in objects {
        let meta = object.meta();
        if let Some(parent) = path.parent() {
            let Some(above) = objects.get(&parent) else {
                return Err(TestCaseError::fail(format!(
                    "{at}: {path} is there without its parent {parent}"
                )));
            };
            prop_assert!(
                meta.is_terminating() || !above.meta().is_terminating(),
                "{at}: {path} is not terminating under terminating {parent} (terminating is \
                 not closed downwards)"
            );
        }
        if meta.is_terminating() && meta.finalizers.is_empty() {
            prop_assert!(
                children(objects, path).next().is_some(),
                "{at}: {path} is terminating without finalizers and without children, yet \
                 still there"
            );
        }
    }
    Ok(())
}

/// Whether `error` is a refusal that `op` may meet in the store `before`.
fn expected_refusal(error: &StoreError, op: &Op, before: &Objects) -> bool {
    let path = op.path();
    let create = matches!(op, Op::Create { .. });
    match error {
        StoreError::NotFound(p) => !create && p == path && !before.contains_key(p),
        StoreError::ParentNotFound { parent } => {
            create && path.parent().as_ref() == Some(parent) && !before.contains_key(parent)
        }
        StoreError::AlreadyExists(p) => create && p == path && before.contains_key(p),
        StoreError::HasChildren { path: p, .. } => {
            matches!(op, Op::Delete { cascade: false, .. })
                && p == path
                && children(before, p).any(|(c, _)| !is_terminating(before, c))
        }
        // A create under a terminating parent, or a finalizer added to a
        // terminating object.
        StoreError::Terminating { path: p, .. } => {
            path.names().starts_with(p.names()) && is_terminating(before, p)
        }
        _ => false,
    }
}

/// The write request of `op`: a finalizer write reads the stored
/// finalizers to edit them (none if the object is missing).
async fn request(store: &Store, op: &Op) -> Result<WriteOp, StoreError> {
    Ok(match op {
        Op::Create { path, finalizers } => WriteOp::Create(object(
            path,
            finalizers.iter().copied().map(String::from).collect(),
        )),
        Op::Delete { path, cascade } => WriteOp::Delete {
            path: path.clone(),
            cascade: *cascade,
            precondition: None,
        },
        Op::Finalizers { path, edit } => {
            let mut finalizers = match store.get(path).await {
                Ok(stored) => stored.meta().finalizers.clone(),
                Err(StoreError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            };
            edit.apply(&mut finalizers);
            WriteOp::Replace {
                object: object(path, finalizers),
                part: Part::Finalizers,
                precondition: None,
            }
        }
        Op::Status { path, state } => WriteOp::Replace {
            object: with_state(object(path, Vec::new()), *state),
            part: Part::Status,
            precondition: None,
        },
    })
}

/// Runs `op` on the store whose objects are `before`, checks what it did
/// and the invariants after it, records its changes in `answered`, and
/// answers the objects after it.
async fn step(
    store: &Store,
    at: &str,
    op: &Op,
    before: &Objects,
    answered: &mut Vec<Event>,
) -> Result<Objects, TestCaseError> {
    let exact = exact(store);
    let revision = store.revision().await.map_err(broke(at))?;
    let request = request(store, op).await.map_err(broke(at))?;
    let result = store.write(request).await;
    let now = store.revision().await.map_err(broke(at))?;
    let after = settled(store, at).await?;
    match result {
        Err(e) => {
            prop_assert!(
                expected_refusal(&e, op, before),
                "{at}: refused unexpectedly: {e} ({e:?})"
            );
            prop_assert!(
                !exact || now == revision,
                "{at}: refused ({e}), yet the revision moved"
            );
            if let Some(d) = difference(before, &after) {
                return Err(TestCaseError::fail(format!(
                    "{at}: refused ({e}), yet the store changed: {d}"
                )));
            }
        }
        Ok(outcome) => {
            let mut expected = before.clone();
            let mut last = revision;
            for c in &outcome.changes {
                prop_assert!(
                    c.revision > last,
                    "{at}: a change at revision {} after one at {last}",
                    c.revision
                );
                lay(&mut expected, c.revision, c.change, &c.object, at)?;
                answered.push((c.revision, c.change, c.object.path()));
                last = c.revision;
            }
            // On etcd the store moves on after the write (its settling),
            // so only the write's own changes are checked, as laid over
            // the store before it.
            prop_assert!(
                !exact || now == last,
                "{at}: the store's revision is not that of the write's last change"
            );
            if let Some(d) = difference(&expected, &after).filter(|_| exact) {
                return Err(TestCaseError::fail(format!(
                    "{at}: the write's changes do not lead to the store listed after it: {d}"
                )));
            }
            if let Op::Delete { path, .. } = op {
                prop_assert!(
                    after.get(path).is_none_or(|o| o.meta().is_terminating()),
                    "{at}: deleted, yet {path} is there and not terminating"
                );
            }
        }
    }
    invariants(at, &after)?;
    Ok(after)
}

/// Replays the history from revision 0: it must be what the writes
/// answered, in order, and rebuild `objects`.
fn replay_history(
    store: &Store,
    at: &str,
    objects: &Objects,
    answered: &[Event],
) -> Result<(), TestCaseError> {
    let mut replayed = Objects::new();
    let mut logged: Vec<Event> = Vec::new();
    let mut after = 0;
    loop {
        // A blocking read: on etcd it waits on the store's runtime.
        let page = if store.is_etcd() {
            tokio::task::block_in_place(|| store.events(after, 64))
        } else {
            store.events(after, 64)
        }
        .map_err(broke(at))?;
        if page.events.is_empty() {
            // On etcd the position also moves with other prefixes' writes.
            prop_assert!(
                after == page.current || (!exact(store) && after <= page.current),
                "{at}: the history ends at {after}, before the current revision {}",
                page.current
            );
            break;
        }
        for (revision, change, object, before) in page.events {
            prop_assert!(
                revision > after,
                "{at}: the history has revision {revision} after {after}"
            );
            let here = format!("{at}: the history at revision {revision}");
            // A modification's previous version, as watches compare it
            // with the new one, is the one the history had; every
            // modification this build writes keeps it.
            prop_assert!(
                change != ChangeType::Modified || before.is_some(),
                "{here}: a modification without its previous version"
            );
            if let Some(before) = before {
                let previous = replayed.get(&object.path());
                prop_assert!(
                    previous.is_some_and(|p| *Before::of(p) == *before),
                    "{here}: a modification's previous version {before:?} is not {previous:?}"
                );
            }
            lay(&mut replayed, revision, change, &object, &here)?;
            logged.push((revision, change, object.path()));
            after = revision;
        }
    }
    // On etcd the history also holds the settling's changes.
    prop_assert!(
        !exact(store) || logged[..] == *answered,
        "{at}: the history is not what the writes answered"
    );
    match difference(objects, &replayed) {
        Some(d) => Err(TestCaseError::fail(format!(
            "{at}: the history does not rebuild the listed store: {d}"
        ))),
        None => Ok(()),
    }
}

/// One case: the ops, the history, then every finalizer removed.
async fn run(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut objects = list_all(store, "a new store").await?;
    prop_assert!(objects.is_empty(), "a new store holds objects");
    let mut answered = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let at = format!("op {i} ({op:?})");
        objects = step(store, &at, op, &objects, &mut answered).await?;
    }
    replay_history(store, "after the ops", &objects, &answered)?;

    // Every terminating object, deepest kinds first, loses its
    // finalizers; one removed by an earlier removal's settling answers
    // NotFound (which `step` expects of a missing object).
    let mut terminating: Vec<Path> = objects
        .iter()
        .filter(|(_, o)| o.meta().is_terminating())
        .map(|(p, _)| p.clone())
        .collect();
    terminating.sort_by_key(|p| Reverse(p.kind()));
    for (i, path) in terminating.into_iter().enumerate() {
        let op = Op::Finalizers {
            path,
            edit: Edit::RemoveAll,
        };
        let at = format!("finalizer removal {i} ({op:?})");
        objects = step(store, &at, &op, &objects, &mut answered).await?;
    }
    let left: Vec<String> = objects
        .iter()
        .filter(|(_, o)| o.meta().is_terminating())
        .map(|(p, _)| p.to_string())
        .collect();
    prop_assert!(
        left.is_empty(),
        "terminating objects remain once every finalizer is removed: {left:?}"
    );
    replay_history(store, "after the finalizers' removal", &objects, &answered)
}

/// 64 cases unless `PROPTEST_CASES` says otherwise (the default config
/// read it); a failure's seed is kept beside the crate's other ones.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            64
        },
        // Every shrink step opens a store and replays a sequence.
        max_shrink_iters: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/tests/lifecycle_props.txt",
        ))),
        ..default
    }
}

/// The same property on etcd (`MODELHUB_TEST_STORE=etcd`, on the shared
/// cluster, a prefix per case), each op waiting for the background
/// settling: fewer cases (16 unless `PROPTEST_CASES` says otherwise).
fn etcd_config() -> ProptestConfig {
    let mut config = config();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 16;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
        "proptest-regressions/tests/lifecycle_props_etcd.txt",
    )));
    config
}

proptest! {
    #![proptest_config(etcd_config())]

    #[test]
    fn on_etcd_the_deletion_lifecycle_keeps_its_invariants_once_settled(ops in sequence()) {
        if !common::on_etcd() {
            eprintln!("skipped: needs etcd (MODELHUB_TEST_STORE=etcd, as .ci/run does)");
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let result = runtime.block_on(async {
            let options = modelhub::store::EtcdOptions {
                endpoints: common::etcd_cluster()
                    .endpoints()
                    .split(',')
                    .map(String::from)
                    .collect(),
                prefix: common::etcd::next_prefix(),
                heartbeat: std::time::Duration::from_secs(600),
                ..modelhub::store::EtcdOptions::default()
            };
            let store = Store::open_etcd(&options).await.expect("the store opens");
            let result = run(&store, &ops).await;
            store.close();
            result
        });
        result?;
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_deletion_lifecycle_keeps_its_invariants(ops in sequence()) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let store = open(&dir);
        let result = runtime.block_on(run(&store, &ops));
        store.close();
        result?;
    }
}
