//! Telegram's entries handed to the fallback channels while it cannot deliver them: after the
//! retries, once (also with `fallback.always`), through a failed commit, past the outbox's memory
//! budget, and reported when a lost wake-up leaves them stuck. Breaker mechanics:
//! `telegram_outage.rs`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::support::fake_telegram::{FakeTelegram, Fault};
use crate::telegram_outage::{WAIT, breaker, opens_after_three, shown, wait_breaker};

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
    assert_metric_at_least(
        &app,
        "approval_gate_telegram_retries_total{method=\"sendMessage\"}",
        2.0,
    )
    .await;
}

/// A hand-over to the fallback channels whose commit fails waits for a later commit instead of
/// being dropped: the notification still reaches the fallback file, and the channel is not left
/// waiting behind it until a restart.
#[actix_web::test]
async fn a_hand_over_whose_commit_fails_still_reaches_the_fallback_channels() {
    if sled_only("a_hand_over_whose_commit_fails_still_reaches_the_fallback_channels") {
        return;
    }
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

/// An outage's backlog larger than the outbox's memory budget (8 MiB of entry content): the
/// gateway holds at most the budget in memory, and reads the rest back from the store when
/// Telegram is back, so every approval still reaches Telegram.
#[actix_web::test]
async fn a_backlog_past_the_outbox_memory_budget_is_read_back_and_delivered() {
    const BIG: usize = 50;
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            ("APPROVAL_GATE__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "2"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__MINIMUM_THROUGHPUT", "2"),
            ("APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION", "1s"),
            ("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "0"),
            ("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0"),
        ],
    )
    .await;
    fake.set_down(Some(Fault::DropConnection), false);
    let mut ids = vec![app.create_id(&new_approval()).await];
    wait_breaker(&app, "open").await;
    // 50 approvals of 200 kB each: about 10 MB of content in the outbox.
    let mut big = new_approval();
    big["tool_input"] = json!({ "command": "x".repeat(200_000) });
    for _ in 0..BIG {
        ids.push(app.create_id(&big).await);
    }
    let report = eventually(WAIT, "the whole backlog in the outbox", || async {
        let report = breaker(&app).await;
        (report["outbox_size"] == ids.len()).then_some(report)
    })
    .await;
    let held = report["outbox_in_memory_bytes"].as_u64().expect("bytes");
    assert!(
        held <= 8 * 1024 * 1024,
        "{held} bytes of outbox held in memory"
    );

    fake.clear_faults();
    for id in &ids {
        shown(&fake, id).await;
    }
    let report = eventually(WAIT, "an empty outbox", || async {
        let report = breaker(&app).await;
        (report["outbox_size"] == 0).then_some(report)
    })
    .await;
    assert_eq!(report["outbox_in_memory_bytes"], 0);
}

/// A gateway that lost a wake-up holds every later message behind the entry it was never told
/// about. Health says so (degraded, the entry named) instead of "healthy", and a restart of the
/// gateway replays its queue and sends both messages.
#[actix_web::test]
async fn telegram_deliveries_stuck_behind_a_lost_wake_up_are_reported_and_a_restart_sends_them() {
    if sled_only(
        "telegram_deliveries_stuck_behind_a_lost_wake_up_are_reported_and_a_restart_sends_them",
    ) {
        return;
    }
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &[]).await;
    lose_wakes(&app, "telegram_gateway", 1).await;
    let lost = app.create_id(&new_approval()).await;
    let behind = app.create_id(&new_approval()).await;
    let gateway = actor_health_until(
        &app,
        "telegram_gateway",
        "health to report the stuck outbox",
        |gateway| gateway["status"] == "degraded" && gateway["detail"]["stuck"]["seq"].is_u64(),
    )
    .await;
    assert_eq!(gateway["detail"]["breaker_state"], "closed", "{gateway}");
    assert!(
        fake.messages().is_empty(),
        "sent while stuck: {}",
        fake.summary()
    );

    crash_actor(&app, "telegram_gateway").await;
    shown(&fake, &lost).await;
    shown(&fake, &behind).await;
    actor_health_until(
        &app,
        "telegram_gateway",
        "the gateway healthy again",
        |gateway| gateway["status"] == "healthy" && gateway["detail"]["stuck"].is_null(),
    )
    .await;
}

