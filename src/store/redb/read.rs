//! Reads: single objects and list scans over one consistent snapshot.
//!
//! A list is a range scan of one kind's table over the key prefix of its
//! leading scope names, filtered by any non-leading scope names and the
//! label selector. A paged list keeps its redb read transaction in
//! [`Snapshots`] under an id carried by the continue token, for a bounded
//! time and count, so every page comes from the same snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::ReadableTable as _;
use redb::{Database, ReadTransaction, ReadableDatabase};

use super::tables::{self, COMPACTED_KEY, REVISION_KEY};
use crate::model::{AnyObject, Kind, Path, Selector};
use crate::store::error::StoreError;
use crate::store::query::{EventsPage, ListPage, ListQuery};
use crate::store::{codec, keys};

/// A read transaction and the revision it shows.
#[derive(Clone)]
pub struct RedbSnapshot {
    txn: Arc<ReadTransaction>,
    revision: u64,
}

impl RedbSnapshot {
    /// Opens a read transaction on `db`.
    pub fn open(db: &Database) -> Result<RedbSnapshot, StoreError> {
        let txn = db.begin_read()?;
        let revision = tables::read_meta(&txn, REVISION_KEY)?.unwrap_or(0);
        Ok(RedbSnapshot {
            txn: Arc::new(txn),
            revision,
        })
    }

    /// The revision it shows.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A cursor over every item of `query`.
    pub fn list(&self, query: &ListQuery) -> Result<RedbIter, StoreError> {
        cursor(self, query, None)
    }

    /// The object at `path`.
    pub fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        get_in(&self.txn, path)
    }
}

/// An owned cursor over a list's items in path order.
pub struct RedbIter {
    revision: u64,
    kind: Kind,
    range: redb::Range<'static, &'static [u8], &'static [u8]>,
    filters: Vec<(usize, String)>,
    selector: Selector,
    _txn: Arc<ReadTransaction>,
}

/// A stored record borrowed from redb's pages.
pub struct Guard(redb::AccessGuard<'static, &'static [u8]>);

impl Guard {
    /// The record's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.value()
    }
}

/// A listed entry whose record is not decoded yet.
pub struct RedbEntry {
    /// The object's key.
    pub key: Vec<u8>,
    /// Its `resourceVersion`.
    pub resource_version: u64,
    /// Its kind.
    pub kind: Kind,
    /// Its record.
    pub value: Guard,
}

impl RedbIter {
    /// Revision of the snapshot being read.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The next entry in scope and matching the selector, decoding only its
    /// metadata.
    pub fn next_raw(&mut self) -> Option<Result<RedbEntry, StoreError>> {
        loop {
            let (k, v) = match self.range.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let key = k.value();
            if !self.filters.is_empty() {
                let names = keys::decode(key);
                if !self.filters.iter().all(|(i, n)| names.get(*i) == Some(n)) {
                    continue;
                }
            }
            let meta = match codec::peek_meta(v.value()) {
                Ok(m) => m,
                Err(e) => return Some(Err(e.into())),
            };
            if self.selector.matches_with(|k| meta.label(k)) {
                if self.selector.has_fields() {
                    match codec::decode(self.kind, v.value()) {
                        Ok(obj) if self.selector.matches_object_fields(&obj) => {}
                        Ok(_) => continue,
                        Err(e) => return Some(Err(e.into())),
                    }
                }
                let resource_version = meta.resource_version;
                return Some(Ok(RedbEntry {
                    key: key.to_vec(),
                    resource_version,
                    kind: self.kind,
                    value: Guard(v),
                }));
            }
        }
    }
}

struct Kept {
    snapshot: RedbSnapshot,
    expires: Instant,
}

/// Read transactions kept alive for continue tokens.
pub struct Snapshots {
    ttl: Duration,
    max: usize,
    next_id: Mutex<u64>,
    map: Mutex<HashMap<u64, Kept>>,
}

