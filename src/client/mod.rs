//! A typed async client for the v1beta1 API, and a watcher built on it
//! ([`watcher`]) for controllers.
//!
//! Objects come back as model objects ([`AnyObject`]) with their
//! server-owned metadata (`uid`, `resource_version`, `generation`).
//!
//! Wire shapes and URLs come from [`crate::api::v1beta1`] (as the server's
//! do) and objects from [`crate::model`]; nothing here uses the server's
//! [`crate::http`] layer.

mod tokens;
pub mod watcher;

use std::fmt;
use std::path::{Path as FsPath, PathBuf};

use futures_util::{Stream, StreamExt};
use serde_json::Value;

pub use crate::api::v1beta1::WatchEvent;
pub use crate::api::v1beta1::types::{ApplyItem, ApplyResult};
use crate::api::v1beta1::{self, list::ListBody, paths};
use crate::model::{AnyObject, Kind, Path};

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The request did not get an answer (connection refused, reset...).
    Transport(reqwest::Error),
    /// The server answered with an error (its problem document).
    Api {
        /// HTTP status.
        status: u16,
        /// `reason` of the problem.
        reason: String,
        /// `detail` of the problem.
        detail: String,
    },
    /// The answer could not be read.
    Decode(String),
    /// The client could not be set up (an unreadable certificate, a bad
    /// server address).
    Config(String),
}

impl ClientError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport(e) => write!(f, "request failed: {e}"),
            ClientError::Api {
                status,
                reason,
                detail,
            } => write!(f, "{status} {reason}: {detail}"),
            ClientError::Decode(e) => write!(f, "unreadable answer: {e}"),
            ClientError::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Transport(e)
    }
}

/// What to watch: a kind (or all) and a scope.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Kinds (empty: all).
    pub kinds: Vec<Kind>,
    /// Scope names from realm down.
    pub scope: Vec<String>,
    /// Label selector.
    pub label_selector: Option<String>,
    /// Field selector (`status.state=X`, `status.state!=X`).
    pub field_selector: Option<String>,
}

