//! Reads: point reads and lists (linearizable), snapshots pinned at one
//! etcd revision, and the history, read from etcd's own through a
//! short-lived watch.
//!
//! A paged list pins etcd's revision of its first page; its continue
//! token carries that revision and the last key, so any replica continues
//! it, until etcd compacts the revision (then 410). Snapshots and history
//! block (their callers run them on tokio's blocking pool) on the
//! runtime's handle.

use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};

use super::cache::At;
use super::cache::Kv;
use super::error::EtcdError;
use super::inner::{EtcdStore, Inner};
use super::layout::prefix_end;
use crate::model::{AnyObject, Kind, Path};
use crate::store::change::{Before, ChangeType, Event};
use crate::store::error::StoreError;
use crate::store::query::{EventsPage, ListPage, ListQuery};
use crate::store::{codec, keys};

/// Keys fetched per etcd range read of a list or snapshot.
const PAGE: i64 = 500;

/// How often a history read asks etcd whether it has sent everything.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

impl EtcdStore {
    /// Reads one object, linearizably.
    pub async fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        self.0.check_open()?;
        let key = self
            .0
            .layout
            .object(path.kind(), &keys::encode(path.names()));
        match self.find(&key).await? {
            Some(kv) => self.0.decode(path.kind(), &kv),
            None => Err(StoreError::NotFound(path.clone())),
        }
    }

    /// The record at `key`: from the cache when it is fresh, else a
    /// linearizable read.
    async fn find(&self, key: &[u8]) -> Result<Option<Kv>, StoreError> {
        let cached = match self.0.fresh().await? {
            Some(r) => self.0.cache.with(At::From(r), |s| s.get(key)),
            None => None,
        };
        self.0.cache.count(cached.is_some());
        match cached {
            Some(found) => Ok(found),
            None => self.0.get_raw(key).await,
        }
    }

    /// One object's record, not decoded past its metadata (read as
    /// [`EtcdStore::get`] reads).
    pub async fn get_entry(&self, path: &Path) -> Result<EtcdEntry, StoreError> {
        self.0.check_open()?;
        let names = keys::encode(path.names());
        let key = self.0.layout.object(path.kind(), &names);
        let Some(kv) = self.find(&key).await? else {
            return Err(StoreError::NotFound(path.clone()));
        };
        let index = codec::peek_meta(&kv.value)?.resource_version;
        let rv = self.0.revs.rv(kv.mod_revision, index);
        Ok(EtcdEntry {
            key: names,
            resource_version: rv,
            value: kv.value,
        })
    }

    /// One page of a list (or all of it).
    pub async fn list_page(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        self.0.check_open()?;
        let scope = Scope::of(&query)?;
        let (mut revision, mut after) = match &query.continue_token {
            Some(t) => {
                let (position, key) = parse_token(t)?;
                let r = match self.0.revs.split(position) {
                    Some((r, i)) if r > 0 && i == super::layout::PER_REVISION - 1 => r,
                    Some(_) => {
                        return Err(StoreError::BadRequest(format!(
                            "malformed continue token {t:?}"
                        )));
                    }
                    None => {
                        return Err(StoreError::Gone(
                            "the continue token belongs to the history before a restore: list \
                             again from the start"
                                .into(),
                        ));
                    }
                };
                if !key.starts_with(&scope.prefix) {
                    return Err(StoreError::BadRequest(
                        "continue token does not belong to this list".into(),
                    ));
                }
                (r, Some(key))
            }
            None => (0, None),
        };
        // A first page: from the copy once it holds every acknowledged
        // write, at the revision it shows then (the next pages come from
        // the copy while it stays there, else from etcd pinned there).
        let mut fresh = match revision {
            0 => {
                let fresh = self.0.fresh().await?;
                self.0.cache.count(fresh.is_some());
                fresh
            }
            _ => None,
        };
        let want = query.limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut more = false;
        loop {
            let batch = self
                .0
                .range(query.kind, &scope, after.as_deref(), revision, fresh.take())
                .await?;
            if revision == 0 {
                // The first read pins the list's revision (a pinned read's
                // header carries etcd's current one).
                revision = batch.revision;
            }
            let exhausted = !batch.more;
            for kv in batch.kvs {
                if items.len() == want {
                    more = true;
                    break;
                }
                let key = kv.key[self.0.layout.kind(query.kind).len()..].to_vec();
                after = Some(key.clone());
                if let Some(obj) = scope.select(&self.0, query.kind, &key, &kv)? {
                    items.push(obj);
                }
            }
            if exhausted {
                break;
            }
            if items.len() == want {
                // Full, and keys remain (they may all fail the filters:
                // the next page is then empty).
                more = true;
            }
            if more {
                break;
            }
        }
        let continue_token = more
            .then(|| {
                after
                    .as_deref()
                    .map(|k| encode_token(self.0.revs.position(revision), k))
            })
            .flatten();
        Ok(ListPage {
            revision: self.0.revs.position(revision),
            items,
            continue_token,
        })
    }

    /// A consistent view with every write acknowledged before the call:
    /// at the revision the copy shows once fresh, else at etcd's current
    /// one (blocking).
    pub fn snapshot(&self) -> Result<EtcdSnapshot, StoreError> {
        let inner = self.0.clone();
        let revision = self.0.block(async move {
            let fresh = inner.fresh().await?;
            inner.cache.count(fresh.is_some());
            match fresh {
                // The revision the copy shows now (at least `r`): its
                // lists come from the copy while it stays there.
                Some(r) => Ok(inner.cache.revision().map_or(r, |c| c.max(r))),
                None => inner.current().await,
            }
        })?;
        Ok(EtcdSnapshot {
            store: self.clone(),
            revision,
        })
    }

    /// At most `max` changes after `after`: from the changes this replica
    /// kept when they are all there, else from etcd's history (blocking).
    pub fn events(&self, after: u64, max: usize) -> Result<EventsPage, StoreError> {
        if let Some(page) = self.0.recent.page(after, max) {
            return Ok(page);
        }
        let inner = self.0.clone();
        self.0.block(async move { inner.history(after, max).await })
    }
}

