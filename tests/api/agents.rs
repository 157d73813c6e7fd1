//! Agent hooks over HTTP (Claude Code, Codex, Gemini CLI shapes from `tests/fixtures/agents`),
//! through the public API. Policy rules and session grants: `policy_grants.rs`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/agents/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

pub(crate) async fn hook(
    app: &impl Api,
    path: &str,
    token: Option<&str>,
    input: &Value,
) -> (StatusCode, Value) {
    let response = app
        .request(Method::POST, path, token)
        .json(input)
        .send()
        .await
        .expect("hook reaches the service");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(text.trim()).expect("hook answer is JSON"),
    )
}

/// The one pending approval, once the hook's request has been recorded.
async fn pending(app: &TestApp) -> Value {
    eventually(WAIT, "the hook's approval to be pending", || async {
        let page: Value = app.list("?status=pending").await.json().await.ok()?;
        page["approvals"].as_array()?.first().cloned()
    })
    .await
}

pub(crate) async fn decide_body(app: &TestApp, id: &str, body: Value) -> Value {
    let response = app
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&body)
        .send()
        .await
        .expect("decide");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

#[actix_web::test]
async fn a_pre_tool_use_hook_is_held_until_an_operator_approves() {
    let app = spawn_app().await;
    let input = fixture("claude-pre-tool-use-bash");
    let held = hook(
        &app,
        "/hooks/claude-code/pre-tool-use",
        Some(AGENT_TOKEN),
        &input,
    );
    let operator = async {
        let approval = pending(&app).await;
        assert_eq!(approval["tool_name"], "Bash");
        assert_eq!(approval["agent"], "claude-code");
        assert_eq!(approval["session_id"], "abc123-claude-session");
        let reason = approval["reason"].as_str().unwrap();
        assert!(
            reason.contains("cwd /home/dev/web") && reason.contains("permission mode default"),
            "{reason}"
        );
        assert_eq!(
            approval["tool_input"]["command"],
            "npm run deploy -- --prod"
        );
        app.decide(approval["id"].as_str().unwrap(), "approve")
            .await;
    };
    let ((status, answer), ()) = futures_util::join!(held, operator);
    assert_eq!(status, StatusCode::OK);
    let out = &answer["hookSpecificOutput"];
    assert_eq!(out["hookEventName"], "PreToolUse");
    assert_eq!(out["permissionDecision"], "allow", "{answer}");
    assert!(
        out["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains("approved by operator:alice")
    );
}

#[actix_web::test]
async fn a_rejection_is_a_deny_with_the_operators_reason_and_retries_are_idempotent() {
    let app = spawn_app().await;
    let input = fixture("claude-pre-tool-use-write");
    let first = hook(
        &app,
        "/hooks/claude-code/pre-tool-use",
        Some(AGENT_TOKEN),
        &input,
    );
    let operator = async {
        let approval = pending(&app).await;
        let id = approval["id"].as_str().unwrap().to_string();
        decide_body(
            &app,
            &id,
            json!({"decision": "reject", "comment": "never touch .env"}),
        )
        .await;
        id
    };
    let ((status, answer), id) = futures_util::join!(first, operator);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
    let reason = answer["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("never touch .env"), "{reason}");
    // The same tool call asked again (same tool_use_id) gets the same decision, no new approval.
    let (_, again) = hook(
        &app,
        "/hooks/claude-code/pre-tool-use",
        Some(AGENT_TOKEN),
        &input,
    )
    .await;
    assert_eq!(again["hookSpecificOutput"]["permissionDecision"], "deny");
    assert!(
        again["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains(&id)
    );
}

#[actix_web::test]
async fn permission_requests_share_one_pending_approval_and_allow_without_reserved_fields() {
    let app = spawn_app().await;
    let input = fixture("claude-permission-request");
    let path = "/hooks/claude-code/permission-request";
    let one = hook(&app, path, Some(AGENT_TOKEN), &input);
    let two = hook(&app, path, Some(AGENT_TOKEN), &input);
    let operator = async {
        let approval = pending(&app).await;
        // Both requests are waiting on this one approval before anyone decides.
        eventually(WAIT, "both hooks to hold", || async {
            (metric(&app.metrics().await, "approval_gate_waiters") == Some(2.0)).then_some(())
        })
        .await;
        let page: Value = app.list("?status=pending").await.json().await.unwrap();
        assert_eq!(page["approvals"].as_array().unwrap().len(), 1);
        app.decide(approval["id"].as_str().unwrap(), "approve")
            .await;
    };
    let ((_, a), (_, b), ()) = futures_util::join!(one, two, operator);
    for answer in [a, b] {
        assert_eq!(
            answer,
            json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": {"behavior": "allow"}}})
        );
    }
    // Once that one ended, the same input asks again.
    let again = hook(&app, path, Some(AGENT_TOKEN), &input);
    let operator = async {
        let approval = pending(&app).await;
        app.decide(approval["id"].as_str().unwrap(), "reject").await;
    };
    let ((_, answer), ()) = futures_util::join!(again, operator);
    assert_eq!(answer["hookSpecificOutput"]["decision"]["behavior"], "deny");
    assert!(
        answer["hookSpecificOutput"]["decision"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected")
    );
}

#[actix_web::test]
async fn codex_and_gemini_get_their_own_shapes() {
    let app = spawn_app().await;
    let codex_input = fixture("codex-permission-request");
    let codex = hook(
        &app,
        "/hooks/codex/permission-request",
        Some(AGENT_TOKEN),
        &codex_input,
    );
    let operator = async {
        let approval = pending(&app).await;
        assert_eq!(approval["agent"], "codex");
        app.decide(approval["id"].as_str().unwrap(), "reject").await;
    };
    let ((status, answer), ()) = futures_util::join!(codex, operator);
    assert_eq!(status, StatusCode::OK);
    let decision = &answer["hookSpecificOutput"]["decision"];
    assert_eq!(
        answer["hookSpecificOutput"]["hookEventName"],
        "PermissionRequest"
    );
    assert_eq!(decision["behavior"], "deny");
    assert!(decision.get("updatedInput").is_none() && decision.get("interrupt").is_none());

    let gemini_input = fixture("gemini-before-tool");
    let gemini = hook(
        &app,
        "/hooks/gemini/before-tool",
        Some(AGENT_TOKEN),
        &gemini_input,
    );
    let operator = async {
        let approval = pending(&app).await;
        assert_eq!(approval["agent"], "gemini-cli");
        assert_eq!(approval["tool_name"], "run_shell_command");
        app.decide(approval["id"].as_str().unwrap(), "approve")
            .await;
    };
    let ((_, answer), ()) = futures_util::join!(gemini, operator);
    assert_eq!(answer, json!({"decision": "allow"}));
}

#[actix_web::test]
async fn nobody_deciding_in_time_follows_on_timeout() {
    let app = spawn_app_with(&[
        ("APPROVAL_GATE__AGENTS__HOOK_WAIT", "1s"),
        ("APPROVAL_GATE__AGENTS__ON_TIMEOUT", "ask"),
    ])
    .await;
    let (status, answer) = hook(
        &app,
        "/hooks/claude-code/pre-tool-use",
        Some(AGENT_TOKEN),
        &fixture("claude-pre-tool-use-mcp"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let out = &answer["hookSpecificOutput"];
    assert_eq!(out["permissionDecision"], "ask", "{answer}");
    assert!(
        out["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains("timed out waiting for an operator")
    );
    // The approval ended as timed out, so operators see it is no longer waiting.
    let page: Value = app.list("?status=timed_out").await.json().await.unwrap();
    assert_eq!(page["approvals"].as_array().unwrap().len(), 1);

    // Gemini CLI runs a call the hook gives no decision, and Codex lets a model decide it:
    // for them "ask" denies, saying why.
    let (_, answer) = hook(
        &app,
        "/hooks/gemini/before-tool",
        Some(AGENT_TOKEN),
        &fixture("gemini-before-tool"),
    )
    .await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("would not ask a person")
    );
    let (_, answer) = hook(
        &app,
        "/hooks/codex/permission-request",
        Some(AGENT_TOKEN),
        &fixture("codex-permission-request"),
    )
    .await;
    let decision = &answer["hookSpecificOutput"]["decision"];
    assert_eq!(decision["behavior"], "deny", "{answer}");
    assert!(
        decision["message"]
            .as_str()
            .unwrap()
            .contains("would not ask a person")
    );

    let deny = spawn_app_with(&[("APPROVAL_GATE__AGENTS__HOOK_WAIT", "1s")]).await;
    let (_, answer) = hook(
        &deny,
        "/hooks/gemini/before-tool",
        Some(AGENT_TOKEN),
        &fixture("gemini-before-tool"),
    )
    .await;
    assert_eq!(answer["decision"], "deny");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("timed out waiting for an operator")
    );
}

#[actix_web::test]
async fn an_agent_that_hangs_up_has_its_approval_cancelled_within_two_seconds() {
    let app = spawn_app_with(&[("APPROVAL_GATE__AGENTS__HANGUP_CHECK", "200ms")]).await;
    // Headers come at once (the answer streams); the user interrupts before the body ends.
    let response = app
        .request(
            Method::POST,
            "/hooks/claude-code/pre-tool-use",
            Some(AGENT_TOKEN),
        )
        .json(&fixture("claude-pre-tool-use-edit"))
        .send()
        .await
        .expect("held");
    pending(&app).await;
    let body = tokio::time::timeout(Duration::from_millis(300), response.text()).await;
    assert!(body.is_err(), "still held: {body:?}");
    let hung_up = std::time::Instant::now();
    let cancelled = eventually(WAIT, "the approval to be cancelled", || async {
        let page: Value = app.list("?status=cancelled").await.json().await.ok()?;
        page["approvals"].as_array()?.first().cloned()
    })
    .await;
    assert!(
        hung_up.elapsed() < Duration::from_secs(2),
        "took {:?}",
        hung_up.elapsed()
    );
    assert_eq!(cancelled["decided_by"], "ci_agent");
    assert!(cancelled["comment"].as_str().unwrap().contains("hung up"));
    assert!(
        cancelled["reason"]
            .as_str()
            .unwrap()
            .contains("subagent code-reviewer")
    );
}

#[actix_web::test]
async fn one_agents_hang_up_does_not_cancel_an_approval_another_still_waits_for() {
    let app = spawn_app_with(&[("APPROVAL_GATE__AGENTS__HANGUP_CHECK", "200ms")]).await;
    // No tool_use_id: two identical calls in one session share one approval.
    let mut input = fixture("claude-pre-tool-use-edit");
    input.as_object_mut().unwrap().remove("tool_use_id");
    let hold = || {
        app.request(
            Method::POST,
            "/hooks/claude-code/pre-tool-use",
            Some(AGENT_TOKEN),
        )
        .json(&input)
        .send()
    };
    let first = hold().await.expect("held");
    let id = pending(&app).await["id"].as_str().unwrap().to_string();
    let second = hold().await.expect("held");
    let page: Value = app.list("?status=pending").await.json().await.unwrap();
    assert_eq!(page["approvals"].as_array().unwrap().len(), 1, "{page}");
    drop(first); // the first agent hangs up
    // Its hang-up is noticed within about two heartbeats; then the approval must still be
    // pending, for the second agent.
    eventually(WAIT, "the first hold's waiter freed", || async {
        let stats: Value = app
            .request(
                Method::GET,
                "/api/diagnostics/database",
                Some(OPERATOR_TOKEN),
            )
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (stats["waiters"].as_u64()? == 1).then_some(())
    })
    .await;
    let current: Value = app.get(&id, None).await.json().await.unwrap();
    assert_eq!(current["status"], "pending", "{current}");
    app.decide(&id, "approve").await;
    let answer: Value = serde_json::from_str(second.text().await.unwrap().trim()).unwrap();
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "allow");
}

#[actix_web::test]
async fn a_bad_token_or_a_failing_store_is_a_200_deny_never_an_error() {
    let app = spawn_app().await;
    let input = fixture("claude-pre-tool-use-bash");
    for token in [None, Some("not-a-token"), Some(OPERATOR_TOKEN)] {
        let (status, answer) = hook(&app, "/hooks/claude-code/pre-tool-use", token, &input).await;
        assert_eq!(status, StatusCode::OK, "{token:?}");
        assert_eq!(
            answer["hookSpecificOutput"]["permissionDecision"], "deny",
            "{token:?}"
        );
    }
    let (status, answer) = hook(
        &app,
        "/hooks/codex/permission-request",
        Some(AGENT_TOKEN),
        &json!({"nonsense": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["hookSpecificOutput"]["decision"]["behavior"], "deny");

    let failed = app
        .request(
            Method::POST,
            "/api/debug/store/fail-commits",
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"count": 1}))
        .send()
        .await
        .unwrap();
    assert!(failed.status().is_success(), "{failed:?}");
    let (status, answer) = hook(
        &app,
        "/hooks/claude-code/pre-tool-use",
        Some(AGENT_TOKEN),
        &input,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let out = &answer["hookSpecificOutput"];
    assert_eq!(out["permissionDecision"], "deny");
    assert!(
        out["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains("could not record"),
        "{answer}"
    );
}

/// A store that hangs must not make the hook hang: Claude Code runs the tool when its hook
/// times out, so the hook answers a 200 deny within `agents.hook_wait` even while the commit
/// recording the request has not finished.
#[actix_web::test]
async fn a_hook_whose_request_cannot_be_recorded_in_time_is_denied_while_the_store_hangs() {
    if sled_only("a_hook_whose_request_cannot_be_recorded_in_time_is_denied_while_the_store_hangs")
    {
        return;
    }
    let app = spawn_app_with(&[("APPROVAL_GATE__AGENTS__HOOK_WAIT", "2s")]).await;
    stall_commits(&app, 1, 8_000).await;
    let (status, answer) = hook(
        &app,
        "/hooks/claude-code/pre-tool-use",
        Some(AGENT_TOKEN),
        &fixture("claude-pre-tool-use-bash"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let out = &answer["hookSpecificOutput"];
    assert_eq!(out["permissionDecision"], "deny", "{answer}");
    assert!(
        out["permissionDecisionReason"]
            .as_str()
            .is_some_and(|reason| reason.contains("in time")),
        "{answer}"
    );
    let stats = app.get_json("/api/diagnostics/database").await;
    assert!(
        stats["commit_running_ms"].as_u64().is_some(),
        "answered while the commit still hung: {stats}"
    );
}
