//! The notifier's lifecycle and messages: start (replay every queue), restarts, reloaded
//! settings, wake-ups for durable queue entries, breaker announcements and health pings. The
//! work they trigger lives in `mod.rs` (lanes) and `walk.rs` (batches).

use std::sync::Arc;

use actix::prelude::*;

use super::{Announce, FallbackNotifier, NAME, Reconfigure};
use crate::metrics::Metric;
use crate::notification::{LoseWakes, Wake};
use crate::supervision::{self, ActorHealth, HealthStatus, Ping};

/// On a shared store: how often each lane reads its queue's front (see `started`).
const FOLLOW_LEASE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Actor for FallbackNotifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        supervision::guarded_with(NAME, self, ctx, |act, ctx| {
            act.reload(ctx);
            act.publish_queued();
            if act.queues.shared() {
                // Entries other instances wrote come with no wake-up; and when this instance
                // takes the lease, its queues' fronts are read here.
                supervision::run_interval(ctx, NAME, FOLLOW_LEASE_EVERY, |act, ctx| {
                    if act.counts.due(act.queues.leading()) {
                        act.recount();
                    }
                    for index in 0..act.lanes.len() {
                        act.pump(index, ctx);
                    }
                });
            }
        });
    }
}

impl Supervised for FallbackNotifier {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The batch in flight was dropped with the old context; `started` replays the queues.
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Reconfigure> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _: &mut Context<Self>) {
        let mut settings = (*self.settings).clone();
        settings.max_attempts = msg.max_attempts;
        settings.dead_letter_after = msg.dead_letter_after;
        settings.retry_delay = msg.retry_delay;
        settings.batch_interval = msg.batch_interval;
        self.settings = Arc::new(settings);
    }
}

impl Handler<Wake> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, wake: Wake, ctx: &mut Context<Self>) {
        supervision::guarded_with(NAME, self, ctx, |act, ctx| act.woken(wake, ctx));
    }
}

impl Handler<Announce> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, Announce(announcement): Announce, ctx: &mut Context<Self>) {
        supervision::guarded_with(NAME, self, ctx, |act, ctx| act.announce(announcement, ctx));
    }
}

impl Handler<Ping> for FallbackNotifier {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let failing = self
            .stats
            .iter()
            .filter(|s| s.consecutive_failures > 0)
            .count();
        let stuck = self.stuck_lanes();
        let status = if failing == 0 && stuck.is_empty() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        };
        let queued: serde_json::Map<String, serde_json::Value> = self
            .lanes
            .iter()
            .map(|l| (l.queue.as_str().to_string(), serde_json::json!(l.queued)))
            .collect();
        MessageResult(ActorHealth {
            actor: NAME,
            status,
            restarts: self.restarts.count(),
            detail: serde_json::json!({
                "strategy": self.settings.strategy,
                "channels": self.stats,
                "queued": queued,
                "stuck": stuck,
            }),
        })
    }
}

impl FallbackNotifier {
    /// Lanes whose confirmed entries have waited behind an unconfirmed front for
    /// `STUCK_AFTER` or longer, with the seconds they have waited; each logged once.
    fn stuck_lanes(&mut self) -> serde_json::Map<String, serde_json::Value> {
        let mut stuck = serde_json::Map::new();
        for lane in &mut self.lanes {
            let Some(((), waited)) = lane.blocked.stuck() else {
                continue;
            };
            if lane.blocked.first_report() {
                tracing::error!(
                    actor = NAME,
                    queue = lane.queue.as_str(),
                    waited_s = waited.as_secs(),
                    confirmed = lane.ready.len(),
                    "notifications are stuck behind an entry whose commit was never confirmed; a restart of the notifier replays the queue"
                );
            }
            stuck.insert(
                lane.queue.as_str().to_string(),
                serde_json::json!(waited.as_secs()),
            );
        }
        stuck
    }
}

impl Handler<LoseWakes> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, LoseWakes(count): LoseWakes, _: &mut Context<Self>) {
        self.lose_wakes = count;
    }
}

crate::supervision::crash_handler!(FallbackNotifier, NAME);
