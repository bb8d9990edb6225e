//! The workloads against modelhub (HTTP). The etcd equivalents are in
//! `etcd.rs`; each pair does the same operations on the same documents.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::auth::{self, Auth, Token};
use crate::report::{ListFigures, Startup, WatchFigures};
use crate::util::{self, Failure, Run, Spawned, Stop};
use crate::{h2raw, raw};

/// Stack holding the cells that `status` writes to.
pub const RW_STACK: &str = "rw";
/// Stack holding the cells that `get` reads (never overwritten, so etcd
/// reads keys with one revision each, as after a compaction).
pub const GET_STACK: &str = "ro";
/// Stack holding the cells that `list` lists.
pub const LIST_STACK: &str = "list";
/// Documents per `/apply` request when loading.
pub const APPLY_BATCH: usize = 1000;
/// Most rounds a closed-loop workload may be split into (`--rounds`).
pub const MAX_ROUNDS: u64 = 10;
/// Restart counts one round of status writes may use (far more requests
/// than a round makes).
const ROUND_STRIDE: u64 = 100_000_000;

/// A modelhub to drive: one server, or several replicas of one store
/// (modelhub on etcd), among which the clients are dealt out.
pub struct Hub {
    /// Base URL of the first replica, e.g. `http://127.0.0.1:8080`: set-up
    /// and loading go there.
    pub base: String,
    /// Base URLs of every replica (`base` first); closed-loop client `c`,
    /// watcher `w` and writer `w` use replica `c % n`, `w % n`.
    pub bases: Vec<String>,
    /// A reqwest client for set-up, loading and watches (the timed
    /// requests go through [`crate::raw`]); with a token, every request
    /// of it carries it.
    pub http: reqwest::Client,
    /// The bearer token every request carries (`--auth`), once
    /// [`Hub::authenticate`] has set it.
    pub token: Option<Token>,
    /// The header lines of the minimal clients' requests: the token's
    /// (formatted once), or none.
    raw_extra: Arc<[u8]>,
    /// The processes whose CPU is the server's, if known: every replica,
    /// and etcd under modelhub on etcd.
    pub pids: Vec<u32>,
    /// Of `pids`, the store's under the replicas (etcd's), if known.
    pub backend: Vec<u32>,
    /// Unique per bench run: a prefix for created names.
    pub run: String,
    /// Its name in the report (`modelhub`, `2 replicas`).
    pub label: String,
    /// Documents per `/apply` when creating cells: halved whenever an
    /// apply is refused as too large (413: etcd's limits on one
    /// transaction, under modelhub on etcd).
    apply_batch: AtomicUsize,
    /// Status writes made before lists so far: each one's restart count
    /// differs from every earlier one, so that it really changes the cell
    /// (modelhub does not write a status that did not change).
    list_writes: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// A client for the replicas at `bases` (at least one), whose CPU is
    /// that of `pids` (if known).
    pub fn new(bases: &[String], run: &str, pids: Vec<u32>) -> Hub {
        assert!(!bases.is_empty(), "a hub needs a server");
        Hub {
            base: bases[0].clone(),
            bases: bases.to_vec(),
            pids,
            backend: Vec::new(),
            http: reqwest::Client::builder().build().expect("client"),
            token: None,
            raw_extra: Arc::from(&[][..]),
            run: run.to_string(),
            label: "modelhub".to_string(),
            apply_batch: AtomicUsize::new(APPLY_BATCH),
            list_writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sets how every request to the replicas authenticates: with `how`
    /// on, a token (given, else created on the first replica), checked to
    /// be accepted by every replica, each of which then refuses anonymous
    /// requests. `earlier`: a token of another target, used rather than a
    /// new one if this target's store knows it already (targets sharing an
    /// etcd prefix). Exits on failure.
    pub async fn authenticate(&mut self, how: &Auth, earlier: Option<&Token>) {
        let token = match how {
            Auth::Off => return,
            Auth::Given(t) => t.clone(),
            Auth::Create => {
                let known = match earlier {
                    Some(t) => auth::accepted(t, &self.base).await.then(|| t.clone()),
                    None => None,
                };
                match known {
                    Some(t) => t,
                    None => auth::create(&self.base, &auth::token_name(&self.run))
                        .await
                        .unwrap_or_else(|e| fail(&self.label, &e)),
                }
            }
        };
        auth::check(&token, &self.bases)
            .await
            .unwrap_or_else(|e| fail(&self.label, &e));
        self.http = auth::client(reqwest::Client::builder(), Some(&token));
        self.raw_extra = token.raw_line().into();
        self.token = Some(token);
        eprintln!(
            "{}: authentication on: every request carries a bearer token; an anonymous \
             request is refused (401)",
            self.label
        );
    }

    /// A reqwest client from `builder` whose requests carry the token, if
    /// any.
    fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::Client {
        auth::client(builder, self.token.as_ref())
    }

    /// A pool of the minimal client for `clients` clients, its requests
    /// carrying the token, if any.
    fn pool(&self, clients: usize) -> raw::Pool {
        raw::Pool::new(&self.bases, clients, self.raw_extra.clone())
    }

    /// A connection of the minimal client to `base`, its requests carrying
    /// the token, if any.
    async fn conn(&self, base: &str) -> raw::Conn {
        raw::Conn::connect(base, &self.raw_extra)
            .await
            .expect("connect")
    }

    /// Applies `docs`; a refusal answers its status and message.
    async fn apply(&self, docs: &[Value]) -> Result<(), (u16, String)> {
        let resp = self
            .http
            .post(format!("{}/api/v1beta1/apply", self.base))
            .json(docs)
            .send()
            .await
            .map_err(|e| (0, e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| (0, e.to_string()))?;
        if status != 200 {
            return Err((
                status.as_u16(),
                format!("apply: {status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        Ok(())
    }

    /// Applies `docs`, split in halves (and those in halves...) while the
    /// server answers 413; the size that passed is kept for the next
    /// batches ([`Hub::batch`]).
    async fn apply_split(&self, docs: &[Value]) -> Result<(), String> {
        match self.apply(docs).await {
            Err((413, e)) if docs.len() > 1 => {
                let half = docs.len().div_ceil(2);
                if self.apply_batch.fetch_min(half, Ordering::Relaxed) > half {
                    eprintln!(
                        "{}: an apply of {} documents was refused ({}...): {half} per apply from now on",
                        self.label,
                        docs.len(),
                        e.chars().take(160).collect::<String>()
                    );
                }
                let (a, b) = docs.split_at(half);
                Box::pin(self.apply_split(a)).await?;
                Box::pin(self.apply_split(b)).await
            }
            r => r.map_err(|(_, e)| e),
        }
    }

    /// [`util::closed_loop`] with this hub's processes' CPU, and the
    /// backend's share of it.
    async fn closed_loop<F, Fut>(&self, clients: usize, stop: Stop, op: F) -> Run
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let mark = util::CpuMark::now(&self.backend);
        let mut run = util::closed_loop(&self.pids, clients, stop, op).await;
        run.backend = mark.spent().server;
        run
    }

    /// Documents per `/apply` now.
    fn batch(&self) -> usize {
        self.apply_batch.load(Ordering::Relaxed).max(1)
    }

    /// Makes sure cells `c-000000..` (`n` of them, full 3-container cells)
    /// exist in stack `bench/s/<stack>`, with `/apply` in batches.
    pub async fn ensure_cells(&self, stack: &str, n: usize) {
        util::stack(&self.http, &self.base, stack).await;
        let started = Instant::now();
        let mut start = 0;
        while start < n {
            let end = (start + self.batch()).min(n);
            let docs: Vec<Value> = (start..end)
                .map(|i| util::cell_doc(stack, &util::nth_cell(i)))
                .collect();
            self.apply_split(&docs).await.expect("apply cells");
            start = end;
        }
        eprintln!(
            "{}: {n} cells in bench/s/{stack} ready in {:.1?}",
            self.label,
            started.elapsed()
        );
    }

    /// Durable creates of new cells from `clients` concurrent clients
    /// (`round`: which run of this workload, so names never repeat).
    pub async fn create(&self, clients: usize, stop: Stop, round: u32) -> Run {
        util::hierarchy(&self.http, &self.base).await;
        let path = Arc::new(util::cells_path("t"));
        let pool = Arc::new(self.pool(clients));
        let template = Arc::new(util::CellTemplate::new());
        let run = util::create_tag(&self.run, clients, round);
        self.closed_loop(clients, stop, move |c, seq| {
            let (pool, path, template) = (pool.clone(), path.clone(), template.clone());
            let name = format!("c-{run}-{seq}");
            async move {
                let resp = pool
                    .request(c, "POST", &path, &template.body(&name))
                    .await?;
                if resp.status != 201 {
                    return Err(refused("create", &name, resp.status, resp.error.as_deref()));
                }
                Ok(())
            }
        })
        .await
    }

    /// Restart counts of status writes start from this per-run offset, so
    /// that every write changes the stored status, even on a reused
    /// database; each round of the run has [`ROUND_STRIDE`] of its own.
    fn status_base(&self) -> u64 {
        u64::from_str_radix(&self.run, 16).unwrap_or(0) % 1_000_000 * (ROUND_STRIDE * MAX_ROUNDS)
    }

    /// Status writes (`PUT .../cells/{c}/status`) on `cells` existing cells
    /// (`round`: which run of this workload, so that no round writes a
    /// status an earlier one left).
    pub async fn status(&self, clients: usize, stop: Stop, cells: usize, round: u32) -> Run {
        self.ensure_cells(RW_STACK, cells).await;
        let path = Arc::new(util::cells_path(RW_STACK));
        let pool = Arc::new(self.pool(clients));
        let base_n = self.status_base() + u64::from(round) * ROUND_STRIDE;
        self.closed_loop(clients, stop, move |c, seq| {
            let (pool, path) = (pool.clone(), path.clone());
            let name = util::nth_cell(util::spread(seq, cells));
            async move {
                let body = json!({"status": util::cell_status(RW_STACK, &name, base_n + seq)});
                let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                let resp = pool
                    .request(c, "PUT", &format!("{path}/{name}/status"), &body)
                    .await?;
                if resp.status != 200 {
                    return Err(refused("status", &name, resp.status, resp.error.as_deref()));
                }
                Ok(())
            }
        })
        .await
    }

    /// `GET` of single cells among `cells` existing ones.
    pub async fn get(&self, clients: usize, stop: Stop, cells: usize) -> Run {
        self.ensure_cells(GET_STACK, cells).await;
        let path = Arc::new(util::cells_path(GET_STACK));
        let pool = Arc::new(self.pool(clients));
        self.closed_loop(clients, stop, move |c, seq| {
            let (pool, path) = (pool.clone(), path.clone());
            let name = util::nth_cell(util::spread(seq, cells));
            async move {
                let resp = pool
                    .request(c, "GET", &format!("{path}/{name}"), b"")
                    .await?;
                if resp.status != 200 {
                    return Err(refused("get", &name, resp.status, resp.error.as_deref()));
                }
                if resp.len < 1000 {
                    return Err(Failure::new(
                        "get: short body",
                        format!("get {name}: {} bytes", resp.len),
                    ));
                }
                Ok(())
            }
        })
        .await
    }

    /// Lists every cell of `bench/s/<stack>` (no limit, the whole JSON body
    /// read into one buffer, not parsed) `repeat` times, one after the other,
    /// on one keep-alive connection of the minimal client (per replica:
    /// list `i` goes to replica `i % n`). With `write_first`, each list
    /// follows an (untimed) status write to one of the cells, on another
    /// connection (to the next replica, if there are several): the list is
    /// then never one the server has already rendered.
    pub async fn list(&self, stack: &str, repeat: usize, write_first: bool) -> ListFigures {
        let url = util::stack_cells_url(&self.base, stack);
        // Untimed: check the count once.
        let v: Value = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("list")
            .json()
            .await
            .expect("list json");
        let items = v["items"].as_array().map_or(0, Vec::len);
        let mut figures = ListFigures {
            items,
            ..ListFigures::default()
        };
        let path = util::cells_path(stack);
        let (mut conns, mut writers) = (Vec::new(), Vec::new());
        for base in &self.bases {
            conns.push(self.conn(base).await);
            writers.push(self.conn(base).await);
        }
        let replicas = self.bases.len();
        let mut body = Vec::new();
        let base_n = self.status_base();
        let cpu = util::CpuMark::now(&self.pids);
        let started = Instant::now();
        for i in 0..repeat {
            if write_first {
                let name = util::nth_cell(i % items.max(1));
                let n = self
                    .list_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let status = json!({"status": util::cell_status(stack, &name, base_n + n)});
                let status = serde_json::to_vec(&status).expect("json");
                let resp = writers[(i + 1) % replicas]
                    .request("PUT", &format!("{path}/{name}/status"), &status)
                    .await
                    .expect("status write");
                assert_eq!(
                    resp.status, 200,
                    "status write before a list: {:?}",
                    resp.error
                );
            }
            let t = Instant::now();
            let resp = conns[i % replicas]
                .get_into(&path, &mut body)
                .await
                .expect("list");
            assert_eq!(
                resp.status,
                200,
                "list: {}",
                String::from_utf8_lossy(&body[..body.len().min(1024)])
            );
            figures.times.lat.push(t.elapsed());
            figures.bytes = body.len();
        }
        figures.times.elapsed = started.elapsed();
        // With `write_first`, the writes' CPU counts too.
        figures.times.cpu = cpu.spent();
        figures.times.lat.sort();
        figures
    }

    /// Loads `objects` small cells into realm `load` (space `s`, stacks of
    /// 1,000 cells each), with `/apply` of 1,000 documents per request, two
    /// requests in flight. Skipped if the last stack is already full.
    pub async fn load(&self, objects: usize) -> Option<Duration> {
        let stacks = objects.div_ceil(APPLY_BATCH);
        let stack = |k: usize| format!("t{k:04}");
        let last = format!(
            "{}/api/v1beta1/realms/load/spaces/s/stacks/{}/cells?limit={APPLY_BATCH}",
            self.base,
            stack(stacks - 1)
        );
        if let Ok(resp) = self.http.get(&last).send().await
            && resp.status() == 200
            && let Ok(v) = resp.json::<Value>().await
            && v["items"].as_array().map_or(0, Vec::len) == objects - (stacks - 1) * APPLY_BATCH
        {
            eprintln!("modelhub: {objects} objects already loaded in realm load");
            return None;
        }
        let started = Instant::now();
        let mut parents = vec![
            json!({"kind": "Realm", "metadata": {"name": "load"}}),
            json!({"kind": "Space", "metadata": {"name": "s"}, "spec": {"realmId": "load"}}),
        ];
        parents.extend((0..stacks).map(|k| {
            json!({"kind": "Stack", "metadata": {"name": stack(k)},
                   "spec": {"realmId": "load", "spaceId": "s"}})
        }));
        for part in parents.chunks(self.batch()) {
            self.apply_split(part).await.expect("apply parents");
        }
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        futures_util::stream::iter(0..stacks)
            .map(|k| {
                let done = done.clone();
                async move {
                    let docs: Vec<Value> = (k * APPLY_BATCH..((k + 1) * APPLY_BATCH).min(objects))
                        .map(|i| util::small_cell_doc(&stack(k), &util::nth_cell(i)))
                        .collect();
                    for part in docs.chunks(self.batch()) {
                        self.apply_split(part).await.expect("apply load");
                    }
                    let n = done.fetch_add(docs.len(), std::sync::atomic::Ordering::Relaxed)
                        + docs.len();
                    if n % 100_000 < APPLY_BATCH {
                        eprintln!("modelhub: loaded {n} objects in {:.1?}", started.elapsed());
                    }
                }
            })
            .buffer_unordered(2)
            .collect::<Vec<()>>()
            .await;
        let t = started.elapsed();
        eprintln!(
            "modelhub: loaded {objects} cells (+{} parents) in {t:.1?} = {:.0} objects/s",
            stacks + 2,
            objects as f64 / t.as_secs_f64()
        );
        Some(t)
    }

    /// The store-wide revision now.
    async fn revision(&self) -> u64 {
        let list: Value = self
            .http
            .get(format!("{}/api/v1beta1/realms?limit=1", self.base))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("list")
            .json()
            .await
            .expect("json");
        list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("revision")
    }

    /// Watch fan-out: `watchers` streams of every Cell event, `writes` cell
    /// creates from `writers` clients; the delay from each write's ack to
    /// its receipt by each watcher, the watchers connected as `client` says.
    /// With several replicas, the watchers and the writers are dealt out
    /// among them (watcher `i` and writer `w` on replica `i % n`, `w % n`),
    /// so that most events reach a watcher through another replica than
    /// the one that wrote them.
    pub async fn watch(
        &self,
        watchers: usize,
        load: util::WriteLoad,
        client: WatchClient,
    ) -> WatchFigures {
        let (writes, writers) = (load.writes, load.writers);
        let http =
            self.client(reqwest::Client::builder().pool_max_idle_per_host(writers + watchers));
        util::hierarchy(&http, &self.base).await;
        let from = self.revision().await;
        let expect = Expect::new(from, writes);
        let path = format!("/api/v1beta1/watch?kind=Cell&resourceVersion={from}");
        let replicas = self.bases.len();
        // The HTTP/2 clients of `WatchClient::Reqwest`, kept to the end.
        let mut shared: Vec<reqwest::Client> = Vec::new();
        let mut tasks = Vec::new();
        for (r, base) in self.bases.iter().enumerate() {
            // Replica r's share of the watchers.
            let k = watchers / replicas + usize::from(r < watchers % replicas);
            if k == 0 {
                continue;
            }
            let url = format!("{base}{path}");
            match client {
                WatchClient::Raw(n) => {
                    let token = self.token.as_ref().map(Token::header_value);
                    tasks.extend(raw_watchers(base, &path, token, k, n, &expect).await);
                }
                WatchClient::Http1 => {
                    tasks.extend(reqwest_watchers(&http, &url, k, &expect).await);
                }
                WatchClient::Reqwest(n) => {
                    for first in (0..k).step_by(n) {
                        let http = self.client(reqwest::Client::builder().http2_prior_knowledge());
                        let m = n.min(k - first);
                        tasks.extend(reqwest_watchers(&http, &url, m, &expect).await);
                        shared.push(http);
                    }
                }
            }
        }
        eprintln!(
            "{}: {watchers} watchers connected from revision {from} ({client}{})",
            self.label,
            match replicas {
                1 => String::new(),
                n => format!(", dealt out among {n} replicas"),
            }
        );
        let url = util::cells_url(&self.base);
        let warm = async || create_for_watch(&http, &url, &format!("w-{from}-warm")).await;
        let warmup = expect.warm_up(watchers, warm).await;
        let acks: Arc<Mutex<Vec<(u64, Instant)>>> =
            Arc::new(Mutex::new(Vec::with_capacity(writes)));
        let cpu = util::CpuMark::now(&self.pids);
        let started = Instant::now();
        let mut writer_tasks = Vec::new();
        for w in 0..writers {
            let url = util::cells_url(&self.bases[w % replicas]);
            let (http, acks) = (http.clone(), acks.clone());
            writer_tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in (w..writes).step_by(writers) {
                    load.pace(started, i).await;
                    let name = format!("w-{from}-{i}");
                    match create_for_watch(&http, &url, &name).await {
                        Ok(ack) => acks.lock().await.push(ack),
                        Err(f) => failures.push(f),
                    }
                }
                failures
            }));
        }
        let mut figures =
            finish_fan_out(&expect, writer_tasks, tasks, &acks, (started, cpu), load).await;
        figures.warmup = warmup;
        drop(shared);
        figures
    }
}

/// Creates cell `name` through `url` (a stack's cells); answers its
/// resourceVersion and the ack: when the response's head arrived.
async fn create_for_watch(
    http: &reqwest::Client,
    url: &str,
    name: &str,
) -> Result<(u64, Instant), Failure> {
    let resp = http
        .post(url)
        .json(&util::cell(name))
        .send()
        .await
        .map_err(|e| Failure::new(format!("create: {e}"), format!("create {name}: {e}")))?;
    let ack = Instant::now();
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Failure::new(format!("create: {e}"), format!("create {name}: {e}")))?;
    if status != 201 {
        return Err(refused(
            "create",
            name,
            status,
            Some(&String::from_utf8_lossy(&body)),
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Failure::new("create: bad JSON", format!("create {name}: {e}")))?;
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::new("create: no resourceVersion", format!("create {name}: {v}")))?;
    Ok((rv, ack))
}

/// `resp`, unless the server refused it for its credentials (`401`,
/// `403`: the bench's own request lacked its token): then the run fails.
/// Other statuses are the caller's to judge (`startup` reads whatever is
/// there).
fn admitted(resp: reqwest::Response) -> reqwest::Response {
    let status = resp.status().as_u16();
    assert!(
        status != 401 && status != 403,
        "{}: {status}: a request without its credentials",
        resp.url().path()
    );
    resp
}

/// Ends the bench: `who`'s authentication failed with `error` (which
/// never holds the token).
fn fail(who: &str, error: &str) -> ! {
    eprintln!("{who}: --auth: {error}");
    std::process::exit(2);
}

/// A request of `op` on `name` answered `status` (not the one expected),
/// with `body` (a problem's JSON, if any): the failure's kind names the
/// status and the problem's reason (`create: 503 Unavailable`), its
/// detail the name and the body.
pub fn refused(op: &str, name: &str, status: u16, body: Option<&str>) -> Failure {
    let body = body.unwrap_or("");
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string));
    let kind = match reason {
        Some(reason) => format!("{op}: {status} {reason}"),
        None => format!("{op}: {status}"),
    };
    Failure::new(kind, format!("{op} {name}: {status} {body}"))
}

/// How modelhub's watchers connect.
#[derive(Clone, Copy, Debug)]
pub enum WatchClient {
    /// One HTTP/1.1 connection each (reqwest).
    Http1,
    /// HTTP/2 connections of this many streams each, through reqwest:
    /// a task per watcher, woken by its connection's task.
    Reqwest(usize),
    /// HTTP/2 connections of this many streams each, through
    /// [`crate::h2raw`]: one task per connection reads every stream.
    Raw(usize),
}

impl std::fmt::Display for WatchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchClient::Http1 => write!(f, "one HTTP/1.1 connection each"),
            WatchClient::Reqwest(n) => write!(f, "HTTP/2, {n} streams per connection, reqwest"),
            WatchClient::Raw(n) => write!(
                f,
                "HTTP/2, {n} streams per connection, one task per connection"
            ),
        }
    }
}

