//! Rendered JSON, cached so that reads of unchanged data copy bytes
//! instead of decoding and re-encoding them.
//!
//! - [`DocCache`]: documents by object and revision. An entry is valid
//!   exactly for the `resourceVersion` it was rendered at; a newer write
//!   simply makes it miss. When its byte budget is full, it starts over.
//! - [`ListCache`]: whole unpaged lists by query (kind, scope, label
//!   selector), so that a relist storm of an unchanged scope (controllers
//!   restarting, watchers reconnecting) reads nothing from the store. It
//!   subscribes to the store's change feed ([`ListCache::observe`]) and
//!   records, per scope, the revision of the last write to it; an entry
//!   rendered at revision `C` is served while no write to its scope is
//!   newer than `C`, at the newest revision the feed has published (no
//!   write to the scope lies between the two, so the list is exact at that
//!   revision and a watch from it misses nothing). The feed publishes
//!   before any write is acknowledged, so a client always sees its own
//!   writes. Least recently used entries go when the byte budget is full.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;

use crate::model::{AnyObject, Kind};
use crate::store::Change;

/// The cache; one per server.
pub struct DocCache {
    budget: usize,
    inner: Mutex<Inner>,
}

/// One map per kind, so a lookup borrows the key instead of building one.
#[derive(Default)]
struct Inner {
    maps: [HashMap<Vec<u8>, (u64, Bytes)>; 5],
    bytes: usize,
}

impl DocCache {
    /// A cache holding at most `budget` bytes of documents.
    pub fn new(budget: usize) -> DocCache {
        DocCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The JSON of the object at `key`, if cached at `revision`.
    pub fn get(&self, kind: Kind, key: &[u8], revision: u64) -> Option<Bytes> {
        let inner = self.inner.lock().expect("doc cache");
        match inner.maps[kind as usize].get(key) {
            Some((rev, json)) if *rev == revision => Some(json.clone()),
            _ => None,
        }
    }

    /// Remembers the JSON of the object at `key` at `revision`.
    pub fn insert(&self, kind: Kind, key: Vec<u8>, revision: u64, json: Bytes) {
        if json.len() > self.budget / 16 {
            return;
        }
        let mut inner = self.inner.lock().expect("doc cache");
        if inner.bytes + json.len() > self.budget {
            inner.maps.iter_mut().for_each(HashMap::clear);
            inner.bytes = 0;
        }
        let key_len = key.len();
        inner.bytes += json.len() + key_len;
        if let Some((_, old)) = inner.maps[kind as usize].insert(key, (revision, json)) {
            // Replaced: the old entry's document and (equal) key go.
            inner.bytes -= old.len() + key_len;
        }
    }
}

/// Scopes are tracked in this many hashed slots: two scopes sharing a
/// slot only cost each other cache hits, never correctness.
const SLOTS: usize = 1 << 16;

/// Most lists cached at once (evicting scans them all).
const MAX_LISTS: usize = 4096;

/// What a cached list answers: the kind listed, the scope names (`None`:
/// any) and the label and field selectors as the client wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKey {
    kind: Kind,
    scope: Vec<Option<String>>,
    selector: Option<String>,
    fields: Option<String>,
}

impl ListKey {
    /// The key of a list query.
    pub fn new(
        kind: Kind,
        scope: &[Option<String>],
        selector: Option<&str>,
        fields: Option<&str>,
    ) -> ListKey {
        ListKey {
            kind,
            scope: scope.to_vec(),
            selector: selector.filter(|s| !s.is_empty()).map(str::to_owned),
            fields: fields.filter(|s| !s.is_empty()).map(str::to_owned),
        }
    }

    /// The slot of the exact parent scope, if the list names all of it
    /// (otherwise any write of the kind concerns it).
    fn slot(&self) -> Option<usize> {
        if self.scope.len() != self.kind.depth() - 1 {
            return None;
        }
        let names: Option<Vec<&str>> = self.scope.iter().map(Option::as_deref).collect();
        Some(scope_slot(self.kind, &names?))
    }
}

/// The slot of the objects of `kind` whose parents are `names`.
fn scope_slot<S: AsRef<str>>(kind: Kind, names: &[S]) -> usize {
    let mut h = DefaultHasher::new();
    (kind as u8).hash(&mut h);
    for name in names {
        h.write(name.as_ref().as_bytes());
        // Not in any UTF-8 text: names cannot run into each other.
        h.write_u8(0xff);
    }
    h.finish() as usize % SLOTS
}

