//! Figures of each workload, printed side by side (modelhub, etcd, ratio),
//! and the targets checked by `all`.

use std::time::Duration;

use crate::util::Run;

/// Formats a duration with 3 significant digits in a fixed width.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// `a / b` as `"0.68x"`, or `"n/a"` when `b` is 0.
fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// Prints a closed-loop run's line.
pub fn run_line(who: &str, run: &Run) {
    println!(
        "  {who:<9} {:>8.0} ops/s   p50 {:>9}   p99 {:>9}   p99.9 {:>9}   max {:>9}   ({} ok, {} errors)",
        run.ops_per_sec(),
        ms(run.p(50.0)),
        ms(run.p(99.0)),
        ms(run.p(99.9)),
        ms(run.p(100.0)),
        run.lat.len(),
        run.errors
    );
    let (server, bench) = run.cpu_per_op();
    if server.is_some() || bench.is_some() {
        let us = |d: Option<Duration>| {
            d.map_or("?".to_string(), |d| {
                format!("{:.1} us", d.as_secs_f64() * 1e6)
            })
        };
        println!(
            "  {who:<9} CPU per op: server {}, load generator {}",
            us(server),
            us(bench)
        );
    }
    if let Some(e) = &run.first_error {
        println!("  {who:<9} first error: {e}");
    }
}

/// Prints a closed-loop workload: modelhub, etcd if run, and the ratios.
pub fn runs(title: &str, mh: &Run, etcd: Option<&Run>) {
    println!("== {title}");
    run_line("modelhub", mh);
    if let Some(e) = etcd {
        run_line("etcd", e);
        println!(
            "  modelhub/etcd: ops/s {}   p50 {}   p99 {}{}",
            ratio(mh.ops_per_sec(), e.ops_per_sec()),
            ratio(mh.p(50.0).as_secs_f64(), e.p(50.0).as_secs_f64()),
            ratio(mh.p(99.0).as_secs_f64(), e.p(99.0).as_secs_f64()),
            shared_cpu_ratio(mh, e),
        );
    }
}

/// Both runs' shared CPU per request ([`Run::shared_cpu_per_op`]) in
/// microseconds, when both know it.
fn shared_cpu_us(mh: &Run, etcd: &Run) -> Option<(f64, f64)> {
    let us = |r: &Run| Some(r.shared_cpu_per_op()?.as_secs_f64() * 1e6);
    Some((us(mh)?, us(etcd)?))
}

/// `"   CPU per op 0.68x (server + load generator)"`, or nothing when a
/// run does not know its shared CPU.
pub fn shared_cpu_ratio(mh: &Run, etcd: &Run) -> String {
    shared_cpu_us(mh, etcd).map_or_else(String::new, |(m, e)| {
        format!("   CPU per op {} (server + load generator)", ratio(m, e))
    })
}

/// `"; CPU per create 84.5 vs 124.2 us (0.68x, server + load
/// generator)"`, for the targets, or nothing as [`shared_cpu_ratio`].
pub fn shared_cpu_detail(mh: &Run, etcd: &Run) -> String {
    shared_cpu_us(mh, etcd).map_or_else(String::new, |(m, e)| {
        format!(
            "; CPU per create {m:.1} vs {e:.1} us ({}, server + load generator)",
            ratio(m, e)
        )
    })
}

/// Prints each round's modelhub/etcd ops/s of a workload run in rounds.
pub fn rounds(ratios: &[f64]) {
    if ratios.len() > 1 {
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        println!(
            "  rounds, modelhub/etcd ops/s: {} (median {:.2}x)",
            each.join(" "),
            median(ratios)
        );
    }
}

/// `"; rounds 1.21x-1.48x, median 1.30x"` for a workload run in rounds,
/// else nothing.
pub fn round_range(ratios: &[f64]) -> String {
    if ratios.len() < 2 {
        return String::new();
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "; rounds {min:.2}x-{max:.2}x, median {:.2}x",
        median(ratios)
    )
}

/// The median of some figures (the mean of the middle two of an even
/// count; 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Repeated full lists of one scope.
#[derive(Clone, Debug, Default)]
pub struct ListFigures {
    /// Sorted time per list.
    pub times: Run,
    /// Items in each list.
    pub items: usize,
    /// Bytes of each response (JSON for modelhub, keys + values for etcd).
    pub bytes: usize,
}

impl ListFigures {
    /// Median time per list.
    pub fn median(&self) -> Duration {
        self.times.p(50.0)
    }
}

fn list_line(who: &str, l: &ListFigures) {
    println!(
        "  {who:<9} {} items, {:.1} MB: median {:>9}  min {:>9}  max {:>9}  per list ({} lists)",
        l.items,
        l.bytes as f64 / 1e6,
        ms(l.median()),
        ms(l.times.lat.first().copied().unwrap_or_default()),
        ms(l.times.lat.last().copied().unwrap_or_default()),
        l.times.lat.len()
    );
    if let Some(cpu) = l.times.cpu_per_op().0 {
        println!(
            "  {who:<9} server CPU per list: {} (with its status write, if any)",
            ms(cpu)
        );
    }
}

