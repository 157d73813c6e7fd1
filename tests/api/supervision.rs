//! Supervision: an actor made to fail is restarted, keeps working, and `/health` and the
//! metrics show the restart.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

async fn restarts(app: &TestApp, actor: &str) -> Option<u64> {
    app.health().await["actors"][actor]["restarts"].as_u64()
}

#[actix_web::test]
async fn every_actor_is_restarted_after_a_failure_and_health_counts_it() {
    let app = spawn_app().await;
    let before = app.create_id(&new_approval()).await;

    for actor in [
        "approval_registry",
        "timeout_sweeper",
        "metrics_collector",
        "fallback_notifier",
    ] {
        assert_eq!(restarts(&app, actor).await, Some(0), "{actor}");
        crash_actor(&app, actor).await;
        eventually(
            Duration::from_secs(10),
            &format!("{actor} to be restarted"),
            || async { (restarts(&app, actor).await == Some(1)).then_some(()) },
        )
        .await;
        let health = app.health().await;
        assert_eq!(health["actors"][actor]["status"], "healthy", "{health}");
    }
    let text = app.metrics().await;
    for actor in [
        "approval_registry",
        "timeout_sweeper",
        "metrics_collector",
        "fallback_notifier",
    ] {
        let sample = format!("approval_gate_actor_restarts_total{{actor=\"{actor}\"}}");
        assert_eq!(metric(&text, &sample), Some(1.0), "{sample}");
    }

    // The restarted registry reloaded its state from sled: old approvals are still decidable,
    // new ones can be created, and the sweeper still fires deadlines.
    assert_eq!(
        app.decide(&before, "approve").await.status(),
        StatusCode::OK
    );
    let mut body = new_approval();
    body["timeout"] = serde_json::json!("1s");
    let id = app.create_id(&body).await;
    let ended: Value = app.get(&id, Some("10s")).await.json().await.expect("json");
    assert_eq!(ended["status"], "timed_out");
}

#[actix_web::test]
async fn fault_injection_is_off_unless_configured() {
    let app = spawn_app_with(&[("APPROVAL_GATE__DEBUG__FAULT_INJECTION", "false")]).await;
    let response = app
        .request(
            Method::POST,
            "/api/debug/actors/approval_registry/crash",
            Some(OPERATOR_TOKEN),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(restarts(&app, "approval_registry").await, Some(0));
}
