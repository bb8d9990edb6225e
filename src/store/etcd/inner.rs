//! The open store: its client, layout and revisions, the background
//! tasks' findings, and the requests every part sends (with their retries),
//! tokens and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;

use super::cache::Kv;
use super::error::EtcdError;
use super::layout::{FORMAT, Layout, Revisions};
use crate::auth::token::{Token, Tokens};
use crate::store::codec;
use crate::store::error::StoreError;
use crate::store::feed::Feed;
use crate::store::options::EtcdOptions;
use crate::store::query::{Refusal, RefusedCause, StoreStats};

/// Attempts of a revocation racing other changes of the same token.
const REVOKE_ATTEMPTS: usize = 16;

/// How long an acknowledgement waits for the feed to publish its write.
pub(super) const FEED_PATIENCE: Duration = Duration::from_secs(1);

/// Responses of this size are accepted from etcd (a cascade's deleted
/// objects, a page of a list).
pub(super) const MAX_DECODE: usize = 256 * 1024 * 1024;

/// An open etcd store; cloning it is one reference count.
#[derive(Clone)]
pub struct EtcdStore(pub(super) Arc<Inner>);

pub(super) struct Inner {
    pub(super) client: Client,
    pub(super) layout: Layout,
    pub(super) revs: Revisions,
    pub(super) options: EtcdOptions,
    pub(super) feed: Arc<Feed>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) closed: AtomicBool,
    pub(super) requests: AtomicU64,
    pub(super) commits: AtomicU64,
    /// Write transactions' round trips, retries included.
    pub(super) commit_time: crate::histogram::Histogram,
    pub(super) conflicts: AtomicU64,
    pub(super) health: Mutex<Health>,
    /// Whether etcd's progress notifications can be trusted not to run
    /// ahead of events (kube's rule: 3.4.25+, 3.5.8+); else the heartbeat
    /// alone advances idle watchers.
    pub(super) trust_progress: bool,
    /// The last etcd revision whose changes the feed published.
    pub(super) published: tokio::sync::watch::Sender<i64>,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The revision of the last history marker this replica wrote.
    pub(super) last_mark: tokio::sync::Mutex<Option<i64>>,
    /// The version of `P/m/compact` this replica saw last.
    pub(super) compact_seen: Mutex<Option<i64>>,
    /// One lock per object being written through this replica.
    pub(super) turns: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
    /// This replica's copy of the objects.
    pub(super) cache: super::cache::Cache,
    /// The last changes the feed published.
    pub(super) recent: crate::store::recent::Recent,
    /// Wakes the task that settles terminating subtrees (see `reap`).
    pub(super) reap: tokio::sync::Notify,
    /// Requests waiting for the cache's next freshness check.
    pub(super) checks: tokio::sync::mpsc::UnboundedSender<super::cache::Check>,
}

/// What the background tasks last learnt about the cluster.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// The feed's watch is open and was heard from recently.
    pub(super) feed_ok: bool,
    /// Why the feed is not working, if it is not.
    pub(super) feed_error: Option<String>,
    /// etcd raised its NOSPACE alarm.
    pub(super) nospace: bool,
    pub(super) db_size: u64,
    pub(super) db_in_use: u64,
}

impl EtcdStore {
    /// The feed of changes, from every replica.
    pub fn feed(&self) -> &Feed {
        &self.0.feed
    }

    /// The current position ("every change up to here"), linearizable.
    pub async fn revision(&self) -> Result<u64, StoreError> {
        let r = self.0.current().await?;
        Ok(self.0.revs.position(r))
    }

