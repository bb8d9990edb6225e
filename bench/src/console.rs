//! `console` (issue 23's benchmark): the live web console at `/ui/` under
//! a steady stream of status writes. It loads `--cells` cells spread over
//! stacks `t0..` of `bench/s`, opens the console in headless Chromium with
//! the rows of one stack rendered (1,000 by default), then PATCHes the
//! status of that stack's cells, one every `--interval-ms`, round-robin,
//! each write changing the cell's badge. In the page, a `MutationObserver`
//! stamps every badge change and a wrapper of the model's `apply` stamps
//! every cell event as it arrives, both with the page's clock, which is
//! the system clock the writer stamps its writes with (checked against
//! `Date.now()`); both are drained once a second, so the cadence of
//! draining does not enter the figures. Each write is matched to the first
//! change of its cell to its state at or after it was sent. Reported: the
//! write-to-badge delays (from the ack and from the send, split at the
//! event's arrival), DOM mutation records per write, whether the rows are
//! still the elements they were, the page's JavaScript per write, long
//! animation frames, the JS heap (also after `gc()`, exposed with
//! `--js-flags=--expose-gc`), Chromium's memory and everyone's CPU, per
//! minute, after the initial load and at the end.

#[path = "../../tests/common/webdriver.rs"]
mod webdriver;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::util;
use crate::workloads::Hub;
use webdriver::Browser;

