//! Per-request context: the `X-Request-Id` correlation id (taken from the client when sane,
//! generated otherwise, always echoed back), the tracing span that carries it onto every log
//! line, and the HTTP metrics by route template.

use std::future::{Ready, ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, web};
use approval_gate_actors::domain::ApprovalId;
use approval_gate_actors::metrics::Metric;
use tracing::Instrument;

use super::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The correlation id of the current request; extract it in handlers to pass to actors.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl FromRequest for RequestId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(ulid::Ulid::new().to_string()));
        ready(Ok(id))
    }
}

/// Accept a client's id only if it is short printable ASCII, so it is safe in logs and headers.
fn client_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID)?.to_str().ok()?.trim();
    let sane = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    sane.then(|| value.to_string())
}

/// The approval a request created, named on its `"http request"` line.
#[derive(Debug, Clone, Copy)]
struct CreatedApproval(ApprovalId);

/// Name the approval this request created on its `"http request"` line (the registry logs each
/// creation only at debug: one line per create, not two). A request extension, read when the
/// line is written: recording it into the request's span cost the create path more than the
/// line it replaces.
pub fn note_approval(req: &HttpRequest, id: ApprovalId) {
    req.extensions_mut().insert(CreatedApproval(id));
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = client_request_id(&req).unwrap_or_else(|| ulid::Ulid::new().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // A closed set: the method is client input, and a label value per invented method would
    // grow the metrics without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let span =
        tracing::info_span!("request", request_id = %id, method = %method, path = %req.path());
    let mut response = next.call(req).instrument(span.clone()).await?;

    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let refusal = response
        .response()
        .extensions()
        .get::<super::error::Refusal>()
        .copied();
    if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
        if let Some(super::error::Refusal(reason)) = refusal {
            let source = response
                .request()
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "-".into());
            span.in_scope(|| tracing::warn!(%route, status, reason, %source, "request refused"));
            state.actors.metrics.do_send(Metric::Refused { reason });
        }
        if state.settings().monitoring.request_logging {
            let approval_id = response
                .request()
                .extensions()
                .get::<CreatedApproval>()
                .map(|created| created.0.to_string());
            span.in_scope(|| {
                tracing::info!(
                    %route,
                    status,
                    latency_ms = seconds * 1000.0,
                    approval_id = approval_id.as_deref(),
                    "http request"
                )
            });
        }
        state.actors.metrics.do_send(Metric::Http {
            method,
            route,
            status,
            seconds,
        });
    }
    Ok(response)
}