/// A page of keys from one range read.
struct Batch {
    kvs: Vec<Kv>,
    more: bool,
    revision: i64,
}

impl Inner {
    /// The next keys of `scope` after `after`, at `revision` (0: now,
    /// from the copy if it shows `fresh` or later).
    async fn range(
        &self,
        kind: Kind,
        scope: &Scope,
        after: Option<&[u8]>,
        revision: i64,
        fresh: Option<i64>,
    ) -> Result<Batch, StoreError> {
        let at = match (revision, fresh) {
            (0, Some(r)) => Some(At::From(r)),
            (0, None) => None,
            (r, _) => Some(At::Exactly(r)),
        };
        if let Some(at) = at
            && let Some(batch) = self.cached_range(kind, scope, after, at)
        {
            return Ok(batch);
        }
        let start = match after {
            Some(k) => {
                let mut s = self.layout.object(kind, k);
                s.push(0);
                s
            }
            None => self.layout.object(kind, &scope.prefix),
        };
        let end = prefix_end(&self.layout.object(kind, &scope.prefix));
        let mut options = GetOptions::new().with_range(end).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = self.get(start, options).await.map_err(|e| match e.read() {
            StoreError::Gone(_) => StoreError::Gone(
                "the list's revision was compacted by etcd (its continue token expired): list \
                     again from the start"
                    .into(),
            ),
            other => other,
        })?;
        Ok(Batch {
            kvs: resp.kvs().iter().map(Kv::from).collect(),
            more: resp.more(),
            revision: super::inner::header_revision(resp.header()),
        })
    }

    /// [`Inner::range`] from this replica's copy, if it shows a revision
    /// `at` allows.
    fn cached_range(
        &self,
        kind: Kind,
        scope: &Scope,
        after: Option<&[u8]>,
        at: At,
    ) -> Option<Batch> {
        let first = self.layout.object(kind, &scope.prefix);
        let end = prefix_end(&first);
        let start = match after {
            Some(k) => {
                let mut s = self.layout.object(kind, k);
                s.push(0);
                s
            }
            None => first,
        };
        self.cache.with(at, |s| {
            let (kvs, more) = s.range(&start, &end, PAGE as usize);
            Batch {
                kvs,
                more,
                revision: s.revision(),
            }
        })
    }

