//! The getUpdates long-poll loop and button taps.
//!
//! A tap decides only if its signed data verifies, its message is in the configured chat and the
//! user is allowed; every tap is answered. The update offset is saved after the batch's taps
//! have been decided, so a restart never misses a tap; a tap seen twice (crash before the offset
//! was saved) meets the registry's compare-and-set and changes nothing.

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use teloxide::types::{CallbackQuery, Update, UpdateKind};

use super::{NAME, OFFSET_KEY, TelegramGateway};
use crate::domain::{Actor as DecidedBy, ApprovalId, Decision, Status, TelegramMessageRef};
use crate::metrics::TelegramMetric;
use crate::notification::Event;
use crate::registry::{Decide, RegistryError};
use crate::store::{Channel, QueueEntry};
use crate::supervision::{self, guarded_with};
use crate::telegram::api::Attempt;
use crate::telegram::callback::Action;
use crate::telegram::render;

#[derive(Default)]
pub(super) struct State {
    pub(super) failures: u32,
    offset: Option<i32>,
}

/// What a tap left to do once the registry answered.
enum TapOutcome {
    Refused(Attempt<()>),
    Answered {
        answer: Attempt<()>,
        /// The approval had already ended and this copy of its message was new to us: edit it.
        stale_copy: Option<Box<(crate::domain::Approval, TelegramMessageRef)>>,
    },
}

/// Who tapped, as the history shows it.
fn tapper(query: &CallbackQuery) -> DecidedBy {
    DecidedBy::Telegram {
        user_id: query.from.id.0 as i64,
        username: query.from.username.clone(),
    }
}

async fn clear_webhook(api: &crate::telegram::api::Api) {
    match api.webhook_url().await.result {
        Ok(Some(url)) if !url.is_empty() => match api.delete_webhook().await.result {
            Ok(()) => tracing::warn!(
                actor = NAME,
                webhook = %url,
                "the bot had a webhook set (used elsewhere before?); deleted it so polling receives taps"
            ),
            Err(failure) => tracing::error!(
                actor = NAME,
                webhook = %url,
                error = %failure.detail,
                "the bot has a webhook set and it could not be deleted: taps will not arrive by polling"
            ),
        },
        Ok(_) => {}
        Err(failure) => {
            tracing::warn!(actor = NAME, error = %failure.detail, "getWebhookInfo failed")
        }
    }
}

/// An update Telegram POSTed to the webhook route (already checked against the secret), as
/// the JSON body it sent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookUpdate(pub Vec<u8>);

impl Handler<WebhookUpdate> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, WebhookUpdate(body): WebhookUpdate, ctx: &mut Context<Self>) {
        let update = match serde_json::from_slice::<Update>(&body) {
            Ok(update) => update,
            // Telegram would retry a non-2xx forever; what cannot be read is logged and dropped.
            Err(error) => {
                tracing::warn!(actor = NAME, %error, "ignored an unreadable webhook update");
                return;
            }
        };
        guarded_with(NAME, self, ctx, |act, ctx| {
            if let UpdateKind::CallbackQuery(query) = update.kind {
                let tap = act.tap(query);
                ctx.spawn(tap.into_actor(act).map(|outcome, act, ctx| {
                    guarded_with(NAME, act, ctx, |act, ctx| act.after_tap(outcome, ctx));
                }));
            }
        });
    }
}

impl TelegramGateway {
    /// Webhook mode: tell Telegram where to POST taps (retried until it works; until then
    /// `/health` shows the failure).
    pub(super) fn register_webhook(
        &mut self,
        webhook: super::Webhook,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) {
        let api = self.api.clone();
        let call = async move {
            let result = api.set_webhook(webhook.url.clone(), &webhook.secret).await;
            (webhook, result)
        };
        ctx.spawn(call.into_actor(self).map(move |(webhook, result), act, ctx| {
            guarded_with(NAME, act, ctx, |act, ctx| {
                act.record_call(&result);
                match result.result {
                    Ok(()) => {
                        act.last_poll_error = None;
                        tracing::info!(actor = NAME, url = %webhook.url, "webhook registered; Telegram will POST taps");
                    }
                    Err(failure) => {
                        act.last_poll_error = Some(format!("setWebhook: {}", failure.detail));
                        let delay = act.settings.retry.delay(attempt, None);
                        tracing::warn!(actor = NAME, error = %failure.detail, retry_in_ms = delay.as_millis() as u64, "setWebhook failed");
                        supervision::run_later(ctx, NAME, delay, move |act, ctx| {
                            act.register_webhook(webhook, attempt.saturating_add(1), ctx)
                        });
                    }
                }
            });
        }));
    }

