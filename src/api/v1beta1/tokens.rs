//! The wire shapes of token management (`/api/v1beta1/tokens`, admin
//! only) and their translation from [`crate::auth::token::Token`]. A token
//! string appears in one answer only: the one creating it.

use serde::{Deserialize, Serialize};

use super::convert::format_time;
use crate::auth::token::Token;

/// `POST /api/v1beta1/tokens`: what the new token may do.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    /// Unique name (1-63 letters, digits, `-`, `.`); also the CN a client
    /// certificate presents to authenticate as this token.
    pub name: String,
    /// `admin`, `writer`, `controller` or `reader`.
    pub role: String,
    /// Realms the token is limited to; absent: every realm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realms: Option<Vec<String>>,
    /// Whether it may set privileged fields (admins always may).
    #[serde(default)]
    pub privileged: bool,
}

/// A token, without its secret.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Realms it is limited to; absent: every realm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realms: Option<Vec<String>>,
    /// Whether it may set privileged fields.
    pub privileged: bool,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// The answer to a create: the token, shown this once (its `Debug`
/// hides it).
#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    /// The token as stored.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token: `Authorization: Bearer <token>`. Only its digest
    /// is kept; it cannot be shown again.
    pub token: String,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("info", &self.info)
            .field("token", &"..")
            .finish()
    }
}

/// `GET /api/v1beta1/tokens`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Every token, by name.
    pub items: Vec<TokenInfo>,
}

impl From<&Token> for TokenInfo {
    fn from(t: &Token) -> TokenInfo {
        TokenInfo {
            name: t.name.clone(),
            role: t.role.name().to_string(),
            realms: t.realms.as_ref().map(|r| r.iter().cloned().collect()),
            privileged: t.privileged,
            created: format_time(Some(t.created)),
        }
    }
}
