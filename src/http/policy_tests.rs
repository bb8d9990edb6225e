//! The privileged-field policy through the real handlers, in process: the
//! route table served with an identity the test picks (authentication is
//! not part of this router; `tests/privileged.rs` runs the same matrix
//! with real tokens), so that any identity can be tried on every write
//! path without a token for each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use serde_json::{Value, json};

use super::cache::{DocCache, ListCache};
use super::{AppState, Metrics, routes};
use crate::api::v1beta1::V1beta1Events;
use crate::auth::{Identity, Role, Source};
use crate::store::{Store, StoreOptions};
use crate::watch::Hub;

struct Harness {
    base: String,
    who: Arc<Mutex<Identity>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn writer(privileged: bool) -> Identity {
    Identity {
        name: "ci".into(),
        source: Source::Token,
        role: Role::Writer,
        realms: None,
        privileged,
    }
}

async fn serve() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p.redb"), StoreOptions::default()).unwrap();
    let auth = Arc::new(
        super::auth::Auth::load(&store, super::auth::Posture::default())
            .await
            .unwrap(),
    );
    let state = AppState::new(crate::http::Shared {
        auth,
        limits: Arc::new(super::limits::Gate::new(super::limits::Limits::default())),
        store,
        metrics: Arc::new(Metrics::default()),
        hub: Hub::new(Arc::new(V1beta1Events), 1024, Duration::from_secs(60)),
        docs: Arc::new(DocCache::new(1 << 20)),
        lists: Arc::new(ListCache::new(1 << 20)),
    });
    let who = Arc::new(Mutex::new(Identity::anonymous()));
    let mut router = Router::new();
    for route in routes::table() {
        router = router.route(&route.path, route.handler);
    }
    let current = who.clone();
    let router = router
        .layer(axum::middleware::from_fn(
            move |mut req: Request, next: Next| {
                let id = Arc::new(current.lock().unwrap().clone());
                req.extensions_mut().insert(id);
                next.run(req)
            },
        ))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v1beta1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Harness {
        base,
        who,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Harness {
    fn be(&self, id: Identity) {
        *self.who.lock().unwrap() = id;
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "PATCH" => self
                .http
                .patch(url)
                .header("content-type", "application/merge-patch+json"),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let req = match body {
            Some(b) if method == "PATCH" => req.body(b.to_string()),
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (st, b) = self.send(method, path, Some(body)).await;
        assert!((200..300).contains(&st), "{method} {path}: {st} {b}");
        b
    }

    async fn revision(&self) -> String {
        let (_, b) = self.send("GET", "/realms", None).await;
        b["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[track_caller]
fn forbidden(reply: &(u16, Value), field: &str) {
    let (st, b) = reply;
    assert_eq!(*st, 403, "{b}");
    assert_eq!(b["reason"], "Forbidden", "{b}");
    assert_eq!(b["field"], field, "{b}");
}

const STACK: &str = "/realms/r/spaces/s/stacks/t";
const PLAIN: &str = "/realms/r/spaces/p/stacks/t";

/// Realm `r`; space `s` whose defaults add a capability and space `p`
/// without defaults, each with stack `t` and cell `c`; written by an
/// admin.
async fn setup() -> Harness {
    let h = serve().await;
    h.ok("POST", "/realms", json!({"metadata": {"name": "r"}}))
        .await;
    h.ok(
        "POST",
        "/realms/r/spaces",
        json!({"metadata": {"name": "s"}, "spec": {"defaults": {"container": {"capabilities": {"add": ["NET_ADMIN"]}}}}}),
    )
    .await;
    h.ok(
        "POST",
        "/realms/r/spaces",
        json!({"metadata": {"name": "p"}}),
    )
    .await;
    for sp in ["s", "p"] {
        h.ok(
            "POST",
            &format!("/realms/r/spaces/{sp}/stacks"),
            json!({"metadata": {"name": "t"}}),
        )
        .await;
        h.ok(
            "POST",
            &format!("/realms/r/spaces/{sp}/stacks/t/cells"),
            json!({"metadata": {"name": "c"}, "spec": {"containers": [{"id": "a"}]}}),
        )
        .await;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_the_main_part_need_the_grant() {
    let h = setup().await;
    let containers = format!("{PLAIN}/cells/c/containers");
    h.be(writer(false));
    let rev = h.revision().await;

    // Create.
    let r = h
        .send(
            "POST",
            &containers,
            Some(json!({"metadata": {"name": "x"}, "spec": {"privileged": true}})),
        )
        .await;
    forbidden(&r, "spec.privileged");
    assert!(
        r.1["detail"]
            .as_str()
            .unwrap()
            .contains("needs the privileged grant"),
        "{}",
        r.1
    );
    // Replace: a cell whose second container shares the host network.
    let r = h
        .send(
            "PUT",
            &format!("{PLAIN}/cells/c"),
            Some(json!({"metadata": {"name": "c"}, "spec": {"containers": [{"id": "a"}, {"id": "b", "hostNetwork": true}]}})),
        )
        .await;
    forbidden(&r, "spec.containers[1].hostNetwork");
    // Patch: checked on the merged object.
    let r = h
        .send(
            "PATCH",
            "/realms/r",
            Some(json!({"spec": {"registryCredentials": [{"username": "u", "passwordRef": {"fromFile": "/root/pw"}}]}})),
        )
        .await;
    forbidden(&r, "spec.registryCredentials[0].passwordRef.fromFile");
    let r = h
        .send(
            "PATCH",
            "/realms/r/spaces/p",
            Some(json!({"spec": {"defaults": {"container": {"securityOpts": ["seccomp=unconfined"]}}}})),
        )
        .await;
    forbidden(&r, "spec.defaults.container.securityOpts");
    // Inherited from the stored space's defaults.
    let r = h
        .send(
            "POST",
            &format!("{STACK}/cells/c/containers"),
            Some(json!({"metadata": {"name": "x"}})),
        )
        .await;
    forbidden(&r, "spec.capabilities.add");
    assert!(
        r.1["detail"]
            .as_str()
            .unwrap()
            .contains("inherited from space r/s's defaults"),
        "{}",
        r.1
    );
    // A container's own capabilities replace the defaults: allowed.
    h.ok(
        "POST",
        &format!("{STACK}/cells/c/containers"),
        json!({"metadata": {"name": "own"}, "spec": {"capabilities": {"drop": ["ALL"]}}}),
    )
    .await;
    let rev2 = h.revision().await;
    assert_ne!(rev, rev2);

    // Apply: one forbidden document fails the whole apply, dry run or not.
    let docs = json!([
        {"kind": "Realm", "metadata": {"name": "r2"}},
        {"kind": "Container", "metadata": {"name": "y"}, "spec": {"realmId": "r", "spaceId": "p", "stackId": "t", "cellId": "c", "volumes": [{"source": "/", "target": "/host"}]}}
    ]);
    for path in ["/apply", "/apply?dryRun=true"] {
        let r = h.send("POST", path, Some(docs.clone())).await;
        forbidden(&r, "documents[1].spec.volumes[0]");
    }
    // In an apply, a space of the same apply wins over the stored one.
    let ctr = json!({"kind": "Container", "metadata": {"name": "z"}, "spec": {"realmId": "r", "spaceId": "s", "stackId": "t", "cellId": "c"}});
    let r = h.send("POST", "/apply", Some(json!([ctr]))).await;
    forbidden(&r, "documents[0].spec.capabilities.add");
    let space = json!({"kind": "Space", "metadata": {"name": "s"}, "spec": {"realmId": "r"}});
    let r = h
        .send("POST", "/apply?dryRun=true", Some(json!([space, ctr])))
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let granted_space = json!({"kind": "Space", "metadata": {"name": "p"}, "spec": {"realmId": "r", "defaults": {"container": {"capabilities": {"add": ["SYS_ADMIN"]}}}}});
    let ctr_p = json!({"kind": "Container", "metadata": {"name": "z"}, "spec": {"realmId": "r", "spaceId": "p", "stackId": "t", "cellId": "c"}});
    let r = h
        .send("POST", "/apply", Some(json!([ctr_p, granted_space])))
        .await;
    forbidden(&r, "documents[0].spec.capabilities.add");
    assert_eq!(h.revision().await, rev2, "nothing was written");
    assert_eq!(h.send("GET", "/realms/r2", None).await.0, 404);

    // With the grant, the same writes go through.
    h.be(writer(true));
    h.ok(
        "POST",
        &containers,
        json!({"metadata": {"name": "x"}, "spec": {"privileged": true}}),
    )
    .await;
    h.ok("POST", "/apply", docs).await;
    h.ok(
        "POST",
        &format!("{STACK}/cells/c/containers"),
        json!({"metadata": {"name": "x"}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_and_deletes_are_not_checked() {
    let h = setup().await;
    let x = format!("{PLAIN}/cells/c/containers/x");
    h.ok(
        "POST",
        &format!("{PLAIN}/cells/c/containers"),
        json!({"metadata": {"name": "x"}, "spec": {"hostPID": true}}),
    )
    .await;
    h.be(writer(false));
    // The object as it would be stored is still privileged: refused even
    // if the patch does not touch the privileged field.
    let r = h
        .send("PATCH", &x, Some(json!({"spec": {"image": "busybox"}})))
        .await;
    forbidden(&r, "spec.hostPID");
    // Taking it away is allowed.
    h.ok("PATCH", &x, json!({"spec": {"hostPID": false}})).await;
    h.be(Identity::anonymous());
    h.ok("PATCH", &x, json!({"spec": {"hostPID": true}})).await;
    h.be(writer(false));
    let mut doc = h.send("GET", &x, None).await.1;
    doc["status"]["state"] = json!("Ready");
    h.ok("PUT", &format!("{x}/status"), doc).await;
    h.ok(
        "PATCH",
        &format!("{x}/status"),
        json!({"status": {"exitCode": 3}}),
    )
    .await;
    let (st, b) = h.send("DELETE", &x, None).await;
    assert_eq!(st, 200, "{b}");
}
