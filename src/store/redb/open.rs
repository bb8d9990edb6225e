//! Opening a store, at start-up and when recovering from a storage
//! failure, in this order: the database file (created whole, with its
//! identity, under a temporary name then renamed; or checked), the log
//! beside it (checked against that identity), the log's replay, and only
//! then a format migration (so that a log is never stranded by a format
//! change), ending with the directory synced and a durable mark that the
//! log is in use until the next clean stop.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase};

use super::file::database;
use super::tables::{
    self, CLEAN_KEY, COMPACTED_KEY, FORMAT_KEY, ID_HI_KEY, ID_LO_KEY, META, Sizes,
};
use super::wal::{self, Records, Wal};
use super::{migrate, replay};
use crate::store::disk::parent_dir;
use crate::store::error::{EngineError, StoreError};
use crate::store::options::StoreOptions;

/// An open database and its log.
pub(super) struct Opened {
    pub db: Arc<Database>,
    pub wal: Wal,
    /// Changes the replay applied.
    pub replayed: u64,
    /// Bytes stored.
    pub sizes: Sizes,
}

/// Marks the database open (its log must exist until a clean stop), and
/// counts its stored bytes if it does not keep them yet, in one durable
/// transaction; answers the stored bytes.
fn mark_open(db: &Database) -> Result<Sizes, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let kept = Sizes::read(&txn.open_table(META)?)?;
    let sizes = match kept {
        Some(sizes) => sizes,
        None => {
            tracing::info!(
                "counting the stored bytes (once, for a database that did not keep them)"
            );
            tables::count_sizes(&txn)?
        }
    };
    txn.open_table(META)?.insert(CLEAN_KEY, 0)?;
    txn.commit()?;
    Ok(sizes)
}

/// What the metadata table says about the file.
pub(super) struct Meta {
    format: Option<u64>,
    id: Option<u128>,
    clean: Option<u64>,
}

fn read_meta(db: &Database) -> Result<Meta, StoreError> {
    let txn = db.begin_read()?;
    let hi = tables::read_meta(&txn, ID_HI_KEY)?;
    let lo = tables::read_meta(&txn, ID_LO_KEY)?;
    Ok(Meta {
        format: tables::read_meta(&txn, FORMAT_KEY)?,
        id: hi
            .zip(lo)
            .map(|(hi, lo)| (u128::from(hi) << 64) | u128::from(lo)),
        clean: tables::read_meta(&txn, CLEAN_KEY)?,
    })
}

/// Writes metadata in one durable transaction.
fn put_meta(db: &Database, pairs: &[(&str, u64)]) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    {
        let mut meta = txn.open_table(META)?;
        for (k, v) in pairs {
            meta.insert(*k, *v)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// A new database identity.
fn new_id() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// Gives a new database its tables and metadata (format, identity, a
/// clean stop), in one durable transaction.
pub(super) fn initialise(db: &Database) -> Result<Meta, StoreError> {
    let id = new_id();
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    tables::create_all(&txn)?;
    {
        let mut m = txn.open_table(META)?;
        m.insert(FORMAT_KEY, u64::from(migrate::CURRENT_FORMAT))?;
        m.insert(COMPACTED_KEY, 0)?;
        m.insert(ID_HI_KEY, (id >> 64) as u64)?;
        m.insert(ID_LO_KEY, id as u64)?;
        m.insert(CLEAN_KEY, 1)?;
    }
    txn.commit()?;
    tracing::info!(format = migrate::CURRENT_FORMAT, "initialised new database");
    Ok(Meta {
        format: Some(u64::from(migrate::CURRENT_FORMAT)),
        id: Some(id),
        clean: Some(1),
    })
}

/// Creates the database at `path` whole: made and initialised under a
/// temporary name, then renamed into place, so that a crash while it is
/// set up never leaves a half-made file there (redb refuses for good a
/// file whose creation it did not finish).
fn create(path: &FsPath, options: &StoreOptions) -> Result<(), StoreError> {
    let disk = &*options.disk;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    if disk.exists(&tmp)? {
        disk.remove(&tmp)?;
    }
    initialise(&database(&tmp, options)?)?;
    disk.rename(&tmp, path)?;
    Ok(())
}

/// The spare file beside the database: `<data>.spare`.
pub(super) fn spare_path(path: &FsPath) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".spare");
    p.into()
}

