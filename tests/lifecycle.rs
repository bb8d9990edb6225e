//! The deletion lifecycle over the real binary, on redb and (with
//! `MODELHUB_TEST_STORE=etcd`) on etcd: finalizers, `deletionTimestamp`,
//! the `Terminating` refusals, cascades over subtrees with finalizers, and
//! a plain delete of a parent whose children are all terminating.

mod common;
use common::*;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const STACK: &str = "/realms/r/spaces/s/stacks/t";

fn cell_url(name: &str) -> String {
    format!("{STACK}/cells/{name}")
}

/// `kind/name` of a watch event's object.
fn who(event: &Value) -> String {
    format!(
        "{}/{}",
        event["object"]["kind"].as_str().unwrap_or_default(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
    )
}

fn terminating(doc: &Value) -> bool {
    doc["metadata"]["deletionTimestamp"].is_string()
}

/// Polls `check` until it holds (at once on redb, where a write settles
/// its subtree itself; within 20 s on etcd, where a background process
/// does), else fails with `what`.
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if check() {
            return;
        }
        assert!(
            on_etcd(),
            "{what}: not done in the write itself (redb settles at once)"
        );
        assert!(Instant::now() < deadline, "{what}: not done within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone(c: &Client, s: &Server, path: &str) -> bool {
    c.get(&s.api(path)).0 == 404
}

fn put_with_if_match(c: &Client, url: &str, body: &Value, rv: u64) -> Reply {
    c.send(
        c.http
            .put(url)
            .header("if-match", format!("\"{rv}\""))
            .json(body),
    )
}

fn finalizers(list: &[&str]) -> Value {
    json!({"metadata": {"finalizers": list}})
}

#[test]
fn delete_with_finalizers_waits_for_their_removal() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let (st, created) = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "a", "finalizers": ["kukeon.io/runtime", "example.com/b"]}}),
    );
    assert_eq!(st, 201, "{created}");
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["kukeon.io/runtime", "example.com/b"])
    );
    assert!(!terminating(&created));
    let since = rv(&created);

    let (st, marked) = c.delete(&s.api(&cell_url("a")));
    assert_eq!(st, 202, "{marked}");
    assert!(terminating(&marked), "{marked}");
    assert!(rv(&marked) > since);
    let (st, read) = c.get(&s.api(&cell_url("a")));
    assert_eq!((st, &read), (200, &marked), "readable while terminating");
    // A second delete answers the same and changes nothing.
    let (st, again) = c.delete(&s.api(&cell_url("a")));
    assert_eq!((st, rv(&again)), (202, rv(&marked)), "{again}");

    let url = s.api(&format!("{}/finalizers", cell_url("a")));
    // If-Match applies to finalizer removal.
    let r = put_with_if_match(&c, &url, &finalizers(&["example.com/b"]), since);
    assert_problem(&r, 409, "Conflict", Some("metadata.resourceVersion"));
    let r = put_with_if_match(&c, &url, &finalizers(&["example.com/b"]), rv(&marked));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["metadata"]["finalizers"], json!(["example.com/b"]));
    assert!(terminating(&r.1));
    // No finalizer may be added to a terminating object.
    let r = c.put_json(&url, &finalizers(&["example.com/b", "new.io/x"]));
    assert_problem(&r, 409, "Terminating", Some("metadata.finalizers[1]"));
    // The last one's removal removes the object.
    let (st, last) = c.patch(&url, &json!({"metadata": {"finalizers": null}}));
    assert_eq!(st, 200, "{last}");
    assert!(terminating(&last), "its last state: {last}");
    assert!(last["metadata"]["finalizers"].is_null(), "{last}");
    eventually("the last finalizer's removal removes it", || {
        gone(&c, &s, &cell_url("a"))
    });

    let events = events_since(&c, &s, since);
    let kinds: Vec<(&str, String)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), who(e)))
        .collect();
    // On etcd the version without finalizers is stored, then removed.
    let modified = if on_etcd() { 3 } else { 2 };
    let mut want = vec![("MODIFIED", "Cell/a".to_string()); modified];
    want.push(("DELETED", "Cell/a".to_string()));
    assert_eq!(kinds, want, "{events:?}");
    assert!(terminating(&events[0]["object"]));
    let last_state = &events.last().unwrap()["object"];
    assert!(
        terminating(last_state) && last_state["metadata"]["finalizers"].is_null(),
        "the DELETED event's last state has no finalizers: {last_state}"
    );
}

