//! Test harness: runs the real `modelhub` binary on an ephemeral port with
//! a temporary database, captures its log, and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod etcd;

/// Whether the suites run on etcd: `MODELHUB_TEST_STORE=etcd` (`redb`, the
/// default, or unset: on redb). On etcd every server the harness starts
/// stores its objects under its own prefix of one shared 3-member cluster
/// ([`etcd::shared`]); tests assert intended differences with this.
pub fn on_etcd() -> bool {
    match std::env::var("MODELHUB_TEST_STORE") {
        Ok(v) if v == "etcd" => true,
        Ok(v) if v.is_empty() || v == "redb" => false,
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) => panic!("MODELHUB_TEST_STORE={v:?}: expected etcd or redb"),
        Err(e) => panic!("MODELHUB_TEST_STORE: {e}"),
    }
}

/// The cluster servers run on under `MODELHUB_TEST_STORE=etcd`; panics
/// without an etcd binary (never falls back to redb).
pub fn etcd_cluster() -> &'static etcd::Cluster {
    etcd::shared().unwrap_or_else(|| {
        panic!(
            "MODELHUB_TEST_STORE=etcd but there is no etcd binary: set MODELHUB_ETCD_BIN \
             or install etcd-server (the suites do not fall back to redb)"
        )
    })
}

/// The shared example manifests.
pub fn shared_example(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/examples")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The database file.
    pub data: PathBuf,
    /// Everything the server wrote to stderr (its log).
    pub log: Arc<Mutex<String>>,
    /// The extra arguments it was started with (kept across restarts).
    pub extra: Vec<String>,
    /// Every listener's address as printed (`http://...`, `https://...`,
    /// `unix:/path`), the first one's being `base`.
    pub addresses: Vec<String>,
    /// The etcd prefix it stores under when it runs on the shared etcd
    /// cluster ([`on_etcd`]); kept across restarts.
    pub etcd_prefix: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh temporary database.
    pub fn start() -> Server {
        Server::start_args(&[])
    }

    /// Starts a server on a fresh temporary database with extra arguments.
    pub fn start_args(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("hub.redb");
        let mut s = Server::start_with(&data, extra);
        s._dir = Some(dir);
        s
    }

    /// Starts a server on `data` with extra arguments.
    pub fn start_with(data: &Path, extra: &[&str]) -> Server {
        Server::start_full(data, "127.0.0.1:0", extra)
    }

    /// Starts a server on `data`, listening on `listen`, with extra arguments.
    /// Under [`on_etcd`] (unless `extra` chooses a `--store`) it runs on the
    /// shared etcd cluster, under a fresh prefix; `data` is then unused.
    pub fn start_full(data: &Path, listen: &str, extra: &[&str]) -> Server {
        let own_store = extra
            .iter()
            .any(|a| *a == "--store" || a.starts_with("--store="));
        let prefix = (on_etcd() && !own_store).then(etcd::next_prefix);
        Server::spawn(data, listen, extra, prefix)
    }

    /// Starts `modelhub serve`; on the shared etcd cluster under `prefix`
    /// if given.
    fn spawn(data: &Path, listen: &str, extra: &[&str], prefix: Option<String>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelhub"));
        cmd.args(["serve", "--listen", listen, "--data"]).arg(data);
        if let Some(prefix) = &prefix {
            cmd.args(["--store", "etcd", "--etcd-endpoints"])
                .arg(etcd_cluster().endpoints())
                .args(["--etcd-prefix", prefix]);
        }
        let mut child = cmd
            .args(extra)
            .env("RUST_LOG", "debug")
            // No 32 MiB spare file per test server (tests that want one
            // pass --spare-space).
            .env("MODELHUB_SPARE_SPACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn modelhub");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // One line per listener: the one given here, then each value of
        // every `--listen` among the extra arguments.
        let listeners = 1 + extra
            .iter()
            .zip(extra.iter().skip(1))
            .filter(|(flag, _)| *flag == &"--listen")
            .map(|(_, value)| value.split(',').count())
            .sum::<usize>();
        let mut addresses = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read stdout");
            let address = line
                .trim()
                .strip_prefix("modelhub listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}; log: {}", log.lock().unwrap()))
                .to_string();
            addresses.push(address);
        }
        let base = addresses[0].clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
        });
        Server {
            child: Some(child),
            base,
            data: data.to_path_buf(),
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            addresses,
            etcd_prefix: prefix,
            _dir: None,
        }
    }

    /// The path of the first unix-socket listener.
    pub fn socket(&self) -> PathBuf {
        self.addresses
            .iter()
            .find_map(|a| a.strip_prefix("unix:"))
            .map(PathBuf::from)
            .expect("a unix-socket listener")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `base` + `/api/v1beta1` + `path`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1beta1{}", self.base, path)
    }

    /// Sends SIGTERM and waits for exit; returns how long it took.
    pub fn stop(&mut self) -> Duration {
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let start = Instant::now();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "server exited with {status}; log: {}",
            self.log.lock().unwrap()
        );
        start.elapsed()
    }

    /// Stops this server and starts another on the same database and the
    /// same address, so clients can reconnect.
    pub fn restart(&mut self) {
        self.stop();
        let dir = self._dir.take();
        let listen = self
            .base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut next = Server::spawn(&self.data, &listen, &extra, self.etcd_prefix.clone());
        next._dir = dir;
        std::mem::swap(self, &mut next);
    }

    /// The server's resident memory (`VmRSS` of `/proc/PID/status`), MiB.
    pub fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib / 1024
    }

    /// The captured log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `f(client, thread, i)` for `i` in `0..each` on each of `threads`
