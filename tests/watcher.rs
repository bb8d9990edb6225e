//! The watcher client (`modelhub::client::watcher`) against a real server:
//! it must end with the server's final state after a restart and after its
//! history was compacted away (410, re-sync).

mod common;

use std::time::Duration;

use common::{Server, on_etcd, own_cluster_for_compaction, post_ok};
use futures_util::StreamExt;
use modelhub::client::watcher::{Cache, Event, Watcher};
use modelhub::client::{Client, WatchScope};
use modelhub::model::{AnyObject, CellState, Kind, Path};
use serde_json::json;
use tokio::sync::mpsc;

async fn setup(s: &Server) {
    post_ok(s.api("/realms"), json!({"metadata": {"name": "r"}})).await;
    post_ok(
        s.api("/realms/r/spaces"),
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    post_ok(
        s.api("/realms/r/spaces/s/stacks"),
        json!({"metadata": {"name": "t"}}),
    )
    .await;
}

async fn cell(s: &Server, name: &str) {
    post_ok(
        s.api("/realms/r/spaces/s/stacks/t/cells"),
        json!({"metadata": {"name": name}, "spec": {"containers": [{"id": "main", "image": "busybox"}]}}),
    )
    .await;
}

fn cell_path(name: &str) -> Path {
    Path::new(Kind::Cell, ["r", "s", "t", name].map(String::from).to_vec())
}

fn summary(objects: &[AnyObject]) -> Vec<(Path, u64)> {
    objects
        .iter()
        .map(|o| (o.path(), o.meta().resource_version))
        .collect()
}

/// Waits until the cache holds exactly the server's cells.
async fn converges(client: &Client, cache: &Cache) {
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let (items, _) = client.list(Kind::Cell, &[]).await.unwrap();
        last = (summary(&items), summary(&cache.list()));
        if last.0 == last.1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "cache never matched the server:\nserver {:?}\ncache  {:?}",
        last.0, last.1
    );
}

fn spawn_watcher(
    base: &str,
    min: Duration,
    max: Duration,
) -> (Cache, mpsc::UnboundedReceiver<Event>) {
    let watcher = Watcher::new(
        Client::new(base),
        WatchScope {
            kinds: vec![Kind::Cell],
            ..WatchScope::default()
        },
    )
    .backoff(min, max);
    let cache = watcher.cache();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = Box::pin(watcher.run());
        while let Some(e) = events.next().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    (cache, rx)
}

async fn restarted(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<AnyObject> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(Event::Restarted(objs))) => return objs,
            Ok(Some(_)) => continue,
            other => panic!("no Restarted event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_survives_a_server_restart() {
    let mut s = Server::start();
    setup(&s).await;
    for n in ["a", "b", "c"] {
        cell(&s, n).await;
    }
    let client = Client::new(&s.base);
    let (cache, mut rx) = spawn_watcher(
        &s.base,
        Duration::from_millis(100),
        Duration::from_millis(500),
    );
    assert_eq!(restarted(&mut rx).await.len(), 3);
    tokio::task::block_in_place(|| s.restart());
    cell(&s, "d").await;
    client.delete(&cell_path("a"), false).await.unwrap();
    let mut b = client.get(&cell_path("b")).await.unwrap();
    if let AnyObject::Cell(c) = &mut b {
        c.status.state = CellState::Ready;
    }
    client.replace_status(&b).await.unwrap();
    converges(&client, &cache).await;
    let cached = cache.get(&cell_path("b")).unwrap();
    let AnyObject::Cell(c) = cached else { panic!() };
    assert_eq!(c.status.state, CellState::Ready);
    assert!(cache.get(&cell_path("a")).is_none());
    // It resumed: no second full re-sync was needed.
    while let Ok(e) = rx.try_recv() {
        assert!(!matches!(e, Event::Restarted(_)), "unexpected re-sync");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_resyncs_after_its_history_was_compacted() {
    let (mut args, _cluster) = tokio::task::block_in_place(own_cluster_for_compaction);
    args.extend(["--history-revisions", "2", "--compaction-interval", "100ms"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Server::start_args(&args);
    setup(&s).await;
    for n in ["a", "b"] {
        cell(&s, n).await;
    }
    let client = Client::new(&s.base);
    // A long backoff: the watcher stays away while history moves on.
    let (cache, mut rx) = spawn_watcher(&s.base, Duration::from_secs(3), Duration::from_secs(3));
    assert_eq!(restarted(&mut rx).await.len(), 2);
    tokio::task::block_in_place(|| s.restart());
    client.delete(&cell_path("a"), false).await.unwrap();
    for i in 0..10 {
        cell(&s, &format!("n{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = restarted(&mut rx).await;
    assert_eq!(second.len(), 11, "b and n0..n9");
    converges(&client, &cache).await;
    let compacted = if on_etcd() {
        "compacted etcd's history"
    } else {
        "compacted the event log"
    };
    assert!(s.log_text().contains(compacted), "{}", s.log_text());
}
