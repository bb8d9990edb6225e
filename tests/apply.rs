//! `POST /api/v1beta1/apply` against a real server: created, unchanged and
//! configured outcomes, hierarchies in one request, all-or-nothing failure,
//! dry run, JSON input and a large manifest.

mod common;

use std::fmt::Write as _;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};

/// POSTs `body` to `/apply` with `content_type` (and `?dryRun=true`).
fn apply(c: &Client, s: &Server, body: &str, content_type: &str, dry_run: bool) -> Reply {
    let url = if dry_run {
        s.api("/apply?dryRun=true")
    } else {
        s.api("/apply")
    };
    c.send(
        c.http
            .post(url)
            .header("content-type", content_type)
            .body(body.to_string()),
    )
}

fn apply_yaml(c: &Client, s: &Server, body: &str) -> Reply {
    apply(c, s, body, "application/yaml", false)
}

/// A resourceVersion (a JSON string) as a number.
fn rv_of(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a resourceVersion: {v}"))
}

/// The outcome of every item, in order.
fn outcomes(result: &Value) -> Vec<&str> {
    result["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {result}"))
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect()
}

const MULTI: [&str; 3] = [
    "/realms/multi-realm",
    "/realms/multi-realm/spaces/multi-space",
    "/realms/multi-realm/spaces/multi-space/stacks/multi-stack",
];

#[test]
fn multi_resource_is_created_then_unchanged_then_configured() {
    let s = Server::start();
    let c = Client::default();
    let manifest = shared_example("multi-resource.yaml");

    // First apply: three objects created, in order, with consecutive revisions.
    let (st, result) = apply_yaml(&c, &s, &manifest);
    assert_eq!(st, 200, "{result}");
    assert_eq!(result["apiVersion"], "v1beta1");
    assert_eq!(result["kind"], "ApplyResult");
    assert_eq!(result["dryRun"], false);
    assert_eq!(outcomes(&result), ["created", "created", "created"]);
    let items = result["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Realm", "Space", "Stack"]);
    let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "multi-realm",
            "multi-realm/multi-space",
            "multi-realm/multi-space/multi-stack"
        ]
    );
    let revs: Vec<u64> = items
        .iter()
        .map(|i| i["resourceVersion"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(revs[1], revs[0] + 1);
    assert_eq!(revs[2], revs[0] + 2);
    if on_etcd() {
        // One etcd transaction: indexes 0, 1, 2 of its revision.
        assert_eq!(revs[0] % 1_000_000, 0, "{result}");
    }
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["generation"], 1);
    }
    let after_create = revision(&c, &s);
    if on_etcd() {
        // The apply's position: everything up to its etcd revision; the
        // store's may have moved on (the cluster's revision is shared).
        assert_eq!(result["resourceVersion"], (revs[0] + 999_999).to_string());
        assert!(after_create >= revs[0] + 999_999);
    } else {
        assert_eq!(after_create, revs[2]);
        assert_eq!(result["resourceVersion"], after_create.to_string());
    }
    let mut stored = Vec::new();
    for (url, expected_rv) in MULTI.iter().zip(&revs) {
        let (st, doc) = c.get(&s.api(url));
        assert_eq!(st, 200, "{url}: {doc}");
        assert_eq!(rv(&doc), *expected_rv, "{url}");
        assert_eq!(generation(&doc), 1, "{url}");
        stored.push(doc);
    }
    assert_eq!(stored[0]["spec"]["namespace"], "multi-ns");

    // Re-apply: unchanged, no new revision, the objects untouched.
    let (st, result) = apply_yaml(&c, &s, &manifest);
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["unchanged", "unchanged", "unchanged"]);
    if on_etcd() {
        // Nothing written: the position the apply read at.
        assert!(
            rv_of(&result["resourceVersion"]) >= after_create,
            "{result}"
        );
    } else {
        assert_eq!(result["resourceVersion"], after_create.to_string());
    }
    assert_changes_since(&c, &s, after_create, 0, "re-apply took a revision");
    for (url, before) in MULTI.iter().zip(&stored) {
        let (_, doc) = c.get(&s.api(url));
        assert_eq!(&doc, before, "{url} changed on an identical apply");
    }

    // One document changed (the space's spec): configured, generation 2,
    // exactly one new revision; the others unchanged.
    let changed = manifest.replace(
        "  realmId: multi-realm\n---",
        "  realmId: multi-realm\n  cniConfigPath: /etc/cni/net.d/multi.conflist\n---",
    );
    assert_ne!(changed, manifest, "the edit must hit the space document");
    let (st, result) = apply_yaml(&c, &s, &changed);
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["unchanged", "configured", "unchanged"]);
    assert_eq!(result["items"][1]["generation"], 2);
    let space_rv = rv_of(&result["items"][1]["resourceVersion"]);
    if on_etcd() {
        assert!(space_rv > after_create, "{result}");
        assert_eq!(space_rv % 1_000_000, 0, "alone in its transaction");
    } else {
        assert_eq!(space_rv, after_create + 1);
    }
    assert_changes_since(&c, &s, after_create, 1, "one new revision");
    let (_, space) = c.get(&s.api(MULTI[1]));
    assert_eq!(generation(&space), 2);
    assert_eq!(rv(&space), space_rv);
    assert_eq!(
        space["spec"]["cniConfigPath"],
        "/etc/cni/net.d/multi.conflist"
    );
    assert_eq!(space["metadata"]["uid"], stored[1]["metadata"]["uid"]);
    for i in [0, 2] {
        let (_, doc) = c.get(&s.api(MULTI[i]));
        assert_eq!(doc, stored[i], "{} changed", MULTI[i]);
    }

    // A label-only change configures without a new generation.
    let labelled = changed.replace(
        "  name: multi-stack\n",
        "  name: multi-stack\n  labels:\n    tier: web\n",
    );
    let (st, result) = apply_yaml(&c, &s, &labelled);
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["unchanged", "unchanged", "configured"]);
    assert_eq!(result["items"][2]["generation"], 1);
    let (_, stack) = c.get(&s.api(MULTI[2]));
    assert_eq!(stack["metadata"]["labels"]["tier"], "web");
}

