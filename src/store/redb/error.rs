//! redb's errors as the store's: an I/O failure keeps its
//! `std::io::Error` as the cause, so that
//! [`EngineError::io_kind`] tells a full disk from other failures (redb's
//! own error types do not expose it as a source).

use crate::store::error::{EngineError, StoreError};

/// A redb failure as the store's error.
impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Engine(engine_error("storage error", e))
    }
}

/// A redb failure described by `context`, its `std::io::Error` (if it is
/// one) kept as the cause.
pub(super) fn engine_error(context: &str, e: impl Into<redb::Error>) -> EngineError {
    match e.into() {
        redb::Error::Io(io) => EngineError::new(format!("{context} (I/O)"), io),
        other => EngineError::new(context, other),
    }
}

macro_rules! engine_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
engine_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_under_redb_is_told_apart() {
        let full = redb::CommitError::Storage(redb::StorageError::Io(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        )));
        let StoreError::Engine(e) = StoreError::from(full) else {
            panic!("an engine error")
        };
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull));
        let StoreError::Engine(e) = StoreError::from(redb::StorageError::Corrupted("x".into()))
        else {
            panic!("an engine error")
        };
        assert_eq!(e.io_kind(), None);
    }
}
