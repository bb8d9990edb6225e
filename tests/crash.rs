//! A deterministic crash-point explorer: a seeded workload (creates down
//! the hierarchy, spec and status writes, cascade deletes, applies,
//! compactions and checkpoints, one request at a time) runs through a real
//! [`Store`] on a simulated disk ([`SimDisk`]). Then either the power is
//! cut before the n-th sync (every n) or write (seeded n), and sometimes
//! again during the reopen that follows, or the k-th write or sync fails
//! once with ENOSPC or EIO (every k). The store reopens on what the disk
//! kept, and the invariants are checked:
//! - the store opens;
//! - every acknowledged write is there at its revision, identical; the
//!   one request in flight at the cut is there wholly or not at all, and
//!   not at all if it was refused (507/503);
//! - every change the feed published is in the history, identical, unless
//!   an acknowledged compaction dropped it;
//! - revisions are dense and the history replays to the objects' state;
//! - a new write takes the next revision.
//!
//! Under faults, each answer is also checked as it comes: acknowledged,
//! refused with nothing written (507/503), or of unknown outcome (504),
//! never a bare engine error; and the store must recover by itself.
//!
//! Everything is deterministic given the seed and the point: a violation
//! prints both and the command that reruns exactly it. Each run's I/O
//! trace is compared with the uncut run's, so a cut at the n-th sync is
//! known to hit the same operation every time (object contents differ
//! between runs, uids and timestamps, but never their lengths).
//!
//! Environment: `MODELHUB_CRASH_SEEDS=N` explores power cuts over seeds
//! 1..=N (default 3); `MODELHUB_CRASH_FAULT_SEEDS=N` sweeps faults over the
//! whole workloads of seeds 1..=N (default: the first requests of one
//! seed); `MODELHUB_CRASH_SEED` and `MODELHUB_CRASH_POINT` (with
//! `MODELHUB_CRASH_STEPS` and `MODELHUB_CRASH_SABOTAGE` when a violation's
//! command names them) rerun one point.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::ErrorKind;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelhub::model::{
    AnyObject, Cell, Container, Kind, ObjectMeta, Path, Realm, Selector, Space, Stack,
};
use modelhub::store::disk::sim::{Counts, Op, Rng, SimDisk};
use modelhub::store::options::Sabotage;
use modelhub::store::{
    Backend, Change, ChangeType, ListQuery, Part, Store, StoreError, StoreOptions, WriteOp,
};

const DB: &str = "/data/hub.redb";

/// Power-cut seeds explored by default.
const CUT_SEEDS: u64 = 3;

/// How long a store may take to recover from a fault.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// One point in every this many also gets a second crash during its
/// reopen (at each of the reopen's syncs).
const SECOND_CRASH_EVERY: usize = 12;

/// The default fault sweep's seed.
const FAULT_SEED: u64 = 5;

/// How many of [`FAULT_SEED`]'s requests the default fault sweep runs
/// (every kind of request among them).
const FAULT_STEPS: u64 = 20;

/// Most violations printed per test.
const MAX_PRINTED: usize = 10;

/// Where a run is cut or faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Neither (learns the workload's I/O).
    Uncut,
    /// The power is cut before the n-th operation of a class; with
    /// `again`, once more during the reopen on what the disk kept.
    Cut {
        at: (Op, u64),
        again: Option<(Op, u64)>,
    },
    /// The n-th operation of a class fails once with `kind`.
    Fault { at: (Op, u64), kind: ErrorKind },
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Write => "write",
        Op::Sync => "sync",
        Op::Read => "read",
    }
}

fn fmt_at((op, n): (Op, u64)) -> String {
    format!("{}:{n}", op_name(op))
}

fn parse_at(s: &str) -> Option<(Op, u64)> {
    let (op, n) = s.split_once(':')?;
    let op = match op {
        "write" => Op::Write,
        "sync" => Op::Sync,
        "read" => Op::Read,
        _ => return None,
    };
    Some((op, n.parse().ok()?))
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Uncut => f.write_str("uncut"),
            Point::Cut { at, again: None } => f.write_str(&fmt_at(*at)),
            Point::Cut {
                at,
                again: Some(again),
            } => write!(f, "{}+{}", fmt_at(*at), fmt_at(*again)),
            Point::Fault { at, kind } => {
                let kind = if *kind == ErrorKind::StorageFull {
                    "enospc"
                } else {
                    "eio"
                };
                write!(f, "{kind}@{}", fmt_at(*at))
            }
        }
    }
}

impl Point {
    fn parse(s: &str) -> Option<Point> {
        if s == "uncut" {
            return Some(Point::Uncut);
        }
        if let Some((kind, at)) = s.split_once('@') {
            let kind = match kind {
                "enospc" => ErrorKind::StorageFull,
                "eio" => ErrorKind::Other,
                _ => return None,
            };
            return Some(Point::Fault {
                at: parse_at(at)?,
                kind,
            });
        }
        let (at, again) = match s.split_once('+') {
            Some((at, again)) => (parse_at(at)?, Some(parse_at(again)?)),
            None => (parse_at(s)?, None),
        };
        Some(Point::Cut { at, again })
    }
}

fn sabotage_name(s: Sabotage) -> Option<&'static str> {
    if s.skip_log_sync {
        Some("skip_log_sync")
    } else if s.clear_log_before_checkpoint {
        Some("clear_log_before_checkpoint")
    } else if s.skip_dir_sync {
        Some("skip_dir_sync")
    } else {
        None
    }
}

fn parse_sabotage(s: &str) -> Sabotage {
    let mut out = Sabotage::default();
    match s {
        "skip_log_sync" => out.skip_log_sync = true,
        "clear_log_before_checkpoint" => out.clear_log_before_checkpoint = true,
        "skip_dir_sync" => out.skip_dir_sync = true,
        "" | "none" => {}
        other => panic!("unknown MODELHUB_CRASH_SABOTAGE {other:?}"),
    }
    out
}

