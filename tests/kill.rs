//! `kill -9` rounds under concurrent writers and watchers, in the style of
//! etcd's robustness tests.
//!
//! One database, several rounds. In each round writer threads create cells
//! (labels of varying size, so that a later, shorter log generation
//! overwrites a longer one), merge-patch them, write their status, delete
//! them, and build and cascade-delete stacks with cells, some of it with
//! `resourceVersion` preconditions, while watchers stream the history from
//! the round's first revision. The server runs with very short checkpoint
//! and compaction intervals and a short history, so checkpoints, log resets
//! and compactions happen all the time, and it is SIGKILLed at a random
//! moment. After each restart on the same data:
//!
//! - every acknowledged write is there with its revision and content, unless
//!   a later acknowledged write replaced or deleted it; a write in flight at
//!   the kill is wholly applied or wholly absent (a cascade's parent and
//!   children together), and applied if a watcher saw it;
//! - every event a watcher saw is still in the history with the same
//!   content, no revision a watcher saw is reused for another change, and
//!   the history holds no change that no writer made;
//! - the revision is at or above everything handed out, and new writes
//!   continue right above it;
//! - a watch resumed from the last revision seen continues without a gap, or
//!   answers `410` only because that revision was really compacted.
//!
//! `MODELHUB_KILL_ROUNDS=N` runs N rounds (4 by default) and
//! `MODELHUB_KILL_SEED=S` replays the choices of a run (the seed is printed;
//! the threads' timing is not replayable, only what they choose to do).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Map, Value, json};

/// Writer threads per round.
const WRITERS: usize = 6;
/// `--history-revisions`: short, so compaction runs all the time.
const KEEP: u64 = 300;
/// Choices one writer makes in a round at most (the kill ends it sooner).
const MAX_REQUESTS: usize = 20_000;
/// Watch streams one watcher opens in a round at most.
const MAX_STREAMS: usize = 200;
/// How long a watch is read after a restart before giving up.
const READ_SECONDS: u64 = 20;

const REALM: &str = "/realms/r";
const STACKS: &str = "/realms/r/spaces/s/stacks";
const CELLS: &str = "/realms/r/spaces/s/stacks/t/cells";

/// Every object by its API path.
type Model = BTreeMap<String, Value>;

#[test]
fn kill_9_rounds_lose_no_acknowledged_write_and_take_back_no_watched_event() {
    let seed = env_number("MODELHUB_KILL_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Rng(nanos as u64 ^ u64::from(std::process::id())).next()
    });
    let rounds = env_number("MODELHUB_KILL_ROUNDS").unwrap_or(4);
    eprintln!(
        "kill rounds: seed {seed} (MODELHUB_KILL_SEED={seed} replays its choices), {rounds} rounds"
    );
    let began = Instant::now();
    let args = server_args(0);
    let mut s = Server::start_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let mut model = everything(&c, &s);
    let mut start = mark_round(&c, &s, 0, &mut model);
    let mut rng = Rng(seed);
    let mut total = Totals::default();
    for round in 0..rounds as usize {
        let delay = if rng.percent(20) {
            // Sometimes right as the writers start.
            Duration::from_millis(rng.below(60))
        } else {
            Duration::from_millis(200 + rng.below(2800))
        };
        let killed = AtomicBool::new(false);
        let api = s.api("");
        let (ops, watches) = std::thread::scope(|scope| {
            let watchers: Vec<_> = [60, 1]
                .into_iter()
                .map(|secs| {
                    let (api, killed) = (&api, &killed);
                    scope.spawn(move || watch_until_killed(api, start, secs, killed))
                })
                .collect();
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let own = owned(&model, w);
                    let api = &api;
                    let rng = Rng(seed ^ (round as u64 * 64 + w as u64 + 1).wrapping_mul(GOLDEN));
                    scope.spawn(move || write_until_killed(api, w, round, rng, own))
                })
                .collect();
            std::thread::sleep(delay);
            s.kill();
            killed.store(true, Ordering::SeqCst);
            let ops: Vec<Op> = writers
                .into_iter()
                .flat_map(|h| h.join().expect("writer thread"))
                .collect();
            let watches: Vec<WatchLog> = watchers
                .into_iter()
                .map(|h| h.join().expect("watcher thread"))
                .collect();
            (ops, watches)
        });
        let t = Instant::now();
        s.extra = server_args(round + 1);
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.restart())) {
            panic!(
                "seed {seed} (MODELHUB_KILL_SEED={seed}), round {round}, killed after {delay:?}: \
                 the server did not start again on the same data: {}",
                e.downcast_ref::<String>()
                    .map_or("(no message)", String::as_str)
            );
        }
        let restart = t.elapsed();
        let replayed = s.log_text().contains("replayed the write-ahead log");
        let checked = check_round(&c, &s, round, start, &model, &ops, &watches);
        let stats = &checked.stats;
        eprintln!(
            "round {round} (checkpoints every {}): killed after {delay:?}; {} acknowledged, {} \
             refused as expected, {} in flight ({} applied); watchers saw {} events; revisions \
             {start}..={}; history checked from {} ({} watched events and {} acknowledged writes \
             compacted before the check: checked against the objects' state instead); restart \
             {restart:?}, log replayed: {replayed}; {}",
            checkpoint_interval(round),
            stats.acked,
            stats.refused,
            stats.in_flight,
            stats.in_flight_applied,
            stats.seen,
            stats.revision,
            stats.history_from,
            stats.seen_compacted,
            stats.acked_compacted,
            checked.notes.join("; "),
        );
        assert!(
            checked.violations.is_empty(),
            "seed {seed} (MODELHUB_KILL_SEED={seed}), round {round}, killed after {delay:?}: {} \
             violation(s) (the first 30):\n{}\nserver log after the restart (tail):\n{}",
            checked.violations.len(),
            checked.violations[..checked.violations.len().min(30)].join("\n"),
            tail(&s.log_text(), 40),
        );
        total.acked += stats.acked;
        total.in_flight += stats.in_flight;
        total.seen += stats.seen;
        model = checked.model;
        start = checked.next_start;
    }
    s.stop();
    eprintln!(
        "kill rounds: {rounds} rounds ran in {:?} (seed {seed}): {} acknowledged writes, {} in \
         flight at a kill, {} watched events; nothing lost, nothing taken back",
        began.elapsed(),
        total.acked,
        total.in_flight,
        total.seen,
    );
}

