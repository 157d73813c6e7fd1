//! The one API error type and its mapping to HTTP. Every error body is
//! `{"error": "<stable_code>", "message": "<human text>"}`, plus `approval` on conflicts.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use approval_gate_actors::domain::Approval;
use approval_gate_actors::registry::RegistryError;
use serde::Serialize;

use super::view::ApprovalView;

/// Serialized directly (not through `serde_json::Value`) so the approval's `tool_input` keeps
/// the agent's exact bytes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: invalid_json, unauthorized, not_found, already_decided, rate_limited, ...
    error: &'static str,
    message: String,
    /// On `409 already_decided`: the approval as the winning decision left it; on
    /// `409 already_counted`: the approval with the approvals counted so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalView>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A field the agent sent breaks a limit; `code` names which (stable).
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    #[error("timeout {requested} is outside the allowed range {min} ..= {max}")]
    TimeoutOutOfRange {
        requested: String,
        min: String,
        max: String,
    },
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("approval {} is already {}", .0.id, .0.status)]
    Conflict(Box<Approval>),
    /// The caller's approval already counts towards this approval's quorum.
    #[error("your approval of {} is already counted ({}); another operator must approve", .0.id, .0.quorum_line())]
    AlreadyCounted(Box<Approval>),
    #[error("too many long polls are waiting (limit {limit}); retry later")]
    TooManyWaiters { limit: usize },
    #[error("{0}")]
    Unavailable(String),
    #[error("too many requests ({limit}); retry after {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// The refusal reason (`rate_limited_create`, `auth_blocked`, ...), a metric label.
        limit: &'static str,
        retry_after: std::time::Duration,
    },
    #[error("this agent already has {limit} pending approvals (limits.max_pending_per_agent)")]
    TooManyPending { limit: u64 },
    /// A state-changing request a browser sent from another site (`Origin` or
    /// `Sec-Fetch-Site`), or a console request without its session's CSRF token.
    #[error("{0}")]
    CrossSite(&'static str),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::Unprocessable(_) => "invalid_request",
            ApiError::InvalidInput { code, .. } => code,
            ApiError::TimeoutOutOfRange { .. } => "timeout_out_of_range",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "already_decided",
            ApiError::AlreadyCounted(_) => "already_counted",
            ApiError::TooManyWaiters { .. } => "too_many_waiters",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyPending { .. } => "too_many_pending",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::CrossSite(_) => "cross_site_request",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_)
            | ApiError::InvalidInput { .. }
            | ApiError::TimeoutOutOfRange { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CrossSite(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::AlreadyCounted(_) => StatusCode::CONFLICT,
            ApiError::TooManyWaiters { .. }
            | ApiError::RateLimited { .. }
            | ApiError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            approval: match self {
                ApiError::Conflict(approval) | ApiError::AlreadyCounted(approval) => {
                    Some(ApprovalView::from(approval.as_ref()))
                }
                _ => None,
            },
        };
        let mut response = HttpResponse::build(self.status_code());
        if let Some(reason) = self.refusal() {
            // Read by the request middleware, which logs the refusal with its source and counts it.
            response.extensions_mut().insert(Refusal(reason));
        }
        match self {
            ApiError::Unauthorized => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::TooManyWaiters { .. } | ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::RateLimited { retry_after, .. } => {
                // Whole seconds, rounded up: retrying at the advertised time must succeed.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
            }
            ApiError::TooManyPending { .. } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")));
            }
            _ => {}
        }
        response.json(body)
    }
}

/// A refused attempt, as a `approval_gate_refused_total{reason}` label.
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);

impl ApiError {
    /// The `approval_gate_refused_total{reason}` label of a refusal, if this is one.
    pub(super) fn refusal(&self) -> Option<&'static str> {
        match self {
            ApiError::Unauthorized => Some("bad_token"),
            ApiError::Forbidden(_) => Some("wrong_role"),
            ApiError::CrossSite(_) => Some("cross_site"),
            ApiError::RateLimited { limit, .. } => Some(limit),
            ApiError::TooManyPending { .. } => Some("too_many_pending"),
            _ => None,
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::NotFound(id) => ApiError::NotFound(format!("no approval with id {id}")),
            RegistryError::Conflict(approval) => ApiError::Conflict(approval),
            RegistryError::Invalid(error) => ApiError::InvalidInput {
                code: error.code,
                message: error.to_string(),
            },
            RegistryError::TooManyWaiters { limit }
            | RegistryError::TooManyWaitersForAgent { limit } => ApiError::TooManyWaiters { limit },
            RegistryError::TooManyPending { limit } => ApiError::TooManyPending { limit },
            RegistryError::Store(message) => {
                tracing::error!(%message, "store failure");
                ApiError::Unavailable("the approval store is unavailable; retry shortly".into())
            }
            RegistryError::Restarting => ApiError::Unavailable(error.to_string()),
            RegistryError::CommentRequired { .. } => ApiError::InvalidInput {
                code: "comment_required",
                message: error.to_string(),
            },
            RegistryError::AlreadyCounted(approval) => ApiError::AlreadyCounted(approval),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(error: actix::MailboxError) -> Self {
        tracing::error!(%error, "actor did not answer");
        ApiError::Unavailable("the approval registry is not answering; retry shortly".into())
    }
}

/// Maps actix-web's JSON extractor errors: syntax → 400, wrong shape → 422, size → 413.
pub fn json_error(error: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match error {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::PayloadTooLarge { limit },
        E::Deserialize(e) if e.is_data() => ApiError::Unprocessable(e.to_string()),
        E::Deserialize(e) => ApiError::InvalidJson(e.to_string()),
        E::ContentType => ApiError::InvalidJson("expected Content-Type: application/json".into()),
        other => ApiError::InvalidJson(other.to_string()),
    }
}
