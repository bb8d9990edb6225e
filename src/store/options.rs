//! A store's tunables.

use std::time::Duration;

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            snapshot_ttl: Duration::from_secs(300),
            max_snapshots: 1024,
            cache_bytes: 128 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}
