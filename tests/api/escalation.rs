//! Routing and escalation through the fake Bot API (and a real SMTP listener): a rule's
//! `notify` posts to its team's chat instead of the default one; `[[escalation]]` steps tell
//! further chats and addresses, re-post, and finally decide; each step fires once, in order,
//! across a real restart.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::risk::config_file;
use crate::support::fake_telegram::{FakeTelegram, SentMessage};
use crate::support::smtp::SmtpServer;
use crate::telegram::{WAIT, button, edited_to, operator};

const OPS_DB: i64 = -100_300;
const ONCALL: i64 = -100_400;

const CHATS: &str = r#"
[telegram.chats]
ops-db = -100300
oncall = -100400
"#;

fn env_of(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The messages in `chat` that show approval `id`.
fn copies(fake: &FakeTelegram, chat: i64, id: &str) -> Vec<SentMessage> {
    fake.messages()
        .into_iter()
        .filter(|m| m.chat_id == chat && m.text.contains(id))
        .collect()
}

async fn copies_at_least(fake: &FakeTelegram, chat: i64, id: &str, n: usize) -> Vec<SentMessage> {
    fake.wait_until(WAIT, &format!("{n} message(s) in chat {chat}"), |f| {
        copies(f, chat, id).len() >= n
    })
    .await;
    copies(fake, chat, id)
}

fn bash(command: &str) -> Value {
    serde_json::json!({"session_id": "s1", "tool_name": "Bash", "tool_input": {"command": command}})
}

fn kinds(history: &Value, wanted: &[&str]) -> Vec<(String, String)> {
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| wanted.contains(&e["kind"].as_str().unwrap_or_default()))
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn a_rule_routes_its_approvals_to_its_teams_chat() {
    let fake = FakeTelegram::start();
    let (_guard, config) = config_file(&format!(
        r#"{CHATS}
[[policy.rules]]
name = "database"
tool = "Bash"
input = {{ command = 'psql' }}
action = "escalate"
notify = ["telegram:ops-db"]
"#
    ));
    let env = telegram_env(&fake.url(), fake.token());
    let app = spawn_app_with_config(&config, &env_of(&env)).await;
    let routed = app.create_ok(&bash("psql -c 'vacuum'")).await;
    assert_eq!(routed["route"], serde_json::json!(["telegram:ops-db"]));
    let id = routed["id"].as_str().unwrap();
    let message = copies_at_least(&fake, OPS_DB, id, 1).await.remove(0);
    // Another approval, unrouted, goes to the default chat: once it is there, the routed one
    // has had its chance to go there too.
    let other = app.create_id(&bash("make test")).await;
    copies_at_least(&fake, CHAT_ID, &other, 1).await;
    assert!(
        copies(&fake, CHAT_ID, id).is_empty(),
        "the routed approval is not in the default chat"
    );
    // A tap in the team's chat decides; the message there is edited.
    let query_id = fake.inject_callback(
        &operator(),
        OPS_DB,
        message.message_id,
        &button(&message, "a:"),
    );
    fake.wait_for_answer(&query_id, WAIT).await;
    let approved: Value = app.get(id, None).await.json().await.unwrap();
    assert_eq!(approved["status"], "approved");
    edited_to(&fake, &message, "Approved").await;
}

#[actix_web::test]
async fn escalation_steps_tell_further_chats_repost_and_finally_decide() {
    let fake = FakeTelegram::start();
    let (_guard, config) = config_file(&format!(
        r#"{CHATS}
[[escalation]]
after = "1s"
notify = ["telegram:oncall"]
repost = true

[[escalation]]
after = "3s"
decide = "reject"
"#
    ));
    let mut env = telegram_env(&fake.url(), fake.token());
    env.push((
        "APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL".into(),
        "100ms".into(),
    ));
    let app = spawn_app_with_config(&config, &env_of(&env)).await;
    let id = app.create_id(&bash("make deploy")).await;
    let first = copies_at_least(&fake, CHAT_ID, &id, 1).await.remove(0);
    // Step 1: the on-call chat is told and the first chat gets a fresh copy, both with buttons
    // and saying it was escalated.
    let oncall = copies_at_least(&fake, ONCALL, &id, 1).await.remove(0);
    let reposted = copies_at_least(&fake, CHAT_ID, &id, 2).await.remove(1);
    for copy in [&oncall, &reposted] {
        assert!(
            copy.plain_text.contains("Escalated (step 1)"),
            "{}",
            copy.plain_text
        );
        assert_eq!(copy.callback_data().len(), 3, "{:?}", copy.reply_markup);
    }
    // Step 2 decides: rejected by the escalation, every copy edited.
    let ended: Value = app.get(&id, Some("10s")).await.json().await.unwrap();
    assert_eq!(ended["status"], "rejected", "{ended}");
    assert_eq!(ended["decided_by"], "escalation:2");
    assert_eq!(ended["escalations"], 2);
    assert_eq!(
        ended["escalated_to"],
        serde_json::json!(["telegram:oncall"])
    );
    for copy in [&first, &oncall, &reposted] {
        edited_to(&fake, copy, "Rejected").await;
    }
    let history = app
        .operator_json(&format!("/api/approvals/{id}/events"))
        .await;
    let steps = kinds(&history, &["escalated", "rejected"]);
    assert_eq!(steps.len(), 3, "{history}");
    assert!(
        steps[0]
            .1
            .starts_with("step 1: no decision after 1s; telegram:oncall, re-posted"),
        "{steps:?}"
    );
    assert!(
        steps[1].1.starts_with("step 2: no decision after 3s"),
        "{steps:?}"
    );
    assert_eq!(steps[2].0, "rejected");
}

#[actix_web::test]
async fn a_decision_before_a_step_stops_the_escalation() {
    let fake = FakeTelegram::start();
    let (_guard, config) = config_file(&format!(
        r#"{CHATS}
[[escalation]]
after = "1s"
notify = ["telegram:oncall"]
"#
    ));
    let mut env = telegram_env(&fake.url(), fake.token());
    env.push((
        "APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL".into(),
        "100ms".into(),
    ));
    let app = spawn_app_with_config(&config, &env_of(&env)).await;
    let decided = app.create_id(&bash("make a")).await;
    assert_eq!(app.decide(&decided, "approve").await.status(), 200);
    // A later approval left alone escalates: by then the decided one's step was due too.
    let left = app.create_id(&bash("make b")).await;
    copies_at_least(&fake, ONCALL, &left, 1).await;
    assert!(copies(&fake, ONCALL, &decided).is_empty());
    let history = app
        .operator_json(&format!("/api/approvals/{decided}/events"))
        .await;
    assert!(kinds(&history, &["escalated"]).is_empty(), "{history}");
}

#[actix_web::test]
async fn an_escalation_step_mails_its_addresses() {
    let smtp = SmtpServer::start();
    let port = smtp.port().to_string();
    let (_guard, config) = config_file(
        r#"
[[escalation]]
after = "1s"
notify = ["email:lead@example.com"]
"#,
    );
    let app = spawn_app_with_config(
        &config,
        &[
            ("APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL", "100ms"),
            ("APPROVAL_GATE__FALLBACK__ORDER", "email"),
            ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_HOST", smtp.host()),
            ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_PORT", &port),
            ("APPROVAL_GATE__FALLBACK__EMAIL__TLS", "none"),
            ("APPROVAL_GATE__FALLBACK__EMAIL__FROM", "gate@example.com"),
            ("APPROVAL_GATE__FALLBACK__EMAIL__TO", "ops@example.com"),
            ("APPROVAL_GATE__FALLBACK__EMAIL__TIMEOUT", "2s"),
        ],
    )
    .await;
    let id = app.create_id(&bash("make deploy")).await;
    let escalated = eventually(WAIT, "the escalation mail", || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.data.contains(&id) && m.data.contains("Escalated"))
    })
    .await;
    let mut to = escalated.to.clone();
    to.sort();
    assert_eq!(to, ["lead@example.com", "ops@example.com"], "{to:?}");
    let created = smtp
        .messages()
        .into_iter()
        .find(|m| m.data.contains(&id) && m.data.contains("Approval needed"))
        .expect("the creation mail");
    assert_eq!(
        created.to,
        ["ops@example.com"],
        "before the step, only the defaults"
    );
}

