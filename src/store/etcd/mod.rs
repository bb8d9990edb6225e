//! The etcd backend: the store on an etcd v3 cluster, so that several
//! stateless modelhub replicas serve one hierarchy.
//!
//! - `layout`: where each thing lives under the prefix, and how etcd's
//!   revisions become resourceVersions.
//! - `write`: one transaction per request, built from the shared planner
//!   ([`crate::store::plan`]), its reads turned into compares.
//! - `read`: point reads, paged lists any replica can continue, snapshots
//!   and the history (a short-lived etcd watch).
//! - `follow`: the change feed (one etcd watch per replica, covering every
//!   replica's writes), the heartbeat, compaction and the cluster's status.
//! - `restore`: loading a backup into an empty prefix.
//!
//! Revisions: etcd gives one revision per transaction; a transaction that
//! changes k objects yields k resourceVersions `rv = (R + offset) *
//! 1_000_000 + i` (i: the change's index in the transaction), and "every
//! change up to revision R" is `(R + offset) * 1_000_000 + 999_999`
//! ([`layout::Revisions`]). No type of `etcd_client` leaves this module.

mod follow;
mod layout;
pub(super) mod read;
pub(super) mod restore;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::auth::token::{Token, Tokens};
use crate::store::codec;
use crate::store::error::{EngineError, StoreError};
use crate::store::feed::Feed;
use crate::store::options::EtcdOptions;
use crate::store::query::{Refusal, RefusedCause, StoreStats};

pub use layout::FORMAT;
use layout::{Layout, Revisions};

/// The oldest etcd release recommended for production: older ones miss
/// fixes to watch (events lost or misordered around compaction).
const VERSION_FLOOR: (u64, u64, u64) = (3, 5, 18);

/// Attempts of a revocation racing other changes of the same token.
const REVOKE_ATTEMPTS: usize = 16;

/// How long an acknowledgement waits for the feed to publish its write.
const FEED_PATIENCE: Duration = Duration::from_secs(1);

/// Responses of this size are accepted from etcd (a cascade's deleted
/// objects, a page of a list).
const MAX_DECODE: usize = 256 * 1024 * 1024;

/// An open etcd store; cloning it is one reference count.
#[derive(Clone)]
pub struct EtcdStore(Arc<Inner>);

