//! Figures of each workload, printed side by side (modelhub, etcd, ratio),
//! and the targets checked by `all`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::util::{Run, Second};

/// Width of the first column (a store's name) of the figures' lines.
const WHO: usize = 10;

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
        "  {who:<WHO$} {:>8.0} ops/s   p50 {:>9}   p99 {:>9}   p99.9 {:>9}   max {:>9}   ({} ok, {} errors)",
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
        let of_it = match run.backend.zip(server) {
            Some((b, _)) => {
                let b = b / u32::try_from(run.lat.len().max(1)).unwrap_or(u32::MAX);
                format!(" (etcd {} of it)", us(Some(b)))
            }
            None => String::new(),
        };
        let cores = run
            .cores_used()
            .map_or_else(String::new, |c| format!("; cores used {c:.2}"));
        println!(
            "  {who:<WHO$} CPU per op: server {}{of_it}, load generator {}{cores}",
            us(server),
            us(bench)
        );
    }
    failures(who, &run.kinds);
}

/// Kinds of failure printed, at most (the rest are summed up).
const KINDS: usize = 8;

/// Prints failures by kind: how many, and the first one's message.
pub fn failures(who: &str, kinds: &BTreeMap<String, (u64, String)>) {
    for (kind, (n, detail)) in kinds.iter().take(KINDS) {
        let detail: String = detail.chars().take(400).collect();
        println!("  {who:<WHO$} failed: {n} x {kind}; first: {detail}");
    }
    if kinds.len() > KINDS {
        let rest: u64 = kinds.values().skip(KINDS).map(|(n, _)| n).sum();
        println!(
            "  {who:<WHO$} failed: {rest} more, of {} other kinds",
            kinds.len() - KINDS
        );
    }
}

