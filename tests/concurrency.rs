//! Concurrent writers: group commit must keep every request atomic, every
//! revision unique, and merge patches without lost updates.

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

#[test]
fn concurrent_creates_get_unique_revisions_and_one_winner_per_name() {
    let s = Server::start();
    let c = Client::default();
    hierarchy(&c, &s, "r", "s", "t");
    let base = revision(&c, &s);
    let cells = s.api("/realms/r/spaces/s/stacks/t/cells");
    const THREADS: usize = 6;
    const NAMES: usize = 20;
    let results: Vec<(String, Reply)> = in_threads(THREADS, NAMES, |c, t, i| {
        // Each thread walks the names in its own order.
        let name = format!("c{:02}", (i + t * 7) % NAMES);
        let r = c.post_json(
            &cells,
            &json!({"metadata": {"name": name, "labels": {"thread": t.to_string()}}}),
        );
        (name, r)
    });
    let mut winners: BTreeMap<String, u64> = BTreeMap::new();
    let mut revisions = HashSet::new();
    for (name, (st, body)) in results {
        match st {
            201 => {
                assert!(
                    winners.insert(name.clone(), rv(&body)).is_none(),
                    "two creates of {name} won"
                );
                assert!(
                    revisions.insert(rv(&body)),
                    "revision {} handed out twice",
                    rv(&body)
                );
            }
            409 => assert_eq!(body["reason"], "AlreadyExists", "{body}"),
            other => panic!("{name}: {other} {body}"),
        }
    }
    assert_eq!(winners.len(), NAMES);
    let (_, list) = c.get(&cells);
    let mut got: Vec<u64> = revisions.into_iter().collect();
    got.sort();
    if on_etcd() {
        // Failed creates used no revision: exactly the winners' changes
        // since `base`, each alone in its etcd transaction (not dense).
        let since: Vec<u64> = events_since(&c, &s, base).iter().map(event_rv).collect();
        assert_eq!(since, got, "failed creates used no revision");
        assert!(got.iter().all(|r| r % 1_000_000 == 0), "{got:?}");
        assert!(rv(&list) > got[NAMES - 1]);
    } else {
        assert_eq!(
            rv(&list),
            base + NAMES as u64,
            "failed creates used no revision"
        );
        let want: Vec<u64> = (base + 1..=base + NAMES as u64).collect();
        assert_eq!(got, want, "consecutive revisions");
    }
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        assert_eq!(rv(item), winners[name], "the stored object is the winner's");
    }
}

#[test]
fn merge_patches_without_precondition_never_conflict_under_contention() {
    // Every acknowledged patch is in the final object and no refused one
    // applied (checked in `patch_storm`). And none is refused: API.md
    // ("Writes"): PATCH follows PUT's rules for preconditions; without one,
    // a write does not fail because others wrote first (409 Conflict is "a
    // precondition failed"). The server merges each patch inside the write
    // transaction, into the object as it is then.
    // 8 x 8 new labels: the most an object may have (API.md, "Labels").
    let (labels, conflicts) = patch_storm(8, 8);
    assert_eq!(
        conflicts.len(),
        0,
        "{} of {} patches without a precondition answered 409, e.g. {:?}",
        conflicts.len(),
        2 * 8 * 8,
        conflicts.first()
    );
    assert_eq!(labels, 8 * 8);
}

/// `threads` clients each merge-patch one realm `each` times (a new label)
/// and its status `each` times, all without preconditions. Checks that no
/// acknowledged label patch was lost and no refused one applied; returns
/// the number of labels and the bodies of the patches that were refused.
fn patch_storm(threads: usize, each: usize) -> (usize, Vec<String>) {
    let s = Server::start();
    let c = Client::default();
    create_realm(&c, &s, "r");
    let url = s.api("/realms/r");
    let created = rv(&c.get(&url).1);
    let outcomes: Vec<(String, Reply, Reply)> = in_threads(threads, each, |c, t, i| {
        let key = format!("t{t}-{i}");
        let labels = c.patch(&url, &json!({"metadata": {"labels": {&key: "x"}}}));
        // Status writes interleave with the label writes.
        let status = c.patch(
            &format!("{url}/status"),
            &json!({"status": {"cgroupPath": format!("/t{t}/{i}")}}),
        );
        (key, labels, status)
    });
    let (_, got) = c.get(&url);
    let stored = got["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut conflicts = Vec::new();
    let mut writes = 0;
    let mut acked_labels = 0;
    for (key, labels, status) in outcomes {
        for (what, (st, body)) in [("labels", labels), ("status", status)] {
            match st {
                200 => {
                    writes += 1;
                    if what == "labels" {
                        acked_labels += 1;
                        assert!(
                            stored.contains_key(&key),
                            "label {key} was acknowledged but lost"
                        );
                    }
                }
                409 => conflicts.push(body.to_string()),
                other => panic!("{what}: {other} {body}"),
            }
        }
    }
    assert_eq!(
        stored.len(),
        acked_labels,
        "exactly the acknowledged label patches are applied (a refused one changes nothing)"
    );
    assert_eq!(
        generation(&got),
        1,
        "labels and status never bump the generation"
    );
    if on_etcd() {
        let since: Vec<u64> = events_since(&c, &s, created).iter().map(event_rv).collect();
        assert_eq!(
            since.len() as u64,
            writes,
            "one revision per acknowledged write"
        );
        assert_eq!(since.last().copied(), Some(rv(&got)));
    } else {
        assert_eq!(rv(&got), 1 + writes, "one revision per acknowledged write");
    }
    (stored.len(), conflicts)
}