/// Receipts of all of one task's watchers, by watcher: `(revision, when)`.
type Seen = Vec<Vec<(u64, Instant)>>;

/// `watchers` watches of `url` through `http`, each read by a task of its
/// own; answers once every watch has been answered.
async fn reqwest_watchers(
    http: &reqwest::Client,
    url: &str,
    watchers: usize,
    expect: &Expect,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut streams = Vec::with_capacity(watchers);
    let mut refused = 0;
    for _ in 0..watchers {
        let resp = http.get(url).send().await;
        match resp {
            Ok(resp) if resp.status() == 200 => streams.push(resp),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                expect.refused(refused_watch(status, &body));
                refused += 1;
            }
            Err(e) => {
                expect.refused(Failure::new(
                    format!("watch: {e}"),
                    format!("watch {url}: {e}"),
                ));
                refused += 1;
            }
        }
    }
    // A refused watcher receives nothing: its events are missing.
    expect.gone(refused);
    let none = (0..refused).map(|_| tokio::spawn(async { vec![Vec::new()] }));
    streams
        .into_iter()
        .map(|resp| {
            let mut receipts = expect.receipts();
            tokio::spawn(async move {
                let mut body = resp.bytes_stream();
                let mut lines = Lines::default();
                while !receipts.complete() {
                    let Some(Some(Ok(chunk))) = receipts.or_idle(body.next()).await else {
                        break;
                    };
                    lines.note(&chunk, Instant::now(), &mut receipts);
                }
                vec![receipts.into_times()]
            })
        })
        .chain(none)
        .collect()
}

