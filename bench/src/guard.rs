//! The load generator's half of `bench/guard.sh`: each workload's headline
//! figures written as tab-separated lines (`--figures FILE`), and
//! `guard-report`, which reads the lines of a guard run (two sides, several
//! rounds) and judges each figure.
//!
//! A figure line is `workload \t figure \t value \t better \t cpu_us`:
//! `better` says which way is good (`higher`, `lower`, or `zero` for a
//! count that must stay 0) and `cpu_us` is the server's CPU time per
//! operation in microseconds (`-` when unknown). The guard prefixes each
//! line with `side \t round \t`, side `a` being the baseline and `b` the
//! build or setting under test.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::report::{ListFigures, WatchFigures, median};
use crate::util::Run;

/// Which way a figure is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput: lower is a loss.
    Higher,
    /// Latency: higher is a loss.
    Lower,
    /// A count of failures: anything but 0 is a loss.
    Zero,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Zero => "zero",
        }
    }

    fn parse(s: &str) -> Option<Better> {
        match s {
            "higher" => Some(Better::Higher),
            "lower" => Some(Better::Lower),
            "zero" => Some(Better::Zero),
            _ => None,
        }
    }
}

/// One figure of one workload run.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// E.g. `create: 64 clients`.
    pub workload: String,
    /// E.g. `ops/s`, `p99 ms`.
    pub figure: String,
    pub value: f64,
    pub better: Better,
    /// The server's CPU per operation (request, list or delivered event),
    /// microseconds.
    pub cpu_us: Option<f64>,
}

impl Figure {
    fn new(
        workload: &str,
        figure: &str,
        value: f64,
        better: Better,
        cpu: Option<Duration>,
    ) -> Self {
        Figure {
            workload: workload.to_string(),
            figure: figure.to_string(),
            value,
            better,
            cpu_us: cpu.map(|d| d.as_secs_f64() * 1e6),
        }
    }

    /// The tab-separated line (no newline).
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.workload,
            self.figure,
            self.value,
            self.better.as_str(),
            self.cpu_us.map_or("-".to_string(), |c| format!("{c:.3}"))
        )
    }
}

/// A closed-loop run: ops/s, p99 and errors, with the server's CPU per
/// request.
pub fn of_run(workload: &str, run: &Run) -> Vec<Figure> {
    let cpu = run.cpu_per_op().0;
    vec![
        Figure::new(workload, "ops/s", run.ops_per_sec(), Better::Higher, cpu),
        Figure::new(
            workload,
            "p99 ms",
            run.p(99.0).as_secs_f64() * 1e3,
            Better::Lower,
            cpu,
        ),
        Figure::new(workload, "errors", run.errors as f64, Better::Zero, cpu),
    ]
}

/// A series of lists: the median time per list, with the server's CPU per
/// list.
pub fn of_list(workload: &str, lists: &ListFigures) -> Vec<Figure> {
    vec![Figure::new(
        workload,
        "median ms",
        lists.median().as_secs_f64() * 1e3,
        Better::Lower,
        lists.times.cpu_per_op().0,
    )]
}

/// A watch run, with the server's CPU per delivered event. The closed loop
/// gives the delivery rate (and its p99 when `closed_p99`: when no paced
/// run follows, as the closed loop's p99 measures a backlog); a paced run
/// gives the p99 delay. Both count the missing events.
pub fn of_watch(workload: &str, w: &WatchFigures, closed_p99: bool) -> Vec<Figure> {
    let cpu = w
        .cpu
        .server
        .map(|d| d / u32::try_from(w.delivered.max(1)).unwrap_or(u32::MAX));
    let p99 = w.p(99.0).as_secs_f64() * 1e3;
    let mut out = Vec::new();
    let mode = match w.rate {
        Some(r) => format!("paced {r}/s"),
        None => {
            let rate = w.delivered as f64 / w.span.as_secs_f64().max(1e-3);
            out.push(Figure::new(
                workload,
                "events/s, closed loop",
                rate,
                Better::Higher,
                cpu,
            ));
            "closed loop".to_string()
        }
    };
    if w.rate.is_some() || closed_p99 {
        out.push(Figure::new(
            workload,
            &format!("p99 ms, {mode}"),
            p99,
            Better::Lower,
            cpu,
        ));
    }
    out.push(Figure::new(
        workload,
        &format!("missing, {mode}"),
        w.missing as f64,
        Better::Zero,
        cpu,
    ));
    out
}

