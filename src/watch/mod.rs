//! Watch: durable, resumable event streams.
//!
//! Every committed change is already in the store's event log (written in
//! the same transaction). The [`Hub`] fans each change out to live watchers
//! as a frame serialized once for all of them. A watcher:
//!
//! 1. subscribes to the hub first, so nothing committed afterwards is missed;
//! 2. starts either from a revision (`After(n)`) or from a snapshot (an
//!    ADDED per object in scope, then a BOOKMARK at the snapshot revision),
//!    rendered a page of [`SNAPSHOT_PAGE_BYTES`] at a time, each only once
//!    the connection has taken the one before: a watcher that does not
//!    read holds one page and its connection's write buffer, never its
//!    snapshot. Watchers' store reads (snapshot and catch-up pages) share
//!    a few reader threads, however many watchers there are;
//! 3. catches up from the log up to the newest event, then follows the hub,
//!    skipping frames at or below its cursor (no duplicates at the hand-over)
//!    and going back to the log whenever it sees a gap: it fell behind the
//!    hub's bounded buffer. The hub is fed by the store's ordered change
//!    feed, where each change names its predecessor's revision, so a gap is
//!    exact to detect (a frame whose predecessor is newer than the cursor)
//!    whether or not revisions are dense. Memory per watcher stays bounded
//!    (one page of the log at most); a slow reader only ever loses events if
//!    the log itself was compacted past its cursor, and then it gets an
//!    ERROR (410) event.
//!
//! A watcher is the response body's stream itself, polled by its connection:
//! a new frame wakes the connection directly, and frames already queued are
//! written as one chunk. Streams end on hub shutdown, on `timeout`, or when
//! the client leaves.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::model::{AnyObject, Kind, Selector};
use crate::store::{
    Backend, Before, Change, ChangeType, ListIter, ListQuery, ProgressSubscriber, Snapshot, Store,
    StoreError, Subscriber,
};

/// Default number of frames the hub buffers before a lagging watcher has
/// to catch up from the log.
pub const HUB_CAPACITY: usize = 8192;
/// Events read from the log per catch-up step.
const CATCH_UP_BATCH: usize = 512;
/// A snapshot page is rendered up to this many bytes (or one object, if
/// larger): what a watcher that does not read holds besides the
/// connection's own write buffer.
pub const SNAPSHOT_PAGE_BYTES: usize = 16 * 1024;
/// Frames of at least this size are rendered once and shared by every
/// watcher sending them (smaller ones cost a watcher at most a page).
const SHARE_FROM_BYTES: usize = 16 * 1024;
/// Budget of the shared frames.
const SHARED_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Up to this many bytes of already-queued events are written as one chunk.
const COALESCE_BYTES: usize = 16 * 1024;

/// Joins frames into one chunk (no copy for a single frame).
fn concat(mut parts: Vec<Bytes>, size: usize) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    let mut out = Vec::with_capacity(size);
    for p in parts {
        out.extend_from_slice(&p);
    }
    Bytes::from(out)
}

/// Serializes events for the wire (the API layer provides it, so this
/// module stays independent of any API version).
pub trait Encode: Send + Sync {
    /// The event document `{"type":..,"object":..}` for a change.
    fn event(&self, event: EventType, object: &AnyObject) -> Vec<u8>;
    /// The ERROR event document for a failure that ends the stream.
    fn error(&self, error: &StoreError) -> Vec<u8>;
    /// The BOOKMARK event document: only `kind` and the revision.
    fn bookmark(&self, kind: &str, revision: u64) -> Vec<u8>;
}

/// A shared encoder.
pub type Encoder = Arc<dyn Encode>;

/// The `type` of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Created (or present in the initial snapshot).
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
    /// A resumable position without a change.
    Bookmark,
    /// The stream cannot go on (the object is a problem document).
    Error,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

impl From<ChangeType> for EventType {
    fn from(c: ChangeType) -> Self {
        match c {
            ChangeType::Added => EventType::Added,
            ChangeType::Modified => EventType::Modified,
            ChangeType::Deleted => EventType::Deleted,
        }
    }
}

