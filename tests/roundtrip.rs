//! Every field of maximal documents survives a write and a read unchanged.

mod common;
use common::*;

use serde_json::{Value, json};

const STACK: &str = "/realms/r/spaces/s/stacks/t";

/// A container spec with every field set to a non-default value.
fn full_container(id: &str, cell: &str, attachable: bool) -> Value {
    let mut c = json!({
        "id": id,
        "containerdId": format!("s_t_{cell}_{id}"),
        "realmId": "r",
        "spaceId": "s",
        "stackId": "t",
        "cellId": cell,
        "root": true,
        "image": "registry.example.com/app:1.2.3",
        "command": "/bin/app",
        "args": ["--listen", ":8080", ""],
        "workingDir": "/srv",
        "env": ["A=1", "B=two words", "EMPTY="],
        "ports": ["8080:80/tcp", "127.0.0.1:9090:9090"],
        "volumes": [
            {"kind": "bind", "source": "/var/data", "target": "/data", "readOnly": true},
            {"source": "/etc/app", "target": "/etc/app"},
            {"kind": "tmpfs", "target": "/scratch", "sizeBytes": 67108864, "mode": 493}
        ],
        "networks": ["front", "back"],
        "networksAliases": ["web", "www"],
        "privileged": true,
        "hostNetwork": true,
        "hostPID": true,
        "hostCgroup": true,
        "user": "1000:1000",
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]},
        "securityOpts": ["no-new-privileges", "seccomp=unconfined"],
        "tmpfs": [
            {"path": "/run", "sizeBytes": 1048576, "options": ["noexec", "nosuid"]},
            {"path": "/tmp"}
        ],
        "resources": {"memoryLimitBytes": 0, "pidsLimit": 256},
        "secrets": [
            {"name": "db-password", "fromFile": "/etc/kukeon/secrets/db", "mountPath": "/run/secrets/db"},
            {"name": "api-token", "fromEnv": "API_TOKEN"}
        ],
        "cniConfigPath": "/etc/cni/net.d/10-app.conflist",
        "restartPolicy": "on-failure"
    });
    if attachable {
        c.as_object_mut().unwrap().remove("root");
        c["attachable"] = json!(true);
        c["tty"] =
            json!({"prompt": "app> ", "onInit": [{"script": "echo hi"}, {"script": "cd /srv"}]});
        c["resources"] = json!({"cpuShares": 0, "memoryLimitBytes": 536870912});
    }
    c
}

fn container_status(name: &str) -> Value {
    json!({
        "name": name,
        "id": format!("s_t_c_{name}"),
        "state": "Ready",
        "restartCount": 3,
        "restartTime": "2024-05-01T10:00:00Z",
        "startTime": "2024-05-01T10:00:01.25Z",
        "finishTime": "2024-04-30T23:59:59.123456789Z",
        "exitCode": 137,
        "exitSignal": "SIGKILL"
    })
}

fn setup() -> (Server, Client) {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    (s, c)
}

#[track_caller]
fn assert_same_doc(got: &Value, sent: &Value) {
    assert_eq!(got["apiVersion"], "v1beta1");
    assert_eq!(got["kind"], sent["kind"]);
    assert_eq!(got["metadata"]["name"], sent["metadata"]["name"]);
    assert_eq!(got["metadata"]["labels"], sent["metadata"]["labels"]);
    assert_eq!(
        got["spec"], sent["spec"],
        "spec\n got: {}\nsent: {}",
        got["spec"], sent["spec"]
    );
}