/// A watch refused with `status` and `body` (a problem's JSON, if any).
fn refused_watch(status: u16, body: &str) -> Failure {
    refused("watch", "", status, Some(body))
}

/// `watchers` watches of `path` on HTTP/2 connections to `base` of
/// `per_conn` streams each, a task per connection ([`crate::h2raw`]), with
/// the `authorization` header's value if given; answers once every stream
/// has been answered.
async fn raw_watchers(
    base: &str,
    path: &str,
    authorization: Option<String>,
    watchers: usize,
    per_conn: usize,
    expect: &Expect,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for first in (0..watchers).step_by(per_conn) {
        let k = per_conn.min(watchers - first);
        let paths = vec![path.to_string(); k];
        let base = base.to_string();
        let authorization = authorization.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        let mut receipts: Vec<Receipts> = (0..k).map(|_| expect.untimed()).collect();
        let expect = expect.clone();
        tasks.push(tokio::spawn(async move {
            let mut lines: Vec<Lines> = (0..k).map(|_| Lines::default()).collect();
            let mut complete = 0;
            let mut tx = Some(tx);
            let auth = authorization.as_deref();
            let result = h2raw::watch(&base, &paths, auth, WATCH_IDLE, |event| match event {
                h2raw::Event::Ready => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                    h2raw::Seen::New
                }
                h2raw::Event::Data { stream, data, at } => {
                    let r = &mut receipts[stream];
                    if lines[stream].note(data, at, r) == 0 {
                        h2raw::Seen::Nothing
                    } else {
                        // News completes a stream at most once.
                        complete += usize::from(r.complete());
                        if complete == k {
                            h2raw::Seen::Done
                        } else {
                            h2raw::Seen::New
                        }
                    }
                }
            })
            .await;
            if let Err(e) = result {
                let missing: usize = receipts.iter().map(Receipts::missing).sum();
                eprintln!(
                    "modelhub: a watch connection ended ({e}); its {k} watchers miss {missing} events"
                );
                // Its watchers that never started count as gone for the
                // warm-up; the failure's kind without the stream's number.
                expect.gone(receipts.iter().filter(|r| r.got == 0).count());
                let text = e.to_string();
                let kind = match text.split_once(": ") {
                    Some((head, rest)) if head.starts_with("stream ") => rest.to_string(),
                    _ => text.clone(),
                };
                expect.refused(Failure::new(
                    format!("watch connection ({k} streams): {kind}"),
                    text,
                ));
            }
            receipts.into_iter().map(Receipts::into_times).collect()
        }));
    }
    // Every connection's streams answered (or the connection failed).
    for rx in ready {
        let _ = rx.await;
    }
    tasks
}

