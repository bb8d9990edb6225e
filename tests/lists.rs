//! Collections: cascade delete, paginated snapshots, label selectors and
//! cross-scope lists.

mod common;
use common::*;

use serde_json::{Value, json};

/// Creates realm/space/stack/cell/container under `r`, two of each below
/// the realm: 1 + 2 + 4 + 8 + 16 = 31 objects.
fn populate(c: &Client, s: &Server, r: &str) -> usize {
    let mut n = 0;
    let mut post = |url: String, name: &str| {
        let (st, b) = c.post_json(&s.api(&url), &json!({"metadata": {"name": name}}));
        assert_eq!(st, 201, "{url} {name}: {b}");
        n += 1;
    };
    post("/realms".into(), r);
    for sp in ["s1", "s2"] {
        post(format!("/realms/{r}/spaces"), sp);
        for t in ["t1", "t2"] {
            post(format!("/realms/{r}/spaces/{sp}/stacks"), t);
            for cl in ["c1", "c2"] {
                post(format!("/realms/{r}/spaces/{sp}/stacks/{t}/cells"), cl);
                for ct in ["n1", "n2"] {
                    post(
                        format!("/realms/{r}/spaces/{sp}/stacks/{t}/cells/{cl}/containers"),
                        ct,
                    );
                }
            }
        }
    }
    n
}

fn count_all(c: &Client, s: &Server, realm: Option<&str>) -> usize {
    let q = realm.map(|r| format!("?realm={r}")).unwrap_or_default();
    let mut n = 0;
    if let Some(r) = realm {
        n += usize::from(c.get(&s.api(&format!("/realms/{r}"))).0 == 200);
    } else {
        n += item_names(&c.get(&s.api("/realms")).1).len();
    }
    for kind in ["spaces", "stacks", "cells", "containers"] {
        let (st, list) = c.get(&s.api(&format!("/{kind}{q}")));
        assert_eq!(st, 200, "{list}");
        n += item_names(&list).len();
    }
    n
}

// ---- cascade delete ----

#[test]
fn delete_with_children_is_409_has_children() {
    let s = Server::start();
    let c = Client::default();
    let total = populate(&c, &s, "a");
    let rev = revision(&c, &s);
    for url in [
        "/realms/a",
        "/realms/a/spaces/s1",
        "/realms/a/spaces/s1/stacks/t1",
        "/realms/a/spaces/s1/stacks/t1/cells/c1",
    ] {
        let r = c.delete(&s.api(url));
        assert_problem(&r, 409, "HasChildren", None);
        assert!(
            r.1["detail"].as_str().unwrap().contains("cascade"),
            "{}",
            r.1
        );
        let r = c.delete(&s.api(&format!("{url}?cascade=false")));
        assert_problem(&r, 409, "HasChildren", None);
    }
    assert_eq!(count_all(&c, &s, None), total);
    assert_changes_since(&c, &s, rev, 0, "nothing written");
    // A leaf deletes without cascade.
    let (st, b) = c.delete(&s.api("/realms/a/spaces/s1/stacks/t1/cells/c1/containers/n1"));
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["kind"], "Container");
}

#[test]
fn cascade_delete_removes_exactly_the_subtree() {
    let s = Server::start();
    let c = Client::default();
    let total_a = populate(&c, &s, "a");
    let total_ab = populate(&c, &s, "ab");
    populate(&c, &s, "b");
    // Same names below a sibling realm with `a` as a prefix of its name.
    let (_, before_ab) = c.get(&s.api("/realms/ab/spaces/s1/stacks/t1/cells/c1"));
    let (_, realm_a) = c.get(&s.api("/realms/a"));
    let rev = revision(&c, &s);

    let (st, last) = c.delete(&s.api("/realms/a?cascade=true"));
    assert_eq!(st, 200, "{last}");
    // The response is the realm's last state, at the deletion's revision.
    assert_eq!(last["kind"], "Realm");
    assert_eq!(last["metadata"]["name"], "a");
    assert_eq!(last["metadata"]["uid"], realm_a["metadata"]["uid"]);
    assert_eq!(last["spec"], realm_a["spec"]);
    let after = revision(&c, &s);
    if on_etcd() {
        // One etcd transaction: the removed objects take the indexes
        // 0..total_a of its revision, the realm last.
        assert_changes_since(&c, &s, rev, total_a, "one revision per removed object");
        assert!(rv(&last) > rev && rv(&last) <= after, "{last}");
        assert_eq!(
            rv(&last) % 1_000_000,
            total_a as u64 - 1,
            "the realm goes last (children first)"
        );
    } else {
        assert_eq!(
            after - rev,
            total_a as u64,
            "one revision per removed object"
        );
        assert_eq!(rv(&last), after, "the realm goes last (children first)");
    }

    assert_eq!(count_all(&c, &s, Some("a")), 0);
    assert_eq!(c.get(&s.api("/realms/a")).0, 404);
    assert_eq!(
        c.get(&s.api("/realms/a/spaces/s1/stacks/t1/cells/c1/containers/n1"))
            .0,
        404
    );
    assert_eq!(count_all(&c, &s, Some("ab")), total_ab);
    assert_eq!(count_all(&c, &s, Some("b")), total_ab);
    assert_eq!(
        c.get(&s.api("/realms/ab/spaces/s1/stacks/t1/cells/c1")).1,
        before_ab
    );
    assert_eq!(item_names(&c.get(&s.api("/realms")).1), ["ab", "b"]);

    // The name can be reused at once.
    assert_eq!(
        c.post_json(&s.api("/realms"), &json!({"metadata": {"name": "a"}}))
            .0,
        201
    );
    assert_eq!(
        item_names(&c.get(&s.api("/spaces?realm=a")).1),
        Vec::<String>::new()
    );
}