#[test]
fn an_object_without_finalizers_goes_at_once_and_if_match_applies_to_the_marking() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    create_named(&c, &s, &format!("{STACK}/cells"), "plain");
    let (st, gone_doc) = c.delete(&s.api(&cell_url("plain")));
    assert_eq!(st, 200, "{gone_doc}");
    assert!(!terminating(&gone_doc));
    assert!(gone(&c, &s, &cell_url("plain")));

    let (st, b) = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "f", "finalizers": ["kukeon.io/runtime"]}}),
    );
    assert_eq!(st, 201, "{b}");
    let stale = c.send(
        c.http
            .delete(s.api(&cell_url("f")))
            .header("if-match", format!("\"{}\"", rv(&b) - 1)),
    );
    assert_problem(&stale, 409, "Conflict", Some("metadata.resourceVersion"));
    let (st, read) = c.get(&s.api(&cell_url("f")));
    assert_eq!(st, 200);
    assert!(!terminating(&read), "a refused delete marks nothing");
    let ok = c.send(
        c.http
            .delete(s.api(&cell_url("f")))
            .header("if-match", format!("\"{}\"", rv(&b))),
    );
    assert_eq!(ok.0, 202, "{}", ok.1);
}

#[test]
fn finalizers_in_documents_are_kept_when_left_out_and_validated() {
    let s = Server::start();
    let c = Client::default();
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "r", "finalizers": ["kukeon.io/runtime"]}, "spec": {"namespace": "a"}}),
    );
    assert_eq!(st, 201, "{b}");
    // A PUT (like `kuke apply -f`) that leaves them out keeps them.
    let (st, b) = c.put_json(
        &s.api("/realms/r"),
        &json!({"metadata": {"name": "r"}, "spec": {"namespace": "b"}}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["metadata"]["finalizers"], json!(["kukeon.io/runtime"]));
    assert_eq!(generation(&b), 2);
    // An apply that leaves them out keeps them too.
    let (st, b) = c.post_yaml(
        &s.api("/apply"),
        "apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: r\nspec:\n  namespace: b\n",
    );
    assert_eq!(
        (st, b["items"][0]["outcome"].as_str()),
        (200, Some("unchanged")),
        "{b}"
    );
    // A given list replaces them, without a new generation.
    let (st, b) = c.put_json(
        &s.api("/realms/r"),
        &json!({"metadata": {"name": "r", "finalizers": []}, "spec": {"namespace": "b"}}),
    );
    assert_eq!(st, 200, "{b}");
    assert!(b["metadata"]["finalizers"].is_null(), "{b}");
    assert_eq!(generation(&b), 2);
    for (list, field) in [
        (json!(["Not A Key"]), "metadata.finalizers[0]"),
        (json!(["a.io/x", "a.io/x"]), "metadata.finalizers[1]"),
        (json!(["-x"]), "metadata.finalizers[0]"),
    ] {
        let r = c.put_json(
            &s.api("/realms/r/finalizers"),
            &json!({"metadata": {"finalizers": list}}),
        );
        assert_problem(&r, 422, "Invalid", Some(field));
    }
    // deletionTimestamp is the server's: ignored on input.
    let (st, b) = c.put_json(
        &s.api("/realms/r"),
        &json!({"metadata": {"name": "r", "deletionTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"namespace": "b"}}),
    );
    assert_eq!(st, 200, "{b}");
    assert!(!terminating(&b));
}

#[test]
fn terminating_objects_refuse_spec_labels_new_finalizers_and_children() {
    let s = Server::start();
    let c = Client::default();
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "rt", "finalizers": ["kukeon.io/runtime"]}, "spec": {"namespace": "n"}}),
    );
    assert_eq!(st, 201, "{b}");
    let (st, marked) = c.delete(&s.api("/realms/rt"));
    assert_eq!(st, 202, "{marked}");

    let r = c.patch(&s.api("/realms/rt"), &json!({"spec": {"namespace": "m"}}));
    assert_problem(&r, 409, "Terminating", Some("spec"));
    let r = c.patch(
        &s.api("/realms/rt"),
        &json!({"metadata": {"labels": {"a": "b"}}}),
    );
    assert_problem(&r, 409, "Terminating", Some("metadata.labels"));
    let r = c.patch(
        &s.api("/realms/rt"),
        &json!({"metadata": {"finalizers": ["kukeon.io/runtime", "b.io/c"]}}),
    );
    assert_problem(&r, 409, "Terminating", Some("metadata.finalizers[1]"));
    let r = c.post_json(
        &s.api("/realms/rt/spaces"),
        &json!({"metadata": {"name": "late"}}),
    );
    assert_problem(&r, 409, "Terminating", None);
    // An apply of what is stored changes nothing and is not refused; one
    // that adds a finalizer is.
    let doc = "apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: rt\nspec:\n  namespace: n\n";
    let (st, b) = c.post_yaml(&s.api("/apply"), doc);
    assert_eq!(
        (st, b["items"][0]["outcome"].as_str()),
        (200, Some("unchanged")),
        "{b}"
    );
    let adding = "apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: rt\n  finalizers: [kukeon.io/runtime, b.io/c]\nspec:\n  namespace: n\n";
    let r = c.post_yaml(&s.api("/apply"), adding);
    assert_eq!(
        (r.0, r.1["reason"].as_str()),
        (409, Some("Terminating")),
        "{}",
        r.1
    );
    // Status writes are allowed.
    let (st, b) = c.patch(
        &s.api("/realms/rt/status"),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"]["state"], "Ready");
    assert!(terminating(&b));
    // Nothing was written by the refusals: the revision moved by the
    // status write only.
    assert_changes_since(&c, &s, rv(&marked), 1, "refusals write nothing");
    let (st, b) = c.put_json(&s.api("/realms/rt/finalizers"), &json!({}));
    assert_eq!(st, 200, "{b}");
    eventually("the realm goes", || gone(&c, &s, "/realms/rt"));
}

