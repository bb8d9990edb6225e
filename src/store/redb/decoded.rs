//! The writer's objects already decoded: the last version it wrote of
//! each object it modified lately, beside that version's record, so that
//! the next read-modify-write of the object (a status write, a merge
//! patch, a finalizer removal) takes the decoded object instead of
//! decoding the record again.
//!
//! Invariant: every entry's object is what its record decodes to. A read
//! takes an entry only when the record stored in the transaction is
//! byte-for-byte the entry's, so an entry of a write whose commit failed,
//! or that a later write or a restore replaced, is never taken: it is
//! dropped at the next read of its key, or leaves with age.
//!
//! Only modifications are kept (a modified object is likely to be modified
//! again; a created one is not): at most [`CAPACITY`] entries and
//! [`BUDGET`] bytes of records, none over [`MAX_RECORD`]; the oldest put
//! leaves first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::model::{AnyObject, Kind};

/// Entries kept at most.
pub const CAPACITY: usize = 2048;

/// Bytes of records kept at most (their decoded forms come on top): a
/// typical cell's record takes 2 KB of buffer, so the capacity binds
/// first.
pub const BUDGET: usize = 8 << 20;

/// A record larger than this is not kept.
pub const MAX_RECORD: usize = 64 << 10;

/// One object as last written: its record and the object it decodes to.
struct Entry {
    record: Vec<u8>,
    object: Arc<AnyObject>,
    /// Its place in [`Decoded::order`].
    seq: u64,
}

/// Decoded objects by kind and key, with their records (see the module's
/// invariant).
#[derive(Default)]
pub struct Decoded {
    /// Per kind (by [`Kind`]'s number), by key.
    entries: [HashMap<Vec<u8>, Entry>; Kind::ALL.len()],
    /// Bytes of their records' buffers.
    bytes: usize,
    /// Keys in the order their entries were put (a key whose entry was
    /// replaced or removed since stays until it reaches the front; at most
    /// twice [`CAPACITY`], so live entries may leave early).
    order: VecDeque<(u64, Kind, Vec<u8>)>,
    next: u64,
    /// Reads answered from an entry, and reads that found none to take.
    kept: u64,
    decoded: u64,
}

impl Decoded {
    /// Keeps `object` as what `record`, stored at `key`, decodes to.
    pub fn put(&mut self, kind: Kind, key: &[u8], record: Vec<u8>, object: Arc<AnyObject>) {
        if record.len() > MAX_RECORD {
            self.forget(kind, key);
            return;
        }
        let seq = self.next;
        self.next += 1;
        self.bytes += record.capacity();
        let entry = Entry {
            record,
            object,
            seq,
        };
        if let Some(old) = self.entries[kind as usize].insert(key.to_vec(), entry) {
            self.bytes -= old.record.capacity();
        }
        self.order.push_back((seq, kind, key.to_vec()));
        while self.len() > CAPACITY || self.bytes > BUDGET || self.order.len() > 2 * CAPACITY {
            let Some((seq, kind, key)) = self.order.pop_front() else {
                break;
            };
            if self.entries[kind as usize]
                .get(&key)
                .is_some_and(|e| e.seq == seq)
            {
                self.remove(kind, &key);
            }
        }
    }

    /// Drops the entry of `key`, if any (its object was removed, or
    /// created anew).
    pub fn forget(&mut self, kind: Kind, key: &[u8]) {
        self.remove(kind, key);
    }

    fn remove(&mut self, kind: Kind, key: &[u8]) -> Option<Entry> {
        let entry = self.entries[kind as usize].remove(key)?;
        self.bytes -= entry.record.capacity();
        Some(entry)
    }

    /// Takes the decoded object of `record`, stored at `key`, if it is
    /// kept; a kept entry of another record is dropped.
    pub fn take(&mut self, kind: Kind, key: &[u8], record: &[u8]) -> Option<AnyObject> {
        match self.remove(kind, key) {
            Some(e) if e.record == record => {
                self.kept += 1;
                Some(Arc::try_unwrap(e.object).unwrap_or_else(|shared| (*shared).clone()))
            }
            _ => {
                self.decoded += 1;
                None
            }
        }
    }

