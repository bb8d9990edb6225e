//! Create / read / replace / patch / delete over the real binary: the
//! shared example manifests, server-owned metadata, status codes,
//! preconditions, status writes and durability across a restart.

mod common;
use common::*;

use serde_json::{Value, json};

const REALM: &str = "/realms/test-realm";
const SPACE: &str = "/realms/test-realm/spaces/test-space";
const STACK: &str = "/realms/test-realm/spaces/test-space/stacks/test-stack";
const CELL: &str = "/realms/test-realm/spaces/test-space/stacks/test-stack/cells/test-cell";

fn parent_of(path: &str) -> &str {
    &path[..path.rfind('/').unwrap()]
}

/// The four example manifests with the item path each one lives at.
fn examples() -> Vec<(&'static str, String)> {
    vec![
        (REALM, shared_example("realm.yaml")),
        (SPACE, shared_example("space.yaml")),
        (STACK, shared_example("stack.yaml")),
        (CELL, shared_example("cell.yaml")),
    ]
}

fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// Checks the server-owned metadata of a freshly created object.
#[track_caller]
fn assert_fresh_metadata(doc: &Value, name: &str) {
    let m = &doc["metadata"];
    assert_eq!(m["name"], name, "{doc}");
    assert!(
        !m["uid"].as_str().unwrap_or_default().is_empty(),
        "uid: {doc}"
    );
    assert!(rv(doc) > 0, "{doc}");
    assert_eq!(generation(doc), 1, "{doc}");
    assert!(
        is_rfc3339(m["creationTimestamp"].as_str().unwrap_or_default()),
        "{doc}"
    );
}

/// Checks what the examples say, field by field.
fn assert_example_hierarchy(c: &Client, s: &Server) {
    let (st, realm) = c.get(&s.api(REALM));
    assert_eq!(st, 200, "{realm}");
    assert_eq!(realm["apiVersion"], "v1beta1");
    assert_eq!(realm["kind"], "Realm");
    assert_fresh_metadata(&realm, "test-realm");
    assert_eq!(realm["spec"]["namespace"], "test-ns");
    assert_eq!(realm["status"]["state"], "Pending");

    let (st, space) = c.get(&s.api(SPACE));
    assert_eq!(st, 200, "{space}");
    assert_eq!(space["kind"], "Space");
    assert_fresh_metadata(&space, "test-space");
    assert_eq!(space["spec"], json!({"realmId": "test-realm"}));

    let (st, stack) = c.get(&s.api(STACK));
    assert_eq!(st, 200, "{stack}");
    assert_eq!(stack["kind"], "Stack");
    assert_fresh_metadata(&stack, "test-stack");
    assert_eq!(
        stack["spec"],
        json!({"id": "test-stack", "realmId": "test-realm", "spaceId": "test-space"})
    );

    let (st, cell) = c.get(&s.api(CELL));
    assert_eq!(st, 200, "{cell}");
    assert_eq!(cell["kind"], "Cell");
    assert_fresh_metadata(&cell, "test-cell");
    let spec = &cell["spec"];
    assert_eq!(spec["id"], "test-cell");
    assert_eq!(spec["realmId"], "test-realm");
    assert_eq!(spec["spaceId"], "test-space");
    assert_eq!(spec["stackId"], "test-stack");
    let ctrs = spec["containers"].as_array().unwrap();
    let ids: Vec<&str> = ctrs.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["root", "worker", "cache"]);
    assert_eq!(ctrs[0]["root"], true);
    assert!(
        ctrs[1].get("root").is_none(),
        "root omitted when false: {}",
        ctrs[1]
    );
    assert_eq!(ctrs[1]["env"], json!(["WORKER_MODE=active"]));
    for ctr in ctrs {
        assert_eq!(ctr["image"], "registry.eminwux.com/busybox:latest");
        assert_eq!(ctr["command"], "sleep");
        assert_eq!(ctr["args"], json!(["3600"]));
        // Embedded containers' coordinates default from the cell.
        assert_eq!(ctr["realmId"], "test-realm");
        assert_eq!(ctr["spaceId"], "test-space");
        assert_eq!(ctr["stackId"], "test-stack");
        assert_eq!(ctr["cellId"], "test-cell");
    }
    assert_eq!(cell["status"]["state"], "Pending");

    // Distinct objects, distinct uids and revisions.
    let uids: std::collections::HashSet<_> = [&realm, &space, &stack, &cell]
        .iter()
        .map(|d| d["metadata"]["uid"].clone())
        .collect();
    assert_eq!(uids.len(), 4);
    assert!(rv(&realm) < rv(&space) && rv(&space) < rv(&stack) && rv(&stack) < rv(&cell));
}

