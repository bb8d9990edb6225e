//! The same workloads against etcd (feature `etcd`): the cell documents are
//! stored as JSON values under `/kukeon/<realm>/<space>/<stack>/<cell>`,
//! the layout a kukeon store on etcd would use. etcd acknowledges a write
//! after its WAL is synced, so its writes are as durable as modelhub's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, DeleteOptions, GetOptions, KvClient, Txn, TxnOp, WatchOptions,
};
use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::report::{ListFigures, WatchFigures};
use crate::util::{self, Failure, Run, Stop};
use crate::workloads::{Expect, GET_STACK, LIST_STACK, RW_STACK, finish_fan_out};

/// Puts per transaction when loading (etcd's default `--max-txn-ops`).
const TXN_OPS: usize = 128;

/// An etcd endpoint, reached over `conns` gRPC connections (HTTP/2); the
/// concurrent clients of a workload share them round-robin.
pub struct Etcd {
    clients: Vec<Client>,
    run: String,
    /// The etcd server's pid, if known, to measure its CPU.
    pid: Option<u32>,
    /// Creates run with a watcher on their keys (`--etcd-watched`).
    watched: bool,
}

/// A watcher on the keys a workload writes (`--etcd-watched`).
struct Watcher {
    task: tokio::task::JoinHandle<()>,
    /// Events received so far.
    seen: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Watcher {
    /// Waits (at most 2 s) until the watcher has received the events of
    /// `puts` puts, stops it and its stream (etcd then drops the watch)
    /// and reports what it received.
    async fn finish(self, puts: u64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.seen.load(Ordering::Relaxed) < puts && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.stop.send(());
        let _ = self.task.await;
        let seen = self.seen.load(Ordering::Relaxed);
        eprintln!("etcd: its watcher received {seen} events of {puts} acknowledged puts");
    }
}

fn e2s(e: etcd_client::Error) -> String {
    e.to_string()
}

impl Etcd {
    /// Connects `conns` times to `url` (e.g. `http://127.0.0.1:2379`);
    /// `pid` is the server's, if known.
    pub async fn connect(url: &str, conns: usize, run: &str, pid: Option<u32>) -> Etcd {
        let mut clients = Vec::with_capacity(conns.max(1));
        for _ in 0..conns.max(1) {
            clients.push(Client::connect([url], None).await.expect("connect to etcd"));
        }
        Etcd {
            clients,
            run: run.to_string(),
            pid,
            watched: false,
        }
    }

    /// With `on`, creates run with one watcher on the keys they write.
    pub fn watched(mut self, on: bool) -> Etcd {
        self.watched = on;
        self
    }

