//! Shared pieces: a spawned server, documents, the closed-loop driver,
//! percentiles.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A modelhub started by the bench, on a temporary database or a given file.
pub struct Spawned {
    /// Its base URL.
    pub base: String,
    /// The database file.
    pub data: PathBuf,
    /// Time from spawn to the "listening" line on stdout.
    pub ready_after: Duration,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Spawned {
    /// Starts `bin serve` on a free port and a fresh temporary database
    /// (removed when this is dropped), with `extra` arguments after the
    /// bench's own (e.g. `--store etcd --etcd-endpoints URL`).
    pub async fn start(bin: &str, extra: &[String]) -> Spawned {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("bench.redb");
        let mut s = Spawned::start_on(bin, &data, extra).await;
        s._dir = Some(dir);
        s
    }

    /// Starts `bin serve` on a free port and the database file `data`
    /// (created if missing, kept afterwards), with `extra` arguments.
    pub async fn start_on(bin: &str, data: &Path, extra: &[String]) -> Spawned {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn modelhub");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let Some(line) = lines.next_line().await.expect("read") else {
                panic!(
                    "{bin} serve {} ended before listening (its stderr is above)",
                    extra.join(" ")
                );
            };
            if let Some(base) = line.strip_prefix("modelhub listening on ") {
                break base.to_string();
            }
        };
        let ready_after = started.elapsed();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Spawned {
            base,
            data: data.to_path_buf(),
            ready_after,
            child,
            _dir: None,
        }
    }

    /// Takes the temporary directory of the database (if any), so that it
    /// outlives this server, e.g. to restart on the same file.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `VmRSS` and `VmHWM` of the server, in KiB, from `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Stops the server with SIGTERM (it closes the database cleanly) and
    /// waits for it; returns how long that took. Kills it after 120 s.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("modelhub {pid} did not stop within 120 s after SIGTERM: killing it");
                let _ = self.child.kill().await;
            }
        }
        started.elapsed()
    }
}

/// A realistic cell: three containers, ~1.5 KB of JSON.
pub fn cell(name: &str) -> Value {
    let container = |id: &str, root: bool| {
        json!({
            "id": id, "root": root,
            "image": "registry.example.com/platform/app-server:1.27.3",
            "command": "/usr/local/bin/app-server",
            "args": ["--listen", "0.0.0.0:8080", "--log-format", "json", "--config", "/etc/app/config.yaml"],
            "env": ["APP_MODE=production", "APP_REGION=eu-west-1", "APP_FEATURES=search,checkout,recommendations"],
            "ports": ["8080:8080"],
            "volumes": [{"source": "/var/lib/kukeon/app/config", "target": "/etc/app", "readOnly": true}],
            "networks": ["frontend"],
            "restartPolicy": "always"
        })
    };
    json!({
        "metadata": {"name": name, "labels": {"app": "shop", "tier": "front", "team": "platform"}},
        "spec": {"containers": [container("root", true), container("web", false), container("sidecar", false)]}
    })
}

/// [`cell`] serialized once, the name spliced in per request (building
/// and serializing a JSON value per request would cost the load generator
/// more CPU than parsing it costs the server).
pub struct CellTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl CellTemplate {
    const MARK: &str = "@@name@@";

    /// The template of [`cell`].
    pub fn new() -> CellTemplate {
        let whole = serde_json::to_vec(&cell(Self::MARK)).expect("serialize");
        let at = whole
            .windows(Self::MARK.len())
            .position(|w| w == Self::MARK.as_bytes())
            .expect("marker");
        CellTemplate {
            head: whole[..at].to_vec(),
            tail: whole[at + Self::MARK.len()..].to_vec(),
        }
    }

    /// The JSON of `cell(name)` (`name` needs no escaping: cell names are
    /// DNS labels).
    pub fn body(&self, name: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + name.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }
}

/// [`cell`] as a self-placing document for `/apply`: kind and coordinates.
pub fn cell_doc(stack: &str, name: &str) -> Value {
    let mut doc = cell(name);
    doc["apiVersion"] = json!("v1beta1");
    doc["kind"] = json!("Cell");
    doc["spec"]["realmId"] = json!("bench");
    doc["spec"]["spaceId"] = json!("s");
    doc["spec"]["stackId"] = json!(stack);
    doc
}

/// A small cell (no containers, ~170 bytes), the filler of the 1M load.
pub fn small_cell_doc(stack: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1beta1", "kind": "Cell",
        "metadata": {"name": name, "labels": {"app": "filler", "tier": "load"}},
        "spec": {"realmId": "load", "spaceId": "s", "stackId": stack}
    })
}

