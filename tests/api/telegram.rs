//! Operators decide from Telegram: real Bot API wire traffic against the fake server. Taps end
//! the agent's long poll; every ending edits the message and removes its buttons. Webhook mode
//! and pacing: `telegram_modes.rs`; taps that must decide nothing: `telegram_security.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, FakeUser, Fault, SentMessage};

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn operator() -> FakeUser {
    FakeUser::new(OPERATOR_USER_ID).with_username("alice_ops")
}

pub(crate) async fn setup() -> (FakeTelegram, TestApp) {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &[]).await;
    (fake, app)
}

/// Create an approval and wait for its Telegram message.
pub(crate) async fn announced(
    fake: &FakeTelegram,
    app: &TestApp,
    body: &Value,
) -> (String, SentMessage) {
    let id = app.create_ok(body).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    fake.wait_until(WAIT, "the approval's message", |f| {
        f.messages().iter().any(|m| m.text.contains(&id))
    })
    .await;
    let message = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(&id))
        .expect("message");
    (id, message)
}

pub(crate) fn button(message: &SentMessage, prefix: &str) -> String {
    message
        .callback_data()
        .into_iter()
        .find(|d| d.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} button in {:?}", message.reply_markup))
}

/// The operator taps Approve on `message`: the tap is answered and `id` is approved.
pub(crate) async fn approved_by_tap(
    fake: &FakeTelegram,
    app: &TestApp,
    id: &str,
    message: &SentMessage,
) {
    let query_id = fake.inject_callback(
        &operator(),
        CHAT_ID,
        message.message_id,
        &button(message, "a:"),
    );
    fake.wait_for_answer(&query_id, WAIT).await;
    let body: Value = app.get(id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "approved");
}

pub(crate) async fn edited_to(
    fake: &FakeTelegram,
    message: &SentMessage,
    needle: &str,
) -> SentMessage {
    let (chat, id) = (message.chat_id, message.message_id);
    fake.wait_until(
        WAIT,
        &format!("the message edited to say {needle:?}"),
        |f| {
            f.message(chat, id)
                .is_some_and(|m| m.text.contains(needle) && m.reply_markup.is_none())
        },
    )
    .await;
    fake.message(chat, id).expect("message")
}

#[actix_web::test]
async fn a_new_approval_is_posted_with_buttons_and_its_message_id_is_stored() {
    let (fake, app) = setup().await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    assert_eq!(message.chat_id, CHAT_ID);
    assert_eq!(message.parse_mode.as_deref(), Some("HTML"));
    assert!(
        message.plain_text.contains("rm -rf ./build"),
        "{}",
        message.plain_text
    );
    assert!(
        message.plain_text.contains("clean the build folder"),
        "{}",
        message.plain_text
    );
    assert_eq!(
        message.callback_data().len(),
        3,
        "Approve, Reject and Allow for this session"
    );
    for data in message.callback_data() {
        assert!(data.len() <= 64, "{data}");
    }
    // The fake stores the message before it records the call's answer: wait for the record.
    fake.wait_until(WAIT, "the sendMessage call recorded", |f| {
        !f.ok_calls_to("sendMessage").is_empty()
    })
    .await;
    let sends = fake.ok_calls_to("sendMessage");
    assert_eq!(sends.len(), 1, "exactly one message per approval");
    let _ = id;
}

#[actix_web::test]
async fn an_approve_tap_ends_the_agents_long_poll_and_edits_the_message() {
    let (fake, app) = setup().await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;

    let poll = app.get(&id, Some("30s"));
    let tap = async {
        eventually(WAIT, "the long poll to register", || async {
            (metric(&app.metrics().await, "approval_gate_waiters") == Some(1.0)).then_some(())
        })
        .await;
        fake.inject_callback(
            &operator(),
            CHAT_ID,
            message.message_id,
            &button(&message, "a:"),
        )
    };
    let (polled, query_id) = futures_util::join!(poll, tap);
    let polled: Value = polled.json().await.expect("json");
    assert_eq!(polled["status"], "approved");
    assert_eq!(polled["decided_by"], "telegram:@alice_ops");
    assert_eq!(
        polled["decider"],
        json!({"kind": "telegram", "user_id": OPERATOR_USER_ID, "username": "alice_ops"})
    );

    let answer = fake.wait_for_answer(&query_id, WAIT).await;
    assert!(answer.text.unwrap_or_default().contains("Approved"));
    let edited = edited_to(&fake, &message, "Approved").await;
    assert!(
        edited.plain_text.contains("@alice_ops"),
        "{}",
        edited.plain_text
    );
}

#[actix_web::test]
async fn a_reject_tap_rejects() {
    let (fake, app) = setup().await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    let query_id = fake.inject_callback(
        &operator(),
        CHAT_ID,
        message.message_id,
        &button(&message, "r:"),
    );
    fake.wait_for_answer(&query_id, WAIT).await;
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "rejected");
    edited_to(&fake, &message, "Rejected").await;
}

#[actix_web::test]
async fn a_tap_after_the_decision_is_answered_already_decided() {
    let (fake, app) = setup().await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    assert_eq!(app.decide(&id, "reject").await.status(), StatusCode::OK);
    edited_to(&fake, &message, "Rejected").await;
    let query_id = fake.inject_callback(
        &operator(),
        CHAT_ID,
        message.message_id,
        &button(&message, "a:"),
    );
    let answer = fake.wait_for_answer(&query_id, WAIT).await;
    let text = answer.text.unwrap_or_default();
    assert!(
        text.contains("Already") && text.contains("rejected") && text.contains("alice"),
        "{text}"
    );
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "rejected");
}

