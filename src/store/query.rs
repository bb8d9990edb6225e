//! What reads ask for and get back, the same for every backend: list
//! queries and pages, pages of the change history, and the store's
//! counters.

use crate::model::{AnyObject, Kind, Selector};

/// What to list.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The kind listed.
    pub kind: Kind,
    /// Scope names from realm down (`None`: any), at most `kind.depth() - 1`.
    pub scope: Vec<Option<String>>,
    /// Label selector.
    pub selector: Selector,
    /// Page size (`None`: everything).
    pub limit: Option<usize>,
    /// Continue token of the previous page.
    pub continue_token: Option<String>,
}

/// Which keys a list reads: the key prefix of its leading scope names, and
/// the scope names after a wildcard, which filter (position, name).
pub type ListRange = (Vec<u8>, Vec<(usize, String)>);

impl ListQuery {
    /// The key prefix of the leading scope names and the filters of the
    /// later ones; refuses a scope as deep as the kind itself.
    pub fn range(&self) -> Result<ListRange, super::error::StoreError> {
        if self.scope.len() >= self.kind.depth() {
            return Err(super::error::StoreError::BadRequest(format!(
                "{} has no scope below {} levels",
                self.kind.plural(),
                self.kind.depth() - 1
            )));
        }
        let leading: Vec<&String> = self.scope.iter().map_while(Option::as_ref).collect();
        let filters = self
            .scope
            .iter()
            .enumerate()
            .skip(leading.len())
            .filter_map(|(i, n)| n.clone().map(|n| (i, n)))
            .collect();
        Ok((super::keys::encode(&leading), filters))
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Revision of the snapshot.
    pub revision: u64,
    /// Items in path order.
    pub items: Vec<AnyObject>,
    /// Token for the next page, if more items remain.
    pub continue_token: Option<String>,
}

/// A page of the change history.
#[derive(Debug, Clone)]
pub struct EventsPage {
    /// Events in revision order.
    pub events: Vec<super::change::Event>,
    /// The current revision when the page was read.
    pub current: u64,
}

/// Why the store refuses writes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedCause {
    /// Free space is below the reserve: every write but a delete is
    /// refused (507) until space returns.
    LowSpace,
    /// The stored records reached the storage quota: every write but a
    /// delete is refused (507) until deletes bring them under it.
    QuotaExceeded,
    /// The disk filled up under a write: writes are refused (507) until
    /// space returns and the store has recovered from its log.
    StorageFull,
    /// Another storage failure: writes are refused (503) until the store
    /// has recovered from its log.
    StorageFailed,
}

impl RefusedCause {
    /// The cause's name, for `/readyz` and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            RefusedCause::LowSpace => "low_space",
            RefusedCause::QuotaExceeded => "quota_exceeded",
            RefusedCause::StorageFull => "storage_full",
            RefusedCause::StorageFailed => "storage_failed",
        }
    }

    /// Every cause.
    pub const ALL: [RefusedCause; 4] = [
        RefusedCause::LowSpace,
        RefusedCause::QuotaExceeded,
        RefusedCause::StorageFull,
        RefusedCause::StorageFailed,
    ];
}

/// Writes refused, with the cause and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub cause: RefusedCause,
    /// For an operator: what happened and what ends it.
    pub message: String,
}

/// Counters of a store's work, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write requests handled (including failed ones).
    pub requests: u64,
    /// Transactions committed (group commit makes this smaller than
    /// `requests` under load).
    pub commits: u64,
    /// Checkpoints of the write-ahead log (0 for a backend without one).
    pub checkpoints: u64,
    /// Stored versions read by read-modify-writes (status writes, merge
    /// patches, applies over existing objects) that the redb writer had
    /// kept decoded from its own last write (0 on etcd).
    pub decoded_kept: u64,
    /// Those it decoded from the stored record (0 on etcd).
    pub decoded_records: u64,
    /// Storage errors because the disk was full.
    pub storage_errors_full: u64,
    /// Other storage errors.
    pub storage_errors_other: u64,
    /// Recoveries from a storage failure (the store reopened from disk).
    pub recoveries: u64,
    /// Size of the database file, in bytes.
    pub database_bytes: u64,
    /// Bytes of the database in use (etcd's `dbSizeInUse`; the rest is
    /// free pages a defragmentation returns), 0 where not known.
    pub database_in_use_bytes: u64,
    /// Size of the log file, in bytes (0 for a backend without one).
    pub log_bytes: u64,
    /// Free space on the data's filesystem, in bytes.
    pub free_bytes: u64,
    /// Bytes of stored object records.
    pub object_bytes: u64,
    /// Bytes of stored history (event records).
    pub history_bytes: u64,
    /// Reads served from a replica's copy of the objects (etcd), and reads
    /// that went to the engine because the copy was not fresh.
    pub cache_reads: u64,
    /// See `cache_reads`.
    pub cache_misses: u64,
    /// Objects in the replica's copy.
    pub cached_objects: u64,
    /// Bytes of log records since the last checkpoint (what a restart
    /// after a crash replays; 0 for a backend without a log).
    pub log_pending_bytes: u64,
    /// Write jobs queued for the writer and not taken yet.
    pub write_queue: u64,
    /// Write batches' time from their transaction's start to their
    /// commit, log sync included (etcd: write transactions' round trips).
    pub commit_time: Option<crate::histogram::Snapshot>,
    /// Time to append a batch to the log and sync it.
    pub log_sync_time: Option<crate::histogram::Snapshot>,
    /// Checkpoints' time (writes wait for it).
    pub checkpoint_time: Option<crate::histogram::Snapshot>,
}
