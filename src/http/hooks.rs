//! `POST /hooks/{agent}/{event}`: agents' hooks (Claude Code HTTP hooks, and the command hooks
//! of `approval-gate hook`) ask here and are held until a decision.
//!
//! The contract is the agent's, not ours: Claude Code runs the tool when a hook answers non-2xx,
//! fails to connect or times out, so every path this handler controls answers **200** with a
//! decision, and doubt (a bad token, bad input, an internal error) is a deny. The hold ends
//! before the hook's own timeout (`agents.hook_wait`); an agent that hangs up has its approval
//! cancelled. Input shapes and outputs live in [`crate::agents`]; the rules in the registry.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use approval_gate_actors::domain::{Approval, NewApproval, Status};
use approval_gate_actors::registry::{Create, RegistryError, Wait, WaitReply};

use super::AppState;
use super::auth::AgentCaller;
use super::context::RequestId;
use super::error::ApiError;
use crate::agents::{Agent, Event, HookInput, Verdict, render};
use crate::settings::OnTimeout;

mod hold;

use hold::{HoldGuard, heartbeat_body, held, hold_until};

pub fn routes(cfg: &mut web::ServiceConfig) {
    for (agent, event) in [
        (Agent::ClaudeCode, Event::PreToolUse),
        (Agent::ClaudeCode, Event::PermissionRequest),
        (Agent::Codex, Event::PermissionRequest),
        (Agent::Gemini, Event::BeforeTool),
    ] {
        let path = format!("/hooks/{}/{}", agent.path(), event.path());
        cfg.route(
            &path,
            web::post().to(
                move |req: HttpRequest,
                      state: web::Data<AppState>,
                      caller: Result<AgentCaller, ApiError>,
                      request_id: RequestId,
                      body: Result<Bytes, actix_web::Error>| {
                    hook(req, state, agent, event, caller, request_id, body)
                },
            ),
        );
    }
}

fn answer(event: Event, verdict: &Verdict) -> HttpResponse {
    HttpResponse::Ok().json(render(event, verdict))
}

fn deny(event: Event, reason: String) -> HttpResponse {
    tracing::warn!(%reason, "hook denied without asking an operator");
    answer(event, &Verdict::Deny(reason))
}

