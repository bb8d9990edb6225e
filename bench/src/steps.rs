//! `steps`: the CPU cost of each step a create takes inside the server,
//! timed in-process on the bench's cell (no HTTP, no disk): decoding the
//! JSON body into the internal model, validating it, encoding the stored
//! record, and rendering the response (the v1beta1 value, then its JSON).
//! These are the parts of a create's server CPU that do not depend on the
//! network or the disk; `perf` tells the rest.

use std::hint::black_box;
use std::time::{Duration, Instant};

use modelhub::api::v1beta1;
use modelhub::model::{AnyObject, Kind, Path, validate_object};
use modelhub::store::codec;

use crate::util;

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    /// Bytes of the cell's JSON body.
    pub body_len: usize,
    /// Bytes of its stored record.
    pub record_len: usize,
    /// Each step, in the order a create takes them.
    pub steps: Vec<Step>,
}

/// One step's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What was timed.
    pub name: &'static str,
    /// Median time per call over the rounds.
    pub per_call: Duration,
}

/// The bench's cell as the server holds it after a create: decoded, placed
/// under `bench/s/t`, validated, with the server's metadata filled in.
fn stored(body: &[u8]) -> (AnyObject, Path) {
    let path = Path::new(
        Kind::Cell,
        ["bench", "s", "t", "c-000123"].map(String::from).to_vec(),
    );
    let mut obj = v1beta1::decode(Kind::Cell, v1beta1::Format::Json, body)
        .expect("the bench's cell decodes")
        .object;
    obj.place(&path).expect("placed");
    validate_object(&mut obj).expect("valid");
    let meta = obj.meta_mut();
    meta.uid = "0b4f6c1e-5d9a-4e0f-9a57-0d2c3f8e9b11".into();
    meta.resource_version = 123_456;
    meta.generation = 1;
    meta.creation_timestamp = 1_764_400_000_000_000_000;
    (obj, path)
}

/// Median of `rounds` timings of `calls` calls of `f`, per call.
fn time(rounds: usize, calls: u32, mut f: impl FnMut()) -> Duration {
    let mut each: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed() / calls
        })
        .collect();
    each.sort();
    each[each.len() / 2]
}

/// Times every step: `calls` calls per round, `rounds` rounds each.
pub fn run(rounds: usize, calls: u32) -> Steps {
    let body = serde_json::to_vec(&util::cell("c-000123")).expect("json");
    let (obj, path) = stored(&body);
    let rounds = rounds.max(1);
    let step = |name, per_call| Step { name, per_call };
    let steps = vec![
        step(
            "decode",
            time(rounds, calls, || {
                black_box(v1beta1::decode(
                    Kind::Cell,
                    v1beta1::Format::Json,
                    black_box(&body),
                ))
                .expect("decodes");
            }),
        ),
        step(
            "clone",
            time(rounds, calls, || {
                black_box(black_box(&obj).clone());
            }),
        ),
        step(
            "clone+validate",
            time(rounds, calls, || {
                let mut o = black_box(&obj).clone();
                o.place(&path).expect("placed");
                validate_object(&mut o).expect("valid");
                black_box(o);
            }),
        ),
        step(
            "record",
            time(rounds, calls, || {
                black_box(codec::encode(black_box(&obj)));
            }),
        ),
        step(
            "v1beta1 value",
            time(rounds, calls, || {
                black_box(v1beta1::encode(black_box(&obj)));
            }),
        ),
        step(
            "render",
            time(rounds, calls, || {
                let mut out = Vec::with_capacity(4096);
                serde_json::to_writer(&mut out, &v1beta1::encode(black_box(&obj)))
                    .expect("renders");
                black_box(out);
            }),
        ),
    ];
    Steps {
        body_len: body.len(),
        record_len: codec::encode(&obj).len(),
        steps,
    }
}

/// Prints the steps.
pub fn print(m: &Steps) {
    println!(
        "== steps of a create, in-process: the bench's cell ({} bytes of JSON, a {}-byte record)",
        m.body_len, m.record_len
    );
    for s in &m.steps {
        println!(
            "  {:<16} {:>8.2} us",
            s.name,
            s.per_call.as_secs_f64() * 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_runs_on_the_bench_cell() {
        let m = run(1, 2);
        let names: Vec<_> = m.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "decode",
                "clone",
                "clone+validate",
                "record",
                "v1beta1 value",
                "render"
            ]
        );
        assert!(
            m.body_len > 1400 && m.record_len > 1000,
            "{} / {}",
            m.body_len,
            m.record_len
        );
    }

    #[test]
    fn the_rendered_cell_carries_what_was_sent() {
        let body = serde_json::to_vec(&util::cell("c-000123")).expect("json");
        let (obj, _) = stored(&body);
        let rendered = serde_json::to_value(v1beta1::encode(&obj)).expect("renders");
        let sent = util::cell("c-000123");
        assert_eq!(
            rendered["spec"]["containers"][1]["args"],
            sent["spec"]["containers"][1]["args"]
        );
        assert_eq!(rendered["metadata"]["labels"], sent["metadata"]["labels"]);
        assert_eq!(rendered["metadata"]["resourceVersion"], "123456");
    }
}
