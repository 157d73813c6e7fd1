//! Bursts through the fake Bot API: when more approvals wait than the chat can take one by one
//! within `telegram.digest_after`, they are announced in digests; a line's buttons decide its
//! approvals (a group's "all N" every identical request), the digest is edited as they end,
//! the pace is kept, and a digest button moved or stale decides nothing more.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, SentMessage};
use crate::telegram::{WAIT, operator};

fn bash(command: &str) -> Value {
    serde_json::json!({"session_id": "s1", "tool_name": "Bash", "tool_input": {"command": command}})
}

/// 300 ms between messages and digests after 1 s: four single messages is all the chat takes
/// in time, so a burst of more goes out in digests.
async fn paced_app(fake: &FakeTelegram) -> TestApp {
    spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__TELEGRAM__SEND_INTERVAL", "300ms"),
            ("APPROVAL_GATE__TELEGRAM__DIGEST_AFTER", "1s"),
        ],
    )
    .await
}

fn digests(fake: &FakeTelegram) -> Vec<SentMessage> {
    fake.messages()
        .into_iter()
        .filter(|m| m.plain_text.contains("approvals waiting"))
        .collect()
}

/// The button of `message` whose label is `label` (its callback data).
fn labelled(message: &SentMessage, label: &str) -> Option<String> {
    message
        .reply_markup
        .as_ref()?
        .get("inline_keyboard")?
        .as_array()?
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .find(|b| b["text"].as_str().is_some_and(|t| t.starts_with(label)))
        .and_then(|b| b["callback_data"].as_str().map(String::from))
}

