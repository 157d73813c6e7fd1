//! The agent-side commands as child processes: `approval-gate hook <agent>` (stdin → stdout,
//! exit status), `approval-gate request` (exit codes) and `approval-gate mcp` (JSON-RPC over
//! stdio), against the real service, including the service-down case.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::agents::fixture;
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

fn command(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_approval-gate"));
    command
        .args(args)
        .env("APPROVAL_GATE_URL", url)
        .env("APPROVAL_GATE_TOKEN", AGENT_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn exec(url: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = command(url, args).spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A URL where nothing listens.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

async fn approve_the_pending_one(app: &TestApp, decision: &str) {
    let id = eventually(WAIT, "a pending approval", || async {
        let page: Value = app.list("?status=pending").await.json().await.ok()?;
        page["approvals"][0]["id"].as_str().map(str::to_string)
    })
    .await;
    app.decide(&id, decision).await;
}

#[actix_web::test]
async fn the_claude_code_command_hook_prints_the_decision_and_nothing_else() {
    let app = spawn_app().await;
    let input = serde_json::to_vec(&fixture("claude-pre-tool-use-bash")).unwrap();
    let hook = exec(&app.address, &["hook", "claude-code"], &input);
    let (out_run, ()) = futures_util::join!(hook, approve_the_pending_one(&app, "approve"));
    assert_eq!(out_run.code, Some(0), "{out_run:?}");
    assert_eq!(out_run.stdout.lines().count(), 1, "{out_run:?}");
    let out: Value = serde_json::from_str(&out_run.stdout).expect("stdout is JSON");
    assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "allow");

    // The event follows hook_event_name: a PermissionRequest input gets that shape.
    let input = serde_json::to_vec(&fixture("claude-permission-request")).unwrap();
    let hook = exec(&app.address, &["hook", "claude-code"], &input);
    let (out_run, ()) = futures_util::join!(hook, approve_the_pending_one(&app, "reject"));
    let out: Value = serde_json::from_str(&out_run.stdout).expect("stdout is JSON");
    assert_eq!(
        out["hookSpecificOutput"]["decision"]["behavior"], "deny",
        "{out_run:?}"
    );
}

#[actix_web::test]
async fn the_gemini_hook_works_with_its_environment_stripped_as_in_ci() {
    // With GITHUB_SHA set Gemini CLI runs hooks with a stripped environment: the documented CI
    // form passes the URL and a token file as arguments.
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("agent-token");
    std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).unwrap();
    let token_file = token_file.display().to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_approval-gate"))
        .args([
            "hook",
            "gemini",
            "--url",
            &app.address,
            "--token-file",
            &token_file,
        ])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = serde_json::to_vec(&fixture("gemini-before-tool")).unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let (output, ()) = futures_util::join!(
        child.wait_with_output(),
        approve_the_pending_one(&app, "approve")
    );
    let output = output.unwrap();
    let out: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(out, json!({"decision": "allow"}), "{output:?}");
}

#[actix_web::test]
async fn codex_and_gemini_command_hooks_speak_their_own_contracts() {
    let app = spawn_app().await;
    let input = serde_json::to_vec(&fixture("codex-permission-request")).unwrap();
    let hook = exec(&app.address, &["hook", "codex"], &input);
    let (out_run, ()) = futures_util::join!(hook, approve_the_pending_one(&app, "approve"));
    assert_eq!(out_run.code, Some(0), "{out_run:?}");
    let out: Value = serde_json::from_str(&out_run.stdout).unwrap();
    assert_eq!(
        out,
        json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": {"behavior": "allow"}}})
    );

    let input = serde_json::to_vec(&fixture("gemini-before-tool")).unwrap();
    let hook = exec(&app.address, &["hook", "gemini"], &input);
    let (out_run, ()) = futures_util::join!(hook, approve_the_pending_one(&app, "reject"));
    assert_eq!(out_run.code, Some(0), "{out_run:?}");
    let out: Value = serde_json::from_str(&out_run.stdout).unwrap();
    assert_eq!(out["decision"], "deny");
}

#[actix_web::test]
async fn a_service_that_cannot_be_reached_fails_closed() {
    let url = dead_url();
    let claude = serde_json::to_vec(&fixture("claude-pre-tool-use-bash")).unwrap();
    let run1 = exec(&url, &["hook", "claude-code"], &claude).await;
    assert_eq!(run1.code, Some(0), "{run1:?}");
    let out: Value = serde_json::from_str(&run1.stdout).expect("JSON on stdout");
    assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
    assert!(
        out["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains("could not be reached")
    );
    assert!(run1.stderr.contains("could not be reached"), "{run1:?}");

    let ask = exec(&url, &["hook", "claude-code", "--on-error", "ask"], &claude).await;
    let out: Value = serde_json::from_str(&ask.stdout).unwrap();
    assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "ask");

    let gemini = serde_json::to_vec(&fixture("gemini-before-tool")).unwrap();
    let blocked = exec(&url, &["hook", "gemini"], &gemini).await;
    assert_eq!(
        blocked.code,
        Some(2),
        "Gemini blocks on exit 2: {blocked:?}"
    );
    let out: Value = serde_json::from_str(&blocked.stdout).unwrap();
    assert_eq!(out["decision"], "deny");

    let codex = serde_json::to_vec(&fixture("codex-permission-request")).unwrap();
    let denied = exec(&url, &["hook", "codex"], &codex).await;
    let out: Value = serde_json::from_str(&denied.stdout).unwrap();
    assert_eq!(
        out["hookSpecificOutput"]["decision"]["behavior"], "deny",
        "{denied:?}"
    );
}

#[actix_web::test]
async fn request_exits_with_the_outcome() {
    let app = spawn_app().await;
    let args = [
        "request",
        "--tool",
        "deploy",
        "--input",
        r#"{"env":"prod"}"#,
        "--reason",
        "release 2.0",
    ];
    let (approved, ()) = futures_util::join!(
        exec(&app.address, &args, b""),
        approve_the_pending_one(&app, "approve")
    );
    assert_eq!(approved.code, Some(0), "{approved:?}");
    let (rejected, ()) = futures_util::join!(
        exec(&app.address, &args, b""),
        approve_the_pending_one(&app, "reject")
    );
    assert_eq!(rejected.code, Some(1), "{rejected:?}");
    let timed_out = exec(
        &app.address,
        &["request", "--tool", "deploy", "--timeout", "1s", "--json"],
        b"",
    )
    .await;
    assert_eq!(timed_out.code, Some(2), "{timed_out:?}");
    let printed: Value =
        serde_json::from_str(&timed_out.stdout).expect("--json prints the approval");
    assert_eq!(printed["status"], "timed_out");
    let error = exec(&dead_url(), &["request", "--tool", "deploy"], b"").await;
    assert_eq!(error.code, Some(3), "{error:?}");
    let bad = exec(
        &app.address,
        &["request", "--tool", "deploy", "--timeout", "99d"],
        b"",
    )
    .await;
    assert_eq!(bad.code, Some(3), "{bad:?}");
}

#[actix_web::test]
async fn the_mcp_permission_prompt_tool_waits_for_an_operator() {
    let app = spawn_app().await;
    let mut child = command(&app.address, &["mcp"]).spawn().expect("spawn mcp");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = async |message: Value| {
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "claude-code", "version": "2.1.300"}}}),
    )
    .await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let init: Value = serde_json::from_str(&line).expect("JSON-RPC only on stdout");
    assert_eq!(init["id"], 1);
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let list: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        list["result"]["tools"][0]["name"], "approval_prompt",
        "{list}"
    );

    let input = json!({"command": "git tag v2.0 && git push --tags"});
    send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "approval_prompt",
        "arguments": {"tool_name": "Bash", "input": input, "tool_use_id": "toolu_mcp_1"}}}),
    )
    .await;
    approve_the_pending_one(&app, "approve").await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let called: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(called["id"], 3);
    let text = called["result"]["content"][0]["text"]
        .as_str()
        .expect("one text block");
    let result: Value = serde_json::from_str(text).unwrap();
    assert_eq!(result, json!({"behavior": "allow", "updatedInput": input}));

    send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "approval_prompt", "arguments": {"tool_name": "Write", "input": {"file_path": "/etc/passwd"}}}})).await;
    approve_the_pending_one(&app, "reject").await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let called: Value = serde_json::from_str(&line).unwrap();
    let result: Value =
        serde_json::from_str(called["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(result["behavior"], "deny");
    assert!(
        result["message"].as_str().unwrap().contains("rejected"),
        "{result}"
    );
    // Claude Code passes no session id: this server (one per run) named its own, so a session
    // grant made on one of its prompts covers this run only. Asked as a PermissionRequest.
    let page: Value = app.list("").await.json().await.unwrap();
    let approvals = page["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 2, "{page}");
    let session = approvals[0]["session_id"].as_str().unwrap();
    assert!(
        session.starts_with("mcp-") && session.len() > 20,
        "{session}"
    );
    assert!(approvals.iter().all(|a| a["session_id"] == session));
    assert!(
        approvals.iter().all(|a| {
            a["reason"]
                .as_str()
                .unwrap_or("")
                .contains("PermissionRequest")
        }),
        "{page}"
    );
}
