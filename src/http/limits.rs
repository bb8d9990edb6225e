//! Limits against hostile, broken or greedy clients, answered before any
//! work is done: the request's shape (URL length here; body size, UTF-8,
//! JSON depth in [`super::body`]; documents per apply in
//! [`super::apply`]), and caps on what one client may hold at once:
//! requests in flight and watch streams, in total and per identity.
//!
//! Requests in flight share one cap, but writers and readers may fill
//! only part of it: the rest ([`Limits::reserved_in_flight`]) is kept for
//! admin and controller identities, so that a flood of writer requests
//! never queues the reconciler or an operator behind it. Each identity
//! also has a cap of its own. Watch streams are counted apart (they are
//! long-lived): a watch holds its permit for as long as its response body
//! lives, and gives it back when the stream ends or the client leaves.
//! Probes, metrics and the OpenAPI document are never limited.
//!
//! Every refusal is a 429 `TooManyRequests` naming the cap and its flag;
//! nothing was done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::body::Held;
use super::error::{ApiError, Reason};
use crate::auth::{Identity, Role};

/// The configured limits (each a `serve` flag; see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (413).
    pub max_body_bytes: usize,
    /// Longest path and query, in bytes (414).
    pub max_uri_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON body (400).
    pub max_json_depth: usize,
    /// Most documents in one apply (413).
    pub max_apply_documents: usize,
    /// Requests in flight at once, watch streams and probes aside (429).
    pub max_in_flight: usize,
    /// Requests in flight at once from one identity (429).
    pub max_in_flight_per_identity: usize,
    /// Watch streams open at once (429).
    pub max_watches: usize,
    /// Watch streams open at once for one identity (429).
    pub max_watches_per_identity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_json_depth: 64,
            max_apply_documents: 1000,
            max_in_flight: 1024,
            max_in_flight_per_identity: 256,
            max_watches: 10_000,
            max_watches_per_identity: 1000,
        }
    }
}

impl Limits {
    /// The part of [`Limits::max_in_flight`] that only admin and
    /// controller identities may use: a quarter.
    pub fn reserved_in_flight(&self) -> usize {
        self.max_in_flight / 4
    }
}

/// Which share of the in-flight cap a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Admins and controllers: the whole cap.
    Priority,
    /// Writers and readers: the cap less the reserve.
    Normal,
}

impl Lane {
    /// The lane of a role.
    pub fn of(role: Role) -> Lane {
        match role {
            Role::Admin | Role::Controller => Lane::Priority,
            Role::Writer | Role::Reader => Lane::Normal,
        }
    }
}

/// Which cap refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The total was reached.
    Total(usize),
    /// The identity's own cap was reached.
    Identity(usize),
}

/// Holders counted in total and per identity.
#[derive(Debug, Default)]
pub struct Counter {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by: HashMap<Arc<str>, usize>,
}

impl Counter {
    /// Takes one place for `who` if fewer than `total` are held in all and
    /// fewer than `per_identity` by `who`.
    pub fn acquire(
        self: &Arc<Self>,
        who: &str,
        total: usize,
        per_identity: usize,
    ) -> Result<Permit, Full> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= total {
            return Err(Full::Total(total));
        }
        let key: Arc<str> = match c.by.get_key_value(who) {
            Some((_, n)) if *n >= per_identity => return Err(Full::Identity(per_identity)),
            Some((k, _)) => k.clone(),
            None => Arc::from(who),
        };
        c.total += 1;
        *c.by.entry(key.clone()).or_insert(0) += 1;
        Ok(Permit {
            counter: self.clone(),
            who: key,
        })
    }

    /// Places held in all, and by `who`.
    pub fn held(&self, who: &str) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (c.total, c.by.get(who).copied().unwrap_or(0))
    }
}

/// One place in a [`Counter`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    counter: Arc<Counter>,
    who: Arc<str>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self
            .counter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.by.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                c.by.remove(&self.who);
            }
        }
    }
}

/// The limits and what is held against them.
#[derive(Debug, Default)]
pub struct Gate {
    /// The configured limits.
    pub limits: Limits,
    requests: Arc<Counter>,
    watches: Arc<Counter>,
    /// Refusals by [`Cap`].
    refused: [AtomicU64; Cap::ALL.len()],
}

/// The caps a request can be refused by, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `--max-requests-in-flight`.
    InFlight,
    /// `--max-requests-in-flight-per-identity`.
    InFlightPerIdentity,
    /// `--max-watches`.
    Watches,
    /// `--max-watches-per-identity`.
    WatchesPerIdentity,
}

impl Cap {
    /// Every cap.
    pub const ALL: [Cap; 4] = [
        Cap::InFlight,
        Cap::InFlightPerIdentity,
        Cap::Watches,
        Cap::WatchesPerIdentity,
    ];

