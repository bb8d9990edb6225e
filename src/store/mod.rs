//! The store: kukeon objects keyed by path, with one store-wide revision,
//! behind one storage contract ([`Backend`]) whatever the engine.
//!
//! Engine-neutral (imported by the engines, never the other way):
//! - [`change`]: the vocabulary: write requests, outcomes, changes.
//! - [`error`]: [`StoreError`], with an engine failure's cause kept.
//! - [`keys`]: path -> key encoding (children of one parent are one range).
//! - [`codec`]: record encoding (format byte + postcard).
//! - [`plan`]: the mutation rules, as a planner over a read view.
//! - [`query`]: list queries and pages, history pages, counters.
//! - [`options`]: a store's tunables.
//! - [`disk`]: the file seam every byte goes through (the real
//!   filesystem, or a simulated disk for crash tests).
//! - [`feed`]: the ordered change feed that the watch hub and caches
//!   subscribe to.
//!
//! Engines: `redb` (the embedded database, its write-ahead log and single
//! writer), a private module. Above the engines: [`cursor`] wraps their
//! snapshots and list cursors in engine-neutral handles (a new engine adds
//! a variant), [`backend`] states the contract, naming no engine, and
//! [`Store`], the facade the HTTP layer and the watch hub hold, is an enum
//! over engines with a [`Backend`] implementation that matches on it, so
//! that nothing above this module knows which engine is underneath.
//!
//! Offline: [`restore`] builds a new store from a backup's objects.

pub mod backend;
pub mod change;
pub mod codec;
pub mod cursor;
pub mod disk;
pub mod error;
#[cfg(feature = "etcd")]
mod etcd;
pub mod feed;
pub mod keys;
pub mod options;
pub mod plan;
pub mod query;
mod recent;
mod redb;

use std::path::{Path as FsPath, PathBuf};

pub use backend::Backend;
pub use change::{
    Applied, ApplyOutcome, Before, Change, ChangeType, Document, Event, Part, UpdateFn, WriteOp,
    WriteOutcome,
};
pub use cursor::{ListIter, RawEntry, Snapshot};
pub use error::{EngineError, StoreError};
pub use feed::{Feed, ProgressSubscriber, Subscriber};
pub use options::{EtcdOptions, MAX_CHECKPOINT_BYTES, StoreOptions};
pub use query::{EventsPage, ListPage, ListQuery, Refusal, RefusedCause, StoreStats};

use crate::auth::token::{Token, Tokens};
use crate::model::{AnyObject, Path};

/// Handle to an open store; cheap to clone.
#[derive(Clone)]
pub struct Store(Engine);

#[derive(Clone)]
enum Engine {
    Redb(redb::RedbStore),
    #[cfg(feature = "etcd")]
    Etcd(etcd::EtcdStore),
}

impl Store {
    /// Opens (creating or migrating) the redb database at `path`.
    pub fn open(path: &FsPath, options: StoreOptions) -> Result<Store, StoreError> {
        Ok(Store(Engine::Redb(redb::RedbStore::open(path, &options)?)))
    }

    /// Connects to the etcd cluster of `options` and opens the store under
    /// its prefix (checking the cluster and the prefix's storage format).
    #[cfg(feature = "etcd")]
    pub async fn open_etcd(options: &EtcdOptions) -> Result<Store, StoreError> {
        Ok(Store(Engine::Etcd(etcd::EtcdStore::open(options).await?)))
    }

    /// Without the `etcd` feature: refuses, saying how to get it.
    #[cfg(not(feature = "etcd"))]
    pub async fn open_etcd(_options: &EtcdOptions) -> Result<Store, StoreError> {
        Err(StoreError::BadRequest(
            "this modelhub was built without etcd support: build it with `cargo build --release \
             --features etcd` (needs protoc)"
                .into(),
        ))
    }

    /// Whether the engine is etcd (several replicas may share it).
    pub fn is_etcd(&self) -> bool {
        match &self.0 {
            Engine::Redb(_) => false,
            #[cfg(feature = "etcd")]
            Engine::Etcd(_) => true,
        }
    }

    /// Why this replica cannot follow the cluster's changes, if it cannot
    /// (etcd; never for redb).
    pub fn feed_error(&self) -> Option<String> {
        match &self.0 {
            Engine::Redb(_) => None,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => s.feed_error(),
        }
    }
}

/// Loads `objects` (parents before children) into the empty etcd prefix of
/// `options`, so that every later resourceVersion is above `revision`.
/// Answers how many objects were written.
#[cfg(feature = "etcd")]
pub async fn restore_etcd(
    options: &EtcdOptions,
    revision: u64,
    objects: Vec<AnyObject>,
) -> Result<u64, StoreError> {
    etcd::restore::restore(options, revision, objects).await
}

