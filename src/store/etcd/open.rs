//! Opening a store: connecting (TLS, credentials), checking the cluster
//! (version, quorum) and the prefix's storage format, and starting the
//! background tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, Txn, TxnOp,
};
use tokio::time::Instant;

use super::error::{EtcdError, no_quorum};
use super::follow;
use super::inner::{EtcdStore, Health, Inner, kv_client};
use super::layout::{FORMAT, Layout, Offset, Revisions, prefix_end};
use crate::store::error::StoreError;
use crate::store::feed::Feed;
use crate::store::options::EtcdOptions;

/// The oldest etcd release recommended for production: older ones miss
/// fixes to watch (events lost or misordered around compaction).
const VERSION_FLOOR: (u64, u64, u64) = (3, 5, 18);

impl EtcdStore {
    /// Connects to the cluster and checks it can serve (version, quorum,
    /// the prefix's storage format, initialising an empty prefix), then
    /// starts following its changes.
    pub async fn open(options: &EtcdOptions) -> Result<EtcdStore, StoreError> {
        let client = connect(options).await?;
        let layout = Layout::new(&options.prefix)?;
        let mut kv = kv_client(&client);
        let version = check_version(&client, options).await?;
        let trust_progress = trusts_progress(&version) && every_endpoint_trusted(options).await;
        tracing::info!(version = %version, endpoints = ?options.endpoints, prefix = %options.prefix, "etcd cluster reached");
        let (format, offset, start) = check_format(&mut kv, &layout, options).await?;
        tracing::info!(
            format,
            offset = offset.offset,
            floor = offset.floor,
            revision = start,
            "etcd store open"
        );
        let revs = Revisions::new(offset);
        let (checks, waiting) = tokio::sync::mpsc::unbounded_channel();
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
            commit_time: Default::default(),
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
            last_mark: tokio::sync::Mutex::new(None),
            cache: super::cache::Cache::new(options.cache),
            recent: crate::store::recent::Recent::default(),
            reap: tokio::sync::Notify::new(),
            checks,
        }));
        let mut tasks = vec![
            tokio::spawn(follow::feed(Arc::downgrade(&store.0), start)),
            tokio::spawn(follow::maintain(Arc::downgrade(&store.0))),
            tokio::spawn(super::fresh::checks(Arc::downgrade(&store.0), waiting)),
            tokio::spawn(super::reap::run(Arc::downgrade(&store.0))),
        ];
        if options.cache {
            tasks.push(tokio::spawn(super::fresh::loader(Arc::downgrade(&store.0))));
        }
        *store.0.tasks.lock().expect("tasks") = tasks;
        Ok(store)
    }
}