/// While the breaker is open, new entries go to the fallback channels as their wake-ups arrive,
/// and a catch-up walk hands over whatever it missed. An entry whose wake-up is lost stops that
/// walk: health names it under `detail.stuck` (the open breaker alone already makes the gateway
/// degraded, so the status says nothing), and a restarted gateway hands it over.
#[actix_web::test]
async fn a_hand_over_stuck_behind_a_lost_wake_up_is_reported_and_a_restart_hands_it_over() {
    if sled_only("a_hand_over_stuck_behind_a_lost_wake_up_is_reported_and_a_restart_hands_it_over")
    {
        return;
    }
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(&fake.url(), fake.token(), &opens_after_three("60s")).await;
    fake.set_down(Some(Fault::DropConnection), false);
    app.create_id(&new_approval()).await;
    wait_breaker(&app, "open").await;

    lose_wakes(&app, "telegram_gateway", 1).await;
    let lost = app.create_id(&new_approval()).await;
    let behind = app.create_id(&new_approval()).await;
    notified(
        app.dir.path(),
        "the later approval on the fallback file",
        &[&behind],
    )
    .await;
    let gateway = actor_health_until(
        &app,
        "telegram_gateway",
        "health to name the stuck hand-over",
        |gateway| gateway["detail"]["stuck"]["seq"].is_u64(),
    )
    .await;
    assert_eq!(gateway["status"], "degraded", "{gateway}");
    let text = notifications_text(app.dir.path());
    assert!(
        !text.contains(&lost),
        "handed over without its wake-up: {text}"
    );

    crash_actor(&app, "telegram_gateway").await;
    eventually(
        Duration::from_secs(30),
        "the lost approval on the fallback file",
        || async {
            notifications_text(app.dir.path())
                .contains(&lost)
                .then_some(())
        },
    )
    .await;
    actor_health_until(&app, "telegram_gateway", "no stuck hand-over", |gateway| {
        gateway["detail"]["stuck"].is_null()
    })
    .await;
}

/// With `fallback.always` the fallback channels hear of every change from the registry, so an
/// outage must not hand them the same notifications a second time: each approval is announced
/// once on the fallback file, and still goes to Telegram when it is back.
#[actix_web::test]
async fn with_fallback_always_an_outage_announces_each_approval_once() {
    let fake = FakeTelegram::start();
    let app = spawn_telegram_app(
        &fake.url(),
        fake.token(),
        &[
            opens_after_three("1500ms"),
            vec![("APPROVAL_GATE__FALLBACK__ALWAYS", "true")],
        ]
        .concat(),
    )
    .await;
    fake.set_down(Some(Fault::DropConnection), false);
    let first = app.create_id(&new_approval()).await;
    wait_breaker(&app, "open").await;
    let ids = [
        first,
        app.create_id(&new_approval()).await,
        app.create_id(&new_approval()).await,
    ];
    let ids_ref: Vec<&str> = ids.iter().map(String::as_str).collect();
    notified(
        app.dir.path(),
        "every approval on the fallback file",
        &ids_ref,
    )
    .await;
    // Every Wake reached the gateway (its outbox counts all three) and the fallback notifier
    // has nothing left to deliver: a hand-over would have been announced by now.
    eventually(
        WAIT,
        "the gateway and the fallback channels idle",
        || async {
            let text = app.metrics().await;
            (metric(&text, "approval_gate_telegram_outbox_size") == Some(3.0)
                && metric(&text, "approval_gate_fallback_queued") == Some(0.0))
            .then_some(())
        },
    )
    .await;
    for id in &ids {
        let created: Vec<_> = notification_lines(app.dir.path(), id)
            .into_iter()
            .filter(|line| line["event"] == "created")
            .collect();
        assert_eq!(
            created.len(),
            1,
            "approval {id} announced {} times",
            created.len()
        );
    }
    fake.clear_faults();
    wait_breaker(&app, "closed").await;
    for id in &ids {
        shown(&fake, id).await;
    }
}

#[actix_web::test]
async fn a_flood_wait_longer_than_an_open_breaker_hands_what_waits_to_the_fallback() {
    let fake = FakeTelegram::start();
    // A break of 2 s: a flood wait of an hour is far longer than the breaker would keep
    // Telegram untried, so operators must hear of the approvals from the fallback channels.
    let app = spawn_telegram_app(&fake.url(), fake.token(), &opens_after_three("2s")).await;
    fake.push_fault(
        Some("sendMessage"),
        Fault::TooManyRequests { retry_after: 3600 },
    );
    let first = app.create_id(&new_approval()).await;
    let told = |id: String| {
        let dir = app.dir.path().to_path_buf();
        async move {
            notification_lines(&dir, &id)
                .into_iter()
                .find(|l| l["event"] == "created")
        }
    };
    eventually(WAIT, "the fallback file to get the first approval", || {
        told(first.clone())
    })
    .await;
    // Approvals created during the wait are handed over too, not held for the hour.
    let second = app.create_id(&new_approval()).await;
    eventually(WAIT, "the fallback file to get the second approval", || {
        told(second.clone())
    })
    .await;
    assert_eq!(
        fake.calls_to("sendMessage").len(),
        1,
        "nothing more is sent during the wait: {}",
        fake.summary()
    );
    assert_eq!(
        breaker(&app).await["state"],
        "closed",
        "a flood wait is not counted as failures"
    );
}