/// Splits a watch body into lines as it arrives: whole lines are read from
/// the chunk where they are; only a line split across chunks is put
/// together (a chunk holds many events when the server coalesces them).
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Notes the events of `chunk`; answers how many were new.
    fn note(&mut self, chunk: &[u8], now: Instant, receipts: &mut Receipts) -> usize {
        let before = receipts.got;
        if self.partial.is_empty() {
            let used = note_events(chunk, now, receipts);
            self.partial.extend_from_slice(&chunk[used..]);
        } else {
            self.partial.extend_from_slice(chunk);
            let used = note_events(&self.partial, now, receipts);
            self.partial.drain(..used);
        }
        receipts.got - before
    }
}

/// How long a watcher waits for its next event before giving up, and
/// the watchers' start may take (the warm-up of [`Expect`]): on modelhub on
/// etcd 3.4, 1,000 watchers from one recent revision took 20 s to 40 s
/// to start, each reading etcd's history first.
const WATCH_IDLE: Duration = Duration::from_secs(120);

/// What every watcher of one fan-out run expects: the events after
/// revision `from`, first a warm-up write's, then the timed writes'. The
/// timed writes start once every watcher has received the warm-up: a
/// watcher that starts from a past revision may first have to catch up
/// (modelhub on etcd reads that from etcd's history), which is the
/// watch's start, not its fan-out.
#[derive(Clone)]
pub struct Expect {
    from: u64,
    /// Events each watcher expects: the warm-up and the timed writes.
    events: usize,
    /// Watchers that have received their first event (the warm-up).
    live: Arc<AtomicUsize>,
    /// Watchers refused, or whose connection ended before their first
    /// event: the warm-up does not wait for them.
    dead: Arc<AtomicUsize>,
    /// Why, by kind.
    failures: Arc<std::sync::Mutex<Vec<Failure>>>,
}

