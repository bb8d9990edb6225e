//! The storage quota and the history's byte budget, against the real
//! server: at the quota every write but a delete is refused with 507,
//! readiness says why, deletes and compaction bring the store back under
//! it and writes resume by themselves; the history never keeps more than
//! its budget.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server, hierarchy};
use serde_json::{Value, json};

const CELLS: &str = "/realms/r/spaces/s/stacks/t/cells";

/// A cell of about `pad` bytes (in a container's environment: a label
/// value holds at most 253 bytes).
fn cell(name: &str, pad: usize) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"id": "a", "env": ["x".repeat(pad)]}]}})
}

fn metric(c: &Client, s: &Server, line: &str) -> Option<u64> {
    let text = c
        .raw(reqwest::blocking::Client::new().get(format!("{}/metrics", s.base)))
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

#[test]
fn at_the_quota_only_deletes_pass_and_writes_resume_once_under_it() {
    let s = Server::start_args(&[
        "--quota-bytes",
        "48KiB",
        "--min-free-space",
        "0",
        "--history-revisions",
        "5",
        // Rare enough that the history is not compacted under the quota
        // while the refusal is checked, often enough for the resume.
        "--compaction-interval",
        "3s",
    ]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let mut created = Vec::new();
    let refusal = (0..400)
        .find_map(|i| {
            let name = format!("c{i}");
            let (st, body) = c.post_json(&s.api(CELLS), &cell(&name, 900));
            match st {
                201 => {
                    created.push(name);
                    None
                }
                _ => Some((st, body)),
            }
        })
        .expect("the quota is reached");
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert_eq!(refusal.1["reason"], "InsufficientStorage");
    assert!(
        refusal.1["detail"].as_str().unwrap().contains("quota"),
        "{}",
        refusal.1
    );
    assert!(created.len() > 10, "{} created", created.len());

    // The refusal is visible: readiness stays 200 for reads, the writes
    // check says why, and so do the metrics.
    let ready = c
        .raw(reqwest::blocking::Client::new().get(format!("{}/readyz", s.base)))
        .text()
        .unwrap();
    assert!(ready.contains("[+]reads ok"), "{ready}");
    assert!(
        ready.contains("[-]writes refused (quota_exceeded)"),
        "{ready}"
    );
    let (st, body) = c.get(&format!("{}/readyz/writes", s.base));
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["reason"], "InsufficientStorage");
    assert_eq!(
        metric(&c, &s, "modelhub_writes_refused{cause=\"quota_exceeded\"}"),
        Some(1)
    );
    let resp = c.raw(
        reqwest::blocking::Client::new()
            .post(s.api(CELLS))
            .json(&cell("more", 10)),
    );
    assert_eq!(resp.status().as_u16(), 507);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Reads and deletes go on.
    assert_eq!(c.get(&s.api(&format!("{CELLS}/{}", created[0]))).0, 200);
    for name in created.iter().take(created.len() / 2) {
        let (st, body) = c.delete(&s.api(&format!("{CELLS}/{name}")));
        assert_eq!(st, 200, "{body}");
    }
    // Compaction drops the deletions' history; writes resume by
    // themselves.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, body) = c.post_json(&s.api(CELLS), &cell("after", 10));
        if st == 201 {
            break;
        }
        assert_eq!(st, 507, "{body}");
        assert!(Instant::now() < deadline, "writes never resumed: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.get(&format!("{}/readyz/writes", s.base)).0, 200);
    assert_eq!(
        metric(&c, &s, "modelhub_writes_refused{cause=\"quota_exceeded\"}"),
        Some(0)
    );
}

#[test]
fn the_history_keeps_within_its_byte_budget() {
    let s = Server::start_args(&[
        "--history-bytes",
        "16KiB",
        "--compaction-interval",
        "50ms",
        "--min-free-space",
        "0",
    ]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for i in 0..60 {
        let (st, body) = c.post_json(&s.api(CELLS), &cell(&format!("c{i}"), 1000));
        assert_eq!(st, 201, "{body}");
    }
    let history = "modelhub_stored_bytes{part=\"history\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&c, &s, history).unwrap() > 16 * 1024 {
        assert!(Instant::now() < deadline, "history over its budget");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The oldest history is gone: a watch from the start answers 410; the
    // objects are all there.
    let (st, body) = c.get(&s.api("/watch?resourceVersion=1"));
    assert_eq!(st, 410, "{body}");
    let (st, list) = c.get(&s.api(CELLS));
    assert_eq!(st, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 60);
    let objects = metric(&c, &s, "modelhub_stored_bytes{part=\"objects\"}").unwrap();
    assert!(objects > 60 * 1000, "{objects}");
}
