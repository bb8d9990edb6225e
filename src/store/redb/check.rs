//! The offline check (`modelhub check`): what the database and its log
//! hold, whether a start would accept them, and, only when asked to
//! accept the loss, the repair that lets it start (the log truncated at
//! its damage, or a missing log accepted).

use std::path::Path as FsPath;

use redb::{Database, ReadableDatabase};

use super::file::database;
use super::tables::{self, CLEAN_KEY, FORMAT_KEY, ID_HI_KEY, ID_LO_KEY, META, REVISION_KEY};
use super::wal::{self, FILE_HEADER, MAGIC, START, Stop};
use crate::store::error::StoreError;
use crate::store::options::StoreOptions;

/// Findings, one line each; `ok` if a start would accept the files.
#[derive(Debug, Default)]
pub struct Report {
    /// What was found, for people.
    pub lines: Vec<String>,
    /// Whether a start would accept the files as they are now.
    pub ok: bool,
}

fn meta(db: &Database, key: &str) -> Result<Option<u64>, StoreError> {
    tables::read_meta(&db.begin_read()?, key)
}

/// Checks the store at `path`; with `accept_loss`, repairs what would stop
/// a start, losing what the damage already made unreadable.
pub fn check(
    path: &FsPath,
    options: &StoreOptions,
    accept_loss: bool,
) -> Result<Report, StoreError> {
    let disk = &*options.disk;
    let mut r = Report {
        ok: true,
        ..Report::default()
    };
    if !disk.exists(path)? {
        r.lines.push(format!("{}: no database", path.display()));
        r.ok = false;
        return Ok(r);
    }
    let db = database(path, options)?;
    let revision = meta(&db, REVISION_KEY)?.unwrap_or(0);
    let clean = meta(&db, CLEAN_KEY)?;
    let id = meta(&db, ID_HI_KEY)?
        .zip(meta(&db, ID_LO_KEY)?)
        .map(|(h, l)| (u128::from(h) << 64) | u128::from(l));
    r.lines.push(format!(
        "database {}: format {}, revision {revision}, {}",
        path.display(),
        meta(&db, FORMAT_KEY)?.unwrap_or(0),
        match clean {
            Some(1) => "stopped cleanly",
            Some(_) => "not stopped cleanly (the log must be replayed)",
            None => "clean stop not recorded",
        }
    ));
    let log = wal::path_for(path);
    if !disk.exists(&log)? {
        if clean == Some(0) {
            r.ok = false;
            r.lines.push(format!(
                "log {}: missing after an unclean stop: writes since the last checkpoint are lost",
                log.display()
            ));
            if accept_loss {
                let txn = db.begin_write()?;
                txn.open_table(META)?.insert(CLEAN_KEY, 1)?;
                txn.commit()?;
                r.lines
                    .push("accepted the loss: the next start creates a new log".into());
            }
        } else {
            r.lines.push(format!(
                "log {}: missing (fine after a clean stop)",
                log.display()
            ));
        }
        return Ok(r);
    }
    let file = disk.open(&log, false)?;
    let mut head = [0u8; FILE_HEADER];
    if let Err(e) = file.read_exact_at(&mut head, 0) {
        r.ok = false;
        r.lines
            .push(format!("log {}: header unreadable: {e}", log.display()));
        return Ok(r);
    }
    let base = if head[..8] == MAGIC {
        if crc32fast::hash(&head[..24])
            != u32::from_le_bytes(head[24..28].try_into().expect("4 bytes"))
        {
            r.ok = false;
            r.lines.push(format!(
                "log {}: its header is damaged (checksum mismatch); move the log aside and \
                 use --accept-loss, losing the writes since the last checkpoint",
                log.display()
            ));
            return Ok(r);
        }
        let found = u128::from_le_bytes(head[8..24].try_into().expect("16 bytes"));
        if Some(found) != id {
            r.lines.push(format!(
                "log {}: belongs to database {found:032x}, not this one{}",
                log.display(),
                id.map(|i| format!(" ({i:032x})")).unwrap_or_default()
            ));
            r.ok = false;
        }
        START
    } else {
        0
    };
    let (mut records, mut first, mut last) = (0u64, None, 0u64);
    let stop = wal::for_each_record(&*file, base, base == START, &mut |f, entries| {
        records += 1;
        first.get_or_insert(f);
        last = last.max((f + entries.len() as u64).saturating_sub(1));
        Ok(())
    });
    match first {
        None => r.lines.push(format!("log {}: empty", log.display())),
        Some(f) => r.lines.push(format!(
            "log {}: {records} records, revisions {f} to {last}{}",
            log.display(),
            if last <= revision {
                " (all in the database already)"
            } else {
                ""
            }
        )),
    }
    let damage = match stop? {
        Stop::End { at } => wal::beyond(&*file, at, last.max(revision))?.map(|(lo, hi)| {
            (
                at,
                format!(
                    "empty record header at offset {at}, followed by valid records of \
                     revisions {lo} to {hi}: they would be lost"
                ),
            )
        }),
        Stop::Unreadable { at } => Some((
            at,
            format!(
                "record at offset {at} has a valid checksum but cannot be read (written by a \
                 newer build, or damaged): it and everything after it would be lost"
            ),
        )),
        Stop::Bad { at, why } => match wal::beyond(&*file, at, last.max(revision))? {
            Some((lo, hi)) => Some((
                at,
                format!(
                    "damaged record at offset {at} ({why}), followed by valid records of \
                     revisions {lo} to {hi}: they would be lost"
                ),
            )),
            None => {
                r.lines.push(format!(
                    "log ends with a torn record at offset {at} ({why}): never acknowledged, \
                     ignored"
                ));
                None
            }
        },
    };
    if let Some((at, what)) = damage {
        r.ok = false;
        r.lines.push(what);
        if accept_loss {
            // Everything from the damage on: no valid record with a higher
            // revision may stay beyond the log's new end.
            let end = file.size()?;
            let zeros = vec![0u8; 1 << 20];
            let mut pos = at;
            while pos < end {
                let n = (end - pos).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], pos)?;
                pos += n as u64;
            }
            file.sync_data()?;
            r.lines.push(format!(
                "accepted the loss: the log now ends at offset {at}; the next start replays \
                 what comes before"
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::open;
    use super::super::wal::tests::journal;
    use super::*;

    #[test]
    fn damage_is_reported_and_only_repaired_when_the_loss_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let options = StoreOptions::default();
        let mut opened = open::open(&path, &options).unwrap();
        for first in [1, 2, 3] {
            opened.wal.append(&mut journal(first, 1)).unwrap();
        }
        drop(opened);
        let log = wal::path_for(&path);
        let mut bytes = std::fs::read(&log).unwrap();
        let second = (START + wal::ALIGN) as usize;
        bytes[second + 30] ^= 1;
        std::fs::write(&log, &bytes).unwrap();

        let report = check(&path, &options, false).unwrap();
        assert!(!report.ok);
        let text = report.lines.join("\n");
        assert!(text.contains(&format!("offset {second}")), "{text}");
        assert!(text.contains("revisions 3 to 3"), "{text}");
        assert_eq!(
            std::fs::read(&log).unwrap(),
            bytes,
            "a check changes nothing"
        );
        let refused = open::open(&path, &options).err().expect("refused");
        assert!(refused.to_string().contains("damaged"), "{refused}");

        let repaired = check(&path, &options, true).unwrap();
        assert!(repaired.lines.join("\n").contains("accepted the loss"));
        let reopened = open::open(&path, &options).unwrap();
        assert_eq!(reopened.replayed, 1, "what came before the damage");
    }

    #[test]
    fn a_missing_log_after_an_unclean_stop_is_reported_and_can_be_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let options = StoreOptions::default();
        drop(open::open(&path, &options).unwrap());
        std::fs::remove_file(wal::path_for(&path)).unwrap();
        assert!(open::open(&path, &options).is_err());
        let report = check(&path, &options, false).unwrap();
        assert!(!report.ok, "{:?}", report.lines);
        check(&path, &options, true).unwrap();
        open::open(&path, &options).unwrap();
    }
}
