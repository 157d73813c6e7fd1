//! The hold: a hook's request is kept open until its approval ends, its deadline passes (then
//! the hold ends it as timed out) or the service stops; a heartbeat of spaces notices an agent
//! that hung up, whose approval is then cancelled ([`HoldGuard`]). What the agent is told lives
//! in the parent module.

use std::time::Duration;

use actix_web::web;
use actix_web::web::Bytes;
use approval_gate_actors::domain::{Actor, Approval, ApprovalId, Decision, Outcome};
use approval_gate_actors::registry::{
    Abandon, ApprovalRegistry, Decide, RegistryError, Unwait, Wait, WaitReply,
};
use futures_util::Stream;

use super::super::AppState;
use super::could_not;

/// When the hold gives up: the approval's deadline (a policy rule may have shortened it),
/// never later than `hook_wait` from now. `now` is on the clock deadlines are decided by.
pub(super) fn hold_until(
    approval: &Approval,
    hook_wait: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> tokio::time::Instant {
    let left = (approval.expires_at - now)
        .to_std()
        .unwrap_or_default()
        .min(hook_wait);
    tokio::time::Instant::now() + left
}

/// Frees the registry's waiter; if the hold ends any way but with a decision (the agent hung
/// up, and actix dropped the body), also cancels the approval unless someone else waits for it.
pub(super) struct HoldGuard {
    pub(super) registry: actix::Addr<ApprovalRegistry>,
    pub(super) id: ApprovalId,
    pub(super) caller: String,
    pub(super) unwait: Option<Unwait>,
    pub(super) settled: bool,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if self.settled {
            if let Some(unwait) = self.unwait.take() {
                self.registry.do_send(unwait);
            }
            return;
        }
        // The registry cancels only if no other caller still holds the same approval (two
        // identical calls without a tool_use_id share one).
        tracing::info!(approval_id = %self.id, "the agent hung up; cancelling its approval unless another caller waits for it");
        self.registry.do_send(Abandon {
            unwait: self.unwait.take(),
            id: self.id,
            decision: Decision {
                outcome: Outcome::Cancel,
                actor: Actor::Agent(self.caller.clone()),
                comment: Some(
                    "the agent hung up before a decision (the user interrupted it)".into(),
                ),
            },
        });
    }
}

/// Hold until the approval ends, the deadline passes (then end it as timed out, so operators
/// are told and nobody approves a request no one waits for), or the service stops.
pub(super) async fn held(
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

pub(super) type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>>>>;

/// A space every `every` (JSON allows leading whitespace), then the answer. Writing is how
/// actix-web notices a client that hung up (actix/actix-web#1313): the write fails, the body is
/// dropped, and with it the [`HoldGuard`], which cancels the approval.
pub(super) fn heartbeat_body(
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
