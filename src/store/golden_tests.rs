//! Golden bytes of the stored records (declared from `codec.rs`).
//!
//! Every kind's sample from [`crate::model::samples`] (every field set, no
//! state the default one) must encode, with [`encode`], to exactly the
//! bytes committed in `tests/fixtures/golden/<kind>.hex`, and those bytes
//! must decode back to the sample; so must its event-log records, which
//! are the same bytes behind a header. A difference means the stored format changed:
//! that needs a new [`RECORD_FORMAT`] and a migration
//! (`migrations/README.md`) and a `CHANGELOG.md` entry. Then, and only
//! then, regenerate the files and review their diff:
//!
//! ```text
//! MODELHUB_BLESS=1 cargo test --lib golden_tests
//! ```
//!
//! A change to the samples themselves needs the same regeneration. Without
//! `MODELHUB_BLESS=1`, a missing file fails the test; it is never created
//! silently. The files are hex dumps, 16 bytes a line with the printable
//! bytes beside them, so that a diff shows where a record changed.

use std::path::PathBuf;

use super::*;
use crate::model::samples;

const BLESS: &str = "MODELHUB_BLESS";

fn golden_path(kind: Kind) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(format!("{}.hex", kind.as_str().to_lowercase()))
}

/// The file text for `bytes`: two comment lines, then 16 bytes a line.
fn dump(kind: Kind, bytes: &[u8]) -> String {
    let mut out = format!(
        "# {kind} record, record format {RECORD_FORMAT}, {} bytes (src/store/golden_tests.rs).\n\
         # Regenerate only after a format change: {BLESS}=1 cargo test --lib golden_tests\n",
        bytes.len()
    );
    for line in bytes.chunks(16) {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:<47}  |{text}|\n", hex.join(" ")));
    }
    out
}

/// The bytes of a dump: the hex before each line's `|`; `#` lines are
/// comments.
fn parse(path: &std::path::Path, text: &str) -> Vec<u8> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split('|').next().unwrap_or_default().split_whitespace())
        .map(|h| {
            u8::from_str_radix(h, 16)
                .unwrap_or_else(|e| panic!("{}: {h:?} is not a hex byte: {e}", path.display()))
        })
        .collect()
}

/// The committed bytes for `kind`, or (with `MODELHUB_BLESS=1`) `actual`,
/// written to the file first.
fn golden(kind: Kind, actual: &[u8]) -> Vec<u8> {
    let path = golden_path(kind);
    if std::env::var_os(BLESS).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, dump(kind, actual)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; a new golden file is made with {BLESS}=1 (see golden_tests.rs)",
            path.display()
        )
    });
    parse(&path, &text)
}

#[test]
fn every_kind_has_a_sample() {
    let kinds: Vec<Kind> = samples().iter().map(AnyObject::kind).collect();
    assert_eq!(kinds, Kind::ALL);
}

/// Every kind's record is its golden bytes, and so is its event-log
/// record behind the header `[format, change, kind]` (one test, so that
/// blessing writes each file once).
#[test]
fn records_of_every_kind_are_the_golden_bytes() {
    // The change bytes: Added 0, Modified 1, Deleted 2.
    let changes = [ChangeType::Added, ChangeType::Modified, ChangeType::Deleted];
    for (obj, kind_byte) in samples().into_iter().zip(0u8..) {
        let kind = obj.kind();
        let actual = encode(&obj);
        let want = golden(kind, &actual);
        if let Some(at) = (0..actual.len().max(want.len())).find(|&i| actual.get(i) != want.get(i))
        {
            panic!(
                "the {kind} record differs from {} at byte {at} (line {}): {} bytes written, \
                 {} committed. The stored format changed: that needs a new RECORD_FORMAT, a \
                 migration and a CHANGELOG entry before the file is regenerated (see \
                 golden_tests.rs)",
                golden_path(kind).display(),
                at / 16 + 3,
                actual.len(),
                want.len(),
            );
        }
        assert_eq!(
            decode(kind, &want),
            Ok(obj.clone()),
            "{kind}: the committed bytes decode"
        );

        for (change, change_byte) in changes.into_iter().zip(0u8..) {
            // Event format 3 without a previous version.
            let mut event = vec![3, change_byte, kind_byte, 0];
            event.extend_from_slice(&want[1..]);
            assert_eq!(
                encode_event(change, kind, &actual, None),
                event,
                "{change:?} {kind}"
            );
            assert_eq!(decode_event(&event), Ok((change, obj.clone(), None)));
            // Event format 2 (the record format's byte, no flag) still reads.
            let mut old = vec![want[0], change_byte, kind_byte];
            old.extend_from_slice(&want[1..]);
            assert_eq!(decode_event(&old), Ok((change, obj.clone(), None)));
        }
        // A modification with its previous version: labels {a: b}, state
        // Ready, terminating, as postcard writes them.
        let before = crate::store::change::Before {
            labels: [("a".to_string(), "b".to_string())].into(),
            state: "Ready",
            terminating: true,
        };
        let section = [1, 1, b'a', 1, b'b', 5, b'R', b'e', b'a', b'd', b'y', 1];
        let mut event = vec![3, 1, kind_byte, 1];
        event.extend_from_slice(&(section.len() as u32).to_le_bytes());
        event.extend_from_slice(&section);
        event.extend_from_slice(&want[1..]);
        assert_eq!(
            encode_event(ChangeType::Modified, kind, &actual, Some(&before)),
            event,
            "{kind} with its previous version"
        );
        let (change, decoded, got) = decode_event(&event).unwrap();
        assert_eq!((change, &decoded), (ChangeType::Modified, &obj));
        assert_eq!(got.as_deref(), Some(&before));
        // Truncated sections are corrupt, not a panic.
        for cut in 4..12 {
            assert!(decode_event(&event[..cut]).is_err(), "{kind} cut at {cut}");
        }
    }
}

/// The records format 1 wrote for the samples (`golden/format-1/`, kept
/// when record format 2 came) read as those samples without finalizers or
/// deletion timestamp, directly and once upgraded.
#[test]
fn format_1_records_read_as_format_2() {
    for obj in samples() {
        let kind = obj.kind();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/format-1")
            .join(format!("{}.hex", kind.as_str().to_lowercase()));
        let text = std::fs::read_to_string(&path).unwrap();
        let v1 = parse(&path, &text);
        assert_eq!(v1[0], 1, "{}", path.display());
        let mut want = obj.clone();
        want.meta_mut().finalizers.clear();
        want.meta_mut().deletion_timestamp = None;
        assert_eq!(decode(kind, &v1), Ok(want.clone()), "{kind}");
        let v2 = upgrade_v1(&v1[1..]).unwrap();
        assert_eq!(v2, encode(&want), "{kind}: upgraded bytes");
    }
}

#[test]
fn dumps_parse_back() {
    let bytes: Vec<u8> = (0..=255).collect();
    let path = golden_path(Kind::Realm);
    assert_eq!(parse(&path, &dump(Kind::Realm, &bytes)), bytes);
}

/// Whether a record's object is terminating reads from its metadata alone,
/// in record format 2 and (never) in format 1.
#[test]
fn terminating_is_read_from_the_metadata() {
    for obj in samples() {
        let mut live = obj.clone();
        live.meta_mut().deletion_timestamp = None;
        assert_eq!(peek_terminating(&encode(&obj)), Ok(true));
        assert_eq!(peek_terminating(&encode(&live)), Ok(false));
    }
    assert!(peek_terminating(&[]).is_err());
    assert!(peek_terminating(&[2, 1]).is_err());
    assert_eq!(peek_terminating(&[1]), Ok(false));
}
