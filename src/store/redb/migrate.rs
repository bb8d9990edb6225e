//! Storage format check and migration at start-up (procedure:
//! `migrations/README.md`).

use std::path::Path as FsPath;

use redb::{Database, ReadableDatabase};

use super::tables::{self, COMPACTED_KEY, FORMAT_KEY, META};
use crate::store::error::{EngineError, StoreError};

#[path = "../../../migrations/mod.rs"]
pub mod steps;

/// The storage format this build writes.
pub const CURRENT_FORMAT: u32 = 2;

fn create(path: &FsPath, cache_bytes: usize) -> Result<Database, StoreError> {
    Ok(redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)?)
}

/// Brings the database at `path` to [`CURRENT_FORMAT`], or refuses it.
/// Returns the opened database, with a page cache of `cache_bytes`.
pub fn open(path: &FsPath, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = create(path, cache_bytes)?;
    let found = {
        let txn = db.begin_read()?;
        tables::read_meta(&txn, FORMAT_KEY)?
    };
    match found {
        None => {
            let txn = db.begin_write()?;
            tables::create_all(&txn)?;
            let mut meta = txn.open_table(META)?;
            meta.insert(FORMAT_KEY, u64::from(CURRENT_FORMAT))?;
            meta.insert(COMPACTED_KEY, 0)?;
            drop(meta);
            txn.commit()?;
            tracing::info!(format = CURRENT_FORMAT, "initialised new database");
            Ok(db)
        }
        Some(f) if f == u64::from(CURRENT_FORMAT) => Ok(db),
        Some(f) if f > u64::from(CURRENT_FORMAT) => Err(StoreError::FormatTooNew {
            found: u32::try_from(f).unwrap_or(u32::MAX),
            supported: CURRENT_FORMAT,
        }),
        Some(f) => {
            let from = u32::try_from(f).expect("older than current");
            drop(db);
            let backup = path.with_extension(format!("format-{from}.bak"));
            std::fs::copy(path, &backup)?;
            tracing::info!(from, to = CURRENT_FORMAT, backup = %backup.display(), "migrating database");
            let db = create(path, cache_bytes)?;
            let txn = db.begin_write()?;
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
            txn.open_table(META)?
                .insert(FORMAT_KEY, u64::from(CURRENT_FORMAT))?;
            txn.commit()?;
            Ok(db)
        }
    }
}