/// A bearer token. Never shown: its `Debug` prints `Token(..)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from its text (surrounding whitespace removed).
    pub fn new(text: impl AsRef<str>) -> Token {
        Token(text.as_ref().trim().to_string())
    }

    /// Reads a token file (the token on its first line; surrounding
    /// whitespace is ignored).
    pub fn from_file(path: &FsPath) -> Result<Token, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Config(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = Token::new(text.lines().next().unwrap_or_default());
        if token.0.is_empty() {
            return Err(ClientError::Config(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        Ok(token)
    }

    /// The token's text, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// How a [`Client`] authenticates and which server certificates it
/// trusts.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer ...` on every request.
    pub token: Option<Token>,
    /// A CA certificate (PEM) trusted for `https` servers (there is no
    /// other trust anchor: an `https` server needs one).
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (PEM) to present, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub client_key: Option<PathBuf>,
}

/// The API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The server as given (`unix:/path` for a socket), for messages.
    server: String,
}

/// The URL path of an object (`/api/v1beta1/realms/r/spaces/s`).
pub fn object_url(path: &Path) -> String {
    paths::object_path(path)
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Client {
        let base = base.into().trim_end_matches('/').to_string();
        Client {
            http: reqwest::Client::new(),
            server: base.clone(),
            base,
        }
    }

    /// A client for `server`: a URL (`http://HOST:PORT`, `https://...`)
    /// or `unix:/path/modelhub.sock`, with a token and certificates.
    pub fn connect(server: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        let config = |m: String| ClientError::Config(m);
        let read = |what: &str, p: &FsPath| {
            std::fs::read(p).map_err(|e| config(format!("cannot read {what} {}: {e}", p.display())))
        };
        let mut builder = reqwest::Client::builder();
        let base = match server.strip_prefix("unix:") {
            Some(path) if !path.starts_with("//") => {
                builder = builder.unix_socket(FsPath::new(path));
                // The host is not used to connect; it is sent as `Host`.
                "http://localhost".to_string()
            }
            _ => server.trim_end_matches('/').to_string(),
        };
        if let Some(token) = &options.token {
            let mut value =
                reqwest::header::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        config("the token holds characters a header cannot carry".into())
                    })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(ca) = &options.ca_cert {
            let pem = read("the CA certificate", ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config(format!("bad CA certificate {}: {e}", ca.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&options.client_cert, &options.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read("the client certificate", cert)?;
                pem.push(b'\n');
                pem.extend(read("the client key", key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    config(format!(
                        "bad client certificate {} or key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(config(
                    "a client certificate needs both --client-cert and --client-key".into(),
                ));
            }
        }
        let http = builder
            .build()
            .map_err(|e| config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            server: server.to_string(),
        })
    }

    /// The server's base URL (`http://localhost` for a unix socket).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The server as given to [`Client::connect`] (`unix:/path` for a
    /// socket), for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn answer(resp: reqwest::Response) -> Result<Value, ClientError> {
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if status >= 400 {
            return Err(problem(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn object(v: Value) -> Result<AnyObject, ClientError> {
        v1beta1::decode_document(v).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Reads one object.
    pub async fn get(&self, path: &Path) -> Result<AnyObject, ClientError> {
        let resp = self.http.get(self.url(&object_url(path))).send().await?;
        Self::object(Self::answer(resp).await?)
    }

    /// Lists every object of `kind` under `scope` (names from realm down),
    /// with the list's revision.
    pub async fn list(
        &self,
        kind: Kind,
        scope: &[&str],
    ) -> Result<(Vec<AnyObject>, u64), ClientError> {
        let mut url = paths::cross_scope_route(kind);
        for (i, (name, value)) in ["realm", "space", "stack", "cell"]
            .iter()
            .zip(scope)
            .enumerate()
        {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{name}={}", paths::percent_encode(value)));
        }
        if kind == Kind::Realm {
            url = paths::collection_route(Kind::Realm);
        }
        let v = Self::answer(self.http.get(self.url(&url)).send().await?).await?;
        let list: ListBody<Value> =
            serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))?;
        let revision = list.metadata.resource_version.parse().unwrap_or_default();
        let items = list
            .items
            .into_iter()
            .map(Self::object)
            .collect::<Result<_, _>>()?;
        Ok((items, revision))
    }

    /// Creates an object under its parent.
    pub async fn create(&self, obj: &AnyObject) -> Result<AnyObject, ClientError> {
        let path = obj.path();
        let url = match path.parent() {
            Some(parent) => format!("{}/{}", object_url(&parent), obj.kind().plural()),
            None => paths::collection_route(obj.kind()),
        };
        let resp = self
            .http
            .post(self.url(&url))
            .json(&v1beta1::to_value(obj))
            .send()
            .await?;
        Self::object(Self::answer(resp).await?)
    }

    /// Replaces labels and spec, guarded by the object's `resource_version`
    /// when it is non-zero.
    pub async fn replace(&self, obj: &AnyObject) -> Result<AnyObject, ClientError> {
        let resp = self
            .http
            .put(self.url(&object_url(&obj.path())))
            .json(&guarded(obj))
            .send()
            .await?;
        Self::object(Self::answer(resp).await?)
    }

    /// Writes the status, guarded by the object's `resource_version` when
    /// it is non-zero.
    pub async fn replace_status(&self, obj: &AnyObject) -> Result<AnyObject, ClientError> {
        let url = format!("{}/status", object_url(&obj.path()));
        let resp = self
            .http
            .put(self.url(&url))
            .json(&guarded(obj))
            .send()
            .await?;
        Self::object(Self::answer(resp).await?)
    }

    /// Writes the finalizers of `obj` (its `metadata.finalizers`, and
    /// nothing else), guarded by its `resource_version` when it is
    /// non-zero: a controller adds its own when it first sees an object and
    /// removes it when its teardown is done (409 `Conflict`: re-read and
    /// retry).
    pub async fn replace_finalizers(&self, obj: &AnyObject) -> Result<AnyObject, ClientError> {
        let url = format!("{}/finalizers", object_url(&obj.path()));
        let mut body = guarded(obj);
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            // An empty list is omitted in documents; here it says "none".
            m.insert(
                "finalizers".into(),
                serde_json::json!(obj.meta().finalizers),
            );
        }
        let resp = self.http.put(self.url(&url)).json(&body).send().await?;
        Self::object(Self::answer(resp).await?)
    }

    /// Deletes an object (with its subtree if `cascade`).
    pub async fn delete(&self, path: &Path, cascade: bool) -> Result<AnyObject, ClientError> {
        let url = format!("{}?cascade={cascade}", object_url(path));
        Self::object(Self::answer(self.http.delete(self.url(&url)).send().await?).await?)
    }

    /// Applies manifests (`POST /api/v1beta1/apply`): `body` is a YAML
    /// stream (`application/yaml`), a JSON document or a JSON array
    /// (`application/json`). All documents are written together or none
    /// is; with `dry_run` nothing is written and the outcomes are reported.
    pub async fn apply(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
        dry_run: bool,
    ) -> Result<ApplyResult, ClientError> {
        let mut url = self.url(&paths::apply_route());
        if dry_run {
            url.push_str("?dryRun=true");
        }
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await?;
        serde_json::from_value(Self::answer(resp).await?)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GETs `path_and_query` (e.g. `/api/v1beta1/cells?realm=demo`) with
    /// the given `Accept` and returns the body as text, as the server wrote
    /// it. Error answers become [`ClientError::Api`].
    pub async fn get_raw(&self, path_and_query: &str, accept: &str) -> Result<String, ClientError> {
        let resp = self
            .http
            .get(self.url(path_and_query))
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if status >= 400 {
            return Err(problem(status, &bytes));
        }
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Opens a watch stream; `resource_version: None` starts with a
    /// snapshot (ADDED per object, then a BOOKMARK).
    pub async fn watch(
        &self,
        what: &WatchScope,
        resource_version: Option<u64>,
    ) -> Result<
        impl Stream<Item = Result<WatchEvent<AnyObject>, ClientError>> + Send + 'static,
        ClientError,
    > {
        let mut q: Vec<(String, String)> = Vec::new();
        if !what.kinds.is_empty() {
            q.push((
                "kind".into(),
                what.kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ));
        }
        for (name, value) in ["realm", "space", "stack", "cell"].iter().zip(&what.scope) {
            q.push((name.to_string(), value.clone()));
        }
        if let Some(s) = &what.label_selector {
            q.push(("labelSelector".into(), s.clone()));
        }
        if let Some(s) = &what.field_selector {
            q.push(("fieldSelector".into(), s.clone()));
        }
        if let Some(rv) = resource_version {
            q.push(("resourceVersion".into(), rv.to_string()));
        }
        let resp = self
            .http
            .get(self.url(&paths::watch_route()))
            .query(&q)
            .send()
            .await?;
        if resp.status().as_u16() >= 400 {
            return Err(Self::answer(resp).await.expect_err("error status"));
        }
        Ok(ndjson_events(resp.bytes_stream()))
    }

    /// Streams the backup of the whole store (`GET /api/v1beta1/backup`),
    /// its bytes as the server sends them; a stream the server could not
    /// finish ends with an error.
    pub async fn backup(
        &self,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, ClientError>> + Send + 'static, ClientError>
    {
        let resp = self
            .http
            .get(self.url(&paths::backup_route()))
            .send()
            .await?;
        if resp.status().as_u16() >= 400 {
            return Err(Self::answer(resp).await.expect_err("error status"));
        }
        Ok(resp
            .bytes_stream()
            .map(|chunk| chunk.map_err(ClientError::Transport)))
    }
}

/// The error of a failed answer, from its problem document (or its text).
fn problem(status: u16, bytes: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    ClientError::Api {
        status,
        reason: v["reason"].as_str().unwrap_or("Unknown").to_string(),
        detail: v["detail"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned()),
    }
}

fn guarded(obj: &AnyObject) -> Value {
    let mut v = v1beta1::to_value(obj);
    if obj.meta().resource_version == 0
        && let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.remove("resourceVersion");
    }
    v
}

/// Parses one NDJSON line into an event. An ERROR event is read leniently
/// (a reason this build does not know, or a missing field, still ends the
/// stream with the server's status and detail).
pub fn parse_event(line: &[u8]) -> Result<WatchEvent<AnyObject>, ClientError> {
    let event = match serde_json::from_slice::<WatchEvent<Value>>(line) {
        Ok(event) => event,
        Err(e) => return lenient_error(line).ok_or_else(|| ClientError::Decode(e.to_string())),
    };
    event.try_map(Client::object)
}

/// An ERROR event that does not decode as a [`Problem`](v1beta1::Problem).
fn lenient_error(line: &[u8]) -> Option<WatchEvent<AnyObject>> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if v["type"] != "ERROR" {
        return None;
    }
    let o = &v["object"];
    let text = |k: &str| o[k].as_str().unwrap_or_default().to_string();
    Some(WatchEvent::Error(v1beta1::Problem {
        type_: text("type"),
        title: text("title"),
        status: o["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(500),
        detail: text("detail"),
        reason: serde_json::from_value(o["reason"].clone()).unwrap_or(v1beta1::Reason::Internal),
        field: o["field"].as_str().map(str::to_string),
    }))
}

/// Splits a byte stream into NDJSON events.
fn ndjson_events<S>(
    bytes: S,
) -> impl Stream<Item = Result<WatchEvent<AnyObject>, ClientError>> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static,
{
    let state = (Box::pin(bytes), Vec::<u8>::new(), false);
    futures_util::stream::unfold(state, |(mut bytes, mut buf, done)| async move {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if line.len() > 1 {
                    return Some((parse_event(&line[..line.len() - 1]), (bytes, buf, done)));
                }
                continue;
            }
            if done {
                return None;
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some((Err(ClientError::Transport(e)), (bytes, buf, true))),
                None => {
                    if buf.is_empty() {
                        return None;
                    }
                    buf.push(b'\n');
                    return Some((
                        Err(ClientError::Decode("stream ended mid-event".into())),
                        (bytes, Vec::new(), true),
                    ));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_event_with_an_unknown_reason_still_ends_the_stream() {
        let line =
            br#"{"type":"ERROR","object":{"status":403,"reason":"NoSuchReason","detail":"no"}}"#;
        let Ok(WatchEvent::Error(p)) = parse_event(line) else {
            panic!("an ERROR event")
        };
        assert_eq!((p.status, p.detail.as_str()), (403, "no"));
        assert_eq!(p.reason, v1beta1::Reason::Internal);
        let known = br#"{"type":"ERROR","object":{"type":"urn:modelhub:problem:Gone","title":"Gone","status":410,"detail":"old","reason":"Gone"}}"#;
        let Ok(WatchEvent::Error(p)) = parse_event(known) else {
            panic!("an ERROR event")
        };
        assert_eq!((p.status, p.reason), (410, v1beta1::Reason::Gone));
        assert!(parse_event(br#"{"type":"ADDED","object":7}"#).is_err());
    }
}