/// The checkpoint interval of round `round`'s server: in turn very short,
/// so that kills land in checkpoints and log resets, and long enough that
/// a kill leaves a log to replay.
fn checkpoint_interval(round: usize) -> &'static str {
    ["5ms", "200ms"][round % 2]
}

/// The server's arguments for round `round`: checkpoints and compactions
/// all the time, and a short history.
fn server_args(round: usize) -> Vec<String> {
    [
        "--checkpoint-interval",
        checkpoint_interval(round),
        "--compaction-interval",
        "20ms",
        "--history-revisions",
        &KEEP.to_string(),
        "--bookmark-interval",
        "50ms",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Default)]
struct Totals {
    acked: usize,
    in_flight: usize,
    seen: usize,
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// The last `lines` lines of a server log above DEBUG.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a>(&mut self, items: &[&'a String]) -> &'a String {
        items[self.below(items.len() as u64) as usize]
    }

    /// Up to `max` bytes of labels: `pad0`, `pad1`, ... each of at most
    /// [`PAD_CHUNK`] bytes (a label value's limit), at least `pad0`.
    fn pad(&mut self, labels: &mut Map<String, Value>, max: usize) {
        let len = self.below(max as u64 + 1) as usize;
        let x = self.next();
        let pad: String = (0..len)
            .map(|i| char::from(b'a' + ((x >> (i % 59)) % 26) as u8))
            .collect();
        labels.insert("pad0".into(), json!(""));
        for (i, chunk) in pad.as_bytes().chunks(PAD_CHUNK).enumerate() {
            let chunk = std::str::from_utf8(chunk).expect("ASCII");
            labels.insert(format!("pad{i}"), json!(chunk));
        }
    }
}

/// The most bytes of one padding label.
const PAD_CHUNK: usize = 253;
/// The most padding labels [`Rng::pad`] writes.
const PAD_LABELS: usize = 8192usize.div_ceil(PAD_CHUNK);

/// Removes every padding label (a merge patch's nulls).
fn unpad(labels: &mut Map<String, Value>) {
    for i in 0..PAD_LABELS {
        labels.insert(format!("pad{i}"), Value::Null);
    }
}

// ---- the writers ----

/// One request a writer sent, with what it knew before sending it.
#[derive(Debug)]
enum Req {
    Create {
        path: String,
        labels: Map<String, Value>,
    },
    /// A merge patch of the labels (a null value removes one).
    Patch {
        path: String,
        before: Value,
        labels: Map<String, Value>,
        pre: Option<u64>,
    },
    Status {
        path: String,
        before: Value,
        state: &'static str,
        cgroup: String,
        pre: Option<u64>,
    },
    /// A delete without cascade (of a cell, or of a stack that has cells,
    /// which is refused).
    Delete {
        path: String,
        before: Value,
        pre: Option<u64>,
    },
    /// A stack and its cells, deleted in one request.
    Cascade {
        path: String,
        before: Value,
        children: Vec<(String, Value)>,
        pre: Option<u64>,
    },
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pre = |pre: &Option<u64>| pre.map_or(String::new(), |p| format!(" if at {p}"));
        match self {
            Req::Create { path, labels } => {
                write!(f, "create {path} labels {}", brief(&json!(labels)))
            }
            Req::Patch {
                path,
                before,
                labels,
                pre: p,
            } => write!(
                f,
                "patch {path} (at {}) labels {}{}",
                rv(before),
                brief(&json!(labels)),
                pre(p)
            ),
            Req::Status {
                path,
                before,
                state,
                cgroup,
                pre: p,
            } => write!(
                f,
                "status {state} {cgroup} of {path} (at {}){}",
                rv(before),
                pre(p)
            ),
            Req::Delete {
                path,
                before,
                pre: p,
            } => write!(f, "delete {path} (at {}){}", rv(before), pre(p)),
            Req::Cascade {
                path,
                before,
                children,
                pre: p,
            } => write!(
                f,
                "cascade delete {path} (at {}) with its {} cells{}",
                rv(before),
                children.len(),
                pre(p)
            ),
        }
    }
}

impl Req {
    fn path(&self) -> &str {
        match self {
            Req::Create { path, .. }
            | Req::Patch { path, .. }
            | Req::Status { path, .. }
            | Req::Delete { path, .. }
            | Req::Cascade { path, .. } => path,
        }
    }

    /// Every object the request may change.
    fn paths(&self) -> Vec<String> {
        let mut out = vec![self.path().to_string()];
        if let Req::Cascade { children, .. } = self {
            out.extend(children.iter().map(|(p, _)| p.clone()));
        }
        out
    }
}

