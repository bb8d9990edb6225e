//! The console at `/ui/`: its assets over plain HTTP, then the page itself
//! in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by `.ci/run`) against the real server, with authentication
//! on: it follows the store live without a reload, survives a server
//! restart, filters on the server's selectors, shows an object's document,
//! effective view, history and children, and axe-core finds no serious or
//! critical accessibility violation at desktop and phone width.
//!
//! Without a browser the browser tests print why and skip, unless
//! `MODELHUB_REQUIRE_BROWSER=1` (CI), where they fail. With
//! `MODELHUB_SCREENSHOTS=DIR` they save the README's screenshots there.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use common::{Client, Server, first_admin, hierarchy};
use serde_json::{Value, json};
use webdriver::Browser;

const WAIT: Duration = Duration::from_secs(20);

/// A browser, or `None` (printing why) where none is installed.
fn browser(width: u32, height: u32) -> Option<Browser> {
    if let Err(why) = webdriver::binaries() {
        if std::env::var("MODELHUB_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("MODELHUB_REQUIRE_BROWSER=1: {why}");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Browser::start(width, height).unwrap_or_else(|e| panic!("browser: {e}")))
}

fn cells(s: &Server) -> String {
    s.api("/realms/prod/spaces/web/stacks/front/cells")
}

/// JavaScript answering the text of the state badges on the row of `key`
/// (`null` while there is no such row), e.g. `"Ready"` or
/// `"Ready Terminating"`.
fn badges(key: &str) -> String {
    format!(
        "const li = document.querySelector('li[data-key=\"{key}\"]');
         if (!li || li.hidden) return null;
         return [...li.querySelector(':scope > .row > .status').children]
           .map(b => b.textContent).join(' ');"
    )
}

/// Sets the state of cell `name` of prod/web/front.
fn set_state(c: &Client, s: &Server, name: &str, state: &str) {
    let (st, body) = c.patch(
        &format!("{}/{name}/status", cells(s)),
        &json!({"status": {"state": state}}),
    );
    assert_eq!(st, 200, "{body}");
}

/// Waits until the badges of the row of `key` read `want`.
fn wait_badges(b: &Browser, key: &str, want: &str) {
    b.wait_for(
        &format!("{key} to show {want}"),
        &format!("return ({})() === '{want}'", func(&badges(key))),
        WAIT,
    );
}

fn axe_violations(b: &Browser) -> Vec<Value> {
    let axe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vendor/axe-core/axe.min.js"
    ))
    .expect("vendored axe-core");
    // The page's policy allows only its own scripts: axe runs as the
    // driver's script, not as a <script> of the page.
    b.exec(&format!("{axe}\n;return true;"), vec![]);
    assert_eq!(b.exec("return typeof axe.run", vec![]), "function");
    let result = b.exec_async(
        "const done = arguments[arguments.length - 1];
         axe.run(document, {resultTypes: ['violations']})
           .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,
             help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))
           .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
        vec![],
    );
    result
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect()
}

fn check_accessible(b: &Browser, page: &str) {
    for (w, h) in [(1280, 800), (390, 844)] {
        b.resize(w, h);
        std::thread::sleep(Duration::from_millis(200));
        let v = axe_violations(b);
        assert!(
            v.is_empty(),
            "{page} at {w}x{h}: serious or critical violations: {}",
            serde_json::to_string_pretty(&v).unwrap()
        );
    }
    b.resize(1280, 800);
}

fn screenshot(b: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("MODELHUB_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, b.screenshot()).unwrap();
        eprintln!("saved {}", path.display());
    }
}

/// Every request the page made went to the server, none carried the token
/// in its URL, the API's carried it in their `Authorization` header, and it
/// is kept nowhere but in session storage.
fn assert_same_origin(b: &Browser, s: &Server, token: &str) {
    // The console's requests: those its documents sent (the browser's own
    // start page sends some before the test navigates).
    let requests: Vec<_> = b
        .requests()
        .into_iter()
        .filter(|(doc, _, _)| doc.starts_with(&s.base))
        .collect();
    assert!(!requests.is_empty(), "no request in the network log");
    let mut watched = false;
    for (_, url, headers) in &requests {
        if url.starts_with("data:") {
            continue;
        }
        assert!(
            url.starts_with(&s.base),
            "a request outside the server: {url}"
        );
        assert!(!url.contains(token), "the token in a URL: {url}");
        if url.starts_with(&format!("{}/api/v1beta1/watch", s.base))
            && headers["Authorization"] == format!("Bearer {token}")
        {
            watched = true;
        }
    }
    assert!(
        watched,
        "no watch sent the token in its header: {requests:?}"
    );
    let stored = b.exec(
        "return JSON.stringify(localStorage) + document.cookie",
        vec![],
    );
    assert!(
        !stored.as_str().unwrap().contains(token),
        "the token outside session storage"
    );
}

