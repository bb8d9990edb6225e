//! The HTTP layer: routes, extraction, rendering and the problem+json
//! mapping. Handlers translate with [`crate::api`] and call the
//! [`crate::store::Store`] facade; nothing below this module knows axum.

pub mod apply;
pub mod body;
pub mod cache;
pub mod conn;
pub mod error;
pub mod handlers;
mod metrics;
pub mod openapi;
pub mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

pub use error::{ApiError, Problem, Reason};
pub use metrics::Metrics;

use body::{Body, Names, Query};
use handlers::{ItemParams, ListParams, Part};

use crate::api::v1beta1::paths::{BASE, collection_route, item_route};
use crate::model::Kind;
use crate::store::Store;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// Watch fan-out.
    pub hub: Arc<crate::watch::Hub>,
    /// Rendered documents for lists.
    pub docs: Arc<cache::DocCache>,
    /// Rendered whole lists (fed by the store's commit hook).
    pub lists: Arc<cache::ListCache>,
}

fn collection(kind: Kind) -> MethodRouter<AppState> {
    get(
        move |State(s): State<AppState>, Names(n), Query(p): Query<ListParams>, h: HeaderMap| {
            handlers::list_objects(s, kind, n, p, h)
        },
    )
    .post(
        move |State(s): State<AppState>, Names(n), h: HeaderMap, b: Body| {
            handlers::create_object(s, kind, n, h, b)
        },
    )
}

fn item(kind: Kind) -> MethodRouter<AppState> {
    get(
        move |State(s): State<AppState>, Names(n), Query(p): Query<ItemParams>, h: HeaderMap| {
            handlers::get_object(s, kind, n, p, h)
        },
    )
    .put(
        move |State(s): State<AppState>, Names(n), h: HeaderMap, b: Body| {
            handlers::replace_object(s, kind, Part::Main, n, h, b)
        },
    )
    .patch(
        move |State(s): State<AppState>, Names(n), h: HeaderMap, b: Body| {
            handlers::patch_object(s, kind, Part::Main, n, h, b)
        },
    )
    .delete(
        move |State(s): State<AppState>, Names(n), Query(p): Query<ItemParams>, h: HeaderMap| {
            handlers::delete_object(s, kind, n, p, h)
        },
    )
}

fn status(kind: Kind) -> MethodRouter<AppState> {
    get(move |State(s): State<AppState>, Names(n), h: HeaderMap| {
        handlers::get_object(s, kind, n, ItemParams::default(), h)
    })
    .put(
        move |State(s): State<AppState>, Names(n), h: HeaderMap, b: Body| {
            handlers::replace_object(s, kind, Part::Status, n, h, b)
        },
    )
    .patch(
        move |State(s): State<AppState>, Names(n), h: HeaderMap, b: Body| {
            handlers::patch_object(s, kind, Part::Status, n, h, b)
        },
    )
}

fn cross_scope(kind: Kind) -> MethodRouter<AppState> {
    get(
        move |State(s): State<AppState>, Query(p): Query<ListParams>, h: HeaderMap| {
            handlers::list_objects(s, kind, Vec::new(), p, h)
        },
    )
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for kind in Kind::ALL {
        router = router
            .route(&collection_route(kind), collection(kind))
            .route(&item_route(kind), item(kind))
            .route(&format!("{}/status", item_route(kind)), status(kind));
        if kind != Kind::Realm {
            router = router.route(&format!("{BASE}/{}", kind.plural()), cross_scope(kind));
        }
    }
    router
        .route(
            &format!("{BASE}/watch"),
            get(
                |State(s): State<AppState>, Query(p): Query<watch::WatchParams>, h: HeaderMap| {
                    watch::watch_all(s, p, h)
                },
            ),
        )
        .route(
            &format!("{BASE}/apply"),
            axum::routing::post(
                |State(s): State<AppState>,
                 Query(p): Query<apply::ApplyParams>,
                 h: HeaderMap,
                 b: Body| { apply::apply(s, p, h, b) },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.store.ready().await {
        "ready\n".into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Internal,
            "database not readable",
        )
        .into_response()
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