    /// Whether the cluster answers a linearizable read and this replica's
    /// feed is following it.
    pub async fn ready(&self) -> bool {
        if !self.0.health().feed_ok {
            return false;
        }
        self.0.current().await.is_ok()
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> StoreStats {
        let h = self.0.health();
        let (cache_reads, cache_misses, cached_objects) = self.0.cache.stats();
        StoreStats {
            cache_reads,
            cache_misses,
            cached_objects,
            requests: self.0.requests.load(Ordering::Relaxed),
            commits: self.0.commits.load(Ordering::Relaxed),
            database_bytes: h.db_size,
            database_in_use_bytes: h.db_in_use,
            commit_time: Some(self.0.commit_time.snapshot()),
            ..StoreStats::default()
        }
    }

    /// Writes are refused while etcd's NOSPACE alarm is raised.
    pub fn writes_refused(&self) -> Option<Refusal> {
        self.0.health().nospace.then(|| Refusal {
            cause: RefusedCause::QuotaExceeded,
            message: "etcd raised its NOSPACE alarm (its --quota-backend-bytes is reached): \
                      writes but deletes are refused until an operator compacts, defragments \
                      and disarms it (etcdctl alarm disarm)"
                .into(),
        })
    }

    /// Why the feed cannot follow the cluster, if it cannot.
    pub fn feed_error(&self) -> Option<String> {
        let h = self.0.health();
        (!h.feed_ok).then(|| h.feed_error.clone().unwrap_or_default())
    }

    /// Stores a new token, durably.
    pub async fn create_token(&self, token: Token) -> Result<(), StoreError> {
        self.0.check_open()?;
        let l = &self.0.layout;
        let key = l.token(&token.name);
        let txn = Txn::new()
            .when(vec![
                self.0.format_compare(),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then(vec![
                TxnOp::put(key.clone(), codec::encode_token(&token), None),
                TxnOp::put(l.meta("tokens"), "1", None),
            ]);
        let resp = self.0.txn(&txn).await.map_err(|e| e.refusal_or_unknown())?;
        if resp.succeeded() {
            return Ok(());
        }
        match self.0.get_raw(&key).await? {
            Some(_) => Err(StoreError::TokenExists(token.name)),
            None => Err(self.0.format_changed()),
        }
    }

    /// Removes a token, durably, answering what it was.
    pub async fn revoke_token(&self, name: &str) -> Result<Token, StoreError> {
        self.0.check_open()?;
        let key = self.0.layout.token(name);
        for _ in 0..REVOKE_ATTEMPTS {
            let Some(kv) = self.0.get_raw(&key).await? else {
                return Err(StoreError::TokenNotFound(name.into()));
            };
            let token = codec::decode_token(name, &kv.value)?;
            let txn = Txn::new()
                .when(vec![
                    self.0.format_compare(),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision),
                ])
                .and_then(vec![TxnOp::delete(key.clone(), None)]);
            let resp = self.0.txn(&txn).await.map_err(|e| e.refusal_or_unknown())?;
            if resp.succeeded() {
                return Ok(token);
            }
        }
        Err(super::error::contention())
    }

    /// Every token, and whether one was ever created (one read).
    pub async fn tokens(&self) -> Result<Tokens, StoreError> {
        self.0.check_open()?;
        let l = &self.0.layout;
        let prefix = l.token("");
        let txn = Txn::new().and_then(vec![
            TxnOp::get(prefix.clone(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(l.meta("tokens"), None),
        ]);
        let resp = self.0.read_txn(&txn).await.map_err(|e| e.read())?;
        let mut items = Vec::new();
        let mut enabled = false;
        for (i, r) in resp.op_responses().into_iter().enumerate() {
            if let TxnOpResponse::Get(g) = r {
                if i == 0 {
                    for kv in g.kvs() {
                        let name = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                        items.push(codec::decode_token(&name, kv.value())?);
                    }
                } else {
                    enabled = !g.kvs().is_empty();
                }
            }
        }
        enabled |= !items.is_empty();
        Ok(Tokens { items, enabled })
    }

    /// Stops the background tasks; later calls answer `Closed`.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        for t in self.0.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

impl Inner {
    pub(super) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Waits (briefly) until the feed has published etcd revision `r`, so
    /// that a write through this replica is on its watchers' streams when
    /// it is acknowledged. A feed that lags longer (reconnecting) does not
    /// hold the acknowledgement: the change reaches watchers when it is
    /// back.
    pub(super) async fn published(&self, r: i64) {
        if !self.health().feed_ok {
            return;
        }
        let mut rx = self.published.subscribe();
        let waited = tokio::time::timeout(FEED_PATIENCE, rx.wait_for(|p| *p >= r)).await;
        if waited.is_err() {
            tracing::debug!(revision = r, "acknowledged before the feed published it");
        }
    }

    /// Runs `f` to completion from blocking code (a reader thread, or a
    /// caller on a worker that accepts to block it).
    pub(super) fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.handle.block_on(f))
    }

    pub(super) fn kv(&self) -> KvClient {
        kv_client(&self.client)
    }

    /// The compare every write carries: the prefix is still at the storage
    /// format this build writes (a replica left behind by a migration
    /// cannot write).
    pub(super) fn format_compare(&self) -> Compare {
        Compare::value(
            self.layout.meta("format"),
            CompareOp::Equal,
            FORMAT.to_string(),
        )
    }

    pub(super) fn format_changed(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "the storage format under {} is no longer {FORMAT}: this replica is older than the \
             data (upgrade it) or the prefix was removed",
            self.options.prefix
        ))
    }

    /// A write transaction; sent again (within the etcd timeout) while
    /// etcd refuses it before applying it (no leader yet, a member that
    /// cannot be reached), as nothing can have been written.
    pub(super) async fn txn(&self, txn: &Txn) -> Result<etcd_client::TxnResponse, EtcdError> {
        let sent = std::time::Instant::now();
        let resp = self
            .again(
                || {
                    let (mut kv, txn) = (self.kv(), txn.clone());
                    async move { kv.txn(txn).await }
                },
                Again::Write,
            )
            .await;
        self.commit_time.observe(sent.elapsed());
        resp
    }

    /// A read-only transaction, sent again on any passing failure.
    pub(super) async fn read_txn(&self, txn: &Txn) -> Result<etcd_client::TxnResponse, EtcdError> {
        self.again(
            || {
                let (mut kv, txn) = (self.kv(), txn.clone());
                async move { kv.txn(txn).await }
            },
            Again::Read,
        )
        .await
    }

    /// A range read, sent again on any passing failure.
    pub(super) async fn get(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, EtcdError> {
        self.again(
            || {
                let (mut kv, key, options) = (self.kv(), key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            },
            Again::Read,
        )
        .await
    }

    /// Runs `call` until it succeeds, fails in a way that asking again
    /// cannot mend (for a write: anything but a refusal before it was
    /// applied), or the etcd timeout has passed, pausing in between.
    pub(super) async fn again<T, F, Fut>(&self, mut call: F, kind: Again) -> Result<T, EtcdError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.options.timeout;
        let mut pause = Duration::from_millis(20);
        // A read may go to a member that hangs (stopped, partitioned): an
        // attempt gets a part of the time, so that the next one can go to
        // another member. A write waits its whole time (it may be applied).
        let (attempt, retry): (Duration, fn(&EtcdError) -> bool) = match kind {
            Again::Write => (self.options.timeout, EtcdError::never_sent),
            Again::Read => (
                (self.options.timeout / 4).max(Duration::from_millis(200)),
                EtcdError::passing,
            ),
        };
        loop {
            let answer = match tokio::time::timeout(attempt, call()).await {
                Ok(answer) => answer,
                Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {attempt:?}"),
                ))),
            };
            match answer {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let e = EtcdError(e);
                    if !retry(&e)
                        || self.closed.load(Ordering::SeqCst)
                        || Instant::now() + pause > deadline
                    {
                        return Err(e);
                    }
                    tracing::debug!(error = %e.message(), "etcd request failed; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// etcd's current revision, read linearizably (the format key's read).
    pub(super) async fn current(&self) -> Result<i64, StoreError> {
        self.check_open()?;
        let resp = self
            .get(
                self.layout.meta("format"),
                GetOptions::new().with_keys_only(),
            )
            .await
            .map_err(EtcdError::read)?;
        Ok(header_revision(resp.header()))
    }

    pub(super) async fn get_raw(&self, key: &[u8]) -> Result<Option<Kv>, StoreError> {
        let resp = self
            .get(key.to_vec(), GetOptions::new())
            .await
            .map_err(EtcdError::read)?;
        Ok(resp.kvs().first().map(Kv::from))
    }
}

pub(super) fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

pub(super) fn kv_client(client: &Client) -> KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(MAX_DECODE)
}

/// What a request sent again is.
#[derive(Clone, Copy)]
pub(super) enum Again {
    /// A write: sent again only if etcd refused it before applying it.
    Write,
    /// A read: sent again after any passing failure.
    Read,
}
