//! Following the cluster: the change feed, the heartbeat, the cluster's
//! status, and compaction.
//!
//! The feed is one etcd watch over the whole prefix, from the revision
//! after the one the store opened at: every replica's writes reach this
//! replica's watchers through it, with the same resourceVersions, in etcd's
//! order. A revision with object changes is published as changes (each
//! naming its predecessor); one without (the heartbeat, a token, another
//! key under the prefix) and etcd's progress notifications as progress.
//! The watch is reopened from the next revision when it fails, or when it
//! was silent for three heartbeats (a member that hangs: etcd-io/etcd#8980);
//! if etcd compacted past it, the feed starts again at the current revision
//! and the first change it then publishes names the position before that
//! as its predecessor, so every watcher behind sees a gap and catches up
//! from the history (or gets 410).
//!
//! The heartbeat: once per heartbeat interval, one replica (a compare-and-
//! swap on `P/m/heartbeat`'s revision picks it) writes the key, so that
//! BOOKMARKs advance on an idle keyspace on every etcd version.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use etcd_client::{
    AlarmAction, AlarmType, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};

use super::cache::Entry;
use super::error::EtcdError;
use super::inner::{EtcdStore, Inner};
use super::layout::prefix_end;
use crate::store::change::Change;
use crate::store::error::StoreError;

/// How often the cluster's status (sizes, alarms) is read.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Follows the prefix from etcd revision `opened + 1`.
pub async fn feed(store: Weak<Inner>, opened: i64) {
    let mut next = opened + 1;
    let mut last = match store.upgrade() {
        Some(s) => {
            s.recent.start(s.revs.position(opened));
            s.revs.position(opened)
        }
        None => return,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(inner) = store.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        match follow(&inner, &mut next, &mut last).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, next, "the etcd change feed stopped; reopening");
                let mut h = inner.health();
                h.feed_ok = false;
                h.feed_error = Some(e);
            }
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One watch, until it fails (an error) or goes silent (`Ok`).
async fn follow(inner: &Arc<Inner>, next: &mut i64, last: &mut u64) -> Result<(), String> {
    let all = inner.layout.all();
    let silence = inner.options.heartbeat * 3 + Duration::from_secs(2);
    let mut options = WatchOptions::new()
        .with_range(prefix_end(&all))
        .with_start_revision(*next)
        .with_prev_key();
    if inner.trust_progress {
        options = options.with_progress_notify();
    }
    let mut stream = inner
        .client
        .watch_client()
        .max_decoding_message_size(super::inner::MAX_DECODE)
        .watch(all.clone(), Some(options))
        .await
        .map_err(|e| EtcdError(e).message())?;
    loop {
        let msg = match tokio::time::timeout(silence, stream.message()).await {
            Err(_) => {
                tracing::warn!(?silence, "the etcd change feed was silent: reopening it");
                return Ok(());
            }
            Ok(m) => m.map_err(|e| EtcdError(e).message())?,
        };
        let Some(resp) = msg else {
            return Err("etcd closed the watch".into());
        };
        if !inner.options.feed_delay.is_zero() {
            tokio::time::sleep(inner.options.feed_delay).await;
        }
        if inner.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                // This replica fell behind etcd's whole history: start
                // again at the present; watchers behind catch up or 410.
                tracing::error!(
                    next = *next,
                    compacted = resp.compact_revision(),
                    "etcd compacted what the change feed had not read: watchers behind get 410"
                );
                return jump(inner, next, last).await;
            }
            return Err(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            ));
        }
        {
            let mut h = inner.health();
            h.feed_ok = true;
            h.feed_error = None;
        }
        if resp.created() {
            continue;
        }
        let header = super::inner::header_revision(resp.header());
        let events = resp.events();
        if events.is_empty() {
            // Progress: everything up to the header's revision was sent
            // (asked for only where etcd keeps that promise).
            if inner.trust_progress && header >= *next {
                *next = header + 1;
                let position = inner.revs.position(header);
                inner.cache.apply(header, Vec::new());
                inner.recent.advance(position);
                inner.feed.publish_progress(position, *last);
                inner.published.send_replace(header);
            }
            continue;
        }
        let mut i = 0;
        while i < events.len() {
            let Some(kv) = events[i].kv() else {
                i += 1;
                continue;
            };
            let r = kv.mod_revision();
            let repeated = r < *next;
            let mut changes = Vec::new();
            let mut copies = Vec::new();
            let mut k = 0u64;
            while i < events.len() && events[i].kv().is_some_and(|kv| kv.mod_revision() == r) {
                if repeated {
                    // Already published (a reopened watch starts after the
                    // last revision published, so this is only a guard).
                    i += 1;
                    continue;
                }
                let ev = &events[i];
                let kv = ev.kv().expect("checked");
                if inner.layout.parse(kv.key()).is_some() {
                    let copy = match ev.event_type() {
                        EventType::Put => Some(Entry::of(kv)),
                        EventType::Delete => None,
                    };
                    copies.push((kv.key().to_vec(), copy));
                    match inner.event(ev.event_type(), kv, ev.prev_kv(), r, k) {
                        Ok(Some((revision, change, object, before))) => {
                            changes.push(Change {
                                revision,
                                prev: *last,
                                change,
                                object: Arc::new(object),
                                before,
                            });
                            *last = revision;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, revision = r, "an unreadable change in etcd: skipped");
                        }
                    }
                    k += 1;
                }
                i += 1;
            }
            if repeated {
                // Never expected: the copy may have missed this revision.
                inner.cache.invalidate();
                continue;
            }
            *next = r + 1;
            inner.cache.apply(r, copies);
            let position = inner.revs.position(r);
            if changes.is_empty() {
                inner.recent.advance(position);
                inner.feed.publish_progress(position, *last);
            } else {
                inner.recent.push(&changes, position);
                inner.feed.publish(&changes);
                if changes.iter().any(|c| c.object.meta().is_terminating()) {
                    inner.reap.notify_one();
                }
            }
            inner.published.send_replace(r);
        }
    }
}