/// Prints a list workload.
pub fn lists(title: &str, mh: &ListFigures, etcd: Option<&ListFigures>) {
    println!("== {title}");
    list_line("modelhub", mh);
    if let Some(e) = etcd {
        list_line("etcd", e);
        println!(
            "  modelhub/etcd: median time per list {}",
            ratio(mh.median().as_secs_f64(), e.median().as_secs_f64())
        );
    }
}

/// Watch fan-out figures.
#[derive(Clone, Debug, Default)]
pub struct WatchFigures {
    /// Concurrent watchers.
    pub watchers: usize,
    /// Writes made.
    pub writes: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// The writers' pace in writes per second, if paced (else closed loop).
    pub rate: Option<f64>,
    /// Time to make all the writes.
    pub write_time: Duration,
    /// Events received (watchers x writes when nothing is missing).
    pub delivered: usize,
    /// From the first write to the last receipt.
    pub span: Duration,
    /// Sorted write-ack -> receipt delays.
    pub delays: Vec<Duration>,
    /// (watcher, write) pairs never received.
    pub missing: usize,
    /// CPU used from just before the first write until every watcher has
    /// finished (the load generator's includes its writers').
    pub cpu: crate::util::Cpu,
}

impl WatchFigures {
    /// The `p`-th percentile delay.
    pub fn p(&self, p: f64) -> Duration {
        crate::util::percentile(&self.delays, p)
    }
}

fn watch_line(who: &str, w: &WatchFigures) {
    println!(
        "  {who:<9} {} watchers x {} writes ({} writers{}): writes {:.0}/s, delivered {} events = {:.0}/s",
        w.watchers,
        w.writes,
        w.writers,
        w.rate
            .map(|r| format!(", paced at {r}/s"))
            .unwrap_or_default(),
        w.writes as f64 / w.write_time.as_secs_f64().max(1e-9),
        w.delivered,
        w.delivered as f64 / w.span.as_secs_f64().max(1e-3)
    );
    println!(
        "  {who:<9} write-ack -> receipt: p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}   missing {}",
        ms(w.p(50.0)),
        ms(w.p(90.0)),
        ms(w.p(99.0)),
        ms(w.p(99.9)),
        ms(w.delays.last().copied().unwrap_or_default()),
        w.missing
    );
    let per = |d: Option<Duration>| {
        d.map_or("?".to_string(), |d| {
            format!(
                "{:.2} us",
                d.as_secs_f64() * 1e6 / w.delivered.max(1) as f64
            )
        })
    };
    println!(
        "  {who:<9} CPU per delivered event: server {}, load generator {}",
        per(w.cpu.server),
        per(w.cpu.bench)
    );
}

/// Prints a watch workload: modelhub runs (with their watcher counts), the
/// etcd run, and the p99 ratio of each modelhub run to etcd's.
pub fn watches(mh: &[WatchFigures], etcd: Option<&WatchFigures>) {
    println!(
        "== watch fan-out (cell creates; delay from the writer's ack to each watcher's receipt)"
    );
    for m in mh {
        watch_line("modelhub", m);
    }
    if let Some(e) = etcd {
        watch_line("etcd", e);
        for m in mh {
            println!(
                "  modelhub ({} watchers)/etcd ({} watchers): p50 {}   p99 {}",
                m.watchers,
                e.watchers,
                ratio(m.p(50.0).as_secs_f64(), e.p(50.0).as_secs_f64()),
                ratio(m.p(99.0).as_secs_f64(), e.p(99.0).as_secs_f64()),
            );
        }
    }
}

/// Start-up figures of one restart.
#[derive(Clone, Debug, Default)]
pub struct Startup {
    /// Spawn to the "listening" line.
    pub ready: Duration,
    /// VmRSS after serving a few requests, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
    /// SIGTERM to exit.
    pub stop: Duration,
}

/// Prints the start-up runs.
pub fn startups(data: &std::path::Path, size: u64, objects: Option<u64>, runs: &[Startup]) {
    println!(
        "== startup on {} ({:.0} MB{})",
        data.display(),
        size as f64 / 1e6,
        objects
            .map(|n| format!(", {n} objects"))
            .unwrap_or_default()
    );
    for (i, r) in runs.iter().enumerate() {
        println!(
            "  run {}: ready in {:>9}   RSS {:.0} MB (peak {:.0} MB) after list/get requests   stop {:>9}",
            i + 1,
            ms(r.ready),
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            ms(r.stop)
        );
    }
}

/// The project's targets, checked by `all`.
#[derive(Default)]
pub struct Targets {
    rows: Vec<(String, String, Option<bool>)>,
}

impl Targets {
    /// Records a target: its wording, the measured figures, and whether it
    /// was met (`None`: not measured in this run).
    pub fn add(&mut self, target: &str, figures: String, met: Option<bool>) {
        self.rows.push((target.to_string(), figures, met));
    }

    /// Prints the table.
    pub fn print(&self) {
        println!("== targets");
        for (target, figures, met) in &self.rows {
            let verdict = match met {
                Some(true) => "MET",
                Some(false) => "MISSED",
                None => "not measured",
            };
            println!("  [{verdict}] {target}: {figures}");
        }
    }
}