impl Expect {
    /// For watches from `from`, and `writes` timed writes.
    pub fn new(from: u64, writes: usize) -> Expect {
        Expect {
            from,
            events: writes + 1,
            live: Arc::new(AtomicUsize::new(0)),
            dead: Arc::new(AtomicUsize::new(0)),
            failures: Arc::default(),
        }
    }

    /// A watch refused (or its connection lost): noted for the report.
    fn refused(&self, failure: Failure) {
        self.failures.lock().expect("not poisoned").push(failure);
    }

    /// `n` watchers that will never start.
    fn gone(&self, n: usize) {
        self.dead.fetch_add(n, Ordering::Relaxed);
    }

    /// The watches' failures so far.
    fn failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failures.lock().expect("not poisoned"))
    }

    /// One watcher's receipts, with the idle timer of [`Receipts::or_idle`].
    pub fn receipts(&self) -> Receipts {
        Receipts {
            live: Some(self.live.clone()),
            ..Receipts::new(self.from, self.events)
        }
    }

    /// The same without the idle timer ([`Receipts::untimed`]).
    pub fn untimed(&self) -> Receipts {
        Receipts {
            live: Some(self.live.clone()),
            ..Receipts::untimed(self.from, self.events)
        }
    }

    /// Makes the warm-up write (`write` answers its revision and ack; it
    /// is tried three times) and waits until all `watchers` have received
    /// it, for at most [`WATCH_IDLE`]: answers how long after its ack that
    /// took (`None`: not all in time).
    pub async fn warm_up(
        &self,
        watchers: usize,
        write: impl AsyncFn() -> Result<(u64, Instant), Failure>,
    ) -> Option<Duration> {
        let mut tries = 0;
        let (_, ack) = loop {
            match write().await {
                Ok(ack) => break ack,
                Err(f) if tries < 2 => {
                    tries += 1;
                    eprintln!("the watch's warm-up write failed ({}): again", f.detail);
                }
                Err(f) => panic!("the watch's warm-up write failed three times: {}", f.detail),
            }
        };
        let deadline = ack + WATCH_IDLE;
        let started = || self.live.load(Ordering::Relaxed) + self.dead.load(Ordering::Relaxed);
        while started() < watchers {
            if Instant::now() >= deadline {
                eprintln!(
                    "only {} of {watchers} watchers had the warm-up write {WATCH_IDLE:?} after its ack",
                    self.live.load(Ordering::Relaxed)
                );
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match self.dead.load(Ordering::Relaxed) {
            0 => Some(ack.elapsed()),
            dead => {
                eprintln!("{dead} of {watchers} watchers were refused or lost before the warm-up");
                None
            }
        }
    }
}

/// One watcher's receipts: each revision after `from` it received (first
/// receipt only: a stream delivers revisions in increasing order) and
/// when, and its idle timeout (WATCH_IDLE without a new event: one timer,
/// re-armed at most once a second rather than per message). The same for
/// both stores' watchers. Revisions need not be dense: modelhub on etcd
/// numbers an event `etcd revision * 1,000,000 + index`, and etcd's
/// revisions count every write to the cluster; the receipts are matched to
/// the writers' acks by revision afterwards ([`finish_fan_out`]).
pub struct Receipts {
    from: u64,
    /// Events expected.
    want: usize,
    /// `(revision, received)`, in increasing revision order.
    at: Vec<(u64, Instant)>,
    got: usize,
    idle: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed: Instant,
    /// Counts this watcher once, at its first event ([`Expect`]).
    live: Option<Arc<AtomicUsize>>,
}

impl Receipts {
    /// For a watch from revision `from` that should see `writes` events,
    /// with the idle timer of [`Receipts::or_idle`].
    pub fn new(from: u64, writes: usize) -> Receipts {
        Receipts {
            idle: Some(Box::pin(tokio::time::sleep(WATCH_IDLE))),
            ..Receipts::untimed(from, writes)
        }
    }

    /// The same without an idle timer, for a caller that times out by
    /// itself ([`h2raw::watch`]).
    pub fn untimed(from: u64, writes: usize) -> Receipts {
        Receipts {
            from,
            want: writes,
            at: Vec::with_capacity(writes),
            got: 0,
            idle: None,
            armed: Instant::now(),
            live: None,
        }
    }

    /// Events not received (yet).
    pub fn missing(&self) -> usize {
        self.want.saturating_sub(self.got)
    }

    /// Whether every event was received.
    pub fn complete(&self) -> bool {
        self.got >= self.want
    }

    /// What `next` gives, or `None` once the watcher has been idle too long
    /// (never without the timer).
    pub async fn or_idle<T>(&mut self, next: impl std::future::Future<Output = T>) -> Option<T> {
        let Some(idle) = self.idle.as_mut() else {
            return Some(next.await);
        };
        tokio::select! {
            biased;
            v = next => Some(v),
            () = idle => None,
        }
    }

    /// Notes revision `rv`, received `now` (nothing if not after the last
    /// one noted).
    pub fn note(&mut self, rv: u64, now: Instant) {
        let last = self.at.last().map_or(self.from, |(r, _)| *r);
        if rv > last {
            if self.at.is_empty()
                && let Some(live) = &self.live
            {
                live.fetch_add(1, Ordering::Relaxed);
            }
            self.at.push((rv, now));
            self.got += 1;
            if let Some(idle) = self.idle.as_mut()
                && now.duration_since(self.armed) >= Duration::from_secs(1)
            {
                self.armed = now;
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + WATCH_IDLE);
            }
        }
    }

    /// The receipts: `(revision, when)`, in revision order.
    pub fn into_times(self) -> Vec<(u64, Instant)> {
        self.at
    }
}

