//! `/api/grants…`: session grants ("allow this tool in this session for a while"), operator
//! only. They are created by an `approve_session` decision (REST or the Telegram button); here
//! operators list the live ones and revoke them.

use actix_web::{HttpResponse, web};
use approval_gate_actors::domain::Grant;
use approval_gate_actors::registry::{ListGrants, RevokeGrant};
use serde::Serialize;

use super::AppState;
use super::auth::OperatorCaller;
use super::error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/grants", web::get().to(list))
        .route("/api/grants/{id}", web::delete().to(revoke));
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: String,
    pub session_id: String,
    pub tool_name: String,
    /// The agent token whose requests it covers.
    pub requested_by: String,
    pub granted_by: String,
    pub approval_id: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> Self {
        let time = |ms| {
            approval_gate_actors::store::millis(ms)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        Self {
            id: g.id.clone(),
            session_id: g.session_id.clone(),
            tool_name: g.tool_name.clone(),
            requested_by: g.requested_by.clone(),
            granted_by: g.granted_by.clone(),
            approval_id: g.approval_id.clone(),
            created_at: time(g.created_at_ms),
            expires_at: time(g.expires_at_ms),
        }
    }
}

/// Live session grants (operator token).
#[utoipa::path(get, path = "/api/grants", tag = "grants",
    responses((status = 200, description = "`{\"grants\": [GrantView]}`", body = Object),
        (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
) -> Result<HttpResponse, ApiError> {
    let grants = state.actors.registry.send(ListGrants).await?;
    let rows: Vec<GrantView> = grants.iter().map(GrantView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "grants": rows })))
}

/// Revoke a grant (operator token).
#[utoipa::path(delete, path = "/api/grants/{id}", tag = "grants",
    params(("id" = String, Path, description = "grant id")),
    responses((status = 200, description = "`{\"revoked\": GrantView}`", body = Object),
        (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn revoke(
    state: web::Data<AppState>,
    OperatorCaller(caller): OperatorCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state
        .actors
        .registry
        .send(RevokeGrant(id.clone()))
        .await??
    {
        Some(grant) => {
            tracing::info!(grant_id = %grant.id, revoked_by = %caller.name, "grant revoked over REST");
            Ok(HttpResponse::Ok().json(serde_json::json!({
                "revoked": GrantView::from(&grant),
            })))
        }
        None => Err(ApiError::NotFound(format!("no live grant with id {id}"))),
    }
}