    /// Reads etcd's history after `after` through a watch from its
    /// revision, until etcd reports the watch has caught up (progress) or
    /// `max` changes were read.
    async fn history(&self, after: u64, max: usize) -> Result<EventsPage, StoreError> {
        let current = self.current().await?;
        let gone_old = || {
            StoreError::Gone(format!(
                "resourceVersion {after} is older than the retained history (etcd compacted it, \
                 or it belongs to the history before a restore): list or watch again without \
                 resourceVersion"
            ))
        };
        let Some((r, index)) = self.revs.split(after) else {
            return Err(gone_old());
        };
        if r > current {
            return Err(StoreError::Gone(format!(
                "resourceVersion {after} is newer than the current revision {}: it belongs to \
                 another history; list or watch again without resourceVersion",
                self.revs.position(current)
            )));
        }
        if r < self.revs.floor() && after != 0 {
            return Err(gone_old());
        }
        let (start, skip) = if index >= super::layout::PER_REVISION - 1 {
            (r + 1, None)
        } else {
            (r, Some(index))
        };
        let position = self.revs.position(current);
        if start > current {
            return Ok(EventsPage {
                events: Vec::new(),
                current: position,
            });
        }
        // A read pinned at the first revision wanted fails exactly when
        // etcd compacted it (cheaper than waiting for the watch to say so).
        let pinned = self
            .get(
                self.layout.meta("format"),
                GetOptions::new()
                    .with_revision(start.max(1))
                    .with_keys_only(),
            )
            .await;
        if let Err(e) = pinned {
            return Err(if e.is_compacted() {
                gone_old()
            } else {
                e.read()
            });
        }
        if max == 0 {
            return Ok(EventsPage {
                events: Vec::new(),
                current: self.revs.position(start - 1),
            });
        }
        // Where the history read ends: etcd's progress where it can be
        // trusted; else an event of our own, a heartbeat written now, which
        // the watch delivers after every change before it.
        let end = if self.trust_progress {
            current
        } else {
            self.mark(current).await?
        };
        let all = self.layout.all();
        let mut stream = self
            .client
            .watch_client()
            .max_decoding_message_size(super::inner::MAX_DECODE)
            .watch(
                all.clone(),
                Some(
                    WatchOptions::new()
                        .with_range(prefix_end(&all))
                        .with_start_revision(start.max(1))
                        .with_prev_key(),
                ),
            )
            .await
            .map_err(|e| EtcdError(e).read())?;
        let mut events = Vec::new();
        let mut complete = false;
        let deadline = tokio::time::Instant::now() + self.options.timeout * 2;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        'read: loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tick.tick() => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(StoreError::Unavailable(
                            "etcd did not send its history in time; retry".into(),
                        ));
                    }
                    if self.trust_progress {
                        stream.request_progress().await.map_err(|e| EtcdError(e).read())?;
                    }
                    continue;
                }
            };
            let Some(resp) = msg.map_err(|e| EtcdError(e).read())? else {
                return Err(StoreError::Unavailable(
                    "etcd closed the history's watch".into(),
                ));
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Err(gone_old());
                }
                return Err(StoreError::Unavailable(format!(
                    "etcd cancelled the history's watch: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.created() {
                continue;
            }
            if resp.events().is_empty() {
                if self.trust_progress && super::inner::header_revision(resp.header()) >= end {
                    complete = true;
                    break;
                }
                continue;
            }
            let mut rev = -1;
            let mut k = 0u64;
            // Whether this response reaches the end (`current` where
            // progress is trusted; the marker, elsewhere): a revision's
            // events all come in one response.
            let mut reached = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let at = kv.mod_revision();
                reached |= at >= end;
                if at > current {
                    // Beyond the page.
                    continue;
                }
                if at != rev {
                    rev = at;
                    k = 0;
                }
                if self.layout.parse(kv.key()).is_none() {
                    continue;
                }
                let index = k;
                k += 1;
                if rev == r && skip.is_some_and(|s| index <= s) {
                    continue;
                }
                if events.len() >= max {
                    break 'read;
                }
                if let Some(e) = self.event(ev.event_type(), kv, ev.prev_kv(), rev, index)? {
                    events.push(e);
                }
            }
            if reached {
                complete = true;
                break;
            }
        }
        drop(stream);
        // Incomplete pages (max reached) end at their last change.
        let current = if complete {
            position
        } else {
            events.last().map_or(after, |e| e.0)
        };
        Ok(EventsPage { events, current })
    }

    /// Writes the heartbeat key now: an event at a revision after every
    /// change made so far. Answers its revision.
    /// Concurrent history reads share one marker: a marker at or after
    /// `current` ends every read that started at `current` or before.
    async fn mark(&self, current: i64) -> Result<i64, StoreError> {
        let mut last = self.last_mark.lock().await;
        if let Some(h) = *last
            && h >= current
        {
            return Ok(h);
        }
        let resp = self
            .kv()
            .put(self.layout.meta("heartbeat"), "", None)
            .await
            .map_err(|e| match EtcdError(e) {
                e if e.is_no_space() => StoreError::Unavailable(
                    "etcd's NOSPACE alarm is raised: on this etcd version (before 3.4.25 and \
                     3.5.8) reading its history needs a write; watch without resourceVersion, \
                     or retry once the alarm is disarmed"
                        .into(),
                ),
                e => e.read(),
            })?;
        let h = super::inner::header_revision(resp.header());
        *last = Some(h);
        Ok(h)
    }

    /// One change from an etcd event at revision `r`, index `k` (with,
    /// for a modification, what selectors saw of its previous version, if
    /// it is readable).
    pub(super) fn event(
        &self,
        kind: EventType,
        kv: &etcd_client::KeyValue,
        prev: Option<&etcd_client::KeyValue>,
        r: i64,
        k: u64,
    ) -> Result<Option<Event>, StoreError> {
        let Some((object_kind, _)) = self.layout.parse(kv.key()) else {
            return Ok(None);
        };
        let rv = self.revs.rv(r, k);
        let (change, source) = match kind {
            EventType::Put => (
                if kv.version() == 1 {
                    ChangeType::Added
                } else {
                    ChangeType::Modified
                },
                kv,
            ),
            EventType::Delete => match prev {
                Some(p) => (ChangeType::Deleted, p),
                None => {
                    tracing::warn!(revision = r, "a deletion without its last state: skipped");
                    return Ok(None);
                }
            },
        };
        let mut obj = codec::decode(object_kind, source.value())?;
        obj.meta_mut().resource_version = rv;
        let before = match (change, prev) {
            (ChangeType::Modified, Some(p)) => codec::decode(object_kind, p.value())
                .ok()
                .map(|o| Before::of(&o)),
            _ => None,
        };
        Ok(Some((rv, change, obj, before)))
    }
}

