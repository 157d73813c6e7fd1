//! Health, readiness, diagnostics, metrics and request ids, through their HTTP endpoints and the
//! fallback file.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);

#[actix_web::test]
async fn health_live_and_ready_answer() {
    let app = spawn_app().await;
    let health = app.health().await;
    assert_eq!(health["status"], "healthy");
    for actor in [
        "approval_registry",
        "timeout_sweeper",
        "metrics_collector",
        "fallback_notifier",
    ] {
        assert_eq!(health["actors"][actor]["status"], "healthy", "{health}");
        assert!(
            health["actors"][actor]["ping_ms"].as_f64().is_some(),
            "{health}"
        );
    }
    for path in ["/health/live", "/health/ready"] {
        let response = app
            .request(Method::GET, path, None)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[actix_web::test]
async fn database_diagnostics_count_by_status() {
    let app = spawn_app().await;
    let a = app.create_id(&new_approval()).await;
    app.create_ok(&new_approval()).await;
    app.decide(&a, "approve").await;
    let body: Value = app.get_json("/api/diagnostics/database").await;
    assert_eq!(body["counts"]["pending"], 1);
    assert_eq!(body["counts"]["approved"], 1);
    assert!(
        body["size_on_disk_bytes"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );
    if backend() == Backend::Sled {
        assert!(body["last_flush"].as_str().is_some(), "{body}");
        assert!(
            body["path"].as_str().is_some_and(|p| p.ends_with("store")),
            "{body}"
        );
    }
}

#[actix_web::test]
async fn metrics_use_route_templates_and_count_the_lifecycle() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    app.get(&id, None).await;
    app.decide(&id, "approve").await;
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "approval_gate_approvals_created_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "approval_gate_decisions_total{outcome=\"approved\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "approval_gate_pending_approvals"), Some(0.0));
    assert!(
        text.contains("approval_gate_time_to_decision_seconds_bucket"),
        "histogram present"
    );
    assert!(
        text.contains(r#"approval_gate_http_requests_total{method="GET",route="/api/approvals/{id}",status="200"}"#),
        "route templates label HTTP metrics"
    );
    assert!(!text.contains(&id), "no approval id in any label");
}

#[actix_web::test]
async fn request_ids_are_echoed_or_generated_and_reach_the_notifier() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .header("x-request-id", "trace-abc-123")
        .json(&new_approval())
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let generated = app
        .request(Method::GET, "/health", None)
        .send()
        .await
        .expect("send");
    let generated = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(generated.len(), 26, "a generated ULID: {generated}");

    // An unsafe client id is replaced, not echoed.
    let hostile = app
        .request(Method::GET, "/health", None)
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .expect("send");
    assert_ne!(hostile.headers()["x-request-id"], "a b\tc");

    // The fallback notifier (another actor, another thread) logged the same request id.
    let file = app.dir.path().join("notifications.jsonl");
    let line = eventually(Duration::from_secs(5), "the notification line", || async {
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["id"] == id.as_str() && v["event"] == "created")
    })
    .await;
    assert_eq!(line["request_id"], "trace-abc-123");
    assert!(
        line["decide"]["cli"].as_str().unwrap_or("").contains(&id),
        "{line}"
    );
    assert!(
        line["decide"]["rest"]
            .as_str()
            .unwrap_or("")
            .contains("/decision"),
        "{line}"
    );
}

/// The request id a JSON log line carries: its own field, or the field of a span it was logged
/// in (HTTP lines carry the request's span).
fn line_request_id(line: &Value) -> Option<String> {
    let own = line["fields"]["request_id"].as_str();
    let span = line["span"]["request_id"].as_str();
    let spans = line["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find_map(|s| s["request_id"].as_str()));
    own.or(span).or(spans).map(str::to_string)
}

#[actix_web::test]
async fn every_log_line_about_an_approval_carries_its_request_id() {
    use crate::support::fake_telegram::{FakeTelegram, FakeUser};
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = telegram_env(&fake.url(), fake.token());
    env.push((
        "APPROVAL_GATE__FALLBACK__ORDER".into(),
        "console,file".into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let child = spawn_binary(dir.path(), &env);

    // An approval decided by a tap on its Telegram message...
    let created = child
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .header("x-request-id", "corr-create-1")
        .json(&new_approval())
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), StatusCode::CREATED);
    let tapped = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let message = fake
        .wait_for_messages(1, WAIT)
        .await
        .into_iter()
        .find(|m| m.text.contains(&tapped))
        .expect("the approval's message");
    let approve = message
        .callback_data()
        .into_iter()
        .find(|d| d.starts_with("a:"))
        .expect("an approve button");
    let operator = FakeUser::new(OPERATOR_USER_ID).with_username("alice_ops");
    let query = fake.inject_callback(&operator, message.chat_id, message.message_id, &approve);
    fake.wait_for_answer(&query, WAIT).await;
    // ...and one that times out.
    let mut body = new_approval();
    body["timeout"] = serde_json::json!("1s");
    let timed_out = child.create_id(&body).await;
    eventually(
        WAIT,
        "both approvals ended and their messages edited",
        || async {
            let ended = child
                .get(&timed_out, None)
                .await
                .json::<Value>()
                .await
                .ok()?;
            let edits = fake.ok_calls_to("editMessageText").len();
            (ended["status"] == "timed_out" && edits >= 2).then_some(())
        },
    )
    .await;

    let logs = eventually(WAIT, "the Telegram calls logged", || async {
        let text = child.logs.lock().expect("logs").clone();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        // The fake counts a call before the service has logged it: wait for every line.
        let logged = |method: &str, id: &str| {
            lines.iter().any(|l| {
                l["fields"]["message"] == "telegram call"
                    && l["fields"]["method"] == method
                    && l["fields"]["approval_id"] == id
            })
        };
        let all = logged("sendMessage", &tapped)
            && logged("answerCallbackQuery", &tapped)
            && logged("editMessageText", &tapped)
            && logged("editMessageText", &timed_out);
        all.then_some(lines)
    })
    .await;
    let expected = [(tapped.as_str(), "corr-create-1"), (timed_out.as_str(), "")];
    for (id, _) in expected {
        let about: Vec<&Value> = logs.iter().filter(|l| l.to_string().contains(id)).collect();
        assert!(about.len() >= 3, "lines about {id}: {about:?}");
        for line in about {
            assert!(
                line_request_id(line).is_some_and(|r| !r.is_empty() && r != "-"),
                "a line about {id} without its request id: {line}"
            );
        }
    }
    let call = |method: &str, id: &str| {
        logs.iter()
            .find(|l| {
                l["fields"]["message"] == "telegram call"
                    && l["fields"]["method"] == method
                    && l["fields"]["approval_id"] == id
            })
            .and_then(line_request_id)
            .unwrap_or_else(|| panic!("no {method} call logged for {id}"))
    };
    // The create's own request line names the approval it created: one line per create.
    let request_line = logs
        .iter()
        .find(|l| l["fields"]["message"] == "http request" && l["fields"]["approval_id"] == tapped)
        .unwrap_or_else(|| panic!("no request line naming {tapped}"));
    assert_eq!(request_line["fields"]["status"], 201, "{request_line}");
    assert_eq!(
        line_request_id(request_line).as_deref(),
        Some("corr-create-1")
    );
    assert_eq!(call("sendMessage", &tapped), "corr-create-1");
    assert_eq!(
        call("answerCallbackQuery", &tapped),
        format!("telegram-{query}")
    );
    assert_eq!(
        call("editMessageText", &tapped),
        format!("telegram-{query}")
    );
    assert_eq!(
        call("editMessageText", &timed_out),
        format!("timeout-{timed_out}")
    );
}

#[test]
fn the_pretty_log_format_writes_no_colour_codes_when_stdout_is_not_a_terminal() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_env(dir.path(), &[]);
    env.insert("APPROVAL_GATE__LOGGING__FORMAT".into(), "pretty".into());
    env.insert("APPROVAL_GATE__LOGGING__LEVEL".into(), "info".into());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_approval-gate"))
        .arg("serve")
        .env_clear()
        .envs(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let listening = line.contains("approval-gate listening");
            let _ = tx.send(line);
            if listening {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) {
        let listening = line.contains("approval-gate listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("approval-gate listening")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in a pipe: {seen:?}"
    );
}
