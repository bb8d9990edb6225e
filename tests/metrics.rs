//! `/metrics` against the real server: request-duration histograms by
//! route template and status class, the writer's histograms and gauges,
//! the watch counters, and checkpoints made due by the log's size.

mod common;

use common::{Client, Server, hierarchy, metrics_text};
use serde_json::json;

const CELLS: &str = "/realms/r/spaces/s/stacks/t/cells";

/// The value of the one series `name` (labels included, exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// The `_bucket` values of histogram `name` with `labels` (before `le`),
/// in order, `+Inf` last.
fn buckets(text: &str, name: &str, labels: &str) -> Vec<f64> {
    let prefix = format!("{name}_bucket{{{labels}");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect()
}

/// Asserts a histogram is well formed: cumulative buckets that never
/// decrease, `+Inf` equal to `_count`; answers the count.
#[track_caller]
fn histogram_count(text: &str, name: &str, labels: &str) -> f64 {
    let b = buckets(text, name, labels);
    assert_eq!(b.len(), 16, "{name}{{{labels}}} buckets in {text}");
    assert!(b.windows(2).all(|w| w[0] <= w[1]), "{name}: {b:?}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", labels.trim_end_matches(','))
    };
    let count = value(text, &format!("{name}_count{braces}")).expect("a _count");
    assert_eq!(b[15], count, "{name}: +Inf is the count");
    assert!(value(text, &format!("{name}_sum{braces}")).is_some());
    count
}

#[test]
fn requests_are_timed_by_method_route_template_and_status_class() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let (st, b) = c.post_json(&s.api(CELLS), &json!({"metadata": {"name": "one"}}));
    assert_eq!(st, 201, "{b}");
    for _ in 0..3 {
        assert_eq!(c.get(&s.api(&format!("{CELLS}/one"))).0, 200);
    }
    assert_eq!(c.get(&s.api(&format!("{CELLS}/missing"))).0, 404);
    // A HEAD is served by the GET route, and timed on it.
    let head = c.http.head(s.api(&format!("{CELLS}/one"))).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(c.get(&format!("{}/no/such/route", s.base)).0, 404);

    let text = metrics_text(&c, &s);
    let item = "/api/v1beta1/realms/{realm}/spaces/{space}/stacks/{stack}/cells/{cell}";
    let name = "modelhub_http_request_duration_seconds";
    let labels = |method: &str, route: &str, class: &str| {
        format!("method=\"{method}\",route=\"{route}\",class=\"{class}\",")
    };
    assert_eq!(
        histogram_count(&text, name, &labels("GET", item, "2xx")),
        4.0
    );
    assert_eq!(
        histogram_count(&text, name, &labels("GET", item, "4xx")),
        1.0
    );
    let collection = "/api/v1beta1/realms/{realm}/spaces/{space}/stacks/{stack}/cells";
    assert_eq!(
        histogram_count(&text, name, &labels("POST", collection, "2xx")),
        1.0
    );
    assert_eq!(
        histogram_count(&text, name, &labels("any", "other", "4xx")),
        1.0,
        "a request outside the route table"
    );
    assert!(
        !text.contains(&labels("DELETE", item, "2xx")),
        "only series with counts are shown"
    );
}

#[test]
fn the_writer_reports_its_commits_log_syncs_queue_and_checkpoints() {
    if common::on_etcd() {
        let s = Server::start();
        let c = Client::default();
        hierarchy(&c, &s, "r", "s", "t");
        let text = metrics_text(&c, &s);
        assert!(
            histogram_count(&text, "modelhub_write_commit_duration_seconds", "") >= 3.0,
            "every write transaction is timed"
        );
        for absent in ["modelhub_log_sync_duration", "modelhub_checkpoint_duration"] {
            assert!(!text.contains(absent), "no {absent} on etcd: {text}");
        }
        eprintln!("the log and checkpoint parts skipped on etcd: they are redb's");
        return;
    }
    // A checkpoint is due once the log holds 64 KiB, whatever the time:
    // each write's record takes at least one 4 KiB block.
    let s = Server::start_args(&[
        "--checkpoint-bytes",
        "64KiB",
        "--checkpoint-interval",
        "60m",
    ]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for i in 0..40 {
        let (st, b) = c.post_json(
            &s.api(CELLS),
            &json!({"metadata": {"name": format!("c{i}")}}),
        );
        assert_eq!(st, 201, "{b}");
    }
    let text = metrics_text(&c, &s);
    let checkpoints = value(&text, "modelhub_checkpoints_total").unwrap();
    assert!(checkpoints >= 2.0, "43 writes of a block each: {text}");
    assert_eq!(
        histogram_count(&text, "modelhub_checkpoint_duration_seconds", ""),
        checkpoints
    );
    let commits = value(&text, "modelhub_commits_total").unwrap();
    assert!(commits >= 1.0);
    assert!(histogram_count(&text, "modelhub_write_commit_duration_seconds", "") >= 43.0 - 1.0);
    assert!(histogram_count(&text, "modelhub_log_sync_duration_seconds", "") >= 1.0);
    let pending = value(&text, "modelhub_log_pending_bytes").unwrap();
    assert!(
        pending < 64.0 * 1024.0,
        "the log is checkpointed once it holds 64 KiB: {pending}"
    );
    assert_eq!(value(&text, "modelhub_write_queue_depth"), Some(0.0));
}

#[test]
fn watches_count_events_catch_ups_and_gone() {
    if common::on_etcd() {
        eprintln!(
            "skipped on etcd: its revisions are the cluster's, so revision 0 and 1 mean \
             nothing to this prefix (the counters are the hub's, the same on both engines)"
        );
        return;
    }
    let s = Server::start_args(&["--history-revisions", "1", "--compaction-interval", "100ms"]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let events = common::events_since(&c, &s, 0);
    assert_eq!(events.len(), 3, "the hierarchy's three creates");
    let text = metrics_text(&c, &s);
    assert!(
        value(&text, "modelhub_watch_catchups_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(value(&text, "modelhub_watch_events_sent_total").unwrap() >= events.len() as f64);

    // Compacted away: 410, counted.
    for i in 0..5 {
        let (st, b) = c.post_json(
            &s.api(CELLS),
            &json!({"metadata": {"name": format!("c{i}")}}),
        );
        assert_eq!(st, 201, "{b}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = c
            .http
            .get(format!(
                "{}?resourceVersion=1&timeoutSeconds=1",
                s.api("/watch")
            ))
            .send()
            .unwrap()
            .status();
        if status == 410 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "revision 1 was never compacted (last: {status})"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = metrics_text(&c, &s);
    assert!(
        value(&text, "modelhub_watch_gone_total").unwrap() >= 1.0,
        "{text}"
    );
}

#[test]
fn checkpoint_bytes_out_of_range_are_refused_naming_the_flag() {
    for (arg, says) in [("1KiB", "at least 64KiB"), ("64MiB", "at most 32MiB")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelhub"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--checkpoint-bytes",
                arg,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--checkpoint-bytes") && err.contains(says),
            "{err}"
        );
    }
}
