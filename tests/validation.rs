//! Rejected bodies: 400 for malformed documents (unknown fields, wrong
//! apiVersion/kind, URL mismatches), 422 for every validation rule of
//! `API.md` ("Validation"), each naming the field; and a rejected write
//! changes nothing.

mod common;
use common::*;

use serde_json::{Value, json};

const STACK: &str = "/realms/r/spaces/s/stacks/t";

fn setup() -> (Server, Client) {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    create_named(&c, &s, &format!("{STACK}/cells"), "c");
    (s, c)
}

fn cells(s: &Server) -> String {
    s.api(&format!("{STACK}/cells"))
}

fn containers(s: &Server) -> String {
    s.api(&format!("{STACK}/cells/c/containers"))
}

fn cell_doc(name: &str, containers: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": containers}})
}

/// Nothing but the setup exists: no cell other than `c`, no container.
#[track_caller]
fn assert_nothing_written(c: &Client, s: &Server, rev: u64) {
    let (_, list) = c.get(&s.api("/cells"));
    assert_eq!(item_names(&list), ["c"]);
    assert_eq!(rv(&list), rev, "no revision was used");
    let (_, list) = c.get(&s.api("/containers"));
    assert_eq!(item_names(&list), Vec::<String>::new());
}

// ---- 400: malformed documents ----

