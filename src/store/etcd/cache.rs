//! The replica's copy of the prefix's objects, kept current by the feed,
//! from which reads and write plans are served (kube-apiserver's consistent
//! reads from cache).
//!
//! Every write transaction also puts `P/m/written`, so that key's
//! `mod_revision`, read linearizably, is at or after every object change
//! acknowledged before that read. A read that waits until the copy has
//! reached that revision sees every write acknowledged before it began: it
//! is linearizable without reading objects from etcd, and without etcd's
//! progress notifications (which etcd before 3.4.25 and 3.5.8 may send ahead
//! of events). Concurrent readers share one such check: requests arriving
//! while one is in flight wait for the next, which is sent after they
//! arrived ([`checks`]). The copy is loaded at start and again after a gap
//! in the feed (etcd compacted what it had not read); until then, and
//! whenever the feed lags past a short patience, reads go to etcd.
//!
//! Invariant: while the copy is loaded at revision `R`, it holds exactly
//! the objects etcd held under the prefix at `R`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, Weak};

use bytes::Bytes;
use etcd_client::GetOptions;
use tokio::sync::{mpsc, oneshot};

use super::error::EtcdError;
use super::inner::{Inner, Kv};
use super::layout::prefix_end;
use crate::store::error::StoreError;

/// Keys read per etcd range while loading the copy.
const LOAD_PAGE: i64 = 2000;

/// A waiter for the next freshness check.
pub(super) type Check = oneshot::Sender<Result<i64, StoreError>>;

/// The copy, if this replica keeps one (`--etcd-cache`).
pub(super) struct Cache {
    enabled: bool,
    state: RwLock<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Which revisions of the copy a read accepts.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    /// Whichever it shows (a plan its transaction's compares check).
    Any,
    /// This one or a later one (a linearizable read).
    From(i64),
    /// Exactly this one (a snapshot's, a list's next page).
    Exactly(i64),
}

/// What the copy holds.
#[derive(Default)]
pub(super) struct State {
    /// Object keys (etcd keys, the prefix included) and their values.
    objects: BTreeMap<Vec<u8>, Entry>,
    /// The etcd revision the copy shows; 0 while it is not loaded.
    revision: i64,
}

/// One object as etcd stores it.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) value: Bytes,
    pub(super) mod_revision: i64,
    pub(super) create_revision: i64,
}

impl Entry {
    /// The entry of an etcd key-value.
    pub(super) fn of(kv: &etcd_client::KeyValue) -> Entry {
        Entry {
            value: Bytes::copy_from_slice(kv.value()),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        }
    }

    fn kv(&self, key: &[u8]) -> Kv {
        Kv {
            key: key.to_vec(),
            value: self.value.clone(),
            mod_revision: self.mod_revision,
            create_revision: self.create_revision,
        }
    }
}

