//! The storage contract: what the HTTP layer and the watch hub may ask of
//! a store, whatever engine is underneath (kube-apiserver's
//! `storage.Interface`, shaped for modelhub).
//!
//! Guarantees every implementation keeps:
//! - **Atomic, durable writes.** A request is all or nothing; once it is
//!   acknowledged it survives a crash. A refused request changes nothing.
//! - **Revisions.** Every change gets a unique revision, strictly
//!   increasing in commit order; a request changing k objects gets k
//!   revisions in order, with no other change between them. Revisions need
//!   not be dense across requests ([`super::Change::prev`] chains them).
//! - **The rules of [`super::plan`]**: generation, no-op writes, status
//!   writes, parents, cascade order, apply's outcome per document.
//! - **Consistent reads.** A [`Snapshot`], a list page, and every later
//!   page of the same list show the store at one revision.
//! - **History.** [`Backend::events`] answers every change after a revision
//!   still retained, in order; a revision compacted away or beyond the
//!   current one is `Gone` (410).
//! - **The change feed** ([`Feed`]) publishes every change once, in order;
//!   on redb before the write that made it is acknowledged; on etcd, where
//!   it follows the cluster's watch (every replica's writes), shortly after
//!   (readers there go to etcd, and no cache is fed by it).
//!
//! `tests/backend.rs` checks these against any implementation. The trait
//! exists for that suite; the server holds a [`super::Store`], an enum over
//! engines, so the redb path stays monomorphic.
//!
//! [`Backend::snapshot`] and [`Backend::events`], and the cursors a
//! snapshot gives, block: their callers (list streaming, the watch
//! snapshot and catch-up) already run them on tokio's blocking pool, and an
//! engine behind the network serves them there with `Handle::block_on`.
//!
//! An engine that retries on conflict (optimistic, like etcd) runs the
//! planner ([`super::plan`]) over a `ReadView` that also records what it
//! read (the parent's existence, the object's revision, the absence of
//! children): those reads are the transaction's compares.

use std::future::Future;

use super::change::{ApplyOutcome, Document, WriteOp, WriteOutcome};
use super::cursor::{RawEntry, Snapshot};
use super::error::StoreError;
use super::feed::Feed;
use super::query::{EventsPage, ListPage, ListQuery, Refusal, StoreStats};
use crate::auth::token::{Token, Tokens};
use crate::model::{AnyObject, Path};

/// A store engine behind the storage contract (see the module docs).
pub trait Backend: Send + Sync + 'static {
    /// Runs one write request; resolves once it is durable (or refused).
    fn write(&self, op: WriteOp) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Creates or configures `objects` in order, all in one transaction
    /// (`dry_run`: computed, never committed or published).
    fn apply(
        &self,
        objects: Vec<Document>,
        dry_run: bool,
    ) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// Reads one object.
    fn get(&self, path: &Path) -> impl Future<Output = Result<AnyObject, StoreError>> + Send;

    /// Reads one object's record and `resourceVersion`, its spec and
    /// status not decoded yet (for callers that keep renderings by
    /// revision); as linearizable as [`Backend::get`].
    fn get_entry(&self, path: &Path) -> impl Future<Output = Result<RawEntry, StoreError>> + Send;

    /// The current revision: every change up to it is visible to reads
    /// that start afterwards.
    fn revision(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One page of a list (all of it when `query.limit` is `None`); later
    /// pages come from the same snapshot, through the continue token.
    fn list_page(
        &self,
        query: ListQuery,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

    /// A consistent snapshot of the whole store, for scans (blocking: call
    /// it off the async workers, as its cursors are iterated).
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// At most `max` changes after revision `after`, in order (blocking).
    fn events(&self, after: u64, max: usize) -> Result<EventsPage, StoreError>;

    /// Drops history older than the last `keep` revisions; answers how
    /// many changes were dropped, once that is durable (redb works through
    /// it a bounded chunk at a time, between batches of writes).
    fn compact(&self, keep: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The ordered change feed of committed writes.
    fn feed(&self) -> &Feed;

    /// The newest revision a read may already see although the feed may
    /// not have published it yet (a cache fed by the feed is current only
    /// when this equals what it was told). `u64::MAX` where no cache can
    /// be proven current (etcd: other replicas write too).
    fn committing_revision(&self) -> u64;

    /// Whether the store answers reads.
    fn ready(&self) -> impl Future<Output = bool> + Send;

    /// Counters for `/metrics`.
    fn stats(&self) -> StoreStats;

    /// Why writes are refused right now (for `/readyz/writes`), if they
    /// are.
    fn writes_refused(&self) -> Option<Refusal>;

    /// Set when the store failed and cannot recover: the process should
    /// exit non-zero so that its supervisor restarts it.
    fn fatal(&self) -> Option<String>;

    /// Checkpoints now, where the backend has checkpoints (tests schedule
    /// them themselves); a no-op elsewhere.
    fn checkpoint(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new token (`TokenExists` if its name is taken); durable
    /// once it resolves. Tokens have no revision and no watch events.
    fn create_token(&self, token: Token) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the token named `name` (`TokenNotFound` if none), durably,
    /// answering what it was.
    fn revoke_token(&self, name: &str) -> impl Future<Output = Result<Token, StoreError>> + Send;

    /// Every token, by name (what authentication checks against: a
    /// revocation is seen by the next read), and whether one was ever
    /// created.
    fn tokens(&self) -> impl Future<Output = Result<Tokens, StoreError>> + Send;

    /// Finishes queued writes and releases the engine; later calls answer
    /// `Closed`.
    fn close(&self);
}
