//! Key encoding: the object's path, each name followed by a 0x00 byte.
//!
//! Names never contain control characters, so 0x00 cannot occur inside a
//! name. Hence, within one kind's table:
//! - the keys under a parent share the parent's key as a prefix, and that
//!   prefix ends in 0x00, so `a` never captures its sibling `ab`;
//! - byte order is path order (names compared bytewise, a name before any
//!   longer name it prefixes, since 0x00 sorts first);
//! - one parent's children are one contiguous range, whatever else is
//!   stored, and the same holds for any leading part of a path (cross-scope
//!   lists such as "every cell of realm x").

/// The separator (and terminator) byte.
const SEP: u8 = 0;

/// The key of the object at `names` (or the prefix of everything under it).
pub fn encode<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let len = names.iter().map(|n| n.as_ref().len() + 1).sum();
    let mut key = Vec::with_capacity(len);
    for n in names {
        key.extend_from_slice(n.as_ref().as_bytes());
        key.push(SEP);
    }
    key
}

/// The names a key was built from.
pub fn decode(key: &[u8]) -> Vec<String> {
    key.split(|b| *b == SEP)
        .take(key.iter().filter(|b| **b == SEP).count())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The half-open key range `[start, end)` holding every key that starts
/// with `prefix`. An empty prefix covers the whole table (`end` is `None`).
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if prefix.is_empty() {
        return (Vec::new(), None);
    }
    // Every non-empty prefix ends in SEP (0x00), so bumping that last byte
    // gives the first key past the range.
    let mut end = prefix.to_vec();
    let last = end.last_mut().expect("non-empty");
    debug_assert_eq!(*last, SEP);
    *last += 1;
    (prefix.to_vec(), Some(end))
}

/// A key as lowercase hex (continue tokens carry their last key so).
pub fn to_hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key `hex` spells; `None` unless it is a non-empty, even-length run
/// of hex digits (a token is client input).
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(from_hex(&to_hex(b"r\0s\0")), Some(b"r\0s\0".to_vec()));
        for bad in ["", "0", "0g", "\u{e9}\u{e9}", "a\u{e9}", "a\u{e9}a"] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        // Valid names: printable, no '_' or '/'; includes multi-byte text.
        "[a-zA-Z0-9.\\-ñ]{1,6}"
    }

    proptest! {
        #[test]
        fn round_trip(names in proptest::collection::vec(name(), 1..5)) {
            prop_assert_eq!(decode(&encode(&names)), names);
        }

        #[test]
        fn order_is_path_order(a in proptest::collection::vec(name(), 1..4),
                               b in proptest::collection::vec(name(), 1..4)) {
            // Lexicographic order of the name lists, each name bytewise.
            let by_names = a.iter().map(|s| s.as_bytes()).cmp(b.iter().map(|s| s.as_bytes()));
            prop_assert_eq!(encode(&a).cmp(&encode(&b)), by_names);
        }

        #[test]
        fn children_are_exactly_the_prefix_range(parent in proptest::collection::vec(name(), 1..3),
                                                 other in proptest::collection::vec(name(), 1..4),
                                                 child in name()) {
            let (start, end) = prefix_range(&encode(&parent));
            let end = end.unwrap();
            let mut under = parent.clone();
            under.push(child);
            let k = encode(&under);
            prop_assert!(k >= start && k < end);
            let o = encode(&other);
            // The prefix itself (`other == parent`) starts with the prefix too;
            // it never occurs among the children (the parent is in its own
            // kind's table).
            let is_under = other.len() >= parent.len() && other[..parent.len()] == parent[..];
            prop_assert_eq!(o >= start && o < end, is_under);
        }
    }

    #[test]
    fn a_prefix_never_captures_a_sibling() {
        let (start, end) = prefix_range(&encode(&["a"]));
        let end = end.unwrap();
        for (names, inside) in [
            (vec!["a", "x"], true),
            (vec!["a", ""], true),
            (vec!["ab", "x"], false),
            (vec!["a.", "x"], false),
            (vec!["b"], false),
        ] {
            let k = encode(&names);
            assert_eq!(k >= start && k < end, inside, "{names:?}");
        }
        assert!(encode(&["a"]) < encode(&["a", "z"]));
        assert!(encode(&["a", "z"]) < encode(&["ab"]));
    }
}