#[actix_web::test]
async fn each_step_fires_once_across_a_restart() {
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().unwrap();
    let (_guard, config) = config_file(&format!(
        r#"{CHATS}
[[escalation]]
after = "1s"
notify = ["telegram:oncall"]

[[escalation]]
after = "4s"
decide = "reject"
"#
    ));
    let mut env = telegram_env(&fake.url(), fake.token());
    env.push((
        "APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL".into(),
        "100ms".into(),
    ));
    let env = env_of(&env);
    let mut child = spawn_binary_args(dir.path(), &["--config", &config], &env);
    let id = child.create_id(&bash("make deploy")).await;
    copies_at_least(&fake, ONCALL, &id, 1).await;
    // Step 1 is told; the process dies before step 2.
    child.signal(libc::SIGKILL);
    child.wait_exit(Duration::from_secs(10));
    let child = spawn_binary_args(dir.path(), &["--config", &config], &env);
    let ended: Value = child.get(&id, Some("15s")).await.json().await.unwrap();
    assert_eq!(
        ended["status"], "rejected",
        "step 2 fired after the restart: {ended}"
    );
    assert_eq!(ended["decided_by"], "escalation:2");
    let history = child
        .operator_json(&format!("/api/approvals/{id}/events"))
        .await;
    let steps: Vec<String> = kinds(&history, &["escalated"])
        .into_iter()
        .map(|(_, detail)| detail[..6].to_string())
        .collect();
    assert_eq!(
        steps,
        ["step 1", "step 2"],
        "each once, in order: {history}"
    );
    // The step fired once (above). Its message may be sent again: a kill between Telegram's
    // answer and the queue entry's removal repeats it, as for any Telegram notification
    // (delivery is at least once); never a third time.
    let told = copies(&fake, ONCALL, &id).len();
    assert!(
        (1..=2).contains(&told),
        "the on-call chat told {told} times"
    );
}

/// Two instances on one PostgreSQL database: the one that created (and armed) an approval is
/// killed; the other fires its escalation step, once, shortly after it was due.
#[actix_rt::test]
async fn a_step_whose_instance_died_is_fired_by_another() {
    let Some(db) = PgDatabase::create("escalation_orphan").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_guard, config) = config_file(
        r#"
[[escalation]]
after = "2s"
decide = "reject"
"#,
    );
    let mut instances = pg_instances(dir.path(), &db, 2, &["--config", &config], &[]);
    let (other, mut creator) = (instances.pop().expect("two"), instances.pop().expect("two"));
    let id = creator.create_id(&bash("make deploy")).await;
    creator.signal(libc::SIGKILL);
    creator.wait_exit(Duration::from_secs(10));
    let ended: Value = other.get(&id, Some("20s")).await.json().await.unwrap();
    assert_eq!(ended["status"], "rejected", "{ended}");
    assert_eq!(ended["decided_by"], "escalation:1");
    let history = other
        .operator_json(&format!("/api/approvals/{id}/events"))
        .await;
    assert_eq!(kinds(&history, &["escalated"]).len(), 1, "{history}");
}
