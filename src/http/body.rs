//! Request extraction and response rendering: JSON or YAML bodies in,
//! JSON or YAML out (by `Accept`), path names and query strings, each with
//! its failures mapped to [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{ApiError, Reason};
use crate::api::v1beta1::{self, Format};
use crate::model::AnyObject;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// A whole document in JSON or YAML.
    Document(Format),
    /// An RFC 7396 merge patch.
    MergePatch,
}

/// A request body and its declared type.
#[derive(Debug, Clone)]
pub struct Body {
    /// Raw bytes.
    pub bytes: Bytes,
    /// From `Content-Type` (absent: JSON).
    pub kind: BodyType,
}

/// The media type of a header, lower-cased, without parameters. A value
/// that is not visible ASCII comes back as is (lossily), so it is refused
/// as unsupported rather than read as absent.
fn media_type(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or_default()
                .trim_matches([' ', '\t'])
                .to_ascii_lowercase()
        })
}

/// Whether a JSON text nests arrays and objects deeper than `max`
/// (strings skipped; malformed text is left to the parser to refuse).
/// Checked before parsing, so that a deep body costs one pass.
pub fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    // Fewer opening brackets than the limit cannot nest deeper than it
    // (most bodies stop here). Counted in bytes over chunks that cannot
    // overflow one, which the compiler vectorizes.
    let opening: usize = bytes
        .chunks(255)
        .map(|c| {
            c.iter()
                .fold(0u8, |n, &b| n + u8::from(b == b'[' || b == b'{')) as usize
        })
        .sum();
    if opening <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The body-size refusal.
fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Reason::PayloadTooLarge,
        format!("the request body exceeds the limit of {limit} bytes (--max-body-bytes)"),
    )
}

/// Reads the body up to the size limit, then refuses what is not UTF-8
/// or (JSON) nested deeper than the limit, before any parser sees it.
impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limits = state.limits.limits;
        let kind = match media_type(req.headers(), header::CONTENT_TYPE).as_deref() {
            None | Some("") | Some("application/json") => BodyType::Document(Format::Json),
            Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
                BodyType::Document(Format::Yaml)
            }
            Some("application/merge-patch+json") => BodyType::MergePatch,
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Reason::BadRequest,
                    format!(
                        "unsupported Content-Type {other:?}: use application/json, application/yaml \
                         or (PATCH) application/merge-patch+json"
                    ),
                ));
            }
        };
        // A declared length over the limit is refused before reading.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            return Err(too_large(limits.max_body_bytes));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limits.max_body_bytes)
            .await
            .map_err(|e| {
                let over = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit");
                let stalled = error_chain(&e).any(|s| s.is::<super::listen::BodyStalled>());
                if stalled {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        Reason::BadRequest,
                        "the request body stalled: nothing was received within the body timeout",
                    )
                } else if over {
                    too_large(limits.max_body_bytes)
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                }
            })?;
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(ApiError::bad_request(format!(
                "the request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            )));
        }
        if matches!(
            kind,
            BodyType::Document(Format::Json) | BodyType::MergePatch
        ) && json_too_deep(&bytes, limits.max_json_depth)
        {
            return Err(ApiError::bad_request(format!(
                "the JSON body nests arrays and objects deeper than {} levels (--max-json-depth)",
                limits.max_json_depth
            )));
        }
        Ok(Body { bytes, kind })
    }
}

/// A response body holding `G` (a place among the requests in flight, a
/// request counted by its connection) until it is sent or dropped.
pub struct Held<G> {
    body: axum::body::Body,
    _guard: G,
}

impl<G> Held<G> {
    /// `body`, holding `guard`.
    pub fn new(body: axum::body::Body, guard: G) -> Held<G> {
        Held {
            body,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

/// An error and its sources, outermost first.
fn error_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The names in a request path, in order (realm first).
#[derive(Debug, Clone)]
pub struct Names(pub Vec<String>);

impl<S: Send + Sync> FromRequestParts<S> for Names {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(pairs) =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
        Ok(Names(pairs.into_iter().map(|(_, v)| v).collect()))
    }
}

/// A query string decoded into `T` (unknown parameters are rejected).
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(raw));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let field = e.path().to_string();
                let msg = e.into_inner().to_string();
                match msg.strip_prefix("unknown field `") {
                    Some(rest) => {
                        let name = rest.split('`').next().unwrap_or_default().to_string();
                        ApiError::bad_field(
                            name.clone(),
                            format!("unknown query parameter {name:?}"),
                        )
                    }
                    None => ApiError::bad_field(field, format!("bad query string: {msg}")),
                }
            })
    }
}