/// One change, serialized once for every watcher.
#[derive(Debug)]
pub struct Frame {
    /// The change's revision.
    pub revision: u64,
    /// The revision of the change before it in the store's feed.
    pub prev: u64,
    /// The event type.
    pub event: EventType,
    /// The object's kind.
    pub kind: Kind,
    /// The object's path names.
    pub names: Vec<String>,
    /// The object's labels (for selectors).
    pub labels: BTreeMap<String, String>,
    /// The name of the object's `status.state` (for field selectors).
    pub state: &'static str,
    /// Whether the object is terminating (for field selectors).
    pub terminating: bool,
    /// For a modification, what selectors saw of the version before, when
    /// known: a watcher whose selection the object enters gets ADDED, one
    /// whose selection it leaves gets DELETED.
    pub before: Option<Arc<Before>>,
    /// The object (none for a progress frame), for a watcher that gets it
    /// under another event type.
    pub object: Option<Arc<AnyObject>>,
    /// The event document (JSON, no trailing newline).
    pub json: Bytes,
    /// The NDJSON line (the document and a newline), shared by every
    /// NDJSON watcher without copying.
    pub line: Bytes,
}

/// What selectors see of an object's version.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The name of its `status.state`.
    pub state: &'a str,
    /// Whether it is terminating.
    pub terminating: bool,
}

/// Which events a watcher wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Kinds (empty: all).
    pub kinds: Vec<Kind>,
    /// Scope names from realm down (`None`: any).
    pub scope: Vec<Option<String>>,
    /// Label selector.
    pub selector: Selector,
}

impl Filter {
    /// Whether an object of `kind` at `names` with `labels`, status
    /// state `state` and `terminating` or not is wanted.
    pub fn matches(
        &self,
        kind: Kind,
        names: &[String],
        labels: &BTreeMap<String, String>,
        state: &str,
        terminating: bool,
    ) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self
                .scope
                .iter()
                .enumerate()
                .all(|(i, want)| want.as_ref().is_none_or(|w| names.get(i) == Some(w)))
            && self.selector.matches(labels)
            && self.selector.matches_fields(state, terminating)
    }

    /// The event a watcher gets for a change of type `event` to the object
    /// of `kind` at `names`, which is now `now` and was `before` (for a
    /// modification, when known): ADDED when the change brings it into
    /// the selection, DELETED when it takes it out, the change's own type
    /// while it stays in, nothing while it is out. Without `before` (an
    /// event redb wrote before storage format 4, or an etcd change whose
    /// previous version could not be read), the new version alone decides.
    pub fn event_for(
        &self,
        event: EventType,
        kind: Kind,
        names: &[String],
        now: Selected<'_>,
        before: Option<&Before>,
    ) -> Option<EventType> {
        let is = self.matches(kind, names, now.labels, now.state, now.terminating);
        let Some(b) = before.filter(|_| event == EventType::Modified) else {
            return is.then_some(event);
        };
        let was = self.matches(kind, names, &b.labels, b.state, b.terminating);
        match (was, is) {
            (true, true) => Some(EventType::Modified),
            (false, true) => Some(EventType::Added),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        }
    }

    fn kinds(&self) -> Vec<Kind> {
        if self.kinds.is_empty() {
            Kind::ALL.to_vec()
        } else {
            let mut k = self.kinds.clone();
            k.sort();
            k.dedup();
            k
        }
    }

    /// The `kind` a BOOKMARK carries: the watched kind, or `Bookmark`.
    fn bookmark_kind(&self) -> &'static str {
        match self.kinds().as_slice() {
            [one] => one.as_str(),
            _ => "Bookmark",
        }
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// An ADDED per object in scope from one snapshot, then a BOOKMARK.
    Snapshot,
    /// Every event after this revision.
    After(u64),
}

/// How events are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// `application/x-ndjson`: one JSON document per line.
    Ndjson,
    /// `text/event-stream`: `id`, `event` and `data` fields per event.
    Sse,
}

/// Fans committed changes out to live watchers.
pub struct Hub {
    tx: broadcast::Sender<Arc<Frame>>,
    /// Reads of the store for watchers (snapshot and catch-up pages) that
    /// may run at once: however many watchers there are, they share a
    /// few reader threads instead of each growing the blocking pool.
    readers: tokio::sync::Semaphore,
    /// Large frames rendered for the snapshot or the log, shared.
    shared: Shared,
    shutdown: watch::Sender<bool>,
    encode: Encoder,
    bookmark_interval: Duration,
    counters: Counters,
}

/// What the hub's watchers did, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    events_sent: AtomicU64,
    catch_ups: AtomicU64,
    gone: AtomicU64,
}

