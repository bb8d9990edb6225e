//! The privileged-field policy (API.md, "Privileged fields"): every
//! listed field, set directly and (for those space defaults can carry)
//! inherited from the space, refused without the grant and accepted with
//! it; over kukeon's own example manifests.
//!
//! The policy's decisions are checked here through its seam,
//! `Identity::refused_field`, with identities built directly; the HTTP
//! matrix at the end runs against the real server with real tokens
//! (admin, writer with the grant, writer without it).

mod common;
use common::*;

use modelhub::api::v1beta1::decode_document;
use modelhub::auth::{Identity, Role, Source};
use modelhub::model::{AnyObject, SpaceSpec};
use serde_json::{Value, json};

fn identity(role: Role, privileged: bool) -> Identity {
    Identity {
        name: "t".into(),
        source: Source::Token,
        role,
        realms: None,
        privileged,
    }
}

/// `a` with `b` merged into it (RFC 7386).
fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = a.clone();
            for (k, v) in b {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (_, b) => b.clone(),
    }
}

fn example(name: &str) -> Value {
    yaml_json(&shared_example(name))
}

fn decode(doc: &Value) -> AnyObject {
    decode_document(doc.clone()).unwrap_or_else(|e| panic!("{e:?}: {doc}"))
}

/// The value at a wire path such as `spec.containers[1].volumes[0]`: the
/// policy names fields the way clients see them.
fn at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = doc;
    for part in path.split('.') {
        let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
        v = v.get(name)?;
        for i in indexes.split('[').filter(|s| !s.is_empty()) {
            v = v.get(i.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// `doc` is refused naming `field` for a writer and a reader without the
/// grant (the policy does not look at the role but for admin; the route
/// rules keep readers from writing at all), and accepted for a writer
/// with it and for an admin.
#[track_caller]
fn refused_without_the_grant(doc: &Value, space: Option<&SpaceSpec>, field: &str, inherited: bool) {
    let obj = decode(doc);
    for denied in [identity(Role::Writer, false), identity(Role::Reader, false)] {
        let f = denied
            .refused_field(&obj, space)
            .unwrap_or_else(|| panic!("{field}: not refused in {doc}"));
        assert_eq!(f.field, field, "{doc}");
        assert_eq!(f.inherited_from.is_some(), inherited, "{field}");
    }
    if !inherited {
        assert!(at(doc, field).is_some(), "{field} is not a path of {doc}");
    }
    for allowed in [identity(Role::Writer, true), identity(Role::Admin, false)] {
        assert_eq!(allowed.refused_field(&obj, space), None, "{field}");
    }
}

/// Each privileged container field, as a merge into a container's spec,
/// and the field it is named by, below the container.
fn container_cases() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"privileged": true}), "privileged"),
        (json!({"hostPID": true}), "hostPID"),
        (json!({"hostNetwork": true}), "hostNetwork"),
        (json!({"hostCgroup": true}), "hostCgroup"),
        (
            json!({"capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}),
            "capabilities.add",
        ),
        (
            json!({"securityOpts": ["seccomp=unconfined"]}),
            "securityOpts",
        ),
        (
            json!({"volumes": [{"kind": "tmpfs", "target": "/scratch"}, {"source": "/var/run", "target": "/host-run"}]}),
            "volumes[1]",
        ),
        (
            json!({"volumes": [{"kind": "bind", "source": "/", "target": "/host", "readOnly": true}]}),
            "volumes[0]",
        ),
        (
            json!({"secrets": [{"name": "api", "fromEnv": "API_TOKEN"}, {"name": "db", "fromFile": "/etc/kukeon/db"}]}),
            "secrets[1].fromFile",
        ),
        (
            json!({"cniConfigPath": "/etc/cni/net.d/10-kukeon.conflist"}),
            "cniConfigPath",
        ),
    ]
}

/// The worker container of `cell.yaml`, as a standalone Container.
fn worker() -> Value {
    let cell = example("cell.yaml");
    let spec = merge(
        &cell["spec"]["containers"][1],
        &json!({"realmId": "test-realm", "spaceId": "test-space", "stackId": "test-stack", "cellId": "test-cell"}),
    );
    json!({"apiVersion": "v1beta1", "kind": "Container", "metadata": {"name": "worker"}, "spec": spec})
}

#[test]
fn the_examples_set_no_privileged_field() {
    let writer = identity(Role::Writer, false);
    for name in [
        "realm.yaml",
        "space.yaml",
        "stack.yaml",
        "cell.yaml",
        "hello-world.yaml",
    ] {
        let obj = decode(&example(name));
        assert_eq!(writer.refused_field(&obj, None), None, "{name}");
    }
    let multi = shared_example("multi-resource.yaml");
    for doc in multi.split("\n---\n") {
        let obj = decode(&yaml_json(doc));
        assert_eq!(writer.refused_field(&obj, None), None, "{doc}");
    }
    assert_eq!(writer.refused_field(&decode(&worker()), None), None);
}