fn assert_no_script_errors(b: &Browser) {
    let severe: Vec<Value> = b
        .console_log()
        .into_iter()
        .filter(|m| m["level"] == "SEVERE")
        // Refusals the test provokes (the 401 before signing in, the 400
        // of a bad selector) are logged as failed loads, not script errors.
        .filter(|m| m["source"] != "network")
        .collect();
    assert!(severe.is_empty(), "errors in the page: {severe:?}");
}

fn sign_in(b: &Browser, s: &Server, token: &str) {
    b.goto(&format!("{}/ui/", s.base));
    b.wait_for(
        "the page to ask for a token",
        "return document.getElementById('conn').textContent.includes('Not signed in')",
        WAIT,
    );
    b.type_into("#token", token);
    b.click("#token-form button[type=submit]");
    b.wait_for(
        "the live feed",
        "return document.getElementById('conn').textContent === 'Live'",
        WAIT,
    );
}

fn expand(b: &Browser, key: &str) {
    b.wait_for(
        &format!("the row of {key}"),
        &format!("return !!document.querySelector('li[data-key=\"{key}\"] > .row > .twisty:not([disabled])')"),
        WAIT,
    );
    let open = b.exec(
        &format!("return document.querySelector('li[data-key=\"{key}\"] > .row > .twisty').getAttribute('aria-expanded')"),
        vec![],
    );
    if open != "true" {
        b.click(&format!("li[data-key=\"{key}\"] > .row > .twisty"));
    }
}