impl Snapshots {
    /// Keeps at most `max` snapshots, each for `ttl` after its first page.
    pub fn new(ttl: Duration, max: usize) -> Snapshots {
        Snapshots {
            ttl,
            max,
            next_id: Mutex::new(rand_start()),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn insert(&self, snapshot: RedbSnapshot) -> u64 {
        let id = {
            let mut n = self.next_id.lock().expect("snapshot ids");
            *n = n.wrapping_add(1);
            *n
        };
        let now = Instant::now();
        let mut map = self.map.lock().expect("snapshots");
        map.retain(|_, s| s.expires > now);
        while map.len() >= self.max {
            let oldest = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            id,
            Kept {
                snapshot,
                expires: now + self.ttl,
            },
        );
        id
    }

    fn get(&self, id: u64) -> Option<RedbSnapshot> {
        let now = Instant::now();
        let mut map = self.map.lock().expect("snapshots");
        map.retain(|_, s| s.expires > now);
        map.get(&id).map(|s| s.snapshot.clone())
    }

    /// Drops every snapshot (before the database closes).
    pub fn clear(&self) {
        self.map.lock().expect("snapshots").clear();
    }
}

/// Snapshot ids start at a random point so tokens from an earlier process
/// are unlikely to name a live snapshot of this one.
fn rand_start() -> u64 {
    let u = uuid::Uuid::new_v4().as_u128();
    (u as u64) >> 16
}

fn encode_token(id: u64, last_key: &[u8]) -> String {
    format!("{id:x}.{}", keys::to_hex(last_key))
}

fn decode_token(token: &str) -> Result<(u64, Vec<u8>), StoreError> {
    let bad = || StoreError::BadRequest(format!("malformed continue token {token:?}"));
    let (id, hex) = token.split_once('.').ok_or_else(bad)?;
    let id = u64::from_str_radix(id, 16).map_err(|_| bad())?;
    let key = keys::from_hex(hex).ok_or_else(bad)?;
    Ok((id, key))
}

/// Reads the object at `path`.
pub fn get(db: &Database, path: &Path) -> Result<AnyObject, StoreError> {
    get_in(&db.begin_read()?, path)
}

fn get_in(txn: &ReadTransaction, path: &Path) -> Result<AnyObject, StoreError> {
    let (_, value) = record(txn, path)?;
    Ok(codec::decode(path.kind(), value.value())?)
}

/// One object's record, with the `resourceVersion` its metadata holds.
pub fn get_entry(db: &Database, path: &Path) -> Result<RedbEntry, StoreError> {
    let (key, value) = record(&db.begin_read()?, path)?;
    let resource_version = codec::peek_meta(value.value())?.resource_version;
    Ok(RedbEntry {
        key,
        resource_version,
        kind: path.kind(),
        value: Guard(value),
    })
}

/// The key and stored record of the object at `path` (404 if none).
fn record(
    txn: &ReadTransaction,
    path: &Path,
) -> Result<(Vec<u8>, redb::AccessGuard<'static, &'static [u8]>), StoreError> {
    let table = txn.open_table(tables::objects(path.kind()))?;
    let key = keys::encode(path.names());
    let value = table
        .get(key.as_slice())?
        .ok_or_else(|| StoreError::NotFound(path.clone()))?;
    Ok((key, value))
}

/// The current revision.
pub fn revision(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    Ok(tables::read_meta(&txn, REVISION_KEY)?.unwrap_or(0))
}

/// A cursor over `query` in `snapshot`, starting after key `after` if
/// given.
fn cursor(
    snapshot: &RedbSnapshot,
    query: &ListQuery,
    after: Option<Vec<u8>>,
) -> Result<RedbIter, StoreError> {
    let (prefix, filters) = query.range()?;
    let (start, end) = keys::prefix_range(&prefix);
    let table = snapshot.txn.open_table(tables::objects(query.kind))?;
    let lower = match after {
        Some(k) => {
            if k < start || end.as_ref().is_some_and(|e| &k >= e) {
                return Err(StoreError::BadRequest(
                    "continue token does not belong to this list".into(),
                ));
            }
            std::ops::Bound::Excluded(k)
        }
        None => std::ops::Bound::Included(start),
    };
    let upper = match end {
        Some(e) => std::ops::Bound::Excluded(e),
        None => std::ops::Bound::Unbounded,
    };
    let range = table.range::<&[u8]>((
        lower.as_ref().map(Vec::as_slice),
        upper.as_ref().map(Vec::as_slice),
    ))?;
    Ok(RedbIter {
        revision: snapshot.revision,
        kind: query.kind,
        range,
        filters,
        selector: query.selector.clone(),
        _txn: snapshot.txn.clone(),
    })
}

/// Every stored token, by name; the table exists once a token was ever
/// created.
pub fn tokens(db: &Database) -> Result<crate::auth::token::Tokens, StoreError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(tables::TOKENS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
        Err(e) => return Err(e.into()),
    };
    let mut items = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        items.push(codec::decode_token(k.value(), v.value())?);
    }
    Ok(crate::auth::token::Tokens {
        items,
        enabled: true,
    })
}

