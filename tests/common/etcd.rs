//! Local etcd clusters for the tests: N members (1 to 5) started as child
//! processes of the test binary, on 127.0.0.1 only, with their data in a
//! temporary directory under `/dev/shm` (fsync is cheap there).
//!
//! - `etcd` is found through `MODELHUB_ETCD_BIN` or `PATH`; without it
//!   [`Cluster::start`] prints why and answers `None`. `etcdctl` (used to
//!   find the leader and to check health) is found through
//!   `MODELHUB_ETCDCTL_BIN`, next to `etcd`, or on `PATH`.
//! - Ports: each cluster takes a slot of 10 consecutive ports in
//!   10000..32000 (below Linux's ephemeral range, never etcd's default 2379
//!   and 2380): member i listens for clients on `base + i` and for peers on
//!   `base + 5 + i`. The first slot is derived from the process id, so test
//!   binaries running at once start far apart, and a slot is taken only if
//!   all its ports can be bound; a start that still loses a race for a port
//!   is retried on the next slot.
//! - Every member is started through a small `sh` wrapper that forks a
//!   watchdog and then `exec`s etcd (so the child's pid is etcd's own). Once
//!   a second the watchdog reads etcd's `/proc/PID/stat`: when etcd's
//!   parent is no longer this test process (it exited, however it exited,
//!   and etcd was re-parented), the watchdog SIGKILLs that etcd, and only
//!   it (it checks the process start time, so a recycled pid is never
//!   hit), and removes the member's data directory. That is how the
//!   process-wide [`shared`] cluster, a static that is never dropped, ends
//!   with the test binary; a [`Cluster`] that is dropped kills its members
//!   and removes its directory at once.
//! - Every wait is bounded: health [`HEALTH_TIMEOUT`], each `etcdctl` call
//!   a deadline after which it is killed.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a cluster may take to serve linearizable reads on every
/// running member, and to elect a leader.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// The flags every member gets (the design note's §6); a flag of the same
/// name among a cluster's extra flags replaces the default.
const DEFAULT_FLAGS: &[(&str, &str)] = &[
    ("--heartbeat-interval", "100"),
    ("--election-timeout", "1000"),
    ("--experimental-watch-progress-notify-interval", "1s"),
    ("--quota-backend-bytes", "268435456"),
    ("--auto-compaction-retention", "0"),
    ("--logger", "zap"),
    ("--log-level", "warn"),
];

/// The largest cluster (a slot holds 5 client and 5 peer ports).
const MAX_MEMBERS: usize = 5;
const PORT_LOW: u32 = 10_000;
const PORT_HIGH: u32 = 32_000;
const SLOT: u32 = 10;
/// How many slots a start probes before giving up.
const PROBED_SLOTS: u32 = 400;
/// How many times a start is tried (each on another slot) when a member
/// could not bind its port.
const START_ATTEMPTS: usize = 3;

/// The member wrapper: `sh -c WRAPPER sh TEST_PID MEMBER_DIR LOG ETCD ARGS...`
/// (see the module's documentation).
const WRAPPER: &str = r#"
test_pid=$1; member_dir=$2; log=$3; shift 3
me=$$
(
  set -f
  # Reads etcd's parent pid, start time and state; fails once it is gone.
  probe() {
    read -r line < "/proc/$me/stat" || return 1
    set -- ${line##*) }
    state=$1; ppid=$2; started=${20}
  }
  probe || exit 0
  born=$started
  while sleep 1; do
    probe || exit 0
    [ "$started" = "$born" ] || exit 0
    if [ "$ppid" != "$test_pid" ]; then
      kill -KILL "$me"
      n=0
      while probe && [ "$state" != Z ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
      rm -rf "$member_dir" "$log"
      n=0
      until rmdir "${member_dir%/*}" || [ $n -ge 5 ]; do sleep 1; n=$((n + 1)); done
      exit 0
    fi
  done
) </dev/null >/dev/null 2>&1 &
exec "$@"
"#;

/// The `etcd` binary: `MODELHUB_ETCD_BIN` or the first `etcd` on `PATH`.
pub fn etcd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MODELHUB_ETCD_BIN") {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "MODELHUB_ETCD_BIN={} is not an executable file",
            p.display()
        );
        return Some(p);
    }
    on_path("etcd")
}

