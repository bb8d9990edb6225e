//! Watch streams against a real server: snapshot, resume across restarts,
//! filters, compaction, slow readers, fan-out, bookmarks, SSE, shutdown,
//! the storage migration and the watcher client.

mod common;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An NDJSON event reader over a streaming response.
struct Lines {
    stream: ByteStream,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(url: &str) -> Lines {
        Lines::open_with(&reqwest::Client::new(), url).await
    }

    async fn open_with(client: &reqwest::Client, url: &str) -> Lines {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        Lines {
            stream: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends or `wait` passes.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("event is JSON"));
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(20))
            .await
            .expect("an event within 20 s")
    }

    async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

fn name(event: &Value) -> &str {
    event["object"]["metadata"]["name"].as_str().unwrap()
}

async fn realm(s: &Server, n: &str) -> Value {
    post_ok(s.api("/realms"), json!({"metadata": {"name": n}})).await
}

/// An async client for this async test file (the blocking one of
/// `common` must not run inside the test runtime).
#[derive(Default)]
struct AClient(reqwest::Client);

impl AClient {
    async fn reply(r: reqwest::Response) -> (u16, Value) {
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, url: &str) -> (u16, Value) {
        Self::reply(self.0.get(url).send().await.unwrap()).await
    }
    async fn post_json(&self, url: &str, body: &Value) -> (u16, Value) {
        Self::reply(self.0.post(url).json(body).send().await.unwrap()).await
    }
    async fn delete(&self, url: &str) -> (u16, Value) {
        Self::reply(self.0.delete(url).send().await.unwrap()).await
    }
}

async fn hierarchy(c: &AClient, s: &Server, r: &str, sp: &str, t: &str) {
    for (url, n) in [
        ("/realms".to_string(), r),
        (format!("/realms/{r}/spaces"), sp),
        (format!("/realms/{r}/spaces/{sp}/stacks"), t),
    ] {
        let (st, b) = c
            .post_json(&s.api(&url), &json!({"metadata": {"name": n}}))
            .await;
        assert!(st == 201 || st == 409, "{st} {b}");
    }
}

/// The revisions of acknowledged writes after `from`, sorted: the ones a
/// watch from `from` must deliver, in this order. On redb they are
/// `from + 1 ..= from + n`; on etcd they are not dense across writes.
fn expected_revisions(from: u64, mut acked: Vec<u64>) -> Vec<u64> {
    acked.sort_unstable();
    assert!(acked.first().is_none_or(|r| *r > from), "{acked:?}");
    if !on_etcd() {
        assert_eq!(
            acked,
            (from + 1..=from + acked.len() as u64).collect::<Vec<_>>()
        );
    }
    acked
}