/// Starts the feed again at etcd's current revision after a gap: the
/// copy is dropped (the loader loads a new one), and the next change
/// published names the position before it as its predecessor, so watchers
/// behind see the gap.
async fn jump(inner: &Inner, next: &mut i64, last: &mut u64) -> Result<(), String> {
    let current = inner.current().await.map_err(|e| e.to_string())?;
    inner.cache.invalidate();
    *next = current + 1;
    *last = inner.revs.position(current);
    inner.recent.start(*last);
    inner.feed.publish_progress(*last, *last);
    // Changes were missed: some may have left subtrees to settle.
    inner.reap.notify_one();
    inner.published.send_replace(current);
    Ok(())
}

/// The heartbeat and the cluster's status, until the store closes.
pub async fn maintain(store: Weak<Inner>) {
    let mut beat: Option<(i64, Instant)> = None;
    loop {
        let Some(inner) = store.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        status(&inner).await;
        let every = inner.options.heartbeat;
        match beat {
            Some((seen, at)) if at.elapsed() >= every => {
                beat = heartbeat(&inner, seen).await.map(|r| (r, Instant::now()));
            }
            None => beat = heartbeat_seen(&inner).await.map(|r| (r, Instant::now())),
            Some(_) => {}
        }
        drop(inner);
        tokio::time::sleep(STATUS_EVERY.min(every)).await;
    }
}

/// The heartbeat key's `mod_revision` now.
async fn heartbeat_seen(inner: &Inner) -> Option<i64> {
    let key = inner.layout.meta("heartbeat");
    inner
        .get_raw(&key)
        .await
        .ok()
        .map(|kv| kv.map_or(0, |kv| kv.mod_revision))
}