#[test]
fn example_manifests_create_the_hierarchy_as_yaml() {
    let s = Server::start();
    let c = Client::default();
    for (path, yaml) in examples() {
        let (st, body) = c.post_yaml(&s.api(parent_of(path)), &yaml);
        assert_eq!(st, 201, "POST {path}: {body}");
        assert_eq!(
            body,
            c.get(&s.api(path)).1,
            "create answers the stored object"
        );
    }
    assert_example_hierarchy(&c, &s);
}

#[test]
fn example_manifests_create_the_hierarchy_as_json() {
    let s = Server::start();
    let c = Client::default();
    for (path, yaml) in examples() {
        let doc = yaml_json(&yaml);
        let (st, body) = c.post_json(&s.api(parent_of(path)), &doc);
        assert_eq!(st, 201, "POST {path}: {body}");
    }
    assert_example_hierarchy(&c, &s);
}

#[test]
fn yaml_and_json_creates_store_the_same_documents() {
    let (sy, sj) = (Server::start(), Server::start());
    let c = Client::default();
    for (path, yaml) in examples() {
        assert_eq!(c.post_yaml(&sy.api(parent_of(path)), &yaml).0, 201);
        assert_eq!(
            c.post_json(&sj.api(parent_of(path)), &yaml_json(&yaml)).0,
            201
        );
        let (a, b) = (c.get(&sy.api(path)).1, c.get(&sj.api(path)).1);
        for key in ["apiVersion", "kind", "spec", "status"] {
            assert_eq!(a[key], b[key], "{path} {key}");
        }
        assert_eq!(a["metadata"]["name"], b["metadata"]["name"]);
    }
}

#[test]
fn create_answers_201_with_location_and_etag() {
    let s = Server::start();
    let c = Client::default();
    let r = c.raw(
        c.http
            .post(s.api("/realms"))
            .header("content-type", "application/yaml")
            .body(shared_example("realm.yaml")),
    );
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/api/v1beta1/realms/test-realm");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().unwrap();
    assert_eq!(etag, format!("\"{}\"", rv(&body)));
    let g = c.raw(c.http.get(s.api(REALM)));
    assert_eq!(g.status(), 200);
    assert_eq!(g.headers()["etag"].to_str().unwrap(), etag);
    assert!(
        g.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[test]
fn get_with_accept_yaml_returns_yaml() {
    let s = Server::start();
    let c = Client::default();
    for (path, yaml) in examples() {
        assert_eq!(c.post_yaml(&s.api(parent_of(path)), &yaml).0, 201);
    }
    for (path, _) in examples() {
        let (st, ctype, text) = c.get_yaml(&s.api(path));
        assert_eq!(st, 200, "{text}");
        assert!(ctype.starts_with("application/yaml"), "{ctype}");
        assert!(text.contains("apiVersion: v1beta1"), "not YAML: {text}");
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "JSON, not YAML: {text}"
        );
        assert_eq!(yaml_json(&text), c.get(&s.api(path)).1, "{path}");
    }
    // Lists too.
    let (st, ctype, text) = c.get_yaml(&format!("{}/cells", s.api(STACK)));
    assert_eq!(st, 200, "{text}");
    assert!(ctype.starts_with("application/yaml"), "{ctype}");
    let list = yaml_json(&text);
    assert_eq!(list["kind"], "CellList");
    assert_eq!(item_names(&list), ["test-cell"]);
}

#[test]
fn yaml_put_replaces_the_spec() {
    let s = Server::start();
    let c = Client::default();
    assert_eq!(
        c.post_yaml(&s.api("/realms"), &shared_example("realm.yaml"))
            .0,
        201
    );
    let yaml = shared_example("realm.yaml").replace("test-ns", "other-ns");
    let (st, body) = c.put_yaml(&s.api(REALM), &yaml);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["spec"]["namespace"], "other-ns");
    assert_eq!(generation(&body), 2);
    assert_eq!(c.get(&s.api(REALM)).1, body);
}

// ---- status codes ----