/// The states the writes cycle through: each pass over the cells writes
/// the next one, so every write changes its cell's badge.
const STATES: [&str; 3] = ["Ready", "Failed", "Stopped"];
/// How long after the last write the page may still show it.
const GRACE: Duration = Duration::from_secs(5);
/// How often Chromium's memory and the processes' CPU are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The console's key of its expanded nodes, in session storage.
const EXPANDED_KEY: &str = "modelhub.expanded";
/// The window of the browser, as the issue asks the console to work at.
const WINDOW: (u32, u32) = (1280, 800);
/// How long the initial load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `console`.
#[derive(Args, Clone, Debug)]
pub struct ConsoleArgs {
    /// Cells in all, spread evenly over --stacks stacks `t0`, `t1`, ... of
    /// realm `bench`, space `s` (created through `/apply`, or kept if they
    /// exist).
    #[arg(long, default_value_t = 10_000)]
    cells: usize,
    /// Stacks the cells are spread over.
    #[arg(long, default_value_t = 10)]
    stacks: usize,
    /// One status write every this many milliseconds (a tick; a tick that
    /// comes while the previous write is in flight is skipped and counted).
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// How long the writes go on.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// The stack whose cells are rendered as rows (its realm, space and
    /// itself are expanded) and written to.
    #[arg(long, default_value = "t0")]
    expanded_stack: String,
    /// Also write the summary and the per-minute series to this file, as
    /// JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Microseconds since the Unix epoch, now.
fn now_us() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// One status write.
#[derive(Clone, Debug)]
struct Write {
    /// The cell's index in its stack.
    cell: usize,
    /// Index into [`STATES`].
    state: usize,
    /// When the request was sent and when its answer had come, epoch us.
    send_us: i64,
    ack_us: i64,
    /// Whether the server answered 2xx.
    ok: bool,
}

/// What the writer did.
#[derive(Default)]
struct Writes {
    writes: Vec<Write>,
    /// Ticks that came while a write was in flight.
    skipped: u64,
    /// The first refusal or transport error, if any.
    first_error: Option<String>,
    /// When the first tick was due, epoch us.
    start_us: i64,
}

/// Writes the status of the cells of `stack` (`cells` of them) in
/// round-robin, one per tick of `interval`, for `seconds`.
async fn write_loop(
    base: String,
    stack: String,
    cells: usize,
    interval: Duration,
    seconds: u64,
) -> Writes {
    let http = reqwest::Client::new();
    let mut out = Writes {
        start_us: now_us(),
        ..Writes::default()
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut last: Option<u128> = None;
    for i in 0.. {
        let at = tick.tick().await;
        if at >= end {
            break;
        }
        let idx = (at - start).as_nanos() / interval.as_nanos().max(1);
        if let Some(l) = last {
            out.skipped += u64::try_from(idx.saturating_sub(l + 1)).unwrap_or(u64::MAX);
        }
        last = Some(idx);
        let (cell, state) = (i % cells, (i / cells) % STATES.len());
        let url = format!(
            "{base}{}/{}/status",
            util::cells_path(&stack),
            util::nth_cell(cell)
        );
        let body = json!({"status": {"state": STATES[state]}}).to_string();
        let send_us = now_us();
        let answer = http
            .patch(url)
            .header("content-type", "application/merge-patch+json")
            .body(body)
            .send()
            .await;
        let error = match answer {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(_) if status.is_success() => None,
                    Ok(b) => Some(format!("{status}: {}", String::from_utf8_lossy(&b))),
                    Err(e) => Some(e.to_string()),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        let ack_us = now_us();
        let ok = error.is_none();
        if out.first_error.is_none() {
            out.first_error = error;
        }
        out.writes.push(Write {
            cell,
            state,
            send_us,
            ack_us,
            ok,
        });
    }
    out
}

/// Records, in the page, when the console is live, when its model holds
/// `arguments[0]` cells and when the stack `arguments[2]` shows
/// `arguments[1]` rows, each as `performance.now()` (ms after the
/// navigation began), polling every 4 ms from now on.
const LOAD_PROBE: &str = r#"
const [cells, rows, stack] = arguments;
const t = { installed: performance.now(), live: null, cells: null, rows: null };
window.__mhLoad = t;
const inModel = (c) => {
  let n = 0;
  for (const [st, k] of c.model.totals.get('Cell')) if (st !== 'Terminating') n += k;
  return n;
};
const check = () => {
  const now = performance.now();
  const c = window.modelhubConsole;
  if (c) {
    if (t.live === null && document.getElementById('conn').textContent === 'Live') t.live = now;
    if (t.cells === null && inModel(c) >= cells) t.cells = now;
    const ul = document.querySelector(`li[data-key="${stack}"] > ul`);
    if (t.rows === null && ul && ul.childElementCount >= rows) t.rows = now;
  }
  if (t.live === null || t.cells === null || t.rows === null) setTimeout(check, 4);
};
check();
return t.installed;
"#;

/// The probe's times once all three are known, else null.
const LOAD_DONE: &str = r#"
const t = window.__mhLoad;
if (!t || t.live === null || t.cells === null || t.rows === null) return null;
const n = performance.getEntriesByType('navigation')[0];
const c = window.modelhubConsole;
const kinds = {};
for (const [k, m] of c.model.totals) {
  let n = 0;
  for (const [st, x] of m) if (st !== 'Terminating') n += x;
  kinds[k] = n;
}
return { ...t, domContentLoaded: n ? n.domContentLoadedEventEnd : null,
  load: n ? n.loadEventEnd : null, nodes: c.model.nodes.size, kinds };
"#;

/// Installs the observers: every change under `#tree` is counted per
/// second (records, added and removed nodes, callbacks); each change of a
/// cell row's `.status` is pushed as `[key, badges' text, epoch ms]`, once
/// per status element and callback, stamped when the callback runs (right
/// after the frame's DOM changes); long animation frames are counted per
/// second. Wraps the model's `apply` to stamp each cell event as it
/// arrives (`[key, state, epoch ms]`), before the tree's next frame shows
/// it, and times it and the tree's `flush` (the page's own JavaScript per
/// event and per frame). Marks the rows under prefix `arguments[0]`, so that the end can
/// tell whether they are still the same elements.
const INSTALL: &str = r#"
const prefix = arguments[0];
const tree = document.getElementById('tree');
const w = { obs: [], arr: [], secs: {}, marked: 0, loaf: false };
window.__mhBench = w;
const bucket = (t) => {
  const s = Math.floor(t / 1000);
  return w.secs[s] || (w.secs[s] = { records: 0, added: 0, removed: 0, callbacks: 0,
    status: 0, longFrames: 0, longMs: 0, longMax: 0, applyMs: 0, flushMs: 0, flushes: 0 });
};
new MutationObserver((records) => {
  const t = performance.timeOrigin + performance.now();
  const b = bucket(t);
  b.callbacks += 1;
  b.records += records.length;
  const seen = new Set();
  for (const r of records) {
    b.added += r.addedNodes.length;
    b.removed += r.removedNodes.length;
    const node = r.target.nodeType === Node.ELEMENT_NODE ? r.target : r.target.parentElement;
    const status = node && node.closest('.status');
    if (!status || seen.has(status)) continue;
    seen.add(status);
    const li = status.closest('li');
    const key = li && li.dataset.key;
    if (!key || key.split('/').length !== 4) continue;
    b.status += 1;
    w.obs.push([key, [...status.children].map((x) => x.textContent).join(' '), t]);
  }
}).observe(tree, { subtree: true, childList: true, attributes: true, characterData: true });
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const b = bucket(performance.timeOrigin + e.startTime);
      b.longFrames += 1;
      b.longMs += e.duration;
      b.longMax = Math.max(b.longMax, e.duration);
    }
  }).observe({ type: 'long-animation-frame' });
  w.loaf = true;
} catch (e) {
  w.loaf = false;
}
const model = window.modelhubConsole.model;
const apply = model.apply;
model.apply = function (ev) {
  const o = ev.object;
  if (o && o.kind === 'Cell' && (ev.type === 'ADDED' || ev.type === 'MODIFIED')) {
    const s = o.spec || {};
    w.arr.push([`${s.realmId}/${s.spaceId}/${s.stackId}/${o.metadata.name}`,
      (o.status && o.status.state) || 'Pending', performance.timeOrigin + performance.now()]);
  }
  const t0 = performance.now();
  try {
    return apply.call(this, ev);
  } finally {
    bucket(performance.timeOrigin + t0).applyMs += performance.now() - t0;
  }
};
const view = window.modelhubConsole.tree;
const flush = view.flush;
view.flush = function () {
  const t0 = performance.now();
  try {
    return flush.call(this);
  } finally {
    const b = bucket(performance.timeOrigin + t0);
    b.flushMs += performance.now() - t0;
    b.flushes += 1;
  }
};
for (const li of tree.querySelectorAll(`li[data-key^="${prefix}"]`)) {
  li.__mhMark = true;
  w.marked += 1;
}
return { marked: w.marked, loaf: w.loaf };
"#;

/// Takes what the observers gathered since the last drain, with the
/// page's clocks, heap and counters; with `arguments[0]`, then collects
/// the garbage (`gc()`, exposed by `--js-flags=--expose-gc`) and reads the
/// heap again, with how long the collection held the page.
const DRAIN: &str = r#"
const w = window.__mhBench;
const c = window.modelhubConsole;
const out = {
  obs: w.obs, arr: w.arr, secs: w.secs,
  perf: performance.timeOrigin + performance.now(), date: Date.now(),
  heap: performance.memory.usedJSHeapSize, heapTotal: performance.memory.totalJSHeapSize,
  events: c.stats.events, flushes: c.tree.flushes, relists: c.stats.relists,
  resumes: c.stats.resumes, connected: c.stats.connected,
  rows: c.tree.rows.size, elements: document.getElementById('tree').getElementsByTagName('*').length,
  conn: document.getElementById('conn').textContent,
};
w.obs = [];
w.arr = [];
w.secs = {};
if (arguments[0] && typeof gc === 'function') {
  const t = performance.now();
  gc();
  out.gcMs = performance.now() - t;
  out.heapAfterGc = performance.memory.usedJSHeapSize;
}
return out;
"#;

