//! The replica's copy of the prefix's objects: what it holds and how the
//! feed and a load change it (how reads use it: `fresh`).
//!
//! Invariant: while the copy is loaded at revision `R`, it holds exactly
//! the objects etcd held under the prefix at `R`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use crate::store::error::StoreError;

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
    pub(super) behind: AtomicI64,
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
#[derive(Debug, Clone)]
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
    pub(super) fn begin_load(&self) {
        let mut s = self.write();
        s.objects = BTreeMap::new();
        s.revision = 0;
        s.pending = Some(Vec::new());
    }

    /// Whether a load is still wanted (the copy was not dropped since it
    /// began).
    pub(super) fn loading(&self) -> bool {
        self.read().pending.is_some()
    }

    /// The copy is `objects` at `revision`, then the feed's changes kept
    /// aside after that revision; false if it was dropped during the load
    /// (the loader starts again).
    pub(super) fn finish_load(&self, objects: BTreeMap<Vec<u8>, Entry>, revision: i64) -> bool {
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
    pub(super) fn abandon_load(&self) {
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
}

/// One stored key as this module uses it.
pub(super) struct Kv {
    pub(super) key: Vec<u8>,
    pub(super) value: Bytes,
    pub(super) mod_revision: i64,
    pub(super) create_revision: i64,
}

impl Kv {
    pub(super) fn from(kv: &etcd_client::KeyValue) -> Kv {
        Kv {
            key: kv.key().to_vec(),
            value: Bytes::copy_from_slice(kv.value()),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
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

    /// Random histories (puts and deletes over a few keys, and revisions
    /// that change no object), a load at a random revision while the feed
    /// is at another, the feed's revisions split at random around the
    /// load's end: the copy always shows exactly the state at its
    /// revision, and ends at the last one.
    mod property {
        use super::*;
        use proptest::prelude::*;

        type History = Vec<Changes>;

        fn history() -> impl Strategy<Value = History> {
            let change = (0u8..4, proptest::option::of(0u8..3));
            proptest::collection::vec(proptest::collection::vec(change, 0..3), 1..12).prop_map(
                |revs| {
                    revs.into_iter()
                        .enumerate()
                        .map(|(i, changes)| {
                            let r = i as i64 + 1;
                            changes
                                .into_iter()
                                .map(|(k, v)| {
                                    (
                                        vec![b'k', k],
                                        v.map(|v| entry(&format!("{r}:{v}"), r, r).unwrap()),
                                    )
                                })
                                .collect()
                        })
                        .collect()
                },
            )
        }

        /// The objects after revision `r` (1-based; 0: none).
        fn state(h: &History, r: usize) -> BTreeMap<Vec<u8>, String> {
            let mut m = BTreeMap::new();
            for changes in &h[..r] {
                for (k, e) in changes {
                    match e {
                        Some(e) => {
                            m.insert(k.clone(), String::from_utf8(e.value.to_vec()).unwrap())
                        }
                        None => m.remove(k),
                    };
                }
            }
            m
        }

        fn copy(c: &Cache) -> Option<(i64, BTreeMap<Vec<u8>, String>)> {
            c.with(At::Any, |s| {
                let m = s
                    .objects
                    .iter()
                    .map(|(k, e)| (k.clone(), String::from_utf8(e.value.to_vec()).unwrap()))
                    .collect();
                (s.revision(), m)
            })
        }

        proptest! {
            #[test]
            fn a_load_and_the_feed_agree(h in history(), p in 0usize..12, l in 0usize..12, q in 0usize..12) {
                let n = h.len();
                // The feed had delivered `p` when the load began; the load
                // read revision `load` (at least `p`); the feed delivered up
                // to `q` before the load finished.
                let p = p.min(n);
                let load = l.clamp(p, n).max(1);
                let q = q.clamp(p, n);
                let c = Cache::new(true);
                for (i, changes) in h[..p].iter().enumerate() {
                    c.apply(i as i64 + 1, changes.clone());
                }
                c.begin_load();
                for (i, changes) in h[p..q].iter().enumerate() {
                    c.apply((p + i) as i64 + 1, changes.clone());
                }
                let loaded: BTreeMap<Vec<u8>, Entry> = state(&h, load)
                    .into_iter()
                    .map(|(k, v)| (k, entry(&v, 1, 1).unwrap()))
                    .collect();
                prop_assert!(c.finish_load(loaded, load as i64));
                let check = |c: &Cache| -> Result<(), TestCaseError> {
                    let (r, m) = copy(c).expect("loaded");
                    prop_assert_eq!(m, state(&h, r as usize), "the copy at revision {}", r);
                    Ok(())
                };
                check(&c)?;
                for (i, changes) in h[q..].iter().enumerate() {
                    c.apply((q + i) as i64 + 1, changes.clone());
                    check(&c)?;
                }
                prop_assert_eq!(copy(&c).unwrap().0, n.max(load) as i64);
            }
        }
    }

    #[test]
    fn ranges_page() {
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
            assert_eq!(s.range(b"a/", b"a0", 100).0.len(), 3);
            assert!(s.range(b"c/", b"c0", 100).0.is_empty());
            assert_eq!(
                s.range(b"b", b"a", 10).0.len(),
                0,
                "a reversed range is empty"
            );
        })
        .unwrap();
    }
}
