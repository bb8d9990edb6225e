//! The route table: every documented route once, with its method, path
//! template, kind, the access it needs, its handler and its OpenAPI
//! operation. The router ([`super::router`]) and the document's `paths`
//! ([`super::openapi::document`]) are both built from [`table`], so no route
//! is served without being documented, or documented without being served.
//!
//! Handlers are written once for every kind ([`super::handlers`]); the
//! kind is fixed here, when the table is built.
//!
//! Outside the table, and so outside the document: the document itself
//! (`/openapi.json`), Swagger UI (`/swagger-ui`) and the console's assets
//! (`/ui/`, [`super::ui`]), all public and read-only, added by
//! [`super::router`]. A per-route rule keyed by
//! [`Access`] must treat them as `Public`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::{HeaderMap, Method};
use axum::routing::{MethodFilter, MethodRouter};
use utoipa::openapi::path::Operation;

use super::body::{Body, Names, Query};
use super::handlers::{self, ItemParams, ListParams, Part};
use super::openapi as doc;
use super::{AppState, apply, backup, metrics, tokens, watch};
use crate::api::v1beta1::paths::{
    apply_route, backup_route, collection_route, cross_scope_route, finalizers_route, item_route,
    status_route, token_route, tokens_route, watch_route,
};
use crate::auth::Identity;
use crate::model::Kind;

pub use crate::auth::Access;

/// One route: a method on a path template, what serves it and how the
/// OpenAPI document describes it.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path template (`/api/v1beta1/realms/{realm}`), as axum and
    /// OpenAPI both spell it.
    pub path: String,
    /// The kind of the objects it serves, if one.
    pub kind: Option<Kind>,
    /// The access it needs.
    pub access: Access,
    /// The handler, for this method only.
    pub(super) handler: MethodRouter<AppState>,
    /// The OpenAPI operation.
    pub(super) operation: Operation,
}

impl Route {
    fn new<H, T>(
        method: Method,
        path: String,
        kind: Option<Kind>,
        access: Access,
        handler: H,
        operation: Operation,
    ) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        Route {
            method,
            path,
            kind,
            access,
            handler: axum::routing::on(filter, handler),
            operation,
        }
    }
}

/// Where a request on a route names the realm it reaches, for identities
/// limited to realms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealmFrom {
    /// Its path (`/realms/{realm}/...`).
    Path,
    /// The `realm=` query parameter: the cross-scope lists and `/watch`.
    Query,
    /// Each document of the body: apply (checked by its handler).
    Documents,
    /// Every realm: the realms' collection (list, watch, create).
    AllRealms,
    /// None: the server's own routes (probes, metrics, tokens, backup).
    Server,
}

impl Route {
    /// Where a request on this route names its realm.
    pub fn realm_from(&self) -> RealmFrom {
        if self.path == apply_route() {
            RealmFrom::Documents
        } else if self.path == watch_route()
            || self
                .kind
                .is_some_and(|k| k != Kind::Realm && self.path == cross_scope_route(k))
        {
            RealmFrom::Query
        } else if self.path.contains("{realm}") {
            RealmFrom::Path
        } else if self.kind == Some(Kind::Realm) {
            RealmFrom::AllRealms
        } else {
            RealmFrom::Server
        }
    }
}

/// Every documented route, in the order of the document's `paths`.
pub fn table() -> Vec<Route> {
    let mut routes: Vec<Route> = Kind::ALL.into_iter().flat_map(kind_routes).collect();
    routes.extend([
        Route::new(
            Method::GET,
            watch_route(),
            None,
            Access::Read,
            |State(s): State<AppState>, Query(p): Query<watch::WatchParams>, h: HeaderMap| {
                watch::watch_all(s, p, h)
            },
            doc::watch_operation(),
        ),
        Route::new(
            Method::POST,
            apply_route(),
            None,
            Access::WriteSpec,
            |State(s): State<AppState>,
             Extension(id): Extension<Arc<Identity>>,
             Query(p): Query<apply::ApplyParams>,
             h: HeaderMap,
             b: Body| { apply::apply(s, id, p, h, b) },
            doc::apply_operation(),
        ),
        Route::new(
            Method::GET,
            "/healthz".into(),
            None,
            Access::Public,
            || async { "ok\n" },
            doc::healthz_operation(),
        ),
        Route::new(
            Method::GET,
            "/readyz".into(),
            None,
            Access::Public,
            super::readyz,
            doc::readyz_operation(),
        ),
        Route::new(
            Method::GET,
            "/readyz/reads".into(),
            None,
            Access::Public,
            super::readyz_reads,
            doc::readyz_check_operation("reads", "Readiness of reads (the database answers)"),
        ),
        Route::new(
            Method::GET,
            "/readyz/writes".into(),
            None,
            Access::Public,
            super::readyz_writes,
            doc::readyz_check_operation(
                "writes",
                "Readiness of writes (503 with the cause while writes are refused)",
            ),
        ),
        Route::new(
            Method::GET,
            "/metrics".into(),
            None,
            Access::Metrics,
            metrics::render,
            doc::metrics_operation(),
        ),
        Route::new(
            Method::POST,
            tokens_route(),
            None,
            Access::Admin,
            tokens::create,
            doc::token_create_operation(),
        ),
        Route::new(
            Method::GET,
            tokens_route(),
            None,
            Access::Admin,
            tokens::list,
            doc::token_list_operation(),
        ),
        Route::new(
            Method::DELETE,
            token_route(),
            None,
            Access::Admin,
            tokens::revoke,
            doc::token_revoke_operation(),
        ),
        Route::new(
            Method::GET,
            backup_route(),
            None,
            Access::Admin,
            backup::backup,
            doc::backup_operation(),
        ),
    ]);
    routes
}