fn labels(message: &SentMessage) -> Vec<String> {
    message
        .reply_markup
        .as_ref()
        .and_then(|m| m.get("inline_keyboard"))
        .and_then(|k| k.as_array())
        .map(|rows| {
            rows.iter()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .filter_map(|b| b["text"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Every approval in `ids` announced (individually or in a digest), as its history says.
async fn all_announced(app: &TestApp, ids: &[String]) {
    for id in ids {
        eventually(WAIT, &format!("{id} announced"), || async {
            let history = app
                .operator_json(&format!("/api/approvals/{id}/events"))
                .await;
            history["events"]
                .as_array()
                .is_some_and(|events| {
                    events
                        .iter()
                        .any(|e| e["kind"] == "delivered" && e["channel"] == "telegram")
                })
                .then_some(())
        })
        .await;
    }
}

async fn status(app: &TestApp, id: &str) -> String {
    let body: Value = app.get(id, None).await.json().await.expect("json");
    body["status"].as_str().unwrap_or_default().to_string()
}

#[actix_web::test]
async fn a_burst_is_announced_in_digests_whose_buttons_decide_each_line() {
    let fake = FakeTelegram::start();
    let app = paced_app(&fake).await;
    let mut tests = Vec::new();
    let mut makes = Vec::new();
    for i in 0..30 {
        tests.push(app.create_id(&bash("npm test")).await);
        if i % 5 == 0 {
            makes.push(app.create_id(&bash(&format!("make target-{i}"))).await);
        }
    }
    let all: Vec<String> = tests.iter().chain(&makes).cloned().collect();
    all_announced(&app, &all).await;
    let sends = fake.ok_calls_to("sendMessage");
    assert!(
        sends.len() < 12,
        "36 approvals in {} messages: digests, not one each",
        sends.len()
    );
    // The chat's pace held for digests as for single messages.
    for pair in sends.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(250), "two sends {gap:?} apart");
    }
    let digest = digests(&fake)
        .into_iter()
        .find(|d| labels(d).iter().any(|l| l.contains(": all")))
        .expect("a digest with a group line");
    assert!(
        digest.plain_text.contains("· Bash · npm test ×"),
        "{}",
        digest.plain_text
    );
    // "All N" decides every identical request of the line, and says so.
    let all_label = labels(&digest)
        .into_iter()
        .find(|l| l.starts_with("✅") && l.contains(": all"))
        .expect("an approve-all button");
    let n: usize = all_label.rsplit(' ').next().unwrap().parse().unwrap();
    let data = labelled(&digest, &all_label).unwrap();
    let query = fake.inject_callback(&operator(), CHAT_ID, digest.message_id, &data);
    let answer = fake.wait_for_answer(&query, WAIT).await;
    assert_eq!(
        answer.text.as_deref(),
        Some(format!("{n} approved").as_str())
    );
    let mut approved = 0;
    for id in &tests {
        if status(&app, id).await == "approved" {
            approved += 1;
        }
    }
    assert_eq!(approved, n, "exactly the line's approvals");
    // A single line's ❌ rejects its one approval; the digest shows both outcomes.
    let single = labels(&digest)
        .into_iter()
        .find(|l| l.starts_with("❌") && !l.contains("all"))
        .expect("a single line");
    let data = labelled(&digest, &single).unwrap();
    let query = fake.inject_callback(&operator(), CHAT_ID, digest.message_id, &data);
    fake.wait_for_answer(&query, WAIT).await;
    let mut rejected = 0;
    for id in &all {
        if status(&app, id).await == "rejected" {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 1);
    // Labels are "✅ 2: all 29" and "❌ 1": the line numbers the edited lines start with.
    let number = |label: &str| label.split([' ', ':']).nth(1).unwrap().to_string();
    let (group_line, single_line) = (
        format!("✅ {}. ", number(&all_label)),
        format!("❌ {}. ", number(&single)),
    );
    fake.wait_until(WAIT, "the digest edited with both outcomes", |f| {
        f.message(CHAT_ID, digest.message_id).is_some_and(|m| {
            m.plain_text.contains(&group_line) && m.plain_text.contains(&single_line)
        })
    })
    .await;
    let edited = fake.message(CHAT_ID, digest.message_id).unwrap();
    assert!(
        !labels(&edited).contains(&all_label) && !labels(&edited).contains(&single),
        "decided lines lose their buttons: {:?}",
        labels(&edited)
    );
    // Once the burst is over, a new approval gets a message of its own again.
    let later = app.create_id(&bash("ls")).await;
    fake.wait_until(WAIT, "a single message for a later approval", |f| {
        f.messages().iter().any(|m| m.text.contains(&later))
    })
    .await;
}

#[actix_web::test]
async fn a_stale_or_moved_digest_button_decides_nothing_more() {
    let fake = FakeTelegram::start();
    let app = paced_app(&fake).await;
    // One approval alone first: it gets a message of its own.
    let alone = app.create_id(&bash("make alone")).await;
    fake.wait_until(WAIT, "the single message", |f| {
        f.messages().iter().any(|m| m.text.contains(&alone))
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(app.create_id(&bash(&format!("make part-{i}"))).await);
    }
    all_announced(&app, &ids).await;
    let digest = digests(&fake).into_iter().next().expect("a digest");
    let first_line = labelled(&digest, "✅ 1").expect("line 1's approve button");
    // Decided elsewhere meanwhile: the old button is answered with the winner.
    let decided = ids
        .iter()
        .find(|id| first_line.contains(id.as_str()))
        .expect("line 1's approval")
        .clone();
    assert_eq!(app.decide(&decided, "reject").await.status(), 200);
    let query = fake.inject_callback(&operator(), CHAT_ID, digest.message_id, &first_line);
    let answer = fake.wait_for_answer(&query, WAIT).await;
    let text = answer.text.unwrap_or_default();
    assert!(
        text.contains("Already") && text.contains("rejected"),
        "{text}"
    );
    assert_eq!(status(&app, &decided).await, "rejected");
    // A digest's button moved onto another message (a single approval's) decides nothing.
    let single = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(&alone))
        .expect("the single message from before the burst");
    let line_two = labelled(&digest, "✅ 2").expect("line 2's button");
    let query = fake.inject_callback(&operator(), CHAT_ID, single.message_id, &line_two);
    let answer = fake.wait_for_answer(&query, WAIT).await;
    assert!(
        answer.text.unwrap_or_default().contains("Not authorised"),
        "refused"
    );
    let pending = ids
        .iter()
        .filter(|id| line_two.contains(id.as_str()))
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(pending.len(), 1);
    assert_eq!(status(&app, &pending[0]).await, "pending");
}

/// The burst, at test speed: 2,000 approvals at once, a message every 100 ms, digests
/// after 1 s. Every approval is shown, the pace holds, and a digest's button decides exactly
/// the approval its line lists.
#[actix_web::test]
async fn two_thousand_at_once_are_all_shown_at_the_pace_and_a_tap_decides_its_line() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__TELEGRAM__SEND_INTERVAL", "100ms"),
            ("APPROVAL_GATE__TELEGRAM__DIGEST_AFTER", "1s"),
            ("APPROVAL_GATE__LIMITS__CREATE_BURST", "5000"),
            ("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0"),
        ],
    )
    .await;
    let mut ids = Vec::with_capacity(2000);
    for chunk in (0..2000).collect::<Vec<_>>().chunks(50) {
        let bodies: Vec<Value> = chunk
            .iter()
            .map(|i| bash(&format!("make part-{i}")))
            .collect();
        let created =
            futures_util::future::join_all(bodies.iter().map(|body| app.create_id(body))).await;
        ids.extend(created);
    }
    all_announced(&app, &ids).await;
    let sends = fake.ok_calls_to("sendMessage");
    assert!(
        sends.len() <= 40,
        "{} messages for 2,000 approvals",
        sends.len()
    );
    for pair in sends.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(90), "two sends {gap:?} apart");
    }
    let digest = digests(&fake).into_iter().last().expect("a digest");
    let data = labelled(&digest, "✅ 7").expect("line 7's button");
    let chosen = ids
        .iter()
        .find(|id| data.contains(id.as_str()))
        .expect("line 7's approval")
        .clone();
    let query = fake.inject_callback(&operator(), CHAT_ID, digest.message_id, &data);
    fake.wait_for_answer(&query, WAIT).await;
    assert_eq!(status(&app, &chosen).await, "approved");
    let approved: Value = app.list("?status=approved").await.json().await.unwrap();
    assert_eq!(
        approved["approvals"].as_array().map(Vec::len),
        Some(1),
        "exactly the tapped line's approval: {approved}"
    );
}