/// Makes sure the spare file is there, full size, if there is room for it
/// and the free-space reserve besides; answers whether it is.
pub(super) fn ensure_spare(path: &FsPath, options: &StoreOptions) -> bool {
    let (disk, bytes) = (&*options.disk, options.spare_bytes);
    if bytes == 0 {
        return true;
    }
    let spare = spare_path(path);
    if disk.size(&spare).is_ok_and(|n| n >= bytes) {
        return true;
    }
    let free = disk.free_bytes(path).unwrap_or(0);
    if free < bytes.saturating_add(options.min_free_bytes) {
        tracing::warn!(
            free,
            spare = bytes,
            "no room for the spare file: a full disk would stop reads until space is freed"
        );
        return false;
    }
    let written = (|| -> std::io::Result<()> {
        let file = disk.open(&spare, true)?;
        // Not zeros: a compressing filesystem would not allocate them.
        let mut rng = crate::store::disk::Rng(bytes);
        let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(chunk.len() as u64) as usize;
            file.write_all_at(&chunk[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
        disk.sync_dir(parent_dir(path))
    })();
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not write the spare file");
            let _ = disk.remove(&spare);
            false
        }
    }
}

/// Deletes the spare file (a full disk): answers the bytes freed.
pub(super) fn release_spare(path: &FsPath, options: &StoreOptions) -> u64 {
    let disk = &*options.disk;
    let spare = spare_path(path);
    let Ok(size) = disk.size(&spare) else {
        return 0;
    };
    match disk
        .remove(&spare)
        .and_then(|()| disk.sync_dir(parent_dir(path)))
    {
        Ok(()) => size,
        Err(e) => {
            tracing::warn!(error = %e, "could not delete the spare file");
            0
        }
    }
}

/// Drops the clean cached pages of the database and its log: after a
/// failed sync they may hold what the disk does not (Linux marks pages
/// whose write failed clean), and the next open must read what the disk
/// holds. Called before reopening after a failure, and when an open or
/// the process fails; dirty pages stay.
pub(super) fn drop_caches(path: &FsPath, options: &StoreOptions) {
    for file in [path.to_owned(), wal::path_for(path)] {
        match options.disk.open(&file, false).and_then(|f| f.drop_cache()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "could not drop the file's cache")
            }
        }
    }
}