/// Prints a closed-loop workload: each modelhub target (its name and its
/// run), etcd if run, and each target's ratios to etcd.
pub fn runs(title: &str, hubs: &[(&str, &Run)], etcd: Option<&Run>) {
    println!("== {title}");
    for (who, run) in hubs {
        run_line(who, run);
    }
    if let Some(e) = etcd {
        run_line("etcd", e);
        for (who, mh) in hubs {
            println!(
                "  {who}/etcd: ops/s {}   p50 {}   p99 {}{}",
                ratio(mh.ops_per_sec(), e.ops_per_sec()),
                ratio(mh.p(50.0).as_secs_f64(), e.p(50.0).as_secs_f64()),
                ratio(mh.p(99.0).as_secs_f64(), e.p(99.0).as_secs_f64()),
                shared_cpu_ratio(mh, e),
            );
        }
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

/// Prints each round's `who`/etcd ops/s of a workload run in rounds.
pub fn rounds(who: &str, ratios: &[f64]) {
    if ratios.len() > 1 {
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        println!(
            "  rounds, {who}/etcd ops/s: {} (median {:.2}x)",
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

/// Seconds per block of a run's per-second table.
const SECONDS_PER_LINE: usize = 15;

/// Seconds named by the "slowest seconds" line of a run's table.
const SLOWEST: usize = 5;

/// A count in at most 5 characters: `850`, `1.23k`, `21.3k`, `150k`.
fn count(n: usize) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..10_000 => format!("{:.2}k", n as f64 / 1e3),
        10_000..100_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.0}k", n as f64 / 1e3),
    }
}

/// Milliseconds without the unit, 3 significant digits: `0.41`, `12.3`,
/// `310`.
fn ms_bare(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// Prints a run's seconds ([`crate::util::PerSecond`]): for each, the
/// requests completed in it, their p99 and their slowest, in blocks of
/// [`SECONDS_PER_LINE`]; then the slowest seconds.
pub fn seconds(seconds: &[Second]) {
    println!("    per second (requests completed in it; their p99 and max, ms):");
    for (block, chunk) in seconds.chunks(SECONDS_PER_LINE).enumerate() {
        let row = |name: &str, cell: &dyn Fn(usize, &Second) -> String| {
            let cells: String = chunk
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{:>7}", cell(block * SECONDS_PER_LINE + i, s)))
                .collect();
            println!("    {name:<4}{cells}");
        };
        row("s", &|i, _| i.to_string());
        row("ops", &|_, s| count(s.ops));
        row("p99", &|_, s| ms_bare(s.p99));
        row("max", &|_, s| ms_bare(s.max));
    }
    println!("    slowest seconds (max): {}", slowest(seconds));
}

/// The [`SLOWEST`] seconds with the highest max, slowest first: `"12: 310
/// ms, 42: 305 ms"`.
pub fn slowest(seconds: &[Second]) -> String {
    let mut by_max: Vec<(usize, &Second)> = seconds.iter().enumerate().collect();
    by_max.sort_by(|a, b| b.1.max.cmp(&a.1.max).then(a.0.cmp(&b.0)));
    by_max
        .iter()
        .take(SLOWEST)
        .map(|(i, s)| format!("{i}: {}", ms(s.max)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The header of `tail --series` files.
pub const SERIES_HEADER: &str = "store\tworkload\trun\tsecond\tops\tp99_ms\tmax_ms\n";

/// A run's seconds as lines of a `tail --series` file ([`SERIES_HEADER`];
/// runs counted from 1, seconds from 0).
pub fn series_lines(store: &str, workload: &str, run: u32, seconds: &[Second]) -> String {
    seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{store}\t{workload}\t{run}\t{i}\t{}\t{:.3}\t{:.3}\n",
                s.ops,
                s.p99.as_secs_f64() * 1e3,
                s.max.as_secs_f64() * 1e3
            )
        })
        .collect()
}

/// The figures of one run of `tail` that its targets judge.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TailRun {
    /// Successful requests per second.
    pub ops: f64,
    /// 99.9th percentile latency.
    pub p999: Duration,
    /// The slowest request.
    pub max: Duration,
    /// Failed requests.
    pub errors: u64,
}

impl TailRun {
    /// The figures of `run`.
    pub fn of(run: &Run) -> TailRun {
        TailRun {
            ops: run.ops_per_sec(),
            p999: run.p(99.9),
            max: run.p(100.0),
            errors: run.errors,
        }
    }
}

/// Medians over a store's `tail` runs: ops/s, p99.9 and max (each the
/// median of the runs' figure), and the errors of all runs.
pub fn tail_medians(runs: &[TailRun]) -> TailRun {
    let med = |f: &dyn Fn(&TailRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    TailRun {
        ops: med(&|r| r.ops),
        p999: Duration::from_secs_f64(med(&|r| r.p999.as_secs_f64())),
        max: Duration::from_secs_f64(med(&|r| r.max.as_secs_f64())),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

/// Least modelhub/etcd throughput of `tail`'s targets.
pub const TAIL_THROUGHPUT: f64 = 1.4;

/// `tail`'s targets for one workload of one modelhub target (`who`,
/// `runs`) against etcd's runs: the medians of the runs' p99.9 and of
/// their maxima no worse than etcd's, the median throughput at least
/// [`TAIL_THROUGHPUT`] times etcd's. Each: wording, figures, met.
pub fn tail_targets(
    workload: &str,
    who: &str,
    runs: &[TailRun],
    etcd: &[TailRun],
) -> Vec<(String, String, bool)> {
    let (m, e) = (tail_medians(runs), tail_medians(etcd));
    let secs = |d: Duration| d.as_secs_f64();
    let n = |runs: &[TailRun]| runs.len();
    vec![
        (
            format!("{who}: {workload}: p99.9 no worse than etcd's (median of runs)"),
            format!(
                "{} vs {} ({}; {} and {} runs)",
                ms(m.p999),
                ms(e.p999),
                ratio(secs(m.p999), secs(e.p999)),
                n(runs),
                n(etcd)
            ),
            m.p999 <= e.p999,
        ),
        (
            format!("{who}: {workload}: max no worse than etcd's (median of the runs' maxima)"),
            format!(
                "{} vs {} ({})",
                ms(m.max),
                ms(e.max),
                ratio(secs(m.max), secs(e.max))
            ),
            m.max <= e.max,
        ),
        (
            format!("{who}: {workload}: throughput >= {TAIL_THROUGHPUT}x etcd's (median of runs)"),
            format!(
                "{:.0} vs {:.0} ops/s ({}); errors {} vs {}",
                m.ops,
                e.ops,
                ratio(m.ops, e.ops),
                m.errors,
                e.errors
            ),
            m.ops >= TAIL_THROUGHPUT * e.ops,
        ),
    ]
}

/// Prints a `tail` workload's summary: per store its runs' ops/s, p99.9
/// and max and their medians, then each modelhub target's ratios to etcd.
pub fn tail_summary(title: &str, hubs: &[(&str, &[TailRun])], etcd: Option<&[TailRun]>) {
    println!("== {title}");
    let line = |who: &str, runs: &[TailRun]| {
        let m = tail_medians(runs);
        let each =
            |f: &dyn Fn(&TailRun) -> String| runs.iter().map(f).collect::<Vec<_>>().join(" ");
        println!(
            "  {who:<WHO$} median ops/s {:>6.0}   p99.9 {:>9}   max {:>9}   errors {}",
            m.ops,
            ms(m.p999),
            ms(m.max),
            m.errors
        );
        println!(
            "  {:<WHO$} runs: ops/s {}; p99.9 ms {}; max ms {}",
            "",
            each(&|r| format!("{:.0}", r.ops)),
            each(&|r| ms_bare(r.p999)),
            each(&|r| ms_bare(r.max)),
        );
    };
    for (who, runs) in hubs {
        line(who, runs);
    }
    if let Some(e) = etcd {
        line("etcd", e);
        let me = tail_medians(e);
        for (who, runs) in hubs {
            let m = tail_medians(runs);
            println!(
                "  {who}/etcd (medians): ops/s {}   p99.9 {}   max {}",
                ratio(m.ops, me.ops),
                ratio(m.p999.as_secs_f64(), me.p999.as_secs_f64()),
                ratio(m.max.as_secs_f64(), me.max.as_secs_f64()),
            );
        }
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

    /// Adds another series of the same lists (another round's).
    pub fn absorb(&mut self, other: ListFigures) {
        self.times.absorb(other.times);
        self.items = other.items;
        self.bytes = other.bytes;
    }
}

fn list_line(who: &str, l: &ListFigures) {
    println!(
        "  {who:<WHO$} {} items, {:.1} MB: median {:>9}  min {:>9}  max {:>9}  per list ({} lists)",
        l.items,
        l.bytes as f64 / 1e6,
        ms(l.median()),
        ms(l.times.lat.first().copied().unwrap_or_default()),
        ms(l.times.lat.last().copied().unwrap_or_default()),
        l.times.lat.len()
    );
    if let Some(cpu) = l.times.cpu_per_op().0 {
        println!(
            "  {who:<WHO$} server CPU per list: {} (with its status write, if any)",
            ms(cpu)
        );
    }
}

/// Prints a list workload: each modelhub target, etcd if run, and each
/// target's ratio to etcd.
pub fn lists(title: &str, hubs: &[(&str, &ListFigures)], etcd: Option<&ListFigures>) {
    println!("== {title}");
    for (who, mh) in hubs {
        list_line(who, mh);
    }
    if let Some(e) = etcd {
        list_line("etcd", e);
        for (who, mh) in hubs {
            println!(
                "  {who}/etcd: median time per list {}   p99 {}",
                ratio(mh.median().as_secs_f64(), e.median().as_secs_f64()),
                ratio(
                    mh.times.p(99.0).as_secs_f64(),
                    e.times.p(99.0).as_secs_f64()
                )
            );
        }
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
    /// Writes that failed.
    pub errors: u64,
    /// Failed writes and refused (or lost) watches by kind: how many, and
    /// the first one's message.
    pub kinds: BTreeMap<String, (u64, String)>,
    /// From the warm-up write's ack until every watcher had received it
    /// (the watch's start: catching up from the watch's revision); the
    /// longest of the rounds. `None`: not measured, or not every watcher
    /// in time.
    pub warmup: Option<Duration>,
}

impl WatchFigures {
    /// The `p`-th percentile delay.
    pub fn p(&self, p: f64) -> Duration {
        crate::util::percentile(&self.delays, p)
    }

    /// Adds another run of the same watchers (another round's): writes,
    /// times, deliveries, delays, CPU and failures add up.
    pub fn absorb(&mut self, other: WatchFigures) {
        self.writes += other.writes;
        self.write_time += other.write_time;
        self.delivered += other.delivered;
        self.span += other.span;
        self.delays.extend(other.delays);
        self.delays.sort();
        self.missing += other.missing;
        let add = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        self.cpu = crate::util::Cpu {
            server: add(self.cpu.server, other.cpu.server),
            bench: add(self.cpu.bench, other.cpu.bench),
        };
        self.errors += other.errors;
        for (kind, (n, detail)) in other.kinds {
            crate::util::count_kind(&mut self.kinds, kind, n, detail);
        }
        self.warmup = match (self.warmup, other.warmup) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
}

fn watch_line(who: &str, w: &WatchFigures) {
    println!(
        "  {who:<WHO$} {} watchers x {} writes ({} writers{}): writes {:.0}/s, delivered {} events = {:.0}/s",
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
        "  {who:<WHO$} write-ack -> receipt: p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}   missing {}",
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
        "  {who:<WHO$} CPU per delivered event: server {}, load generator {}",
        per(w.cpu.server),
        per(w.cpu.bench)
    );
    match w.warmup {
        Some(d) => println!(
            "  {who:<WHO$} start: every watcher had the warm-up write {} after its ack (untimed; the longest round)",
            ms(d)
        ),
        None => println!("  {who:<WHO$} start: not every watcher had the warm-up write in time"),
    }
    if w.errors > 0 {
        println!("  {who:<WHO$} {} writes failed", w.errors);
    }
    failures(who, &w.kinds);
}

/// Prints a watch workload: modelhub runs (each target's name, with their
/// watcher counts), the etcd run, and the p99 ratio of each modelhub run
/// to etcd's.
pub fn watches(mh: &[(&str, &WatchFigures)], etcd: Option<&WatchFigures>) {
    println!(
        "== watch fan-out (cell creates; delay from the writer's ack to each watcher's receipt)"
    );
    for (who, m) in mh {
        watch_line(who, m);
    }
    if let Some(e) = etcd {
        watch_line("etcd", e);
        for (who, m) in mh {
            println!(
                "  {who} ({} watchers)/etcd ({} watchers): p50 {}   p99 {}",
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

/// The project's targets, checked by `all` and `etcd-backend`.
#[derive(Default)]
pub struct Targets {
    rows: Vec<(String, String, &'static str)>,
}

impl Targets {
    /// Records a target: its wording, the measured figures, and whether it
    /// was met (`None`: not measured in this run).
    pub fn add(&mut self, target: &str, figures: String, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "not measured",
        };
        self.rows.push((target.to_string(), figures, verdict));
    }

    /// Records figures beside the targets that are no target themselves.
    pub fn note(&mut self, what: &str, figures: String) {
        self.rows.push((what.to_string(), figures, "info"));
    }

    /// The rows: target, figures, verdict.
    #[cfg(test)]
    pub fn rows(&self) -> &[(String, String, &'static str)] {
        &self.rows
    }

    /// Prints the table.
    pub fn print(&self) {
        println!("== targets");
        for (target, figures, verdict) in &self.rows {
            println!("  [{verdict}] {target}: {figures}");
        }
    }
}
