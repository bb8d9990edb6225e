//! The `modelhub` command line (apply, get, delete, watch) run as a
//! process against a real server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// What a finished command printed, and its exit code.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        assert!(self.stderr.is_empty(), "unexpected stderr: {self:?}");
        self
    }

    #[track_caller]
    fn failed(self) -> Run {
        assert_eq!(self.code, 1, "expected exit code 1: {self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        self
    }
}

fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelhub"));
    cmd.env_remove("MODELHUB_SERVER").env_remove("RUST_LOG");
    cmd
}

/// Runs `modelhub ARGS --server BASE` with `stdin` as its input.
fn run_with(s: &Server, args: &[&str], stdin: &str) -> Run {
    let mut child = command()
        .args(args)
        .args(["--server", &s.base])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelhub");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn run(s: &Server, args: &[&str]) -> Run {
    run_with(s, args, "")
}

fn example_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

const CELL: &str = "test-realm/test-space/test-stack/test-cell";
const CELL_URL: &str = "/realms/test-realm/spaces/test-space/stacks/test-stack/cells/test-cell";

#[test]
fn apply_from_a_file_and_from_stdin() {
    let s = Server::start();
    let c = Client::default();
    let file = example_path("multi-resource.yaml");

    let r = run(&s, &["apply", "-f", &file]).ok();
    assert_eq!(
        r.lines(),
        [
            "realm/multi-realm created",
            "space/multi-realm/multi-space created",
            "stack/multi-realm/multi-space/multi-stack created",
        ]
    );
    assert_eq!(
        c.get(&s.api("/realms/multi-realm/spaces/multi-space/stacks/multi-stack"))
            .0,
        200
    );
    let r = run(&s, &["apply", "--filename", &file]).ok();
    assert_eq!(
        r.lines(),
        [
            "realm/multi-realm unchanged",
            "space/multi-realm/multi-space unchanged",
            "stack/multi-realm/multi-space/multi-stack unchanged",
        ]
    );

    // stdin, YAML: a hierarchy and its cell.
    let r = run_with(&s, &["apply", "-f", "-"], &hierarchy_with_cell()).ok();
    assert_eq!(
        r.lines(),
        [
            "realm/test-realm created",
            "space/test-realm/test-space created",
            "stack/test-realm/test-space/test-stack created",
            &format!("cell/{CELL} created"),
        ]
    );
    let (st, cell) = c.get(&s.api(CELL_URL));
    assert_eq!(st, 200);
    assert_eq!(cell["spec"]["containers"].as_array().unwrap().len(), 3);

    // stdin, JSON (detected by its first character); a changed spec.
    let body = json!([{
        "apiVersion": "v1beta1", "kind": "Realm",
        "metadata": {"name": "multi-realm"}, "spec": {"namespace": "other-ns"}
    }, {
        "kind": "Space", "metadata": {"name": "json-space"}, "spec": {"realmId": "multi-realm"}
    }]);
    let r = run_with(&s, &["apply", "-f", "-"], &format!("\n  {body}")).ok();
    assert_eq!(
        r.lines(),
        [
            "realm/multi-realm configured",
            "space/multi-realm/json-space created"
        ]
    );
    let (_, realm) = c.get(&s.api("/realms/multi-realm"));
    assert_eq!(realm["spec"]["namespace"], "other-ns");
    assert_eq!(generation(&realm), 2);

    // --dry-run reports and writes nothing.
    let before = revision(&c, &s);
    let r = run_with(
        &s,
        &["apply", "-f", "-", "--dry-run"],
        "kind: Realm\nmetadata: {name: dry}\n---\nkind: Space\nmetadata: {name: s}\nspec: {realmId: dry}\n",
    )
    .ok();
    assert_eq!(
        r.lines(),
        [
            "realm/dry created (dry run)",
            "space/dry/s created (dry run)"
        ]
    );
    assert_eq!(c.get(&s.api("/realms/dry")).0, 404);
    assert_eq!(revision(&c, &s), before);

    // An invalid document: exit 1, the server's problem on stderr, nothing written.
    let r = run_with(
        &s,
        &["apply", "-f", "-"],
        "kind: Realm\nmetadata: {name: half}\n---\nkind: Cell\nmetadata: {name: c}\n\
         spec: {realmId: half, spaceId: s, stackId: t, containers: [{id: a, tty: {prompt: x}}]}\n",
    )
    .failed();
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr.starts_with(
            "error: 422 Invalid: documents[1]: spec.containers[0].tty: tty is set but the container is not attachable"
        ),
        "{r:?}"
    );
    assert_eq!(c.get(&s.api("/realms/half")).0, 404);
    assert_eq!(revision(&c, &s), before);

    // A missing file and an empty stdin fail before any request.
    let r = run(&s, &["apply", "-f", "/nonexistent/manifest.yaml"]).failed();
    assert!(
        r.stderr.contains("cannot read /nonexistent/manifest.yaml"),
        "{r:?}"
    );
    let r = run_with(&s, &["apply", "-f", "-"], "\n").failed();
    assert!(r.stderr.contains("stdin holds no documents"), "{r:?}");
}

