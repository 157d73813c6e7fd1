//! Burst benchmark (issue 25's figures): the compiled `approval-gate serve` against the fake
//! Bot API from `tests/support`, with Telegram's real limits configured in the service (one
//! message a second per chat; in the group run also 20 new messages a minute).
//!
//! 1. `--approvals` (2,000) created within `--seconds` (5), every one a different command (no
//!    identical requests to group: the worst case): how long until every one was shown to
//!    operators in Telegram (its history's first `delivered` entry, single message or digest),
//!    how many messages that took, and whether the limits held (least gap between two
//!    sendMessage calls; most sendMessage calls in any 60 s).
//! 2. the same in a group chat.
//! 3. a tap on a digest's ✅ → the agent's long poll answered: p50/p99 over `--taps`.
//!
//! `scripts/bench-digest [--approvals 2000] [--seconds 5] [--taps 200]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use support::fake_telegram::{FakeTelegram, FakeUser, SentMessage};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const AGENT_TOKEN: &str = "bench-agent-token-0123456789";
const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789";
const OPERATOR: u64 = 4711;

#[derive(Parser, Debug)]
#[command(about = "A burst of approvals announced within Telegram's limits; digest tap latency")]
struct Args {
    #[arg(long, default_value = "target/release/approval-gate")]
    binary: PathBuf,
    #[arg(long, default_value_t = 2000)]
    approvals: usize,
    /// The burst is spread over this many seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 200)]
    taps: usize,
}

