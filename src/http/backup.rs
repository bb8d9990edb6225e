//! `GET /api/v1beta1/backup`: the whole store at one revision, in the
//! backup format ([`crate::api::v1beta1::backup`]). The objects are read
//! from one snapshot on a blocking thread and sent through a bounded
//! channel, so writes go on meanwhile and memory stays bounded whatever the
//! store's size. A failure after the status was sent ends the body
//! abnormally, without a trailer: a client never gets a backup that looks
//! complete and is not.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::AppState;
use super::error::ApiError;
use crate::api::v1beta1::backup::{Encoder, MEDIA_TYPE};
use crate::model::{AnyObject, Kind, Selector, Timestamp};
use crate::store::{Backend, ListQuery, Snapshot, StoreError};

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reading thread and the connection.
const IN_FLIGHT: usize = 4;

/// Streams the backup of the store.
pub async fn backup(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    let (opened_tx, opened_rx) = oneshot::channel::<Result<u64, StoreError>>();
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let snapshot = match store.snapshot() {
            Ok(s) => s,
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        let revision = snapshot.revision();
        let _ = opened_tx.send(Ok(revision));
        let created = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let sent = write(revision, created, objects(&snapshot), |chunk| {
            tx.blocking_send(Ok(chunk)).is_ok()
        });
        match sent {
            Ok(Some(objects)) => tracing::info!(revision, objects, "backup sent"),
            Ok(None) => tracing::info!(revision, "backup abandoned by its client"),
            Err(e) => {
                tracing::error!(error = %e, revision, "backup failed: its stream ends abnormally");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let revision = opened_rx
        .await
        .map_err(|_| StoreError::Internal("backup task ended early".into()))??;
    let mut resp = (
        StatusCode::OK,
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    let name = format!("attachment; filename=\"modelhub-backup-{revision}.ndjson\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::try_from(name).expect("ASCII"),
    );
    Ok(resp)
}

/// Every object of `snapshot`, kinds from Realm down, each kind in path
/// order (so parents come before their children).
fn objects(snapshot: &Snapshot) -> impl Iterator<Item = Result<AnyObject, StoreError>> + '_ {
    Kind::ALL.into_iter().flat_map(move |kind| {
        let query = ListQuery {
            kind,
            scope: Vec::new(),
            selector: Selector::default(),
            limit: None,
            continue_token: None,
        };
        let items: Box<dyn Iterator<Item = _>> = match snapshot.list(&query) {
            Ok(list) => Box::new(list.map(|item| item.map(|(_, obj)| obj))),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        items
    })
}

/// Encodes the backup of `objects` at `revision` and gives it to `send` a
/// chunk at a time. Answers how many objects were sent, `None` if `send`
/// refused a chunk (the client left); an error comes before the trailer is
/// written, so what was sent is not a whole backup.
fn write(
    revision: u64,
    created: Timestamp,
    objects: impl Iterator<Item = Result<AnyObject, StoreError>>,
    mut send: impl FnMut(Bytes) -> bool,
) -> Result<Option<u64>, StoreError> {
    let mut buf = Vec::with_capacity(CHUNK + CHUNK / 8);
    let mut encoder = Encoder::start(revision, created, &mut buf);
    let mut count = 0;
    for obj in objects {
        encoder.object(&obj?, &mut buf);
        count += 1;
        if buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + CHUNK / 8));
            if !send(Bytes::from(chunk)) {
                return Ok(None);
            }
        }
    }
    encoder.finish(&mut buf);
    Ok(send(Bytes::from(buf)).then_some(count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1beta1::backup::Reader;
    use crate::model::samples;

    fn run(
        objects: Vec<Result<AnyObject, StoreError>>,
    ) -> (Result<Option<u64>, StoreError>, Vec<u8>) {
        let mut out = Vec::new();
        let result = write(42, 0, objects.into_iter(), |chunk| {
            out.extend_from_slice(&chunk);
            true
        });
        (result, out)
    }

    #[test]
    fn a_whole_backup_reads_back() {
        let many: Vec<_> = std::iter::repeat_n(samples(), 200)
            .flatten()
            .map(Ok)
            .collect();
        let (result, out) = run(many);
        assert_eq!(result.unwrap(), Some(1000));
        assert!(out.len() > CHUNK, "several chunks");
        let mut r = Reader::open(out.as_slice()).unwrap();
        while r.next_line().unwrap().is_some() {}
        assert_eq!(r.objects(), 1000);
    }

    #[test]
    fn a_failure_sends_no_trailer() {
        let mut objects: Vec<_> = samples().into_iter().map(Ok).collect();
        objects.insert(3, Err(StoreError::Internal("disk on fire".into())));
        let (result, out) = run(objects);
        assert_eq!(
            result.unwrap_err(),
            StoreError::Internal("disk on fire".into())
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(r#""end":true"#), "{text}");
    }

    #[test]
    fn a_client_that_leaves_stops_the_backup() {
        let many = std::iter::repeat_n(samples(), 500).flatten().map(Ok);
        let mut chunks = 0;
        let result = write(42, 0, many, |_| {
            chunks += 1;
            false
        });
        assert_eq!(result.unwrap(), None);
        assert_eq!(chunks, 1);
    }
}
