//! Loading a backup into an empty etcd prefix.
//!
//! The objects are written in transactions within etcd's limits, each
//! conditional on the prefix having no storage-format key; the format key
//! and the revision offset go last, in one transaction. Until then a
//! replica refuses to start on the prefix (keys without a format key), so
//! a restore that stops halfway is never served: empty the prefix and run
//! it again. The offset puts every resourceVersion handed out afterwards
//! above the backup's (plus its jump), so a watch resumed from the old
//! history answers 410.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::error::EtcdError;
use super::layout::FORMAT;
use super::layout::{Layout, Offset, PER_REVISION, prefix_end};
use crate::model::AnyObject;
use crate::store::codec;
use crate::store::error::StoreError;
use crate::store::keys;
use crate::store::options::EtcdOptions;

/// Writes `objects` (parents before children, metadata as they were) into
/// the empty prefix of `options`, with resourceVersions from above
/// `revision` on. Answers how many objects were written.
pub async fn restore(
    options: &EtcdOptions,
    revision: u64,
    objects: Vec<AnyObject>,
) -> Result<u64, StoreError> {
    let client = super::open::connect(options).await?;
    let layout = Layout::new(&options.prefix)?;
    let mut kv = super::inner::kv_client(&client);
    let all = layout.all();
    let count = kv
        .get(
            all.clone(),
            Some(
                GetOptions::new()
                    .with_range(prefix_end(&all))
                    .with_count_only(),
            ),
        )
        .await
        .map_err(|e| EtcdError(e).read())?;
    if count.count() > 0 {
        return Err(StoreError::BadRequest(format!(
            "{} holds {} keys: a restore only fills an empty prefix (delete it with `etcdctl del \
             --prefix {}/`, or choose another --etcd-prefix)",
            options.prefix,
            count.count(),
            options.prefix
        )));
    }
    let format_key = layout.meta("format");
    let unformatted = || Compare::create_revision(format_key.clone(), CompareOp::Equal, 0);
    let max_ops = options.max_txn_ops.max(1);
    let budget = options.max_request_bytes.saturating_sub(4096).max(1);
    let mut batch: Vec<TxnOp> = Vec::new();
    let mut bytes = 0;
    let mut written = 0u64;
    let mut last = 0i64;
    let flush = |batch: Vec<TxnOp>| {
        let txn = Txn::new().when(vec![unformatted()]).and_then(batch);
        let mut kv = kv.clone();
        async move {
            let resp = kv
                .txn(txn)
                .await
                .map_err(|e| EtcdError(e).refusal_or_unknown())?;
            if !resp.succeeded() {
                return Err(StoreError::Unavailable(
                    "another store initialised the prefix during the restore: it stopped".into(),
                ));
            }
            Ok::<i64, StoreError>(super::inner::header_revision(resp.header()))
        }
    };
    for mut obj in objects {
        let path = obj.path();
        obj.meta_mut().resource_version = batch.len() as u64;
        let key = layout.object(path.kind(), &keys::encode(path.names()));
        let value = codec::encode(&obj);
        if value.len() + key.len() > budget {
            return Err(StoreError::TooLarge(format!(
                "{path} takes {} bytes, more than one etcd request allows (--etcd-max-request-bytes \
                 {})",
                value.len(),
                options.max_request_bytes
            )));
        }
        if batch.len() == max_ops || bytes + value.len() + key.len() > budget {
            last = flush(std::mem::take(&mut batch)).await?;
            bytes = 0;
            obj.meta_mut().resource_version = 0;
        }
        let value = codec::encode(&obj);
        bytes += key.len() + value.len();
        batch.push(TxnOp::put(key, value, None));
        written += 1;
    }
    if !batch.is_empty() {
        last = flush(batch).await?;
    }
    let offset = Offset {
        offset: revision / PER_REVISION + 1,
        floor: last + 1,
    };
    let done = Txn::new().when(vec![unformatted()]).and_then(vec![
        TxnOp::put(layout.meta("offset"), offset.render(), None),
        TxnOp::put(format_key.clone(), FORMAT.to_string(), None),
    ]);
    let resp = kv
        .txn(done)
        .await
        .map_err(|e| EtcdError(e).refusal_or_unknown())?;
    if !resp.succeeded() {
        return Err(StoreError::Unavailable(
            "another store initialised the prefix during the restore: it stopped".into(),
        ));
    }
    tracing::info!(objects = written, offset = offset.offset, floor = offset.floor, prefix = %options.prefix, "restored into etcd");
    Ok(written)
}