#[derive(Debug)]
enum Outcome {
    /// A 2xx answer with its object.
    Acked(Value),
    /// Any other answer.
    Refused(u16, Value),
    /// No answer: in flight at the kill.
    Unknown,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Acked(b) => write!(f, "success {}", brief(b)),
            Outcome::Refused(st, b) => write!(f, "{st} {}", brief(b)),
            Outcome::Unknown => write!(f, "no answer"),
        }
    }
}

#[derive(Debug)]
struct Op {
    writer: usize,
    req: Req,
    /// The refusal reason this request must get (a stale precondition, a
    /// stack with cells deleted without cascade); `None`: it must succeed.
    refusal: Option<&'static str>,
    outcome: Outcome,
}

/// The objects writer `w` owns: its names start with `w<w>-`.
fn owned(model: &Model, w: usize) -> Model {
    let prefix = format!("w{w}-");
    model
        .iter()
        .filter(|(p, _)| p.rsplit('/').next().is_some_and(|n| n.starts_with(&prefix)))
        .map(|(p, o)| (p.clone(), o.clone()))
        .collect()
}

fn is_stack(path: &str) -> bool {
    path.strip_prefix(STACKS)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.contains('/'))
}

fn children(model: &Model, parent: &str) -> Vec<(String, Value)> {
    let prefix = format!("{parent}/");
    model
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, o)| (p.clone(), o.clone()))
        .collect()
}

/// Writes on its own objects until a request gets no answer (the server
/// was killed), or after [`MAX_REQUESTS`]. Stops at the first answer it did
/// not expect, so that every earlier write is known.
fn write_until_killed(api: &str, w: usize, round: usize, mut rng: Rng, mut own: Model) -> Vec<Op> {
    let c = Client::default();
    let mut ops = Vec::new();
    let mut n = 0;
    // Later rounds write smaller labels, so their log generations are shorter.
    let max_pad = 8192 >> (2 * (round % 4));
    'requests: for _ in 0..MAX_REQUESTS {
        for (req, refusal) in choose(&mut rng, &own, w, round, &mut n, max_pad) {
            let outcome = match c.try_send(request(&c, api, &req)) {
                Ok((st, body)) if (200..300).contains(&st) => Outcome::Acked(body),
                Ok((st, body)) => Outcome::Refused(st, body),
                Err(_) => Outcome::Unknown,
            };
            let expected = match (&outcome, refusal) {
                (Outcome::Acked(b), None) => {
                    apply(&mut own, &req, b);
                    true
                }
                (Outcome::Refused(409, b), Some(reason)) => b["reason"] == reason,
                _ => false,
            };
            let unknown = matches!(outcome, Outcome::Unknown);
            ops.push(Op {
                writer: w,
                req,
                refusal,
                outcome,
            });
            if !expected || unknown {
                break 'requests;
            }
        }
    }
    ops
}

/// The next requests (several when building a stack with cells).
fn choose(
    rng: &mut Rng,
    own: &Model,
    w: usize,
    round: usize,
    n: &mut usize,
    max_pad: usize,
) -> Vec<(Req, Option<&'static str>)> {
    let mut name = || {
        *n += 1;
        format!("w{w}-r{round}-{n}")
    };
    let cells: Vec<&String> = own.keys().filter(|p| p.starts_with(CELLS)).collect();
    let stacks: Vec<&String> = own.keys().filter(|p| is_stack(p)).collect();
    let full: Vec<&String> = stacks
        .iter()
        .copied()
        .filter(|p| !children(own, p).is_empty())
        .collect();
    let roll = rng.below(100);
    let current = |p: &String| (own[p].clone(), rv(&own[p]));
    if cells.is_empty() || roll < 30 {
        let mut labels = Map::new();
        labels.insert("writer".into(), json!(w.to_string()));
        rng.pad(&mut labels, max_pad);
        return vec![(
            Req::Create {
                path: format!("{CELLS}/{}", name()),
                labels,
            },
            None,
        )];
    }
    match roll {
        30..50 => {
            let path = rng.pick(&cells);
            let (before, at) = current(path);
            let mut labels = Map::new();
            labels.insert("seq".into(), json!(name()));
            match rng.below(4) {
                0 | 1 => {
                    rng.pad(&mut labels, max_pad);
                }
                2 => {
                    unpad(&mut labels);
                }
                _ => {}
            }
            let (pre, refusal) = precondition(rng, at);
            vec![(
                Req::Patch {
                    path: path.clone(),
                    before,
                    labels,
                    pre,
                },
                refusal,
            )]
        }
        50..65 => {
            let path = rng.pick(&cells);
            let (before, at) = current(path);
            let states = ["Pending", "Ready", "Stopped", "Failed", "Unknown"];
            let (pre, refusal) = precondition(rng, at);
            vec![(
                Req::Status {
                    path: path.clone(),
                    before,
                    state: states[rng.below(states.len() as u64) as usize],
                    cgroup: format!("/kill/{}", name()),
                    pre,
                },
                refusal,
            )]
        }
        65..73 => {
            let path = rng.pick(&cells);
            let (before, at) = current(path);
            let (pre, refusal) = precondition(rng, at);
            vec![(
                Req::Delete {
                    path: path.clone(),
                    before,
                    pre,
                },
                refusal,
            )]
        }
        73..85 => {
            let stack = format!("{STACKS}/{}", name());
            let mut reqs = vec![(
                Req::Create {
                    path: stack.clone(),
                    labels: Map::new(),
                },
                None,
            )];
            for _ in 0..1 + rng.below(3) {
                let mut labels = Map::new();
                rng.pad(&mut labels, max_pad);
                reqs.push((
                    Req::Create {
                        path: format!("{stack}/cells/{}", name()),
                        labels,
                    },
                    None,
                ));
            }
            reqs
        }
        85..95 if !stacks.is_empty() => {
            let path = rng.pick(&stacks);
            let (before, at) = current(path);
            let (pre, refusal) = precondition(rng, at);
            vec![(
                Req::Cascade {
                    path: path.clone(),
                    before,
                    children: children(own, path),
                    pre,
                },
                refusal,
            )]
        }
        _ if !full.is_empty() => {
            let path = rng.pick(&full);
            let (before, _) = current(path);
            vec![(
                Req::Delete {
                    path: path.clone(),
                    before,
                    pre: None,
                },
                Some("HasChildren"),
            )]
        }
        _ => Vec::new(),
    }
}