#[test]
fn maximal_cell_round_trips_every_field() {
    let (s, c) = setup();
    let cell = json!({
        "apiVersion": "v1beta1",
        "kind": "Cell",
        "metadata": {"name": "c", "labels": {"app": "web", "example.com/tier": "front"}},
        "spec": {
            "id": "c",
            "realmId": "r",
            "spaceId": "s",
            "stackId": "t",
            "rootContainerId": "main",
            "tty": {"default": "shell"},
            "containers": [full_container("main", "c", false), full_container("shell", "c", true)],
            "autoDelete": true,
            "nestedCgroupRuntime": true
        }
    });
    let (st, created) = c.post_json(&s.api(&format!("{STACK}/cells")), &cell);
    assert_eq!(st, 201, "{created}");
    assert_same_doc(&created, &cell);
    let url = s.api(&format!("{STACK}/cells/c"));
    let (st, got) = c.get(&url);
    assert_eq!(st, 200);
    assert_same_doc(&got, &cell);
    // resources: 0 is kept, absent stays absent.
    let res = &got["spec"]["containers"][0]["resources"];
    assert_eq!(res["memoryLimitBytes"], 0);
    assert!(res.get("cpuShares").is_none(), "{res}");
    let res = &got["spec"]["containers"][1]["resources"];
    assert_eq!(res["cpuShares"], 0);
    assert!(res.get("pidsLimit").is_none(), "{res}");

    let status = json!({
        "state": "Ready",
        "cgroupPath": "/kukeon/r/s/t/c",
        "subtreeControllers": ["cpu", "memory", "pids"],
        "network": {"bridgeName": "kuke-br0"},
        "containers": [container_status("main"), {
            "name": "shell", "id": "s_t_c_shell", "state": "Stopped", "restartCount": 0,
            "restartTime": "0001-01-01T00:00:00Z", "startTime": "2024-05-01T10:00:00Z",
            "finishTime": "2024-05-01T11:00:00Z", "exitCode": 0, "exitSignal": ""
        }],
        "readyObserved": true
    });
    let (st, after) = c.put_json(&format!("{url}/status"), &json!({"status": status}));
    assert_eq!(st, 200, "{after}");
    assert_eq!(
        after["status"], status,
        "\n got: {}\nsent: {status}",
        after["status"]
    );
    let (_, got) = c.get(&url);
    assert_same_doc(&got, &cell);
    assert_eq!(got["status"], status);
    // YAML read of the same object parses to the same document.
    let (st, _, text) = c.get_yaml(&url);
    assert_eq!(st, 200);
    assert_eq!(yaml_json(&text), got);
}

#[test]
fn maximal_cell_round_trips_through_yaml() {
    let (s, c) = setup();
    let cell = json!({
        "apiVersion": "v1beta1",
        "kind": "Cell",
        "metadata": {
            "name": "c",
            "labels": {"app": "web"},
            "finalizers": ["kukeon.io/runtime", "example.com/backup"]
        },
        "spec": {
            "id": "c", "realmId": "r", "spaceId": "s", "stackId": "t",
            "rootContainerId": "main",
            "tty": {"default": "shell"},
            "containers": [full_container("main", "c", false), full_container("shell", "c", true)],
            "autoDelete": true,
            "nestedCgroupRuntime": true
        }
    });
    let yaml = yaml_serde::to_string(&cell).unwrap();
    let (st, created) = c.post_yaml(&s.api(&format!("{STACK}/cells")), &yaml);
    assert_eq!(st, 201, "{created}\n{yaml}");
    assert_same_doc(&created, &cell);
    assert_eq!(
        created["metadata"]["finalizers"],
        cell["metadata"]["finalizers"]
    );
    // Marked for deletion, its deletionTimestamp reads the same in YAML.
    let url = s.api(&format!("{STACK}/cells/c"));
    let (st, marked) = c.delete(&url);
    assert_eq!(st, 202, "{marked}");
    let (st, _, text) = c.get_yaml(&url);
    assert_eq!(st, 200);
    let doc = yaml_json(&text);
    assert!(doc["metadata"]["deletionTimestamp"].is_string(), "{text}");
    assert_eq!(doc["metadata"], marked["metadata"]);
}

#[test]
fn create_keeps_the_status_sent_with_the_document() {
    // API.md ("Writes") does not say create ignores the status (only PUT
    // does): the server stores the decoded document, status included.
    let (s, c) = setup();
    let status = json!({
        "state": "Ready", "cgroupPath": "/k/c", "subtreeControllers": ["cpu"],
        "network": {"bridgeName": "br"}, "containers": [container_status("a")], "readyObserved": true
    });
    let (st, created) = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "c"}, "spec": {"containers": [{"id": "a"}]}, "status": status}),
    );
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["status"], status);
    assert_eq!(
        c.get(&s.api(&format!("{STACK}/cells/c"))).1["status"],
        status
    );
}

#[test]
fn maximal_container_round_trips_every_field() {
    let (s, c) = setup();
    let (st, b) = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "c"}}),
    );
    assert_eq!(st, 201, "{b}");
    let mut spec = full_container("n", "c", true);
    spec["root"] = json!(true);
    let doc = json!({
        "apiVersion": "v1beta1",
        "kind": "Container",
        "metadata": {"name": "n", "labels": {"role": "shell"}},
        "spec": spec
    });
    let (st, created) = c.post_json(&s.api(&format!("{STACK}/cells/c/containers")), &doc);
    assert_eq!(st, 201, "{created}");
    assert_same_doc(&created, &doc);
    let url = s.api(&format!("{STACK}/cells/c/containers/n"));
    let status = container_status("n");
    let (st, after) = c.put_json(&format!("{url}/status"), &json!({"status": status}));
    assert_eq!(st, 200, "{after}");
    let (_, got) = c.get(&url);
    assert_same_doc(&got, &doc);
    assert_eq!(
        got["status"], status,
        "\n got: {}\nsent: {status}",
        got["status"]
    );
    assert_eq!(generation(&got), 1);
}

