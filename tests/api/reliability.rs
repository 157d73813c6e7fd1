//! Guarantees under faults, besides the store's own (`store_faults.rs`): timers are supervised,
//! a request in flight survives a registry restart, undeliverable notifications become dead
//! letters an operator can requeue, the fallback queue replays after a crash, the fallback file
//! keeps one whole line per notification (batched per `fallback.batch_interval`), and long polls
//! end with the approval's JSON even when the service stops.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::support::smtp::SmtpServer;

const WAIT: Duration = Duration::from_secs(15);

/// Settings for an email-only fallback through `smtp`, retried fast.
fn email_env<'a>(
    smtp: &'a SmtpServer,
    port: &'a str,
    max_attempts: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("APPROVAL_GATE__FALLBACK__ORDER", "email"),
        ("APPROVAL_GATE__FALLBACK__MAX_ATTEMPTS", max_attempts),
        ("APPROVAL_GATE__FALLBACK__RETRY_DELAY", "50ms"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_HOST", smtp.host()),
        ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_PORT", port),
        ("APPROVAL_GATE__FALLBACK__EMAIL__TLS", "none"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__FROM", "gate@example.com"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__TO", "ops@example.com"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__TIMEOUT", "2s"),
    ]
}

/// [`email_env`] where a notification becomes a dead letter on its attempts alone, even while
/// the channel delivers nothing at all (`dead_letter_after = 0s`).
fn email_env_dead_at_once<'a>(
    smtp: &'a SmtpServer,
    port: &'a str,
    max_attempts: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = email_env(smtp, port, max_attempts);
    env.push(("APPROVAL_GATE__FALLBACK__DEAD_LETTER_AFTER", "0s"));
    env
}

/// Wait until `smtp` received a mail mentioning `id`.
async fn mailed(smtp: &SmtpServer, id: &str) {
    eventually(WAIT, &format!("a mail about {id}"), || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.body().contains(id))
            .map(|_| ())
    })
    .await;
}

#[actix_web::test]
async fn a_panic_in_a_timer_restarts_the_actor_and_it_keeps_working() {
    let app = spawn_app().await;
    for actor in ["timeout_sweeper", "approval_registry", "fallback_notifier"] {
        let response = app
            .request(
                Method::POST,
                &format!("/api/debug/actors/{actor}/crash?in=timer"),
                Some(OPERATOR_TOKEN),
            )
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        eventually(WAIT, &format!("{actor} to be restarted"), || async {
            (app.health().await["actors"][actor]["restarts"] == 1).then_some(())
        })
        .await;
    }
    // The restarted sweeper still fires deadlines; the registry still answers.
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let id = app.create_id(&body).await;
    let ended: Value = app.get(&id, Some("10s")).await.json().await.expect("json");
    assert_eq!(ended["status"], "timed_out");
    assert_eq!(app.health().await["status"], "healthy");
}

