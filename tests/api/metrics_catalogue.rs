//! `/metrics` as Prometheus reads it: parsed with a real exposition-format parser, every family
//! of the catalogue (docs/metrics.md) present from the first scrape with its closed label sets
//! at zero, and no label value taken from client input.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text exposition")
}

fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    label: Option<(&str, &str)>,
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .next()
}

/// Every family docs/metrics.md lists, and one label set each that alerts or panels use.
const CATALOGUE: &[(&str, Option<(&str, &str)>)] = &[
    ("approval_gate_pending_approvals", None),
    ("approval_gate_approvals_created_total", None),
    (
        "approval_gate_decisions_total",
        Some(("outcome", "timed_out")),
    ),
    (
        "approval_gate_time_to_decision_seconds",
        Some(("outcome", "approved")),
    ),
    ("approval_gate_waiters", None),
    ("approval_gate_fallback_queued", None),
    (
        "approval_gate_actor_restarts_total",
        Some(("actor", "approval_registry")),
    ),
    (
        "approval_gate_fallback_notifications_total",
        Some(("outcome", "failed")),
    ),
    (
        "approval_gate_telegram_requests_total",
        Some(("method", "sendMessage")),
    ),
    (
        "approval_gate_telegram_retries_total",
        Some(("method", "sendMessage")),
    ),
    (
        "approval_gate_telegram_failures_total",
        Some(("reason", "server_error")),
    ),
    ("approval_gate_telegram_circuit_state", None),
    (
        "approval_gate_telegram_circuit_transitions_total",
        Some(("to", "open")),
    ),
    ("approval_gate_telegram_outbox_size", None),
    ("approval_gate_telegram_unauthorised_taps_total", None),
    ("approval_gate_telegram_leader", None),
    ("approval_gate_telegram_leader_changes_total", None),
    ("approval_gate_postgres_reachable", None),
    (
        "approval_gate_postgres_pool_connections",
        Some(("state", "busy")),
    ),
    ("approval_gate_postgres_pool_waiting", None),
    ("approval_gate_postgres_statements_total", None),
    ("approval_gate_postgres_statement_seconds_total", None),
    ("approval_gate_postgres_notify_lag_seconds", None),
    ("approval_gate_postgres_clock_offset_seconds", None),
    (
        "approval_gate_refused_total",
        Some(("reason", "rate_limited_create")),
    ),
    (
        "approval_gate_config_reloads_total",
        Some(("outcome", "rejected")),
    ),
    ("approval_gate_build_info", None),
    ("approval_gate_ready", None),
    ("approval_gate_actor_up", Some(("actor", "timeout_sweeper"))),
    (
        "approval_gate_actor_ping_seconds",
        Some(("actor", "approval_registry")),
    ),
    ("approval_gate_store_size_bytes", None),
    ("approval_gate_store_commit_seconds", None),
    ("approval_gate_store_commit_failures", None),
    ("approval_gate_store_commits_total", None),
    ("approval_gate_store_commit_requests_total", None),
    ("approval_gate_store_checkpoints_total", None),
    ("approval_gate_store_checkpoint_failures_total", None),
    (
        "approval_gate_store_commit_phase_seconds_total",
        Some(("phase", "fdatasync")),
    ),
    ("approval_gate_dead_letters", None),
    ("approval_gate_oldest_pending_seconds", None),
    (
        "approval_gate_queue_oldest_seconds",
        Some(("channel", "fallback_chain")),
    ),
    (
        "approval_gate_queue_age_seconds",
        Some(("channel", "email")),
    ),
    (
        "approval_gate_queue_events_total",
        Some(("channel", "telegram")),
    ),
    ("process_resident_memory_bytes", None),
    ("process_cpu_seconds_total", None),
    ("process_open_fds", None),
];

#[actix_web::test]
async fn a_fresh_scrape_parses_and_holds_every_catalogued_family() {
    let app = spawn_app().await;
    let parsed = scrape(&app.metrics().await);
    for (family, label) in CATALOGUE {
        assert!(
            value(&parsed, family, *label).is_some(),
            "{family} {label:?} is missing from a fresh scrape"
        );
    }
    assert_eq!(
        value(
            &parsed,
            "approval_gate_decisions_total",
            Some(("outcome", "approved"))
        ),
        Some(0.0)
    );
}

#[actix_web::test]
async fn the_http_method_label_is_a_closed_set() {
    let app = spawn_app().await;
    for method in ["FROBNICATE", "X-INVENTED", "BREW"] {
        let _ = app
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                "/health",
                None,
            )
            .send()
            .await;
    }
    let text = eventually(
        std::time::Duration::from_secs(5),
        "the requests counted",
        || async {
            let text = app.metrics().await;
            text.contains("method=\"other\"").then_some(text)
        },
    )
    .await;
    for invented in ["FROBNICATE", "X-INVENTED", "BREW"] {
        assert!(!text.contains(invented), "{invented} became a label value");
    }
}

