//! Durability through the write-ahead log: writes acknowledged after the
//! last checkpoint survive a SIGKILL (replayed at the next start, events
//! included), replay is idempotent, and a checkpoint leaves nothing to
//! replay.

mod common;

use common::*;
use serde_json::{Value, json};

const CELLS: &str = "/realms/r/spaces/s/stacks/t/cells";

/// The non-BOOKMARK events after `from`, read until the stream times out.
fn events_after(c: &Client, s: &Server, from: u64) -> Vec<Value> {
    let text = c
        .raw(
            c.http
                .get(s.api(&format!("/watch?resourceVersion={from}&timeoutSeconds=1"))),
        )
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