#[actix_web::test]
async fn a_create_in_flight_while_the_registry_restarts_is_answered_and_announced() {
    let app = spawn_app_with(&[("APPROVAL_GATE__FALLBACK__ORDER", "file")]).await;
    let body = new_approval();
    let creates = (0..20).map(|_| app.create(&body));
    let crash = app
        .request(
            Method::POST,
            "/api/debug/actors/approval_registry/crash",
            Some(OPERATOR_TOKEN),
        )
        .send();
    let (responses, _) = futures_util::join!(futures_util::future::join_all(creates), crash);
    let mut created = Vec::new();
    for response in responses {
        // Each is either acknowledged (then it must be there and announced) or refused.
        if response.status() == StatusCode::CREATED {
            let body: Value = response.json().await.expect("json");
            created.push(body["id"].as_str().expect("id").to_string());
        } else {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    assert!(!created.is_empty());
    for id in &created {
        assert_eq!(app.get(id, None).await.status(), StatusCode::OK);
        eventually(WAIT, "the file channel to announce it", || async {
            (!notification_lines(app.dir.path(), id).is_empty()).then_some(())
        })
        .await;
    }
}

/// The dead letter `approval_id`'s notification becomes, once there is one.
async fn dead_letter(app: &impl Api, approval_id: &str) -> Value {
    eventually(WAIT, "a dead letter", || async {
        let body = app.operator_json("/api/admin/dead-letters").await;
        body["dead_letters"]
            .as_array()?
            .iter()
            .find(|l| l["approval_id"] == approval_id)
            .cloned()
    })
    .await
}

/// `POST /api/admin/dead-letters/{id}/requeue` as the operator.
async fn post_requeue(app: &impl Api, id: &str) -> reqwest::Response {
    app.request(
        Method::POST,
        &format!("/api/admin/dead-letters/{id}/requeue"),
        Some(OPERATOR_TOKEN),
    )
    .send()
    .await
    .expect("send")
}

#[actix_web::test]
async fn an_undeliverable_mail_becomes_a_dead_letter_and_a_requeue_delivers_it() {
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let app = spawn_app_with(&email_env_dead_at_once(&smtp, &port, "2")).await;
    let id = app.create_id(&new_approval()).await;

    // Agents may not see dead letters.
    let as_agent = app
        .request(Method::GET, "/api/admin/dead-letters", Some(AGENT_TOKEN))
        .send()
        .await
        .expect("send");
    assert_eq!(as_agent.status(), StatusCode::FORBIDDEN);

    let letter = dead_letter(&app, &id).await;
    assert_eq!(letter["channel"], "email");
    assert_eq!(
        app.health().await["actors"]["approval_registry"]["detail"]["dead_letters"],
        1
    );

    smtp.set_refuse(false);
    let requeue = post_requeue(&app, letter["id"].as_str().expect("id")).await;
    assert_eq!(requeue.status(), StatusCode::OK);
    mailed(&smtp, &id).await;
    assert_eq!(
        app.health().await["actors"]["approval_registry"]["detail"]["dead_letters"],
        0
    );
    assert_eq!(
        post_requeue(&app, "12345").await.status(),
        StatusCode::NOT_FOUND
    );
}

/// A requeue whose commit fails is reported to the operator, and the entry still goes out once
/// the store commits again: it is back in its queue, and its notifier is woken then.
#[actix_web::test]
async fn a_requeue_whose_commit_fails_is_reported_and_delivered_once_the_store_commits() {
    if sled_only("a_requeue_whose_commit_fails_is_reported_and_delivered_once_the_store_commits") {
        return;
    }
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let app = spawn_app_with(&email_env_dead_at_once(&smtp, &port, "2")).await;
    let id = app.create_id(&new_approval()).await;
    let letter = dead_letter(&app, &id).await;

    smtp.set_refuse(false);
    // More failures than syncs can happen before the requeue's own (at most the history's).
    fail_commits(&app, 3).await;
    let requeue = post_requeue(&app, letter["id"].as_str().expect("id")).await;
    assert_eq!(requeue.status(), StatusCode::SERVICE_UNAVAILABLE);
    mailed(&smtp, &id).await;
}

#[actix_web::test]
async fn fallback_notifications_queued_at_a_crash_are_replayed_on_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let env = email_env(&smtp, &port, "100");
    let mut first = spawn_binary(dir.path(), &env);
    let id = first.create_id(&new_approval()).await;
    first.signal(9);
    first.wait_exit(WAIT);
    drop(first);
    assert!(smtp.messages().is_empty());

    smtp.set_refuse(false);
    let _second = spawn_binary(dir.path(), &env);
    mailed(&smtp, &id).await;
}

#[actix_web::test]
async fn sigterm_completes_open_long_polls_with_the_approval_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn_binary(
        dir.path(),
        &[("APPROVAL_GATE__SERVER__SHUTDOWN_TIMEOUT", "10s")],
    );
    let id = child.create_id(&new_approval()).await;
    let poll = child.get(&id, Some("60s"));
    let stop = async {
        eventually(WAIT, "the long poll to register", || async {
            (metric(&child.metrics().await, "approval_gate_waiters") == Some(1.0)).then_some(())
        })
        .await;
        child.signal(15);
    };
    let (polled, ()) = futures_util::join!(poll, stop);
    assert_eq!(polled.status(), StatusCode::OK);
    let text = polled.text().await.expect("complete body");
    let body: Value = serde_json::from_str(text.trim()).expect("the body is the approval's JSON");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "pending");
    assert!(child.wait_exit(WAIT).success());
}

/// A line cut short in the notifications file (a crash mid-write, a write the disk refused
/// halfway) must not swallow the next one: every notification stays a JSON line of its own.
#[actix_web::test]
async fn a_notification_after_a_line_cut_short_is_a_line_of_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notifications.jsonl");
    std::fs::write(
        &path,
        r#"{"at":"2026-11-29T00:00:00Z","event":"created","id":"cut-sh"#,
    )
    .expect("seed a cut line");
    let file = path.display().to_string();
    let app = spawn_app_with(&[("APPROVAL_GATE__FALLBACK__FILE_PATH", file.as_str())]).await;
    let id = app.create_id(&new_approval()).await;
    let line = eventually(WAIT, "the create's own line in the file", || async {
        std::fs::read_to_string(&path)
            .ok()?
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["id"] == id.as_str())
    })
    .await;
    assert_eq!(line["event"], "created");
}