fn form_urlencoded_parse(raw: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(raw.as_bytes())
}

/// Whether the client asked for YAML.
pub fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|m| {
                matches!(
                    m.split(';').next().unwrap_or_default().trim(),
                    "application/yaml" | "application/x-yaml" | "text/yaml"
                )
            })
        })
}

/// Renders a value as JSON or YAML with `status`.
pub fn render<T: Serialize>(value: &T, yaml: bool, status: StatusCode) -> Response {
    let (bytes, ctype) = if yaml {
        match yaml_serde::to_string(value) {
            Ok(s) => (s.into_bytes(), "application/yaml"),
            Err(e) => {
                tracing::error!(error = %e, "YAML rendering failed");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Reason::Internal,
                    "rendering failed",
                )
                .into_response();
            }
        }
    } else {
        (render_json(value), "application/json")
    };
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// A value as compact JSON.
pub fn render_json<T: Serialize>(value: &T) -> Vec<u8> {
    // A cell with three containers is about 2 KB: one allocation, not the
    // doubling from serde_json's 128 bytes.
    let mut bytes = Vec::with_capacity(4096);
    serde_json::to_writer(&mut bytes, value).expect("documents serialize");
    bytes
}

/// A document already rendered as JSON, with the `ETag` of its
/// `resourceVersion`.
pub fn json_document(json: Bytes, resource_version: u64, status: StatusCode) -> Response {
    let mut resp = (status, json).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag_of(resource_version));
    resp
}

/// The ETag of an object: its quoted `resourceVersion`.
pub fn etag(obj: &AnyObject) -> HeaderValue {
    etag_of(obj.meta().resource_version)
}

fn etag_of(resource_version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{resource_version}\"")).expect("digits")
}

/// Renders an object as a v1beta1 document with its `ETag`.
pub fn render_object(obj: &AnyObject, headers: &HeaderMap, status: StatusCode) -> Response {
    let mut resp = render(&v1beta1::encode(obj), wants_yaml(headers), status);
    resp.headers_mut().insert(header::ETAG, etag(obj));
    resp
}

/// Reads an `If-Match` precondition: `"<rv>"`, `<rv>` or `*` (no check).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = |shown: &str| {
        ApiError::bad_field(
            "If-Match",
            format!("If-Match {shown:?} is not a quoted resourceVersion"),
        )
    };
    // A value that is not visible ASCII is refused, never read as absent:
    // dropping a precondition would let the write through unchecked.
    let s = v
        .to_str()
        .map_err(|_| bad(&String::from_utf8_lossy(v.as_bytes())))?
        .trim();
    if s.is_empty() || s == "*" {
        return Ok(None);
    }
    let tag = s.strip_prefix("W/").unwrap_or(s);
    let tag = tag.strip_prefix('"').unwrap_or(tag);
    let digits = tag.strip_suffix('"').unwrap_or(tag);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(s));
    }
    digits.parse::<u64>().map(Some).map_err(|_| bad(s))
}

#[cfg(test)]
mod tests {
    use super::json_too_deep;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert!(!json_too_deep(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_too_deep(br#"{"a":[1,{"b":2}]}"#, 2));
        // Brackets in strings, escaped quotes included, do not count.
        assert!(!json_too_deep(br#"{"a":"[[[[\"[[[["}"#, 1));
        assert!(!json_too_deep(br#"{"a":"\\"}"#, 1));
        let deep = [vec![b'['; 200_000], vec![b']'; 200_000]].concat();
        assert!(json_too_deep(&deep, 64));
        assert!(!json_too_deep(&deep[199_990..200_010], 64));
        // Unbalanced closers never underflow.
        assert!(!json_too_deep(b"]]]]{}", 1));
    }
}