#[test]
fn cascade_delete_of_a_middle_level() {
    let s = Server::start();
    let c = Client::default();
    let total = populate(&c, &s, "r");
    let (st, last) = c.delete(&s.api("/realms/r/spaces/s1/stacks/t1?cascade=true"));
    assert_eq!(st, 200, "{last}");
    assert_eq!(last["kind"], "Stack");
    // t1 had 2 cells and 4 containers.
    assert_eq!(count_all(&c, &s, Some("r")), total - 7);
    let (_, cells) = c.get(&s.api("/cells?realm=r&space=s1"));
    assert_eq!(item_names(&cells), ["c1", "c2"]);
    assert!(
        cells["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["spec"]["stackId"] == "t2")
    );
    let (_, cells) = c.get(&s.api("/cells?realm=r&space=s2"));
    assert_eq!(item_names(&cells).len(), 4);
    // A stale precondition blocks a cascade too.
    let r = c.send(
        c.http
            .delete(s.api("/realms/r?cascade=true"))
            .header("if-match", "\"999999\""),
    );
    assert_problem(&r, 409, "Conflict", None);
    assert_eq!(count_all(&c, &s, Some("r")), total - 7);
}

// ---- pagination ----

fn stack_cells(s: &Server) -> String {
    s.api("/realms/r/spaces/s/stacks/t/cells")
}

fn post_cell(c: &Client, s: &Server, name: &str, labels: Value) {
    let (st, b) = c.post_json(
        &stack_cells(s),
        &json!({"metadata": {"name": name, "labels": labels}}),
    );
    assert_eq!(st, 201, "{b}");
}

#[test]
fn pages_come_from_one_snapshot() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let names: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        post_cell(&c, &s, n, json!({}));
    }
    let (st, page) = c.get(&format!("{}?limit=10", stack_cells(&s)));
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["kind"], "CellList");
    assert_eq!(page["apiVersion"], "v1beta1");
    let snapshot = rv(&page);
    let mut seen = item_names(&page);
    assert_eq!(seen.len(), 10);
    let mut token = page["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();

    // Writes after the first page: new names that sort inside the remaining
    // range, a deletion and an update of items not yet returned.
    for n in ["c10a", "c15a", "c99"] {
        post_cell(&c, &s, n, json!({}));
    }
    assert_eq!(c.delete(&format!("{}/c20", stack_cells(&s))).0, 200);
    let (st, _) = c.patch(
        &format!("{}/c21", stack_cells(&s)),
        &json!({"metadata": {"labels": {"x": "y"}}}),
    );
    assert_eq!(st, 200);

    let mut pages = 1;
    loop {
        let (st, page) = c.get_query(&stack_cells(&s), &[("limit", "10"), ("continue", &token)]);
        assert_eq!(st, 200, "{page}");
        assert_eq!(rv(&page), snapshot, "every page is the same snapshot");
        for item in page["items"].as_array().unwrap() {
            if item["metadata"]["name"] == "c21" {
                assert!(
                    item["metadata"].get("labels").is_none(),
                    "old state: {item}"
                );
            }
            assert!(rv(item) <= snapshot);
        }
        seen.extend(item_names(&page));
        pages += 1;
        match page["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen, names,
        "25 items, in name order, no duplicates, nothing new"
    );

    // A fresh list sees the writes.
    let (_, all) = c.get(&stack_cells(&s));
    assert_eq!(item_names(&all).len(), 27);
    assert!(rv(&all) > snapshot);
}

#[test]
fn page_sizes_and_boundaries() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for i in 0..10 {
        post_cell(&c, &s, &format!("c{i}"), json!({}));
    }
    // limit equal to the count: no token.
    let (_, p) = c.get(&format!("{}?limit=10", stack_cells(&s)));
    assert_eq!(item_names(&p).len(), 10);
    assert!(p["metadata"].get("continue").is_none(), "{p}");
    // limit 5: exactly two pages.
    let (_, p1) = c.get(&format!("{}?limit=5", stack_cells(&s)));
    let t = p1["metadata"]["continue"].as_str().unwrap();
    let (_, p2) = c.get_query(&stack_cells(&s), &[("limit", "5"), ("continue", t)]);
    assert_eq!(item_names(&p2), ["c5", "c6", "c7", "c8", "c9"]);
    assert!(p2["metadata"].get("continue").is_none(), "{p2}");
    // limit 1 walks every item.
    let mut seen = Vec::new();
    let (_, mut p) = c.get(&format!("{}?limit=1", stack_cells(&s)));
    loop {
        seen.extend(item_names(&p));
        let Some(t) = p["metadata"]["continue"].as_str().map(String::from) else {
            break;
        };
        p = c
            .get_query(&stack_cells(&s), &[("limit", "1"), ("continue", &t)])
            .1;
    }
    assert_eq!(seen.len(), 10);
    // No limit: everything, no token.
    let (_, all) = c.get(&stack_cells(&s));
    assert_eq!(item_names(&all).len(), 10);
    assert!(all["metadata"].get("continue").is_none());
    // An empty collection.
    hierarchy(&c, &s, "r", "s", "empty");
    let (st, e) = c.get(&format!(
        "{}?limit=3",
        s.api("/realms/r/spaces/s/stacks/empty/cells")
    ));
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["items"], json!([]));
    let (st, e) = c.get(&s.api("/realms/r/spaces/s/stacks/empty/cells"));
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["items"], json!([]));
}