/// How many rows under prefix `arguments[0]` there are, and how many of
/// them are the elements [`INSTALL`] marked.
const MARKS: &str = r#"
let rows = 0;
let kept = 0;
for (const li of document.getElementById('tree').querySelectorAll(`li[data-key^="${arguments[0]}"]`)) {
  rows += 1;
  if (li.__mhMark) kept += 1;
}
return { rows, kept };
"#;

/// The page's main thread during the initial load, from the buffered
/// long animation frames (`[start, duration]`, ms after the navigation),
/// with the page's own performance marks and its first contentful paint.
/// A WebDriver script runs only when that thread is free, so the load
/// probe cannot start before the snapshot has been taken in: these tell
/// how long the thread was busy before it.
const LOAD_TIMELINE: &str = r#"
const done = arguments[arguments.length - 1];
const frames = [];
try {
  new PerformanceObserver((l) => {
    for (const e of l.getEntries()) frames.push([e.startTime, e.duration]);
  }).observe({ type: 'long-animation-frame', buffered: true });
} catch (e) {
  frames.push(null);
}
setTimeout(() => done({
  frames,
  marks: performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]),
  fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
}), 50);
"#;

/// One second's counts from the page's observers.
#[derive(Clone, Copy, Debug, Default)]
struct Second {
    records: u64,
    added: u64,
    removed: u64,
    callbacks: u64,
    status: u64,
    long_frames: u64,
    long_ms: f64,
    long_max: f64,
    apply_ms: f64,
    flush_ms: f64,
    flushes: u64,
}

impl Second {
    /// Reads one of the page's buckets.
    fn of(v: &Value) -> Second {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Second {
            records: n("records"),
            added: n("added"),
            removed: n("removed"),
            callbacks: n("callbacks"),
            status: n("status"),
            long_frames: n("longFrames"),
            long_ms: f("longMs"),
            long_max: f("longMax"),
            apply_ms: f("applyMs"),
            flush_ms: f("flushMs"),
            flushes: n("flushes"),
        }
    }

    /// Adds another part of the same second (or another second).
    fn add(&mut self, o: &Second) {
        self.records += o.records;
        self.added += o.added;
        self.removed += o.removed;
        self.callbacks += o.callbacks;
        self.status += o.status;
        self.long_frames += o.long_frames;
        self.long_ms += o.long_ms;
        self.long_max = self.long_max.max(o.long_max);
        self.apply_ms += o.apply_ms;
        self.flush_ms += o.flush_ms;
        self.flushes += o.flushes;
    }

    /// The seconds of `seconds` from `from_us` up to `to_us` (epoch us),
    /// added up.
    fn over(seconds: &BTreeMap<i64, Second>, from_us: i64, to_us: i64) -> Second {
        let mut sum = Second::default();
        for s in seconds
            .range(from_us.div_euclid(1_000_000)..to_us.div_euclid(1_000_000))
            .map(|(_, s)| s)
        {
            sum.add(s);
        }
        sum
    }
}

/// A Chromium process: its type (`--type=`; `browser` without one) and
/// its CPU time so far.
#[derive(Clone, Debug)]
struct Proc {
    kind: String,
    cpu: Duration,
}

/// Children of each process, from `/proc/*/stat`.
fn process_children() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(1))
            .and_then(|p| p.parse().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

/// Chromium's processes now, those below this process's children (the
/// only child is ChromeDriver; the server is not started by this
/// command) as [`Browser::rss_kib`] counts them, and their proportional
/// set sizes summed (KiB: unlike RSS, shared pages are counted once).
fn chromium() -> (HashMap<u32, Proc>, u64) {
    let children = process_children();
    let below = |p: &u32| children.get(p).cloned().unwrap_or_default();
    let mut frontier: Vec<u32> = below(&std::process::id()).iter().flat_map(below).collect();
    let (mut procs, mut pss) = (HashMap::new(), 0);
    while let Some(pid) = frontier.pop() {
        frontier.extend(below(&pid));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // Chromium rewrites its command line with spaces between the
        // arguments.
        let arg = |name: &[u8]| {
            cmdline
                .split(|b| *b == 0 || *b == b' ')
                .find_map(|a| a.strip_prefix(name))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let kind = match (arg(b"--type="), arg(b"--utility-sub-type=")) {
            (Some(t), Some(sub)) => format!("{t} {}", sub.rsplit('.').next().unwrap_or("")),
            (Some(t), None) => t,
            (None, _) => "browser".to_string(),
        };
        pss += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        let cpu = util::cpu_time(&pid.to_string()).unwrap_or_default();
        procs.insert(pid, Proc { kind, cpu });
    }
    (procs, pss)
}

/// CPU time so far of Chromium, the server (if its pid is known) and this
/// process.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    chromium: Duration,
    server: Option<Duration>,
    bench: Duration,
}

/// One drain's reading of the page and the processes.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// When it was taken (this process's clock), epoch us.
    at_us: i64,
    heap: u64,
    heap_total: u64,
    /// After a `gc()` (only where asked for), and how long it took (ms).
    heap_gc: Option<u64>,
    gc_ms: Option<f64>,
    events: u64,
    flushes: u64,
    rows: u64,
    elements: u64,
    /// Every [`SAMPLE_EVERY`]: Chromium's RSS and PSS (KiB) and the CPU
    /// times.
    rss_kib: Option<u64>,
    pss_kib: Option<u64>,
    cpu: Option<Cpu>,
}

/// A cell's state seen in the page: its key, the state, when (epoch us).
type Seen = (String, String, i64);

