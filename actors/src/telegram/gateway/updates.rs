//! The getUpdates long-poll loop, webhook updates and the update offset (taps themselves are
//! in `taps.rs`).
//!
//! The update offset is saved after the batch's taps
//! have been decided, so a restart never misses a tap; a tap seen twice (crash before the offset
//! was saved) meets the registry's compare-and-set and changes nothing.

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use teloxide::types::{Update, UpdateKind};

use super::taps::TapOutcome;
use super::{NAME, TelegramGateway};
use crate::metrics::TelegramMetric;
use crate::supervision::{self, guarded_with};
use crate::telegram::api::Attempt;

#[derive(Default)]
pub(super) struct State {
    pub(super) failures: u32,
    offset: Option<i32>,
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
/// the JSON body it sent. Answers once the update is dealt with: a tap's decision durable (or
/// refused, or moot). `false` when the tap could not be decided (the store failed): the route
/// then answers non-2xx, so Telegram delivers it again instead of the tap being lost.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WebhookUpdate(pub Vec<u8>);

impl Handler<WebhookUpdate> for TelegramGateway {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(
        &mut self,
        WebhookUpdate(body): WebhookUpdate,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let update = match serde_json::from_slice::<Update>(&body) {
            Ok(update) => update,
            // Telegram would retry a non-2xx forever; what cannot be read is logged and dropped.
            Err(error) => {
                tracing::warn!(actor = NAME, %error, "ignored an unreadable webhook update");
                return Box::pin(actix::fut::ready(true));
            }
        };
        let UpdateKind::CallbackQuery(query) = update.kind else {
            return Box::pin(actix::fut::ready(true));
        };
        let tap = match supervision::guarded(NAME, ctx, || self.tap(query)) {
            Ok(tap) => tap,
            Err(_) => return Box::pin(actix::fut::ready(false)),
        };
        Box::pin(tap.into_actor(self).map(|outcome, act, ctx| {
            let settled = outcome.settled();
            guarded_with(NAME, act, ctx, |act, ctx| act.after_tap(outcome, ctx));
            settled
        }))
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
        let stored = match self.queues.load_offset() {
            Ok(offset) => i32::try_from(offset).unwrap_or(0),
            Err(error) => {
                tracing::error!(actor = NAME, %error, "cannot read the Telegram update offset");
                0
            }
        };
        self.polling.offset = Some(stored);
        stored
    }

    fn save_offset(&mut self, offset: i32, ctx: &mut Context<Self>) {
        self.polling.offset = Some(offset);
        match self.queues.save_offset(i64::from(offset)) {
            Ok(true) => {}
            Ok(false) => {
                // Fenced: another instance took the poller's lease; it polls from here on.
                self.leading = false;
                self.metric(crate::metrics::TelegramMetric::LeaderChange);
                tracing::warn!(
                    actor = NAME,
                    "no longer the Telegram poller; the update offset was not saved"
                );
            }
            Err(error) => {
                tracing::error!(actor = NAME, %error, "cannot save the Telegram update offset")
            }
        }
        self.commit_in_background(ctx);
    }

    pub(super) fn poll(&mut self, ctx: &mut Context<Self>) {
        if !self.leading {
            // Another instance polls; `follow_lease` starts the loop again if this one leads.
            self.poll_stopped = true;
            return;
        }
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

    pub(super) fn record_call<T>(&self, attempt: &Attempt<T>) {
        self.metric(TelegramMetric::Request {
            method: attempt.method,
            outcome: attempt.result.as_ref().map_or_else(|f| f.reason, |_| "ok"),
            seconds: attempt.took.as_secs_f64(),
        });
    }
}