/// Notes every whole event line of `data` (BOOKMARKs skipped); answers how
/// many bytes of whole lines were read.
fn note_events(data: &[u8], now: Instant, receipts: &mut Receipts) -> usize {
    let mut start = 0;
    while let Some(len) = memchr::memchr(b'\n', &data[start..]) {
        let line = &data[start..start + len];
        start += len + 1;
        if let Some(rv) = util::resource_version(line)
            && !line.starts_with(b"{\"type\":\"BOOKMARK\"")
        {
            receipts.note(rv, now);
        }
    }
    start
}

/// Watch figures from the writers' acks `(revision, when)` and, per
/// watcher, its receipts `(revision, when)`. Waits for the writers (each
/// answers the writes that failed), then the watchers, and computes the
/// figures.
pub async fn finish_fan_out(
    expect: &Expect,
    writer_tasks: Vec<tokio::task::JoinHandle<Vec<Failure>>>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
    acks: &tokio::sync::Mutex<Vec<(u64, Instant)>>,
    (started, cpu): (Instant, util::CpuMark),
    load: util::WriteLoad,
) -> WatchFigures {
    let mut failures = Vec::new();
    for t in writer_tasks {
        failures.extend(t.await.expect("writer"));
    }
    let write_time = started.elapsed();
    let acks = acks.lock().await.clone();
    if !failures.is_empty() {
        eprintln!(
            "{} of {} watch writes failed; the watchers wait {WATCH_IDLE:?} for events that never come",
            failures.len(),
            load.writes
        );
    }
    let seen = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|t| t.expect("watcher"))
        .collect();
    let mut figures = fan_out_figures(expect.from, acks, seen, started, write_time, load);
    figures.cpu = cpu.spent();
    figures.errors = failures.len() as u64;
    for f in failures.into_iter().chain(expect.failures()) {
        util::count_kind(&mut figures.kinds, f.kind, 1, f.detail);
    }
    figures
}