/// Everything the browser side measured.
#[derive(Default)]
struct Page {
    /// [`LOAD_DONE`]'s answer and [`LOAD_TIMELINE`]'s.
    load: Value,
    timeline: Value,
    /// From the start of the navigation (this process's clock) to the
    /// load probe's answer.
    load_wall: Duration,
    marked: u64,
    /// [`MARKS`]'s answer at the end.
    kept: Value,
    loaf: bool,
    after_load: Sample,
    end: Sample,
    /// Chromium's processes at the last full sample, and after the load.
    procs: HashMap<u32, Proc>,
    procs_after_load: HashMap<u32, Proc>,
    samples: Vec<Sample>,
    seconds: BTreeMap<i64, Second>,
    /// Badge changes, and cell events as they arrived.
    obs: Vec<Seen>,
    arrivals: Vec<Seen>,
    /// Per drain: when, and the page's clock (`timeOrigin + now()`) less
    /// `Date.now()` (us), which reads the system clock the writer stamps
    /// its writes with.
    clocks: Vec<(i64, i64)>,
    /// The last drain's answer.
    last: Value,
}

/// Reads `[key, text, epoch ms]` entries into `into`.
fn read_seen(v: &Value, into: &mut Vec<Seen>) {
    for o in v.as_array().into_iter().flatten() {
        let t = o[2].as_f64().unwrap_or(0.0);
        into.push((
            o[0].as_str().unwrap_or_default().to_string(),
            o[1].as_str().unwrap_or_default().to_string(),
            (t * 1000.0).round() as i64,
        ));
    }
}

/// Runs [`DRAIN`] once (collecting the garbage first with `gc`): the
/// observations and seconds go into `page`; answers the sample (with
/// memory and CPU when `full`).
fn drain(b: &Browser, page: &mut Page, server: Option<u32>, full: bool, gc: bool) -> Sample {
    let v = b.exec(DRAIN, vec![json!(gc)]);
    let after = now_us();
    read_seen(&v["obs"], &mut page.obs);
    read_seen(&v["arr"], &mut page.arrivals);
    for (s, counts) in v["secs"].as_object().into_iter().flatten() {
        if let Ok(s) = s.parse::<i64>() {
            page.seconds.entry(s).or_default().add(&Second::of(counts));
        }
    }
    let perf = (v["perf"].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
    let date = v["date"].as_i64().unwrap_or(0) * 1000;
    page.clocks.push((after, perf - date));
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut sample = Sample {
        at_us: after,
        heap: n("heap"),
        heap_total: n("heapTotal"),
        heap_gc: v["heapAfterGc"].as_u64(),
        gc_ms: v["gcMs"].as_f64(),
        events: n("events"),
        flushes: n("flushes"),
        rows: n("rows"),
        elements: n("elements"),
        ..Sample::default()
    };
    if full {
        let (procs, pss) = chromium();
        sample.rss_kib = Some(b.rss_kib());
        sample.pss_kib = Some(pss);
        sample.cpu = Some(Cpu {
            chromium: procs.values().map(|p| p.cpu).sum(),
            server: server.and_then(|p| util::cpu_time(&p.to_string())),
            bench: util::cpu_time("self").unwrap_or_default(),
        });
        page.procs = procs;
    }
    page.last = v;
    page.samples.push(sample.clone());
    sample
}

/// What the browser side needs to know.
struct Plan {
    base: String,
    server: Option<u32>,
    args: ConsoleArgs,
    /// Cells in the expanded stack (its rows).
    rows: usize,
}

/// Opens the console, times its initial load, installs the observers,
/// starts the writer on `rt` and drains the page every second until the
/// writer is done and [`GRACE`] has passed; the garbage is collected
/// before the heap is read after the load, at each minute and at the end.
fn browse(rt: Handle, plan: Plan) -> (Page, Writes) {
    let args = &plan.args;
    let b = Browser::start_with(
        WINDOW.0,
        WINDOW.1,
        &["--enable-precise-memory-info", "--js-flags=--expose-gc"],
    )
    .unwrap_or_else(|e| panic!("browser: {e}"));
    let ui = format!("{}/ui/", plan.base);
    let stack_key = format!("bench/s/{}", args.expanded_stack);
    b.goto(&ui);
    b.exec(
        "sessionStorage.setItem(arguments[0], JSON.stringify(arguments[1]));",
        vec![
            json!(EXPANDED_KEY),
            json!(["bench", "bench/s", stack_key.as_str()]),
        ],
    );
    eprintln!("console: opening {ui} with {stack_key} expanded");
    let started = Instant::now();
    b.goto(&ui);
    b.exec(
        LOAD_PROBE,
        vec![json!(args.cells), json!(plan.rows), json!(stack_key)],
    );
    let mut page = Page {
        load: b.wait_for("the console's initial load", LOAD_DONE, LOAD_TIMEOUT),
        load_wall: started.elapsed(),
        timeline: b.exec_async(LOAD_TIMELINE, vec![]),
        ..Page::default()
    };
    let prefix = format!("{stack_key}/");
    let installed = b.exec(INSTALL, vec![json!(prefix)]);
    page.marked = installed["marked"].as_u64().unwrap_or(0);
    page.loaf = installed["loaf"].as_bool().unwrap_or(false);
    page.after_load = drain(&b, &mut page, plan.server, true, true);
    page.procs_after_load = page.procs.clone();
    eprintln!(
        "console: all {} cells in the model {:.2} s after the navigation began, {} rows marked; writing for {} s",
        args.cells,
        page.load["cells"].as_f64().unwrap_or(0.0) / 1000.0,
        page.marked,
        args.seconds
    );
    let writer = rt.spawn(write_loop(
        plan.base.clone(),
        args.expanded_stack.clone(),
        plan.rows,
        Duration::from_millis(args.interval_ms),
        args.seconds,
    ));
    let t0 = Instant::now();
    let mut next_full = t0 + SAMPLE_EVERY;
    let mut done_at: Option<Instant> = None;
    for k in 1u32.. {
        let due = t0 + Duration::from_secs(1) * k;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let full = Instant::now() >= next_full;
        if full {
            next_full += SAMPLE_EVERY;
        }
        drain(&b, &mut page, plan.server, full, k % 60 == 0);
        if k % 60 == 0 {
            eprintln!("console: {k} s, {} badge changes seen", page.obs.len());
        }
        if done_at.is_none() && writer.is_finished() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() >= GRACE) {
            break;
        }
    }
    page.end = drain(&b, &mut page, plan.server, true, true);
    page.kept = b.exec(MARKS, vec![json!(prefix)]);
    let writes = rt.block_on(writer).expect("the writer");
    (page, writes)
}