/// The realm `m` of the mixed subtree, by `kind/name`, with each object's
/// parent (for the order check).
const MIXED: &[(&str, Option<&str>)] = &[
    ("Realm/m", None),
    ("Space/s", Some("Realm/m")),
    ("Stack/t1", Some("Space/s")),
    ("Stack/t2", Some("Space/s")),
    ("Cell/a", Some("Stack/t1")),
    ("Cell/b", Some("Stack/t1")),
    ("Cell/c", Some("Stack/t2")),
    ("Container/k", Some("Cell/c")),
    ("Container/k2", Some("Cell/c")),
];

fn is_under(x: &str, ancestor: &str) -> bool {
    let mut at = x;
    while let Some((_, Some(p))) = MIXED.iter().find(|(n, _)| *n == at) {
        if *p == ancestor {
            return true;
        }
        at = p;
    }
    false
}

#[test]
fn cascade_over_a_mixed_subtree_marks_removes_and_waits() {
    let s = Server::start();
    let c = Client::default();
    let f = json!(["f.io/x"]);
    let post = |path: &str, body: Value| {
        let (st, b) = c.post_json(&s.api(path), &body);
        assert_eq!(st, 201, "{path}: {b}");
    };
    post("/realms", json!({"metadata": {"name": "m"}}));
    post("/realms/m/spaces", json!({"metadata": {"name": "s"}}));
    let st = "/realms/m/spaces/s/stacks";
    post(st, json!({"metadata": {"name": "t1"}}));
    post(st, json!({"metadata": {"name": "t2"}}));
    post(
        &format!("{st}/t1/cells"),
        json!({"metadata": {"name": "a", "finalizers": f}}),
    );
    post(
        &format!("{st}/t1/cells"),
        json!({"metadata": {"name": "b"}}),
    );
    post(
        &format!("{st}/t2/cells"),
        json!({"metadata": {"name": "c"}}),
    );
    let ctr = format!("{st}/t2/cells/c/containers");
    post(
        &ctr,
        json!({"metadata": {"name": "k", "finalizers": f}, "spec": {"image": "busybox"}}),
    );
    post(
        &ctr,
        json!({"metadata": {"name": "k2"}, "spec": {"image": "busybox"}}),
    );
    let since = revision(&c, &s);

    let (code, root) = c.delete(&s.api("/realms/m?cascade=true"));
    assert_eq!(code, 202, "{root}");
    assert!(terminating(&root));
    let b = format!("{st}/t1/cells/b");
    let k2 = format!("{ctr}/k2");
    eventually("the cascade removes what has no finalizers", || {
        gone(&c, &s, &b) && gone(&c, &s, &k2)
    });
    eventually("the cascade marks what stays", || {
        [
            "/realms/m/spaces/s",
            &format!("{st}/t1"),
            &format!("{st}/t2"),
            &format!("{st}/t2/cells/c"),
            &format!("{ctr}/k"),
            &format!("{st}/t1/cells/a"),
        ]
        .iter()
        .all(|p| terminating(&c.get(&s.api(p)).1))
    });
    let r = c.post_json(
        &s.api(&format!("{st}/t1/cells")),
        &json!({"metadata": {"name": "late"}}),
    );
    assert_problem(&r, 409, "Terminating", None);
    // The second delete, even a plain one, changes nothing.
    let (code, again) = c.delete(&s.api("/realms/m"));
    assert_eq!((code, rv(&again)), (202, rv(&root)), "{again}");

    let events = events_since(&c, &s, since);
    assert_eq!(who(&events[0]), "Realm/m", "the root's marking comes first");
    assert_eq!(events[0]["type"], "MODIFIED");
    let mut seen: Vec<(String, String)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), who(e)))
        .collect();
    seen.sort();
    let mut want: Vec<(String, String)> = [
        ("DELETED", "Cell/b"),
        ("DELETED", "Container/k2"),
        ("MODIFIED", "Cell/a"),
        ("MODIFIED", "Cell/c"),
        ("MODIFIED", "Container/k"),
        ("MODIFIED", "Realm/m"),
        ("MODIFIED", "Space/s"),
        ("MODIFIED", "Stack/t1"),
        ("MODIFIED", "Stack/t2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(seen, want, "one event per object: {events:?}");

    // The last finalizer under t1 takes a, then t1.
    let (code, b) = c.put_json(&s.api(&format!("{st}/t1/cells/a/finalizers")), &json!({}));
    assert_eq!(code, 200, "{b}");
    eventually("t1 goes with its last cell", || {
        gone(&c, &s, &format!("{st}/t1"))
    });
    assert!(!gone(&c, &s, "/realms/m/spaces/s"), "t2 is still there");
    // The last one of all takes the rest, deepest first.
    let (code, b) = c.put_json(&s.api(&format!("{ctr}/k/finalizers")), &json!({}));
    assert_eq!(code, 200, "{b}");
    eventually("the whole subtree is gone", || gone(&c, &s, "/realms/m"));

    let events = events_since(&c, &s, since);
    let deleted: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "DELETED")
        .map(who)
        .collect();
    let mut names: Vec<&str> = deleted.iter().map(String::as_str).collect();
    names.sort();
    let mut all: Vec<&str> = MIXED.iter().map(|(n, _)| *n).collect();
    all.sort();
    assert_eq!(names, all, "every object deleted once: {events:?}");
    // Nothing goes before its children: no event of a descendant follows
    // an object's deletion.
    for (i, e) in events.iter().enumerate() {
        if e["type"] == "DELETED" {
            let x = who(e);
            for later in &events[i + 1..] {
                assert!(
                    !is_under(&who(later), &x),
                    "{} after {x} was deleted: {events:?}",
                    who(later)
                );
            }
        }
    }
}