/// Checks that every watcher receives exactly the revisions `want`, in
/// order (read concurrently); BOOKMARKs in between (a slow test on etcd,
/// whose position other writes move) only move forward.
async fn each_gets_the_next(watchers: Vec<Lines>, want: Vec<u64>) {
    let mut tasks = Vec::new();
    let n = want.len();
    for mut w in watchers {
        tasks.push(tokio::spawn(async move {
            let (mut events, mut positions) = (Vec::new(), Vec::new());
            while events.len() < n {
                let e = w.next().await;
                positions.push(event_rv(&e));
                if e["type"] != "BOOKMARK" {
                    events.push(event_rv(&e));
                }
            }
            assert!(
                positions.windows(2).all(|p| p[1] >= p[0]),
                "positions went back: {positions:?}"
            );
            events
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_bookmark_then_live() {
    let s = Server::start();
    realm(&s, "a").await;
    let b = realm(&s, "b").await;
    let mut w = Lines::open(&s.api("/watch")).await;
    let first = w.take(3).await;
    assert_eq!(
        (first[0]["type"].as_str(), name(&first[0])),
        (Some("ADDED"), "a")
    );
    assert_eq!(
        (first[1]["type"].as_str(), name(&first[1])),
        (Some("ADDED"), "b")
    );
    assert_eq!(first[2]["type"], "BOOKMARK");
    if on_etcd() {
        // "Everything up to etcd revision R": at or past b's.
        assert!(event_rv(&first[2]) > rv(&b), "{}", first[2]);
        assert_eq!(event_rv(&first[2]) % 1_000_000, 999_999);
    } else {
        assert_eq!(event_rv(&first[2]), 2);
    }
    assert_eq!(
        first[2]["object"].as_object().unwrap().len(),
        2,
        "bookmark carries only kind and metadata"
    );
    let c = realm(&s, "c").await;
    let live = w.next().await;
    assert_eq!(
        (live["type"].as_str(), name(&live), event_rv(&live)),
        (Some("ADDED"), "c", rv(&c))
    );
    if !on_etcd() {
        assert_eq!(rv(&c), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_across_restart_without_gap_or_duplicate() {
    let mut s = Server::start();
    realm(&s, "r0").await;
    let mut w = Lines::open(&s.api("/watch?kind=Realm")).await;
    let seen = w.take(2).await;
    let resume_at = event_rv(&seen[1]);
    drop(w);
    let mut acked = Vec::new();
    for i in 1..=5 {
        acked.push(rv(&realm(&s, &format!("before-{i}")).await));
    }
    tokio::task::block_in_place(|| s.restart());
    for i in 1..=5 {
        acked.push(rv(&realm(&s, &format!("after-{i}")).await));
    }
    let mut w = Lines::open(&s.api(&format!("/watch?resourceVersion={resume_at}"))).await;
    let events = w.take(10).await;
    let revs: Vec<u64> = events.iter().map(event_rv).collect();
    assert_eq!(revs, expected_revisions(resume_at, acked));
    let names: Vec<&str> = events.iter().map(name).collect();
    assert_eq!(&names[..2], ["before-1", "before-2"]);
    assert_eq!(names[9], "after-5");
    assert!(
        w.next_within(Duration::from_millis(300))
            .await
            .is_none_or(|e| e["type"] == "BOOKMARK")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cascade_delete_is_one_deleted_per_object_children_first() {
    let s = Server::start_args(&["--bookmark-interval", "500ms"]);
    let c = AClient::default();
    hierarchy(&c, &s, "r", "s", "t").await;
    hierarchy(&c, &s, "keep", "s", "t").await;
    let cells = "/realms/r/spaces/s/stacks/t/cells";
    for cell in ["c1", "c2"] {
        let (st, _) = c
            .post_json(&s.api(cells), &json!({"metadata": {"name": cell}}))
            .await;
        assert_eq!(st, 201);
    }
    let (st, _) = c
        .post_json(
            &s.api(&format!("{cells}/c1/containers")),
            &json!({"metadata": {"name": "n"}}),
        )
        .await;
    assert_eq!(st, 201);
    let from = revision_async(&s).await;
    let mut w = Lines::open(&s.api(&format!("/watch?resourceVersion={from}"))).await;
    let (st, _) = c.delete(&s.api("/realms/r?cascade=true")).await;
    assert_eq!(st, 200);
    let events = w.take(7).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        &kinds[..6],
        ["Container", "Cell", "Cell", "Stack", "Space", "Realm"]
    );
    assert!(events[..6].iter().all(|e| e["type"] == "DELETED"));
    let revs: Vec<u64> = events[..6].iter().map(event_rv).collect();
    if on_etcd() {
        // One etcd transaction: indexes 0..6 of one revision after `from`.
        assert!(
            revs[0] > from && revs[0].is_multiple_of(1_000_000),
            "{revs:?}"
        );
        assert_eq!(revs, (revs[0]..revs[0] + 6).collect::<Vec<_>>());
    } else {
        assert_eq!(revs, (from + 1..=from + 6).collect::<Vec<_>>());
    }
    assert_eq!(events[6]["type"], "BOOKMARK", "nothing else was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kind_and_scope_filters() {
    let s = Server::start_args(&["--bookmark-interval", "300ms"]);
    let c = AClient::default();
    let from = revision_async(&s).await;
    let mut cells_of_x =
        Lines::open(&s.api(&format!("/watch?kind=Cell&realm=x&resourceVersion={from}"))).await;
    let mut scoped = Lines::open(&s.api(&format!(
        "/realms/x/spaces/s/stacks/t/cells?watch=true&resourceVersion={from}"
    )))
    .await;
    let mut stacks =
        Lines::open(&s.api(&format!("/watch?kind=stacks&resourceVersion={from}"))).await;
    for r in ["x", "xy"] {
        hierarchy(&c, &s, r, "s", "t").await;
        let (st, _) = c
            .post_json(
                &s.api(&format!("/realms/{r}/spaces/s/stacks/t/cells")),
                &json!({"metadata": {"name": "c"}}),
            )
            .await;
        assert_eq!(st, 201);
    }
    for w in [&mut cells_of_x, &mut scoped] {
        let e = w.next().await;
        assert_eq!(
            (e["type"].as_str(), e["object"]["kind"].as_str()),
            (Some("ADDED"), Some("Cell"))
        );
        assert_eq!(e["object"]["spec"]["realmId"], "x");
        let next = w.next().await;
        assert_eq!(next["type"], "BOOKMARK", "no event from realm xy: {next}");
    }
    let e1 = stacks.next().await;
    let e2 = stacks.next().await;
    assert_eq!(
        (e1["object"]["kind"].as_str(), e2["object"]["kind"].as_str()),
        (Some("Stack"), Some("Stack"))
    );
    let (st, body) = c.get(&s.api("/watch?kind=Pod")).await;
    assert_eq!((st, body["field"].as_str()), (400, Some("kind")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn field_and_label_selectors_narrow_a_watch() {
    let s = Server::start_args(&["--bookmark-interval", "300ms"]);
    let c = AClient::default();
    hierarchy(&c, &s, "r", "s", "t").await;
    let cells = s.api("/realms/r/spaces/s/stacks/t/cells");
    let from = revision_async(&s).await;
    let mut failed = Lines::open(&format!(
        "{cells}?watch=true&resourceVersion={from}&fieldSelector=status.state%3DFailed"
    ))
    .await;
    let mut web_not_ready = Lines::open(&s.api(&format!(
        "/watch?kind=Cell&resourceVersion={from}&fieldSelector=status.state!%3DReady\
         &labelSelector=app%3Dweb"
    )))
    .await;
    for (name, app) in [("a", "web"), ("b", "db")] {
        let (st, b) = c
            .post_json(
                &cells,
                &json!({"metadata": {"name": name, "labels": {"app": app}}}),
            )
            .await;
        assert_eq!(st, 201, "{b}");
    }
    for (name, state) in [("a", "Failed"), ("b", "Failed"), ("a", "Ready")] {
        let r =
            c.0.put(format!("{cells}/{name}/status"))
                .json(&json!({"status": {"state": state}}))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
    }
    // status.state=Failed: a and b enter the selection as they fail (the
    // creates were Pending), and a leaves it as it recovers.
    let failing = [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")];
    let seen: Vec<(String, String)> = failed
        .take(3)
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), name(e).to_string()))
        .collect();
    let want: Vec<(String, String)> = failing
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(failed.next().await["type"], "BOOKMARK");
    // app=web and not Ready: a's create and its failure, then its recovery
    // as a DELETED carrying the Ready state.
    let seen: Vec<String> = web_not_ready
        .take(3)
        .await
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["type"],
                name(e),
                e["object"]["status"]["state"]
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "\"ADDED\" a \"Pending\"",
            "\"MODIFIED\" a \"Failed\"",
            "\"DELETED\" a \"Ready\""
        ]
    );
    assert_eq!(web_not_ready.next().await["type"], "BOOKMARK");
    // A watch from the same revision opened afterwards (a catch-up, not
    // the live stream) sees the same.
    let mut late = Lines::open(&format!(
        "{cells}?watch=true&resourceVersion={from}&fieldSelector=status.state%3DFailed"
    ))
    .await;
    let seen: Vec<(String, String)> = late
        .take(3)
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), name(e).to_string()))
        .collect();
    assert_eq!(seen, want, "caught up");
    // Labels too: b enters app=web as it is relabelled, and leaves again.
    let mut web = Lines::open(&format!(
        "{cells}?watch=true&resourceVersion={}&labelSelector=app%3Dweb",
        revision_async(&s).await
    ))
    .await;
    for app in ["web", "db"] {
        let r =
            c.0.patch(format!("{cells}/b"))
                .header("content-type", "application/merge-patch+json")
                .body(json!({"metadata": {"labels": {"app": app}}}).to_string())
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen: Vec<(String, String)> = web
        .take(2)
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), name(e).to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED".to_string(), "b".to_string()),
            ("DELETED".to_string(), "b".to_string())
        ]
    );
    // A snapshot watch starts with the objects that match now.
    let mut snapshot = Lines::open(&format!(
        "{cells}?watch=true&fieldSelector=status.state%3DFailed"
    ))
    .await;
    let e = snapshot.next().await;
    assert_eq!((e["type"].as_str(), name(&e)), (Some("ADDED"), "b"));
    assert_eq!(snapshot.next().await["type"], "BOOKMARK");
    let (st, body) = c
        .get(&format!("{cells}?watch=true&fieldSelector=spec.image%3Dx"))
        .await;
    assert_eq!((st, body["field"].as_str()), (400, Some("fieldSelector")));
    let (st, body) = c
        .get(&s.api("/watch?fieldSelector=status.phase%3DRunning"))
        .await;
    assert_eq!((st, body["field"].as_str()), (400, Some("fieldSelector")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compacted_and_future_revisions_are_gone() {
    let (mut args, _cluster) = tokio::task::block_in_place(own_cluster_for_compaction);
    // On etcd every compaction's compare-and-swap is itself a revision: once
    // the history is longer than the window, it slides while idle, so the
    // window is wider there (but shorter than the 20 writes below, or
    // nothing is ever compacted).
    let history = if on_etcd() { "12" } else { "5" };
    args.extend(
        [
            "--history-revisions",
            history,
            "--compaction-interval",
            "100ms",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_args(&args);
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(rv(&realm(&s, &format!("r{i}")).await));
    }
    let acked = expected_revisions(revision_async(&s).await.min(acked[0] - 1), acked);
    // Before the first write (on redb, revision 1 is the first write).
    let first = if on_etcd() { acked[0] - 1 } else { 1 };
    let resume = async |s: &Server| {
        let mut w = Lines::open(&s.api(&format!("/watch?resourceVersion={}", acked[16]))).await;
        let revs: Vec<u64> = w.take(3).await.iter().map(event_rv).collect();
        assert_eq!(revs, acked[17..]);
    };
    if on_etcd() {
        // At once, before the sliding window passes it.
        resume(&s).await;
    }
    let c = AClient::default();
    let mut gone = false;
    for _ in 0..100 {
        let (st, body) = c
            .get(&s.api(&format!("/watch?resourceVersion={first}&timeoutSeconds=1")))
            .await;
        if st == 410 {
            assert_eq!(body["reason"], "Gone");
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "revision {first} was never compacted");
    if !on_etcd() {
        // The retained window still resumes.
        resume(&s).await;
    }
    let current = revision_async(&s).await;
    let resp = reqwest::get(s.api(&format!(
        "/watch?resourceVersion={current}&timeoutSeconds=1"
    )))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200, "the current revision itself is fine");
    let future = if on_etcd() {
        current + 1_000_000_000
    } else {
        999
    };
    let (st, body) = c
        .get(&s.api(&format!("/watch?resourceVersion={future}")))
        .await;
    assert_eq!((st, body["reason"].as_str()), (410, Some("Gone")));
    let (st, body) = c.get(&s.api("/cells?watch=true&resourceVersion=abc")).await;
    assert_eq!((st, body["field"].as_str()), (400, Some("resourceVersion")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_does_not_read_loses_nothing() {
    // A tiny in-memory buffer: the reader must fall behind it and catch up
    // from the event log.
    let s = Server::start_args(&["--watch-buffer", "16"]);
    let from = revision_async(&s).await;
    let mut w = Lines::open(&s.api(&format!("/watch?resourceVersion={from}"))).await;
    let writers = 32;
    let per_writer = 5000 / writers + 1;
    let mut tasks = Vec::new();
    for t in 0..writers {
        let url = s.api("/realms");
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked = Vec::new();
            for i in 0..per_writer {
                let resp = http
                    .post(&url)
                    .json(&json!({"metadata": {"name": format!("w{t}-{i}")}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201);
                acked.push(rv(&resp.json::<Value>().await.unwrap()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let total = (writers * per_writer) as u64;
    assert!(total >= 5000);
    let events = w.take(total as usize).await;
    let revs: Vec<u64> = events.iter().map(event_rv).collect();
    assert_eq!(
        revs,
        expected_revisions(from, acked),
        "every event, in order, once"
    );
    assert!(
        s.log_text().contains("catching up from the log"),
        "the reader should have fallen behind the in-memory buffer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_watchers_each_get_every_event() {
    // 1,000 connections on each side: raise the soft descriptor limit (the
    // server inherits it) in case the shell's is the common 1,024.
    rlimit::increase_nofile_limit(8192).expect("raise the open-file limit");
    let s = Server::start();
    let from = revision_async(&s).await;
    let url = s.api(&format!("/watch?resourceVersion={from}"));
    let mut watchers = Vec::new();
    for _ in 0..1000 {
        watchers.push(Lines::open(&url).await);
    }
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(rv(&realm(&s, &format!("r{i}")).await));
    }
    each_gets_the_next(watchers, expected_revisions(from, acked)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_watches_and_a_large_list_share_one_http2_connection() {
    // The server coalesces HTTP/2 writes: every stream must still get every
    // event, in order, and a list larger than the write buffer arrives whole.
    let s = Server::start();
    // A stranded write would hang a request: fail it instead.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let from = revision_async(&s).await;
    let url = s.api(&format!("/watch?kind=Realm&resourceVersion={from}"));
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers.push(Lines::open_with(&h2, &url).await);
    }
    let n = 300;
    // About 1.6 KB per realm: 20 labels of 60 characters.
    let labels: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("k{i}"), Value::from("v".repeat(60))))
        .collect();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (h2, url, labels) = (h2.clone(), s.api("/realms"), labels.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (w..n).step_by(4) {
                let body = json!({"metadata": {"name": format!("r{i}"), "labels": labels}});
                let resp = h2.post(&url).json(&body).send().await.unwrap();
                assert_eq!(resp.version(), reqwest::Version::HTTP_2);
                assert_eq!(resp.status(), 201);
                // From the ETag: reading the body could wait behind the
                // unread watch streams of this connection (flow control).
                let etag = resp.headers()["etag"].to_str().unwrap();
                acked.push(etag.trim_matches('"').parse::<u64>().unwrap());
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    each_gets_the_next(watchers, expected_revisions(from, acked)).await;
    let list = h2.get(s.api("/realms")).send().await.unwrap();
    assert_eq!(list.version(), reqwest::Version::HTTP_2);
    let body = list.bytes().await.unwrap();
    assert!(body.len() > 300 * 1200, "larger than the write buffer");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enormous_timeout_means_no_deadline() {
    let s = Server::start();
    realm(&s, "a").await;
    let mut w = Lines::open(&s.api("/watch?timeoutSeconds=18446744073709551615")).await;
    let e = w.next().await;
    assert_eq!((e["type"].as_str(), name(&e)), (Some("ADDED"), "a"));
    assert_eq!(w.next().await["type"], "BOOKMARK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_streams_get_bookmarks() {
    let s = Server::start_args(&["--bookmark-interval", "200ms"]);
    let a = rv(&realm(&s, "a").await);
    let mut w = Lines::open(&s.api(&format!("/realms?watch=true&resourceVersion={a}"))).await;
    let mut marks = Vec::new();
    for _ in 0..3 {
        let e = w
            .next_within(Duration::from_secs(2))
            .await
            .expect("a bookmark");
        assert_eq!(e["type"], "BOOKMARK");
        assert_eq!(e["object"]["kind"], "Realm");
        marks.push(event_rv(&e));
    }
    if on_etcd() {
        // Positions "everything up to etcd revision R" that keep advancing
        // while nothing is written (the replicas' heartbeats).
        assert!(
            marks.iter().all(|m| *m > a && m % 1_000_000 == 999_999),
            "{marks:?}"
        );
        assert!(marks.windows(2).all(|w| w[1] >= w[0]), "{marks:?}");
        assert!(marks[2] > marks[0], "bookmarks advance: {marks:?}");
    } else {
        assert_eq!(marks, [1, 1, 1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_framing() {
    let s = Server::start();
    let a = rv(&realm(&s, "a").await);
    let resp = reqwest::Client::new()
        .get(s.api("/watch?timeoutSeconds=1"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert!(frames[0].starts_with("event: ADDED\ndata: {"), "{text}");
    let id: u64 = frames[1]
        .strip_prefix("id: ")
        .and_then(|f| f.split_once("\nevent: BOOKMARK\ndata: {"))
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    if on_etcd() {
        assert!(id > a && id % 1_000_000 == 999_999, "{text}");
    } else {
        assert_eq!(id, 1, "{text}");
    }
    let data: Value = serde_json::from_str(frames[0].split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(data["object"]["metadata"]["name"], "a");
    // Last-Event-ID resumes like resourceVersion.
    let b = rv(&realm(&s, "b").await);
    let resp = reqwest::Client::new()
        .get(s.api("/watch?timeoutSeconds=1"))
        .header("accept", "text/event-stream")
        .header("last-event-id", id.to_string())
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(&format!("id: {b}\nevent: ADDED\ndata: ")),
        "{text}"
    );
    // One it cannot read is refused, not taken as "from the start".
    let resp = reqwest::Client::new()
        .get(s.api("/watch?timeoutSeconds=1"))
        .header("accept", "text/event-stream")
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes(b"1\xc2\x84").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_open_streams_promptly() {
    let mut s = Server::start();
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(Lines::open(&s.api("/watch")).await);
    }
    let took = tokio::task::block_in_place(|| s.stop());
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    for mut w in streams {
        let mut n = 0;
        while w.next_within(Duration::from_secs(2)).await.is_some() {
            n += 1;
            assert!(n < 10);
        }
    }
}

/// A copy of `tests/fixtures/NAME` as `old.redb` in a temporary directory.
fn fixture_copy(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("old.redb");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
        &data,
    )
    .unwrap();
    (dir, data)
}

/// The first `n` events of the watch at `query` on `s`, as "TYPE name rv".
async fn typed_events(s: &Server, query: &str, n: usize) -> Vec<String> {
    let mut w = Lines::open(&s.api(query)).await;
    w.take(n)
        .await
        .iter()
        .map(|e| format!("{} {} {}", e["type"], name(e), event_rv(e)))
        .collect()
}

/// A server started on a copy of the fixture `name` (a redb file of an
/// older format), whose log shows the migration `step`; `None` on etcd
/// (the migration of a redb file is redb's), saying so.
fn start_fixture(
    name: &str,
    step: &str,
) -> Option<(tempfile::TempDir, std::path::PathBuf, Server)> {
    if on_etcd() {
        eprintln!("skipping on etcd: the migration of {name}, a redb file, is redb's");
        return None;
    }
    let (dir, data) = fixture_copy(name);
    let s = Server::start_with(&data, &[]);
    assert!(s.log_text().contains(step), "{}", s.log_text());
    Some((dir, data, s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn format_1_database_migrates_once_and_watches() {
    let Some((dir, _, mut s)) = start_fixture("format-1.redb", "migrating database") else {
        return;
    };
    assert!(
        dir.path().join("old.format-1.bak").exists(),
        "the old file is copied aside first"
    );
    let c = AClient::default();
    let paths = [
        "/realms/demo",
        "/realms/demo/spaces/web",
        "/realms/demo/spaces/web/stacks/frontend",
        "/realms/demo/spaces/web/stacks/frontend/cells/shop",
        "/realms/demo/spaces/web/stacks/frontend/cells/shop/containers/sidecar",
        "/realms/other",
        "/realms/other/spaces/s2",
    ];
    for p in paths {
        let (st, body) = c.get(&s.api(p)).await;
        assert_eq!(st, 200, "{p}: {body}");
    }
    let (_, cell) = c.get(&s.api(paths[3])).await;
    assert_eq!(cell["status"]["state"], "Ready");
    assert_eq!(cell["spec"]["containers"].as_array().unwrap().len(), 3);
    assert_eq!(revision_async(&s).await, 8);
    // History before the migration does not exist: resuming from it is 410.
    let (st, _) = c.get(&s.api("/watch?resourceVersion=3")).await;
    assert_eq!(st, 410);
    let mut w = Lines::open(&s.api("/watch")).await;
    let events = w.take(8).await;
    assert!(events[..7].iter().all(|e| e["type"] == "ADDED"));
    assert_eq!(
        (events[7]["type"].as_str(), event_rv(&events[7])),
        (Some("BOOKMARK"), 8)
    );
    realm(&s, "new").await;
    assert_eq!(event_rv(&w.next().await), 9);
    drop(w);
    // Opening again is a no-op: no second migration.
    let before = std::fs::read(dir.path().join("old.format-1.bak")).unwrap();
    tokio::task::block_in_place(|| s.restart());
    assert!(
        !s.log_text().contains("migrating database"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        std::fs::read(dir.path().join("old.format-1.bak")).unwrap(),
        before
    );
    assert_eq!(revision_async(&s).await, 9);
    let mut w = Lines::open(&s.api("/watch?resourceVersion=8")).await;
    assert_eq!(name(&w.next().await), "new");
}

/// `tests/fixtures/format-2.redb` (see `tests/fixtures/README.md`): its
/// records and history are rewritten in record format 2, nothing else
/// changes, and the migration runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn format_2_database_migrates_its_records_and_keeps_its_history() {
    let Some((dir, data, mut s)) =
        start_fixture("format-2.redb", "rewrite every record in record format 2")
    else {
        return;
    };
    assert!(dir.path().join("old.format-2.bak").exists());
    let c = AClient::default();
    for p in [
        "/realms/demo",
        "/realms/demo/spaces/web",
        "/realms/demo/spaces/web/stacks/frontend",
        "/realms/demo/spaces/web/stacks/frontend/cells/shop",
        "/realms/demo/spaces/web/stacks/frontend/cells/shop/containers/sidecar",
        "/realms/other",
        "/realms/other/spaces/s2",
    ] {
        let (st, body) = c.get(&s.api(p)).await;
        assert_eq!(st, 200, "{p}: {body}");
    }
    let (_, shop) = c
        .get(&s.api("/realms/demo/spaces/web/stacks/frontend/cells/shop"))
        .await;
    assert_eq!(shop["status"]["state"], "Failed");
    assert_eq!(shop["spec"]["containers"].as_array().unwrap().len(), 3);
    let (_, other) = c.get(&s.api("/realms/other")).await;
    assert_eq!(other["metadata"]["labels"]["env"], "test");
    let (st, _) = c.get(&s.api("/realms/other/spaces/s2/stacks/t2")).await;
    assert_eq!(st, 404);
    assert_eq!(revision_async(&s).await, 12);
    // The history written by format 2 reads back, event by event.
    let got = typed_events(&s, "/watch?resourceVersion=8", 4).await;
    assert_eq!(
        got,
        [
            "\"MODIFIED\" other 9",
            "\"ADDED\" t2 10",
            "\"DELETED\" t2 11",
            "\"MODIFIED\" shop 12"
        ]
    );
    realm(&s, "after").await;
    s.stop();
    // Every record on disk is in record format 2 now.
    {
        use redb::{ReadableDatabase, ReadableTable};
        let db = redb::Database::open(&data).unwrap();
        let txn = db.begin_read().unwrap();
        for table in ["realms", "spaces", "stacks", "cells", "containers"] {
            let t = txn
                .open_table(redb::TableDefinition::<&[u8], &[u8]>::new(table))
                .unwrap();
            for entry in t.iter().unwrap() {
                let (_, v) = entry.unwrap();
                assert_eq!(v.value()[0], 2, "a {table} record");
            }
        }
        let events = txn
            .open_table(redb::TableDefinition::<u64, &[u8]>::new("events"))
            .unwrap();
        let n = events
            .iter()
            .unwrap()
            .map(|e| {
                let (_, v) = e.unwrap();
                // The migrated history in record format 2; what this build
                // wrote since, in event format 3.
                assert!([2, 3].contains(&v.value()[0]), "an event record");
            })
            .count();
        assert!(n >= 5, "the history is kept ({n} events)");
    }
    // Opening again migrates nothing.
    tokio::task::block_in_place(|| s.restart());
    assert!(
        !s.log_text().contains("migrating database"),
        "{}",
        s.log_text()
    );
    let (st, _) = c.get(&s.api("/realms/after")).await;
    assert_eq!(st, 200);
}

/// `tests/fixtures/format-3.redb` (see `tests/fixtures/README.md`): it
/// migrates to format 4 without a rewrite, its history reads back (its
/// events without previous versions), and the events this build writes
/// keep them: after a restart, a watch catching up from the log follows an
/// object in and out of its selection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn format_3_database_migrates_and_its_new_events_follow_selections() {
    let Some((dir, _, mut s)) = start_fixture("format-3.redb", "nothing rewritten") else {
        return;
    };
    assert!(dir.path().join("old.format-3.bak").exists());
    let c = AClient::default();
    let (_, other) = c.get(&s.api("/realms/other")).await;
    assert_eq!(other["metadata"]["labels"]["env"], "prod");
    let (_, s2) = c.get(&s.api("/realms/other/spaces/s2")).await;
    assert_eq!(s2["metadata"]["finalizers"], json!(["kukeon.io/runtime"]));
    assert!(s2["metadata"]["deletionTimestamp"].is_string(), "{s2}");
    assert_eq!(revision_async(&s).await, 16);
    // The history of format 3 reads back, event by event.
    let got = typed_events(&s, "/watch?resourceVersion=12", 4).await;
    assert_eq!(
        got,
        [
            "\"MODIFIED\" other 13",
            "\"MODIFIED\" s2 14",
            "\"MODIFIED\" s2 15",
            "\"MODIFIED\" shop 16"
        ]
    );
    // Two relabellings by this build, then a restart: the catch-up reads
    // them from the log, with their previous versions.
    for env in ["test", "staging"] {
        let r =
            c.0.patch(s.api("/realms/other"))
                .header("content-type", "application/merge-patch+json")
                .body(json!({"metadata": {"labels": {"env": env}}}).to_string())
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::task::block_in_place(|| s.restart());
    assert!(!s.log_text().contains("migrating database"));
    let mut w =
        Lines::open(&s.api("/watch?kind=Realm&resourceVersion=12&labelSelector=env%3Dtest")).await;
    let got: Vec<String> = w
        .take(2)
        .await
        .iter()
        .map(|e| format!("{} {} {}", e["type"], name(e), event_rv(e)))
        .collect();
    // Revision 13 (env=test to prod) is of format 3: filtered on its new
    // version alone, it sends nothing; 17 enters the selection, 18 leaves.
    assert_eq!(got, ["\"ADDED\" other 17", "\"DELETED\" other 18"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new.redb");
    {
        let db = redb::Database::create(&data).unwrap();
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(def)
            .unwrap()
            .insert("format_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format 99") && err.contains("(4)"), "{err}");
}