/// The `p`-th percentile (0..=100) of sorted values, as
/// [`util::percentile`] picks it.
fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// Microseconds as milliseconds, two decimals.
fn ms(us: i64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// Bytes (or KiB with `unit` 1024) as MiB, one decimal.
fn mib(n: u64, unit: u64) -> f64 {
    (n as f64 * unit as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

/// An optional amount as [`mib`].
fn mib_of(n: Option<u64>, unit: u64) -> Option<f64> {
    n.map(|n| mib(n, unit))
}

/// Distribution of a set of delays (us).
fn dist(mut v: Vec<i64>) -> Value {
    v.sort_unstable();
    json!({
        "count": v.len(),
        "p50_ms": ms(pct(&v, 50.0)),
        "p90_ms": ms(pct(&v, 90.0)),
        "p99_ms": ms(pct(&v, 99.0)),
        "max_ms": ms(v.last().copied().unwrap_or(0)),
        "negative": v.iter().filter(|x| **x < 0).count(),
    })
}

/// A write, when its event reached the page's model and when its badge
/// changed (epoch us), if they did.
struct Matched<'a> {
    write: &'a Write,
    arrived_us: Option<i64>,
    shown_us: Option<i64>,
}

/// For each write, the first time `seen` has its cell in its state at or
/// after it was sent.
fn first_seen(writes: &[Write], seen: &[Seen], stack: &str) -> Vec<Option<i64>> {
    let mut times: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for (key, text, t) in seen {
        times
            .entry((key.as_str(), text.as_str()))
            .or_default()
            .push(*t);
    }
    for ts in times.values_mut() {
        ts.sort_unstable();
    }
    writes
        .iter()
        .map(|w| {
            let key = format!("bench/s/{stack}/{}", util::nth_cell(w.cell));
            let ts = times.get(&(key.as_str(), STATES[w.state]))?;
            ts.get(ts.partition_point(|t| *t < w.send_us)).copied()
        })
        .collect()
}

/// Matches each write to its event's arrival and its badge's change.
fn match_writes<'a>(writes: &'a [Write], page: &Page, stack: &str) -> Vec<Matched<'a>> {
    let arrived = first_seen(writes, &page.arrivals, stack);
    let shown = first_seen(writes, &page.obs, stack);
    writes
        .iter()
        .zip(arrived.into_iter().zip(shown))
        .map(|(write, (arrived_us, shown_us))| Matched {
            write,
            arrived_us,
            shown_us,
        })
        .collect()
}

/// The last sample taken at or before `until_us` that has `pick`.
fn last_before<T>(
    samples: &[Sample],
    until_us: i64,
    pick: impl Fn(&Sample) -> Option<T>,
) -> Option<T> {
    samples
        .iter()
        .rev()
        .filter(|s| s.at_us <= until_us)
        .find_map(pick)
}

/// `d` as percent of one core over `wall_us`, one decimal.
fn core_pct(d: Duration, wall_us: i64) -> f64 {
    (d.as_secs_f64() * 1e6 / wall_us.max(1) as f64 * 1000.0).round() / 10.0
}

/// The per-minute series: writes, delays, mutation records, memory, CPU
/// (percent of one core: Chromium, server, this process).
fn minutes(matched: &[Matched], page: &Page, start_us: i64, seconds: u64) -> Vec<Value> {
    const MIN: i64 = 60_000_000;
    let n = seconds.div_ceil(60).max(1) as i64;
    let mut prev_cpu = page.after_load.cpu.map(|c| (page.after_load.at_us, c));
    (0..n)
        .map(|m| {
            let (from, to) = (start_us + m * MIN, start_us + (m + 1) * MIN);
            let these: Vec<&Matched> = matched
                .iter()
                .filter(|x| x.write.ok && (from..to).contains(&x.write.send_us))
                .collect();
            let mut lat: Vec<i64> = these
                .iter()
                .filter_map(|x| Some(x.shown_us? - x.write.ack_us))
                .collect();
            lat.sort_unstable();
            let sec = Second::over(&page.seconds, from, to);
            // The minute's last samples may come a little after it.
            let until = (to + 2_000_000).min(page.end.at_us);
            let at = |pick: fn(&Sample) -> Option<u64>| last_before(&page.samples, until, pick);
            let cpu = last_before(&page.samples, until, |s| s.cpu.map(|c| (s.at_us, c)));
            let share = match (prev_cpu, cpu) {
                (Some((ta, a)), Some((tb, b))) if tb > ta => Some((
                    core_pct(b.chromium.saturating_sub(a.chromium), tb - ta),
                    b.server
                        .zip(a.server)
                        .map(|(b, a)| core_pct(b.saturating_sub(a), tb - ta)),
                    core_pct(b.bench.saturating_sub(a.bench), tb - ta),
                )),
                _ => None,
            };
            prev_cpu = cpu.or(prev_cpu);
            let writes = these.len();
            json!({
                "minute": m + 1,
                "writes": writes,
                "missing": these.iter().filter(|x| x.shown_us.is_none()).count(),
                "p50_ms": ms(pct(&lat, 50.0)),
                "p99_ms": ms(pct(&lat, 99.0)),
                "max_ms": ms(lat.last().copied().unwrap_or(0)),
                "records_per_write": (sec.records as f64 / writes.max(1) as f64 * 100.0).round() / 100.0,
                "long_frames": sec.long_frames,
                "heap_mib": mib_of(at(|s| Some(s.heap)), 1),
                "heap_after_gc_mib": mib_of(at(|s| s.heap_gc), 1),
                "rss_mib": mib_of(at(|s| s.rss_kib), 1024),
                "pss_mib": mib_of(at(|s| s.pss_kib), 1024),
                "cpu_chromium_pct": share.map(|s| s.0),
                "cpu_server_pct": share.and_then(|s| s.1),
                "cpu_bench_pct": share.map(|s| s.2),
            })
        })
        .collect()
}

