//! Building a database from a backup, offline: a new database is created
//! beside the target under a temporary name, every object is written with
//! its metadata as it was, in one durable transaction, and the file is
//! synced and linked into place (never over an existing file), then the
//! directory is synced. A crash leaves at most the temporary file, never a
//! partial database at the target.
//!
//! The restored revision is the one given (the backup's, plus a jump), and
//! every event up to it counts as compacted: there is no history, so a
//! watch resumed from any revision of the old history is `Gone`.

use std::fs::File;
use std::path::{Path as FsPath, PathBuf};

use redb::ReadableTable;

use super::tables::{COMPACTED_KEY, META, REVISION_KEY, WriteTables};
use super::wal;
use super::{file, open};
use crate::model::AnyObject;
use crate::store::error::StoreError;
use crate::store::options::StoreOptions;
use crate::store::{codec, keys};

/// How often progress is logged, in objects.
const PROGRESS_EVERY: u64 = 100_000;

/// The files of a store at `path`: the database and its write-ahead log.
pub fn files(path: &FsPath) -> Vec<PathBuf> {
    vec![path.to_path_buf(), wal::path_for(path)]
}

fn refuse_existing(path: &FsPath) -> Result<(), StoreError> {
    for file in files(path) {
        if std::fs::symlink_metadata(&file).is_ok() {
            return Err(exists(&file));
        }
    }
    Ok(())
}

fn exists(file: &FsPath) -> StoreError {
    StoreError::BadRequest(format!(
        "{} exists: a restore builds a new database and never replaces one; move it aside or \
         restore to another path",
        file.display()
    ))
}

/// The temporary name the database is built under, beside `path`.
fn temp_path(path: &FsPath) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".restoring-{}", std::process::id()));
    path.with_file_name(name)
}

/// Builds the database at `path` from `objects` (parents before children),
/// at `revision`; answers how many objects were written. Refuses if any
/// file of a store at `path` exists; on any failure, nothing is left at
/// `path`.
pub fn restore<E: From<StoreError>>(
    path: &FsPath,
    options: &StoreOptions,
    revision: u64,
    objects: impl Iterator<Item = Result<AnyObject, E>>,
) -> Result<u64, E> {
    refuse_existing(path)?;
    let temp = temp_path(path);
    // A leftover of an earlier restore that had this process id.
    if temp.exists() {
        std::fs::remove_file(&temp).map_err(StoreError::from)?;
    }
    let result = build(&temp, options, revision, objects)
        .and_then(|count| place(&temp, path).map(|()| count).map_err(E::from));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Creates the database at `temp` (as a new server would), writes the
/// objects and the revision in one durable transaction, and syncs the file.
fn build<E: From<StoreError>>(
    temp: &FsPath,
    options: &StoreOptions,
    revision: u64,
    objects: impl Iterator<Item = Result<AnyObject, E>>,
) -> Result<u64, E> {
    let db = file::database(temp, options)?;
    open::initialise(&db)?;
    let mut txn = db.begin_write().map_err(StoreError::from)?;
    txn.set_quick_repair(true);
    let count = {
        let mut tables = WriteTables::open(&txn)?;
        let mut count = 0u64;
        for object in objects {
            put(&mut tables, &object?, revision)?;
            count += 1;
            if count.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!(objects = count, "restoring");
            }
        }
        let mut meta = txn.open_table(META).map_err(StoreError::from)?;
        meta.insert(REVISION_KEY, revision)
            .map_err(StoreError::from)?;
        meta.insert(COMPACTED_KEY, revision)
            .map_err(StoreError::from)?;
        count
    };
    txn.commit().map_err(StoreError::from)?;
    drop(db);
    File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::from)?;
    Ok(count)
}

/// Writes one object as it was; its parent must be there already and its
/// path must be free.
fn put(tables: &mut WriteTables<'_>, obj: &AnyObject, revision: u64) -> Result<(), StoreError> {
    let path = obj.path();
    let rv = obj.meta().resource_version;
    if rv == 0 || rv > revision {
        return Err(StoreError::BadRequest(format!(
            "{path}: resourceVersion {rv} is not in 1..={revision}"
        )));
    }
    if let Some(parent) = path.parent()
        && tables
            .of(parent.kind())
            .get(keys::encode(parent.names()).as_slice())?
            .is_none()
    {
        return Err(StoreError::ParentNotFound { parent });
    }
    let key = keys::encode(path.names());
    let record = codec::encode(obj);
    if tables
        .of(path.kind())
        .insert(key.as_slice(), record.as_slice())?
        .is_some()
    {
        return Err(StoreError::AlreadyExists(path));
    }
    Ok(())
}

/// Links the finished database at `path` (which must still be free), drops
/// the temporary name and syncs the directory.
fn place(temp: &FsPath, path: &FsPath) -> Result<(), StoreError> {
    refuse_existing(path)?;
    match std::fs::hard_link(temp, path) {
        Ok(()) => std::fs::remove_file(temp)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists(path)),
        // A file system without hard links: rename, checked just before.
        Err(_) => std::fs::rename(temp, path)?,
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => FsPath::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::*;
    use crate::model::samples;

    fn run(path: &FsPath, objects: Vec<Result<AnyObject, StoreError>>) -> Result<u64, StoreError> {
        restore(path, &StoreOptions::default(), 1_000, objects.into_iter())
    }

    #[test]
    fn objects_come_back_as_they_were_at_the_new_revision_without_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        let objects = samples();
        assert_eq!(
            run(&path, objects.iter().cloned().map(Ok).collect()).unwrap(),
            5
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the database"
        );
        let db = file::database(&path, &StoreOptions::default()).unwrap();
        assert_eq!(read::revision(&db).unwrap(), 1_000);
        for obj in &objects {
            assert_eq!(&read::get(&db, &obj.path()).unwrap(), obj);
        }
        assert!(matches!(
            read::read_events(&db, 42, 10),
            Err(StoreError::Gone(_))
        ));
        assert!(read::read_events(&db, 1_000, 10).unwrap().events.is_empty());
    }

    #[test]
    fn an_existing_database_or_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        for existing in files(&path) {
            std::fs::write(&existing, b"keep").unwrap();
            let err = run(&path, Vec::new()).unwrap_err().to_string();
            assert!(
                err.contains("exists") && err.contains(&*existing.to_string_lossy()),
                "{err}"
            );
            assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
            std::fs::remove_file(&existing).unwrap();
        }
    }

    #[test]
    fn a_failure_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        let mut objects: Vec<_> = samples().into_iter().map(Ok).collect();
        objects.insert(2, Err(StoreError::BadRequest("line 3 is bad".into())));
        assert_eq!(
            run(&path, objects).unwrap_err(),
            StoreError::BadRequest("line 3 is bad".into())
        );
        // A child without its parent, and a path twice.
        let orphan = samples().into_iter().skip(1).map(Ok).collect();
        assert!(matches!(
            run(&path, orphan),
            Err(StoreError::ParentNotFound { .. })
        ));
        let realm = samples().remove(0);
        let twice = vec![Ok(realm.clone()), Ok(realm)];
        assert!(matches!(
            run(&path, twice),
            Err(StoreError::AlreadyExists(_))
        ));
        let mut newer = samples().remove(0);
        newer.meta_mut().resource_version = 1_001;
        assert!(matches!(
            run(&path, vec![Ok(newer)]),
            Err(StoreError::BadRequest(_))
        ));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left"
        );
    }
}
