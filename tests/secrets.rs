//! Secrets are stored only as references: a password sent by a client is
//! rejected without echo, and its bytes reach neither the database file
//! nor the log, whatever the rejected request looked like.

mod common;
use common::*;

use serde_json::{Value, json};

fn unique_secret() -> String {
    format!("S3CR3T-{}", uuid::Uuid::new_v4().simple())
}

/// Every object key anywhere in `v`.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[track_caller]
fn assert_no_password_key(v: &Value) {
    let mut all = Vec::new();
    keys(v, &mut all);
    assert!(
        !all.iter().any(|k| k == "password"),
        "a response carries `password`: {v}"
    );
}

#[track_caller]
fn assert_rejected_without_echo(r: &Reply, secret: &str) {
    assert!(
        (400..500).contains(&r.0),
        "expected a 4xx, got {}: {}",
        r.0,
        r.1
    );
    assert!(
        !r.1.to_string().contains(secret),
        "the response echoes the secret: {}",
        r.1
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_realm_password_is_422_pointing_at_password_ref() {
    let s = Server::start();
    let c = Client::default();
    let secret = unique_secret();
    let doc = json!({"metadata": {"name": "r"}, "spec": {"namespace": "n", "registryCredentials": [
        {"username": "robot", "password": secret, "serverAddress": "registry.example.com"}
    ]}});
    let r = c.post_json(&s.api("/realms"), &doc);
    assert_problem(
        &r,
        422,
        "Invalid",
        Some("spec.registryCredentials[0].password"),
    );
    let detail = r.1["detail"].as_str().unwrap();
    assert!(detail.contains("passwordRef"), "{detail}");
    assert_rejected_without_echo(&r, &secret);
    assert_eq!(c.get(&s.api("/realms/r")).0, 404);

    // YAML, second entry.
    let yaml = format!(
        "apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: r\nspec:\n  registryCredentials:\n    - username: a\n      passwordRef: {{fromEnv: A}}\n    - username: b\n      password: \"{secret}\"\n"
    );
    let r = c.post_yaml(&s.api("/realms"), &yaml);
    assert_problem(
        &r,
        422,
        "Invalid",
        Some("spec.registryCredentials[1].password"),
    );
    assert!(r.1["detail"].as_str().unwrap().contains("passwordRef"));
    assert_rejected_without_echo(&r, &secret);
}

#[test]
fn password_refs_round_trip_and_no_response_carries_a_password() {
    let s = Server::start();
    let c = Client::default();
    let creds = json!([
        {"username": "robot", "passwordRef": {"fromEnv": "REGISTRY_PASSWORD"}, "serverAddress": "registry.example.com"},
        {"username": "other", "passwordRef": {"fromFile": "/etc/kukeon/registry-password"}}
    ]);
    // An explicitly empty password is accepted (and not returned).
    let mut sent = creds.clone();
    sent[0]["password"] = json!("");
    let (st, created) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "r"}, "spec": {"namespace": "n", "registryCredentials": sent}}),
    );
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["spec"]["registryCredentials"], creds);
    assert_no_password_key(&created);
    let (_, got) = c.get(&s.api("/realms/r"));
    assert_eq!(got["spec"]["registryCredentials"], creds);
    assert_no_password_key(&got);
    let (_, list) = c.get(&s.api("/realms"));
    assert_no_password_key(&list);
    let (_, _, yaml) = c.get_yaml(&s.api("/realms/r"));
    assert!(!yaml.contains("password:"), "{yaml}");
    assert!(yaml.contains("passwordRef"), "{yaml}");
    let (_, _, yaml) = c.get_yaml(&s.api("/realms"));
    assert!(!yaml.contains("password:"), "{yaml}");
    // Writes answer without a password too.
    let (st, p) = c.patch(
        &s.api("/realms/r"),
        &json!({"metadata": {"labels": {"a": "b"}}}),
    );
    assert_eq!(st, 200, "{p}");
    assert_no_password_key(&p);
    assert_eq!(p["spec"]["registryCredentials"], creds);
    let (st, p) = c.put_json(
        &s.api("/realms/r/status"),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200, "{p}");
    assert_no_password_key(&p);
}