/// Where `--figures` lines go: appended to a file, or nowhere.
#[derive(Default)]
pub struct Sink {
    path: Option<PathBuf>,
}

impl Sink {
    pub fn new(path: Option<PathBuf>) -> Sink {
        Sink { path }
    }

    /// Appends the figures' lines to the file, if any.
    pub fn emit(&self, figures: &[Figure]) {
        let Some(path) = &self.path else { return };
        let text: String = figures.iter().map(|f| f.line() + "\n").collect();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("--figures {}: {e}", path.display()));
    }
}

/// Which side of the comparison a line belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The baseline.
    A,
    /// The build or setting under test.
    B,
}

/// One figure line of a guard run: side, round, figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub side: Side,
    pub round: u32,
    pub figure: Figure,
}

/// Parses a guard run's lines (`side \t round \t <figure line>`); blank
/// lines and lines starting with `#` are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        let f: Vec<&str> = line.split('\t').collect();
        let [side, round, workload, figure, value, better, cpu] = f[..] else {
            return Err(bad("expected 7 tab-separated fields"));
        };
        let side = match side {
            "a" => Side::A,
            "b" => Side::B,
            _ => return Err(bad("side is not a or b")),
        };
        let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
        out.push(Sample {
            side,
            round: round.parse().map_err(|_| bad("bad round"))?,
            figure: Figure {
                workload: workload.to_string(),
                figure: figure.to_string(),
                value: number(value).ok_or_else(|| bad("bad value"))?,
                better: Better::parse(better).ok_or_else(|| bad("bad direction"))?,
                cpu_us: match cpu {
                    "-" => None,
                    c => Some(number(c).ok_or_else(|| bad("bad CPU"))?),
                },
            },
        });
    }
    Ok(out)
}

/// One figure over all rounds, both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub workload: String,
    pub figure: String,
    pub better: Better,
    /// The values of side A, B (one per round that produced it).
    pub values: [Vec<f64>; 2],
    /// The round of each value of side A, B.
    pub rounds: [Vec<u32>; 2],
    /// The server's CPU per operation of side A, B, where known.
    pub cpu: [Vec<f64>; 2],
}

impl Row {
    /// The median of side B over the median of side A (`None` if a side
    /// has no value or A's median is 0).
    pub fn ratio(&self) -> Option<f64> {
        let [a, b] = &self.values;
        let (ma, mb) = (median(a), median(b));
        (!a.is_empty() && !b.is_empty() && ma != 0.0).then(|| mb / ma)
    }

    /// The median over the rounds of each round's B/A (`None` if no round
    /// has both, or A is 0 in every round). The two runs of a round run
    /// back to back, so the machine's slow and fast phases, which last
    /// longer than a run, fall on both and cancel in the round's ratio.
    pub fn paired(&self) -> Option<f64> {
        let ratios: Vec<f64> = self.rounds[0]
            .iter()
            .zip(&self.values[0])
            .filter(|(_, a)| **a != 0.0)
            .filter_map(|(r, a)| {
                let i = self.rounds[1].iter().position(|rb| rb == r)?;
                Some(self.values[1][i] / a)
            })
            .collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }

