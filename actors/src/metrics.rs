//! MetricsCollector: owns the Prometheus registry. Other actors and the HTTP layer send it
//! [`Metric`] events; `/metrics` asks it for the text exposition with [`Gather`].
//!
//! Every label value here comes from a closed set (outcomes, route templates, actor names,
//! channel names), never from an approval id or any other unbounded input.

use actix::prelude::*;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::supervision::{ActorHealth, HealthStatus, Ping, Restarts, guarded};

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
    Fallback {
        channel: &'static str,
        outcome: &'static str,
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
    /// Per-actor liveness, set just before a scrape: (actor, answered its ping, ping seconds).
    Actors(Vec<(&'static str, bool, f64)>),
    /// Store facts, set just before a scrape.
    Store {
        size_bytes: u64,
        last_commit_seconds: f64,
        commit_failures: u64,
        dead_letters: i64,
        /// Age of the oldest pending approval (0 when none is pending).
        oldest_pending_seconds: f64,
    },
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
}

struct Families {
    created: IntCounter,
    decisions: IntCounterVec,
    time_to_decision: HistogramVec,
    pending: IntGauge,
    waiters: IntGauge,
    fallback_queued: IntGauge,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    restarts: IntCounterVec,
    fallback: IntCounterVec,
    tg_requests: IntCounterVec,
    tg_duration: Histogram,
    tg_retries: IntCounterVec,
    tg_failures: IntCounterVec,
    tg_breaker_state: IntGauge,
    tg_breaker_transitions: IntCounterVec,
    tg_outbox: IntGauge,
    tg_unauthorised: IntCounter,
    refused: IntCounterVec,
    reloads: IntCounterVec,
    actor_up: prometheus::IntGaugeVec,
    actor_ping: prometheus::GaugeVec,
    store_size: IntGauge,
    store_commit: prometheus::Gauge,
    store_commit_failures: IntGauge,
    dead_letters: IntGauge,
    oldest_pending: prometheus::Gauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are static and unique, so registration cannot collide; a failure would be a
    // programming error caught by the metrics tests, not a runtime condition.
    if let Err(error) = registry.register(Box::new(c.clone())) {
        tracing::error!(%error, "metric registration failed");
    }
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(r, HistogramVec::new(opts, labels).expect("valid metric"))
}

impl Families {
    fn new(r: &Registry) -> Self {
        let latency = prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let decision = vec![
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
        ];
        Families {
            created: register(
                r,
                IntCounter::new(
                    "approval_gate_approvals_created_total",
                    "Approval requests created",
                )
                .expect("valid metric"),
            ),
            decisions: counter_vec(
                r,
                "approval_gate_decisions_total",
                "Approvals that ended, by outcome",
                &["outcome"],
            ),
            time_to_decision: histogram_vec(
                r,
                "approval_gate_time_to_decision_seconds",
                "Time from creation to the end of an approval",
                &["outcome"],
                decision,
            ),
            pending: register(
                r,
                IntGauge::new(
                    "approval_gate_pending_approvals",
                    "Approvals waiting for a decision",
                )
                .expect("valid metric"),
            ),
            waiters: register(
                r,
                IntGauge::new(
                    "approval_gate_waiters",
                    "Long polls currently waiting for a decision",
                )
                .expect("valid metric"),
            ),
            fallback_queued: register(
                r,
                IntGauge::new(
                    "approval_gate_fallback_queued",
                    "Notifications waiting in the fallback channels' durable queues",
                )
                .expect("valid metric"),
            ),
            http_requests: counter_vec(
                r,
                "approval_gate_http_requests_total",
                "HTTP requests by route template and status",
                &["method", "route", "status"],
            ),
            http_duration: histogram_vec(
                r,
                "approval_gate_http_request_duration_seconds",
                "HTTP request latency by route template",
                &["method", "route"],
                latency.clone(),
            ),
            restarts: counter_vec(
                r,
                "approval_gate_actor_restarts_total",
                "Actor restarts by the supervisor",
                &["actor"],
            ),
            fallback: counter_vec(
                r,
                "approval_gate_fallback_notifications_total",
                "Fallback notifications by channel and outcome",
                &["channel", "outcome"],
            ),
            tg_requests: counter_vec(
                r,
                "approval_gate_telegram_requests_total",
                "Telegram Bot API calls by method and outcome",
                &["method", "outcome"],
            ),
            tg_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "approval_gate_telegram_request_duration_seconds",
                        "Telegram Bot API call latency",
                    )
                    .buckets(latency),
                )
                .expect("valid metric"),
            ),
            tg_retries: counter_vec(
                r,
                "approval_gate_telegram_retries_total",
                "Telegram calls retried",
                &["method"],
            ),
            tg_failures: counter_vec(
                r,
                "approval_gate_telegram_failures_total",
                "Telegram call failures by reason",
                &["reason"],
            ),
            tg_breaker_state: register(
                r,
                IntGauge::new(
                    "approval_gate_telegram_circuit_state",
                    "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                )
                .expect("valid metric"),
            ),
            tg_breaker_transitions: counter_vec(
                r,
                "approval_gate_telegram_circuit_transitions_total",
                "Circuit breaker transitions by new state",
                &["to"],
            ),
            tg_outbox: register(
                r,
                IntGauge::new(
                    "approval_gate_telegram_outbox_size",
                    "Telegram notifications waiting for delivery",
                )
                .expect("valid metric"),
            ),
            tg_unauthorised: register(
                r,
                IntCounter::new(
                    "approval_gate_telegram_unauthorised_taps_total",
                    "Button taps refused (unknown user, wrong chat or bad signature)",
                )
                .expect("valid metric"),
            ),
            refused: {
                let refused = counter_vec(
                    r,
                    "approval_gate_refused_total",
                    "Refused attempts by reason (bad or wrong token, rate limits, taps, webhook secret)",
                    &["reason"],
                );
                for reason in REFUSAL_REASONS {
                    refused.with_label_values(&[reason]);
                }
                refused
            },
            reloads: {
                let reloads = counter_vec(
                    r,
                    "approval_gate_config_reloads_total",
                    "Configuration reloads (SIGHUP or a changed --config file) by outcome",
                    &["outcome"],
                );
                for outcome in ["applied", "rejected"] {
                    reloads.with_label_values(&[outcome]);
                }
                reloads
            },
            actor_up: register(
                r,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "approval_gate_actor_up",
                        "1 if the actor answered its health ping at the last scrape",
                    ),
                    &["actor"],
                )
                .expect("valid metric"),
            ),
            actor_ping: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "approval_gate_actor_ping_seconds",
                        "How long the actor took to answer its health ping at the last scrape",
                    ),
                    &["actor"],
                )
                .expect("valid metric"),
            ),
            store_size: register(
                r,
                IntGauge::new("approval_gate_store_size_bytes", "The store's size on disk")
                    .expect("valid metric"),
            ),
            store_commit: register(
                r,
                prometheus::Gauge::new(
                    "approval_gate_store_commit_seconds",
                    "Duration of the last group commit (apply, flush and fdatasync)",
                )
                .expect("valid metric"),
            ),
            store_commit_failures: register(
                r,
                IntGauge::new(
                    "approval_gate_store_commit_failures",
                    "Group commits that failed since start",
                )
                .expect("valid metric"),
            ),
            oldest_pending: register(
                r,
                prometheus::Gauge::new(
                    "approval_gate_oldest_pending_seconds",
                    "Age of the oldest approval still waiting for a decision (0 when none waits)",
                )
                .expect("valid metric"),
            ),
            dead_letters: register(
                r,
                IntGauge::new(
                    "approval_gate_dead_letters",
                    "Notifications no channel could deliver (GET /api/admin/dead-letters)",
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// Closed label sets, so every series an alert or a panel names exists from the first scrape
/// (at zero) rather than appearing with its first event.
pub const OUTCOMES: [&str; 4] = ["approved", "rejected", "timed_out", "cancelled"];
pub const ACTORS: [&str; 5] = [
    "approval_registry",
    "timeout_sweeper",
    "metrics_collector",
    "fallback_notifier",
    "telegram_gateway",
];
pub const FALLBACK_CHANNELS: [&str; 3] = ["console", "file", "email"];
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
    fn zeros(&self) {
        for outcome in OUTCOMES {
            self.decisions.with_label_values(&[outcome]);
            self.time_to_decision.with_label_values(&[outcome]);
        }
        for actor in ACTORS {
            self.restarts.with_label_values(&[actor]);
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
        for to in ["closed", "open", "half_open"] {
            self.tg_breaker_transitions.with_label_values(&[to]);
        }
        // The four that always run (the gateway only with Telegram on: no false "down").
        for actor in &ACTORS[..4] {
            self.actor_up.with_label_values(&[actor]).set(1);
            self.actor_ping.with_label_values(&[actor]);
        }
    }
}

/// `approval_gate_build_info{version}` = 1, and (Linux) the process's RSS, CPU and open fds.
fn register_process(registry: &Registry) {
    let info = prometheus::IntGaugeVec::new(
        Opts::new("approval_gate_build_info", "The running build (always 1)"),
        &["version"],
    )
    .expect("valid metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let _ = register(registry, info);
    #[cfg(target_os = "linux")]
    if let Err(error) = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        tracing::error!(%error, "process metrics are unavailable");
    }
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
            Metric::Fallback { channel, outcome } => {
                m.fallback.with_label_values(&[channel, outcome]).inc()
            }
            Metric::Telegram(t) => self.observe_telegram(t),
            Metric::Refused { reason } => m.refused.with_label_values(&[reason]).inc(),
            Metric::ConfigReload { outcome } => m.reloads.with_label_values(&[outcome]).inc(),
            Metric::Actors(actors) => {
                for (actor, up, seconds) in actors {
                    m.actor_up.with_label_values(&[actor]).set(i64::from(up));
                    m.actor_ping.with_label_values(&[actor]).set(seconds);
                }
            }
            Metric::Store {
                size_bytes,
                last_commit_seconds,
                commit_failures,
                dead_letters,
                oldest_pending_seconds,
            } => {
                m.oldest_pending.set(oldest_pending_seconds);
                m.store_size
                    .set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
                m.store_commit.set(last_commit_seconds);
                m.store_commit_failures
                    .set(i64::try_from(commit_failures).unwrap_or(i64::MAX));
                m.dead_letters.set(dead_letters);
            }
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