/// Which keys a list reads and which of them it keeps.
struct Scope {
    /// The leading scope names' key prefix.
    prefix: Vec<u8>,
    /// Non-leading scope names: (position, name).
    filters: Vec<(usize, String)>,
    selector: crate::model::Selector,
}

impl Scope {
    fn of(query: &ListQuery) -> Result<Scope, StoreError> {
        let (prefix, filters) = query.range()?;
        Ok(Scope {
            prefix,
            filters,
            selector: query.selector.clone(),
        })
    }

    fn wants(&self, kind: Kind, key: &[u8], value: &[u8]) -> Result<Option<u64>, StoreError> {
        if !self.filters.is_empty() {
            let names = keys::decode(key);
            if !self.filters.iter().all(|(i, n)| names.get(*i) == Some(n)) {
                return Ok(None);
            }
        }
        let meta = codec::peek_meta(value)?;
        if !self.selector.matches_with(|k| meta.label(k)) {
            return Ok(None);
        }
        if self.selector.has_fields()
            && !self
                .selector
                .matches_object_fields(&codec::decode(kind, value)?)
        {
            return Ok(None);
        }
        Ok(Some(meta.resource_version))
    }

    fn select(
        &self,
        inner: &Inner,
        kind: Kind,
        key: &[u8],
        kv: &Kv,
    ) -> Result<Option<AnyObject>, StoreError> {
        match self.wants(kind, key, &kv.value)? {
            Some(_) => Ok(Some(inner.decode(kind, kv)?)),
            None => Ok(None),
        }
    }
}

/// A continue token: the list's position (`resourceVersion` form, so that
/// a restore's offset is part of it) and the last key read.
fn encode_token(position: u64, key: &[u8]) -> String {
    format!("e1.{position}.{}", keys::to_hex(key))
}

fn parse_token(token: &str) -> Result<(u64, Vec<u8>), StoreError> {
    let bad = || StoreError::BadRequest(format!("malformed continue token {token:?}"));
    let rest = token.strip_prefix("e1.").ok_or_else(bad)?;
    let (r, hex) = rest.split_once('.').ok_or_else(bad)?;
    let r: u64 = r.parse().map_err(|_| bad())?;
    if r == 0 {
        return Err(bad());
    }
    Ok((r, keys::from_hex(hex).ok_or_else(bad)?))
}

