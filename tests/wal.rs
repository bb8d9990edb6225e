//! Durability through the write-ahead log: writes acknowledged after the
//! last checkpoint survive a SIGKILL (replayed at the next start, events
//! included), replay is idempotent, and a checkpoint leaves nothing to
//! replay. A log that cannot be trusted refuses the start and changes
//! nothing: a missing log after an unclean stop, another database's log,
//! a damaged record in the middle of the log.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const CELLS: &str = "/realms/r/spaces/s/stacks/t/cells";

/// The non-BOOKMARK events after `from`, read until the stream times out.
fn events_after(c: &Client, s: &Server, from: u64) -> Vec<Value> {
    selected_events_after(c, s, from, "")
}

/// [`events_after`] of a watch narrowed by `query` (`&labelSelector=...`).
fn selected_events_after(c: &Client, s: &Server, from: u64, query: &str) -> Vec<Value> {
    let text = c
        .raw(c.http.get(s.api(&format!(
            "/watch?resourceVersion={from}&timeoutSeconds=1{query}"
        ))))
        .text()
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] != "BOOKMARK")
        .collect()
}

fn by_name(mut items: Vec<Value>) -> Vec<Value> {
    items.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    items
}

#[test]
fn a_kill_loses_no_acknowledged_write_and_replays_their_events() {
    // No checkpoint during the test: everything below lives only in the log.
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    hierarchy(&c, &s, "r", "s", "doomed");
    let doomed = s.api("/realms/r/spaces/s/stacks/doomed");
    for i in 0..5 {
        post_ok_blocking(&c, &format!("{doomed}/cells"), &format!("d{i}"));
    }
    let (_, stack) = c.get(&doomed);
    let before = rv(&stack) + 5;

    // Concurrent creates from 8 clients, then status writes, a merge patch
    // and a cascading delete.
    let cells = s.api(CELLS);
    let created = in_threads(8, 15, |c, t, i| {
        post_ok_blocking(c, &cells, &format!("c{t}-{i:02}"))
    });
    let mut expected: std::collections::BTreeMap<String, Value> = created
        .into_iter()
        .map(|b| (b["metadata"]["name"].as_str().unwrap().to_string(), b))
        .collect();
    for name in ["c0-00", "c3-07", "c7-14"] {
        let (st, b) = c.put_json(
            &format!("{cells}/{name}/status"),
            &json!({"status": {"state": "Ready"}}),
        );
        assert_eq!(st, 200, "{b}");
        expected.insert(name.into(), b);
    }
    let (st, b) = c.patch(
        &format!("{cells}/c5-05"),
        &json!({"metadata": {"labels": {"tier": "db"}}}),
    );
    assert_eq!(st, 200, "{b}");
    expected.insert("c5-05".into(), b);
    let (st, b) = c.delete(&format!("{doomed}?cascade=true"));
    assert_eq!(st, 200, "{b}");
    let last = rv(&b);
    assert_eq!(last, before + 120 + 3 + 1 + 6, "dense revisions");
    let events_before_kill = events_after(&c, &s, before);
    assert_eq!(events_before_kill.len() as u64, last - before);

    s.kill();
    s.restart();
    assert!(
        s.log_text().contains("replayed the write-ahead log"),
        "the restart replayed the log: {}",
        s.log_text()
    );
    let (st, list) = c.get(&cells);
    assert_eq!(st, 200, "{list}");
    let items = by_name(list["items"].as_array().unwrap().clone());
    assert_eq!(items, expected.values().cloned().collect::<Vec<_>>());
    assert_eq!(c.get(&doomed).0, 404);
    assert_eq!(c.get(&format!("{doomed}/cells/d0")).0, 404);
    // The event log came back too: the same events, resumable.
    assert_eq!(events_after(&c, &s, before), events_before_kill);

    // Killed again before any new write: replaying twice duplicates nothing.
    s.kill();
    s.restart();
    let (_, again) = c.get(&cells);
    assert_eq!(by_name(again["items"].as_array().unwrap().clone()), items);
    let b = post_ok_blocking(&c, &cells, "after");
    assert_eq!(rv(&b), last + 1);
}