/// The status a reconciler writes for a running cell; `n` goes into the
/// restart counts so that every write really changes the status (a write
/// that changes nothing is not written by modelhub).
pub fn cell_status(stack: &str, name: &str, n: u64) -> Value {
    let container = |id: &str| {
        json!({
            "name": id, "id": id, "state": "Ready", "restartCount": n,
            "startTime": "2026-11-28T12:00:00Z"
        })
    };
    json!({
        "state": "Ready",
        "cgroupPath": format!("/kukeon/bench/s/{stack}/{name}"),
        "readyObserved": true,
        "containers": [container("root"), container("web"), container("sidecar")]
    })
}

/// The part of created cells' names that tells one closed-loop create run
/// from another: the run id, the clients, and (after the first) the round.
pub fn create_tag(run: &str, clients: usize, round: u32) -> String {
    match round {
        0 => format!("{run}-{clients}"),
        r => format!("{run}-{clients}r{r}"),
    }
}

/// Name of the `i`-th cell of a pre-created set.
pub fn nth_cell(i: usize) -> String {
    format!("c-{i:06}")
}

/// Creates realm/space/stack `bench/s/t` (ignores "already exists").
pub async fn hierarchy(http: &reqwest::Client, base: &str) {
    stack(http, base, "t").await;
}

/// Creates realm/space `bench/s` and stack `name` in it (ignores "already
/// exists").
pub async fn stack(http: &reqwest::Client, base: &str, name: &str) {
    for (url, name) in [
        ("/api/v1beta1/realms".to_string(), "bench"),
        ("/api/v1beta1/realms/bench/spaces".to_string(), "s"),
        (
            "/api/v1beta1/realms/bench/spaces/s/stacks".to_string(),
            name,
        ),
    ] {
        let resp = http
            .post(format!("{base}{url}"))
            .json(&json!({"metadata": {"name": name}}))
            .send()
            .await
            .expect("create parent");
        assert!(
            resp.status().is_success() || resp.status() == 409,
            "{}",
            resp.status()
        );
    }
}

/// The URL of the bench stack's cells.
pub fn cells_url(base: &str) -> String {
    stack_cells_url(base, "t")
}

/// The URL path of the cells of stack `bench/s/<stack>`.
pub fn cells_path(stack: &str) -> String {
    format!("/api/v1beta1/realms/bench/spaces/s/stacks/{stack}/cells")
}

/// The URL of the cells of stack `bench/s/<stack>`.
pub fn stack_cells_url(base: &str, stack: &str) -> String {
    format!("{base}/api/v1beta1/realms/bench/spaces/s/stacks/{stack}/cells")
}

/// The etcd key of cell `name` in stack `bench/s/<stack>` (the layout
/// kukeon's etcd store would use).
#[cfg_attr(not(feature = "etcd"), expect(dead_code))]
pub fn etcd_key(stack: &str, name: &str) -> String {
    format!("/kukeon/bench/s/{stack}/{name}")
}

/// A short id unique to this bench run, so repeated runs against the same
/// server or etcd never collide on names.
pub fn run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("{ms:x}")
}

/// The writes of a watch workload.
#[derive(Clone, Copy, Debug)]
pub struct WriteLoad {
    /// Writes (cell creates) in all.
    pub writes: usize,
    /// Concurrent writers; write `i` is made by writer `i % writers`.
    pub writers: usize,
    /// Writes per second in all (open loop); `None`: each writer writes as
    /// soon as its previous write is acknowledged (closed loop).
    pub rate: Option<f64>,
}

impl WriteLoad {
    /// Waits until write `i` is due (at once in a closed loop).
    pub async fn pace(&self, started: Instant, i: usize) {
        if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
    }
}

/// The `p`-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

/// Reads `"resourceVersion":"N"` of an event line without parsing it all.
pub fn resource_version(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"resourceVersion\":\"";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let start = FINDER.find(line)? + KEY.len();
    let end = memchr::memchr(b'"', &line[start..])? + start;
    std::str::from_utf8(&line[start..end]).ok()?.parse().ok()
}

/// When a closed-loop workload ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long (requests in flight finish).
    For(Duration),
    /// After this many requests in total.
    Count(u64),
}

impl Stop {
    /// One of `n` equal parts of this stop (a count rounded up), for a
    /// workload run in `n` rounds.
    pub fn split(self, n: u32) -> Stop {
        let n = n.max(1);
        match self {
            Stop::For(d) => Stop::For(d / n),
            Stop::Count(c) => Stop::Count(c.div_ceil(u64::from(n))),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::For(d) => write!(f, "{} s", d.as_secs_f64()),
            Stop::Count(n) => write!(f, "{n} requests"),
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ), from
/// `getconf CLK_TCK`, read once; 100 (Linux's value on every mainstream
/// architecture) if that fails.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat`
/// (`self` for this process); `None` if it cannot be read.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime and stime the 12th and 13th, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_micros(
        (user + system) * 1_000_000 / clock_ticks(),
    ))
}

