//! Hostile, broken and greedy clients against a real server: each attack
//! gets its clear 4xx/429 or is cut off, the server's RSS stays under
//! [`RSS_BOUND_MIB`], and a well-behaved client running beside the attack
//! has every request answered within [`LIVENESS`] (its p99 is printed).
//!
//! Sizes are kept small enough for CI (the whole file runs in well under a
//! minute); `HOSTILE_BIG=1` runs the sizes of the issue (5,000 cells and
//! 2,000 non-reading watchers, a 1 GB body).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Client, Server, assert_problem, create_realm, create_token, first_admin};
use serde_json::json;

/// The server's RSS must stay under this during every attack.
const RSS_BOUND_MIB: u64 = 512;
/// Every request of the well-behaved client is answered within this.
const LIVENESS: Duration = Duration::from_secs(5);

fn big() -> bool {
    std::env::var_os("HOSTILE_BIG").is_some()
}

/// A well-behaved client reading one realm every 20 ms until stopped,
/// while it also samples the server's RSS.
struct Bystander {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    handle: JoinHandle<Vec<Duration>>,
}

impl Bystander {
    /// Starts it, anonymous (while no token exists); `realm` must exist.
    fn start(s: &Server, realm: &str) -> Bystander {
        Bystander::start_as(s, realm, None, false)
    }

    /// Starts it with `token`; with `write_status`, each of its requests
    /// replaces the realm's status (a reconciler's write) instead of
    /// reading it.
    fn start_as(s: &Server, realm: &str, token: Option<&str>, write_status: bool) -> Bystander {
        let (stop, peak_rss) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let url = s.api(&format!("/realms/{realm}"));
        let pid = s.pid();
        let (stop2, peak2) = (stop.clone(), peak_rss.clone());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        // Started once its first request was answered, so that every
        // attack has it running beside.
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(LIVENESS)
                .default_headers(headers)
                .build()
                .unwrap();
            let mut took = Vec::new();
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let t = Instant::now();
                n += 1;
                let r = if write_status {
                    http.put(format!("{url}/status"))
                        .json(&json!({"status": {"state": if n.is_multiple_of(2) { "Ready" } else { "Creating" }}}))
                        .send()
                } else {
                    http.get(&url).send()
                };
                let status = r.as_ref().map(|r| r.status().as_u16()).ok();
                let body = r.and_then(|r| r.text()).unwrap_or_default();
                took.push(t.elapsed());
                let _ = first_tx.send(());
                assert_eq!(status, Some(200), "the well-behaved read failed: {body}");
                peak2.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            took
        });
        let _ = first_rx.recv_timeout(LIVENESS);
        Bystander {
            stop,
            peak_rss,
            handle,
        }
    }

    /// Stops it, prints its p99 and the peak RSS, and asserts both bounds.
    fn finish(self, attack: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let mut took = self
            .handle
            .join()
            .expect("the well-behaved client panicked");
        took.sort();
        assert!(
            !took.is_empty(),
            "{attack}: the well-behaved client sent nothing"
        );
        let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
        let max = *took.last().unwrap();
        let peak = self.peak_rss.load(Ordering::Relaxed);
        println!(
            "{attack}: well-behaved client: {} requests, p99 {:.1} ms, max {:.1} ms; server \
             peak RSS {peak} MiB",
            took.len(),
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
        );
        assert!(
            max < LIVENESS,
            "{attack}: a well-behaved request took {max:?}"
        );
        assert!(peak < RSS_BOUND_MIB, "{attack}: RSS reached {peak} MiB");
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// Connects to the server's port.
fn connect(s: &Server) -> TcpStream {
    let addr = s.base.trim_start_matches("http://");
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(LIVENESS)).unwrap();
    c
}