struct Inner {
    client: Client,
    layout: Layout,
    revs: Revisions,
    options: EtcdOptions,
    feed: Arc<Feed>,
    handle: tokio::runtime::Handle,
    closed: AtomicBool,
    requests: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    health: Mutex<Health>,
    /// Whether etcd's progress notifications can be trusted not to run
    /// ahead of events (kube's rule: 3.4.25+, 3.5.8+); else the heartbeat
    /// alone advances idle watchers.
    trust_progress: bool,
    /// The last etcd revision whose changes the feed published.
    published: tokio::sync::watch::Sender<i64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The version of `P/m/compact` this replica saw last.
    compact_seen: Mutex<Option<i64>>,
    /// One lock per object being written through this replica.
    turns: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the background tasks last learnt about the cluster.
#[derive(Debug, Default)]
struct Health {
    /// The feed's watch is open and was heard from recently.
    feed_ok: bool,
    /// Why the feed is not working, if it is not.
    feed_error: Option<String>,
    /// etcd raised its NOSPACE alarm.
    nospace: bool,
    db_size: u64,
    db_in_use: u64,
}

impl EtcdStore {
    /// Connects to the cluster and checks it can serve (version, quorum,
    /// the prefix's storage format, initialising an empty prefix), then
    /// starts following its changes.
    pub async fn open(options: &EtcdOptions) -> Result<EtcdStore, StoreError> {
        let client = connect(options).await?;
        let layout = Layout::new(&options.prefix)?;
        let mut kv = kv_client(&client);
        let version = check_version(&client, options).await?;
        let trust_progress = trusts_progress(&version);
        tracing::info!(version = %version, endpoints = ?options.endpoints, prefix = %options.prefix, "etcd cluster reached");
        let (format, offset, start) = layout::check_format(&mut kv, &layout, options).await?;
        tracing::info!(
            format,
            offset = offset.offset,
            floor = offset.floor,
            revision = start,
            "etcd store open"
        );
        let revs = Revisions::new(offset);
        let store = EtcdStore(Arc::new(Inner {
            client,
            layout,
            revs,
            options: options.clone(),
            feed: Arc::new(Feed::default()),
            handle: tokio::runtime::Handle::current(),
            closed: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            health: Mutex::new(Health {
                feed_ok: true,
                ..Health::default()
            }),
            published: tokio::sync::watch::Sender::new(start),
            trust_progress,
            tasks: Mutex::new(Vec::new()),
            turns: Mutex::new(HashMap::new()),
            compact_seen: Mutex::new(None),
        }));
        let tasks = vec![
            tokio::spawn(follow::feed(Arc::downgrade(&store.0), start)),
            tokio::spawn(follow::maintain(Arc::downgrade(&store.0))),
        ];
        *store.0.tasks.lock().expect("tasks") = tasks;
        Ok(store)
    }

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
        StoreStats {
            requests: self.0.requests.load(Ordering::Relaxed),
            commits: self.0.commits.load(Ordering::Relaxed),
            database_bytes: h.db_size,
            database_in_use_bytes: h.db_in_use,
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
        let resp = self.0.txn(txn).await.map_err(|e| e.refusal_or_unknown())?;
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
            let resp = self.0.txn(txn).await.map_err(|e| e.refusal_or_unknown())?;
            if resp.succeeded() {
                return Ok(token);
            }
        }
        Err(write::contention())
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
        let resp = self.0.read_txn(txn).await.map_err(|e| e.read())?;
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

/// One stored key as this module uses it.
struct Kv {
    key: Vec<u8>,
    value: Vec<u8>,
    mod_revision: i64,
    create_revision: i64,
}

impl Kv {
    fn from(kv: &etcd_client::KeyValue) -> Kv {
        Kv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        }
    }
}

impl Inner {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_open(&self) -> Result<(), StoreError> {
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
    async fn published(&self, r: i64) {
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
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.handle.block_on(f))
    }

    fn kv(&self) -> KvClient {
        kv_client(&self.client)
    }

    /// The compare every write carries: the prefix is still at the storage
    /// format this build writes (a replica left behind by a migration
    /// cannot write).
    fn format_compare(&self) -> Compare {
        Compare::value(
            self.layout.meta("format"),
            CompareOp::Equal,
            FORMAT.to_string(),
        )
    }

    fn format_changed(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "the storage format under {} is no longer {FORMAT}: this replica is older than the \
             data (upgrade it) or the prefix was removed",
            self.options.prefix
        ))
    }

    /// A write transaction; sent again (within the etcd timeout) while
    /// etcd refuses it before applying it (no leader yet, a member that
    /// cannot be reached), as nothing can have been written.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, EtcdError> {
        self.again(
            || {
                let (mut kv, txn) = (self.kv(), txn.clone());
                async move { kv.txn(txn).await }
            },
            Again::Write,
        )
        .await
    }

    /// A read-only transaction, sent again on any passing failure.
    async fn read_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, EtcdError> {
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
    async fn get(
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
    async fn again<T, F, Fut>(&self, mut call: F, kind: Again) -> Result<T, EtcdError>
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
    async fn current(&self) -> Result<i64, StoreError> {
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

    async fn get_raw(&self, key: &[u8]) -> Result<Option<Kv>, StoreError> {
        let resp = self
            .get(key.to_vec(), GetOptions::new())
            .await
            .map_err(EtcdError::read)?;
        Ok(resp.kvs().first().map(Kv::from))
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

fn kv_client(client: &Client) -> KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(MAX_DECODE)
}

async fn connect(options: &EtcdOptions) -> Result<Client, StoreError> {
    let bad = |what: String| StoreError::BadRequest(what);
    if options.endpoints.is_empty() {
        return Err(bad("--etcd-endpoints names no endpoint".into()));
    }
    let mut connect = ConnectOptions::new()
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_connect_timeout(options.timeout)
        .with_timeout(options.timeout);
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p)
            .map_err(|e| bad(format!("cannot read the etcd {what} {}: {e}", p.display())))
    };
    if options.ca.is_some() || options.cert.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &options.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        }
        match (&options.cert, &options.key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(Identity::from_pem(
                    read(c, "client certificate")?,
                    read(k, "client key")?,
                ));
            }
            (None, None) => {}
            _ => return Err(bad("--etcd-cert and --etcd-key go together".into())),
        }
        connect = connect.with_tls(tls);
    }
    match (&options.user, &options.password_file) {
        (Some(user), Some(file)) => {
            let password = String::from_utf8(read(file, "password file")?)
                .map_err(|_| bad(format!("{} is not UTF-8", file.display())))?;
            let password = password.trim_end_matches(['\n', '\r']);
            connect = connect.with_user(user.clone(), password.to_string());
        }
        (None, None) => {}
        _ => {
            return Err(bad(
                "--etcd-user and --etcd-password-file go together".into()
            ));
        }
    }
    let connecting = Client::connect(options.endpoints.clone(), Some(connect));
    match tokio::time::timeout(options.timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(layout::no_quorum(options, &EtcdError(e).message())),
        Err(_) => Err(layout::no_quorum(options, "no answer")),
    }
}