impl Cache {
    pub(super) fn new(enabled: bool) -> Cache {
        Cache {
            enabled,
            state: RwLock::new(State::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether this replica keeps a copy at all.
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The revision the copy shows, if it is loaded.
    pub(super) fn revision(&self) -> Option<i64> {
        let r = self.read().revision;
        (r > 0).then_some(r)
    }

    /// Runs `f` on the copy if it is loaded and shows a revision `at`
    /// allows; counts the read as served from the copy or not.
    pub(super) fn with<T>(&self, at: At, f: impl FnOnce(&State) -> T) -> Option<T> {
        let s = self.read();
        let fits = s.revision > 0
            && match at {
                At::Any => true,
                At::From(r) => s.revision >= r,
                At::Exactly(r) => s.revision == r,
            };
        let counter = if fits { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        fits.then(|| f(&s))
    }

    /// Reads served from the copy, reads that found it unfit, and the
    /// objects it holds.
    pub(super) fn stats(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.read().objects.len() as u64,
        )
    }

    /// Counts a read that went to etcd without looking at the copy (it was
    /// not fresh).
    pub(super) fn missed(&self) {
        if self.enabled {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The copy is now exactly `objects` at `revision`.
    pub(super) fn replace(&self, objects: BTreeMap<Vec<u8>, Entry>, revision: i64) {
        let mut s = self.write();
        s.objects = objects;
        s.revision = revision;
    }

    /// Forgets the copy (the feed has a gap): reads go to etcd until it is
    /// loaded again.
    pub(super) fn invalidate(&self) {
        let mut s = self.write();
        s.objects = BTreeMap::new();
        s.revision = 0;
    }

    /// The changes of etcd revision `r` (`None`: the key was deleted),
    /// after every change before it.
    pub(super) fn apply(&self, r: i64, changes: Vec<(Vec<u8>, Option<Entry>)>) {
        let mut s = self.write();
        if s.revision == 0 {
            return;
        }
        for (key, entry) in changes {
            match entry {
                Some(e) => {
                    s.objects.insert(key, e);
                }
                None => {
                    s.objects.remove(&key);
                }
            }
        }
        s.revision = s.revision.max(r);
    }

    /// Nothing under the prefix's objects changed up to revision `r`.
    pub(super) fn advance(&self, r: i64) {
        let mut s = self.write();
        if s.revision != 0 {
            s.revision = s.revision.max(r);
        }
    }
}

impl State {
    /// The revision this state shows.
    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    /// The object at etcd key `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<Kv> {
        self.objects.get(key).map(|e| e.kv(key))
    }

    /// At most `limit` objects from `start` (inclusive) to `end`
    /// (exclusive), and whether more remain.
    pub(super) fn range(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<Kv>, bool) {
        let mut items = Vec::new();
        let mut range = self.objects.range::<[u8], _>((
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end),
        ));
        for (k, e) in range.by_ref().take(limit) {
            items.push(e.kv(k));
        }
        (items, range.next().is_some())
    }

    /// How many objects lie from `start` to `end`.
    pub(super) fn count(&self, start: &[u8], end: &[u8]) -> usize {
        self.objects
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .count()
    }
}

impl Inner {
    /// Waits until the copy shows every write acknowledged before this call
    /// (a linearizable check shared with concurrent callers); answers the
    /// revision it shows then. `None`: read etcd instead (no copy, loading,
    /// or the feed lags past its patience).
    pub(super) async fn fresh(&self) -> Result<Option<i64>, StoreError> {
        if self.cache.revision().is_none() || !self.health().feed_ok {
            self.cache.missed();
            return Ok(None);
        }
        let written = self.last_written().await?;
        let mut rx = self.published.subscribe();
        let reached = || self.cache.revision().filter(|r| *r >= written);
        if let Some(r) = reached() {
            return Ok(Some(r));
        }
        let waited = tokio::time::timeout(
            super::inner::FEED_PATIENCE,
            rx.wait_for(|_| reached().is_some()),
        )
        .await;
        if waited.is_err() {
            tracing::debug!(
                revision = written,
                "the cache lags the last write: reading etcd"
            );
        }
        Ok(reached())
    }

    /// The revision of the last write under the prefix, read linearizably
    /// by the next check sent after this call.
    async fn last_written(&self) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.checks.send(tx).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Loads the copy at etcd revision `at`; answers how many objects it
    /// holds.
    pub(super) async fn load_cache(&self, at: i64) -> Result<usize, EtcdError> {
        let started = std::time::Instant::now();
        let end = prefix_end(&self.layout.objects());
        let mut from = self.layout.objects();
        let mut objects = BTreeMap::new();
        loop {
            let resp = self
                .get(
                    from.clone(),
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(LOAD_PAGE)
                        .with_revision(at),
                )
                .await?;
            for kv in resp.kvs() {
                objects.insert(kv.key().to_vec(), Entry::of(kv));
            }
            let Some(last) = resp.kvs().last() else { break };
            if !resp.more() {
                break;
            }
            from = last.key().to_vec();
            from.push(0);
            if objects.len() % 100_000 < LOAD_PAGE as usize {
                tracing::info!(objects = objects.len(), "loading the etcd cache");
            }
        }
        let n = objects.len();
        self.cache.replace(objects, at);
        tracing::info!(objects = n, revision = at, elapsed = ?started.elapsed(), "etcd cache loaded");
        Ok(n)
    }
}

/// Answers freshness checks: each batch of waiters (every request that
/// arrived before the batch was taken) shares one linearizable read of
/// `P/m/written`.
pub(super) async fn checks(store: Weak<Inner>, mut waiting: mpsc::UnboundedReceiver<Check>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = waiting.try_recv() {
            batch.push(w);
        }
        let Some(inner) = store.upgrade() else { return };
        let answer = inner
            .get(
                inner.layout.meta("written"),
                GetOptions::new().with_keys_only(),
            )
            .await
            .map(|resp| resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
            .map_err(EtcdError::read);
        drop(inner);
        for w in batch {
            let _ = w.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, m: i64, c: i64) -> Option<Entry> {
        Some(Entry {
            value: Bytes::from(v.to_string()),
            mod_revision: m,
            create_revision: c,
        })
    }

    #[test]
    fn follows_changes_only_once_loaded() {
        let c = Cache::new(true);
        c.apply(5, vec![(b"a".to_vec(), entry("x", 5, 5))]);
        assert_eq!(c.revision(), None);
        assert!(c.with(At::Any, |_| ()).is_none());
        c.replace(BTreeMap::new(), 7);
        c.apply(8, vec![(b"b".to_vec(), entry("1", 8, 8))]);
        c.apply(
            9,
            vec![
                (b"b".to_vec(), entry("2", 9, 8)),
                (b"c".to_vec(), entry("3", 9, 9)),
            ],
        );
        c.advance(12);
        assert_eq!(c.revision(), Some(12));
        assert!(c.with(At::Exactly(9), |_| ()).is_none());
        assert!(c.with(At::From(13), |_| ()).is_none());
        assert!(c.with(At::From(10), |_| ()).is_some());
        let b = c.with(At::Exactly(12), |s| s.get(b"b")).unwrap().unwrap();
        assert_eq!(
            (&b.value[..], b.mod_revision, b.create_revision),
            (&b"2"[..], 9, 8)
        );
        c.apply(13, vec![(b"b".to_vec(), None)]);
        assert!(c.with(At::Any, |s| s.get(b"b")).unwrap().is_none());
        assert_eq!(c.stats().0, 4);
        c.invalidate();
        assert_eq!(c.revision(), None);
    }

    #[test]
    fn ranges_page_and_count() {
        let c = Cache::new(true);
        let mut objects = BTreeMap::new();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            objects.insert(k.as_bytes().to_vec(), entry(k, 2, 2).unwrap());
        }
        c.replace(objects, 2);
        c.with(At::Any, |s| {
            let (page, more) = s.range(b"a/", b"a0", 2);
            let keys: Vec<_> = page.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
            assert!(more);
            let (page, more) = s.range(b"a/3", b"a0", 2);
            assert_eq!(page.len(), 1);
            assert!(!more);
            assert_eq!(s.count(b"a/", b"a0"), 3);
            assert_eq!(s.count(b"c/", b"c0"), 0);
        })
        .unwrap();
    }
}