/// Chromium's CPU between two snapshots of its processes, per process
/// type, percent of one core over `wall_us` (a process that ended
/// meanwhile is not counted).
fn cpu_by_kind(a: &HashMap<u32, Proc>, b: &HashMap<u32, Proc>, wall_us: i64) -> Value {
    let mut by: BTreeMap<&str, Duration> = BTreeMap::new();
    for (pid, p) in b {
        let before = a.get(pid).map_or(Duration::ZERO, |q| q.cpu);
        *by.entry(p.kind.as_str()).or_default() += p.cpu.saturating_sub(before);
    }
    by.into_iter()
        .map(|(k, d)| (k.to_string(), json!(core_pct(d, wall_us))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The median of the page's clock less `Date.now()` over the drains of
/// the first and of the last minute (ms; `Date.now()` truncates to the
/// millisecond, so clocks that agree give about +0.5).
fn clock_drift(clocks: &[(i64, i64)], start_us: i64, end_us: i64) -> Value {
    let median = |from: i64, to: i64| {
        let mut d: Vec<i64> = clocks
            .iter()
            .filter(|c| (from..to).contains(&c.0))
            .map(|c| c.1)
            .collect();
        d.sort_unstable();
        ms(pct(&d, 50.0))
    };
    json!([
        median(start_us, start_us + 60_000_000),
        median(end_us - 60_000_000, end_us)
    ])
}

/// A summary of [`LOAD_TIMELINE`]'s long frames before `until` (ms after
/// the navigation): how many, their time, when the last one ended.
fn busy_before(timeline: &Value, until: f64) -> Value {
    let frames: Vec<(f64, f64)> = timeline["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f[0].as_f64()?, f[1].as_f64()?)))
        .filter(|(start, _)| *start < until)
        .collect();
    let s = |ms: f64| (ms / 10.0).round() / 100.0;
    json!({
        "long_frames": frames.len(),
        "long_frames_s": s(frames.iter().map(|f| f.1).sum()),
        "last_long_frame_end_s": frames.iter().map(|f| f.0 + f.1).reduce(f64::max).map(s),
        "first_contentful_paint_s": timeline["fcp"].as_f64().map(s),
        "page_marks": timeline["marks"],
    })
}

/// Prints the summary and the table, and answers the whole report.
fn report(args: &ConsoleArgs, rows: usize, page: &Page, w: &Writes) -> Value {
    let matched = match_writes(&w.writes, page, &args.expanded_stack);
    let ok: Vec<&Matched> = matched.iter().filter(|m| m.write.ok).collect();
    let delays =
        |f: &dyn Fn(&Matched) -> Option<i64>| dist(ok.iter().filter_map(|m| f(m)).collect());
    let end_us =
        w.writes.last().map_or(w.start_us, |x| x.ack_us) + GRACE.as_secs() as i64 * 1_000_000;
    let during = Second::over(&page.seconds, w.start_us, end_us + 1_000_000);
    let per_write = |n: u64| (n as f64 / ok.len().max(1) as f64 * 100.0).round() / 100.0;
    let (a, e) = (&page.after_load, &page.end);
    let load_s = |k: &str| page.load[k].as_f64().map(|x| (x / 10.0).round() / 100.0);
    let installed = page.load["installed"].as_f64().unwrap_or(0.0);
    let wall_s = (w.writes.last().map_or(0, |x| x.ack_us) - w.start_us) as f64 / 1e6;
    let out = json!({
        "cells": args.cells,
        "stacks": args.stacks,
        "expanded_stack": args.expanded_stack,
        "rows": rows,
        "interval_ms": args.interval_ms,
        "seconds": args.seconds,
        "initial_load": {
            "live_s": load_s("live"),
            "cells_in_model_s": load_s("cells"),
            "rows_s": load_s("rows"),
            "probe_installed_s": load_s("installed"),
            "load_event_s": load_s("load"),
            "wall_s": (page.load_wall.as_secs_f64() * 100.0).round() / 100.0,
            "model_nodes": page.load["nodes"],
            "model_objects": page.load["kinds"],
            "before_probe": busy_before(&page.timeline, installed),
        },
        "writes": {
            "sent": w.writes.len(),
            "ok": ok.len(),
            "errors": w.writes.len() - ok.len(),
            "per_second": (ok.len() as f64 / wall_s.max(1e-9) * 10.0).round() / 10.0,
            "first_error": w.first_error,
            "skipped_ticks": w.skipped,
            "http_ack": delays(&|m| Some(m.write.ack_us - m.write.send_us)),
        },
        "ack_to_page": delays(&|m| Some(m.shown_us? - m.write.ack_us)),
        "send_to_page": delays(&|m| Some(m.shown_us? - m.write.send_us)),
        "ack_to_event": delays(&|m| Some(m.arrived_us? - m.write.ack_us)),
        "event_to_page": delays(&|m| Some(m.shown_us? - m.arrived_us?)),
        "missing": ok.iter().filter(|m| m.shown_us.is_none()).count(),
        "dom": {
            "records_per_write": per_write(during.records),
            "added_nodes_per_write": per_write(during.added),
            "removed_nodes_per_write": per_write(during.removed),
            "observer_callbacks_per_write": per_write(during.callbacks),
            "status_changes_per_write": per_write(during.status),
            "rows_marked": page.marked,
            "rows_at_end": page.kept["rows"],
            "marked_rows_kept": page.kept["kept"],
            "tree_elements": [a.elements, e.elements],
            "tree_rows": [a.rows, e.rows],
            "events": e.events - a.events,
            "flushes": e.flushes - a.flushes,
        },
        "javascript": {
            "apply_us_per_write": (during.apply_ms * 1000.0 / ok.len().max(1) as f64).round(),
            "flush_us_per_write": (during.flush_ms * 1000.0 / ok.len().max(1) as f64).round(),
            "flush_us_per_flush": (during.flush_ms * 1000.0 / during.flushes.max(1) as f64).round(),
            "flushes_per_second": (during.flushes as f64 / wall_s.max(1e-9) * 10.0).round() / 10.0,
        },
        "long_animation_frames": {
            "observed": page.loaf,
            "count": during.long_frames,
            "total_ms": during.long_ms.round(),
            "max_ms": during.long_max.round(),
        },
        "memory": {
            "heap_used_mib": [mib(a.heap, 1), mib(e.heap, 1)],
            "heap_after_gc_mib": [mib_of(a.heap_gc, 1), mib_of(e.heap_gc, 1)],
            "gc_ms": [a.gc_ms.map(f64::round), e.gc_ms.map(f64::round)],
            "heap_total_mib": [mib(a.heap_total, 1), mib(e.heap_total, 1)],
            "chromium_rss_mib": [mib_of(a.rss_kib, 1024), mib_of(e.rss_kib, 1024)],
            "chromium_pss_mib": [mib_of(a.pss_kib, 1024), mib_of(e.pss_kib, 1024)],
        },
        "chromium_cpu_pct_by_process": cpu_by_kind(&page.procs_after_load, &page.procs, e.at_us - a.at_us),
        "feed": {
            "connected": page.last["connected"],
            "resumes": page.last["resumes"],
            "relists": page.last["relists"],
        },
        "clock_perf_minus_date_ms": clock_drift(&page.clocks, w.start_us, e.at_us),
        "minutes": minutes(&matched, page, w.start_us, args.seconds),
    });
    print_report(&out);
    out
}

/// A JSON value as text, `-` when absent.
fn num(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    }
}

/// A distribution [`dist`] made, on one line.
fn dist_line(v: &Value) -> String {
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} writes, {} negative)",
        num(&v["p50_ms"]),
        num(&v["p90_ms"]),
        num(&v["p99_ms"]),
        num(&v["max_ms"]),
        num(&v["count"]),
        num(&v["negative"])
    )
}

