//! What the gateway does with a Bot API call's outcome. Delivered: the message is logged (a
//! new message's id goes to the message log, `telegram_messages`, the one record of which
//! messages show an approval), the entry leaves the queue and the approval's history says so. Failed for now: the entry waits for its retry
//! (backoff with jitter, `retry_after` honoured) and the breaker hears of it; retries
//! exhausted, the fallback channels are told and the entry stays. Failed for good (a 4xx other
//! than 429): the entry becomes a dead letter and the fallback channels are told.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::delivery::Delivered;
use super::{NAME, TelegramGateway};
use crate::domain::AuditEvent;
use crate::metrics::Metric;
use crate::metrics::TelegramMetric;
use crate::notification::Event;
use crate::store::{Channel, QueueEntry};
use crate::telegram::api::Attempt;
use crate::telegram::retry::{Failure, FailureKind};

impl TelegramGateway {
    pub(super) fn finish(
        &mut self,
        seq: u64,
        entry: QueueEntry,
        attempt: Attempt<Delivered>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        // What digests this call showed, once it did (a failed edit is rendered again).
        let rendered = self.digests_rendering.remove(&seq).unwrap_or_default();
        if attempt.result.is_ok() {
            self.digests_shown.extend(rendered);
        }
        if matches!(attempt.result, Ok(Delivered::Nothing)) {
            // No Bot API call was made: not a breaker outcome, only a probe to give back.
            self.breaker.forget_probe();
            self.done(seq);
            return;
        }
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
        super::log_call(
            &attempt,
            Some(entry.approval.id),
            entry.request_id.as_deref().unwrap_or("-"),
        );
        self.delivery.send_ready_at = Some(now + self.settings.send_interval);
        match attempt.result {
            Ok(delivered) => self.delivered(seq, entry, Some(delivered), now),
            Err(failure) if failure.kind == FailureKind::Moot => {
                self.delivered(seq, entry, None, now)
            }
            Err(failure) if failure.is_transient() => {
                self.failed_transient(seq, &entry, failure, attempt.method, now, ctx)
            }
            Err(failure) => self.failed_permanent(seq, entry, failure, ctx),
        }
    }

    /// The entry left the queue (delivered or dead): forget it.
    pub(super) fn done(&mut self, seq: u64) {
        if let Err(error) = self.queues.ack(Channel::Telegram, &[seq]) {
            tracing::error!(actor = NAME, %error, "cannot remove a delivered queue entry");
        }
        self.forget(seq);
    }

    /// Drop every bit of in-memory state about an entry that left the queue.
    pub(super) fn forget(&mut self, seq: u64) {
        self.ready.remove(&seq);
        self.cache.remove(&seq);
        self.delivery.retries.remove(&seq);
        self.queued = self.queued.saturating_sub(1);
        self.told_fallback.remove(&seq);
        self.superseded.forget(seq);
        self.publish_outbox();
    }

    pub(super) fn delivered(
        &mut self,
        seq: u64,
        entry: QueueEntry,
        delivered: Option<Delivered>,
        now: Instant,
    ) {
        let transition = self.breaker.record(now, true);
        self.on_transition(transition);
        self.last_success = Some(now);
        self.consecutive_failures = 0;
        // The message log first, then the removal: sled recovers a prefix of its writes, so a
        // removal that survives a crash implies the message it sent is known (and edited when
        // the approval ends). Both are durable with the next checkpoint; a crash before it
        // repeats the message, whose copies a tap then records.
        self.done(seq);
        self.metrics.do_send(Metric::Queue {
            channel: "telegram",
            event: "delivered",
            count: 1,
        });
        self.metrics.do_send(Metric::QueueAge {
            channel: "telegram",
            ages: vec![entry.age_seconds(self.clock.now_ms())],
        });
        if entry.event == Event::Ended {
            // Its last Telegram call is done: let the approval's span end.
            self.spans.remove(&entry.approval.id);
        }
        let event = match &delivered {
            Some(Delivered::Sent(messages)) if !messages.is_empty() => {
                let sent: Vec<String> = messages
                    .iter()
                    .map(|m| format!("message {} sent to chat {}", m.message_id, m.chat_id))
                    .collect();
                Some(
                    AuditEvent::at(self.clock.now_ms(), "delivered")
                        .on("telegram")
                        .saying(sent.join("; ")),
                )
            }
            Some(Delivered::Edited) => Some(
                AuditEvent::at(self.clock.now_ms(), "message_edited")
                    .on("telegram")
                    .saying(format!("shows {}", entry.approval.status)),
            ),
            _ => None,
        };
        if let Some(event) = event {
            self.queues.record(entry.approval.id, &event);
        }
    }