/// The slot of an object's parent scope.
fn parent_slot(obj: &AnyObject) -> usize {
    let path = obj.path();
    let names = path.names();
    scope_slot(obj.kind(), &names[..names.len() - 1])
}

/// A cached list: its items' JSON (comma-separated, in chunks) as of
/// `revision`.
struct ListEntry {
    revision: u64,
    items: Arc<[Bytes]>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct ListInner {
    entries: HashMap<ListKey, ListEntry>,
    bytes: usize,
    clock: u64,
}

/// The list cache; one per server (see the module documentation).
pub struct ListCache {
    budget: usize,
    /// Per hashed parent scope: the revision of its last write.
    slots: Box<[AtomicU64]>,
    /// Per kind: the revision of its last write anywhere.
    kinds: [AtomicU64; 5],
    /// The newest revision whose writes are all recorded above.
    published: AtomicU64,
    hits: AtomicU64,
    inner: Mutex<ListInner>,
}

impl ListCache {
    /// A cache holding at most `budget` bytes of lists (one list at most
    /// half of it), and at most 4,096 lists.
    pub fn new(budget: usize) -> ListCache {
        ListCache {
            budget,
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            kinds: Default::default(),
            published: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            inner: Mutex::new(ListInner::default()),
        }
    }

    /// Records committed changes (a change-feed subscriber: called in
    /// revision order, before the writes are acknowledged).
    pub fn observe(&self, changes: &[Change]) {
        for c in changes {
            self.slots[parent_slot(&c.object)].store(c.revision, Ordering::Release);
            self.kinds[c.object.kind() as usize].store(c.revision, Ordering::Release);
        }
        if let Some(last) = changes.last() {
            self.published.store(last.revision, Ordering::Release);
        }
    }

    /// The most bytes one list may take to be cached.
    pub fn max_entry(&self) -> usize {
        self.budget / 2
    }

    /// The cached items of `key` and the revision to serve them at, if no
    /// write to the list's scope came after they were rendered.
    /// `committing` is the store's newest revision committed or being
    /// committed: while it is ahead of what the feed has published, a read
    /// elsewhere may already show a write not yet recorded here, and a
    /// cached answer could then go back in time; so that misses.
    pub fn get(&self, key: &ListKey, committing: u64) -> Option<(u64, Arc<[Bytes]>)> {
        // Published first: every write up to it is in the slots read next.
        let published = self.published.load(Ordering::Acquire);
        if committing > published {
            return None;
        }
        let last_write = self.last_write(key);
        let mut inner = self.inner.lock().expect("list cache");
        let ListInner {
            entries,
            bytes,
            clock,
        } = &mut *inner;
        let entry = entries.get_mut(key)?;
        if last_write > entry.revision {
            *bytes -= entry.bytes;
            entries.remove(key);
            return None;
        }
        *clock += 1;
        entry.used = *clock;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((entry.revision.max(published), entry.items.clone()))
    }

    /// Remembers the items of `key` as rendered from a snapshot at
    /// `revision`. A write to the scope after `revision` makes it miss.
    /// `bytes` is the memory the items hold (their buffers' capacity, at
    /// least their length).
    pub fn insert(&self, key: ListKey, revision: u64, items: Vec<Bytes>, bytes: usize) {
        let bytes = bytes.max(items.iter().map(Bytes::len).sum());
        if bytes > self.max_entry() {
            return;
        }
        let mut inner = self.inner.lock().expect("list cache");
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.bytes;
        }
        if inner.bytes + bytes > self.budget || inner.entries.len() >= MAX_LISTS {
            // Oldest use first, sorted once.
            let mut by_use: Vec<(u64, ListKey)> = inner
                .entries
                .iter()
                .map(|(k, e)| (e.used, k.clone()))
                .collect();
            by_use.sort_unstable_by_key(|(used, _)| *used);
            for (_, oldest) in by_use {
                if inner.bytes + bytes <= self.budget && inner.entries.len() < MAX_LISTS {
                    break;
                }
                let gone = inner.entries.remove(&oldest).expect("present");
                inner.bytes -= gone.bytes;
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            ListEntry {
                revision,
                items: items.into(),
                bytes,
                used,
            },
        );
    }

    /// Lists answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Bytes of lists held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("list cache").bytes
    }