#[test]
fn a_plain_delete_of_a_parent_whose_children_are_all_terminating_marks_it() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let (st, b) = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "x", "finalizers": ["kukeon.io/runtime"]}}),
    );
    assert_eq!(st, 201, "{b}");
    create_named(&c, &s, &format!("{STACK}/cells"), "y");
    let r = c.delete(&s.api(STACK));
    assert_problem(&r, 409, "HasChildren", None);
    assert_eq!(c.delete(&s.api(&cell_url("y"))).0, 200);
    assert_eq!(c.delete(&s.api(&cell_url("x"))).0, 202);
    let (st, marked) = c.delete(&s.api(STACK));
    assert_eq!(st, 202, "{marked}");
    assert!(terminating(&marked));
    let r = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "z"}}),
    );
    assert_problem(&r, 409, "Terminating", None);
    let (st, b) = c.put_json(&s.api(&format!("{}/finalizers", cell_url("x"))), &json!({}));
    assert_eq!(st, 200, "{b}");
    eventually("the stack goes with its last cell", || gone(&c, &s, STACK));
    assert!(!gone(&c, &s, "/realms/r/spaces/s"), "its space stays");
}

#[test]
fn the_terminating_field_selector_narrows_lists_and_watches() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for name in ["x", "y"] {
        let (st, b) = c.post_json(
            &s.api(&format!("{STACK}/cells")),
            &json!({"metadata": {"name": name, "finalizers": ["kukeon.io/runtime"]}}),
        );
        assert_eq!(st, 201, "{b}");
    }
    create_named(&c, &s, &format!("{STACK}/cells"), "z");
    let since = revision(&c, &s);
    assert_eq!(c.delete(&s.api(&cell_url("x"))).0, 202);
    let list = |selector: &str| {
        let (st, b) = c.get_query(
            &s.api(&format!("{STACK}/cells")),
            &[("fieldSelector", selector)],
        );
        assert_eq!(st, 200, "{b}");
        item_names(&b)
    };
    assert_eq!(list("metadata.terminating=true"), ["x"]);
    assert_eq!(list("metadata.terminating=false"), ["y", "z"]);
    assert_eq!(list("metadata.terminating!=true"), ["y", "z"]);
    assert_eq!(
        list("metadata.terminating=true,status.state!=Ready"),
        ["x"],
        "combined with another field"
    );
    let (st, b) = c.get_query(
        &s.api("/cells"),
        &[
            ("fieldSelector", "metadata.terminating=true"),
            ("realm", "r"),
        ],
    );
    assert_eq!((st, item_names(&b)), (200, vec!["x".to_string()]), "{b}");
    let r = c.get_query(
        &s.api(&format!("{STACK}/cells")),
        &[("fieldSelector", "metadata.terminating=yes")],
    );
    assert_problem(&r, 400, "BadRequest", Some("fieldSelector"));
    // A watch with it sees the marking of x (x now matches).
    let text = c
        .http
        .get(format!(
            "{}?resourceVersion={since}&timeoutSeconds=1&fieldSelector=metadata.terminating%3Dtrue",
            s.api("/watch")
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["type"] != "BOOKMARK")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(who(&events[0]), "Cell/x");
}

