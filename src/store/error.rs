//! The store's error type, one for every backend: request-level refusals
//! (which a client can act on) and storage failures, whose engine-specific
//! cause is kept, boxed, in [`EngineError`].

use std::fmt;
use std::sync::Arc;

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
    /// No token has that name.
    TokenNotFound(String),
    /// A token with that name exists already.
    TokenExists(String),
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
    /// A write a terminating object (one with `deletion_timestamp`)
    /// refuses: spec, labels or a new finalizer on it, or a create under
    /// it.
    Terminating {
        /// The terminating object.
        path: Path,
        /// The refused field, if one is to blame.
        field: Option<String>,
        /// What was refused.
        message: String,
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
    /// An update computed inside the transaction was refused by a policy
    /// (403): the identity may not set `field`.
    Forbidden {
        /// Wire path of the field.
        field: String,
        /// Why.
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
    /// The writer's queue is full: nothing was queued; retry later.
    Busy {
        /// The queue's bound, in jobs.
        queue: usize,
    },
    /// Refused for lack of space (below the free-space reserve, or the
    /// disk is full): nothing was written.
    NoSpace(String),
    /// Refused because storage failed and the store is recovering:
    /// nothing was written; retry later.
    Unavailable(String),
    /// Storage failed while the write was being made durable: it may or
    /// may not have been applied. Read back before retrying.
    OutcomeUnknown(String),
    /// The request exceeds a limit of the storage engine (etcd's
    /// operations per transaction or request size, the cascade cap),
    /// named in the message: nothing was written.
    TooLarge(String),
    /// One document of a multi-document request failed.
    Document {
        /// The document's position in the request.
        index: usize,
        /// Why.
        source: Box<StoreError>,
    },
    /// The storage engine failed (I/O, corruption, a failed commit): a
    /// server fault, with its cause.
    Engine(EngineError),
    /// A fault of this process that is not the engine's (a task that died).
    Internal(String),
}

impl StoreError {
    /// Whether this is a storage failure rather than a refusal of the
    /// request: it fails every request sharing the transaction.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, StoreError::Engine(_) | StoreError::Internal(_))
    }
}

/// A storage-engine failure: what failed, and the engine's error as its
/// [`std::error::Error::source`], so that callers can tell, say, a full
/// disk ([`EngineError::io_kind`]) from corruption.
#[derive(Debug, Clone)]
pub struct EngineError {
    context: Arc<str>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl EngineError {
    /// A failure described by `context`, caused by `cause`.
    pub fn new(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> EngineError {
        EngineError {
            context: context.into().into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A failure with no underlying error value (e.g. a log that does not
    /// continue the database).
    pub fn msg(context: impl Into<String>) -> EngineError {
        EngineError {
            context: context.into().into(),
            cause: None,
        }
    }

    /// The same cause under a description made from this one (e.g.
    /// "storage failed earlier (...)" for the writes after a failure).
    pub fn reworded(&self, context: impl FnOnce(&str) -> String) -> EngineError {
        EngineError {
            context: context(&self.context).into(),
            cause: self.cause.clone(),
        }
    }

    /// The kind of the first I/O error in the cause chain, if any.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match &self.cause {
            Some(c) => Some(c.as_ref()),
            None => None,
        };
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io.kind());
            }
            next = e.source();
        }
        None
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{}: {c}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Some(c) => Some(c.as_ref()),
            None => None,
        }
    }
}

/// Equal when they describe the same failure (the cause compared by its
/// message: engine errors are not comparable).
impl PartialEq for EngineError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for EngineError {}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(p) => write!(f, "{p} not found"),
            StoreError::ParentNotFound { parent } => {
                write!(f, "parent {parent} not found: create it first")
            }
            StoreError::AlreadyExists(p) => write!(f, "{p} already exists"),
            StoreError::TokenNotFound(n) => write!(f, "token {n:?} not found"),
            StoreError::TokenExists(n) => write!(f, "a token named {n:?} already exists"),
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
            StoreError::Terminating { path, message, .. } => write!(
                f,
                "{path} is being deleted (it has deletionTimestamp): {message}"
            ),
            StoreError::Gone(m)
            | StoreError::BadRequest(m)
            | StoreError::Internal(m)
            | StoreError::NoSpace(m)
            | StoreError::Unavailable(m)
            | StoreError::OutcomeUnknown(m)
            | StoreError::TooLarge(m) => f.write_str(m),
            StoreError::Engine(e) => e.fmt(f),
            StoreError::FormatTooNew { found, supported } => write!(
                f,
                "database storage format {found} is newer than this build supports ({supported}); \
                 run a newer modelhub"
            ),
            StoreError::Closed => f.write_str("the store is shutting down"),
            StoreError::Busy { queue } => write!(
                f,
                "the write queue is full ({queue} writes waiting, --write-queue): nothing was \
                 written; retry later"
            ),
            StoreError::Rejected { message, .. } | StoreError::Forbidden { message, .. } => {
                f.write_str(message)
            }
            StoreError::Document { index, source } => write!(f, "documents[{index}]: {source}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Engine(e) => Some(e),
            StoreError::Document { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl EngineError {
    /// Whether the cause is a full disk (or quota).
    pub fn is_no_space(&self) -> bool {
        matches!(
            self.io_kind(),
            Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        )
    }

    /// This failure as the refusal of a request of which nothing was
    /// written: 507 for a full disk, else 503.
    pub fn refusal(&self) -> StoreError {
        if self.is_no_space() {
            StoreError::NoSpace(format!(
                "the disk is full ({self}); nothing was written: free space, then retry"
            ))
        } else {
            StoreError::Unavailable(format!(
                "storage failed ({self}); nothing was written: retry shortly"
            ))
        }
    }

    /// This failure as the answer to a request whose outcome is unknown.
    pub fn outcome_unknown(&self) -> StoreError {
        StoreError::OutcomeUnknown(format!(
            "storage failed while the write was being made durable ({self}): it may or may not \
             have been applied; read the object back before retrying"
        ))
    }
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        StoreError::Engine(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Engine(EngineError::new("storage error", e))
    }
}
