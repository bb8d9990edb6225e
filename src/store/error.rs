//! The store's error type.

use std::fmt;

use crate::model::Path;

/// Everything a store operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The object does not exist.
    NotFound(Path),
    /// The parent the object would live under does not exist.
    ParentNotFound {
        /// The missing parent.
        parent: Path,
    },
    /// An object with that path exists already.
    AlreadyExists(Path),
    /// A `resourceVersion` precondition failed.
    Conflict {
        /// The object.
        path: Path,
        /// The revision the client expected.
        expected: u64,
        /// The stored revision.
        actual: u64,
    },
    /// Delete without cascade of an object that has children.
    HasChildren {
        /// The object.
        path: Path,
        /// One of its children, for the message.
        child: Path,
    },
    /// A continue token whose snapshot has expired.
    Gone(String),
    /// A malformed argument (e.g. a continue token).
    BadRequest(String),
    /// An update computed inside the transaction was refused.
    Rejected {
        /// `true`: the content is invalid (422); `false`: malformed (400).
        invalid: bool,
        /// Wire path of the offending field.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The database was written by a newer storage format.
    FormatTooNew {
        /// Format found in the file.
        found: u32,
        /// Newest format this build knows.
        supported: u32,
    },
    /// The store is shutting down.
    Closed,
    /// One document of a multi-document request failed.
    Document {
        /// The document's position in the request.
        index: usize,
        /// Why.
        source: Box<StoreError>,
    },
    /// A storage-engine or corruption failure (a server fault).
    Internal(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(p) => write!(f, "{p} not found"),
            StoreError::ParentNotFound { parent } => {
                write!(f, "parent {parent} not found: create it first")
            }
            StoreError::AlreadyExists(p) => write!(f, "{p} already exists"),
            StoreError::Conflict {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path} is at resourceVersion {actual}, not the expected {expected}: re-read and retry"
            ),
            StoreError::HasChildren { path, child } => write!(
                f,
                "{path} still has children (such as {child}): delete them first or use ?cascade=true"
            ),
            StoreError::Gone(m) | StoreError::BadRequest(m) | StoreError::Internal(m) => {
                f.write_str(m)
            }
            StoreError::FormatTooNew { found, supported } => write!(
                f,
                "database storage format {found} is newer than this build supports ({supported}); \
                 run a newer modelhub"
            ),
            StoreError::Closed => f.write_str("the store is shutting down"),
            StoreError::Rejected { message, .. } => f.write_str(message),
            StoreError::Document { index, source } => write!(f, "documents[{index}]: {source}"),
        }
    }
}

impl std::error::Error for StoreError {}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Internal(format!("storage error: {e}"))
            }
        }
    )*};
}
internal_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    super::codec::CodecError,
    std::io::Error
);
