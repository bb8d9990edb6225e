//! redb's storage backend over a [`DiskFile`], so that the database file
//! goes through the store's file seam like the log does. The lock is one
//! exclusive lock on the whole file (redb asks for the whole range when
//! byte ranges are unsupported).

use std::ops::Bound;
use std::sync::Arc;

use std::path::Path as FsPath;

use redb::{BackendError, Database, DatabaseError, StorageBackend};

use crate::store::disk::DiskFile;
use crate::store::error::{EngineError, StoreError};
use crate::store::options::StoreOptions;

/// The database file, as redb's backend.
#[derive(Debug)]
pub(super) struct DbFile(pub Arc<dyn DiskFile>);

fn whole(start: Bound<u64>, end: Bound<u64>) -> bool {
    matches!((start, end), (Bound::Unbounded, Bound::Unbounded))
}

impl StorageBackend for DbFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.size()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write_all_at(data, offset)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.0.unlock()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !whole(start, end) {
            return Err(BackendError::Unsupported);
        }
        self.0.try_lock().map_err(BackendError::Io)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !whole(start, end) {
            return Err(BackendError::Unsupported);
        }
        self.0.unlock().map_err(BackendError::Io)
    }
}

/// Opens the redb database at `path` through the options' disk.
pub(super) fn database(path: &FsPath, options: &StoreOptions) -> Result<Database, StoreError> {
    let file = options.disk.open(path, true)?;
    redb::Builder::new()
        .set_cache_size(options.cache_bytes)
        .create_with_backend(DbFile(file))
        .map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Engine(EngineError::msg(format!(
                "the database {} is in use by another process",
                path.display()
            ))),
            e => e.into(),
        })
}