#[test]
fn status_codes_of_the_basic_verbs() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let cells = s.api("/realms/r/spaces/s/stacks/t/cells");
    let cell = format!("{cells}/c");
    let doc = json!({"metadata": {"name": "c"}, "spec": {"containers": [{"id": "a", "image": "busybox"}]}});

    let (st, created) = c.post_json(&cells, &doc);
    assert_eq!(st, 201, "{created}");
    assert_problem(&c.post_json(&cells, &doc), 409, "AlreadyExists", None);

    let (st, got) = c.get(&cell);
    assert_eq!((st, &got), (200, &created));

    let mut changed = got.clone();
    changed["spec"]["containers"][0]["image"] = json!("alpine");
    let (st, put) = c.put_json(&cell, &changed);
    assert_eq!(st, 200, "{put}");
    assert_eq!(put["spec"]["containers"][0]["image"], "alpine");

    let (st, patched) = c.patch(&cell, &json!({"metadata": {"labels": {"x": "1"}}}));
    assert_eq!(st, 200, "{patched}");
    assert_eq!(patched["metadata"]["labels"], json!({"x": "1"}));

    let (st, deleted) = c.delete(&cell);
    assert_eq!(st, 200, "{deleted}");
    assert_eq!(deleted["metadata"]["name"], "c");
    assert_eq!(deleted["spec"], patched["spec"]);

    assert_problem(&c.get(&cell), 404, "NotFound", None);
    assert_problem(&c.put_json(&cell, &changed), 404, "NotFound", None);
    assert_problem(
        &c.patch(&cell, &json!({"metadata": {"labels": {"y": "2"}}})),
        404,
        "NotFound",
        None,
    );
    assert_problem(&c.delete(&cell), 404, "NotFound", None);
    assert_problem(&c.get(&format!("{cell}/status")), 404, "NotFound", None);
    assert_problem(
        &c.put_json(&format!("{cell}/status"), &json!({"status": {}})),
        404,
        "NotFound",
        None,
    );

    // The error is problem+json.
    let r = c.raw(c.http.get(&cell));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[test]
fn missing_parent_is_404_naming_the_parent() {
    let s = Server::start();
    let c = Client::default();
    let r = c.post_json(
        &s.api("/realms/nope/spaces"),
        &json!({"metadata": {"name": "s"}}),
    );
    assert_problem(&r, 404, "NotFound", None);
    let detail = r.1["detail"].as_str().unwrap();
    assert!(
        detail.contains("Realm") && detail.contains("nope"),
        "{detail}"
    );

    hierarchy(&c, &s, "r", "s", "t");
    let r = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/missing-stack/cells"),
        &json!({"metadata": {"name": "c"}}),
    );
    assert_problem(&r, 404, "NotFound", None);
    let detail = r.1["detail"].as_str().unwrap();
    assert!(
        detail.contains("Stack") && detail.contains("missing-stack"),
        "{detail}"
    );

    let r = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/t/cells/no-cell/containers"),
        &json!({"metadata": {"name": "n"}}),
    );
    assert_problem(&r, 404, "NotFound", None);
    let detail = r.1["detail"].as_str().unwrap();
    assert!(
        detail.contains("Cell") && detail.contains("no-cell"),
        "{detail}"
    );
    // Nothing was created.
    assert_eq!(c.get(&s.api("/realms/nope")).0, 404);
    assert_eq!(
        c.get(&s.api("/realms/r/spaces/s/stacks/t/cells/no-cell/containers/n"))
            .0,
        404
    );
}

#[test]
fn server_owned_metadata_from_clients_is_ignored() {
    let s = Server::start();
    let c = Client::default();
    let (st, body) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "r", "uid": "client-uid", "generation": 42,
                "creationTimestamp": "2001-01-01T00:00:00Z"}}),
    );
    assert_eq!(st, 201, "{body}");
    assert_ne!(body["metadata"]["uid"], "client-uid");
    assert_eq!(generation(&body), 1);
    assert_ne!(
        body["metadata"]["creationTimestamp"],
        "2001-01-01T00:00:00Z"
    );
    let uid = body["metadata"]["uid"].clone();
    let created = body["metadata"]["creationTimestamp"].clone();
    let (st, put) = c.put_json(
        &s.api("/realms/r"),
        &json!({"metadata": {"name": "r", "uid": "other", "generation": 7,
                "creationTimestamp": "2002-02-02T00:00:00Z"}, "spec": {"namespace": "n2"}}),
    );
    assert_eq!(st, 200, "{put}");
    assert_eq!(put["metadata"]["uid"], uid);
    assert_eq!(put["metadata"]["creationTimestamp"], created);
    assert_eq!(generation(&put), 2);
}

