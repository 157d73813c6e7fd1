//! Live reconfiguration of the compiled service: SIGHUP and a changed `--config` file apply new
//! policy, tokens and limits without a restart; an invalid file is rejected and the running
//! settings stay; restart-only keys keep their running values.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::support::fake_telegram::FakeTelegram;

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

/// The test environment's token variables: a test that sets tokens in its `--config` file
/// unsets them (the environment wins over the file).
const TOKEN_VARS: &[&str] = &[
    "APPROVAL_GATE__AUTH__AGENT_TOKENS__CI_AGENT",
    "APPROVAL_GATE__AUTH__AGENT_TOKENS__OTHER_AGENT",
    "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE",
    "APPROVAL_GATE__SERVER__BIND",
];

#[actix_web::test]
async fn a_reload_that_would_leave_a_public_listener_without_tokens_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("extra.toml");
    let public = format!(
        "[server]\nbind = \"0.0.0.0:0\"\n[auth.agent_tokens]\nci = \"{AGENT_TOKEN}\"\n\
         [auth.operator_tokens]\nalice = \"{OPERATOR_TOKEN}\"\n"
    );
    std::fs::write(&config, &public).unwrap();
    let path = config.display().to_string();
    let mut child = spawn_binary_env(dir.path(), &["--config", &path], &[], TOKEN_VARS);
    let anonymous_list = || child.request(Method::GET, "/api/approvals", None).send();
    assert_eq!(
        anonymous_list().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // On its own the new file is valid (loopback, no tokens), but `bind` needs a restart: the
    // process would keep listening on 0.0.0.0 with nobody authenticated.
    std::fs::write(&config, "[server]\nbind = \"127.0.0.1:0\"\n").unwrap();
    child.signal(libc::SIGHUP);
    eventually(WAIT, "the reload rejected", || async {
        (reloads(&child, "rejected").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(reloads(&child, "applied").await, 0.0);
    assert_eq!(
        anonymous_list().await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the tokens still apply"
    );
    let created = child
        .request(Method::POST, "/api/approvals", None)
        .json(&bash("ls"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::UNAUTHORIZED);
    eventually(WAIT, "the rejection names server.bind", || async {
        let logs = child.logs.lock().unwrap().clone();
        (logs.contains("configuration reload rejected") && logs.contains("server.bind"))
            .then_some(())
    })
    .await;
    child.signal(libc::SIGTERM);
    child.wait_exit(WAIT);
}

#[actix_web::test]
async fn a_reload_that_turns_telegram_off_in_the_file_is_checked_against_the_running_gateway() {
    // telegram.enabled needs a restart: a file saying `enabled = false` must not skip the
    // checks of the gateway that keeps running (here: an empty allow-list).
    let telegram = FakeTelegram::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("extra.toml");
    let user = OPERATOR_USER_ID;
    std::fs::write(
        &config,
        format!("[telegram]\nenabled = true\nallowed_user_ids = [{user}]\n"),
    )
    .unwrap();
    let path = config.display().to_string();
    let env = telegram_env(&telegram.url(), telegram.token());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut child = spawn_binary_env(
        dir.path(),
        &["--config", &path],
        &env,
        &[
            "APPROVAL_GATE__TELEGRAM__ENABLED",
            "APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS",
        ],
    );
    std::fs::write(
        &config,
        "[telegram]\nenabled = false\nallowed_user_ids = []\n",
    )
    .unwrap();
    child.signal(libc::SIGHUP);
    eventually(WAIT, "the reload rejected", || async {
        (reloads(&child, "rejected").await >= 1.0).then_some(())
    })
    .await;
    eventually(WAIT, "the rejection names the allow-list", || async {
        let logs = child.logs.lock().unwrap().clone();
        logs.contains("telegram.allowed_user_ids").then_some(())
    })
    .await;
    child.signal(libc::SIGTERM);
    child.wait_exit(WAIT);
}
