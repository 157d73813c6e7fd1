//! Long polls: they return on a decision, on the wait elapsing, and free their waiter when the
//! client hangs up.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn a_long_poll_returns_when_an_operator_decides() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;

    let poll = async {
        let response = app.get(&id, Some("30s")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.expect("json")
    };
    let decide = async {
        eventually(
            Duration::from_secs(10),
            "the long poll to register",
            || async {
                (metric(&app.metrics().await, "approval_gate_waiters") == Some(1.0)).then_some(())
            },
        )
        .await;
        app.decide(&id, "approve").await
    };
    let (polled, decided) = futures_util::join!(poll, decide);
    assert_eq!(decided.status(), StatusCode::OK);
    assert_eq!(polled["status"], "approved");
    assert_eq!(polled["decided_by"], "alice");
}

#[actix_web::test]
async fn a_long_poll_returns_the_current_state_when_the_wait_elapses() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    let started = Instant::now();
    let response = app.get(&id, Some("1s")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response
        .json()
        .await
        .expect("json (after heartbeat whitespace)");
    assert_eq!(body["status"], "pending");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "held for the wait"
    );
    eventually(Duration::from_secs(5), "the waiter to be freed", || async {
        (metric(&app.metrics().await, "approval_gate_waiters") == Some(0.0)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_long_poll_on_a_decided_approval_returns_at_once() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    app.decide(&id, "reject").await;
    let body: Value = app.get(&id, Some("5m")).await.json().await.expect("json");
    assert_eq!(body["status"], "rejected");
}

#[actix_web::test]
async fn waits_are_capped_by_max_wait() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__MAX_WAIT", "1s")]).await;
    let id = app.create_id(&new_approval()).await;
    // Asks for an hour; the server answers after its 1 s cap with the pending state.
    let body: Value = app.get(&id, Some("1h")).await.json().await.expect("json");
    assert_eq!(body["status"], "pending");
}

#[actix_web::test]
async fn one_thousand_abandoned_long_polls_leave_no_waiters() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__MAX_WAITERS", "5000")]).await;
    let id = app.create_id(&new_approval()).await;

    // Each poll on its own connection, abandoned by the client after 10 s (time enough for
    // all of them to be registered on a loaded machine, on either store).
    let abandon = (0..1000).map(|_| {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let url = format!("{}/api/approvals/{id}?wait=5m", app.address);
        async move {
            let result = client.get(url).bearer_auth(AGENT_TOKEN).send().await;
            match result {
                // Headers arrive at once; the body is what hangs until the client gives up.
                Ok(response) => response.bytes().await.is_err(),
                Err(error) => error.is_timeout(),
            }
        }
    });
    let watch = async {
        eventually(
            Duration::from_secs(30),
            "1,000 registered waiters",
            || async {
                (metric(&app.metrics().await, "approval_gate_waiters") == Some(1000.0))
                    .then_some(())
            },
        )
        .await
    };
    let (abandoned, ()) = futures_util::join!(futures_util::future::join_all(abandon), watch);
    assert!(
        abandoned.iter().all(|timed_out| *timed_out),
        "every poll was abandoned by its client"
    );

    eventually(
        Duration::from_secs(30),
        "the waiters gauge to fall back to 0",
        || async {
            (metric(&app.metrics().await, "approval_gate_waiters") == Some(0.0)).then_some(())
        },
    )
    .await;
    // And the approval is still decidable.
    assert_eq!(app.decide(&id, "approve").await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn one_agent_token_cannot_take_every_long_poll() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__MAX_WAITERS_PER_AGENT", "2")]).await;
    let id = app.create_id(&new_approval()).await;
    let poll = |token: &'static str, id: String| {
        let url = format!("{}/api/approvals/{id}?wait=5m", app.address);
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("send")
        }
    };
    // Two held polls: headers come at once, the body waits.
    let _held = [
        poll(AGENT_TOKEN, id.clone()).await,
        poll(AGENT_TOKEN, id.clone()).await,
    ];
    eventually(
        Duration::from_secs(15),
        "two registered waiters",
        || async {
            (metric(&app.metrics().await, "approval_gate_waiters") == Some(2.0)).then_some(())
        },
    )
    .await;
    let third = poll(AGENT_TOKEN, id.clone()).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = third.json().await.expect("json");
    assert_eq!(body["error"], "too_many_waiters");
    // Another agent's long poll still waits.
    let other = app
        .request(Method::POST, "/api/approvals", Some(OTHER_AGENT_TOKEN))
        .json(&new_approval())
        .send()
        .await
        .expect("create");
    let other: Value = other.json().await.expect("json");
    let other_id = other["id"].as_str().expect("id").to_string();
    let url = format!("{}/api/approvals/{other_id}?wait=1s", app.address);
    let waited = client()
        .get(url)
        .bearer_auth(OTHER_AGENT_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(waited.status(), StatusCode::OK);
}
