//! Button taps: who may decide what, the decision sent to the registry, and the answer.
//!
//! A tap decides only if its signed data verifies, its message is in the configured chat and the
//! user is allowed; every tap is answered (retried while Telegram still accepts the answer). A
//! tap on a copy of a message we did not know, for an approval already ended, queues an edit of
//! that copy.

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use teloxide::types::CallbackQuery;

use super::{NAME, TelegramGateway};
use crate::domain::{Actor as DecidedBy, ApprovalId, Decision, Status, TelegramMessageRef};
use crate::metrics::TelegramMetric;
use crate::notification::Event;
use crate::registry::{Decide, RegistryError};
use crate::store::{Channel, QueueEntry};
use crate::supervision::guarded_with;
use crate::telegram::api::Attempt;
use crate::telegram::callback::Action;
use crate::telegram::render;

/// What a tap left to do once the registry answered.
pub(super) enum TapOutcome {
    Refused(Attempt<()>),
    Answered {
        answer: Attempt<()>,
        /// The registry gave its answer (decided, already decided, no such approval); `false`
        /// when it could not (a store failure): the tap decided nothing and may come again.
        settled: bool,
        /// The approval had already ended and this copy of its message was new to us: edit it.
        stale_copy: Option<Box<(crate::domain::Approval, TelegramMessageRef)>>,
    },
}

impl TapOutcome {
    /// Whether the tap needs no second delivery (see `Answered::settled`).
    pub(super) fn settled(&self) -> bool {
        match self {
            TapOutcome::Refused(_) => true,
            TapOutcome::Answered { settled, .. } => *settled,
        }
    }
}

/// Who tapped, as the history shows it.
fn tapper(query: &CallbackQuery) -> DecidedBy {
    DecidedBy::Telegram {
        user_id: query.from.id.0 as i64,
        username: query.from.username.clone(),
    }
}

