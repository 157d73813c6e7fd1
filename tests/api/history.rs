//! An approval's append-only history (`GET /api/approvals/{id}/events`): every change, every
//! delivery and every tap, in order, for operators only.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

async fn history(app: &impl Api, id: &str, token: Option<&str>) -> (StatusCode, Value) {
    let response = app
        .request(Method::GET, &format!("/api/approvals/{id}/events"), token)
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn kinds(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| match e["channel"].as_str() {
                    Some(channel) => format!("{}:{channel}", e["kind"].as_str().unwrap_or("?")),
                    None => e["kind"].as_str().unwrap_or("?").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_history_records_creation_delivery_and_the_decision_for_operators_only() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    let delivered = eventually(WAIT, "console and file deliveries", || async {
        let (_, body) = history(&app, &id, Some(OPERATOR_TOKEN)).await;
        let kinds = kinds(&body);
        (kinds.contains(&"delivered:console".to_string())
            && kinds.contains(&"delivered:file".to_string()))
        .then_some(body)
    })
    .await;
    assert_eq!(kinds(&delivered)[0], "created");
    assert_eq!(delivered["events"][0]["actor"], "agent:ci_agent");
    app.decide(&id, "reject").await;
    let (status, body) = history(&app, &id, Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let rejected = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rejected")
        .expect("the decision is recorded")
        .clone();
    assert_eq!(rejected["actor"], "operator:alice");
    assert_eq!(rejected["detail"], "from the tests");

    let (status, _) = history(&app, &id, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = history(&app, &id, Some(AGENT_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = history(&app, &ulid::Ulid::new().to_string(), Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn policy_decisions_and_grants_are_on_the_history() {
    let config = format!("{}/config/policy.example.toml", env!("CARGO_MANIFEST_DIR"));
    let app = spawn_app_with_config(&config, &[]).await;
    let denied = app
        .create_ok(
            &json!({"session_id": "s", "tool_name": "Bash", "tool_input": {"command": "rm -rf /"}}),
        )
        .await;
    let (_, body) = history(&app, denied["id"].as_str().unwrap(), Some(OPERATOR_TOKEN)).await;
    assert_eq!(
        kinds(&body),
        ["created", "policy_applied", "risk_assessed", "rejected"]
    );
    assert_eq!(body["events"][1]["actor"], "policy:no-rm-rf-root");
    // Denied or not, what the detectors saw is on the record.
    assert!(
        body["events"][2]["detail"]
            .as_str()
            .unwrap()
            .starts_with("critical: "),
        "{body}"
    );
}

#[actix_web::test]
async fn taps_authorised_or_not_are_on_the_history() {
    use crate::support::fake_telegram::{FakeTelegram, FakeUser};
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &[]).await;
    let id = app.create_id(&new_approval()).await;
    fake.wait_until(WAIT, "the message", |f| {
        f.messages().iter().any(|m| m.text.contains(&id))
    })
    .await;
    let message = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(&id))
        .expect("message");
    let approve = message
        .callback_data()
        .into_iter()
        .find(|d| d.starts_with("a:"))
        .expect("button");
    let stranger = FakeUser::new(666).with_username("mallory");
    let refused = fake.inject_callback(&stranger, CHAT_ID, message.message_id, &approve);
    fake.wait_for_answer(&refused, WAIT).await;
    let operator = FakeUser::new(OPERATOR_USER_ID).with_username("alice_ops");
    let tapped = fake.inject_callback(&operator, CHAT_ID, message.message_id, &approve);
    fake.wait_for_answer(&tapped, WAIT).await;
    let body = eventually(WAIT, "the edit on the history", || async {
        let (_, body) = history(&app, &id, Some(OPERATOR_TOKEN)).await;
        kinds(&body)
            .contains(&"message_edited:telegram".to_string())
            .then_some(body)
    })
    .await;
    let kinds = kinds(&body);
    for expected in [
        "created",
        "delivered:telegram",
        "tap_refused:telegram",
        "tapped:telegram",
        "approved",
        "message_edited:telegram",
    ] {
        assert!(
            kinds.contains(&expected.to_string()),
            "{expected} missing from {kinds:?}"
        );
    }
    let refusal = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "tap_refused")
        .unwrap();
    assert_eq!(refusal["actor"], "telegram:@mallory (666)");
}