    /// Its name in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Cap::InFlight => "requests_in_flight",
            Cap::InFlightPerIdentity => "requests_in_flight_per_identity",
            Cap::Watches => "watches",
            Cap::WatchesPerIdentity => "watches_per_identity",
        }
    }
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            ..Gate::default()
        }
    }

    /// A place for one request in flight, or the 429.
    pub fn request(&self, who: &Identity) -> Result<Permit, ApiError> {
        let l = &self.limits;
        let total = match Lane::of(who.role) {
            Lane::Priority => l.max_in_flight,
            Lane::Normal => l.max_in_flight - l.reserved_in_flight(),
        };
        self.requests
            .acquire(&who.name, total, l.max_in_flight_per_identity)
            .map_err(|full| match full {
                Full::Total(_) => self.refuse(
                    Cap::InFlight,
                    format!(
                        "too many requests in flight (cap {} for role {}, --max-requests-in-flight \
                     {}); retry later",
                        total, who.role, l.max_in_flight
                    ),
                ),
                Full::Identity(n) => self.refuse(
                    Cap::InFlightPerIdentity,
                    format!(
                        "too many requests in flight for {:?} (cap {n}, \
                         --max-requests-in-flight-per-identity); retry later",
                        who.name
                    ),
                ),
            })
    }

    /// A place for one watch stream, or the 429.
    pub fn watch(&self, who: &Identity) -> Result<Permit, ApiError> {
        let l = &self.limits;
        self.watches
            .acquire(&who.name, l.max_watches, l.max_watches_per_identity)
            .map_err(|full| match full {
                Full::Total(n) => self.refuse(
                    Cap::Watches,
                    format!("too many watch streams open (cap {n}, --max-watches); retry later"),
                ),
                Full::Identity(n) => self.refuse(
                    Cap::WatchesPerIdentity,
                    format!(
                        "too many watch streams open for {:?} (cap {n}, \
                         --max-watches-per-identity); close some or retry later",
                        who.name
                    ),
                ),
            })
    }

    /// Counts a refusal by `cap` and answers its 429.
    fn refuse(&self, cap: Cap, detail: String) -> ApiError {
        self.refused[cap as usize].fetch_add(1, Ordering::Relaxed);
        ApiError::too_many(detail)
    }

    /// Requests refused by `cap` so far.
    pub fn refused(&self, cap: Cap) -> u64 {
        self.refused[cap as usize].load(Ordering::Relaxed)
    }

    /// Watch streams open, in all and for `who`.
    pub fn watches_held(&self, who: &str) -> (usize, usize) {
        self.watches.held(who)
    }

    /// Requests in flight, in all and for `who`.
    pub fn requests_held(&self, who: &str) -> (usize, usize) {
        self.requests.held(who)
    }
}

/// What a request is, for the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Probes, metrics, the OpenAPI document, Swagger UI and the console's
    /// assets.
    Exempt,
    /// A watch stream.
    Watch,
    /// Anything else.
    Request,
}

fn classify(req: &Request) -> Class {
    let path = req.uri().path();
    if matches!(
        path,
        "/healthz" | "/readyz" | "/readyz/reads" | "/readyz/writes" | "/metrics" | "/openapi.json"
    ) || path == "/swagger-ui"
        || path.starts_with("/swagger-ui/")
        || path == super::ui::PREFIX
        || path.starts_with("/ui/")
    {
        return Class::Exempt;
    }
    let watch_param = req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    });
    let get = req.method() == axum::http::Method::GET;
    let watch_path = path
        .strip_prefix(crate::api::v1beta1::paths::BASE)
        .is_some_and(|rest| rest == "/watch");
    if get && (watch_param || watch_path) {
        Class::Watch
    } else {
        Class::Request
    }
}