    /// The verdict with `threshold` (a fraction, 0.05 for 5 %) when each
    /// side should have a value from each of `rounds` rounds: judged on
    /// the paired ratio ([`Row::paired`]), which a phase change of the
    /// machine between two rounds does not move (the ratio of the two
    /// medians does; bench/README.md has an example).
    pub fn verdict(&self, threshold: f64, rounds: usize) -> Verdict {
        let [a, b] = &self.values;
        if a.len() < rounds || b.len() < rounds || a.is_empty() || b.is_empty() {
            return Verdict::Incomplete;
        }
        let ok = match (self.better, self.paired()) {
            (Better::Zero, _) => b.iter().all(|v| *v == 0.0),
            (_, None) => true,
            (Better::Higher, Some(r)) => r >= 1.0 - threshold,
            (Better::Lower, Some(r)) => r <= 1.0 + threshold,
        };
        if ok {
            Verdict::Pass
        } else {
            Verdict::Regression
        }
    }
}

/// A figure's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// B's median is within the threshold of A's, or better.
    Pass,
    /// B's median is worse than A's by more than the threshold (for a
    /// count: B was not 0 in some round).
    Regression,
    /// A side lacks a round's value (a run failed).
    Incomplete,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Regression => "REGRESSION",
            Verdict::Incomplete => "INCOMPLETE",
        })
    }
}

/// The samples grouped by figure, in the order the figures first appear.
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for s in samples {
        let f = &s.figure;
        let i = match rows
            .iter()
            .position(|r| r.workload == f.workload && r.figure == f.figure)
        {
            Some(i) => i,
            None => {
                rows.push(Row {
                    workload: f.workload.clone(),
                    figure: f.figure.clone(),
                    better: f.better,
                    values: [Vec::new(), Vec::new()],
                    rounds: [Vec::new(), Vec::new()],
                    cpu: [Vec::new(), Vec::new()],
                });
                rows.len() - 1
            }
        };
        let side = usize::from(s.side == Side::B);
        rows[i].values[side].push(f.value);
        rows[i].rounds[side].push(s.round);
        if let Some(c) = f.cpu_us {
            rows[i].cpu[side].push(c);
        }
    }
    rows
}

/// A figure in 3 significant digits or so.
fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A count.
fn count(v: f64) -> String {
    format!("{v:.0}")
}

/// `"median [min-max]"` of some values, each formatted by `fmt`, or `"-"`.
fn spread(values: &[f64], fmt: fn(f64) -> String) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} [{}-{}]", fmt(median(values)), fmt(min), fmt(max))
}

