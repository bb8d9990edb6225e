//! Rendered documents, cached by object and revision, so relisting
//! unchanged objects copies bytes instead of decoding and re-encoding them.
//!
//! An entry is valid exactly for the `resourceVersion` it was rendered at;
//! a newer write simply makes it miss. Memory is bounded by a byte budget
//! (when full, the cache starts over).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;

use crate::model::Kind;

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
