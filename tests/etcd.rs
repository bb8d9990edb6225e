//! modelhub on real etcd clusters (`--store etcd`): several replicas on
//! one prefix, member failures, outcome-unknown writes, start-up refusals,
//! compaction and bookmarks, etcd's limits, backup and restore.
//!
//! Every test starts its own cluster on 127.0.0.1 (`common::etcd`) and is
//! skipped, with a printed reason, when there is no etcd binary. The tests
//! take turns (`serial`). Run as `cargo test --features etcd --test etcd`.
#![cfg(feature = "etcd")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::etcd::Cluster;

/// One scenario at a time, whatever the test harness's threads: each
/// starts its own cluster and loads the machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
use common::*;
use serde_json::{Value, json};

const STACK: &str = "/realms/r/spaces/s/stacks/t";

/// Starts an `n`-member cluster, or says why the test is skipped.
fn cluster(test: &str, n: usize, flags: &[&str]) -> Option<Cluster> {
    let c = Cluster::start_with(n, flags);
    if c.is_none() {
        eprintln!("skipping {test}: no etcd binary");
    }
    c
}

/// The `serve` arguments of a replica on `prefix` of `cluster`.
fn etcd_args(cluster: &Cluster, prefix: &str) -> Vec<String> {
    [
        "--store",
        "etcd",
        "--etcd-endpoints",
        &cluster.endpoints(),
        "--etcd-prefix",
        prefix,
    ]
    .map(String::from)
    .to_vec()
}

/// A replica serving `prefix` of `cluster`, with extra `serve` flags.
fn replica(cluster: &Cluster, prefix: &str, extra: &[&str]) -> Server {
    let mut args = etcd_args(cluster, prefix);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_args(&args)
}