/// The report: a table of every figure (each side's median and min-max
/// over the rounds, B/A, the server's CPU per operation, the verdict),
/// then a summary line. Answers the text and how many figures failed
/// (regression or incomplete).
pub fn render(samples: &[Sample], names: [&str; 2], threshold_pct: f64) -> (String, usize) {
    let mut rounds: Vec<u32> = samples.iter().map(|s| s.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    let rows = rows(samples);
    let [a, b] = names;
    let mut table = vec![[
        "workload".to_string(),
        "figure".to_string(),
        format!("{a}: median [min-max]"),
        format!("{b}: median [min-max]"),
        format!("{b}/{a}"),
        "paired".to_string(),
        format!("server CPU/op, us: {a} -> {b}"),
        "verdict".to_string(),
    ]];
    let (mut failed, mut regressions) = (Vec::new(), 0);
    for row in &rows {
        let verdict = row.verdict(threshold_pct / 100.0, rounds.len());
        if verdict != Verdict::Pass {
            failed.push(format!("{} {} ({verdict})", row.workload, row.figure));
        }
        regressions += usize::from(verdict == Verdict::Regression);
        let [ca, cb] = &row.cpu;
        let cpu = if ca.is_empty() && cb.is_empty() {
            "-".to_string()
        } else {
            let side = |c: &[f64]| {
                if c.is_empty() {
                    "?".to_string()
                } else {
                    format!("{:.1}", median(c))
                }
            };
            let ratio = if ca.is_empty() || cb.is_empty() || median(ca) == 0.0 {
                String::new()
            } else {
                format!(" ({:.2}x)", median(cb) / median(ca))
            };
            format!("{} -> {}{ratio}", side(ca), side(cb))
        };
        let fmt = if row.better == Better::Zero {
            count
        } else {
            num
        };
        table.push([
            row.workload.clone(),
            row.figure.clone(),
            spread(&row.values[0], fmt),
            spread(&row.values[1], fmt),
            match (row.better, row.ratio()) {
                (Better::Zero, _) | (_, None) => "-".to_string(),
                (_, Some(r)) => format!("{r:.3}x"),
            },
            match (row.better, row.paired()) {
                (Better::Zero, _) | (_, None) => "-".to_string(),
                (_, Some(r)) => format!("{r:.3}x"),
            },
            cpu,
            verdict.to_string(),
        ]);
    }
    let mut widths = [0; 8];
    for cells in &table {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for cells in &table {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // Numbers right-aligned, words left-aligned.
                if (2..=5).contains(&i) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let n = rounds.len();
    if failed.is_empty() {
        out.push_str(&format!(
            "guard: PASS: all {} figures of {b} within {threshold_pct} % of {a} \
             (paired medians of {n} rounds; a better figure always passes)\n",
            rows.len()
        ));
    } else {
        // Incomplete figures alone (failed runs) are no regression, but
        // fail all the same.
        let what = if regressions > 0 {
            Verdict::Regression
        } else {
            Verdict::Incomplete
        };
        out.push_str(&format!(
            "guard: {what}: {} of {} figures of {b} fail against {a} \
             (threshold {threshold_pct} %, paired medians of {n} rounds): {}\n",
            failed.len(),
            rows.len(),
            failed.join("; ")
        ));
    }
    (out, failed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(side: &str, round: u32, figure: &str, value: f64, better: &str, cpu: &str) -> String {
        format!("{side}\t{round}\tcreate: 64 clients\t{figure}\t{value}\t{better}\t{cpu}\n")
    }

    #[test]
    fn figure_lines_parse_back() {
        let run = Run {
            cpu: crate::util::Cpu {
                server: Some(Duration::from_millis(70)),
                bench: None,
            },
            lat: vec![Duration::from_millis(2); 1000],
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(2),
            ..Run::default()
        };
        let figures = of_run("create: 64 clients", &run);
        let names: Vec<&str> = figures.iter().map(|f| f.figure.as_str()).collect();
        assert_eq!(names, ["ops/s", "p99 ms", "errors"]);
        assert_eq!(
            figures[0].line(),
            "create: 64 clients\tops/s\t500\thigher\t70.000"
        );
        let text: String = figures
            .iter()
            .map(|f| format!("b\t3\t{}\n", f.line()))
            .collect();
        let back = parse(&format!("# a comment\n\n{text}")).expect("parses");
        assert_eq!(back.len(), 3);
        assert_eq!((back[1].side, back[1].round), (Side::B, 3));
        assert_eq!(back[1].figure, figures[1]);
        assert_eq!(back[1].figure.value, 2.0);
        assert_eq!(back[2].figure.cpu_us, Some(70.0));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for bad in [
            "a\t1\tw\tops/s\t12\thigher",
            "c\t1\tw\tops/s\t12\thigher\t-",
            "a\tx\tw\tops/s\t12\thigher\t-",
            "a\t1\tw\tops/s\tNaN\thigher\t-",
            "a\t1\tw\tops/s\t12\tup\t-",
            "a\t1\tw\tops/s\t12\thigher\tlots",
        ] {
            let err = parse(&format!("\n{bad}\n")).expect_err(bad);
            assert!(err.starts_with("line 2: "), "{err}");
        }
    }

    #[test]
    fn watch_figures_by_mode() {
        let w = WatchFigures {
            watchers: 10,
            writes: 100,
            delivered: 1000,
            span: Duration::from_secs(2),
            delays: vec![Duration::from_millis(1); 1000],
            cpu: crate::util::Cpu {
                server: Some(Duration::from_millis(5)),
                bench: None,
            },
            ..WatchFigures::default()
        };
        let names = |fs: Vec<Figure>| -> Vec<String> { fs.into_iter().map(|f| f.figure).collect() };
        assert_eq!(
            names(of_watch("w", &w, false)),
            ["events/s, closed loop", "missing, closed loop"]
        );
        assert_eq!(
            names(of_watch("w", &w, true)),
            [
                "events/s, closed loop",
                "p99 ms, closed loop",
                "missing, closed loop"
            ]
        );
        let closed = of_watch("w", &w, false);
        assert_eq!((closed[0].value, closed[0].cpu_us), (500.0, Some(5.0)));
        let paced = WatchFigures {
            rate: Some(100.0),
            ..w
        };
        assert_eq!(
            names(of_watch("w", &paced, false)),
            ["p99 ms, paced 100/s", "missing, paced 100/s"]
        );
    }

    /// Five rounds of ops/s and p99 on each side.
    fn five_rounds(a: [f64; 5], b: [f64; 5]) -> Vec<Sample> {
        let mut text = String::new();
        for r in 0..5 {
            text += &line("a", r + 1, "ops/s", a[r as usize], "higher", "70");
            text += &line("b", r + 1, "ops/s", b[r as usize], "higher", "77");
            text += &line("a", r + 1, "p99 ms", 10.0, "lower", "70");
            text += &line("b", r + 1, "p99 ms", b[r as usize] / 100.0, "lower", "77");
        }
        parse(&text).expect("parses")
    }

    #[test]
    fn rounds_are_compared_in_pairs_in_the_worse_direction_only() {
        // Each round's B/A: 0.96 0.96 0.96 0.60 1.40; median 0.96 (-4 %):
        // pass at 5 %, fail at 3 %. The medians of the sides (100, 96)
        // give the same ratio here.
        let samples = five_rounds(
            [100.0, 50.0, 150.0, 100.0, 100.0],
            [96.0, 48.0, 144.0, 60.0, 140.0],
        );
        let r = rows(&samples);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].values[1], [96.0, 48.0, 144.0, 60.0, 140.0]);
        assert!((r[0].ratio().expect("ratio") - 0.96).abs() < 1e-12);
        assert!((r[0].paired().expect("paired") - 0.96).abs() < 1e-12);
        assert_eq!(r[0].verdict(0.05, 5), Verdict::Pass);
        assert_eq!(r[0].verdict(0.03, 5), Verdict::Regression);
        // p99: A 10 ms, B 0.96 ms: far better, which passes.
        assert_eq!(r[1].verdict(0.05, 5), Verdict::Pass);
        // Throughput up, latency up by 6 %: only the latency fails.
        let samples = five_rounds([100.0; 5], [1060.0; 5]);
        let r = rows(&samples);
        assert_eq!(r[0].verdict(0.05, 5), Verdict::Pass);
        assert_eq!(r[1].verdict(0.05, 5), Verdict::Regression);
        assert_eq!(r[1].verdict(0.07, 5), Verdict::Pass);
    }

    #[test]
    fn a_phase_shared_by_a_round_cancels_in_its_ratio() {
        // The machine is slow (60) in rounds 2 and 4 for both sides, and
        // turns slow halfway through round 3, under B only. The medians of
        // the sides say B is 40 % slower; four rounds of five say equal.
        let samples = five_rounds(
            [100.0, 60.0, 100.0, 60.0, 100.0],
            [100.0, 60.0, 60.0, 60.0, 100.0],
        );
        let r = rows(&samples);
        assert!((r[0].ratio().expect("ratio") - 0.6).abs() < 1e-12);
        assert!((r[0].paired().expect("paired") - 1.0).abs() < 1e-12);
        assert_eq!(r[0].verdict(0.05, 5), Verdict::Pass);
        // Rounds are matched by number, not by position.
        let text = line("b", 2, "ops/s", 50.0, "higher", "-")
            + &line("a", 1, "ops/s", 100.0, "higher", "-")
            + &line("b", 1, "ops/s", 100.0, "higher", "-")
            + &line("a", 2, "ops/s", 50.0, "higher", "-");
        let r = rows(&parse(&text).expect("parses"));
        assert_eq!(r[0].paired(), Some(1.0));
    }

    #[test]
    fn counts_must_stay_zero_and_rounds_complete() {
        let text = line("a", 1, "errors", 3.0, "zero", "-")
            + &line("b", 1, "errors", 0.0, "zero", "-")
            + &line("a", 2, "errors", 0.0, "zero", "-")
            + &line("b", 2, "errors", 1.0, "zero", "-");
        let r = rows(&parse(&text).expect("parses"));
        assert_eq!(r[0].verdict(0.05, 2), Verdict::Regression);
        // A failed run leaves a side short of rounds.
        let text = line("a", 1, "ops/s", 10.0, "higher", "-")
            + &line("b", 1, "ops/s", 10.0, "higher", "-")
            + &line("a", 2, "ops/s", 10.0, "higher", "-");
        let r = rows(&parse(&text).expect("parses"));
        assert_eq!(r[0].verdict(0.05, 2), Verdict::Incomplete);
        assert_eq!(r[0].verdict(0.05, 1), Verdict::Pass);
    }

    #[test]
    fn the_report_has_a_row_per_figure_and_a_summary() {
        let samples = five_rounds([100.0; 5], [90.0, 91.0, 92.0, 93.0, 94.0]);
        let (text, failed) = render(&samples, ["baseline", "current"], 5.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("workload"), "{text}");
        assert!(lines[0].contains("current/baseline"), "{text}");
        assert!(lines[1].contains("ops/s"), "{text}");
        assert!(lines[1].contains("100 [100-100]"), "{text}");
        assert!(lines[1].contains("92.0 [90.0-94.0]"), "{text}");
        assert!(lines[1].contains("0.920x"), "{text}");
        assert!(lines[1].contains("0.920x  0.920x"), "{text}");
        assert!(lines[1].contains("70.0 -> 77.0 (1.10x)"), "{text}");
        assert!(lines[1].ends_with("REGRESSION"), "{text}");
        assert!(lines[2].ends_with("PASS"), "{text}");
        assert_eq!(failed, 1);
        assert!(
            lines[3].starts_with("guard: REGRESSION: 1 of 2 figures"),
            "{text}"
        );
        assert!(
            lines[3].contains("create: 64 clients ops/s (REGRESSION)"),
            "{text}"
        );
        let (text, failed) = render(&five_rounds([100.0; 5], [100.0; 5]), ["A", "B"], 5.0);
        assert_eq!(failed, 0);
        assert!(text.ends_with("guard: PASS: all 2 figures of B within 5 % of A (paired medians of 5 rounds; a better figure always passes)\n"), "{text}");
        // Only a side short of rounds: incomplete, which fails too.
        let mut short = five_rounds([100.0; 5], [100.0; 5]);
        short.retain(|s| s.side == Side::A || s.round < 5);
        let (text, failed) = render(&short, ["A", "B"], 5.0);
        assert_eq!(failed, 2);
        assert!(
            text.contains("\nguard: INCOMPLETE: 2 of 2 figures"),
            "{text}"
        );
    }

    #[test]
    fn numbers_keep_about_three_digits() {
        assert_eq!(num(17573.4), "17573");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.0), "0.00");
        assert_eq!(num(92.0), "92.0");
        assert_eq!(spread(&[], num), "-");
        assert_eq!(spread(&[2.5, 1.5, 9.0], num), "2.50 [1.50-9.00]");
        assert_eq!(spread(&[0.0, 2.0, 0.0], count), "0 [0-2]");
    }
}
