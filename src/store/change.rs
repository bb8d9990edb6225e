//! The store's vocabulary, shared by every backend and by the store's
//! callers: write requests ([`WriteOp`]), their outcomes, and the changes
//! a committed write publishes. It imports only the store's error type.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::StoreError;
use crate::model::{AnyObject, Path};

/// Which part of an object a replace or update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Labels and spec (status and finalizers kept; generation +1 if the
    /// spec changed): a document that leaves `finalizers` out.
    Main,
    /// Labels, spec and finalizers: a document that gives `finalizers`.
    MainAndFinalizers,
    /// The status subresource (labels, spec and generation kept).
    Status,
    /// The finalizers subresource (all else kept).
    Finalizers,
}

impl Part {
    /// The part a document writes: with its finalizers if it gave them.
    pub fn main(finalizers_given: bool) -> Part {
        if finalizers_given {
            Part::MainAndFinalizers
        } else {
            Part::Main
        }
    }
}

/// One document of an apply: the object, and the part of an existing one
/// it writes ([`Part::Main`] or [`Part::MainAndFinalizers`]).
pub type Document = (AnyObject, Part);

/// Computes an object's new version from its stored one, inside the write
/// (read-modify-write without a lost update). A backend may call it more
/// than once (a backend that retries on conflict re-runs it on the newer
/// stored object), so it must not have side effects. An error rejects the
/// request.
pub type UpdateFn = Arc<dyn Fn(&AnyObject) -> Result<AnyObject, StoreError> + Send + Sync>;

/// A write request. Cloning is cheap but for the object a create or
/// replace carries; a backend that retries plans a clone each time.
#[derive(Clone)]
pub enum WriteOp {
    /// Create an object at its own path; its parent must exist.
    Create(AnyObject),
    /// Replace one part of an existing object.
    Replace {
        /// The new labels and spec, or status (path from its name and
        /// coordinates).
        object: AnyObject,
        /// Which part.
        part: Part,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
    },
    /// Replace one part of an existing object with what `update` computes
    /// from the stored object (e.g. a merge patch).
    Update {
        /// The object.
        path: Path,
        /// Which part.
        part: Part,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
        /// The new version from the stored one.
        update: UpdateFn,
    },
    /// Delete an object, with its subtree if `cascade`; an object with
    /// finalizers (or, with cascade, a subtree holding any) is marked
    /// terminating instead, and goes once they are removed.
    Delete {
        /// The object.
        path: Path,
        /// Remove children too (children first).
        cascade: bool,
        /// Required current `resourceVersion`, if any.
        precondition: Option<u64>,
    },
}

/// What a change did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Labels, spec, status or finalizers replaced, or marked terminating.
    Modified,
    /// Removed.
    Deleted,
}

/// What selectors see of an object's previous version: a watch follows
/// an object into its selection (ADDED) and out of it (DELETED) by
/// comparing it with the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Before {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The name of its `status.state`.
    pub state: &'static str,
    /// Whether it was terminating.
    pub terminating: bool,
}

impl Before {
    /// What selectors see of `object`.
    pub fn of(object: &AnyObject) -> Arc<Before> {
        Arc::new(Before {
            labels: object.meta().labels.clone(),
            state: object.state_name(),
            terminating: object.meta().is_terminating(),
        })
    }
}

/// One change in a page of history: its revision, what happened, the
/// object, and, for a modification when known, its previous version's
/// [`Before`].
pub type Event = (u64, ChangeType, AnyObject, Option<Arc<Before>>);

/// One object changed at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The revision of this change (also the object's `resourceVersion`).
    pub revision: u64,
    /// The revision of the change before this one in the store's change
    /// feed (0 for the first). Revisions are unique and increasing; they
    /// need not be dense, so a consumer that has seen everything up to `r`
    /// has missed nothing exactly when `prev <= r`.
    pub prev: u64,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (for `Deleted`: its last state, with the
    /// deletion's revision). Shared with the request's outcome.
    pub object: Arc<AnyObject>,
    /// For `Modified`: what selectors saw of the version before, when
    /// known.
    pub before: Option<Arc<Before>>,
}

/// The result of a successful write request.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// The object as stored after the write (delete: its last state).
    pub object: Arc<AnyObject>,
    /// The changes, in revision order; empty when nothing changed.
    pub changes: Vec<Change>,
}

/// What applying one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist: created.
    Created,
    /// It existed: labels or spec replaced.
    Configured,
    /// It existed with the same labels and spec: nothing written.
    Unchanged,
}

/// The result of an apply request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// Per document, in order: what happened and the object afterwards.
    pub items: Vec<(Applied, Arc<AnyObject>)>,
    /// The changes, in revision order (for a dry run: what would have been
    /// written; never committed or published).
    pub changes: Vec<Change>,
    /// The store revision after the request.
    pub revision: u64,
}
