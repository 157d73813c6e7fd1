//! Live reconfiguration of the compiled service: SIGHUP and a changed `--config` file apply new
//! policy, tokens and limits without a restart; an invalid file is rejected and the running
//! settings stay; restart-only keys keep their running values.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);

fn bash(command: &str) -> Value {
    json!({"session_id": "s", "tool_name": "Bash", "tool_input": {"command": command}})
}

async fn status_of(child: &ChildApp, body: &Value) -> String {
    let created: Value = child
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .json(body)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    created["status"].as_str().unwrap_or("?").to_string()
}

async fn reloads(child: &ChildApp, outcome: &str) -> f64 {
    let text = child.metrics().await;
    metric(
        &text,
        &format!("approval_gate_config_reloads_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(-1.0)
}

const DENY_BASH: &str =
    "[[policy.rules]]\nname = \"no bash\"\ntool = \"Bash\"\naction = \"deny\"\n";

#[actix_web::test]
async fn sighup_applies_a_new_policy_and_tokens_and_rejects_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("extra.toml");
    std::fs::write(&config, "[limits]\ncreate_burst = 1000\n").unwrap();
    let path = config.display().to_string();
    let mut child = spawn_binary_args(dir.path(), &["--config", &path], &[]);
    assert_eq!(status_of(&child, &bash("ls")).await, "pending");
    assert_eq!(
        reloads(&child, "applied").await,
        0.0,
        "present from the start"
    );

    // A new policy rule and a new operator token, by SIGHUP.
    std::fs::write(
        &config,
        format!("{DENY_BASH}[auth.operator_tokens]\nbob = \"bob-token-0123456789abcdef\"\n"),
    )
    .unwrap();
    child.signal(libc::SIGHUP);
    eventually(WAIT, "the reload applied", || async {
        (reloads(&child, "applied").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(status_of(&child, &bash("ls")).await, "rejected");
    let bob = child
        .request(
            Method::GET,
            "/api/approvals",
            Some("bob-token-0123456789abcdef"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), StatusCode::OK, "the new token works at once");

    // An invalid file: rejected, named, and the running settings stay.
    std::fs::write(
        &config,
        "[[policy.rules]]\nname = \"broken\"\ninput = { command = \"(\" }\naction = \"deny\"\n",
    )
    .unwrap();
    child.signal(libc::SIGHUP);
    eventually(WAIT, "the reload rejected", || async {
        (reloads(&child, "rejected").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&child, &bash("ls")).await,
        "rejected",
        "the old policy still applies"
    );
    eventually(WAIT, "the rejection logged, naming the rule", || async {
        let logs = child.logs.lock().unwrap().clone();
        (logs.contains("configuration reload rejected") && logs.contains("broken")).then_some(())
    })
    .await;
    child.signal(libc::SIGTERM);
    child.wait_exit(WAIT);
}

#[actix_web::test]
async fn a_changed_config_file_is_picked_up_and_restart_only_keys_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("extra.toml");
    std::fs::write(&config, "[limits]\ncreate_burst = 1000\n").unwrap();
    let path = config.display().to_string();
    let child = spawn_binary_args(dir.path(), &["--config", &path], &[]);
    // mtime granularity: make sure the rewrite is seen as a change.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &config,
        format!("{DENY_BASH}[limits]\ncreate_burst = 1000\n[monitoring]\nmetrics_path = \"/m\"\n"),
    )
    .unwrap();
    eventually(WAIT, "the file change applied", || async {
        (reloads(&child, "applied").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(status_of(&child, &bash("ls")).await, "rejected");
    // The log writer is asynchronous: wait for the line.
    eventually(WAIT, "the restart-only warning", || async {
        let logs = child.logs.lock().unwrap().clone();
        (logs.contains("monitoring.metrics_path") && logs.contains("after a restart")).then_some(())
    })
    .await;
    // Still serving metrics where it did.
    assert!(
        child
            .metrics()
            .await
            .contains("approval_gate_config_reloads_total")
    );
}

#[actix_web::test]
async fn rate_limits_change_with_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("extra.toml");
    // The burst follows the rate (0): the environment would otherwise pin it for the tests.
    std::fs::write(&config, "[limits]\ncreates_per_second = 1000\n").unwrap();
    let path = config.display().to_string();
    let child = spawn_binary_args(
        dir.path(),
        &["--config", &path],
        &[("APPROVAL_GATE__LIMITS__CREATE_BURST", "0")],
    );
    let create = || {
        child
            .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
            .json(&bash("ls"))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(create().await.unwrap().status(), StatusCode::CREATED);
    }
    std::fs::write(&config, "[limits]\ncreates_per_second = 1\n").unwrap();
    child.signal(libc::SIGHUP);
    eventually(WAIT, "the reload applied", || async {
        (reloads(&child, "applied").await >= 1.0).then_some(())
    })
    .await;
    let statuses = [
        create().await.unwrap().status(),
        create().await.unwrap().status(),
    ];
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}
