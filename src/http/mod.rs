//! The HTTP layer: the route table ([`routes`]) and the router built from
//! it, request extraction ([`body`]), handlers, rendering and its caches,
//! the OpenAPI document ([`openapi`]), problem+json responses
//! ([`error`]), the backup stream ([`backup`]), the console's assets
//! ([`ui`]) and the listeners and connections ([`listen`]). Wire shapes, URL templates and which failure gets which
//! status come from [`crate::api::v1beta1`]; handlers call the
//! [`crate::store::Store`] facade.

pub mod apply;
pub mod auth;
pub mod backup;
pub mod body;
pub mod cache;
pub mod conn;
pub mod error;
pub mod handlers;
pub mod limits;
pub mod listen;
mod metrics;
pub mod openapi;
#[cfg(test)]
mod policy_tests;
pub mod routes;
pub mod tokens;
pub mod ui;
pub mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use error::{ApiError, Problem, Reason};
pub use metrics::Metrics;

use crate::store::{Backend, RefusedCause, Store};

/// Shared state of every handler: one pointer, so that each layer and
/// handler that takes it costs one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a server made of `parts`.
    pub fn new(parts: Shared) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// Watch fan-out.
    pub hub: Arc<crate::watch::Hub>,
    /// Rendered documents, by key and revision (lists and GETs).
    pub docs: Arc<cache::DocCache>,
    /// Rendered whole lists (fed by the store's change feed).
    pub lists: Arc<cache::ListCache>,
    /// The authenticator (tokens, anonymous posture).
    pub auth: Arc<auth::Auth>,
    /// The limits against hostile or greedy clients, and what is held
    /// against them.
    pub limits: Arc<limits::Gate>,
}

/// The whole application: the routes of [`routes::table`], the Swagger UI
/// with the document it shows, the console ([`ui`]), and the problem+json
/// fallbacks.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in routes::table() {
        let guard = auth::Guard {
            state: state.clone(),
            access: route.access,
            realm_from: route.realm_from(),
        };
        router = router.route(
            &route.path,
            route
                .handler
                .route_layer(axum::middleware::from_fn_with_state(guard, auth::authorize)),
        );
    }
    router
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/swagger-ui")
                .url("/openapi.json", openapi::document().clone())
                .config(
                    utoipa_swagger_ui::Config::new(["/openapi.json"])
                        .validator_url("none")
                        .try_it_out_enabled(true)
                        .display_operation_id(true),
                ),
        )
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), front))
        // The span names the path, never the query (a token pasted into
        // a URL must not reach the log).
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!(
                        "request",
                        method = %req.method(),
                        path = req.uri().path(),
                        version = ?req.version()
                    )
                },
            ),
        )
        .with_state(state)
}

/// The router's one front layer, in this order: authentication (the
/// identity, or why there is none; it refuses nothing), the audit's record
/// of the request, the limits (counted per identity, so after
/// authentication; their refusals are audited), then the route (whose
/// `authorize` answers 401/403); on the way out the audit record and the
/// response counters. One layer rather than four: each `from_fn` layer
/// costs a boxed future and a clone of the state per request.
async fn front(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let arrived = std::time::Instant::now();
    let slot = s.metrics.route_slot(
        req.method(),
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str()),
    );
    auth::authenticate(&s, &mut req);
    let audit = auth::Audit::begin(&req);
    let resp = limits::limit(&s, req, next).await;
    audit.end(&resp);
    metrics::count(&s, &resp, slot, arrived.elapsed());
    resp
}

/// Readiness, check by check (as kube-apiserver's `/readyz?verbose`):
/// 200 while reads work, so that reads and deletes keep being routed here
/// while writes are refused; `/readyz/writes` tells those apart.
async fn readyz(State(s): State<AppState>) -> Response {
    let reads = s.store.ready().await;
    let mut out = String::new();
    if reads {
        out.push_str("[+]reads ok\n");
    } else if let Some(e) = s.store.feed_error() {
        out.push_str(&format!(
            "[-]feed failed: this replica does not follow the cluster's changes: {e}\n"
        ));
    } else {
        out.push_str("[-]reads failed: the database does not answer (etcd: no quorum)\n");
    }
    match s.store.writes_refused() {
        None => out.push_str("[+]writes ok\n"),
        Some(r) => out.push_str(&format!(
            "[-]writes refused ({}): {}\n",
            r.cause.name(),
            r.message
        )),
    }
    if reads {
        out.push_str("readyz check passed\n");
        out.into_response()
    } else {
        out.push_str("readyz check failed\n");
        (StatusCode::SERVICE_UNAVAILABLE, out).into_response()
    }
}

/// `/readyz/reads`: whether the database answers reads.
async fn readyz_reads(State(s): State<AppState>) -> Response {
    if s.store.ready().await {
        "ok\n".into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Unavailable,
            "the database does not answer reads",
        )
        .into_response()
    }
}

/// `/readyz/writes`: 503 with the cause while writes are refused.
async fn readyz_writes(State(s): State<AppState>) -> Response {
    match s.store.writes_refused() {
        None => "ok\n".into_response(),
        Some(r) => {
            let reason = match r.cause {
                RefusedCause::LowSpace
                | RefusedCause::QuotaExceeded
                | RefusedCause::StorageFull => Reason::InsufficientStorage,
                RefusedCause::StorageFailed => Reason::Unavailable,
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason, r.message).into_response()
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Reason::NotFound,
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Reason::BadRequest,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