/// No precondition, the current `resourceVersion`, or (one time in ten) a
/// stale one, which must be refused.
fn precondition(rng: &mut Rng, current: u64) -> (Option<u64>, Option<&'static str>) {
    match rng.below(10) {
        0 => (Some(current - 1), Some("Conflict")),
        1..5 => (Some(current), None),
        _ => (None, None),
    }
}

fn request(c: &Client, api: &str, req: &Req) -> reqwest::blocking::RequestBuilder {
    let if_match = |r: reqwest::blocking::RequestBuilder, pre: &Option<u64>| match pre {
        Some(p) => r.header("if-match", format!("\"{p}\"")),
        None => r,
    };
    let meta = |mut meta: Value, pre: &Option<u64>| {
        if let Some(p) = pre {
            meta["resourceVersion"] = json!(p.to_string());
        }
        meta
    };
    match req {
        Req::Create { path, labels } => {
            let (collection, name) = path.rsplit_once('/').expect("a path");
            c.http
                .post(format!("{api}{collection}"))
                .json(&json!({"metadata": {"name": name, "labels": labels}}))
        }
        Req::Patch {
            path, labels, pre, ..
        } => c
            .http
            .patch(format!("{api}{path}"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"metadata": meta(json!({"labels": labels}), pre)}).to_string()),
        Req::Status {
            path,
            state,
            cgroup,
            pre,
            ..
        } => c.http.put(format!("{api}{path}/status")).json(&json!({
            "metadata": meta(json!({}), pre),
            "status": {"state": state, "cgroupPath": cgroup},
        })),
        Req::Delete { path, pre, .. } => if_match(c.http.delete(format!("{api}{path}")), pre),
        Req::Cascade { path, pre, .. } => {
            if_match(c.http.delete(format!("{api}{path}?cascade=true")), pre)
        }
    }
}

/// Applies an acknowledged write to a model.
fn apply(model: &mut Model, req: &Req, answer: &Value) {
    match req {
        Req::Create { path, .. } | Req::Patch { path, .. } | Req::Status { path, .. } => {
            model.insert(path.clone(), answer.clone());
        }
        Req::Delete { path, .. } => {
            model.remove(path);
        }
        Req::Cascade { path, .. } => {
            for (child, _) in children(model, path) {
                model.remove(&child);
            }
            model.remove(path);
        }
    }
}

// ---- the watchers ----

/// One watch event: revision, type and object.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    rev: u64,
    ty: String,
    object: Value,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.ty, brief(&self.object))
    }
}

#[derive(Default)]
struct WatchLog {
    events: Vec<Seen>,
    violations: Vec<String>,
    notes: Vec<String>,
}

/// Watches everything from revision `from`, reopening the stream every
/// `secs` seconds from the last revision seen, until the server is killed.
/// Every revision is one change, so an unfiltered stream is dense: each
/// event's revision is the previous one's plus one, and a BOOKMARK names
/// the last revision sent.
fn watch_until_killed(api: &str, from: u64, secs: u64, killed: &AtomicBool) -> WatchLog {
    let http = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(secs + 10))
        .build()
        .unwrap();
    let mut log = WatchLog::default();
    let mut cursor = from;
    for _ in 0..MAX_STREAMS {
        if killed.load(Ordering::SeqCst) {
            break;
        }
        let url = format!("{api}/watch?resourceVersion={cursor}&timeoutSeconds={secs}");
        let resp = match http.get(&url).send() {
            Ok(r) => r,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        match resp.status().as_u16() {
            200 => {}
            410 => {
                // Legitimate only if `cursor` was compacted: the history
                // check after the restart vouches for what was seen.
                log.notes
                    .push(format!("a watch resumed from {cursor} answered 410"));
                break;
            }
            other => {
                log.violations.push(format!(
                    "watch from {cursor} answered {other}: {}",
                    resp.text().unwrap_or_default()
                ));
                break;
            }
        }
        let mut reader = BufReader::new(resp);
        let mut line = String::new();
        loop {
            line.clear();
            // A read error or a line cut short: the server went away.
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 && line.ends_with('\n') => {}
                _ => break,
            }
            let event: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    log.violations
                        .push(format!("unreadable watch line {line:?}: {e}"));
                    return log;
                }
            };
            match event["type"].as_str() {
                Some("BOOKMARK") => {
                    if event_rv(&event) != cursor {
                        log.violations.push(format!(
                            "a BOOKMARK at {} after the last event at {cursor}",
                            event_rv(&event)
                        ));
                    }
                }
                Some("ERROR") => {
                    log.notes.push(format!(
                        "watch ERROR after {cursor}: {}",
                        brief(&event["object"])
                    ));
                    if event["object"]["status"] != 410 {
                        log.violations
                            .push(format!("watch ERROR after {cursor}: {}", brief(&event)));
                    }
                    return log;
                }
                Some(ty) => {
                    let rev = event_rv(&event);
                    if rev != cursor + 1 {
                        log.violations.push(format!(
                            "a watcher got revision {rev} right after {cursor} (a gap or a repeat)"
                        ));
                    }
                    cursor = rev;
                    log.events.push(Seen {
                        rev,
                        ty: ty.to_string(),
                        object: event["object"].clone(),
                    });
                }
                None => log
                    .violations
                    .push(format!("an event without a type: {event}")),
            }
        }
    }
    log
}

