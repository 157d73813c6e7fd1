//! Security boundaries through the public API: who sees what, monitoring behind auth, limits
//! on hostile input, secrets given as hashes. Limits on floods: `rate_limits.rs`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

async fn as_other_agent(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    let response = app
        .request(method, path, Some(OTHER_AGENT_TOKEN))
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn an_agent_sees_waits_on_and_cancels_only_its_own_approvals() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    let missing = ulid::Ulid::new().to_string();
    let (_, not_there) =
        as_other_agent(&app, Method::GET, &format!("/api/approvals/{missing}")).await;
    for path in [
        format!("/api/approvals/{id}"),
        format!("/api/approvals/{id}?wait=5s"),
    ] {
        let (status, body) = as_other_agent(&app, Method::GET, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            body["error"], not_there["error"],
            "same answer as a missing id"
        );
        assert!(
            !body.to_string().contains("rm -rf"),
            "no tool_input leaks: {body}"
        );
    }
    let (status, _) = as_other_agent(&app, Method::DELETE, &format!("/api/approvals/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The refused wait left no waiter behind.
    eventually(Duration::from_secs(5), "no waiters", || async {
        (metric(&app.metrics().await, "approval_gate_waiters") == Some(0.0)).then_some(())
    })
    .await;
    // Its owner and the operators still see it, pending.
    assert_eq!(app.get(&id, None).await.status(), StatusCode::OK);
    let operator = app
        .request(
            Method::GET,
            &format!("/api/approvals/{id}"),
            Some(OPERATOR_TOKEN),
        )
        .send()
        .await
        .unwrap();
    let body: Value = operator.json().await.unwrap();
    assert_eq!(body["status"], "pending");
}

#[actix_web::test]
async fn monitoring_can_require_the_operator_token() {
    let app = spawn_app_with(&[("APPROVAL_GATE__MONITORING__REQUIRE_AUTH", "true")]).await;
    for path in [
        "/metrics",
        "/api/diagnostics/database",
        "/api/diagnostics/metrics",
        "/api/diagnostics/circuit-breaker",
    ] {
        let anonymous = app.request(Method::GET, path, None).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let agent = app
            .request(Method::GET, path, Some(AGENT_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(agent.status(), StatusCode::FORBIDDEN, "{path}");
        let operator = app
            .request(Method::GET, path, Some(OPERATOR_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(operator.status(), StatusCode::OK, "{path}");
    }
    // Probes stay open.
    let ready = app
        .request(Method::GET, "/health/ready", None)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[actix_web::test]
async fn monitoring_can_live_on_its_own_loopback_listener() {
    let app = spawn_app_with(&[("APPROVAL_GATE__MONITORING__BIND", "127.0.0.1:0")]).await;
    let monitoring = app.monitoring.clone().expect("a monitoring listener");
    let http = client();
    let metrics = http
        .get(format!("{monitoring}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("approval_gate_"));
    for path in ["/api/diagnostics/database", "/health/ready"] {
        let response = http
            .get(format!("{monitoring}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // The monitoring listener serves nothing else, and the main one no longer serves metrics.
    let api = http
        .get(format!("{monitoring}/api/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let main = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn hostile_tool_input_is_refused_with_a_stable_code() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__MAX_TOOL_INPUT_BYTES", "16384")]).await;
    let body =
        |input: &str| format!(r#"{{"session_id":"s","tool_name":"Bash","tool_input":{input}}}"#);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let at_limit = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let too_deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let large = format!(r#"{{"command":"{}"}}"#, "x".repeat(20_000));
    for (input, status, code) in [
        (
            deep.as_str(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("tool_input_too_deep"),
        ),
        (
            too_deep.as_str(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("tool_input_too_deep"),
        ),
        (
            large.as_str(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("tool_input_too_large"),
        ),
        (at_limit.as_str(), StatusCode::CREATED, None),
    ] {
        let response = app
            .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
            .header("content-type", "application/json")
            .body(body(input))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            status,
            "{}",
            &input[..20.min(input.len())]
        );
        if let Some(code) = code {
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"], code);
        }
    }
    // Nothing refused was stored.
    let page: Value = app.list("?status=pending").await.json().await.unwrap();
    assert_eq!(page["approvals"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn a_token_configured_by_its_hash_works_and_nothing_logs_a_secret() {
    use crate::support::fake_telegram::{FakeTelegram, Fault};
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().unwrap();
    let operator_hash = "sha256:e4ba15bc7411be319ad18f683da1ff6968143f09f0fac67e517a5d6f526598c1";
    let callback_secret = "callback-secret-0123456789-abcdefghijkl";
    let smtp_password = "smtp-password-0123456789";
    let telegram = telegram_env(&fake.url(), fake.token());
    let mut overrides: Vec<(&str, &str)> = telegram
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    overrides.extend([
        ("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE", operator_hash),
        ("APPROVAL_GATE__TELEGRAM__CALLBACK_SECRET", callback_secret),
        ("APPROVAL_GATE__FALLBACK__EMAIL__PASSWORD", smtp_password),
        ("APPROVAL_GATE__LOGGING__LEVEL", "debug"),
    ]);
    let child = spawn_binary(dir.path(), &overrides);
    // The hash is the configured value; the plain token (its preimage) is what operators send.
    let id = child.create_id(&new_approval()).await;
    fake.wait_until(Duration::from_secs(10), "the message", |f| {
        !f.messages().is_empty()
    })
    .await;
    let decided = child
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK);
    let refused = child
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(operator_hash),
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "the hash itself is not a token"
    );
    // Make the Bot API fail in every way it can, so error paths log too.
    fake.set_down(Some(Fault::Status(502)), true);
    child.create_id(&new_approval()).await;
    let bad = child
        .request(
            Method::GET,
            "/api/approvals",
            Some("wrong-token-0123456789"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    eventually(
        Duration::from_secs(10),
        "a logged Telegram failure",
        || async {
            child
                .logs
                .lock()
                .unwrap()
                .contains("telegram")
                .then_some(())
        },
    )
    .await;
    fake.set_down(Some(Fault::DropConnection), true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let logs = child.logs.lock().unwrap().clone();
    assert!(logs.lines().count() > 10, "the child logged: {logs}");
    for secret in [
        AGENT_TOKEN,
        OPERATOR_TOKEN,
        OTHER_AGENT_TOKEN,
        fake.token(),
        callback_secret,
        smtp_password,
    ] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
    // check-config names tokens but never shows them.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_approval-gate"))
        .arg("check-config")
        .env_clear()
        .envs(test_env(dir.path(), &overrides))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("alice"), "{shown}");
    for secret in [
        AGENT_TOKEN,
        operator_hash,
        fake.token(),
        callback_secret,
        smtp_password,
    ] {
        assert!(
            !shown.contains(secret),
            "check-config showed a secret: {shown}"
        );
    }
}