/// [`Hub::stats`]: counts since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Events (not bookmarks or errors) queued to streams.
    pub events_sent: u64,
    /// Times a stream read the log: it resumed from a past revision, or
    /// fell behind the hub's buffer.
    pub catch_ups: u64,
    /// Watches refused, or streams ended, because their revision was
    /// compacted (410).
    pub gone: u64,
}

impl Hub {
    /// A hub buffering `capacity` frames and sending BOOKMARKs on idle
    /// streams every `bookmark_interval`.
    pub fn new(encode: Encoder, capacity: usize, bookmark_interval: Duration) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (shutdown, _) = watch::channel(false);
        let readers = std::thread::available_parallelism().map_or(2, |n| 2 * n.get());
        Arc::new(Hub {
            tx,
            readers: tokio::sync::Semaphore::new(readers),
            shared: Shared::new(SHARED_FRAME_BYTES),
            shutdown,
            encode,
            bookmark_interval,
            counters: Counters::default(),
        })
    }

    /// What the watchers did so far.
    pub fn stats(&self) -> WatchStats {
        let c = &self.counters;
        WatchStats {
            events_sent: c.events_sent.load(Ordering::Relaxed),
            catch_ups: c.catch_ups.load(Ordering::Relaxed),
            gone: c.gone.load(Ordering::Relaxed),
        }
    }

    fn count_gone(&self, e: &StoreError) {
        if matches!(e, StoreError::Gone(_)) {
            self.counters.gone.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The subscriber to the store's change feed that publishes every
    /// committed change to the watchers.
    pub fn subscriber(self: &Arc<Self>) -> Subscriber {
        let hub = Arc::downgrade(self);
        Arc::new(move |changes: &[Change]| {
            // Nobody listening: skip serializing (watchers that connect
            // later read these events from the log).
            if let Some(hub) = hub.upgrade().filter(|h| h.tx.receiver_count() > 0) {
                for c in changes {
                    let _ = hub.tx.send(Arc::new(hub.frame(c)));
                }
            }
        })
    }

    /// The subscriber to the feed's progress: a position with no change
    /// (etcd's revisions are not dense) moves live watchers' cursors, so
    /// that their idle BOOKMARKs advance.
    pub fn progress_subscriber(self: &Arc<Self>) -> ProgressSubscriber {
        let hub = Arc::downgrade(self);
        Arc::new(move |position: u64, last: u64| {
            if let Some(hub) = hub.upgrade().filter(|h| h.tx.receiver_count() > 0) {
                let _ = hub.tx.send(Arc::new(Frame {
                    revision: position,
                    prev: last,
                    event: EventType::Bookmark,
                    kind: Kind::Realm,
                    names: Vec::new(),
                    labels: BTreeMap::new(),
                    state: "",
                    terminating: false,
                    before: None,
                    object: None,
                    json: Bytes::new(),
                    line: Bytes::new(),
                }));
            }
        })
    }

    fn frame(&self, change: &Change) -> Frame {
        let (event, obj) = (EventType::from(change.change), &*change.object);
        let mut frame = Frame {
            revision: change.revision,
            prev: change.prev,
            event,
            kind: obj.kind(),
            names: obj.path().names().to_vec(),
            labels: obj.meta().labels.clone(),
            state: obj.state_name(),
            terminating: obj.meta().is_terminating(),
            before: change.before.clone(),
            object: Some(change.object.clone()),
            line: {
                let mut line = self.encode.event(event, obj);
                line.push(b'\n');
                Bytes::from(line)
            },
            json: Bytes::new(),
        };
        frame.json = frame.line.slice(..frame.line.len() - 1);
        frame
    }

    /// The framed event for `object` (`id`: the SSE id), rendered once for
    /// every watcher when it is large.
    fn render(
        &self,
        framing: Framing,
        event: EventType,
        id: Option<u64>,
        object: &AnyObject,
    ) -> Bytes {
        let key = FrameKey {
            framing,
            event,
            id,
            kind: object.kind(),
            names: object.path().names().to_vec(),
            revision: object.meta().resource_version,
        };
        if let Some(frame) = self.shared.get(&key) {
            return frame;
        }
        let frame = frame_bytes(framing, event, id, &self.encode.event(event, object));
        self.shared.keep(key, frame)
    }

    /// Ends every stream (on server shutdown).
    pub fn shutdown(&self) {
        // Set even with no stream open, so that one starting now ends too.
        self.shutdown.send_replace(true);
    }

    /// Number of live subscribers.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

fn frame_bytes(framing: Framing, event: EventType, revision: Option<u64>, json: &[u8]) -> Bytes {
    match framing {
        Framing::Ndjson => {
            let mut out = Vec::with_capacity(json.len() + 1);
            out.extend_from_slice(json);
            out.push(b'\n');
            Bytes::from(out)
        }
        Framing::Sse => {
            let mut out = Vec::with_capacity(json.len() + 48);
            if let Some(rev) = revision {
                out.extend_from_slice(format!("id: {rev}\n").as_bytes());
            }
            out.extend_from_slice(format!("event: {}\ndata: ", event.as_str()).as_bytes());
            out.extend_from_slice(json);
            out.extend_from_slice(b"\n\n");
            Bytes::from(out)
        }
    }
}

/// A stream of framed event bytes, ready to be a response body.
pub type EventStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Starts a stream: checks `start` against the retained history (a
/// compacted or future revision is `Gone`) and returns the stream of framed
/// bytes. The stream is the watcher itself: whoever polls it (the
/// connection) is woken by the hub directly, with no task or queue in
/// between. It ends on hub shutdown, at `timeout`, after an ERROR event, or
/// when it is dropped (the client left).
pub async fn start(
    hub: Arc<Hub>,
    store: Store,
    filter: Filter,
    start: Start,
    framing: Framing,
    timeout: Option<Duration>,
) -> Result<EventStream, StoreError> {
    // Subscribe before anything is read, so no commit falls in between.
    let live = hub.tx.subscribe();
    if let Start::After(n) = start {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.events(n, 0))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .inspect_err(|e| hub.count_gone(e))?;
        hub.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
    }
    let mut shutdown = hub.shutdown.subscribe();
    // A timeout too large to represent means no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let end = async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        };
        match deadline {
            Some(d) => {
                tokio::select! {
                    () = stop => {}
                    () = tokio::time::sleep_until(d) => {}
                }
            }
            None => stop.await,
        }
    };
    let (cursor, phase) = match start {
        Start::Snapshot => (0, Phase::Snapshot),
        Start::After(n) => (n, Phase::CatchUp),
    };
    let idle = Box::pin(tokio::time::sleep(hub.bookmark_interval));
    let watcher = Watcher {
        hub,
        store,
        filter,
        framing,
        live,
        cursor,
        phase,
        out: VecDeque::new(),
        last_sent: Instant::now(),
        idle,
    };
    let stream = futures_util::stream::unfold(watcher, |mut w| async move {
        let chunk = w.next_chunk().await?;
        Some((chunk, w))
    });
    Ok(Box::pin(stream.take_until(end)))
}

/// Why a stream ended early.
enum Stop {
    /// The stream is over (the hub closed, or the ERROR event was sent).
    Closed,
    /// The store failed (reported to the client as an ERROR event).
    Failed(StoreError),
}

/// Where a watcher is.
enum Phase {
    /// To send an ADDED per object in scope, then a BOOKMARK.
    Snapshot,
    /// Sending the snapshot's ADDEDs, a page at a time.
    Snapshotting(Box<SnapshotCursor>),
    /// Reading the log after the cursor.
    CatchUp,
    /// Following the hub.
    Live,
    /// Nothing more to send.
    Done,
}

/// What woke a live watcher.
enum Woke {
    Idle,
    Frame(Result<Arc<Frame>, broadcast::error::RecvError>),
}

struct Watcher {
    hub: Arc<Hub>,
    store: Store,
    filter: Filter,
    framing: Framing,
    live: broadcast::Receiver<Arc<Frame>>,
    /// The last revision this watcher has processed (sent or filtered out).
    cursor: u64,
    phase: Phase,
    /// Framed events not yet handed to the connection.
    out: VecDeque<Bytes>,
    last_sent: Instant,
    /// Fires when a BOOKMARK may be due (checked against `last_sent`, so
    /// that events do not reset the timer).
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Watcher {
    /// The next chunk for the connection; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.take_out() {
                self.last_sent = Instant::now();
                return Some(chunk);
            }
            match self.step().await {
                Ok(()) => {}
                Err(Stop::Closed) => return None,
                Err(Stop::Failed(e)) => {
                    self.hub.count_gone(&e);
                    let bytes = self.hub.encode.error(&e);
                    self.out
                        .push_back(frame_bytes(self.framing, EventType::Error, None, &bytes));
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// Queued frames joined into one chunk of up to [`COALESCE_BYTES`]
    /// (more only if a single frame is larger).
    fn take_out(&mut self) -> Option<Bytes> {
        let first = self.out.pop_front()?;
        let mut size = first.len();
        let mut parts = vec![first];
        while size < COALESCE_BYTES {
            match self.out.front() {
                Some(b) if size + b.len() <= COALESCE_BYTES => {
                    size += b.len();
                    parts.extend(self.out.pop_front());
                }
                _ => break,
            }
        }
        Some(concat(parts, size))
    }

    /// Advances by one step, queueing frames in `out`.
    async fn step(&mut self) -> Result<(), Stop> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Snapshot => self.snapshot_page(None).await,
            Phase::Snapshotting(cursor) => self.snapshot_page(Some(cursor)).await,
            Phase::CatchUp => {
                let current = self.catch_up_page().await?;
                self.phase = if current { Phase::Live } else { Phase::CatchUp };
                Ok(())
            }
            Phase::Live => {
                self.phase = Phase::Live;
                self.follow().await
            }
            Phase::Done => Err(Stop::Closed),
        }
    }

    fn push_bookmark(&mut self) {
        let bytes = self
            .hub
            .encode
            .bookmark(self.filter.bookmark_kind(), self.cursor);
        self.out.push_back(frame_bytes(
            self.framing,
            EventType::Bookmark,
            Some(self.cursor),
            &bytes,
        ));
    }

    /// Renders the snapshot's next page on a reader thread (the cursor
    /// travels there and back): one page per step, taken only once the
    /// connection has written the previous one.
    async fn snapshot_page(&mut self, cursor: Option<Box<SnapshotCursor>>) -> Result<(), Stop> {
        let (store, filter, framing, hub) = (
            self.store.clone(),
            self.filter.clone(),
            self.framing,
            self.hub.clone(),
        );
        let readers = self.hub.clone();
        let _reader = readers.readers.acquire().await.expect("never closed");
        let (cursor, frames, done) = tokio::task::spawn_blocking(move || {
            let mut cursor = match cursor {
                Some(c) => c,
                None => Box::new(SnapshotCursor::new(store.snapshot()?, &filter)),
            };
            let (frames, done) = cursor.page(&filter, framing, &hub, SNAPSHOT_PAGE_BYTES)?;
            Ok::<_, StoreError>((cursor, frames, done))
        })
        .await
        .map_err(|e| Stop::Failed(StoreError::Internal(e.to_string())))?
        .map_err(Stop::Failed)?;
        self.hub
            .counters
            .events_sent
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.out.extend(frames);
        if done {
            // Only a complete snapshot has a revision: a failure halfway
            // ends the stream with an ERROR, not a BOOKMARK.
            self.cursor = cursor.snapshot.revision();
            self.push_bookmark();
            self.phase = Phase::CatchUp;
        } else {
            self.phase = Phase::Snapshotting(cursor);
        }
        Ok(())
    }

    /// Queues one page of the log's events after the cursor; answers
    /// whether the cursor is now current.
    async fn catch_up_page(&mut self) -> Result<bool, Stop> {
        let (store, after) = (self.store.clone(), self.cursor);
        let hub = self.hub.clone();
        let _reader = hub.readers.acquire().await.expect("never closed");
        let page = tokio::task::spawn_blocking(move || store.events(after, CATCH_UP_BATCH))
            .await
            .map_err(|e| Stop::Failed(StoreError::Internal(e.to_string())))?
            .map_err(Stop::Failed)?;
        let n = page.events.len();
        let mut sent = 0;
        for (revision, change, obj, before) in page.events {
            self.cursor = revision;
            let now = Selected {
                labels: &obj.meta().labels,
                state: obj.state_name(),
                terminating: obj.meta().is_terminating(),
            };
            if let Some(event) = self.filter.event_for(
                EventType::from(change),
                obj.kind(),
                obj.path().names(),
                now,
                before.as_deref(),
            ) {
                let frame = self.hub.render(self.framing, event, Some(revision), &obj);
                self.out.push_back(frame);
                sent += 1;
            }
        }
        self.hub
            .counters
            .events_sent
            .fetch_add(sent, Ordering::Relaxed);
        if n < CATCH_UP_BATCH {
            // The page holds every change up to `current`: revisions
            // between the last change and it (none on redb; other
            // writes' on etcd) hold nothing for this watcher.
            self.cursor = self.cursor.max(page.current);
        }
        Ok(n < CATCH_UP_BATCH)
    }

    /// Waits for the hub's next frames (queueing what is wanted) or for an
    /// idle BOOKMARK; goes back to the log on a gap.
    async fn follow(&mut self) -> Result<(), Stop> {
        let woke = tokio::select! {
            () = &mut self.idle => Woke::Idle,
            received = self.live.recv() => Woke::Frame(received),
        };
        let interval = self.hub.bookmark_interval;
        match woke {
            Woke::Idle => {
                let due = self.last_sent + interval;
                let now = Instant::now();
                if now >= due {
                    self.push_bookmark();
                    self.idle.as_mut().reset(now + interval);
                } else {
                    self.idle.as_mut().reset(due);
                }
            }
            Woke::Frame(Ok(frame)) => {
                // Take whatever else is already queued too, so a busy
                // stream writes one chunk instead of many.
                let mut size = 0;
                let mut sent = 0;
                let mut next = Some(frame);
                while let Some(frame) = next.take() {
                    if frame.revision > self.cursor {
                        if frame.prev > self.cursor {
                            // Missed frames: they are in the log.
                            self.hub.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                            self.phase = Phase::CatchUp;
                            break;
                        }
                        self.cursor = frame.revision;
                        let event = (frame.event != EventType::Bookmark)
                            .then(|| {
                                let now = Selected {
                                    labels: &frame.labels,
                                    state: frame.state,
                                    terminating: frame.terminating,
                                };
                                self.filter.event_for(
                                    frame.event,
                                    frame.kind,
                                    &frame.names,
                                    now,
                                    frame.before.as_deref(),
                                )
                            })
                            .flatten();
                        if let Some(event) = event {
                            let b = match (&frame.object, self.framing) {
                                // Into or out of the selection: its own
                                // event type.
                                (Some(object), framing) if event != frame.event => {
                                    self.hub
                                        .render(framing, event, Some(frame.revision), object)
                                }
                                (_, Framing::Ndjson) => frame.line.clone(),
                                (_, Framing::Sse) => frame_bytes(
                                    self.framing,
                                    frame.event,
                                    Some(frame.revision),
                                    &frame.json,
                                ),
                            };
                            size += b.len();
                            sent += 1;
                            self.out.push_back(b);
                        }
                    }
                    if size >= COALESCE_BYTES {
                        break;
                    }
                    match self.live.try_recv() {
                        Ok(f) => next = Some(f),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            self.hub.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                            self.phase = Phase::CatchUp;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.hub
                    .counters
                    .events_sent
                    .fetch_add(sent, Ordering::Relaxed);
            }
            Woke::Frame(Err(broadcast::error::RecvError::Lagged(missed))) => {
                self.hub.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    missed,
                    cursor = self.cursor,
                    "watcher fell behind; catching up from the log"
                );
                self.phase = Phase::CatchUp;
            }
            Woke::Frame(Err(broadcast::error::RecvError::Closed)) => return Err(Stop::Closed),
        }
        Ok(())
    }
}

/// What a rendered frame depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FrameKey {
    framing: Framing,
    event: EventType,
    id: Option<u64>,
    kind: Kind,
    names: Vec<String>,
    revision: u64,
}

/// Large rendered frames, shared: without it, N watchers sending one
/// large object (a snapshot, a catch-up page) would each hold a copy of
/// its frame. An entry is exact for the object's `resourceVersion`; when
/// the budget is full the map starts over.
struct Shared {
    budget: usize,
    inner: std::sync::Mutex<(std::collections::HashMap<FrameKey, Bytes>, usize)>,
}

impl Shared {
    fn new(budget: usize) -> Shared {
        Shared {
            budget,
            inner: Default::default(),
        }
    }

    fn get(&self, key: &FrameKey) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.get(key).cloned()
    }

    /// Keeps `frame` if it is large (and fits); answers it.
    fn keep(&self, key: FrameKey, frame: Bytes) -> Bytes {
        if frame.len() < SHARE_FROM_BYTES || frame.len() > self.budget / 4 {
            return frame;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, bytes) = &mut *inner;
        if let Some(kept) = map.get(&key) {
            return kept.clone();
        }
        if *bytes + frame.len() > self.budget {
            map.clear();
            *bytes = 0;
        }
        *bytes += frame.len();
        map.insert(key, frame.clone());
        frame
    }
}

