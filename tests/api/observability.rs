//! Health, readiness, diagnostics, metrics and request ids, through their HTTP endpoints and the
//! fallback file.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn health_live_and_ready_answer() {
    let app = spawn_app().await;
    let health = app.health().await;
    assert_eq!(health["status"], "healthy");
    for actor in [
        "approval_registry",
        "timeout_sweeper",
        "metrics_collector",
        "fallback_notifier",
    ] {
        assert_eq!(health["actors"][actor]["status"], "healthy", "{health}");
        assert!(
            health["actors"][actor]["ping_ms"].as_f64().is_some(),
            "{health}"
        );
    }
    for path in ["/health/live", "/health/ready"] {
        let response = app
            .request(Method::GET, path, None)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[actix_web::test]
async fn database_diagnostics_count_by_status() {
    let app = spawn_app().await;
    let a = app.create_id(&new_approval()).await;
    app.create_ok(&new_approval()).await;
    app.decide(&a, "approve").await;
    let body: Value = app.get_json("/api/diagnostics/database").await;
    assert_eq!(body["counts"]["pending"], 1);
    assert_eq!(body["counts"]["approved"], 1);
    assert!(
        body["size_on_disk_bytes"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );
    assert!(body["last_flush"].as_str().is_some(), "{body}");
    assert!(
        body["path"].as_str().is_some_and(|p| p.ends_with("store")),
        "{body}"
    );
}

#[actix_web::test]
async fn metrics_use_route_templates_and_count_the_lifecycle() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    app.get(&id, None).await;
    app.decide(&id, "approve").await;
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "approval_gate_approvals_created_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "approval_gate_decisions_total{outcome=\"approved\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "approval_gate_pending_approvals"), Some(0.0));
    assert!(
        text.contains("approval_gate_time_to_decision_seconds_bucket"),
        "histogram present"
    );
    assert!(
        text.contains(r#"approval_gate_http_requests_total{method="GET",route="/api/approvals/{id}",status="200"}"#),
        "route templates label HTTP metrics"
    );
    assert!(!text.contains(&id), "no approval id in any label");
}

#[actix_web::test]
async fn request_ids_are_echoed_or_generated_and_reach_the_notifier() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .header("x-request-id", "trace-abc-123")
        .json(&new_approval())
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let generated = app
        .request(Method::GET, "/health", None)
        .send()
        .await
        .expect("send");
    let generated = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(generated.len(), 26, "a generated ULID: {generated}");

    // An unsafe client id is replaced, not echoed.
    let hostile = app
        .request(Method::GET, "/health", None)
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .expect("send");
    assert_ne!(hostile.headers()["x-request-id"], "a b\tc");

    // The fallback notifier (another actor, another thread) logged the same request id.
    let file = app.dir.path().join("notifications.jsonl");
    let line = eventually(Duration::from_secs(5), "the notification line", || async {
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["id"] == id.as_str() && v["event"] == "created")
    })
    .await;
    assert_eq!(line["request_id"], "trace-abc-123");
    assert!(
        line["decide"]["cli"].as_str().unwrap_or("").contains(&id),
        "{line}"
    );
    assert!(
        line["decide"]["rest"]
            .as_str()
            .unwrap_or("")
            .contains("/decision"),
        "{line}"
    );
}