/// Opens a watch from `from` on the restarted server: the stream, or the
/// refusal.
fn open_watch(s: &Server, from: u64) -> Result<BufReader<reqwest::blocking::Response>, Reply> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(READ_SECONDS + 10))
        .build()
        .unwrap();
    let resp = http
        .get(s.api(&format!(
            "/watch?resourceVersion={from}&timeoutSeconds={READ_SECONDS}"
        )))
        .send()
        .expect("watch after the restart");
    match resp.status().as_u16() {
        200 => Ok(BufReader::new(resp)),
        st => Err((st, resp.json().unwrap_or(Value::Null))),
    }
}

/// The events of `stream` (BOOKMARKs skipped) up to revision `to`, or up to
/// where the stream ends.
fn read_until(
    stream: &mut BufReader<reqwest::blocking::Response>,
    after: u64,
    to: u64,
) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut line = String::new();
    while out.last().map_or(after, |e: &Seen| e.rev) < to {
        line.clear();
        match stream.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {}
            _ => break,
        }
        let event: Value = serde_json::from_str(&line).expect("a watch event");
        match event["type"].as_str() {
            Some("BOOKMARK") => {}
            Some(ty) => out.push(Seen {
                rev: event_rv(&event),
                ty: ty.to_string(),
                object: event["object"].clone(),
            }),
            None => panic!("an event without a type: {event}"),
        }
    }
    out
}

// ---- the checks ----

/// What an acknowledged write says a revision is.
enum Claim<'a> {
    /// An ADDED or MODIFIED with exactly this object.
    Put { ty: &'static str, object: &'a Value },
    /// A DELETED with exactly this object (the last state at the deletion's
    /// revision).
    Deleted(&'a Value),
    /// One of a cascade's children, DELETED in the revisions just below the
    /// parent's.
    Child(&'a [(String, Value)]),
}

impl Claim<'_> {
    /// Why `event` is not what the write said, if it is not.
    fn mismatch(&self, event: &Seen) -> Option<String> {
        let ok = match self {
            Claim::Put { ty, object } => event.ty == *ty && event.object == **object,
            Claim::Deleted(object) => event.ty == "DELETED" && event.object == **object,
            Claim::Child(children) => {
                event.ty == "DELETED"
                    && children
                        .iter()
                        .any(|(_, before)| with_rv(before, event.rev) == event.object)
            }
        };
        (!ok).then(|| {
            let want = match self {
                Claim::Put { ty, object } => format!("{ty} {}", brief(object)),
                Claim::Deleted(object) => format!("DELETED {}", brief(object)),
                Claim::Child(children) => format!(
                    "DELETED of one of {:?}",
                    children.iter().map(|(p, _)| p).collect::<Vec<_>>()
                ),
            };
            format!("{event}, but the acknowledged write was {want}")
        })
    }
}

fn with_rv(object: &Value, rev: u64) -> Value {
    let mut o = object.clone();
    o["metadata"]["resourceVersion"] = json!(rev.to_string());
    o
}