#[test]
fn a_hierarchy_and_its_cell_in_one_request() {
    let s = Server::start();
    let c = Client::default();
    let before = revision(&c, &s);
    let (st, result) = apply_yaml(&c, &s, &hierarchy_with_cell_and_container());
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["created"; 5]);
    let paths: Vec<&str> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "test-realm",
            "test-realm/test-space",
            "test-realm/test-space/test-stack",
            "test-realm/test-space/test-stack/test-cell",
            "test-realm/test-space/test-stack/test-cell/sidecar",
        ]
    );
    // k objects take k consecutive revisions.
    let revs: Vec<u64> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| rv_of(&i["resourceVersion"]))
        .collect();
    for (i, r) in revs.iter().enumerate() {
        assert_eq!(*r, revs[0] + i as u64, "{result}");
    }
    assert_changes_since(&c, &s, before, 5, "k objects, k revisions");
    let cell_url = "/realms/test-realm/spaces/test-space/stacks/test-stack/cells/test-cell";
    let (st, cell) = c.get(&s.api(cell_url));
    assert_eq!(st, 200, "{cell}");
    let ids: Vec<&str> = cell["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["root", "worker", "cache"]);
    assert_eq!(
        cell["spec"]["containers"][1]["env"][0],
        "WORKER_MODE=active"
    );
    let (st, container) = c.get(&s.api(&format!("{cell_url}/containers/sidecar")));
    assert_eq!(st, 200, "{container}");
    assert_eq!(container["spec"]["cellId"], "test-cell");
    let (_, cells) = c.get_query(&s.api("/cells"), &[("realm", "test-realm")]);
    assert_eq!(item_names(&cells), ["test-cell"]);
}

