//! Reads from the replica's copy of the objects (`cache`), kept current by
//! the feed, for reads and write plans (kube-apiserver's consistent reads
//! from cache): when the copy is fresh, and loading it.
//!
//! Every write transaction also puts `P/m/written`, so that key's
//! `mod_revision`, read linearizably, is at or after every object change
//! acknowledged before that read. A read that waits until the copy has
//! reached that revision sees every write acknowledged before it began: it
//! is linearizable without reading objects from etcd, and without etcd's
//! progress notifications (which etcd before 3.4.25 and 3.5.8 may send ahead
//! of events). Concurrent readers share one such check: requests arriving
//! while one is in flight wait for the next, which is sent after they
//! arrived ([`checks`]).
//!
//! The copy is loaded by a task of its own ([`loader`]) at start and again
//! after a gap in the feed, while the feed keeps running: the feed's
//! changes during a load are kept aside and applied after the loaded
//! state, from the load's revision on. Until the copy is loaded, and while
//! it lags the last write by more than a short patience, reads go to etcd.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::GetOptions;
use tokio::sync::{mpsc, oneshot};

use super::cache::{Check, Entry};
use super::error::EtcdError;
use super::inner::{FEED_PATIENCE, Inner};
use super::layout::prefix_end;
use crate::store::error::StoreError;

/// Keys read per etcd range while loading the copy (halved down to one
/// when a page is too large for one answer or its deadline).
const LOAD_PAGE: i64 = 1000;

impl Inner {
    /// Waits until the copy shows every write acknowledged before this call
    /// (a linearizable check shared with concurrent callers); answers the
    /// revision it shows then. `None`: read etcd instead (no copy, loading,
    /// or the feed lags past its patience).
    pub(super) async fn fresh(&self) -> Result<Option<i64>, StoreError> {
        // A copy known to lag a past write lags every later one too.
        if self.cache.revision().is_none() || !self.health().feed_ok || self.cache.lagging() {
            return Ok(None);
        }
        let written = self.last_written().await?;
        let reached = || self.cache.revision().filter(|r| *r >= written);
        if let Some(r) = reached() {
            return Ok(Some(r));
        }
        let mut rx = self.published.subscribe();
        let waited =
            tokio::time::timeout(FEED_PATIENCE, rx.wait_for(|_| reached().is_some())).await;
        if waited.is_err() {
            tracing::warn!(
                revision = written,
                copy = self.cache.revision(),
                "this replica's copy of the objects lags the last write: reading etcd until it \
                 catches up"
            );
            self.cache.behind.fetch_max(written, Ordering::Relaxed);
        }
        Ok(reached())
    }

    /// The revision of the last write under the prefix, read linearizably
    /// by the next check sent after this call.
    async fn last_written(&self) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.checks.send(tx).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Loads the copy at etcd's current revision, the feed's changes
    /// meanwhile applied after it; answers how many objects it holds, or
    /// `None` if the copy was dropped meanwhile (load again).
    async fn load_cache(&self) -> Result<Option<usize>, StoreError> {
        let started = std::time::Instant::now();
        self.cache.begin_load();
        // Read after the load began: every change after it reaches the
        // copy through the changes kept aside.
        let at = self.current().await?;
        let end = prefix_end(&self.layout.objects());
        let mut from = self.layout.objects();
        let mut objects = BTreeMap::new();
        let mut page = LOAD_PAGE;
        let mut reported = 0;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page)
                .with_revision(at);
            let resp = match self.get(from.clone(), options).await {
                Ok(resp) => resp,
                // Too large for one answer, or for its deadline: smaller
                // pages.
                Err(e)
                    if page > 1
                        && (e.too_large().is_some()
                            || e.message().contains("no answer within")) =>
                {
                    tracing::debug!(error = %e.message(), page, "a page of the copy failed: halving it");
                    page /= 2;
                    continue;
                }
                Err(e) => return Err(e.read()),
            };
            page = (page * 2).min(LOAD_PAGE);
            if !self.cache.loading() {
                return Ok(None);
            }
            for kv in resp.kvs() {
                if self.layout.parse(kv.key()).is_some() {
                    objects.insert(kv.key().to_vec(), Entry::of(kv));
                }
            }
            let Some(last) = resp.kvs().last() else { break };
            if !resp.more() {
                break;
            }
            from = last.key().to_vec();
            from.push(0);
            if objects.len() >= reported + 100_000 {
                reported = objects.len();
                tracing::info!(
                    objects = reported,
                    "loading this replica's copy of the objects"
                );
            }
        }
        let n = objects.len();
        if !self.cache.finish_load(objects, at) {
            return Ok(None);
        }
        tracing::info!(objects = n, revision = at, elapsed = ?started.elapsed(), "loaded this replica's copy of the objects");
        Ok(Some(n))
    }
}

/// Loads the copy whenever it is wanted (at start, after a gap), retrying
/// with a growing pause while etcd cannot answer.
pub(super) async fn loader(store: Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(inner) = store.upgrade() else { return };
        if inner.check_open().is_err() {
            return;
        }
        if inner.cache.revision().is_some() {
            // Woken when wanted; a second at most, so that a dropped store
            // is not kept alive by this task.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), inner.cache.wanted.notified()).await;
            continue;
        }
        match inner.load_cache().await {
            Ok(Some(_)) => {
                pause = Duration::from_millis(100);
                // Readers waiting for the copy look again.
                inner.published.send_modify(|_| {});
            }
            Ok(None) => {
                // Dropped while loading (another gap): again, after a pause.
                drop(inner);
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                inner.cache.abandon_load();
                tracing::warn!(error = %e, "cannot load this replica's copy of the objects; reads go to etcd meanwhile");
                drop(inner);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Answers freshness checks: each batch of waiters (every request that
/// arrived before the batch was taken) shares one linearizable read of
/// `P/m/written`.
pub(super) async fn checks(store: Weak<Inner>, mut waiting: mpsc::UnboundedReceiver<Check>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = waiting.try_recv() {
            batch.push(w);
        }
        let Some(inner) = store.upgrade() else { return };
        let answer = inner
            .get(
                inner.layout.meta("written"),
                GetOptions::new().with_keys_only(),
            )
            .await
            .map(|resp| resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
            .map_err(EtcdError::read);
        drop(inner);
        for w in batch {
            let _ = w.send(answer.clone());
        }
    }
}
