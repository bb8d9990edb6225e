//! The ordered change feed: how a backend tells the rest of the process
//! (the watch hub, the list cache) what was committed.
//!
//! Contract, for every backend: the feed is told (`Feed::publish`) every
//! committed change exactly once, in revision order, each change's `prev`
//! naming the revision of the one before it; and, for writes made through
//! this process, before the write is acknowledged (so that a reader who saw
//! the acknowledgement never gets an older answer from a cache fed here).
//! Subscribers run on the publishing thread and must be quick.

use std::sync::RwLock;

use super::change::Change;

/// Told about each batch of committed changes, in revision order.
pub type Subscriber = std::sync::Arc<dyn Fn(&[Change]) + Send + Sync>;

/// Told that the feed has published everything up to a position although
/// no change was made there (`(position, last)`: `last` is the revision of
/// the last change published before it). A backend whose revisions are
/// not dense (etcd) publishes this so that an idle watcher's BOOKMARK
/// still advances.
pub type ProgressSubscriber = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// A backend's change feed: its subscribers.
#[derive(Default)]
pub struct Feed {
    subscribers: RwLock<Vec<Subscriber>>,
    progress: RwLock<Vec<ProgressSubscriber>>,
}

impl Feed {
    /// Adds a subscriber; it is told about every change published from now
    /// on. Subscribe before the store takes writes to miss none (earlier
    /// ones are in the history, [`super::Backend::events`]).
    pub fn subscribe(&self, subscriber: Subscriber) {
        self.subscribers
            .write()
            .expect("feed subscribers")
            .push(subscriber);
    }

    /// Adds a subscriber to progress without changes.
    pub fn subscribe_progress(&self, subscriber: ProgressSubscriber) {
        self.progress
            .write()
            .expect("feed subscribers")
            .push(subscriber);
    }

    /// Publishes that everything up to `position` was published, the last
    /// change being `last` (`last <= position`). Called by the backend only.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn publish_progress(&self, position: u64, last: u64) {
        for s in self.progress.read().expect("feed subscribers").iter() {
            s(position, last);
        }
    }

    /// Publishes committed changes (in revision order, continuing the
    /// previous call's) to every subscriber. Called by the backend only.
    pub(crate) fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        debug_assert!(
            changes.windows(2).all(|w| w[1].prev == w[0].revision),
            "a batch's changes are chained"
        );
        for s in self.subscribers.read().expect("feed subscribers").iter() {
            s(changes);
        }
    }
}