#[actix_web::test]
async fn timeout_and_cancel_edit_the_message_and_remove_the_buttons() {
    let (fake, app) = setup().await;
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let (_, expiring) = announced(&fake, &app, &body).await;
    let (cancelled_id, cancelled) = announced(&fake, &app, &new_approval()).await;
    assert_eq!(app.cancel(&cancelled_id).await.status(), StatusCode::OK);
    edited_to(&fake, &cancelled, "Cancelled").await;
    edited_to(&fake, &expiring, "Timed out").await;
}

#[actix_web::test]
async fn huge_tool_input_is_truncated_not_refused() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[(
            "APPROVAL_GATE__SERVER__PUBLIC_URL",
            "https://gate.example.com",
        )],
    )
    .await;
    let mut body = new_approval();
    body["tool_input"] = json!({"command": "<&>é😀".repeat(3000), "host": "db-1"});
    body["reason"] = json!("r".repeat(4000));
    let (id, message) = announced(&fake, &app, &body).await;
    assert!(message.plain_text.encode_utf16().count() <= 4096);
    // The cut is marked, with how much is missing and a link to the whole input.
    let link = format!("https://gate.example.com/console/#/approval/{id}");
    assert!(
        message.plain_text.contains("✂ cut: ") && message.plain_text.contains(&link),
        "{}",
        message.plain_text
    );
    assert!(
        fake.calls_to("sendMessage").iter().all(|c| c.is_ok()),
        "{}",
        fake.summary()
    );
}

#[actix_web::test]
async fn health_shows_the_bot_and_the_breaker() {
    let (fake, app) = setup().await;
    fake.wait_for_ok_calls("getMe", 1, WAIT).await;
    let health = eventually(WAIT, "the gateway to report its bot", || async {
        let health = app.health().await;
        (health["actors"]["telegram_gateway"]["detail"]["bot_username"] == "approval_gate_test_bot")
            .then_some(health)
    })
    .await;
    assert_eq!(health["status"], "healthy");
    assert_eq!(
        health["actors"]["telegram_gateway"]["detail"]["breaker_state"],
        "closed"
    );
    let breaker: Value = app.get_json("/api/diagnostics/circuit-breaker").await;
    assert_eq!(breaker["enabled"], true);
    assert_eq!(breaker["state"], "closed");
}

#[actix_web::test]
async fn a_duplicate_from_an_ambiguous_failure_has_working_buttons_and_is_edited_too() {
    let (fake, app) = setup().await;
    // Telegram posts the message but the response is lost: the retry posts a second copy.
    fake.push_fault(Some("sendMessage"), Fault::DropAfterProcessing);
    let id = app.create_id(&new_approval()).await;
    fake.wait_until(WAIT, "two copies", |f| {
        f.messages().iter().filter(|m| m.text.contains(&id)).count() == 2
    })
    .await;
    let copies: Vec<SentMessage> = fake
        .messages()
        .into_iter()
        .filter(|m| m.text.contains(&id))
        .collect();
    // Tap the copy the service never heard back about.
    let unknown = &copies[0];
    let query_id = fake.inject_callback(
        &operator(),
        CHAT_ID,
        unknown.message_id,
        &button(unknown, "a:"),
    );
    fake.wait_for_answer(&query_id, WAIT).await;
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "approved");
    for copy in &copies {
        edited_to(&fake, copy, "Approved").await;
    }
}

#[actix_web::test]
async fn a_crashed_gateway_is_restarted_and_keeps_delivering_and_listening() {
    let (fake, app) = setup().await;
    crash_actor(&app, "telegram_gateway").await;
    eventually(WAIT, "the gateway's restart in /health", || async {
        (app.health().await["actors"]["telegram_gateway"]["restarts"] == 1).then_some(())
    })
    .await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    approved_by_tap(&fake, &app, &id, &message).await;
    // One poll loop after the restart, not two: Telegram answers overlapping getUpdates with
    // 409. The poll in flight at the crash is superseded once; two live loops would keep
    // superseding each other on every cycle.
    let seen = fake.calls_to("getUpdates").len();
    fake.wait_for_calls("getUpdates", seen + 2, WAIT).await;
    let conflicts = fake
        .calls_to("getUpdates")
        .iter()
        .filter(|c| !c.is_ok())
        .count();
    assert!(conflicts <= 1, "{}", fake.summary());
}

#[actix_web::test]
async fn allow_for_this_session_approves_and_grants_the_tool_in_that_session() {
    let (fake, app) = setup().await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    assert!(
        format!("{:?}", message.reply_markup).contains("Allow for this session"),
        "{:?}",
        message.reply_markup
    );
    let query_id = fake.inject_callback(
        &operator(),
        CHAT_ID,
        message.message_id,
        &button(&message, "s:"),
    );
    fake.wait_for_answer(&query_id, WAIT).await;
    let body: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "approved");
    // The same tool in the same session is now approved at once, by the grant.
    let next = app.create_ok(&new_approval()).await;
    assert_eq!(next["status"], "approved");
    assert_eq!(next["decided_by"], "grant:telegram:@alice_ops (9001)");
    let mut other = new_approval();
    other["session_id"] = json!("another-session");
    assert_eq!(app.create_ok(&other).await["status"], "pending");
}