impl TelegramGateway {
    /// Why a tap may not decide, if it may not.
    fn authorise(
        &self,
        query: &CallbackQuery,
    ) -> Result<(ApprovalId, Action, TelegramMessageRef), &'static str> {
        let message = query
            .message
            .as_ref()
            .ok_or("the button is not on a chat message")?;
        let message = TelegramMessageRef {
            chat_id: message.chat().id.0,
            message_id: message.id().0,
        };
        if message.chat_id != self.settings.chat_id
            && !self
                .settings
                .chats
                .values()
                .any(|&id| id == message.chat_id)
        {
            return Err("the message is not in a configured chat");
        }
        if !self.settings.allowed_user_ids.contains(&query.from.id.0) {
            return Err("the user is not in telegram.allowed_user_ids");
        }
        let data = query.data.as_deref().ok_or("the button carries no data")?;
        let (id, action) = self
            .codec
            .decode(data)
            .map_err(|_| "the button data is forged or damaged")?;
        if !self.shows(query, id, message) {
            return Err("the button is on a message that does not show its approval");
        }
        Ok((id, action, message))
    }

    /// A tap decides only the approval its message shows: a message this gateway sent for it,
    /// or a copy whose last line is the approval's id footer (a duplicate of an ambiguous send,
    /// which the log never heard of). A valid button moved onto another approval's message
    /// fails both, so it can neither decide nor get that message overwritten.
    fn shows(&self, query: &CallbackQuery, id: ApprovalId, message: TelegramMessageRef) -> bool {
        if self.queues.message_refs(id).contains(&message) {
            return true;
        }
        let footer = format!("id {id}");
        query
            .message
            .as_ref()
            .and_then(|m| m.regular_message())
            .filter(|m| m.from.as_ref().is_some_and(|from| from.is_bot))
            .and_then(|m| m.text())
            .and_then(|text| text.trim_end().lines().last())
            .is_some_and(|last| last.trim() == footer)
    }

    pub(super) fn tap(&mut self, query: CallbackQuery) -> LocalBoxFuture<'static, TapOutcome> {
        let api = self.api.clone();
        let query_id = query.id.0.clone();
        let request_id = format!("telegram-{query_id}");
        let (id, action, message) = match self.authorise(&query) {
            Ok(verdict) => verdict,
            Err(reason) => {
                self.metric(TelegramMetric::UnauthorisedTap);
                // On the approval's history when the button itself is genuine (a forged one
                // names nothing we can trust).
                if let Some((id, _)) = query
                    .data
                    .as_deref()
                    .and_then(|d| self.codec.decode(d).ok())
                {
                    let event = crate::domain::AuditEvent::at(self.clock.now_ms(), "tap_refused")
                        .by(tapper(&query))
                        .on("telegram")
                        .saying(reason);
                    self.queues.record(id, &event);
                }
                tracing::warn!(
                    actor = NAME,
                    request_id,
                    user_id = query.from.id.0,
                    username = query.from.username.as_deref().unwrap_or("-"),
                    reason,
                    "refused a button tap"
                );
                return async move {
                    let answer = Answer {
                        query_id,
                        text: "⛔ Not authorised".into(),
                        alert: true,
                    };
                    TapOutcome::Refused(answer.send(&api, None, &request_id).await)
                }
                .boxed_local();
            }
        };
        if action.is_group() {
            return self.tap_group(&query, id, action, message);
        }
        // Remember this copy before deciding, so the edit the decision triggers reaches it too.
        let new_copy = self.queues.add_message_ref(id, message).unwrap_or(false);
        let decision = Decision {
            outcome: action.outcome(),
            actor: DecidedBy::Telegram {
                user_id: query.from.id.0 as i64,
                username: query.from.username.clone(),
            },
            comment: None,
        };
        let grant_for = match action {
            Action::ApproveSession => self.settings.session_grant,
            Action::Approve | Action::Reject | Action::ApproveGroup | Action::RejectGroup => None,
        };
        tracing::info!(actor = NAME, request_id, approval_id = %id, user_id = query.from.id.0, ?action, "button tapped");
        let event = crate::domain::AuditEvent::at(self.clock.now_ms(), "tapped")
            .by(tapper(&query))
            .on("telegram")
            .saying(format!("{action:?}"));
        self.queues.record(id, &event);
        let registry = self.registry.clone();
        async move {
            let result = match registry {
                Some(registry) => registry
                    .send(Decide {
                        id,
                        decision,
                        request_id: Some(request_id.clone()),
                        grant_for,
                    })
                    .await
                    .unwrap_or(Err(RegistryError::Restarting)),
                None => Err(RegistryError::Restarting),
            };
            let settled = !matches!(
                result,
                Err(RegistryError::Store(_) | RegistryError::Restarting)
            );
            let mut alert = false;
            let (text, stale_copy) = match result {
                Ok(approval) if !approval.status.is_terminal() => (
                    format!(
                        "Approval counted: {}. Another operator must approve.",
                        approval.quorum_line()
                    ),
                    None,
                ),
                Ok(approval) => (format!("{} — recorded", status_word(approval.status)), None),
                Err(RegistryError::AlreadyCounted(approval)) => (
                    format!(
                        "Your approval is already counted ({}). Another operator must approve.",
                        approval.quorum_line()
                    ),
                    None,
                ),
                Err(RegistryError::CommentRequired { level }) => {
                    // A tap carries no text: the operator is sent where a comment can be given.
                    alert = true;
                    (
                        format!(
                            "Approving a {level}-risk request needs a comment. Approve it in the \
                             console or with: approval-gate approvals approve {id} --comment \"…\""
                        ),
                        None,
                    )
                }
                Err(RegistryError::Conflict(approval)) => {
                    let by = approval
                        .decided_by
                        .as_ref()
                        .map(render::who)
                        .unwrap_or_default();
                    let text = format!(
                        "Already {} by {by}",
                        status_word(approval.status).to_lowercase()
                    );
                    (text, new_copy.then_some(Box::new((*approval, message))))
                }
                Err(RegistryError::NotFound(_)) => ("This approval no longer exists".into(), None),
                Err(_) => ("approval-gate is busy; please tap again".into(), None),
            };
            let answer = Answer {
                query_id,
                text,
                alert,
            };
            TapOutcome::Answered {
                answer: answer.send(&api, Some(id), &request_id).await,
                settled,
                stale_copy,
            }
        }
        .boxed_local()
    }

    pub(super) fn after_tap(&mut self, outcome: TapOutcome, ctx: &mut Context<Self>) {
        match outcome {
            TapOutcome::Refused(answer) => self.record_call(&answer),
            TapOutcome::Answered {
                answer, stale_copy, ..
            } => {
                self.record_call(&answer);
                if let Some(stale) = stale_copy {
                    let (approval, message) = *stale;
                    self.queue_edit_one(approval, message, ctx);
                }
            }
        }
    }
}

impl TelegramGateway {
    /// A copy we did not know (a duplicate from an ambiguous send) shows an ended approval:
    /// queue an edit of just that copy, deliverable once it is durable.
    fn queue_edit_one(
        &mut self,
        approval: crate::domain::Approval,
        message: TelegramMessageRef,
        ctx: &mut Context<Self>,
    ) {
        let entry = QueueEntry {
            event: Event::Ended,
            approval,
            request_id: None,
            only: Some(message),
        };
        let seq = match self.queues.enqueue(Channel::Telegram, &entry) {
            Ok(seq) => seq,
            Err(error) => {
                tracing::error!(actor = NAME, %error, "cannot queue an edit");
                return;
            }
        };
        // Waits out failed syncs: the queue drains only past entries known to be durable, so an
        // edit never confirmed would hold back every later notification until a restart.
        let durable = self.queues.until_enqueued();
        ctx.spawn(durable.into_actor(self).map(move |(), act, ctx| {
            guarded_with(NAME, act, ctx, |act, ctx| {
                act.woken(
                    crate::notification::Wake {
                        channel: Channel::Telegram,
                        confirmed: vec![seq],
                        withdrawn: Vec::new(),
                        entry: None,
                        span: None,
                    },
                    ctx,
                )
            })
        }));
    }
}

