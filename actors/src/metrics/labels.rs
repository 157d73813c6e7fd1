//! The closed label sets: every value a label may take, so each series an alert or a panel
//! names exists from the first scrape (at zero) rather than appearing with its first event.
//! Here: the sets, and [`Families::zeros`], which creates their series.

use super::families::Families;

pub const OUTCOMES: [&str; 4] = ["approved", "rejected", "timed_out", "cancelled"];
pub const ACTORS: [&str; 5] = [
    "approval_registry",
    "timeout_sweeper",
    "metrics_collector",
    "fallback_notifier",
    "telegram_gateway",
];
/// The phases of a group commit, in order.
pub const COMMIT_PHASES: [&str; 3] = ["apply", "flush", "fdatasync"];
pub const FALLBACK_CHANNELS: [&str; 3] = ["console", "file", "email"];
/// The durable queues (one per channel, or the chain's under strategy `first`).
pub const QUEUES: [&str; 5] = ["telegram", "console", "file", "email", "fallback_chain"];
pub const TELEGRAM_METHODS: [&str; 5] = [
    "sendMessage",
    "editMessageText",
    "answerCallbackQuery",
    "getUpdates",
    "getMe",
];
pub const TELEGRAM_FAILURES: [&str; 10] = [
    "timeout",
    "network",
    "invalid_response",
    "server_error",
    "rate_limited",
    "chat_migrated",
    "forbidden",
    "invalid_token",
    "chat_not_found",
    "bad_request",
];

impl Families {
    pub(super) fn zeros(&self) {
        for outcome in OUTCOMES {
            self.decisions.with_label_values(&[outcome]);
            self.time_to_decision.with_label_values(&[outcome]);
        }
        for actor in ACTORS {
            self.restarts.with_label_values(&[actor]);
        }
        for state in ["busy", "idle"] {
            self.pg_pool.with_label_values(&[state]);
        }
        for channel in FALLBACK_CHANNELS {
            for outcome in ["delivered", "failed"] {
                self.fallback.with_label_values(&[channel, outcome]);
            }
        }
        for method in TELEGRAM_METHODS {
            self.tg_requests.with_label_values(&[method, "ok"]);
            self.tg_retries.with_label_values(&[method]);
        }
        for reason in TELEGRAM_FAILURES {
            self.tg_failures.with_label_values(&[reason]);
        }
        for phase in COMMIT_PHASES {
            self.store_commit_phase.with_label_values(&[phase]);
        }
        for to in ["closed", "open", "half_open"] {
            self.tg_breaker_transitions.with_label_values(&[to]);
        }
        for channel in QUEUES {
            for event in ["enqueued", "delivered", "dead_lettered"] {
                self.queue_events.with_label_values(&[channel, event]);
            }
            self.queue_oldest.with_label_values(&[channel]);
            self.queue_age.with_label_values(&[channel]);
        }
        // The four that always run (the gateway only with Telegram on: no false "down").
        for actor in &ACTORS[..4] {
            self.actor_up.with_label_values(&[actor]).set(1);
            self.actor_ping.with_label_values(&[actor]);
        }
    }
}