/// Reads a response's head and as much body as arrives before the
/// connection closes (or `limit` bytes): status line and the rest.
fn read_response(c: &mut TcpStream, limit: usize) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while buf.len() < limit {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            // Enough for a problem body: its length is given.
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| buf.len() >= end + 4 + n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_yaml_alias_bomb_is_refused_at_once() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    // Nine levels of nine aliases: 9^9 (387 million) strings if expanded.
    let mut bomb = String::from("apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: lol\n");
    bomb.push_str(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    // Apply reads documents into generic values: the aliases are expanded
    // there, up to the parser's budget. An object's own route refuses the
    // unknown top-level anchors before expanding anything.
    let attack = Instant::now();
    let mut rounds = 0;
    while rounds == 0 || attack.elapsed() < Duration::from_secs(2) {
        for path in ["/apply", "/realms"] {
            let t = Instant::now();
            let r = c.post_yaml(&s.api(path), &bomb);
            let took = t.elapsed();
            assert_problem(&r, 400, "BadRequest", None);
            assert!(took < Duration::from_secs(2), "{path}: took {took:?}");
            if rounds == 0 {
                println!(
                    "YAML bomb on {path}: 400 in {:.1} ms: {}",
                    took.as_secs_f64() * 1e3,
                    r.1["detail"]
                );
            }
        }
        rounds += 1;
    }
    by.finish("YAML alias bomb");
}

#[test]
fn deep_json_and_invalid_utf8_are_refused_at_once() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    let deep = "[".repeat(200_000) + &"]".repeat(200_000);
    let attack = Instant::now();
    while attack.elapsed() < Duration::from_secs(2) {
        for (method, path, ctype) in [
            ("POST", "/realms", "application/json"),
            ("POST", "/apply", "application/json"),
            ("PATCH", "/realms/calm", "application/merge-patch+json"),
        ] {
            let t = Instant::now();
            let req = c
                .http
                .request(method.parse().unwrap(), s.api(path))
                .header("content-type", ctype)
                .body(deep.clone());
            let r = c.send(req);
            assert_problem(&r, 400, "BadRequest", None);
            let detail = r.1["detail"].as_str().unwrap();
            assert!(detail.contains("--max-json-depth"), "{detail}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{path}: {:?}",
                t.elapsed()
            );
        }
    }
    // Under the limit, the nesting itself is no reason for a refusal.
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "fine", "labels": {"a": "b"}}}),
    );
    assert_eq!(st, 201, "{b}");
    // Invalid UTF-8 in a string, as JSON and as YAML.
    for (ctype, body) in [
        (
            "application/json",
            &b"{\"metadata\":{\"name\":\"x\xff\xfe\"}}"[..],
        ),
        (
            "application/yaml",
            &b"metadata:\n  name: \"x\xc3\x28\"\n"[..],
        ),
    ] {
        let req = c
            .http
            .post(s.api("/realms"))
            .header("content-type", ctype)
            .body(body.to_vec());
        let r = c.send(req);
        assert_problem(&r, 400, "BadRequest", None);
        assert!(r.1["detail"].as_str().unwrap().contains("UTF-8"), "{}", r.1);
    }
    by.finish("deep JSON and invalid UTF-8");
}