/// The approvals a digest lists, from its buttons (every line has them in a small digest).
fn listed(digest: &SentMessage, ids: &[String]) -> Vec<String> {
    let data = digest
        .reply_markup
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    ids.iter()
        .filter(|id| data.contains(id.as_str()))
        .cloned()
        .collect()
}

#[actix_web::test]
async fn once_the_backlog_is_gone_a_digests_last_approvals_get_messages_of_their_own() {
    let fake = FakeTelegram::start();
    let app = paced_app(&fake).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(app.create_id(&bash(&format!("make step-{i}"))).await);
    }
    all_announced(&app, &ids).await;
    let digest = digests(&fake).into_iter().next().expect("a digest");
    let listed = listed(&digest, &ids);
    assert!(listed.len() > 4, "{} listed", listed.len());
    // Decided elsewhere, all but two: those two now fit the chat's pace one by one.
    let (kept, decided) = listed.split_at(2);
    for id in decided {
        assert_eq!(app.decide(id, "approve").await.status(), 200);
    }
    for id in kept {
        fake.wait_until(WAIT, "a message of its own", |f| {
            f.messages().iter().any(|m| {
                m.text.contains(id.as_str())
                    && !m.plain_text.contains("approvals waiting")
                    && m.reply_markup.is_some()
            })
        })
        .await;
    }
    // Its own message decides it, and both it and the digest show the outcome.
    let own = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(kept[0].as_str()) && !m.plain_text.contains("approvals waiting"))
        .unwrap();
    let query = fake.inject_callback(
        &operator(),
        CHAT_ID,
        own.message_id,
        &labelled(&own, "✅").unwrap(),
    );
    fake.wait_for_answer(&query, WAIT).await;
    assert_eq!(status(&app, &kept[0]).await, "approved");
    crate::telegram::edited_to(&fake, &own, "Approved").await;
    let history = app
        .operator_json(&format!("/api/approvals/{}/events", kept[0]))
        .await;
    assert!(
        history
            .to_string()
            .contains("on its own after digest message"),
        "{history}"
    );
}