#[test]
fn bad_continue_tokens_are_rejected() {
    let mut s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    hierarchy(&c, &s, "r", "s", "u");
    for i in 0..4 {
        post_cell(&c, &s, &format!("c{i}"), json!({}));
    }
    let etcd_bad: &[&str] = if on_etcd() {
        &["e1.", "e1.x.00", "e1.5.0g", "e1.5.", "e1.-3.00", "e2.5.00"]
    } else {
        &[]
    };
    for bad in ["garbage", "zz.00", "1.0g", "1.", ".00"]
        .iter()
        .chain(etcd_bad)
    {
        let r = c.get_query(&stack_cells(&s), &[("limit", "2"), ("continue", bad)]);
        assert_problem(&r, 400, "BadRequest", None);
    }
    let (_, p) = c.get(&format!("{}?limit=2", stack_cells(&s)));
    let token = p["metadata"]["continue"].as_str().unwrap().to_string();
    // A token of another list.
    let r = c.get_query(
        &s.api("/realms/r/spaces/s/stacks/u/cells"),
        &[("limit", "2"), ("continue", &token)],
    );
    assert_eq!(r.0, 400, "{}", r.1);
    if on_etcd() {
        // `e1.<position>.<hex key>`: it holds until etcd compacts its
        // revision, through a restart too (any replica continues it).
        let (rev, key) = token
            .strip_prefix("e1.")
            .and_then(|t| t.split_once('.'))
            .unwrap_or_else(|| panic!("etcd token format: {token}"));
        let rev: u64 = rev.parse().unwrap();
        // A position a million etcd revisions ahead: no such snapshot.
        let r = c.get_query(
            &stack_cells(&s),
            &[
                ("limit", "2"),
                ("continue", &format!("e1.{}.{key}", rev + 1_000_000_000_000)),
            ],
        );
        assert_problem(&r, 410, "Gone", None);
        let (st, next) = c.get_query(&stack_cells(&s), &[("limit", "2"), ("continue", &token)]);
        assert_eq!(st, 200, "{next}");
        s.restart();
        let (st, again) = c.get_query(&stack_cells(&s), &[("limit", "2"), ("continue", &token)]);
        assert_eq!(st, 200, "{again}");
        assert_eq!(again, next, "the same page after a restart");
        assert_eq!(item_names(&again), ["c2", "c3"]);
        return;
    }
    // A token whose snapshot is unknown (expired): 410.
    let (id, key) = token.split_once('.').unwrap();
    let other = u64::from_str_radix(id, 16).unwrap().wrapping_add(12345);
    let r = c.get_query(
        &stack_cells(&s),
        &[("limit", "2"), ("continue", &format!("{other:x}.{key}"))],
    );
    assert_problem(&r, 410, "Gone", None);
    // After a restart every snapshot is gone.
    s.restart();
    let r = c.get_query(&stack_cells(&s), &[("limit", "2"), ("continue", &token)]);
    assert_problem(&r, 410, "Gone", None);
}