#[test]
fn assets_have_their_types_caching_headers_and_policy() {
    let s = Server::start();
    let (admin, _token) = first_admin(&s);
    // Public, like Swagger UI: the data behind it is not.
    let anon = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = anon.get(format!("{}/ui", s.base)).send().unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/ui/");
    for (path, ty) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/console.js", "text/javascript; charset=utf-8"),
        ("/ui/api.js", "text/javascript; charset=utf-8"),
        ("/ui/model.js", "text/javascript; charset=utf-8"),
        ("/ui/tree.js", "text/javascript; charset=utf-8"),
        ("/ui/object.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
    ] {
        let r = anon.get(format!("{}{path}", s.base)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], ty, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{path}: {csp}"
        );
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: {etag}");
        assert!(!r.bytes().unwrap().is_empty());
        let again = anon
            .get(format!("{}{path}", s.base))
            .header("if-none-match", &etag)
            .send()
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().unwrap().is_empty());
    }
    // Every module the page imports is served (a missing one would break
    // it only in a browser).
    for module in ["console.js", "object.js", "tree.js"] {
        let text = anon
            .get(format!("{}/ui/{module}", s.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        for line in text.lines().filter(|l| l.contains(" from './")) {
            let file = line
                .split("from './")
                .nth(1)
                .unwrap()
                .split('\'')
                .next()
                .unwrap();
            let r = anon.get(format!("{}/ui/{file}", s.base)).send().unwrap();
            assert_eq!(r.status(), 200, "{module} imports {file}");
        }
    }
    let r = anon.get(format!("{}/ui/nope.js", s.base)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // The API itself still wants the token.
    let (st, _) = Client::default().get(&s.api("/realms"));
    assert_eq!(st, 401);
    let (st, _) = admin.get(&s.api("/realms"));
    assert_eq!(st, 200);
}

#[test]
fn the_tree_follows_writes_live_and_resumes_after_a_restart() {
    let mut s = Server::start();
    let Some(b) = browser(1280, 800) else { return };
    let (admin, token) = first_admin(&s);
    hierarchy(&admin, &s, "prod", "web", "front");
    sign_in(&b, &s, &token);
    b.exec("window.__sameDocument = 1; return 1", vec![]);
    for key in ["prod", "prod/web", "prod/web/front"] {
        expand(&b, key);
    }

    // Created: the row appears with its state, without a reload.
    let (st, body) = admin.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "api", "finalizers": ["kukeon.io/runtime"]},
                "spec": {"containers": [{"id": "main", "image": "busybox"}]}}),
    );
    assert_eq!(st, 201, "{body}");
    let key = "prod/web/front/api";
    b.wait_for(
        "the new cell's row",
        &format!("return {}", wrap(&badges(key))),
        WAIT,
    );
    assert_eq!(b.exec(&badges(key), vec![]), "Pending");

    // Its status changes: the badge, and the counts of every ancestor.
    set_state(&admin, &s, "api", "Ready");
    wait_badges(&b, key, "Ready");
    b.wait_for(
        "the realm's count of Ready",
        "return [...document.querySelectorAll('li[data-key=\"prod\"] > .row .chip')]
           .some(c => c.textContent === '1 Ready')",
        WAIT,
    );

    // Deleted with a finalizer: terminating, then gone once it is removed.
    let (st, body) = admin.delete(&format!("{}/api", cells(&s)));
    assert_eq!(st, 202, "{body}");
    wait_badges(&b, key, "Ready Terminating");
    let (st, body) = admin.patch(
        &format!("{}/api/finalizers", cells(&s)),
        &json!({"metadata": {"finalizers": null}}),
    );
    assert_eq!(st, 200, "{body}");
    b.wait_for(
        "the row to go",
        &format!("return !document.querySelector('li[data-key=\"{key}\"]')"),
        WAIT,
    );

    // A restart: the page resumes from its last revision (no relist on
    // redb, whose history survives; on etcd too) and shows what follows.
    s.restart();
    let (st, body) = admin.post_json(&cells(&s), &json!({"metadata": {"name": "after"}}));
    assert_eq!(st, 201, "{body}");
    b.wait_for(
        "the cell created after the restart",
        &format!("return {}", wrap(&badges("prod/web/front/after"))),
        Duration::from_secs(40),
    );
    let stats = b.exec("return window.modelhubConsole.stats", vec![]);
    assert!(stats["resumes"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["relists"], 0, "{stats}");
    assert_eq!(
        b.exec("return window.__sameDocument", vec![]),
        1,
        "the page reloaded"
    );

    // Filters: a field selector on the server, a text filter here.
    for (name, state) in [("bad", "Failed"), ("good", "Ready")] {
        let (st, body) = admin.post_json(&cells(&s), &json!({"metadata": {"name": name}}));
        assert_eq!(st, 201, "{body}");
        set_state(&admin, &s, name, state);
    }
    wait_badges(&b, "prod/web/front/bad", "Failed");
    b.type_into("#f-field", "status.state=Failed");
    b.click("#filters button[type=submit]");
    b.wait_for(
        "the filter to hide the Ready cell",
        &format!(
            "return ({})() === null && ({})() === 'Failed'",
            func(&badges("prod/web/front/good")),
            func(&badges("prod/web/front/bad"))
        ),
        WAIT,
    );
    // The selection follows the store: a cell that fails shows up.
    set_state(&admin, &s, "good", "Failed");
    wait_badges(&b, "prod/web/front/good", "Failed");
    b.type_into("#f-field", "spec.image=x");
    b.click("#filters button[type=submit]");
    b.wait_for(
        "the server's refusal of an unknown field",
        "const t = document.getElementById('filter-error').textContent;
         return t.startsWith('fieldSelector: ') && t.includes('spec.image')",
        WAIT,
    );
    b.click("#f-clear");
    b.type_into("#f-text", "front/aft");
    b.wait_for(
        "the text filter",
        &format!(
            "return ({})() === null && ({})() !== null",
            func(&badges("prod/web/front/good")),
            func(&badges("prod/web/front/after"))
        ),
        WAIT,
    );
    b.type_into("#f-text", "");
    b.exec(
        "const f = document.getElementById('f-text'); f.dispatchEvent(new Event('input')); return 1",
        vec![],
    );
    set_state(&admin, &s, "good", "Ready");
    let (st, body) = admin.post_json(
        &format!("{}/good/containers", cells(&s)),
        &json!({"metadata": {"name": "main"}, "spec": {"image": "busybox"}}),
    );
    assert_eq!(st, 201, "{body}");
    expand(&b, "prod/web/front/good");
    wait_badges(&b, "prod/web/front/good/main", "Pending");
    screenshot(&b, "console-tree.png");

    // Keyboard: the twisty of a row is reachable and works with Enter.
    b.exec(
        "document.querySelector('li[data-key=\"prod/web/front\"] > .row > .twisty').focus(); return 1",
        vec![],
    );
    b.keys("\u{E007}");
    b.wait_for(
        "Enter to fold the stack",
        "return document.querySelector('li[data-key=\"prod/web/front\"] > .row > .twisty').getAttribute('aria-expanded') === 'false'",
        WAIT,
    );
    b.keys("\u{E007}");

    // An event touches its own row: its siblings' rows are the same
    // elements afterwards, not rendered again.
    b.exec(
        "document.querySelector('li[data-key=\"prod/web/front/bad\"]').__kept = 1; return 1",
        vec![],
    );
    set_state(&admin, &s, "after", "Stopped");
    wait_badges(&b, "prod/web/front/after", "Stopped");
    assert_eq!(
        b.exec(
            "return document.querySelector('li[data-key=\"prod/web/front/bad\"]').__kept",
            vec![]
        ),
        1,
        "a sibling's row was rendered again"
    );
    // Deleted and created again within one frame (as when the tab is in
    // the background): the row is there for the new object.
    let doc = admin.get(&format!("{}/bad", cells(&s))).1;
    b.exec(
        "const m = window.modelhubConsole.model, o = arguments[0];
         m.apply({type: 'DELETED', object: o});
         const again = JSON.parse(JSON.stringify(o));
         again.status.state = 'Unknown';
         m.apply({type: 'ADDED', object: again});
         return 1",
        vec![doc],
    );
    wait_badges(&b, "prod/web/front/bad", "Unknown");

    check_accessible(&b, "the tree");
    assert_same_origin(&b, &s, &token);
    assert_no_script_errors(&b);

    // Signing out leaves nothing of what the token could read.
    b.click("#sign-out");
    b.wait_for(
        "the tree to empty",
        "return !document.querySelector('li[data-key]')
           && document.getElementById('conn').textContent.includes('Not signed in')",
        WAIT,
    );
}

