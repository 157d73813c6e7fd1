//! Deadlines: a pending approval becomes `timed_out` within 1 s of `expires_at + grace_period`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[actix_web::test]
async fn a_pending_approval_times_out_within_a_second_of_its_deadline() {
    // check_interval is 60 s in tests: only the precise wake-up can meet the 1 s bound.
    let app = spawn_app_with(&[("APPROVAL_GATE__APPROVAL_TIMEOUT__GRACE_PERIOD", "500ms")]).await;
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let created = app.create_ok(&body).await;
    let id = created["id"].as_str().expect("id");

    let ended: Value = app.get(id, Some("10s")).await.json().await.expect("json");
    assert_eq!(ended["status"], "timed_out");
    assert_eq!(ended["decided_by"], "system");
    assert!(
        ended["comment"]
            .as_str()
            .unwrap_or("")
            .contains("no decision"),
        "{ended}"
    );
    let deadline = ts(&ended["expires_at"]) + chrono::Duration::milliseconds(500);
    let late = ts(&ended["decided_at"]) - deadline;
    assert!(
        late >= chrono::Duration::zero(),
        "not before the deadline: {late}"
    );
    assert!(
        late < chrono::Duration::seconds(1),
        "within 1 s of the deadline: {late}"
    );
}

#[actix_web::test]
async fn deadlines_fire_in_order_and_decided_ones_do_not_fire() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    // The last one is a sentinel: once it has fired, the decided third one's deadline has
    // passed too.
    for timeout in ["2s", "1s", "3s", "3s"] {
        let mut body = new_approval();
        body["timeout"] = json!(timeout);
        ids.push(app.create_id(&body).await);
    }
    assert_eq!(
        app.decide(&ids[2], "approve").await.status(),
        StatusCode::OK
    );

    for id in &ids[..2] {
        let ended: Value = app.get(id, Some("10s")).await.json().await.expect("json");
        assert_eq!(ended["status"], "timed_out", "{ended}");
        let late = ts(&ended["decided_at"]) - ts(&ended["expires_at"]);
        assert!(late < chrono::Duration::seconds(1), "{late}");
    }
    let sentinel: Value = app
        .get(&ids[3], Some("10s"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(sentinel["status"], "timed_out");
    let decided: Value = app.get(&ids[2], None).await.json().await.expect("json");
    assert_eq!(decided["status"], "approved");
    let text = app.metrics().await;
    assert_eq!(
        metric(
            &text,
            "approval_gate_decisions_total{outcome=\"timed_out\"}"
        ),
        Some(3.0)
    );
    assert_eq!(metric(&text, "approval_gate_pending_approvals"), Some(0.0));
}

#[actix_web::test]
async fn a_decision_after_the_timeout_is_a_conflict() {
    let app = spawn_app().await;
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let id = app.create_id(&body).await;
    let ended: Value = app.get(&id, Some("10s")).await.json().await.expect("json");
    assert_eq!(ended["status"], "timed_out");
    let late = app.decide(&id, "approve").await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let body: Value = late.json().await.expect("json");
    assert_eq!(body["approval"]["status"], "timed_out");
}

#[actix_web::test]
async fn a_decision_after_the_deadline_loses_even_before_the_sweeper_expires_it() {
    // The sweeper never hears of this deadline: the transition itself must refuse a decision
    // that comes after `expires_at + grace_period`.
    let app = spawn_app().await;
    lose_wakes(&app, "timeout_sweeper", 1).await;
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let created = app.create_ok(&body).await;
    let id = created["id"].as_str().unwrap().to_string();
    let expires_at = ts(&created["expires_at"]);
    past(expires_at).await;
    let still: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(still["status"], "pending", "nobody expired it: {still}");
    let late = app.decide(&id, "approve").await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let body: Value = late.json().await.expect("json");
    assert_eq!(body["approval"]["status"], "timed_out", "{body}");
    assert_eq!(body["approval"]["decided_by"], "system");
    let ended: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(ended["status"], "timed_out");
}

#[actix_web::test]
async fn a_wave_of_deadlines_is_expired_through_a_bounded_window() {
    // Every approval times out at once: the sweeper sends their expiries a window at a time
    // (each in flight is a future actix polls on every wake-up), and all of them end.
    let app = spawn_app().await;
    // The sweeper misses every deadline as it is armed; a registry restart re-arms them all
    // at once, long past due: a wave.
    lose_wakes(&app, "timeout_sweeper", 1000).await;
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let creates = (0..600).map(|_| app.create_id(&body));
    let ids = futures_util::future::join_all(creates).await;
    let last = app
        .get(ids.last().unwrap(), None)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let expires_at = ts(&last["expires_at"]);
    past(expires_at).await;
    crash_actor(&app, "approval_registry").await;
    let most_in_flight = std::sync::atomic::AtomicU64::new(0);
    eventually(
        std::time::Duration::from_secs(30),
        "every approval timed out",
        || async {
            let health = app.health().await;
            let in_flight = health["actors"]["timeout_sweeper"]["detail"]["in_flight"]
                .as_u64()
                .unwrap_or(0);
            most_in_flight.fetch_max(in_flight, std::sync::atomic::Ordering::Relaxed);
            let db = app.get_json("/api/diagnostics/database").await;
            (db["counts"]["timed_out"].as_u64() == Some(ids.len() as u64)).then_some(())
        },
    )
    .await;
    let most_in_flight = most_in_flight.into_inner();
    assert!(
        most_in_flight <= 64,
        "{most_in_flight} expiries in flight at once"
    );
}

/// Wait (5 s at most) until the clock has passed `deadline`.
async fn past(deadline: chrono::DateTime<chrono::FixedOffset>) {
    eventually(
        std::time::Duration::from_secs(5),
        "the deadline to pass",
        || async { (chrono::Utc::now() > deadline).then_some(()) },
    )
    .await;
}
