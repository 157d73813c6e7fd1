//! A long Telegram outage and restarts in the middle of one: a burst reaches the fallback
//! channels in full, operators get mail and Telegram catches up afterwards, nothing in the
//! outbox is lost across a restart, and a restart does not re-apply an old tap.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, FakeUser, Fault};
use crate::support::smtp::SmtpServer;
use crate::telegram_outage::{WAIT, shown, wait_breaker};

/// A long outage: the breaker opens after two failures and stays open for a minute, longer
/// than any wait below; and no quotas, since a burst is not an abuse here.
const LONG_OUTAGE: [(&str, &str); 5] = [
    ("APPROVAL_GATE__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "2"),
    ("APPROVAL_GATE__CIRCUIT_BREAKER__MINIMUM_THROUGHPUT", "2"),
    ("APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION", "60s"),
    ("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "0"),
    ("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0"),
];

/// Create `n` approvals, 50 at a time; their ids.
async fn create_many(app: &impl Api, n: usize) -> Vec<String> {
    let body = new_approval();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch = (n - ids.len()).min(50);
        let created =
            futures_util::future::join_all((0..batch).map(|_| app.create_id(&body))).await;
        ids.extend(created);
    }
    ids
}

/// Approvals created while the breaker is open.
const BURST: usize = 1500;

/// A burst of approvals while the breaker is open reaches the fallback file in full and at
/// once, not one wake-up's worth (every one of them is handed over, none waits for Telegram).
#[actix_web::test]
async fn a_burst_during_an_outage_reaches_the_fallback_channels_in_full() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &LONG_OUTAGE).await;
    fake.set_down(Some(Fault::DropConnection), false);
    app.create_id(&new_approval()).await;
    wait_breaker(&app, "open").await;

    let ids = create_many(&app, BURST).await;
    // Well inside the 60 s break: nothing here waits for Telegram to come back.
    eventually(
        Duration::from_secs(30),
        "every approval of the burst in the fallback file",
        || async {
            let text = std::fs::read_to_string(app.dir.path().join("notifications.jsonl"))
                .unwrap_or_default();
            let missing = ids.iter().filter(|id| !text.contains(id.as_str())).count();
            (missing == 0).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn during_an_outage_operators_get_mail_and_telegram_catches_up_afterwards() {
    let fake = FakeTelegram::start();
    let smtp = SmtpServer::start();
    let port = smtp.port().to_string();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__FALLBACK__ORDER", "email,file"),
            ("APPROVAL_GATE__FALLBACK__STRATEGY", "first"),
            ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_HOST", smtp.host()),
            ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_PORT", &port),
            ("APPROVAL_GATE__FALLBACK__EMAIL__TLS", "none"),
            (
                "APPROVAL_GATE__FALLBACK__EMAIL__FROM",
                "approval-gate@example.com",
            ),
            (
                "APPROVAL_GATE__FALLBACK__EMAIL__TO",
                "ops@example.com,oncall@example.com",
            ),
        ],
    )
    .await;
    fake.set_down(Some(Fault::DropConnection), false);
    let pending = app.create_id(&new_approval()).await;
    let decided = app.create_id(&new_approval()).await;

    let mail = eventually(WAIT, "a fallback mail about the approval", || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.body().contains(&pending))
    })
    .await;
    assert_eq!(mail.to, vec!["ops@example.com", "oncall@example.com"]);
    assert!(
        mail.header("subject")
            .unwrap_or_default()
            .contains("Approval needed")
    );
    let body = quoted_printable(mail.body());
    assert!(
        body.contains(&format!("approval-gate approvals approve {pending}")),
        "{body}"
    );
    assert!(
        body.contains(&format!("/api/approvals/{pending}/decision")),
        "the REST call is in the mail: {body}"
    );
    // Strategy `first`: email succeeded, so the file was not needed.
    assert!(notification_lines(app.dir.path(), &pending).is_empty());

    // Decided over REST while Telegram is down.
    assert_eq!(
        app.decide(&decided, "approve").await.status(),
        StatusCode::OK
    );

    fake.clear_faults();
    shown(&fake, &pending).await;
    shown(&fake, &decided).await;
    let message = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(&decided))
        .expect("message");
    assert!(
        message.plain_text.contains("Approved"),
        "{}",
        message.plain_text
    );
    assert!(
        message.reply_markup.is_none(),
        "an approval decided during the outage has no buttons"
    );
    let pending_message = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(&pending))
        .expect("message");
    assert_eq!(pending_message.callback_data().len(), 3);
}

