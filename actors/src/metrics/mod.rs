//! MetricsCollector: owns the Prometheus registry. Other actors and the HTTP layer send it
//! [`Metric`] events; `/metrics` asks it for the text exposition with [`Gather`].
//!
//! Every label value here comes from a closed set (outcomes, route templates, actor names,
//! channel names), never from an approval id or any other unbounded input.

use actix::prelude::*;
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounterVec, Registry, TextEncoder};

use crate::store::CommitTotals;
use crate::supervision::{ActorHealth, HealthStatus, Ping, Restarts, guarded};

mod families;
mod labels;

use families::{Families, register_process};
pub use labels::{
    ACTORS, COMMIT_PHASES, FALLBACK_CHANNELS, OUTCOMES, QUEUES, TELEGRAM_FAILURES, TELEGRAM_METHODS,
};

pub const NAME: &str = "metrics_collector";

/// One observation. Sent with `do_send`: metrics must never slow the caller down.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum Metric {
    ApprovalCreated,
    /// `outcome` is one of approved, rejected, timed_out, cancelled.
    ApprovalEnded {
        outcome: &'static str,
        seconds: f64,
    },
    PendingApprovals(i64),
    Waiters(i64),
    /// Notifications waiting in the fallback channels' queues.
    FallbackQueued(i64),
    Http {
        method: String,
        route: String,
        status: u16,
        seconds: f64,
    },
    ActorRestarted {
        actor: &'static str,
    },
    /// `count` notifications had `outcome` on a fallback channel (one message per batch).
    Fallback {
        channel: &'static str,
        outcome: &'static str,
        count: u64,
    },
    Telegram(TelegramMetric),
    /// A refused attempt; `reason` is one of [`REFUSAL_REASONS`].
    Refused {
        reason: &'static str,
    },
    /// A configuration reload: `applied` or `rejected`.
    ConfigReload {
        outcome: &'static str,
    },
    /// A notification entered (`enqueued`) or left (`delivered`, `dead_lettered`) a channel's
    /// durable queue.
    Queue {
        channel: &'static str,
        event: &'static str,
        count: u64,
    },
    /// Ages (seconds) of notifications a channel just delivered, from the change each announces.
    QueueAge {
        channel: &'static str,
        ages: Vec<f64>,
    },
    /// Whether `/health/ready` would answer 200, set just before a scrape.
    Ready(bool),
    /// Per-actor liveness, set just before a scrape: (actor, answered its ping, ping seconds).
    Actors(Vec<(&'static str, bool, f64)>),
    /// Store facts, set just before a scrape.
    Store {
        size_bytes: u64,
        last_commit_seconds: f64,
        commit_failures: u64,
        /// The group commit's totals since start (counters: only their growth is added).
        commits: CommitTotals,
        dead_letters: i64,
        /// Age of the oldest pending approval (0 when none is pending).
        oldest_pending_seconds: f64,
        /// Per channel: age of its oldest queued notification (0 when its queue is empty).
        oldest_queued_seconds: Vec<(&'static str, f64)>,
    },
    /// A database behind the store (PostgreSQL), set just before a scrape.
    Database(crate::store::DatabaseStats),
}

/// The closed set of `approval_gate_refused_total{reason}` labels, all present from the start.
pub const REFUSAL_REASONS: [&str; 8] = [
    "bad_token",
    "wrong_role",
    "auth_blocked",
    "rate_limited_create",
    "rate_limited_decision",
    "too_many_pending",
    "unauthorised_tap",
    "webhook_secret",
];

#[derive(Debug, Clone)]
pub enum TelegramMetric {
    Request {
        method: &'static str,
        outcome: &'static str,
        seconds: f64,
    },
    Retry {
        method: &'static str,
    },
    Failure {
        reason: &'static str,
    },
    BreakerState(i64),
    BreakerTransition {
        to: &'static str,
    },
    OutboxSize(i64),
    UnauthorisedTap,
    /// This instance took or lost the Telegram poller's lease (a shared store).
    LeaderChange,
}

/// Render the registry in the Prometheus text format.
#[derive(Message)]
#[rtype(result = "String")]
pub struct Gather;

/// A JSON-friendly summary of the main counters, for `/api/diagnostics/metrics`.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct Summary;

pub struct MetricsCollector {
    registry: Registry,
    m: Families,
    restarts: Restarts,
    /// The store's commit totals at the last scrape, so the counters grow by the difference.
    commits_seen: CommitTotals,
    /// The database's statement totals at the last scrape (likewise).
    database_seen: crate::store::DatabaseStats,
}

impl MetricsCollector {
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Families::new(&registry);
        m.zeros();
        register_process(&registry);
        Self {
            registry,
            m,
            restarts: Restarts::default(),
            commits_seen: CommitTotals::default(),
            database_seen: Default::default(),
        }
    }

    fn observe(&mut self, metric: Metric) {
        let m = &self.m;
        match metric {
            Metric::ApprovalCreated => m.created.inc(),
            Metric::ApprovalEnded { outcome, seconds } => {
                m.decisions.with_label_values(&[outcome]).inc();
                m.time_to_decision
                    .with_label_values(&[outcome])
                    .observe(seconds);
            }
            Metric::PendingApprovals(n) => m.pending.set(n),
            Metric::Waiters(n) => m.waiters.set(n),
            Metric::FallbackQueued(n) => m.fallback_queued.set(n),
            Metric::Http {
                method,
                route,
                status,
                seconds,
            } => {
                let status = status.to_string();
                m.http_requests
                    .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
                    .inc();
                m.http_duration
                    .with_label_values(&[method.as_str(), route.as_str()])
                    .observe(seconds);
            }
            Metric::ActorRestarted { actor } => m.restarts.with_label_values(&[actor]).inc(),
            Metric::Fallback {
                channel,
                outcome,
                count,
            } => m
                .fallback
                .with_label_values(&[channel, outcome])
                .inc_by(count),
            Metric::Telegram(t) => self.observe_telegram(t),
            Metric::Refused { reason } => m.refused.with_label_values(&[reason]).inc(),
            Metric::ConfigReload { outcome } => m.reloads.with_label_values(&[outcome]).inc(),
            Metric::Queue {
                channel,
                event,
                count,
            } => m
                .queue_events
                .with_label_values(&[channel, event])
                .inc_by(count),
            Metric::QueueAge { channel, ages } => {
                let histogram = m.queue_age.with_label_values(&[channel]);
                for age in ages {
                    histogram.observe(age);
                }
            }
            Metric::Ready(ready) => m.ready.set(i64::from(ready)),
            Metric::Actors(actors) => {
                for (actor, up, seconds) in actors {
                    m.actor_up.with_label_values(&[actor]).set(i64::from(up));
                    m.actor_ping.with_label_values(&[actor]).set(seconds);
                }
            }
            Metric::Database(stats) => self.observe_database(stats),
            Metric::Store {
                size_bytes,
                last_commit_seconds,
                commit_failures,
                commits,
                dead_letters,
                oldest_pending_seconds,
                oldest_queued_seconds,
            } => {
                self.observe_commits(commits);
                let m = &self.m;
                m.oldest_pending.set(oldest_pending_seconds);
                for (channel, seconds) in oldest_queued_seconds {
                    m.queue_oldest.with_label_values(&[channel]).set(seconds);
                }
                m.store_size
                    .set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
                m.store_commit.set(last_commit_seconds);
                m.store_commit_failures
                    .set(i64::try_from(commit_failures).unwrap_or(i64::MAX));
                m.dead_letters.set(dead_letters);
            }
        }
    }

    fn observe_database(&mut self, now: crate::store::DatabaseStats) {
        let seen = std::mem::replace(&mut self.database_seen, now);
        let m = &self.m;
        m.pg_reachable.set(i64::from(now.reachable));
        m.tg_leader.set(i64::from(now.leader));
        m.pg_pool
            .with_label_values(&["busy"])
            .set(i64::try_from(now.pool_busy).unwrap_or(i64::MAX));
        m.pg_pool
            .with_label_values(&["idle"])
            .set(i64::try_from(now.pool_idle).unwrap_or(i64::MAX));
        m.pg_pool_waiting
            .set(i64::try_from(now.pool_waiting).unwrap_or(i64::MAX));
        m.pg_statements
            .inc_by(now.statements.saturating_sub(seen.statements));
        m.pg_statement_seconds
            .inc_by((now.statement_seconds - seen.statement_seconds).max(0.0));
        m.pg_notify_lag.set(now.notify_lag_seconds);
        m.pg_clock_offset.set(now.clock_offset_seconds);
    }

    /// Counters grow by what the store did since the last scrape.
    fn observe_commits(&mut self, now: CommitTotals) {
        let seen = std::mem::replace(&mut self.commits_seen, now);
        let m = &self.m;
        m.store_commits
            .inc_by(now.commits.saturating_sub(seen.commits));
        m.store_commit_requests
            .inc_by(now.requests.saturating_sub(seen.requests));
        m.store_checkpoints
            .inc_by(now.checkpoints.saturating_sub(seen.checkpoints));
        m.store_checkpoint_failures.inc_by(
            now.checkpoint_failures
                .saturating_sub(seen.checkpoint_failures),
        );
        let phases = [
            (now.apply_seconds, seen.apply_seconds),
            (now.flush_seconds, seen.flush_seconds),
            (now.fdatasync_seconds, seen.fdatasync_seconds),
        ];
        for (phase, (now, seen)) in COMMIT_PHASES.into_iter().zip(phases) {
            m.store_commit_phase
                .with_label_values(&[phase])
                .inc_by((now - seen).max(0.0));
        }
    }

    fn observe_telegram(&mut self, metric: TelegramMetric) {
        let m = &self.m;
        match metric {
            TelegramMetric::Request {
                method,
                outcome,
                seconds,
            } => {
                m.tg_requests.with_label_values(&[method, outcome]).inc();
                m.tg_duration.observe(seconds);
            }
            TelegramMetric::Retry { method } => m.tg_retries.with_label_values(&[method]).inc(),
            TelegramMetric::Failure { reason } => m.tg_failures.with_label_values(&[reason]).inc(),
            TelegramMetric::BreakerState(state) => m.tg_breaker_state.set(state),
            TelegramMetric::BreakerTransition { to } => {
                m.tg_breaker_transitions.with_label_values(&[to]).inc()
            }
            TelegramMetric::OutboxSize(n) => m.tg_outbox.set(n),
            TelegramMetric::LeaderChange => m.tg_leader_changes.inc(),
            TelegramMetric::UnauthorisedTap => {
                m.tg_unauthorised.inc();
                m.refused.with_label_values(&["unauthorised_tap"]).inc();
            }
        }
    }

    fn summary(&self) -> serde_json::Value {
        let by_label = |vec: &IntCounterVec, label: &str| -> serde_json::Value {
            let mut out = serde_json::Map::new();
            for family in vec.collect() {
                for metric in family.get_metric() {
                    let key = metric
                        .get_label()
                        .iter()
                        .filter(|pair| pair.name() == label || label.is_empty())
                        .map(|pair| pair.value().to_string())
                        .collect::<Vec<_>>()
                        .join("/");
                    let value = metric.get_counter().get_value() as u64;
                    let slot = out.entry(key).or_insert(serde_json::json!(0));
                    *slot = serde_json::json!(slot.as_u64().unwrap_or(0) + value);
                }
            }
            serde_json::Value::Object(out)
        };
        serde_json::json!({
            "approvals_created": self.m.created.get(),
            "pending_approvals": self.m.pending.get(),
            "waiters": self.m.waiters.get(),
            "decisions": by_label(&self.m.decisions, "outcome"),
            "actor_restarts": by_label(&self.m.restarts, "actor"),
            "fallback_notifications": by_label(&self.m.fallback, ""),
            "telegram": {
                "requests": by_label(&self.m.tg_requests, "outcome"),
                "retries": by_label(&self.m.tg_retries, "method"),
                "failures": by_label(&self.m.tg_failures, "reason"),
                "circuit_state": self.m.tg_breaker_state.get(),
                "outbox_size": self.m.tg_outbox.get(),
                "unauthorised_taps": self.m.tg_unauthorised.get(),
            },
        })
    }
}

impl Default for MetricsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Actor for MetricsCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Metrics arrive from every actor and every HTTP worker; a small mailbox would make
        // `send` callers wait on us.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Supervised for MetricsCollector {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.record(NAME);
        // Our own registry survives the restart (the supervisor keeps this value), so the
        // restart can be counted in it directly.
        self.m.restarts.with_label_values(&[NAME]).inc();
    }
}

impl Handler<Metric> for MetricsCollector {
    type Result = ();

    fn handle(&mut self, metric: Metric, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || self.observe(metric));
    }
}

impl Handler<Gather> for MetricsCollector {
    type Result = String;

    fn handle(&mut self, _: Gather, _: &mut Context<Self>) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Handler<Summary> for MetricsCollector {
    type Result = MessageResult<Summary>;

    fn handle(&mut self, _: Summary, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.summary())
    }
}

impl Handler<Ping> for MetricsCollector {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ActorHealth {
            actor: NAME,
            status: HealthStatus::Healthy,
            restarts: self.restarts.count(),
            detail: serde_json::json!({}),
        })
    }
}

crate::supervision::crash_handler!(MetricsCollector, NAME);
