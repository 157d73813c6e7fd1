//! When Telegram misbehaves: 429s are honoured, a 5xx is seen at once, and the circuit breaker
//! opens / skips / probes / closes and never wedges. What reaches the fallback channels meanwhile:
//! `telegram_handover.rs`. Long outages and restarts in the middle of one:
//! `telegram_long_outage.rs`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, Fault};

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) async fn breaker(app: &impl Api) -> Value {
    app.get_json("/api/diagnostics/circuit-breaker").await
}

pub(crate) async fn wait_breaker(app: &impl Api, state: &str) {
    eventually(WAIT, &format!("the breaker to be {state}"), || async {
        (breaker(app).await["state"] == state).then_some(())
    })
    .await;
}

/// A breaker that opens after three failed calls and then breaks for `break_duration`.
pub(crate) fn opens_after_three(break_duration: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("APPROVAL_GATE__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "3"),
        ("APPROVAL_GATE__CIRCUIT_BREAKER__MINIMUM_THROUGHPUT", "2"),
        (
            "APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION",
            break_duration,
        ),
    ]
}

pub(crate) async fn shown(fake: &FakeTelegram, id: &str) {
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
async fn the_breaker_opens_skips_telegram_half_opens_and_closes() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &opens_after_three("1500ms")).await;
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
    assert_metric_at_least(
        &app,
        "approval_gate_telegram_failures_total{reason=\"server_error\"}",
        3.0,
    )
    .await;
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
    crash_actor(&app, "telegram_gateway").await;
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

#[actix_web::test]
async fn a_429_pauses_every_send_to_the_chat_and_does_not_open_the_breaker() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &opens_after_three("30s")).await;
    for _ in 0..3 {
        fake.push_fault(
            Some("sendMessage"),
            Fault::TooManyRequests { retry_after: 1 },
        );
    }
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.create_id(&new_approval()).await);
    }
    fake.wait_for_ok_calls("sendMessage", 4, WAIT).await;
    let calls = fake.calls_to("sendMessage");
    // Each 429 holds back the next call to the chat, whichever approval it is for.
    for pair in calls.windows(2) {
        if pair[0].outcome == crate::support::fake_telegram::Outcome::Status(429) {
            let spacing = pair[1].at - pair[0].at;
            assert!(
                spacing >= Duration::from_secs(1),
                "a send {spacing:?} after a 429 with retry_after 1: {}",
                fake.summary()
            );
        }
    }
    assert_eq!(calls.len(), 7, "{}", fake.summary());
    assert_eq!(
        breaker(&app).await["state"],
        "closed",
        "a flood wait is not an outage"
    );
    for id in &ids {
        assert!(
            notification_lines(app.dir.path(), id).is_empty(),
            "nothing handed to the fallback channels"
        );
    }
}