/// Prints the report [`report`] built.
fn print_report(r: &Value) {
    let l = &r["initial_load"];
    let busy = &l["before_probe"];
    println!(
        "== console: {} cells in {} stacks, {} rows of bench/s/{} rendered, a status write every {} ms for {} s",
        r["cells"],
        r["stacks"],
        r["rows"],
        r["expanded_stack"].as_str().unwrap_or(""),
        r["interval_ms"],
        r["seconds"]
    );
    println!(
        "initial load, s after the navigation began: load event {}, first contentful paint {}, Live {}, \
         all cells in the model {}, all rows {} (the probe ran at {}: the page's thread was busy until then, \
         {} long frames of {} s, the last ending at {}; wall {}); the model: {} nodes, {}",
        num(&l["load_event_s"]),
        num(&busy["first_contentful_paint_s"]),
        num(&l["live_s"]),
        num(&l["cells_in_model_s"]),
        num(&l["rows_s"]),
        num(&l["probe_installed_s"]),
        num(&busy["long_frames"]),
        num(&busy["long_frames_s"]),
        num(&busy["last_long_frame_end_s"]),
        num(&l["wall_s"]),
        num(&l["model_nodes"]),
        l["model_objects"]
    );
    let w = &r["writes"];
    println!(
        "writes: {} sent ({}/s), {} errors, {} ticks skipped; HTTP ack {}",
        w["sent"],
        w["per_second"],
        w["errors"],
        w["skipped_ticks"],
        dist_line(&w["http_ack"])
    );
    if let Some(e) = w["first_error"].as_str() {
        println!("  first error: {e}");
    }
    println!("ack -> badge:   {}", dist_line(&r["ack_to_page"]));
    println!("send -> badge:  {}", dist_line(&r["send_to_page"]));
    println!("ack -> event:   {}", dist_line(&r["ack_to_event"]));
    println!("event -> badge: {}", dist_line(&r["event_to_page"]));
    println!("missing (never shown): {}", r["missing"]);
    let m = &r["dom"];
    println!(
        "DOM under #tree per write: {} mutation records, {} nodes added, {} removed, {} observer callbacks, \
         {} status changes; {} events in {} flushes",
        m["records_per_write"],
        m["added_nodes_per_write"],
        m["removed_nodes_per_write"],
        m["observer_callbacks_per_write"],
        m["status_changes_per_write"],
        m["events"],
        m["flushes"]
    );
    println!(
        "rows: {} marked after the load, {} at the end, {} of them the same elements; elements under #tree {} -> {}",
        m["rows_marked"],
        m["rows_at_end"],
        m["marked_rows_kept"],
        m["tree_elements"][0],
        m["tree_elements"][1]
    );
    let js = &r["javascript"];
    println!(
        "the page's JavaScript per write: model.apply {} us, tree flush {} us ({} us per flush, {} flushes/s)",
        js["apply_us_per_write"],
        js["flush_us_per_write"],
        js["flush_us_per_flush"],
        js["flushes_per_second"]
    );
    let f = &r["long_animation_frames"];
    println!(
        "long animation frames (> 50 ms) while writing: {} (total {} ms, longest {} ms){}",
        f["count"],
        f["total_ms"],
        f["max_ms"],
        if f["observed"] == true {
            ""
        } else {
            " (not observable in this browser)"
        }
    );
    let mem = &r["memory"];
    let pair = |k: &str| format!("{} -> {}", num(&mem[k][0]), num(&mem[k][1]));
    println!(
        "after the load -> at the end: JS heap used {} MiB, after gc() {} MiB (gc {} ms), Chromium RSS {} MiB, PSS {} MiB",
        pair("heap_used_mib"),
        pair("heap_after_gc_mib"),
        pair("gc_ms"),
        pair("chromium_rss_mib"),
        pair("chromium_pss_mib")
    );
    println!(
        "Chromium CPU by process while writing, % of one core: {}",
        r["chromium_cpu_pct_by_process"]
    );
    println!(
        "feed: connected {}, resumes {}, relists {}; page clock - Date.now: {} ms in the first minute, {} ms in the last",
        num(&r["feed"]["connected"]),
        num(&r["feed"]["resumes"]),
        num(&r["feed"]["relists"]),
        num(&r["clock_perf_minus_date_ms"][0]),
        num(&r["clock_perf_minus_date_ms"][1])
    );
    let cols = [
        ("minute", "minute"),
        ("writes", "writes"),
        ("missing", "missing"),
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("max ms", "max_ms"),
        ("records/wr", "records_per_write"),
        ("long", "long_frames"),
        ("heap MiB", "heap_mib"),
        ("after gc", "heap_after_gc_mib"),
        ("RSS MiB", "rss_mib"),
        ("PSS MiB", "pss_mib"),
        ("chromium %", "cpu_chromium_pct"),
        ("server %", "cpu_server_pct"),
        ("bench %", "cpu_bench_pct"),
    ];
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(cols)
            .map(|(c, (h, _))| format!("{c:>w$}", w = h.len().max(7)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("{}", line(cols.iter().map(|c| c.0.to_string()).collect()));
    for m in r["minutes"].as_array().into_iter().flatten() {
        println!("{}", line(cols.iter().map(|c| num(&m[c.1])).collect()));
    }
}

/// The index of `stack` among `t0..t{stacks-1}`, or why it is not one.
fn stack_index(stack: &str, stacks: usize) -> Result<usize, String> {
    stack
        .strip_prefix('t')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|i| *i < stacks && stack == format!("t{i}"))
        .ok_or_else(|| {
            format!(
                "--expanded-stack {stack}: one of t0..t{}",
                stacks.saturating_sub(1)
            )
        })
}

/// Runs `console` against the server at `base` (its pid, if known, for
/// its CPU): loads the cells, then measures the console in Chromium.
pub async fn run(base: &str, server: Option<u32>, args: ConsoleArgs) {
    let idx = stack_index(&args.expanded_stack, args.stacks).unwrap_or_else(|e| {
        eprintln!("console: {e}");
        std::process::exit(2);
    });
    if args.stacks == 0 || args.cells < args.stacks || args.interval_ms == 0 {
        eprintln!("console: needs --stacks >= 1, --cells >= --stacks and --interval-ms >= 1");
        std::process::exit(2);
    }
    if let Err(e) = webdriver::binaries() {
        eprintln!("console: {e}");
        std::process::exit(2);
    }
    let hub = Hub::new(
        &[base.to_string()],
        &util::run_id(),
        server.into_iter().collect(),
    );
    let started = Instant::now();
    eprintln!(
        "console: loading {} cells into {} stacks of bench/s",
        args.cells, args.stacks
    );
    for i in 0..args.stacks {
        hub.ensure_cells(
            &format!("t{i}"),
            crate::share(args.cells, i as u32, args.stacks as u32),
        )
        .await;
        eprintln!(
            "console: {}/{} stacks loaded, {:.1?}",
            i + 1,
            args.stacks,
            started.elapsed()
        );
    }
    let rows = crate::share(args.cells, idx as u32, args.stacks as u32);
    let plan = Plan {
        base: base.to_string(),
        server,
        args: args.clone(),
        rows,
    };
    let rt = Handle::current();
    let (page, writes) = tokio::task::spawn_blocking(move || browse(rt, plan))
        .await
        .expect("the browser side");
    let out = report(&args, rows, &page, &writes);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&out).expect("json");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| panic!("--json {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(cell: usize, state: usize, send_us: i64) -> Write {
        Write {
            cell,
            state,
            send_us,
            ack_us: send_us + 500,
            ok: true,
        }
    }

    #[test]
    fn a_write_matches_the_first_change_to_its_state_after_it_was_sent() {
        let key = |c: usize| format!("bench/s/t0/{}", util::nth_cell(c));
        let obs = vec![
            (key(1), "Ready".to_string(), 900),
            (key(1), "Ready".to_string(), 2_000),
            (key(1), "Ready".to_string(), 3_000),
            (key(2), "Failed".to_string(), 1_800),
            (key(1), "Failed".to_string(), 1_700),
        ];
        let writes = [write(1, 0, 1_000), write(2, 1, 1_000), write(3, 0, 1_000)];
        assert_eq!(
            first_seen(&writes, &obs, "t0"),
            [Some(2_000), Some(1_800), None]
        );
    }

    #[test]
    fn the_expanded_stack_is_one_of_the_loaded_ones() {
        assert_eq!(stack_index("t0", 10), Ok(0));
        assert_eq!(stack_index("t9", 10), Ok(9));
        assert!(stack_index("t10", 10).is_err());
        assert!(stack_index("t01", 10).is_err());
        assert!(stack_index("x", 10).is_err());
    }

    #[test]
    fn percentiles_of_signed_delays() {
        let v = dist(vec![-2_000, 1_000, 3_000, 5_000, 9_000]);
        assert_eq!(v["p50_ms"], 3.0);
        assert_eq!(v["max_ms"], 9.0);
        assert_eq!(v["negative"], 1);
    }
}
