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
//! arrived ([`checks`]).
//!
//! The copy is loaded by a task of its own ([`loader`]) at start and again
//! after a gap in the feed, while the feed keeps running: the feed's
//! changes during a load are kept aside and applied after the loaded
//! state, from the load's revision on. Until the copy is loaded, and while
//! it lags the last write by more than a short patience, reads go to etcd.
//!
//! Invariant: while the copy is loaded at revision `R`, it holds exactly
//! the objects etcd held under the prefix at `R`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::GetOptions;
use tokio::sync::{Notify, mpsc, oneshot};

use super::error::EtcdError;
use super::inner::{FEED_PATIENCE, Inner, Kv};
use super::layout::prefix_end;
use crate::store::error::StoreError;

/// Keys read per etcd range while loading the copy (halved down to one
/// when a page is too large for one answer or its deadline).
const LOAD_PAGE: i64 = 1000;

/// A waiter for the next freshness check.
pub(super) type Check = oneshot::Sender<Result<i64, StoreError>>;

/// One etcd revision's changes to objects (`None`: the key was deleted).
pub(super) type Changes = Vec<(Vec<u8>, Option<Entry>)>;

/// The copy, if this replica keeps one (`--etcd-cache`).
pub(super) struct Cache {
    enabled: bool,
    state: RwLock<State>,
    /// Reads served from the copy, and reads that went to etcd.
    hits: AtomicU64,
    misses: AtomicU64,
    /// A last-write revision the copy did not reach within the patience:
    /// until it does, reads go to etcd without waiting.
    behind: AtomicI64,
    /// Wakes the loader (at start, and after a gap).
    pub(super) wanted: Notify,
}

/// Which revisions of the copy a read accepts.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    /// Whichever it shows (a first plan: its transaction's compares
    /// check what it read).
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
    /// While a load runs: the feed's changes since it began, in order.
    pending: Option<Vec<(i64, Changes)>>,
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
            behind: AtomicI64::new(0),
            wanted: Notify::new(),
        }
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

    /// Whether the copy is known to lag the last write (a read would wait
    /// for it in vain).
    pub(super) fn lagging(&self) -> bool {
        let behind = self.behind.load(Ordering::Relaxed);
        behind > 0 && self.revision().is_none_or(|r| r < behind)
    }

    /// Runs `f` on the copy if it is loaded and shows a revision `at`
    /// allows.
    pub(super) fn with<T>(&self, at: At, f: impl FnOnce(&State) -> T) -> Option<T> {
        let s = self.read();
        let fits = s.revision > 0
            && match at {
                At::Any => true,
                At::From(r) => s.revision >= r,
                At::Exactly(r) => s.revision == r,
            };
        fits.then(|| f(&s))
    }

    /// Counts one read request: served from the copy or not (nothing
    /// without a copy).
    pub(super) fn count(&self, served: bool) {
        if self.enabled {
            let counter = if served { &self.hits } else { &self.misses };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads served from the copy, reads that went to etcd, and the
    /// objects the copy holds.
    pub(super) fn stats(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.read().objects.len() as u64,
        )
    }

    /// Forgets the copy (the feed has a gap, or went back) and asks the
    /// loader for a new one; reads go to etcd meanwhile.
    pub(super) fn invalidate(&self) {
        {
            let mut s = self.write();
            s.objects = BTreeMap::new();
            s.revision = 0;
            s.pending = None;
        }
        if self.enabled {
            self.wanted.notify_one();
        }
    }

    /// The feed's changes of etcd revision `r`, after every change before
    /// it (an empty `changes`: nothing under the objects changed up to
    /// `r`).
    pub(super) fn apply(&self, r: i64, changes: Changes) {
        let mut s = self.write();
        if let Some(pending) = s.pending.as_mut() {
            pending.push((r, changes));
            return;
        }
        if s.revision == 0 {
            return;
        }
        // A load can overtake the feed (it reads etcd's current revision
        // itself): what the copy already covers is skipped.
        if r <= s.revision {
            return;
        }
        s.apply(r, changes);
    }

    /// A load begins: the feed's changes from now on are kept aside.
    fn begin_load(&self) {
        let mut s = self.write();
        s.objects = BTreeMap::new();
        s.revision = 0;
        s.pending = Some(Vec::new());
    }

    /// Whether a load is still wanted (the copy was not dropped since it
    /// began).
    fn loading(&self) -> bool {
        self.read().pending.is_some()
    }

    /// The copy is `objects` at `revision`, then the feed's changes kept
    /// aside after that revision; false if it was dropped during the load
    /// (the loader starts again).
    fn finish_load(&self, objects: BTreeMap<Vec<u8>, Entry>, revision: i64) -> bool {
        let mut s = self.write();
        let Some(pending) = s.pending.take() else {
            return false;
        };
        s.objects = objects;
        s.revision = revision;
        for (r, changes) in pending {
            if r > revision {
                s.apply(r, changes);
            }
        }
        true
    }

    /// A load failed: no copy.
    fn abandon_load(&self) {
        let mut s = self.write();
        s.pending = None;
        s.objects = BTreeMap::new();
        s.revision = 0;
    }
}