#[test]
fn a_checkpoint_leaves_nothing_to_replay() {
    let mut s = Server::start_args(&["--checkpoint-interval", "100ms", "--workers", "1"]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let b = post_ok_blocking(&c, &s.api(CELLS), "one");
    // The writer checkpoints once the interval is up, while idle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while checkpoints(&c, &s) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.kill();
    s.restart();
    assert_kept_without_replay(&c, &s, &b);
}

#[test]
fn a_graceful_stop_checkpoints() {
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let b = post_ok_blocking(&c, &s.api(CELLS), "one");
    assert_eq!(
        checkpoints(&c, &s),
        0,
        "nothing checkpointed before the stop"
    );
    s.restart();
    assert_kept_without_replay(&c, &s, &b);
}

/// After a restart: cell `one` is as it was, and nothing was replayed.
fn assert_kept_without_replay(c: &Client, s: &Server, one: &Value) {
    assert!(
        !s.log_text().contains("replayed the write-ahead log"),
        "{}",
        s.log_text()
    );
    assert_eq!(&c.get(&s.api(&format!("{CELLS}/one"))).1, one);
}

/// `modelhub_checkpoints_total` from `/metrics`.
fn checkpoints(c: &Client, s: &Server) -> u64 {
    let text = c
        .raw(c.http.get(format!("{}/metrics", s.base)))
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("modelhub_checkpoints_total "))
        .expect("checkpoint counter")
        .parse()
        .unwrap()
}

fn post_ok_blocking(c: &Client, url: &str, name: &str) -> Value {
    let (st, b) = c.post_json(url, &json!({"metadata": {"name": name}}));
    assert_eq!(st, 201, "{b}");
    b
}

#[test]
fn a_replayed_log_is_cleared_so_a_replaced_database_starts_empty() {
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    post_ok_blocking(&c, &s.api(CELLS), "one");
    s.kill();
    s.restart();
    assert!(s.log_text().contains("replayed the write-ahead log"));
    // A clean stop with no write since, then the database deleted on
    // purpose: the next start must not bring the old objects back.
    s.stop();
    std::fs::remove_file(&s.data).unwrap();
    s.restart();
    assert!(
        !s.log_text().contains("replayed the write-ahead log"),
        "{}",
        s.log_text()
    );
    assert_eq!(c.get(&s.api("/realms/r")).0, 404);
    assert_eq!(c.get(&s.api("/realms")).1["items"], json!([]));
}

/// The log beside a database: `<data>.wal`.
fn wal_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// Starts the server on `data` and expects the start to fail: answers
/// its log (stderr). Fails at once if the server starts listening.
fn start_refused(data: &Path, extra: &[String]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelhub");
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server neither failed nor stopped within 30 s; stdout: {}",
                stdout.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, log) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        !status.success() && !out.contains("listening"),
        "the start was not refused ({status}); stdout: {out}; log: {log}"
    );
    log
}

/// Creates realms `{prefix}0..n`, one request (one log record) each.
fn realms(c: &Client, s: &Server, prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| post_ok_blocking(c, &s.api("/realms"), &format!("{prefix}{i}")))
        .collect()
}

/// Asserts each object reads back exactly as it was acknowledged.
#[track_caller]
fn assert_there(c: &Client, s: &Server, objects: &[Value]) {
    for o in objects {
        let name = o["metadata"]["name"].as_str().unwrap();
        let (st, got) = c.get(&s.api(&format!("/realms/{name}")));
        assert_eq!((st, &got), (200, o), "realm {name}");
    }
}

#[test]
fn a_missing_log_refuses_the_start_after_an_unclean_stop_only() {
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let c = Client::default();
    let made = realms(&c, &s, "r", 5);
    s.kill();
    let log = wal_path(&s.data);
    let aside = log.with_extension("wal.aside");
    std::fs::rename(&log, &aside).unwrap();
    let text = start_refused(&s.data, &s.extra);
    assert!(
        text.contains("is missing") && text.contains(&log.display().to_string()),
        "the refusal names the missing log: {text}"
    );
    assert!(!log.exists(), "the refused start created a log");
    // Put back, the log is replayed: nothing acknowledged was lost.
    std::fs::rename(&aside, &log).unwrap();
    s.restart();
    assert!(s.log_text().contains("replayed the write-ahead log"));
    assert_there(&c, &s, &made);
    // After a clean stop, the log holds nothing: deleting it is fine.
    s.stop();
    std::fs::remove_file(&log).unwrap();
    s.restart();
    assert_there(&c, &s, &made);
    assert!(log.exists(), "a new log was created");
}

