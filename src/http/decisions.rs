//! Ending a pending approval over REST: an operator's decision (`POST
//! /api/approvals/{id}/decision`, optionally granting the tool for the session) and an agent's
//! cancel of its own request (`DELETE /api/approvals/{id}`). Both become the registry's
//! `Decide`, the same compare-and-set a Telegram tap or a timeout goes through.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use approval_gate_actors::domain::{Actor, Decision, Outcome};
use approval_gate_actors::registry::{Decide, Get};
use serde::Deserialize;

use super::AppState;
use super::approvals::{parse_id, visible};
use super::auth::{AgentCaller, OperatorCaller};
use super::context::RequestId;
use super::error::ApiError;
use super::view::ApprovalView;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum DecisionKind {
    Approve,
    Reject,
    /// Approve, and allow this tool in this session for `grant_for` (default
    /// `agents.session_grant`, at most `agents.max_grant`).
    ApproveSession,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct DecisionBody {
    decision: DecisionKind,
    comment: Option<String>,
    grant_for: Option<String>,
}

fn grant_duration(state: &AppState, raw: Option<&str>) -> Result<Duration, ApiError> {
    let settings = state.settings();
    let agents = &settings.agents;
    let Some(raw) = raw else {
        return Ok(agents.session_grant);
    };
    let requested = humantime::parse_duration(raw.trim()).map_err(|e| {
        ApiError::Unprocessable(format!(
            "`grant_for` {raw:?} is not a duration like \"1h\": {e}"
        ))
    })?;
    if requested < Duration::from_secs(1) || requested > agents.max_grant {
        return Err(ApiError::Unprocessable(format!(
            "`grant_for` {raw:?} must be between 1s and {} (agents.max_grant)",
            humantime::format_duration(agents.max_grant)
        )));
    }
    Ok(requested)
}

fn checked_comment(comment: Option<String>) -> Result<Option<String>, ApiError> {
    match comment {
        Some(c) if c.len() > approval_gate_actors::domain::MAX_REASON => {
            Err(ApiError::Unprocessable(format!(
                "`comment` is {} bytes long; at most {} are allowed",
                c.len(),
                approval_gate_actors::domain::MAX_REASON
            )))
        }
        other => Ok(other),
    }
}

/// Decide a pending approval (operator token); the first decision wins.
#[utoipa::path(post, path = "/api/approvals/{id}/decision", tag = "approvals", request_body = DecisionBody,
    params(("id" = String, Path, description = "approval id")),
    responses((status = 200, body = super::view::ApprovalView), (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "already decided; `approval` holds the winner", body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn decide(
    state: web::Data<AppState>,
    OperatorCaller(caller): OperatorCaller,
    request_id: RequestId,
    id: web::Path<String>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    state.limits().decision(&caller.name)?;
    let id = parse_id(&id)?;
    let body = body.into_inner();
    let (outcome, grant_for) = match body.decision {
        DecisionKind::Approve => (Outcome::Approve, None),
        DecisionKind::Reject => (Outcome::Reject, None),
        DecisionKind::ApproveSession => (
            Outcome::Approve,
            Some(grant_duration(&state, body.grant_for.as_deref())?),
        ),
    };
    let decision = Decision {
        outcome,
        actor: Actor::Operator(caller.name),
        comment: checked_comment(body.comment)?,
    };
    let approval = state
        .actors
        .registry
        .send(Decide {
            id,
            decision,
            request_id: Some(request_id.0),
            grant_for,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ApprovalView::from(&approval)))
}

/// Cancel one's own pending approval (agent token).
#[utoipa::path(delete, path = "/api/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "approval id")),
    responses((status = 200, body = super::view::ApprovalView), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn cancel(
    state: web::Data<AppState>,
    AgentCaller(caller): AgentCaller,
    request_id: RequestId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let registry = &state.actors.registry;
    let current = registry.send(Get(id)).await??;
    visible(&caller, &current)?;
    let decision = Decision {
        outcome: Outcome::Cancel,
        actor: Actor::Agent(caller.name),
        comment: Some("cancelled by the agent".into()),
    };
    let approval = registry
        .send(Decide {
            id,
            decision,
            request_id: Some(request_id.0),
            grant_for: None,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ApprovalView::from(&approval)))
}