#[test]
fn put_ignores_the_status_in_the_body() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let url = s.api("/realms/r/spaces/s/stacks/t");
    let (_, before) = c.get(&url);
    let mut doc = before.clone();
    doc["status"] = json!({"state": "Ready", "cgroupPath": "/kukeon/r/s/t"});
    let (st, after) = c.put_json(&url, &doc);
    assert_eq!(st, 200, "{after}");
    assert_eq!(after["status"], before["status"]);
    assert_eq!(rv(&after), rv(&before), "nothing changed: no new revision");
    doc["metadata"]["labels"] = json!({"k": "v"});
    let (st, after) = c.put_json(&url, &doc);
    assert_eq!(st, 200, "{after}");
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["metadata"]["labels"], json!({"k": "v"}));
}

// ---- preconditions ----

fn realm_with_namespace(c: &Client, s: &Server, ns: &str) -> Value {
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "r"}, "spec": {"namespace": ns}}),
    );
    assert_eq!(st, 201, "{b}");
    b
}

#[track_caller]
fn assert_unchanged(c: &Client, url: &str, want: &Value) {
    let (st, got) = c.get(url);
    assert_eq!(st, 200, "{got}");
    assert_eq!(&got, want, "a failed precondition must change nothing");
}

#[test]
fn stale_resource_version_in_put_body_is_409() {
    let s = Server::start();
    let c = Client::default();
    let url = s.api("/realms/r");
    let v1 = realm_with_namespace(&c, &s, "one");
    let (st, v2) = c.put_json(
        &url,
        &json!({"metadata": {"name": "r", "resourceVersion": rv(&v1).to_string()}, "spec": {"namespace": "two"}}),
    );
    assert_eq!(st, 200, "{v2}");
    assert!(rv(&v2) > rv(&v1));
    let r = c.put_json(
        &url,
        &json!({"metadata": {"name": "r", "resourceVersion": rv(&v1).to_string()}, "spec": {"namespace": "three"}}),
    );
    assert_problem(&r, 409, "Conflict", Some("metadata.resourceVersion"));
    assert_unchanged(&c, &url, &v2);
}

/// An If-Match the server cannot read is a 400 naming the header, never a
/// write without its precondition (a non-ASCII value used to read as
/// absent).
#[test]
fn unreadable_if_match_is_400_and_writes_nothing() {
    let s = Server::start();
    let c = Client::default();
    let url = s.api("/realms/r");
    let v1 = realm_with_namespace(&c, &s, "one");
    let current = rv(&v1);
    let bad: Vec<reqwest::header::HeaderValue> = [
        &b"\xc2\x84"[..],
        b"\"\"5\"\"",
        b"W/W/5",
        b"abc",
        b"\"\"",
        b"+5",
        b"99999999999999999999",
    ]
    .iter()
    .map(|v| reqwest::header::HeaderValue::from_bytes(v).unwrap())
    .collect();
    for value in &bad {
        let r = c.send(
            c.http
                .put(&url)
                .header("if-match", value.clone())
                .json(&json!({"metadata": {"name": "r"}, "spec": {"namespace": "two"}})),
        );
        assert_problem(&r, 400, "BadRequest", Some("If-Match"));
        let r = c.send(
            c.http
                .put(format!("{url}/status"))
                .header("if-match", value.clone())
                .json(&json!({"status": {"state": "Ready"}})),
        );
        assert_problem(&r, 400, "BadRequest", Some("If-Match"));
        let r = c.send(c.http.delete(&url).header("if-match", value.clone()));
        assert_problem(&r, 400, "BadRequest", Some("If-Match"));
    }
    // A revision of 20 digits is read (and is stale here), as in the body.
    let r = c.send(
        c.http
            .delete(&url)
            .header("if-match", "\"12345678901234567890\""),
    );
    assert_problem(&r, 409, "Conflict", None);
    assert_unchanged(&c, &url, &v1);
    // The forms the OpenAPI pattern allows are read: a stale one is 409, the
    // current one writes.
    let forms: [fn(u64) -> String; 3] = [
        |v| format!("\"{v}\""),
        |v| format!("W/\"{v}\""),
        |v| v.to_string(),
    ];
    let mut current = current;
    for (i, form) in forms.iter().enumerate() {
        let state = if i % 2 == 0 { "Ready" } else { "Failed" };
        let put = |tag: String| {
            c.send(
                c.http
                    .put(format!("{url}/status"))
                    .header("if-match", tag)
                    .json(&json!({"status": {"state": state}})),
            )
        };
        assert_problem(&put(form(current - 1)), 409, "Conflict", None);
        let r = put(form(current));
        assert_eq!(r.0, 200, "{}: {}", form(current), r.1);
        current = rv(&r.1);
    }
}