#[test]
fn the_object_page_shows_the_document_effective_view_history_and_children() {
    let s = Server::start();
    let Some(b) = browser(1280, 800) else { return };
    let (admin, token) = first_admin(&s);
    let (st, body) = admin.post_json(&s.api("/realms"), &json!({"metadata": {"name": "prod"}}));
    assert_eq!(st, 201, "{body}");
    let (st, body) = admin.post_json(
        &s.api("/realms/prod/spaces"),
        &json!({"metadata": {"name": "web"},
                "spec": {"defaults": {"container": {"user": "1000:1000"}}}}),
    );
    assert_eq!(st, 201, "{body}");
    hierarchy(&admin, &s, "prod", "web", "front");
    let (st, body) = admin.post_json(
        &cells(&s),
        &json!({"metadata": {"name": "api", "finalizers": ["kukeon.io/runtime"]},
                "spec": {"containers": [{"id": "main", "image": "busybox"}]}}),
    );
    assert_eq!(st, 201, "{body}");
    let (st, body) = admin.post_json(
        &format!("{}/api/containers", cells(&s)),
        &json!({"metadata": {"name": "main"}, "spec": {"image": "busybox:1"}}),
    );
    assert_eq!(st, 201, "{body}");
    for state in ["Ready", "Failed"] {
        set_state(&admin, &s, "api", state);
    }

    sign_in(&b, &s, &token);
    b.goto(&format!("{}/ui/#/o/prod/web/front/api", s.base));
    b.wait_for(
        "the stored document",
        "const p = document.querySelector('pre.yaml'); return p && p.textContent.includes('name: api')",
        WAIT,
    );
    let text = |css: &str| {
        b.exec(
            &format!("return document.querySelector('{css}').textContent"),
            vec![],
        )
        .as_str()
        .unwrap()
        .to_string()
    };
    assert!(text("pre.yaml").contains("kind: Cell"));
    // The cell's effective view: its container with the space's user.
    b.wait_for(
        "the cell's effective view",
        "const p = document.querySelectorAll('pre.yaml');
         return p.length === 2 && p[1].textContent.includes('user: 1000:1000')",
        WAIT,
    );
    b.wait_for(
        "the state and the finalizer",
        "const t = document.querySelector('.obj-status').textContent;
         return t.includes('Failed') && t.includes('kukeon.io/runtime')",
        WAIT,
    );
    // The history: created, then each status change with what changed.
    let history = b.wait_for(
        "three changes in the history",
        "const rows = [...document.querySelectorAll('table.history tbody tr')];
         return rows.length >= 3 ? rows.map(r => r.textContent) : null",
        WAIT,
    );
    let rows: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        rows[0].contains(r#"status.state: "Ready" → "Failed""#),
        "{rows:?}"
    );
    assert!(
        rows[1].contains(r#"status.state: "Pending" → "Ready""#),
        "{rows:?}"
    );
    assert!(rows.last().unwrap().contains("created"), "{rows:?}");
    // Children, linked.
    b.wait_for(
        "the container among the children",
        "return [...document.querySelectorAll('.children a')].some(a => a.textContent === 'Container main')",
        WAIT,
    );
    screenshot(&b, "console-object.png");

    // Live: a change shows without a reload, in the badge and the history.
    set_state(&admin, &s, "api", "Ready");
    b.wait_for(
        "the new change in the history",
        "const r = document.querySelector('table.history tbody tr');
         return r && r.textContent.includes('\"Failed\" → \"Ready\"')",
        WAIT,
    );
    b.wait_for(
        "the stored document to follow",
        "return document.querySelector('pre.yaml').textContent.includes('state: Ready')",
        WAIT,
    );
    // A container: its effective view has the space's default user.
    b.click(".children a");
    b.wait_for(
        "the effective view",
        "const p = document.querySelectorAll('pre.yaml');
         return p.length === 2 && p[1].textContent.includes('user: 1000:1000')",
        WAIT,
    );
    assert!(
        !text("pre.yaml").contains("1000:1000"),
        "the stored view is the stored one"
    );
    check_accessible(&b, "a container's page");
    b.exec("history.back(); return 1", vec![]);
    b.wait_for(
        "the cell's page again",
        "const p = document.querySelector('pre.yaml'); return p && p.textContent.includes('kind: Cell')",
        WAIT,
    );
    // Terminating: marked on the page.
    let (st, body) = admin.delete(&format!("{}/api?cascade=true", cells(&s)));
    assert!(st == 202 || st == 200, "{st} {body}");
    b.wait_for(
        "the terminating mark",
        "return document.querySelector('.obj-status').textContent.includes('Terminating since')",
        WAIT,
    );

    check_accessible(&b, "a cell's page");
    assert_same_origin(&b, &s, &token);
    assert_no_script_errors(&b);
}

#[test]
fn the_history_starts_where_compaction_left_it() {
    if common::on_etcd() {
        eprintln!(
            "skipped on etcd: the shared cluster's history is compacted by etcd revisions \
             across every prefix, so this prefix's floor is not the test's to set"
        );
        return;
    }
    let s = Server::start_args(&["--history-revisions", "3", "--compaction-interval", "100ms"]);
    let Some(b) = browser(1280, 800) else { return };
    // No token: a loopback-only server admits anonymous admins, and so
    // does the console.
    let c = Client::default();
    hierarchy(&c, &s, "prod", "web", "front");
    let (st, body) = c.post_json(&cells(&s), &json!({"metadata": {"name": "api"}}));
    assert_eq!(st, 201, "{body}");
    for state in ["Ready", "Failed", "Ready", "Stopped", "Failed", "Ready"] {
        set_state(&c, &s, "api", state);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // (A watch that starts streams until its timeout: one second.)
    while c
        .get(&format!(
            "{}?resourceVersion=0&timeoutSeconds=1",
            s.api("/watch")
        ))
        .0
        != 410
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the history was never compacted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.goto(&format!("{}/ui/#/o/prod/web/front/api", s.base));
    let note = b.wait_for(
        "the history's note",
        "const n = document.querySelector('.panel .note');
         return n && n.textContent.startsWith('Changes after revision') ? n.textContent : null",
        WAIT,
    );
    let floor: u64 = note
        .as_str()
        .unwrap()
        .trim_start_matches("Changes after revision ")
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(floor > 0, "{note}");
    let rows = b.wait_for(
        "the retained changes",
        "const rows = [...document.querySelectorAll('table.history tbody tr')];
         return rows.length >= 2 ? rows.map(r => r.textContent) : null",
        WAIT,
    );
    let rows = rows.as_array().unwrap();
    assert!(
        rows[0].as_str().unwrap().contains(r#""Failed" → "Ready""#),
        "{rows:?}"
    );
    assert!(
        rows.last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("earlier versions are not in the retained history"),
        "{rows:?}"
    );
}

#[test]
fn a_revision_the_server_does_not_know_makes_the_page_list_again() {
    if common::on_etcd() {
        eprintln!(
            "skipped on etcd: a new prefix on the shared cluster continues the cluster's \
             revisions, so the page's revision is not unknown there"
        );
        return;
    }
    let mut s = Server::start();
    let Some(b) = browser(1280, 800) else { return };
    let c = Client::default();
    hierarchy(&c, &s, "prod", "web", "front");
    b.goto(&format!("{}/ui/", s.base));
    b.wait_for(
        "the old realm",
        "return !!document.querySelector('li[data-key=\"prod\"]')",
        WAIT,
    );
    // Another database behind the same address (a restore, a replaced
    // disk): the page's revision is newer than its history, so 410.
    s.stop();
    let dir = tempfile::tempdir().unwrap();
    let listen = s.base.trim_start_matches("http://").to_string();
    let fresh = Server::start_full(&dir.path().join("hub.redb"), &listen, &[]);
    let (st, body) = c.post_json(
        &fresh.api("/realms"),
        &json!({"metadata": {"name": "fresh"}}),
    );
    assert_eq!(st, 201, "{body}");
    b.wait_for(
        "the new database's realm, and the old one gone",
        "return !!document.querySelector('li[data-key=\"fresh\"]')
           && !document.querySelector('li[data-key=\"prod\"]')",
        Duration::from_secs(40),
    );
    let stats = b.exec("return window.modelhubConsole.stats", vec![]);
    assert!(stats["relists"].as_u64().unwrap() >= 1, "{stats}");
    let totals = b.exec(
        "return document.getElementById('totals').textContent",
        vec![],
    );
    assert!(totals.as_str().unwrap().starts_with("1 Realm"), "{totals}");
}

#[test]
fn a_token_limited_to_realms_sees_its_realms() {
    let s = Server::start();
    let Some(b) = browser(1280, 800) else { return };
    let (admin, _) = first_admin(&s);
    hierarchy(&admin, &s, "prod", "web", "front");
    hierarchy(&admin, &s, "dev", "web", "front");
    let token = common::create_token(
        &admin,
        &s,
        json!({"name": "prod-reader", "role": "reader", "realms": ["prod"]}),
    );
    b.goto(&format!("{}/ui/", s.base));
    b.type_into("#token", &token);
    b.click("#token-form button[type=submit]");
    // Watching every realm is refused to it: the page asks for its realms.
    b.wait_for(
        "the realms field",
        "return !document.getElementById('realms-row').hidden",
        WAIT,
    );
    b.type_into("#realms", "prod");
    b.click("#realms-row button[type=submit]");
    b.wait_for(
        "the live feed",
        "return document.getElementById('conn').textContent === 'Live'",
        WAIT,
    );
    b.wait_for(
        "the prod realm",
        "return !!document.querySelector('li[data-key=\"prod\"]')",
        WAIT,
    );
    assert_eq!(
        b.exec(
            "return !!document.querySelector('li[data-key=\"dev\"]')",
            vec![]
        ),
        false
    );
}

/// `(() => { body })()` as an expression.
fn wrap(body: &str) -> String {
    format!("({})()", func(body))
}

/// `() => { body }`.
fn func(body: &str) -> String {
    format!("() => {{ {body} }}")
}
