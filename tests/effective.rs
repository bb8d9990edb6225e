//! `?view=effective`: containers (and each container of a cell) with
//! their space's defaults applied, computed on read, never stored.

mod common;
use common::*;

use serde_json::{Value, json};

const WITH: &str = "/realms/r/spaces/sd/stacks/t/cells/c/containers";
const WITHOUT: &str = "/realms/r/spaces/plain/stacks/t/cells/c/containers";

fn defaults() -> Value {
    json!({
        "user": "1000",
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "securityOpts": ["no-new-privileges"],
        "tmpfs": [{"path": "/tmp", "sizeBytes": 1024, "options": ["nodev"]}],
        "resources": {"memoryLimitBytes": 1000, "pidsLimit": 0}
    })
}

fn setup() -> (Server, Client) {
    let s = Server::start();
    let c = Client::default();
    let post = |url: &str, doc: Value| {
        let (st, b) = c.post_json(&s.api(url), &doc);
        assert_eq!(st, 201, "{url}: {b}");
    };
    post("/realms", json!({"metadata": {"name": "r"}}));
    post(
        "/realms/r/spaces",
        json!({"metadata": {"name": "sd"}, "spec": {"defaults": {"container": defaults()}}}),
    );
    post("/realms/r/spaces", json!({"metadata": {"name": "plain"}}));
    for sp in ["sd", "plain"] {
        post(
            &format!("/realms/r/spaces/{sp}/stacks"),
            json!({"metadata": {"name": "t"}}),
        );
        post(
            &format!("/realms/r/spaces/{sp}/stacks/t/cells"),
            json!({"metadata": {"name": "c"}}),
        );
    }
    post(
        WITH,
        json!({"metadata": {"name": "bare"}, "spec": {"image": "busybox"}}),
    );
    post(WITH, own());
    post(
        WITHOUT,
        json!({"metadata": {"name": "bare"}, "spec": {"image": "busybox"}}),
    );
    post(WITHOUT, own());
    (s, c)
}

/// A container that sets every defaultable field itself.
fn own() -> Value {
    json!({"metadata": {"name": "own"}, "spec": {
        "image": "busybox",
        "user": "2000",
        "capabilities": {"drop": ["NET_RAW"]},
        "securityOpts": ["seccomp=custom.json"],
        "tmpfs": [{"path": "/run"}],
        "resources": {"cpuShares": 5}
    }})
}

fn get(c: &Client, url: &str) -> Value {
    let (st, b) = c.get(url);
    assert_eq!(st, 200, "{url}: {b}");
    b
}

#[test]
fn effective_fills_unset_fields_from_the_space_defaults() {
    let (s, c) = setup();
    let url = s.api(&format!("{WITH}/bare"));
    let plain = get(&c, &url);
    for key in [
        "user",
        "readOnlyRootFilesystem",
        "capabilities",
        "securityOpts",
        "tmpfs",
        "resources",
    ] {
        assert!(
            plain["spec"].get(key).is_none(),
            "stored object has no {key}: {plain}"
        );
    }
    let eff = get(&c, &format!("{url}?view=effective"));
    let mut want = plain.clone();
    for (k, v) in defaults().as_object().unwrap() {
        want["spec"][k] = v.clone();
    }
    assert_eq!(eff, want, "\n got: {eff}\nwant: {want}");
}

#[test]
fn container_values_win_and_the_override_is_shallow() {
    let (s, c) = setup();
    let url = s.api(&format!("{WITH}/own"));
    let plain = get(&c, &url);
    let eff = get(&c, &format!("{url}?view=effective"));
    // Only readOnlyRootFilesystem (false counts as unset) comes from the space.
    let mut want = plain.clone();
    want["spec"]["readOnlyRootFilesystem"] = json!(true);
    assert_eq!(eff, want, "\n got: {eff}\nwant: {want}");
    // The capabilities object is replaced whole: no `add` from the default.
    assert_eq!(eff["spec"]["capabilities"], json!({"drop": ["NET_RAW"]}));
    // Resources too: no memory limit merged in.
    assert_eq!(eff["spec"]["resources"], json!({"cpuShares": 5}));
    // Lists are never unioned.
    assert_eq!(eff["spec"]["securityOpts"], json!(["seccomp=custom.json"]));
    assert_eq!(eff["spec"]["tmpfs"], json!([{"path": "/run"}]));
}

#[test]
fn effective_view_is_idempotent_and_stores_nothing() {
    let (s, c) = setup();
    let url = s.api(&format!("{WITH}/bare"));
    let before = get(&c, &url);
    let rev = rv(&get(&c, &s.api("/realms")));
    let e1 = get(&c, &format!("{url}?view=effective"));
    let e2 = get(&c, &format!("{url}?view=effective"));
    assert_eq!(e1, e2);
    assert_eq!(rv(&e1), rv(&before));
    assert_eq!(get(&c, &url), before, "the stored object is unchanged");
    assert_changes_since(&c, &s, rev, 0, "no write happened");
    // Writing the effective document back stores the defaults explicitly;
    // the effective view of that is the same document again.
    let (st, put) = c.put_json(&url, &e1);
    assert_eq!(st, 200, "{put}");
    assert_eq!(put["spec"], e1["spec"]);
    assert_eq!(
        get(&c, &format!("{url}?view=effective"))["spec"],
        e1["spec"]
    );
}