/// The routes of one kind: its collection, its objects, their status and,
/// below realms, the cross-scope list.
fn kind_routes(kind: Kind) -> Vec<Route> {
    let k = Some(kind);
    let mut routes = vec![
        Route::new(
            Method::GET,
            collection_route(kind),
            k,
            Access::Read,
            move |State(s): State<AppState>,
                  Names(n),
                  Query(p): Query<ListParams>,
                  h: HeaderMap| { handlers::list_objects(s, kind, n, p, h) },
            doc::list_operation(kind),
        ),
        Route::new(
            Method::POST,
            collection_route(kind),
            k,
            Access::WriteSpec,
            move |State(s): State<AppState>,
                  Extension(id): Extension<Arc<Identity>>,
                  Names(n),
                  h: HeaderMap,
                  b: Body| { handlers::create_object(s, id, kind, n, h, b) },
            doc::create_operation(kind),
        ),
        Route::new(
            Method::GET,
            item_route(kind),
            k,
            Access::Read,
            move |State(s): State<AppState>,
                  Names(n),
                  Query(p): Query<ItemParams>,
                  h: HeaderMap| { handlers::get_object(s, kind, n, p, h) },
            doc::get_operation(kind),
        ),
        Route::new(
            Method::PUT,
            item_route(kind),
            k,
            Access::WriteSpec,
            move |State(s): State<AppState>,
                  Extension(id): Extension<Arc<Identity>>,
                  Names(n),
                  h: HeaderMap,
                  b: Body| {
                handlers::replace_object(s, id, kind, Part::Main, n, h, b)
            },
            doc::replace_operation(kind, doc::Sub::Main),
        ),
        Route::new(
            Method::PATCH,
            item_route(kind),
            k,
            Access::WriteSpec,
            move |State(s): State<AppState>,
                  Extension(id): Extension<Arc<Identity>>,
                  Names(n),
                  h: HeaderMap,
                  b: Body| { handlers::patch_object(s, id, kind, Part::Main, n, h, b) },
            doc::patch_operation(kind, doc::Sub::Main),
        ),
        Route::new(
            Method::DELETE,
            item_route(kind),
            k,
            Access::WriteSpec,
            move |State(s): State<AppState>,
                  Names(n),
                  Query(p): Query<ItemParams>,
                  h: HeaderMap| { handlers::delete_object(s, kind, n, p, h) },
            doc::delete_operation(kind),
        ),
        Route::new(
            Method::GET,
            status_route(kind),
            k,
            Access::Read,
            move |State(s): State<AppState>, Names(n), h: HeaderMap| {
                handlers::get_object(s, kind, n, ItemParams::default(), h)
            },
            doc::get_status_operation(kind),
        ),
    ];
    for (route, part, access, sub) in [
        (
            status_route(kind),
            Part::Status,
            Access::WriteStatus,
            doc::Sub::Status,
        ),
        (
            finalizers_route(kind),
            Part::Finalizers,
            Access::WriteFinalizers,
            doc::Sub::Finalizers,
        ),
    ] {
        routes.push(Route::new(
            Method::PUT,
            route.clone(),
            k,
            access,
            move |State(s): State<AppState>,
                  Extension(id): Extension<Arc<Identity>>,
                  Names(n),
                  h: HeaderMap,
                  b: Body| { handlers::replace_object(s, id, kind, part, n, h, b) },
            doc::replace_operation(kind, sub),
        ));
        routes.push(Route::new(
            Method::PATCH,
            route,
            k,
            access,
            move |State(s): State<AppState>,
                  Extension(id): Extension<Arc<Identity>>,
                  Names(n),
                  h: HeaderMap,
                  b: Body| { handlers::patch_object(s, id, kind, part, n, h, b) },
            doc::patch_operation(kind, sub),
        ));
    }
    if kind != Kind::Realm {
        routes.push(Route::new(
            Method::GET,
            cross_scope_route(kind),
            k,
            Access::Read,
            move |State(s): State<AppState>, Query(p): Query<ListParams>, h: HeaderMap| {
                handlers::list_objects(s, kind, Vec::new(), p, h)
            },
            doc::list_all_operation(kind),
        ));
    }
    routes
}