/// Writes the heartbeat unless another replica did since `seen`; answers
/// its `mod_revision` afterwards.
async fn heartbeat(inner: &Inner, seen: i64) -> Option<i64> {
    let key = inner.layout.meta("heartbeat");
    let txn = Txn::new()
        .when(vec![
            inner.format_compare(),
            Compare::mod_revision(key.clone(), CompareOp::Equal, seen),
        ])
        .and_then(vec![TxnOp::put(key, "", None)]);
    match inner.txn(&txn).await {
        Ok(resp) if resp.succeeded() => Some(super::inner::header_revision(resp.header())),
        Ok(_) => heartbeat_seen(inner).await,
        Err(e) => {
            tracing::debug!(error = %e.message(), "heartbeat not written");
            None
        }
    }
}

/// Reads the member's database sizes and the cluster's alarms.
async fn status(inner: &Inner) {
    let mut m = inner.client.maintenance_client();
    if let Ok(Ok(s)) = tokio::time::timeout(inner.options.timeout, m.status()).await {
        let mut h = inner.health();
        h.db_size = s.db_size().max(0) as u64;
        h.db_in_use = s.raft_used_db_size().max(0) as u64;
    }
    let alarms = tokio::time::timeout(
        inner.options.timeout,
        m.alarm(AlarmAction::Get, AlarmType::None, None),
    )
    .await;
    if let Ok(Ok(a)) = alarms {
        let nospace = a.alarms().iter().any(|a| a.alarm() == AlarmType::Nospace);
        let mut h = inner.health();
        if h.nospace != nospace {
            if nospace {
                tracing::error!("etcd raised its NOSPACE alarm: writes are refused (507)");
            } else {
                tracing::info!("etcd's NOSPACE alarm is cleared: writes resume");
            }
        }
        h.nospace = nospace;
    }
}

impl EtcdStore {
    /// Compacts etcd's history to the last `keep` revisions, unless another
    /// replica did so since this one last looked (kube's compare-and-swap
    /// on `P/m/compact`). Answers how many revisions were dropped. Call it
    /// once per compaction interval: each call's compare-and-swap is a
    /// write, so the history always has something newer to compact.
    pub async fn compact(&self, keep: u64) -> Result<u64, StoreError> {
        let inner = &self.0;
        inner.check_open()?;
        let key = inner.layout.meta("compact");
        let resp = inner
            .get(key.clone(), GetOptions::new())
            .await
            .map_err(EtcdError::read)?;
        let current = super::inner::header_revision(resp.header());
        let (version, done) = match resp.kvs().first() {
            Some(kv) => (
                kv.version(),
                std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0),
            ),
            None => (0, 0),
        };
        // kube's protocol: a replica that saw the key change since its last
        // look adopts it and waits an interval; one that saw no change
        // compacts (at most one replica per interval, failover within two).
        {
            let mut seen = inner.compact_seen.lock().unwrap_or_else(|e| e.into_inner());
            let last = seen.replace(version);
            if last.is_some_and(|l| l != version) {
                return Ok(0);
            }
        }
        let target = current - i64::try_from(keep).unwrap_or(i64::MAX).min(current);
        let target = target.max(inner.revs.floor());
        if target <= done {
            return Ok(0);
        }
        let txn = Txn::new()
            .when(vec![
                inner.format_compare(),
                Compare::version(key.clone(), CompareOp::Equal, version),
            ])
            .and_then(vec![TxnOp::put(key, target.to_string(), None)]);
        let won = inner
            .txn(&txn)
            .await
            .map_err(|e| e.refusal_or_unknown())?
            .succeeded();
        if !won {
            return Ok(0);
        }
        *inner.compact_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(version + 1);
        match inner.kv().compact(target, None).await {
            Ok(_) => {
                tracing::info!(revision = target, "compacted etcd's history");
                Ok((target - done) as u64)
            }
            Err(e) => {
                let e = EtcdError(e);
                if e.is_compacted() {
                    Ok(0)
                } else {
                    Err(e.read())
                }
            }
        }
    }
}
