//! A store's tunables.

use std::sync::Arc;
use std::time::Duration;

use super::disk::{Disk, OsDisk};

/// Tunables of a [`super::Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a paged list's snapshot lives.
    pub snapshot_ttl: Duration,
    /// How many paged-list snapshots may be live at once.
    pub max_snapshots: usize,
    /// The engine's page cache, in bytes (bounds the resident memory).
    pub cache_bytes: usize,
    /// Longest time between checkpoints of the write-ahead log.
    pub checkpoint_interval: Duration,
    /// Log bytes that make a checkpoint due, whatever the time (at most
    /// [`MAX_CHECKPOINT_BYTES`]): a checkpoint's pause grows with what the
    /// log holds, so this bounds it.
    pub checkpoint_bytes: u64,
    /// Free space kept on the filesystem: below it, every write but a
    /// delete is refused (507), so that objects can still be removed and a
    /// checkpoint never meets a full disk.
    pub min_free_bytes: u64,
    /// The storage quota: once the stored records (objects and history)
    /// take this many bytes, every write but a delete is refused (507),
    /// like etcd's `quota-backend-bytes` (0: no quota).
    pub quota_bytes: u64,
    /// The history's byte budget: compaction also drops the oldest events
    /// while the history takes more than this (0: no budget).
    pub history_bytes: u64,
    /// A file of this size kept beside the database (`<data>.spare`) and
    /// deleted when the disk fills up under a write, so that the store
    /// can recover from its log and serve reads and deletes on a full
    /// disk; re-created once there is room again (0: none, the default
    /// here; the server's default is [`DEFAULT_SPARE_BYTES`]).
    pub spare_bytes: u64,
    /// Jobs (writes, applies) that may wait for the single writer; once
    /// the queue is full a write is refused at once with
    /// [`super::StoreError::Busy`] instead of queueing without bound.
    pub write_queue: usize,
    /// Where the files are (the real filesystem, or a simulated disk).
    pub disk: Arc<dyn Disk>,
    /// Deliberate bugs, for tests that prove the crash tests find them.
    #[doc(hidden)]
    pub sabotage: Sabotage,
}

/// Deliberate bugs (off in every real configuration): each breaks one
/// durability rule, so that a test can show the crash explorer catches it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// The log's append skips its sync.
    pub skip_log_sync: bool,
    /// The log is cleared before the checkpoint is durable.
    pub clear_log_before_checkpoint: bool,
    /// New files' directory entries are not synced.
    pub skip_dir_sync: bool,
}

/// The default storage quota (etcd's largest suggested quota).
pub const DEFAULT_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// The default byte budget of the history.
pub const DEFAULT_HISTORY_BYTES: u64 = 1024 * 1024 * 1024;

/// The default bound of the writer's queue, in jobs.
pub const DEFAULT_WRITE_QUEUE: usize = 4096;

/// The default size of the spare file.
pub const DEFAULT_SPARE_BYTES: u64 = 32 * 1024 * 1024;

/// The default [`StoreOptions::checkpoint_bytes`].
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 1024 * 1024;

/// The largest [`StoreOptions::checkpoint_bytes`]: half the write-ahead
/// log, so that a checkpoint is due well before the log is full.
pub const MAX_CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// The default free-space reserve: room for the log to fill and for a
/// checkpoint of everything it holds.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 128 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            snapshot_ttl: Duration::from_secs(300),
            max_snapshots: 1024,
            cache_bytes: 128 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            history_bytes: DEFAULT_HISTORY_BYTES,
            spare_bytes: 0,
            write_queue: DEFAULT_WRITE_QUEUE,
            disk: Arc::new(OsDisk),
            sabotage: Sabotage::default(),
        }
    }
}

/// Where and how to reach an etcd cluster (`serve --store etcd`), and the
/// limits its transactions must stay within.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the cluster's members (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// The key prefix every key of this store lives under (`/modelhub`).
    pub prefix: String,
    /// CA certificate (PEM) the members' certificates are checked against.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with `key`.
    pub cert: Option<std::path::PathBuf>,
    /// Client key (PEM), with `cert`.
    pub key: Option<std::path::PathBuf>,
    /// etcd user name, with `password_file`.
    pub user: Option<String>,
    /// File holding the etcd user's password (one line).
    pub password_file: Option<std::path::PathBuf>,
    /// Deadline of each etcd request.
    pub timeout: Duration,
    /// The cluster's `--max-txn-ops`: a request needing more compares or
    /// operations in its one transaction is refused (413).
    pub max_txn_ops: usize,
    /// The cluster's `--max-request-bytes`: a larger transaction is
    /// refused (413).
    pub max_request_bytes: usize,
    /// Most objects one cascade delete may remove (413 beyond).
    pub max_cascade_objects: u64,
    /// How often one replica writes the heartbeat key, so that watchers'
    /// BOOKMARKs advance on an idle keyspace (the bookmark interval).
    pub heartbeat: Duration,
    /// Keep a copy of the objects, kept current by the change feed, and
    /// serve reads and write plans from it once a linearizable check shows
    /// it holds every acknowledged write (memory: about the size of the
    /// stored records).
    pub cache: bool,
    /// Test hook: the feed waits this long before handling each answer of
    /// its etcd watch (a replica whose watch lags). Zero in service.
    #[doc(hidden)]
    pub feed_delay: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/modelhub".into(),
            ca: None,
            cert: None,
            key: None,
            user: None,
            password_file: None,
            timeout: Duration::from_secs(5),
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            max_cascade_objects: 10_000,
            heartbeat: Duration::from_secs(10),
            cache: true,
            feed_delay: Duration::ZERO,
        }
    }
}
