//! The last changes a store published, kept in memory so that a watcher
//! resuming from a recent revision catches up from them without reading
//! the store's history: on etcd a short-lived etcd watch (and before
//! 3.4.25 and 3.5.8 a marker write) per catch-up, on redb a read
//! transaction over the event log.
//!
//! etcd's feed keeps [`Change`]s, objects included; redb's writer keeps
//! event records ([`Logged`]), each decoded only once a catch-up reads
//! it: with no watcher behind, its single writer never allocates, walks
//! or frees a decoded object for the ring.
//!
//! Invariant: while `kept` is set, every change with a revision in
//! `(from, to]` is in `changes`, in order, and none other.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use crate::model::AnyObject;
use crate::store::change::{Before, Change, ChangeType, Event};
use crate::store::codec;
use crate::store::query::EventsPage;

/// Changes kept (each about its record's size; on redb, once a catch-up
/// has read it, also its decoded object).
const KEPT: usize = 8192;

/// One kept change: cheap to clone under the ring's lock, made an
/// [`Event`] after it.
pub(super) trait Kept: Clone {
    /// Its revision.
    fn revision(&self) -> u64;
    /// The event, or `None` if it cannot be read back.
    fn event(self) -> Option<Event>;
}

impl Kept for Change {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn event(self) -> Option<Event> {
        Some((
            self.revision,
            self.change,
            AnyObject::clone(&self.object),
            self.before,
        ))
    }
}

/// A change as its event record ([`codec::encode_event`]), decoded by
/// the first catch-up that reads it and shared by the others (a burst of
/// lagging watchers decodes each change once).
#[derive(Clone)]
pub(super) struct Logged {
    /// Its revision.
    pub revision: u64,
    record: Arc<Record>,
}

struct Record {
    event: Vec<u8>,
    decoded: OnceLock<Option<Decoded>>,
}

type Decoded = (ChangeType, AnyObject, Option<Arc<Before>>);

impl Logged {
    /// The change at `revision`, whose event record is `event`.
    pub(super) fn new(revision: u64, event: Vec<u8>) -> Logged {
        Logged {
            revision,
            record: Arc::new(Record {
                event,
                decoded: OnceLock::new(),
            }),
        }
    }
}

impl Kept for Logged {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn event(self) -> Option<Event> {
        let decoded = self
            .record
            .decoded
            .get_or_init(|| codec::decode_event(&self.record.event).ok());
        let (change, object, before) = decoded.as_ref()?;
        Some((
            self.revision,
            *change,
            AnyObject::clone(object),
            before.clone(),
        ))
    }
}

/// The recent changes.
pub(super) struct Recent<T = Change>(Mutex<State<T>>);

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent(Mutex::new(State {
            kept: false,
            from: 0,
            to: 0,
            changes: VecDeque::new(),
        }))
    }
}

struct State<T> {
    kept: bool,
    from: u64,
    to: u64,
    changes: VecDeque<T>,
}

