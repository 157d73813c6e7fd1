//! Taps and text that must decide nothing or hide nothing: unauthorised users, the wrong chat,
//! forged or moved buttons, and hidden characters in what an agent sends.

use serde_json::{Value, json};

use super::telegram::{WAIT, announced, button, operator, setup};
use crate::helpers::*;
use crate::support::fake_telegram::FakeUser;

#[actix_web::test]
async fn unauthorised_wrong_chat_and_forged_taps_change_nothing() {
    let (fake, app) = setup().await;
    let (id, message) = announced(&fake, &app, &new_approval()).await;
    let approve = button(&message, "a:");
    let mac_flipped = {
        let (head, mac) = approve.rsplit_once(':').expect("mac");
        let flipped: String = mac.chars().rev().collect();
        format!("{head}:{flipped}")
    };
    let action_swapped = format!("r{}", &approve[1..]);
    let other_id = app.create_id(&new_approval()).await;
    let retargeted = approve.replace(&id, &other_id);

    let stranger = FakeUser::new(666).with_username("mallory");
    let attempts = [
        fake.inject_callback(&stranger, CHAT_ID, message.message_id, &approve),
        fake.inject_callback(&operator(), CHAT_ID + 1, message.message_id, &approve),
        fake.inject_callback(&operator(), CHAT_ID, message.message_id, &mac_flipped),
        fake.inject_callback(&operator(), CHAT_ID, message.message_id, &action_swapped),
        fake.inject_callback(&operator(), CHAT_ID, message.message_id, &retargeted),
        fake.inject_callback(&operator(), CHAT_ID, message.message_id, "a:garbage"),
    ];
    for query_id in attempts {
        let answer = fake.wait_for_answer(&query_id, WAIT).await;
        assert!(answer.text.unwrap_or_default().contains("Not authorised"));
    }
    for id in [&id, &other_id] {
        let body: Value = app.get(id, None).await.json().await.expect("json");
        assert_eq!(body["status"], "pending");
    }
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "approval_gate_telegram_unauthorised_taps_total"),
        Some(6.0)
    );
    assert!(
        fake.message(message.chat_id, message.message_id)
            .and_then(|m| m.reply_markup)
            .is_some(),
        "buttons stay"
    );
}

#[actix_web::test]
async fn hidden_characters_an_agent_sends_are_made_visible_to_operators() {
    let (fake, app) = setup().await;
    let body = json!({
        "session_id": "s\u{202E}1",
        "tool_name": "Bash\u{200B}",
        "tool_input": {"command": "echo ok\u{1b}[2J\u{202E}fr- mr"},
        "reason": "tidy\r\nup",
    });
    let (_, message) = announced(&fake, &app, &body).await;
    let text = &message.plain_text;
    for raw in ['\u{202E}', '\u{200B}', '\u{1b}', '\r'] {
        assert!(!text.contains(raw), "{raw:?} reached the operator: {text}");
    }
    assert!(
        text.contains("\\u{202e}") && text.contains("\\u{1b}"),
        "{text}"
    );
}

#[actix_web::test]
async fn a_button_moved_to_another_message_decides_nothing() {
    let (fake, app) = setup().await;
    let (a, message_a) = announced(&fake, &app, &new_approval()).await;
    let (b, message_b) = announced(&fake, &app, &new_approval()).await;
    // A valid, signed button of A, tapped on B's message.
    let query_id = fake.inject_callback(
        &operator(),
        CHAT_ID,
        message_b.message_id,
        &button(&message_a, "a:"),
    );
    let answer = fake.wait_for_answer(&query_id, WAIT).await;
    assert!(answer.text.unwrap_or_default().contains("Not authorised"));
    for id in [&a, &b] {
        let body: Value = app.get(id, None).await.json().await.expect("json");
        assert_eq!(body["status"], "pending", "{id}");
    }
    let b_now = fake
        .message(CHAT_ID, message_b.message_id)
        .expect("message");
    assert_eq!(b_now.edits, 0, "B's message was not overwritten");
}