#[test]
fn cross_scope_lists_narrow_by_realm_space_stack_cell() {
    let s = Server::start();
    let c = Client::default();
    populate(&c, &s, "a");
    populate(&c, &s, "ab");
    let (_, all) = c.get(&s.api("/cells"));
    assert_eq!(item_names(&all).len(), 16);
    // Ordered by path: realm a first, then ab.
    let realms: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["spec"]["realmId"].as_str().unwrap())
        .collect();
    assert_eq!(&realms[..8], ["a"; 8]);
    assert_eq!(&realms[8..], ["ab"; 8]);
    let (_, a) = c.get(&s.api("/cells?realm=a"));
    assert_eq!(item_names(&a).len(), 8);
    assert!(
        a["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["spec"]["realmId"] == "a")
    );
    let (_, x) = c.get(&s.api("/containers?realm=a&space=s2&stack=t1&cell=c2"));
    assert_eq!(item_names(&x), ["n1", "n2"]);
    for i in x["items"].as_array().unwrap() {
        assert_eq!(
            (
                &i["spec"]["realmId"],
                &i["spec"]["spaceId"],
                &i["spec"]["stackId"],
                &i["spec"]["cellId"]
            ),
            (&json!("a"), &json!("s2"), &json!("t1"), &json!("c2"))
        );
    }
    // A non-leading scope (every realm's space s1).
    let (_, x) = c.get(&s.api("/stacks?space=s1"));
    assert_eq!(item_names(&x).len(), 4);
    assert!(
        x["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["spec"]["spaceId"] == "s1")
    );
    // Paged cross-scope lists.
    let (_, p) = c.get(&s.api("/containers?realm=ab&limit=5"));
    assert_eq!(item_names(&p).len(), 5);
    assert!(p["metadata"]["continue"].is_string());
    let (_, none) = c.get(&s.api("/cells?realm=zzz"));
    assert_eq!(none["items"], json!([]));
    assert_eq!(none["kind"], "CellList");
}

// ---- label selectors ----

fn selector_fixture() -> (Server, Client) {
    let s = Server::start();
    let c = Client::default();
    for r in ["r1", "r2"] {
        hierarchy(&c, &s, r, "s", "t");
        let url = s.api(&format!("/realms/{r}/spaces/s/stacks/t/cells"));
        for (name, labels) in [
            ("c1", json!({"app": "web", "tier": "front"})),
            ("c2", json!({"app": "db", "tier": "back"})),
            ("c3", json!({"app": "web"})),
            ("c4", json!({})),
            ("c5", json!({"app": "cache", "tier": "front", "canary": ""})),
        ] {
            let (st, b) = c.post_json(&url, &json!({"metadata": {"name": name, "labels": labels}}));
            assert_eq!(st, 201, "{b}");
        }
    }
    (s, c)
}

const SELECTOR_CASES: &[(&str, &[&str])] = &[
    ("app=web", &["c1", "c3"]),
    ("app==web", &["c1", "c3"]),
    ("app!=web", &["c2", "c4", "c5"]),
    ("tier", &["c1", "c2", "c5"]),
    ("!tier", &["c3", "c4"]),
    ("canary", &["c5"]),
    ("app in (web,db)", &["c1", "c2", "c3"]),
    ("app in (web, db)", &["c1", "c2", "c3"]),
    ("app notin (web,db)", &["c4", "c5"]),
    ("app=web,tier", &["c1"]),
    ("app=web,!tier", &["c3"]),
    ("tier in (front),app!=cache", &["c1"]),
    ("app notin (cache),tier notin (back),app", &["c1", "c3"]),
    ("app=nothing", &[]),
    ("", &["c1", "c2", "c3", "c4", "c5"]),
];

#[test]
fn label_selectors_on_a_scoped_list() {
    let (s, c) = selector_fixture();
    let url = s.api("/realms/r1/spaces/s/stacks/t/cells");
    for (sel, want) in SELECTOR_CASES {
        let (st, list) = c.get_query(&url, &[("labelSelector", sel)]);
        assert_eq!(st, 200, "{sel}: {list}");
        assert_eq!(item_names(&list), *want, "labelSelector={sel}");
        // The paged path filters the same way.
        let (st, list) = c.get_query(&url, &[("labelSelector", sel), ("limit", "100")]);
        assert_eq!(st, 200, "{sel}: {list}");
        assert_eq!(item_names(&list), *want, "paged labelSelector={sel}");
    }
}

#[test]
fn label_selectors_on_cross_scope_lists() {
    let (s, c) = selector_fixture();
    for (sel, want) in SELECTOR_CASES {
        let (st, list) = c.get_query(&s.api("/cells"), &[("realm", "r2"), ("labelSelector", sel)]);
        assert_eq!(st, 200, "{sel}: {list}");
        assert_eq!(item_names(&list), *want, "realm=r2 labelSelector={sel}");
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["spec"]["realmId"] == "r2")
        );
        let (st, list) = c.get_query(&s.api("/cells"), &[("labelSelector", sel)]);
        assert_eq!(st, 200, "{sel}: {list}");
        let both: Vec<&str> = want.iter().chain(want.iter()).copied().collect();
        assert_eq!(item_names(&list), both, "all realms labelSelector={sel}");
    }
    // Selector and paging together: one item per page.
    let mut seen = Vec::new();
    let mut q = vec![
        ("labelSelector".to_string(), "app=web".to_string()),
        ("limit".into(), "1".into()),
    ];
    loop {
        let qr: Vec<(&str, &str)> = q.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let (st, p) = c.get_query(&s.api("/cells"), &qr);
        assert_eq!(st, 200, "{p}");
        seen.extend(item_names(&p));
        match p["metadata"]["continue"].as_str() {
            Some(t) => {
                q.truncate(2);
                q.push(("continue".into(), t.into()));
            }
            None => break,
        }
    }
    assert_eq!(seen, ["c1", "c3", "c1", "c3"]);
}