impl<T: Kept> Recent<T> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the changes after `position` from now on (the feed starts, or
    /// starts again after a gap).
    pub(super) fn start(&self, position: u64) {
        let mut s = self.state();
        s.kept = true;
        s.from = position;
        s.to = position;
        s.changes.clear();
    }

    /// The feed publishes `changes`, the next after those kept; every
    /// change up to `to` is known. What leaves the ring is dropped after
    /// its lock.
    pub(super) fn push(&self, changes: &[T], to: u64) {
        let mut s = self.state();
        if !s.kept {
            return;
        }
        debug_assert!(changes.first().is_none_or(|c| c.revision() > s.to));
        for c in changes {
            s.changes.push_back(c.clone());
        }
        let gone = s.changes.len().saturating_sub(KEPT);
        let evicted: Vec<T> = s.changes.drain(..gone).collect();
        if let Some(c) = evicted.last() {
            s.from = c.revision();
        }
        s.to = s.to.max(to);
        drop(s);
        drop(evicted);
    }

    /// Keeps the changes of `records` (in revision order) after
    /// `published`, the last revision the feed published, before the
    /// feed publishes them. On a store whose revisions are dense (redb),
    /// records that do not follow the last change kept (changes were
    /// published without their records) start the ring again, so that a
    /// catch-up from before them goes to the log. Called by the single
    /// writer only: no other thread starts or pushes between its check
    /// and its push.
    pub(super) fn remember(&self, published: u64, records: &[T]) {
        let fresh = &records[records.partition_point(|l| l.revision() <= published)..];
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            return;
        };
        let follows = {
            let s = self.state();
            s.kept && s.to + 1 == first.revision()
        };
        if !follows {
            self.start(first.revision() - 1);
        }
        self.push(fresh, last.revision());
    }

    /// Every change up to `to` is known (a revision without object
    /// changes, or etcd's progress).
    #[cfg_attr(
        not(any(feature = "etcd", test)),
        expect(dead_code, reason = "etcd's feed")
    )]
    pub(super) fn advance(&self, to: u64) {
        let mut s = self.state();
        if s.kept {
            s.to = s.to.max(to);
        }
    }

    /// At most `max` (at least one) changes after `after`, if they are all
    /// kept (and readable): the page ends at `to`, or at its last change
    /// when `max` cut it.
    pub(super) fn page(&self, after: u64, max: usize) -> Option<EventsPage> {
        let (kept, cut, to) = {
            let s = self.state();
            if !s.kept || max == 0 || after < s.from || after > s.to {
                return None;
            }
            let first = s.changes.partition_point(|c| c.revision() <= after);
            // Shared under the lock; made events after it.
            let kept: Vec<T> = s.changes.iter().skip(first).take(max).cloned().collect();
            (kept, s.changes.len() - first > max, s.to)
        };
        let current = match (cut, kept.last()) {
            (true, Some(c)) => c.revision(),
            _ => to,
        };
        let events = kept.into_iter().map(Kept::event).collect::<Option<_>>()?;
        Some(EventsPage { events, current })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectMeta, Realm};

    fn change(revision: u64, prev: u64) -> Change {
        Change {
            revision,
            prev,
            change: ChangeType::Added,
            object: Arc::new(AnyObject::Realm(Realm {
                meta: ObjectMeta {
                    name: format!("r{revision}"),
                    resource_version: revision,
                    ..ObjectMeta::default()
                },
                ..Realm::default()
            })),
            before: None,
        }
    }

    fn revisions(p: &EventsPage) -> Vec<u64> {
        p.events.iter().map(|(rv, ..)| *rv).collect()
    }

    #[test]
    fn pages_only_what_it_kept() {
        let r = Recent::default();
        assert!(
            r.page(0, 10).is_none(),
            "nothing kept before the feed starts"
        );
        r.start(1_999_999);
        r.push(
            &[change(2_000_000, 1_999_999), change(2_000_001, 2_000_000)],
            2_999_999,
        );
        r.advance(4_999_999);
        r.push(&[change(5_000_000, 2_000_001)], 5_999_999);
        let p = r.page(1_999_999, 10).unwrap();
        assert_eq!(revisions(&p), [2_000_000, 2_000_001, 5_000_000]);
        assert_eq!(p.current, 5_999_999);
        // In the middle of a transaction, and cut by `max`.
        let p = r.page(2_000_000, 1).unwrap();
        assert_eq!((revisions(&p), p.current), (vec![2_000_001], 2_000_001));
        // Nothing after: empty, at the end of what is known.
        let p = r.page(5_999_999, 10).unwrap();
        assert_eq!((p.events.len(), p.current), (0, 5_999_999));
        // Before what it kept, after what it knows, or a check: etcd's.
        assert!(r.page(1_000_000, 10).is_none());
        assert!(r.page(6_999_999, 10).is_none());
        assert!(r.page(2_999_999, 0).is_none());
        // A gap starts it again.
        r.start(9_999_999);
        assert!(r.page(5_999_999, 10).is_none());
    }

    #[test]
    fn forgets_the_oldest_beyond_its_size() {
        let r = Recent::default();
        r.start(0);
        let changes: Vec<Change> = (1..=KEPT as u64 + 2).map(|i| change(i, i - 1)).collect();
        r.push(&changes, KEPT as u64 + 2);
        assert!(r.page(1, 10).is_none(), "change 2 is forgotten");
        let p = r.page(2, 10).unwrap();
        assert_eq!(p.events[0].0, 3);
    }

    /// A change as redb's writer keeps it.
    fn logged(c: &Change) -> Logged {
        let record = codec::encode(&c.object);
        let event = codec::encode_event(c.change, c.object.kind(), &record, c.before.as_deref());
        Logged::new(c.revision, event)
    }

    #[test]
    fn event_records_page_as_the_changes_they_encode() {
        let mut modified = change(3, 2);
        modified.change = ChangeType::Modified;
        let mut labelled = AnyObject::clone(&modified.object);
        labelled
            .meta_mut()
            .labels
            .insert("tier".into(), "web".into());
        modified.before = Some(crate::store::change::Before::of(&labelled));
        let changes = [change(1, 0), change(2, 1), modified];
        let r = Recent::<Logged>::default();
        r.start(0);
        r.push(&changes.iter().map(logged).collect::<Vec<_>>(), 3);
        let p = r.page(0, 10).expect("all kept");
        assert_eq!(p.current, 3);
        let want: Vec<Event> = changes.iter().cloned().filter_map(Kept::event).collect();
        assert_eq!(p.events, want);
        // Decoded once, for every later catch-up.
        assert!(
            r.state()
                .changes
                .iter()
                .all(|l| matches!(l.record.decoded.get(), Some(Some(_))))
        );
        assert_eq!(r.page(0, 10).expect("all kept").events, want);
        // An unreadable record sends the catch-up to the log.
        r.push(&[Logged::new(4, vec![0xff, 0xff, 0xff])], 4);
        assert!(r.page(3, 10).is_none());
        assert_eq!(r.page(1, 2).expect("before it").events, want[1..]);
    }

    #[test]
    fn records_after_a_gap_in_what_was_published_start_the_ring_again() {
        let r = Recent::<Logged>::default();
        r.start(0);
        let records: Vec<Logged> = (1..=3).map(|i| logged(&change(i, i - 1))).collect();
        // What was published already is not kept twice.
        r.remember(0, &records[..2]);
        r.remember(2, &records);
        assert_eq!(revisions(&r.page(0, 10).unwrap()), [1, 2, 3]);
        // Changes 4 and 5 were published without their records: a
        // catch-up from before them must read the log.
        let later: Vec<Logged> = (6..=7).map(|i| logged(&change(i, i - 1))).collect();
        r.remember(5, &later);
        assert!(r.page(3, 10).is_none(), "4 and 5 are not kept");
        assert!(r.page(4, 10).is_none(), "5 is not kept");
        assert_eq!(revisions(&r.page(5, 10).unwrap()), [6, 7]);
        // Records that all were published already change nothing.
        r.remember(7, &later);
        assert_eq!(revisions(&r.page(5, 10).unwrap()), [6, 7]);
    }
}