/// CPU spent during a run by the server and by this load generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The server's CPU time, if its pid is known.
    pub server: Option<Duration>,
    /// This process's CPU time.
    pub bench: Option<Duration>,
}

/// CPU times of the server's processes (if their pids are known: all of
/// a target's modelhub replicas, and etcd under modelhub on etcd) and of
/// this process at one moment, to measure what both spend from then on.
pub struct CpuMark {
    pids: Vec<u32>,
    server: Option<Duration>,
    bench: Option<Duration>,
}

/// The CPU time of all of `pids` together; `None` if there are none or
/// one cannot be read.
fn cpu_of(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| cpu_time(&p.to_string()))
        .sum::<Option<Duration>>()
}

impl CpuMark {
    /// The CPU times now of `server_pids` (the server's CPU is unknown
    /// without any) and of this process.
    pub fn now(server_pids: &[u32]) -> CpuMark {
        CpuMark {
            pids: server_pids.to_vec(),
            server: cpu_of(server_pids),
            bench: cpu_time("self"),
        }
    }

    /// The CPU both have spent since the mark.
    pub fn spent(&self) -> Cpu {
        let now = CpuMark::now(&self.pids);
        let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        Cpu {
            server: diff(self.server, now.server),
            bench: diff(self.bench, now.bench),
        }
    }
}

/// Measures the CPU of `server_pids` (if any) and of this process across
/// `work`.
pub async fn with_cpu<T>(server_pids: &[u32], work: impl Future<Output = T>) -> (T, Cpu) {
    let mark = CpuMark::now(server_pids);
    let out = work.await;
    (out, mark.spent())
}

/// The outcome of a closed-loop run: one latency per successful request.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// CPU used during the loops.
    pub cpu: Cpu,
    /// Sorted latencies of the successful requests.
    pub lat: Vec<Duration>,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Failures by kind (e.g. `create: 503 Unavailable`): how many, and
    /// the first one's whole message.
    pub kinds: BTreeMap<String, (u64, String)>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Of the server's CPU, what the store under it spent (etcd under
    /// modelhub on etcd), if known.
    pub backend: Option<Duration>,
    /// The successful requests' latencies by the second in which each
    /// completed.
    pub per_second: PerSecond,
}

/// Latencies of a run by the second of the run in which each request
/// completed (from the run's start), in microseconds, each second's
/// unsorted; so that a stall of the server shows as the seconds it falls
/// in.
#[derive(Clone, Debug, Default)]
pub struct PerSecond(pub Vec<Vec<u32>>);

/// One second of a [`PerSecond`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Second {
    /// Requests completed in it.
    pub ops: usize,
    /// Their 99th percentile latency.
    pub p99: Duration,
    /// The slowest of them.
    pub max: Duration,
}