#[test]
fn malformed_label_selectors_are_400() {
    let (s, c) = selector_fixture();
    for bad in [
        "app in (web",
        "app=web,",
        ",app",
        "a b",
        "app in ()",
        "app within (a)",
        "=x",
        "a=(b)",
        "app)",
    ] {
        for url in [s.api("/realms/r1/spaces/s/stacks/t/cells"), s.api("/cells")] {
            let r = c.get_query(&url, &[("labelSelector", bad)]);
            assert_problem(&r, 400, "BadRequest", Some("labelSelector"));
        }
    }
}

/// Sets the status state of cell `name` in realm `r`.
fn set_state(c: &Client, s: &Server, r: &str, name: &str, state: &str) {
    let (st, b) = c.put_json(
        &s.api(&format!(
            "/realms/{r}/spaces/s/stacks/t/cells/{name}/status"
        )),
        &json!({"status": {"state": state}}),
    );
    assert_eq!(st, 200, "{b}");
}

#[test]
fn field_selectors_on_scoped_and_cross_scope_lists() {
    let (s, c) = selector_fixture();
    for r in ["r1", "r2"] {
        set_state(&c, &s, r, "c1", "Failed");
        set_state(&c, &s, r, "c2", "Ready");
        set_state(&c, &s, r, "c5", "Failed");
    }
    let cases: &[(&str, &str, &[&str])] = &[
        ("status.state=Failed", "", &["c1", "c5"]),
        ("status.state==Failed", "", &["c1", "c5"]),
        ("status.state!=Failed", "", &["c2", "c3", "c4"]),
        ("status.state=Pending", "", &["c3", "c4"]),
        ("status.state!=Failed,status.state!=Pending", "", &["c2"]),
        ("status.state=Failed", "app=web", &["c1"]),
        ("status.state=Failed", "tier=back", &[]),
        ("status.state=Stopped", "", &[]),
    ];
    let scoped = s.api("/realms/r1/spaces/s/stacks/t/cells");
    for (fields, labels, want) in cases {
        let mut q = vec![("fieldSelector", *fields)];
        if !labels.is_empty() {
            q.push(("labelSelector", labels));
        }
        let (st, list) = c.get_query(&scoped, &q);
        assert_eq!(st, 200, "{fields} {labels}: {list}");
        assert_eq!(
            item_names(&list),
            *want,
            "fieldSelector={fields} labelSelector={labels}"
        );
        // Paged, and across realms (the same cells in both).
        let mut paged = q.clone();
        paged.push(("limit", "1"));
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..20 {
            let mut q = paged.clone();
            if !token.is_empty() {
                q.push(("continue", &token));
            }
            let (st, page) = c.get_query(&s.api("/cells"), &q);
            assert_eq!(st, 200, "{page}");
            seen.extend(item_names(&page));
            match page["metadata"]["continue"].as_str() {
                Some(t) => token = t.to_string(),
                None => break,
            }
        }
        let both: Vec<&str> = want.iter().chain(want.iter()).copied().collect();
        assert_eq!(seen, both, "paged across realms: fieldSelector={fields}");
    }
    // A list cached for one selector never answers another.
    let (_, all) = c.get(&scoped);
    assert_eq!(item_names(&all).len(), 5);
    let (_, failed) = c.get_query(&scoped, &[("fieldSelector", "status.state=Failed")]);
    assert_eq!(item_names(&failed), ["c1", "c5"]);
    set_state(&c, &s, "r1", "c5", "Ready");
    let (_, failed) = c.get_query(&scoped, &[("fieldSelector", "status.state=Failed")]);
    assert_eq!(item_names(&failed), ["c1"], "a cell that recovered");
}

#[test]
fn unsupported_field_selectors_are_400_naming_the_field() {
    let (s, c) = selector_fixture();
    for bad in [
        "spec.image=x",
        "metadata.name=c1",
        "status.state",
        "status.state=",
        "status.state=Failed,",
        "status.state in (Failed)",
    ] {
        for url in [s.api("/realms/r1/spaces/s/stacks/t/cells"), s.api("/cells")] {
            let r = c.get_query(&url, &[("fieldSelector", bad)]);
            assert_problem(&r, 400, "BadRequest", Some("fieldSelector"));
        }
    }
    let r = c.get_query(&s.api("/cells"), &[("fieldSelector", "spec.image=x")]);
    let detail = r.1["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("spec.image") && detail.contains("status.state"),
        "{detail}"
    );
}