/// On etcd a transaction holds at most `--max-txn-ops` operations: a
/// subtree with a finalizer and many more objects than that is settled by
/// the background process in many transactions, and a replica killed in
/// the middle leaves the rest to the next one.
#[test]
fn on_etcd_a_large_subtree_completes_after_a_replica_is_killed() {
    use std::io::BufRead;
    if !on_etcd() {
        eprintln!("skipped: needs etcd (MODELHUB_TEST_STORE=etcd, as .ci/run does)");
        return;
    }
    let endpoints = etcd_cluster().endpoints();
    let prefix = common::etcd::next_prefix();
    let args = |ops: &'static str| -> Vec<String> {
        [
            "--store",
            "etcd",
            "--etcd-endpoints",
            &endpoints,
            "--etcd-prefix",
            &prefix,
            "--etcd-max-txn-ops",
            ops,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let start = |ops: &'static str| {
        let a = args(ops);
        Server::start_args(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    const CELLS: usize = 300;
    let c = Client::default();
    let mut first = start("128");
    hierarchy(&c, &first, "r", "s", "t");
    let (st, b) = c.post_json(
        &first.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "keep", "finalizers": ["kukeon.io/runtime"]}}),
    );
    assert_eq!(st, 201, "{b}");
    for chunk in (0..CELLS).collect::<Vec<_>>().chunks(100) {
        let docs: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"apiVersion": "v1beta1", "kind": "Cell",
                       "metadata": {"name": format!("c{i:03}")},
                       "spec": {"realmId": "r", "spaceId": "s", "stackId": "t"}})
            })
            .collect();
        let (st, b) = c.post_json(&first.api("/apply"), &Value::Array(docs));
        assert_eq!(st, 200, "{b}");
    }
    let since = revision(&c, &first);
    first.stop();

    // A replica whose transactions hold 8 operations: 3 cells each.
    let mut small = start("8");
    let (st, root) = c.delete(&small.api(&format!("{STACK}?cascade=true")));
    assert_eq!(st, 202, "{root}");
    let resp = c
        .http
        .get(format!(
            "{}?resourceVersion={since}&timeoutSeconds=30",
            small.api("/watch")
        ))
        .send()
        .unwrap();
    let mut deleted = 0;
    for line in std::io::BufReader::new(resp).lines() {
        let line = line.unwrap();
        if line.contains("\"type\":\"DELETED\"") {
            deleted += 1;
            if deleted == 12 {
                break;
            }
        }
    }
    small.kill();
    assert_eq!(deleted, 12, "the stream ended before 12 deletions");

    let next = start("128");
    eventually("another replica finishes the subtree", || {
        let (st, b) = c.get(&next.api(&format!("{STACK}/cells")));
        st == 200 && item_names(&b) == ["keep"]
    });
    let (st, t) = c.get(&next.api(STACK));
    assert!(st == 200 && terminating(&t), "{t}");
    let (st, b) = c.put_json(
        &next.api(&format!("{}/finalizers", cell_url("keep"))),
        &json!({}),
    );
    assert_eq!(st, 200, "{b}");
    eventually("the stack goes with its last cell", || {
        gone(&c, &next, STACK)
    });
    let events = events_since(&c, &next, since);
    let removed = events.iter().filter(|e| e["type"] == "DELETED").count();
    assert_eq!(removed, CELLS + 2, "each cell, keep and the stack, once");
}

