//! The metric families: their names, help, labels and registration (the closed label sets
//! live in `labels.rs`). What each one means for operators is in docs/metrics.md.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::REFUSAL_REASONS;

pub(super) struct Families {
    pub(super) created: IntCounter,
    pub(super) decisions: IntCounterVec,
    pub(super) time_to_decision: HistogramVec,
    pub(super) pending: IntGauge,
    pub(super) waiters: IntGauge,
    pub(super) fallback_queued: IntGauge,
    pub(super) http_requests: IntCounterVec,
    pub(super) http_duration: HistogramVec,
    pub(super) restarts: IntCounterVec,
    pub(super) fallback: IntCounterVec,
    pub(super) tg_requests: IntCounterVec,
    pub(super) tg_duration: Histogram,
    pub(super) tg_retries: IntCounterVec,
    pub(super) tg_failures: IntCounterVec,
    pub(super) tg_breaker_state: IntGauge,
    pub(super) tg_breaker_transitions: IntCounterVec,
    pub(super) tg_outbox: IntGauge,
    pub(super) tg_unauthorised: IntCounter,
    pub(super) tg_leader_changes: IntCounter,
    pub(super) tg_leader: IntGauge,
    pub(super) pg_reachable: IntGauge,
    pub(super) pg_pool: prometheus::IntGaugeVec,
    pub(super) pg_pool_waiting: IntGauge,
    pub(super) pg_statements: IntCounter,
    pub(super) pg_statement_seconds: prometheus::Counter,
    pub(super) pg_notify_lag: prometheus::Gauge,
    pub(super) pg_clock_offset: prometheus::Gauge,
    pub(super) refused: IntCounterVec,
    pub(super) reloads: IntCounterVec,
    pub(super) actor_up: prometheus::IntGaugeVec,
    pub(super) actor_ping: prometheus::GaugeVec,
    pub(super) store_size: IntGauge,
    pub(super) store_commit: prometheus::Gauge,
    pub(super) store_commit_failures: IntGauge,
    pub(super) store_commits: IntCounter,
    pub(super) store_commit_requests: IntCounter,
    pub(super) store_commit_phase: prometheus::CounterVec,
    pub(super) store_checkpoints: IntCounter,
    pub(super) store_checkpoint_failures: IntCounter,
    pub(super) dead_letters: IntGauge,
    pub(super) oldest_pending: prometheus::Gauge,
    pub(super) queue_events: IntCounterVec,
    pub(super) queue_oldest: prometheus::GaugeVec,
    pub(super) queue_age: HistogramVec,
    pub(super) ready: IntGauge,
}

pub(super) fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> C {
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
    pub(super) fn new(r: &Registry) -> Self {
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
            tg_leader_changes: register(
                r,
                IntCounter::new(
                    "approval_gate_telegram_leader_changes_total",
                    "Times this instance took or lost the Telegram poller's lease (a shared store)",
                )
                .expect("valid metric"),
            ),
            tg_leader: register(
                r,
                IntGauge::new(
                    "approval_gate_telegram_leader",
                    "1 while this instance holds the Telegram poller's lease (a shared store; 0 on sled)",
                )
                .expect("valid metric"),
            ),
            pg_reachable: register(
                r,
                IntGauge::new(
                    "approval_gate_postgres_reachable",
                    "1 while the PostgreSQL store answers (0 on sled)",
                )
                .expect("valid metric"),
            ),
            pg_pool: register(
                r,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "approval_gate_postgres_pool_connections",
                        "PostgreSQL connections of this instance's pool, busy or idle",
                    ),
                    &["state"],
                )
                .expect("valid metric"),
            ),
            pg_pool_waiting: register(
                r,
                IntGauge::new(
                    "approval_gate_postgres_pool_waiting",
                    "Callers waiting for a PostgreSQL connection",
                )
                .expect("valid metric"),
            ),
            pg_statements: register(
                r,
                IntCounter::new(
                    "approval_gate_postgres_statements_total",
                    "PostgreSQL statements and transactions run",
                )
                .expect("valid metric"),
            ),
            pg_statement_seconds: register(
                r,
                prometheus::Counter::new(
                    "approval_gate_postgres_statement_seconds_total",
                    "Time callers waited for PostgreSQL statements (pool wait and round trips)",
                )
                .expect("valid metric"),
            ),
            pg_notify_lag: register(
                r,
                prometheus::Gauge::new(
                    "approval_gate_postgres_notify_lag_seconds",
                    "From another instance's commit until this one heard of it, last seen",
                )
                .expect("valid metric"),
            ),
            pg_clock_offset: register(
                r,
                prometheus::Gauge::new(
                    "approval_gate_postgres_clock_offset_seconds",
                    "The database's clock minus this host's, as measured; deadlines here follow the database's",
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
            store_commits: register(
                r,
                IntCounter::new(
                    "approval_gate_store_commits_total",
                    "Group commits attempted since start (each one journal fdatasync)",
                )
                .expect("valid metric"),
            ),
            store_commit_requests: register(
                r,
                IntCounter::new(
                    "approval_gate_store_commit_requests_total",
                    "Durability requests the group commits answered (divided by commits: the batch size)",
                )
                .expect("valid metric"),
            ),
            store_commit_phase: register(
                r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "approval_gate_store_commit_phase_seconds_total",
                        "Time the group commits spent applying staged writes, in sled's flush and in fdatasync",
                    ),
                    &["phase"],
                )
                .expect("valid metric"),
            ),
            store_checkpoints: register(
                r,
                IntCounter::new(
                    "approval_gate_store_checkpoints_total",
                    "Store checkpoints since start (sled flushed and fsynced, its journal files removed)",
                )
                .expect("valid metric"),
            ),
            store_checkpoint_failures: register(
                r,
                IntCounter::new(
                    "approval_gate_store_checkpoint_failures_total",
                    "Store checkpoints that failed (the journal kept their files; the next one retries)",
                )
                .expect("valid metric"),
            ),
            queue_events: counter_vec(
                r,
                "approval_gate_queue_events_total",
                "Notifications entering (enqueued) and leaving (delivered, dead_lettered) each channel's durable queue",
                &["channel", "event"],
            ),
            ready: register(
                r,
                IntGauge::new(
                    "approval_gate_ready",
                    "1 if /health/ready answers 200 (registry and sweeper healthy, the store committing, not shutting down)",
                )
                .expect("valid metric"),
            ),
            queue_oldest: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "approval_gate_queue_oldest_seconds",
                        "Age of the oldest notification waiting in each channel's durable queue (0 when empty)",
                    ),
                    &["channel"],
                )
                .expect("valid metric"),
            ),
            queue_age: histogram_vec(
                r,
                "approval_gate_queue_age_seconds",
                "Age of a notification when its channel delivered it (from the change it announces)",
                &["channel"],
                prometheus::exponential_buckets(0.005, 4.0, 10).expect("valid buckets"),
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

/// `approval_gate_build_info{version}` = 1, and (Linux) the process's RSS, CPU and open fds.
pub(super) fn register_process(registry: &Registry) {
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
