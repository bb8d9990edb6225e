//! A watcher in the style of kube-rs: it keeps a local cache of the objects
//! in scope and a stream of changes, and survives disconnects, server
//! restarts and compacted history.
//!
//! State machine: *sync* (watch without revision: ADDED per object, then a
//! BOOKMARK; the cache is swapped whole and `Restarted` emitted) ->
//! *follow* (apply each event, remember the last revision) -> on a dropped
//! stream, *resume* from the last revision after a backoff -> on 410
//! (history compacted, or another database), *sync* again.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{Client, WatchEvent, WatchScope};
use crate::model::{AnyObject, Path};

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A full re-sync: these are all the objects in scope now.
    Restarted(Vec<AnyObject>),
    /// Created or changed.
    Applied(AnyObject),
    /// Removed.
    Deleted(AnyObject),
}

/// The local cache of the objects in scope, kept current by the watcher.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    objects: Arc<RwLock<BTreeMap<Path, AnyObject>>>,
    revision: Arc<RwLock<u64>>,
}

impl Cache {
    /// The object at `path`, if present.
    pub fn get(&self, path: &Path) -> Option<AnyObject> {
        self.objects.read().expect("cache").get(path).cloned()
    }

    /// Every cached object, in path order.
    pub fn list(&self) -> Vec<AnyObject> {
        self.objects
            .read()
            .expect("cache")
            .values()
            .cloned()
            .collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.objects.read().expect("cache").len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last revision the cache reflects.
    pub fn revision(&self) -> u64 {
        *self.revision.read().expect("cache")
    }

    fn reset(&self, objects: &[AnyObject], revision: u64) {
        let map = objects.iter().map(|o| (o.path(), o.clone())).collect();
        *self.objects.write().expect("cache") = map;
        *self.revision.write().expect("cache") = revision;
    }

    fn apply(&self, event: &Event) {
        let mut map = self.objects.write().expect("cache");
        let rv = match event {
            Event::Applied(o) => {
                map.insert(o.path(), o.clone());
                o.meta().resource_version
            }
            Event::Deleted(o) => {
                map.remove(&o.path());
                o.meta().resource_version
            }
            Event::Restarted(_) => return,
        };
        *self.revision.write().expect("cache") = rv;
    }

    fn advance(&self, revision: u64) {
        *self.revision.write().expect("cache") = revision;
    }
}

/// Watches a scope and keeps a [`Cache`] of it.
pub struct Watcher {
    client: Client,
    scope: WatchScope,
    cache: Cache,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Watcher {
    /// A watcher of `scope` through `client`.
    pub fn new(client: Client, scope: WatchScope) -> Watcher {
        Watcher {
            client,
            scope,
            cache: Cache::default(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Sets the reconnect backoff bounds (doubling from `min` to `max`).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Watcher {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// The cache this watcher keeps current.
    pub fn cache(&self) -> Cache {
        self.cache.clone()
    }

    /// Starts watching; the stream ends only when dropped.
    pub fn run(self) -> impl Stream<Item = Event> + Send + 'static {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.drive(tx));
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn drive(self, tx: mpsc::Sender<Event>) {
        let mut resume: Option<u64> = None;
        let mut backoff = self.min_backoff;
        loop {
            if tx.is_closed() {
                return;
            }
            let stream = match self.client.watch(&self.scope, resume).await {
                Ok(s) => s,
                Err(e) if e.status() == Some(410) => {
                    tracing::info!(error = %e, "watch history gone: re-syncing");
                    resume = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "watch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    continue;
                }
            };
            let mut stream = Box::pin(stream);
            let mut initial: Option<Vec<AnyObject>> = resume.is_none().then(Vec::new);
            while let Some(item) = stream.next().await {
                let event = match item {
                    Ok(WatchEvent::Added(o)) if initial.is_some() => {
                        initial.as_mut().expect("syncing").push(o);
                        continue;
                    }
                    Ok(WatchEvent::Bookmark(bookmark)) => {
                        let rv = bookmark.metadata.resource_version;
                        resume = Some(rv);
                        backoff = self.min_backoff;
                        match initial.take() {
                            Some(objects) => {
                                self.cache.reset(&objects, rv);
                                Event::Restarted(objects)
                            }
                            None => {
                                self.cache.advance(rv);
                                continue;
                            }
                        }
                    }
                    Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => Event::Applied(o),
                    Ok(WatchEvent::Deleted(o)) => Event::Deleted(o),
                    Ok(WatchEvent::Error(problem)) if problem.status == 410 => {
                        tracing::info!(detail = %problem.detail, "watch history gone: re-syncing");
                        resume = None;
                        break;
                    }
                    Ok(WatchEvent::Error(problem)) => {
                        tracing::warn!(
                            status = problem.status,
                            detail = %problem.detail,
                            "watch ended with an error"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "watch stream dropped");
                        break;
                    }
                };
                if let Event::Applied(o) | Event::Deleted(o) = &event {
                    resume = Some(o.meta().resource_version);
                    backoff = self.min_backoff;
                }
                self.cache.apply(&event);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if resume.is_some() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.max_backoff);
            }
        }
    }
}
