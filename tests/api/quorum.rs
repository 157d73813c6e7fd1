//! Two-person approval through the public API (both stores): a rule's `approvals_required`
//! holds the agent until that many distinct operators approved; the first approval is counted
//! and shown, the same operator never counts twice, one reject rejects, and races (two at once,
//! approve against reject, approve against the deadline) end in exactly one outcome.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::risk::config_file;

pub(crate) const BOB_TOKEN: &str = "operator-token-bob-0123456789";

pub(crate) const TWO_PERSON_RULE: &str = r#"
[[policy.rules]]
name = "infrastructure"
tool = "Bash"
input = { command = 'terraform' }
action = "escalate"
approvals_required = 2
"#;

pub(crate) fn terraform(command: &str) -> Value {
    json!({"session_id": "s1", "tool_name": "Bash", "tool_input": {"command": format!("terraform {command}")}})
}

/// An in-process app under [`TWO_PERSON_RULE`] with bob as a second operator (keep the
/// returned folder: it holds the configuration file).
pub(crate) async fn two_person_app(overrides: &[(&str, &str)]) -> (TestApp, tempfile::TempDir) {
    let (guard, config) = config_file(TWO_PERSON_RULE);
    let mut all = vec![("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__BOB", BOB_TOKEN)];
    all.extend_from_slice(overrides);
    (spawn_app_with_config(&config, &all).await, guard)
}

pub(crate) fn decide_as<'a>(
    app: &'a TestApp,
    token: &'a str,
    id: &'a str,
    decision: &'a str,
) -> impl std::future::Future<Output = Response> + 'a {
    let send = app
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(token),
        )
        .json(&json!({ "decision": decision }))
        .send();
    async move { send.await.expect("decision request") }
}

async fn body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.expect("json body"))
}

fn voters(approval: &Value) -> Vec<&str> {
    approval["approvals"]
        .as_array()
        .map(|votes| votes.iter().filter_map(|v| v["by"].as_str()).collect())
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_agent_waits_for_two_distinct_operators() {
    let (app, _guard) = two_person_app(&[]).await;
    let created = app.create_ok(&terraform("apply")).await;
    assert_eq!(created["approvals_required"], 2, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let id = id.as_str();
    // The agent's long poll is held through the first approval.
    let poll = {
        let request = app
            .client
            .get(format!("{}/api/approvals/{id}?wait=20s", app.address))
            .bearer_auth(AGENT_TOKEN)
            .send();
        actix_rt::spawn(async move { request.await.unwrap().json::<Value>().await.unwrap() })
    };
    let (status, first) = body(decide_as(&app, OPERATOR_TOKEN, id, "approve").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["status"], "pending", "counted, not decided: {first}");
    assert_eq!(voters(&first), ["alice"]);
    // The same operator cannot count twice.
    let (status, again) = body(decide_as(&app, OPERATOR_TOKEN, id, "approve").await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"], "already_counted", "{again}");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("1 of 2 approved (alice)"),
        "{again}"
    );
    assert!(
        !poll.is_finished(),
        "the agent is not unblocked by one approval"
    );
    let (status, second) = body(decide_as(&app, BOB_TOKEN, id, "approve").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["status"], "approved", "{second}");
    assert_eq!(second["decided_by"], "bob");
    assert_eq!(voters(&second), ["alice", "bob"]);
    let polled = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long poll answers at the quorum")
        .unwrap();
    assert_eq!(polled["status"], "approved");
    // The history shows both approvals, in order.
    let history = app
        .operator_json(&format!("/api/approvals/{id}/events"))
        .await;
    let kinds: Vec<(&str, &str)> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approval_counted" || e["kind"] == "approved")
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("approval_counted", "1 of 2"),
            ("approval_counted", "2 of 2"),
            ("approved", "")
        ],
        "{history}"
    );
    // A later decision is told the outcome, as with one approver.
    let (status, late) = body(decide_as(&app, OPERATOR_TOKEN, id, "reject").await).await;
    assert_eq!(
        (status, late["error"].as_str()),
        (StatusCode::CONFLICT, Some("already_decided"))
    );
}

#[actix_web::test]
async fn one_reject_rejects_and_no_grant_is_offered() {
    let (app, _guard) = two_person_app(&[]).await;
    let id = app.create_id(&terraform("destroy")).await;
    let (_, first) = body(decide_as(&app, OPERATOR_TOKEN, id.as_str(), "approve").await).await;
    assert_eq!(first["status"], "pending");
    let (status, rejected) = body(decide_as(&app, BOB_TOKEN, &id, "reject").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["decided_by"], "bob");
    // A session grant would let later requests past the second operator.
    let other = app.create_id(&terraform("apply")).await;
    let refused = app
        .request(
            Method::POST,
            &format!("/api/approvals/{other}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"decision": "approve_session", "grant_for": "1h"}))
        .send()
        .await
        .unwrap();
    let (status, error) = body(refused).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"], "grant_not_allowed", "{error}");
}

#[actix_web::test]
async fn two_operators_at_once_reach_the_quorum_exactly_once() {
    let (app, _guard) = two_person_app(&[]).await;
    for round in 0..5 {
        let id = app
            .create_id(&terraform(&format!("apply -target={round}")))
            .await;
        let (a, b) = tokio::join!(
            decide_as(&app, OPERATOR_TOKEN, &id, "approve"),
            decide_as(&app, BOB_TOKEN, &id, "approve")
        );
        let ((sa, a), (sb, b)) = (body(a).await, body(b).await);
        assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK), "{a} {b}");
        let mut statuses = [a["status"].as_str().unwrap(), b["status"].as_str().unwrap()];
        statuses.sort();
        assert_eq!(statuses, ["approved", "pending"], "round {round}: {a} {b}");
        let stored = app.operator_json(&format!("/api/approvals/{id}")).await;
        assert_eq!(stored["status"], "approved");
        let mut who = voters(&stored);
        who.sort();
        assert_eq!(who, ["alice", "bob"], "both counted once: {stored}");
    }
}