#[test]
fn an_invalid_document_fails_the_whole_request_and_writes_nothing() {
    let s = Server::start();
    let c = Client::default();
    // An existing object the failing request would have updated.
    let (st, r) = apply_yaml(
        &c,
        &s,
        "kind: Realm\nmetadata:\n  name: keep\nspec:\n  namespace: keep-ns\n",
    );
    assert_eq!(st, 200, "{r}");
    let (_, keep_before) = c.get(&s.api("/realms/keep"));
    let before = revision(&c, &s);

    // Document 4 (a cell) has a tty on a non-attachable container.
    let manifest = format!(
        "kind: Realm\nmetadata:\n  name: keep\nspec:\n  namespace: changed-ns\n---\n{}\
         ---\nkind: Cell\nmetadata:\n  name: bad\nspec:\n  realmId: test-realm\n  spaceId: test-space\n  \
         stackId: test-stack\n  containers:\n    - id: ok\n      image: busybox\n    - id: shell\n      \
         image: busybox\n      tty:\n        prompt: \"$ \"\n",
        ["realm.yaml", "space.yaml", "stack.yaml"]
            .map(shared_example)
            .join("---\n")
    );
    let r = apply_yaml(&c, &s, &manifest);
    assert_problem(
        &r,
        422,
        "Invalid",
        Some("documents[4].spec.containers[1].tty"),
    );
    assert!(
        r.1["detail"]
            .as_str()
            .unwrap()
            .starts_with("documents[4]: "),
        "{}",
        r.1
    );
    assert_changes_since(&c, &s, before, 0, "a failed apply took a revision");
    for url in [
        "/realms/test-realm",
        "/realms/test-realm/spaces/test-space",
        "/realms/test-realm/spaces/test-space/stacks/test-stack",
    ] {
        assert_eq!(c.get(&s.api(url)).0, 404, "{url} was written");
    }
    let (_, keep) = c.get(&s.api("/realms/keep"));
    assert_eq!(keep, keep_before, "the update of document 0 was written");

    // A document whose parent is neither stored nor earlier in the request
    // fails in the store, after the earlier documents were staged: still
    // nothing is written.
    let r = apply_yaml(
        &c,
        &s,
        "kind: Realm\nmetadata: {name: lone}\n---\nkind: Stack\nmetadata: {name: t}\n\
         spec: {realmId: lone, spaceId: missing}\n",
    );
    assert_eq!(r.0, 404, "{}", r.1);
    assert_eq!(r.1["reason"], "NotFound");
    assert!(
        r.1["field"]
            .as_str()
            .unwrap_or_default()
            .starts_with("documents[1]"),
        "{}",
        r.1
    );
    assert_eq!(c.get(&s.api("/realms/lone")).0, 404);
    assert_changes_since(&c, &s, before, 0, "a failed apply took a revision");

    // A document of an unknown kind, and a typo'd field, are 400s naming it.
    let r = apply_yaml(
        &c,
        &s,
        "kind: Realm\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: p}\n",
    );
    assert_problem(&r, 400, "BadRequest", Some("documents[1].kind"));
    let r = apply_yaml(
        &c,
        &s,
        "kind: Realm\nmetadata: {name: a}\nspec: {namespce: x}\n",
    );
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(
        r.1["field"]
            .as_str()
            .unwrap_or_default()
            .starts_with("documents[0]"),
        "{}",
        r.1
    );
    assert_eq!(c.get(&s.api("/realms/a")).0, 404);
    assert_changes_since(&c, &s, before, 0, "a failed apply took a revision");
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let s = Server::start();
    let c = Client::default();
    let manifest = shared_example("multi-resource.yaml");
    let before = revision(&c, &s);

    let (st, result) = apply(&c, &s, &manifest, "application/yaml", true);
    assert_eq!(st, 200, "{result}");
    assert_eq!(result["dryRun"], true);
    assert_eq!(outcomes(&result), ["created", "created", "created"]);
    assert_changes_since(&c, &s, before, 0, "dry run took a revision");
    for url in MULTI {
        assert_eq!(c.get(&s.api(url)).0, 404, "{url} was written by a dry run");
    }
    let (_, realms) = c.get(&s.api("/realms"));
    assert!(item_names(&realms).is_empty());

    // On stored objects, a dry run reports configured but changes nothing.
    let (st, r) = apply_yaml(&c, &s, &manifest);
    assert_eq!(st, 200, "{r}");
    let stored = revision(&c, &s);
    let (_, realm_before) = c.get(&s.api(MULTI[0]));
    let changed = manifest.replace("namespace: multi-ns", "namespace: other-ns");
    let (st, result) = apply(&c, &s, &changed, "application/yaml", true);
    assert_eq!(st, 200, "{result}");
    assert_eq!(result["dryRun"], true);
    assert_eq!(outcomes(&result), ["configured", "unchanged", "unchanged"]);
    assert_changes_since(&c, &s, stored, 0, "dry run took a revision");
    let (_, realm) = c.get(&s.api(MULTI[0]));
    assert_eq!(realm, realm_before);

    // An invalid document fails a dry run like a real one.
    let r = apply(
        &c,
        &s,
        "kind: Realm\nmetadata: {name: bad_name}\n",
        "application/yaml",
        true,
    );
    assert_problem(&r, 422, "Invalid", Some("documents[0].metadata.name"));
    assert_changes_since(&c, &s, stored, 0, "dry run took a revision");
}

