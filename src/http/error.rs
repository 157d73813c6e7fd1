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
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
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
    #[error("too many long polls are waiting (limit {limit}); retry later")]
    TooManyWaiters { limit: usize },
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::TooManyWaiters { .. } => "too_many_waiters",
            ApiError::Unavailable(_) => "unavailable",
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyWaiters { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            approval: match self {
                ApiError::Conflict(approval) => Some(ApprovalView::from(approval.as_ref())),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::TooManyWaiters { .. } | ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.json(body)
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
            RegistryError::TooManyWaiters { limit } => ApiError::TooManyWaiters { limit },
            RegistryError::Store(message) => {
                tracing::error!(%message, "store failure");
                ApiError::Unavailable("the approval store is unavailable; retry shortly".into())
            }
            RegistryError::Restarting => ApiError::Unavailable(error.to_string()),
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
