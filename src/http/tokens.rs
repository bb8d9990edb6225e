//! Token management, admin only: create (the token is shown once), list,
//! revoke. Each change reloads the authenticator, so that a revoked token
//! is refused from the next request on.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{AuditNote, AuditToken, check_token_name};
use super::body::Body;
use super::error::ApiError;
use crate::api::v1beta1::tokens::{TokenCreated, TokenInfo, TokenList, TokenRequest};
use crate::auth::Role;
use crate::auth::token::{Secret, Token};
use crate::model::validate_name;
use crate::store::Backend;

/// `POST /api/v1beta1/tokens`.
pub async fn create(State(s): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let req: TokenRequest = {
        let de = &mut serde_json::Deserializer::from_slice(&body.bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ApiError::bad_field(
                if field == "." { "body".into() } else { field },
                format!("not a token request: {}", e.inner()),
            )
        })?
    };
    check_token_name(&req.name)?;
    let role = Role::parse(&req.role).ok_or_else(|| ApiError {
        field: Some("role".into()),
        ..ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            super::Reason::Invalid,
            format!(
                "unknown role {:?} (admin, writer, controller, reader)",
                req.role
            ),
        )
    })?;
    let realms = match req.realms {
        None => None,
        Some(list) => {
            let mut set = BTreeSet::new();
            for (i, r) in list.into_iter().enumerate() {
                validate_name(format_args!("realms[{i}]"), &r)?;
                set.insert(r);
            }
            if set.is_empty() {
                return Err(ApiError {
                    field: Some("realms".into()),
                    ..ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        super::Reason::Invalid,
                        "realms must name at least one realm (leave it out for every realm)",
                    )
                });
            }
            Some(set)
        }
    };
    let secret = Secret::generate();
    let token = Token {
        name: req.name,
        digest: secret.digest(),
        role,
        realms,
        privileged: req.privileged,
        created: time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
    };
    let info = TokenInfo::from(&token);
    let audited = AuditToken(audit_token(&info));
    let created = s.store.create_token(token).await;
    s.auth.changed();
    reload(&s).await;
    created?;
    let mut resp = (
        StatusCode::CREATED,
        Json(TokenCreated {
            info,
            token: secret.expose().to_string(),
        }),
    )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp.extensions_mut().insert(AuditNote {
        documents: 1,
        revision: 0,
    });
    resp.extensions_mut().insert(audited);
    Ok(resp)
}

/// `GET /api/v1beta1/tokens`.
pub async fn list(State(s): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    let tokens = s.store.tokens().await?;
    Ok(Json(TokenList {
        items: tokens.items.iter().map(TokenInfo::from).collect(),
    }))
}

/// `DELETE /api/v1beta1/tokens/{name}`.
pub async fn revoke(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    // A name never holds `_`: a token pasted here by mistake is refused
    // before anything (the audit trail masks it in the path).
    check_token_name(&name)?;
    let revoked = s.store.revoke_token(&name).await;
    s.auth.changed();
    if let Ok(old) = &revoked {
        s.auth.forget(old);
    }
    reload(&s).await;
    let old = revoked?;
    let info = TokenInfo::from(&old);
    let mut resp = Json(&info).into_response();
    resp.extensions_mut().insert(AuditToken(audit_token(&info)));
    Ok(resp)
}

/// How the audit trail names a token: name, role, realms, grant.
fn audit_token(t: &TokenInfo) -> String {
    format!(
        "{} role={} realms={} privileged={}",
        t.name,
        t.role,
        t.realms
            .as_ref()
            .map_or_else(|| "*".into(), |r| r.join(",")),
        t.privileged
    )
}

/// Reloads the authenticator after a change (a failed reload is retried
/// by the periodic refresh; until then a revoked token would still be
/// accepted, so it is logged loudly).
async fn reload(s: &AppState) {
    if let Err(e) = s.auth.refresh(&s.store).await {
        tracing::error!(error = %e, "could not reload the tokens after a change");
    }
}