#[test]
fn a_log_of_another_database_refuses_the_start_and_changes_nothing() {
    let args = ["--checkpoint-interval", "60m"];
    let mut a = Server::start_args(&args);
    let mut b = Server::start_args(&args);
    let c = Client::default();
    let in_a = realms(&c, &a, "a", 3);
    let in_b = realms(&c, &b, "b", 3);
    a.kill();
    b.kill();
    let (log_a, log_b) = (wal_path(&a.data), wal_path(&b.data));
    let own = log_b.with_extension("wal.own");
    std::fs::rename(&log_b, &own).unwrap();
    std::fs::copy(&log_a, &log_b).unwrap();
    let foreign = std::fs::read(&log_b).unwrap();
    let text = start_refused(&b.data, &b.extra);
    assert!(
        text.contains("belongs to another database") && text.contains(&log_b.display().to_string()),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&log_b).unwrap(),
        foreign,
        "the foreign log was changed"
    );
    // With its own log back, B has its writes and none of A's; A too.
    std::fs::rename(&own, &log_b).unwrap();
    b.restart();
    assert_there(&c, &b, &in_b);
    assert_eq!(c.get(&b.api("/realms/a0")).0, 404);
    a.restart();
    assert_there(&c, &a, &in_a);
    assert_eq!(c.get(&a.api("/realms/b0")).0, 404);
}

/// Where the log's first file header ends and its records start; each
/// record starts on a fresh block of this size.
const BLOCK: usize = 4096;

/// The log's records: offset, first revision and count of each.
fn records(log: &[u8]) -> Vec<(usize, u64, u64)> {
    let u32_at = |at: usize| u32::from_le_bytes(log[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = BLOCK;
    while at + 8 <= log.len() && log[at..at + 8] != [0; 8] {
        let len = u32_at(at) as usize;
        let first = u64::from_le_bytes(log[at + 8..at + 16].try_into().unwrap());
        out.push((at, first, u64::from(u32_at(at + 16))));
        at += (8 + len).div_ceil(BLOCK) * BLOCK;
    }
    out
}

#[test]
fn a_damaged_record_in_the_middle_of_the_log_refuses_the_start_and_zeroes_nothing() {
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let c = Client::default();
    let made = realms(&c, &s, "r", 6);
    s.kill();
    let log = wal_path(&s.data);
    let mut bytes = std::fs::read(&log).unwrap();
    let recs = records(&bytes);
    assert_eq!(recs.len(), 6, "one record per create: {recs:?}");
    assert!(
        recs.windows(2).all(|w| w[1].1 == w[0].1 + w[0].2),
        "{recs:?}"
    );
    // A flipped bit in the middle of the second record's payload.
    let (at, ..) = recs[1];
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let flip = at + 8 + len / 2;
    bytes[flip] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let text = start_refused(&s.data, &s.extra);
    let (lo, hi) = (recs[2].1, recs[5].1 + recs[5].2 - 1);
    assert!(
        text.contains(&format!("damaged at offset {at}"))
            && text.contains(&format!("revisions {lo} to {hi}"))
            && text.contains(&log.display().to_string()),
        "the refusal names the log, the offset ({at}) and the revisions ({lo} to {hi}): {text}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "the refused start changed the log"
    );
    // Repaired, the log is replayed whole.
    bytes[flip] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    s.restart();
    assert_there(&c, &s, &made);
}

/// The events a replay of the log writes keep each modification's previous
/// version (read from the record it replaces): after a kill, a watch
/// catching up from the log follows an object out of its selection and
/// back in.
#[test]
fn replayed_modifications_keep_their_previous_versions() {
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let c = Client::default();
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "r", "labels": {"env": "a"}}}),
    );
    assert_eq!(st, 201, "{b}");
    let from = rv(&b);
    for env in ["b", "a"] {
        let (st, b) = c.patch(
            &s.api("/realms/r"),
            &json!({"metadata": {"labels": {"env": env}}}),
        );
        assert_eq!(st, 200, "{b}");
    }
    s.kill();
    s.restart();
    assert!(
        s.log_text().contains("replayed the write-ahead log"),
        "the restart replayed the log: {}",
        s.log_text()
    );
    let got: Vec<String> = selected_events_after(&c, &s, from, "&labelSelector=env%3Da")
        .iter()
        .map(|e| format!("{} {}", e["type"], e["object"]["metadata"]["labels"]["env"]))
        .collect();
    assert_eq!(got, ["\"DELETED\" \"b\"", "\"ADDED\" \"a\""]);
}
