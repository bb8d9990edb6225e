//! The workloads against modelhub (HTTP). The etcd equivalents are in
//! `etcd.rs`; each pair does the same operations on the same documents.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::report::{ListFigures, Startup, WatchFigures};
use crate::util::{self, Run, Spawned, Stop};
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

/// A modelhub to drive.
pub struct Hub {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// A reqwest client for set-up, loading and watches (the timed
    /// requests go through [`crate::raw`]).
    pub http: reqwest::Client,
    /// The server's pid, if known, to measure its CPU.
    pub pid: Option<u32>,
    /// Unique per bench run: a prefix for created names.
    pub run: String,
    /// Status writes made before lists so far: each one's restart count
    /// differs from every earlier one, so that it really changes the cell
    /// (modelhub does not write a status that did not change).
    list_writes: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// A client for `base` (server pid `pid`, if known).
    pub fn new(base: &str, run: &str, pid: Option<u32>) -> Hub {
        Hub {
            base: base.to_string(),
            pid,
            http: reqwest::Client::builder().build().expect("client"),
            run: run.to_string(),
            list_writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn apply(&self, docs: &[Value]) -> Result<(), String> {
        let resp = self
            .http
            .post(format!("{}/api/v1beta1/apply", self.base))
            .json(docs)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "apply: {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }

    /// Makes sure cells `c-000000..` (`n` of them, full 3-container cells)
    /// exist in stack `bench/s/<stack>`, with `/apply` in batches.
    pub async fn ensure_cells(&self, stack: &str, n: usize) {
        util::stack(&self.http, &self.base, stack).await;
        let started = Instant::now();
        for start in (0..n).step_by(APPLY_BATCH) {
            let docs: Vec<Value> = (start..(start + APPLY_BATCH).min(n))
                .map(|i| util::cell_doc(stack, &util::nth_cell(i)))
                .collect();
            self.apply(&docs).await.expect("apply cells");
        }
        eprintln!(
            "modelhub: {n} cells in bench/s/{stack} ready in {:.1?}",
            started.elapsed()
        );
    }

    /// Durable creates of new cells from `clients` concurrent clients
    /// (`round`: which run of this workload, so names never repeat).
    pub async fn create(&self, clients: usize, stop: Stop, round: u32) -> Run {
        util::hierarchy(&self.http, &self.base).await;
        let path = Arc::new(util::cells_path("t"));
        let pool = Arc::new(raw::Pool::new(&self.base, clients));
        let template = Arc::new(util::CellTemplate::new());
        let run = util::create_tag(&self.run, clients, round);
        util::closed_loop(self.pid, clients, stop, move |c, seq| {
            let (pool, path, template) = (pool.clone(), path.clone(), template.clone());
            let name = format!("c-{run}-{seq}");
            async move {
                let resp = pool
                    .request(c, "POST", &path, &template.body(&name))
                    .await?;
                if resp.status != 201 {
                    return Err(format!("create {name}: {}", resp.status));
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
        let pool = Arc::new(raw::Pool::new(&self.base, clients));
        let base_n = self.status_base() + u64::from(round) * ROUND_STRIDE;
        util::closed_loop(self.pid, clients, stop, move |c, seq| {
            let (pool, path) = (pool.clone(), path.clone());
            let name = util::nth_cell(util::spread(seq, cells));
            async move {
                let body = json!({"status": util::cell_status(RW_STACK, &name, base_n + seq)});
                let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                let resp = pool
                    .request(c, "PUT", &format!("{path}/{name}/status"), &body)
                    .await?;
                if resp.status != 200 {
                    return Err(format!("status {name}: {}", resp.status));
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
        let pool = Arc::new(raw::Pool::new(&self.base, clients));
        util::closed_loop(self.pid, clients, stop, move |c, seq| {
            let (pool, path) = (pool.clone(), path.clone());
            let name = util::nth_cell(util::spread(seq, cells));
            async move {
                let resp = pool
                    .request(c, "GET", &format!("{path}/{name}"), b"")
                    .await?;
                if resp.status != 200 || resp.len < 1000 {
                    return Err(format!("get {name}: {}, {} bytes", resp.status, resp.len));
                }
                Ok(())
            }
        })
        .await
    }

    /// Lists every cell of `bench/s/<stack>` (no limit, the whole JSON body
    /// read into one buffer, not parsed) `repeat` times, one after the other,
    /// on one keep-alive connection of the minimal client. With
    /// `write_first`, each list follows an (untimed) status write to one of
    /// the cells, on another connection: the list is then never one the
    /// server has already rendered.
    pub async fn list(&self, stack: &str, repeat: usize, write_first: bool) -> ListFigures {
        let url = util::stack_cells_url(&self.base, stack);
        // Untimed: check the count once.
        let v: Value = self
            .http
            .get(&url)
            .send()
            .await
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
        let mut conn = raw::Conn::connect(&self.base).await.expect("connect");
        let mut body = Vec::new();
        let mut writer = raw::Conn::connect(&self.base).await.expect("connect");
        let base_n = self.status_base();
        let cpu = util::CpuMark::now(self.pid);
        let started = Instant::now();
        for i in 0..repeat {
            if write_first {
                let name = util::nth_cell(i % items.max(1));
                let n = self
                    .list_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let status = json!({"status": util::cell_status(stack, &name, base_n + n)});
                let status = serde_json::to_vec(&status).expect("json");
                let resp = writer
                    .request("PUT", &format!("{path}/{name}/status"), &status)
                    .await
                    .expect("status write");
                assert_eq!(resp.status, 200, "status write before a list");
            }
            let t = Instant::now();
            let resp = conn.get_into(&path, &mut body).await.expect("list");
            assert_eq!(resp.status, 200);
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
        self.apply(&parents).await.expect("apply parents");
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        futures_util::stream::iter(0..stacks)
            .map(|k| {
                let done = done.clone();
                async move {
                    let docs: Vec<Value> = (k * APPLY_BATCH..((k + 1) * APPLY_BATCH).min(objects))
                        .map(|i| util::small_cell_doc(&stack(k), &util::nth_cell(i)))
                        .collect();
                    self.apply(&docs).await.expect("apply load");
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
    pub async fn watch(
        &self,
        watchers: usize,
        load: util::WriteLoad,
        client: WatchClient,
    ) -> WatchFigures {
        let (writes, writers) = (load.writes, load.writers);
        let base = &self.base;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(writers + watchers)
            .build()
            .expect("client");
        util::hierarchy(&http, base).await;
        let from = self.revision().await;
        let path = format!("/api/v1beta1/watch?kind=Cell&resourceVersion={from}");
        let url = format!("{base}{path}");
        // The HTTP/2 clients of `WatchClient::Reqwest`, kept to the end.
        let mut shared: Vec<reqwest::Client> = Vec::new();
        let tasks = match client {
            WatchClient::Raw(n) => raw_watchers(base, &path, watchers, n, from, writes).await,
            WatchClient::Http1 => reqwest_watchers(&http, &url, watchers, from, writes).await,
            WatchClient::Reqwest(n) => {
                shared = (0..watchers.div_ceil(n))
                    .map(|_| {
                        reqwest::Client::builder()
                            .http2_prior_knowledge()
                            .build()
                            .expect("client")
                    })
                    .collect();
                let mut tasks = Vec::new();
                for (c, http) in shared.iter().enumerate() {
                    let k = n.min(watchers - c * n);
                    tasks.extend(reqwest_watchers(http, &url, k, from, writes).await);
                }
                tasks
            }
        };
        eprintln!("modelhub: {watchers} watchers connected from revision {from} ({client})");
        let acks: Arc<Mutex<Vec<(u64, Instant)>>> =
            Arc::new(Mutex::new(Vec::with_capacity(writes)));
        let cpu = util::CpuMark::now(self.pid);
        let started = Instant::now();
        let mut writer_tasks = Vec::new();
        for w in 0..writers {
            let (http, url, acks) = (http.clone(), util::cells_url(base), acks.clone());
            writer_tasks.push(tokio::spawn(async move {
                for i in (w..writes).step_by(writers) {
                    load.pace(started, i).await;
                    let resp = http
                        .post(&url)
                        .json(&util::cell(&format!("w-{from}-{i}")))
                        .send()
                        .await
                        .expect("create");
                    let ack = Instant::now();
                    assert_eq!(resp.status(), 201);
                    let v: Value = resp.json().await.expect("json");
                    let rv = v["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("rv");
                    acks.lock().await.push((rv, ack));
                }
            }));
        }
        let figures = finish_fan_out(from, writer_tasks, tasks, &acks, (started, cpu), load).await;
        drop(shared);
        figures
    }
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

/// Receipts of all of one task's watchers, by watcher.
type Seen = Vec<Vec<Option<Instant>>>;

/// `watchers` watches of `url` through `http`, each read by a task of its
/// own; answers once every watch has been answered.
async fn reqwest_watchers(
    http: &reqwest::Client,
    url: &str,
    watchers: usize,
    from: u64,
    writes: usize,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let resp = http.get(url).send().await.expect("watch");
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    streams
        .into_iter()
        .map(|resp| {
            tokio::spawn(async move {
                let mut receipts = Receipts::new(from, writes);
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
        .collect()
}

/// `watchers` watches of `path` on HTTP/2 connections to `base` of
/// `per_conn` streams each, a task per connection ([`crate::h2raw`]);
/// answers once every stream has been answered.
async fn raw_watchers(
    base: &str,
    path: &str,
    watchers: usize,
    per_conn: usize,
    from: u64,
    writes: usize,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for first in (0..watchers).step_by(per_conn) {
        let k = per_conn.min(watchers - first);
        let paths = vec![path.to_string(); k];
        let base = base.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tasks.push(tokio::spawn(async move {
            let mut receipts: Vec<Receipts> =
                (0..k).map(|_| Receipts::untimed(from, writes)).collect();
            let mut lines: Vec<Lines> = (0..k).map(|_| Lines::default()).collect();
            let mut complete = 0;
            let mut tx = Some(tx);
            let result = h2raw::watch(&base, &paths, WATCH_IDLE, |event| match event {
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
            }
            receipts.into_iter().map(Receipts::into_times).collect()
        }));
    }
    for rx in ready {
        rx.await.expect("every watch stream answered 200");
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

/// How long a watcher waits for its next event before giving up.
const WATCH_IDLE: Duration = Duration::from_secs(30);

/// One watcher's receipts: when it received each revision `from + 1 + i`
/// (first receipt only), and its idle timeout (WATCH_IDLE without a new
/// event: one timer, re-armed at most once a second rather than per
/// message). The same for both stores' watchers.
pub struct Receipts {
    from: u64,
    at: Vec<Option<Instant>>,
    got: usize,
    idle: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed: Instant,
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
            at: vec![None; writes],
            got: 0,
            idle: None,
            armed: Instant::now(),
        }
    }

    /// Events not received (yet).
    pub fn missing(&self) -> usize {
        self.at.len() - self.got
    }

    /// Whether every event was received.
    pub fn complete(&self) -> bool {
        self.got == self.at.len()
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

    /// Notes revision `rv`, received `now`.
    pub fn note(&mut self, rv: u64, now: Instant) {
        if rv > self.from
            && let Some(slot) = self.at.get_mut((rv - self.from - 1) as usize)
            && slot.is_none()
        {
            *slot = Some(now);
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

    /// The receipt times, by revision.
    pub fn into_times(self) -> Vec<Option<Instant>> {
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
/// watcher, when it received the revision `from + 1 + i` (index `i`).
/// Waits for the writers, then the watchers, and computes the figures.
pub async fn finish_fan_out(
    from: u64,
    writer_tasks: Vec<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
    acks: &tokio::sync::Mutex<Vec<(u64, Instant)>>,
    (started, cpu): (Instant, util::CpuMark),
    load: util::WriteLoad,
) -> WatchFigures {
    for t in writer_tasks {
        t.await.expect("writer");
    }
    let write_time = started.elapsed();
    let acks = acks.lock().await.clone();
    let seen = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|t| t.expect("watcher"))
        .collect();
    let mut figures = fan_out_figures(from, acks, seen, started, write_time, load);
    figures.cpu = cpu.spent();
    figures
}

fn fan_out_figures(
    from: u64,
    acks: Vec<(u64, Instant)>,
    seen: Vec<Vec<Option<Instant>>>,
    started: Instant,
    write_time: Duration,
    load: util::WriteLoad,
) -> WatchFigures {
    let writes = acks.len();
    let mut ack_of = vec![None; writes];
    for (rv, at) in acks {
        if rv > from && ((rv - from - 1) as usize) < writes {
            ack_of[(rv - from - 1) as usize] = Some(at);
        }
    }
    let mut figures = WatchFigures {
        watchers: seen.len(),
        writes,
        writers: load.writers,
        rate: load.rate,
        write_time,
        ..WatchFigures::default()
    };
    let mut last_receipt = started;
    for watcher in &seen {
        for (i, s) in watcher.iter().enumerate() {
            match (s, ack_of.get(i).copied().flatten()) {
                (Some(r), Some(a)) => {
                    figures.delays.push(r.saturating_duration_since(a));
                    last_receipt = last_receipt.max(*r);
                }
                _ => figures.missing += 1,
            }
        }
    }
    figures.delays.sort();
    figures.delivered = figures.delays.len();
    figures.span = last_receipt.duration_since(started);
    figures
}

/// Restarts modelhub `runs` times on `data`: time to the "listening" line,
/// then RSS after a few list and get requests, then a clean stop.
/// On the last run it also counts the objects (after the RSS reading).
pub async fn startup(bin: &str, data: &Path, runs: usize, get_cells: usize) -> (Vec<Startup>, u64) {
    let mut out = Vec::with_capacity(runs);
    let mut objects = 0;
    for run in 0..runs {
        let server = Spawned::start_on(bin, data).await;
        let ready = server.ready_after;
        let hub = Hub::new(&server.base, "startup", None);
        // A few requests: the 10,000-cell list twice, 100 single gets, a
        // paged cross-scope list.
        let list = util::stack_cells_url(&hub.base, LIST_STACK);
        for _ in 0..2 {
            let resp = hub.http.get(&list).send().await.expect("list");
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
                .expect("get");
            resp.bytes().await.expect("get body");
        }
        let resp = hub
            .http
            .get(format!("{}/api/v1beta1/cells?limit=500", hub.base))
            .send()
            .await
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