#[test]
fn large_lists_stream_as_valid_json() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    // ~300 KiB of items: several chunks of the streamed body.
    for i in 0..150 {
        let env: Vec<String> = (0..20)
            .map(|j| format!("VAR{j}={}", "x".repeat(80)))
            .collect();
        let (st, b) = c.post_json(
            &stack_cells(&s),
            &json!({"metadata": {"name": format!("c{i:03}")}, "spec": {"containers": [{"id": "a", "env": env}]}}),
        );
        assert_eq!(st, 201, "{b}");
    }
    let r = c.raw(c.http.get(stack_cells(&s)));
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.len() > 200 * 1024, "{}", text.len());
    let all: Value = serde_json::from_str(&text).expect("the streamed list is one JSON document");
    let names = item_names(&all);
    assert_eq!(names.len(), 150);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // The same items as the paged list.
    let mut paged = Vec::new();
    let (_, mut p) = c.get(&format!("{}?limit=40", stack_cells(&s)));
    loop {
        paged.extend(p["items"].as_array().unwrap().iter().cloned());
        let Some(t) = p["metadata"]["continue"].as_str().map(String::from) else {
            break;
        };
        p = c
            .get_query(&stack_cells(&s), &[("limit", "40"), ("continue", &t)])
            .1;
    }
    assert_eq!(all["items"], json!(paged));
}

