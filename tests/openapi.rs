//! The committed OpenAPI document must be what the code generates
//! (regenerate with `modelhub openapi > openapi/v1beta1.json`), and the
//! served document and Swagger UI must be there.

mod common;

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

#[test]
fn every_route_is_documented_with_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&modelhub::http::openapi::to_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // 5 kinds x (collection, item, status) + 4 cross-scope lists + watch, apply, 3 operational.
    assert_eq!(paths.len(), 5 * 3 + 4 + 2 + 3);
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