#[actix_web::test]
async fn list_rows_carry_a_bounded_preview_of_large_inputs() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__LIST_PREVIEW_BYTES", "64")]).await;
    let mut body = new_approval();
    body["tool_input"] = json!({ "content": "é".repeat(5000) });
    let id = app.create_id(&body).await;
    let small = app.create_id(&new_approval()).await;

    let page: Value = app.list("").await.json().await.expect("json");
    let rows = page["approvals"].as_array().expect("rows");
    let large = rows.iter().find(|r| r["id"] == id.as_str()).expect("row");
    assert_eq!(large["tool_input"], Value::Null);
    let preview = large["tool_input_preview"].as_str().expect("preview");
    assert!(preview.len() <= 64 + '…'.len_utf8(), "{preview}");
    assert!(preview.starts_with("{\"content\":\"é"), "{preview}");
    let full_len = serde_json::to_string(&body["tool_input"])
        .expect("json")
        .len();
    assert_eq!(large["tool_input_bytes"], full_len);
    // Small inputs are shown whole; the full record still has everything.
    let small_row = rows
        .iter()
        .find(|r| r["id"] == small.as_str())
        .expect("row");
    assert_eq!(small_row["tool_input"]["command"], "rm -rf ./build");
    assert!(small_row.get("tool_input_preview").is_none());
    let whole: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(whole["tool_input"], body["tool_input"]);
}

#[actix_web::test]
async fn a_stuck_notification_shows_its_age_until_delivered() {
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let app = spawn_app_with(&email_env(&smtp, &port, "100")).await;
    let id = app.create_id(&new_approval()).await;
    let oldest = r#"approval_gate_queue_oldest_seconds{channel="email"}"#;
    let aged = eventually(WAIT, "the email queue's oldest entry aging", || async {
        metric(&app.metrics().await, oldest).filter(|age| *age >= 0.3)
    })
    .await;
    assert!(aged < 60.0, "{aged}");

    smtp.set_refuse(false);
    mailed(&smtp, &id).await;
    let text = eventually(
        WAIT,
        "the queue empty and the age at delivery observed",
        || async {
            let text = app.metrics().await;
            let count = metric(
                &text,
                r#"approval_gate_queue_age_seconds_count{channel="email"}"#,
            );
            (metric(&text, oldest) == Some(0.0) && count == Some(1.0)).then_some(text)
        },
    )
    .await;
    let waited = metric(
        &text,
        r#"approval_gate_queue_age_seconds_sum{channel="email"}"#,
    )
    .expect("a sum");
    assert!(
        waited >= aged,
        "delivered after {waited} s, seen waiting {aged} s"
    );
}

/// `fallback.batch_interval`: a channel's next batch waits until the interval after the last
/// one started, then carries everything that arrived meanwhile.
#[actix_web::test]
async fn notifications_within_the_batch_interval_wait_for_it_and_go_out_together() {
    let app = spawn_app_with(&[("APPROVAL_GATE__FALLBACK__BATCH_INTERVAL", "1s")]).await;
    let first = app.create_id(&new_approval()).await;
    notified(app.dir.path(), "the first notification", &[&first]).await;
    let first_seen = std::time::Instant::now();
    let second = app.create_id(&new_approval()).await;
    let third = app.create_id(&new_approval()).await;
    let text = eventually(WAIT, "the next batch", || async {
        let text = notifications_text(app.dir.path());
        (text.contains(&second) || text.contains(&third)).then_some(text)
    })
    .await;
    let waited = first_seen.elapsed();
    // The batch started at most a poll before the first line was seen: 1 s, minus slack.
    assert!(
        waited >= Duration::from_millis(500),
        "the next batch came after {waited:?}"
    );
    assert!(
        text.contains(&second) && text.contains(&third),
        "both went out in the same batch"
    );
}

/// A notifier restarted while a lane waits out its batch interval delivers what waited: the
/// wake-up it had scheduled died with the old context, so nothing may be left armed.
#[actix_web::test]
async fn a_notifier_restarted_inside_a_batch_interval_still_delivers_what_waited() {
    let app = spawn_app_with(&[("APPROVAL_GATE__FALLBACK__BATCH_INTERVAL", "1s")]).await;
    let first = app.create_id(&new_approval()).await;
    notified(app.dir.path(), "the first notification", &[&first]).await;
    // Waits for the interval's end, then the notifier restarts before it.
    let second = app.create_id(&new_approval()).await;
    crash_actor(&app, "fallback_notifier").await;
    eventually(WAIT, "the notifier to be restarted", || async {
        (app.health().await["actors"]["fallback_notifier"]["restarts"] == 1).then_some(())
    })
    .await;
    notified(
        app.dir.path(),
        "the waiting notification after the restart",
        &[&second],
    )
    .await;
}

