//! Store fault injection through `POST /api/debug/store/fail-commits` (`debug.fault_injection`).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, OPERATOR_TOKEN};

/// Make the store's next `count` commits fail (`debug.fault_injection`).
pub async fn fail_commits(app: &impl Api, count: u32) {
    inject_commit_faults(app, json!({ "count": count })).await;
}

/// Make sled refuse the writes of the store's next `count` commits that have any, while an
/// empty sync still succeeds, as sled does once one of its own writes failed
/// (`debug.fault_injection`).
pub async fn refuse_writes(app: &impl Api, count: u32) {
    inject_commit_faults(app, json!({ "count": count, "mode": "refuse" })).await;
}

/// Make the store's next `count` commits panic while applying their writes, as a bug or an
/// assertion in sled would (`debug.fault_injection`).
pub async fn panic_commits(app: &impl Api, count: u32) {
    inject_commit_faults(app, json!({ "count": count, "mode": "panic" })).await;
}

/// Make the store's next `count` commits hang `ms` milliseconds before their sync, as a disk
/// that stops answering would (`debug.fault_injection`).
pub async fn stall_commits(app: &impl Api, count: u32, ms: u64) {
    inject_commit_faults(app, json!({ "count": count, "mode": "stall", "ms": ms })).await;
}

/// Make the store's next `count` checkpoints fail, as sled's flush does on a full disk
/// (`debug.fault_injection`).
pub async fn fail_checkpoints(app: &impl Api, count: u32) {
    inject_commit_faults(app, json!({ "count": count, "mode": "checkpoint" })).await;
}

async fn inject_commit_faults(app: &impl Api, body: Value) {
    let response = app
        .request(
            Method::POST,
            "/api/debug/store/fail-commits",
            Some(OPERATOR_TOKEN),
        )
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Make an actor panic in a handler; its supervisor restarts it (`debug.fault_injection`).
pub async fn crash_actor(app: &impl Api, name: &str) {
    let response = app
        .request(
            Method::POST,
            &format!("/api/debug/actors/{name}/crash"),
            Some(OPERATOR_TOKEN),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Make a notifier (`fallback_notifier`, `telegram_gateway`) ignore its next `count` wake-ups
/// (`debug.fault_injection`).
pub async fn lose_wakes(app: &impl Api, actor: &str, count: u32) {
    let response = app
        .request(
            Method::POST,
            &format!("/api/debug/actors/{actor}/lose-wakes"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({ "count": count }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Wait (30 s at most) until `actor`'s entry in `/health` satisfies `ready`, and return it.
pub async fn actor_health_until(
    app: &impl Api,
    actor: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    super::eventually(std::time::Duration::from_secs(30), what, || async {
        let health = app.health().await["actors"][actor].clone();
        ready(&health).then_some(health)
    })
    .await
}