#[test]
fn long_urls_and_big_applies_are_refused_naming_the_limit() {
    let s = Server::start_args(&["--max-apply-documents", "10", "--max-uri-bytes", "1024"]);
    let c = Client::default();
    let long = s.api(&format!("/realms?labelSelector=a%3D{}", "x".repeat(2000)));
    let r = c.get(&long);
    assert_problem(&r, 414, "BadRequest", None);
    assert!(r.1["detail"].as_str().unwrap().contains("--max-uri-bytes"));
    // Probes are short: still served.
    assert_eq!(c.get(&format!("{}/healthz", s.base)).0, 200);
    let docs = |n: usize| {
        (0..n)
            .map(|i| format!("apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: r{i}\n"))
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let r = c.post_yaml(&s.api("/apply"), &docs(11));
    assert_problem(&r, 413, "PayloadTooLarge", None);
    assert!(
        r.1["detail"]
            .as_str()
            .unwrap()
            .contains("--max-apply-documents")
    );
    let arr: Vec<_> = (0..11)
        .map(|i| json!({"kind": "Realm", "metadata": {"name": format!("j{i}")}}))
        .collect();
    let r = c.post_json(&s.api("/apply"), &json!(arr));
    assert_problem(&r, 413, "PayloadTooLarge", None);
    // Nothing of a refused apply was written; ten documents are fine.
    assert_eq!(c.get(&s.api("/realms/r0")).0, 404);
    assert_eq!(c.post_yaml(&s.api("/apply"), &docs(10)).0, 200);
}

#[test]
fn a_100_mb_body_is_cut_off_with_413() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    let total: usize = if big() { 1 << 30 } else { 100 << 20 };
    let before = s.rss_mib();
    // Declared up front: refused before a byte of the body is read.
    let mut conn = connect(&s);
    let head = format!(
        "POST /api/v1beta1/realms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {total}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    let (status, text) = read_response(&mut conn, 64 * 1024);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("--max-body-bytes"), "{text}");
    // Streamed (chunked, no length): cut off at the limit while it is
    // still being sent; the rest is never read.
    let mut conn = connect(&s);
    conn.write_all(
        b"POST /api/v1beta1/realms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let mut reader = conn.try_clone().unwrap();
    let answer = std::thread::spawn(move || read_response(&mut reader, 64 * 1024));
    let chunk = vec![b' '; 1 << 20];
    let framed = [
        format!("{:x}\r\n", chunk.len()).into_bytes(),
        chunk,
        b"\r\n".to_vec(),
    ]
    .concat();
    let mut sent = 0usize;
    let t = Instant::now();
    while sent < total {
        if conn.write_all(&framed).is_err() {
            break;
        }
        sent += 1 << 20;
    }
    let (status, text) = answer.join().unwrap();
    println!(
        "streamed body: {} MiB accepted by the socket before the cut, in {:?}; answer {status}",
        sent >> 20,
        t.elapsed()
    );
    assert!(sent < total, "the server read the whole {total}-byte body");
    // The answer may be lost to the reset of a connection closed with
    // unread data; when it arrives, it is the 413.
    assert!(status == 413 || status == 0, "{text}");
    // At most the limit (16 MiB) was ever buffered.
    let after = s.rss_mib();
    assert!(after < before + 64, "RSS {before} -> {after} MiB");
    by.finish("100 MB body");
}

#[test]
fn a_request_holding_its_place_makes_the_next_one_429() {
    let s = Server::start_args(&["--max-requests-in-flight-per-identity", "1"]);
    let c = Client::default();
    // A POST whose body never comes holds its place in flight. If it came
    // while a GET held the place, it was answered 429 at once: then it is
    // sent again.
    let open_slow = || {
        let mut c = connect(&s);
        c.write_all(
            b"POST /api/v1beta1/realms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n",
        )
        .unwrap();
        c
    };
    let answered = |c: &TcpStream| {
        c.set_nonblocking(true).unwrap();
        let got = c.peek(&mut [0u8; 1]);
        c.set_nonblocking(false).unwrap();
        !matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    let mut slow = open_slow();
    let deadline = Instant::now() + LIVENESS;
    let r = loop {
        std::thread::sleep(Duration::from_millis(20));
        let r = c.get(&s.api("/realms"));
        if r.0 == 429 || Instant::now() > deadline {
            break r;
        }
        if answered(&slow) {
            slow = open_slow();
        }
    };
    assert_problem(&r, 429, "TooManyRequests", None);
    assert!(
        r.1["detail"]
            .as_str()
            .unwrap()
            .contains("--max-requests-in-flight-per-identity")
    );
    // Probes are never limited.
    for probe in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(c.get(&format!("{}{probe}", s.base)).0, 200, "{probe}");
    }
    // Its place comes back once it is answered.
    slow.write_all(&[b' '; 100]).unwrap();
    let _ = read_response(&mut slow, 64 * 1024);
    assert_eq!(c.get(&s.api("/realms")).0, 200);
}

/// Raises the open-file limit to `want`, or explains why not.
fn raise_nofile(want: u64) -> Result<(), String> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(|e| e.to_string())?;
    if soft >= want {
        return Ok(());
    }
    let got = rlimit::increase_nofile_limit(want).map_err(|e| e.to_string())?;
    if got < want {
        return Err(format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}); {want} are needed and only {got} could be had"
        ));
    }
    Ok(())
}