/// The `etcdctl` binary: `MODELHUB_ETCDCTL_BIN`, the one next to `etcd`, or
/// the first on `PATH`.
pub fn etcdctl_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MODELHUB_ETCDCTL_BIN") {
        return Some(PathBuf::from(p));
    }
    etcd_bin()
        .and_then(|etcd| etcd.parent().map(|d| d.join("etcdctl")))
        .filter(|p| is_executable(p))
        .or_else(|| on_path("etcdctl"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A fresh key prefix for one server on a shared cluster: `/t<pid>-<n>`.
pub fn next_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "/t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The process-wide 3-member cluster, started on first use (`None` when
/// there is no etcd binary). It lives as long as the test binary: its
/// members' watchdogs kill them when the process is gone.
pub fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();
    // A failed start is kept, so that every test using the cluster fails
    // at once with the reason instead of trying again.
    match SHARED.get_or_init(|| Cluster::try_start(3, &[], None)) {
        Ok(cluster) => cluster.as_ref(),
        Err(e) => panic!("the shared etcd cluster did not start: {e}"),
    }
}

/// One member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Its `--data-dir`.
    dir: PathBuf,
    /// Its stdout and stderr, appended to across restarts.
    log: PathBuf,
    /// The running (or stopped) process; `None` once killed.
    process: Option<Child>,
    /// Whether it was sent SIGSTOP (and no SIGCONT since).
    stopped: bool,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running etcd cluster whose members are this process's children.
pub struct Cluster {
    members: Mutex<Vec<Member>>,
    etcd: PathBuf,
    etcdctl: PathBuf,
    /// `m1=http://...,m2=...`.
    initial_cluster: String,
    token: String,
    /// The flags after the member-specific ones: the defaults not
    /// overridden, then the extra ones.
    flags: Vec<String>,
    endpoints: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts an `n`-member cluster and waits until every member serves
    /// linearizable reads; `None` (printing why) when there is no etcd
    /// binary.
    pub fn start(n: usize) -> Option<Cluster> {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra etcd flags (`["--max-txn-ops", "16"]`);
    /// one naming a default flag replaces it.
    pub fn start_with(n: usize, extra: &[&str]) -> Option<Cluster> {
        Cluster::try_start(n, extra, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Cluster::start_with`] with the data directories under `parent`
    /// instead of `/dev/shm` (a real disk, for durability cases).
    pub fn start_in(n: usize, extra: &[&str], parent: &Path) -> Option<Cluster> {
        Cluster::try_start(n, extra, Some(parent)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(
        n: usize,
        extra: &[&str],
        parent: Option<&Path>,
    ) -> Result<Option<Cluster>, String> {
        assert!(
            (1..=MAX_MEMBERS).contains(&n),
            "a cluster has 1 to {MAX_MEMBERS} members, not {n}"
        );
        let Some(etcd) = etcd_bin() else {
            // CI installs etcd: there, a missing binary fails the test
            // instead of letting it pass without running.
            assert!(
                std::env::var_os("MODELHUB_REQUIRE_ETCD").is_none(),
                "MODELHUB_REQUIRE_ETCD is set but there is no etcd binary"
            );
            eprintln!("skipping: no etcd binary (set MODELHUB_ETCD_BIN or install etcd-server)");
            return Ok(None);
        };
        let etcdctl = etcdctl_bin().ok_or_else(|| {
            "no etcdctl binary (set MODELHUB_ETCDCTL_BIN or install etcd-client)".to_string()
        })?;
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let base = free_slot(n)?;
            let cluster = Cluster::launch(n, extra, parent, &etcd, &etcdctl, base)?;
            match cluster.try_wait_healthy(HEALTH_TIMEOUT) {
                Ok(()) => return Ok(Some(cluster)),
                Err(e) => {
                    let lost_port =
                        (0..n).any(|i| cluster.log(i).contains("address already in use"));
                    last = format!(
                        "a {n}-member etcd cluster on ports {base}.. did not become healthy \
                         (attempt {attempt}): {e}"
                    );
                    if !lost_port {
                        return Err(last);
                    }
                    eprintln!("{last}; trying other ports");
                }
            }
        }
        Err(last)
    }

    fn launch(
        n: usize,
        extra: &[&str],
        parent: Option<&Path>,
        etcd: &Path,
        etcdctl: &Path,
        base: u16,
    ) -> Result<Cluster, String> {
        let shm = Path::new("/dev/shm");
        let parent = parent.unwrap_or(if shm.is_dir() { shm } else { Path::new("/tmp") });
        let dir = tempfile::Builder::new()
            .prefix("modelhub-etcd-")
            .tempdir_in(parent)
            .map_err(|e| format!("a temporary directory in {}: {e}", parent.display()))?;
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{}", i + 1);
                Member {
                    client_port: base + i as u16,
                    peer_port: base + MAX_MEMBERS as u16 + i as u16,
                    dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    process: None,
                    stopped: false,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let overridden: Vec<&str> = extra
            .iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap_or(a))
            .collect();
        let mut flags: Vec<String> = DEFAULT_FLAGS
            .iter()
            .filter(|(name, _)| !overridden.contains(name))
            .flat_map(|(name, value)| [name.to_string(), value.to_string()])
            .collect();
        flags.extend(extra.iter().map(|s| s.to_string()));
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let cluster = Cluster {
            endpoints: members.iter().map(Member::endpoint).collect(),
            members: Mutex::new(members),
            etcd: etcd.to_path_buf(),
            etcdctl: etcdctl.to_path_buf(),
            initial_cluster,
            token: format!(
                "mh-{}-{}",
                std::process::id(),
                CLUSTERS.fetch_add(1, Ordering::Relaxed)
            ),
            flags,
            dir,
        };
        {
            let mut members = cluster.lock();
            for m in members.iter_mut() {
                cluster.spawn(m, "new")?;
            }
        }
        Ok(cluster)
    }

    /// Starts member `m`'s process (`state`: `new` or `existing`).
    fn spawn(&self, m: &mut Member, state: &str) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("{}: {e}", m.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(&m.dir)
            .arg(&m.log)
            .arg(&self.etcd)
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.dir)
            .args(["--listen-client-urls", &m.endpoint()])
            .args(["--advertise-client-urls", &m.endpoint()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(&self.flags)
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        clear_etcd_env(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.etcd.display()))?;
        m.process = Some(child);
        m.stopped = false;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Every member's client URL, comma-separated (for
    /// `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// Member `i`'s client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self, i: usize) -> String {
        self.endpoints[i].clone()
    }

    /// Member `i`'s etcd process id; panics if it was killed.
    pub fn pid(&self, i: usize) -> u32 {
        self.lock()[i]
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"))
            .id()
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.lock()[i].dir.clone()
    }

    /// Member `i`'s log so far (all its runs).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.lock()[i].log).unwrap_or_default()
    }

    /// Kills member `i` with SIGKILL and waits for it (nothing if it is
    /// not running).
    pub fn kill(&self, i: usize) {
        let mut members = self.lock();
        if let Some(mut child) = members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        members[i].stopped = false;
    }

    /// Sends SIGSTOP to member `i` and waits (at most 2 s) until it is
    /// stopped: its sockets stay open, it answers nothing.
    pub fn stop(&self, i: usize) {
        self.signal(i, rustix::process::Signal::STOP, true);
    }

    /// Sends SIGCONT to a member stopped with [`Cluster::stop`].
    pub fn cont(&self, i: usize) {
        self.signal(i, rustix::process::Signal::CONT, false);
    }

    fn signal(&self, i: usize, sig: rustix::process::Signal, stop: bool) {
        let mut members = self.lock();
        let m = &mut members[i];
        let child = m
            .process
            .as_mut()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"));
        // Until `try_wait` reports an exit, the child is not reaped and its
        // pid is still this member's.
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("etcd member {i} has exited ({status})");
        }
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, sig)
            .unwrap_or_else(|e| panic!("signal etcd member {i}: {e}"));
        m.stopped = stop;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let state = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .ok()
                .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
            match state {
                Some('T') if stop => return,
                Some('T') => {}
                _ if !stop => return,
                None => return,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "etcd member {i} did not {} within 2 s",
            if stop { "stop" } else { "continue" }
        );
    }

    /// Kills member `i` if it runs, then starts it again on the same data
    /// directory and ports (`--initial-cluster-state existing`). Does not
    /// wait: see [`Cluster::wait_healthy`].
    pub fn restart(&self, i: usize) {
        self.kill(i);
        let mut members = self.lock();
        self.spawn(&mut members[i], "existing")
            .unwrap_or_else(|e| panic!("restart etcd member {i}: {e}"));
    }

    /// Waits (at most [`HEALTH_TIMEOUT`]) until every running member that is
    /// not stopped serves a linearizable read; panics with the members'
    /// logs otherwise, or as soon as a member's process has exited.
    pub fn wait_healthy(&self) {
        if let Err(e) = self.try_wait_healthy(HEALTH_TIMEOUT) {
            panic!("etcd cluster not healthy: {e}");
        }
    }

    fn try_wait_healthy(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let mut pending = Vec::new();
            for (i, exited) in self.poll_exits() {
                match exited {
                    Some(status) => {
                        return Err(format!(
                            "member m{} exited ({status}); its log:\n{}",
                            i + 1,
                            self.log(i)
                        ));
                    }
                    None => pending.push(i),
                }
            }
            let mut failures = Vec::new();
            for i in pending {
                let out = self.etcdctl_on(
                    i,
                    &["--dial-timeout=1s", "--command-timeout=2s", "get", "health"],
                );
                if !out.status.success() {
                    failures.push(format!(
                        "m{}: {}",
                        i + 1,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            if failures.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: String = (0..self.len())
                    .map(|i| format!("\n--- m{} log:\n{}", i + 1, self.log(i)))
                    .collect();
                return Err(format!("after {limit:?}: {}{logs}", failures.join("; ")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// For each member that runs and is not stopped: whether its process
    /// has exited (and how).
    fn poll_exits(&self) -> Vec<(usize, Option<ExitStatus>)> {
        let mut members = self.lock();
        members
            .iter_mut()
            .enumerate()
            .filter(|(_, m)| !m.stopped)
            .filter_map(|(i, m)| {
                let child = m.process.as_mut()?;
                Some((i, child.try_wait().expect("try_wait")))
            })
            .collect()
    }

    /// Member `i`'s `endpoint status` (the JSON `Status` object: `header`
    /// with `member_id` and `revision`, `leader`, `raftTerm`, `raftIndex`,
    /// `dbSize`, `dbSizeInUse`, `version`), or `None` if it does not answer
    /// within 2 s.
    pub fn status(&self, i: usize) -> Option<Value> {
        let out = self.etcdctl_on(
            i,
            &[
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "status",
                "-w",
                "json",
            ],
        );
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v.get(0)?.get("Status")?.clone())
    }

    /// Member `i`'s id (as etcd reports it), or `None` if it does not
    /// answer.
    pub fn member_id(&self, i: usize) -> Option<u64> {
        self.status(i)?["header"]["member_id"].as_u64()
    }

    /// The leader, if a running, not stopped member reports itself as
    /// leader now (the one with the highest term if several do).
    pub fn try_leader(&self) -> Option<usize> {
        let candidates: Vec<usize> = self
            .poll_exits()
            .into_iter()
            .filter(|(_, exited)| exited.is_none())
            .map(|(i, _)| i)
            .collect();
        candidates
            .into_iter()
            .filter_map(|i| {
                let s = self.status(i)?;
                let id = s["header"]["member_id"].as_u64()?;
                (id != 0 && s["leader"].as_u64() == Some(id))
                    .then(|| (s["raftTerm"].as_u64().unwrap_or(0), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// The leader's index; waits for one at most [`HEALTH_TIMEOUT`].
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(i) = self.try_leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader within {HEALTH_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `etcdctl ARGS` (API v3) against all members (killed after
    /// 60 s).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.run_etcdctl(&self.endpoints(), args)
    }

    /// Runs `etcdctl ARGS` against member `i` only (killed after 60 s).
    pub fn etcdctl_on(&self, i: usize, args: &[&str]) -> Output {
        self.run_etcdctl(&self.endpoints[i], args)
    }

    fn run_etcdctl(&self, endpoints: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.etcdctl);
        clear_etcd_env(&mut cmd);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args);
        run_bounded(cmd, Duration::from_secs(60))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.lock().iter_mut() {
            if let Some(mut child) = m.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `dir` (a TempDir) removes the data directories.
    }
}

/// Removes `ETCD*` variables (an inherited `ETCDCTL_ENDPOINTS` would
/// conflict with `--endpoints`; an `ETCD_*` one would change a member).
fn clear_etcd_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(k);
        }
    }
}

/// The first port of a slot of [`SLOT`] ports all free for `n` members.
fn free_slot(n: usize) -> Result<u16, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let slots = (PORT_HIGH - PORT_LOW) / SLOT;
    // Knuth's multiplicative hash spreads neighbouring pids far apart.
    let first = std::process::id().wrapping_mul(2_654_435_761) % slots;
    for _ in 0..PROBED_SLOTS {
        let k = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let base = PORT_LOW + (first + k) % slots * SLOT;
        let ports = (0..n as u32).flat_map(|i| [base + i, base + MAX_MEMBERS as u32 + i]);
        if ports
            .into_iter()
            .all(|p| TcpListener::bind(("127.0.0.1", p as u16)).is_ok())
        {
            return Ok(base as u16);
        }
    }
    Err(format!(
        "no free ports for {n} etcd members among {PROBED_SLOTS} slots"
    ))
}

/// Runs `cmd` with its output captured, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
