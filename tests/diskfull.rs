//! A full disk, on a real small filesystem: a size-limited tmpfs mounted
//! by the test (root only; elsewhere each test prints why it skips, and
//! `MODELHUB_REQUIRE_TMPFS=1` turns the skip into a failure).
//!
//! Writer threads create realms with large specs until the server refuses
//! them, once with a free-space reserve (`--min-free-space`: 507 before the
//! disk is full) and three times without, so that a real `ENOSPC` is hit:
//! with frequent checkpoints (it hits a checkpoint), with none (it hits the
//! log's growth), and with a tiny page cache (it hits redb's writes, which
//! fails the database for reads too). Then:
//!
//! - every answer is an acknowledgement or a refusal as `API.md` defines
//!   them: 507 `InsufficientStorage` or 503 `Unavailable` (nothing written,
//!   `Retry-After`), 504 `OutcomeUnknown` (either way); never a 500;
//! - reads keep working (and, below the reserve, deletes); `/readyz` stays
//!   200 and names the refused writes, `/readyz/writes` answers 503 (but
//!   if the full disk failed a write of the database itself, redb refuses
//!   every access until the store is reopened, which needs room: reads
//!   then answer 503 and `/readyz` says so, until space returns);
//! - a ballast file the test wrote at the start is deleted: writes resume
//!   by themselves, without a restart, within seconds;
//! - after a final `kill -9` and a restart, every acknowledged write is
//!   there exactly (creates with their content and revision, deletes
//!   absent), nothing refused is, and a 504'd write is either way.
//!
//! Sizes: the log preallocates 4 MiB and grows in 4 MiB steps (up to 64
//! MiB); the database grows as it is written (tmpfs files are sparse) and
//! at checkpoints. A 48 MiB tmpfs with a 16–20 MiB ballast leaves room for
//! a few hundred 16 KiB objects, so each test takes a few seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;
/// Size of the tmpfs each test mounts.
const FS_MIB: u64 = 48;
/// Writer threads filling the disk.
const WRITERS: usize = 4;
/// Size of each object's label.
const PAD: usize = 16 * 1024;
/// Most creates one writer attempts (the disk is full long before).
const MAX_CREATES: usize = 2_000;
/// Refusals in a row after which a writer stops.
const REFUSALS_TO_STOP: usize = 5;
/// How long writes may take to resume once space is freed.
const RESUME_WITHIN: Duration = Duration::from_secs(15);

/// A size-limited tmpfs on a fresh temporary directory, unmounted when
/// dropped (also while unwinding from a failed assertion: declare it
/// before the server, so that the server is killed first).
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    fn mount(mib: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`mount -t tmpfs` exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        Ok(Tmpfs { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }

    /// Grows the filesystem to `mib` MiB.
    fn grow(&self, mib: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "remount the tmpfs: {st}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs at {}", dir.path().display());
        }
    }
}

/// Mounts a tmpfs of `mib` MiB, or prints why `test` is skipped (and
/// fails instead if `MODELHUB_REQUIRE_TMPFS` is set).
fn tmpfs_or_skip(test: &str, mib: u64) -> Option<Tmpfs> {
    match Tmpfs::mount(mib) {
        Ok(fs) => Some(fs),
        Err(why) if std::env::var_os("MODELHUB_REQUIRE_TMPFS").is_some() => {
            panic!("{test}: cannot mount tmpfs (MODELHUB_REQUIRE_TMPFS is set): {why}")
        }
        Err(why) => {
            // Written to stderr directly, past the test harness's capture
            // of `eprintln!`, so that a skip shows in every run.
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: cannot mount tmpfs: {why} (the disk-full tests need root; \
                 MODELHUB_REQUIRE_TMPFS=1 makes this a failure)"
            );
            None
        }
    }
}