/// What a run does, but for its point: the seed's workload (cut short to
/// `steps` requests, if set) with a deliberate bug, if any.
#[derive(Debug, Clone, Copy)]
struct Run {
    seed: u64,
    steps: Option<u64>,
    sabotage: Sabotage,
}

impl Run {
    fn seed(seed: u64) -> Run {
        Run {
            seed,
            steps: None,
            sabotage: Sabotage::default(),
        }
    }

    /// The environment that reruns `point` of this run.
    fn env(&self, point: Point) -> String {
        let mut env = format!(
            "MODELHUB_CRASH_SEED={} MODELHUB_CRASH_POINT={point}",
            self.seed
        );
        if let Some(steps) = self.steps {
            env.push_str(&format!(" MODELHUB_CRASH_STEPS={steps}"));
        }
        if let Some(s) = sabotage_name(self.sabotage) {
            env.push_str(&format!(" MODELHUB_CRASH_SABOTAGE={s}"));
        }
        env
    }
}

/// A violation, with what reruns it.
struct Violation {
    run: Run,
    point: Point,
    what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION seed={} point={}{}: {}",
            self.run.seed,
            self.point,
            sabotage_name(self.run.sabotage).map_or(String::new(), |s| format!(" sabotage={s}")),
            self.what
        )?;
        write!(
            f,
            "  reproduce: {} cargo test --test crash power_cuts -- --nocapture",
            self.run.env(self.point)
        )
    }
}

fn options(disk: &SimDisk, sabotage: Sabotage) -> StoreOptions {
    StoreOptions {
        disk: Arc::new(disk.clone()),
        min_free_bytes: 0,
        checkpoint_interval: Duration::from_secs(3600),
        // Small, so that checkpoints the log's size makes due fall among
        // the explored operations too (every few requests), beside the
        // workload's own checkpoint steps.
        checkpoint_bytes: 32 * 1024,
        cache_bytes: 64 * 1024,
        sabotage,
        ..StoreOptions::default()
    }
}

fn open(disk: &SimDisk, sabotage: Sabotage) -> Result<Store, StoreError> {
    Store::open(FsPath::new(DB), options(disk, sabotage))
}

/// A seed for the `nth` crash of the run cut at `point` (the first crash
/// depends on the first cut only, so that a second cut meets the disk the
/// first one left).
fn crash_seed(seed: u64, point: Point, nth: u64) -> u64 {
    let point = match point {
        Point::Cut { at, .. } if nth == 1 => Point::Cut { at, again: None },
        other => other,
    };
    let h = point
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    Rng(seed ^ h ^ nth.rotate_left(32)).next_u64()
}

// ---- objects ----

/// A new object at `path`, its contents made from `tag`.
fn build(path: &Path, tag: &str) -> AnyObject {
    let n = path.names();
    let s = |i: usize| n[i].clone();
    let meta = ObjectMeta {
        name: path.name().into(),
        labels: BTreeMap::from([("tag".into(), tag.into())]),
        ..ObjectMeta::default()
    };
    match path.kind() {
        Kind::Realm => {
            let mut o = Realm {
                meta,
                ..Realm::default()
            };
            o.spec.namespace = format!("ns-{tag}");
            AnyObject::Realm(o)
        }
        Kind::Space => {
            let mut o = Space {
                meta,
                ..Space::default()
            };
            o.spec.realm_name = s(0);
            o.spec.cni_config_path = format!("/cni/{tag}");
            AnyObject::Space(o)
        }
        Kind::Stack => {
            let mut o = Stack {
                meta,
                ..Stack::default()
            };
            (o.spec.realm_name, o.spec.space_name) = (s(0), s(1));
            o.spec.id = s(2);
            AnyObject::Stack(o)
        }
        Kind::Cell => {
            let mut o = Cell {
                meta,
                ..Cell::default()
            };
            (o.spec.realm_name, o.spec.space_name) = (s(0), s(1));
            o.spec.stack_name = s(2);
            o.spec.id = s(3);
            o.spec.root_container_id = tag.into();
            AnyObject::Cell(o)
        }
        Kind::Container => {
            let mut o = Container {
                meta,
                ..Container::default()
            };
            (o.spec.realm_name, o.spec.space_name) = (s(0), s(1));
            (o.spec.stack_name, o.spec.cell_name) = (s(2), s(3));
            o.spec.id = s(4);
            o.spec.image = format!("img:{tag}");
            AnyObject::Container(o)
        }
    }
}

/// `obj` with new labels and (but for a stack, whose spec is only its
/// coordinates) a new spec; `pad` bytes of label make records of many
/// sectors.
fn with_new_spec(obj: &AnyObject, tag: &str, pad: usize) -> AnyObject {
    let mut o = obj.clone();
    let labels = &mut o.meta_mut().labels;
    labels.insert("tag".into(), tag.into());
    labels.insert("pad".into(), "p".repeat(pad));
    match &mut o {
        AnyObject::Realm(r) => r.spec.namespace = format!("ns-{tag}"),
        AnyObject::Space(s) => s.spec.cni_config_path = format!("/cni/{tag}"),
        AnyObject::Stack(_) => {}
        AnyObject::Cell(c) => c.spec.root_container_id = tag.into(),
        AnyObject::Container(c) => c.spec.image = format!("img:{tag}"),
    }
    o
}

/// `obj` with a new status.
fn with_new_status(obj: &AnyObject, tag: &str) -> AnyObject {
    let mut o = obj.clone();
    let cgroup = format!("/cg/{tag}");
    match &mut o {
        AnyObject::Realm(r) => r.status.cgroup_path = cgroup,
        AnyObject::Space(s) => s.status.cgroup_path = cgroup,
        AnyObject::Stack(s) => s.status.cgroup_path = cgroup,
        AnyObject::Cell(c) => c.status.cgroup_path = cgroup,
        AnyObject::Container(c) => {
            c.status.exit_signal = tag.into();
            c.status.restart_count += 1;
        }
    }
    o
}

