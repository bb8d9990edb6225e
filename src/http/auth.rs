//! Authentication, authorization and the audit trail.
//!
//! [`authenticate`] (called first by the router's front layer) gives
//! every request an `Arc<Identity>` request extension, or an
//! [`Unauthenticated`] one saying why it has none; it refuses nothing, so
//! that the open routes stay open. [`authorize`] wraps each route of the
//! route table with that route's [`Access`]: no identity is 401, a role
//! or realm that does not reach is 403. [`Audit`] records every write and
//! every refusal on the `modelhub::audit` target.
//!
//! Credentials, in order: an `Authorization: Bearer` header (the only
//! place a token is read from, never the URL); the peer of the unix socket
//! (root and the server's own user are admins, other users need a token);
//! a TLS client certificate whose CN names a token; otherwise anonymous,
//! which is an admin while no token exists and every TCP listener is on
//! loopback (or `--insecure-allow-anonymous`), and refused otherwise.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, Reason};
use super::routes::RealmFrom;
use crate::auth::token::{self, Token};
use crate::auth::{Access, Identity, Peer, Source};
use crate::store::{Backend, Store, StoreError};

/// Why a request has no identity (a request extension).
#[derive(Debug, Clone)]
pub struct Unauthenticated(pub String);

/// How often the tokens are read again from the store, so that a token
/// created or revoked through another replica sharing the store is seen
/// within this bound (this server's own changes are seen at once).
pub const TOKEN_REFRESH: Duration = Duration::from_secs(2);

/// The tokens, indexed for lookup.
#[derive(Default)]
struct Index {
    by_digest: HashMap<[u8; 32], Arc<Identity>>,
    by_name: HashMap<String, Arc<Identity>>,
    /// A token was ever created: anonymous access is off for good.
    enabled: bool,
}

/// Who may do what without a token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Posture {
    /// Every TCP listener is on a loopback address.
    pub loopback_only: bool,
    /// `--insecure-allow-anonymous`: anonymous requests are admins while
    /// no token exists, whatever the listeners.
    pub insecure_allow_anonymous: bool,
    /// `--metrics-anonymous`: `/metrics` needs no token.
    pub metrics_anonymous: bool,
}

/// The authenticator: the token index and the anonymous posture.
pub struct Auth {
    index: RwLock<Arc<Index>>,
    /// Bumped by every token change made here, so that a periodic
    /// refresh that read the tokens before the change never installs
    /// its stale view over the change's own reload.
    generation: std::sync::atomic::AtomicU64,
    posture: Posture,
    server_uid: u32,
    anonymous: Arc<Identity>,
}

impl Auth {
    /// Loads the tokens from `store`.
    pub async fn load(store: &Store, posture: Posture) -> Result<Auth, StoreError> {
        let auth = Auth {
            index: RwLock::default(),
            generation: Default::default(),
            posture,
            server_uid: rustix::process::geteuid().as_raw(),
            anonymous: Arc::new(Identity::anonymous()),
        };
        auth.refresh(store).await?;
        Ok(auth)
    }