    /// Reads answered from an entry, and reads that decoded the record,
    /// so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.kept, self.decoded)
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.iter().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectMeta, Realm, RealmSpec};
    use crate::store::codec;

    fn realm(name: &str, rv: u64) -> AnyObject {
        AnyObject::Realm(Realm {
            meta: ObjectMeta {
                name: name.into(),
                resource_version: rv,
                ..Default::default()
            },
            spec: RealmSpec {
                namespace: format!("{name}-ns"),
                ..Default::default()
            },
            status: Default::default(),
        })
    }

    /// Keeps `object` as stored at `key`, with its own record.
    fn keep(d: &mut Decoded, key: &[u8], object: &AnyObject) {
        d.put(
            Kind::Realm,
            key,
            codec::encode(object),
            Arc::new(object.clone()),
        );
    }

    #[test]
    fn an_entry_is_taken_only_for_its_own_record() {
        let mut d = Decoded::default();
        let (v1, v2) = (realm("a", 1), realm("a", 2));
        keep(&mut d, b"a", &v1);
        // Another record at the key (a later write, a failed commit's
        // entry): not taken, and dropped.
        assert_eq!(d.take(Kind::Realm, b"a", &codec::encode(&v2)), None);
        assert_eq!(d.len(), 0);
        keep(&mut d, b"a", &v1);
        // The same key under another kind is another object.
        assert_eq!(d.take(Kind::Space, b"a", &codec::encode(&v1)), None);
        assert_eq!(
            d.take(Kind::Realm, b"a", &codec::encode(&v1)),
            Some(v1.clone())
        );
        // Taken: the next read decodes.
        assert_eq!(d.take(Kind::Realm, b"a", &codec::encode(&v1)), None);
    }

    #[test]
    fn a_shared_object_is_copied_and_the_oldest_entries_leave_first() {
        let mut d = Decoded::default();
        let v = realm("shared", 7);
        let held = Arc::new(v.clone());
        d.put(Kind::Realm, b"shared", codec::encode(&v), held.clone());
        assert_eq!(d.take(Kind::Realm, b"shared", &codec::encode(&v)), Some(v));
        assert_eq!(Arc::strong_count(&held), 1, "the entry's reference is gone");

        for i in 0..CAPACITY + 10 {
            let o = realm(&format!("r{i}"), i as u64);
            let key = format!("r{i}");
            keep(&mut d, key.as_bytes(), &o);
            // Replacing an entry leaves one entry for the key.
            if i == 5 {
                let o = realm("r5", 99);
                keep(&mut d, b"r5", &o);
            }
        }
        assert_eq!(d.len(), CAPACITY);
        assert!(d.order.len() <= 2 * CAPACITY);
        let first = realm("r0", 0);
        assert_eq!(d.take(Kind::Realm, b"r0", &codec::encode(&first)), None);
        let last_i = CAPACITY + 9;
        let last = realm(&format!("r{last_i}"), last_i as u64);
        assert_eq!(
            d.take(
                Kind::Realm,
                format!("r{last_i}").as_bytes(),
                &codec::encode(&last)
            ),
            Some(last)
        );
    }

    #[test]
    fn one_key_put_again_and_again_stays_one_entry_within_bounds() {
        let mut d = Decoded::default();
        let mut last = realm("hot", 0);
        for rv in 0..(2 * CAPACITY as u64 + 5) {
            last = realm("hot", rv);
            keep(&mut d, b"hot", &last);
            assert_eq!(d.len(), 1);
            assert!(d.order.len() <= 2 * CAPACITY);
        }
        assert_eq!(
            d.take(Kind::Realm, b"hot", &codec::encode(&last)),
            Some(last)
        );
        assert_eq!((d.len(), d.bytes), (0, 0));
        assert_eq!(d.counts(), (1, 0));
    }

    #[test]
    fn records_are_kept_within_the_byte_budget_and_forgotten_on_request() {
        let mut d = Decoded::default();
        // Too large to keep.
        let mut big = realm("big", 1);
        if let AnyObject::Realm(r) = &mut big {
            r.spec.namespace = "x".repeat(MAX_RECORD);
        }
        keep(&mut d, b"big", &big);
        assert_eq!(d.len(), 0);
        assert_eq!(d.take(Kind::Realm, b"big", &codec::encode(&big)), None);
        // Records of 32 KiB: the budget holds BUDGET / 32 KiB of them.
        let mut last = Vec::new();
        for i in 0..(BUDGET / (32 << 10) + 10) {
            let o = realm(&format!("m{i}"), i as u64);
            let mut record = codec::encode(&o);
            record.reserve_exact((32 << 10) - record.len());
            d.put(
                Kind::Realm,
                format!("m{i}").as_bytes(),
                record,
                Arc::new(o.clone()),
            );
            last.push(o);
            assert!(d.bytes <= BUDGET);
        }
        assert!(d.len() < last.len() && d.len() >= BUDGET / (64 << 10));
        assert_eq!(d.take(Kind::Realm, b"m0", &codec::encode(&last[0])), None);
        // A deletion or a new object at the key forgets the entry.
        let n = last.len() - 1;
        d.forget(Kind::Realm, format!("m{n}").as_bytes());
        assert_eq!(
            d.take(
                Kind::Realm,
                format!("m{n}").as_bytes(),
                &codec::encode(&last[n])
            ),
            None
        );
    }
}
