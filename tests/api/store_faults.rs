//! Guarantees when the store fails: a failed, panicking or hanging commit is reported and
//! nothing half-applied is shown, a failed timeout is retried, and a store that cannot recover
//! in-process makes the service exit for a restart that loses nothing acknowledged.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);

/// Create an approval and wait until both fallback channels delivered it and recorded that on
/// its history, so no background commit is left to run: the commits injected faults aim at are
/// then the test's own.
async fn create_quietly(app: &impl Api) -> String {
    let id = app.create_id(&new_approval()).await;
    eventually(WAIT, "the creation delivered and recorded", || async {
        let history = app
            .operator_json(&format!("/api/approvals/{id}/events"))
            .await;
        let delivered = history["events"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "delivered")
            .count();
        (delivered >= 2).then_some(())
    })
    .await;
    id
}

/// The ids of the pending approvals, sorted.
async fn pending_ids(app: &impl Api) -> Vec<String> {
    let listed: Value = app
        .list("?status=pending")
        .await
        .json()
        .await
        .expect("json");
    let mut ids: Vec<String> = listed["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    ids.sort_unstable();
    ids
}

async fn status_of(app: &impl Api, path: &str) -> StatusCode {
    app.request(Method::GET, path, None)
        .send()
        .await
        .expect("send")
        .status()
}

/// A write refused because its commit failed: 503 `unavailable`, health unhealthy and readiness
/// 503, until the store commits again; without any write, since health probes the store.
async fn refused_and_reported_until_the_store_recovers(app: &impl Api, refused: reqwest::Response) {
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(app.health().await["status"], "unhealthy");
    assert_eq!(
        status_of(app, "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    eventually(WAIT, "readiness to recover", || async {
        (status_of(app, "/health/ready").await == StatusCode::OK).then_some(())
    })
    .await;
}

/// A store that can still sync but no longer write (sled after a write of its own failed, a
/// disk with no room for a record) is unhealthy for as long as that lasts: health probes it
/// with a real write, not an empty sync that would pass.
#[actix_web::test]
async fn a_store_that_syncs_but_cannot_write_stays_unhealthy_until_it_writes_again() {
    if sled_only("a_store_that_syncs_but_cannot_write_stays_unhealthy_until_it_writes_again") {
        return;
    }
    let app = spawn_app().await;
    create_quietly(&app).await;
    refuse_writes(&app, 1_000).await;
    let refused = app.create(&new_approval()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Several health pings, each probing the store: all of them must fail.
    for _ in 0..5 {
        assert_eq!(app.health().await["status"], "unhealthy");
        assert_eq!(
            status_of(&app, "/health/ready").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refuse_writes(&app, 0).await;
    eventually(WAIT, "readiness to recover", || async {
        (status_of(&app, "/health/ready").await == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(
        app.create(&new_approval()).await.status(),
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn a_failed_commit_is_503_is_reverted_and_health_says_so_until_a_commit_succeeds() {
    if sled_only("a_failed_commit_is_503_is_reverted_and_health_says_so_until_a_commit_succeeds") {
        return;
    }
    let app = spawn_app().await;
    // Let the creation's deliveries land first: recording them on the history commits too, and
    // those commits would take the failures injected below.
    let id = create_quietly(&app).await;

    // The decision's commit fails: 503, and nobody may later be told it was approved. The
    // store keeps failing for two more commits (the health checks below probe it).
    fail_commits(&app, 3).await;
    let failed = app.decide(&id, "approve").await;
    refused_and_reported_until_the_store_recovers(&app, failed).await;
    let current: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(
        current["status"], "pending",
        "the failed decision was reverted"
    );

    // A create whose commit fails is not there afterwards, and its idempotency key is free.
    fail_commits(&app, 1).await;
    let mut body = new_approval();
    body["idempotency_key"] = json!("retry-me");
    assert_eq!(
        app.create(&body).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(pending_ids(&app).await, std::slice::from_ref(&id));

    // The next commit succeeds: the retried decision wins with 200, not 409.
    let decided = app.decide(&id, "reject").await;
    assert_eq!(decided.status(), StatusCode::OK);
    assert_eq!(app.create(&body).await.status(), StatusCode::CREATED);
    assert_eq!(status_of(&app, "/health/ready").await, StatusCode::OK);
    let stats = app.get_json("/api/diagnostics/database").await;
    assert_eq!(stats["counts"]["pending"], 1, "{stats}");
    assert_eq!(stats["counts"]["rejected"], 1, "{stats}");
    assert_eq!(stats["committing"], true);
}

/// sled panicking inside a commit (an internal assertion, a page it cannot read) is a failed
/// commit like any other: the caller gets 503, nothing of the change is shown, health says so,
/// and the store's commit thread lives on to commit the next change.
#[actix_web::test]
async fn a_panic_inside_a_commit_is_a_failed_commit_and_the_store_commits_again() {
    if sled_only("a_panic_inside_a_commit_is_a_failed_commit_and_the_store_commits_again") {
        return;
    }
    let app = spawn_app().await;
    create_quietly(&app).await;

    // One for the create, two for the health probes below.
    panic_commits(&app, 3).await;
    let mut body = new_approval();
    body["idempotency_key"] = json!("after-the-panic");
    let failed = app.create(&body).await;
    refused_and_reported_until_the_store_recovers(&app, failed).await;

    // The failed create left nothing behind: its idempotency key makes a new approval.
    let retried = app.create(&body).await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(pending_ids(&app).await.len(), 2);
    let stats = app.get_json("/api/diagnostics/database").await;
    assert_eq!(stats["committing"], true, "{stats}");
    assert!(stats["commit_failures"].as_u64() >= Some(1), "{stats}");
}

/// A disk that hangs is reported, not waited out in silence: while a commit runs longer than
/// `store.commit_stall`, health is unhealthy and readiness 503 (with how long it has run); the
/// write it holds is answered once the disk answers, and health recovers.
#[actix_web::test]
async fn a_commit_that_hangs_past_the_stall_limit_is_reported_until_it_finishes() {
    if sled_only("a_commit_that_hangs_past_the_stall_limit_is_reported_until_it_finishes") {
        return;
    }
    let app = spawn_app_with(&[("APPROVAL_GATE__STORE__COMMIT_STALL", "1s")]).await;
    create_quietly(&app).await;

    stall_commits(&app, 1, 4_000).await;
    let body = new_approval();
    let create = app.create(&body);
    let watch = async {
        eventually(WAIT, "readiness to report the stalled commit", || async {
            (status_of(&app, "/health/ready").await == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(())
        })
        .await;
        let health = app.health().await;
        assert_eq!(health["status"], "unhealthy", "{health}");
        let registry = &health["actors"]["approval_registry"]["detail"];
        assert_eq!(registry["store_committing"], false, "{health}");
        assert!(
            registry["store_commit_running_ms"].as_u64() > Some(1_000),
            "{health}"
        );
    };
    let (created, ()) = futures_util::future::join(create, watch).await;
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "the held write is answered"
    );
    eventually(WAIT, "readiness to recover", || async {
        (status_of(&app, "/health/ready").await == StatusCode::OK).then_some(())
    })
    .await;
    // Later commits (history riding on an idle pass) may be running at any moment: what must
    // end is the stalled one's running time.
    eventually(WAIT, "no commit to be reported running", || async {
        let stats = app.get_json("/api/diagnostics/database").await;
        (stats["commit_running_ms"] == Value::Null).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_timeout_whose_commit_fails_is_retried_not_disarmed() {
    if sled_only("a_timeout_whose_commit_fails_is_retried_not_disarmed") {
        return;
    }
    let app = spawn_app().await;
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let id = app.create_id(&body).await;
    // Every commit for the next few attempts fails: the expiry must be retried after them.
    fail_commits(&app, 3).await;
    let ended: Value = eventually(WAIT, "the timeout to be recorded", || async {
        let body: Value = app.get(&id, None).await.json().await.ok()?;
        (body["status"] == "timed_out").then_some(body)
    })
    .await;
    assert_eq!(ended["decided_by"], "system");
}

/// sled does not recover from a failed write in-process, so a store that cannot commit for
/// `store.restart_after` makes the service stop gracefully (an open long poll still gets the
/// approval's JSON) and exit with status 75 for its supervisor to restart it; the restarted
/// service has everything that was acknowledged and nothing that was refused.
#[actix_web::test]
async fn a_store_that_keeps_failing_makes_the_service_exit_for_a_restart_losing_nothing() {
    if sled_only("a_store_that_keeps_failing_makes_the_service_exit_for_a_restart_losing_nothing") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn_binary(dir.path(), &[("APPROVAL_GATE__STORE__RESTART_AFTER", "2s")]);
    let id = create_quietly(&child).await;
    let poll = child.get(&id, Some("60s"));
    let fail = async {
        eventually(WAIT, "the long poll to register", || async {
            (metric(&child.metrics().await, "approval_gate_waiters") == Some(1.0)).then_some(())
        })
        .await;
        fail_commits(&child, 1_000_000).await;
        let mut body = new_approval();
        body["idempotency_key"] = json!("refused-while-failing");
        let refused = child.create(&body).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    };
    let (polled, ()) = futures_util::join!(poll, fail);
    assert_eq!(polled.status(), StatusCode::OK);
    let text = polled.text().await.expect("complete body");
    let body: Value = serde_json::from_str(text.trim()).expect("the body is the approval's JSON");
    assert_eq!(body["status"], "pending");
    assert_eq!(child.wait_exit(WAIT).code(), Some(75));

    let restarted = spawn_binary(dir.path(), &[]);
    assert_eq!(pending_ids(&restarted).await, [id]);
    assert_eq!(status_of(&restarted, "/health/ready").await, StatusCode::OK);
}

/// A change refused because its commit failed never comes back: not after the store recovers,
/// and not after a crash and the journal's replay (the refused batch is cut off the journal).
#[actix_web::test]
async fn a_refused_change_does_not_come_back_after_a_crash() {
    if sled_only("a_refused_change_does_not_come_back_after_a_crash") {
        return;
    }
    const SIGKILL: i32 = 9;
    let dir = tempfile::tempdir().expect("temp dir");
    let rare_checkpoints = [("APPROVAL_GATE__STORE__CHECKPOINT_EVERY", "1h")];
    let child = spawn_binary(dir.path(), &rare_checkpoints);
    let kept = create_quietly(&child).await;
    fail_commits(&child, 1).await;
    let mut body = new_approval();
    body["idempotency_key"] = json!("refused-then-crashed");
    assert_eq!(
        child.create(&body).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    eventually(WAIT, "the store to commit again", || async {
        (status_of(&child, "/health/ready").await == StatusCode::OK).then_some(())
    })
    .await;
    let later = child.create_id(&new_approval()).await;
    child.signal(SIGKILL);
    drop(child);

    let restarted = spawn_binary(dir.path(), &rare_checkpoints);
    let mut expected = [kept, later];
    expected.sort_unstable();
    assert_eq!(pending_ids(&restarted).await, expected);
}

/// A disk that hangs for good must not keep the process from exiting: the final flush is
/// waited for only a few seconds, and the service still exits for its restart.
#[actix_web::test]
async fn a_store_that_hangs_makes_the_service_exit_for_a_restart() {
    if sled_only("a_store_that_hangs_makes_the_service_exit_for_a_restart") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn_binary(
        dir.path(),
        &[
            ("APPROVAL_GATE__STORE__RESTART_AFTER", "2s"),
            ("APPROVAL_GATE__STORE__COMMIT_STALL", "1s"),
            ("APPROVAL_GATE__SERVER__SHUTDOWN_TIMEOUT", "1s"),
        ],
    );
    create_quietly(&child).await;
    stall_commits(&child, 1, 600_000).await;
    // Held by the hung commit until the service gives up on it; its answer does not matter.
    let request = child
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .json(&new_approval());
    let held = actix_rt::spawn(async move {
        let _ = request.send().await;
    });
    eventually(WAIT, "a create held by the hung commit", || async {
        let stats = child.get_json("/api/diagnostics/database").await;
        stats["commit_running_ms"].as_u64().map(|_| ())
    })
    .await;
    assert_eq!(child.wait_exit(Duration::from_secs(40)).code(), Some(75));
    held.abort();
}

#[actix_web::test]
async fn a_session_grant_whose_commit_fails_is_not_granted() {
    if sled_only("a_session_grant_whose_commit_fails_is_not_granted") {
        return;
    }
    let app = spawn_app().await;
    let id = create_quietly(&app).await;
    fail_commits(&app, 1).await;
    let failed = app.decide(&id, "approve_session").await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.operator_json("/api/grants").await["grants"],
        json!([]),
        "no grant from a failed commit"
    );
    // The same tool in the same session still asks a human.
    let next = app.create_ok(&new_approval()).await;
    assert_eq!(next["status"], "pending");
}

#[actix_web::test]
async fn the_ready_gauge_says_what_health_ready_says() {
    if sled_only("the_ready_gauge_says_what_health_ready_says") {
        return;
    }
    let app = spawn_app().await;
    let ready = |text: &str| metric(text, "approval_gate_ready");
    assert_eq!(ready(&app.metrics().await), Some(1.0));
    // Every commit fails from now on: a write is refused, and the store is reported failing
    // (the registry's pings probe it again) until a commit succeeds.
    fail_commits(&app, 1_000_000).await;
    assert_eq!(
        app.create(&new_approval()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(ready(&app.metrics().await), Some(0.0));
    assert_eq!(
        status_of(&app, "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(ready(&app.metrics().await), Some(0.0), "still failing");
    fail_commits(&app, 0).await;
    eventually(WAIT, "the gauge back at 1", || async {
        (ready(&app.metrics().await) == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(status_of(&app, "/health/ready").await, StatusCode::OK);
}

/// A decision whose commit fails is never shown as the outcome: reads and a conflicting
/// decision made while that commit is under way wait for it, and are 503 when it fails (a later
/// commit that succeeds proves nothing: the failed batch was cut off the journal).
#[actix_web::test]
async fn a_change_whose_commit_fails_is_not_shown_by_reads_waiting_for_it() {
    if sled_only("a_change_whose_commit_fails_is_not_shown_by_reads_waiting_for_it") {
        return;
    }
    let app = spawn_app().await;
    let id = create_quietly(&app).await;
    // The next commit hangs, then fails: the decision's.
    stall_commits(&app, 1, 1500).await;
    fail_commits(&app, 1).await;
    let decision = app.decide(&id, "approve");
    let readers = async {
        eventually(WAIT, "the decision's commit under way", || async {
            let db = app.get_json("/api/diagnostics/database").await;
            db["commit_running_ms"].as_u64().map(|_| ())
        })
        .await;
        let read = app.get(&id, None).await;
        let conflicting = app.decide(&id, "reject").await;
        (read, conflicting)
    };
    let (decided, (read, conflicting)) = futures_util::join!(decision, readers);
    assert_eq!(decided.status(), StatusCode::SERVICE_UNAVAILABLE);
    let read_status = read.status();
    let read_body: Value = read.json().await.unwrap_or_default();
    assert!(
        read_status == StatusCode::SERVICE_UNAVAILABLE || read_body["status"] == "pending",
        "a read during the failing commit: {read_status} {read_body}"
    );
    let conflict_status = conflicting.status();
    let conflict_body: Value = conflicting.json().await.unwrap_or_default();
    assert_ne!(
        conflict_status,
        StatusCode::CONFLICT,
        "told 'already approved' for a reverted approval: {conflict_body}"
    );
    let now: Value = app.get(&id, None).await.json().await.expect("json");
    if conflict_status == StatusCode::OK {
        assert_eq!(now["status"], "rejected");
    } else {
        assert_eq!(now["status"], "pending", "the failed decision was reverted");
    }
}
