//! Where things live under the prefix `P`, and what a revision means.
//!
//! ```text
//! P/o/<kind letter>/<keys::encode(names)>   objects (the record of codec)
//! P/k/<name>                                 tokens (digests, never values)
//! P/m/format                                 storage format ("3")
//! P/m/offset                                 "<offset> <floor>" (a restore)
//! P/m/compact                                compaction compare-and-swap
//! P/m/heartbeat                              progress on an idle keyspace
//! P/m/tokens                                 a token was ever created
//! P/m/written                                put by every object write: its
//!                                            mod_revision is the last one's
//! ```
//! Objects of one kind are one range, and one parent's children one
//! range inside it, in path order (the names' 0x00 separators, as redb).

use crate::model::Kind;
use crate::store::error::StoreError;

/// The storage format this build reads and writes under a prefix.
pub const FORMAT: u32 = 3;

/// resourceVersions per etcd revision: a transaction's changes are
/// numbered within it.
pub const PER_REVISION: u64 = 1_000_000;

/// The keys of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    root: Vec<u8>,
}

impl Layout {
    /// The layout under `prefix` (which must start with `/` and hold no
    /// 0x00 byte).
    pub fn new(prefix: &str) -> Result<Layout, StoreError> {
        let trimmed = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || trimmed.is_empty() || prefix.contains('\0') {
            return Err(StoreError::BadRequest(format!(
                "--etcd-prefix {prefix:?} must start with '/' and name something below the root"
            )));
        }
        Ok(Layout {
            root: trimmed.as_bytes().to_vec(),
        })
    }

    fn under(&self, part: &str) -> Vec<u8> {
        let mut k = self.root.clone();
        k.push(b'/');
        k.extend_from_slice(part.as_bytes());
        k
    }

    /// Every key of this store.
    pub fn all(&self) -> Vec<u8> {
        self.under("")
    }

    /// Every object.
    pub fn objects(&self) -> Vec<u8> {
        self.under("o/")
    }

    /// The objects of `kind`.
    pub fn kind(&self, kind: Kind) -> Vec<u8> {
        self.under(&format!("o/{}/", letter(kind)))
    }

    /// The object of `kind` whose path key ([`crate::store::keys`]) is
    /// `key` (or, for a prefix of it, the start of its range).
    pub fn object(&self, kind: Kind, key: &[u8]) -> Vec<u8> {
        let mut k = self.kind(kind);
        k.extend_from_slice(key);
        k
    }

    /// A meta key.
    pub fn meta(&self, name: &str) -> Vec<u8> {
        self.under(&format!("m/{name}"))
    }

    /// A token's key (`""`: the tokens' prefix).
    pub fn token(&self, name: &str) -> Vec<u8> {
        self.under(&format!("k/{name}"))
    }

    /// The kind and path key of an object's etcd key; `None` for anything
    /// else.
    pub fn parse(&self, key: &[u8]) -> Option<(Kind, Vec<u8>)> {
        let rest = key.strip_prefix(self.objects().as_slice())?;
        let (&l, rest) = rest.split_first()?;
        let rest = rest.strip_prefix(b"/")?;
        let kind = Kind::ALL.into_iter().find(|k| letter(*k) as u8 == l)?;
        Some((kind, rest.to_vec()))
    }
}

fn letter(kind: Kind) -> char {
    match kind {
        Kind::Realm => 'r',
        Kind::Space => 's',
        Kind::Stack => 't',
        Kind::Cell => 'c',
        Kind::Container => 'n',
    }
}

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Where the resourceVersions of a prefix start: set by a restore, so
/// that they stay above what the restored store handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offset {
    /// Added to every etcd revision.
    pub offset: u64,
    /// The etcd revision of the restore: history before it is gone.
    pub floor: i64,
}

impl Offset {
    /// Parses `"<offset> <floor>"`.
    pub fn parse(v: &[u8]) -> Option<Offset> {
        let s = std::str::from_utf8(v).ok()?;
        let (o, f) = s.trim().split_once(' ')?;
        Some(Offset {
            offset: o.parse().ok()?,
            floor: f.parse().ok()?,
        })
    }

    /// The stored form.
    pub fn render(&self) -> String {
        format!("{} {}", self.offset, self.floor)
    }
}

/// etcd revisions to resourceVersions and back.
#[derive(Debug, Clone, Copy)]
pub struct Revisions {
    offset: Offset,
}

impl Revisions {
    /// With a prefix's offset.
    pub fn new(offset: Offset) -> Revisions {
        Revisions { offset }
    }

    /// The resourceVersion of the `index`-th change of etcd revision `r`.
    pub fn rv(&self, r: i64, index: u64) -> u64 {
        (r.max(0) as u64 + self.offset.offset) * PER_REVISION + index
    }

    /// "Every change up to and including etcd revision `r`".
    pub fn position(&self, r: i64) -> u64 {
        self.rv(r, PER_REVISION - 1)
    }

    /// The etcd revision and index a resourceVersion names; `None` for
    /// one from before this prefix's history (a restore's offset).
    pub fn split(&self, rv: u64) -> Option<(i64, u64)> {
        let r = (rv / PER_REVISION).checked_sub(self.offset.offset)?;
        Some((i64::try_from(r).ok()?, rv % PER_REVISION))
    }

    /// The etcd revision before which history is gone (a restore).
    pub fn floor(&self) -> i64 {
        self.offset.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_stay_in_their_ranges() {
        let l = Layout::new("/mh/").unwrap();
        let key = crate::store::keys::encode(&["r", "s"]);
        let k = l.object(Kind::Space, &key);
        assert_eq!(k, b"/mh/o/s/r\0s\0");
        assert_eq!(l.parse(&k), Some((Kind::Space, key)));
        assert_eq!(l.parse(&l.meta("format")), None);
        assert!(k < prefix_end(&l.kind(Kind::Space)));
        assert!(Layout::new("mh").is_err());
        assert!(Layout::new("/").is_err());
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn revisions_are_composite_and_positions_cover_a_revision() {
        let r = Revisions::new(Offset {
            offset: 2,
            floor: 7,
        });
        assert_eq!(r.rv(5, 0), 7_000_000);
        assert_eq!(r.rv(5, 3), 7_000_003);
        assert_eq!(r.position(5), 7_999_999);
        assert!(r.position(5) < r.rv(6, 0));
        assert_eq!(r.split(7_000_003), Some((5, 3)));
        assert_eq!(r.split(1_999_999), None, "before the restore's offset");
        assert_eq!(Offset::parse(b"2 7"), Some(r.offset));
        assert_eq!(Offset::parse(r.offset.render().as_bytes()), Some(r.offset));
    }
}