/// Undo quoted-printable (lettre uses it for long lines): soft breaks and `=XX` escapes.
fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn child_env(fake: &FakeTelegram) -> Vec<(String, String)> {
    telegram_env(&fake.url(), fake.token())
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[actix_web::test]
async fn a_restart_mid_outage_keeps_every_outbox_entry() {
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().expect("dir");
    let env = child_env(&fake);
    fake.set_down(Some(Fault::DropConnection), false);

    let mut first = spawn_binary(dir.path(), &borrowed(&env));
    let ids = vec![
        first.create_id(&new_approval()).await,
        first.create_id(&new_approval()).await,
        first.create_id(&new_approval()).await,
    ];
    eventually(WAIT, "three queued notifications", || async {
        (metric(&first.metrics().await, "approval_gate_telegram_outbox_size") == Some(3.0))
            .then_some(())
    })
    .await;
    first.signal(15);
    assert!(first.wait_exit(WAIT).success());
    drop(first);

    let second = spawn_binary(dir.path(), &borrowed(&env));
    eventually(WAIT, "the outbox to be reloaded", || async {
        (metric(
            &second.metrics().await,
            "approval_gate_telegram_outbox_size",
        ) == Some(3.0))
        .then_some(())
    })
    .await;
    fake.clear_faults();
    for id in &ids {
        shown(&fake, id).await;
    }
    eventually(WAIT, "an empty outbox", || async {
        (metric(
            &second.metrics().await,
            "approval_gate_telegram_outbox_size",
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    for id in &ids {
        let copies = fake
            .messages()
            .iter()
            .filter(|m| m.text.contains(id.as_str()))
            .count();
        assert_eq!(copies, 1, "one message for {id}");
    }
}

/// Undelivered Telegram entries at a restart: more than one catch-up walk's worth (1,000).
const BACKLOG: usize = 1100;

/// After a restart mid-outage the whole Telegram backlog is handed to the fallback channels at
/// once, not one walk's worth per break of the circuit breaker (60 s here).
#[actix_web::test]
async fn a_restart_mid_outage_hands_the_whole_backlog_to_the_fallback_channels() {
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut env = child_env(&fake);
    env.extend(LONG_OUTAGE.map(|(k, v)| (k.to_string(), v.to_string())));
    fake.set_down(Some(Fault::DropConnection), false);

    let mut first = spawn_binary(dir.path(), &borrowed(&env));
    let ids = create_many(&first, BACKLOG).await;
    // 1,100 creates by a debug build on a loaded machine: the gateway may count the last of
    // them well after the creates were answered.
    eventually(
        Duration::from_secs(60),
        "the backlog queued for Telegram",
        || async {
            (metric(&first.metrics().await, "approval_gate_telegram_outbox_size")
                == Some(BACKLOG as f64))
            .then_some(())
        },
    )
    .await;
    first.signal(15);
    assert!(first.wait_exit(WAIT).success());
    drop(first);

    let file = dir.path().join("notifications.jsonl");
    let before = std::fs::read_to_string(&file).unwrap_or_default().len();
    let _second = spawn_binary(dir.path(), &borrowed(&env));
    eventually(
        Duration::from_secs(30),
        "the whole backlog handed to the fallback file after the restart",
        || async {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let since = text.get(before..).unwrap_or("");
            ids.iter()
                .all(|id| since.contains(id.as_str()))
                .then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn a_restart_does_not_reapply_an_old_tap() {
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().expect("dir");
    let env = child_env(&fake);
    let mut first = spawn_binary(dir.path(), &borrowed(&env));
    let id = first.create_id(&new_approval()).await;
    shown(&fake, &id).await;
    let message = fake
        .messages()
        .into_iter()
        .find(|m| m.text.contains(&id))
        .expect("message");
    let reject = message
        .callback_data()
        .into_iter()
        .find(|d| d.starts_with("r:"))
        .expect("reject button");
    let operator = FakeUser::new(OPERATOR_USER_ID).with_username("alice_ops");
    let query_id = fake.inject_callback(&operator, CHAT_ID, message.message_id, &reject);
    fake.wait_for_answer(&query_id, WAIT).await;
    // The poll after the tap confirms it to Telegram with a higher offset.
    let confirmed = eventually(WAIT, "a getUpdates confirming the tap", || async {
        fake.calls_to("getUpdates")
            .iter()
            .filter_map(|c| c.body["offset"].as_i64())
            .find(|o| *o > 0)
    })
    .await;
    first.signal(15);
    assert!(first.wait_exit(WAIT).success());
    drop(first);
    let calls_before = fake.calls_to("getUpdates").len();

    let second = spawn_binary(dir.path(), &borrowed(&env));
    fake.wait_for_calls("getUpdates", calls_before + 1, WAIT)
        .await;
    let after: Vec<i64> = fake.calls_to("getUpdates")[calls_before..]
        .iter()
        .filter_map(|c| c.body["offset"].as_i64())
        .collect();
    assert!(
        after.iter().all(|o| *o >= confirmed),
        "restart resumed from the saved offset: {after:?} vs {confirmed}"
    );
    let body: Value = second.get(&id, None).await.json().await.expect("json");
    assert_eq!(body["status"], "rejected");
    let answers = fake
        .callback_answers()
        .iter()
        .filter(|a| a.callback_query_id == query_id)
        .count();
    assert_eq!(
        answers, 1,
        "the tap was answered once, not again after the restart"
    );
}
