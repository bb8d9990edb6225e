//! Authentication and authorization against the real server: every route
//! of the route table for every role, inside and outside its realms, with
//! and without a token (the table below is README's "Who may do what",
//! written out independently of the server's rules, so that a route
//! without a rule here fails); realm-scoped tokens through the list cache,
//! continue tokens, `/watch` and apply; the token lifecycle; the audit
//! trail; the default posture.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{Client, Server, create_token, first_admin};
use serde_json::{Value, json};

/// What a route needs, as README's table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Nothing: open to all.
    Open,
    /// Any role.
    Read,
    /// admin or writer.
    Spec,
    /// admin, writer or controller.
    Status,
    /// Any role (unless --metrics-anonymous: nothing).
    Metrics,
    /// admin.
    Admin,
}

/// Where a route names its realm, as README's table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Realm {
    /// In its path.
    Path,
    /// In `?realm=`.
    Query,
    /// In each document (apply).
    Documents,
    /// Every realm (the realms' collection).
    All,
    /// The server's own (tokens, backup, metrics, probes).
    Server,
}

/// README's table, route by route.
fn expected() -> Vec<(&'static str, String, Needs, Realm)> {
    use Needs::*;
    let b = "/api/v1beta1";
    let mut t = vec![
        ("GET", format!("{b}/realms"), Read, Realm::All),
        ("POST", format!("{b}/realms"), Spec, Realm::All),
    ];
    let scopes = [
        ("realms", "{realm}", String::new()),
        ("spaces", "{space}", format!("{b}/realms/{{realm}}")),
        (
            "stacks",
            "{stack}",
            format!("{b}/realms/{{realm}}/spaces/{{space}}"),
        ),
        (
            "cells",
            "{cell}",
            format!("{b}/realms/{{realm}}/spaces/{{space}}/stacks/{{stack}}"),
        ),
        (
            "containers",
            "{container}",
            format!("{b}/realms/{{realm}}/spaces/{{space}}/stacks/{{stack}}/cells/{{cell}}"),
        ),
    ];
    for (plural, param, parent) in scopes {
        let collection = if plural == "realms" {
            format!("{b}/realms")
        } else {
            format!("{parent}/{plural}")
        };
        let item = format!("{collection}/{param}");
        if plural != "realms" {
            t.push(("GET", collection.clone(), Read, Realm::Path));
            t.push(("POST", collection.clone(), Spec, Realm::Path));
            t.push(("GET", format!("{b}/{plural}"), Read, Realm::Query));
        }
        t.push(("GET", item.clone(), Read, Realm::Path));
        t.push(("PUT", item.clone(), Spec, Realm::Path));
        t.push(("PATCH", item.clone(), Spec, Realm::Path));
        t.push(("DELETE", item.clone(), Spec, Realm::Path));
        t.push(("GET", format!("{item}/status"), Read, Realm::Path));
        t.push(("PUT", format!("{item}/status"), Status, Realm::Path));
        t.push(("PATCH", format!("{item}/status"), Status, Realm::Path));
        // Finalizers: what status writers may (a controller's own).
        t.push(("PUT", format!("{item}/finalizers"), Status, Realm::Path));
        t.push(("PATCH", format!("{item}/finalizers"), Status, Realm::Path));
    }
    t.extend([
        ("GET", format!("{b}/watch"), Read, Realm::Query),
        ("POST", format!("{b}/apply"), Spec, Realm::Documents),
        ("GET", "/healthz".into(), Open, Realm::Server),
        ("GET", "/readyz".into(), Open, Realm::Server),
        ("GET", "/readyz/reads".into(), Open, Realm::Server),
        ("GET", "/readyz/writes".into(), Open, Realm::Server),
        ("GET", "/metrics".into(), Metrics, Realm::Server),
        ("POST", format!("{b}/tokens"), Admin, Realm::Server),
        ("GET", format!("{b}/tokens"), Admin, Realm::Server),
        (
            "DELETE",
            format!("{b}/tokens/{{name}}"),
            Admin,
            Realm::Server,
        ),
        ("GET", format!("{b}/backup"), Admin, Realm::Server),
    ]);
    t
}

