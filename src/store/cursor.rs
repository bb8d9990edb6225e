//! Cursors over a consistent snapshot: the engine-neutral handles that
//! list scans and the watch snapshot iterate. The engine's own types sit
//! behind private enums, so callers never see them.

use super::codec;
use super::error::StoreError;
use super::query::ListQuery;
use super::redb::read as redb_read;
use crate::model::{AnyObject, Kind, Path};

/// A consistent read view of the whole store at one revision: lists and
/// reads through it all see the same state. Use it off the async workers.
pub struct Snapshot(SnapshotInner);

enum SnapshotInner {
    Redb(redb_read::RedbSnapshot),
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::read::EtcdSnapshot),
}

impl Snapshot {
    /// Wraps a redb snapshot.
    pub(super) fn from_redb(s: redb_read::RedbSnapshot) -> Snapshot {
        Snapshot(SnapshotInner::Redb(s))
    }

    /// Wraps an etcd snapshot.
    #[cfg(feature = "etcd")]
    pub(super) fn from_etcd(s: super::etcd::read::EtcdSnapshot) -> Snapshot {
        Snapshot(SnapshotInner::Etcd(s))
    }

    /// The revision this snapshot shows (every change up to it, none
    /// after).
    pub fn revision(&self) -> u64 {
        match &self.0 {
            SnapshotInner::Redb(s) => s.revision(),
            #[cfg(feature = "etcd")]
            SnapshotInner::Etcd(s) => s.revision(),
        }
    }

    /// A cursor over every item of `query` (its limit and token are
    /// ignored), in path order.
    pub fn list(&self, query: &ListQuery) -> Result<ListIter, StoreError> {
        match &self.0 {
            SnapshotInner::Redb(s) => Ok(ListIter(IterInner::Redb(s.list(query)?))),
            #[cfg(feature = "etcd")]
            SnapshotInner::Etcd(s) => Ok(ListIter(IterInner::Etcd(s.list(query)?))),
        }
    }

    /// The object at `path` in this snapshot.
    pub fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        match &self.0 {
            SnapshotInner::Redb(s) => s.get(path),
            #[cfg(feature = "etcd")]
            SnapshotInner::Etcd(s) => s.get(path),
        }
    }
}

/// An owned cursor over a list's items in path order, within one
/// snapshot. Iterate it off the async workers.
pub struct ListIter(IterInner);

#[cfg_attr(
    feature = "etcd",
    expect(
        clippy::large_enum_variant,
        reason = "one cursor per list; boxing redb's would cost the hot path an allocation"
    )
)]
enum IterInner {
    Redb(redb_read::RedbIter),
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::read::EtcdIter),
}

impl ListIter {
    /// Revision of the snapshot being read.
    pub fn revision(&self) -> u64 {
        match &self.0 {
            IterInner::Redb(i) => i.revision(),
            #[cfg(feature = "etcd")]
            IterInner::Etcd(i) => i.revision(),
        }
    }

    /// The next entry in scope and matching the selector, decoding only its
    /// metadata (callers with a rendering cache skip the rest).
    pub fn next_raw(&mut self) -> Option<Result<RawEntry, StoreError>> {
        match &mut self.0 {
            IterInner::Redb(i) => Some(
                i.next_raw()?
                    .map(|e| RawEntry::redb(e.key, e.resource_version, e.kind, e.value)),
            ),
            #[cfg(feature = "etcd")]
            IterInner::Etcd(i) => {
                let kind = i.kind();
                Some(
                    i.next_raw()?
                        .map(|e| RawEntry::owned(e.key, e.resource_version, kind, e.value)),
                )
            }
        }
    }
}

impl Iterator for ListIter {
    type Item = Result<(Vec<u8>, AnyObject), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.next_raw()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        Some(entry.object().map(|o| (entry.key, o)))
    }
}

/// A listed or read entry whose spec and status are not decoded yet.
pub struct RawEntry {
    /// The object's key.
    pub key: Vec<u8>,
    /// Its `resourceVersion`.
    pub resource_version: u64,
    kind: Kind,
    value: RawValue,
}

/// A listed entry's record, borrowed from the engine where it can be.
enum RawValue {
    Redb(redb_read::Guard),
    /// A record the engine handed over (etcd).
    #[cfg(feature = "etcd")]
    Owned(bytes::Bytes),
}

impl RawEntry {
    /// An entry read from redb.
    pub(super) fn redb(
        key: Vec<u8>,
        resource_version: u64,
        kind: Kind,
        value: redb_read::Guard,
    ) -> RawEntry {
        RawEntry {
            key,
            resource_version,
            kind,
            value: RawValue::Redb(value),
        }
    }

    /// An entry whose record the engine handed over.
    #[cfg(feature = "etcd")]
    pub(super) fn owned(
        key: Vec<u8>,
        resource_version: u64,
        kind: Kind,
        value: bytes::Bytes,
    ) -> RawEntry {
        RawEntry {
            key,
            resource_version,
            kind,
            value: RawValue::Owned(value),
        }
    }

    /// Decodes the whole object (with the entry's `resourceVersion`: an
    /// engine may store only part of it in the record).
    pub fn object(&self) -> Result<AnyObject, StoreError> {
        let bytes = match &self.value {
            RawValue::Redb(g) => g.bytes(),
            #[cfg(feature = "etcd")]
            RawValue::Owned(v) => v,
        };
        let mut obj = codec::decode(self.kind, bytes)?;
        obj.meta_mut().resource_version = self.resource_version;
        Ok(obj)
    }
}