impl PerSecond {
    /// Notes a request that took `lat` and completed `done` after the
    /// run's start; one completing in or after second `last` (if given:
    /// the run's last, for requests in flight at its end) counts in it.
    pub fn note(&mut self, done: Duration, lat: Duration, last: Option<usize>) {
        let mut s = done.as_secs() as usize;
        if let Some(last) = last {
            s = s.min(last);
        }
        if self.0.len() <= s {
            self.0.resize_with(s + 1, Vec::new);
        }
        self.0[s].push(u32::try_from(lat.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds the requests of another client of the same run, second by
    /// second.
    pub fn merge(&mut self, other: PerSecond) {
        if self.0.len() < other.0.len() {
            self.0.resize_with(other.0.len(), Vec::new);
        }
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            mine.extend(theirs);
        }
    }

    /// Each second's count, p99 and maximum.
    pub fn seconds(&self) -> Vec<Second> {
        self.0
            .iter()
            .map(|lat| {
                let mut lat = lat.clone();
                lat.sort_unstable();
                let us = |us: u32| Duration::from_micros(u64::from(us));
                Second {
                    ops: lat.len(),
                    p99: us(percentile_us(&lat, 99.0)),
                    max: us(lat.last().copied().unwrap_or(0)),
                }
            })
            .collect()
    }
}

/// The `p`-th percentile (0..=100) of sorted microseconds, as
/// [`percentile`] picks it; 0 for none.
pub fn percentile_us(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// A failed request: its kind, counted in [`Run::kinds`] (no names in it,
/// so that failures of one kind add up), and the whole message.
#[derive(Clone, Debug)]
pub struct Failure {
    /// E.g. `create: 503 Unavailable`.
    pub kind: String,
    /// E.g. the request's path and the problem's detail.
    pub detail: String,
}

impl Failure {
    /// A failure of kind `kind`, described by `detail`.
    pub fn new(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

impl From<String> for Failure {
    /// A failure whose message is its kind (an etcd client's error, say).
    fn from(detail: String) -> Failure {
        let kind: String = detail.chars().take(160).collect();
        Failure { kind, detail }
    }
}

/// Adds `count` failures of `kind` (first message `detail`) to `kinds`.
pub fn count_kind(
    kinds: &mut BTreeMap<String, (u64, String)>,
    kind: String,
    count: u64,
    detail: String,
) {
    kinds
        .entry(kind)
        .and_modify(|(n, _)| *n += count)
        .or_insert((count, detail));
}

impl Run {
    /// Successful requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency.
    pub fn p(&self, p: f64) -> Duration {
        percentile(&self.lat, p)
    }

    /// Adds another run of the same workload to this one, as if the two
    /// had been one run: requests, errors, wall time and CPU add up, and
    /// its seconds follow this one's.
    pub fn absorb(&mut self, mut other: Run) {
        let seconds = std::mem::take(&mut other.per_second);
        self.per_second.0.extend(seconds.0);
        let add = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        self.cpu = Cpu {
            server: add(self.cpu.server, other.cpu.server),
            bench: add(self.cpu.bench, other.cpu.bench),
        };
        self.elapsed += other.elapsed;
        self.backend = add(self.backend, other.backend);
        self.absorb_counts(other);
        self.lat.sort();
    }

    /// Adds another client's requests and failures (not its time or CPU).
    fn absorb_counts(&mut self, other: Run) {
        self.lat.extend(other.lat);
        self.per_second.merge(other.per_second);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (kind, (n, detail)) in other.kinds {
            count_kind(&mut self.kinds, kind, n, detail);
        }
    }

    /// Server and load-generator CPU per successful request, if measured.
    pub fn cpu_per_op(&self) -> (Option<Duration>, Option<Duration>) {
        let per = |d: Option<Duration>| Some(d? / u32::try_from(self.lat.len().max(1)).ok()?);
        (per(self.cpu.server), per(self.cpu.bench))
    }

    /// Server plus load-generator CPU per successful request, when both
    /// were measured: what one request costs the cores the two share.
    /// When both stores keep the cores busy, the ops/s ratio roughly
    /// follows the inverse of this one's.
    pub fn shared_cpu_per_op(&self) -> Option<Duration> {
        let (server, bench) = self.cpu_per_op();
        Some(server? + bench?)
    }

    /// How many cores the server and the load generator kept busy
    /// together over the run (their CPU time over its wall time), when both
    /// were measured.
    pub fn cores_used(&self) -> Option<f64> {
        let cpu = self.cpu.server? + self.cpu.bench?;
        Some(cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9))
    }
}

/// Runs `clients` concurrent loops, each calling `op(client, seq)` back to
/// back until `stop`; `seq` is unique across clients (0, 1, 2, ...). The
/// CPU of `server_pids` (if any) and of this process during the loops
/// goes into the run.
pub async fn closed_loop<F, Fut>(server_pids: &[u32], clients: usize, stop: Stop, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let (mut all, cpu) = with_cpu(server_pids, run_loops(clients, stop, op)).await;
    all.cpu = cpu;
    all
}

async fn run_loops<F, Fut>(clients: usize, stop: Stop, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = match stop {
        Stop::For(d) => Some(started + d),
        Stop::Count(_) => None,
    };
    let last = last_second(stop);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                match (stop, deadline) {
                    (Stop::Count(n), _) if seq >= n => break,
                    (_, Some(d)) if Instant::now() >= d => break,
                    _ => {}
                }
                let t = Instant::now();
                match op(c, seq).await {
                    Ok(()) => {
                        let done = Instant::now();
                        let lat = done - t;
                        run.lat.push(lat);
                        run.per_second.note(done - started, lat, last);
                    }
                    Err(e) => {
                        run.errors += 1;
                        run.first_error.get_or_insert_with(|| e.detail.clone());
                        count_kind(&mut run.kinds, e.kind, 1, e.detail);
                    }
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for t in tasks {
        let run = t.await.expect("client task");
        all.absorb_counts(run);
    }
    all.elapsed = started.elapsed();
    all.lat.sort();
    all
}

/// The last second of a run that stops after a time: the one the requests
/// in flight at its end count in (none for a count of requests).
pub fn last_second(stop: Stop) -> Option<usize> {
    match stop {
        Stop::For(d) => Some((d.as_secs_f64().ceil() as usize).max(1) - 1),
        Stop::Count(_) => None,
    }
}

/// A pseudo-random index in `0..n` for request `seq` (a fixed permutation,
/// so both stores see the same key sequence; no RNG dependency).
pub fn spread(seq: u64, n: usize) -> usize {
    (seq.wrapping_mul(2_654_435_761) % n as u64) as usize
}