/// The store at one etcd revision.
pub struct EtcdSnapshot {
    store: EtcdStore,
    revision: i64,
}

impl EtcdSnapshot {
    /// The position this snapshot shows.
    pub fn revision(&self) -> u64 {
        self.store.0.revs.position(self.revision)
    }

    /// A cursor over `query`'s items (blocking as it is iterated).
    pub fn list(&self, query: &ListQuery) -> Result<EtcdIter, StoreError> {
        Ok(EtcdIter {
            store: self.store.clone(),
            scope: Scope::of(query)?,
            kind: query.kind,
            revision: self.revision,
            after: None,
            buffer: std::collections::VecDeque::new(),
            done: false,
        })
    }

    /// The object at `path` in this snapshot (blocking).
    pub fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        let inner = self.store.0.clone();
        let key = inner
            .layout
            .object(path.kind(), &keys::encode(path.names()));
        let r = self.revision;
        if let Some(found) = self.store.0.cache.with(At::Exactly(r), |s| s.get(&key)) {
            return match found {
                Some(kv) => self.store.0.decode(path.kind(), &kv),
                None => Err(StoreError::NotFound(path.clone())),
            };
        }
        let found = self.store.0.block(async move {
            inner
                .get(key, GetOptions::new().with_revision(r))
                .await
                .map_err(EtcdError::read)
        })?;
        match found.kvs().first() {
            Some(kv) => self.store.0.decode(path.kind(), &Kv::from(kv)),
            None => Err(StoreError::NotFound(path.clone())),
        }
    }
}

/// A list's items at one etcd revision, fetched a page at a time.
pub struct EtcdIter {
    store: EtcdStore,
    scope: Scope,
    kind: Kind,
    revision: i64,
    after: Option<Vec<u8>>,
    buffer: std::collections::VecDeque<Kv>,
    done: bool,
}

/// A listed entry: key, resourceVersion, record.
pub struct EtcdEntry {
    /// The path key.
    pub key: Vec<u8>,
    /// The resourceVersion.
    pub resource_version: u64,
    /// The record.
    pub value: bytes::Bytes,
}

impl EtcdIter {
    /// The position of the snapshot being read.
    pub fn revision(&self) -> u64 {
        self.store.0.revs.position(self.revision)
    }

    /// The kind listed.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The next entry in scope and matching the selector.
    pub fn next_raw(&mut self) -> Option<Result<EtcdEntry, StoreError>> {
        loop {
            if let Some(kv) = self.buffer.pop_front() {
                let skip = self.store.0.layout.kind(self.kind).len();
                let key = kv.key[skip..].to_vec();
                match self.scope.wants(self.kind, &key, &kv.value) {
                    Err(e) => return Some(Err(e)),
                    Ok(None) => continue,
                    Ok(Some(index)) => {
                        return Some(Ok(EtcdEntry {
                            key,
                            resource_version: self.store.0.revs.rv(kv.mod_revision, index),
                            value: kv.value,
                        }));
                    }
                }
            }
            if self.done {
                return None;
            }
            let inner = self.store.0.clone();
            let (kind, after, r) = (self.kind, self.after.clone(), self.revision);
            let scope = Scope {
                prefix: self.scope.prefix.clone(),
                filters: Vec::new(),
                selector: crate::model::Selector::default(),
            };
            let batch = self
                .store
                .0
                .block(async move { inner.range(kind, &scope, after.as_deref(), r, None).await });
            match batch {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(b) => {
                    self.done = !b.more;
                    if let Some(last) = b.kvs.last() {
                        let skip = self.store.0.layout.kind(self.kind).len();
                        self.after = Some(last.key[skip..].to_vec());
                    } else {
                        self.done = true;
                    }
                    self.buffer.extend(b.kvs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_token(42, b"r\0s\0");
        assert_eq!(parse_token(&t).unwrap(), (42, b"r\0s\0".to_vec()));
        for bad in [
            "",
            "e1.",
            "e1.x.00",
            "e1.5.0",
            "e1.5.zz",
            "r1.5.00",
            "e1.0.00",
            "e1.5.a\u{e9}a",
        ] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }
}