/// Refuses an over-long URL (414), then takes a place for the request
/// (429 when none is left) and runs it. Reads the request's
/// `Arc<Identity>`, so it runs after authentication (the router's front
/// layer calls it).
pub async fn limit(s: &AppState, req: Request, next: Next) -> Response {
    let gate = &s.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > gate.limits.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            Reason::BadRequest,
            format!(
                "the request's path and query take {uri_len} bytes, over the limit of {} \
                 (--max-uri-bytes)",
                gate.limits.max_uri_bytes
            ),
        )
        .into_response();
    }
    let class = classify(&req);
    if class == Class::Exempt {
        return next.run(req).await;
    }
    // Without an identity (a bug in the layer order) the request is
    // counted as an anonymous writer, never given the reserve.
    let who = req
        .extensions()
        .get::<Arc<Identity>>()
        .cloned()
        .unwrap_or_else(|| {
            Arc::new(Identity {
                name: String::new(),
                role: Role::Writer,
                ..Identity::anonymous()
            })
        });
    let place = match class {
        Class::Watch => gate.watch(&who),
        _ => gate.request(&who),
    };
    match place {
        // Held until the response is sent: a watch until it ends, an
        // unpaged list while it streams; a client that does not read
        // keeps its place taken (until the connection's idle timeout).
        Ok(permit) => next
            .run(req)
            .await
            .map(|body| Body::new(Held::new(body, permit))),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, role: Role) -> Identity {
        Identity {
            name: name.into(),
            role,
            ..Identity::anonymous()
        }
    }

    #[test]
    fn counter_caps_total_and_identity_and_releases_on_drop() {
        let c = Arc::new(Counter::default());
        let a1 = c.acquire("a", 3, 2).unwrap();
        let _a2 = c.acquire("a", 3, 2).unwrap();
        assert_eq!(c.acquire("a", 3, 2).unwrap_err(), Full::Identity(2));
        let _b1 = c.acquire("b", 3, 2).unwrap();
        assert_eq!(c.acquire("b", 3, 2).unwrap_err(), Full::Total(3));
        assert_eq!(c.held("a"), (3, 2));
        drop(a1);
        assert_eq!(c.held("a"), (2, 1));
        let _b2 = c.acquire("b", 3, 2).unwrap();
        drop(_a2);
        assert_eq!(c.held("a"), (2, 0));
        assert!(
            !c.counts.lock().unwrap().by.contains_key("a"),
            "no key left"
        );
    }

    #[test]
    fn writers_cannot_take_the_reserve_of_admins_and_controllers() {
        let gate = Gate::new(Limits {
            max_in_flight: 8,
            max_in_flight_per_identity: 100,
            ..Limits::default()
        });
        assert_eq!(gate.limits.reserved_in_flight(), 2);
        let w = identity("w", Role::Writer);
        let r = identity("r", Role::Reader);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(gate.request(&w).unwrap());
            held.push(gate.request(&r).unwrap());
        }
        let e = gate.request(&w).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.reason, Reason::TooManyRequests);
        assert!(
            e.detail.contains("--max-requests-in-flight"),
            "{}",
            e.detail
        );
        // The reserve is there for a controller and an admin.
        held.push(gate.request(&identity("ctl", Role::Controller)).unwrap());
        held.push(gate.request(&identity("root", Role::Admin)).unwrap());
        assert!(gate.request(&identity("root", Role::Admin)).is_err());
        held.clear();
        assert_eq!(gate.requests_held("w"), (0, 0));
        assert_eq!(gate.refused(Cap::InFlight), 2);
        assert_eq!(gate.refused(Cap::InFlightPerIdentity), 0);
    }

    #[test]
    fn one_identity_cannot_take_every_place() {
        let gate = Gate::new(Limits {
            max_in_flight: 100,
            max_in_flight_per_identity: 2,
            max_watches: 100,
            max_watches_per_identity: 1,
            ..Limits::default()
        });
        let greedy = identity("greedy", Role::Admin);
        let _held = [
            gate.request(&greedy).unwrap(),
            gate.request(&greedy).unwrap(),
        ];
        let e = gate.request(&greedy).unwrap_err();
        assert!(e.detail.contains("per-identity"), "{}", e.detail);
        assert!(gate.request(&identity("other", Role::Admin)).is_ok());
        let w = gate.watch(&greedy).unwrap();
        assert!(
            gate.watch(&greedy)
                .unwrap_err()
                .detail
                .contains("--max-watches-per-identity")
        );
        drop(w);
        assert!(gate.watch(&greedy).is_ok());
    }

    #[test]
    fn classifies_probes_watches_and_requests() {
        let class = |uri: &str| classify(&Request::get(uri).body(Body::empty()).unwrap());
        for exempt in [
            "/healthz",
            "/readyz",
            "/readyz/writes",
            "/metrics",
            "/openapi.json",
        ] {
            assert_eq!(class(exempt), Class::Exempt, "{exempt}");
        }
        assert_eq!(class("/swagger-ui/index.html"), Class::Exempt);
        assert_eq!(class("/api/v1beta1/watch"), Class::Watch);
        assert_eq!(class("/api/v1beta1/realms?watch=true"), Class::Watch);
        assert_eq!(class("/api/v1beta1/realms?limit=1&watch=1"), Class::Watch);
        assert_eq!(class("/api/v1beta1/realms?watch=false"), Class::Request);
        assert_eq!(class("/api/v1beta1/realms/a"), Class::Request);
        assert_eq!(class("/healthzz"), Class::Request);
        // Only a GET is a watch.
        let post = Request::post("/api/v1beta1/realms?watch=true")
            .body(Body::empty())
            .unwrap();
        assert_eq!(classify(&post), Class::Request);
    }
}