/// Opens (creating, replaying, migrating) the store at `path`.
pub(super) fn open(path: &FsPath, options: &StoreOptions) -> Result<Opened, StoreError> {
    let disk = &*options.disk;
    let began = std::time::Instant::now();
    if !disk.exists(path)? {
        create(path, options)?;
    }
    let db = database(path, options)?;
    let db_ms = began.elapsed().as_millis();
    let mut meta = read_meta(&db)?;
    if meta.format.is_none() {
        // A file redb made, but not this store.
        meta = initialise(&db)?;
    }
    let format = meta.format.unwrap_or_default();
    if format > u64::from(migrate::CURRENT_FORMAT) {
        return Err(StoreError::FormatTooNew {
            found: u32::try_from(format).unwrap_or(u32::MAX),
            supported: migrate::CURRENT_FORMAT,
        });
    }
    let id = match meta.id {
        Some(id) => id,
        None => {
            // A database from before identities: given one now.
            let id = new_id();
            put_meta(
                &db,
                &[(ID_HI_KEY, (id >> 64) as u64), (ID_LO_KEY, id as u64)],
            )?;
            id
        }
    };
    let log = wal::path_for(path);
    // A missing log is fine only if the last stop was clean (or the
    // database predates the mark).
    let may_create = meta.clean != Some(0);
    let mut wal = Wal::open(
        disk,
        &log,
        id,
        may_create,
        (options.checkpoint_interval, options.checkpoint_bytes),
        options.sabotage,
    )?;
    let mut replayed = 0;
    let holds = wal.holds_records()?;
    if holds && format != u64::from(migrate::CURRENT_FORMAT) {
        return Err(StoreError::Engine(EngineError::msg(format!(
            "the database {} is at storage format {format} and its write-ahead log {} holds \
             writes not yet in it: start the build that wrote them once (it replays the log; \
             stop it cleanly), then this one, which migrates to format {}",
            path.display(),
            log.display(),
            migrate::CURRENT_FORMAT
        ))));
    }
    // After an unclean stop the log is read even if its first header is
    // empty: a zeroed sector there must not hide the records after it.
    let replay_began = std::time::Instant::now();
    if holds || meta.clean == Some(0) {
        replayed = replay::replay(&db, &wal)?;
        if replayed > 0 {
            tracing::info!(replayed, path = %wal.name(), "replayed the write-ahead log");
        }
        if holds {
            wal.clear(id)?;
        }
    }
    let db = if format != u64::from(migrate::CURRENT_FORMAT) {
        drop(db);
        migrate::migrate(path, options, format)?
    } else {
        db
    };
    // The files' directory entries are made durable before the log is
    // relied on: a new database's rename, or a log an earlier start
    // created but failed before syncing.
    if !options.sabotage.skip_dir_sync {
        disk.sync_dir(parent_dir(path))?;
    }
    let replay_ms = replay_began.elapsed().as_millis();
    let sizes = mark_open(&db)?;
    tracing::info!(
        database_ms = db_ms,
        replay_ms,
        total_ms = began.elapsed().as_millis(),
        replayed,
        clean_stop = meta.clean == Some(1),
        "store opened"
    );
    Ok(Opened {
        db: Arc::new(db),
        wal,
        replayed,
        sizes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::wal::tests::journal;
    use super::*;
    use crate::store::options::Sabotage;
    use redb::ReadableDatabase;

    #[test]
    fn a_database_to_migrate_with_an_unreplayed_log_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let fixture = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1.redb");
        std::fs::copy(&fixture, &path).unwrap();
        let options = StoreOptions::default();
        // A first start gives the format-1 database its identity (in the
        // backup it keeps of format 1 too) and migrates it.
        drop(open(&path, &options).unwrap());
        let backup = path.with_extension("format-1.bak");
        std::fs::copy(&backup, &path).unwrap();
        // A log of that database holding writes not yet in it, as a
        // format-1 build would leave after a crash.
        let id = {
            let db = database(&path, &options).unwrap();
            read_meta(&db).unwrap().id.expect("an identity")
        };
        let log = wal::path_for(&path);
        std::fs::remove_file(&log).unwrap();
        let mut wal = Wal::open(
            &*options.disk,
            &log,
            id,
            true,
            (
                std::time::Duration::from_secs(60),
                crate::store::options::MAX_CHECKPOINT_BYTES,
            ),
            Sabotage::default(),
        )
        .unwrap();
        wal.append(&mut journal(1, 1)).unwrap();
        drop(wal);
        let before = std::fs::read(&path).unwrap();
        let err = open(&path, &options).err().expect("refused").to_string();
        assert!(err.contains("storage format 1"), "{err}");
        assert!(err.contains("holds writes not yet in it"), "{err}");
        let db = database(&path, &options).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(tables::read_meta(&txn, FORMAT_KEY).unwrap(), Some(1));
        drop((txn, db));
        assert_eq!(std::fs::read(&path).unwrap().len(), before.len());
    }
}