/// threads at once, every thread with its own client; answers the results,
/// thread by thread, each in call order.
pub fn in_threads<T: Send>(
    threads: usize,
    each: usize,
    f: impl Fn(&Client, usize, usize) -> T + Sync,
) -> Vec<T> {
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let c = Client::default();
                    (0..each).map(|i| f(&c, t, i)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// A blocking client with helpers returning (status, JSON body).
pub struct Client {
    pub http: reqwest::blocking::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }
}

impl Client {
    /// A client sending `Authorization: Bearer TOKEN` on every request.
    pub fn with_token(token: &str) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        Client {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }
}

/// The server's `/metrics` text, read through `c`.
pub fn metrics_text(c: &Client, s: &Server) -> String {
    c.http
        .get(format!("{}/metrics", s.base))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// Creates a token through `c` (an admin) and answers the token string.
pub fn create_token(c: &Client, s: &Server, body: Value) -> String {
    let (st, b) = c.post_json(&s.api("/tokens"), &body);
    assert_eq!(st, 201, "{b}");
    b["token"].as_str().expect("a token").to_string()
}

/// Creates the first admin token anonymously (allowed while none exists
/// on a loopback server) and answers a client using it.
pub fn first_admin(s: &Server) -> (Client, String) {
    let token = create_token(
        &Client::default(),
        s,
        serde_json::json!({"name": "root", "role": "admin"}),
    );
    (Client::with_token(&token), token)
}

/// Status and parsed body (Null when empty or not JSON).
pub type Reply = (u16, Value);

fn reply(r: reqwest::blocking::Response) -> Reply {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Client {
    pub fn get(&self, url: &str) -> Reply {
        reply(self.http.get(url).send().unwrap())
    }
    pub fn post_json(&self, url: &str, body: &Value) -> Reply {
        reply(self.http.post(url).json(body).send().unwrap())
    }
    pub fn post_yaml(&self, url: &str, body: &str) -> Reply {
        reply(
            self.http
                .post(url)
                .header("content-type", "application/yaml")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    }
    pub fn put_json(&self, url: &str, body: &Value) -> Reply {
        reply(self.http.put(url).json(body).send().unwrap())
    }
    pub fn patch(&self, url: &str, body: &Value) -> Reply {
        reply(
            self.http
                .patch(url)
                .header("content-type", "application/merge-patch+json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    }
    pub fn delete(&self, url: &str) -> Reply {
        reply(self.http.delete(url).send().unwrap())
    }
    pub fn raw(&self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::Response {
        req.send().unwrap()
    }
}

/// POSTs an object with only a name to the collection at `collection` (an
/// API path) and asserts it was created.
pub fn create_named(c: &Client, s: &Server, collection: &str, name: &str) {
    let (st, b) = c.post_json(
        &s.api(collection),
        &serde_json::json!({"metadata": {"name": name}}),
    );
    assert_eq!(st, 201, "{b}");
}

/// Creates realm `r`, space `r/s`, stack `r/s/t` (JSON).
pub fn hierarchy(c: &Client, s: &Server, r: &str, sp: &str, t: &str) {
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &serde_json::json!({"metadata": {"name": r}}),
    );
    assert!(st == 201 || st == 409, "{st} {b}");
    let (st, b) = c.post_json(
        &s.api(&format!("/realms/{r}/spaces")),
        &serde_json::json!({"metadata": {"name": sp}}),
    );
    assert!(st == 201 || st == 409, "{st} {b}");
    let (st, b) = c.post_json(
        &s.api(&format!("/realms/{r}/spaces/{sp}/stacks")),
        &serde_json::json!({"metadata": {"name": t}}),
    );
    assert!(st == 201 || st == 409, "{st} {b}");
}

// ---- helpers added for the integration suites ----

/// Parses YAML text (e.g. a shared example manifest) into a JSON value.
pub fn yaml_json(text: &str) -> Value {
    yaml_serde::from_str::<Value>(text).unwrap_or_else(|e| panic!("bad YAML: {e}\n{text}"))
}

/// `metadata.resourceVersion` of a document or list, as a number.
pub fn rv(doc: &Value) -> u64 {
    doc["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.resourceVersion in {doc}"))
        .parse()
        .unwrap_or_else(|_| panic!("resourceVersion is not a number in {doc}"))
}

/// `object.metadata.resourceVersion` of a watch event, as a number.
pub fn event_rv(event: &Value) -> u64 {
    rv(&event["object"])
}

/// The store revision: the `metadata.resourceVersion` of the realm list.
pub fn revision(c: &Client, s: &Server) -> u64 {
    let (st, list) = c.get(&s.api("/realms"));
    assert_eq!(st, 200, "{list}");
    rv(&list)
}

/// The store revision, for async tests (the blocking [`Client`] must not
/// run inside their runtime): the `metadata.resourceVersion` of a one-item
/// page of the realm list.
pub async fn revision_async(s: &Server) -> u64 {
    let list: Value = reqwest::get(s.api("/realms?limit=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rv(&list)
}

/// The shared examples' realm, space, stack and cell as one YAML stream.
pub fn hierarchy_with_cell() -> String {
    ["realm.yaml", "space.yaml", "stack.yaml", "cell.yaml"]
        .map(shared_example)
        .join("---\n")
}

/// [`hierarchy_with_cell`] followed by a Container `sidecar` in that cell.
pub fn hierarchy_with_cell_and_container() -> String {
    format!(
        "{}---\napiVersion: v1beta1\nkind: Container\nmetadata:\n  name: sidecar\nspec:\n  \
         id: sidecar\n  realmId: test-realm\n  spaceId: test-space\n  stackId: test-stack\n  \
         cellId: test-cell\n  image: registry.eminwux.com/busybox:latest\n",
        hierarchy_with_cell()
    )
}

/// `metadata.generation` of a document.
pub fn generation(doc: &Value) -> u64 {
    doc["metadata"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no metadata.generation in {doc}"))
}

/// The `metadata.name` of every item of a list, in order.
pub fn item_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Asserts a problem+json reply: status, reason and (if given) field.
#[track_caller]
pub fn assert_problem(r: &Reply, status: u16, reason: &str, field: Option<&str>) {
    let (st, body) = r;
    assert_eq!(*st, status, "status; body: {body}");
    assert_eq!(body["status"], status, "problem.status; body: {body}");
    assert_eq!(body["reason"], reason, "problem.reason; body: {body}");
    assert!(body["detail"].is_string(), "problem.detail; body: {body}");
    assert!(body["title"].is_string(), "problem.title; body: {body}");
    assert!(body["type"].is_string(), "problem.type; body: {body}");
    if let Some(f) = field {
        assert_eq!(body["field"], f, "problem.field; body: {body}");
    }
}

impl Client {
    /// Sends a prepared request; returns status and JSON body.
    pub fn send(&self, req: reqwest::blocking::RequestBuilder) -> Reply {
        reply(req.send().unwrap())
    }

    /// PUT with a YAML body.
    pub fn put_yaml(&self, url: &str, body: &str) -> Reply {
        reply(
            self.http
                .put(url)
                .header("content-type", "application/yaml")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    }

    /// GET with `Accept: application/yaml`: status, Content-Type and raw text.
    pub fn get_yaml(&self, url: &str) -> (u16, String, String) {
        let r = self
            .http
            .get(url)
            .header("accept", "application/yaml")
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, ctype, r.text().unwrap_or_default())
    }

    /// Sends a prepared request, answering a transport failure (a server
    /// killed mid-request, a body cut short) as an error instead of
    /// panicking: the caller cannot know whether such a write was applied.
    pub fn try_send(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<Reply, reqwest::Error> {
        let r = req.send()?;
        let status = r.status().as_u16();
        let text = r.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// GET with a query string (values are percent-encoded).
    pub fn get_query(&self, url: &str, query: &[(&str, &str)]) -> Reply {
        reply(self.http.get(url).query(query).send().unwrap())
    }
}

impl Server {
    /// Kills the server with SIGKILL (no graceful shutdown) and waits for
    /// it; `restart()` afterwards starts a new one on the same database.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .expect("kill");
            let _ = child.wait();
        }
    }
}

/// Creates realm `name` (JSON) and checks it was created.
pub fn create_realm(c: &Client, s: &Server, name: &str) {
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &serde_json::json!({"metadata": {"name": name}}),
    );
    assert_eq!(st, 201, "{b}");
}

/// POSTs JSON with an async client, asserts success, returns the body.
pub async fn post_ok(url: String, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

/// A server and a client whose requests carry a token of `role` (`admin`,
/// `writer`, ...), with or without the privileged grant.
pub struct TokenServer {
    pub server: Server,
    pub client: Client,
    /// Whether the identity the server sees for the client's requests may
    /// set privileged fields.
    pub granted: bool,
}

/// A fresh server with a first admin token, and a client holding a token
/// of `role` (the admin's own for `admin`), with or without the
/// privileged grant.
pub fn server_with_token(role: &str, privileged: bool) -> TokenServer {
    let server = Server::start();
    let (admin, _) = first_admin(&server);
    let client = if role == "admin" {
        admin
    } else {
        Client::with_token(&create_token(
            &admin,
            &server,
            serde_json::json!({"name": format!("{role}-token"), "role": role, "privileged": privileged}),
        ))
    };
    TokenServer {
        server,
        client,
        granted: role == "admin" || privileged,
    }
}

/// The watch events (BOOKMARKs left out) of every change in `s`'s store
/// after revision `since`, read through `c` by a watch that ends after a
/// second.
pub fn events_since(c: &Client, s: &Server, since: u64) -> Vec<Value> {
    let text = c
        .http
        .get(format!(
            "{}?resourceVersion={since}&timeoutSeconds=1",
            s.api("/watch")
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|e| e["type"] != "BOOKMARK")
        .collect()
}

/// Asserts that exactly `n` changes were written to `s`'s store since
/// revision `since` (a [`revision`]). On redb the revision moved by `n`;
/// on etcd, whose revision is cluster-wide (other prefixes' writes and the
/// replicas' heartbeats move it too), a watch from `since` delivers
/// exactly `n` events.
#[track_caller]
pub fn assert_changes_since(c: &Client, s: &Server, since: u64, n: usize, what: &str) {
    if on_etcd() {
        let events = events_since(c, s, since);
        assert_eq!(events.len(), n, "{what}: events since {since}: {events:?}");
    } else {
        assert_eq!(revision(c, s), since + n as u64, "{what}");
    }
}

/// For a server that compacts its history: on etcd, a one-member cluster
/// of its own and the arguments that put the server on it (etcd's
/// compaction is cluster-wide: on the shared cluster it would take the
/// other tests' history away), with no heartbeat moving the retained
/// window; nothing on redb. Keep the cluster as long as the server.
pub fn own_cluster_for_compaction() -> (Vec<String>, Option<etcd::Cluster>) {
    if !on_etcd() {
        return (Vec::new(), None);
    }
    let cluster = etcd::Cluster::start(1).expect("MODELHUB_TEST_STORE=etcd needs an etcd binary");
    let args = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        &cluster.endpoints(),
        "--etcd-prefix",
        "/compacted",
        "--bookmark-interval",
        "60s",
    ]
    .map(String::from)
    .to_vec();
    (args, Some(cluster))
}