/// Where a snapshot watch is in its snapshot: the kinds left and the
/// cursor over the current one, within one consistent read view.
struct SnapshotCursor {
    snapshot: Snapshot,
    kinds: VecDeque<Kind>,
    iter: Option<(Kind, ListIter)>,
}

impl SnapshotCursor {
    fn new(snapshot: Snapshot, filter: &Filter) -> SnapshotCursor {
        SnapshotCursor {
            snapshot,
            kinds: filter.kinds().into(),
            iter: None,
        }
    }

    /// Renders ADDED frames until they take `budget` bytes or the snapshot
    /// is done; answers the frames and whether it is done. Blocking.
    fn page(
        &mut self,
        filter: &Filter,
        framing: Framing,
        hub: &Hub,
        budget: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        let mut frames = Vec::new();
        let mut size = 0;
        while size < budget {
            let Some((kind, iter)) = &mut self.iter else {
                let Some(kind) = self.kinds.pop_front() else {
                    return Ok((frames, true));
                };
                let query = ListQuery {
                    kind,
                    scope: filter
                        .scope
                        .iter()
                        .take(kind.depth() - 1)
                        .cloned()
                        .collect(),
                    selector: filter.selector.clone(),
                    limit: None,
                    continue_token: None,
                };
                self.iter = Some((kind, self.snapshot.list(&query)?));
                continue;
            };
            match iter.next() {
                None => self.iter = None,
                Some(entry) => {
                    let (_, obj) = entry?;
                    if filter.matches(
                        *kind,
                        obj.path().names(),
                        &obj.meta().labels,
                        obj.state_name(),
                        obj.meta().is_terminating(),
                    ) {
                        let frame = hub.render(framing, EventType::Added, None, &obj);
                        size += frame.len();
                        frames.push(frame);
                    }
                }
            }
        }
        Ok((frames, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_kind_scope_and_labels() {
        let f = Filter {
            kinds: vec![Kind::Cell],
            scope: vec![Some("r".into()), None, Some("t".into())],
            selector: Selector::parse("app=web").unwrap(),
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(f.matches(
            Kind::Cell,
            &names(&["r", "s", "t", "c"]),
            &web,
            "Pending",
            false
        ));
        assert!(!f.matches(
            Kind::Cell,
            &names(&["r", "s", "u", "c"]),
            &web,
            "Pending",
            false
        ));
        assert!(!f.matches(
            Kind::Cell,
            &names(&["x", "s", "t", "c"]),
            &web,
            "Pending",
            false
        ));
        assert!(!f.matches(
            Kind::Stack,
            &names(&["r", "s", "t"]),
            &web,
            "Pending",
            false
        ));
        assert!(!f.matches(
            Kind::Cell,
            &names(&["r", "s", "t", "c"]),
            &BTreeMap::new(),
            "Pending",
            false
        ));
        assert_eq!(f.bookmark_kind(), "Cell");
        assert_eq!(Filter::default().bookmark_kind(), "Bookmark");
    }

    struct Plain;

    impl Encode for Plain {
        fn event(&self, _: EventType, _: &AnyObject) -> Vec<u8> {
            b"{}".to_vec()
        }
        fn error(&self, _: &StoreError) -> Vec<u8> {
            b"{}".to_vec()
        }
        fn bookmark(&self, _: &str, _: u64) -> Vec<u8> {
            b"{}".to_vec()
        }
    }

    #[test]
    fn shutdown_with_no_stream_open_still_ends_later_ones() {
        let hub = Hub::new(Arc::new(Plain), 16, Duration::from_secs(1));
        assert_eq!(hub.watchers(), 0);
        hub.shutdown();
        // A stream starting after the shutdown sees it at once.
        assert!(*hub.shutdown.subscribe().borrow());
    }

    /// A watcher following the hub from `cursor`, on an empty store.
    fn live_watcher(hub: &Arc<Hub>, cursor: u64) -> (Watcher, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.redb"), Default::default()).unwrap();
        let watcher = Watcher {
            hub: hub.clone(),
            store,
            filter: Filter::default(),
            framing: Framing::Ndjson,
            live: hub.tx.subscribe(),
            cursor,
            phase: Phase::Live,
            out: VecDeque::new(),
            last_sent: Instant::now(),
            idle: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        };
        (watcher, dir)
    }

    fn change(revision: u64, prev: u64) -> Change {
        let mut realm = crate::model::Realm::default();
        realm.meta.name = format!("r{revision}");
        Change {
            revision,
            prev,
            change: ChangeType::Added,
            object: Arc::new(AnyObject::Realm(realm)),
            before: None,
        }
    }

    #[tokio::test]
    async fn gaps_are_found_by_the_predecessor_not_by_density() {
        let hub = Hub::new(Arc::new(Plain), 16, Duration::from_secs(3600));
        let (mut w, _dir) = live_watcher(&hub, 10);
        let publish = hub.subscriber();
        // Sparse but chained revisions: nothing was missed.
        publish(&[change(15, 10), change(20, 15)]);
        w.step().await.ok().unwrap();
        assert_eq!((w.cursor, w.out.len()), (20, 2));
        assert!(matches!(w.phase, Phase::Live));
        // Frames at or below the cursor (the hand-over from the log) are
        // skipped.
        publish(&[change(20, 15)]);
        w.step().await.ok().unwrap();
        assert_eq!((w.cursor, w.out.len()), (20, 2));
        // A frame whose predecessor this watcher never saw: back to the log.
        publish(&[change(30, 25)]);
        w.step().await.ok().unwrap();
        assert_eq!(w.cursor, 20, "nothing skipped");
        assert!(matches!(w.phase, Phase::CatchUp));
    }

    #[tokio::test]
    async fn a_snapshot_is_rendered_a_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.redb"), Default::default()).unwrap();
        let realms = (0..5)
            .map(|i| {
                let mut realm = crate::model::Realm::default();
                realm.meta.name = format!("r{i}");
                (AnyObject::Realm(realm), crate::store::Part::Main)
            })
            .collect();
        store.apply(realms, false).await.unwrap();
        let filter = Filter {
            kinds: vec![Kind::Realm],
            ..Filter::default()
        };
        let hub = Hub::new(Arc::new(Plain), 16, Duration::from_secs(3600));
        let mut cursor = SnapshotCursor::new(store.snapshot().unwrap(), &filter);
        // A budget of one byte: one frame a page, then the end.
        let mut pages = Vec::new();
        loop {
            let (frames, done) = cursor.page(&filter, Framing::Ndjson, &hub, 1).unwrap();
            pages.push(frames.len());
            if done {
                break;
            }
        }
        assert_eq!(pages, [1, 1, 1, 1, 1, 0]);
        // A large budget takes everything in one page.
        let mut cursor = SnapshotCursor::new(store.snapshot().unwrap(), &filter);
        let (frames, done) = cursor
            .page(&filter, Framing::Ndjson, &hub, 1 << 20)
            .unwrap();
        assert_eq!((frames.len(), done), (5, true));
    }

    #[test]
    fn large_frames_are_shared_small_ones_are_not() {
        let shared = Shared::new(4 * SHARE_FROM_BYTES);
        let key = |revision| FrameKey {
            framing: Framing::Ndjson,
            event: EventType::Added,
            id: None,
            kind: Kind::Realm,
            names: vec!["r".into()],
            revision,
        };
        let small = Bytes::from(vec![b'x'; 10]);
        shared.keep(key(1), small);
        assert!(shared.get(&key(1)).is_none());
        let large = Bytes::from(vec![b'y'; SHARE_FROM_BYTES]);
        let kept = shared.keep(key(2), large.clone());
        assert_eq!(kept.as_ptr(), large.as_ptr());
        // A second render of the same object at the same revision gets the
        // first one's bytes.
        let again = shared.keep(key(2), Bytes::from(vec![b'y'; SHARE_FROM_BYTES]));
        assert_eq!(again.as_ptr(), large.as_ptr());
        assert!(shared.get(&key(3)).is_none());
        // Past the budget, the map starts over.
        for r in 3..8 {
            shared.keep(key(r), Bytes::from(vec![b'z'; SHARE_FROM_BYTES]));
        }
        assert!(shared.get(&key(2)).is_none());
        assert!(shared.inner.lock().unwrap().1 <= 4 * SHARE_FROM_BYTES);
    }

    #[test]
    fn sse_and_ndjson_framing() {
        let nd = frame_bytes(Framing::Ndjson, EventType::Added, Some(3), b"{}");
        assert_eq!(&nd[..], b"{}\n");
        let sse = frame_bytes(Framing::Sse, EventType::Modified, Some(3), b"{}");
        assert_eq!(&sse[..], b"id: 3\nevent: MODIFIED\ndata: {}\n\n");
    }
}