/// Reads at most `max` events after revision `after`. A revision before
/// the retained history, or after the current revision, is `Gone`.
pub fn read_events(db: &Database, after: u64, max: usize) -> Result<EventsPage, StoreError> {
    read_events_after(db, after, max, None)
}

/// [`read_events`], from the `recent` changes when they hold every one
/// after `after` (no read of the log), else from the log.
pub fn read_events_after(
    db: &Database,
    after: u64,
    max: usize,
    recent: Option<&crate::store::recent::Recent<crate::store::recent::Logged>>,
) -> Result<EventsPage, StoreError> {
    let txn = db.begin_read()?;
    let current = tables::read_meta(&txn, REVISION_KEY)?.unwrap_or(0);
    let compacted = tables::read_meta(&txn, COMPACTED_KEY)?.unwrap_or(0);
    if after < compacted {
        return Err(StoreError::Gone(format!(
            "resourceVersion {after} is older than the retained history (events up to {compacted} \
             were compacted): list or watch again without resourceVersion"
        )));
    }
    if after > current {
        return Err(StoreError::Gone(format!(
            "resourceVersion {after} is newer than the current revision {current}: it belongs to \
             another database history; list or watch again without resourceVersion"
        )));
    }
    if let Some(page) = recent.and_then(|r| r.page(after, max)) {
        return Ok(page);
    }
    let table = txn.open_table(tables::EVENTS)?;
    let mut events = Vec::new();
    for entry in table.range(after + 1..)?.take(max) {
        let (k, v) = entry?;
        let (change, object, before) = codec::decode_event(v.value())?;
        events.push((k.value(), change, object, before));
    }
    Ok(EventsPage { events, current })
}

/// One page of `query`.
pub fn list_page(
    db: &Database,
    snapshots: &Snapshots,
    query: &ListQuery,
) -> Result<ListPage, StoreError> {
    let (snapshot, after, id) = match &query.continue_token {
        Some(token) => {
            let (id, after) = decode_token(token)?;
            let snapshot = snapshots.get(id).ok_or_else(|| {
                StoreError::Gone(
                    "the continue token has expired (its snapshot is gone): list again from the start"
                        .into(),
                )
            })?;
            (snapshot, Some(after), Some(id))
        }
        None => (RedbSnapshot::open(db)?, None, None),
    };
    let revision = snapshot.revision;
    let mut iter = cursor(&snapshot, query, after)?;
    let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut last_key = None;
    while let Some(entry) = iter.next_raw() {
        let entry = entry?;
        let (key, obj) = (entry.key, codec::decode(entry.kind, entry.value.bytes())?);
        if items.len() == limit {
            let id = match id {
                Some(id) => id,
                None => snapshots.insert(snapshot),
            };
            let last: Vec<u8> = last_key.expect("limit > 0 when a page is full");
            return Ok(ListPage {
                revision,
                items,
                continue_token: Some(encode_token(id, &last)),
            });
        }
        last_key = Some(key);
        items.push(obj);
    }
    Ok(ListPage {
        revision,
        items,
        continue_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token(0xabc, &[0, 1, 255]);
        assert_eq!(decode_token(&t).unwrap(), (0xabc, vec![0, 1, 255]));
        for bad in ["", "x", "1.", "1.0", "zz.00", "1.0g", "1.aéa", "é.00"] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }
}
