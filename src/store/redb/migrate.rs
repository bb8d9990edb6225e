//! Storage format migration at start-up (procedure:
//! `migrations/README.md`), after the log was replayed.

use std::path::Path as FsPath;

use redb::Database;

use super::file::database;
use super::tables::{self, EVENT_BYTES_KEY, FORMAT_KEY, META, OBJECT_BYTES_KEY};
use crate::store::disk::copy_durably;
use crate::store::error::{EngineError, StoreError};
use crate::store::options::StoreOptions;

#[path = "../../../migrations/mod.rs"]
pub mod steps;

/// The storage format this build writes.
pub const CURRENT_FORMAT: u32 = 4;

/// Brings the database at `path`, at format `from`, to
/// [`CURRENT_FORMAT`] in one durable transaction, after a durable backup
/// copy (`<path>.format-<from>.bak`). Answers the opened database.
pub fn migrate(path: &FsPath, options: &StoreOptions, from: u64) -> Result<Database, StoreError> {
    let from = u32::try_from(from).expect("older than current");
    let backup = path.with_extension(format!("format-{from}.bak"));
    copy_durably(&*options.disk, path, &backup)?;
    tracing::info!(from, to = CURRENT_FORMAT, backup = %backup.display(), "migrating database");
    let db = database(path, options)?;
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    for version in from..CURRENT_FORMAT {
        let step = steps::STEPS
            .iter()
            .find(|s| s.from == version)
            .ok_or_else(|| {
                StoreError::Engine(EngineError::msg(format!(
                    "no migration step from format {version}"
                )))
            })?;
        tracing::info!(
            from = version,
            step = step.describe,
            "applying migration step"
        );
        (step.apply)(&txn)?;
    }
    tables::create_all(&txn)?;
    let mut meta = txn.open_table(META)?;
    meta.insert(FORMAT_KEY, u64::from(CURRENT_FORMAT))?;
    // A step may change records: their bytes are counted again at open.
    meta.remove(OBJECT_BYTES_KEY)?;
    meta.remove(EVENT_BYTES_KEY)?;
    drop(meta);
    txn.commit()?;
    Ok(db)
}