#[test]
fn container_secret_references_are_stored_as_is() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let secrets = json!([
        {"name": "db", "fromFile": "/etc/kukeon/db", "mountPath": "/run/secrets/db"},
        {"name": "token", "fromEnv": "API_TOKEN"}
    ]);
    let (st, b) = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/t/cells"),
        &json!({"metadata": {"name": "c"}, "spec": {"containers": [{"id": "a", "secrets": secrets}]}}),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["spec"]["containers"][0]["secrets"], secrets);
    let (st, b) = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/t/cells/c/containers"),
        &json!({"metadata": {"name": "n"}, "spec": {"secrets": secrets}}),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        c.get(&s.api("/realms/r/spaces/s/stacks/t/cells/c/containers/n"))
            .1["spec"]["secrets"],
        secrets
    );
    // A secret reference carries no value field.
    let r = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/t/cells/c/containers"),
        &json!({"metadata": {"name": "m"}, "spec": {"secrets": [{"name": "x", "fromEnv": "X", "value": "v"}]}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("spec.secrets[0].value"));
}

#[test]
fn secret_bytes_reach_neither_the_database_nor_the_log() {
    let mut s = Server::start();
    let c = Client::default();
    let secret = unique_secret();
    hierarchy(&c, &s, "r", "s", "t");
    let (st, b) = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "reg"}, "spec": {"registryCredentials": [
            {"username": "u", "passwordRef": {"fromEnv": "REG_PASSWORD"}}]}}),
    );
    assert_eq!(st, 201, "{b}");
    let cells = s.api("/realms/r/spaces/s/stacks/t/cells");
    assert_eq!(
        c.post_json(&cells, &json!({"metadata": {"name": "c"}})).0,
        201
    );
    let creds = json!([{"username": "u", "password": secret}]);

    // The password itself, by every write path.
    let rejected: Vec<(&str, Reply)> = vec![
        (
            "POST realm",
            c.post_json(&s.api("/realms"), &json!({"metadata": {"name": "x"}, "spec": {"registryCredentials": creds}})),
        ),
        (
            "PUT realm",
            c.put_json(&s.api("/realms/reg"), &json!({"metadata": {"name": "reg"}, "spec": {"registryCredentials": creds}})),
        ),
        ("PATCH realm", c.patch(&s.api("/realms/reg"), &json!({"spec": {"registryCredentials": creds}}))),
        (
            "PUT realm status",
            c.put_json(&s.api("/realms/reg/status"), &json!({"spec": {"registryCredentials": creds}, "status": {"state": "Ready"}})),
        ),
        (
            "PATCH realm status",
            c.patch(&s.api("/realms/reg/status"), &json!({"spec": {"registryCredentials": creds}, "status": {"state": "Ready"}})),
        ),
        (
            "POST realm YAML",
            c.post_yaml(
                &s.api("/realms"),
                &format!("metadata:\n  name: y\nspec:\n  registryCredentials:\n  - username: u\n    password: {secret}\n"),
            ),
        ),
        // Unknown fields whose value is the secret.
        (
            "unknown spec field",
            c.post_json(&s.api("/realms"), &json!({"metadata": {"name": "z"}, "spec": {"namespace": "n", "token": secret}})),
        ),
        (
            "unknown credentials field",
            c.post_json(
                &s.api("/realms"),
                &json!({"metadata": {"name": "z"}, "spec": {"registryCredentials": [{"username": "u", "secret": secret}]}}),
            ),
        ),
        (
            "unknown top-level field",
            c.post_json(&cells, &json!({"metadata": {"name": "z"}, "data": {"password": secret}})),
        ),
        (
            "unknown passwordRef field",
            c.post_json(
                &s.api("/realms"),
                &json!({"metadata": {"name": "z"}, "spec": {"registryCredentials": [{"username": "u", "passwordRef": {"value": secret}}]}}),
            ),
        ),
        // Rejected for other reasons, with the secret somewhere inside.
        (
            "invalid cell with secret env",
            c.post_json(&cells, &json!({"metadata": {"name": "z"}, "spec": {"containers": [
                {"id": "a", "env": [format!("PASSWORD={secret}")]}, {"id": "a"}]}})),
        ),
        (
            "empty label key",
            c.post_json(&cells, &json!({"metadata": {"name": "z", "labels": {"": secret}}})),
        ),
        (
            "already exists",
            c.post_json(&cells, &json!({"metadata": {"name": "c", "labels": {"k": secret}}})),
        ),
        (
            "missing parent",
            c.post_json(
                &s.api("/realms/r/spaces/s/stacks/nope/cells"),
                &json!({"metadata": {"name": "z", "labels": {"k": secret}}}),
            ),
        ),
        (
            "stale precondition",
            c.send(
                c.http
                    .put(format!("{cells}/c"))
                    .header("if-match", "\"999999\"")
                    .json(&json!({"metadata": {"name": "c", "labels": {"k": secret}}})),
            ),
        ),
        (
            "coordinate mismatch",
            c.post_json(&cells, &json!({"metadata": {"name": "z", "labels": {"k": secret}}, "spec": {"stackId": "other"}})),
        ),
        (
            "wrong kind",
            c.post_json(&cells, &json!({"kind": "Realm", "metadata": {"name": "z", "labels": {"k": secret}}})),
        ),
    ];
    for (what, r) in &rejected {
        assert!(
            (400..500).contains(&r.0),
            "{what}: expected a 4xx, got {}: {}",
            r.0,
            r.1
        );
    }
    for (what, r) in &rejected[..10] {
        assert!(
            !r.1.to_string().contains(&secret),
            "{what}: the response echoes the secret: {}",
            r.1
        );
    }
    // A wrongly typed value (bodies that never decode).
    for body in [
        json!({"metadata": {"name": "z"}, "spec": {"containers": [{"id": "a", "privileged": secret}]}}),
        json!({"metadata": {"name": "z"}, "status": {"state": secret}}),
    ] {
        let r = c.post_json(&cells, &body);
        assert_eq!(r.0, 400, "{}", r.1);
    }
    // Sanity: the valid objects are there, unchanged by the rejected writes.
    let (_, reg) = c.get(&s.api("/realms/reg"));
    assert_eq!(
        reg["spec"]["registryCredentials"],
        json!([{"username": "u", "passwordRef": {"fromEnv": "REG_PASSWORD"}}])
    );
    assert_eq!(reg["status"]["state"], "Pending");
    assert_eq!(item_names(&c.get(&cells).1), ["c"]);
    assert_eq!(item_names(&c.get(&s.api("/realms")).1), ["r", "reg"]);

    // The write-ahead log first, while the writes are still in it (a
    // graceful stop checkpoints them into the database).
    let mut wal = s.data.clone().into_os_string();
    wal.push(".wal");
    // Each file must hold the reference (a sanity check of the search)
    // and never the secret.
    let holds_reference_only = |bytes: &[u8], what: &str| {
        assert!(!bytes.is_empty(), "{what} is empty");
        assert!(find(bytes, b"REG_PASSWORD"), "{what} lacks the reference");
        assert!(!find(bytes, secret.as_bytes()), "the secret is in {what}");
    };
    if on_etcd() {
        // The keys under the server's prefix, and every file of each
        // member (its write-ahead log and database), must hold the
        // reference and never the secret.
        let prefix = s.etcd_prefix.clone().expect("an etcd prefix");
        let cluster = etcd_cluster();
        let out = cluster.etcdctl(&["get", "--prefix", &prefix]);
        assert!(out.status.success(), "{out:?}");
        holds_reference_only(&out.stdout, "the prefix's keys");
        for i in 0..cluster.len() {
            let mut bytes = Vec::new();
            let mut dirs = vec![cluster.data_dir(i)];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if let Ok(b) = std::fs::read(&path) {
                        bytes.extend(b);
                    }
                }
            }
            holds_reference_only(&bytes, &format!("etcd member {i}'s files"));
        }
        s.stop();
        let log = s.log_text();
        assert!(!log.is_empty(), "the log was captured");
        assert!(!log.contains(&secret), "the secret is in the log:\n{log}");
        return;
    }
    holds_reference_only(
        &std::fs::read(&wal).expect("write-ahead log"),
        "the write-ahead log",
    );
    s.stop();
    holds_reference_only(
        &std::fs::read(&s.data).expect("database file"),
        "the database file",
    );
    let log = s.log_text();
    assert!(!log.is_empty(), "the log was captured");
    assert!(!log.contains(&secret), "the secret is in the log:\n{log}");
}

#[test]
fn a_non_string_password_is_also_422_without_echo() {
    // API.md ("Secrets"): `password` must be empty or absent, else 422
    // telling the client to use passwordRef. A numeric password (JSON, or
    // what a YAML tool emits for an all-digit value) is a password all the
    // same.
    let s = Server::start();
    let c = Client::default();
    let digits: u64 = 7_000_000_000 + u64::from(uuid::Uuid::new_v4().as_u128() as u32);
    let r = c.post_json(
        &s.api("/realms"),
        &json!({"metadata": {"name": "r"}, "spec": {"registryCredentials": [
            {"username": "u", "password": digits}]}}),
    );
    assert!(
        !r.1.to_string().contains(&digits.to_string()),
        "the response echoes the password: {}",
        r.1
    );
    assert_problem(
        &r,
        422,
        "Invalid",
        Some("spec.registryCredentials[0].password"),
    );
    assert!(
        r.1["detail"].as_str().unwrap().contains("passwordRef"),
        "{}",
        r.1
    );
    assert_eq!(c.get(&s.api("/realms/r")).0, 404);
}