/// The answer to one tap.
struct Answer {
    query_id: String,
    text: String,
    alert: bool,
}

impl Answer {
    /// Send it, retrying transient failures while Telegram still accepts the answer (a callback
    /// query can be answered for a short while only; three tries within a few seconds). Every
    /// try is logged with the tap's ids.
    async fn send(
        self,
        api: &crate::telegram::api::Api,
        approval_id: Option<ApprovalId>,
        request_id: &str,
    ) -> Attempt<()> {
        let call = || api.answer(self.query_id.clone(), self.text.clone(), self.alert);
        let mut delay = std::time::Duration::from_millis(200);
        let mut attempt = call().await;
        super::log_call(&attempt, approval_id, request_id);
        for _ in 0..2 {
            match &attempt.result {
                Err(failure) if failure.is_transient() => {
                    let wait = match failure.kind {
                        crate::telegram::retry::FailureKind::Transient {
                            retry_after: Some(after),
                        } => after,
                        _ => delay,
                    };
                    if wait > std::time::Duration::from_secs(5) {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    delay *= 3;
                    attempt = call().await;
                    super::log_call(&attempt, approval_id, request_id);
                }
                _ => break,
            }
        }
        attempt
    }
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Pending => "Pending",
        Status::Approved => "✅ Approved",
        Status::Rejected => "❌ Rejected",
        Status::TimedOut => "⌛ Timed out",
        Status::Cancelled => "🚫 Cancelled",
    }
}

impl TelegramGateway {
    /// A digest's "all N" button: every approval of the line that lists `id` in the tapped
    /// digest is decided, each by its own `Decide` (first decision wins for each, each on its
    /// history as tapped), and the answer counts what happened.
    fn tap_group(
        &mut self,
        query: &CallbackQuery,
        id: ApprovalId,
        action: Action,
        message: TelegramMessageRef,
    ) -> LocalBoxFuture<'static, TapOutcome> {
        let api = self.api.clone();
        let query_id = query.id.0.clone();
        let request_id = format!("telegram-{query_id}");
        let ids: Vec<ApprovalId> = self
            .digest_of(message)
            .and_then(|digest| digest.line_of(id).map(|line| line.ids.clone()))
            .unwrap_or_else(|| vec![id]);
        let actor = tapper(query);
        for &each in &ids {
            let event = crate::domain::AuditEvent::at(self.clock.now_ms(), "tapped")
                .by(actor.clone())
                .on("telegram")
                .saying(format!("{action:?} ({} in the line)", ids.len()));
            self.queues.record(each, &event);
        }
        tracing::info!(
            actor = NAME,
            request_id,
            approvals = ids.len(),
            user_id = query.from.id.0,
            ?action,
            "digest line tapped"
        );
        let registry = self.registry.clone();
        async move {
            let (mut decided, mut already, mut failed, mut need_comment) = (0, 0, 0, 0);
            for each in &ids {
                let result = match &registry {
                    Some(registry) => registry
                        .send(Decide {
                            id: *each,
                            decision: Decision {
                                outcome: action.outcome(),
                                actor: actor.clone(),
                                comment: None,
                            },
                            request_id: Some(request_id.clone()),
                            grant_for: None,
                        })
                        .await
                        .unwrap_or(Err(RegistryError::Restarting)),
                    None => Err(RegistryError::Restarting),
                };
                match result {
                    Ok(_) => decided += 1,
                    Err(RegistryError::Conflict(_) | RegistryError::AlreadyCounted(_)) => {
                        already += 1
                    }
                    Err(RegistryError::CommentRequired { .. }) => need_comment += 1,
                    Err(_) => failed += 1,
                }
            }
            let verb = match action {
                Action::ApproveGroup => "approved",
                _ => "rejected",
            };
            let mut text = format!("{decided} {verb}");
            if already > 0 {
                text.push_str(&format!(", {already} already decided"));
            }
            if need_comment > 0 {
                text.push_str(&format!(
                    ", {need_comment} need a comment (approve them in the console or the CLI)"
                ));
            }
            if failed > 0 {
                text.push_str(&format!(", {failed} not recorded: tap again"));
            }
            let answer = Answer {
                query_id,
                text,
                alert: need_comment > 0,
            };
            TapOutcome::Answered {
                answer: answer.send(&api, Some(id), &request_id).await,
                settled: failed == 0,
                stale_copy: None,
            }
        }
        .boxed_local()
    }
}
