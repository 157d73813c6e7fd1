//! Draining the outbox: one Bot API call at a time, oldest entry first, paced for the chat,
//! retried with backoff, gated by the circuit breaker. An entry leaves the outbox only when
//! Telegram confirms it (or moves to the dead-letter tree when it never can).

use std::time::Instant;

use actix::prelude::*;

use super::{NAME, TelegramGateway};
use crate::domain::TelegramMessageRef;
use crate::metrics::TelegramMetric;
use crate::notification::{Event, Notification, Notify};
use crate::registry::AttachMessage;
use crate::supervision::guarded_with;
use crate::telegram::api::Attempt;
use crate::telegram::outbox::{Entry, Job};
use crate::telegram::render;
use crate::telegram::retry::{Failure, FailureKind};

#[derive(Default)]
pub(super) struct State {
    delivering: bool,
    /// The entry being worked on and how many attempts it has had.
    head: Option<u64>,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Pacing: no message to the chat before this.
    send_ready_at: Option<Instant>,
    wake: Option<(Instant, SpawnHandle)>,
}

pub(super) enum Delivered {
    Sent(TelegramMessageRef),
    Edited,
}

fn notification_of(entry: &Entry) -> Notification {
    Notification {
        event: if entry.approval.status.is_terminal() {
            Event::Ended
        } else {
            Event::Created
        },
        approval: entry.approval.clone(),
        request_id: entry.request_id.clone(),
    }
}