/// Free bytes on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let st = rustix::fs::statvfs(dir).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// Writes `bytes` of non-zero data to `path`.
fn write_ballast(path: &Path, bytes: u64) {
    let mut f = std::fs::File::create(path).expect("create the ballast");
    let chunk = vec![0xA5u8; MIB as usize];
    for _ in 0..bytes / MIB {
        f.write_all(&chunk).expect("write the ballast");
    }
    f.sync_all().expect("sync the ballast");
}

/// One answer, with what the checks need of its headers.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }
}

fn send(req: reqwest::blocking::RequestBuilder) -> Answer {
    let r = req
        .send()
        .unwrap_or_else(|e| panic!("the server did not answer: {e}"));
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let text = r.text().unwrap_or_default();
    Answer {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// Asserts that a refusal or unknown outcome is the documented problem:
/// 507 `InsufficientStorage` and 503 `Unavailable` with `Retry-After`,
/// 504 `OutcomeUnknown`.
#[track_caller]
fn assert_documented_failure(s: &Server, what: &str, a: &Answer) {
    let reason = match a.status {
        507 => "InsufficientStorage",
        503 => "Unavailable",
        504 => "OutcomeUnknown",
        other => panic!(
            "{what}: answered {other}, not 507, 503 or 504: {}; the server's log:\n{}",
            a.body,
            store_log(s)
        ),
    };
    assert_eq!(a.reason(), reason, "{what}: {}", a.body);
    assert_eq!(a.body["status"], a.status, "{what}: {}", a.body);
    if a.status != 504 {
        assert!(
            a.retry_after.is_some(),
            "{what}: {} without Retry-After: {}",
            a.status,
            a.body
        );
    }
}

/// A label value of `n` letters, different for each object.
fn pad(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// One create a writer attempted.
#[derive(Debug)]
struct Attempt {
    name: String,
    answer: Answer,
}

/// Creates realms `{prefix}{writer}-{i}` with a large label from
/// [`WRITERS`] threads until each has been refused [`REFUSALS_TO_STOP`]
/// times in a row; answers every attempt.
fn fill(s: &Server, prefix: &str) -> Vec<Attempt> {
    let url = s.api("/realms");
    let deadline = Instant::now() + Duration::from_secs(40);
    let results = in_threads(WRITERS, 1, |c, w, _| {
        let mut attempts = Vec::new();
        let mut refused_in_a_row = 0;
        for i in 0..MAX_CREATES {
            assert!(
                Instant::now() < deadline,
                "writer {w}: still writing after 40 s ({i} creates)"
            );
            let name = format!("{prefix}{w}-{i}");
            // The padding is in the spec: a label value holds at most 253 bytes.
            let body = json!({
                "metadata": {"name": name, "labels": {"writer": w.to_string()}},
                "spec": {"namespace": pad((w * MAX_CREATES + i) as u64, PAD)},
            });
            let answer = send(c.http.post(&url).json(&body));
            if answer.status == 201 {
                refused_in_a_row = 0;
            } else {
                assert_documented_failure(s, &format!("create {name}"), &answer);
                refused_in_a_row += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            attempts.push(Attempt { name, answer });
            if refused_in_a_row == REFUSALS_TO_STOP {
                break;
            }
        }
        attempts
    });
    results.into_iter().flatten().collect()
}

/// How many answers of each status.
fn counts<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        *out.entry(a.status).or_default() += 1;
    }
    out
}

/// Every realm, by name, read page by page.
fn all_realms(c: &Client, s: &Server) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let mut query = vec![("limit", "50")];
        if !token.is_empty() {
            query.push(("continue", &token));
        }
        let (st, page) = c.get_query(&s.api("/realms"), &query);
        assert_eq!(st, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            let name = item["metadata"]["name"].as_str().unwrap().to_string();
            out.insert(name, item.clone());
        }
        match page["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_string(),
            None => return out,
        }
    }
    panic!("more than 1000 pages of realms");
}