#[test]
fn stale_if_match_on_put_patch_status_and_delete_is_409() {
    let s = Server::start();
    let c = Client::default();
    let url = s.api("/realms/r");
    let v1 = realm_with_namespace(&c, &s, "one");
    let (st, v2) = c.patch(&url, &json!({"spec": {"namespace": "two"}}));
    assert_eq!(st, 200, "{v2}");
    let stale = format!("\"{}\"", rv(&v1));

    let r = c.send(
        c.http
            .put(&url)
            .header("if-match", &stale)
            .json(&json!({"metadata": {"name": "r"}, "spec": {"namespace": "three"}})),
    );
    assert_problem(&r, 409, "Conflict", None);
    assert_unchanged(&c, &url, &v2);

    let r = c.send(
        c.http
            .patch(&url)
            .header("if-match", &stale)
            .header("content-type", "application/merge-patch+json")
            .body(json!({"spec": {"namespace": "three"}}).to_string()),
    );
    assert_problem(&r, 409, "Conflict", None);
    assert_unchanged(&c, &url, &v2);

    // The precondition inside a merge patch body.
    let r = c.patch(
        &url,
        &json!({"metadata": {"resourceVersion": rv(&v1).to_string()}, "spec": {"namespace": "three"}}),
    );
    assert_problem(&r, 409, "Conflict", None);
    assert_unchanged(&c, &url, &v2);

    // Status subresource, header and body.
    let r = c.send(
        c.http
            .put(format!("{url}/status"))
            .header("if-match", &stale)
            .json(&json!({"status": {"state": "Ready"}})),
    );
    assert_problem(&r, 409, "Conflict", None);
    let r = c.put_json(
        &format!("{url}/status"),
        &json!({"metadata": {"resourceVersion": rv(&v1).to_string()}, "status": {"state": "Ready"}}),
    );
    assert_problem(&r, 409, "Conflict", None);
    let r = c.patch(
        &format!("{url}/status"),
        &json!({"metadata": {"resourceVersion": rv(&v1).to_string()}, "status": {"state": "Ready"}}),
    );
    assert_problem(&r, 409, "Conflict", None);
    assert_unchanged(&c, &url, &v2);

    // Delete.
    let r = c.send(c.http.delete(&url).header("if-match", &stale));
    assert_problem(&r, 409, "Conflict", None);
    assert_unchanged(&c, &url, &v2);

    // The current version passes, with or without quotes, and `*` always.
    let current = format!("\"{}\"", rv(&v2));
    let (st, v3) = c.send(
        c.http
            .put(&url)
            .header("if-match", &current)
            .json(&json!({"metadata": {"name": "r"}, "spec": {"namespace": "three"}})),
    );
    assert_eq!(st, 200, "{v3}");
    assert_eq!(v3["spec"]["namespace"], "three");
    let (st, v4) = c.send(
        c.http
            .put(&url)
            .header("if-match", "*")
            .json(&json!({"metadata": {"name": "r"}, "spec": {"namespace": "four"}})),
    );
    assert_eq!(st, 200, "{v4}");
    let (st, gone) = c.send(
        c.http
            .delete(&url)
            .header("if-match", format!("\"{}\"", rv(&v4))),
    );
    assert_eq!(st, 200, "{gone}");
    assert_eq!(gone["spec"]["namespace"], "four");
    assert_eq!(c.get(&url).0, 404);
}

// ---- status writes, generation, revisions ----

fn cell_url(s: &Server) -> String {
    s.api("/realms/r/spaces/s/stacks/t/cells/c")
}

fn make_cell(c: &Client, s: &Server) -> Value {
    hierarchy(c, s, "r", "s", "t");
    post_cell(c, s)
}

/// Creates cell `c` (labelled app=web) under an existing hierarchy.
fn post_cell(c: &Client, s: &Server) -> Value {
    let (st, b) = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/t/cells"),
        &json!({"metadata": {"name": "c", "labels": {"app": "web"}},
                "spec": {"containers": [{"id": "a", "image": "busybox"}]}}),
    );
    assert_eq!(st, 201, "{b}");
    b
}