#[test]
fn relisting_shows_every_change_of_cached_documents() {
    // Lists reuse rendered documents keyed by resourceVersion; a write must
    // never leave a stale rendering in a later list.
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for n in ["a", "b"] {
        post_cell(&c, &s, n, json!({"v": "1"}));
    }
    let names_and_labels = |c: &Client| -> Vec<(String, Value)> {
        let (st, list) = c.get(&stack_cells(&s));
        assert_eq!(st, 200);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                    i["metadata"]["labels"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(names_and_labels(&c)[0].1, json!({"v": "1"}));
    let (st, _) = c.patch(
        &format!("{}/a", stack_cells(&s)),
        &json!({"metadata": {"labels": {"v": "2"}}}),
    );
    assert_eq!(st, 200);
    let (st, _) = c.put_json(
        &format!("{}/b/status", stack_cells(&s)),
        &json!({"status": {"state": "Ready"}}),
    );
    assert_eq!(st, 200);
    let after = names_and_labels(&c);
    assert_eq!(after[0], ("a".to_string(), json!({"v": "2"})));
    let (_, list) = c.get(&stack_cells(&s));
    assert_eq!(list["items"][1]["status"]["state"], "Ready");
    let (st, _) = c.delete(&format!("{}/a", stack_cells(&s)));
    assert_eq!(st, 200);
    post_cell(&c, &s, "a", json!({"v": "3"}));
    assert_eq!(names_and_labels(&c)[0].1, json!({"v": "3"}));
}

#[test]
fn continue_tokens_expire_with_their_snapshot() {
    let s = Server::start_args(&["--continue-ttl", "1s"]);
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    for n in ["a", "b", "c"] {
        post_cell(&c, &s, n, json!({}));
    }
    let (st, page) = c.get(&format!("{}?limit=1", stack_cells(&s)));
    assert_eq!(st, 200);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (st, _) = c.get(&format!("{}?limit=1&continue={token}", stack_cells(&s)));
    assert_eq!(st, 200, "valid while the snapshot lives");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (st, body) = c.get(&format!("{}?limit=1&continue={token}", stack_cells(&s)));
    if on_etcd() {
        // --continue-ttl is redb's: an etcd token holds until etcd
        // compacts its revision.
        assert_eq!(st, 200, "{body}");
        assert_eq!(item_names(&body), ["b"]);
        assert_eq!(rv(&body), rv(&page), "the first page's snapshot");
    } else {
        assert_eq!((st, body["reason"].as_str()), (410, Some("Gone")), "{body}");
    }
    // Garbage that is not even ASCII is a 400, never a server error.
    let (st, _) = c.get(&format!("{}?limit=1&continue=1.a%C3%A9a", stack_cells(&s)));
    assert_eq!(st, 400);
}

// ---- the list cache ----

/// `modelhub_list_cache_hits_total` from `/metrics`.
fn list_cache_hits(c: &Client, s: &Server) -> u64 {
    let text = common::metrics_text(c, s);
    text.lines()
        .find_map(|l| l.strip_prefix("modelhub_list_cache_hits_total "))
        .unwrap_or_else(|| panic!("no list cache counter in {text}"))
        .parse()
        .unwrap()
}

/// The same list through the paged path, which never uses the list cache.
fn uncached(c: &Client, url: &str) -> Value {
    let sep = if url.contains('?') { '&' } else { '?' };
    let (st, list) = c.get(&format!("{url}{sep}limit=100000"));
    assert_eq!(st, 200, "{list}");
    list
}

/// Asserts that `later`, read after `earlier`, is the same list: on redb
/// byte for byte; on etcd, whose list revision is etcd's cluster-wide one
/// (other prefixes' writes and the heartbeats move it), the same items at
/// a revision no older.
#[track_caller]
fn assert_same_list(earlier: &Value, later: &Value, what: &str) {
    if on_etcd() {
        let strip = |v: &Value| {
            let mut v = v.clone();
            v["metadata"]
                .as_object_mut()
                .expect("list metadata")
                .remove("resourceVersion");
            v
        };
        assert_eq!(strip(earlier), strip(later), "{what}");
        assert!(rv(later) >= rv(earlier), "{what}: went back");
    } else {
        assert_eq!(earlier, later, "{what}");
    }
}

/// A server with stacks `r/s/t` and `r/s/u`.
fn two_stacks() -> (Server, Client) {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    hierarchy(&c, &s, "r", "s", "u");
    (s, c)
}

#[test]
fn unchanged_relists_are_served_from_the_cache_at_the_newest_revision() {
    let (s, c) = two_stacks();
    for n in ["a", "b", "c"] {
        post_cell(&c, &s, n, json!({"n": n}));
    }
    let (st, first) = c.get(&stack_cells(&s));
    assert_eq!(st, 200);
    let hits = list_cache_hits(&c, &s);
    let (_, again) = c.get(&stack_cells(&s));
    if on_etcd() {
        assert_eq!(list_cache_hits(&c, &s), 0, "the list cache is off on etcd");
    } else {
        assert_eq!(list_cache_hits(&c, &s), hits + 1);
    }
    assert_same_list(&first, &again, "relisted");

    // A write to another stack leaves the entry valid, and the list is
    // exact at the newer revision: what the uncached path answers.
    let (st, other) = c.post_json(
        &s.api("/realms/r/spaces/s/stacks/u/cells"),
        &json!({"metadata": {"name": "x"}}),
    );
    assert_eq!(st, 201);
    let (_, later) = c.get(&stack_cells(&s));
    if on_etcd() {
        assert_eq!(list_cache_hits(&c, &s), 0, "the list cache is off on etcd");
        // "Everything up to etcd revision R", R at or past the write's.
        assert!(rv(&later) > rv(&other), "{later}");
    } else {
        assert_eq!(list_cache_hits(&c, &s), hits + 2);
        assert_eq!(rv(&later), rv(&other));
    }
    assert_eq!(later["items"], first["items"]);
    assert_same_list(&later, &uncached(&c, &stack_cells(&s)), "uncached");

    // A watch from that revision misses nothing written after it.
    post_cell(&c, &s, "d", json!({}));
    let events = c
        .http
        .get(format!(
            "{}?watch=true&resourceVersion={}&timeoutSeconds=1",
            stack_cells(&s),
            rv(&later)
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let names: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["d"]);
}

/// One write of a random kind into one of two stacks, by whichever
/// endpoint `choice` picks; answers a description for failure messages.
fn random_write(c: &Client, s: &Server, choice: u64, n: u64) -> String {
    let stack = ["t", "u"][(choice % 2) as usize];
    let cells = s.api(&format!("/realms/r/spaces/s/stacks/{stack}/cells"));
    let name = format!("c{}", n % 6);
    let app = ["web", "db"][(n % 2) as usize];
    let state = ["Ready", "Stopped"][(n % 2) as usize];
    let label = json!({"app": app, "n": n.to_string()});
    let (what, (st, body)) = match (choice / 2) % 7 {
        0 => (
            "create",
            c.post_json(&cells, &json!({"metadata": {"name": name, "labels": label}})),
        ),
        1 => (
            "replace",
            c.put_json(
                &format!("{cells}/{name}"),
                &json!({"metadata": {"name": name, "labels": label}}),
            ),
        ),
        2 => (
            "patch",
            c.patch(
                &format!("{cells}/{name}"),
                &json!({"metadata": {"labels": label}}),
            ),
        ),
        3 => (
            "status",
            c.put_json(
                &format!("{cells}/{name}/status"),
                &json!({"status": {"state": state}}),
            ),
        ),
        4 => ("delete", c.delete(&format!("{cells}/{name}"))),
        5 => (
            "apply",
            c.send(
                c.http
                    .post(s.api("/apply"))
                    .header("content-type", "application/yaml")
                    .body(format!(
                        "kind: Cell\nmetadata:\n  name: {name}\n  labels: {{app: web, n: \"{n}\"}}\n\
                         spec:\n  realmId: r\n  spaceId: s\n  stackId: {stack}\n"
                    )),
            ),
        ),
        _ => (
            "container",
            c.post_json(
                &format!("{cells}/{name}/containers"),
                &json!({"metadata": {"name": format!("k{n}")}, "spec": {"image": "busybox"}}),
            ),
        ),
    };
    // Missing objects and existing names are part of the game.
    assert!(
        [200, 201, 404, 409].contains(&st),
        "{what} {stack}/{name}: {st} {body}"
    );
    format!("{what} {stack}/{name} -> {st}")
}

#[test]
fn cached_lists_always_equal_the_uncached_answer() {
    // Random writes of every kind into two stacks, each followed by the
    // unpaged lists (cached or not) of several scopes and selectors, each
    // compared whole with the paged answer, which never uses the cache.
    let (s, c) = two_stacks();
    let lists = [
        stack_cells(&s),
        s.api("/realms/r/spaces/s/stacks/u/cells"),
        s.api("/realms/r/spaces/s/stacks/t/cells?labelSelector=app%3Dweb"),
        s.api("/cells"),
        s.api("/cells?stack=u"),
        s.api("/containers"),
        s.api("/realms/r/spaces/s/stacks/t/cells/c0/containers"),
        s.api("/cells?realm=r&space=s&stack=t"),
        s.api("/realms/r/spaces/s/stacks"),
        s.api("/realms/r/spaces"),
        s.api("/realms"),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut history = Vec::new();
    for n in 0..240 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        history.push(random_write(&c, &s, seed % 1000, n));
        for url in &lists {
            let (st, list) = c.get(url);
            assert_eq!(st, 200, "{url}: {list}");
            assert_same_list(
                &list,
                &uncached(&c, url),
                &format!(
                    "{url} after {:?}",
                    &history[history.len().saturating_sub(5)..]
                ),
            );
        }
    }
    if on_etcd() {
        assert_eq!(list_cache_hits(&c, &s), 0, "the list cache is off on etcd");
    } else {
        assert!(list_cache_hits(&c, &s) > 0, "the cache was never used");
    }
    // Deleting a stack's cells by cascade empties its cached list too.
    let (_, _) = c.get(&stack_cells(&s));
    let (st, _) = c.delete(&format!(
        "{}?cascade=true",
        s.api("/realms/r/spaces/s/stacks/t")
    ));
    assert_eq!(st, 200);
    let (st, list) = c.get(&stack_cells(&s));
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["items"], json!([]));
    assert_same_list(&list, &uncached(&c, &stack_cells(&s)), "after the cascade");
}

#[test]
fn concurrent_writers_never_see_a_stale_cached_list() {
    // Every list must hold every cell whose create was acknowledged before
    // the list was asked for, at a revision no older than those acks.
    let (s, c) = two_stacks();
    let acked = std::sync::Mutex::new(Vec::<(String, u64)>::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for w in 0..2 {
            let (s, acked, done) = (&s, &acked, &done);
            scope.spawn(move || {
                let c = Client::default();
                for i in 0..150 {
                    // Every third write goes to the other stack.
                    let stack = if i % 3 == 0 { "u" } else { "t" };
                    let name = format!("w{w}-{i}");
                    let (st, doc) = c.post_json(
                        &s.api(&format!("/realms/r/spaces/s/stacks/{stack}/cells")),
                        &json!({"metadata": {"name": name}}),
                    );
                    assert_eq!(st, 201, "{doc}");
                    if stack == "t" {
                        acked.lock().unwrap().push((name, rv(&doc)));
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let mut lists = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) || lists < 20 {
            let before = acked.lock().unwrap().clone();
            // A read through the uncached path first: the unpaged list
            // after it must not go back in time (only creates here, so
            // every later list holds every earlier list's cells).
            let paged = uncached(&c, &stack_cells(&s));
            let (st, list) = c.get(&stack_cells(&s));
            assert_eq!(st, 200);
            let names: std::collections::HashSet<String> = item_names(&list).into_iter().collect();
            assert!(
                rv(&list) >= rv(&paged),
                "list went back: {} < {}",
                rv(&list),
                rv(&paged)
            );
            for name in item_names(&paged) {
                assert!(names.contains(&name), "{name} seen, then missing");
            }
            for (name, at) in &before {
                assert!(
                    names.contains(name),
                    "{name} (rv {at}) missing at rv {}",
                    rv(&list)
                );
                assert!(rv(&list) >= *at, "list rv {} < acked {at}", rv(&list));
            }
            for item in list["items"].as_array().unwrap() {
                assert!(rv(item) <= rv(&list), "item newer than its list: {item}");
            }
            lists += 1;
        }
    });
    let (_, last) = c.get(&stack_cells(&s));
    assert_eq!(item_names(&last).len(), acked.lock().unwrap().len());
    assert_same_list(&last, &uncached(&c, &stack_cells(&s)), "uncached");
}
