//! When Telegram misbehaves: 429s are honoured, failures are retried then handed to the fallback
//! channels, the circuit breaker opens / skips / probes / closes, nothing in the outbox is lost
//! across an outage or a restart, and a restart does not re-apply an old tap.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, FakeUser, Fault};
use crate::support::smtp::SmtpServer;

const WAIT: Duration = Duration::from_secs(15);

async fn breaker(app: &impl Api) -> Value {
    app.get_json("/api/diagnostics/circuit-breaker").await
}

async fn wait_breaker(app: &impl Api, state: &str) {
    eventually(WAIT, &format!("the breaker to be {state}"), || async {
        (breaker(app).await["state"] == state).then_some(())
    })
    .await;
}

async fn shown(fake: &FakeTelegram, id: &str) {
    fake.wait_until(WAIT, &format!("approval {id} on Telegram"), |f| {
        f.messages().iter().any(|m| m.text.contains(id))
    })
    .await;
}

#[actix_web::test]
async fn a_429_is_honoured_before_retrying() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &[]).await;
    fake.push_fault(
        Some("sendMessage"),
        Fault::TooManyRequests { retry_after: 1 },
    );
    app.create_id(&new_approval()).await;
    fake.wait_for_ok_calls("sendMessage", 1, WAIT).await;
    let calls = fake.calls_to("sendMessage");
    assert_eq!(calls.len(), 2, "{}", fake.summary());
    let spacing = calls[1].at - calls[0].at;
    assert!(
        spacing >= Duration::from_secs(1),
        "retried after {spacing:?}, before retry_after"
    );
}

#[actix_web::test]
async fn server_errors_are_retried_then_the_fallback_is_told_and_nothing_is_lost() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &[]).await;
    fake.set_down(Some(Fault::Status(502)), false);
    let id = app.create_id(&new_approval()).await;

    let line = eventually(WAIT, "the fallback file to get the approval", || async {
        notification_lines(app.dir.path(), &id)
            .into_iter()
            .find(|l| l["event"] == "created")
    })
    .await;
    assert!(line["decide"]["cli"].as_str().unwrap_or("").contains(&id));
    assert!(
        fake.calls_to("sendMessage").len() >= 3,
        "retried: {}",
        fake.summary()
    );
    assert!(fake.messages().is_empty());

    fake.clear_faults();
    shown(&fake, &id).await;
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "approval_gate_telegram_retries_total{method=\"sendMessage\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{text}"
    );
}

/// A hand-over to the fallback channels whose commit fails waits for a later commit instead of
/// being dropped: the notification still reaches the fallback file, and the channel is not left
/// waiting behind it until a restart.
#[actix_web::test]
async fn a_hand_over_whose_commit_fails_still_reaches_the_fallback_channels() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[("APPROVAL_GATE__TELEGRAM__RETRY__MAX_ATTEMPTS", "2")],
    )
    .await;
    fake.set_down(Some(Fault::Status(502)), false);
    let id = app.create_id(&new_approval()).await;
    fake.wait_until(WAIT, "the first attempt", |f| {
        !f.calls_to("sendMessage").is_empty()
    })
    .await;
    // The next syncs fail: the hand-over after the second (last) attempt, a second or two from
    // now, is the first thing to commit.
    fail_commits(&app, 3).await;
    eventually(WAIT, "the fallback file to get the approval", || async {
        notification_lines(app.dir.path(), &id)
            .into_iter()
            .find(|l| l["event"] == "created")
    })
    .await;
    // Nothing waits behind it.
    let next = app.create_id(&new_approval()).await;
    eventually(WAIT, "the next approval in the fallback file", || async {
        notification_lines(app.dir.path(), &next)
            .into_iter()
            .find(|l| l["event"] == "created")
    })
    .await;
}