#[test]
fn status_put_and_patch_keep_spec_labels_and_generation() {
    let s = Server::start();
    let c = Client::default();
    let created = make_cell(&c, &s);
    let url = cell_url(&s);
    let status = format!("{url}/status");

    let (st, a) = c.put_json(
        &status,
        &json!({"status": {"state": "Ready", "cgroupPath": "/kukeon/r/s/t/c",
                           "containers": [{"name": "a", "id": "a", "state": "Ready",
                                           "startTime": "2024-05-01T10:00:00Z"}]}}),
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["spec"], created["spec"]);
    assert_eq!(a["metadata"]["labels"], created["metadata"]["labels"]);
    assert_eq!(a["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(generation(&a), 1);
    assert!(rv(&a) > rv(&created));
    assert_eq!(a["status"]["state"], "Ready");
    assert_eq!(a["status"]["cgroupPath"], "/kukeon/r/s/t/c");
    assert_eq!(
        a["status"]["containers"][0]["startTime"],
        "2024-05-01T10:00:00Z"
    );
    assert_eq!(c.get(&status).1, a, "GET .../status returns the object");

    // Merge patch of the status: other status fields stay.
    let (st, b) = c.patch(&status, &json!({"status": {"readyObserved": true}}));
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"]["state"], "Ready");
    assert_eq!(b["status"]["readyObserved"], true);
    assert_eq!(b["status"]["containers"], a["status"]["containers"]);
    assert_eq!(b["spec"], created["spec"]);
    assert_eq!(b["metadata"]["labels"], created["metadata"]["labels"]);
    assert_eq!(generation(&b), 1);
    assert!(rv(&b) > rv(&a));

    // A status write ignores spec and labels in its body.
    let (st, b2) = c.put_json(
        &status,
        &json!({"metadata": {"labels": {"other": "x"}},
                "spec": {"containers": [{"id": "zzz", "image": "evil"}]},
                "status": b["status"].clone()}),
    );
    assert_eq!(st, 200, "{b2}");
    assert_eq!(b2, b, "identical status: nothing written");

    // An identical status PUT writes nothing: same revision.
    let (st, same) = c.put_json(&status, &json!({"status": b["status"].clone()}));
    assert_eq!(st, 200, "{same}");
    assert_eq!(rv(&same), rv(&b));
    assert_eq!(same, c.get(&url).1);

    // Status on a main PATCH is ignored.
    let (st, same) = c.patch(&url, &json!({"status": {"state": "Failed"}}));
    assert_eq!(st, 200, "{same}");
    assert_eq!(rv(&same), rv(&b));
    assert_eq!(same["status"]["state"], "Ready");
}

#[test]
fn generation_bumps_only_on_spec_changes() {
    let s = Server::start();
    let c = Client::default();
    let created = make_cell(&c, &s);
    let url = cell_url(&s);

    // Label-only change: new revision, same generation.
    let mut doc = created.clone();
    doc["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
    let (st, a) = c.put_json(&url, &doc);
    assert_eq!(st, 200, "{a}");
    assert_eq!(generation(&a), 1);
    assert!(rv(&a) > rv(&created));
    assert_eq!(
        a["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );

    // Identical PUT (the GET body as is): nothing changes.
    let (st, same) = c.put_json(&url, &a);
    assert_eq!(st, 200, "{same}");
    assert_eq!(same, a);
    assert_eq!(c.get(&url).1, a);
    // The same with the coordinates the server defaulted left out.
    let (st, same) = c.put_json(
        &url,
        &json!({"metadata": {"name": "c", "labels": {"app": "web", "tier": "front"}},
                "spec": {"containers": [{"id": "a", "image": "busybox"}]}}),
    );
    assert_eq!(st, 200, "{same}");
    assert_eq!(rv(&same), rv(&a));

    // Identical merge patch: nothing changes.
    let (st, same) = c.patch(&url, &json!({"metadata": {"labels": {"app": "web"}}}));
    assert_eq!(st, 200, "{same}");
    assert_eq!(rv(&same), rv(&a));

    // Spec change: generation 2.
    let mut doc = a.clone();
    doc["spec"]["autoDelete"] = json!(true);
    let (st, b) = c.put_json(&url, &doc);
    assert_eq!(st, 200, "{b}");
    assert_eq!(generation(&b), 2);
    assert!(rv(&b) > rv(&a));

    // Spec change by merge patch: generation 3; labels kept.
    let (st, p) = c.patch(&url, &json!({"spec": {"nestedCgroupRuntime": true}}));
    assert_eq!(st, 200, "{p}");
    assert_eq!(generation(&p), 3);
    assert_eq!(p["spec"]["autoDelete"], true);
    assert_eq!(p["spec"]["nestedCgroupRuntime"], true);
    assert_eq!(p["metadata"]["labels"], a["metadata"]["labels"]);

    // Removing a label by merge patch (null).
    let (st, q) = c.patch(&url, &json!({"metadata": {"labels": {"tier": null}}}));
    assert_eq!(st, 200, "{q}");
    assert_eq!(q["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(generation(&q), 3);

    // A status write after all this keeps generation 3.
    let (st, r) = c.put_json(
        &format!("{url}/status"),
        &json!({"status": {"state": "Stopped"}}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(generation(&r), 3);
    assert_eq!(r["spec"], q["spec"]);
}

#[test]
fn write_responses_carry_the_new_etag() {
    let s = Server::start();
    let c = Client::default();
    make_cell(&c, &s);
    let url = cell_url(&s);
    let r = c.raw(
        c.http
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"n":"1"}}}"#),
    );
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().unwrap();
    assert_eq!(etag, format!("\"{}\"", rv(&body)));
    let r = c.raw(
        c.http
            .put(format!("{url}/status"))
            .json(&json!({"status": {"state": "Ready"}})),
    );
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().unwrap();
    assert_eq!(etag, format!("\"{}\"", rv(&body)));
}

#[test]
fn revisions_are_store_wide_and_strictly_increasing() {
    let s = Server::start();
    let c = Client::default();
    let mut last = 0;
    for name in ["a", "b", "c"] {
        let (st, b) = c.post_json(&s.api("/realms"), &json!({"metadata": {"name": name}}));
        assert_eq!(st, 201);
        if on_etcd() {
            // (etcd revision + offset) * 1e6 + index in the transaction:
            // increasing, not dense, and a one-object write is index 0.
            assert!(rv(&b) > last, "strictly increasing: {b}");
            assert_eq!(rv(&b) % 1_000_000, 0, "first index of its transaction: {b}");
        } else {
            assert_eq!(rv(&b), last + 1, "one revision per object: {b}");
        }
        last = rv(&b);
    }
    let (_, list) = c.get(&s.api("/realms"));
    if on_etcd() {
        // "Everything up to etcd revision R", R at or past the last write
        // (the cluster is shared, and the replicas' heartbeats are writes).
        assert!(rv(&list) >= last + 999_999, "{list}");
        assert_eq!(rv(&list) % 1_000_000, 999_999, "{list}");
    } else {
        assert_eq!(rv(&list), last);
    }
    let (_, b) = c.patch(&s.api("/realms/a"), &json!({"spec": {"namespace": "x"}}));
    if on_etcd() {
        assert!(rv(&b) > rv(&list), "{b}");
    } else {
        assert_eq!(rv(&b), last + 1);
    }
}

// ---- durability ----

#[test]
fn data_survives_a_restart_and_revisions_continue() {
    let mut s = Server::start();
    let c = Client::default();
    for (path, yaml) in examples() {
        assert_eq!(c.post_yaml(&s.api(parent_of(path)), &yaml).0, 201);
    }
    let (st, _) = c.put_json(
        &format!("{}/status", s.api(CELL)),
        &json!({"status": {"state": "Ready", "readyObserved": true}}),
    );
    assert_eq!(st, 200);
    let before: Vec<Value> = examples().iter().map(|(p, _)| c.get(&s.api(p)).1).collect();
    let (_, realms) = c.get(&s.api("/realms"));
    let top = rv(&realms);
    assert!(before.iter().all(|d| rv(d) <= top));

    s.restart();

    let after: Vec<Value> = examples().iter().map(|(p, _)| c.get(&s.api(p)).1).collect();
    assert_eq!(
        before, after,
        "every object, byte for byte (uid, rv, timestamps)"
    );
    let (_, realms) = c.get(&s.api("/realms"));
    if on_etcd() {
        // etcd's revision is cluster-wide: other tenants' writes and the
        // bookmark heartbeats move it while the server restarts.
        assert!(rv(&realms) >= top, "the revision counter survives");
    } else {
        assert_eq!(rv(&realms), top, "the revision counter survives");
    }
    let (st, r2) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "after-restart"}}),
    );
    assert_eq!(st, 201, "{r2}");
    let (st, p) = c.patch(&s.api(REALM), &json!({"metadata": {"labels": {"k": "v"}}}));
    assert_eq!(st, 200, "{p}");
    if on_etcd() {
        assert!(rv(&r2) > rv(&realms), "revisions continue upward");
        assert!(rv(&p) > rv(&r2));
    } else {
        assert_eq!(rv(&r2), top + 1, "revisions continue upward");
        assert_eq!(rv(&p), top + 2);
    }

    s.restart();
    assert_eq!(c.get(&s.api("/realms/after-restart")).1, r2);
    assert_eq!(c.get(&s.api(REALM)).1, p);
}

#[test]
fn acknowledged_writes_survive_a_kill() {
    let mut s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let cells = s.api("/realms/r/spaces/s/stacks/t/cells");
    let mut acked = Vec::new();
    for i in 0..30 {
        let (st, b) = c.post_json(&cells, &json!({"metadata": {"name": format!("c{i:02}")}}));
        assert_eq!(st, 201, "{b}");
        acked.push(b);
    }
    let (st, last) = c.put_json(
        &format!("{cells}/c29/status"),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "{last}");
    *acked.last_mut().unwrap() = last;
    // No graceful shutdown: what was acknowledged must be on disk.
    s.kill();
    s.restart();
    let (st, list) = c.get(&cells);
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["items"], json!(acked));
    let (st, b) = c.post_json(&cells, &json!({"metadata": {"name": "next"}}));
    assert_eq!(st, 201, "{b}");
    if on_etcd() {
        // A list reports "everything up to" an etcd revision.
        assert!(rv(&b) > rv(&list), "{b} {list}");
    } else {
        assert_eq!(rv(&b), rv(&list) + 1);
    }
}

#[test]
fn write_responses_honour_accept_yaml() {
    let s = Server::start();
    let c = Client::default();
    let r = c.raw(
        c.http
            .post(s.api("/realms"))
            .header("content-type", "application/yaml")
            .header("accept", "application/yaml")
            .body(shared_example("realm.yaml")),
    );
    assert_eq!(r.status(), 201);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/yaml")
    );
    let doc = yaml_json(&r.text().unwrap());
    assert_eq!(doc, c.get(&s.api(REALM)).1);
}