/// A notifier that lost a wake-up holds its later notifications behind the entry it was never
/// told about. Health says so (degraded, the stuck lanes named) instead of "healthy", and a
/// restart of the notifier replays the queue and delivers all of them.
#[actix_web::test]
async fn a_lane_stuck_behind_a_lost_wake_up_is_reported_and_a_restart_delivers_it() {
    if sled_only("a_lane_stuck_behind_a_lost_wake_up_is_reported_and_a_restart_delivers_it") {
        return;
    }
    let app = spawn_app_with(&[("APPROVAL_GATE__FALLBACK__ORDER", "file")]).await;
    lose_wakes(&app, "fallback_notifier", 1).await;
    let lost = app.create_id(&new_approval()).await;
    let behind = app.create_id(&new_approval()).await;
    let health = eventually(
        Duration::from_secs(30),
        "health to report the stuck lane",
        || async {
            let health = app.health().await;
            let notifier = &health["actors"]["fallback_notifier"];
            (notifier["status"] == "degraded" && notifier["detail"]["stuck"]["file"].is_u64())
                .then_some(health)
        },
    )
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    let text = notifications_text(app.dir.path());
    assert!(
        !text.contains(&lost) && !text.contains(&behind),
        "delivered while stuck: {text}"
    );

    crash_actor(&app, "fallback_notifier").await;
    notified(
        app.dir.path(),
        "both notifications after the restart",
        &[&lost, &behind],
    )
    .await;
    actor_health_until(
        &app,
        "fallback_notifier",
        "the notifier healthy again",
        |notifier| notifier["status"] == "healthy" && notifier["detail"]["stuck"] == json!({}),
    )
    .await;
}

/// A relay that is down for a while is the channel being down, not the notifications' fault:
/// attempts are counted per notification, and one becomes a dead letter on its attempts only if
/// it failed while the channel delivered others, or after `dead_letter_after`.
#[actix_web::test]
async fn a_short_relay_outage_dead_letters_nothing() {
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let app = spawn_app_with(&email_env(&smtp, &port, "2")).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_id(&new_approval()).await);
    }
    // Well past two attempts each (50 ms, doubling).
    eventually(WAIT, "several refused connections", || async {
        (smtp.connections() >= 4).then_some(())
    })
    .await;
    let letters = app.operator_json("/api/admin/dead-letters").await;
    assert_eq!(
        letters["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "{letters}"
    );
    smtp.set_refuse(false);
    for id in &ids {
        mailed(&smtp, id).await;
    }
    assert_eq!(
        app.health().await["actors"]["approval_registry"]["detail"]["dead_letters"],
        0
    );
}

/// After an outage longer than `dead_letter_after`, one request puts a channel's dead letters
/// back; the other channels' letters stay.
#[actix_web::test]
async fn a_channels_dead_letters_go_back_with_one_request() {
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let app = spawn_app_with(&email_env_dead_at_once(&smtp, &port, "1")).await;
    let ids = [
        app.create_id(&new_approval()).await,
        app.create_id(&new_approval()).await,
    ];
    for id in &ids {
        dead_letter(&app, id).await;
    }
    smtp.set_refuse(false);
    let requeue = |channel: &str| {
        app.request(
            Method::POST,
            "/api/admin/dead-letters/requeue",
            Some(OPERATOR_TOKEN),
        )
        .json(&serde_json::json!({ "channel": channel }))
        .send()
    };
    let unknown = requeue("pigeon").await.expect("send");
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let none = requeue("file").await.expect("send");
    assert_eq!(none.status(), StatusCode::OK);
    assert_eq!(none.json::<Value>().await.expect("json")["requeued"], 0);
    let email = requeue("email").await.expect("send");
    assert_eq!(email.status(), StatusCode::OK);
    assert_eq!(email.json::<Value>().await.expect("json")["requeued"], 2);
    for id in &ids {
        mailed(&smtp, id).await;
    }
    assert_eq!(
        app.health().await["actors"]["approval_registry"]["detail"]["dead_letters"],
        0
    );
}

/// A channel's requeue whose commit fails is reported, and its letters still go out once the
/// store commits again: they are back in their queue, and their notifier is woken then.
#[actix_web::test]
async fn a_channel_requeue_whose_commit_fails_is_reported_and_delivered_later() {
    if sled_only("a_channel_requeue_whose_commit_fails_is_reported_and_delivered_later") {
        return;
    }
    let smtp = SmtpServer::start();
    smtp.set_refuse(true);
    let port = smtp.port().to_string();
    let app = spawn_app_with(&email_env_dead_at_once(&smtp, &port, "1")).await;
    let id = app.create_id(&new_approval()).await;
    dead_letter(&app, &id).await;
    smtp.set_refuse(false);
    fail_commits(&app, 3).await;
    let requeue = app
        .request(
            Method::POST,
            "/api/admin/dead-letters/requeue",
            Some(OPERATOR_TOKEN),
        )
        .json(&serde_json::json!({ "channel": "email" }))
        .send()
        .await
        .expect("send");
    assert_eq!(requeue.status(), StatusCode::SERVICE_UNAVAILABLE);
    mailed(&smtp, &id).await;
}