/// The files a store at `path` is made of (the database and what the
/// engine keeps beside it).
pub fn files(path: &FsPath) -> Vec<PathBuf> {
    redb::restore::files(path)
}

/// Builds a new store at `path`, offline, from a consistent copy of
/// another one: `objects` (parents before children) are written with their
/// metadata as it was (uid, generation, creation time, `resourceVersion`),
/// all in one durable transaction, and the store's revision is `revision`,
/// with everything up to it counted as compacted (no history: a watch from
/// an older revision is `Gone`). Refuses when any of [`files`] exists; on
/// any failure (an `Err` from `objects` included) nothing is left at
/// `path`. Answers how many objects were written.
pub fn restore<E: From<StoreError>>(
    path: &FsPath,
    options: &StoreOptions,
    revision: u64,
    objects: impl Iterator<Item = Result<AnyObject, E>>,
) -> Result<u64, E> {
    redb::restore::restore(path, options, revision, objects)
}

/// Checks the store at `path` offline (what a start would say about it);
/// with `accept_loss`, repairs what would stop a start, losing what damage
/// already made unreadable. Answers the findings, one line each, and
/// whether a start would accept the files.
pub fn check(
    path: &FsPath,
    options: &StoreOptions,
    accept_loss: bool,
) -> Result<(Vec<String>, bool), StoreError> {
    let report = redb::check::check(path, options, accept_loss)?;
    Ok((report.lines, report.ok))
}

impl Backend for Store {
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.write(op).await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.write(op)).await,
        }
    }

    async fn apply(
        &self,
        objects: Vec<Document>,
        dry_run: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.apply(objects, dry_run).await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.apply(objects, dry_run)).await,
        }
    }

    async fn get(&self, path: &Path) -> Result<AnyObject, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.get(path),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.get(path)).await,
        }
    }

    async fn get_entry(&self, path: &Path) -> Result<RawEntry, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s
                .get_entry(path)
                .map(|e| RawEntry::redb(e.key, e.resource_version, e.kind, e.value)),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.get_entry(path))
                .await
                .map(|e| RawEntry::owned(e.key, e.resource_version, path.kind(), e.value)),
        }
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.revision(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.revision()).await,
        }
    }

    async fn list_page(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.list_page(query).await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.list_page(query)).await,
        }
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        match &self.0 {
            Engine::Redb(s) => Ok(Snapshot::from_redb(s.snapshot()?)),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Ok(Snapshot::from_etcd(s.snapshot()?)),
        }
    }

    fn events(&self, after: u64, max: usize) -> Result<EventsPage, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.events(after, max),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => s.events(after, max),
        }
    }

    async fn compact(&self, keep: u64) -> Result<u64, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.compact(keep).await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.compact(keep)).await,
        }
    }

    fn feed(&self) -> &Feed {
        match &self.0 {
            Engine::Redb(s) => s.feed(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => s.feed(),
        }
    }

    fn committing_revision(&self) -> u64 {
        match &self.0 {
            Engine::Redb(s) => s.committing_revision(),
            #[cfg(feature = "etcd")]
            // Fed by the cluster's watch, a cache is never known current.
            Engine::Etcd(_) => u64::MAX,
        }
    }

    async fn ready(&self) -> bool {
        match &self.0 {
            Engine::Redb(s) => s.ready(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.ready()).await,
        }
    }

    fn stats(&self) -> StoreStats {
        match &self.0 {
            Engine::Redb(s) => s.stats(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => s.stats(),
        }
    }

    fn writes_refused(&self) -> Option<Refusal> {
        match &self.0 {
            Engine::Redb(s) => s.writes_refused(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => s.writes_refused(),
        }
    }

    fn fatal(&self) -> Option<String> {
        match &self.0 {
            Engine::Redb(s) => s.fatal(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(_) => None,
        }
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.checkpoint().await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(_) => Ok(()),
        }
    }

    async fn create_token(&self, token: Token) -> Result<(), StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.create_token(token).await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.create_token(token)).await,
        }
    }

    async fn revoke_token(&self, name: &str) -> Result<Token, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.revoke_token(name).await,
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.revoke_token(name)).await,
        }
    }

    async fn tokens(&self) -> Result<Tokens, StoreError> {
        match &self.0 {
            Engine::Redb(s) => s.tokens(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => Box::pin(s.tokens()).await,
        }
    }

    fn close(&self) {
        match &self.0 {
            Engine::Redb(s) => s.close(),
            #[cfg(feature = "etcd")]
            Engine::Etcd(s) => s.close(),
        }
    }
}