#[test]
fn without_space_defaults_effective_equals_plain() {
    let (s, c) = setup();
    for name in ["bare", "own"] {
        let url = s.api(&format!("{WITHOUT}/{name}"));
        assert_eq!(
            get(&c, &format!("{url}?view=effective")),
            get(&c, &url),
            "{name}"
        );
    }
    // Defaults object present but empty: also no change.
    let (st, b) = c.patch(
        &s.api("/realms/r/spaces/plain"),
        &json!({"spec": {"defaults": {}}}),
    );
    assert_eq!(st, 200, "{b}");
    let url = s.api(&format!("{WITHOUT}/bare"));
    assert_eq!(get(&c, &format!("{url}?view=effective")), get(&c, &url));
    let (st, b) = c.patch(
        &s.api("/realms/r/spaces/plain"),
        &json!({"spec": {"defaults": {"container": {}}}}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(get(&c, &format!("{url}?view=effective")), get(&c, &url));
}

#[test]
fn effective_lists_match_single_reads() {
    let (s, c) = setup();
    let singles: Vec<Value> = ["bare", "own"]
        .iter()
        .map(|n| get(&c, &s.api(&format!("{WITH}/{n}?view=effective"))))
        .collect();
    // Streamed list.
    let list = get(&c, &s.api(&format!("{WITH}?view=effective")));
    assert_eq!(list["items"], json!(singles));
    // Paged list.
    let page = get(&c, &s.api(&format!("{WITH}?view=effective&limit=1")));
    assert_eq!(page["items"], json!([singles[0]]));
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (st, page) = c.get_query(
        &s.api(WITH),
        &[("view", "effective"), ("limit", "1"), ("continue", &token)],
    );
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["items"], json!([singles[1]]));
    // YAML list.
    let (st, _, text) = c.get_yaml(&s.api(&format!("{WITH}?view=effective")));
    assert_eq!(st, 200, "{text}");
    assert_eq!(yaml_json(&text)["items"], json!(singles));
    // Cross-scope: each container gets its own space's defaults.
    let all = get(&c, &s.api("/containers?realm=r&view=effective"));
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap();
        let space = item["spec"]["spaceId"].as_str().unwrap();
        let base = if space == "sd" { WITH } else { WITHOUT };
        assert_eq!(
            item,
            &get(&c, &s.api(&format!("{base}/{name}?view=effective"))),
            "{space}/{name}"
        );
    }
    // Plain list afterwards: nothing stored.
    let plain = get(&c, &s.api(WITH));
    assert!(plain["items"][0]["spec"].get("user").is_none(), "{plain}");
}

#[test]
fn effective_view_follows_the_current_space_defaults() {
    let (s, c) = setup();
    let url = s.api(&format!("{WITH}/bare"));
    let before = get(&c, &url);
    let (st, b) = c.patch(
        &s.api("/realms/r/spaces/sd"),
        &json!({"spec": {"defaults": {"container": {"user": "3000", "capabilities": null}}}}),
    );
    assert_eq!(st, 200, "{b}");
    let eff = get(&c, &format!("{url}?view=effective"));
    assert_eq!(eff["spec"]["user"], "3000");
    assert!(eff["spec"].get("capabilities").is_none(), "{eff}");
    assert_eq!(get(&c, &url), before);
}

#[test]
fn a_cells_effective_view_applies_the_defaults_to_each_of_its_containers() {
    let (s, c) = setup();
    let cells = s.api("/realms/r/spaces/sd/stacks/t/cells");
    let (st, b) = c.post_json(
        &cells,
        &json!({"metadata": {"name": "multi"}, "spec": {"containers": [
            {"id": "bare", "image": "busybox"},
            {"id": "own", "image": "busybox", "user": "2000"}
        ]}}),
    );
    assert_eq!(st, 201, "{b}");
    let url = format!("{cells}/multi");
    let stored = get(&c, &url);
    let eff = get(&c, &format!("{url}?view=effective"));
    let containers = eff["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers[0]["user"], "1000", "{eff}");
    assert_eq!(containers[0]["readOnlyRootFilesystem"], true);
    assert_eq!(
        containers[1]["user"], "2000",
        "the container's own value wins"
    );
    assert!(
        stored["spec"]["containers"][0].get("user").is_none(),
        "{stored}"
    );
    assert_eq!(get(&c, &url), stored, "nothing stored");
    // Lists too, and a cell in a space without defaults is as stored.
    let list = get(&c, &format!("{cells}?view=effective"));
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "multi")
        .unwrap();
    assert_eq!(item, &eff);
    let plain = s.api("/realms/r/spaces/plain/stacks/t/cells/c");
    assert_eq!(get(&c, &format!("{plain}?view=effective")), get(&c, &plain));
    // Other kinds still refuse the view, naming it.
    let (st, b) = c.get(&s.api("/realms/r/spaces/sd?view=effective"));
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["field"], "view", "{b}");
}