    pub(super) fn failed_transient(
        &mut self,
        seq: u64,
        entry: &QueueEntry,
        failure: Failure,
        method: &'static str,
        now: Instant,
        ctx: &mut Context<Self>,
    ) {
        let retry_after = match failure.kind {
            FailureKind::Transient { retry_after } => retry_after,
            _ => None,
        };
        // A flood wait is Telegram answering, not Telegram down: it does not count against the
        // breaker, and it holds back every send to the chat until it has passed (the next
        // approval's message would only earn another 429 and a longer wait).
        let transition = self.breaker.record(now, retry_after.is_some());
        if let Some(wait) = retry_after {
            let until = now + wait;
            self.delivery.send_ready_at = Some(
                self.delivery
                    .send_ready_at
                    .map_or(until, |at| at.max(until)),
            );
        } else {
            self.consecutive_failures += 1;
        }
        self.last_error = Some(format!("{method}: {}", failure.detail));
        self.metric(TelegramMetric::Failure {
            reason: failure.reason,
        });
        // Nor does it use up the entry's attempts: Telegram will take it once the wait is over,
        // and handing it to the fallback channels would announce a flood wait as an outage.
        let before = self.delivery.retries.get(&seq).map_or(0, |(n, _)| *n);
        let attempts = if retry_after.is_some() {
            before
        } else {
            before + 1
        };
        let delay = self.settings.retry.delay(attempts.max(1), retry_after);
        self.delivery.retries.insert(seq, (attempts, now + delay));
        let exhausted = attempts >= self.settings.retry.max_attempts;
        tracing::warn!(
            actor = NAME,
            approval_id = %entry.approval.id,
            request_id = entry.request_id.as_deref().unwrap_or("-"),
            method,
            attempt = attempts,
            reason = failure.reason,
            error = %failure.detail,
            retry_in_ms = delay.as_millis() as u64,
            "Telegram call failed; {}",
            if exhausted { "retries exhausted, telling the fallback channels and keeping it in the outbox" } else { "retrying" }
        );
        if exhausted {
            self.tell_fallback(seq, Arc::new(entry.clone()), ctx);
        } else {
            self.metric(TelegramMetric::Retry { method });
        }
        self.on_transition(transition);
    }

    pub(super) fn failed_permanent(
        &mut self,
        seq: u64,
        entry: QueueEntry,
        failure: Failure,
        ctx: &mut Context<Self>,
    ) {
        // Telegram answered: it is up, whatever it thought of this request. The answer also
        // resolves a half-open probe.
        let transition = self.breaker.record(Instant::now(), true);
        self.on_transition(transition);
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
             moved to the dead letters and told the fallback channels"
        );
        let approval_id = entry.approval.id;
        self.tell_fallback(seq, Arc::new(entry), ctx);
        if let Err(error) = self.queues.bury(Channel::Telegram, seq, &failure.detail) {
            tracing::error!(actor = NAME, %error, "cannot move an entry to the dead letters");
        }
        self.metrics.do_send(Metric::Queue {
            channel: "telegram",
            event: "dead_lettered",
            count: 1,
        });
        let event = AuditEvent::at(self.clock.now_ms(), "dead_lettered")
            .on("telegram")
            .saying(failure.detail.clone());
        self.queues.record(approval_id, &event);
        self.forget(seq);
    }
}