    /// Marks a token change made through this server (before its reload).
    pub fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reads the tokens again; installs them unless a change was made
    /// here meanwhile (whose own reload is newer). Once a token was ever
    /// created, anonymous access never comes back.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let started = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let tokens = store.tokens().await?;
        self.install(started, tokens);
        Ok(())
    }

    /// Installs tokens read when the generation was `started`, unless a
    /// change was made here since.
    fn install(&self, started: u64, tokens: crate::auth::token::Tokens) {
        let mut index = Index {
            enabled: tokens.enabled,
            ..Index::default()
        };
        for t in tokens.items {
            let id = Arc::new(t.identity(Source::Token));
            index.by_name.insert(t.name.clone(), id.clone());
            index.by_digest.insert(t.digest, id);
        }
        let mut guard = self.index.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != started {
            return;
        }
        index.enabled |= guard.enabled;
        *guard = Arc::new(index);
    }

    /// Drops a revoked token from the index at once (the reload that
    /// follows may fail).
    pub fn forget(&self, t: &Token) {
        let mut guard = self.index.write().unwrap_or_else(|e| e.into_inner());
        let mut index = Index {
            by_digest: guard.by_digest.clone(),
            by_name: guard.by_name.clone(),
            enabled: true,
        };
        index.by_digest.remove(&t.digest);
        index.by_name.remove(&t.name);
        *guard = Arc::new(index);
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a token was ever created in the store (revoking every
    /// token does not turn authentication off again).
    pub fn any_token(&self) -> bool {
        self.index().enabled
    }

    /// Whether an anonymous TCP request is an admin right now.
    pub fn anonymous_allowed(&self) -> bool {
        !self.any_token() && (self.posture.loopback_only || self.posture.insecure_allow_anonymous)
    }

    /// Whether `/metrics` is open.
    pub fn metrics_anonymous(&self) -> bool {
        self.posture.metrics_anonymous
    }

    /// The identity a request's credentials establish.
    pub fn identify(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&Peer>,
    ) -> Result<Arc<Identity>, String> {
        if let Some(value) = authorization {
            let presented = bearer(value)?;
            return self
                .index()
                .by_digest
                .get(&token::digest(presented))
                .cloned()
                .ok_or_else(|| "the bearer token is unknown or revoked".to_string());
        }
        match peer {
            Some(Peer::Unix { uid, .. }) => {
                if *uid == 0 || *uid == self.server_uid {
                    Ok(Arc::new(Identity::peer_admin(*uid)))
                } else {
                    Err(format!(
                        "uid {uid} on the unix socket: only root and the server's user \
                         (uid {}) are admins without a token; send Authorization: Bearer TOKEN",
                        self.server_uid
                    ))
                }
            }
            Some(Peer::Tcp {
                client_cn: Some(cn),
                ..
            }) => match self.index().by_name.get(cn) {
                Some(id) => {
                    let mut id = Identity::clone(id);
                    id.source = Source::Certificate;
                    Ok(Arc::new(id))
                }
                None => Err(format!(
                    "the client certificate's CN {cn:?} names no token: create a token of \
                     that name, or send Authorization: Bearer TOKEN"
                )),
            },
            _ if self.anonymous_allowed() => Ok(self.anonymous.clone()),
            _ => Err(
                "this server needs credentials: send Authorization: Bearer TOKEN (create one \
                 with `modelhub token create` as root over the unix socket, or as an admin)"
                    .into(),
            ),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` value.
fn bearer(value: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(value)
        .map_err(|_| "the Authorization header is not text".to_string())?
        .trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(
            "the Authorization header must be `Bearer TOKEN` (no other scheme is accepted)".into(),
        );
    }
    let t = rest.trim();
    if t.is_empty() {
        return Err("the Authorization header holds no token".into());
    }
    Ok(t)
}

/// Attaches the request's identity, or why it has none (first thing the
/// router's front layer does).
pub fn authenticate(s: &AppState, req: &mut Request) {
    let found = s.auth.identify(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        req.extensions().get::<Peer>(),
    );
    match found {
        Ok(id) => {
            req.extensions_mut().insert(id);
        }
        Err(why) => {
            req.extensions_mut().insert(Unauthenticated(why));
        }
    }
}

/// What [`authorize`] knows of the route it guards.
#[derive(Clone)]
pub struct Guard {
    /// The state (for the posture).
    pub state: AppState,
    /// The access the route needs.
    pub access: Access,
    /// Where its requests name their realm.
    pub realm_from: RealmFrom,
}

/// Per route: 401 without an identity, 403 for a role or a realm that
/// does not reach.
pub async fn authorize(
    State(g): State<Guard>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let params = match params {
        Ok(p) => p,
        Err(e) => {
            return ApiError::bad_request(format!("a name in the path is not readable: {e}"))
                .into_response();
        }
    };
    if g.access == Access::Public
        || (g.access == Access::Metrics && g.state.auth.metrics_anonymous())
    {
        return next.run(req).await;
    }
    let id = match req.extensions().get::<Arc<Identity>>() {
        Some(id) => id.clone(),
        None => {
            let why = req
                .extensions()
                .get::<Unauthenticated>()
                .map_or_else(|| "no credentials".to_string(), |u| u.0.clone());
            return ApiError::new(StatusCode::UNAUTHORIZED, Reason::Unauthorized, why)
                .into_response();
        }
    };
    let realm = match g.realm_from {
        RealmFrom::Path => params
            .iter()
            .find(|(k, _)| *k == "realm")
            .map(|(_, v)| v.to_string()),
        RealmFrom::Query => req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.into_owned())
        }),
        _ => None,
    };
    match rule(&id, g.access, g.realm_from, req.method(), realm.as_deref()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The authorization rule (API.md, "Who may do what"): the role must
/// allow the access; an identity limited to realms reaches only routes
/// that name one of its realms (apply checks each document itself), never
/// the realms' collection nor the server's operations but metrics.
pub fn rule(
    id: &Identity,
    access: Access,
    realm_from: RealmFrom,
    method: &Method,
    realm: Option<&str>,
) -> Result<(), ApiError> {
    if !id.may(access) {
        return Err(ApiError::forbidden(format!(
            "{} (role {}) may not {}",
            id.name,
            id.role,
            match access {
                Access::WriteSpec => "write objects (only admin and writer may)",
                Access::WriteStatus => "write status (only admin, writer and controller may)",
                Access::WriteFinalizers => {
                    "write finalizers (only admin, writer and controller may)"
                }
                Access::Admin => "operate the server (tokens, backups: only admin may)",
                Access::Public | Access::Read | Access::Metrics => "read",
            }
        )));
    }
    if id.all_realms() || matches!(access, Access::Public | Access::Metrics) {
        return Ok(());
    }
    let limited = id.limited_to();
    match (realm_from, realm) {
        (RealmFrom::Documents, _) => Ok(()),
        (RealmFrom::Server, _) => Err(ApiError::forbidden(format!(
            "{limited}: operating the server needs every realm"
        ))),
        (RealmFrom::AllRealms, _) => Err(ApiError::forbidden(format!(
            "{limited}: it may not {}",
            if method == Method::POST {
                "create realms"
            } else {
                "list or watch every realm (GET each of its realms by name)"
            }
        ))),
        (RealmFrom::Query, None) => Err(ApiError::forbidden_field(
            "realm",
            format!("{limited}: name one of them with ?realm="),
        )),
        (RealmFrom::Path | RealmFrom::Query, Some(r)) if id.may_realm(r) => Ok(()),
        (RealmFrom::Path | RealmFrom::Query, Some(r)) => Err(ApiError::forbidden(format!(
            "{limited}: realm {r:?} is not one of them"
        ))),
        (RealmFrom::Path, None) => Err(ApiError::forbidden(format!(
            "{limited}: this route names no realm"
        ))),
    }
}

/// A checked realm for one document of an apply (the documents name
/// their own realms).
pub fn may_write_realm(id: &Identity, realm: &str) -> Result<(), String> {
    if id.may_realm(realm) {
        Ok(())
    } else {
        Err(format!(
            "{}: realm {realm:?} is not one of them",
            id.limited_to()
        ))
    }
}

/// What a write handler tells the audit trail beyond the status: the
/// number of documents of an apply and the revision it reached.
#[derive(Debug, Clone, Copy)]
pub struct AuditNote {
    /// Documents in the request.
    pub documents: usize,
    /// The revision the write reached (0: none).
    pub revision: u64,
}

/// What a token change tells the audit trail: which token, with what
/// role (never the token itself).
#[derive(Debug, Clone)]
pub struct AuditToken(pub String);

/// What the audit trail keeps of a request until its answer: one record on
/// the `modelhub::audit` target for every write and every refused request
/// (401, 403, 429). Never a token or a secret: the identity's name.
pub struct Audit {
    method: Method,
    uri: axum::http::Uri,
    id: Option<Arc<Identity>>,
    peer: Option<Result<std::net::SocketAddr, (u32, Option<i32>)>>,
}

impl Audit {
    /// Taken once the request is authenticated.
    pub fn begin(req: &Request) -> Audit {
        Audit {
            method: req.method().clone(),
            uri: req.uri().clone(),
            id: req.extensions().get::<Arc<Identity>>().cloned(),
            peer: req.extensions().get::<Peer>().map(|p| match p {
                Peer::Tcp { remote, .. } => Ok(*remote),
                Peer::Unix { uid, pid, .. } => Err((*uid, *pid)),
            }),
        }
    }

    /// Records the answer, if it is a write's or a refusal.
    pub fn end(self, resp: &Response) {
        let Audit {
            method,
            uri,
            id,
            peer,
        } = self;
        let write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let status = resp.status();
        let denied = matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        );
        // Nothing is formatted for a record no subscriber takes.
        if (write || denied) && tracing::enabled!(target: "modelhub::audit", tracing::Level::INFO) {
            let note = resp.extensions().get::<AuditNote>().copied();
            let token = resp.extensions().get::<AuditToken>().map(|t| t.0.as_str());
            let peer = peer.map(|p| match p {
                Ok(remote) => remote.to_string(),
                Err((uid, Some(pid))) => format!("unix uid {uid} pid {pid}"),
                Err((uid, None)) => format!("unix uid {uid}"),
            });
            let revision = note.map(|n| n.revision).or_else(|| {
                resp.headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
            });
            let (identity, role) = match &id {
                Some(id) => (id.name.as_str(), id.role.name()),
                None => ("-", "-"),
            };
            let time = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            tracing::info!(
                target: "modelhub::audit",
                time = %time,
                identity,
                role,
                peer = peer.as_deref(),
                verb = %method,
                path = %masked(uri.path()),
                documents = note.map(|n| n.documents),
                token,
                status = status.as_u16(),
                resource_version = revision.filter(|r| *r > 0 && status.is_success()),
                "audit"
            );
        }
    }
}

/// The path with any segment that looks like a token masked (a token
/// pasted into a URL by mistake must not reach the audit trail).
fn masked(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(token::PREFIX) {
        return path.into();
    }
    path.split('/')
        .map(|seg| {
            if seg.starts_with(token::PREFIX) {
                "mh_..."
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
        .into()
}

/// Keeps the token index current with tokens changed through other
/// replicas sharing the store.
pub async fn refresh_loop(state: AppState) {
    let mut tick = tokio::time::interval(TOKEN_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.auth.refresh(&state.store).await {
            Ok(()) | Err(StoreError::Closed) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the tokens"),
        }
    }
}

/// A token's name: what object names allow, at most 63 bytes (it is also
/// a certificate CN).
pub fn check_token_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name != "anonymous"
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Reason::Invalid,
                format!(
                    "token name {name:?}: 1 to 63 characters, letters, digits, '-' and '.', \
                     starting with a letter or digit (not `anonymous`)"
                ),
            )
        })
    }
}

/// A token as created: for tests of the index without a store.
#[cfg(test)]
fn token(name: &str, secret: &token::Secret, role: crate::auth::Role) -> Token {
    Token {
        name: name.into(),
        digest: secret.digest(),
        role,
        realms: None,
        privileged: false,
        created: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn auth(tokens: &[Token], posture: Posture) -> Auth {
        let mut index = Index {
            enabled: !tokens.is_empty(),
            ..Index::default()
        };
        for t in tokens {
            let id = Arc::new(t.identity(Source::Token));
            index.by_name.insert(t.name.clone(), id.clone());
            index.by_digest.insert(t.digest, id);
        }
        Auth {
            index: RwLock::new(Arc::new(index)),
            generation: Default::default(),
            posture,
            server_uid: 1000,
            anonymous: Arc::new(Identity::anonymous()),
        }
    }

    #[test]
    fn credentials_in_order() {
        let s = token::Secret::generate();
        let a = auth(&[token("ci", &s, Role::Writer)], Posture::default());
        let header = format!("Bearer {}", s.expose());
        let id = a.identify(Some(header.as_bytes()), None).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("ci", Role::Writer));
        let lower = format!("bearer {}", s.expose());
        assert!(a.identify(Some(lower.as_bytes()), None).is_ok());
        assert!(a.identify(Some(b"Bearer mh_nope"), None).is_err());
        assert!(a.identify(Some(b"Basic eDp5"), None).is_err());
        assert!(a.identify(Some(b"Bearer "), None).is_err());
        assert!(a.identify(Some(&[0xff, 0xfe]), None).is_err());
        // A bad token is not rescued by the peer.
        let root = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert!(a.identify(Some(b"Bearer x"), Some(&root)).is_err());
        assert_eq!(a.identify(None, Some(&root)).unwrap().role, Role::Admin);
        let own = Peer::Unix {
            uid: 1000,
            gid: 0,
            pid: None,
        };
        assert_eq!(a.identify(None, Some(&own)).unwrap().name, "uid:1000");
        let other = Peer::Unix {
            uid: 1001,
            gid: 0,
            pid: None,
        };
        assert!(a.identify(None, Some(&other)).is_err());
        let tcp = |cn: Option<&str>| Peer::Tcp {
            remote: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            client_cn: cn.map(str::to_string),
        };
        let id = a.identify(None, Some(&tcp(Some("ci")))).unwrap();
        assert_eq!((id.name.as_str(), &id.source), ("ci", &Source::Certificate));
        assert!(a.identify(None, Some(&tcp(Some("who")))).is_err());
        // A token exists: no anonymous access, even on loopback.
        assert!(a.identify(None, Some(&tcp(None))).is_err());
    }

    #[test]
    fn anonymous_only_without_tokens_and_on_loopback() {
        let loopback = Posture {
            loopback_only: true,
            ..Posture::default()
        };
        assert!(auth(&[], loopback).anonymous_allowed());
        assert!(!auth(&[], Posture::default()).anonymous_allowed());
        let insecure = Posture {
            insecure_allow_anonymous: true,
            ..Posture::default()
        };
        assert!(auth(&[], insecure).anonymous_allowed());
        let s = token::Secret::generate();
        assert!(!auth(&[token("a", &s, Role::Reader)], loopback).anonymous_allowed());
        assert!(!auth(&[token("a", &s, Role::Reader)], insecure).anonymous_allowed());
    }

    #[test]
    fn realm_rules() {
        use Access::*;
        use RealmFrom::*;
        let mut id = Identity::anonymous();
        id.role = Role::Writer;
        id.realms = Some(["a".to_string()].into());
        let ok = |id: &Identity, access, from, m: Method, realm: Option<&str>| {
            rule(id, access, from, &m, realm).is_ok()
        };
        assert!(ok(&id, Read, Path, Method::GET, Some("a")));
        assert!(!ok(&id, Read, Path, Method::GET, Some("b")));
        assert!(!ok(&id, Read, AllRealms, Method::GET, None));
        assert!(!ok(&id, WriteSpec, AllRealms, Method::POST, None));
        assert!(ok(&id, Read, Query, Method::GET, Some("a")));
        assert!(!ok(&id, Read, Query, Method::GET, Some("b")));
        assert!(!ok(&id, Read, Query, Method::GET, None));
        assert!(ok(&id, WriteSpec, Documents, Method::POST, None));
        assert!(ok(&id, Metrics, Server, Method::GET, None));
        id.role = Role::Admin;
        assert!(!ok(&id, Admin, Server, Method::GET, None));
        id.role = Role::Reader;
        assert!(!ok(&id, WriteSpec, Path, Method::PUT, Some("a")));
        assert!(!ok(&id, WriteStatus, Path, Method::PUT, Some("a")));
        id.role = Role::Controller;
        assert!(ok(&id, WriteStatus, Path, Method::PUT, Some("a")));
        assert!(!ok(&id, WriteSpec, Documents, Method::POST, None));
    }

    #[test]
    fn a_stale_read_never_brings_a_revoked_token_back() {
        use crate::auth::token::Tokens;
        let s = token::Secret::generate();
        let t = token("ci", &s, Role::Writer);
        let a = auth(std::slice::from_ref(&t), Posture::default());
        let header = format!("Bearer {}", s.expose());
        // A periodic read starts, sees the token; meanwhile it is revoked.
        let started = a.generation.load(std::sync::atomic::Ordering::SeqCst);
        let stale = Tokens {
            items: vec![t.clone()],
            enabled: true,
        };
        a.changed();
        a.forget(&t);
        a.install(started, stale);
        assert!(a.identify(Some(header.as_bytes()), None).is_err());
        // A read that started after the change is installed.
        let now = a.generation.load(std::sync::atomic::Ordering::SeqCst);
        a.install(now, Tokens::default());
        assert!(a.any_token(), "anonymous access never comes back");
        let loopback = Posture {
            loopback_only: true,
            ..Posture::default()
        };
        let b = auth(std::slice::from_ref(&t), loopback);
        b.install(0, Tokens::default());
        assert!(!b.anonymous_allowed());
    }

    #[test]
    fn token_like_path_segments_are_masked() {
        assert_eq!(masked("/api/v1beta1/realms/a"), "/api/v1beta1/realms/a");
        assert_eq!(
            masked("/api/v1beta1/tokens/mh_0123abcd"),
            "/api/v1beta1/tokens/mh_..."
        );
    }

    #[test]
    fn token_names() {
        for good in ["ci", "kukeon-daemon", "a.b", "x1"] {
            assert!(check_token_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a/b", "ä", "anonymous", &"x".repeat(64)] {
            assert!(check_token_name(bad).is_err(), "{bad}");
        }
    }
}