    fn last_write(&self, key: &ListKey) -> u64 {
        match key.slot() {
            Some(slot) => self.slots[slot].load(Ordering::Acquire),
            None => self.kinds[key.kind as usize].load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_at_the_same_revision_and_stays_in_budget() {
        let c = DocCache::new(1024);
        c.insert(Kind::Cell, b"k".to_vec(), 3, Bytes::from_static(b"{}"));
        assert_eq!(c.get(Kind::Cell, b"k", 3).as_deref(), Some(&b"{}"[..]));
        assert!(c.get(Kind::Cell, b"k", 4).is_none());
        assert!(c.get(Kind::Stack, b"k", 3).is_none());
        for i in 0..100u32 {
            c.insert(
                Kind::Cell,
                i.to_be_bytes().to_vec(),
                1,
                Bytes::from(vec![b'x'; 50]),
            );
        }
        assert!(c.inner.lock().unwrap().bytes <= 1024);
        // Replacing an entry accounts for it once.
        let c = DocCache::new(1024);
        c.insert(Kind::Cell, b"k".to_vec(), 1, Bytes::from_static(b"abcd"));
        c.insert(Kind::Cell, b"k".to_vec(), 2, Bytes::from_static(b"ab"));
        assert_eq!(c.inner.lock().unwrap().bytes, 3);
    }
}

#[cfg(test)]
mod list_tests {
    use super::*;
    use crate::model::{Cell, CellSpec, ObjectMeta, Realm};
    use crate::store::ChangeType;

    fn cell(stack: &str, name: &str) -> Arc<AnyObject> {
        Arc::new(AnyObject::Cell(Cell {
            meta: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec: CellSpec {
                realm_name: "r".into(),
                space_name: "s".into(),
                stack_name: stack.into(),
                ..CellSpec::default()
            },
            status: Default::default(),
        }))
    }

    fn change(revision: u64, object: Arc<AnyObject>) -> Change {
        Change {
            revision,
            prev: revision - 1,
            change: ChangeType::Added,
            object,
            before: None,
        }
    }

    fn scope(names: &[&str]) -> Vec<Option<String>> {
        names.iter().map(|n| Some(n.to_string())).collect()
    }

    fn items(text: &'static str) -> Vec<Bytes> {
        vec![Bytes::from_static(text.as_bytes())]
    }

    /// A cache holding the list of stack `r/s/t`, rendered at revision 1
    /// after its one write.
    fn one_list_at_1() -> (ListCache, ListKey) {
        let cache = ListCache::new(1 << 20);
        let key = ListKey::new(Kind::Cell, &scope(&["r", "s", "t"]), None, None);
        cache.observe(&[change(1, cell("t", "a"))]);
        cache.insert(key.clone(), 1, items("{a}"), 0);
        (cache, key)
    }

    #[test]
    fn a_write_to_the_scope_misses_and_a_write_elsewhere_serves_at_its_revision() {
        let (cache, key) = one_list_at_1();
        let (rev, got) = cache.get(&key, 0).expect("cached");
        assert_eq!((rev, &got[..]), (1, &items("{a}")[..]));

        // Another stack, and a realm: served, at the newest revision.
        cache.observe(&[change(2, cell("u", "b"))]);
        let realm = AnyObject::Realm(Realm {
            meta: ObjectMeta {
                name: "x".into(),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: Default::default(),
        });
        cache.observe(&[change(3, Arc::new(realm))]);
        assert_eq!(cache.get(&key, 0).map(|(rev, _)| rev), Some(3));
        assert_eq!(cache.hits(), 2);

        // The same stack: gone for good (its bytes too).
        cache.observe(&[change(4, cell("t", "c"))]);
        assert!(cache.get(&key, 0).is_none());
        assert_eq!(cache.bytes(), 0);
        // Rendered before that write: stale at once.
        cache.insert(key.clone(), 3, items("{a}"), 0);
        assert!(cache.get(&key, 0).is_none());
    }

    #[test]
    fn a_commit_not_yet_published_misses_so_reads_never_go_back() {
        let (cache, key) = one_list_at_1();
        // Revision 2 (anywhere) is committing: a snapshot may show it, the
        // feed has not recorded it yet.
        assert!(cache.get(&key, 2).is_none());
        cache.observe(&[change(2, cell("u", "b"))]);
        assert_eq!(cache.get(&key, 2).map(|(rev, _)| rev), Some(2));
    }

    #[test]
    fn the_memory_held_counts_not_just_the_lengths() {
        let cache = ListCache::new(1000);
        let key = ListKey::new(Kind::Cell, &scope(&["r", "s", "t"]), None, None);
        cache.insert(key.clone(), 0, items("{a}"), 300);
        assert_eq!(cache.bytes(), 300);
        // Held beyond half the budget: not kept, however short.
        let other = ListKey::new(Kind::Cell, &scope(&["r", "s", "u"]), None, None);
        cache.insert(other.clone(), 0, items("{a}"), 501);
        assert!(cache.get(&other, 0).is_none());
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn wildcard_scopes_miss_on_any_write_of_the_kind() {
        let cache = ListCache::new(1 << 20);
        let all = ListKey::new(Kind::Cell, &[], None, None);
        let realm_wide = ListKey::new(Kind::Cell, &[Some("r".into())], None, None);
        let by_stack = ListKey::new(Kind::Cell, &[None, None, Some("t".into())], None, None);
        let stacks = ListKey::new(Kind::Stack, &scope(&["r", "s"]), None, None);
        for key in [&all, &realm_wide, &by_stack, &stacks] {
            cache.insert(key.clone(), 0, items("{}"), 0);
        }
        cache.observe(&[change(1, cell("elsewhere", "a"))]);
        assert!(cache.get(&all, 0).is_none());
        assert!(cache.get(&realm_wide, 0).is_none());
        assert!(cache.get(&by_stack, 0).is_none());
        // Another kind is untouched.
        assert_eq!(cache.get(&stacks, 0).map(|(rev, _)| rev), Some(1));
    }

    #[test]
    fn selectors_are_separate_entries() {
        let cache = ListCache::new(1 << 20);
        let plain = ListKey::new(Kind::Cell, &scope(&["r", "s", "t"]), None, None);
        let empty = ListKey::new(Kind::Cell, &scope(&["r", "s", "t"]), Some(""), None);
        let selected = ListKey::new(Kind::Cell, &scope(&["r", "s", "t"]), Some("app=web"), None);
        assert_eq!(plain, empty);
        cache.insert(plain.clone(), 0, items("{a},{b}"), 0);
        assert!(cache.get(&selected, 0).is_none());
        cache.insert(selected.clone(), 0, items("{b}"), 0);
        assert_eq!(
            &cache.get(&selected, 0).expect("cached").1[..],
            &items("{b}")[..]
        );
        assert_eq!(
            &cache.get(&plain, 0).expect("cached").1[..],
            &items("{a},{b}")[..]
        );
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_refuses_big_lists() {
        let cache = ListCache::new(100);
        let key = |t: &str| ListKey::new(Kind::Cell, &scope(&["r", "s", t]), None, None);
        let forty = || vec![Bytes::from(vec![b'x'; 40])];
        cache.insert(key("a"), 0, forty(), 0);
        cache.insert(key("b"), 0, forty(), 0);
        assert!(cache.get(&key("a"), 0).is_some());
        cache.insert(key("c"), 0, forty(), 0);
        assert!(cache.get(&key("b"), 0).is_none(), "least recently used");
        assert!(cache.get(&key("a"), 0).is_some());
        assert!(cache.get(&key("c"), 0).is_some());
        assert_eq!(cache.bytes(), 80);
        // A count bound too.
        let many = ListCache::new(1 << 30);
        for i in 0..MAX_LISTS + 10 {
            many.insert(key(&i.to_string()), 0, items("{}"), 0);
        }
        assert_eq!(many.inner.lock().unwrap().entries.len(), MAX_LISTS);
        assert!(many.get(&key(&(MAX_LISTS + 9).to_string()), 0).is_some());
        // Over half the budget: not kept.
        cache.insert(key("d"), 0, vec![Bytes::from(vec![b'x'; 51])], 0);
        assert!(cache.get(&key("d"), 0).is_none());
        assert_eq!(cache.bytes(), 80);
    }

    #[test]
    fn scope_slots_agree_between_queries_and_objects() {
        let key = ListKey::new(Kind::Cell, &scope(&["r", "s", "t"]), None, None);
        assert_eq!(key.slot(), Some(parent_slot(&cell("t", "any"))));
        // Names do not run into each other.
        let other = ListKey::new(Kind::Cell, &scope(&["r", "st", ""]), None, None);
        assert_ne!(key.slot(), other.slot());
    }
}
