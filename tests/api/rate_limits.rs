//! Limits on floods through the public API: an agent's create rate and pending approvals, an
//! operator's decisions, and an address that keeps failing authentication.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

async fn create_as(app: &TestApp, token: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/approvals", Some(token))
        .json(&new_approval())
        .send()
        .await
        .unwrap()
}

async fn refused(app: &TestApp, reason: &str) -> f64 {
    let text = app.metrics().await;
    metric(
        &text,
        &format!("approval_gate_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(-1.0)
}

#[actix_web::test]
async fn an_agent_over_its_create_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(&[
        ("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "1"),
        ("APPROVAL_GATE__LIMITS__CREATE_BURST", "3"),
    ])
    .await;
    assert_eq!(
        refused(&app, "rate_limited_create").await,
        0.0,
        "present from the start"
    );
    for _ in 0..3 {
        assert_eq!(
            create_as(&app, AGENT_TOKEN).await.status(),
            StatusCode::CREATED
        );
    }
    let limited = create_as(&app, AGENT_TOKEN).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // Another agent has its own budget.
    assert_eq!(
        create_as(&app, OTHER_AGENT_TOKEN).await.status(),
        StatusCode::CREATED
    );
    eventually(Duration::from_secs(5), "the refusal counted", || async {
        (refused(&app, "rate_limited_create").await == 1.0).then_some(())
    })
    .await;
    // Waiting as told is enough.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        create_as(&app, AGENT_TOKEN).await.status(),
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn pending_approvals_per_agent_are_capped_and_decisions_free_room() {
    let app = spawn_app_with(&[("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "2")]).await;
    let first = app.create_id(&new_approval()).await;
    app.create_id(&new_approval()).await;
    let capped = create_as(&app, AGENT_TOKEN).await;
    assert_eq!(capped.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(capped.headers().contains_key("retry-after"));
    let body: Value = capped.json().await.unwrap();
    assert_eq!(body["error"], "too_many_pending");
    // A hook at the cap is denied with a 200, as hooks must be.
    let hook = app
        .request(
            Method::POST,
            "/hooks/claude-code/pre-tool-use",
            Some(AGENT_TOKEN),
        )
        .json(&crate::agents::fixture("claude-pre-tool-use-bash"))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), StatusCode::OK);
    let answer: Value = serde_json::from_str(hook.text().await.unwrap().trim()).unwrap();
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
    assert_eq!(
        create_as(&app, OTHER_AGENT_TOKEN).await.status(),
        StatusCode::CREATED
    );
    app.decide(&first, "approve").await;
    assert_eq!(
        create_as(&app, AGENT_TOKEN).await.status(),
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn decisions_per_operator_are_rate_limited() {
    let app = spawn_app_with(&[
        ("APPROVAL_GATE__LIMITS__DECISIONS_PER_SECOND", "1"),
        ("APPROVAL_GATE__LIMITS__DECISION_BURST", "1"),
    ])
    .await;
    let a = app.create_id(&new_approval()).await;
    let b = app.create_id(&new_approval()).await;
    assert_eq!(app.decide(&a, "approve").await.status(), StatusCode::OK);
    let limited = app.decide(&b, "approve").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let status: Value = app.get(&b, None).await.json().await.unwrap();
    assert_eq!(
        status["status"], "pending",
        "a refused decision changes nothing"
    );
}

#[actix_web::test]
async fn an_address_that_keeps_failing_authentication_is_refused() {
    let app = spawn_app_with(&[("APPROVAL_GATE__LIMITS__FAILED_AUTH_PER_MINUTE", "3")]).await;
    for _ in 0..3 {
        let bad = create_as(&app, "guess-0123456789abcdef").await;
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    }
    let blocked = create_as(&app, "guess-0123456789abcdef").await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.headers().contains_key("retry-after"));
    // While blocked, even a right token is not looked at: guessing gains nothing.
    assert_eq!(
        create_as(&app, AGENT_TOKEN).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    eventually(Duration::from_secs(5), "refusals counted", || async {
        (refused(&app, "bad_token").await == 3.0 && refused(&app, "auth_blocked").await >= 2.0)
            .then_some(())
    })
    .await;
}