/// An identity of the matrix.
struct Who {
    name: &'static str,
    role: Option<&'static str>,
    realms: Option<Vec<&'static str>>,
    client: Client,
}

impl Who {
    /// Whether README's table lets this identity through (no 401/403).
    fn allowed(&self, needs: Needs, realm: Realm, asked: Option<&str>) -> bool {
        if needs == Needs::Open {
            return true;
        }
        let Some(role) = self.role else {
            return false;
        };
        let by_role = match needs {
            Needs::Open | Needs::Read | Needs::Metrics => true,
            Needs::Spec => matches!(role, "admin" | "writer"),
            Needs::Status => matches!(role, "admin" | "writer" | "controller"),
            Needs::Admin => role == "admin",
        };
        let Some(realms) = &self.realms else {
            return by_role;
        };
        by_role
            && match (needs, realm) {
                (Needs::Metrics, _) | (_, Realm::Documents) => true,
                (_, Realm::Server | Realm::All) => false,
                (_, Realm::Path | Realm::Query) => asked.is_some_and(|r| realms.contains(&r)),
            }
    }
}

/// Realms `a` and `b`, each with space `s`, stack `t`, cell `c` and
/// container `k`.
fn fixtures(admin: &Client, s: &Server) {
    for r in ["a", "b"] {
        let manifest = format!(
            "apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: {r}\n---\n\
             apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: s\nspec:\n  realmId: {r}\n---\n\
             apiVersion: v1beta1\nkind: Stack\nmetadata:\n  name: t\nspec:\n  realmId: {r}\n  spaceId: s\n---\n\
             apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: c\nspec:\n  realmId: {r}\n  spaceId: s\n  stackId: t\n---\n\
             apiVersion: v1beta1\nkind: Container\nmetadata:\n  name: k\nspec:\n  realmId: {r}\n  spaceId: s\n  stackId: t\n  cellId: c\n  image: busybox\n"
        );
        let (st, body) = admin.post_yaml(&s.api("/apply"), &manifest);
        assert_eq!(st, 200, "{body}");
    }
}

/// The concrete request for a route template, in realm `realm`.
fn request(
    c: &Client,
    base: &str,
    method: &str,
    template: &str,
    realm: Option<&str>,
    query_realm: bool,
) -> reqwest::blocking::RequestBuilder {
    let r = realm.unwrap_or("a");
    // Deletes name an object that does not exist at the last level, so
    // that nothing the matrix needs is removed (a realm with children
    // answers 409 without cascade).
    let mut t = template.to_string();
    if method == "DELETE"
        && let Some((head, last)) = template.rsplit_once('/')
        && last.starts_with('{')
        && last != "{realm}"
    {
        t = format!("{head}/nope");
    }
    let path = t
        .replace("{realm}", r)
        .replace("{space}", "s")
        .replace("{stack}", "t")
        .replace("{cell}", "c")
        .replace("{container}", "k")
        .replace("{name}", "nope");
    let mut url = format!("{base}{path}");
    if query_realm && let Some(r) = realm {
        url.push_str(&format!("?realm={r}"));
    }
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let req = c.http.request(m, url);
    match method {
        "POST" if template.ends_with("/apply") => {
            req.header("content-type", "application/yaml").body(format!(
                "apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: s\nspec:\n  realmId: {r}\n"
            ))
        }
        "POST" | "PUT" => req.json(&json!({})),
        "PATCH" => req
            .header("content-type", "application/merge-patch+json")
            .body("{}"),
        _ => req,
    }
}