/// The value of a metric line `name` (labels included) in `/metrics`.
fn metric(c: &Client, s: &Server, name: &str) -> Option<f64> {
    let text = c
        .raw(c.http.get(format!("{}/metrics", s.base)))
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn readyz(c: &Client, s: &Server) -> (u16, String) {
    let r = c.raw(c.http.get(format!("{}/readyz", s.base)));
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn readyz_writes(c: &Client, s: &Server) -> Answer {
    send(c.http.get(format!("{}/readyz/writes", s.base)))
}

/// Polls `/readyz/writes` (and nothing else) until it answers 200; answers
/// how long that took.
fn until_writes_ready(c: &Client, s: &Server) -> Duration {
    let start = Instant::now();
    loop {
        let a = readyz_writes(c, s);
        if a.status == 200 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < RESUME_WITHIN,
            "/readyz/writes still {} {} {RESUME_WITHIN:?} after space was freed ({:?} bytes \
             free); the server's log:\n{}",
            a.status,
            a.body,
            metric(c, s, "modelhub_free_bytes"),
            store_log(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates realm `name` (with a small label), retrying refusals until it
/// is created; answers the object and how long it took.
fn create_until_accepted(c: &Client, s: &Server, name: &str) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let a = send(
            c.http
                .post(s.api("/realms"))
                .json(&json!({"metadata": {"name": name, "labels": {"after": "resume"}}})),
        );
        if a.status == 201 {
            return (a.body, start.elapsed());
        }
        assert_documented_failure(s, &format!("create {name} after space was freed"), &a);
        assert!(
            start.elapsed() < RESUME_WITHIN,
            "writes did not resume within {RESUME_WITHIN:?} after space was freed: {} {}; \
             the server's log:\n{}",
            a.status,
            a.body,
            store_log(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server's warnings and errors, but the HTTP layer's (a few).
fn store_log(s: &Server) -> String {
    let text = s.log_text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("tower_http"))
        .collect();
    if lines.len() <= 20 {
        return lines.join("\n");
    }
    format!(
        "{}\n[...]\n{}",
        lines[..10].join("\n"),
        lines[lines.len() - 10..].join("\n")
    )
}

/// What the writes told the client: acknowledged objects (by name, as
/// last answered), acknowledged deletes, refused creates, and writes whose
/// outcome is unknown.
#[derive(Default)]
struct Acked {
    present: BTreeMap<String, Value>,
    deleted: BTreeSet<String>,
    refused: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

impl Acked {
    fn record(&mut self, attempts: &[Attempt]) {
        for a in attempts {
            match a.answer.status {
                201 => {
                    self.present.insert(a.name.clone(), a.answer.body.clone());
                }
                504 => {
                    self.unknown.insert(a.name.clone());
                }
                _ => {
                    self.refused.insert(a.name.clone());
                }
            }
        }
    }

    /// After a restart: every acknowledged object is there as answered,
    /// every acknowledged delete and refused create absent, and nothing
    /// else but writes of unknown outcome.
    fn check(&self, c: &Client, s: &Server) {
        let found = all_realms(c, s);
        for (name, object) in &self.present {
            assert_eq!(
                found.get(name),
                Some(object),
                "acknowledged realm {name} is not as acknowledged"
            );
        }
        for name in &self.deleted {
            assert!(
                !found.contains_key(name),
                "realm {name} is back after an acknowledged delete"
            );
        }
        for name in &self.refused {
            assert!(
                !found.contains_key(name),
                "realm {name} exists, though its create was refused"
            );
        }
        for name in found.keys() {
            assert!(
                self.present.contains_key(name) || self.unknown.contains(name),
                "realm {name} exists, though no acknowledged write made it"
            );
        }
    }
}

#[test]
fn below_the_reserve_writes_get_507_while_reads_and_deletes_work_and_resume_when_space_returns() {
    const TEST: &str = "below_the_reserve_writes_get_507";
    let Some(fs) = tmpfs_or_skip(TEST, FS_MIB) else {
        return;
    };
    let ballast = fs.path().join("ballast");
    write_ballast(&ballast, 16 * MIB);
    let data = fs.path().join("hub.redb");
    let mut s = Server::start_with(
        &data,
        &["--min-free-space", "16MiB", "--checkpoint-interval", "50ms"],
    );
    let c = Client::default();
    // An object with a finalizer, to be deleted below the reserve.
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "fin", "finalizers": ["kukeon.io/runtime"]}}),
    );
    assert_eq!(st, 201, "{b}");
    let began = Instant::now();
    let free_at_start = free_bytes(fs.path());
    let attempts = fill(&s, "a");
    let seen = counts(attempts.iter().map(|a| &a.answer));
    eprintln!(
        "{TEST}: {free_at_start} bytes free at the start; answers {seen:?} in {:?}; {} bytes \
         free now",
        began.elapsed(),
        free_bytes(fs.path())
    );
    assert!(
        seen.keys().all(|st| [201, 507].contains(st)),
        "only 201 and 507 with a reserve: {seen:?}"
    );
    assert!(seen.get(&201).copied().unwrap_or(0) >= 20, "{seen:?}");
    assert!(seen.contains_key(&507), "{seen:?}");
    assert!(
        free_bytes(fs.path()) >= 8 * MIB,
        "the reserve kept the disk from filling"
    );
    let mut acked = Acked::default();
    acked.record(&attempts);

    // Reads keep working: single objects and lists.
    for (name, object) in acked.present.iter().step_by(7) {
        let (st, got) = c.get(&s.api(&format!("/realms/{name}")));
        assert_eq!((st, &got), (200, object), "GET {name} below the reserve");
    }
    let (st, page) = c.get_query(&s.api("/realms"), &[("limit", "10")]);
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 10);

    // Deletes keep working, so an operator can free space through the API.
    let doomed: Vec<String> = acked.present.keys().step_by(5).cloned().collect();
    for name in &doomed {
        let (st, b) = c.delete(&s.api(&format!("/realms/{name}")));
        assert_eq!(st, 200, "DELETE {name} below the reserve: {b}");
        acked.present.remove(name);
        acked.deleted.insert(name.clone());
    }
    // So do a marking delete and the finalizer removal that lets the
    // object go.
    let (st, b) = c.delete(&s.api("/realms/fin"));
    assert_eq!(st, 202, "a marking DELETE below the reserve: {b}");
    let (st, b) = c.put_json(&s.api("/realms/fin/finalizers"), &json!({}));
    assert_eq!(st, 200, "a finalizer removal below the reserve: {b}");
    assert_eq!(c.get(&s.api("/realms/fin")).0, 404);
    // Other writes are still refused.
    let a = send(
        c.http
            .post(s.api("/realms"))
            .json(&json!({"metadata": {"name": "refused"}})),
    );
    assert_eq!(a.status, 507, "{}", a.body);
    assert_documented_failure(&s, "a create below the reserve", &a);
    acked.refused.insert("refused".into());

    // Readiness: reads ready, writes refused, and why.
    let (st, text) = readyz(&c, &s);
    assert_eq!(st, 200, "/readyz stays 200 while reads work: {text}");
    assert!(text.contains("[+]reads ok"), "{text}");
    assert!(text.contains("[-]writes refused (low_space)"), "{text}");
    let w = readyz_writes(&c, &s);
    assert_eq!(w.status, 503, "{}", w.body);
    assert_eq!(w.reason(), "InsufficientStorage", "{}", w.body);
    assert_eq!(
        metric(&c, &s, "modelhub_writes_refused{cause=\"low_space\"}"),
        Some(1.0)
    );
    let free_metric = metric(&c, &s, "modelhub_free_bytes").expect("free bytes metric");
    assert!(free_metric < (16 * MIB) as f64, "{free_metric}");

    eprintln!("{TEST}: the server's log so far:\n{}", store_log(&s));

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&ballast).unwrap();
    let ready_after = until_writes_ready(&c, &s);
    let (after, created_after) = create_until_accepted(&c, &s, "after-space");
    eprintln!(
        "{TEST}: /readyz/writes 200 {ready_after:?} after the ballast was deleted; a create \
         was accepted {created_after:?} after that"
    );
    acked.present.insert("after-space".into(), after);
    let (st, text) = readyz(&c, &s);
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("[+]writes ok"), "{text}");
    assert_eq!(
        metric(&c, &s, "modelhub_writes_refused{cause=\"low_space\"}"),
        Some(0.0)
    );
    for i in 0..5 {
        let name = format!("more-{i}");
        let (st, b) = c.post_json(&s.api("/realms"), &json!({"metadata": {"name": name}}));
        assert_eq!(st, 201, "{b}");
        acked.present.insert(name, b);
    }

    // Everything acknowledged survives a kill -9.
    s.kill();
    s.restart();
    acked.check(&c, &s);
    eprintln!(
        "{TEST}: after kill -9: {} acknowledged objects and {} acknowledged deletes as \
         answered; {:?} in all",
        acked.present.len(),
        acked.deleted.len(),
        began.elapsed()
    );
}