#[actix_web::test]
async fn approve_against_reject_ends_rejected_whatever_the_order() {
    let (app, _guard) = two_person_app(&[]).await;
    for round in 0..5 {
        let id = app
            .create_id(&terraform(&format!("apply -target={round}")))
            .await;
        let (a, b) = tokio::join!(
            decide_as(&app, OPERATOR_TOKEN, &id, "approve"),
            decide_as(&app, BOB_TOKEN, &id, "reject")
        );
        let ((sa, a), (sb, b)) = (body(a).await, body(b).await);
        assert_eq!(sb, StatusCode::OK, "the reject always lands: {b}");
        assert_eq!(b["status"], "rejected");
        // Alice was counted first (200, pending) or came after the reject (409, rejected).
        match sa {
            StatusCode::OK => assert_eq!(a["status"], "pending", "{a}"),
            StatusCode::CONFLICT => assert_eq!(a["approval"]["status"], "rejected", "{a}"),
            other => panic!("alice got {other}: {a}"),
        }
        let stored = app.operator_json(&format!("/api/approvals/{id}")).await;
        assert_eq!(stored["status"], "rejected");
    }
}

#[actix_web::test]
async fn a_partial_quorum_times_out_and_the_late_approval_is_told() {
    let (app, _guard) = two_person_app(&[
        ("APPROVAL_GATE__APPROVAL_TIMEOUT__MIN", "1s"),
        ("APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL", "100ms"),
    ])
    .await;
    let mut request = terraform("apply");
    request["timeout"] = json!("2s");
    let id = app.create_id(&request).await;
    let (_, first) = body(decide_as(&app, OPERATOR_TOKEN, &id, "approve").await).await;
    assert_eq!(first["status"], "pending");
    let ended = app
        .get(&id, Some("10s"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        ended["status"], "timed_out",
        "one approval of two is not enough: {ended}"
    );
    assert_eq!(
        voters(&ended),
        ["alice"],
        "the partial quorum stays on record"
    );
    let (status, late) = body(decide_as(&app, BOB_TOKEN, &id, "approve").await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(late["approval"]["status"], "timed_out", "{late}");
}

#[actix_web::test]
async fn a_counted_approval_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, config) = config_file(TWO_PERSON_RULE);
    let overrides = [("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__BOB", BOB_TOKEN)];
    let mut child = spawn_binary_args(dir.path(), &["--config", &config], &overrides);
    let id = child.create_id(&terraform("apply")).await;
    let first = child
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    child.signal(libc::SIGKILL);
    child.wait_exit(Duration::from_secs(10));
    let child = spawn_binary_args(dir.path(), &["--config", &config], &overrides);
    let again = child
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "alice's approval was kept"
    );
    let second: Value = child
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(BOB_TOKEN),
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["status"], "approved", "{second}");
}

/// Two instances on one PostgreSQL database: alice approves on one while bob approves on the
/// other. Each vote is written only over the record it was counted on, so neither overwrites
/// the other: the loser of the race is counted again on the winner's record.
#[actix_rt::test]
async fn two_operators_on_two_instances_are_both_counted() {
    let Some(db) = PgDatabase::create("quorum_race").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_guard, config) = config_file(TWO_PERSON_RULE);
    let apps = pg_instances(
        dir.path(),
        &db,
        2,
        &["--config", &config],
        &[("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__BOB", BOB_TOKEN)],
    );
    for round in 0..10 {
        let id = apps[round % 2]
            .create_id(&terraform(&format!("apply -target={round}")))
            .await;
        let vote = |app: &ChildApp, token: &str| {
            app.request(
                Method::POST,
                &format!("/api/approvals/{id}/decision"),
                Some(token),
            )
            .json(&json!({"decision": "approve"}))
            .send()
        };
        let (a, b) = tokio::join!(vote(&apps[0], OPERATOR_TOKEN), vote(&apps[1], BOB_TOKEN));
        let ((sa, a), (sb, b)) = (body(a.unwrap()).await, body(b.unwrap()).await);
        assert_eq!(
            (sa, sb),
            (StatusCode::OK, StatusCode::OK),
            "round {round}: {a} {b}"
        );
        let mut statuses = [a["status"].as_str().unwrap(), b["status"].as_str().unwrap()];
        statuses.sort();
        assert_eq!(statuses, ["approved", "pending"], "round {round}: {a} {b}");
        let stored = apps[round % 2]
            .operator_json(&format!("/api/approvals/{id}"))
            .await;
        let mut who = voters(&stored);
        who.sort();
        assert_eq!(
            (stored["status"].as_str(), who),
            (Some("approved"), vec!["alice", "bob"]),
            "round {round}: {stored}"
        );
    }
}