/// Reads the version of the member the client reached; warns below the
/// production floor, refuses a cluster older than 3.4.
async fn check_version(client: &Client, options: &EtcdOptions) -> Result<String, StoreError> {
    let status = patiently(options, || {
        let mut m = client.maintenance_client();
        async move { m.status().await }
    })
    .await?;
    let version = status.version().to_string();
    let parsed = parse_version(&version);
    match parsed {
        Some(v) if v < (3, 4, 0) => {
            return Err(StoreError::Unavailable(format!(
                "etcd {version} is too old: modelhub needs etcd 3.4 or newer (3.5.18 or newer in \
                 production)"
            )));
        }
        Some(v) if v < VERSION_FLOOR => tracing::warn!(
            version = %version,
            "etcd {version} is below the production floor 3.5.18: it misses fixes to watch \
             around compaction (events can be lost); upgrade the cluster"
        ),
        Some(_) => {}
        None => tracing::warn!(version = %version, "cannot parse etcd's version"),
    }
    Ok(version)
}

/// Progress notifications may run ahead of events before etcd 3.4.25 and
/// 3.5.8 (etcd-io/etcd#15220).
fn trusts_progress(version: &str) -> bool {
    match parse_version(version) {
        Some((3, 4, p)) => p >= 25,
        Some((3, 5, p)) => p >= 8,
        Some(v) => v > (3, 5, 0),
        None => false,
    }
}

