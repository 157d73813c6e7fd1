//! How updates arrive and messages leave: polling clears a stale webhook, webhook mode accepts
//! only deliveries carrying its secret, and a group over its message budget waits without
//! dropping anything.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, SentMessage};
use crate::telegram::{WAIT, announced, approved_by_tap, button, edited_to, operator};

#[actix_web::test]
async fn polling_clears_a_webhook_left_from_elsewhere() {
    let fake = FakeTelegram::start();
    fake.set_webhook("https://old.example.com/hook");
    let app = spawn_telegram_app(&fake.url(), fake.token(), &[]).await;
    fake.wait_until(WAIT, "the webhook to be deleted", |f| f.webhook().is_none())
        .await;
    // Taps arrive by polling again.
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    approved_by_tap(&fake, &app, &id, &message).await;
}

/// The service in webhook mode against the fake Bot API, once it has registered its webhook.
async fn webhook_app(fake: &FakeTelegram) -> TestApp {
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__TELEGRAM__MODE", "webhook"),
            (
                "APPROVAL_GATE__TELEGRAM__WEBHOOK_URL",
                "https://gate.example.com/telegram/webhook",
            ),
        ],
    )
    .await;
    fake.wait_until(WAIT, "setWebhook", |f| f.webhook().is_some())
        .await;
    app
}

/// An approval announced on the fake, and an operator's approve tap on its message as the
/// update Telegram would POST to the webhook.
async fn an_approve_tap_update(fake: &FakeTelegram, app: &TestApp) -> (String, SentMessage, Value) {
    let (id, message) = announced(fake, app, &new_approval()).await;
    fake.inject_callback(
        &operator(),
        CHAT_ID,
        message.message_id,
        &button(&message, "a:"),
    );
    let update = fake
        .take_update()
        .expect("the tap as Telegram would POST it");
    (id, message, update)
}

/// POST `update` to the webhook route, with `token` as the secret header if given.
async fn deliver(app: &TestApp, update: &Value, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/telegram/webhook", app.address))
        .json(update);
    if let Some(token) = token {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", token);
    }
    request.send().await.expect("send")
}

#[actix_web::test]
async fn webhook_mode_registers_a_secret_and_accepts_only_deliveries_that_carry_it() {
    let fake = FakeTelegram::start();
    let app = webhook_app(&fake).await;
    let (url, secret) = fake.webhook().expect("webhook");
    assert_eq!(url, "https://gate.example.com/telegram/webhook");
    let secret = secret.expect("a generated secret token");
    assert!(
        (1..=256).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{secret}"
    );
    assert!(
        fake.calls_to("getUpdates").is_empty(),
        "no polling in webhook mode"
    );

    let (id, message, update) = an_approve_tap_update(&fake, &app).await;
    for wrong in [None, Some("wrong-secret")] {
        let response = deliver(&app, &update, wrong).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(
        body["status"], "pending",
        "a forged delivery decides nothing"
    );

    let response = deliver(&app, &update, Some(&secret)).await;
    assert_eq!(response.status(), StatusCode::OK);
    edited_to(&fake, &message, "Approved").await;
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "approved");
    let text = app.metrics().await;
    assert_eq!(
        metric(
            &text,
            "approval_gate_refused_total{reason=\"webhook_secret\"}"
        ),
        Some(2.0)
    );
}

#[actix_web::test]
async fn a_webhook_tap_is_answered_200_only_once_its_decision_is_durable() {
    let fake = FakeTelegram::start();
    let app = webhook_app(&fake).await;
    let secret = fake.webhook().and_then(|(_, s)| s).expect("secret");
    let (id, _, update) = an_approve_tap_update(&fake, &app).await;
    // The decision's commit fails: the delivery is not acknowledged, so Telegram sends it again.
    fail_commits(&app, 3).await;
    let refused = deliver(&app, &update, Some(&secret)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = eventually(WAIT, "the store back", || async {
        let response = app.get(&id, None).await;
        response
            .status()
            .is_success()
            .then_some(response.json::<Value>().await.ok()?)
    })
    .await;
    assert_eq!(body["status"], "pending", "the failed tap decided nothing");
    // Telegram's redelivery decides it; the 200 comes once the decision is durable.
    eventually(WAIT, "the redelivery accepted", || async {
        let response = deliver(&app, &update, Some(&secret)).await;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "approved", "decided when the 200 came");
}

#[actix_web::test]
async fn a_group_over_its_message_budget_waits_and_nothing_is_dropped() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__TELEGRAM__GROUP_MESSAGES_PER_MINUTE", "3"),
            // Digests off: this is about the budget holding single messages back.
            ("APPROVAL_GATE__TELEGRAM__DIGEST_AFTER", "0s"),
        ],
    )
    .await;
    for _ in 0..4 {
        app.create_ok(&new_approval()).await;
    }
    fake.wait_until(WAIT, "three messages", |f| f.messages().len() == 3)
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        fake.messages().len(),
        3,
        "the fourth waits for the group's budget"
    );
    // It is still queued, not dropped.
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "approval_gate_telegram_outbox_size"),
        Some(1.0)
    );
}