#[actix_web::test]
async fn the_served_openapi_document_is_the_committed_one_and_swagger_ui_answers() {
    let app = spawn_app().await;
    let served = app
        .request(Method::GET, "/api/openapi.json", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(served, committed, "docs/openapi.json drifted from the code");
    let document: serde_json::Value = serde_json::from_str(&served).unwrap();
    for path in [
        "/api/approvals",
        "/api/approvals/{id}/decision",
        "/hooks/claude-code/pre-tool-use",
        "/api/admin/backup",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not described"
        );
    }
    let ui = app
        .request(Method::GET, "/swagger-ui/", None)
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), reqwest::StatusCode::OK);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "the Swagger UI page"
    );
    // The UI loads the document from the route above (it is not handed a copy of its own).
    let initializer = app
        .request(Method::GET, "/swagger-ui/swagger-initializer.js", None)
        .send()
        .await
        .unwrap();
    assert_eq!(initializer.status(), reqwest::StatusCode::OK);
    assert!(
        initializer
            .text()
            .await
            .unwrap()
            .contains("\"url\": \"/api/openapi.json\""),
        "the Swagger UI points at /api/openapi.json"
    );
}

#[actix_web::test]
async fn queue_events_and_the_oldest_pending_age_follow_the_approvals() {
    let app = spawn_app().await;
    app.create_id(&new_approval()).await;
    let sum = |parsed: &prometheus_parse::Scrape, channel: &str, event: &str| {
        parsed
            .samples
            .iter()
            .filter(|s| s.metric == "approval_gate_queue_events_total")
            .filter(|s| {
                s.labels.get("channel") == Some(channel) && s.labels.get("event") == Some(event)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum::<f64>()
    };
    eventually(
        std::time::Duration::from_secs(5),
        "the file queue's events counted",
        || async {
            let parsed = scrape(&app.metrics().await);
            (sum(&parsed, "file", "enqueued") == 1.0 && sum(&parsed, "file", "delivered") == 1.0)
                .then_some(())
        },
    )
    .await;
    let aged = eventually(
        std::time::Duration::from_secs(5),
        "an aged pending approval",
        || async {
            let parsed = scrape(&app.metrics().await);
            value(&parsed, "approval_gate_oldest_pending_seconds", None).filter(|age| *age > 0.2)
        },
    )
    .await;
    assert!(aged < 60.0, "{aged}");
}

/// The group commit's counters grow with the store's own totals, by their difference at each
/// scrape: never ahead of what the store reports, never behind what it reported before.
#[actix_web::test]
async fn the_group_commit_counters_follow_the_store() {
    if sled_only("the_group_commit_counters_follow_the_store") {
        return;
    }
    let app = spawn_app().await;
    let requests = |parsed: &prometheus_parse::Scrape| {
        value(parsed, "approval_gate_store_commit_requests_total", None).unwrap_or_default()
    };
    let store_requests = |diagnostics: Value| diagnostics["commits"]["requests"].as_f64().unwrap();
    for _ in 0..3 {
        app.create_id(&new_approval()).await;
    }
    let first = scrape(&app.metrics().await);
    assert!(requests(&first) >= 3.0, "every create waited for a commit");
    for _ in 0..4 {
        app.create_id(&new_approval()).await;
    }
    let before = store_requests(app.get_json("/api/diagnostics/database").await);
    let second = scrape(&app.metrics().await);
    let after = app.get_json("/api/diagnostics/database").await;
    assert!(requests(&second) >= requests(&first) + 4.0);
    assert!(
        (before..=store_requests(after.clone())).contains(&requests(&second)),
        "the counter ({}) is the store's total at the scrape ({before} ..= {})",
        requests(&second),
        after["commits"]["requests"]
    );
    let commits = value(&second, "approval_gate_store_commits_total", None).unwrap_or_default();
    assert!(commits >= 1.0, "{commits}");
    for phase in ["apply", "fdatasync"] {
        let spent = value(
            &second,
            "approval_gate_store_commit_phase_seconds_total",
            Some(("phase", phase)),
        );
        assert!(spent.is_some_and(|s| s > 0.0), "{phase}: {spent:?}");
    }
    // Not >= 1: a commit with no request waiting (history staged by the notifiers, made
    // durable when the commit thread is idle) counts as a commit too.
    assert!(after["commits"]["requests_per_commit"].as_f64().unwrap() > 0.0);
    // sled itself is flushed by the checkpoint that follows the writes, off the commit path.
    let checkpointed = eventually(Duration::from_secs(10), "a checkpoint", || async {
        let parsed = scrape(&app.metrics().await);
        let checkpoints = value(&parsed, "approval_gate_store_checkpoints_total", None)?;
        (checkpoints >= 1.0).then_some(parsed)
    })
    .await;
    let flush = value(
        &checkpointed,
        "approval_gate_store_commit_phase_seconds_total",
        Some(("phase", "flush")),
    );
    assert!(flush.is_some_and(|s| s > 0.0), "flush: {flush:?}");
}