async fn hook(
    req: HttpRequest,
    state: web::Data<AppState>,
    agent: Agent,
    event: Event,
    caller: Result<AgentCaller, ApiError>,
    request_id: RequestId,
    body: Result<Bytes, actix_web::Error>,
) -> HttpResponse {
    let caller = match caller {
        Ok(AgentCaller(caller)) => caller,
        Err(error) => {
            refused(&state, &error);
            return deny(
                event,
                format!(
                    "approval-gate refused this hook's credentials ({error}); configure an agent \
                     token (Authorization: Bearer $APPROVAL_GATE_TOKEN)"
                ),
            );
        }
    };
    let input = match body
        .map_err(|e| format!("the hook input could not be read: {e}"))
        .and_then(|body| HookInput::parse(&body))
    {
        Ok(input) => input,
        Err(reason) => return deny(event, reason),
    };
    if let Err(limited) = state.limits().create(&caller.name) {
        refused(&state, &limited);
        return deny(
            event,
            format!("approval-gate refused the request: {limited}"),
        );
    }
    let settings = state.settings();
    let hold = &settings.agents;
    let new = new_approval(agent, event, &input, &caller.name, hold.hook_wait);
    let registry = state.actors.registry.clone();
    // Recording the request waits for the store; a disk that hangs must not make the hook hang
    // past hook_wait, or the agent's own timeout would run the tool. Past it: deny (an approval
    // that lands later times out unanswered, its deadline being hook_wait too).
    let recorded = tokio::time::timeout(
        hold.hook_wait,
        registry.send(Create {
            new,
            request_id: Some(request_id.0.clone()),
        }),
    )
    .await;
    let created = match recorded {
        Ok(Ok(Ok(created))) => {
            super::context::note_approval(&req, created.approval.id);
            created.approval
        }
        Ok(Ok(Err(error))) => {
            refused(&state, &ApiError::from(error.clone()));
            return deny(event, could_not("record the request", &error));
        }
        Ok(Err(_)) => return deny(event, "approval-gate's registry is not answering".into()),
        Err(_) => {
            return deny(
                event,
                "approval-gate could not record the request in time (its store is not answering)"
                    .into(),
            );
        }
    };
    if created.status.is_terminal() {
        return answer(event, &verdict(&state, agent, &created));
    }
    // From here the approval exists and this request stands for the agent waiting on it: if
    // the agent hangs up while the wait is registered (actix drops this future), the guard
    // cancels the approval. Only a hang-up while the create itself is in flight leaves one
    // pending for its deadline: its id never reached us.
    let mut guard = HoldGuard {
        registry: registry.clone(),
        id: created.id,
        caller: caller.name.clone(),
        unwait: None,
        settled: false,
    };
    let ticket = match registry.send(Wait(created.id)).await {
        Ok(Ok(WaitReply::Ready(approval))) => {
            guard.settled = true;
            return answer(event, &verdict(&state, agent, &approval));
        }
        Ok(Ok(WaitReply::Pending(ticket))) => ticket,
        Ok(Err(error)) => {
            guard.settled = true;
            return deny(event, could_not("wait for a decision", &error));
        }
        Err(_) => {
            guard.settled = true;
            return deny(event, "approval-gate's registry is not answering".into());
        }
    };
    tracing::info!(approval_id = %created.id, agent = agent.label(), "hook held for a decision");
    guard.unwait = Some(ticket.cancel_message());
    let until = hold_until(&created, hold.hook_wait, state.actors.clock.now());
    let decided = held(state.clone(), guard, ticket.receiver, until);
    let settings = state.clone();
    let body = async move {
        let approval = decided.await;
        let verdict = match &approval {
            Ok(approval) => verdict(&settings, agent, approval),
            Err(reason) => Verdict::Deny(reason.clone()),
        };
        serde_json::to_vec(&render(event, &verdict)).unwrap_or_default()
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(heartbeat_body(Box::pin(body), hold.hangup_check))
}

/// Hooks answer 200 even when they refuse: count and log the refusal here (the middleware
/// only sees refusals that became error responses). The reason is the API error's own.
fn refused(state: &AppState, error: &ApiError) {
    let Some(reason) = error.refusal() else {
        return;
    };
    tracing::warn!(reason, "hook refused");
    state
        .actors
        .metrics
        .do_send(approval_gate_actors::metrics::Metric::Refused { reason });
}

pub(super) fn could_not(what: &str, error: &RegistryError) -> String {
    match error {
        RegistryError::Invalid(invalid) => format!("approval-gate rejected the request: {invalid}"),
        other => format!("approval-gate could not {what}: {other}"),
    }
}

/// The approval for a hook's tool call, idempotent per call: by `tool_use_id` where the agent
/// sends one, otherwise by session, tool and input while that approval is pending.
fn new_approval(
    agent: Agent,
    event: Event,
    input: &HookInput,
    caller: &str,
    hook_wait: Duration,
) -> NewApproval {
    let tool_input = input.tool_input.get().to_string();
    let (key, while_pending) = match input.tool_use_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => (
            format!("{}:tool-use:{}", agent.label(), digest(&[id])),
            false,
        ),
        None => (
            format!(
                "{}:{}:{}",
                agent.label(),
                event.path(),
                digest(&[&input.session_id, &input.tool_name, &tool_input])
            ),
            true,
        ),
    };
    NewApproval {
        session_id: input.session_id.clone(),
        tool_name: input.tool_name.clone(),
        tool_input,
        reason: Some(bounded(input.context(agent, event))),
        agent: Some(agent.label().into()),
        requested_by: caller.into(),
        idempotency_key: Some(key),
        timeout: hook_wait,
        max_timeout: Some(hook_wait),
        idempotent_while_pending: while_pending,
        cwd: input.cwd.clone().filter(|cwd| !cwd.is_empty()),
    }
}

/// A short stable key for arbitrary parts (ids may be long; keys are bounded).
fn digest(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    hex::encode(&context.finish().as_ref()[..16])
}

fn bounded(mut text: String) -> String {
    let max = approval_gate_actors::domain::MAX_REASON;
    if text.len() > max {
        let mut end = max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// What the agent is told about an ended approval.
fn verdict(state: &AppState, agent: Agent, approval: &Approval) -> Verdict {
    let by = approval
        .decided_by
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "approval-gate".into());
    let note = approval
        .comment
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    let id = approval.id;
    match approval.status {
        Status::Approved => Verdict::Allow(format!("approved by {by}{note} (approval {id})")),
        Status::Rejected => Verdict::Deny(format!("rejected by {by}{note} (approval {id})")),
        Status::Cancelled => Verdict::Deny(format!("cancelled by {by}{note} (approval {id})")),
        Status::TimedOut => {
            let reason = format!(
                "timed out waiting for an operator: nobody decided in time (approval {id})"
            );
            match state.settings().agents.on_timeout {
                OnTimeout::Ask if agent.asks_a_person() => Verdict::Ask(reason),
                // "Ask" means a person decides; where the agent would not ask one, deny.
                OnTimeout::Ask => Verdict::Deny(format!(
                    "{reason}; agents.on_timeout = \"ask\" denies for {}, which would not ask a person",
                    agent.label()
                )),
                OnTimeout::Deny => Verdict::Deny(reason),
            }
        }
        Status::Pending => Verdict::Deny(format!(
            "approval {id} is still pending; approval-gate could not wait for it"
        )),
    }
}