/// The delay of each receipt of an acknowledged write (matched by
/// revision), and how many (watcher, acknowledged write) pairs were never
/// received.
fn fan_out_figures(
    from: u64,
    acks: Vec<(u64, Instant)>,
    seen: Seen,
    started: Instant,
    write_time: Duration,
    load: util::WriteLoad,
) -> WatchFigures {
    let ack_of: HashMap<u64, Instant> = acks.into_iter().filter(|(rv, _)| *rv > from).collect();
    let mut figures = WatchFigures {
        watchers: seen.len(),
        writes: load.writes,
        writers: load.writers,
        rate: load.rate,
        write_time,
        ..WatchFigures::default()
    };
    let mut last_receipt = started;
    for watcher in &seen {
        let mut matched = 0;
        for (rv, r) in watcher {
            if let Some(a) = ack_of.get(rv) {
                figures.delays.push(r.saturating_duration_since(*a));
                last_receipt = last_receipt.max(*r);
                matched += 1;
            }
        }
        figures.missing += ack_of.len() - matched;
    }
    figures.delays.sort();
    figures.delivered = figures.delays.len();
    figures.span = last_receipt.duration_since(started);
    figures
}

/// Restarts modelhub `runs` times on `data`: time to the "listening" line,
/// then RSS after a few list and get requests, then a clean stop.
/// On the last run it also counts the objects (after the RSS reading).
/// With `how` on, the requests carry a token (given, else created on the
/// first run, the database keeping it for the next).
pub async fn startup(
    bin: &str,
    data: &Path,
    runs: usize,
    get_cells: usize,
    how: &Auth,
) -> (Vec<Startup>, u64) {
    let mut out = Vec::with_capacity(runs);
    let mut objects = 0;
    let mut how = how.clone();
    for run in 0..runs {
        let server = Spawned::start_on(bin, data, &[]).await;
        let ready = server.ready_after;
        let mut hub = Hub::new(std::slice::from_ref(&server.base), "startup", Vec::new());
        hub.label = "startup".to_string();
        hub.authenticate(&how, None).await;
        if let Some(t) = &hub.token {
            how = Auth::Given(t.clone());
        }
        // A few requests: the 10,000-cell list twice, 100 single gets, a
        // paged cross-scope list.
        let list = util::stack_cells_url(&hub.base, LIST_STACK);
        for _ in 0..2 {
            let resp = hub
                .http
                .get(&list)
                .send()
                .await
                .map(admitted)
                .expect("list");
            resp.bytes().await.expect("list body");
        }
        let ro = util::stack_cells_url(&hub.base, GET_STACK);
        for i in 0..100 {
            let name = util::nth_cell(util::spread(i, get_cells.max(1)));
            let resp = hub
                .http
                .get(format!("{ro}/{name}"))
                .send()
                .await
                .map(admitted)
                .expect("get");
            resp.bytes().await.expect("get body");
        }
        let resp = hub
            .http
            .get(format!("{}/api/v1beta1/cells?limit=500", hub.base))
            .send()
            .await
            .map(admitted)
            .expect("paged list");
        resp.bytes().await.expect("paged list body");
        let (rss_kib, hwm_kib) = server.memory_kib();
        if run + 1 == runs {
            objects = count_objects(&hub).await;
        }
        let stop = server.stop().await;
        out.push(Startup {
            ready,
            rss_kib,
            hwm_kib,
            stop,
        });
    }
    (out, objects)
}

