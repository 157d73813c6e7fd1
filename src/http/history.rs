//! `GET /api/approvals/{id}/events`: an approval's append-only history, for operators. The
//! entries are written by the registry (with each change) and by the notifiers (deliveries, taps).

use actix_web::{HttpResponse, web};

use super::AppState;
use super::approvals::parse_id;
use super::auth::OperatorCaller;
use super::error::ApiError;

/// The approval's append-only history, oldest first (operators only).
#[utoipa::path(get, path = "/api/approvals/{id}/events", tag = "approvals",
    params(("id" = String, Path, description = "approval id")),
    responses((status = 200, description = "`{\"approval_id\", \"events\": [{\"at\", \"kind\", \"actor\", \"channel\", \"detail\"}]}`", body = Object),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn events(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let events = state
        .actors
        .registry
        .send(approval_gate_actors::registry::History(id))
        .await??;
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "at": approval_gate_actors::store::millis(e.at_ms)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "kind": e.kind,
                "actor": e.actor,
                "channel": e.channel,
                "detail": e.detail,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "approval_id": id.to_string(), "events": rows })))
}