#[test]
fn unknown_fields_are_400_naming_the_field() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let r = c.post_json(
        &cells(&s),
        &cell_doc(
            "x",
            json!([{"id": "a"}, {"id": "b", "ttty": {"prompt": "$"}}]),
        ),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.containers[1].ttty"));

    let cases = [
        (
            json!({"metadata": {"name": "x", "lables": {}}}),
            "metadata.lables",
        ),
        (json!({"metadata": {"name": "x"}, "specs": {}}), "specs"),
        (
            json!({"metadata": {"name": "x"}, "spec": {"rootContainer": "a"}}),
            "spec.rootContainer",
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"containers": [{"id": "a", "volumes": [{"target": "/x", "src": "/y"}]}]}}),
            "spec.containers[0].volumes[0].src",
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"containers": [{"id": "a", "resources": {"memoryLimit": 1}}]}}),
            "spec.containers[0].resources.memoryLimit",
        ),
        (
            json!({"metadata": {"name": "x"}, "status": {"phase": "Ready"}}),
            "status.phase",
        ),
    ];
    for (doc, field) in cases {
        let r = c.post_json(&cells(&s), &doc);
        assert_problem(&r, 400, "BadRequest", Some(field));
    }
    // YAML too.
    let yaml = "apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: x\nspec:\n  containers:\n    - id: a\n    - id: b\n      ttty: {}\n";
    let r = c.post_yaml(&cells(&s), yaml);
    assert_problem(&r, 400, "BadRequest", Some("spec.containers[1].ttty"));
    // PUT and PATCH as well.
    let r = c.put_json(
        &format!("{}/c", cells(&s)),
        &json!({"metadata": {"name": "c"}, "spec": {"autoDelet": true}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.autoDelet"));
    let r = c.patch(
        &format!("{}/c", cells(&s)),
        &json!({"spec": {"autoDelet": true}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.autoDelet"));
    let r = c.put_json(
        &format!("{}/c/status", cells(&s)),
        &json!({"status": {"stat": "Ready"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("status.stat"));
    assert_nothing_written(&c, &s, rev);
}

#[test]
fn wrong_api_version_or_kind_is_400() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let r = c.post_json(
        &cells(&s),
        &json!({"apiVersion": "v1", "kind": "Cell", "metadata": {"name": "x"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("apiVersion"));
    assert!(r.1["detail"].as_str().unwrap().contains("v1"), "{}", r.1);
    let r = c.post_json(
        &cells(&s),
        &json!({"apiVersion": "v1beta1", "kind": "Stack", "metadata": {"name": "x"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("kind"));
    let r = c.post_yaml(
        &s.api("/realms"),
        "apiVersion: v1beta2\nkind: Realm\nmetadata:\n  name: x\n",
    );
    assert_problem(&r, 400, "BadRequest", Some("apiVersion"));
    let r = c.put_json(
        &format!("{}/c", cells(&s)),
        &json!({"kind": "Container", "metadata": {"name": "c"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("kind"));
    let r = c.put_json(
        &format!("{}/c/status", cells(&s)),
        &json!({"kind": "Realm", "status": {}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("kind"));
    // Omitted apiVersion and kind are fine.
    let (st, b) = c.post_json(&cells(&s), &json!({"metadata": {"name": "ok"}}));
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["apiVersion"], "v1beta1");
    assert_eq!(b["kind"], "Cell");
    assert_eq!(c.delete(&format!("{}/ok", cells(&s))).0, 200);
    let _ = rev;
}

#[test]
fn url_and_body_coordinates_must_agree() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let r = c.post_json(
        &s.api("/realms/r/spaces"),
        &json!({"metadata": {"name": "x"}, "spec": {"realmId": "other"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.realmId"));
    let r = c.post_json(
        &s.api("/realms/r/spaces/s/stacks"),
        &json!({"metadata": {"name": "x"}, "spec": {"spaceId": "other"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.spaceId"));
    let r = c.post_json(
        &s.api("/realms/r/spaces/s/stacks"),
        &json!({"metadata": {"name": "x"}, "spec": {"id": "y"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.id"));
    let r = c.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "x"}, "spec": {"stackId": "other"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.stackId"));
    let r = c.post_json(
        &containers(&s),
        &json!({"metadata": {"name": "n"}, "spec": {"cellId": "other"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.cellId"));
    let r = c.put_json(
        &format!("{}/c", cells(&s)),
        &json!({"metadata": {"name": "d"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("metadata.name"));
    let r = c.patch(
        &format!("{}/c", cells(&s)),
        &json!({"spec": {"realmId": "elsewhere"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.realmId"));
    let r = c.put_json(&s.api("/realms/r"), &json!({"metadata": {"name": "q"}}));
    assert_problem(&r, 400, "BadRequest", Some("metadata.name"));
    assert_nothing_written(&c, &s, rev);
}

#[test]
fn malformed_bodies_are_400_never_5xx() {
    let (s, c) = setup();
    let bodies: [(&str, &str); 6] = [
        ("application/json", "{"),
        ("application/json", "[1,2]"),
        ("application/json", "\"str\""),
        ("application/json", r#"{"metadata": {"name": 5}}"#),
        ("application/yaml", "metadata: [unclosed"),
        ("application/json", r#"{"metadata":{"name":"x"}} trailing"#),
    ];
    for (ctype, body) in bodies {
        let r = c.send(
            c.http
                .post(cells(&s))
                .header("content-type", ctype)
                .body(body),
        );
        assert_problem(&r, 400, "BadRequest", None);
    }
    let r = c.send(
        c.http
            .post(cells(&s))
            .header("content-type", "text/plain")
            .body("x"),
    );
    assert_eq!(r.0, 415, "{}", r.1);
    // A Content-Type that is not ASCII is unsupported, not absent.
    let r = c.send(
        c.http
            .post(cells(&s))
            .header(
                "content-type",
                reqwest::header::HeaderValue::from_bytes(b"application/json\xc2\x84").unwrap(),
            )
            .body(r#"{"metadata":{"name":"x"}}"#),
    );
    assert_eq!(r.0, 415, "{}", r.1);
    let r = c.send(
        c.http
            .patch(format!("{}/c", cells(&s)))
            .header("content-type", "application/merge-patch+json")
            .body("[1]"),
    );
    assert_problem(&r, 400, "BadRequest", None);
}

/// serde would read a struct from a positional array (`[null]` as a Realm
/// with every field defaulted); the schema says object, so the API refuses.
#[test]
fn arrays_where_objects_belong_are_400() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let r = c.send(
        c.http
            .put(s.api("/realms/r2"))
            .header("content-type", "application/json")
            .body("[null]"),
    );
    assert_problem(&r, 400, "BadRequest", None);
    assert!(r.1.to_string().contains("sequence"), "{}", r.1);
    let nested = [
        (json!({"metadata": ["x"]}), "metadata"),
        (json!({"metadata": {"name": "x"}, "spec": []}), "spec"),
        (
            json!({"metadata": {"name": "x"}, "spec": {"containers": [["a"]]}}),
            "spec.containers[0]",
        ),
    ];
    for (doc, field) in nested {
        let r = c.post_json(&cells(&s), &doc);
        assert_problem(&r, 400, "BadRequest", Some(field));
    }
    let r = c.put_yaml(&s.api("/realms/r2"), "- null\n");
    assert_problem(&r, 400, "BadRequest", None);
    // An empty array would have read as a spec with every field defaulted.
    let r = c.patch(&format!("{}/c", cells(&s)), &json!({"spec": []}));
    assert_problem(&r, 400, "BadRequest", Some("spec"));
    let r = c.send(
        c.http
            .post(s.api("/apply"))
            .header("content-type", "application/json")
            .body(r#"[{"kind": "Realm", "metadata": ["r9"]}]"#),
    );
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.to_string().contains("metadata"), "{}", r.1);
    assert_nothing_written(&c, &s, rev);
}

// ---- 422: validation rules ----

#[test]
fn invalid_names_are_422() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    for bad in [
        "a_b",
        "a/b",
        "..",
        ".",
        " lead",
        "tab\tin",
        &"x".repeat(254),
    ] {
        let r = c.post_json(&s.api("/realms"), &json!({"metadata": {"name": bad}}));
        assert_problem(&r, 422, "Invalid", Some("metadata.name"));
        let r = c.post_json(&cells(&s), &json!({"metadata": {"name": bad}}));
        assert_problem(&r, 422, "Invalid", Some("metadata.name"));
        let r = c.post_json(&cells(&s), &cell_doc("x", json!([{"id": bad}])));
        assert_problem(&r, 422, "Invalid", Some("spec.containers[0].id"));
    }
    // A name is required.
    let r = c.post_json(&cells(&s), &json!({"spec": {}}));
    assert_problem(&r, 422, "Invalid", Some("metadata.name"));
    // At most 253 bytes is fine.
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "x".repeat(253)}}),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        c.delete(&s.api(&format!("/realms/{}", "x".repeat(253)))).0,
        200
    );
    assert_eq!(revision(&c, &s), rev + 2);
}

#[test]
fn egress_rules_are_validated() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "r");
    let space = |allow: Value| json!({"metadata": {"name": "sp"}, "spec": {"network": {"egress": {"default": "deny", "allow": allow}}}});
    let url = s.api("/realms/r/spaces");
    let cases = [
        (
            json!([{"host": "a.example.com", "cidr": "10.0.0.0/8"}]),
            "spec.network.egress.allow[0]",
        ),
        (
            json!([{"host": "ok.example.com"}, {"ports": [80]}]),
            "spec.network.egress.allow[1]",
        ),
        (
            json!([{"cidr": "10.0.0.0"}]),
            "spec.network.egress.allow[0].cidr",
        ),
        (
            json!([{"cidr": "10.0.0.0/33"}]),
            "spec.network.egress.allow[0].cidr",
        ),
        (
            json!([{"cidr": "300.0.0.0/8"}]),
            "spec.network.egress.allow[0].cidr",
        ),
        (
            json!([{"cidr": "fd00::/129"}]),
            "spec.network.egress.allow[0].cidr",
        ),
        (
            json!([{"cidr": "example.com/8"}]),
            "spec.network.egress.allow[0].cidr",
        ),
        (
            json!([{"host": "a.example.com", "ports": [0]}]),
            "spec.network.egress.allow[0].ports[0]",
        ),
        (
            json!([{"host": "a.example.com", "ports": [80, 65536]}]),
            "spec.network.egress.allow[0].ports[1]",
        ),
        (
            json!([{"cidr": "10.0.0.0/8", "ports": [-1]}]),
            "spec.network.egress.allow[0].ports[0]",
        ),
    ];
    for (allow, field) in cases {
        let r = c.post_json(&url, &space(allow.clone()));
        assert_problem(&r, 422, "Invalid", Some(field));
    }
    assert_eq!(c.get(&s.api("/realms/r/spaces/sp")).0, 404);
    // The boundaries are valid.
    let (st, b) = c.post_json(
        &url,
        &space(
            json!([{"host": "a", "ports": [1, 65535]}, {"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]),
        ),
    );
    assert_eq!(st, 201, "{b}");
    // And PATCH is validated the same way.
    let r = c.patch(
        &s.api("/realms/r/spaces/sp"),
        &json!({"spec": {"network": {"egress": {"allow": [{"cidr": "bad"}]}}}}),
    );
    assert_problem(
        &r,
        422,
        "Invalid",
        Some("spec.network.egress.allow[0].cidr"),
    );
    assert_eq!(c.get(&s.api("/realms/r/spaces/sp")).1, b);
}

#[test]
fn volumes_are_validated() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let cases = [
        (json!({"target": "/data"}), "volumes[0].source"),
        (
            json!({"kind": "bind", "target": "/data"}),
            "volumes[0].source",
        ),
        (
            json!({"kind": "bind", "source": "/host"}),
            "volumes[0].target",
        ),
        (
            json!({"kind": "tmpfs", "source": "/host", "target": "/t"}),
            "volumes[0].source",
        ),
        (json!({"kind": "tmpfs"}), "volumes[0].target"),
        (
            json!({"kind": "tmpfs", "target": "relative/path"}),
            "volumes[0].target",
        ),
        (
            json!({"source": "/host", "target": "data"}),
            "volumes[0].target",
        ),
        (
            json!({"kind": "nfs", "source": "/host", "target": "/t"}),
            "volumes[0].kind",
        ),
        (
            json!({"kind": "tmpfs", "target": "/t", "mode": 4096}),
            "volumes[0].mode",
        ),
        (
            json!({"kind": "tmpfs", "target": "/t", "mode": "010000"}),
            "volumes[0].mode",
        ),
    ];
    for (vol, field) in cases {
        let r = c.post_json(
            &cells(&s),
            &cell_doc("x", json!([{"id": "a", "volumes": [vol.clone()]}])),
        );
        assert_problem(
            &r,
            422,
            "Invalid",
            Some(&format!("spec.containers[0].{field}")),
        );
        let r = c.post_json(
            &containers(&s),
            &json!({"metadata": {"name": "n"}, "spec": {"volumes": [vol]}}),
        );
        assert_problem(&r, 422, "Invalid", Some(&format!("spec.{field}")));
    }
    let r = c.post_json(
        &containers(&s),
        &json!({"metadata": {"name": "n"}, "spec": {"tmpfs": [{"path": "tmp"}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.tmpfs[0].path"));
    assert_nothing_written(&c, &s, rev);
}

/// A status write writes only the status, but its body is still a document
/// about the object: another name or coordinates are 400, invalid labels or
/// an out-of-range mode 422; a merge patch deleting a field no document
/// has is 400 naming it. Nothing is written by any of them.
#[test]
fn status_bodies_and_patch_deletions_are_checked_too() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let cell = format!("{}/c", cells(&s));
    let status = format!("{cell}/status");
    let cases = [
        (
            json!({"metadata": {"name": "other"}, "status": {"state": "Ready"}}),
            400,
            "metadata.name",
        ),
        (
            json!({"metadata": {"name": "a_b"}, "status": {"state": "Ready"}}),
            400,
            "metadata.name",
        ),
        (
            json!({"spec": {"stackId": "elsewhere"}, "status": {"state": "Ready"}}),
            400,
            "spec.stackId",
        ),
        (
            json!({"metadata": {"labels": {"": "x"}}, "status": {"state": "Ready"}}),
            422,
            "metadata.labels",
        ),
        (
            json!({"spec": {"containers": [{"id": "a", "volumes": [{"kind": "tmpfs", "target": "/t", "mode": 5000}]}]}, "status": {"state": "Ready"}}),
            422,
            "spec.containers[0].volumes[0].mode",
        ),
    ];
    for (body, code, field) in &cases {
        let r = c.put_json(&status, body);
        let reason = if *code == 400 {
            "BadRequest"
        } else {
            "Invalid"
        };
        assert_problem(&r, *code, reason, Some(field));
        let r = c.patch(&status, body);
        assert_problem(&r, *code, reason, Some(field));
    }
    assert_nothing_written(&c, &s, rev);
    // What a reconciler sends is fine: the object as read, its status
    // changed (JSON or YAML), or just a status; an empty resourceVersion is
    // no precondition.
    let (_, mut read) = c.get(&cell);
    read["status"]["state"] = json!("Ready");
    let r = c.put_json(&status, &read);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["status"]["state"], "Ready");
    let yaml = "apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: c\nspec:\n  stackId: t\nstatus:\n  state: Failed\n";
    let r = c.put_yaml(&status, yaml);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["status"]["state"], "Failed");
    let r = c.patch(
        &status,
        &json!({"metadata": {"resourceVersion": ""}, "status": {"state": "Pending"}}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["status"]["state"], "Pending");
    let rev = revision(&c, &s);
    // Deleting unknown fields: a typo must not pass as a no-op.
    for (patch, field) in [
        (json!({"": null}), ""),
        (json!({"specc": null}), "specc"),
        (
            json!({"spec": {"rootContainer": null}}),
            "spec.rootContainer",
        ),
        (json!({"metadata": {"lables": null}}), "metadata.lables"),
    ] {
        let r = c.patch(&cell, &patch);
        assert_eq!(r.0, 400, "{patch}: {}", r.1);
        if !field.is_empty() {
            assert_problem(&r, 400, "BadRequest", Some(field));
        }
    }
    // Deleting known fields, present or not, is fine.
    let r = c.patch(
        &cell,
        &json!({"spec": {"rootContainerId": null, "tty": null}, "metadata": {"labels": null}}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_nothing_written(&c, &s, rev);
}

#[test]
fn tty_rules_are_validated() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    // tty on a non-attachable container.
    let r = c.post_json(
        &cells(&s),
        &cell_doc("x", json!([{"id": "a", "attachable": true, "tty": {}}, {"id": "b", "tty": {"prompt": "$ "}}])),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.containers[1].tty"));
    let r = c.post_json(
        &containers(&s),
        &json!({"metadata": {"name": "n"}, "spec": {"attachable": false, "tty": {"prompt": "$"}}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.tty"));
    // Cell tty.default naming a non-attachable container, or none.
    let r = c.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "x"}, "spec": {"tty": {"default": "b"},
                "containers": [{"id": "a", "attachable": true}, {"id": "b"}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.tty.default"));
    let r = c.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "x"}, "spec": {"tty": {"default": "ghost"},
                "containers": [{"id": "a", "attachable": true}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.tty.default"));
    assert_nothing_written(&c, &s, rev);
    // The valid combination, and an empty default.
    let (st, b) = c.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "x"}, "spec": {"tty": {"default": "a"},
                "containers": [{"id": "a", "attachable": true, "tty": {"prompt": "$"}}, {"id": "b"}]}}),
    );
    assert_eq!(st, 201, "{b}");
    let (st, b) = c.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "y"}, "spec": {"tty": {}, "containers": [{"id": "a"}]}}),
    );
    assert_eq!(st, 201, "{b}");
    // Making the default container non-attachable later is rejected too.
    let r = c.patch(
        &format!("{}/x", cells(&s)),
        &json!({"spec": {"containers": [{"id": "a"}, {"id": "b"}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.tty.default"));
}

#[test]
fn cell_container_rules_are_validated() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let r = c.post_json(
        &cells(&s),
        &cell_doc("x", json!([{"id": "a"}, {"id": "a"}])),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.containers[1].id"));
    let r = c.post_json(
        &cells(&s),
        &cell_doc(
            "x",
            json!([{"id": "a", "root": true}, {"id": "b"}, {"id": "c", "root": true}]),
        ),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.containers[2].root"));
    let r = c.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "x"}, "spec": {"rootContainerId": "zz", "containers": [{"id": "a"}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.rootContainerId"));
    for (coord, field) in [
        ("realmId", "realmId"),
        ("spaceId", "spaceId"),
        ("stackId", "stackId"),
        ("cellId", "cellId"),
    ] {
        let r = c.post_json(
            &cells(&s),
            &cell_doc("x", json!([{"id": "a"}, {"id": "b", coord: "other"}])),
        );
        assert_problem(
            &r,
            422,
            "Invalid",
            Some(&format!("spec.containers[1].{field}")),
        );
    }
    assert_nothing_written(&c, &s, rev);
    // Matching coordinates are fine.
    let (st, b) = c.post_json(
        &cells(&s),
        &cell_doc(
            "x",
            json!([{"id": "a", "realmId": "r", "spaceId": "s", "stackId": "t", "cellId": "x"}]),
        ),
    );
    assert_eq!(st, 201, "{b}");
}

#[test]
fn secret_references_and_password_refs_are_validated() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    let cases = [
        (json!({"name": "a"}), "spec.secrets[0]"),
        (
            json!({"name": "a", "fromFile": "/f", "fromEnv": "E"}),
            "spec.secrets[0]",
        ),
        (json!({"fromEnv": "E"}), "spec.secrets[0].name"),
        (
            json!({"name": "a", "fromEnv": "E", "mountPath": "run/x"}),
            "spec.secrets[0].mountPath",
        ),
    ];
    for (secret, field) in cases {
        let r = c.post_json(
            &containers(&s),
            &json!({"metadata": {"name": "n"}, "spec": {"secrets": [secret]}}),
        );
        assert_problem(&r, 422, "Invalid", Some(field));
    }
    assert_nothing_written(&c, &s, rev);
    for pref in [json!({}), json!({"fromFile": "/f", "fromEnv": "E"})] {
        let r = c.post_json(
            &s.api("/realms"),
            &json!({"metadata": {"name": "x"}, "spec": {"registryCredentials": [{"username": "u", "passwordRef": pref}]}}),
        );
        assert_problem(
            &r,
            422,
            "Invalid",
            Some("spec.registryCredentials[0].passwordRef"),
        );
    }
    assert_eq!(c.get(&s.api("/realms/x")).0, 404);
}

#[test]
fn invalid_timestamps_in_status_are_422() {
    let (s, c) = setup();
    let url = format!("{}/c", cells(&s));
    let (_, before) = c.get(&url);
    let r = c.put_json(
        &format!("{url}/status"),
        &json!({"status": {"containers": [{"name": "a", "startTime": "yesterday"}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("status.containers[0].startTime"));
    assert_eq!(c.get(&url).1, before);
}

#[test]
fn invalid_updates_change_nothing() {
    let (s, c) = setup();
    let url = format!("{}/c", cells(&s));
    let (st, before) = c.put_json(
        &url,
        &cell_doc("c", json!([{"id": "a", "attachable": true}])),
    );
    assert_eq!(st, 200, "{before}");
    let r = c.put_json(&url, &cell_doc("c", json!([{"id": "a"}, {"id": "a"}])));
    assert_problem(&r, 422, "Invalid", Some("spec.containers[1].id"));
    let r = c.patch(
        &url,
        &json!({"spec": {"containers": [{"id": "a", "tty": {}}]}}),
    );
    assert_problem(&r, 422, "Invalid", Some("spec.containers[0].tty"));
    assert_eq!(c.get(&url).1, before);
}

#[test]
fn bad_query_parameters_are_400() {
    let (s, c) = setup();
    assert_problem(
        &c.get(&format!("{}?bogus=1", cells(&s))),
        400,
        "BadRequest",
        Some("bogus"),
    );
    assert_problem(
        &c.get(&format!("{}?limit=-1", cells(&s))),
        400,
        "BadRequest",
        Some("limit"),
    );
    assert_problem(
        &c.get(&format!("{}?limit=ten", cells(&s))),
        400,
        "BadRequest",
        Some("limit"),
    );
    assert_problem(
        &c.get(&format!("{}/c?view=bogus", cells(&s))),
        400,
        "BadRequest",
        Some("view"),
    );
    // The effective view is for containers and cells only.
    assert_problem(
        &c.get(&s.api("/realms/r/spaces/s/stacks/t?view=effective")),
        400,
        "BadRequest",
        Some("view"),
    );
    assert_problem(
        &c.delete(&format!("{}/c?cascade=maybe", cells(&s))),
        400,
        "BadRequest",
        Some("cascade"),
    );
    // Scoped collections take no scope parameters.
    assert_problem(
        &c.get(&format!("{}?realm=r", cells(&s))),
        400,
        "BadRequest",
        Some("realm"),
    );
    // Cells are not scoped by cell.
    assert_problem(
        &c.get(&s.api("/cells?cell=c")),
        400,
        "BadRequest",
        Some("cell"),
    );
    assert_eq!(c.get(&format!("{}/c", cells(&s))).0, 200);
}

#[test]
fn odd_requests_are_4xx_never_5xx() {
    let (s, c) = setup();
    let rev = revision(&c, &s);
    // Empty bodies.
    for ctype in ["application/json", "application/yaml"] {
        let r = c.send(
            c.http
                .post(cells(&s))
                .header("content-type", ctype)
                .body(""),
        );
        assert!((400..500).contains(&r.0), "{ctype}: {} {}", r.0, r.1);
    }
    // A YAML stream of several documents is for /apply, not a collection.
    let r = c.post_yaml(&s.api("/realms"), &shared_example("multi-resource.yaml"));
    assert!((400..500).contains(&r.0), "{} {}", r.0, r.1);
    assert_eq!(c.get(&s.api("/realms/multi-realm")).0, 404);
    // Odd names in paths.
    let r = c.get(&s.api("/realms/%FF"));
    assert!((400..500).contains(&r.0), "{} {}", r.0, r.1);
    assert_problem(&c.get(&s.api("/realms/a%00b")), 404, "NotFound", None);
    let r = c.put_json(&s.api("/realms/a%00b"), &json!({}));
    assert!((400..500).contains(&r.0), "{} {}", r.0, r.1);
    let r = c.post_json(&s.api("/realms"), &json!({"metadata": {"name": "a\u{0}b"}}));
    assert_problem(&r, 422, "Invalid", Some("metadata.name"));
    let r = c.get(&s.api("/cells?realm=a%00b"));
    assert!((400..500).contains(&r.0), "{} {}", r.0, r.1);
    // Unknown routes and methods.
    assert_problem(&c.get(&s.api("/pods")), 404, "NotFound", None);
    let r = c.post_json(&s.api("/realms/r"), &json!({}));
    assert_eq!(r.0, 405, "{}", r.1);
    assert_eq!(r.1["status"], 405);
    assert_eq!(revision(&c, &s), rev);
}

#[test]
fn bodies_up_to_the_documented_limit_are_accepted() {
    let (s, c) = setup();
    // 3 MiB: above common framework defaults, below the 16 MiB limit.
    let env: Vec<String> = (0..3 * 1024)
        .map(|i| format!("K{i}={}", "v".repeat(1000)))
        .collect();
    let (st, b) = c.post_json(
        &cells(&s),
        &cell_doc("big", json!([{"id": "a", "env": env}])),
    );
    assert_eq!(
        st,
        201,
        "{}",
        &b.to_string()[..200.min(b.to_string().len())]
    );
    let (st, got) = c.get(&format!("{}/big", cells(&s)));
    assert_eq!(st, 200);
    assert_eq!(got["spec"]["containers"][0]["env"], json!(env));
    // Over the limit: 413 (or the server may close the connection early).
    let huge = format!(
        r#"{{"metadata":{{"name":"huge"}},"spec":{{"containers":[{{"id":"a","command":"{}"}}]}}}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    if let Ok(r) = c
        .http
        .post(cells(&s))
        .header("content-type", "application/json")
        .body(huge)
        .send()
    {
        assert_eq!(r.status(), 413);
        let p: Value = r.json().unwrap();
        assert_eq!(p["reason"], "PayloadTooLarge");
    }
    // A fresh client: the server closes the connection it did not read to
    // the end, and a pooled client could otherwise race that close.
    assert_eq!(Client::default().get(&format!("{}/huge", cells(&s))).0, 404);
}

#[test]
fn deeply_nested_yaml_is_rejected_promptly() {
    // A 200 KB body (far below the 16 MiB limit) of nested flow sequences.
    // Nothing in a document nests deeper than a few levels, so it can be
    // refused at once; parsing it takes time quadratic in the depth, on an
    // async worker thread.
    let (s, _) = setup();
    let n = 100_000;
    let body = format!("metadata: {}{}\n", "[".repeat(n), "]".repeat(n));
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let r = http
        .post(cells(&s))
        .header("content-type", "application/yaml")
        .body(body)
        .send();
    let elapsed = start.elapsed();
    let r = r.unwrap_or_else(|e| panic!("no answer after {elapsed:?}: {e}"));
    assert_eq!(r.status(), 400);
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "took {elapsed:?}"
    );
}

// ---- labels (API.md, "Labels") ----

fn realm_with(labels: Value) -> Value {
    json!({"metadata": {"name": "lr", "labels": labels}})
}

/// Kubernetes' label keys, values of at most 253 bytes without control
/// characters, at most 64 labels and 16 KiB: each refusal is 422 naming
/// the label, by every write of the main part, and writes nothing.
#[test]
fn labels_follow_the_documented_rules() {
    let (s, c) = setup();
    let realms = s.api("/realms");
    let many: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let sixty_five: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_prefix = format!("{}.io", "a".repeat(251));
    let refused: Vec<(Value, String)> = vec![
        (Value::Object(many), "metadata.labels".into()),
        (Value::Object(sixty_five), "metadata.labels".into()),
        (
            json!({"k": "v".repeat(1 << 20)}),
            r#"metadata.labels["k"]"#.into(),
        ),
        (
            json!({"k": "v".repeat(254)}),
            r#"metadata.labels["k"]"#.into(),
        ),
        (json!({"k": "a\u{7}b"}), r#"metadata.labels["k"]"#.into()),
        (
            json!({"k": "line\nbreak"}),
            r#"metadata.labels["k"]"#.into(),
        ),
        (json!({"-k": "v"}), r#"metadata.labels["-k"]"#.into()),
        (json!({"k k": "v"}), r#"metadata.labels["k k"]"#.into()),
        (json!({"Ω": "v"}), r#"metadata.labels["Ω"]"#.into()),
        (json!({"a/b/c": "v"}), r#"metadata.labels["a/b/c"]"#.into()),
        (json!({"/x": "v"}), r#"metadata.labels["/x"]"#.into()),
        (json!({"x/": "v"}), r#"metadata.labels["x/"]"#.into()),
        (
            json!({"Example.com/x": "v"}),
            r#"metadata.labels["Example.com/x"]"#.into(),
        ),
        (
            json!({"ex_ample.com/x": "v"}),
            r#"metadata.labels["ex_ample.com/x"]"#.into(),
        ),
        (
            json!({"ex..com/x": "v"}),
            r#"metadata.labels["ex..com/x"]"#.into(),
        ),
        (
            json!({ "n".repeat(64): "v" }),
            format!("metadata.labels[{:?}]", "n".repeat(64)),
        ),
        (
            json!({ format!("{long_prefix}/x"): "v" }),
            format!("metadata.labels[{:?}]", format!("{long_prefix}/x")),
        ),
    ];
    create_named(&c, &s, "/realms", "lr");
    let rev_after = revision(&c, &s);
    let lr = format!("{realms}/lr");
    for (labels, field) in &refused {
        let r = c.post_json(
            &realms,
            &json!({"metadata": {"name": "other", "labels": labels}}),
        );
        assert_problem(&r, 422, "Invalid", Some(field));
        let r = c.put_json(&lr, &realm_with(labels.clone()));
        assert_problem(&r, 422, "Invalid", Some(field));
        let r = c.patch(&lr, &json!({"metadata": {"labels": labels}}));
        assert_problem(&r, 422, "Invalid", Some(field));
        let doc = json!([{"kind": "Realm", "metadata": {"name": "other", "labels": labels}}]);
        let r = c.post_json(&s.api("/apply"), &doc);
        assert_problem(&r, 422, "Invalid", Some(&format!("documents[0].{field}")));
        assert!(
            !r.1["detail"].as_str().unwrap().contains(&"v".repeat(254)),
            "a value is never echoed"
        );
    }
    assert_eq!(revision(&c, &s), rev_after, "nothing was written");
    assert_eq!(c.get(&format!("{realms}/other")).0, 404);

    // What the rules allow: a kukeon name as a value (253 bytes, any
    // characters but control ones), 64 labels, prefixes.
    let accepted = [
        json!({"kukeon.io/cell-profile": "p".repeat(253)}),
        json!({"k": "Ω spaces, = and / are fine"}),
        json!({"empty": ""}),
        json!({ format!("{}/{}", "a".repeat(253), "n".repeat(63)): "v" }),
        json!({"a.b-c.d/X_y.z-1": "v", "0": "1"}),
        Value::Object(
            (0..64)
                .map(|i| (format!("example.com/k{i}"), json!("v")))
                .collect(),
        ),
    ];
    for labels in &accepted {
        let (st, b) = c.put_json(&lr, &realm_with(labels.clone()));
        assert_eq!(st, 200, "{labels}: {b}");
        assert_eq!(&b["metadata"]["labels"], labels);
    }
}

/// Objects stored before the label rules (written here straight into the
/// store, past the HTTP layer) keep loading and serving: reads, status
/// writes and deletes are not refused because of their labels. A write of
/// the main part checks the object as it would be stored, so it must
/// bring the labels within the rules (a merge patch removing them does).
#[test]
fn objects_stored_before_the_label_rules_are_still_served() {
    use modelhub::model::{AnyObject, ObjectMeta, Realm};
    use modelhub::store::{Backend, Store, StoreOptions, WriteOp};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub.redb");
    let labels: std::collections::BTreeMap<String, String> = (0..100)
        .map(|i| (format!("old label {i}"), "v".repeat(1000)))
        .collect();
    {
        let store = Store::open(&data, StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for name in ["old", "old2"] {
                let r = AnyObject::Realm(Realm {
                    meta: ObjectMeta {
                        name: name.into(),
                        labels: labels.clone(),
                        ..ObjectMeta::default()
                    },
                    ..Realm::default()
                });
                store.write(WriteOp::Create(r)).await.unwrap();
            }
        });
        store.close();
    }
    let s = Server::start_with(&data, &[]);
    let c = Client::default();
    let url = s.api("/realms/old");

    let (st, got) = c.get(&url);
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["metadata"]["labels"].as_object().unwrap().len(), 100);
    let (st, list) = c.get(&s.api("/realms"));
    assert_eq!(
        (st, item_names(&list)),
        (200, vec!["old".into(), "old2".into()])
    );

    // A status write with the object as read (its old labels included).
    let mut doc = got.clone();
    doc["status"]["cgroupPath"] = json!("/kukeon/old");
    let (st, b) = c.put_json(&format!("{url}/status"), &doc);
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"]["cgroupPath"], "/kukeon/old");
    let (st, b) = c.patch(
        &format!("{url}/status"),
        &json!({"status": {"cgroupPath": "/kukeon/old2"}}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["metadata"]["labels"].as_object().unwrap().len(), 100);

    // The main part: checked as it would be stored.
    let mut spec = c.get(&url).1;
    spec["spec"]["namespace"] = json!("ns");
    assert_problem(
        &c.put_json(&url, &spec),
        422,
        "Invalid",
        Some("metadata.labels"),
    );
    let r = c.patch(&url, &json!({"spec": {"namespace": "ns"}}));
    assert_problem(&r, 422, "Invalid", Some("metadata.labels"));
    let removal: serde_json::Map<String, Value> =
        labels.keys().map(|k| (k.clone(), Value::Null)).collect();
    let (st, b) = c.patch(
        &url,
        &json!({"metadata": {"labels": removal}, "spec": {"namespace": "ns"}}),
    );
    assert_eq!(st, 200, "{b}");
    assert!(b["metadata"].get("labels").is_none(), "{b}");

    // Deletes.
    let (st, b) = c.delete(&s.api("/realms/old2"));
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["metadata"]["labels"].as_object().unwrap().len(), 100);
    assert_eq!(c.get(&s.api("/realms/old2")).0, 404);
}