/// Whether `path` is `root` or below it.
fn under(path: &Path, root: &Path) -> bool {
    path.names().starts_with(root.names())
}

/// Applies one change to a set of objects.
fn fold(objects: &mut BTreeMap<Path, AnyObject>, change: ChangeType, object: &AnyObject) {
    match change {
        ChangeType::Deleted => {
            objects.remove(&object.path());
        }
        ChangeType::Added | ChangeType::Modified => {
            objects.insert(object.path(), object.clone());
        }
    }
}

// ---- the model ----

/// What the store must hold, from what it answered and published.
#[derive(Default)]
struct Model {
    /// The objects after every known change.
    objects: BTreeMap<Path, AnyObject>,
    /// Every change known to be committed (acknowledged, or found after a
    /// recovery), by revision.
    known: BTreeMap<u64, (ChangeType, AnyObject)>,
    /// The newest known revision.
    revision: u64,
    /// Events up to here were dropped by acknowledged compactions.
    compacted: u64,
    /// Names handed out.
    names: u64,
}

impl Model {
    /// Takes in committed changes in order: each continues the newest
    /// known revision, or repeats a known change identically.
    fn learn<'a>(
        &mut self,
        changes: impl IntoIterator<Item = (u64, ChangeType, &'a AnyObject)>,
    ) -> Result<(), String> {
        for (rev, change, object) in changes {
            if rev <= self.revision {
                match self.known.get(&rev) {
                    Some((c, o)) if *c == change && o == object => continue,
                    _ => return Err(format!("revision {rev} was answered twice, differently")),
                }
            }
            if rev != self.revision + 1 {
                return Err(format!(
                    "revision {rev} follows {}: revisions are not dense",
                    self.revision
                ));
            }
            if object.meta().resource_version != rev {
                return Err(format!(
                    "the object of revision {rev} says resourceVersion {}",
                    object.meta().resource_version
                ));
            }
            fold(&mut self.objects, change, object);
            self.known.insert(rev, (change, object.clone()));
            self.revision = rev;
        }
        Ok(())
    }

    fn fresh_name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }
}

// ---- the workload ----

/// One request of the workload.
#[expect(clippy::large_enum_variant, reason = "made and run one at a time")]
enum Step {
    Write(WriteOp),
    Apply(Vec<AnyObject>),
    Compact(u64),
    Checkpoint,
}

/// What a step does if it is applied: its changes (kind of change and
/// path, sorted), or the compaction mark it sets.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    changes: Vec<(ChangeType, Path)>,
    compacts_to: Option<u64>,
}

/// A step, what it would do, its kind and a description for messages.
struct Planned {
    step: Step,
    expect: Expect,
    kind: &'static str,
    what: String,
}

/// The kinds of step a workload should cover.
const KINDS: [&str; 8] = [
    "create",
    "spec",
    "status",
    "delete",
    "cascade",
    "apply",
    "compact",
    "checkpoint",
];

fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Realm => "r",
        Kind::Space => "s",
        Kind::Stack => "t",
        Kind::Cell => "c",
        Kind::Container => "k",
    }
}

/// The path of a new object: a realm, or a child of a random object that
/// can have children (among `model`'s and `extra`).
fn new_path(rng: &mut Rng, model: &mut Model, extra: &[Path]) -> Path {
    let parents: Vec<Path> = model
        .objects
        .keys()
        .chain(extra)
        .filter(|p| p.kind() != Kind::Container)
        .cloned()
        .collect();
    if parents.is_empty() || rng.below(6) == 0 {
        return Path::new(Kind::Realm, vec![model.fresh_name("r")]);
    }
    let parent = &parents[rng.below(parents.len() as u64) as usize];
    let kind = parent.kind().child().expect("not a container");
    parent
        .child(&model.fresh_name(prefix(kind)))
        .expect("has a child kind")
}

/// Sorts changes by kind of change and path (the order of a cascade's
/// changes within a kind is the engine's).
fn sorted(mut changes: Vec<(ChangeType, Path)>) -> Vec<(ChangeType, Path)> {
    changes.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
    changes
}