#[test]
fn ten_thousand_watches_from_one_identity_get_429_past_the_cap() {
    let requests: usize = 10_000;
    let cap: usize = 1000;
    // The client and the server (which inherits the limit) each hold a
    // descriptor per accepted watch.
    if let Err(why) = raise_nofile(requests as u64 + 2000) {
        println!("SKIPPED: cannot open {requests} connections: {why}");
        return;
    }
    let s = Server::start_args(&["--max-watches-per-identity", &cap.to_string()]);
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    let t = Instant::now();
    let addr = s.base.trim_start_matches("http://").to_string();
    // Four threads open connections and send a watch each; those that are
    // accepted are kept open, unread.
    let results: Vec<(usize, usize, usize, Vec<TcpStream>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let addr = addr.clone();
                scope.spawn(move || {
                    let (mut ok, mut refused, mut other, mut open) = (0, 0, 0, Vec::new());
                    for _ in 0..requests / 4 {
                        let mut conn = TcpStream::connect(&addr).expect("connect");
                        conn.set_read_timeout(Some(LIVENESS)).unwrap();
                        conn.write_all(
                            b"GET /api/v1beta1/realms?watch=true HTTP/1.1\r\nHost: x\r\n\r\n",
                        )
                        .unwrap();
                        let mut head = [0u8; 12];
                        let status = conn
                            .read_exact(&mut head)
                            .ok()
                            .and_then(|()| std::str::from_utf8(&head[9..12]).ok()?.parse().ok());
                        match status {
                            Some(200) => {
                                ok += 1;
                                open.push(conn);
                            }
                            Some(429) => refused += 1,
                            _ => other += 1,
                        }
                    }
                    (ok, refused, other, open)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|r| r.0).sum();
    let refused: usize = results.iter().map(|r| r.1).sum();
    let other: usize = results.iter().map(|r| r.2).sum();
    println!(
        "{requests} watch requests in {:?}: 200 {ok}, 429 {refused}, other {other}; RSS {} MiB",
        t.elapsed(),
        s.rss_mib()
    );
    assert_eq!((ok, refused, other), (cap, requests - cap, 0));
    let metrics = common::metrics_text(&c, &s);
    let line = format!("modelhub_limit_refusals_total{{cap=\"watches_per_identity\"}} {refused}");
    assert!(metrics.contains(&line), "no {line:?} in {metrics}");
    // The places come back when the streams end.
    drop(results);
    let deadline = Instant::now() + LIVENESS;
    loop {
        let mut conn = connect(&s);
        conn.write_all(b"GET /api/v1beta1/realms?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).unwrap();
        if &head[9..12] == b"200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch places never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    by.finish("10,000 watch requests");
}

/// Creates realm `r`, space `s`, stack `t` and `n` cells in applies of
/// at most 1,000 documents.
fn cells(c: &Client, s: &Server, n: usize) {
    let head = "apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: r\n---\napiVersion: v1beta1\n\
                kind: Space\nmetadata:\n  name: s\nspec:\n  realmId: r\n---\napiVersion: v1beta1\n\
                kind: Stack\nmetadata:\n  name: t\nspec:\n  realmId: r\n  spaceId: s\n";
    assert_eq!(c.post_yaml(&s.api("/apply"), head).0, 200);
    for start in (0..n).step_by(1000) {
        let docs: Vec<String> = (start..n.min(start + 1000))
            .map(|i| {
                format!(
                    "apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: c{i}\n  labels:\n    \
                     app: web\nspec:\n  realmId: r\n  spaceId: s\n  stackId: t\n  containers:\n  \
                     - id: main\n    image: registry.example.com/app:{i}\n    command: /bin/server\n    \
                     args: [--port, '8080', --verbose]\n    env: [A=1, B=2, C=3]\n"
                )
            })
            .collect();
        let (st, b) = c.post_yaml(&s.api("/apply"), &docs.join("---\n"));
        assert_eq!(st, 200, "{b}");
    }
}

#[test]
fn snapshot_watchers_that_never_read_hold_bounded_memory() {
    let (n_cells, watchers) = if big() { (5000, 2000) } else { (2000, 400) };
    if let Err(why) = raise_nofile(watchers as u64 + 1000) {
        println!("SKIPPED: cannot open {watchers} connections: {why}");
        return;
    }
    let s = Server::start_args(&["--max-watches-per-identity", "100000"]);
    let c = Client::default();
    cells(&c, &s, n_cells);
    create_realm(&c, &s, "calm");
    let list = c
        .http
        .get(s.api("/cells"))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .len();
    let before = s.rss_mib();
    let by = Bystander::start(&s, "calm");
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut open = Vec::new();
    for _ in 0..watchers {
        let mut conn = TcpStream::connect(&addr).expect("connect");
        // A small receive window: the server's writes stall at once.
        small_rcvbuf(&conn);
        conn.write_all(b"GET /api/v1beta1/cells?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        open.push(conn);
    }
    // Let every stream write what it can.
    std::thread::sleep(Duration::from_secs(3));
    let after = s.rss_mib();
    let per = (after.saturating_sub(before) * 1024) / watchers as u64;
    println!(
        "{watchers} non-reading snapshot watchers of {n_cells} cells ({list} bytes a list): RSS \
         {before} -> {after} MiB ({per} KiB a watcher)"
    );
    // A watcher holds one page and the connection's write buffer, not
    // its snapshot.
    assert!(per < 600, "{per} KiB a watcher");
    drop(open);
    by.finish("non-reading snapshot watchers");
}

/// A small receive buffer on `conn`, so that the server's writes stall
/// after a few KiB in the kernel (best effort).
fn small_rcvbuf(conn: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(conn, 4096);
}

#[test]
fn a_flood_of_writes_gets_429_and_no_5xx() {
    let s = Server::start_args(&["--write-queue", "4"]);
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    let (threads, each) = if big() { (128, 200) } else { (64, 40) };
    let t = Instant::now();
    let statuses = common::in_threads(threads, each, |c, th, i| {
        let r = c.send(
            c.http
                .post(s.api("/realms"))
                .json(&json!({"metadata": {"name": format!("f{th}-{i}")}})),
        );
        if r.0 == 429 {
            assert_problem(&r, 429, "TooManyRequests", None);
        }
        r.0
    });
    let count = |want: u16| statuses.iter().filter(|&&s| s == want).count();
    let (created, refused) = (count(201), count(429));
    println!(
        "{} creates from {threads} threads in {:?}: 201 {created}, 429 {refused}",
        statuses.len(),
        t.elapsed()
    );
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 429),
        "{statuses:?}"
    );
    assert!(refused > 0, "no write was refused");
    assert!(created > 0, "no write went through");
    by.finish("write flood");
    // A refused write left nothing behind: every 201 is there, no more.
    let (_, list) = c.get(&s.api("/realms"));
    assert_eq!(list["items"].as_array().unwrap().len(), created + 1);
}

/// Writers that fill their share of the requests in flight get 429, while
/// a controller writing status (as kukeon's reconciler does) still gets
/// through; then a flood of writes from two writer identities beside the
/// controller's status writes: the controller is never refused nor kept
/// waiting.
#[test]
fn a_writer_flood_does_not_starve_the_controller() {
    let s = Server::start_args(&["--max-requests-in-flight", "16"]);
    let (admin, _) = first_admin(&s);
    create_realm(&admin, &s, "calm");
    let controller = create_token(&admin, &s, json!({"name": "kukeon", "role": "controller"}));
    let writers: Vec<String> = (0..2)
        .map(|i| {
            create_token(
                &admin,
                &s,
                json!({"name": format!("w{i}"), "role": "writer"}),
            )
        })
        .collect();
    // The writers' share (three quarters of 16) held by POSTs whose
    // bodies never come.
    let mut held = Vec::new();
    for i in 0..12 {
        let mut c = connect(&s);
        c.write_all(
            format!(
                "POST /api/v1beta1/realms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
                writers[i % 2]
            )
            .as_bytes(),
        )
        .unwrap();
        held.push(c);
    }
    let writer = Client::with_token(&writers[0]);
    let deadline = Instant::now() + LIVENESS;
    let r = loop {
        let r = writer.get(&s.api("/realms/calm"));
        if r.0 == 429 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_problem(&r, 429, "TooManyRequests", None);
    let c = Client::with_token(&controller);
    let (st, body) = c.put_json(
        &s.api("/realms/calm/status"),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "the controller was shut out: {body}");
    drop(held);
    let by = Bystander::start_as(&s, "calm", Some(&controller), true);
    let (threads, each) = if big() { (128, 100) } else { (64, 30) };
    let t = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|th| {
                let (s, token) = (&s, &writers[th % 2]);
                scope.spawn(move || {
                    let c = Client::with_token(token);
                    (0..each)
                        .map(|i| {
                            c.post_json(
                                &s.api("/realms"),
                                &json!({"metadata": {"name": format!("f{th}-{i}")}}),
                            )
                            .0
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
    let count = |want: u16| statuses.iter().filter(|&&s| s == want).count();
    println!(
        "{} writer creates from {threads} threads in {:?}: 201 {}, 429 {}",
        statuses.len(),
        t.elapsed(),
        count(201),
        count(429)
    );
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 429),
        "{statuses:?}"
    );
    by.finish("writer flood beside a controller");
}

/// 10,000 labels, and one label of 1 MB: 422 at once, nothing stored.
#[test]
fn ten_thousand_labels_are_refused() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (name, labels) in [
        ("many", serde_json::Value::Object(labels)),
        ("huge", json!({"k": "v".repeat(1 << 20)})),
    ] {
        let t = Instant::now();
        let r = c.post_json(
            &s.api("/realms"),
            &json!({"metadata": {"name": name, "labels": labels}}),
        );
        assert_problem(&r, 422, "Invalid", None);
        assert!(t.elapsed() < LIVENESS);
        assert_eq!(c.get(&s.api(&format!("/realms/{name}"))).0, 404);
    }
    by.finish("10,000 labels");
}

/// 1,000 connections that send half a request head are all closed
/// shortly after the header timeout, beside a well-behaved client.
#[test]
fn a_thousand_slowloris_connections_are_cut_off() {
    let n = 1000;
    if let Err(why) = raise_nofile(n as u64 * 2 + 1000) {
        println!("SKIPPED: cannot open {n} connections: {why}");
        return;
    }
    let s = Server::start_args(&["--header-timeout", "2s"]);
    let c = Client::default();
    create_realm(&c, &s, "calm");
    let by = Bystander::start(&s, "calm");
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut conn = connect(&s);
            conn.write_all(b"GET /api/v1beta1/realms HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            conn
        })
        .collect();
    let opened = Instant::now();
    let mut closed = 0;
    for conn in &mut conns {
        conn.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut buf = [0u8; 256];
        // Closed: end of stream, a reset, or an answer then end of stream.
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        closed += 1;
    }
    let took = opened.elapsed();
    println!("{closed} slowloris connections closed {took:?} after the last opened");
    assert_eq!(closed, n);
    assert!(took < Duration::from_secs(8), "{took:?}");
    by.finish("1,000 slowloris connections");
}

/// Unpaged list downloads that are never read keep their places in flight
/// (their responses are not sent), so one identity opening many of them
/// gets 429 past its cap; another identity's reads go on; and once the
/// responses made no progress for the idle timeout, the server drops
/// those connections and the places come back, while the client still
/// holds its sockets.
#[test]
fn list_downloads_that_are_never_read_hold_their_places() {
    let cap = 8;
    let s = Server::start_args(&[
        "--max-requests-in-flight-per-identity",
        &cap.to_string(),
        "--idle-timeout",
        "3s",
    ]);
    let (admin, _) = first_admin(&s);
    cells(&admin, &s, 0);
    // 500 cells of about 15 KiB each (60 labels of 240 bytes): a list of
    // about 7 MiB, more than the sockets between them buffer.
    let value = "v".repeat(240);
    for start in (0..500).step_by(100) {
        let docs: Vec<String> = (start..start + 100)
            .map(|i| {
                let labels: String = (0..60).map(|l| format!("    l{l}: {value}\n")).collect();
                format!(
                    "apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: big{i}\n  labels:\n    \
                     app: web\n{labels}spec:\n  realmId: r\n  spaceId: s\n  stackId: t\n"
                )
            })
            .collect();
        let (st, b) = admin.post_yaml(&s.api("/apply"), &docs.join("---\n"));
        assert_eq!(st, 200, "{b}");
    }
    let attacker = create_token(&admin, &s, json!({"name": "greedy", "role": "reader"}));
    let calm = create_token(&admin, &s, json!({"name": "calm", "role": "reader"}));
    let by = Bystander::start_as(&s, "r", Some(&calm), false);
    let mut held = Vec::new();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..cap * 3 {
        let conn = connect(&s);
        small_rcvbuf(&conn);
        let mut conn = conn;
        // Each a different selector, so none is served whole from the
        // list cache; all match every cell.
        conn.write_all(
            format!(
                "GET /api/v1beta1/cells?labelSelector=app%3Dweb,x{i}!%3Dy HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {attacker}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).unwrap();
        match &head[9..12] {
            b"200" => ok += 1,
            b"429" => refused += 1,
            other => panic!("status {}", String::from_utf8_lossy(other)),
        }
        held.push(conn);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{} unread list downloads: {ok} x 200, {refused} x 429",
        cap * 3
    );

    assert_eq!(ok, cap, "{ok} downloads were let in");
    assert_eq!(refused, cap * 2);
    by.finish("unread list downloads");
    // The stalled responses are dropped by the server after the idle
    // timeout: the identity gets its places back, its sockets still open.
    let deadline = Instant::now() + Duration::from_secs(12);
    let t = Instant::now();
    loop {
        let r = Client::with_token(&attacker).get(&s.api("/realms/r"));
        if r.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "places never came back: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("places back {:?} after the last download", t.elapsed());
    drop(held);
}

/// Token changes wait for room in a write queue a flood keeps full: an
/// admin can create and revoke tokens while writers get 429.
#[test]
fn tokens_change_while_a_flood_fills_the_write_queue() {
    let s = Server::start_args(&["--write-queue", "2"]);
    let (admin, _) = first_admin(&s);
    let writer = create_token(&admin, &s, json!({"name": "flood", "role": "writer"}));
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let flood: Vec<JoinHandle<()>> = (0..32)
        .map(|t| {
            let (stop, refused) = (stop.clone(), refused.clone());
            let (c, url) = (Client::with_token(&writer), s.api("/realms"));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = c.post_json(&url, &json!({"metadata": {"name": format!("f{t}-{i}")}}));
                    if r.0 == 429 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The token changes start once the flood has filled the queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the flood never filled the queue"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut took = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let (st, body) = admin.post_json(
            &s.api("/tokens"),
            &json!({"name": format!("t{i}"), "role": "reader"}),
        );
        assert_eq!(st, 201, "create t{i} during the flood: {body}");
        let (st, body) = admin.delete(&s.api(&format!("/tokens/t{i}")));
        assert_eq!(st, 200, "revoke t{i} during the flood: {body}");
        took.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for h in flood {
        h.join().unwrap();
    }
    let refused = refused.load(Ordering::Relaxed);
    took.sort();
    println!(
        "20 token create+revoke pairs during a flood ({refused} writes refused 429): max {:?}",
        took.last().unwrap()
    );
    assert!(*took.last().unwrap() < LIVENESS);
}