    /// A watcher on every key under `prefix`, with previous values (what
    /// modelhub's feed asks of etcd), created before it is answered; it
    /// reads events, counting them, until its stop is sent.
    async fn watcher(&self, prefix: String) -> Watcher {
        let options = WatchOptions::new().with_prefix().with_prev_key();
        let mut stream = self
            .client(0)
            .watch(prefix, Some(options))
            .await
            .expect("etcd watch");
        let created = stream
            .message()
            .await
            .expect("etcd watch")
            .expect("etcd watch");
        assert!(created.created(), "etcd's first watch reply creates it");
        let seen = Arc::new(AtomicU64::new(0));
        let counted = seen.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    resp = stream.message() => match resp {
                        Ok(Some(r)) if !r.canceled() => {
                            counted.fetch_add(r.events().len() as u64, Ordering::Relaxed);
                        }
                        Ok(Some(_)) => return eprintln!("etcd: the watcher was canceled"),
                        Ok(None) => return eprintln!("etcd: the watcher's stream ended"),
                        Err(e) => return eprintln!("etcd: the watcher failed: {e}"),
                    },
                }
            }
        });
        Watcher { task, seen, stop }
    }

    fn client(&self, i: usize) -> Client {
        self.clients[i % self.clients.len()].clone()
    }

    /// The store revision now.
    async fn revision(&self) -> i64 {
        let resp = self
            .client(0)
            .get("/kukeon/", Some(GetOptions::new().with_count_only()))
            .await
            .expect("etcd get");
        resp.header().expect("header").revision()
    }

    /// Number of keys under `prefix`.
    async fn count(&self, prefix: &str) -> i64 {
        self.client(0)
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("etcd count")
            .count()
    }

    /// Puts `(key, value)` pairs in transactions of [`TXN_OPS`], `inflight`
    /// at a time.
    async fn put_all(&self, pairs: Vec<(String, Vec<u8>)>, inflight: usize) {
        let mut batches = Vec::new();
        let mut pairs = pairs.into_iter().peekable();
        while pairs.peek().is_some() {
            batches.push(pairs.by_ref().take(TXN_OPS).collect::<Vec<_>>());
        }
        futures_util::stream::iter(batches.into_iter().enumerate())
            .map(|(i, batch)| {
                let mut c = self.client(i);
                async move {
                    let ops: Vec<TxnOp> = batch
                        .into_iter()
                        .map(|(k, v)| TxnOp::put(k, v, None))
                        .collect();
                    c.txn(Txn::new().and_then(ops)).await.expect("etcd txn");
                }
            })
            .buffer_unordered(inflight)
            .collect::<Vec<()>>()
            .await;
    }

    /// Makes sure keys for cells `c-000000..` (`n`, the same JSON as
    /// modelhub's) exist under `/kukeon/bench/s/<stack>/`.
    pub async fn ensure_cells(&self, stack: &str, n: usize) {
        let prefix = format!("/kukeon/bench/s/{stack}/");
        if self.count(&prefix).await == n as i64 {
            return;
        }
        let started = Instant::now();
        let pairs = (0..n)
            .map(|i| {
                let name = util::nth_cell(i);
                (
                    util::etcd_key(stack, &name),
                    serde_json::to_vec(&util::cell_doc(stack, &name)).expect("json"),
                )
            })
            .collect();
        self.put_all(pairs, 8).await;
        eprintln!(
            "etcd: {n} cells under {prefix} ready in {:.1?}",
            started.elapsed()
        );
    }

    /// Makes this etcd as fresh as it gets without a restart, before a run
    /// of its own: deletes the cells created so far (stack `t`), compacts
    /// every revision before now (the whole etcd's, physically) and
    /// defragments its database, untimed; prints what that took.
    pub async fn reset(&self) {
        let started = Instant::now();
        let mut c = self.client(0);
        let deleted = c
            .delete(
                util::etcd_key("t", ""),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await
            .expect("etcd delete");
        let rev = deleted.header().expect("header").revision();
        // Refused when nothing was written since the last compaction: noted.
        if let Err(e) = c
            .compact(rev, Some(CompactionOptions::new().with_physical()))
            .await
        {
            eprintln!("etcd: compaction at revision {rev}: {e}");
        }
        c.defragment().await.expect("etcd defragment");
        let size = c.status().await.map_or(0, |s| s.db_size());
        eprintln!(
            "etcd: {} created cells deleted, compacted at revision {rev} and defragmented \
             ({:.1} MB) in {:.1?}",
            deleted.deleted(),
            size as f64 / 1e6,
            started.elapsed()
        );
    }

    /// Puts of new keys (the same cell JSON) from `clients` concurrent
    /// clients.
    pub async fn create(&self, clients: usize, stop: Stop, round: u32) -> Run {
        let pool: Arc<Vec<Client>> = Arc::new((0..clients).map(|c| self.client(c)).collect());
        let run = util::create_tag(&self.run, clients, round);
        let template = Arc::new(util::CellTemplate::new());
        let watcher = if self.watched {
            Some(self.watcher(util::etcd_key("t", "")).await)
        } else {
            None
        };
        let figures = util::closed_loop(self.pid.as_slice(), clients, stop, move |c, seq| {
            let mut client = pool[c].clone();
            let name = format!("c-{run}-{seq}");
            let value = template.body(&name);
            async move {
                client
                    .put(util::etcd_key("t", &name), value, None)
                    .await
                    .map_err(e2s)?;
                Ok(())
            }
        })
        .await;
        if let Some(w) = watcher {
            w.finish(figures.lat.len() as u64).await;
        }
        figures
    }

    /// Status writes: a Put overwriting the whole cell (etcd has no status
    /// subresource), on `cells` existing keys.
    pub async fn status(&self, clients: usize, stop: Stop, cells: usize) -> Run {
        self.ensure_cells(RW_STACK, cells).await;
        let pool: Arc<Vec<Client>> = Arc::new((0..clients).map(|c| self.client(c)).collect());
        util::closed_loop(self.pid.as_slice(), clients, stop, move |c, seq| {
            let mut client = pool[c].clone();
            let name = util::nth_cell(util::spread(seq, cells));
            async move {
                let mut doc = util::cell_doc(RW_STACK, &name);
                doc["status"] = util::cell_status(RW_STACK, &name, seq);
                let value = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
                client
                    .put(util::etcd_key(RW_STACK, &name), value, None)
                    .await
                    .map_err(e2s)?;
                Ok(())
            }
        })
        .await
    }

    /// Gets of single keys among `cells` existing ones.
    pub async fn get(&self, clients: usize, stop: Stop, cells: usize) -> Run {
        self.ensure_cells(GET_STACK, cells).await;
        let pool: Arc<Vec<Client>> = Arc::new((0..clients).map(|c| self.client(c)).collect());
        util::closed_loop(self.pid.as_slice(), clients, stop, move |c, seq| {
            let mut client = pool[c].clone();
            let name = util::nth_cell(util::spread(seq, cells));
            async move {
                let resp = client
                    .get(util::etcd_key(GET_STACK, &name), None)
                    .await
                    .map_err(e2s)?;
                match resp.kvs().first() {
                    Some(kv) if kv.value().len() > 1000 => Ok(()),
                    _ => Err(Failure::new(
                        "get: missing or short",
                        format!("get {name}: missing or short"),
                    )),
                }
            }
        })
        .await
    }

    fn big_kv(&self) -> KvClient {
        self.client(0)
            .kv_client()
            .max_decoding_message_size(1 << 30)
    }

    /// Range-gets every key under `/kukeon/bench/s/<stack>/` `repeat`
    /// times; with `write_first`, each after an (untimed) put of one of the
    /// cells with a new status, as modelhub's list does.
    pub async fn list(&self, stack: &str, repeat: usize, write_first: bool) -> ListFigures {
        let prefix = format!("/kukeon/bench/s/{stack}/");
        let mut kv = self.big_kv();
        let mut writer = self.client(0);
        let mut figures = ListFigures::default();
        let started = Instant::now();
        for i in 0..repeat {
            if write_first {
                let name = util::nth_cell(i % figures.items.max(1));
                let mut doc = util::cell_doc(stack, &name);
                doc["status"] = util::cell_status(stack, &name, i as u64);
                let value = serde_json::to_vec(&doc).expect("json");
                writer
                    .put(util::etcd_key(stack, &name), value, None)
                    .await
                    .expect("etcd put before a list");
            }
            let t = Instant::now();
            let resp = kv
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await
                .expect("etcd range");
            figures.times.lat.push(t.elapsed());
            figures.items = resp.kvs().len();
            figures.bytes = resp
                .kvs()
                .iter()
                .map(|kv| kv.key().len() + kv.value().len())
                .sum();
        }
        figures.times.elapsed = started.elapsed();
        figures.times.lat.sort();
        figures
    }

    /// Ensures the list keys exist (see [`Etcd::ensure_cells`]).
    pub async fn ensure_list(&self, n: usize) {
        self.ensure_cells(LIST_STACK, n).await;
    }

    /// Loads `objects` small keys (the same small cell JSON as modelhub's
    /// load) under `/kukeon/load/s/tNNNN/`, in transactions of 128 puts,
    /// 8 in flight. Skipped if they are already there.
    pub async fn load(&self, objects: usize) -> Option<Duration> {
        if self.count("/kukeon/load/").await >= objects as i64 {
            eprintln!("etcd: {objects} objects already loaded under /kukeon/load/");
            return None;
        }
        let started = Instant::now();
        let chunk = 100_000;
        for start in (0..objects).step_by(chunk) {
            let pairs = (start..(start + chunk).min(objects))
                .map(|i| {
                    let stack = format!("t{:04}", i / crate::workloads::APPLY_BATCH);
                    let name = util::nth_cell(i);
                    (
                        format!("/kukeon/load/s/{stack}/{name}"),
                        serde_json::to_vec(&util::small_cell_doc(&stack, &name)).expect("json"),
                    )
                })
                .collect();
            self.put_all(pairs, 8).await;
            eprintln!(
                "etcd: loaded {} objects in {:.1?}",
                (start + chunk).min(objects),
                started.elapsed()
            );
        }
        let t = started.elapsed();
        eprintln!(
            "etcd: loaded {objects} keys in {t:.1?} = {:.0} keys/s",
            objects as f64 / t.as_secs_f64()
        );
        Some(t)
    }

    /// Watch fan-out: `watchers` prefix watches on `/kukeon/bench/s/t/`,
    /// `writes` puts of new cells from `writers` clients; the delay from each
    /// put's ack to its receipt by each watcher.
    pub async fn watch(&self, watchers: usize, load: util::WriteLoad) -> WatchFigures {
        let (writes, writers) = (load.writes, load.writers);
        let prefix = "/kukeon/bench/s/t/";
        let from = self.revision().await as u64;
        let expect = Expect::new(from, writes);
        let mut streams = Vec::with_capacity(watchers);
        for w in 0..watchers {
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from as i64 + 1);
            let stream = self
                .client(w)
                .watch(prefix, Some(options))
                .await
                .expect("etcd watch");
            streams.push(stream);
        }
        eprintln!("etcd: {watchers} watchers created from revision {from}");
        let mut tasks = Vec::with_capacity(watchers);
        for mut stream in streams {
            let mut receipts = expect.receipts();
            tasks.push(tokio::spawn(async move {
                while !receipts.complete() {
                    let Some(Ok(Some(resp))) = receipts.or_idle(stream.message()).await else {
                        break;
                    };
                    let now = Instant::now();
                    for kv in resp.events().iter().filter_map(|ev| ev.kv()) {
                        receipts.note(kv.mod_revision() as u64, now);
                    }
                }
                vec![receipts.into_times()]
            }));
        }
        let warm = async || {
            let value = serde_json::to_vec(&util::cell("warm")).expect("json");
            let resp = self
                .client(0)
                .put(format!("{prefix}w-{from}-warm"), value, None)
                .await
                .map_err(|e| Failure::from(format!("put: {e}")))?;
            let ack = Instant::now();
            Ok((resp.header().expect("header").revision() as u64, ack))
        };
        let warmup = expect.warm_up(watchers, warm).await;
        let acks: Arc<Mutex<Vec<(u64, Instant)>>> =
            Arc::new(Mutex::new(Vec::with_capacity(writes)));
        let cpu = util::CpuMark::now(self.pid.as_slice());
        let started = Instant::now();
        let mut writer_tasks = Vec::new();
        for w in 0..writers {
            let (mut client, acks) = (self.client(w), acks.clone());
            writer_tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in (w..writes).step_by(writers) {
                    load.pace(started, i).await;
                    let name = format!("w-{from}-{i}");
                    let value = serde_json::to_vec(&util::cell(&name)).expect("json");
                    match client.put(format!("{prefix}{name}"), value, None).await {
                        Ok(resp) => {
                            let ack = Instant::now();
                            let rv = resp.header().expect("header").revision() as u64;
                            acks.lock().await.push((rv, ack));
                        }
                        Err(e) => failures.push(Failure::from(format!("put: {e}"))),
                    }
                }
                failures
            }));
        }
        let mut figures =
            finish_fan_out(&expect, writer_tasks, tasks, &acks, (started, cpu), load).await;
        figures.warmup = warmup;
        figures
    }
}