fn pick<'a>(rng: &mut Rng, items: &'a [&'a AnyObject]) -> &'a AnyObject {
    items[rng.below(items.len() as u64) as usize]
}

/// The next request, chosen from the model's state.
fn next_step(rng: &mut Rng, model: &mut Model, i: u64) -> Planned {
    let tag = format!("{i}-{}", rng.below(1000));
    let pad = if rng.below(5) == 0 {
        rng.below(3000) as usize
    } else {
        0
    };
    let objects: Vec<AnyObject> = model.objects.values().cloned().collect();
    let all: Vec<&AnyObject> = objects.iter().collect();
    let roll = rng.below(100);
    let single = |change, path: Path| Expect {
        changes: vec![(change, path)],
        compacts_to: None,
    };
    let create = |rng: &mut Rng, model: &mut Model| {
        let path = new_path(rng, model, &[]);
        let mut object = build(&path, &tag);
        object
            .meta_mut()
            .labels
            .insert("pad".into(), "p".repeat(pad));
        Planned {
            kind: "create",
            what: format!("create {path}"),
            expect: single(ChangeType::Added, path),
            step: Step::Write(WriteOp::Create(object)),
        }
    };
    if all.is_empty() || roll < 30 {
        return create(rng, model);
    }
    match roll {
        30..=39 => {
            let o = pick(rng, &all);
            Planned {
                kind: "spec",
                what: format!("replace the spec of {}", o.path()),
                expect: single(ChangeType::Modified, o.path()),
                step: Step::Write(WriteOp::Replace {
                    object: with_new_spec(o, &tag, pad),
                    part: Part::Main,
                    precondition: (rng.below(2) == 0).then(|| o.meta().resource_version),
                }),
            }
        }
        40..=44 | 52..=57 => {
            let o = pick(rng, &all);
            let part = if roll < 45 { Part::Main } else { Part::Status };
            let t = tag.clone();
            Planned {
                kind: if part == Part::Main { "spec" } else { "status" },
                what: format!("update the {part:?} of {}", o.path()),
                expect: single(ChangeType::Modified, o.path()),
                step: Step::Write(WriteOp::Update {
                    path: o.path(),
                    part,
                    precondition: None,
                    update: Arc::new(move |stored: &AnyObject| {
                        Ok(match part {
                            Part::Status => with_new_status(stored, &t),
                            _ => with_new_spec(stored, &t, pad),
                        })
                    }),
                }),
            }
        }
        45..=51 => {
            let o = pick(rng, &all);
            Planned {
                kind: "status",
                what: format!("replace the status of {}", o.path()),
                expect: single(ChangeType::Modified, o.path()),
                step: Step::Write(WriteOp::Replace {
                    object: with_new_status(o, &tag),
                    part: Part::Status,
                    precondition: None,
                }),
            }
        }
        58..=70 => {
            let cascade = roll >= 63;
            let candidates: Vec<&AnyObject> = all
                .iter()
                .copied()
                .filter(|o| {
                    let p = o.path();
                    let children = model.objects.keys().filter(|q| under(q, &p)).count() - 1;
                    if cascade {
                        o.kind() <= Kind::Stack || children > 0
                    } else {
                        children == 0
                    }
                })
                .collect();
            if candidates.is_empty() {
                return create(rng, model);
            }
            let path = pick(rng, &candidates).path();
            let changes: Vec<(ChangeType, Path)> = model
                .objects
                .keys()
                .filter(|q| under(q, &path))
                .map(|q| (ChangeType::Deleted, q.clone()))
                .collect();
            let changes = sorted(changes);
            Planned {
                kind: if cascade { "cascade" } else { "delete" },
                what: format!("delete {path} (cascade: {cascade})"),
                expect: Expect {
                    changes,
                    compacts_to: None,
                },
                step: Step::Write(WriteOp::Delete {
                    path,
                    cascade,
                    precondition: None,
                }),
            }
        }
        71..=80 => {
            let n = 2 + rng.below(3);
            let mut docs: Vec<AnyObject> = Vec::new();
            let mut created: Vec<Path> = Vec::new();
            let mut changes = Vec::new();
            for j in 0..n {
                let tag = format!("{tag}-{j}");
                let existing: Vec<&AnyObject> = all
                    .iter()
                    .copied()
                    .filter(|o| !docs.iter().any(|d| d.path() == o.path()))
                    .collect();
                if !existing.is_empty() && rng.below(2) == 0 {
                    let o = pick(rng, &existing);
                    docs.push(with_new_spec(o, &tag, pad));
                    changes.push((ChangeType::Modified, o.path()));
                } else {
                    let path = new_path(rng, model, &created);
                    docs.push(build(&path, &tag));
                    created.push(path.clone());
                    changes.push((ChangeType::Added, path));
                }
            }
            let changes = sorted(changes);
            let paths: Vec<String> = docs.iter().map(|d| d.path().to_string()).collect();
            Planned {
                kind: "apply",
                what: format!("apply [{}]", paths.join(", ")),
                expect: Expect {
                    changes,
                    compacts_to: None,
                },
                step: Step::Apply(docs),
            }
        }
        81..=85 => {
            let keep = rng.below(12);
            Planned {
                kind: "compact",
                what: format!("compact, keeping {keep}"),
                expect: Expect {
                    changes: Vec::new(),
                    compacts_to: Some(model.compacted.max(model.revision.saturating_sub(keep))),
                },
                step: Step::Compact(keep),
            }
        }
        _ => Planned {
            kind: "checkpoint",
            what: "checkpoint".into(),
            expect: Expect {
                changes: Vec::new(),
                compacts_to: None,
            },
            step: Step::Checkpoint,
        },
    }
}

/// What an acknowledged step did.
struct Acked {
    changes: Vec<Change>,
    dropped: u64,
}

/// Sends a step and awaits its answer.
async fn execute(store: &Store, step: &Step) -> Result<Acked, StoreError> {
    let (changes, dropped) = match step {
        Step::Write(op) => (store.write(op.clone()).await?.changes, 0),
        Step::Apply(docs) => {
            let docs = docs.iter().map(|o| (o.clone(), Part::Main)).collect();
            (store.apply(docs, false).await?.changes, 0)
        }
        Step::Compact(keep) => (Vec::new(), store.compact(*keep).await?),
        Step::Checkpoint => {
            store.checkpoint().await?;
            (Vec::new(), 0)
        }
    };
    Ok(Acked { changes, dropped })
}

/// How a failed request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// 507 or 503: nothing was written.
    Refused,
    /// 504: it may or may not have been applied.
    Unknown,
}

/// Classifies a failure's answer; any other answer than 507, 503 and 504
/// to a storage failure is a violation.
fn classify(e: &StoreError) -> Result<Failed, String> {
    match e {
        StoreError::NoSpace(_) | StoreError::Unavailable(_) => Ok(Failed::Refused),
        StoreError::OutcomeUnknown(_) => Ok(Failed::Unknown),
        other => Err(format!("answered {other:?}, not 507, 503 or 504")),
    }
}

/// The request in flight when the run stopped.
struct InFlight {
    what: String,
    expect: Expect,
    failed: Failed,
    answer: String,
}

/// A finished workload: the disk and what the store must hold.
struct Done {
    sim: SimDisk,
    model: Model,
    watched: Vec<Change>,
    inflight: Option<InFlight>,
    /// The I/O trace up to the crash.
    trace: Vec<u64>,
    /// Operations of the workload itself (before the store was closed).
    workload: Counts,
    /// Every operation, the store's close included.
    total: Counts,
    /// Requests answered.
    steps: u64,
    /// The kinds of the requests answered.
    kinds: BTreeSet<&'static str>,
}