#[test]
fn every_route_answers_what_the_table_says() {
    let s = Server::start();
    let (admin, _) = first_admin(&s);
    fixtures(&admin, &s);
    let mut who = vec![Who {
        name: "root",
        role: Some("admin"),
        realms: None,
        client: Client::with_token(
            // Another admin, so that `root` stays the one creating tokens.
            &create_token(&admin, &s, json!({"name": "admin2", "role": "admin"})),
        ),
    }];
    for (name, role, realms, privileged) in [
        ("writer", "writer", None, false),
        ("writer-priv", "writer", None, true),
        ("controller", "controller", None, false),
        ("reader", "reader", None, false),
        ("writer-a", "writer", Some(vec!["a"]), false),
        ("reader-a", "reader", Some(vec!["a"]), false),
        ("admin-a", "admin", Some(vec!["a"]), false),
    ] {
        let mut body = json!({"name": name, "role": role, "privileged": privileged});
        if let Some(r) = &realms {
            body["realms"] = json!(r);
        }
        who.push(Who {
            name,
            role: Some(role),
            realms,
            client: Client::with_token(&create_token(&admin, &s, body)),
        });
    }
    who.push(Who {
        name: "no token",
        role: None,
        realms: None,
        client: Client::default(),
    });
    who.push(Who {
        name: "bad token",
        role: None,
        realms: None,
        client: Client::with_token(
            "mh_0000000000000000000000000000000000000000000000000000000000000000",
        ),
    });
    let table = expected();
    let mut checked = 0;
    for route in modelhub::http::routes::table() {
        let method = route.method.as_str();
        let Some((_, _, needs, realm)) = table
            .iter()
            .find(|(m, p, _, _)| *m == method && *p == route.path)
        else {
            panic!(
                "{method} {} has no row in README's table (and this test's copy)",
                route.path
            );
        };
        let asked: &[Option<&str>] = match realm {
            Realm::Path => &[Some("a"), Some("b")],
            Realm::Query => &[None, Some("a"), Some("b")],
            Realm::Documents => &[Some("a"), Some("b")],
            Realm::All | Realm::Server => &[None],
        };
        for w in &who {
            for r in asked {
                let resp = request(
                    &w.client,
                    &s.base,
                    method,
                    &route.path,
                    *r,
                    *realm == Realm::Query,
                )
                .send()
                .unwrap();
                let status = resp.status().as_u16();
                let www = resp.headers().get("www-authenticate").cloned();
                let body = if status == 200 && method == "GET" {
                    String::new()
                } else {
                    resp.text().unwrap_or_default()
                };
                let allowed = match realm {
                    // Apply passes the route and checks each document.
                    Realm::Documents => w.allowed(*needs, Realm::Path, *r),
                    _ => w.allowed(*needs, *realm, *r),
                };
                let what = format!("{} {method} {} realm {r:?}", w.name, route.path);
                if allowed {
                    assert!(
                        status != 401 && status != 403,
                        "{what}: expected through, got {status} {body}"
                    );
                } else if w.role.is_none() {
                    assert_eq!(status, 401, "{what}: {body}");
                    assert_eq!(
                        www.as_ref().and_then(|v| v.to_str().ok()),
                        Some("Bearer realm=\"modelhub\""),
                        "{what}"
                    );
                    let p: Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(p["reason"], "Unauthorized", "{what}");
                } else {
                    assert_eq!(status, 403, "{what}: {body}");
                    let p: Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(p["reason"], "Forbidden", "{what}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "{checked} requests checked");
    // The fixtures survived the matrix.
    let (st, _) = admin.get(&s.api("/realms/b/spaces/s/stacks/t/cells/c/containers/k"));
    assert_eq!(st, 200);
}

#[test]
fn realm_scoped_tokens_through_cache_continue_watch_and_apply() {
    let s = Server::start();
    let (admin, _) = first_admin(&s);
    fixtures(&admin, &s);
    for r in ["a", "b"] {
        for sp in ["s2", "s3"] {
            common::create_named(&admin, &s, &format!("/realms/{r}/spaces"), sp);
        }
    }
    let reader_a = Client::with_token(&create_token(
        &admin,
        &s,
        json!({"name": "reader-a", "role": "reader", "realms": ["a"]}),
    ));
    let writer_a = Client::with_token(&create_token(
        &admin,
        &s,
        json!({"name": "writer-a", "role": "writer", "realms": ["a"]}),
    ));

    // The list cache: warmed by the admin for b, still refused to reader-a.
    for _ in 0..2 {
        assert_eq!(admin.get(&s.api("/realms/b/spaces")).0, 200);
        assert_eq!(admin.get(&s.api("/spaces?realm=b")).0, 200);
    }
    assert_eq!(reader_a.get(&s.api("/realms/b/spaces")).0, 403);
    assert_eq!(reader_a.get(&s.api("/spaces?realm=b")).0, 403);
    assert_eq!(reader_a.get(&s.api("/spaces")).0, 403);
    let (st, list) = reader_a.get(&s.api("/spaces?realm=a"));
    assert_eq!(st, 200);
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["spec"]["realmId"], "a", "{item}");
    }

    // Hostile shapes of the realm: encoded, repeated, empty, mixed.
    for (url, want) in [
        ("/realms/%62/spaces", 403),
        ("/realms/%62", 403),
        ("/spaces?realm=a&realm=b", 400),
        ("/spaces?realm=b&realm=a", 403),
        ("/spaces?realm=", 403),
        ("/spaces?realm=a&space=", 400),
        ("/watch?realm=a&realm=b&timeoutSeconds=1", 400),
        ("/realms/%FF/spaces", 400),
    ] {
        let (st, body) = reader_a.get(&s.api(url));
        assert_eq!(st, want, "{url}: {body}");
        assert_eq!(body["status"], want, "{url}: a problem document: {body}");
        assert!(
            !body.to_string().contains("\"realmId\":\"b\""),
            "{url}: {body}"
        );
    }

    // Another identity's continue token (a page of b) does not read b.
    let (st, page) = admin.get(&s.api("/spaces?realm=b&limit=1"));
    assert_eq!(st, 200);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for url in [
        format!("/spaces?realm=a&limit=1&continue={token}"),
        format!("/realms/a/spaces?limit=1&continue={token}"),
    ] {
        let (st, body) = reader_a.get(&s.api(&url));
        assert_eq!(st, 400, "{url}: {body}");
        assert!(!body.to_string().contains("\"b\""), "{body}");
    }
    assert_eq!(
        reader_a
            .get(&s.api(&format!("/spaces?realm=b&limit=1&continue={token}")))
            .0,
        403
    );

    // /watch: refused without a realm, narrowed to a with one.
    let (st, body) = reader_a.get(&s.api("/watch?timeoutSeconds=1"));
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["field"], "realm");
    let resp = reader_a
        .http
        .get(s.api("/watch?realm=a&timeoutSeconds=1"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = 0;
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            continue;
        }
        let ev: Value = serde_json::from_str(&line).unwrap();
        if ev["type"] == "ADDED" {
            let realm = ev["object"]["spec"]["realmId"]
                .as_str()
                .or(ev["object"]["metadata"]["name"].as_str())
                .unwrap();
            assert_eq!(realm, "a", "{ev}");
            events += 1;
        }
    }
    assert!(events >= 5, "{events} events of realm a");
    assert_eq!(reader_a.get(&s.api("/realms?watch=true")).0, 403);

    // Apply: one document out of the realms fails the whole apply.
    let before = common::revision(&admin, &s);
    let (st, body) = writer_a.post_yaml(
        &s.api("/apply"),
        "apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: new1\nspec:\n  realmId: a\n---\n\
         apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: new2\nspec:\n  realmId: b\n",
    );
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(body["field"], "documents[1]", "{body}");
    assert_eq!(common::revision(&admin, &s), before, "nothing written");
    assert_eq!(admin.get(&s.api("/realms/a/spaces/new1")).0, 404);
    let (st, body) = writer_a.post_yaml(
        &s.api("/apply"),
        "apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: new1\nspec:\n  realmId: a\n",
    );
    assert_eq!(st, 200, "{body}");

    // Cascade delete inside its realm works; the other realm is untouched.
    let (st, body) = writer_a.delete(&s.api("/realms/a/spaces/s?cascade=true"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(writer_a.delete(&s.api("/realms/b?cascade=true")).0, 403);
    assert_eq!(admin.get(&s.api("/realms/b/spaces/s")).0, 200);
}

#[test]
fn token_lifecycle_and_no_token_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let audit_arg = audit.to_str().unwrap().to_string();
    let mut s = Server::start_with(&dir.path().join("hub.redb"), &["--audit-log", &audit_arg]);
    // Anonymous while no token exists; the first admin token ends it.
    let anon = Client::default();
    assert_eq!(anon.get(&s.api("/realms")).0, 200);
    let (admin, admin_token) = first_admin(&s);
    assert_eq!(anon.get(&s.api("/realms")).0, 401);
    // A token in the URL is never read (authentication comes before the
    // query is parsed), nor logged.
    for param in ["access_token", "token", "bearer"] {
        let (st, body) = anon.get(&s.api(&format!("/realms?{param}={admin_token}")));
        assert_eq!(st, 401, "{param}: {body}");
    }
    assert_eq!(admin.get(&s.api("/realms")).0, 200);

    let writer_token = create_token(&admin, &s, json!({"name": "ci", "role": "writer"}));
    let writer = Client::with_token(&writer_token);
    assert_eq!(
        admin
            .post_json(&s.api("/tokens"), &json!({"name": "ci", "role": "reader"}))
            .0,
        409
    );
    // A token's realms are names like any other, each named by its index.
    let r = admin.post_json(
        &s.api("/tokens"),
        &json!({"name": "scoped", "role": "reader", "realms": ["a", "b_c"]}),
    );
    common::assert_problem(&r, 422, "Invalid", Some("realms[1]"));
    let (st, list) = admin.get(&s.api("/tokens"));
    assert_eq!(st, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "root"]);
    assert!(!list.to_string().contains(&writer_token[3..]));
    common::create_named(&writer, &s, "/realms", "r1");
    assert_eq!(writer.get(&s.api("/tokens")).0, 403);
    assert_eq!(writer.get(&s.api("/backup")).0, 403);

    // Revoked: the next request answers 401, without a restart.
    let (st, body) = admin.delete(&s.api("/tokens/ci"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["name"], "ci");
    let (st, body) = writer.get(&s.api("/realms"));
    assert_eq!(st, 401, "{body}");
    assert_eq!(admin.delete(&s.api("/tokens/ci")).0, 404);

    // Tokens survive a restart (durable), revocations too.
    s.restart();
    assert_eq!(admin.get(&s.api("/realms")).0, 200);
    assert_eq!(writer.get(&s.api("/realms")).0, 401);
    assert_eq!(anon.get(&s.api("/realms")).0, 401);
    s.stop();

    // Neither token string is anywhere at rest: database, log, audit
    // trail, server log.
    let mut files = vec![s.data.clone(), audit.clone()];
    files.extend(modelhub::store::files(&s.data));
    let log = s.log_text();
    for secret in [&admin_token, &writer_token] {
        let hex = &secret[3..];
        for f in &files {
            if let Ok(bytes) = std::fs::read(f) {
                assert!(
                    !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
                    "token found in {}",
                    f.display()
                );
            }
        }
        assert!(!log.contains(hex), "token found in the server log");
    }
}

#[test]
fn audit_records_writes_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let audit_arg = audit.to_str().unwrap().to_string();
    let mut s = Server::start_with(
        &dir.path().join("hub.redb"),
        &["--audit-log", &audit_arg, "--max-watches-per-identity", "1"],
    );
    let (admin, admin_token) = first_admin(&s);
    let reader_token = create_token(&admin, &s, json!({"name": "viewer", "role": "reader"}));
    // A watch held open, and a second one past the cap: 429, audited.
    let reader_http = Client::with_token(&reader_token);
    let held = reader_http
        .http
        .get(s.api("/realms?watch=true"))
        .send()
        .unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(reader_http.get(&s.api("/realms?watch=true")).0, 429);
    drop(held);
    let reader = Client::with_token(&reader_token);
    common::create_named(&admin, &s, "/realms", "r1");
    assert_eq!(
        reader
            .post_json(&s.api("/realms"), &json!({"metadata": {"name": "r2"}}))
            .0,
        403
    );
    let (st, applied) = admin.post_yaml(
        &s.api("/apply"),
        "apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: s1\nspec:\n  realmId: r1\n---\n\
         apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: s2\nspec:\n  realmId: r1\n",
    );
    assert_eq!(st, 200, "{applied}");
    assert_eq!(Client::default().get(&s.api("/realms")).0, 401);
    assert_eq!(reader.get(&s.api("/realms")).0, 200);
    s.stop();
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [&admin_token, &reader_token] {
        assert!(!text.contains(&secret[3..]), "a token in the audit log");
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let fields = |r: &Value| r["fields"].clone();
    let find = |verb: &str, path: &str, status: u64| {
        records
            .iter()
            .map(fields)
            .find(|f| f["verb"] == verb && f["path"] == path && f["status"] == status)
            .unwrap_or_else(|| panic!("no {verb} {path} {status} record in {text}"))
    };
    let created = find("POST", "/api/v1beta1/realms", 201);
    assert_eq!(created["identity"], "root");
    assert_eq!(created["role"], "admin");
    assert!(
        created["resource_version"].as_u64().unwrap() > 0,
        "{created}"
    );
    assert!(created["time"].as_str().unwrap().contains('T'));
    let denied = find("POST", "/api/v1beta1/realms", 403);
    assert_eq!(denied["identity"], "viewer");
    assert_eq!(denied["role"], "reader");
    let apply = find("POST", "/api/v1beta1/apply", 200);
    assert_eq!(apply["documents"], 2);
    assert_eq!(
        apply["resource_version"].as_u64().unwrap().to_string(),
        applied["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_else(|| applied["resourceVersion"].as_str().unwrap())
    );
    let anonymous = find("GET", "/api/v1beta1/realms", 401);
    assert_eq!(anonymous["identity"], "-");
    assert!(
        anonymous["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{anonymous}"
    );
    let capped = find("GET", "/api/v1beta1/realms", 429);
    assert_eq!(capped["identity"], "viewer");
    assert!(
        records
            .iter()
            .map(fields)
            .any(|f| f["path"] == "/api/v1beta1/tokens"
                && f["token"] == "viewer role=reader realms=* privileged=false"),
        "no audit record names the token created: {text}"
    );
    // Reads that pass are not audited.
    assert!(
        !records
            .iter()
            .map(fields)
            .any(|f| f["verb"] == "GET" && f["status"] == 200),
        "{text}"
    );
}

#[test]
fn metrics_need_a_token_unless_opened() {
    let s = Server::start();
    let (admin, _) = first_admin(&s);
    let reader = Client::with_token(&create_token(
        &admin,
        &s,
        json!({"name": "scraper", "role": "reader"}),
    ));
    let anon = Client::default();
    assert_eq!(anon.get(&format!("{}/metrics", s.base)).0, 401);
    assert_eq!(reader.get(&format!("{}/metrics", s.base)).0, 200);
    for open in ["/healthz", "/readyz", "/openapi.json", "/swagger-ui/"] {
        assert_eq!(anon.get(&format!("{}{open}", s.base)).0, 200, "{open}");
    }
    drop(s);
    let s = Server::start_args(&["--metrics-anonymous"]);
    first_admin(&s);
    assert_eq!(anon.get(&format!("{}/metrics", s.base)).0, 200);
    assert_eq!(anon.get(&s.api("/realms")).0, 401);
}

#[test]
fn a_non_loopback_listener_without_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("hub.redb"))
        .env("MODELHUB_SPARE_SPACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("--insecure-allow-anonymous"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never listened");
    // On loopback it starts, and warns loudly.
    let s = Server::start();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        s.log_text().contains("NO AUTHENTICATION"),
        "{}",
        s.log_text()
    );
}

#[test]
fn a_token_write_is_durable_with_the_logged_writes_around_it() {
    // No checkpoint of its own: before the token, the realms live only in
    // the write-ahead log; the token's durable commit takes them along.
    let mut s = Server::start_args(&["--checkpoint-interval", "60m"]);
    let anon = Client::default();
    for i in 0..5 {
        common::create_named(&anon, &s, "/realms", &format!("before{i}"));
    }
    let (admin, _) = first_admin(&s);
    let reader_token = create_token(&admin, &s, json!({"name": "r", "role": "reader"}));
    for i in 0..5 {
        common::create_named(&admin, &s, "/realms", &format!("after{i}"));
    }
    assert_eq!(admin.delete(&s.api("/tokens/r")).0, 200);
    common::create_named(&admin, &s, "/realms", "last");
    s.kill();
    s.restart();
    let (st, list) = admin.get(&s.api("/realms"));
    assert_eq!(st, 200, "{list}");
    assert_eq!(common::item_names(&list).len(), 11, "{list}");
    assert_eq!(
        Client::with_token(&reader_token).get(&s.api("/realms")).0,
        401
    );
    assert_eq!(anon.get(&s.api("/realms")).0, 401);
}

#[test]
fn revoking_every_token_does_not_reopen_anonymous_access() {
    let mut s = Server::start();
    let (admin, _) = first_admin(&s);
    let (st, body) = admin.delete(&s.api("/tokens/root"));
    assert_eq!(st, 200, "{body}");
    let anon = Client::default();
    assert_eq!(anon.get(&s.api("/realms")).0, 401);
    assert_eq!(admin.get(&s.api("/realms")).0, 401);
    s.restart();
    assert_eq!(anon.get(&s.api("/realms")).0, 401);
    assert!(!s.log_text().contains("NO AUTHENTICATION"));
}

/// The unix socket authenticates by the peer's credentials: root (and the
/// server's own user) is an admin without a token, and creates the first
/// token there; another uid needs a token. Needs root, to drop to another
/// uid in a child process; otherwise it says so and skips that part.
#[test]
fn the_unix_socket_admits_root_and_asks_other_users_for_a_token() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    // Reachable by another user: the socket's own mode and group decide.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("hub.sock");
    let listen = format!("unix:{}", sock.display());
    let root = rustix::process::geteuid().is_root();
    let mut extra = vec!["--listen", listen.as_str()];
    if root {
        extra.extend(["--socket-group", "65534"]);
    }
    let s = Server::start_with(&dir.path().join("hub.redb"), &extra);
    let cli = |args: &[&str], token: Option<&str>, uid: Option<u32>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_modelhub"));
        cmd.args(args).args(["--server", &listen]);
        cmd.env_remove("MODELHUB_TOKEN");
        if let Some(t) = token {
            cmd.env("MODELHUB_TOKEN", t);
        }
        if let Some(uid) = uid {
            cmd.uid(uid).gid(65534);
        }
        cmd.output().unwrap()
    };
    // The first admin token, over the socket, by the server's user or root.
    let out = cli(
        &["token", "create", "--name", "ops", "--role", "admin"],
        None,
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ops = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Over TCP, anonymous requests are now refused; the socket's owner is
    // still an admin without one.
    assert_eq!(Client::default().get(&s.api("/realms")).0, 401);
    let out = cli(&["token", "list"], None, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ops"));
    assert_eq!(Client::with_token(&ops).get(&s.api("/tokens")).0, 200);
    if !root {
        println!(
            "skipping the other-uid part of the_unix_socket_admits_root...: not root, so no \
             child can drop to another uid"
        );
        return;
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // uid 65534 (in the socket's group 65534) without a token: 401.
    let out = cli(&["get", "realms"], None, Some(65534));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("uid 65534"), "{err}");
    // With a reader token: reads, and may not write.
    let reader = create_token(
        &Client::with_token(&ops),
        &s,
        json!({"name": "nobody", "role": "reader"}),
    );
    let out = cli(&["get", "realms"], Some(&reader), Some(65534));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &["token", "create", "--name", "x", "--role", "admin"],
        Some(&reader),
        Some(65534),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
}

/// The audit record is formatted only when a subscriber takes it: with
/// stderr at warnings only, the `--audit-log` file still gets every write.
#[test]
fn the_audit_log_gets_writes_while_stderr_logs_warnings_only() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let audit_arg = audit.to_str().unwrap();
    let (mut child, base) = serve_logging(
        dir.path(),
        &["--audit-log", audit_arg],
        "warn",
        std::process::Stdio::null(),
    );
    let c = Client::default();
    let (st, b) = c.post_json(
        &format!("{base}/api/v1beta1/realms"),
        &json!({"metadata": {"name": "audited"}}),
    );
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(st, 201, "{b}");
    let record: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["fields"]["verb"] == "POST")
        .unwrap_or_else(|| panic!("no POST in the audit log: {text:?}"));
    assert_eq!(record["fields"]["path"], "/api/v1beta1/realms", "{record}");
    assert_eq!(record["fields"]["status"], 201, "{record}");
}