/// The API path of an object, from its kind, name and coordinates.
fn path_of(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().expect("a name");
    let id = |k: &str| {
        object["spec"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no spec.{k} in {object}"))
            .to_string()
    };
    match object["kind"].as_str().expect("a kind") {
        "Realm" => format!("/realms/{name}"),
        "Space" => format!("/realms/{}/spaces/{name}", id("realmId")),
        "Stack" => format!(
            "/realms/{}/spaces/{}/stacks/{name}",
            id("realmId"),
            id("spaceId")
        ),
        "Cell" => format!(
            "/realms/{}/spaces/{}/stacks/{}/cells/{name}",
            id("realmId"),
            id("spaceId"),
            id("stackId")
        ),
        other => panic!("a {other} nobody writes: {object}"),
    }
}

/// Every object on the server.
fn everything(c: &Client, s: &Server) -> Model {
    let mut out = Model::new();
    for collection in ["/realms", "/spaces", "/stacks", "/cells", "/containers"] {
        let (st, list) = c.get(&s.api(collection));
        assert_eq!(st, 200, "{list}");
        for item in list["items"].as_array().expect("a list") {
            out.insert(path_of(item), item.clone());
        }
    }
    out
}

/// Writes the round number on realm `r`; answers the write's revision.
fn mark_round(c: &Client, s: &Server, round: usize, model: &mut Model) -> u64 {
    let (st, b) = c.patch(
        &s.api(REALM),
        &json!({"metadata": {"labels": {"round": round.to_string()}}}),
    );
    assert_eq!(st, 200, "{b}");
    model.insert(REALM.to_string(), b.clone());
    rv(&b)
}

#[derive(Default)]
struct Stats {
    acked: usize,
    refused: usize,
    in_flight: usize,
    in_flight_applied: usize,
    seen: usize,
    revision: u64,
    history_from: u64,
    seen_compacted: usize,
    acked_compacted: usize,
}

struct Checked {
    violations: Vec<String>,
    notes: Vec<String>,
    stats: Stats,
    /// The objects after the round (checked), the next round's start.
    model: Model,
    /// The revision of the first write after the restart.
    next_start: u64,
}

/// Checks a round on the restarted server. `start` is the revision the
/// watchers started from; `model` the objects at `start`.
fn check_round(
    c: &Client,
    s: &Server,
    round: usize,
    start: u64,
    model: &Model,
    ops: &[Op],
    watches: &[WatchLog],
) -> Checked {
    let mut bad: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut stats = Stats::default();

    // Every answer was the expected one.
    for op in ops {
        match (&op.outcome, op.refusal) {
            (Outcome::Acked(_), None) => stats.acked += 1,
            (Outcome::Refused(409, b), Some(reason)) if b["reason"] == reason => stats.refused += 1,
            (Outcome::Unknown, _) => stats.in_flight += 1,
            (outcome, refusal) => bad.push(format!(
                "writer {}: {} answered {outcome}; expected {}",
                op.writer,
                op.req,
                refusal.map_or("success".to_string(), |r| format!("409 {r}"))
            )),
        }
    }

    // What each acknowledged write says its revisions are.
    let mut claims: BTreeMap<u64, (usize, Claim)> = BTreeMap::new();
    let mut last_of_writer: BTreeMap<usize, u64> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (Outcome::Acked(answer), None) = (&op.outcome, op.refusal) else {
            continue;
        };
        let r = rv(answer);
        let mut mine = vec![(r, Claim::Deleted(answer))];
        match &op.req {
            Req::Create { .. } => {
                mine[0].1 = Claim::Put {
                    ty: "ADDED",
                    object: answer,
                }
            }
            Req::Patch { .. } | Req::Status { .. } => {
                mine[0].1 = Claim::Put {
                    ty: "MODIFIED",
                    object: answer,
                }
            }
            Req::Delete { .. } => {}
            Req::Cascade { children, .. } => {
                mine.extend((1..=children.len() as u64).map(|k| (r - k, Claim::Child(children))));
            }
        }
        for (rev, claim) in mine {
            if rev <= start {
                bad.push(format!(
                    "{} was acknowledged at {rev}, not above {start}",
                    op.req
                ));
            }
            if let Some((j, _)) = claims.insert(rev, (i, claim)) {
                bad.push(format!(
                    "revision {rev} was acknowledged to two writes: {} and {}",
                    ops[j].req, op.req
                ));
            }
        }
        let last = last_of_writer.entry(op.writer).or_insert(0);
        if r <= *last {
            bad.push(format!(
                "writer {}: {} acknowledged at {r}, not above its previous write at {last}",
                op.writer, op.req
            ));
        }
        *last = r;
    }

    // The writes in flight at the kill, by the objects they may change.
    let in_flight: Vec<&Op> = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Unknown))
        .collect();
    let mut in_flight_paths: BTreeMap<String, usize> = BTreeMap::new();
    for (k, op) in in_flight.iter().enumerate() {
        for p in op.req.paths() {
            in_flight_paths.insert(p, k);
        }
    }

    // Before the kill: what the watchers saw agrees with the acknowledged
    // writes and between watchers, and every change they saw was made by a
    // writer.
    let mut seen: BTreeMap<u64, &Seen> = BTreeMap::new();
    for (w, log) in watches.iter().enumerate() {
        bad.extend(log.violations.iter().map(|v| format!("watcher {w}: {v}")));
        notes.extend(log.notes.iter().map(|n| format!("watcher {w}: {n}")));
        for e in &log.events {
            if let Some(other) = seen.insert(e.rev, e)
                && other != e
            {
                bad.push(format!(
                    "two watchers saw revision {} differently: {other} and {e}",
                    e.rev
                ));
            }
        }
    }
    stats.seen = seen.len();
    let mut seen_in_flight: BTreeSet<usize> = BTreeSet::new();
    for (rev, e) in &seen {
        match claims.get(rev) {
            Some((_, claim)) => {
                if let Some(why) = claim.mismatch(e) {
                    bad.push(format!("before the kill a watcher saw at {rev} {why}"));
                }
            }
            None => match in_flight_paths.get(&path_of(&e.object)) {
                Some(k) => {
                    seen_in_flight.insert(*k);
                }
                None => bad.push(format!(
                    "before the kill a watcher saw at {rev} a change no write made: {e}"
                )),
            },
        }
    }

    // The revision after the restart covers everything handed out.
    let revision = revision(c, s);
    stats.revision = revision;
    let top = claims
        .keys()
        .chain(seen.keys())
        .copied()
        .max()
        .unwrap_or(start);
    if revision < top {
        bad.push(format!(
            "the revision after the restart is {revision}, below revision {top} handed out \
             before the kill"
        ));
    }

    // The history after the restart, from the first revision seen (or the
    // oldest one kept, if that was compacted).
    let first = seen.keys().next().map_or(start, |r| r - 1).min(start);
    let (from, mut stream) = match open_watch(s, first) {
        Ok(stream) => (first, Some(stream)),
        Err((410, _)) => {
            let from = first.max(revision.saturating_sub(KEEP));
            match open_watch(s, from) {
                Ok(stream) => (from, Some(stream)),
                Err(r) => {
                    bad.push(format!(
                        "after the restart a watch from {from} answered {}, although \
                         --history-revisions {KEEP} keeps it",
                        reply_brief(&r)
                    ));
                    (revision, None)
                }
            }
        }
        Err(r) => {
            bad.push(format!(
                "after the restart a watch from {first} answered {}",
                reply_brief(&r)
            ));
            (revision, None)
        }
    };
    stats.history_from = from;
    let history: Vec<Seen> = stream
        .as_mut()
        .map(|st| read_until(st, from, revision))
        .unwrap_or_default();
    drop(stream);
    let revs: Vec<u64> = history.iter().map(|e| e.rev).collect();
    if revs != (from + 1..=revision).collect::<Vec<_>>() {
        bad.push(format!(
            "the history after the restart from {from} to {revision} is not dense: {} events, \
             first {:?}, last {:?}",
            revs.len(),
            revs.first(),
            revs.last()
        ));
    }
    let history: BTreeMap<u64, &Seen> = history.iter().map(|e| (e.rev, e)).collect();
    for (rev, (i, claim)) in claims.range(from + 1..) {
        match history.get(rev) {
            None => bad.push(format!(
                "acknowledged write {} at {rev} is missing from the history after the restart",
                ops[*i].req
            )),
            Some(e) => {
                if let Some(why) = claim.mismatch(e) {
                    bad.push(format!("after the restart, revision {rev} is {why}"));
                }
            }
        }
    }
    for (rev, e) in history.range(start + 1..) {
        if !claims.contains_key(rev) && !in_flight_paths.contains_key(&path_of(&e.object)) {
            bad.push(format!(
                "after the restart, revision {rev} is a change no write made: {e}"
            ));
        }
    }
    for (rev, e) in seen.range(from + 1..) {
        if history.get(rev) != Some(e) {
            bad.push(format!(
                "a watcher saw {e} before the kill; after the restart revision {rev} is {}",
                history
                    .get(rev)
                    .map_or("missing".to_string(), |h| h.to_string())
            ));
        }
    }
    // Each child of an acknowledged cascade is deleted exactly once.
    for (rev, (i, claim)) in &claims {
        if let (Claim::Deleted(_), Req::Cascade { children, .. }) = (claim, &ops[*i].req) {
            let range = rev - children.len() as u64..*rev;
            if range.start > from {
                let deleted: BTreeSet<String> = range
                    .filter_map(|r| history.get(&r))
                    .map(|e| path_of(&e.object))
                    .collect();
                let want: BTreeSet<String> = children.iter().map(|(p, _)| p.clone()).collect();
                if deleted != want {
                    bad.push(format!(
                        "the cascade {} at {rev} deleted {deleted:?}, not its children {want:?}",
                        ops[*i].req
                    ));
                }
            }
        }
    }
    stats.seen_compacted = seen.range(..=from).count();
    stats.acked_compacted = claims.range(..=from).count();

    // The objects: the acknowledged writes applied in revision order, and
    // each write in flight wholly applied or wholly absent.
    let actual = everything(c, s);
    let mut expected = model.clone();
    for (i, claim) in claims.values() {
        if let Claim::Child(_) = claim {
            continue;
        }
        if let Outcome::Acked(answer) = &ops[*i].outcome {
            apply(&mut expected, &ops[*i].req, answer);
        }
    }
    let paths: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for p in paths {
        if in_flight_paths.contains_key(p.as_str()) {
            continue;
        }
        if expected.get(p) != actual.get(p) {
            bad.push(format!(
                "{p}: the acknowledged writes leave {}, the restarted server has {}",
                shown(expected.get(p)),
                shown(actual.get(p))
            ));
        }
    }
    for (k, op) in in_flight.iter().enumerate() {
        match in_flight_outcome(&op.req, &actual, start) {
            Ok(applied) => {
                if applied {
                    stats.in_flight_applied += 1;
                } else if seen_in_flight.contains(&k) {
                    bad.push(format!(
                        "{} was in flight at the kill and a watcher saw it, but it is not \
                         applied after the restart",
                        op.req
                    ));
                }
            }
            Err(why) => bad.push(format!("{} was in flight at the kill: {why}", op.req)),
        }
    }

    // What the watchers saw is not taken back, even where the history was
    // compacted: each object is at or past the last change seen to it.
    let mut last_seen: BTreeMap<String, &Seen> = BTreeMap::new();
    for e in seen.values() {
        last_seen.insert(path_of(&e.object), e);
    }
    for (p, e) in &last_seen {
        match actual.get(p) {
            Some(now) if rv(now) == e.rev => {
                if e.ty == "DELETED" || now != &e.object {
                    bad.push(format!(
                        "{p}: a watcher saw {e}; after the restart it is {}",
                        brief(now)
                    ));
                }
            }
            Some(now) if rv(now) < e.rev => bad.push(format!(
                "{p}: a watcher saw {e}; after the restart it is back at {}",
                brief(now)
            )),
            // Changed since, or deleted since: by an acknowledged write or
            // one in flight, both checked above.
            Some(_) | None => {}
        }
    }

    // A watch resumed from the last revision seen continues without a gap
    // into the first write after the restart, which takes the next
    // revision.
    let mut next_model = actual;
    let last = seen.keys().next_back().copied().unwrap_or(start);
    let resumed = open_watch(s, last);
    let next_start = mark_round(c, s, round + 1, &mut next_model);
    if next_start != revision + 1 {
        bad.push(format!(
            "the first write after the restart took revision {next_start}, not {}",
            revision + 1
        ));
    }
    match resumed {
        Ok(mut stream) => {
            let events = read_until(&mut stream, last, next_start);
            let revs: Vec<u64> = events.iter().map(|e| e.rev).collect();
            if revs != (last + 1..=next_start).collect::<Vec<_>>() {
                bad.push(format!(
                    "a watch resumed from {last} got revisions {:?}..{:?} ({} events), not \
                     {}..={next_start}",
                    revs.first(),
                    revs.last(),
                    revs.len(),
                    last + 1
                ));
            }
            for e in &events {
                let want = if e.rev == next_start {
                    Some(Seen {
                        rev: next_start,
                        ty: "MODIFIED".into(),
                        object: next_model[REALM].clone(),
                    })
                } else {
                    history.get(&e.rev).map(|h| (*h).clone())
                };
                if want.is_some_and(|w| w != *e) {
                    bad.push(format!(
                        "a watch resumed from {last} got {e}, which differs from the history"
                    ));
                }
            }
        }
        Err((410, body)) => {
            notes.push(format!(
                "a watch resumed from {last} answered 410 (compacted)"
            ));
            if last >= revision.saturating_sub(KEEP)
                || !body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("older than the retained history"))
            {
                bad.push(format!(
                    "a watch resumed from {last} answered 410 although --history-revisions \
                     {KEEP} keeps it (revision {revision}): {}",
                    brief(&body)
                ));
            }
        }
        Err(r) => bad.push(format!(
            "a watch resumed from {last} answered {}",
            reply_brief(&r)
        )),
    }

    Checked {
        violations: bad,
        notes,
        stats,
        model: next_model,
        next_start,
    }
}

