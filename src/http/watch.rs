//! Watch endpoints: `<collection>?watch=true` and `/api/v1beta1/watch`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::model::{Kind, Selector};
use crate::watch::{self, Filter, Framing, Start};

/// Query parameters of `/api/v1beta1/watch`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WatchParams {
    /// Kinds, comma-separated (`Cell`, `cells`, ...); absent: all.
    pub kind: Option<String>,
    /// Scope: realm.
    pub realm: Option<String>,
    /// Scope: space.
    pub space: Option<String>,
    /// Scope: stack.
    pub stack: Option<String>,
    /// Scope: cell.
    pub cell: Option<String>,
    /// Start after this revision; absent: snapshot first.
    pub resource_version: Option<String>,
    /// Label selector.
    pub label_selector: Option<String>,
    /// Field selector (`status.state`).
    pub field_selector: Option<String>,
    /// End the stream after this many seconds.
    pub timeout_seconds: Option<String>,
}

/// The stream's start from `resourceVersion` (or SSE's `Last-Event-ID`).
pub fn start_of(resource_version: Option<&str>, headers: &HeaderMap) -> Result<Start, ApiError> {
    // Read lossily: an unreadable Last-Event-ID is refused, not ignored.
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    match resource_version
        .filter(|s| !s.is_empty())
        .or(last_event_id.as_deref())
    {
        None => Ok(Start::Snapshot),
        Some(s) => s.parse::<u64>().map(Start::After).map_err(|_| {
            ApiError::bad_field(
                "resourceVersion",
                format!("resourceVersion={s:?} is not a revision (a decimal number)"),
            )
        }),
    }
}

/// Parses `timeoutSeconds`.
pub fn timeout_of(value: Option<&str>) -> Result<Option<Duration>, ApiError> {
    match value.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(|n| Some(Duration::from_secs(n)))
            .map_err(|_| {
                ApiError::bad_field(
                    "timeoutSeconds",
                    format!("timeoutSeconds={s:?}: expected whole seconds"),
                )
            }),
    }
}

/// Parses the label and field selector parameters.
pub fn selector_of(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, ApiError> {
    let selector = match labels {
        None => Selector::default(),
        Some(s) => Selector::parse(s).map_err(|e| ApiError::bad_field("labelSelector", e))?,
    };
    match fields {
        None => Ok(selector),
        Some(f) => selector
            .with_fields(f)
            .map_err(|e| ApiError::bad_field("fieldSelector", e)),
    }
}

fn framing(headers: &HeaderMap) -> Framing {
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if sse { Framing::Sse } else { Framing::Ndjson }
}

/// Starts a stream and answers with it (status and headers at once).
pub async fn respond(
    state: &AppState,
    filter: Filter,
    start: Start,
    timeout: Option<Duration>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let framing = framing(headers);
    let stream = watch::start(
        state.hub.clone(),
        state.store.clone(),
        filter,
        start,
        framing,
        timeout,
    )
    .await?;
    let body = axum::body::Body::from_stream(futures_util::StreamExt::map(
        stream,
        Ok::<_, std::io::Error>,
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let ctype = match framing {
        Framing::Ndjson => "application/x-ndjson",
        Framing::Sse => "text/event-stream",
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// `GET /api/v1beta1/watch`.
pub async fn watch_all(
    state: AppState,
    params: WatchParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut kinds = Vec::new();
    for k in params
        .kind
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.trim().is_empty())
    {
        kinds.push(Kind::parse(k.trim()).ok_or_else(|| {
            ApiError::bad_field(
                "kind",
                format!("unknown kind {k:?} (Realm, Space, Stack, Cell, Container)"),
            )
        })?);
    }
    let mut scope = Vec::new();
    for (i, (name, value)) in [
        ("realm", &params.realm),
        ("space", &params.space),
        ("stack", &params.stack),
        ("cell", &params.cell),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = value {
            crate::model::validate_name(name, v)
                .map_err(|e| ApiError::bad_field(name, e.to_string()))?;
            scope.resize(i + 1, None);
            scope[i] = Some(v.clone());
        }
    }
    let filter = Filter {
        kinds,
        scope,
        selector: selector_of(
            params.label_selector.as_deref(),
            params.field_selector.as_deref(),
        )?,
    };
    let start = start_of(params.resource_version.as_deref(), &headers)?;
    let timeout = timeout_of(params.timeout_seconds.as_deref())?;
    respond(&state, filter, start, timeout, &headers).await
}