#[test]
fn unicode_names_round_trip_through_urls() {
    let s = Server::start();
    let c = Client::default();
    let r = c.raw(
        c.http
            .post(s.api("/realms"))
            .json(&json!({"metadata": {"name": "Ωmega.v1-x"}})),
    );
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(loc, "/api/v1beta1/realms/%CE%A9mega.v1-x");
    let (st, got) = c.get(&format!("{}{loc}", s.base));
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["metadata"]["name"], "Ωmega.v1-x");
    let (_, list) = c.get(&s.api("/realms"));
    assert_eq!(item_names(&list), ["Ωmega.v1-x"]);
}

/// GETs answer from a rendering kept per revision: after every kind of
/// write the next GET shows that write, with its revision as the ETag, and
/// equals the document the write answered (and the YAML rendering).
#[test]
fn a_get_after_each_write_shows_that_write() {
    let s = Server::start();
    let c = Client::default();
    let created = make_cell(&c, &s);
    let url = cell_url(&s);
    let get = |want: &Value| {
        let resp = c.raw(c.http.get(&url));
        assert_eq!(resp.status(), 200);
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let got: Value = resp.json().unwrap();
        assert_eq!(&got, want);
        assert_eq!(etag, format!("\"{}\"", rv(want)));
        // Twice: the second is the kept rendering.
        assert_eq!(&c.get(&url).1, want);
    };
    get(&created);
    let (st, a) = c.put_json(
        &format!("{url}/status"),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "{a}");
    get(&a);
    let (st, b) = c.patch(&url, &json!({"metadata": {"labels": {"app": "db"}}}));
    assert_eq!(st, 200, "{b}");
    get(&b);
    let mut replaced = b.clone();
    replaced["spec"]["containers"][0]["image"] = json!("alpine");
    let (st, r) = c.put_json(&url, &replaced);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["spec"]["containers"][0]["image"], "alpine");
    get(&r);
    let yaml = c
        .raw(c.http.get(&url).header("accept", "application/yaml"))
        .text()
        .unwrap();
    let from_yaml: Value = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, r);
    // Deleted and created again under the same name: the new object.
    let (st, _) = c.delete(&url);
    assert_eq!(st, 200);
    assert_eq!(c.get(&url).0, 404);
    let again = post_cell(&c, &s);
    assert_ne!(again["metadata"]["uid"], r["metadata"]["uid"]);
    get(&again);
}
