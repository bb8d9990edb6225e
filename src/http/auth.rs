//! Authentication: every request gets an [`Identity`] (a request
//! extension, `Arc<Identity>`) before any handler runs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::auth::Identity;

/// Middleware attaching the request's identity.
pub async fn authenticate(State(_s): State<AppState>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Arc::new(Identity::anonymous()));
    next.run(req).await
}