/// Runs `call` until it succeeds or the etcd timeout has passed (a
/// member that is down, or an election, passes); then refuses, saying
/// there is no quorum, with the last failure.
async fn patiently<T, F, Fut>(options: &EtcdOptions, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + options.timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => last = EtcdError(e).message(),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(layout::no_quorum(options, &last))
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// What a request sent again is.
#[derive(Clone, Copy)]
enum Again {
    /// A write: sent again only if etcd refused it before applying it.
    Write,
    /// A read: sent again after any passing failure.
    Read,
}

/// An error of the etcd client, classified by what it means for a
/// request.
#[derive(Debug)]
struct EtcdError(etcd_client::Error);

impl EtcdError {
    fn message(&self) -> String {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
            e => e.to_string(),
        }
    }

    fn code(&self) -> Option<tonic::Code> {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => Some(s.code()),
            _ => None,
        }
    }

    fn engine(&self) -> EngineError {
        EngineError::new("etcd request failed", std::io::Error::other(self.message()))
    }

    /// etcd's NOSPACE alarm is raised.
    fn is_no_space(&self) -> bool {
        self.message().contains("database space exceeded")
    }

    /// A refusal by one of etcd's request limits (nothing was written).
    fn too_large(&self) -> Option<String> {
        let m = self.message();
        if m.contains("too many operations in txn request") {
            Some(format!(
                "the request needs more operations in its one etcd transaction than the cluster \
                 allows (etcd --max-txn-ops): {m}"
            ))
        } else if m.contains("request is too large") || m.contains("message length too large") {
            Some(format!(
                "the request is larger than the cluster accepts in one transaction (etcd \
                 --max-request-bytes): {m}"
            ))
        } else {
            None
        }
    }

    /// The request was refused before etcd could apply it: no leader, no
    /// connection.
    fn never_sent(&self) -> bool {
        let m = self.message();
        if m.contains("no leader") || m.contains("not capable") {
            return true;
        }
        match &self.0 {
            etcd_client::Error::TransportError(_) | etcd_client::Error::InvalidUri(_) => true,
            etcd_client::Error::GRpcStatus(s) => {
                s.code() == tonic::Code::Unavailable
                    && (m.contains("connect") || m.contains("Connection refused"))
            }
            _ => false,
        }
    }

    /// A compacted revision was asked for.
    fn is_compacted(&self) -> bool {
        self.message()
            .contains("required revision has been compacted")
    }

    /// A revision etcd has not reached was asked for.
    fn is_future(&self) -> bool {
        self.message()
            .contains("required revision is a future revision")
    }

    /// A failure that asking again may not meet (for a read: anything but
    /// a compacted or future revision, a limit, or a refused argument or
    /// credential).
    fn passing(&self) -> bool {
        let refused = matches!(
            self.code(),
            Some(
                tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
            )
        );
        !(refused || self.is_compacted() || self.is_future() || self.too_large().is_some())
    }

    /// For a read: nothing was written, so anything but a compaction or a
    /// limit is `Unavailable`.
    fn read(self) -> StoreError {
        if self.is_compacted() {
            return StoreError::Gone(
                "etcd compacted the revision this read needs: list again from the start".into(),
            );
        }
        if self.is_future() {
            return StoreError::Gone(
                "the revision this read names is newer than etcd's: it belongs to another \
                 history; list again from the start"
                    .into(),
            );
        }
        if let Some(m) = self.too_large() {
            return StoreError::TooLarge(m);
        }
        if self.code() == Some(tonic::Code::Internal) {
            return StoreError::Engine(self.engine());
        }
        StoreError::Unavailable(format!("etcd did not answer: {}", self.message()))
    }

    /// For a write whose outcome cannot be read back: a refusal when
    /// nothing can have been written, else `OutcomeUnknown`.
    fn refusal_or_unknown(self) -> StoreError {
        if let Some(m) = self.too_large() {
            return StoreError::TooLarge(m);
        }
        if self.is_no_space() {
            return StoreError::NoSpace(no_space_message());
        }
        if self.never_sent() {
            return StoreError::Unavailable(format!(
                "etcd has no quorum or cannot be reached; nothing was written: {}",
                self.message()
            ));
        }
        StoreError::OutcomeUnknown(format!(
            "etcd did not confirm the write ({}): it may or may not have been applied; read the \
             object back before retrying",
            self.message()
        ))
    }
}

fn no_space_message() -> String {
    "etcd's storage quota is reached (NOSPACE alarm, --quota-backend-bytes): writes are refused \
     until an operator compacts, defragments and disarms the alarm; reads and deletes still work"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("3.4.23"), Some((3, 4, 23)));
        assert_eq!(parse_version("3.5.18-rc.0"), Some((3, 5, 18)));
        assert!(parse_version("3.4.23").unwrap() < VERSION_FLOOR);
        assert!(parse_version("3.6.0").unwrap() > VERSION_FLOOR);
        assert_eq!(parse_version("garbage"), None);
        assert!(!trusts_progress("3.4.23"));
        assert!(trusts_progress("3.4.25"));
        assert!(!trusts_progress("3.5.7"));
        assert!(trusts_progress("3.6.1"));
    }
}
