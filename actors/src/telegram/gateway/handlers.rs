//! The gateway's mailbox: the messages other actors and the HTTP layer send it (where the
//! registry is, wake-ups for newly durable queue entries, reloaded settings, breaker status,
//! pings) and what each does. A wake-up marks entries ready, hands them to the fallback
//! channels while the breaker is open, and pumps the queue; the rest is in `delivery`.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use super::{NAME, TelegramGateway, TelegramSettings, when, when_future};
use crate::metrics::Metric;
use crate::notification::{LoseWakes, Wake};
use crate::registry::ApprovalRegistry;
use crate::supervision::{self, ActorHealth, HealthStatus, Ping};

/// Tells the gateway where the registry is (the registry starts after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect(pub Addr<ApprovalRegistry>);

/// Circuit-breaker facts for `/api/diagnostics/circuit-breaker`.
#[derive(Message)]
#[rtype(result = "BreakerReport")]
pub struct BreakerStatus;

#[derive(Debug, Clone, Serialize)]
pub struct BreakerReport {
    pub state: &'static str,
    pub calls_in_window: usize,
    pub failures_in_window: usize,
    pub opened_at: Option<String>,
    pub next_probe_at: Option<String>,
    pub outbox_size: usize,
    /// Estimated bytes of outbox content held in memory (at most
    /// [`BUDGET_BYTES`](crate::wake_cache::BUDGET_BYTES)); the rest is read from the store when
    /// its turn comes.
    pub outbox_in_memory_bytes: usize,
}

/// New settings from a configuration reload. Who may decide, pacing, the group budget, the
/// retry policy, the breaker's thresholds and the session button change at once; the bot, the
/// chat and the way taps arrive need a restart and are kept.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub TelegramSettings);

impl Handler<Reconfigure> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, Reconfigure(mut settings): Reconfigure, _: &mut Context<Self>) {
        let old = &self.settings;
        settings.bot_token = old.bot_token.clone();
        settings.api_url = old.api_url.clone();
        settings.chat_id = old.chat_id;
        settings.webhook = old.webhook.clone();
        settings.request_timeout = old.request_timeout;
        settings.previous_secret = old.previous_secret.clone();
        if settings.group_messages_per_minute != old.group_messages_per_minute {
            self.group_sends = std::num::NonZeroU32::new(settings.group_messages_per_minute)
                .filter(|_| settings.chat_id < 0)
                .map(crate::telegram::budget::GroupBudget::per_minute);
        }
        self.breaker.reconfigure(settings.breaker.clone());
        self.settings = Arc::new(settings);
        tracing::info!(actor = NAME, "Telegram gateway reconfigured");
    }
}

impl Supervised for TelegramGateway {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Connect> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, Connect(registry): Connect, _: &mut Context<Self>) {
        self.registry = Some(registry);
    }
}

impl Handler<Wake> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, wake: Wake, ctx: &mut Context<Self>) {
        supervision::guarded_with(NAME, self, ctx, |act, ctx| act.woken(wake, ctx));
    }
}

impl TelegramGateway {
    pub(super) fn woken(&mut self, wake: Wake, ctx: &mut Context<Self>) {
        if self.delivery.lose_wakes > 0 {
            self.delivery.lose_wakes -= 1;
            tracing::warn!(actor = NAME, seqs = ?wake.confirmed, "fault injection: a wake-up ignored");
            return;
        }
        for seq in &wake.withdrawn {
            self.ready.remove(seq);
            self.cache.remove(seq);
        }
        let mut fresh = Vec::new();
        if let (Some(entry), Some(span)) = (&wake.entry, &wake.span) {
            self.spans.insert(entry.approval.id, span.clone());
        }
        if let Some(entry) = &wake.entry
            && entry.event.is_change()
            && entry.only.is_none()
            && let Some(&seq) = wake.confirmed.last()
        {
            self.superseded.insert(entry.approval.id, seq);
        }
        for seq in wake.confirmed {
            // On a shared store every visible entry is ready; one past the last count is new.
            let new = if self.queues.visible_is_durable() {
                seq > self.ready_through && !self.ready.contains(&seq)
            } else {
                !self.is_ready(seq)
            };
            if new {
                self.ready.insert(seq);
                self.queued += 1;
                fresh.push(seq);
                if let Some(entry) = &wake.entry {
                    self.cache.insert(seq, entry);
                }
            }
        }
        if let Some(blocked) = self.delivery.blocked.on()
            && (self.is_ready(blocked) || wake.withdrawn.contains(&blocked))
        {
            self.blocked_on(None);
        }
        self.publish_outbox();
        // While Telegram is known to be down, operators hear about it at once.
        if self.breaker.state() != crate::telegram::breaker::BreakerState::Closed {
            let entries = fresh
                .into_iter()
                .filter_map(|seq| {
                    // The Wake's own content when it carried one (the cache may be full).
                    let entry = match &wake.entry {
                        Some(entry) => Ok(Some(Arc::clone(entry))),
                        None => self.entry(seq),
                    };
                    match entry {
                        Ok(entry) => Some((seq, entry?)),
                        Err(error) => {
                            tracing::error!(actor = NAME, %error, seq, "cannot read the Telegram queue");
                            None
                        }
                    }
                })
                .collect();
            self.tell_fallback_many(entries, ctx);
        }
        self.pump(ctx);
    }
}

impl Handler<BreakerStatus> for TelegramGateway {
    type Result = MessageResult<BreakerStatus>;

    fn handle(&mut self, _: BreakerStatus, _: &mut Context<Self>) -> Self::Result {
        let (calls, failures) = self.breaker.window_counts(Instant::now());
        MessageResult(BreakerReport {
            state: self.breaker.state().as_str(),
            calls_in_window: calls,
            failures_in_window: failures,
            opened_at: self.breaker.opened_at().map(when),
            next_probe_at: self.breaker.next_probe_at().map(when_future),
            outbox_size: self.queued,
            outbox_in_memory_bytes: self.cache.bytes(),
        })
    }
}

impl Handler<Ping> for TelegramGateway {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        // A lost wake-up (a bug) holding deliveries or the hand-over: health reports it.
        let stuck = self.delivery.blocked.stuck();
        if let Some((seq, waited)) = stuck
            && self.delivery.blocked.first_report()
        {
            tracing::error!(
                actor = NAME,
                seq,
                waited_s = waited.as_secs(),
                "Telegram deliveries are stuck behind an entry whose commit was never confirmed; a restart of the gateway replays the queue"
            );
        }
        let status = match stuck {
            Some(_) => HealthStatus::Degraded,
            None => self.health_status(),
        };
        MessageResult(ActorHealth {
            actor: NAME,
            status,
            restarts: self.restarts.count(),
            detail: serde_json::json!({
                "stuck": stuck.map(|(seq, waited)| serde_json::json!({ "seq": seq, "waited_s": waited.as_secs() })),
                "breaker_state": self.breaker.state().as_str(),
                "bot_username": self.bot_username,
                "last_success": self.last_success.map(when),
                "last_error": self.last_error,
                "consecutive_failures": self.consecutive_failures,
                "poll_failures": self.polling.failures,
                "last_poll_error": self.last_poll_error,
                "outbox_size": self.queued,
                "dead_letters": self.queues.dead_letter_count(),
            }),
        })
    }
}

impl Handler<LoseWakes> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, LoseWakes(count): LoseWakes, _: &mut Context<Self>) {
        self.delivery.lose_wakes = count;
    }
}

crate::supervision::crash_handler!(TelegramGateway, NAME);
