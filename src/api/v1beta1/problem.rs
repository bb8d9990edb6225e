//! The problem document (RFC 9457) and the API's error contract: which
//! failure, from any layer, is answered with which status, `reason` and
//! `field`. The HTTP layer renders an [`ApiError`] as an
//! `application/problem+json` response; the watch encoder sends the same
//! [`Problem`] as an ERROR event.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::DecodeError;
use crate::model::Invalid;
use crate::store::StoreError;

/// The `reason` of a problem: a stable, machine-readable cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Reason {
    /// Malformed request.
    BadRequest,
    /// No such object or route.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// A precondition failed.
    Conflict,
    /// Delete of an object with children, without cascade.
    HasChildren,
    /// The object, or an ancestor, is being deleted (it has
    /// `deletionTimestamp`): spec, labels, new finalizers and new children
    /// are refused; status writes and finalizer removals are not.
    Terminating,
    /// Valid syntax, invalid content.
    Invalid,
    /// Expired snapshot or compacted history.
    Gone,
    /// Missing or bad credentials (401, with `WWW-Authenticate: Bearer`).
    Unauthorized,
    /// A valid identity doing what it may not (403): its role, its realms
    /// or a privileged field without the grant; `field` names the field.
    Forbidden,
    /// A cap was reached (connections, watches, requests in flight, the
    /// write queue): nothing was done; retry after `Retry-After`.
    TooManyRequests,
    /// Body over the size limit.
    PayloadTooLarge,
    /// Refused for lack of space (below the free-space reserve, or the
    /// disk is full): nothing was written; deletes are still accepted.
    InsufficientStorage,
    /// Refused because the server is shutting down or recovering from a
    /// storage failure: nothing was written; retry later.
    Unavailable,
    /// Storage failed while the write was being made durable: it may or
    /// may not have been applied; read back before retrying.
    OutcomeUnknown,
    /// A server fault.
    Internal,
}

/// A problem+json body (RFC 9457).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary (the HTTP status phrase).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Machine-readable cause.
    pub reason: Reason,
    /// Wire path of the offending field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error, answered as a [`Problem`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable cause.
    pub reason: Reason,
    /// What went wrong.
    pub detail: String,
    /// Offending field.
    pub field: Option<String>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(status: StatusCode, reason: Reason, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason,
            detail: detail.into(),
            field: None,
        }
    }

    /// A 400 naming a field.
    pub fn bad_field(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, Reason::BadRequest, detail)
        }
    }

    /// A 403.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, Reason::Forbidden, detail)
    }

    /// A 403 naming a field.
    pub fn forbidden_field(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::forbidden(detail)
        }
    }

    /// A 429.
    pub fn too_many(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::TooManyRequests,
            detail,
        )
    }

    /// A 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Reason::BadRequest, detail)
    }

    /// The body this error is answered with.
    pub fn problem(&self) -> Problem {
        let slug: String = format!("{:?}", self.reason);
        Problem {
            type_: format!("urn:modelhub:problem:{slug}"),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            reason: self.reason,
            field: self.field.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?}: {}",
            self.status.as_u16(),
            self.reason,
            self.detail
        )
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        use StatusCode as S;
        let detail = e.to_string();
        match e {
            StoreError::NotFound(_) | StoreError::ParentNotFound { .. } => {
                ApiError::new(S::NOT_FOUND, Reason::NotFound, detail)
            }
            StoreError::TokenNotFound(_) => ApiError {
                field: Some("name".into()),
                ..ApiError::new(S::NOT_FOUND, Reason::NotFound, detail)
            },
            StoreError::TokenExists(_) => ApiError {
                field: Some("name".into()),
                ..ApiError::new(S::CONFLICT, Reason::AlreadyExists, detail)
            },
            StoreError::AlreadyExists(_) => {
                ApiError::new(S::CONFLICT, Reason::AlreadyExists, detail)
            }
            StoreError::Conflict { .. } => ApiError {
                field: Some("metadata.resourceVersion".into()),
                ..ApiError::new(S::CONFLICT, Reason::Conflict, detail)
            },
            StoreError::HasChildren { .. } => {
                ApiError::new(S::CONFLICT, Reason::HasChildren, detail)
            }
            StoreError::Terminating { field, .. } => ApiError {
                field,
                ..ApiError::new(S::CONFLICT, Reason::Terminating, detail)
            },
            StoreError::Gone(_) => ApiError::new(S::GONE, Reason::Gone, detail),
            StoreError::BadRequest(_) => ApiError::new(S::BAD_REQUEST, Reason::BadRequest, detail),
            StoreError::Rejected {
                invalid,
                field,
                message,
            } => ApiError {
                field,
                ..if invalid {
                    ApiError::new(S::UNPROCESSABLE_ENTITY, Reason::Invalid, message)
                } else {
                    ApiError::bad_request(message)
                }
            },
            StoreError::Forbidden { field, message } => ApiError::forbidden_field(field, message),
            StoreError::Closed | StoreError::Unavailable(_) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, Reason::Unavailable, detail)
            }
            StoreError::Busy { .. } => ApiError::too_many(detail),
            StoreError::NoSpace(_) => {
                ApiError::new(S::INSUFFICIENT_STORAGE, Reason::InsufficientStorage, detail)
            }
            StoreError::OutcomeUnknown(_) => {
                ApiError::new(S::GATEWAY_TIMEOUT, Reason::OutcomeUnknown, detail)
            }
            StoreError::TooLarge(_) => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, Reason::PayloadTooLarge, detail)
            }
            StoreError::Document { index, source } => {
                let inner = ApiError::from(*source);
                let prefix = format!("documents[{index}]");
                ApiError {
                    field: Some(match inner.field {
                        Some(f) => format!("{prefix}.{f}"),
                        None => prefix,
                    }),
                    detail: format!("documents[{index}]: {}", inner.detail),
                    ..inner
                }
            }
            StoreError::FormatTooNew { .. } | StoreError::Engine(_) | StoreError::Internal(_) => {
                // The cause goes to the log, not to the client.
                tracing::error!(error = %detail, "store failure");
                ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    Reason::Internal,
                    "internal storage error (see the server log)",
                )
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> ApiError {
        ApiError {
            field: Some(i.field.clone()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Reason::Invalid,
                i.to_string(),
            )
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> ApiError {
        match e {
            DecodeError::BadRequest { field, message } => ApiError {
                field,
                ..ApiError::bad_request(message)
            },
            DecodeError::Invalid(i) => i.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Path};

    #[test]
    fn store_errors_map_to_statuses() {
        let p = Path::new(Kind::Realm, vec!["r".into()]);
        let cases = [
            (StoreError::NotFound(p.clone()), 404, Reason::NotFound),
            (
                StoreError::AlreadyExists(p.clone()),
                409,
                Reason::AlreadyExists,
            ),
            (StoreError::Gone("x".into()), 410, Reason::Gone),
            (StoreError::Busy { queue: 4 }, 429, Reason::TooManyRequests),
            (
                StoreError::Internal("disk on fire".into()),
                500,
                Reason::Internal,
            ),
        ];
        for (e, status, reason) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.reason), (status, reason));
            assert!(!a.detail.contains("disk on fire"));
        }
    }

    #[test]
    fn problem_body_shape() {
        let e = ApiError::from(Invalid::new("spec.containers[1].tty", "bad"));
        let v = serde_json::to_value(e.problem()).unwrap();
        assert_eq!(v["status"], 422);
        assert_eq!(v["reason"], "Invalid");
        assert_eq!(v["field"], "spec.containers[1].tty");
        assert_eq!(v["title"], "Unprocessable Entity");
    }
}
