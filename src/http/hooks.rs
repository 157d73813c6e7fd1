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
use actix_web::{HttpResponse, web};
use approval_gate_actors::domain::{
    Actor, Approval, ApprovalId, Decision, NewApproval, Outcome, Status,
};
use approval_gate_actors::registry::{
    ApprovalRegistry, Create, Decide, RegistryError, Unwait, Wait, WaitReply,
};
use futures_util::Stream;

use super::AppState;
use super::auth::AgentCaller;
use super::context::RequestId;
use super::error::ApiError;
use crate::agents::{Agent, Event, HookInput, Verdict, render};
use crate::settings::OnTimeout;

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
                move |state: web::Data<AppState>,
                      caller: Result<AgentCaller, ApiError>,
                      request_id: RequestId,
                      body: Result<Bytes, actix_web::Error>| {
                    hook(state, agent, event, caller, request_id, body)
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
    let created = match registry
        .send(Create {
            new,
            request_id: Some(request_id.0.clone()),
        })
        .await
    {
        Ok(Ok(created)) => created.approval,
        Ok(Err(error)) => {
            refused(&state, &ApiError::from(error.clone()));
            return deny(event, could_not("record the request", &error));
        }
        Err(_) => return deny(event, "approval-gate's registry is not answering".into()),
    };
    if created.status.is_terminal() {
        return answer(event, &verdict(&state, &created));
    }
    let ticket = match registry.send(Wait(created.id)).await {
        Ok(Ok(WaitReply::Ready(approval))) => return answer(event, &verdict(&state, &approval)),
        Ok(Ok(WaitReply::Pending(ticket))) => ticket,
        Ok(Err(error)) => return deny(event, could_not("wait for a decision", &error)),
        Err(_) => return deny(event, "approval-gate's registry is not answering".into()),
    };
    tracing::info!(approval_id = %created.id, agent = agent.label(), "hook held for a decision");
    let guard = HoldGuard {
        registry: registry.clone(),
        id: created.id,
        caller: caller.name.clone(),
        unwait: Some(ticket.cancel_message()),
        settled: false,
    };
    let until = hold_until(&created, hold.hook_wait);
    let decided = held(state.clone(), guard, ticket.receiver, until);
    let settings = state.clone();
    let body = async move {
        let approval = decided.await;
        let verdict = match &approval {
            Ok(approval) => verdict(&settings, approval),
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

fn could_not(what: &str, error: &RegistryError) -> String {
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

/// When the hold gives up: the approval's deadline (a policy rule may have shortened it),
/// never later than `hook_wait` from now.
fn hold_until(approval: &Approval, hook_wait: Duration) -> tokio::time::Instant {
    let left = (approval.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        .min(hook_wait);
    tokio::time::Instant::now() + left
}

/// What the agent is told about an ended approval.
fn verdict(state: &AppState, approval: &Approval) -> Verdict {
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
                OnTimeout::Deny => Verdict::Deny(reason),
                OnTimeout::Ask => Verdict::Ask(reason),
            }
        }
        Status::Pending => Verdict::Deny(format!(
            "approval {id} is still pending; approval-gate could not wait for it"
        )),
    }
}

/// Cancels the approval if the hold ends any way but with a decision (the agent hung up, and
/// actix dropped the body), and frees the registry's waiter.
struct HoldGuard {
    registry: actix::Addr<ApprovalRegistry>,
    id: ApprovalId,
    caller: String,
    unwait: Option<Unwait>,
    settled: bool,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if let Some(unwait) = self.unwait.take() {
            self.registry.do_send(unwait);
        }
        if !self.settled {
            tracing::info!(approval_id = %self.id, "the agent hung up; cancelling its approval");
            self.registry.do_send(Decide {
                id: self.id,
                decision: Decision {
                    outcome: Outcome::Cancel,
                    actor: Actor::Agent(self.caller.clone()),
                    comment: Some(
                        "the agent hung up before a decision (the user interrupted it)".into(),
                    ),
                },
                request_id: None,
                grant_for: None,
            });
        }
    }
}

/// Hold until the approval ends, the deadline passes (then end it as timed out, so operators
/// are told and nobody approves a request no one waits for), or the service stops.
async fn held(
    state: web::Data<AppState>,
    mut guard: HoldGuard,
    mut receiver: tokio::sync::oneshot::Receiver<Approval>,
    until: tokio::time::Instant,
) -> Result<Approval, String> {
    let registry = guard.registry.clone();
    let id = guard.id;
    let mut stopping = state.stopping.clone();
    loop {
        let ending = tokio::select! {
            woken = &mut receiver => match woken {
                Ok(approval) => {
                    guard.unwait = None;
                    guard.settled = true;
                    return Ok(approval);
                }
                // The registry restarted and dropped its waiters: wait again.
                Err(_) => None,
            },
            _ = tokio::time::sleep_until(until) => Some((
                Outcome::Timeout,
                Actor::System,
                "no operator decided before the agent's hook had to be answered",
            )),
            _ = stopping.wait_for(|stopping| *stopping) => Some((
                Outcome::Cancel,
                Actor::System,
                "approval-gate shut down while the agent waited; the agent was told to ask again",
            )),
        };
        match ending {
            Some((outcome, actor, comment)) => {
                guard.settled = true;
                return end(&registry, id, outcome, actor, comment).await;
            }
            None => match registry.send(Wait(id)).await {
                Ok(Ok(WaitReply::Ready(approval))) => {
                    guard.unwait = None;
                    guard.settled = true;
                    return Ok(*approval);
                }
                Ok(Ok(WaitReply::Pending(ticket))) => {
                    guard.unwait = Some(ticket.cancel_message());
                    receiver = ticket.receiver;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            },
        }
    }
}

/// End a held approval ourselves; whoever decided first wins.
async fn end(
    registry: &actix::Addr<ApprovalRegistry>,
    id: ApprovalId,
    outcome: Outcome,
    actor: Actor,
    comment: &str,
) -> Result<Approval, String> {
    let decision = Decision {
        outcome,
        actor,
        comment: Some(comment.into()),
    };
    match registry
        .send(Decide {
            id,
            decision,
            request_id: None,
            grant_for: None,
        })
        .await
    {
        Ok(Ok(approval)) => Ok(approval),
        Ok(Err(RegistryError::Conflict(approval))) => Ok(*approval),
        Ok(Err(error)) => Err(could_not("record the end of the wait", &error)),
        Err(_) => Err("approval-gate's registry is not answering".into()),
    }
}

type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>>>>;

/// A space every `every` (JSON allows leading whitespace), then the answer. Writing is how
/// actix-web notices a client that hung up (actix/actix-web#1313): the write fails, the body is
/// dropped, and with it the [`HoldGuard`], which cancels the approval.
fn heartbeat_body(
    answer: Answer,
    every: Duration,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures_util::stream::unfold(Some((answer, ticker)), |state| async move {
        let (mut answer, mut ticker) = state?;
        tokio::select! {
            json = &mut answer => Some((Ok(Bytes::from(json)), None)),
            _ = ticker.tick() => Some((Ok(Bytes::from_static(b" ")), Some((answer, ticker)))),
        }
    })
}