#[actix_web::test]
async fn the_breaker_opens_skips_telegram_half_opens_and_closes() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "3"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__MINIMUM_THROUGHPUT", "2"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION", "1500ms"),
        ],
    )
    .await;
    fake.set_down(Some(Fault::DropConnection), false);
    let first = app.create_id(&new_approval()).await;
    wait_breaker(&app, "open").await;

    // While open, a new approval reaches the fallback file at once and Telegram is not called.
    let sends_when_opened = fake.calls_to("sendMessage").len();
    let second = app.create_id(&new_approval()).await;
    eventually(
        WAIT,
        "the fallback line for the second approval",
        || async { (!notification_lines(app.dir.path(), &second).is_empty()).then_some(()) },
    )
    .await;
    let report = breaker(&app).await;
    // Skipped while open: at most the one half-open probe may have gone out since.
    let sends_now = fake.calls_to("sendMessage").len();
    assert!(
        sends_now <= sends_when_opened + 1,
        "{sends_now} sends after opening at {sends_when_opened}: {}",
        fake.summary()
    );
    assert!(
        report["next_probe_at"].is_string() || report["state"] != "open",
        "{report}"
    );
    let health = app.health().await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        app.request(Method::GET, "/health/ready", None)
            .send()
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    let announced = notification_lines(app.dir.path(), "circuit breaker open");
    assert!(
        !announced.is_empty(),
        "the opening was announced to the fallback channels"
    );

    fake.clear_faults();
    wait_breaker(&app, "closed").await;
    shown(&fake, &first).await;
    shown(&fake, &second).await;
    let text = app.metrics().await;
    for to in ["open", "half_open", "closed"] {
        let sample = format!("approval_gate_telegram_circuit_transitions_total{{to=\"{to}\"}}");
        assert!(metric(&text, &sample).unwrap_or(0.0) >= 1.0, "{sample}");
    }
    assert_eq!(
        metric(&text, "approval_gate_telegram_circuit_state"),
        Some(0.0)
    );
    eventually(WAIT, "an empty outbox", || async {
        (metric(&app.metrics().await, "approval_gate_telegram_outbox_size") == Some(0.0))
            .then_some(())
    })
    .await;
}

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
    eventually(WAIT, "the backlog queued for Telegram", || async {
        (metric(&first.metrics().await, "approval_gate_telegram_outbox_size")
            == Some(BACKLOG as f64))
        .then_some(())
    })
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

/// A half-open probe answered with a permanent 4xx must resolve the probe: Telegram answered, so
/// the breaker closes and delivery goes on (it used to stay half-open with no next probe).
#[actix_web::test]
async fn a_probe_answered_with_a_4xx_resolves_the_breaker() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "2"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__MINIMUM_THROUGHPUT", "2"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION", "500ms"),
        ],
    )
    .await;
    fake.set_down(Some(Fault::Status(502)), false);
    let refused = app.create_id(&new_approval()).await;
    wait_breaker(&app, "open").await;
    // The probe gets a permanent refusal.
    fake.set_down(Some(Fault::Status(400)), false);
    wait_breaker(&app, "closed").await;
    fake.clear_faults();
    let later = app.create_id(&new_approval()).await;
    shown(&fake, &later).await;
    // The refused notification is a dead letter, visible to operators.
    let letters = app.operator_json("/api/admin/dead-letters").await;
    assert!(
        letters["dead_letters"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["approval_id"] == refused.as_str())),
        "{letters}"
    );
}

/// A 5xx costs milliseconds, not the request timeout: with a long request timeout, three failed
/// attempts still reach the fallback channels quickly.
#[actix_web::test]
async fn a_5xx_is_seen_as_a_5xx_at_once() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[("APPROVAL_GATE__TELEGRAM__REQUEST_TIMEOUT", "30s")],
    )
    .await;
    fake.set_down(Some(Fault::Status(500)), false);
    let started = std::time::Instant::now();
    let id = app.create_id(&new_approval()).await;
    eventually(WAIT, "the fallback file after three 5xx", || async {
        (!notification_lines(app.dir.path(), &id).is_empty()).then_some(())
    })
    .await;
    // Three attempts under a 30 s timeout each: only fast 5xx fit in the 15 s wait above.
    assert!(started.elapsed() < WAIT);
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "approval_gate_telegram_failures_total{reason=\"server_error\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
}

/// A gateway restarted while its half-open probe is in flight forgets that probe: the next
/// probe goes out and delivery resumes (the in-flight flag used to survive and wedge it).
#[actix_web::test]
async fn a_restart_during_a_probe_does_not_wedge_the_breaker() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "2"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION", "300ms"),
            ("APPROVAL_GATE__TELEGRAM__REQUEST_TIMEOUT", "30s"),
        ],
    )
    .await;
    fake.set_down(Some(Fault::Status(502)), false);
    let id = app.create_id(&new_approval()).await;
    wait_breaker(&app, "open").await;
    // The probe hangs far longer than this test waits for delivery afterwards.
    fake.set_down(Some(Fault::Delay(Duration::from_secs(30))), false);
    wait_breaker(&app, "half_open").await;
    // Telegram is fine again, but the probe already sent keeps hanging: only a new probe can
    // deliver, and only if the restart forgot the old one.
    fake.clear_faults();
    let crashed = app
        .request(
            Method::POST,
            "/api/debug/actors/telegram_gateway/crash",
            Some(OPERATOR_TOKEN),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(crashed.status(), StatusCode::ACCEPTED);
    eventually(WAIT, "the gateway's restart", || async {
        (app.health().await["actors"]["telegram_gateway"]["restarts"] == 1).then_some(())
    })
    .await;
    fake.wait_until(Duration::from_secs(10), "delivery after the restart", |f| {
        f.messages().iter().any(|m| m.text.contains(&id))
    })
    .await;
    wait_breaker(&app, "closed").await;
}