/// Counts objects of each kind in the database (untimed; paged lists).
pub async fn count_objects(hub: &Hub) -> u64 {
    let mut total = 0;
    for kind in ["realms", "spaces", "stacks", "cells", "containers"] {
        let mut next: Option<String> = None;
        loop {
            let mut query = vec![("limit", "10000".to_string())];
            if let Some(token) = &next {
                query.push(("continue", token.clone()));
            }
            let v: Value = hub
                .http
                .get(format!("{}/api/v1beta1/{kind}", hub.base))
                .query(&query)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .expect("count")
                .json()
                .await
                .expect("count json");
            total += v["items"].as_array().map_or(0, Vec::len) as u64;
            match v["metadata"]["continue"].as_str() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_match_acks_by_revision_not_position() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // modelhub on etcd: etcd revision * 1,000,000, other writes to the
        // cluster in between.
        let acks = vec![(7_000_000, at(1)), (9_000_000, at(2)), (12_000_000, at(3))];
        let mut partial = Receipts::untimed(5_000_000, 3);
        partial.note(4_000_000, at(1));
        partial.note(7_000_000, at(2));
        partial.note(7_000_000, at(9));
        partial.note(12_000_000, at(5));
        assert_eq!((partial.missing(), partial.complete()), (1, false));
        let mut full = Receipts::untimed(5_000_000, 3);
        for (rv, ms) in [(7_000_000, 4), (9_000_000, 4), (12_000_000, 6)] {
            full.note(rv, at(ms));
        }
        assert!(full.complete());
        let load = util::WriteLoad {
            writes: 3,
            writers: 1,
            rate: None,
        };
        let figures = fan_out_figures(
            5_000_000,
            acks,
            vec![partial.into_times(), full.into_times()],
            t0,
            Duration::from_millis(3),
            load,
        );
        assert_eq!((figures.missing, figures.delivered), (1, 5));
        let ms: Vec<u64> = figures
            .delays
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(ms, [1, 2, 2, 3, 3]);
        assert_eq!(figures.span, Duration::from_millis(6));
    }

    #[test]
    fn a_refusal_is_counted_by_status_and_reason() {
        let f = refused(
            "create",
            "c-1",
            503,
            Some(r#"{"status":503,"reason":"Unavailable","detail":"no quorum"}"#),
        );
        assert_eq!(f.kind, "create: 503 Unavailable");
        assert!(f.detail.starts_with("create c-1: 503 {"), "{}", f.detail);
        assert_eq!(refused("get", "c-2", 502, Some("<html>")).kind, "get: 502");
    }
}