/// Audit records on stderr are written in batches by the log's thread:
/// with no other record logged after it (warnings only, but the audit),
/// the record of a write reaches stderr on its own, and a burst the server
/// stops right after is all there, whole and in order (`logging`'s unit
/// tests cover the flush itself).
#[test]
fn audit_records_on_stderr_come_out_on_their_own_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr.log");
    let (mut child, base) = serve_logging(
        dir.path(),
        &[],
        "warn,modelhub::audit=info",
        std::fs::File::create(&stderr).unwrap().into(),
    );
    let api = |path: &str| format!("{base}/api/v1beta1{path}");
    let c = Client::default();
    let (st, b) = c.post_json(&api("/realms"), &json!({"metadata": {"name": "first"}}));
    assert_eq!(st, 201, "{b}");
    let read = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !read().contains("path=/api/v1beta1/realms status=201") {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("no audit record of the POST on stderr: {}", read());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..50 {
        let space = json!({"metadata": {"name": format!("s{i:02}")}});
        let (st, b) = c.post_json(&api("/realms/first/spaces"), &space);
        assert_eq!(st, 201, "{b}");
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "{}", read());
    let log = read();
    let versions: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("modelhub::audit") && l.contains("/realms/first/spaces "))
        .map(|l| {
            let v = l.split("resource_version=").nth(1).expect(l);
            v.trim().parse().expect(l)
        })
        .collect();
    assert_eq!(versions.len(), 50, "{log}");
    assert!(versions.is_sorted_by(|a, b| a < b), "{versions:?}");
}

/// Starts `modelhub serve` on a database in `dir` with `extra` arguments,
/// `RUST_LOG=log` and its stderr to `stderr` (the common `Server` logs at
/// debug); answers the child and its base URL.
fn serve_logging(
    dir: &std::path::Path,
    extra: &[&str],
    log: &str,
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("hub.redb"))
        .args(extra)
        .env("RUST_LOG", log)
        .env("MODELHUB_SPARE_SPACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("modelhub listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    (child, base)
}
