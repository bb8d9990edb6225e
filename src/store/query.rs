//! What reads ask for and get back, the same for every backend: list
//! queries and pages, pages of the change history, and the store's
//! counters.

use super::change::ChangeType;
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
    pub events: Vec<(u64, ChangeType, AnyObject)>,
    /// The current revision when the page was read.
    pub current: u64,
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
}
