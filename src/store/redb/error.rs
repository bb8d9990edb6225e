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

/// A read's failure as the store's answer. After a storage failure redb
/// refuses every access to the database, reads included, until it is
/// reopened (`PreviousIo`), which the writer does once it can (after a
/// full disk: once there is room for the log's replay); until then such
/// reads are refused with 503 (`Unavailable`: retry shortly), not failed
/// as a server fault. A read's own I/O error is the same: redb has then
/// latched the database shut.
pub(super) fn read_error(e: StoreError) -> StoreError {
    match &e {
        StoreError::Engine(engine) if must_reopen(engine) || engine.io_kind().is_some() => {
            StoreError::Unavailable(format!(
                "storage failed and the store is recovering from it ({engine}); retry shortly"
            ))
        }
        _ => e,
    }
}

/// Whether redb refused `e` because of an earlier I/O failure (or because
/// the database was closed for reopening).
fn must_reopen(e: &EngineError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(e) = err.downcast_ref::<redb::Error>() {
            return matches!(e, redb::Error::PreviousIo | redb::Error::DatabaseClosed);
        }
        if let Some(e) = err.downcast_ref::<redb::StorageError>() {
            return matches!(
                e,
                redb::StorageError::PreviousIo | redb::StorageError::DatabaseClosed
            );
        }
        next = err.source();
    }
    false
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

    #[test]
    fn reads_after_a_storage_failure_are_refused_not_failed() {
        let latched = StoreError::from(redb::StorageError::PreviousIo);
        assert!(
            matches!(read_error(latched), StoreError::Unavailable(_)),
            "503"
        );
        let closed = StoreError::from(redb::TransactionError::Storage(
            redb::StorageError::DatabaseClosed,
        ));
        assert!(matches!(read_error(closed), StoreError::Unavailable(_)));
        let corrupt = StoreError::from(redb::StorageError::Corrupted("x".into()));
        assert!(matches!(read_error(corrupt), StoreError::Engine(_)), "500");
    }
}
