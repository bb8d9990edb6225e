//! Replaying the write-ahead log into the database at open: the records
//! that continue the database's revision, in one durable transaction,
//! through the same table code as the writer
//! ([`super::tables::WriteTables::store_change`]).

use redb::Database;

use super::tables::{self, META, REVISION_KEY, Sizes, WriteTables};
use super::wal::{Records, Stop};
use crate::store::codec;
use crate::store::error::{EngineError, StoreError};

/// Applies the log's records that continue `db`'s revision, in one
/// durable transaction; answers how many changes were applied. Records at
/// or below the database's revision are skipped; one that would leave a
/// gap, holds records of another format, or a damaged record followed by
/// valid ones with higher revisions stops the start, and nothing is
/// changed.
pub(super) fn replay(db: &Database, records: &(impl Records + ?Sized)) -> Result<u64, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let log = records.name();
    let applied = {
        let mut meta = txn.open_table(META)?;
        let start = tables::revision(&meta)?;
        let mut rev = start;
        let mut tables = WriteTables::open(&txn)?;
        let stop = records.for_each_record(&mut |first, entries| {
            if entries.is_empty() || first + entries.len() as u64 - 1 <= rev {
                return Ok(());
            }
            if first != rev + 1 {
                return Err(StoreError::Engine(EngineError::msg(format!(
                    "the write-ahead log continues revision {} but the database is at revision \
                     {rev}: the database file was replaced or lost writes; if that was on \
                     purpose, move the log ({log}) aside",
                    first - 1,
                ))));
            }
            if let Some(e) = entries
                .iter()
                .find(|e| e.record.first() != Some(&codec::RECORD_FORMAT))
            {
                return Err(StoreError::Engine(EngineError::msg(format!(
                    "the write-ahead log {log} holds records of format {:?}, and this build \
                     writes format {}: stop the server cleanly with the build that wrote it \
                     (a clean stop leaves the log empty), then start this one",
                    e.record.first(),
                    codec::RECORD_FORMAT
                ))));
            }
            for e in entries {
                rev += 1;
                tables.store_change(rev, e.change, e.kind, e.key, e.record, None)?;
            }
            Ok(())
        })?;
        if let Stop::Unreadable { at } = stop {
            return Err(StoreError::Engine(EngineError::msg(format!(
                "the write-ahead log {log}'s record at offset {at} has a valid checksum but \
                 cannot be read (written by a newer build, or damaged); start the build that \
                 wrote it, or see `modelhub check --data <db>`"
            ))));
        }
        // An empty header in the middle of the log (a zeroed or lost
        // sector) hides what follows as well as damage does.
        let (at, why) = match stop {
            Stop::Bad { at, why } => (at, why),
            Stop::End { at } => (at, "an empty record header"),
            Stop::Unreadable { .. } => unreachable!("refused above"),
        };
        if let Some((lo, hi)) = records.beyond(at, rev)? {
            return Err(StoreError::Engine(EngineError::msg(format!(
                "the write-ahead log {log} is damaged at offset {at} ({why}), and valid records \
                 of revisions {lo} to {hi} follow it: acknowledged writes would be lost. Nothing \
                 was changed. `modelhub check --data <db>` reports; `--accept-loss` drops \
                 everything from the damage on"
            ))));
        }
        if rev != start {
            meta.insert(REVISION_KEY, rev)?;
            Sizes::add(&mut meta, tables.delta)?;
        }
        rev - start
    };
    if applied > 0 {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::super::open;
    use super::super::tables::EVENTS;
    use super::super::wal::Journal;
    use super::super::wal::tests::{Log, journal};
    use super::*;
    use crate::model::Kind;
    use crate::store::change::ChangeType;
    use crate::store::options::StoreOptions;
    use redb::{ReadableDatabase, ReadableTable};
    use std::sync::Arc;

    fn db(dir: &tempfile::TempDir) -> Database {
        let options = StoreOptions {
            cache_bytes: 1 << 20,
            ..StoreOptions::default()
        };
        let opened = open::open(&dir.path().join("t.redb"), &options).unwrap();
        drop(opened.wal);
        Arc::into_inner(opened.db).expect("one handle")
    }

    fn run(db: &Database, log: &Log) -> Result<u64, StoreError> {
        replay(db, log)
    }

    fn revision(db: &Database) -> u64 {
        let txn = db.begin_read().unwrap();
        tables::read_meta(&txn, REVISION_KEY).unwrap().unwrap_or(0)
    }

    fn events(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(EVENTS).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    #[test]
    fn replay_applies_what_continues_the_database_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let log = Log::of(&[journal(1, 3), journal(4, 2)]);
        assert_eq!(run(&db, &log).unwrap(), 5);
        assert_eq!(revision(&db), 5);
        assert_eq!(events(&db), vec![1, 2, 3, 4, 5]);
        // Replaying the same log again changes nothing.
        assert_eq!(run(&db, &log).unwrap(), 0);
        assert_eq!(revision(&db), 5);
    }

    #[test]
    fn replay_skips_stale_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        assert_eq!(run(&db, &Log::of(&[journal(1, 5)])).unwrap(), 5);
        // A crash right after a checkpoint, before the next append: the
        // log still holds records the database already has.
        assert_eq!(run(&db, &Log::of(&[journal(1, 5)])).unwrap(), 0);
        let log = Log::of(&[journal(6, 2), journal(2, 3)]);
        assert_eq!(run(&db, &log).unwrap(), 2);
        assert_eq!(revision(&db), 7);
        assert_eq!(events(&db), vec![1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_gap_between_database_and_log_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let err = run(&db, &Log::of(&[journal(10, 1)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("continues revision 9"), "{err}");
        assert!(err.contains("at revision 0"), "{err}");
        assert_eq!(revision(&db), 0);
    }

    #[test]
    fn records_of_another_format_refuse_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut j = Journal::default();
        j.push(1, ChangeType::Added, Kind::Realm, b"k", b"\x09rec");
        let err = run(&db, &Log::of(&[j])).unwrap_err().to_string();
        assert!(
            err.contains("format Some(9)") && err.contains("clean"),
            "{err}"
        );
        assert_eq!(revision(&db), 0);
    }

    #[test]
    fn deletions_replay_as_removals() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut j = journal(1, 2);
        j.push(3, ChangeType::Deleted, Kind::Realm, b"k1", b"\x02rec");
        assert_eq!(run(&db, &Log::of(&[j])).unwrap(), 3);
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(tables::objects(Kind::Realm)).unwrap();
        let keys: Vec<Vec<u8>> = t
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_vec())
            .collect();
        assert_eq!(keys, vec![b"k2".to_vec()]);
    }

    #[test]
    fn replay_keeps_the_stored_bytes_equal_to_a_recount() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut j = journal(1, 3);
        j.push(4, ChangeType::Deleted, Kind::Realm, b"k2", b"\x02rec");
        j.push(
            5,
            ChangeType::Modified,
            Kind::Realm,
            b"k1",
            b"\x02longer record",
        );
        run(&db, &Log::of(&[j])).unwrap();
        let txn = db.begin_write().unwrap();
        let kept = tables::Sizes::read(&txn.open_table(META).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(kept, tables::count_sizes(&txn).unwrap());
        assert_eq!(kept.objects, 4 + 14, "k3, and k1 rewritten");
    }

    #[test]
    fn a_damaged_record_in_the_middle_refuses_to_start_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut log = Log::of(&[journal(1, 2), journal(3, 2), journal(5, 2)]);
        let at = log.offsets[1];
        log.bytes[at as usize + 30] ^= 1;
        let err = run(&db, &log).unwrap_err().to_string();
        assert!(err.contains(&format!("offset {at}")), "{err}");
        assert!(err.contains("revisions 5 to 6"), "{err}");
        assert!(err.contains("checksum"), "{err}");
        assert_eq!(revision(&db), 0, "nothing replayed");
        // A damaged last record is a torn tail: the records before it
        // replay.
        let mut torn = Log::of(&[journal(1, 2), journal(3, 2)]);
        let at = torn.offsets[1];
        torn.bytes[at as usize + 30] ^= 1;
        assert_eq!(run(&db, &torn).unwrap(), 2);
    }

    #[test]
    fn a_zeroed_header_in_the_middle_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut log = Log::of(&[journal(1, 2), journal(3, 2), journal(5, 2)]);
        let at = log.offsets[1] as usize;
        log.bytes[at..at + 8].fill(0);
        let err = run(&db, &log).unwrap_err().to_string();
        assert!(err.contains("empty record header"), "{err}");
        assert!(err.contains("revisions 5 to 6"), "{err}");
        assert_eq!(revision(&db), 0, "nothing replayed");
    }

    #[test]
    fn a_valid_checksum_over_an_unreadable_record_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut j = journal(1, 1);
        let mut bytes = j.encode();
        // An unknown kind, with the checksum recomputed: never a torn write.
        bytes[20 + 1] = 9;
        let crc = crc32fast::hash(&bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        j = Journal::default();
        let mut log = Log::of(&[j]);
        log.put_record(0, &bytes);
        let err = run(&db, &log).unwrap_err().to_string();
        assert!(err.contains("valid checksum"), "{err}");
        assert_eq!(revision(&db), 0);
    }
}