#[test]
fn maximal_space_round_trips_every_field() {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "r");
    let doc = json!({
        "apiVersion": "v1beta1",
        "kind": "Space",
        "metadata": {"name": "s", "labels": {"env": "prod"}},
        "spec": {
            "realmId": "r",
            "cniConfigPath": "/etc/cni/net.d/20-s.conflist",
            "network": {"egress": {"default": "deny", "allow": [
                {"host": "registry.example.com", "ports": [443]},
                {"cidr": "10.0.0.0/8", "ports": [53, 8080, 65535]},
                {"cidr": "fd00::/64"},
                {"host": "1.example.com", "ports": [1]}
            ]}},
            "defaults": {"container": {
                "user": "65534",
                "readOnlyRootFilesystem": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "securityOpts": ["no-new-privileges"],
                "tmpfs": [{"path": "/tmp", "sizeBytes": 1024, "options": ["nodev"]}],
                "resources": {"memoryLimitBytes": 268435456, "cpuShares": 512, "pidsLimit": 0}
            }}
        }
    });
    let (st, created) = c.post_json(&s.api("/realms/r/spaces"), &doc);
    assert_eq!(st, 201, "{created}");
    assert_same_doc(&created, &doc);
    let url = s.api("/realms/r/spaces/s");
    let status = json!({"state": "Failed", "cgroupPath": "/kukeon/r/s", "subtreeControllers": ["cpu", "io"]});
    let (st, after) = c.put_json(&format!("{url}/status"), &json!({"status": status}));
    assert_eq!(st, 200, "{after}");
    let (_, got) = c.get(&url);
    assert_same_doc(&got, &doc);
    assert_eq!(got["status"], status);
    // A null readOnlyRootFilesystem default stays absent (null != false).
    let (st, p) = c.patch(
        &url,
        &json!({"spec": {"defaults": {"container": {"readOnlyRootFilesystem": null}}}}),
    );
    assert_eq!(st, 200, "{p}");
    assert!(
        p["spec"]["defaults"]["container"]
            .get("readOnlyRootFilesystem")
            .is_none(),
        "{p}"
    );
    assert_eq!(generation(&p), 2);
}