/// One apply that removes a child's last finalizer and then its terminating
/// parent's: the parent stays while another child remains (each document
/// sees the ones before it).
#[test]
fn an_apply_removing_finalizers_keeps_a_parent_with_children_left() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let (st, b) = c.patch(
        &s.api(&format!("{STACK}/finalizers")),
        &json!({"metadata": {"finalizers": ["kukeon.io/runtime"]}}),
    );
    assert_eq!(st, 200, "{b}");
    let mut cells = Vec::new();
    for name in ["c1", "c2"] {
        let (st, b) = c.post_json(
            &s.api(&format!("{STACK}/cells")),
            &json!({"metadata": {"name": name, "finalizers": ["kukeon.io/runtime"]}}),
        );
        assert_eq!(st, 201, "{b}");
        cells.push(b);
    }
    let (st, b) = c.delete(&s.api(&format!("{STACK}?cascade=true")));
    assert_eq!(st, 202, "{b}");
    eventually("the cells are marked", || {
        ["c1", "c2"]
            .iter()
            .all(|n| terminating(&c.get(&s.api(&cell_url(n))).1))
    });
    // The stored documents, without their server-owned metadata, with no
    // finalizers.
    let doc = |path: &str| {
        let (_, mut d) = c.get(&s.api(path));
        let m = d["metadata"].as_object_mut().unwrap();
        for k in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            m.remove(k);
        }
        m.insert("finalizers".into(), json!([]));
        d.as_object_mut().unwrap().remove("status");
        d
    };
    let (st, b) = c.post_json(&s.api("/apply"), &json!([doc(&cell_url("c1")), doc(STACK)]));
    assert_eq!(st, 200, "{b}");
    eventually("c1 goes", || gone(&c, &s, &cell_url("c1")));
    let (st, t) = c.get(&s.api(STACK));
    assert_eq!(st, 200, "the stack stays while c2 remains: {t}");
    assert!(
        terminating(&t) && t["metadata"]["finalizers"].is_null(),
        "{t}"
    );
    let (st, b) = c.put_json(
        &s.api(&format!("{}/finalizers", cell_url("c2"))),
        &json!({}),
    );
    assert_eq!(st, 200, "{b}");
    eventually("the stack goes with its last cell", || gone(&c, &s, STACK));
}
