//! Online backup and offline restore, against the real server and the
//! real `modelhub backup` and `modelhub restore` commands: a backup taken
//! under concurrent writes is exactly the store at its revision; a restored
//! server serves every object as it was, at a revision jumped ahead, with
//! the old history gone (410); a cut or damaged backup and an existing
//! database are refused, with nothing created.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use modelhub::api::v1beta1::backup::decode_line;
use modelhub::api::v1beta1::{decode_document, paths::object_path};
use serde_json::{Value, json};

const STACK: &str = "/realms/r/spaces/s/stacks/t";
const BUMP: u64 = 1_000_000_000;

/// Runs `modelhub ARGS`.
fn modelhub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(args)
        .output()
        .expect("run modelhub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `modelhub backup --server BASE FILE`, which must succeed.
fn backup(s: &Server, file: &Path) -> String {
    let out = modelhub(&["backup", "--server", &s.base, &file.to_string_lossy()]);
    assert!(out.status.success(), "backup failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `modelhub restore --data DATA FILE`.
fn restore(data: &Path, file: &Path) -> Output {
    modelhub(&[
        "restore",
        "--data",
        &data.to_string_lossy(),
        &file.to_string_lossy(),
    ])
}

/// A backup file's header, its object lines (by path) and its trailer.
struct Backup {
    header: Value,
    objects: BTreeMap<String, Value>,
    trailer: Value,
}

fn read_backup(file: &Path) -> Backup {
    let bytes = std::fs::read(file).unwrap();
    let lines: Vec<&[u8]> = bytes
        .strip_suffix(b"\n")
        .unwrap()
        .split(|b| *b == b'\n')
        .collect();
    let parse = |l: &[u8]| serde_json::from_slice::<Value>(l).unwrap();
    let mut objects = BTreeMap::new();
    for line in &lines[1..lines.len() - 1] {
        let path = decode_line(line).unwrap().path().to_string();
        assert!(objects.insert(path, parse(line)).is_none(), "a path twice");
    }
    Backup {
        header: parse(lines[0]),
        objects,
        trailer: parse(lines[lines.len() - 1]),
    }
}

fn path_of(doc: &Value) -> String {
    decode_document(doc.clone()).unwrap().path().to_string()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Creates the realm `r`, space `s`, stack `t` and `cells` cells (the
/// first with `containers` containers) with `/apply`, a few hundred
/// documents per request.
fn seed(c: &Client, s: &Server, cells: usize, containers: usize) {
    let mut docs = vec![
        json!({"kind": "Realm", "metadata": {"name": "r", "labels": {"team": "a"}}}),
        json!({"kind": "Space", "metadata": {"name": "s"}, "spec": {"realmId": "r"}}),
        json!({"kind": "Stack", "metadata": {"name": "t"}, "spec": {"realmId": "r", "spaceId": "s"}}),
    ];
    for i in 0..cells {
        docs.push(json!({
            "kind": "Cell",
            "metadata": {"name": format!("c{i}"), "labels": {"n": i.to_string()}},
            "spec": {"realmId": "r", "spaceId": "s", "stackId": "t", "autoDelete": i % 2 == 0}
        }));
    }
    for i in 0..containers {
        docs.push(json!({
            "kind": "Container",
            "metadata": {"name": format!("k{i}")},
            "spec": {"realmId": "r", "spaceId": "s", "stackId": "t", "cellId": "c0",
                     "image": "busybox", "env": [format!("I={i}")]}
        }));
    }
    for chunk in docs.chunks(500) {
        let (st, body) = c.post_json(&s.api("/apply"), &Value::Array(chunk.to_vec()));
        assert_eq!(st, 200, "{body}");
    }
}

/// One writer's work until `stop`: new cells, label patches, status writes
/// and deletes of its own cells, each acknowledged write counted in `done`.
fn write_until(s: &Server, thread: usize, cells: usize, stop: &AtomicBool, done: &AtomicU64) {
    let c = Client::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let own = format!("{STACK}/cells/w{thread}-{i}");
        let seeded = format!("{STACK}/cells/c{}", (i * 7 + thread * 13) % cells);
        let (st, body) = match i % 4 {
            0 => c.post_json(
                &s.api(&format!("{STACK}/cells")),
                &json!({"metadata": {"name": format!("w{thread}-{i}")}}),
            ),
            1 => c.patch(
                &s.api(&seeded),
                &json!({"metadata": {"labels": {"w": format!("{thread}-{i}")}}}),
            ),
            2 => c.patch(
                &s.api(&format!("{seeded}/status")),
                &json!({"status": {"state": if i % 8 == 2 { "Ready" } else { "Stopped" }}}),
            ),
            _ => c.delete(&s.api(&format!("{STACK}/cells/w{thread}-{}", i - 3))),
        };
        assert!(st == 200 || st == 201, "{own}: {st} {body}");
        done.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

/// The store's state at `revision`, replayed from its watch history (every
/// event from revision 1 on, read until `current`).
fn state_at(s: &Server, revision: u64, current: u64) -> BTreeMap<String, Value> {
    let http = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap();
    let resp = http
        .get(s.api("/watch?resourceVersion=0&timeoutSeconds=60"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut state = BTreeMap::new();
    let mut last = 0;
    for line in BufReader::new(resp).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let kind = event["type"].as_str().unwrap().to_string();
        if kind == "BOOKMARK" {
            continue;
        }
        let rv = event_rv(&event);
        assert_eq!(rv, last + 1, "history is gap-free: {event}");
        last = rv;
        if rv <= revision {
            let object = event["object"].clone();
            match kind.as_str() {
                "ADDED" | "MODIFIED" => {
                    state.insert(path_of(&object), object);
                }
                "DELETED" => {
                    state.remove(&path_of(&object));
                }
                other => panic!("unexpected event {other}: {event}"),
            }
        }
        if rv == current {
            break;
        }
    }
    assert_eq!(last, current, "the history reaches the current revision");
    state
}

/// Every object the server lists now, by path, with the list's revision.
fn listed(c: &Client, s: &Server) -> (BTreeMap<String, Value>, u64) {
    let mut all = BTreeMap::new();
    let mut revisions = Vec::new();
    for kind in ["realms", "spaces", "stacks", "cells", "containers"] {
        // Paged (with a page larger than the store): read from a snapshot
        // of its own, never from the list cache.
        let (st, list) = c.get(&s.api(&format!("/{kind}?limit=1000000")));
        assert_eq!(st, 200, "{list}");
        revisions.push(rv(&list));
        for item in list["items"].as_array().unwrap() {
            all.insert(path_of(item), item.clone());
        }
    }
    revisions.dedup();
    assert_eq!(revisions.len(), 1, "nothing writes while listing");
    (all, revisions[0])
}

#[track_caller]
fn assert_same(got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the same paths"
    );
    for (path, doc) in want {
        assert_eq!(&got[path], doc, "{what}: {path}, field by field");
    }
}

#[test]
fn a_backup_under_concurrent_writes_is_the_store_at_its_revision() {
    const CELLS: usize = 2000;
    let s = Server::start();
    let c = Client::default();
    seed(&c, &s, CELLS, 20);
    let dir = tempfile::tempdir().unwrap();
    let (during, after) = (
        dir.path().join("during.backup"),
        dir.path().join("after.backup"),
    );
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let printed = std::thread::scope(|scope| {
        let (s, stop, writes) = (&s, &stop, &writes);
        let writers: Vec<_> = (0..3)
            .map(|t| scope.spawn(move || write_until(s, t, CELLS, stop, writes)))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let before = writes.load(Ordering::Relaxed);
        let printed = backup(s, &during);
        assert!(
            writes.load(Ordering::Relaxed) > before,
            "writes go on while a backup is taken"
        );
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        printed
    });
    let b = read_backup(&during);
    let revision = u64_of(&b.header["revision"]);
    assert_eq!(b.header["format"], "modelhub-backup");
    assert_eq!(b.header["version"], 1);
    assert_eq!(
        printed.trim(),
        format!(
            "backup of revision {revision}: {} objects written to {}",
            b.objects.len(),
            during.display()
        )
    );
    assert_eq!(u64_of(&b.trailer["objects"]), b.objects.len() as u64);
    assert!(b.objects.len() > CELLS, "{}", b.objects.len());
    for doc in b.objects.values() {
        assert!(rv(doc) <= revision, "{doc}");
    }
    let (now, current) = listed(&c, &s);
    assert!(
        revision > CELLS as u64 && revision < current,
        "the writers wrote before and after the backup: {revision} in (seed, {current})"
    );
    // The backup is exactly the store at its revision, as the history
    // replays it.
    assert_same(
        &b.objects,
        &state_at(&s, revision, current),
        "backup under writes",
    );
    // With the writers stopped: a backup equals a full list.
    backup(&s, &after);
    let b = read_backup(&after);
    assert_eq!(u64_of(&b.header["revision"]), current);
    assert_same(&b.objects, &now, "backup at rest");
}

#[test]
fn a_restored_server_serves_the_backup_at_a_jumped_revision() {
    let mut s = Server::start();
    let c = Client::default();
    seed(&c, &s, 50, 5);
    // History that moves resourceVersions, generations and statuses.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let w = scope.spawn(|| write_until(&s, 0, 50, &stop, &AtomicU64::new(0)));
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.backup");
    backup(&s, &file);
    let b = read_backup(&file);
    let revision = u64_of(&b.header["revision"]);
    s.stop();

    let data = dir.path().join("restored.redb");
    let out = restore(&data, &file);
    assert!(
        out.status.success(),
        "restore failed: {}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "restored {} objects into {} at revision {} (the backup's {revision} + {BUMP})",
            b.objects.len(),
            data.display(),
            revision + BUMP
        )
    );
    assert!(text(&out.stderr).contains("restored"), "progress is logged");
    let r = Server::start_with(&data, &[]);
    // Every object as it was: uid, timestamps, generation, resourceVersion.
    for (path, doc) in &b.objects {
        let url = object_path(&decode_document(doc.clone()).unwrap().path());
        let resp = c.raw(c.http.get(format!("{}{url}", r.base)));
        assert_eq!(resp.status(), 200, "{path}");
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", rv(doc)), "{path}");
        let got: Value = resp.json().unwrap();
        assert_eq!(&got, doc, "{path}");
    }
    let (now, current) = listed(&c, &r);
    assert_same(&now, &b.objects, "restored");
    assert_eq!(current, revision + BUMP);
    // No watch resumes across the restore.
    for from in [1, revision - 1, revision, revision + 1, revision + BUMP - 1] {
        let reply = c.get(&r.api(&format!("/watch?resourceVersion={from}")));
        assert_problem(&reply, 410, "Gone", None);
    }
    let resp = c.raw(c.http.get(r.api(&format!(
        "/watch?resourceVersion={current}&timeoutSeconds=1"
    ))));
    assert_eq!(resp.status(), 200, "the restored revision itself resumes");
    // New writes continue after the jump.
    let (st, realm) = c.post_json(&r.api("/realms"), &json!({"metadata": {"name": "new"}}));
    assert_eq!(st, 201, "{realm}");
    assert_eq!(rv(&realm), revision + BUMP + 1);
    let (st, cell) = c.patch(
        &r.api(&format!("{STACK}/cells/c1")),
        &json!({"metadata": {"labels": {"after": "restore"}}}),
    );
    assert_eq!(st, 200, "{cell}");
    assert_eq!(rv(&cell), revision + BUMP + 2);
}

/// Files in `dir`, by name.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_cut_or_damaged_backup_is_refused_and_nothing_is_created() {
    let s = Server::start();
    let c = Client::default();
    seed(&c, &s, 20, 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.backup");
    backup(&s, &file);
    let bytes = std::fs::read(&file).unwrap();

    let cut = dir.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = dir.path().join("flipped.backup");
    let mut damaged = bytes.clone();
    let mut at = bytes.len() / 2;
    while bytes[at] == b'\n' || bytes[at] ^ 0x01 == b'\n' {
        at += 1;
    }
    damaged[at] ^= 0x01;
    std::fs::write(&flipped, &damaged).unwrap();
    let target = dir.path().join("data");
    std::fs::create_dir(&target).unwrap();
    let data = target.join("hub.redb");
    for (file, want) in [(&cut, "is truncated"), (&flipped, "checksum mismatch")] {
        let out = restore(&data, file);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(
            err.contains(&*file.to_string_lossy()),
            "names the file: {err}"
        );
        assert!(
            names_in(&target).is_empty(),
            "nothing created: {:?}",
            names_in(&target)
        );
    }
    // The whole file restores to the same place.
    let out = restore(&data, &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(names_in(&target), ["hub.redb"]);

    // A backup that cannot be downloaded leaves no file either.
    let gone = dir.path().join("never.backup");
    let out = modelhub(&["backup", "--server", "127.0.0.1:9", &gone.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
    assert!(!gone.exists());
    assert!(!dir.path().join("never.backup.tmp").exists());
}

#[test]
fn restore_refuses_an_existing_database_or_log() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "r");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.backup");
    backup(&s, &file);
    let data = dir.path().join("hub.redb");
    let wal = dir.path().join("hub.redb.wal");
    for existing in [&data, &wal] {
        std::fs::write(existing, b"precious").unwrap();
        let out = restore(&data, &file);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("{} exists", existing.display()))
                && err.contains("never replaces"),
            "{err}"
        );
        assert_eq!(std::fs::read(existing).unwrap(), b"precious");
        std::fs::remove_file(existing).unwrap();
    }
    assert_eq!(names_in(dir.path()), ["hub.backup"]);
}