/// Runs the workload with a cut or fault at `point`, up to the crash.
async fn workload(run: Run, point: Point) -> Result<Done, String> {
    let sim = SimDisk::new();
    match point {
        Point::Uncut => {}
        Point::Cut { at: (op, n), .. } => sim.cut_power_at(op, n),
        Point::Fault { at: (op, n), kind } => sim.fail(op, n, kind),
    }
    let faults = matches!(point, Point::Fault { .. });
    let mut model = Model::default();
    let mut inflight = None;
    let watched: Arc<Mutex<Vec<Change>>> = Arc::default();
    let sabotage = run.sabotage;
    let mut rng = Rng(run.seed);
    let steps = 40 + rng.below(41);
    let steps = run.steps.map_or(steps, |cap| steps.min(cap));
    let mut answered = 0;
    let mut kinds = BTreeSet::new();
    let store = match open(&sim, sabotage) {
        Ok(store) => Some(store),
        Err(_) if sim.powered_off() => None,
        // A restart after a failed first start.
        Err(_) if faults => Some(
            open(&sim, sabotage)
                .map_err(|e| format!("does not open again after a failed start: {e}"))?,
        ),
        Err(e) => return Err(format!("the store does not open: {e}")),
    };
    let mut workload = sim.counts();
    if let Some(store) = store {
        let sink = watched.clone();
        store.feed().subscribe(Arc::new(move |c: &[Change]| {
            sink.lock().unwrap().extend_from_slice(c)
        }));
        for i in 0..steps {
            let planned = next_step(&mut rng, &mut model, i);
            let result = execute(&store, &planned.step).await;
            answered += 1;
            kinds.insert(planned.kind);
            let fail = |what: String| format!("step {i} ({}): {what}", planned.what);
            match result {
                Ok(acked) => {
                    acknowledged(&mut model, &watched, &planned, &acked).map_err(fail)?;
                }
                Err(e) => {
                    let failed = classify(&e).map_err(fail)?;
                    if !faults {
                        inflight = Some(InFlight {
                            what: planned.what,
                            expect: planned.expect,
                            failed,
                            answer: format!("{e:?}"),
                        });
                        break;
                    }
                    recover(&store).await.map_err(fail)?;
                    resolve(&store, &mut model, &planned.expect, failed).map_err(fail)?;
                }
            }
        }
        workload = sim.counts();
        if faults {
            // The workload is over: crash without a clean stop.
            sim.cut_power();
        }
        store.close();
    }
    let watched = std::mem::take(&mut *watched.lock().unwrap());
    let mut prev = 0;
    for c in &watched {
        if c.prev != prev || c.revision <= prev {
            return Err(format!(
                "the feed published revision {} (prev {}) after {prev}",
                c.revision, c.prev
            ));
        }
        prev = c.revision;
    }
    Ok(Done {
        trace: sim.trace(),
        total: sim.counts(),
        sim,
        model,
        watched,
        inflight,
        workload,
        steps: answered,
        kinds,
    })
}

/// Takes in an acknowledged step, which the feed must have published
/// already.
fn acknowledged(
    model: &mut Model,
    watched: &Mutex<Vec<Change>>,
    planned: &Planned,
    acked: &Acked,
) -> Result<(), String> {
    let got = sorted(
        acked
            .changes
            .iter()
            .map(|c| (c.change, c.object.path()))
            .collect(),
    );
    if got != planned.expect.changes {
        return Err(format!(
            "acknowledged {got:?}, expected {:?}",
            planned.expect.changes
        ));
    }
    {
        let watched = watched.lock().unwrap();
        for c in &acked.changes {
            if !watched.iter().rev().any(|w| w == c) {
                return Err(format!(
                    "revision {} was acknowledged before the feed published it",
                    c.revision
                ));
            }
        }
    }
    model.learn(
        acked
            .changes
            .iter()
            .map(|c| (c.revision, c.change, &*c.object)),
    )?;
    if let Some(to) = planned.expect.compacts_to {
        model.compacted += acked.dropped;
        if model.compacted != to {
            return Err(format!(
                "compacted through {}, expected {to}",
                model.compacted
            ));
        }
    }
    Ok(())
}

/// Waits for the store to take writes again after a fault (a dry-run
/// apply is queued behind the recovery).
async fn recover(store: &Store) -> Result<(), String> {
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        match store.apply(Vec::new(), true).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Unavailable(_) | StoreError::NoSpace(_))
                if Instant::now() < deadline && store.fatal().is_none() =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                return Err(format!(
                    "the store did not recover within {RECOVERY_BOUND:?} (fatal: {:?}): {e:?}",
                    store.fatal()
                ));
            }
        }
    }
}

/// After a recovery, learns whether the failed request was applied: all
/// of it, or nothing (and nothing if it was refused).
fn resolve(
    store: &Store,
    model: &mut Model,
    expect: &Expect,
    failed: Failed,
) -> Result<(), String> {
    let page = store
        .events(model.revision, usize::MAX)
        .map_err(|e| format!("history unreadable after recovery: {e:?}"))?;
    let extras = &page.events;
    check_extras(extras, Some((expect, failed)))?;
    model.learn(extras.iter().map(|(r, c, o, _)| (*r, *c, o)))?;
    let mark = compaction_mark(store, page.current)?;
    let allowed = allowed_marks(model, Some((expect, failed)));
    if !allowed.contains(&mark) {
        return Err(format!(
            "compacted through {mark} after recovery, expected one of {allowed:?}"
        ));
    }
    model.compacted = mark;
    Ok(())
}

/// Checks changes beyond every known one: none, or exactly those of the
/// request in flight (and none if it was refused).
fn check_extras(
    extras: &[modelhub::store::Event],
    inflight: Option<(&Expect, Failed)>,
) -> Result<(), String> {
    if extras.is_empty() {
        return Ok(());
    }
    let got = sorted(extras.iter().map(|(_, c, o, _)| (*c, o.path())).collect());
    match inflight {
        None => Err(format!("changes nobody asked for: {got:?}")),
        Some((_, Failed::Refused)) => Err(format!(
            "a request refused with nothing written was applied: {got:?}"
        )),
        Some((expect, Failed::Unknown)) if got != expect.changes => Err(format!(
            "the request in flight was applied in part: {got:?}, expected {:?}",
            expect.changes
        )),
        Some(_) => Ok(()),
    }
}