#[test]
fn maximal_realm_and_stack_round_trip() {
    let s = Server::start();
    let c = Client::default();
    let realm = json!({
        "apiVersion": "v1beta1", "kind": "Realm",
        "metadata": {"name": "r", "labels": {"owner": "ops"}},
        "spec": {"namespace": "r-ns", "registryCredentials": [
            {"username": "robot", "passwordRef": {"fromFile": "/etc/kukeon/reg"}, "serverAddress": "registry.example.com"},
            {"username": "bot2", "passwordRef": {"fromEnv": "REG2_PASSWORD"}}
        ]}
    });
    let (st, created) = c.post_json(&s.api("/realms"), &realm);
    assert_eq!(st, 201, "{created}");
    assert_same_doc(&created, &realm);
    let status =
        json!({"state": "Deleting", "cgroupPath": "/kukeon/r", "subtreeControllers": ["cpu"]});
    let (st, _) = c.put_json(&s.api("/realms/r/status"), &json!({"status": status}));
    assert_eq!(st, 200);
    let (_, got) = c.get(&s.api("/realms/r"));
    assert_same_doc(&got, &realm);
    assert_eq!(got["status"], status);

    assert_eq!(
        c.post_json(
            &s.api("/realms/r/spaces"),
            &json!({"metadata": {"name": "s"}})
        )
        .0,
        201
    );
    let stack = json!({"apiVersion": "v1beta1", "kind": "Stack",
        "metadata": {"name": "t", "labels": {"a": "b"}},
        "spec": {"id": "t", "realmId": "r", "spaceId": "s"}});
    let (st, created) = c.post_json(&s.api("/realms/r/spaces/s/stacks"), &stack);
    assert_eq!(st, 201, "{created}");
    assert_same_doc(&created, &stack);
    let status = json!({"state": "Unknown", "cgroupPath": "/kukeon/r/s/t", "subtreeControllers": ["memory"]});
    let (st, _) = c.put_json(
        &s.api("/realms/r/spaces/s/stacks/t/status"),
        &json!({"status": status}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        c.get(&s.api("/realms/r/spaces/s/stacks/t")).1["status"],
        status
    );
}

#[test]
fn states_are_read_as_integers_and_written_as_names() {
    let (s, c) = setup();
    // Space external enum: 1 = Ready (internally Ready is 2).
    let (st, b) = c.put_json(
        &s.api("/realms/r/spaces/s/status"),
        &json!({"status": {"state": 1}}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"]["state"], "Ready");
    // Cell: 2 = Stopped.
    create_named(&c, &s, &format!("{STACK}/cells"), "c");
    let (st, b) = c.put_json(
        &s.api(&format!("{STACK}/cells/c/status")),
        &json!({"status": {"state": 2}}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"]["state"], "Stopped");
    let r = c.put_json(
        &s.api(&format!("{STACK}/cells/c/status")),
        &json!({"status": {"state": "Bogus"}}),
    );
    assert_problem(&r, 400, "BadRequest", Some("status.state"));
}

/// A cell whose one tmpfs volume has `mode` written as in a YAML manifest.
fn tmpfs_mode_yaml(name: &str, mode: &str) -> String {
    format!(
        "apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: {name}\nspec:\n  containers:\n    - id: a\n      volumes:\n        - kind: tmpfs\n          target: /scratch\n          mode: {mode}\n"
    )
}

#[test]
fn yaml_tmpfs_modes_in_octal_notation_are_read_as_kukeon_reads_them() {
    // The wire format documents `mode` as "uint32 such as 0755" (kukeon:
    // "a 4-digit octal value (e.g. 0755)"), and kukeon's Go YAML readers
    // take a leading-zero integer as octal: 0755 is 493, 01777 is 1023.
    let (s, c) = setup();
    let cells = s.api(&format!("{STACK}/cells"));
    for (i, (mode, want)) in [("0o755", 493), ("493", 493), ("0755", 493), ("01777", 1023)]
        .into_iter()
        .enumerate()
    {
        let (st, b) = c.post_yaml(&cells, &tmpfs_mode_yaml(&format!("c{i}"), mode));
        assert_eq!(st, 201, "mode: {mode}: {b}");
        assert_eq!(
            b["spec"]["containers"][0]["volumes"][0]["mode"], want,
            "mode: {mode}"
        );
    }
}

#[test]
fn go_style_nulls_and_integral_floats_are_accepted() {
    // Go marshals nil slices and maps as null, and JSON Schema tools write
    // integers as 1.0: both read as the plain values.
    let (s, c) = setup();
    let doc = json!({
        "apiVersion": "v1beta1", "kind": "Cell",
        "metadata": {"name": "c", "labels": null},
        "spec": {"tty": null, "containers": [{
            "id": "a", "args": null, "env": null, "ports": null, "volumes": [
                {"kind": "tmpfs", "target": "/t", "sizeBytes": 1024.0, "mode": 493.0}
            ], "networks": null, "networksAliases": null, "capabilities": null,
            "resources": {"memoryLimitBytes": 64.0, "cpuShares": null}
        }]},
        "status": {"containers": null, "subtreeControllers": null}
    });
    let (st, b) = c.post_json(&s.api(&format!("{STACK}/cells")), &doc);
    assert_eq!(st, 201, "{b}");
    let ctr = &b["spec"]["containers"][0];
    assert_eq!(ctr["args"], json!([]));
    assert_eq!(ctr["env"], json!([]));
    assert_eq!(ctr["volumes"][0]["sizeBytes"], 1024);
    assert_eq!(ctr["volumes"][0]["mode"], 493);
    assert_eq!(ctr["resources"], json!({"memoryLimitBytes": 64}));
    assert!(ctr.get("capabilities").is_none());
    assert!(b["spec"].get("tty").is_none());
    assert!(b["metadata"].get("labels").is_none());
    assert_eq!(b["status"]["containers"], json!([]));
    // Non-integral numbers are not integers.
    let r = c.post_json(
        &s.api(&format!("{STACK}/cells")),
        &json!({"metadata": {"name": "d"}, "spec": {"containers": [{"id": "a", "volumes": [
            {"kind": "tmpfs", "target": "/t", "sizeBytes": 1.5}]}]}}),
    );
    assert_problem(
        &r,
        400,
        "BadRequest",
        Some("spec.containers[0].volumes[0].sizeBytes"),
    );
}