    fn offset(&mut self) -> i32 {
        if let Some(offset) = self.polling.offset {
            return offset;
        }
        let stored = self
            .meta
            .get(OFFSET_KEY)
            .ok()
            .flatten()
            .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_ref()).ok())
            .map(i32::from_be_bytes)
            .unwrap_or(0);
        self.polling.offset = Some(stored);
        stored
    }

    fn save_offset(&mut self, offset: i32, ctx: &mut Context<Self>) {
        self.polling.offset = Some(offset);
        if let Err(error) = self.meta.insert(OFFSET_KEY, &offset.to_be_bytes()) {
            tracing::error!(actor = NAME, %error, "cannot save the Telegram update offset");
        }
        self.commit_in_background(ctx);
    }

    pub(super) fn poll(&mut self, ctx: &mut Context<Self>) {
        let api = self.api.clone();
        let offset = self.offset();
        let poll = self.settings.poll_timeout;
        let need_me = self.bot_username.is_none();
        let call = async move {
            let me = if need_me {
                // First poll: a webhook left by an earlier deployment makes every getUpdates
                // answer 409, and taps would go there. Clear it, and say so.
                clear_webhook(&api).await;
                Some(api.me().await)
            } else {
                None
            };
            (me, api.updates(offset, poll).await)
        };
        ctx.spawn(call.into_actor(self).map(|(me, updates), act, ctx| {
            guarded_with(NAME, act, ctx, |act, ctx| act.polled(me, updates, ctx));
        }));
    }

    fn polled(
        &mut self,
        me: Option<Attempt<String>>,
        updates: Attempt<Vec<Update>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(me) = me {
            self.record_call(&me);
            if let Ok(username) = me.result {
                tracing::info!(actor = NAME, bot = %username, "connected to Telegram");
                self.bot_username = Some(username);
            }
        }
        self.record_call(&updates);
        let updates = match updates.result {
            Ok(updates) => updates,
            Err(failure) => {
                self.polling.failures += 1;
                self.last_poll_error = Some(format!("getUpdates: {}", failure.detail));
                let retry_after = match failure.kind {
                    crate::telegram::retry::FailureKind::Transient { retry_after } => retry_after,
                    _ => None,
                };
                let delay = self
                    .settings
                    .retry
                    .delay(self.polling.failures, retry_after);
                tracing::warn!(
                    actor = NAME,
                    failures = self.polling.failures,
                    error = %failure.detail,
                    retry_in_ms = delay.as_millis() as u64,
                    "getUpdates failed"
                );
                supervision::run_later(ctx, NAME, delay, |act, ctx| act.poll(ctx));
                return;
            }
        };
        self.polling.failures = 0;
        self.last_poll_error = None;
        let next_offset = updates
            .iter()
            .map(|u| (u.id.0 as i32).saturating_add(1))
            .max();
        let taps: Vec<LocalBoxFuture<'static, TapOutcome>> = updates
            .into_iter()
            .filter_map(|update| match update.kind {
                UpdateKind::CallbackQuery(query) => Some(self.tap(query)),
                _ => None,
            })
            .collect();
        ctx.spawn(futures_util::future::join_all(taps).into_actor(self).map(
            move |outcomes, act, ctx| {
                guarded_with(NAME, act, ctx, |act, ctx| {
                    for outcome in outcomes {
                        act.after_tap(outcome, ctx);
                    }
                    if let Some(offset) = next_offset {
                        act.save_offset(offset, ctx);
                    }
                    act.poll(ctx);
                });
            },
        ));
    }

    fn record_call<T>(&self, attempt: &Attempt<T>) {
        self.metric(TelegramMetric::Request {
            method: attempt.method,
            outcome: attempt.result.as_ref().map_or_else(|f| f.reason, |_| "ok"),
            seconds: attempt.took.as_secs_f64(),
        });
    }

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
        if message.chat_id != self.settings.chat_id {
            return Err("the message is not in the configured chat");
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
        if self.messages.get(id).contains(&message) {
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

    fn tap(&mut self, query: CallbackQuery) -> LocalBoxFuture<'static, TapOutcome> {
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
                    let event = crate::domain::AuditEvent::now("tap_refused")
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
        // Remember this copy before deciding, so the edit the decision triggers reaches it too.
        let new_copy = self.messages.add(id, message).unwrap_or(false);
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
            Action::Approve | Action::Reject => None,
        };
        tracing::info!(actor = NAME, request_id, approval_id = %id, user_id = query.from.id.0, ?action, "button tapped");
        let event = crate::domain::AuditEvent::now("tapped")
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
            let (text, stale_copy) = match result {
                Ok(approval) => (format!("{} — recorded", status_word(approval.status)), None),
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
                alert: false,
            };
            TapOutcome::Answered {
                answer: answer.send(&api, Some(id), &request_id).await,
                stale_copy,
            }
        }
        .boxed_local()
    }

    fn after_tap(&mut self, outcome: TapOutcome, ctx: &mut Context<Self>) {
        match outcome {
            TapOutcome::Refused(answer) => self.record_call(&answer),
            TapOutcome::Answered { answer, stale_copy } => {
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
        let commit = self.queues.commit();
        ctx.spawn(async move { commit.wait().await }.into_actor(self).map(
            move |result, act, ctx| {
                guarded_with(NAME, act, ctx, |act, ctx| match result {
                    Ok(()) => act.woken(
                        crate::notification::Wake {
                            channel: Channel::Telegram,
                            confirmed: vec![seq],
                            withdrawn: Vec::new(),
                            entry: None,
                            span: None,
                        },
                        ctx,
                    ),
                    Err(error) => tracing::error!(actor = NAME, %error, "cannot commit an edit"),
                })
            },
        ));
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