/// The column start offsets of a table line (two or more spaces apart).
fn columns(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    let bytes = line.as_bytes();
    for i in 0..=bytes.len() {
        let gap = i == bytes.len() || (bytes[i] == b' ' && bytes.get(i + 1) == Some(&b' '));
        match (start, gap) {
            (None, false) if bytes[i] != b' ' => start = Some(i),
            (Some(st), true) => {
                out.push((st, &line[st..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[test]
fn get_prints_tables_json_and_yaml() {
    let s = Server::start();
    let c = Client::default();
    run(&s, &["apply", "-f", &example_path("multi-resource.yaml")]).ok();
    run_with(&s, &["apply", "-f", "-"], &hierarchy_with_cell()).ok();
    // A status written by a reconciler, and a spec change (generation 2).
    let (st, b) = c.put_json(
        &s.api(&format!("{CELL_URL}/status")),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "{b}");
    let changed = hierarchy_with_cell().replace("WORKER_MODE=active", "WORKER_MODE=idle");
    run_with(&s, &["apply", "-f", "-"], &changed).ok();

    // Table: header, one row per realm, columns aligned.
    let r = run(&s, &["get", "realms"]).ok();
    let lines = r.lines();
    assert_eq!(lines.len(), 3, "{r:?}");
    let header = columns(lines[0]);
    assert_eq!(
        header.iter().map(|c| c.1).collect::<Vec<_>>(),
        ["NAME", "STATE", "GENERATION", "AGE"]
    );
    for (line, name) in lines[1..].iter().zip(["multi-realm", "test-realm"]) {
        let row = columns(line);
        assert_eq!(row.len(), 4, "{line:?}");
        assert_eq!(
            row.iter().map(|c| c.0).collect::<Vec<_>>(),
            header.iter().map(|c| c.0).collect::<Vec<_>>(),
            "columns not aligned: {r:?}"
        );
        assert_eq!(row[0].1, name);
        assert_eq!(row[1].1, "Pending");
        assert_eq!(row[2].1, "1");
        assert!(
            row[3].1.ends_with('s') && row[3].1[..row[3].1.len() - 1].parse::<u64>().is_ok(),
            "age {:?}",
            row[3].1
        );
    }

    // The cell: Ready, generation 2; named relative to the path given.
    let r = run(&s, &["get", "cells"]).ok();
    let row = columns(r.lines()[1]);
    assert_eq!((row[0].1, row[1].1, row[2].1), (CELL, "Ready", "2"));
    let r = run(&s, &["get", "CELL", "test-realm/test-space"]).ok();
    assert_eq!(columns(r.lines()[1])[0].1, "test-stack/test-cell");
    let r = run(&s, &["get", "cell", CELL, "-o", "table"]).ok();
    assert_eq!(r.lines().len(), 2);
    assert_eq!(columns(r.lines()[1])[0].1, "test-cell");
    let r = run(&s, &["get", "Stacks", "multi-realm"]).ok();
    assert_eq!(columns(r.lines()[1])[0].1, "multi-space/multi-stack");

    // JSON: the stored document, and list documents.
    let (_, stored) = c.get(&s.api(CELL_URL));
    let r = run(&s, &["get", "cell", CELL, "-o", "json"]).ok();
    let doc: Value = serde_json::from_str(&r.stdout).expect("JSON output");
    assert_eq!(doc, stored);
    assert_eq!(doc["spec"]["containers"][1]["env"][0], "WORKER_MODE=idle");
    let r = run(&s, &["get", "spaces", "-o", "json"]).ok();
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list["kind"], "SpaceList");
    assert_eq!(item_names(&list), ["multi-space", "test-space"]);
    let r = run(&s, &["get", "spaces", "test-realm", "--output", "json"]).ok();
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(item_names(&list), ["test-space"]);

    // YAML: the same document.
    let r = run(&s, &["get", "cell", CELL, "-o", "yaml"]).ok();
    assert!(
        r.stdout.starts_with("apiVersion: v1beta1\nkind: Cell\n"),
        "{r:?}"
    );
    assert_eq!(yaml_json(&r.stdout), stored);
    let r = run(&s, &["get", "realms", "-o", "yaml"]).ok();
    let list = yaml_json(&r.stdout);
    assert_eq!(list["kind"], "RealmList");
    assert_eq!(item_names(&list), ["multi-realm", "test-realm"]);

    // Nothing found is not an error.
    let r = run(&s, &["get", "containers"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.is_empty());
    assert_eq!(r.stderr.trim(), "No containers found.");

    // Errors: the server's problem, or the command line's.
    let r = run(
        &s,
        &["get", "cell", "test-realm/test-space/test-stack/nope"],
    )
    .failed();
    assert_eq!(
        r.stderr.trim(),
        "error: 404 NotFound: Cell test-realm/test-space/test-stack/nope not found"
    );
    assert!(r.stdout.is_empty());
    let r = run(&s, &["get", "pods"]).failed();
    assert!(r.stderr.contains("unknown kind \"pods\""), "{r:?}");
    let r = run(&s, &["get", "realm", "a/b"]).failed();
    assert!(r.stderr.contains("at most 1 names"), "{r:?}");
    let r = run(&s, &["get", "realms", "-o", "xml"]);
    assert_eq!(r.code, 2, "clap rejects the value: {r:?}");
}

#[test]
fn delete_with_and_without_cascade() {
    let s = Server::start();
    let c = Client::default();
    run_with(&s, &["apply", "-f", "-"], &hierarchy_with_cell()).ok();
    run(&s, &["apply", "-f", &example_path("multi-resource.yaml")]).ok();
    let before = revision(&c, &s);

    // A realm with children: 409 with the server's detail, nothing deleted.
    let r = run(&s, &["delete", "realm", "test-realm"]).failed();
    assert!(r.stdout.is_empty(), "{r:?}");
    let first = r.stderr.lines().next().unwrap();
    assert!(first.starts_with("error: 409 HasChildren: "), "{r:?}");
    assert!(first.contains("test-realm"), "{r:?}");
    assert!(r.stderr.contains("hint: add --cascade"), "{r:?}");
    assert_eq!(c.get(&s.api(CELL_URL)).0, 200);
    assert_eq!(revision(&c, &s), before);

    // A leaf: deleted without --cascade.
    let r = run(
        &s,
        &["delete", "stacks", "multi-realm/multi-space/multi-stack"],
    )
    .ok();
    assert_eq!(
        r.lines(),
        ["stack/multi-realm/multi-space/multi-stack deleted"]
    );
    assert_eq!(
        c.get(&s.api("/realms/multi-realm/spaces/multi-space/stacks/multi-stack"))
            .0,
        404
    );

    // --cascade removes the subtree.
    let r = run(&s, &["delete", "Realm", "test-realm", "--cascade"]).ok();
    assert_eq!(r.lines(), ["realm/test-realm deleted"]);
    for url in [
        "/realms/test-realm",
        "/realms/test-realm/spaces/test-space",
        CELL_URL,
    ] {
        assert_eq!(c.get(&s.api(url)).0, 404, "{url} survived the cascade");
    }
    // Four objects removed (one change each), plus the stack earlier.
    assert_changes_since(&c, &s, before, 5, "a stack, then a cascade of four");

    // Errors.
    let r = run(&s, &["delete", "realm", "test-realm"]).failed();
    assert_eq!(
        r.stderr.trim(),
        "error: 404 NotFound: Realm test-realm not found"
    );
    let r = run(&s, &["delete", "cell", "multi-realm"]).failed();
    assert!(
        r.stderr
            .contains("delete needs the full path of the cell: REALM/SPACE/STACK/CELL"),
        "{r:?}"
    );
    assert_eq!(c.get(&s.api("/realms/multi-realm")).0, 200);
}

/// A running `modelhub watch` and its stdout lines.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(s: &Server, args: &[&str]) -> Watch {
        let mut child = command()
            .arg("watch")
            .args(args)
            .args(["--server", &s.base])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn modelhub watch");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    #[track_caller]
    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a watch line within 20 s")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_prints_one_line_per_event() {
    let s = Server::start();
    let c = Client::default();
    run(&s, &["apply", "-f", &example_path("multi-resource.yaml")]).ok();
    let stack_rv = rv(&c
        .get(&s.api("/realms/multi-realm/spaces/multi-space/stacks/multi-stack"))
        .1);

    let mut w = Watch::start(&s, &["stacks", "--realm", "multi-realm"]);
    // The snapshot first: the watch is connected once this arrives.
    assert_eq!(
        w.next(),
        format!("ADDED stack multi-realm/multi-space/multi-stack rv={stack_rv}")
    );

    let stacks = s.api("/realms/multi-realm/spaces/multi-space/stacks");
    let (st, created) = c.post_json(&stacks, &json!({"metadata": {"name": "live"}}));
    assert_eq!(st, 201, "{created}");
    assert_eq!(
        w.next(),
        format!(
            "ADDED stack multi-realm/multi-space/live rv={}",
            rv(&created)
        )
    );

    // Out of scope (another kind, another realm): no line.
    run_with(&s, &["apply", "-f", "-"], &hierarchy_with_cell()).ok();

    let (st, patched) = c.patch(
        &format!("{stacks}/live"),
        &json!({"metadata": {"labels": {"v": "2"}}}),
    );
    assert_eq!(st, 200, "{patched}");
    assert_eq!(
        w.next(),
        format!(
            "MODIFIED stack multi-realm/multi-space/live rv={}",
            rv(&patched)
        )
    );
    let before_delete = revision(&c, &s);
    let r = run(&s, &["delete", "stack", "multi-realm/multi-space/live"]).ok();
    assert_eq!(r.lines(), ["stack/multi-realm/multi-space/live deleted"]);
    // The deletion's revision (on etcd not the list position after it).
    let deleted = events_since(&c, &s, before_delete);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    let deleted_at = event_rv(&deleted[0]);
    assert_eq!(
        w.next(),
        format!("DELETED stack multi-realm/multi-space/live rv={deleted_at}")
    );

    // Still running until it is stopped.
    assert!(w.child.try_wait().unwrap().is_none(), "watch exited");
    w.child.kill().unwrap();
    w.child.wait().unwrap();

    // All kinds, narrowed to a cell's stack.
    let w = Watch::start(
        &s,
        &[
            "--realm",
            "test-realm",
            "--space",
            "test-space",
            "--stack",
            "test-stack",
        ],
    );
    let first = w.next();
    assert!(
        first.starts_with("ADDED stack test-realm/test-space/test-stack rv="),
        "{first}"
    );
    assert!(w.next().starts_with(&format!("ADDED cell {CELL} rv=")),);
    drop(w);

    // A scope with a gap is refused before connecting.
    let r = run(&s, &["watch", "cells", "--space", "web"]).failed();
    assert_eq!(r.stderr.trim(), "error: --space needs --realm too");
}

#[test]
fn watch_goes_on_across_a_server_restart() {
    let mut s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "before");
    let mut w = Watch::start(&s, &["realms"]);
    let first = w.next();
    assert!(first.starts_with("ADDED realm before rv="), "{first}");
    s.restart();
    create_realm(&c, &s, "after");
    let next = w.next();
    assert!(next.starts_with("ADDED realm after rv="), "{next}");
    let (st, _) = c.delete(&s.api("/realms/before"));
    assert_eq!(st, 200);
    let gone = w.next();
    assert!(gone.starts_with("DELETED realm before rv="), "{gone}");
    assert!(w.child.try_wait().unwrap().is_none(), "watch exited");
    w.child.kill().unwrap();
    w.child.wait().unwrap();
}

#[test]
fn server_address_and_connection_failures() {
    let s = Server::start();
    let c = Client::default();
    run(&s, &["apply", "-f", &example_path("realm.yaml")]).ok();

    // MODELHUB_SERVER instead of --server (host:port is enough).
    let out = command()
        .args(["get", "realms"])
        .env("MODELHUB_SERVER", s.base.trim_start_matches("http://"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("test-realm"));

    // Nobody listening: exit 1 with a clear message.
    for args in [
        vec!["get", "realms"],
        vec!["delete", "realm", "test-realm"],
        vec!["apply", "-f", &example_path("realm.yaml")],
        vec!["watch"],
    ] {
        let out = command()
            .args(&args)
            .args(["--server", "http://127.0.0.1:1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot connect to the server at http://127.0.0.1:1: "),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(c.get(&s.api("/realms/test-realm")).0, 200);
}

#[test]
fn serve_refuses_zero_intervals() {
    for flag in ["--bookmark-interval", "--compaction-interval"] {
        let out = command()
            .args(["serve", "--listen", "127.0.0.1:0", flag, "0s"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("must be more than zero"),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn delete_of_an_object_with_finalizers_says_what_it_waits_for() {
    let s = Server::start();
    let c = Client::default();
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "fin", "finalizers": ["kukeon.io/runtime"]}}),
    );
    assert_eq!(st, 201, "{b}");
    let r = run(&s, &["delete", "realm", "fin"]).ok();
    assert_eq!(
        r.lines(),
        ["realm/fin marked for deletion, waiting for: kukeon.io/runtime"]
    );
    let r = run(&s, &["get", "realms"]).ok();
    let row = r.lines()[1];
    assert_eq!(columns(row)[1].1, "Terminating", "{row:?}");
    // --wait returns once the controller removed its finalizer.
    let url = s.api("/realms/fin/finalizers");
    let remover = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(600));
        let (st, b) = Client::default().put_json(&url, &json!({}));
        assert_eq!(st, 200, "{b}");
    });
    let r = run(&s, &["delete", "realm", "fin", "--wait"]).ok();
    remover.join().unwrap();
    assert_eq!(
        r.lines(),
        [
            "realm/fin marked for deletion, waiting for: kukeon.io/runtime",
            "realm/fin deleted"
        ]
    );
    let (st, _) = c.get(&s.api("/realms/fin"));
    assert_eq!(st, 404);
}
