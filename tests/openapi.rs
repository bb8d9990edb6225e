//! The committed OpenAPI document must be what the code generates
//! (regenerate with `modelhub openapi > openapi/v1beta1.json`), it must list
//! exactly the routes the server serves, and the served document and
//! Swagger UI must be there.

mod common;

use std::collections::BTreeSet;

use common::*;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/v1beta1.json");

#[test]
fn committed_document_matches_the_code() {
    let generated = modelhub::http::openapi::to_json();
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/v1beta1.json is stale: run `cargo run -- openapi > openapi/v1beta1.json`"
    );
}

#[test]
fn server_serves_the_document_and_swagger_ui() {
    let s = Server::start();
    let c = Client::default();
    let (st, served) = c.get(&format!("{}/openapi.json", s.base));
    assert_eq!(st, 200);
    let generated: serde_json::Value =
        serde_json::from_str(&modelhub::http::openapi::to_json()).unwrap();
    assert_eq!(served, generated);
    let ui = c.raw(c.http.get(format!("{}/swagger-ui/", s.base)));
    assert_eq!(ui.status(), 200);
    assert!(ui.text().unwrap().contains("swagger-ui"));
    let init = c.raw(
        c.http
            .get(format!("{}/swagger-ui/swagger-initializer.js", s.base)),
    );
    let js = init.text().unwrap();
    assert!(js.contains(r#""validatorUrl": "none""#), "{js}");
    assert!(js.contains(r#""url": "/openapi.json""#), "{js}");
}

/// The (method, path) pairs of a document's `paths`.
fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            pairs.insert((method.clone(), path.clone()));
        }
    }
    pairs
}

fn committed_document() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap()
}

/// The router is built from the route table only (plus the Swagger UI and
/// its `/openapi.json`), so this also says that the router serves what the
/// document lists, no more and no less.
#[test]
fn the_route_table_is_exactly_what_the_document_lists() {
    let routes = modelhub::http::routes::table();
    let table: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.clone()))
        .collect();
    assert_eq!(table.len(), routes.len(), "a route is in the table twice");
    let generated: serde_json::Value =
        serde_json::from_str(&modelhub::http::openapi::to_json()).unwrap();
    assert_eq!(
        documented(&committed_document()),
        table,
        "committed document"
    );
    assert_eq!(documented(&generated), table, "generated document");
}

/// Each documented route reaches a handler on the running server: none is
/// answered by the router's fallbacks (404 "no route for ...", 405).
#[test]
fn every_documented_route_is_served() {
    let s = Server::start();
    let c = Client::default();
    let answer = |method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let r = c.raw(c.http.request(method, format!("{}{path}", s.base)));
        let status = r.status().as_u16();
        // A 200 may be a watch stream, which does not end: only errors are read.
        let body = if status == 200 {
            serde_json::Value::Null
        } else {
            r.json().unwrap_or_default()
        };
        (status, body)
    };
    let unrouted = |(status, body): &(u16, serde_json::Value)| {
        *status == 405
            || (*status == 404
                && body["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("no route for")))
    };
    assert!(unrouted(&answer("get", "/api/v1beta1/nothing")));
    assert!(unrouted(&answer("put", "/healthz")));
    let pairs = documented(&committed_document());
    assert!(pairs.len() > 50, "{} routes", pairs.len());
    for (method, path) in pairs {
        let concrete: Vec<&str> = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect();
        let a = answer(&method, &concrete.join("/"));
        assert!(!unrouted(&a), "{method} {path}: {a:?}");
    }
}

#[test]
fn every_route_is_documented_with_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&modelhub::http::openapi::to_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (verb, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{verb} {path}"
            );
            if path.starts_with("/api/") {
                for code in ["500", "503"] {
                    let r = &responses[code];
                    assert!(
                        r["content"]["application/problem+json"]["schema"]["$ref"]
                            == "#/components/schemas/Problem",
                        "{verb} {path} {code}"
                    );
                }
            }
        }
    }
    let cell = &doc["components"]["schemas"]["CellSpec"]["properties"];
    assert!(cell["containers"].is_object() && cell["rootContainerId"].is_object());
    for kind in ["Realm", "Space", "Stack", "Cell", "Container"] {
        let ex = &doc["components"]["schemas"][kind]["examples"][0];
        assert_eq!(ex["kind"], kind, "{kind} has an example document");
    }
    let state = &doc["components"]["schemas"]["CellState"]["oneOf"];
    assert_eq!(
        state[0]["enum"],
        serde_json::json!(["Pending", "Ready", "Stopped", "Failed", "Unknown"])
    );
    assert_eq!(state[1]["type"], "integer");
}

#[test]
fn the_openapi_command_prints_the_committed_document() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(COMMITTED).unwrap()
    );
}