impl State {
    fn apply(&mut self, r: i64, changes: Changes) {
        for (key, entry) in changes {
            match entry {
                Some(e) => {
                    self.objects.insert(key, e);
                }
                None => {
                    self.objects.remove(&key);
                }
            }
        }
        self.revision = self.revision.max(r);
    }

    /// The revision this state shows.
    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    /// The object at etcd key `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<Kv> {
        self.objects.get(key).map(|e| e.kv(key))
    }

    fn between<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Entry)> + 'a {
        // An empty range (BTreeMap::range panics on a reversed one).
        let end = if start < end { end } else { start };
        self.objects.range::<[u8], _>((
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end),
        ))
    }

    /// At most `limit` objects from `start` (inclusive) to `end`
    /// (exclusive), and whether more remain.
    pub(super) fn range(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<Kv>, bool) {
        let mut range = self.between(start, end);
        let items = range.by_ref().take(limit).map(|(k, e)| e.kv(k)).collect();
        (items, range.next().is_some())
    }

    /// How many objects lie from `start` to `end`, counting to `cap` at
    /// most.
    pub(super) fn count(&self, start: &[u8], end: &[u8], cap: usize) -> usize {
        self.between(start, end).take(cap).count()
    }
}

impl Inner {
    /// Waits until the copy shows every write acknowledged before this call
    /// (a linearizable check shared with concurrent callers); answers the
    /// revision it shows then. `None`: read etcd instead (no copy, loading,
    /// or the feed lags past its patience).
    pub(super) async fn fresh(&self) -> Result<Option<i64>, StoreError> {
        // A copy known to lag a past write lags every later one too.
        if self.cache.revision().is_none() || !self.health().feed_ok || self.cache.lagging() {
            return Ok(None);
        }
        let written = self.last_written().await?;
        let reached = || self.cache.revision().filter(|r| *r >= written);
        if let Some(r) = reached() {
            return Ok(Some(r));
        }
        let mut rx = self.published.subscribe();
        let waited =
            tokio::time::timeout(FEED_PATIENCE, rx.wait_for(|_| reached().is_some())).await;
        if waited.is_err() {
            tracing::warn!(
                revision = written,
                copy = self.cache.revision(),
                "this replica's copy of the objects lags the last write: reading etcd until it \
                 catches up"
            );
            self.cache.behind.fetch_max(written, Ordering::Relaxed);
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

    /// Loads the copy at etcd's current revision, the feed's changes
    /// meanwhile applied after it; answers how many objects it holds, or
    /// `None` if the copy was dropped meanwhile (load again).
    async fn load_cache(&self) -> Result<Option<usize>, StoreError> {
        let started = std::time::Instant::now();
        self.cache.begin_load();
        // Read after the load began: every change after it reaches the
        // copy through the changes kept aside.
        let at = self.current().await?;
        let end = prefix_end(&self.layout.objects());
        let mut from = self.layout.objects();
        let mut objects = BTreeMap::new();
        let mut page = LOAD_PAGE;
        let mut reported = 0;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page)
                .with_revision(at);
            let resp = match self.get(from.clone(), options).await {
                Ok(resp) => resp,
                // Too large for one answer, or for its deadline: smaller
                // pages.
                Err(e)
                    if page > 1
                        && (e.too_large().is_some()
                            || e.message().contains("no answer within")) =>
                {
                    tracing::debug!(error = %e.message(), page, "a page of the copy failed: halving it");
                    page /= 2;
                    continue;
                }
                Err(e) => return Err(e.read()),
            };
            page = (page * 2).min(LOAD_PAGE);
            if !self.cache.loading() {
                return Ok(None);
            }
            for kv in resp.kvs() {
                if self.layout.parse(kv.key()).is_some() {
                    objects.insert(kv.key().to_vec(), Entry::of(kv));
                }
            }
            let Some(last) = resp.kvs().last() else { break };
            if !resp.more() {
                break;
            }
            from = last.key().to_vec();
            from.push(0);
            if objects.len() >= reported + 100_000 {
                reported = objects.len();
                tracing::info!(
                    objects = reported,
                    "loading this replica's copy of the objects"
                );
            }
        }
        let n = objects.len();
        if !self.cache.finish_load(objects, at) {
            return Ok(None);
        }
        tracing::info!(objects = n, revision = at, elapsed = ?started.elapsed(), "loaded this replica's copy of the objects");
        Ok(Some(n))
    }
}