/// The compaction marks the store may be at.
fn allowed_marks(model: &Model, inflight: Option<(&Expect, Failed)>) -> Vec<u64> {
    let mut allowed = vec![model.compacted];
    if let Some((
        Expect {
            compacts_to: Some(to),
            ..
        },
        Failed::Unknown,
    )) = inflight
    {
        allowed.push(*to);
    }
    allowed
}

/// The revision through which history was compacted (the lowest revision
/// the history answers from).
fn compaction_mark(store: &Store, current: u64) -> Result<u64, String> {
    let answers = |after: u64| store.events(after, 1).is_ok();
    if !answers(current) {
        return Err(format!(
            "the history does not answer from the current revision {current}"
        ));
    }
    let (mut lo, mut hi) = (0, current);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if answers(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

async fn list_all(store: &Store) -> Result<BTreeMap<Path, AnyObject>, String> {
    let mut out = BTreeMap::new();
    for kind in Kind::ALL {
        let page = store
            .list_page(ListQuery {
                kind,
                scope: Vec::new(),
                selector: Selector::default(),
                limit: None,
                continue_token: None,
            })
            .await
            .map_err(|e| format!("listing {kind} failed: {e:?}"))?;
        out.extend(page.items.into_iter().map(|o| (o.path(), o)));
    }
    Ok(out)
}

/// Describes how two sets of objects differ.
fn diff(got: &BTreeMap<Path, AnyObject>, want: &BTreeMap<Path, AnyObject>) -> Option<String> {
    let mut out = Vec::new();
    for (p, o) in want {
        match got.get(p) {
            None => out.push(format!("{p} missing")),
            Some(g) if g != o => out.push(format!(
                "{p} differs (rv {} vs {})",
                g.meta().resource_version,
                o.meta().resource_version
            )),
            Some(_) => {}
        }
    }
    out.extend(
        got.keys()
            .filter(|p| !want.contains_key(*p))
            .map(|p| format!("{p} unexpected")),
    );
    (!out.is_empty()).then(|| out.join("; "))
}

/// Crashes the run's disk (twice for a second cut), reopens the store on
/// what is left and checks every invariant.
async fn crash_and_check(done: &Done, seed: u64, point: Point) -> Result<(), String> {
    let mut disk = done.sim.crash(crash_seed(seed, point, 1));
    if let Point::Cut {
        again: Some((op, n)),
        ..
    } = point
    {
        disk.cut_power_at(op, n);
        if let Ok(store) = open(&disk, Sabotage::default()) {
            store.close();
        }
        disk = disk.crash(crash_seed(seed, point, 2));
    }
    let store = open(&disk, Sabotage::default())
        .map_err(|e| format!("the store does not open after the crash: {e}"))?;
    let checked = check(&store, done).await;
    store.close();
    checked
}

/// The invariants, on the store reopened after the crash.
async fn check(store: &Store, done: &Done) -> Result<(), String> {
    let model = &done.model;
    let inflight = done.inflight.as_ref().map(|f| (&f.expect, f.failed));
    let in_flight = |what: String| match &done.inflight {
        Some(f) => format!("{what} [in flight: {}, answered {}]", f.what, f.answer),
        None => what,
    };
    let current = store
        .revision()
        .await
        .map_err(|e| format!("no revision: {e:?}"))?;
    // Everything acknowledged or published.
    let mut known = model.known.clone();
    for c in &done.watched {
        known
            .entry(c.revision)
            .or_insert_with(|| (c.change, (*c.object).clone()));
    }
    for w in &done.watched {
        let (c, o) = &known[&w.revision];
        if *c != w.change || *o != *w.object {
            return Err(format!(
                "the feed published revision {} unlike its acknowledgement",
                w.revision
            ));
        }
    }
    let newest = known.keys().next_back().copied().unwrap_or(0);
    if current < newest {
        return Err(in_flight(format!(
            "the store is at revision {current}, but revision {newest} was acknowledged or \
             published"
        )));
    }
    let mark = compaction_mark(store, current)?;
    let allowed = allowed_marks(model, inflight);
    if !allowed.contains(&mark) {
        return Err(in_flight(format!(
            "history compacted through {mark}, expected one of {allowed:?}"
        )));
    }
    let page = store
        .events(mark, usize::MAX)
        .map_err(|e| format!("history unreadable: {e:?}"))?;
    let history = page.events;
    let revs: Vec<u64> = history.iter().map(|(r, ..)| *r).collect();
    if revs != (mark + 1..=current).collect::<Vec<_>>() {
        return Err(format!(
            "history after {mark} is not dense up to {current}: {revs:?}"
        ));
    }
    for (rev, (change, object)) in known.range(mark + 1..) {
        let (_, c, o, _) = &history[(rev - mark - 1) as usize];
        if c != change || o != object {
            return Err(in_flight(format!(
                "revision {rev} ({change:?} {}) was acknowledged or published, and the history \
                 now has {c:?} {} (rv {})",
                object.path(),
                o.path(),
                o.meta().resource_version
            )));
        }
    }
    let extras: Vec<_> = history
        .iter()
        .filter(|(r, ..)| *r > newest)
        .cloned()
        .collect();
    check_extras(&extras, inflight).map_err(in_flight)?;
    // The objects: what the history replays to, and what the answers say.
    let listed = list_all(store).await?;
    let mut replayed = BTreeMap::new();
    for (change, object) in known.range(..=mark).map(|(_, v)| v) {
        fold(&mut replayed, *change, object);
    }
    for (_, change, object, _) in &history {
        fold(&mut replayed, *change, object);
    }
    if let Some(d) = diff(&listed, &replayed) {
        return Err(format!(
            "the objects are not what the history replays to: {d}"
        ));
    }
    let mut expected = model.objects.clone();
    for (_, change, object, _) in &extras {
        fold(&mut expected, *change, object);
    }
    if let Some(d) = diff(&listed, &expected) {
        return Err(in_flight(format!(
            "the objects are not what was acknowledged: {d}"
        )));
    }
    // A new write continues the history.
    let out = store
        .write(WriteOp::Create(build(
            &Path::new(Kind::Realm, vec!["after".into()]),
            "after",
        )))
        .await
        .map_err(|e| format!("a write after the reopen failed: {e:?}"))?;
    let rev = out.changes[0].revision;
    if rev != current + 1 {
        return Err(format!(
            "a write after the reopen took revision {rev}, not {}",
            current + 1
        ));
    }
    Ok(())
}

// ---- the explorer ----

/// What an exploration ran and found.
#[derive(Default)]
struct Explored {
    seeds: u64,
    points: u64,
    sync_points: u64,
    write_points: u64,
    second_crashes: u64,
    faults: u64,
    violations: Vec<Violation>,
}

impl Explored {
    fn found(&mut self, run: Run, point: Point, what: String) {
        let v = Violation { run, point, what };
        if self.violations.len() < MAX_PRINTED {
            eprintln!("{v}");
        }
        self.violations.push(v);
    }

    /// Prints each kind of violation found (its message without numbers)
    /// once, with how often it was found and its first point.
    fn summary(&self) {
        let mut kinds: BTreeMap<String, (usize, &Violation)> = BTreeMap::new();
        for v in &self.violations {
            let shape: String = v
                .what
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            kinds.entry(shape).or_insert((0, v)).0 += 1;
        }
        for (n, v) in kinds.values() {
            eprintln!("{n} x seed={} point={}: {}", v.run.seed, v.point, v.what);
        }
    }
}

/// Runs one point to the end, its trace checked against the uncut run's.
async fn run_point(run: Run, point: Point, uncut: Option<&[u64]>) -> Result<Done, String> {
    let done = workload(run, point).await?;
    if let Some(uncut) = uncut
        && matches!(point, Point::Cut { .. })
        && (!done.sim.powered_off()
            || done.trace.len() > uncut.len()
            || done.trace[..] != uncut[..done.trace.len()])
    {
        return Err(format!(
            "the run is not deterministic: its I/O before the cut differs from the uncut run's \
             ({} operations, cut: {})",
            done.trace.len(),
            done.sim.powered_off()
        ));
    }
    crash_and_check(&done, run.seed, point).await?;
    Ok(done)
}

/// Runs the uncut workload (checked too) and says how big it is.
async fn uncut(run: Run, out: &mut Explored) -> Option<Done> {
    out.seeds += 1;
    match run_point(run, Point::Uncut, None).await {
        Ok(done) => {
            eprintln!(
                "seed {}: {} requests ({}), {} syncs, {} writes",
                run.seed,
                done.steps,
                done.kinds.iter().copied().collect::<Vec<_>>().join(" "),
                done.total.syncs,
                done.total.writes
            );
            Some(done)
        }
        Err(e) => {
            out.found(run, Point::Uncut, e);
            None
        }
    }
}

/// Explores power cuts for one run: before every sync, before seeded
/// writes, and a second crash at each sync of some of the reopens; stops
/// at the first violation if `first`.
async fn explore_cuts(run: Run, first: bool, out: &mut Explored) {
    let Some(uncut) = uncut(run, out).await else {
        return;
    };
    let total = uncut.total;
    let mut rng = Rng(run.seed ^ 0x5eed);
    let mut points: Vec<(Op, u64)> = (1..=total.syncs).map(|n| (Op::Sync, n)).collect();
    let mut writes: Vec<u64> = (0..total.syncs / 2)
        .map(|_| 1 + rng.below(total.writes))
        .collect();
    writes.sort_unstable();
    writes.dedup();
    points.extend(writes.into_iter().map(|n| (Op::Write, n)));
    for (i, at) in points.into_iter().enumerate() {
        let point = Point::Cut { at, again: None };
        out.points += 1;
        match at.0 {
            Op::Sync => out.sync_points += 1,
            _ => out.write_points += 1,
        }
        let done = match run_point(run, point, Some(&uncut.trace)).await {
            Ok(done) => done,
            Err(e) => {
                out.found(run, point, e);
                if first {
                    return;
                }
                continue;
            }
        };
        if i % SECOND_CRASH_EVERY != SECOND_CRASH_EVERY - 1 {
            continue;
        }
        // A second cut before each sync of the reopen itself.
        let reopen = done.sim.crash(crash_seed(run.seed, point, 1));
        let syncs = match open(&reopen, Sabotage::default()) {
            Ok(store) => {
                let syncs = reopen.counts().syncs;
                store.close();
                syncs
            }
            Err(_) => reopen.counts().syncs,
        };
        for n in 1..=syncs {
            let point = Point::Cut {
                at,
                again: Some((Op::Sync, n)),
            };
            out.points += 1;
            out.second_crashes += 1;
            if let Err(e) = crash_and_check(&done, run.seed, point).await {
                out.found(run, point, e);
                if first {
                    return;
                }
            }
        }
    }
}

/// Explores faults for one run: the k-th write, then the k-th sync, fails
/// with ENOSPC, then EIO, for every k of the workload (which must cover
/// every kind of request if `cover`).
async fn explore_faults(run: Run, cover: bool, out: &mut Explored) {
    let Some(uncut) = uncut(run, out).await else {
        return;
    };
    let missing: Vec<&str> = KINDS
        .into_iter()
        .filter(|k| !uncut.kinds.contains(k))
        .collect();
    if cover && !missing.is_empty() {
        out.found(
            run,
            Point::Uncut,
            format!("the workload does not cover {missing:?}: choose another fault seed"),
        );
    }
    for kind in [ErrorKind::StorageFull, ErrorKind::Other] {
        for (op, n) in [
            (Op::Write, uncut.workload.writes),
            (Op::Sync, uncut.workload.syncs),
        ] {
            for k in 1..=n {
                let point = Point::Fault { at: (op, k), kind };
                out.points += 1;
                out.faults += 1;
                if let Err(e) = run_point(run, point, None).await {
                    out.found(run, point, e);
                }
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// The one point to rerun, if the environment names one.
fn reproduction() -> Option<(Run, Point)> {
    let point = std::env::var("MODELHUB_CRASH_POINT").ok()?;
    let point =
        Point::parse(&point).unwrap_or_else(|| panic!("bad MODELHUB_CRASH_POINT {point:?}"));
    let run = Run {
        seed: env_u64("MODELHUB_CRASH_SEED").expect("MODELHUB_CRASH_SEED with the point"),
        steps: env_u64("MODELHUB_CRASH_STEPS"),
        sabotage: parse_sabotage(&std::env::var("MODELHUB_CRASH_SABOTAGE").unwrap_or_default()),
    };
    Some((run, point))
}

/// Whether the environment names one point to rerun (which only
/// `power_cuts_keep_every_invariant` does).
fn skipped() -> bool {
    let skip = reproduction().is_some();
    if skip {
        eprintln!(
            "skipped: MODELHUB_CRASH_POINT reruns one point in power_cuts_keep_every_invariant"
        );
    }
    skip
}

/// Power cuts at every sync point and at seeded write points of the first
/// seeds (a second crash during some reopens), or the one point the
/// environment names.
#[tokio::test]
async fn power_cuts_keep_every_invariant() {
    let started = Instant::now();
    let mut out = Explored::default();
    if let Some((run, point)) = reproduction() {
        let trace = uncut(run, &mut out).await.map(|u| u.trace);
        out.points += 1;
        if let Err(e) = run_point(run, point, trace.as_deref()).await {
            out.found(run, point, e);
        }
    } else {
        for seed in 1..=env_u64("MODELHUB_CRASH_SEEDS").unwrap_or(CUT_SEEDS) {
            explore_cuts(Run::seed(seed), false, &mut out).await;
        }
    }
    eprintln!(
        "power cuts: {} seeds, {} points ({} before a sync, {} before a write, {} second crashes \
         during a reopen), {} violations, {:.1} s",
        out.seeds,
        out.points,
        out.sync_points,
        out.write_points,
        out.second_crashes,
        out.violations.len(),
        started.elapsed().as_secs_f64()
    );
    out.summary();
    assert!(out.violations.is_empty(), "violations: see above");
}

/// ENOSPC and EIO on every write and every sync of a workload, one at a
/// time: by default the first [`FAULT_STEPS`] requests of
/// [`FAULT_SEED`]'s, which cover every kind of request;
/// `MODELHUB_CRASH_FAULT_SEEDS=N` sweeps the whole workloads of seeds
/// 1..=N.
#[tokio::test]
async fn faults_keep_every_invariant() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let mut out = Explored::default();
    match env_u64("MODELHUB_CRASH_FAULT_SEEDS") {
        Some(n) => {
            for seed in 1..=n {
                explore_faults(Run::seed(seed), false, &mut out).await;
            }
        }
        None => {
            let run = Run {
                steps: Some(FAULT_STEPS),
                ..Run::seed(FAULT_SEED)
            };
            explore_faults(run, true, &mut out).await;
        }
    }
    eprintln!(
        "faults: {} seeds, {} faults (ENOSPC and EIO on each write and sync), {} violations, \
         {:.1} s",
        out.seeds,
        out.faults,
        out.violations.len(),
        started.elapsed().as_secs_f64()
    );
    out.summary();
    assert!(out.violations.is_empty(), "violations: see above");
}

/// Explores power cuts with a deliberate bug until the first violation,
/// within the default seeds; answers it.
async fn teeth(sabotage: Sabotage) -> Option<Violation> {
    let started = Instant::now();
    let mut out = Explored::default();
    for seed in 1..=CUT_SEEDS {
        let run = Run {
            sabotage,
            ..Run::seed(seed)
        };
        explore_cuts(run, true, &mut out).await;
        if let Some(v) = out.violations.pop() {
            eprintln!(
                "{}: caught after {} points, {:.1} s",
                sabotage_name(sabotage).unwrap_or_default(),
                out.points,
                started.elapsed().as_secs_f64()
            );
            return Some(v);
        }
    }
    None
}

/// A deliberate bug must be caught as what it is: acknowledged writes
/// lost, not some other complaint (a nondeterministic run, say).
fn assert_lost_acknowledged(v: Option<Violation>) {
    let v = v.expect("not caught");
    assert!(
        v.what.contains("acknowledged") && !v.what.contains("not deterministic"),
        "caught, but not as lost acknowledged writes: {v}"
    );
}

/// The log's append skips its sync: an acknowledged write is lost.
#[tokio::test]
async fn teeth_a_log_append_without_sync_is_caught() {
    if skipped() {
        return;
    }
    let sabotage = Sabotage {
        skip_log_sync: true,
        ..Sabotage::default()
    };
    assert_lost_acknowledged(teeth(sabotage).await);
}

/// The log is cleared before the checkpoint is durable: a cut between the
/// two loses what the log held.
#[tokio::test]
async fn teeth_a_log_cleared_before_its_checkpoint_is_caught() {
    if skipped() {
        return;
    }
    let sabotage = Sabotage {
        clear_log_before_checkpoint: true,
        ..Sabotage::default()
    };
    assert_lost_acknowledged(teeth(sabotage).await);
}

/// New files' directory entries are never synced: a cut can lose the
/// files.
#[tokio::test]
async fn teeth_an_unsynced_directory_entry_is_caught() {
    if skipped() {
        return;
    }
    let sabotage = Sabotage {
        skip_dir_sync: true,
        ..Sabotage::default()
    };
    assert_lost_acknowledged(teeth(sabotage).await);
}