/// [`replica`], or why it did not start.
fn try_replica(cluster: &Cluster, prefix: &str, extra: &[&str]) -> Result<Server, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        replica(cluster, prefix, extra)
    }))
    .map_err(|e| {
        let log = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        // The server's own last words, not its debug log.
        log.lines()
            .filter(|l| l.starts_with("modelhub:"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// A path as the tests compare them: `Kind:realm/space/.../name`.
fn path_of(obj: &Value) -> String {
    let kind = obj["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("no kind: {obj}"));
    let depth = match kind {
        "Realm" => 0,
        "Space" => 1,
        "Stack" => 2,
        "Cell" => 3,
        "Container" => 4,
        other => panic!("unexpected kind {other}: {obj}"),
    };
    let mut parts: Vec<&str> = ["realmId", "spaceId", "stackId", "cellId"][..depth]
        .iter()
        .map(|k| {
            obj["spec"][k]
                .as_str()
                .unwrap_or_else(|| panic!("no spec.{k}: {obj}"))
        })
        .collect();
    parts.push(obj["metadata"]["name"].as_str().expect("a name"));
    format!("{kind}:{}", parts.join("/"))
}

/// Milliseconds, for messages.
fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs `modelhub ARGS` (killed after `limit`, which fails the test).
fn modelhub(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(args)
        .env("MODELHUB_SPARE_SPACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelhub");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "modelhub {args:?} still ran after {limit:?}; stderr: {}",
                text(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` every 100 ms until it answers `Some` or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A watch stream read by a thread of its own, one event at a time.
struct Watch {
    rx: Receiver<Value>,
}

impl Watch {
    /// Opens `url` (a watch URL); panics unless it answers 200.
    fn open(url: &str) -> Watch {
        match Watch::try_open(url) {
            Ok(w) => w,
            Err((st, body)) => panic!("watch {url}: {st} {body}"),
        }
    }

    /// Opens `url`; a refusal as its status and problem body.
    fn try_open(url: &str) -> Result<Watch, Reply> {
        let http = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap();
        let resp = http.get(url).send().unwrap();
        let st = resp.status().as_u16();
        if st != 200 {
            let body = resp.text().unwrap_or_default();
            return Err((st, serde_json::from_str(&body).unwrap_or(Value::Null)));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let event: Value = serde_json::from_str(&line).expect("an event is JSON");
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(Watch { rx })
    }

    /// The next event, or `None` if none comes within `wait` (or the
    /// stream ended).
    fn next_within(&self, wait: Duration) -> Option<Value> {
        self.rx.recv_timeout(wait).ok()
    }

    /// Every event up to the first non-BOOKMARK one at or above `rv`
    /// (which is included); panics after `limit`.
    fn until(&self, rv: u64, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = self.next_within(left) else {
                panic!(
                    "no event at or above {rv} within {limit:?}; last events: {:?}",
                    out.iter().rev().take(5).collect::<Vec<_>>()
                );
            };
            let done = e["type"] != "BOOKMARK" && event_rv(&e) >= rv;
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

/// A watch URL of `s` from `rv`, bounded to 5 minutes.
fn watch_url(s: &Server, rv: u64) -> String {
    s.api(&format!("/watch?resourceVersion={rv}&timeoutSeconds=300"))
}

/// One change as the tests compare them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    rv: u64,
    ty: String,
    path: String,
}

impl Ev {
    fn new(rv: u64, ty: &str, path: impl Into<String>) -> Ev {
        Ev {
            rv,
            ty: ty.to_string(),
            path: path.into(),
        }
    }

    /// The change an acknowledged single-object write made (`body` is the
    /// object it answered).
    fn acked(ty: &str, body: &Value) -> Ev {
        Ev::new(rv(body), ty, path_of(body))
    }
}

/// The changes one acknowledged write made.
#[derive(Clone, Debug)]
enum Expect {
    One(Ev),
    /// A cascade: `paths.len()` DELETED changes with consecutive revisions
    /// ending at `last` (the root's, which is deleted last).
    Cascade {
        last: u64,
        root: String,
        paths: BTreeSet<String>,
    },
}

/// The object changes among `events` (ERROR fails), checking that
/// BOOKMARKs never go back behind an event.
fn changes(events: &[Value]) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut position = 0;
    for e in events {
        let ty = e["type"].as_str().unwrap_or_else(|| panic!("no type: {e}"));
        match ty {
            "BOOKMARK" => {
                let b = event_rv(e);
                assert!(b >= position, "a BOOKMARK at {b} after position {position}");
                position = b;
            }
            "ADDED" | "MODIFIED" | "DELETED" => {
                let ev = Ev::new(event_rv(e), ty, path_of(&e["object"]));
                assert!(
                    ev.rv > position,
                    "{ev:?} is not after the position {position}"
                );
                position = ev.rv;
                out.push(ev);
            }
            _ => panic!("unexpected event {e}"),
        }
    }
    out
}

/// Asserts that `got` (one watcher's changes) is exactly the changes of
/// the acknowledged writes `expected`: strictly increasing revisions,
/// nothing missing, nothing more, each with its type and path.
#[track_caller]
fn assert_exact(got: &[Ev], expected: &[Expect], who: &str) {
    for w in got.windows(2) {
        assert!(w[0].rv < w[1].rv, "{who}: {:?} then {:?}", w[0], w[1]);
    }
    let mut one: BTreeMap<u64, &Ev> = BTreeMap::new();
    let mut cascade: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, e) in expected.iter().enumerate() {
        match e {
            Expect::One(ev) => assert!(one.insert(ev.rv, ev).is_none(), "{ev:?} acked twice"),
            Expect::Cascade { last, paths, .. } => {
                for rv in last + 1 - paths.len() as u64..=*last {
                    assert!(cascade.insert(rv, i).is_none(), "{rv} acked twice");
                }
            }
        }
    }
    let mut seen: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for ev in got {
        if let Some(want) = one.remove(&ev.rv) {
            assert_eq!(ev, want, "{who}: the change at {}", ev.rv);
        } else if let Some(i) = cascade.remove(&ev.rv) {
            let Expect::Cascade { last, root, paths } = &expected[i] else {
                unreachable!()
            };
            assert_eq!(ev.ty, "DELETED", "{who}: {ev:?} of a cascade");
            assert!(paths.contains(&ev.path), "{who}: {ev:?} not in {paths:?}");
            assert!(
                seen.entry(i).or_default().insert(ev.path.clone()),
                "{who}: {ev:?} deleted twice"
            );
            if ev.rv == *last {
                assert_eq!(&ev.path, root, "{who}: the cascade's root goes last");
            }
        } else {
            panic!("{who}: {ev:?} matches no acknowledged write");
        }
    }
    assert!(
        one.is_empty() && cascade.is_empty(),
        "{who}: acknowledged changes never delivered: {:?} and cascade revisions {:?}",
        one.values().collect::<Vec<_>>(),
        cascade.keys().collect::<Vec<_>>()
    );
}

/// The largest revision among `expected`.
fn last_rv(expected: &[Expect]) -> u64 {
    expected
        .iter()
        .map(|e| match e {
            Expect::One(ev) => ev.rv,
            Expect::Cascade { last, .. } => *last,
        })
        .max()
        .unwrap_or(0)
}

/// POSTs a YAML stream to `/apply`.
fn apply_yaml(c: &Client, s: &Server, yaml: &str) -> Reply {
    c.post_yaml(&s.api("/apply"), yaml)
}

/// A merge patch with an `If-Match` precondition.
fn patch_if_match(c: &Client, url: &str, rv: u64, body: &Value) -> Reply {
    c.send(
        c.http
            .patch(url)
            .header("content-type", "application/merge-patch+json")
            .header("if-match", format!("\"{rv}\""))
            .body(body.to_string()),
    )
}

/// Asserts that `path` answers 200 through `y` (the replica that did not
/// take the write) with revision `want`: read-your-writes across replicas.
#[track_caller]
fn assert_read_back(c: &Client, y: &Server, path: &str, want: u64) {
    let (st, doc) = c.get(&y.api(path));
    assert_eq!(st, 200, "GET {path} on the other replica: {doc}");
    assert_eq!(rv(&doc), want, "GET {path} on the other replica");
}

/// One writer of `two_replicas_agree`: through `x`, reading back through
/// `y`; cells with containers, status writes, merge patches, applies and
/// cascade deletes. Answers every acknowledged write's changes.
fn mixed_writer(t: usize, x: &Server, y: &Server, rounds: usize) -> Vec<Expect> {
    let c = Client::default();
    let mut out = Vec::new();
    for i in 0..rounds {
        let cell = format!("c{t}-{i}");
        let cell_path = format!("{STACK}/cells/{cell}");
        // A cell, read back at once through the other replica.
        let (st, b) = c.post_json(
            &x.api(&format!("{STACK}/cells")),
            &json!({"metadata": {"name": cell}}),
        );
        assert_eq!(st, 201, "{b}");
        out.push(Expect::One(Ev::acked("ADDED", &b)));
        assert_read_back(&c, y, &cell_path, rv(&b));
        // A container in it.
        let (st, b) = c.post_json(
            &x.api(&format!("{cell_path}/containers")),
            &json!({"metadata": {"name": "k"}, "spec": {"image": "busybox"}}),
        );
        assert_eq!(st, 201, "{b}");
        out.push(Expect::One(Ev::acked("ADDED", &b)));
        assert_read_back(&c, y, &format!("{cell_path}/containers/k"), rv(&b));
        // A status write.
        let (st, b) = c.put_json(
            &x.api(&format!("{cell_path}/status")),
            &json!({"status": {"state": "Ready"}}),
        );
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["status"]["state"], "Ready", "{b}");
        out.push(Expect::One(Ev::acked("MODIFIED", &b)));
        assert_read_back(&c, y, &cell_path, rv(&b));
        // A merge patch.
        let (st, b) = c.patch(
            &x.api(&cell_path),
            &json!({"metadata": {"labels": {"step": i.to_string()}}}),
        );
        assert_eq!(st, 200, "{b}");
        out.push(Expect::One(Ev::acked("MODIFIED", &b)));
        assert_read_back(&c, y, &cell_path, rv(&b));
        if i % 2 == 1 {
            // Delete the container again.
            let (st, b) = c.delete(&x.api(&format!("{cell_path}/containers/k")));
            assert_eq!(st, 200, "{b}");
            out.push(Expect::One(Ev::acked("DELETED", &b)));
            assert_eq!(
                c.get(&y.api(&format!("{cell_path}/containers/k"))).0,
                404,
                "deleted through one replica, gone on the other"
            );
        }
        if i % 3 == 0 {
            // An apply: a new space, stack and cell, and this writer's
            // cell configured: four consecutive revisions.
            let sp = format!("sp{t}-{i}");
            let yaml = format!(
                "apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: {sp}\nspec:\n  realmId: r\n\
                 ---\nkind: Stack\nmetadata:\n  name: st\nspec:\n  realmId: r\n  spaceId: {sp}\n\
                 ---\nkind: Cell\nmetadata:\n  name: ce\nspec:\n  realmId: r\n  spaceId: {sp}\n  \
                 stackId: st\n\
                 ---\nkind: Cell\nmetadata:\n  name: {cell}\n  labels:\n    applied: \"{t}-{i}\"\n\
                 spec:\n  realmId: r\n  spaceId: s\n  stackId: t\n"
            );
            let (st, b) = apply_yaml(&c, x, &yaml);
            assert_eq!(st, 200, "{b}");
            let items = b["items"].as_array().expect("apply items");
            let outcomes: Vec<&str> = items
                .iter()
                .map(|i| i["outcome"].as_str().unwrap())
                .collect();
            assert_eq!(outcomes, ["created", "created", "created", "configured"]);
            let revs: Vec<u64> = items
                .iter()
                .map(|i| i["resourceVersion"].as_str().unwrap().parse().unwrap())
                .collect();
            assert_eq!(
                revs,
                (revs[0]..revs[0] + 4).collect::<Vec<_>>(),
                "a 4-document apply takes 4 consecutive revisions"
            );
            for (item, rv) in items.iter().zip(&revs) {
                let path = format!(
                    "{}:{}",
                    item["kind"].as_str().unwrap(),
                    item["path"].as_str().unwrap()
                );
                let ty = if item["outcome"] == "created" {
                    "ADDED"
                } else {
                    "MODIFIED"
                };
                out.push(Expect::One(Ev::new(*rv, ty, path)));
            }
            assert_read_back(&c, y, &format!("/realms/r/spaces/{sp}"), revs[0]);
            assert_read_back(&c, y, &cell_path, revs[3]);
        }
        if i % 3 == 2 {
            // A cascade delete of the space applied two rounds ago.
            let sp = format!("sp{t}-{}", i - 2);
            let (st, b) = c.delete(&x.api(&format!("/realms/r/spaces/{sp}?cascade=true")));
            assert_eq!(st, 200, "{b}");
            let root = format!("Space:r/{sp}");
            assert_eq!(path_of(&b), root);
            out.push(Expect::Cascade {
                last: rv(&b),
                root: root.clone(),
                paths: [
                    root,
                    format!("Stack:r/{sp}/st"),
                    format!("Cell:r/{sp}/st/ce"),
                ]
                .into(),
            });
            assert_eq!(c.get(&y.api(&format!("/realms/r/spaces/{sp}"))).0, 404);
        }
    }
    out
}

/// Two replicas on one prefix of a 3-member cluster, written through
/// both at once: their watchers agree with each other and with every
/// acknowledged write; reads, pages, preconditions, merge patches and
/// tokens work across replicas.
#[test]
fn two_replicas_agree() {
    let _serial = serial();
    let Some(cluster) = cluster("two_replicas_agree", 3, &[]) else {
        return;
    };
    let a = replica(&cluster, "/two", &[]);
    let b = replica(&cluster, "/two", &[]);
    let c = Client::default();
    hierarchy(&c, &a, "r", "s", "t");
    assert_eq!(c.get(&b.api(STACK)).0, 200, "created on A, read on B");
    let from = revision(&c, &a);
    assert_eq!(from % 1_000_000, 999_999, "a list's position: {from}");
    let wa = Watch::open(&watch_url(&a, from));
    let wb = Watch::open(&watch_url(&b, from));
    // And one without a revision: a snapshot, a BOOKMARK, then live.
    let wn = Watch::open(&b.api("/watch?timeoutSeconds=300"));

    // Four writers, two through each replica.
    let mut expected: Vec<Expect> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (x, y) = if t % 2 == 0 { (&a, &b) } else { (&b, &a) };
                scope.spawn(move || mixed_writer(t, x, y, 6))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    // Concurrent If-Match writes to one object through A and B: exactly
    // one wins each round.
    let race = format!("{STACK}/cells/race");
    let (st, created) = c.post_json(
        &a.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "race"}}),
    );
    assert_eq!(st, 201, "{created}");
    expected.push(Expect::One(Ev::acked("ADDED", &created)));
    for round in 0..5 {
        let (st, doc) = c.get(&a.api(&race));
        assert_eq!(st, 200);
        let at = rv(&doc);
        let barrier = Barrier::new(2);
        let replies: Vec<Reply> = std::thread::scope(|scope| {
            let handles: Vec<_> = [(&a, "a"), (&b, "b")]
                .into_iter()
                .map(|(s, who)| {
                    let (barrier, race) = (&barrier, &race);
                    scope.spawn(move || {
                        let c = Client::default();
                        barrier.wait();
                        patch_if_match(
                            &c,
                            &s.api(race),
                            at,
                            &json!({"metadata": {"labels": {"who": format!("{who}{round}")}}}),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut statuses: Vec<u16> = replies.iter().map(|r| r.0).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {replies:?}");
        for r in &replies {
            if r.0 == 200 {
                expected.push(Expect::One(Ev::acked("MODIFIED", &r.1)));
            } else {
                assert_eq!(r.1["reason"], "Conflict", "{}", r.1);
            }
        }
    }

    // 100 merge patches through each replica at once, without
    // preconditions, each raising its replica's own label by one: none
    // is lost (a lost update would also show as a label going back in
    // the watchers' events, checked below).
    let counter = format!("{STACK}/cells/counter");
    let (st, counter_doc) = c.post_json(
        &a.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "counter"}}),
    );
    assert_eq!(st, 201, "{counter_doc}");
    expected.push(Expect::One(Ev::acked("ADDED", &counter_doc)));
    let increments: Vec<Expect> = std::thread::scope(|scope| {
        let handles: Vec<_> = [(&a, "a"), (&b, "b")]
            .into_iter()
            .map(|(s, label)| {
                let counter = &counter;
                scope.spawn(move || {
                    let c = Client::default();
                    (1..=100)
                        .map(|n| {
                            let (st, body) = c.patch(
                                &s.api(counter),
                                &json!({"metadata": {"labels": {label: n.to_string()}}}),
                            );
                            assert_eq!(st, 200, "increment {label}={n}: {body}");
                            Expect::One(Ev::acked("MODIFIED", &body))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(increments.len(), 200);
    expected.extend(increments);
    let (_, doc) = c.get(&b.api(&counter));
    let labels = &doc["metadata"]["labels"];
    let total: u64 = ["a", "b"]
        .iter()
        .map(|k| labels[k].as_str().unwrap_or("0").parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 200, "no increment lost: {labels}");

    // A paged list started on A continues on B (and back), on its
    // snapshot: a cell created between pages is not in it.
    let (st, full) = c.get(&a.api("/cells"));
    assert_eq!(st, 200);
    let want: Vec<String> = full["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(path_of)
        .collect();
    let (st, page) = c.get(&a.api("/cells?limit=2"));
    assert_eq!(st, 200, "{page}");
    let snapshot = rv(&page);
    let (st, late) = c.post_json(
        &b.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "late"}}),
    );
    assert_eq!(st, 201, "{late}");
    expected.push(Expect::One(Ev::acked("ADDED", &late)));
    let mut got: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(path_of)
        .collect();
    let mut token = page["metadata"]["continue"].as_str().map(String::from);
    let mut pages = 1;
    while let Some(t) = token {
        let s = if pages % 2 == 1 { &b } else { &a };
        let (st, page) = c.get_query(&s.api("/cells"), &[("limit", "2"), ("continue", &t)]);
        assert_eq!(st, 200, "page {pages}: {page}");
        assert_eq!(rv(&page), snapshot, "every page is of the first's snapshot");
        got.extend(page["items"].as_array().unwrap().iter().map(path_of));
        token = page["metadata"]["continue"].as_str().map(String::from);
        pages += 1;
        assert!(pages < 100, "the pages never end");
    }
    assert!(pages > 3, "several pages ({pages})");
    assert_eq!(got, want, "the paged list, across replicas");

    // Both watchers: the same changes, exactly the acknowledged ones.
    let end = last_rv(&expected);
    let ea = changes(&wa.until(end, Duration::from_secs(30)));
    let eb = changes(&wb.until(end, Duration::from_secs(30)));
    assert_eq!(ea, eb, "the watchers on A and B agree");
    assert_exact(&ea, &expected, "watcher on A");
    let events = wn.until(end, Duration::from_secs(30));
    let bookmark = events
        .iter()
        .position(|e| e["type"] == "BOOKMARK")
        .expect("a BOOKMARK after the snapshot");
    let snapshot: BTreeSet<String> = events[..bookmark]
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "ADDED", "{e}");
            path_of(&e["object"])
        })
        .collect();
    assert!(
        snapshot.is_superset(
            &["Realm:r", "Space:r/s", "Stack:r/s/t"]
                .map(String::from)
                .into()
        ),
        "{snapshot:?}"
    );
    let at = event_rv(&events[bookmark]);
    assert!(at >= from, "the snapshot's BOOKMARK {at} is behind {from}");
    let live: Vec<Ev> = ea.iter().filter(|e| e.rv > at).cloned().collect();
    assert_eq!(
        changes(&events[bookmark..]),
        live,
        "the watcher without a revision: every change after its snapshot"
    );
    let counted = ea.iter().filter(|e| e.path == "Cell:r/s/t/counter").count();
    assert_eq!(counted, 201, "the counter's create and its 200 increments");
    drop((wa, wb, wn));
    // Resumed on B from the counter's creation: its labels never go back
    // (an update lost and overwritten would).
    let w = Watch::open(&watch_url(&b, rv(&counter_doc)));
    let mut last = (0u64, 0u64);
    for e in w.until(end, Duration::from_secs(30)) {
        if e["type"] == "BOOKMARK" || path_of(&e["object"]) != "Cell:r/s/t/counter" {
            continue;
        }
        let labels = &e["object"]["metadata"]["labels"];
        let get = |k: &str| labels[k].as_str().unwrap_or("0").parse::<u64>().unwrap();
        let now = (get("a"), get("b"));
        assert!(
            now.0 >= last.0 && now.1 >= last.1,
            "a label went back from {last:?} to {now:?}: an update was lost"
        );
        last = now;
    }
    assert_eq!(last, (100, 100));

    // Read-your-writes across replicas, served from each replica's copy
    // of the objects: a write acknowledged by one is in the other's next
    // GET and list.
    let cells = format!("{STACK}/cells");
    let served = |s: &Server, source: &str| -> u64 {
        let line = format!("modelhub_etcd_cache_reads_total{{source=\"{source}\"}} ");
        metrics_text(&c, s)
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()).map(String::from))
            .unwrap_or_else(|| panic!("{line} in /metrics"))
            .parse()
            .unwrap()
    };
    let before = [served(&a, "cache"), served(&b, "cache")];
    let missed = [served(&a, "etcd"), served(&b, "etcd")];
    for n in 0..30 {
        let (w, r) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let name = format!("ryw{n}");
        let (st, made) = c.post_json(&w.api(&cells), &json!({"metadata": {"name": name}}));
        assert_eq!(st, 201, "{made}");
        let (st, got) = c.get(&r.api(&format!("{cells}/{name}")));
        assert_eq!(
            st, 200,
            "created through one replica, read on the other: {got}"
        );
        assert_eq!(rv(&got), rv(&made));
        let (st, gone) = c.delete(&r.api(&format!("{cells}/{name}")));
        assert_eq!(st, 200, "{gone}");
        let (st, list) = c.get(&w.api(&cells));
        assert_eq!(st, 200);
        assert!(
            !item_names(&list).contains(&name),
            "deleted through one replica, still listed by the other"
        );
        assert!(rv(&list) >= rv(&gone), "the list is older than the delete");
    }
    for ((s, before), missed) in [&a, &b].into_iter().zip(before).zip(missed) {
        // Each replica answered 15 GETs and 15 lists in the loop (lists
        // also read through snapshots: at least 30 reads).
        let (cache, etcd) = (served(s, "cache") - before, served(s, "etcd") - missed);
        eprintln!("reads of the loop served from the copy: {cache}, from etcd: {etcd}");
        assert!(cache >= 30, "the replica's copy serves reads ({cache})");
        assert!(etcd <= 3, "reads of the loop that went to etcd: {etcd}");
    }

    // Tokens live in etcd: created on A, accepted by B within 3 s;
    // revoked on A, refused by B within 3 s.
    let (admin, _) = first_admin(&a);
    let anon = Client::default();
    let created_at = Instant::now();
    let writer = Client::with_token(&create_token(
        &admin,
        &a,
        json!({"name": "w", "role": "writer"}),
    ));
    assert_eq!(writer.get(&a.api("/realms")).0, 200);
    let took = poll(Duration::from_secs(3), || {
        (writer.get(&b.api("/realms")).0 == 200).then(|| created_at.elapsed())
    })
    .expect("a token created on A is accepted by B within 3 s");
    eprintln!("token accepted by B after {} ms", ms(took));
    poll(Duration::from_secs(3), || {
        (anon.get(&b.api("/realms")).0 == 401).then_some(())
    })
    .expect("once a token exists, B refuses anonymous requests within 3 s");
    let (st, body) = admin.delete(&a.api("/tokens/w"));
    assert_eq!(st, 200, "{body}");
    let revoked_at = Instant::now();
    assert_eq!(
        writer.get(&a.api("/realms")).0,
        401,
        "revoked on A: at once"
    );
    let took = poll(Duration::from_secs(3), || {
        (writer.get(&b.api("/realms")).0 == 401).then(|| revoked_at.elapsed())
    })
    .expect("a token revoked on A is refused by B within 3 s");
    eprintln!("revoked token refused by B after {} ms", ms(took));
    assert_eq!(admin.get(&b.api("/realms")).0, 200);
}

/// One write attempt of a load generator.
#[derive(Debug)]
struct Attempt {
    /// The realm it creates.
    name: String,
    /// Its answer (`None`: the connection failed).
    status: Option<u16>,
    /// The acknowledged revision.
    rv: Option<u64>,
    /// When it was answered.
    at: Instant,
}

/// Creates realms `{prefix}{i}` through `s`, one after the other, until
/// `stop`; every attempt with its answer.
fn realm_load(s: &Server, prefix: &str, stop: &AtomicBool) -> Vec<Attempt> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let c = Client { http };
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("{prefix}{i}");
        let r = c.try_send(
            c.http
                .post(s.api("/realms"))
                .json(&json!({"metadata": {"name": name}})),
        );
        let (status, rv) = match r {
            Ok((st, body)) => {
                assert!(
                    matches!(st, 201 | 503 | 504),
                    "create {name} answered {st}: {body}"
                );
                if st != 201 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                (Some(st), (st == 201).then(|| common::rv(&body)))
            }
            Err(_) => (None, None),
        };
        out.push(Attempt {
            name,
            status,
            rv,
            at: Instant::now(),
        });
        i += 1;
    }
    out
}

/// Checks a load's outcome after the fact: every acknowledged create is
/// there with its revision, nothing refused with 503 is; the watcher's
/// changes are exactly the creates that happened, each once, in order.
fn check_load(c: &Client, s: &Server, attempts: &[Attempt], events: &[Ev]) {
    let mut applied = BTreeMap::new();
    for a in attempts {
        let (st, doc) = c.get(&s.api(&format!("/realms/{}", a.name)));
        match a.status {
            Some(201) => {
                assert_eq!(st, 200, "acknowledged {} is missing: {doc}", a.name);
                assert_eq!(rv(&doc), a.rv.unwrap(), "{}", a.name);
            }
            Some(503) => assert_eq!(st, 404, "{} answered 503 but was written", a.name),
            _ => assert!(st == 200 || st == 404, "{}: {st} {doc}", a.name),
        }
        if st == 200 {
            applied.insert(rv(&doc), format!("Realm:{}", a.name));
        }
    }
    for w in events.windows(2) {
        assert!(w[0].rv < w[1].rv, "a duplicate or out of order: {w:?}");
    }
    let got: BTreeMap<u64, String> = events
        .iter()
        .map(|e| {
            assert_eq!(e.ty, "ADDED", "{e:?}");
            (e.rv, e.path.clone())
        })
        .collect();
    assert_eq!(got, applied, "the watcher saw exactly the creates, no gap");
}

/// Under a steady load through one replica: a follower killed, then the
/// leader; every acknowledged write is kept, the watcher sees no gap and
/// no duplicate. Then each member in turn is stopped (SIGSTOP): the
/// replica's watcher still gets new writes within 15 s.
#[test]
fn member_failures() {
    let _serial = serial();
    let Some(cluster) = cluster("member_failures", 3, &[]) else {
        return;
    };
    let a = replica(&cluster, "/mf", &["--etcd-timeout", "2s"]);
    let c = Client::default();
    let from = revision(&c, &a);
    let w = Watch::open(&watch_url(&a, from));
    let stop = AtomicBool::new(false);
    // When each phase began: (what, when).
    let mut phases: Vec<(&str, Instant)> = Vec::new();
    let attempts = std::thread::scope(|scope| {
        let load = scope.spawn(|| realm_load(&a, "m", &stop));
        std::thread::sleep(Duration::from_millis(1500));
        let follower = (cluster.leader() + 1) % 3;
        cluster.kill(follower);
        phases.push(("follower killed", Instant::now()));
        std::thread::sleep(Duration::from_secs(2));
        cluster.restart(follower);
        phases.push(("follower restarted", Instant::now()));
        cluster.wait_healthy();
        phases.push(("3 members healthy", Instant::now()));
        std::thread::sleep(Duration::from_secs(1));
        let leader = cluster.leader();
        cluster.kill(leader);
        phases.push(("leader killed", Instant::now()));
        std::thread::sleep(Duration::from_secs(4));
        cluster.restart(leader);
        phases.push(("leader restarted", Instant::now()));
        cluster.wait_healthy();
        phases.push(("3 members healthy again", Instant::now()));
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    let killed_leader_at = phases[3].1;
    let start = attempts[0].at;
    let acked: Vec<&Attempt> = attempts.iter().filter(|a| a.status == Some(201)).collect();
    let pause = attempts
        .windows(2)
        .filter(|w| w[0].status == Some(201) || w[1].status == Some(201))
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} attempts, {} acknowledged, longest wait between answers {} ms",
        attempts.len(),
        acked.len(),
        ms(pause)
    );
    // Per phase: attempts, and the answers other than 201.
    let mut bounds: Vec<(&str, Instant)> = vec![("steady", start)];
    bounds.extend(phases.iter().copied());
    for (k, (what, from)) in bounds.iter().enumerate() {
        let to = bounds.get(k + 1).map(|b| b.1);
        let here: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| a.at >= *from && to.is_none_or(|t| a.at < t))
            .collect();
        let mut other: BTreeMap<String, usize> = BTreeMap::new();
        for a in here.iter().filter(|a| a.status != Some(201)) {
            *other.entry(format!("{:?}", a.status)).or_default() += 1;
        }
        eprintln!(
            "  from {what} (+{} ms): {} attempts, not acknowledged {other:?}",
            ms(*from - start),
            here.len()
        );
    }
    assert!(
        acked.iter().any(|a| a.at > killed_leader_at),
        "writes resumed after the leader was killed"
    );
    assert!(acked.len() > 50, "a steady load: {} acks", acked.len());
    let end = acked.iter().filter_map(|a| a.rv).max().unwrap();
    let mut events = w.until(end, Duration::from_secs(30));
    // A 504 may still show up after the last acknowledged one.
    while let Some(e) = w.next_within(Duration::from_millis(500)) {
        events.push(e);
    }
    check_load(&c, &a, &attempts, &changes(&events));

    // SIGSTOP each member in turn (the feed is attached to one of them):
    // a write acknowledged while it hangs reaches the watcher within 15 s.
    for i in 0..3 {
        cluster.stop(i);
        let stopped = Instant::now();
        let name = format!("stopped{i}");
        let path = format!("/realms/{name}");
        let acked = poll(Duration::from_secs(30), || {
            let (st, body) = c.post_json(&a.api("/realms"), &json!({"metadata": {"name": name}}));
            match st {
                201 => Some(rv(&body)),
                409 => {
                    let (st, doc) = c.get(&a.api(&path));
                    (st == 200).then(|| rv(&doc))
                }
                503 | 504 => None,
                _ => panic!("create {name}: {st} {body}"),
            }
        })
        .unwrap_or_else(|| panic!("no write acknowledged within 30 s with member {i} stopped"));
        let at = Instant::now();
        let seen = w.until(acked, Duration::from_secs(15));
        let last = seen.last().unwrap();
        assert_eq!(
            (event_rv(last), path_of(&last["object"])),
            (acked, format!("Realm:{name}")),
            "member {i} stopped"
        );
        eprintln!(
            "member {i} stopped: write acknowledged after {} ms, on the watcher {} ms later",
            ms(at - stopped),
            ms(at.elapsed())
        );
        cluster.cont(i);
        cluster.wait_healthy();
    }
}

/// A create in flight while the etcd leader is stopped (SIGSTOP), then
/// continued: the answer is 201 (with the object that is stored) or 504,
/// never 409; a 503 would promise that nothing was written.
#[test]
fn outcome_unknown_create() {
    let _serial = serial();
    let Some(cluster) = cluster("outcome_unknown_create", 3, &[]) else {
        return;
    };
    let a = replica(&cluster, "/ou", &["--etcd-timeout", "2s"]);
    let c = Client::default();
    create_realm(&c, &a, "warm");
    let mut answers = Vec::new();
    for round in 0..3 {
        let leader = cluster.leader();
        let name = format!("unknown{round}");
        cluster.stop(leader);
        let (st, body) = std::thread::scope(|scope| {
            let create = scope.spawn(|| {
                c.post_json(
                    &a.api("/realms"),
                    &json!({"metadata": {"name": name, "labels": {"request": format!("q{round}")}}}),
                )
            });
            std::thread::sleep(Duration::from_secs(3));
            cluster.cont(leader);
            create.join().unwrap()
        });
        cluster.wait_healthy();
        assert_ne!(st, 409, "the create's own write answered 409: {body}");
        let (got, doc) = c.get(&a.api(&format!("/realms/{name}")));
        answers.push((st, got));
        match st {
            201 => {
                assert_eq!(got, 200, "answered 201 but absent: {doc}");
                assert_eq!(doc["metadata"]["uid"], body["metadata"]["uid"], "{doc}");
                assert_eq!(rv(&doc), rv(&body));
            }
            504 => {
                assert_eq!(body["reason"], "OutcomeUnknown", "{body}");
                assert!(got == 200 || got == 404, "{got} {doc}");
            }
            503 => assert_eq!(got, 404, "answered 503 (nothing written) but stored: {doc}"),
            _ => panic!("create with the leader stopped: {st} {body}"),
        }
        // The client's retry after a 504: 201 if it was not written, 409
        // if it was (then its label tells it was this request).
        let (again, doc) = c.post_json(
            &a.api("/realms"),
            &json!({"metadata": {"name": name, "labels": {"request": format!("q{round}")}}}),
        );
        match got {
            200 => assert_eq!(again, 409, "{doc}"),
            _ => assert_eq!(again, 201, "{doc}"),
        }
    }
    eprintln!("(answer, GET afterwards) with the leader stopped: {answers:?}");
    // The leader comes back within the time a replica sends an
    // unconfirmed write again (twice --etcd-timeout): settled at least
    // once (the path that answers the true outcome, not only 504).
    assert!(
        answers.iter().any(|(s, _)| *s == 201),
        "no unconfirmed create was settled: {answers:?}"
    );
    assert!(
        answers.iter().all(|(s, _)| *s == 201 || *s == 504),
        "201 or 504 only: {answers:?}"
    );
}

/// `modelhub serve` on `prefix` of `cluster` (with a 2 s etcd timeout),
/// expected to refuse its start: its output.
fn refused_start(cluster: &Cluster, prefix: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub.redb");
    let mut args = vec![
        "serve".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data".into(),
        data.to_string_lossy().into_owned(),
        "--etcd-timeout".into(),
        "2s".into(),
    ];
    args.extend(etcd_args(cluster, prefix));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = modelhub(&args, Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "serve started: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("listening"),
        "it listened: {}",
        text(&out.stdout)
    );
    out
}

/// `/readyz`'s status.
fn readyz(c: &Client, s: &Server) -> u16 {
    c.http
        .get(format!("{}/readyz", s.base))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A start without quorum and one on a newer storage format are refused,
/// naming why; a running replica is not ready while the cluster has no
/// quorum, and ready again once it has. (Failed checks are collected and
/// reported together at the end.)
#[test]
fn startup_refusals() {
    let _serial = serial();
    let Some(cluster) = cluster("startup_refusals", 3, &[]) else {
        return;
    };
    let mut failed: Vec<String> = Vec::new();
    let a = replica(&cluster, "/ready", &["--etcd-timeout", "2s"]);
    let c = Client::default();
    create_realm(&c, &a, "before");
    assert_eq!(readyz(&c, &a), 200);

    // One member gone: quorum holds, a replica starts and writes.
    let leader = cluster.leader();
    let (x, y) = ((leader + 1) % 3, (leader + 2) % 3);
    cluster.kill(x);
    let b = try_replica(&cluster, "/ready", &["--etcd-timeout", "2s"]);
    match &b {
        Ok(b) => {
            let (st, body) = c.post_json(
                &b.api("/realms"),
                &json!({"metadata": {"name": "one-down"}}),
            );
            if st != 201 {
                failed.push(format!(
                    "with one member of three down, a create through a new replica: {st} {body}"
                ));
            }
        }
        Err(e) => failed.push(format!(
            "a replica did not start with one member of three down (quorum held): {e}"
        )),
    }

    // Two of three members gone: no quorum.
    cluster.kill(y);
    let lost = Instant::now();
    poll(Duration::from_secs(20), || {
        (readyz(&c, &a) == 503).then_some(())
    })
    .expect("/readyz turns 503 without quorum within 20 s");
    eprintln!(
        "/readyz 503 {} ms after quorum was lost",
        ms(lost.elapsed())
    );
    std::thread::sleep(Duration::from_secs(3));
    let (st, body) = c.post_json(
        &a.api("/realms"),
        &json!({"metadata": {"name": "noquorum"}}),
    );
    eprintln!("a create 3 s after quorum was lost: {st} {body}");
    if st != 503 {
        failed.push(format!(
            "a create 3 s after quorum was lost answered {st} {}, not 503 Unavailable",
            body["reason"]
        ));
    }
    assert!(
        st == 503 || st == 504,
        "a create without quorum: {st} {body}"
    );
    let (st, body) = c.get(&a.api("/realms/before"));
    eprintln!("a GET without quorum: {st} {}", body["reason"]);
    let out = refused_start(&cluster, "/other");
    let err = text(&out.stderr);
    eprintln!("start without quorum: {}", err.trim());
    if !err.to_lowercase().contains("quorum") {
        failed.push(format!(
            "the refused start without quorum does not name quorum: {err}"
        ));
    }

    // Quorum back: ready again.
    cluster.restart(x);
    cluster.restart(y);
    cluster.wait_healthy();
    let back = Instant::now();
    poll(Duration::from_secs(20), || {
        (readyz(&c, &a) == 200).then_some(())
    })
    .expect("/readyz is 200 again within 20 s of quorum coming back");
    eprintln!(
        "/readyz 200 {} ms after quorum came back",
        ms(back.elapsed())
    );
    assert_eq!(
        c.get(&a.api("/realms/noquorum")).0,
        404,
        "a create refused without quorum was written"
    );
    create_realm(&c, &a, "after");
    if let Ok(b) = &b {
        assert_eq!(c.get(&b.api("/realms/after")).0, 200);
    }

    // A storage format newer than this binary's.
    let out = cluster.etcdctl(&["put", "/newer/m/format", "99"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = refused_start(&cluster, "/newer");
    let err = text(&out.stderr);
    eprintln!("start on format 99: {}", err.trim());
    assert!(
        err.contains("format") && err.contains("99"),
        "the refusal names the format it found: {err}"
    );
    // Format 1 (before writes put P/m/written, with record-format-1
    // objects) is upgraded at start; its records are read as they are.
    let out = cluster.etcdctl(&["put", "/old/m/format", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let legacy_key = b"/old/o/r/r\0".to_vec();
    raw_put(&cluster, &legacy_key, &format_1_realm());
    let old = replica(&cluster, "/old", &[]);
    let (st, legacy) = c.get(&old.api("/realms/r"));
    assert_eq!(st, 200, "a format-1 record: {legacy}");
    assert_eq!(legacy["metadata"]["labels"]["app"], "web");
    assert_eq!(legacy["spec"]["namespace"], "ns");
    let (st, list) = c.get_query(&old.api("/realms"), &[("labelSelector", "app=web")]);
    assert_eq!((st, item_names(&list)), (200, vec!["r".to_string()]));
    let (st, patched) = c.patch(
        &old.api("/realms/r"),
        &json!({"metadata": {"labels": {"app": "db"}}}),
    );
    assert_eq!(st, 200, "{patched}");
    assert_eq!(
        raw_get(&cluster, &legacy_key)[0],
        2,
        "rewritten in format 2"
    );
    assert_eq!(
        c.get(&old.api("/realms/r")).1["metadata"]["labels"]["app"],
        "db"
    );
    create_realm(&c, &old, "upgraded");
    let out = cluster.etcdctl(&["get", "--print-value-only", "/old/m/format"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "3",
        "the format key after the upgrade"
    );
    let out = cluster.etcdctl(&["get", "--keys-only", "/old/m/written"]);
    assert!(
        text(&out.stdout).contains("/old/m/written"),
        "a write puts P/m/written"
    );
    // The replicas' prefix is untouched: one more starts on it.
    let d = replica(&cluster, "/ready", &[]);
    assert_eq!(c.get(&d.api("/realms/after")).0, 200);
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
}

/// The sample realm's record as record format 1 wrote it
/// (`tests/fixtures/golden/format-1/realm.hex`).
fn format_1_realm() -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden/format-1/realm.hex"
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split('|').next().unwrap_or_default().split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Puts raw bytes at `key` (etcdctl cannot take a key with 0x00 in it).
fn raw_put(cluster: &Cluster, key: &[u8], value: &[u8]) {
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(String::from).collect();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
        client.put(key, value, None).await.unwrap();
    });
}

/// The raw bytes at `key`.
fn raw_get(cluster: &Cluster, key: &[u8]) -> Vec<u8> {
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(String::from).collect();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
        let resp = client.get(key, None).await.unwrap();
        resp.kvs().first().expect("the key").value().to_vec()
    })
}

/// A watch from `rv` through `s`, read for about a second: `Some(body)`
/// if it was refused with 410 or sent an ERROR event with code 410,
/// `None` if it streamed without one.
fn gone(s: &Server, rv: u64) -> Option<Value> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = http
        .get(s.api(&format!("/watch?resourceVersion={rv}&timeoutSeconds=1")))
        .send()
        .unwrap();
    let st = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    if st == 410 {
        let problem: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(problem["reason"], "Gone", "{problem}");
        return Some(problem);
    }
    assert_eq!(st, 200, "{body}");
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).expect("an event is JSON"))
        .find(|e| {
            e["type"] == "ERROR" && (e["object"]["status"] == 410 || e["object"]["code"] == 410)
        })
}

/// etcd's current revision, read from member `i`.
fn etcd_revision(cluster: &Cluster, i: usize) -> u64 {
    cluster.status(i).expect("endpoint status")["header"]["revision"]
        .as_u64()
        .expect("a revision")
}

/// On an idle keyspace, a watcher on each of `replicas` gets BOOKMARKs
/// about every second whose position advances; what fails goes to
/// `failed`.
fn idle_bookmarks(c: &Client, replicas: &[(&Server, &str)], failed: &mut Vec<String>) {
    for (s, name) in replicas {
        let from = revision(c, s);
        let w = match Watch::try_open(&watch_url(s, from)) {
            Ok(w) => w,
            Err((st, body)) => {
                failed.push(format!(
                    "on {name}, a watch from the current {from}: {st} {body}"
                ));
                continue;
            }
        };
        let mut bookmarks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(8);
        while bookmarks.len() < 3 && Instant::now() < deadline {
            let Some(e) = w.next_within(Duration::from_secs(3)) else {
                continue;
            };
            if e["type"] != "BOOKMARK" {
                failed.push(format!("on {name}, idle: {e}"));
                break;
            }
            bookmarks.push(event_rv(&e));
        }
        eprintln!("BOOKMARKs on {name} on an idle keyspace: {bookmarks:?}");
        if bookmarks.len() < 2 || bookmarks.first() >= bookmarks.last() {
            failed.push(format!(
                "BOOKMARKs on {name} do not advance on an idle keyspace: {bookmarks:?}"
            ));
        }
        for w in bookmarks.windows(2) {
            assert!(
                w[0] <= w[1],
                "a BOOKMARK went back on {name}: {bookmarks:?}"
            );
        }
        for rv in &bookmarks {
            assert_eq!(rv % 1_000_000, 999_999, "a BOOKMARK is a position: {rv}");
        }
    }
}

/// Each replica compacts etcd to its last few revisions: a watch resuming
/// below that answers 410 on both replicas; on an idle keyspace a
/// watcher's BOOKMARKs keep advancing, and the replicas write little.
/// (Failed checks after the first 410s are collected and reported
/// together at the end.)
#[test]
fn compaction_and_bookmarks() {
    let _serial = serial();
    let Some(cluster) = cluster("compaction_and_bookmarks", 1, &[]) else {
        return;
    };
    let mut failed: Vec<String> = Vec::new();

    // First alone on the cluster, two replicas with the default history:
    // the heartbeat (one write per interval, by one of them) is all that
    // moves etcd's revision, and their BOOKMARKs advance.
    {
        let flags = ["--bookmark-interval", "1s"];
        let (x, y) = (
            replica(&cluster, "/idle", &flags),
            replica(&cluster, "/idle", &flags),
        );
        let c = Client::default();
        create_realm(&c, &x, "one");
        let r0 = etcd_revision(&cluster, 0);
        idle_bookmarks(&c, &[(&x, "X"), (&y, "Y")], &mut failed);
        let r1 = etcd_revision(&cluster, 0);
        eprintln!("etcd revisions while X and Y were idle: {r0} -> {r1}");
        assert!(r1 > r0, "the heartbeat writes");
    }

    // Then with a history of 5 revisions, compacted every second.
    let flags = [
        "--history-revisions",
        "5",
        "--compaction-interval",
        "1s",
        "--bookmark-interval",
        "1s",
    ];
    let a = replica(&cluster, "/cb", &flags);
    let b = replica(&cluster, "/cb", &flags);
    let c = Client::default();
    let mut first = None;
    for i in 0..25 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (st, body) = c.post_json(
            &s.api("/realms"),
            &json!({"metadata": {"name": format!("r{i}")}}),
        );
        assert_eq!(st, 201, "{body}");
        first.get_or_insert(rv(&body));
    }
    let first = first.unwrap();
    let started = Instant::now();
    let on_a = poll(Duration::from_secs(20), || gone(&a, first))
        .unwrap_or_else(|| panic!("a watch from {first} was never answered 410 on A"));
    eprintln!("410 on A after {} ms: {on_a}", ms(started.elapsed()));
    let on_b = gone(&b, first).unwrap_or_else(|| panic!("A answers 410 from {first}, B does not"));
    eprintln!("410 on B: {on_b}");

    // Idle, the two replicas write about one heartbeat and one compaction
    // mark per interval between them: a few revisions a second.
    let r0 = etcd_revision(&cluster, 0);
    std::thread::sleep(Duration::from_secs(3));
    let r1 = etcd_revision(&cluster, 0);
    eprintln!("etcd revisions in 3 idle seconds: {}", r1 - r0);
    if r1 - r0 > 30 {
        failed.push(format!(
            "two idle replicas (--bookmark-interval 1s --compaction-interval 1s) wrote {} etcd \
             revisions in 3 s ({r0} -> {r1})",
            r1 - r0
        ));
    }
    // A watch from the current position streams (nothing to send yet).
    let now = revision(&c, &b);
    if let Some(g) = gone(&a, now) {
        failed.push(format!("a watch from the current position {now} on A: {g}"));
    }

    // Idle: no writes under the prefix. BOOKMARKs still advance (the
    // heartbeat), on both replicas.
    idle_bookmarks(&c, &[(&a, "A"), (&b, "B")], &mut failed);
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
}

/// A YAML stream of `n` realms named `{prefix}{i}`.
fn realms_yaml(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: {prefix}{i}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A container spec with `n` arguments of 100 bytes each (`tag` makes
/// them differ between writes).
fn big_args(n: usize, tag: &str) -> Value {
    let args: Vec<String> = (0..n)
        .map(|i| format!("{tag}-{i:05}-{}", "x".repeat(90 - tag.len())))
        .collect();
    json!({"image": "busybox", "args": args})
}

/// Asserts a 413 naming `limit` (a substring of its detail).
#[track_caller]
fn assert_too_large(r: &Reply, limit: &str) {
    assert_problem(r, 413, "PayloadTooLarge", None);
    let detail = r.1["detail"].as_str().unwrap();
    assert!(detail.contains(limit), "the 413 names {limit}: {detail}");
}

/// etcd's small limits: an apply needing more operations than
/// `--max-txn-ops`, an object over `--max-request-bytes` and a cascade
/// over `--max-cascade-objects` are 413 with nothing written; a full
/// quota answers 507 to writes while reads work, and writes resume after
/// the operator's compact, defrag and alarm disarm.
#[test]
fn limits() {
    let _serial = serial();
    let Some(cluster) = cluster(
        "limits",
        1,
        &["--max-txn-ops", "16", "--max-request-bytes", "65536"],
    ) else {
        return;
    };
    let a = replica(
        &cluster,
        "/lim",
        &[
            "--etcd-max-txn-ops",
            "16",
            "--etcd-max-request-bytes",
            "64KiB",
            "--max-cascade-objects",
            "5",
        ],
    );
    // One that does not know the cluster's limits: etcd itself refuses.
    let unaware = replica(&cluster, "/lim", &[]);
    let c = Client::default();

    // An apply of 17 documents: 18 compares (each document's absence and
    // the storage format) in one transaction.
    for (s, who) in [(&a, "aware"), (&unaware, "unaware")] {
        let r = apply_yaml(&c, s, &realms_yaml("ap", 17));
        eprintln!("apply of 17 documents ({who}): {} {}", r.0, r.1["detail"]);
        assert_too_large(&r, "max-txn-ops");
        let (st, list) = c.get(&s.api("/realms"));
        assert_eq!((st, item_names(&list).len()), (200, 0), "{list}");
    }
    let (st, b) = apply_yaml(&c, &a, &realms_yaml("ap", 15));
    assert_eq!(st, 200, "15 documents fit in 16 operations: {b}");

    // One object over 64 KiB.
    create_realm(&c, &a, "r");
    hierarchy(&c, &a, "r", "s", "t");
    let (st, b) = c.post_json(
        &a.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "c"}}),
    );
    assert_eq!(st, 201, "{b}");
    let containers = format!("{STACK}/cells/c/containers");
    for (s, who) in [(&a, "aware"), (&unaware, "unaware")] {
        let r = c.post_json(
            &s.api(&containers),
            &json!({"metadata": {"name": "big"}, "spec": big_args(700, who)}),
        );
        eprintln!("a 70 KiB container ({who}): {} {}", r.0, r.1["detail"]);
        assert_too_large(&r, "max-request-bytes");
        assert_eq!(c.get(&s.api(&format!("{containers}/big"))).0, 404);
    }
    let (st, b) = c.post_json(
        &a.api(&containers),
        &json!({"metadata": {"name": "small"}, "spec": big_args(100, "ok")}),
    );
    assert_eq!(st, 201, "a 10 KiB container fits: {b}");
    // The same object grown past the limit by a merge patch.
    let r = c.patch(
        &a.api(&format!("{containers}/small")),
        &json!({"spec": big_args(700, "grown")}),
    );
    assert_too_large(&r, "max-request-bytes");
    let (_, doc) = c.get(&a.api(&format!("{containers}/small")));
    assert_eq!(doc["spec"]["args"].as_array().unwrap().len(), 100);

    // A cascade over 5 objects: realm big, its space, stack and 3 cells.
    hierarchy(&c, &a, "big", "s", "t");
    for cell in ["c1", "c2", "c3"] {
        create_named(&c, &a, "/realms/big/spaces/s/stacks/t/cells", cell);
    }
    let before = revision(&c, &a);
    let r = c.delete(&a.api("/realms/big?cascade=true"));
    assert_too_large(&r, "max-cascade-objects");
    for p in ["/realms/big", "/realms/big/spaces/s/stacks/t/cells/c3"] {
        assert_eq!(c.get(&a.api(p)).0, 200, "{p} was deleted");
    }
    let (_, cells) = c.get(&a.api("/cells?realm=big"));
    assert_eq!(item_names(&cells).len(), 3);
    // Five objects may go.
    let (st, _) = c.delete(&a.api("/realms/big/spaces/s/stacks/t/cells/c3"));
    assert_eq!(st, 200);
    let (st, b) = c.delete(&a.api("/realms/big?cascade=true"));
    assert_eq!(st, 200, "a cascade of 5 objects: {b}");
    assert!(rv(&b) > before);
    assert_eq!(c.get(&a.api("/realms/big/spaces/s")).0, 404);
}

/// etcd's NOSPACE alarm: writes answer 507 while reads work; after the
/// operator's compact, defrag and alarm disarm, writes succeed again.
#[test]
fn quota_full_and_recovery() {
    let _serial = serial();
    let Some(cluster) = cluster(
        "quota_full_and_recovery",
        1,
        &["--quota-backend-bytes", "16777216"],
    ) else {
        return;
    };
    let a = replica(&cluster, "/q", &[]);
    let c = Client::default();
    hierarchy(&c, &a, "r", "s", "t");
    create_named(&c, &a, &format!("{STACK}/cells"), "c");
    let container = format!("{STACK}/cells/c/containers/k");
    let (st, b) = c.post_json(
        &a.api(&format!("{STACK}/cells/c/containers")),
        &json!({"metadata": {"name": "k"}, "spec": big_args(10, "k")}),
    );
    assert_eq!(st, 201, "{b}");
    // Fill etcd with history: each patch keeps a 500 KiB revision.
    let mut full = None;
    for i in 0..200 {
        let r = c.patch(
            &a.api(&container),
            &json!({"spec": big_args(5000, &format!("f{i}"))}),
        );
        match r.0 {
            200 => continue,
            507 => {
                assert_problem(&r, 507, "InsufficientStorage", None);
                full = Some(i);
                break;
            }
            st => panic!("patch {i}: {st} {}", r.1),
        }
    }
    let full = full.expect("etcd's quota of 16 MiB was never reached in 200 writes of 500 KiB");
    eprintln!("507 after {full} writes of 500 KiB");
    // /metrics shows etcd's database size (read every few seconds).
    let db_size = || -> f64 {
        metrics_text(&c, &a)
            .lines()
            .find_map(|l| l.strip_prefix("modelhub_etcd_db_size_bytes "))
            .expect("modelhub_etcd_db_size_bytes in /metrics")
            .trim()
            .parse()
            .unwrap()
    };
    let size = poll(Duration::from_secs(10), || {
        Some(db_size()).filter(|s| *s > 8e6)
    });
    eprintln!("modelhub_etcd_db_size_bytes at the quota: {size:?}");
    assert!(
        size.is_some(),
        "modelhub_etcd_db_size_bytes near the 16 MiB quota within 10 s: {}",
        db_size()
    );
    // Other writes are refused too; reads work.
    let r = c.post_json(&a.api("/realms"), &json!({"metadata": {"name": "more"}}));
    assert_problem(&r, 507, "InsufficientStorage", None);
    assert_eq!(c.get(&a.api(&container)).0, 200);
    let (st, list) = c.get(&a.api("/containers"));
    assert_eq!((st, item_names(&list).len()), (200, 1));

    // The operator: compact to the current revision, defragment, disarm.
    let revision = etcd_revision(&cluster, 0).to_string();
    for args in [
        vec!["compact", revision.as_str()],
        vec!["defrag"],
        vec!["alarm", "disarm"],
    ] {
        let out = cluster.etcdctl(&args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            text(&out.stderr)
        );
    }
    let resumed = Instant::now();
    poll(Duration::from_secs(15), || {
        let (st, _) = c.post_json(&a.api("/realms"), &json!({"metadata": {"name": "more"}}));
        assert!(st == 201 || st == 507, "{st}");
        (st == 201).then_some(())
    })
    .expect("writes resume within 15 s of the alarm's disarm");
    eprintln!(
        "writes resumed {} ms after the disarm",
        ms(resumed.elapsed())
    );
    let r = c.patch(&a.api(&container), &json!({"spec": big_args(10, "after")}));
    assert_eq!(r.0, 200, "{}", r.1);
}

/// A backup file's header and its objects by path.
fn read_backup(file: &Path) -> (Value, BTreeMap<String, Value>) {
    let bytes = std::fs::read(file).unwrap();
    let lines: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a backup line is JSON"))
        .collect();
    assert!(lines.len() >= 2, "a header and a trailer");
    assert_eq!(lines[0]["format"], "modelhub-backup", "{}", lines[0]);
    let trailer = lines.last().unwrap();
    assert_eq!(trailer["end"], true, "{trailer}");
    let objects: BTreeMap<String, Value> = lines[1..lines.len() - 1]
        .iter()
        .map(|doc| (path_of(doc), doc.clone()))
        .collect();
    assert_eq!(trailer["objects"], objects.len(), "each path once");
    (lines[0].clone(), objects)
}

/// Every object `s` serves, by path.
fn all_objects(c: &Client, s: &Server) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for kind in ["realms", "spaces", "stacks", "cells", "containers"] {
        let (st, list) = c.get(&s.api(&format!("/{kind}")));
        assert_eq!(st, 200, "{list}");
        for item in list["items"].as_array().unwrap() {
            out.insert(path_of(item), item.clone());
        }
    }
    out
}

/// `doc` without its `metadata.resourceVersion`.
fn without_rv(doc: &Value) -> Value {
    let mut d = doc.clone();
    d["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    d
}

/// A backup taken from a replica while two others write is exactly the
/// store at its revision; restored into a fresh prefix, replicas there
/// serve every object as it was, at revisions above the backup's, and a
/// watch resuming from the old history answers 410.
#[test]
fn backup_restore() {
    let _serial = serial();
    let Some(cluster) = cluster("backup_restore", 1, &[]) else {
        return;
    };
    let a = replica(&cluster, "/orig", &[]);
    let b = replica(&cluster, "/orig", &[]);
    let c = Client::default();
    let mut docs = vec![
        json!({"kind": "Realm", "metadata": {"name": "r", "labels": {"team": "a"}}}),
        json!({"kind": "Space", "metadata": {"name": "s"}, "spec": {"realmId": "r"}}),
        json!({"kind": "Stack", "metadata": {"name": "t"}, "spec": {"realmId": "r", "spaceId": "s"}}),
    ];
    for i in 0..30 {
        docs.push(json!({
            "kind": "Cell",
            "metadata": {"name": format!("c{i}"), "labels": {"n": i.to_string()}},
            "spec": {"realmId": "r", "spaceId": "s", "stackId": "t"}
        }));
    }
    for i in 0..10 {
        docs.push(json!({
            "kind": "Container",
            "metadata": {"name": format!("k{i}")},
            "spec": {"realmId": "r", "spaceId": "s", "stackId": "t", "cellId": "c0",
                     "image": "busybox", "args": [format!("{i}")]}
        }));
    }
    let (st, body) = c.post_json(&a.api("/apply"), &Value::Array(docs));
    assert_eq!(st, 200, "{body}");
    let (st, body) = c.put_json(
        &a.api(&format!("{STACK}/cells/c1/status")),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "{body}");
    let seeded = all_objects(&c, &a);
    let from = revision(&c, &a);
    let w = Watch::open(&watch_url(&a, from));

    // Writers through A and B while B takes the backup.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.backup");
    let stop = AtomicBool::new(false);
    let last_acked = Mutex::new(0u64);
    std::thread::scope(|scope| {
        for (t, s) in [(0, &a), (1, &b)] {
            let (stop, last_acked) = (&stop, &last_acked);
            scope.spawn(move || {
                let c = Client::default();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (st, body) = match i % 3 {
                        0 => c.post_json(
                            &s.api(&format!("{STACK}/cells")),
                            &json!({"metadata": {"name": format!("w{t}-{i}")}}),
                        ),
                        1 => c.patch(
                            &s.api(&format!("{STACK}/cells/c{}", (i + t) % 30)),
                            &json!({"metadata": {"labels": {"w": format!("{t}-{i}")}}}),
                        ),
                        _ => c.delete(&s.api(&format!("{STACK}/cells/w{t}-{}", i - 2))),
                    };
                    assert!(st == 200 || st == 201, "{st} {body}");
                    let mut last = last_acked.lock().unwrap();
                    *last = (*last).max(rv(&body));
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let out = modelhub(
            &["backup", "--server", &b.base, &file.to_string_lossy()],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "backup: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let (header, objects) = read_backup(&file);
    let revision_n = header["revision"].as_u64().expect("the backup's revision");
    let end = *last_acked.lock().unwrap();
    assert!(
        from < revision_n && revision_n < end,
        "writes went on before and after the backup: {from} < {revision_n} < {end}"
    );
    // The backup is the store at its revision: the seeded state with
    // every change up to it replayed.
    let mut state = seeded;
    for e in w.until(end, Duration::from_secs(30)) {
        let ty = e["type"].as_str().unwrap();
        if ty == "BOOKMARK" || event_rv(&e) > revision_n {
            continue;
        }
        match ty {
            "ADDED" | "MODIFIED" => state.insert(path_of(&e["object"]), e["object"].clone()),
            "DELETED" => state.remove(&path_of(&e["object"])),
            _ => panic!("unexpected {e}"),
        };
    }
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        state.keys().collect::<Vec<_>>(),
        "the backup holds the paths of the store at {revision_n}"
    );
    for (path, doc) in &objects {
        assert_eq!(doc, &state[path], "{path} in the backup");
    }
    eprintln!("backup at {revision_n}: {} objects", objects.len());

    // The old store goes on after the backup: 1,100 more writes (etcd
    // revisions). Restored revisions must stay above all of them too
    // (API.md, "Restore"), with the default --bump-revision.
    let burst: Vec<u64> = in_threads(4, 275, |c, t, i| {
        let (st, body) = c.patch(
            &a.api(&format!("{STACK}/cells/c{}", t * 7 + 1)),
            &json!({"metadata": {"labels": {"burst": format!("{t}-{i}")}}}),
        );
        assert_eq!(st, 200, "{body}");
        rv(&body)
    });
    let old_max = burst.into_iter().max().unwrap().max(end);
    let mut failed: Vec<String> = Vec::new();

    // Restore into a fresh prefix.
    let restore = |cluster: &Cluster, prefix: &str| {
        modelhub(
            &[
                "restore",
                "--store",
                "etcd",
                "--etcd-endpoints",
                &cluster.endpoints(),
                "--etcd-prefix",
                prefix,
                &file.to_string_lossy(),
            ],
            Duration::from_secs(60),
        )
    };
    let out = restore(&cluster, "/fresh");
    assert!(
        out.status.success(),
        "restore: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eprintln!("{}", text(&out.stdout).trim());
    let out = restore(&cluster, "/fresh");
    assert!(!out.status.success(), "a second restore into /fresh");
    eprintln!("restore into a prefix in use: {}", text(&out.stderr).trim());
    let out = restore(&cluster, "/orig");
    assert!(!out.status.success(), "a restore into the live prefix");

    // Replicas on a restored prefix serve the backup's objects at
    // revisions above the old history, which is gone (410).
    let mut check_restored = |s: &Server, who: &str| {
        let restored = all_objects(&c, s);
        assert_eq!(
            restored.keys().collect::<Vec<_>>(),
            objects.keys().collect::<Vec<_>>(),
            "{who}: the restored paths"
        );
        let mut low = Vec::new();
        for (path, doc) in &objects {
            let got = &restored[path];
            assert_eq!(without_rv(got), without_rv(doc), "{who}: {path} restored");
            assert!(
                rv(got) > revision_n,
                "{who}: {path} restored at {}, not above the backup's {revision_n}",
                rv(got)
            );
            if rv(got) <= old_max {
                low.push(rv(got));
            }
        }
        if !low.is_empty() {
            failed.push(format!(
                "{who}: {} objects restored at revisions {}..={}, not above the {old_max} the \
                 old store handed out 1,100 etcd revisions after the backup's {revision_n} \
                 (default --bump-revision)",
                low.len(),
                low.iter().min().unwrap(),
                low.iter().max().unwrap()
            ));
        }
        for old in [from, revision_n, end, old_max] {
            if gone(s, old).is_none() {
                failed.push(format!(
                    "{who}: a watch from the old revision {old} streams"
                ));
            }
        }
    };
    let f = replica(&cluster, "/fresh", &[]);
    let g = replica(&cluster, "/fresh", &[]);
    check_restored(&f, "F (same cluster)");
    check_restored(&g, "G (same cluster)");

    // Disaster recovery: the same backup into a new cluster, whose etcd
    // revisions start again from 1.
    let dr = Cluster::start(1).expect("a second cluster");
    let out = restore(&dr, "/dr");
    assert!(out.status.success(), "restore: {}", text(&out.stderr));
    let h = replica(&dr, "/dr", &[]);
    check_restored(&h, "H (new cluster)");
    // Once the new history passes a revision the old store handed out, a
    // client resuming from that one must still get 410, not the new
    // history's events.
    let behind = (old_max / 1_000_000).saturating_sub(revision(&c, &h) / 1_000_000);
    if behind > 0 && behind < 2_000 {
        let n = behind as usize / 4 + 2;
        in_threads(4, n, |c, t, i| {
            create_named(c, &h, "/realms", &format!("dr{t}-{i}"));
        });
        let now = revision(&c, &h);
        assert!(now > old_max, "{now} passed {old_max}");
        let resumed = gone(&h, old_max);
        eprintln!("H at {now}: a watch from the old store's {old_max}: {resumed:?}");
        if resumed.is_none() {
            failed.push(format!(
                "H (new cluster): once its revision ({now}) passed the old store's {old_max}, a \
                 watch resuming from {old_max} streams the new history's events instead of 410"
            ));
        }
    }

    // New writes go on above, seen by a watcher on the other replica.
    let now = revision(&c, &g);
    let wg = Watch::open(&watch_url(&g, now));
    let (st, body) = c.post_json(&f.api("/realms"), &json!({"metadata": {"name": "new"}}));
    assert_eq!(st, 201, "{body}");
    assert!(rv(&body) > now);
    let seen = wg.until(rv(&body), Duration::from_secs(10));
    assert_eq!(path_of(&seen.last().unwrap()["object"]), "Realm:new");
    // The original prefix is untouched.
    assert_eq!(c.get(&a.api("/realms/new")).0, 404);
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
}