/// Loads the copy whenever it is wanted (at start, after a gap), retrying
/// with a growing pause while etcd cannot answer.
pub(super) async fn loader(store: Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(inner) = store.upgrade() else { return };
        if inner.check_open().is_err() {
            return;
        }
        if inner.cache.revision().is_some() {
            // Woken when wanted; a second at most, so that a dropped store
            // is not kept alive by this task.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), inner.cache.wanted.notified()).await;
            continue;
        }
        match inner.load_cache().await {
            Ok(Some(_)) => {
                pause = Duration::from_millis(100);
                // Readers waiting for the copy look again.
                inner.published.send_modify(|_| {});
            }
            Ok(None) => {
                // Dropped while loading (another gap): again, after a pause.
                drop(inner);
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                inner.cache.abandon_load();
                tracing::warn!(error = %e, "cannot load this replica's copy of the objects; reads go to etcd meanwhile");
                drop(inner);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
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

    fn value(c: &Cache, key: &[u8]) -> Option<String> {
        c.with(At::Any, |s| s.get(key))?
            .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
    }

    #[test]
    fn follows_changes_only_once_loaded() {
        let c = Cache::new(true);
        c.apply(5, vec![(b"a".to_vec(), entry("x", 5, 5))]);
        assert_eq!(c.revision(), None);
        assert!(c.with(At::Any, |_| ()).is_none());
        c.begin_load();
        c.finish_load(BTreeMap::new(), 7);
        c.apply(8, vec![(b"b".to_vec(), entry("1", 8, 8))]);
        c.apply(
            9,
            vec![
                (b"b".to_vec(), entry("2", 9, 8)),
                (b"c".to_vec(), entry("3", 9, 9)),
            ],
        );
        c.apply(12, Vec::new());
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
        assert_eq!(value(&c, b"b"), None);
        assert_eq!(value(&c, b"c").as_deref(), Some("3"));
    }

    #[test]
    fn a_load_takes_the_changes_made_while_it_ran_after_its_revision() {
        let c = Cache::new(true);
        c.begin_load();
        // The feed goes on while the load reads etcd at revision 10:
        // changes up to 10 are in what it read, later ones are not.
        c.apply(9, vec![(b"a".to_vec(), entry("old", 9, 9))]);
        c.apply(11, vec![(b"a".to_vec(), None)]);
        c.apply(12, vec![(b"b".to_vec(), entry("new", 12, 12))]);
        assert_eq!(c.revision(), None, "not served while loading");
        let mut loaded = BTreeMap::new();
        loaded.insert(b"a".to_vec(), entry("at10", 10, 9).unwrap());
        c.finish_load(loaded, 10);
        assert_eq!(c.revision(), Some(12));
        assert_eq!(value(&c, b"a"), None, "deleted at 11");
        assert_eq!(value(&c, b"b").as_deref(), Some("new"));
        // Invalidated during a load: that load is dropped.
        c.begin_load();
        c.invalidate();
        assert!(!c.loading());
        assert!(!c.finish_load(BTreeMap::new(), 20));
        assert_eq!(c.revision(), None);
    }

    #[test]
    fn a_feed_behind_the_load_skips_what_it_covers() {
        let c = Cache::new(true);
        c.begin_load();
        let mut loaded = BTreeMap::new();
        loaded.insert(b"a".to_vec(), entry("at10", 10, 10).unwrap());
        assert!(c.finish_load(loaded, 10));
        // The feed had not reached the load's revision yet.
        c.apply(9, vec![(b"a".to_vec(), None)]);
        c.apply(10, vec![(b"a".to_vec(), entry("at10", 10, 10))]);
        c.apply(10, Vec::new());
        assert_eq!(c.revision(), Some(10));
        assert_eq!(value(&c, b"a").as_deref(), Some("at10"));
        c.apply(11, vec![(b"a".to_vec(), None)]);
        assert_eq!((c.revision(), value(&c, b"a")), (Some(11), None));
    }

    #[test]
    fn lags_are_remembered_until_the_copy_passes_them() {
        let c = Cache::new(true);
        c.begin_load();
        c.finish_load(BTreeMap::new(), 7);
        assert!(!c.lagging());
        c.behind.store(9, Ordering::Relaxed);
        assert!(c.lagging());
        c.apply(9, Vec::new());
        assert!(!c.lagging());
    }

    #[test]
    fn counts_reads_only_with_a_copy() {
        let (on, off) = (Cache::new(true), Cache::new(false));
        for c in [&on, &off] {
            c.count(true);
            c.count(false);
            c.count(false);
        }
        assert_eq!(on.stats(), (1, 2, 0));
        assert_eq!(off.stats(), (0, 0, 0));
    }

    #[test]
    fn ranges_page_and_count() {
        let c = Cache::new(true);
        let mut objects = BTreeMap::new();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            objects.insert(k.as_bytes().to_vec(), entry(k, 2, 2).unwrap());
        }
        c.begin_load();
        c.finish_load(objects, 2);
        c.with(At::Any, |s| {
            let (page, more) = s.range(b"a/", b"a0", 2);
            let keys: Vec<_> = page.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
            assert!(more);
            let (page, more) = s.range(b"a/3", b"a0", 2);
            assert_eq!(page.len(), 1);
            assert!(!more);
            assert_eq!(s.count(b"a/", b"a0", 100), 3);
            assert_eq!(s.count(b"a/", b"a0", 2), 2);
            assert_eq!(s.count(b"c/", b"c0", 100), 0);
            assert_eq!(
                s.range(b"b", b"a", 10).0.len(),
                0,
                "a reversed range is empty"
            );
        })
        .unwrap();
    }
}