pub(super) async fn connect(options: &EtcdOptions) -> Result<Client, StoreError> {
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
        Ok(Err(e)) => Err(no_quorum(options, &EtcdError(e).message())),
        Err(_) => Err(no_quorum(options, "no answer")),
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

/// Whether every configured endpoint (the client's watch may go to any)
/// runs a version whose progress notifications can be trusted; an
/// endpoint that does not answer now counts as not trusted (a cluster in
/// the middle of an upgrade may mix versions).
async fn every_endpoint_trusted(options: &EtcdOptions) -> bool {
    let mut versions = Vec::new();
    for endpoint in &options.endpoints {
        let one = EtcdOptions {
            endpoints: vec![endpoint.clone()],
            ..options.clone()
        };
        let version = match connect(&one).await {
            Ok(client) => {
                let mut m = client.maintenance_client();
                match tokio::time::timeout(options.timeout, m.status()).await {
                    Ok(Ok(status)) => Some(status.version().to_string()),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        tracing::debug!(endpoint = %endpoint, version = ?version, "etcd member version");
        versions.push(version);
    }
    all_trusted(&versions)
}

/// Whether every version is known and trusted ([`trusts_progress`]).
fn all_trusted(versions: &[Option<String>]) -> bool {
    !versions.is_empty()
        && versions
            .iter()
            .all(|v| v.as_deref().is_some_and(trusts_progress))
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
    Err(no_quorum(options, &last))
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Checks the prefix's storage format, initialising an empty prefix;
/// answers the format, the offset and etcd's current revision.
async fn check_format(
    kv: &mut KvClient,
    layout: &Layout,
    options: &EtcdOptions,
) -> Result<(u32, Offset, i64), StoreError> {
    let format_key = layout.meta("format");
    let read = Txn::new().and_then(vec![
        TxnOp::get(format_key.clone(), None),
        TxnOp::get(layout.meta("offset"), None),
        TxnOp::get(
            layout.all(),
            Some(
                GetOptions::new()
                    .with_range(prefix_end(&layout.all()))
                    .with_count_only(),
            ),
        ),
    ]);
    let resp = patiently(options, || {
        let (mut kv, read) = (kv.clone(), read.clone());
        async move { kv.txn(read).await }
    })
    .await?;
    let revision = super::inner::header_revision(resp.header());
    let gets: Vec<_> = resp
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect();
    let [format, offset, count] = gets.as_slice() else {
        return Err(StoreError::Internal(
            "etcd answered a malformed read".into(),
        ));
    };
    let offset = match offset.kvs().first() {
        None => Offset::default(),
        Some(kv) => Offset::parse(kv.value()).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "{}/m/offset holds {:?}, not \"<offset> <floor>\"",
                options.prefix,
                String::from_utf8_lossy(kv.value())
            ))
        })?,
    };
    match format.kvs().first() {
        Some(stored) => {
            let found: u32 = std::str::from_utf8(stored.value())
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "{}/m/format holds {:?}, not a storage format number",
                        options.prefix,
                        String::from_utf8_lossy(stored.value())
                    ))
                })?;
            if found > FORMAT {
                return Err(StoreError::FormatTooNew {
                    found,
                    supported: FORMAT,
                });
            }
            if (1..FORMAT).contains(&found) {
                return upgrade(kv, layout, options, offset, found, stored.mod_revision()).await;
            }
            if found < FORMAT {
                return Err(StoreError::Unavailable(format!(
                    "the storage format under {} is {found}, older than this build's {FORMAT}: \
                     migrate it first",
                    options.prefix
                )));
            }
            Ok((found, offset, revision))
        }
        None if count.count() > 0 => Err(StoreError::Unavailable(format!(
            "{} holds {} keys but no storage format key ({}/m/format): it is not a modelhub \
             store, or a restore into it did not finish; use an empty prefix",
            options.prefix,
            count.count(),
            options.prefix
        ))),
        None => {
            let init = Txn::new()
                .when(vec![Compare::create_revision(
                    format_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(format_key, FORMAT.to_string(), None)]);
            let resp = patiently(options, || {
                let (mut kv, init) = (kv.clone(), init.clone());
                async move { kv.txn(init).await }
            })
            .await?;
            tracing::info!(prefix = %options.prefix, format = FORMAT, "initialised an empty etcd prefix");
            Ok((FORMAT, offset, super::inner::header_revision(resp.header())))
        }
    }
}

/// An older format to the current one, by one compare-and-swap on the
/// format key's revision `seen` (replicas starting together upgrade once).
/// No key is rewritten: format 2 added `P/m/written`, which every write of
/// this build puts; format 3 added record format 2, which this build
/// writes, while it reads format-1 records too (`codec::decode`). The
/// format key's change stops replicas of older builds from writing (their
/// transactions compare it); they cannot read format-2 records either, so
/// every replica is stopped before the first of the new build starts.
async fn upgrade(
    kv: &KvClient,
    layout: &Layout,
    options: &EtcdOptions,
    offset: Offset,
    from: u32,
    seen: i64,
) -> Result<(u32, Offset, i64), StoreError> {
    let key = layout.meta("format");
    let upgrade = Txn::new()
        .when(vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            seen,
        )])
        .and_then(vec![TxnOp::put(key.clone(), FORMAT.to_string(), None)])
        .or_else(vec![TxnOp::get(key, None)]);
    let resp = patiently(options, || {
        let (mut kv, upgrade) = (kv.clone(), upgrade.clone());
        async move { kv.txn(upgrade).await }
    })
    .await?;
    if !resp.succeeded() {
        let now = resp.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        if now.as_deref() != Some(FORMAT.to_string().as_bytes()) {
            return Err(StoreError::Unavailable(format!(
                "the storage format under {} changed while this replica upgraded it from \
                 {from}; start it again",
                options.prefix
            )));
        }
    }
    if resp.succeeded() {
        tracing::warn!(
            prefix = %options.prefix,
            "upgraded the etcd prefix from storage format {from} to {FORMAT}: replicas of \
             older builds can no longer write to it, nor read what this one writes (stop and \
             upgrade them)"
        );
    }
    Ok((FORMAT, offset, super::inner::header_revision(resp.header())))
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
        let v = |s: &str| Some(s.to_string());
        assert!(all_trusted(&[v("3.5.18"), v("3.6.1")]));
        assert!(!all_trusted(&[v("3.5.18"), v("3.4.23")]), "a mixed cluster");
        assert!(
            !all_trusted(&[v("3.5.18"), None]),
            "a member that did not answer"
        );
        assert!(!all_trusted(&[]));
    }
}