#[test]
fn a_real_enospc_refuses_writes_without_500_and_writes_resume_when_space_returns() {
    // Frequent checkpoints: the disk fills up as the database grows.
    enospc(
        "a_real_enospc_at_checkpoints",
        &["--checkpoint-interval", "50ms"],
        0,
    );
}

#[test]
fn a_real_enospc_in_the_log_refuses_writes_without_500_and_writes_resume_when_space_returns() {
    // No checkpoint: the log grows until the disk is full, with some 20
    // MiB of records in it. Replaying them into the database needs about
    // twice that (objects and their events), more than the ballast frees:
    // the filesystem grows too.
    enospc(
        "a_real_enospc_in_the_log",
        &["--checkpoint-interval", "60m"],
        128,
    );
}

#[test]
fn a_real_enospc_in_the_database_refuses_writes_without_500_and_writes_resume_when_space_returns() {
    // A 1 MiB page cache: redb writes pages out as it goes, the disk fills
    // up under the database, which redb then refuses (reads included)
    // until the store is reopened.
    enospc(
        "a_real_enospc_in_the_database",
        &["--checkpoint-interval", "50ms", "--cache-mb", "1"],
        0,
    );
}

/// With no reserve, writers fill the disk until a real `ENOSPC`; then
/// the ballast is deleted (and the filesystem grown to `grow_to_mib`, if
/// not 0).
fn enospc(test: &str, extra: &[&str], grow_to_mib: u64) {
    let Some(fs) = tmpfs_or_skip(test, FS_MIB) else {
        return;
    };
    let ballast = fs.path().join("ballast");
    write_ballast(&ballast, 20 * MIB);
    let data = fs.path().join("hub.redb");
    let mut s = Server::start_with(&data, &[&["--min-free-space", "0"], extra].concat());
    let c = Client::default();
    let began = Instant::now();
    let free_at_start = free_bytes(fs.path());
    let attempts = fill(&s, "b");
    let seen = counts(attempts.iter().map(|a| &a.answer));
    eprintln!(
        "{test}: {free_at_start} bytes free at the start; answers {seen:?} in {:?}; {} bytes \
         free now; unknown outcome: {:?}",
        began.elapsed(),
        free_bytes(fs.path()),
        attempts
            .iter()
            .filter(|a| a.answer.status == 504)
            .map(|a| &a.name)
            .collect::<Vec<_>>()
    );
    assert!(seen.get(&201).copied().unwrap_or(0) >= 20, "{seen:?}");
    assert!(
        seen.keys().any(|st| *st != 201),
        "the disk never filled: {seen:?}"
    );
    let mut acked = Acked::default();
    acked.record(&attempts);

    // Reads: 200 as acknowledged, or 503 while the store reopens.
    let mut reads = Vec::new();
    for (name, object) in acked.present.iter().step_by(7) {
        let a = send(c.http.get(s.api(&format!("/realms/{name}"))));
        match a.status {
            200 => assert_eq!(&a.body, object, "GET {name} on a full disk"),
            _ => assert_documented_failure(&s, &format!("GET {name} on a full disk"), &a),
        }
        reads.push(a);
    }
    let a = send(c.http.get(s.api("/realms?limit=10")));
    if a.status != 200 {
        assert_documented_failure(&s, "a list on a full disk", &a);
    }
    reads.push(a);
    // A delete: acknowledged, refused or unknown, as answered.
    let victim = acked.present.keys().next().unwrap().clone();
    let del = send(c.http.delete(s.api(&format!("/realms/{victim}"))));
    match del.status {
        200 => {
            acked.present.remove(&victim);
            acked.deleted.insert(victim.clone());
        }
        504 => {
            acked.present.remove(&victim);
            acked.unknown.insert(victim.clone());
        }
        _ => assert_documented_failure(&s, "a delete on a full disk", &del),
    }
    let (ready, text) = readyz(&c, &s);
    let w = readyz_writes(&c, &s);
    eprintln!(
        "{test}: on the full disk: reads {:?}, delete {}, /readyz {ready}, /readyz/writes {} \
         {}; storage errors: no_space {:?}, other {:?}",
        counts(&reads),
        del.status,
        w.status,
        w.reason(),
        metric(&c, &s, "modelhub_storage_errors_total{kind=\"no_space\"}"),
        metric(&c, &s, "modelhub_storage_errors_total{kind=\"other\"}"),
    );
    // Reads work on, unless the full disk failed the database itself
    // (redb then refuses every access until it is reopened, which needs
    // room): `/readyz` says which.
    if reads.iter().all(|a| a.status == 200) {
        assert_eq!(ready, 200, "/readyz stays 200 while reads work: {text}");
    } else {
        assert_eq!(ready, 503, "reads are refused: {text}");
        assert!(text.contains("[-]reads failed"), "{text}");
    }
    assert!(text.contains("[-]writes refused"), "{text}");
    let refused = |c: &Client, s: &Server| {
        ["storage_full", "storage_failed"].map(|cause| {
            metric(
                c,
                s,
                &format!("modelhub_writes_refused{{cause=\"{cause}\"}}"),
            )
        })
    };
    assert!(
        refused(&c, &s).contains(&Some(1.0)),
        "{:?}",
        refused(&c, &s)
    );
    assert_eq!(w.status, 503, "{}", w.body);
    assert!(
        ["InsufficientStorage", "Unavailable"].contains(&w.reason()),
        "{}",
        w.body
    );

    eprintln!("{test}: the server's log so far:\n{}", store_log(&s));

    // Space returns: the store recovers from disk by itself.
    if grow_to_mib > 0 {
        fs.grow(grow_to_mib);
    }
    std::fs::remove_file(&ballast).unwrap();
    let ready_after = until_writes_ready(&c, &s);
    let (after, created_after) = create_until_accepted(&c, &s, "after-space");
    eprintln!(
        "{test}: /readyz/writes 200 {ready_after:?} after the ballast was deleted; a create \
         was accepted {created_after:?} after that; recoveries {:?}",
        metric(&c, &s, "modelhub_storage_recoveries_total")
    );
    acked.present.insert("after-space".into(), after);
    assert!(metric(&c, &s, "modelhub_storage_recoveries_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(refused(&c, &s), [Some(0.0), Some(0.0)]);
    // Reads answer again, as acknowledged, and writes of unknown outcome
    // are settled one way or the other.
    for (name, object) in acked.present.iter().step_by(7) {
        let (st, got) = c.get(&s.api(&format!("/realms/{name}")));
        assert_eq!((st, &got), (200, object), "GET {name} after the recovery");
    }
    acked.check(&c, &s);
    for i in 0..5 {
        let name = format!("more-{i}");
        let (st, b) = c.post_json(&s.api("/realms"), &json!({"metadata": {"name": name}}));
        assert_eq!(st, 201, "{b}");
        acked.present.insert(name, b);
    }
    let settled: BTreeSet<String> = all_realms(&c, &s)
        .into_keys()
        .filter(|n| acked.unknown.contains(n))
        .collect();

    // Everything acknowledged survives a kill -9, and what an unknown
    // outcome turned out to be stays so.
    s.kill();
    s.restart();
    acked.check(&c, &s);
    let found = all_realms(&c, &s);
    for name in &acked.unknown {
        assert_eq!(
            found.contains_key(name),
            settled.contains(name),
            "realm {name} (unknown outcome) changed across the kill"
        );
    }
    eprintln!(
        "{test}: after kill -9: {} acknowledged objects as answered, {} of {} unknown \
         outcomes applied; {:?} in all",
        acked.present.len(),
        settled.len(),
        acked.unknown.len(),
        began.elapsed()
    );
}

#[test]
fn with_a_spare_file_a_full_disk_keeps_reads_and_deletes_working() {
    const TEST: &str = "with_a_spare_file_a_full_disk";
    let Some(fs) = tmpfs_or_skip(TEST, FS_MIB) else {
        return;
    };
    let ballast = fs.path().join("ballast");
    write_ballast(&ballast, 20 * MIB);
    let data = fs.path().join("hub.redb");
    // A small page cache: the disk fills up under the database itself,
    // which then needs a reopen (room) before it answers reads again.
    let mut s = Server::start_with(
        &data,
        &[
            "--min-free-space",
            "0",
            "--spare-space",
            "12MiB",
            "--checkpoint-interval",
            "50ms",
            "--cache-mb",
            "1",
        ],
    );
    let c = Client::default();
    let spare = fs.path().join("hub.redb.spare");
    assert_eq!(std::fs::metadata(&spare).unwrap().len(), 12 * MIB);
    let attempts = fill(&s, "b");
    let mut acked = Acked::default();
    acked.record(&attempts);
    assert!(!acked.present.is_empty());
    // The spare file is gone and the store has recovered on the full
    // disk: reads answer (all of them), writes are refused as
    // storage_full, deletes work.
    let deadline = Instant::now() + RESUME_WITHIN;
    loop {
        let (ready, text) = readyz(&c, &s);
        let recovered = metric(&c, &s, "modelhub_storage_recoveries_total").unwrap_or(0.0) >= 1.0;
        if recovered && ready == 200 && text.contains("[+]reads ok") {
            assert!(text.contains("[-]writes refused (storage_full)"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{TEST}: reads never came back on the full disk: {text}\n{}",
            store_log(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!spare.exists(), "the spare file was deleted");
    for (name, object) in &acked.present {
        let (st, got) = c.get(&s.api(&format!("/realms/{name}")));
        assert_eq!((st, &got), (200, object), "GET {name} on the full disk");
    }
    let victims: Vec<String> = acked.present.keys().take(3).cloned().collect();
    for name in victims {
        let (st, b) = c.delete(&s.api(&format!("/realms/{name}")));
        assert_eq!(st, 200, "delete {name} on the full disk: {b}");
        acked.present.remove(&name);
        acked.deleted.insert(name);
    }
    let refused = send(
        c.http
            .post(s.api("/realms"))
            .json(&json!({"metadata": {"name": "refused"}})),
    );
    assert_eq!(refused.status, 507, "{}", refused.body);
    assert_eq!(readyz_writes(&c, &s).status, 503);
    // Space returns: the spare file comes back, then writes resume.
    std::fs::remove_file(&ballast).unwrap();
    until_writes_ready(&c, &s);
    assert_eq!(std::fs::metadata(&spare).unwrap().len(), 12 * MIB);
    let (after, _) = create_until_accepted(&c, &s, "after-space");
    acked.present.insert("after-space".into(), after);
    s.kill();
    s.restart();
    acked.check(&c, &s);
    assert_eq!(c.get(&s.api("/realms/refused")).0, 404);
}