#[test]
fn every_container_field_set_directly() {
    for (set, name) in container_cases() {
        // A Container.
        let doc = merge(&worker(), &json!({"spec": set}));
        refused_without_the_grant(&doc, None, &format!("spec.{name}"), false);
        // A container of a Cell (the second of the example's three).
        let mut cell = example("cell.yaml");
        cell["spec"]["containers"][1] = merge(&cell["spec"]["containers"][1], &set);
        refused_without_the_grant(&cell, None, &format!("spec.containers[1].{name}"), false);
    }
}

#[test]
fn space_and_realm_fields() {
    let space = example("space.yaml");
    for (set, field) in [
        (
            json!({"defaults": {"container": {"capabilities": {"add": ["NET_ADMIN"]}}}}),
            "spec.defaults.container.capabilities.add",
        ),
        (
            json!({"defaults": {"container": {"securityOpts": ["apparmor=unconfined"]}}}),
            "spec.defaults.container.securityOpts",
        ),
        (
            json!({"cniConfigPath": "/etc/cni/net.d/k.conflist"}),
            "spec.cniConfigPath",
        ),
    ] {
        let doc = merge(&space, &json!({"spec": set}));
        refused_without_the_grant(&doc, None, field, false);
    }
    // Unprivileged defaults are not.
    let harmless = merge(
        &space,
        &json!({"spec": {"defaults": {"container": {"user": "1000", "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}, "tmpfs": [{"path": "/tmp"}]}}}}),
    );
    let writer = identity(Role::Writer, false);
    assert_eq!(writer.refused_field(&decode(&harmless), None), None);

    let realm = example("realm.yaml");
    let from_file = merge(
        &realm,
        &json!({"spec": {"registryCredentials": [
            {"username": "robot", "passwordRef": {"fromEnv": "REGISTRY_PASSWORD"}, "serverAddress": "registry.eminwux.com"},
            {"username": "robot", "passwordRef": {"fromFile": "/etc/kukeon/registry-password"}}
        ]}}),
    );
    refused_without_the_grant(
        &from_file,
        None,
        "spec.registryCredentials[1].passwordRef.fromFile",
        false,
    );
    let from_env = merge(
        &realm,
        &json!({"spec": {"registryCredentials": [{"username": "robot", "passwordRef": {"fromEnv": "REGISTRY_PASSWORD"}}]}}),
    );
    assert_eq!(writer.refused_field(&decode(&from_env), None), None);
}

/// Capabilities and security options, the privileged fields space
/// defaults can carry, inherited by a container and by each container of
/// a cell that does not set its own.
#[test]
fn inherited_from_the_space() {
    let space = example("space.yaml");
    for (defaults, name) in [
        (
            json!({"capabilities": {"add": ["NET_ADMIN"]}}),
            "capabilities.add",
        ),
        (
            json!({"securityOpts": ["seccomp=unconfined"]}),
            "securityOpts",
        ),
    ] {
        let doc = merge(
            &space,
            &json!({"spec": {"defaults": {"container": defaults}}}),
        );
        let AnyObject::Space(s) = decode(&doc) else {
            unreachable!()
        };
        let spec = &s.spec;
        refused_without_the_grant(&worker(), Some(spec), &format!("spec.{name}"), true);
        let f = identity(Role::Writer, false)
            .refused_field(&decode(&worker()), Some(spec))
            .unwrap();
        assert_eq!(f.inherited_from.as_deref(), Some("test-realm/test-space"));
        assert!(
            f.to_string()
                .contains("inherited from space test-realm/test-space's defaults"),
            "{f}"
        );
        // In a cell, its first container is the first to inherit.
        refused_without_the_grant(
            &example("cell.yaml"),
            Some(spec),
            &format!("spec.containers[0].{name}"),
            true,
        );
    }
    // A container's own (unprivileged) values replace the defaults.
    let doc = merge(
        &space,
        &json!({"spec": {"defaults": {"container": {"capabilities": {"add": ["NET_ADMIN"]}, "securityOpts": ["seccomp=unconfined"]}}}}),
    );
    let AnyObject::Space(s) = decode(&doc) else {
        unreachable!()
    };
    let own = merge(
        &worker(),
        &json!({"spec": {"capabilities": {"drop": ["NET_RAW"]}, "securityOpts": ["no-new-privileges"]}}),
    );
    // Its own security options are still privileged, now its own.
    refused_without_the_grant(&own, Some(&s.spec), "spec.securityOpts", false);
    let own = merge(
        &worker(),
        &json!({"spec": {"capabilities": {"drop": ["NET_RAW"]}}}),
    );
    refused_without_the_grant(&own, Some(&s.spec), "spec.securityOpts", true);
}

// ---- the HTTP matrix, with real tokens ----

/// One write of the matrix.
type Write<'a> = Box<dyn Fn() -> Reply + 'a>;

const CELLS: &str = "/realms/test-realm/spaces/test-space/stacks/test-stack/cells";

/// Every write path with a privileged field, for every role that may
/// write, with and without the grant: 403 `Forbidden` naming the field
/// unless granted, else the write's success status.
#[test]
fn http_matrix() {
    for (role, privileged) in [("admin", false), ("writer", true), ("writer", false)] {
        let TokenServer {
            server: s,
            client: c,
            granted,
        } = server_with_token(role, privileged);
        // What every writer may: the examples, and the worker container.
        for doc in ["realm.yaml", "space.yaml", "stack.yaml", "cell.yaml"]
            .map(example)
            .into_iter()
            .chain([worker()])
        {
            let (st, b) = c.post_json(&s.api("/apply"), &doc);
            assert_eq!(st, 200, "{doc}: {b}");
        }
        let containers = format!("{CELLS}/test-cell/containers");
        let mut cell = merge(
            &example("cell.yaml"),
            &json!({"metadata": {"name": "priv"}, "spec": {"id": "priv"}}),
        );
        cell["spec"]["containers"][1]["privileged"] = json!(true);
        let worker_doc = merge(&worker(), &json!({"spec": {"hostNetwork": true}}));
        let w2 = merge(
            &worker(),
            &json!({"metadata": {"name": "w2"}, "spec": {"id": "w2", "volumes": [{"source": "/", "target": "/host"}]}}),
        );
        let apply_docs = json!([example("cell.yaml"), w2]);
        let cases: Vec<(&str, Write, u16, &str)> = vec![
            (
                "create",
                Box::new(|| c.post_json(&s.api(CELLS), &cell)),
                201,
                "spec.containers[1].privileged",
            ),
            (
                "apply dry run",
                Box::new(|| c.post_json(&s.api("/apply?dryRun=true"), &apply_docs)),
                200,
                "documents[1].spec.volumes[0]",
            ),
            (
                "apply",
                Box::new(|| c.post_json(&s.api("/apply"), &apply_docs)),
                200,
                "documents[1].spec.volumes[0]",
            ),
            (
                "replace",
                Box::new(|| c.put_json(&s.api(&format!("{containers}/worker")), &worker_doc)),
                200,
                "spec.hostNetwork",
            ),
            (
                "patch",
                Box::new(|| {
                    c.patch(
                        &s.api("/realms/test-realm/spaces/test-space"),
                        &json!({"spec": {"defaults": {"container": {"capabilities": {"add": ["NET_ADMIN"]}}}}}),
                    )
                }),
                200,
                "spec.defaults.container.capabilities.add",
            ),
        ];
        for (what, send, ok, field) in cases {
            let r = send();
            if granted {
                assert_eq!(r.0, ok, "{role} privileged={privileged} {what}: {}", r.1);
            } else {
                assert_problem(&r, 403, "Forbidden", Some(field));
            }
        }
    }
}

/// Over HTTP, with real tokens: a container created by a writer in a space
/// whose defaults (set by an admin) add capabilities is refused without
/// the grant, naming the inherited field, and created with it.
#[test]
fn http_inherited_from_the_space() {
    let s = Server::start();
    let (admin, _) = first_admin(&s);
    for doc in ["realm.yaml", "space.yaml", "stack.yaml", "cell.yaml"].map(example) {
        let (st, b) = admin.post_json(&s.api("/apply"), &doc);
        assert_eq!(st, 200, "{doc}: {b}");
    }
    let (st, b) = admin.patch(
        &s.api("/realms/test-realm/spaces/test-space"),
        &json!({"spec": {"defaults": {"container": {"capabilities": {"add": ["NET_ADMIN"]}}}}}),
    );
    assert_eq!(st, 200, "{b}");
    let writer = Client::with_token(&create_token(
        &admin,
        &s,
        json!({"name": "w", "role": "writer"}),
    ));
    let granted = Client::with_token(&create_token(
        &admin,
        &s,
        json!({"name": "wp", "role": "writer", "privileged": true}),
    ));
    let containers = s.api(&format!("{CELLS}/test-cell/containers"));
    let r = writer.post_json(&containers, &worker());
    assert_problem(&r, 403, "Forbidden", Some("spec.capabilities.add"));
    assert!(
        r.1["detail"].as_str().unwrap().contains("inherited"),
        "{}",
        r.1
    );
    assert_eq!(admin.get(&format!("{containers}/worker")).0, 404);
    let (st, b) = granted.post_json(&containers, &worker());
    assert_eq!(st, 201, "{b}");
    // Status writes by a controller are never checked.
    let controller = Client::with_token(&create_token(
        &admin,
        &s,
        json!({"name": "c", "role": "controller"}),
    ));
    let (st, b) = controller.put_json(&format!("{containers}/worker/status"), &b);
    assert_eq!(st, 200, "{b}");
}
