//! The etcd backend: the store on an etcd v3 cluster, so that several
//! stateless modelhub replicas serve one hierarchy.
//!
//! - `layout`: where each thing lives under the prefix, and how etcd's
//!   revisions become resourceVersions.
//! - `write`: one transaction per request, built from the shared planner
//!   ([`crate::store::plan`]), its reads turned into compares.
//! - `read`: point reads, paged lists any replica can continue, snapshots
//!   and the history (a short-lived etcd watch).
//! - `cache`: the replica's copy of the objects, kept by the feed;
//!   `fresh`: reads and write plans served from it once a linearizable
//!   check shows it has every acknowledged write, and its loader.
//! - `follow`: the change feed (one etcd watch per replica, covering every
//!   replica's writes), the heartbeat, compaction and the cluster's status.
//! - `restore`: loading a backup into an empty prefix.
//! - `inner`: the open store and the requests every part sends;
//!   `open`: connecting and the start-up checks; `error`: etcd's failures
//!   classified.
//!
//! Revisions: etcd gives one revision per transaction; a transaction that
//! changes k objects yields k resourceVersions `rv = (R + offset) *
//! 1_000_000 + i` (i: the change's index in the transaction), and "every
//! change up to revision R" is `(R + offset) * 1_000_000 + 999_999`
//! (`layout::Revisions`). No type of `etcd_client` leaves this module.

mod cache;
mod error;
mod follow;
mod fresh;
mod inner;
mod layout;
mod open;
pub(super) mod read;
mod reap;
pub(super) mod restore;
mod write;

pub use inner::EtcdStore;