impl TelegramGateway {
    /// Deliver the outbox's head if nothing stops us; otherwise arrange to be woken.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.delivery.delivering {
            return;
        }
        let (seq, entry) = match self.outbox.first() {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(actor = NAME, %error, "cannot read the outbox");
                return;
            }
        };
        if self.delivery.head != Some(seq) {
            self.delivery.head = Some(seq);
            self.delivery.attempts = 0;
            self.delivery.retry_at = None;
        }
        let now = Instant::now();
        let not_before = [self.delivery.retry_at, self.delivery.send_ready_at]
            .into_iter()
            .flatten()
            .max();
        if let Some(at) = not_before.filter(|at| *at > now) {
            self.wake_at(ctx, at);
            return;
        }
        let (allowed, transition) = self.breaker.try_acquire(now);
        self.on_transition(transition);
        if !allowed {
            // Skipping costs nothing but this check; operators hear about what waits.
            self.tell_fallback_all();
            if let Some(at) = self.breaker.next_probe_at() {
                self.wake_at(ctx, at);
            }
            return;
        }
        self.delivery.delivering = true;
        let call = self.deliver(&entry);
        ctx.spawn(call.into_actor(self).map(move |attempt, act, ctx| {
            act.delivery.delivering = false;
            guarded_with(NAME, act, ctx, |act, ctx| {
                act.finish(seq, entry, attempt, ctx);
                act.pump(ctx);
            });
        }));
    }

    fn wake_at(&mut self, ctx: &mut Context<Self>, at: Instant) {
        if let Some((current, handle)) = self.delivery.wake {
            if current <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.delivery.wake = None;
            act.pump(ctx);
        });
        self.delivery.wake = Some((at, handle));
    }

    /// The Bot API call(s) for one entry, as an owned future.
    fn deliver(&self, entry: &Entry) -> impl Future<Output = Attempt<Delivered>> + 'static {
        let api = self.api.clone();
        let text = render::message_text(&entry.approval);
        let keyboard = render::keyboard(&entry.approval, &self.codec);
        let chat_id = self.settings.chat_id;
        let targets = match entry.job {
            Job::Send => Vec::new(),
            Job::Edit {
                only: Some(message),
            } => vec![message],
            Job::Edit { only: None } => self.messages.get(entry.approval.id),
        };
        let job = entry.job.clone();
        async move {
            if job == Job::Send {
                let attempt = api.send(chat_id, text, keyboard).await;
                return Attempt {
                    method: attempt.method,
                    took: attempt.took,
                    result: attempt.result.map(Delivered::Sent),
                };
            }
            let mut last = Attempt {
                method: "editMessageText",
                result: Ok(Delivered::Edited),
                took: std::time::Duration::ZERO,
            };
            // Every copy gets the final text; one that is gone or already right is done.
            for target in targets {
                let attempt = api.edit(target, text.clone(), keyboard.clone()).await;
                last.took += attempt.took;
                match attempt.result {
                    Ok(()) => {}
                    Err(failure) if failure.kind == FailureKind::Moot => {}
                    Err(failure) => {
                        last.result = Err(failure);
                        break;
                    }
                }
            }
            last
        }
    }

    fn finish(
        &mut self,
        seq: u64,
        entry: Entry,
        attempt: Attempt<Delivered>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let outcome = match &attempt.result {
            Ok(_) => "ok",
            Err(failure) if failure.kind == FailureKind::Moot => "ok",
            Err(failure) => failure.reason,
        };
        self.metric(TelegramMetric::Request {
            method: attempt.method,
            outcome,
            seconds: attempt.took.as_secs_f64(),
        });
        self.delivery.send_ready_at = Some(now + self.settings.send_interval);
        match attempt.result {
            Ok(delivered) => self.delivered(seq, entry, Some(delivered), now, ctx),
            Err(failure) if failure.kind == FailureKind::Moot => {
                self.delivered(seq, entry, None, now, ctx)
            }
            Err(failure) if failure.is_transient() => {
                self.failed_transient(seq, &entry, failure, attempt.method, now)
            }
            Err(failure) => self.failed_permanent(seq, &entry, failure, ctx),
        }
    }

    fn delivered(
        &mut self,
        seq: u64,
        entry: Entry,
        delivered: Option<Delivered>,
        now: Instant,
        ctx: &mut Context<Self>,
    ) {
        let transition = self.breaker.record(now, true);
        self.on_transition(transition);
        self.last_success = Some(now);
        self.consecutive_failures = 0;
        // The approval may have ended while its send was in flight (the entry was rewritten):
        // the message just sent is stale, so queue an edit of it.
        let rewritten = self
            .outbox
            .get(seq)
            .ok()
            .flatten()
            .filter(|e| e.approval.status != entry.approval.status);
        if let Err(error) = self.outbox.remove(seq) {
            tracing::error!(actor = NAME, %error, "cannot remove a delivered outbox entry");
        }
        if let Some(Delivered::Sent(message)) = delivered {
            if let Err(error) = self.messages.add(entry.approval.id, message) {
                tracing::error!(actor = NAME, %error, "cannot record a sent message");
            }
            if let Some(registry) = &self.registry {
                registry.do_send(AttachMessage {
                    id: entry.approval.id,
                    message,
                });
            }
        }
        if let Some(newer) = rewritten
            && let Err(error) = self.outbox.push_ended(newer.approval, newer.request_id)
        {
            tracing::error!(actor = NAME, %error, "cannot queue an edit");
        }
        self.told_fallback.remove(&seq);
        self.commit_in_background(ctx);
        self.publish_outbox();
    }

    fn failed_transient(
        &mut self,
        seq: u64,
        entry: &Entry,
        failure: Failure,
        method: &'static str,
        now: Instant,
    ) {
        let transition = self.breaker.record(now, false);
        self.consecutive_failures += 1;
        self.last_error = Some(format!("{method}: {}", failure.detail));
        self.metric(TelegramMetric::Failure {
            reason: failure.reason,
        });
        self.delivery.attempts += 1;
        let retry_after = match failure.kind {
            FailureKind::Transient { retry_after } => retry_after,
            _ => None,
        };
        let delay = self
            .settings
            .retry
            .delay(self.delivery.attempts, retry_after);
        self.delivery.retry_at = Some(now + delay);
        let exhausted = self.delivery.attempts >= self.settings.retry.max_attempts;
        tracing::warn!(
            actor = NAME,
            approval_id = %entry.approval.id,
            request_id = entry.request_id.as_deref().unwrap_or("-"),
            method,
            attempt = self.delivery.attempts,
            reason = failure.reason,
            error = %failure.detail,
            retry_in_ms = delay.as_millis() as u64,
            "Telegram call failed; {}",
            if exhausted { "retries exhausted, telling the fallback channels and keeping it in the outbox" } else { "retrying" }
        );
        if exhausted {
            self.tell_fallback(seq, notification_of(entry));
        } else {
            self.metric(TelegramMetric::Retry { method });
        }
        self.on_transition(transition);
    }

    fn failed_permanent(
        &mut self,
        seq: u64,
        entry: &Entry,
        failure: Failure,
        ctx: &mut Context<Self>,
    ) {
        self.last_error = Some(failure.detail.clone());
        self.metric(TelegramMetric::Failure {
            reason: failure.reason,
        });
        tracing::error!(
            actor = NAME,
            approval_id = %entry.approval.id,
            request_id = entry.request_id.as_deref().unwrap_or("-"),
            reason = failure.reason,
            error = %failure.detail,
            "Telegram refused the notification permanently (check telegram.chat_id and the bot's rights); \
             moved to the dead-letter tree and told the fallback channels"
        );
        self.tell_fallback(seq, notification_of(entry));
        if let Err(error) = self.outbox.bury(seq, &failure.detail) {
            tracing::error!(actor = NAME, %error, "cannot move an entry to the dead-letter tree");
        }
        self.told_fallback.remove(&seq);
        self.commit_in_background(ctx);
        self.publish_outbox();
    }

    /// Tell the fallback channels about one outbox entry, once.
    pub(super) fn tell_fallback(&mut self, seq: u64, notification: Notification) {
        if seq > self.told_through && self.told_fallback.insert(seq) {
            self.fallback.do_send(Notify(notification));
        }
    }

    /// Tell them about every entry queued since the last time: sequence numbers only grow, so
    /// a watermark makes this O(new entries), not O(outbox), on each pump while the breaker
    /// is open.
    fn tell_fallback_all(&mut self) {
        let untold: Vec<(u64, Notification)> = self
            .outbox
            .entries_after(self.told_through)
            .map(|(seq, entry)| (seq, notification_of(&entry)))
            .collect();
        for (seq, notification) in untold {
            self.tell_fallback(seq, notification);
            self.told_through = seq;
        }
        let through = self.told_through;
        self.told_fallback.retain(|seq| *seq > through);
    }
}
