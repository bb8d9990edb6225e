//! The example reconciler (`examples/reconciler.rs`) against the real
//! server: it takes each cell on with its finalizer and "runs" it (a file
//! per cell); killed in the middle of a teardown and started again, it
//! finishes the job, leaving no file and no finalizer behind.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CELLS: &str = "/realms/r/spaces/s/stacks/t/cells";
const FINALIZER: &str = "example.com/reconciler";

/// The example's binary, built by `cargo test` with the other targets.
fn example() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_modelhub"));
    let path = bin.parent()?.join("examples").join("reconciler");
    path.exists().then_some(path)
}

/// A running reconciler and what it logged.
struct Reconciler {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Reconciler {
    fn start(bin: &PathBuf, s: &Server, dir: &std::path::Path, teardown_ms: u64) -> Reconciler {
        let mut child = Command::new(bin)
            .arg(&s.base)
            .arg(dir)
            .env("RECONCILER_TEARDOWN_MS", teardown_ms.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the reconciler");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Reconciler { child, log }
    }

    fn logged(&self, what: &str) -> bool {
        self.log.lock().unwrap().contains(what)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.kill();
    }
}

#[track_caller]
fn within(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finalizers(doc: &Value) -> Value {
    doc["metadata"]["finalizers"].clone()
}

#[test]
fn the_reconciler_finishes_a_teardown_it_was_killed_in() {
    let Some(bin) = example() else {
        eprintln!(
            "skipped: the example reconciler is not built (cargo test builds it with the other \
             targets; `cargo test --test reconciler` alone does not)"
        );
        return;
    };
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for name in ["a", "b"] {
        create_named(&c, &s, CELLS, name);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(format!("r_s_t_{name}"));
    let mut first = Reconciler::start(&bin, &s, dir.path(), 3_000);
    within(
        "the reconciler takes both cells on and runs them",
        20,
        || {
            ["a", "b"].iter().all(|n| {
                let (_, doc) = c.get(&s.api(&format!("{CELLS}/{n}")));
                finalizers(&doc) == json!([FINALIZER])
                    && doc["status"]["state"] == "Ready"
                    && file(n).exists()
            })
        },
    );

    let (st, marked) = c.delete(&s.api(&format!("{CELLS}/a")));
    assert_eq!(st, 202, "{marked}");
    within("the teardown starts", 20, || first.logged("tearing down"));
    first.kill();
    let (st, doc) = c.get(&s.api(&format!("{CELLS}/a")));
    assert_eq!(st, 200, "killed mid-teardown, the cell waits: {doc}");
    assert_eq!(finalizers(&doc), json!([FINALIZER]));
    assert!(file("a").exists(), "the teardown did not get that far");

    let second = Reconciler::start(&bin, &s, dir.path(), 0);
    within("the restarted reconciler finishes the teardown", 20, || {
        c.get(&s.api(&format!("{CELLS}/a"))).0 == 404
    });
    assert!(!file("a").exists(), "no leftover side effect");
    assert!(file("b").exists(), "the other cell still runs");
    let (st, doc) = c.get(&s.api(&format!("{CELLS}/b")));
    assert_eq!((st, finalizers(&doc)), (200, json!([FINALIZER])));

    assert_eq!(c.delete(&s.api(&format!("{CELLS}/b"))).0, 202);
    within("b goes too", 20, || {
        c.get(&s.api(&format!("{CELLS}/b"))).0 == 404
    });
    assert!(!file("b").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(second.logged("finalizer removed"));
}