#[test]
fn json_arrays_and_documents_are_applied() {
    let s = Server::start();
    let c = Client::default();
    let docs: Vec<Value> = shared_example("multi-resource.yaml")
        .split("---\n")
        .map(yaml_json)
        .collect();
    assert_eq!(docs.len(), 3);
    let body = Value::Array(docs.clone()).to_string();
    let (st, result) = apply(&c, &s, &body, "application/json", false);
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["created", "created", "created"]);
    for url in MULTI {
        assert_eq!(c.get(&s.api(url)).0, 200, "{url}");
    }
    let (st, result) = apply(&c, &s, &body, "application/json", false);
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["unchanged", "unchanged", "unchanged"]);

    // One JSON document (not an array).
    let one = json!({
        "apiVersion": "v1beta1",
        "kind": "Space",
        "metadata": {"name": "second", "labels": {"via": "json"}},
        "spec": {"realmId": "multi-realm"}
    });
    let (st, result) = apply(&c, &s, &one.to_string(), "application/json", false);
    assert_eq!(st, 200, "{result}");
    assert_eq!(outcomes(&result), ["created"]);
    assert_eq!(result["items"][0]["path"], "multi-realm/second");
    let (_, space) = c.get(&s.api("/realms/multi-realm/spaces/second"));
    assert_eq!(space["metadata"]["labels"]["via"], "json");

    // An empty array is a 400, not a silent success.
    let r = apply(&c, &s, "[]", "application/json", false);
    assert_problem(&r, 400, "BadRequest", None);
}

#[test]
fn a_thousand_documents_in_one_request() {
    let s = Server::start();
    let c = Client::default();
    let mut manifest = String::from(
        "kind: Realm\nmetadata: {name: big}\n---\nkind: Space\nmetadata: {name: s}\nspec: {realmId: big}\n\
         ---\nkind: Stack\nmetadata: {name: t}\nspec: {realmId: big, spaceId: s}\n",
    );
    for i in 0..997 {
        write!(
            manifest,
            "---\nkind: Cell\nmetadata:\n  name: cell-{i:04}\n  labels: {{n: \"{i}\"}}\nspec:\n  \
             realmId: big\n  spaceId: s\n  stackId: t\n  containers:\n    - id: main\n      \
             image: registry.example.com/app:{i}\n      command: sleep\n      args: [\"3600\"]\n"
        )
        .unwrap();
    }
    let before = revision(&c, &s);
    if on_etcd() {
        // One etcd transaction, never split: 1000 documents exceed the
        // cluster's --max-txn-ops (128), so nothing is written.
        let r = apply_yaml(&c, &s, &manifest);
        assert_problem(&r, 413, "PayloadTooLarge", None);
        assert!(
            r.1["detail"]
                .as_str()
                .unwrap()
                .contains("--etcd-max-txn-ops"),
            "{}",
            r.1
        );
        assert_changes_since(&c, &s, before, 0, "a refused apply wrote");
        assert_eq!(c.get(&s.api("/realms/big")).0, 404);
        // Within the limit, the documents' k objects take k consecutive
        // revisions of one transaction.
        let docs: Vec<&str> = manifest.split("---\n").take(100).collect();
        let (st, result) = apply_yaml(&c, &s, &docs.join("---\n"));
        assert_eq!(st, 200, "{result}");
        let items = result["items"].as_array().unwrap();
        assert_eq!(items.len(), 100);
        let first = rv_of(&items[0]["resourceVersion"]);
        assert_eq!(first % 1_000_000, 0);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item["outcome"], "created");
            assert_eq!(rv_of(&item["resourceVersion"]), first + i as u64);
        }
        assert_changes_since(&c, &s, before, 100, "100 documents");
        let (_, cells) = c.get_query(&s.api("/cells"), &[("realm", "big")]);
        assert_eq!(item_names(&cells).len(), 97);
        return;
    }
    let started = Instant::now();
    let (st, result) = apply_yaml(&c, &s, &manifest);
    let took = started.elapsed();
    eprintln!(
        "apply of 1000 documents ({} KiB of YAML) in one request took {took:?}",
        manifest.len() / 1024
    );
    assert_eq!(st, 200, "{result}");
    let items = result["items"].as_array().unwrap();
    assert_eq!(items.len(), 1000);
    assert!(items.iter().all(|i| i["outcome"] == "created"));
    assert_eq!(items[999]["path"], "big/s/t/cell-0996");
    assert_eq!(revision(&c, &s), before + 1000);
    let (_, cells) = c.get_query(&s.api("/cells"), &[("realm", "big")]);
    assert_eq!(item_names(&cells).len(), 997);
    let (_, cell) = c.get(&s.api("/realms/big/spaces/s/stacks/t/cells/cell-0500"));
    assert_eq!(
        cell["spec"]["containers"][0]["image"],
        "registry.example.com/app:500"
    );

    // The same manifest again: all unchanged, no revision.
    let started = Instant::now();
    let (st, result) = apply_yaml(&c, &s, &manifest);
    eprintln!(
        "re-apply of the same 1000 documents (all unchanged) took {:?}",
        started.elapsed()
    );
    assert_eq!(st, 200, "{result}");
    assert!(
        result["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["outcome"] == "unchanged")
    );
    assert_eq!(revision(&c, &s), before + 1000);
}