/// `metadata.labels` (absent when there are none).
fn labels_of(object: &Value) -> Map<String, Value> {
    object["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn shown(o: Option<&Value>) -> String {
    o.map_or("nothing".to_string(), brief)
}

/// A JSON value for a message, its long strings (the label pads) cut.
fn brief(v: &Value) -> String {
    fn cut(v: &Value) -> Value {
        match v {
            Value::String(s) if s.len() > 200 => {
                json!(format!(
                    "{}...({} bytes)",
                    s.chars().take(24).collect::<String>(),
                    s.len()
                ))
            }
            Value::Array(a) => Value::Array(a.iter().map(cut).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), cut(v))).collect()),
            other => other.clone(),
        }
    }
    cut(v).to_string()
}

fn reply_brief((status, body): &Reply) -> String {
    format!("{status} {}", brief(body))
}

/// Whether a write in flight at the kill was applied (`Ok(true)`), was not
/// (`Ok(false)`), or left something else (`Err`): a partial cascade, a
/// change it did not ask for.
fn in_flight_outcome(req: &Req, actual: &Model, start: u64) -> Result<bool, String> {
    let now = |p: &str| actual.get(p);
    let newer = |before: &Value, after: &Value| {
        if rv(after) > rv(before).max(start) {
            Ok(())
        } else {
            Err(format!(
                "{} is not newer than {}",
                brief(after),
                brief(before)
            ))
        }
    };
    match req {
        Req::Create { path, labels } => match now(path) {
            None => Ok(false),
            Some(o) => {
                if labels_of(o) == *labels && generation(o) == 1 && rv(o) > start {
                    Ok(true)
                } else {
                    Err(format!("created as {}", brief(o)))
                }
            }
        },
        Req::Patch {
            path,
            before,
            labels,
            pre,
        } => match now(path) {
            Some(o) if o == before => Ok(false),
            Some(o) => {
                newer(before, o)?;
                let mut want = with_rv(before, rv(o));
                let mut merged = labels_of(before);
                for (k, v) in labels {
                    if v.is_null() {
                        merged.remove(k);
                    } else {
                        merged.insert(k.clone(), v.clone());
                    }
                }
                // An object without labels has no `labels` field.
                let meta = want["metadata"].as_object_mut().expect("metadata");
                if merged.is_empty() {
                    meta.remove("labels");
                } else {
                    meta.insert("labels".into(), Value::Object(merged));
                }
                applied_as(o, before, &want, *pre)
            }
            None => Err("gone".into()),
        },
        Req::Status {
            path,
            before,
            state,
            cgroup,
            pre,
        } => match now(path) {
            Some(o) if o == before => Ok(false),
            Some(o) => {
                newer(before, o)?;
                let mut want = with_rv(before, rv(o));
                want["status"]["state"] = json!(state);
                want["status"]["cgroupPath"] = json!(cgroup);
                applied_as(o, before, &want, *pre)
            }
            None => Err("gone".into()),
        },
        Req::Delete { path, before, pre } => match now(path) {
            Some(o) if o == before => Ok(false),
            Some(o) => Err(format!(
                "{}, neither {} nor deleted",
                brief(o),
                brief(before)
            )),
            None if pre.is_some_and(|p| p != rv(before)) => {
                Err("deleted despite a stale precondition".into())
            }
            None if is_stack(path) => Err("deleted without cascade".into()),
            None => Ok(true),
        },
        Req::Cascade {
            path,
            before,
            children,
            pre,
        } => {
            let all: Vec<(&String, &Value)> = std::iter::once((path, before))
                .chain(children.iter().map(|(p, o)| (p, o)))
                .collect();
            if all.iter().all(|(p, o)| now(p) == Some(*o)) {
                Ok(false)
            } else if all.iter().all(|(p, _)| now(p).is_none()) {
                if pre.is_some_and(|p| p != rv(before)) {
                    Err("deleted despite a stale precondition".into())
                } else {
                    Ok(true)
                }
            } else {
                Err(format!(
                    "a partial cascade: {:?}",
                    all.iter()
                        .map(|(p, _)| (p, now(p).is_some()))
                        .collect::<Vec<_>>()
                ))
            }
        }
    }
}

/// An in-flight write found applied (`o`, changed from `before`): it must
/// be exactly `want`, and never if its precondition was stale.
fn applied_as(o: &Value, before: &Value, want: &Value, pre: Option<u64>) -> Result<bool, String> {
    if pre.is_some_and(|p| p != rv(before)) {
        Err(format!(
            "applied despite a stale precondition: {}",
            brief(o)
        ))
    } else if o == want {
        Ok(true)
    } else {
        Err(format!(
            "{}, neither {} nor {}",
            brief(o),
            brief(before),
            brief(want)
        ))
    }
}