struct Service {
    child: Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    async fn start(
        binary: &PathBuf,
        fake: &FakeTelegram,
        chat: i64,
        per_minute: u32,
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let env: Vec<(&str, String)> = vec![
            (
                "APPROVAL_GATE_CONFIG_DIR",
                format!("{}/config", env!("CARGO_MANIFEST_DIR")),
            ),
            ("APPROVAL_GATE__SERVER__BIND", format!("127.0.0.1:{port}")),
            (
                "APPROVAL_GATE__STORE__PATH",
                dir.path().join("store").display().to_string(),
            ),
            (
                "APPROVAL_GATE__FALLBACK__FILE_PATH",
                dir.path().join("n.jsonl").display().to_string(),
            ),
            ("APPROVAL_GATE__FALLBACK__ORDER", "file".into()),
            (
                "APPROVAL_GATE__AUTH__AGENT_TOKENS__BENCH",
                AGENT_TOKEN.into(),
            ),
            (
                "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__OPS",
                OPERATOR_TOKEN.into(),
            ),
            ("APPROVAL_GATE__LOGGING__LEVEL", "error".into()),
            ("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "0".into()),
            ("APPROVAL_GATE__LIMITS__DECISIONS_PER_SECOND", "0".into()),
            ("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0".into()),
            ("APPROVAL_GATE__SERVER__MAX_WAITERS", "5000".into()),
            ("APPROVAL_GATE__TELEGRAM__ENABLED", "true".into()),
            ("APPROVAL_GATE__TELEGRAM__BOT_TOKEN", fake.token().into()),
            ("APPROVAL_GATE__TELEGRAM__API_URL", fake.url()),
            ("APPROVAL_GATE__TELEGRAM__CHAT_ID", chat.to_string()),
            (
                "APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS",
                OPERATOR.to_string(),
            ),
            // Telegram's limits, as the defaults have them.
            ("APPROVAL_GATE__TELEGRAM__SEND_INTERVAL", "1s".into()),
            (
                "APPROVAL_GATE__TELEGRAM__GROUP_MESSAGES_PER_MINUTE",
                per_minute.to_string(),
            ),
            ("APPROVAL_GATE__TELEGRAM__DIGEST_AFTER", "10s".into()),
            ("APPROVAL_GATE__TELEGRAM__POLL_TIMEOUT", "1s".into()),
        ];
        let child = Command::new(binary)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let service = Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let ready = service
                .http
                .get(format!("{}/health/ready", service.base))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(service);
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err("the service did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When the approval was first delivered to Telegram (ms since the epoch), from its history.
    async fn shown_ms(&self, id: &str) -> Result<Option<i64>, BoxError> {
        let history: Value = self
            .http
            .get(format!("{}/api/approvals/{id}/events", self.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        Ok(history["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["kind"] == "delivered" && e["channel"] == "telegram")
                .and_then(|e| e["at"].as_str())
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.timestamp_millis())
        }))
    }

    async fn waiters(&self) -> f64 {
        let text = match self.http.get(format!("{}/metrics", self.base)).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => return -1.0,
        };
        text.lines()
            .find_map(|l| {
                l.strip_prefix("approval_gate_waiters ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(-1.0)
    }
}

/// One approval with a command of its own (nothing for a digest to group).
async fn create(http: reqwest::Client, base: String, i: usize) -> Result<String, BoxError> {
    let body = json!({"session_id": format!("bench-{i}"), "tool_name": "Bash",
                      "tool_input": {"command": format!("make deploy-{i}")}, "timeout": "2h"});
    let response = http
        .post(format!("{base}/api/approvals"))
        .bearer_auth(AGENT_TOKEN)
        .json(&body)
        .send()
        .await?;
    let value: Value = response.error_for_status()?.json().await?;
    Ok(value["id"].as_str().ok_or("no id")?.to_string())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates `n` approvals spread evenly over `seconds`, many at once.
async fn burst(service: &Service, n: usize, seconds: u64) -> Result<(i64, Vec<String>), BoxError> {
    let start_ms = now_ms();
    let started = Instant::now();
    let per = Duration::from_secs(seconds).as_secs_f64() / n as f64;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = started + Duration::from_secs_f64(per * i as f64);
        tokio::time::sleep_until(at.into()).await;
        tasks.push(tokio::spawn(create(
            service.http.clone(),
            service.base.clone(),
            i,
        )));
    }
    let mut ids = Vec::with_capacity(n);
    for task in tasks {
        ids.push(task.await??);
    }
    Ok((start_ms, ids))
}

async fn announce_run(
    args: &Args,
    chat: i64,
    per_minute: u32,
    label: &str,
) -> Result<(FakeTelegram, Service, Vec<String>), BoxError> {
    let fake = FakeTelegram::start();
    let service = Service::start(&args.binary, &fake, chat, per_minute).await?;
    let (start_ms, ids) = burst(&service, args.approvals, args.seconds).await?;
    let created_in = now_ms() - start_ms;
    // Wait (bounded) until every approval was shown.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_shown = 0;
    let mut pending: Vec<String> = ids.clone();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            match service.shown_ms(&id).await? {
                Some(at) => last_shown = last_shown.max(at),
                None => still.push(id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let sends: Vec<Instant> = fake
        .ok_calls_to("sendMessage")
        .iter()
        .map(|c| c.at)
        .collect();
    let least_gap = sends
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .min()
        .unwrap_or_default();
    let most_per_minute = sends
        .iter()
        .enumerate()
        .map(|(i, at)| {
            sends[i..]
                .iter()
                .take_while(|t| t.duration_since(*at) < Duration::from_secs(60))
                .count()
        })
        .max()
        .unwrap_or(0);
    let digests = fake
        .messages()
        .iter()
        .filter(|m| m.plain_text.contains("approvals waiting"))
        .count();
    println!(
        "{label}: {} approvals created in {:.1} s; every one shown after {}; {} sendMessage calls ({digests} digests); least gap between sends {:.3} s; most sends in any 60 s: {most_per_minute}",
        ids.len(),
        created_in as f64 / 1000.0,
        if pending.is_empty() {
            format!("{:.1} s", (last_shown - start_ms) as f64 / 1000.0)
        } else {
            format!("NOT ALL ({} never shown in 300 s)", pending.len())
        },
        sends.len(),
        least_gap.as_secs_f64()
    );
    Ok((fake, service, ids))
}

/// Approve-button callback data on the digests, by approval id.
fn digest_buttons(fake: &FakeTelegram) -> Vec<(SentMessage, String)> {
    let mut buttons = Vec::new();
    for message in fake
        .messages()
        .into_iter()
        .filter(|m| m.plain_text.contains("approvals waiting"))
    {
        let Some(rows) = message
            .reply_markup
            .as_ref()
            .and_then(|m| m["inline_keyboard"].as_array())
            .cloned()
        else {
            continue;
        };
        for button in rows
            .iter()
            .flat_map(|r| r.as_array().cloned().unwrap_or_default())
        {
            if let Some(data) = button["callback_data"]
                .as_str()
                .filter(|d| d.starts_with("a:"))
            {
                buttons.push((message.clone(), data.to_string()));
            }
        }
    }
    buttons
}

async fn tap_run(
    args: &Args,
    fake: &FakeTelegram,
    service: &Service,
    chat: i64,
) -> Result<(), BoxError> {
    let operator = FakeUser::new(OPERATOR).with_username("bench_ops");
    let mut latencies = Vec::new();
    for (message, data) in digest_buttons(fake).into_iter().take(args.taps) {
        let id = data.split(':').nth(1).ok_or("callback data")?.to_string();
        let url = format!("{}/api/approvals/{id}?wait=60s", service.base);
        let poll = tokio::spawn({
            let http = service.http.clone();
            async move {
                http.get(url)
                    .bearer_auth(AGENT_TOKEN)
                    .send()
                    .await?
                    .json::<Value>()
                    .await
                    .map_err(BoxError::from)
            }
        });
        let registered = Instant::now();
        while service.waiters().await < 1.0 {
            if registered.elapsed() > Duration::from_secs(10) {
                return Err("the long poll did not register".into());
            }
        }
        let tapped = Instant::now();
        fake.inject_callback(&operator, chat, message.message_id, &data);
        let answer = poll.await??;
        latencies.push(tapped.elapsed());
        if answer["status"] != "approved" {
            return Err(format!("a digest tap left {id} {}", answer["status"]).into());
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    if latencies.is_empty() {
        return Err("no digest buttons to tap".into());
    }
    println!(
        "tap on a digest's ✅ → agent's long poll answered: {} taps, p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    println!(
        "approval-gate burst benchmark on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let private = 4242;
    let (fake, service, _) = announce_run(&args, private, 0, "private chat (1 message/s)").await?;
    tap_run(&args, &fake, &service, private).await?;
    drop(service);
    let group = -100_777;
    announce_run(&args, group, 20, "group (1 message/s, 20 new messages/min)").await?;
    Ok(())
}
