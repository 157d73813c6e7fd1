//! Telegram delivery benchmark: the compiled `approval-gate serve` against the fake Bot API
//! server from `tests/support` (real HTTP, real teloxide client), measuring the figures the
//! Telegram issue names:
//!
//! 1. with a share of Bot API calls failing at random (5xx, 429 with `retry_after`, latency,
//!    dropped connections), N approvals: how many reach Telegram (target 100%) and how many
//!    show up more than once (target < 0.5%);
//! 2. a full outage (every call dropped) of `--outage-seconds` while approvals keep coming: how
//!    long the outbox takes to drain once Telegram is back;
//! 3. the time from a button tap (the fake's update becoming available to getUpdates) to the
//!    agent's long poll returning, p50/p99, with no injected latency.
//!
//! Run with `scripts/bench-telegram` (release build), `--help` for the knobs. Only 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use support::fake_telegram::{FakeTelegram, FakeUser, Fault};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const AGENT_TOKEN: &str = "bench-agent-token-0123456789";
const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789";
const CHAT_ID: i64 = -100_500;
const OPERATOR: u64 = 4711;

#[derive(Parser, Debug)]
#[command(about = "Telegram delivery under faults, outage drain time, tap-to-long-poll latency")]
struct Args {
    #[arg(long, default_value = "target/release/approval-gate")]
    binary: PathBuf,
    /// Approvals created while faults are injected.
    #[arg(long, default_value_t = 1000)]
    approvals: usize,
    /// Share of Bot API calls (except getUpdates) that fail.
    #[arg(long, default_value_t = 0.3)]
    fault_rate: f64,
    #[arg(long, default_value_t = 60)]
    outage_seconds: u64,
    /// Approvals created during the outage.
    #[arg(long, default_value_t = 100)]
    outage_approvals: usize,
    /// Taps measured for the latency figure.
    #[arg(long, default_value_t = 200)]
    taps: usize,
    /// The gateway's `telegram.send_interval` (humantime). Telegram itself allows about one
    /// message per second per chat; the fake has no limit, so 0s measures the fake's speed.
    #[arg(long, default_value = "0s")]
    send_interval: String,
    /// Run only phase 0 (fault-free against 30% 5xx).
    #[arg(long)]
    only_5xx: bool,
    /// Run only the agent-hook figures: command-hook start to exit on a policy allow, and
    /// tap → Claude Code HTTP hook reply.
    #[arg(long)]
    only_hooks: bool,
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

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Service {
    async fn start(
        binary: &PathBuf,
        fake: &FakeTelegram,
        send_interval: &str,
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        // One policy rule, so a command hook can be timed on an immediate policy allow.
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[[policy.rules]]\nname = \"bench reads\"\ntool = \"Read\"\naction = \"allow\"\n",
        )?;
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
                dir.path().join("notifications.jsonl").display().to_string(),
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
            ("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0".into()),
            ("APPROVAL_GATE__SERVER__MAX_WAITERS", "5000".into()),
            ("APPROVAL_GATE__TELEGRAM__ENABLED", "true".into()),
            ("APPROVAL_GATE__TELEGRAM__BOT_TOKEN", fake.token().into()),
            ("APPROVAL_GATE__TELEGRAM__API_URL", fake.url()),
            ("APPROVAL_GATE__TELEGRAM__CHAT_ID", CHAT_ID.to_string()),
            (
                "APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS",
                OPERATOR.to_string(),
            ),
            (
                "APPROVAL_GATE__TELEGRAM__SEND_INTERVAL",
                send_interval.into(),
            ),
            (
                "APPROVAL_GATE__TELEGRAM__GROUP_MESSAGES_PER_MINUTE",
                "0".into(),
            ),
            ("APPROVAL_GATE__TELEGRAM__REQUEST_TIMEOUT", "1s".into()),
            ("APPROVAL_GATE__TELEGRAM__POLL_TIMEOUT", "10s".into()),
            (
                "APPROVAL_GATE__TELEGRAM__RETRY__INITIAL_DELAY",
                "50ms".into(),
            ),
            ("APPROVAL_GATE__TELEGRAM__RETRY__MAX_DELAY", "2s".into()),
            (
                "APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION",
                "2s".into(),
            ),
        ];
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&policy)
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
        while !service.ready().await {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("the service did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(service)
    }

    async fn ready(&self) -> bool {
        let response = self
            .http
            .get(format!("{}/health/ready", self.base))
            .send()
            .await;
        response.is_ok_and(|r| r.status().is_success())
    }

    async fn create(&self, i: usize) -> Result<String, BoxError> {
        let body = json!({"session_id": format!("bench-{i}"), "tool_name": "Bash",
                          "tool_input": {"command": format!("make deploy-{i}")}, "timeout": "2h"});
        let response = self
            .http
            .post(format!("{}/api/approvals", self.base))
            .bearer_auth(AGENT_TOKEN)
            .json(&body)
            .send()
            .await?;
        let value: Value = response.error_for_status()?.json().await?;
        Ok(value["id"].as_str().ok_or("no id")?.to_string())
    }

    async fn long_poll(&self, id: &str) -> Result<Value, BoxError> {
        let url = format!("{}/api/approvals/{id}?wait=60s", self.base);
        let response = self.http.get(url).bearer_auth(AGENT_TOKEN).send().await?;
        Ok(serde_json::from_slice(
            &response.error_for_status()?.bytes().await?,
        )?)
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

async fn create_many(service: &Service, from: usize, n: usize) -> Result<Vec<String>, BoxError> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(16) {
        let batch = futures_util::future::join_all(chunk.iter().map(|i| service.create(*i))).await;
        for id in batch {
            ids.push(id?);
        }
    }
    Ok(ids)
}

/// How many Telegram messages show each approval.
fn copies(fake: &FakeTelegram, ids: &[String]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 0)).collect();
    for message in fake.messages() {
        for id in ids {
            if message.text.contains(id.as_str()) {
                *counts.entry(id.clone()).or_default() += 1;
            }
        }
    }
    counts
}

async fn until(deadline: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Create `n` approvals and time it until Telegram shows all of them (first create → last
/// message), counting messages rather than matching ids so the check costs nothing.
async fn deliver_timed(
    fake: &FakeTelegram,
    service: &Service,
    from: usize,
    n: usize,
) -> Result<(Duration, Vec<String>), BoxError> {
    let before = fake.messages().len();
    let started = Instant::now();
    let ids = create_many(service, from, n).await?;
    until(Duration::from_secs(900), || {
        fake.messages().len() >= before + n
    })
    .await
    .ok_or("not delivered within 15 minutes")?;
    Ok((started.elapsed(), ids))
}

/// The figure of the reliability issue: delivery of N approvals under 30% injected 5xx against
/// the fault-free time of the same N, measured in the same run (target ≤ 1.5×).
async fn fivexx_phase(args: &Args, fake: &FakeTelegram, service: &Service) -> Result<(), BoxError> {
    let n = args.approvals;
    println!(
        "\n== 0. {n} approvals fault-free, then {n} with {:.0}% 5xx",
        args.fault_rate * 100.0
    );
    let (clean, _) = deliver_timed(fake, service, 1_000_000, n).await?;
    fake.set_random_faults(
        args.fault_rate,
        7,
        vec![Fault::Status(500), Fault::Status(502), Fault::Status(503)],
    );
    let (faulty, ids) = deliver_timed(fake, service, 2_000_000, n).await?;
    fake.clear_faults();
    let counts = copies(fake, &ids);
    let duplicates: usize = counts.values().map(|c| c.saturating_sub(1)).sum();
    let missing = counts.values().filter(|c| **c == 0).count();
    println!(
        "fault-free: {clean:.2?}; under 5xx: {faulty:.2?} = {:.2}× (target ≤ 1.5×); missing {missing}, duplicates {duplicates}",
        faulty.as_secs_f64() / clean.as_secs_f64()
    );
    Ok(())
}

async fn faults_phase(args: &Args, fake: &FakeTelegram, service: &Service) -> Result<(), BoxError> {
    println!(
        "\n== 1. {} approvals with {:.0}% of Bot API calls failing",
        args.approvals,
        args.fault_rate * 100.0
    );
    fake.set_random_faults(
        args.fault_rate,
        42,
        vec![
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(503),
            Fault::TooManyRequests { retry_after: 1 },
            Fault::Delay(Duration::from_millis(300)),
            Fault::DropConnection,
        ],
    );
    let started = Instant::now();
    let ids = create_many(service, 0, args.approvals).await?;
    let created_in = started.elapsed();
    let delivered_in = until(Duration::from_secs(900), || {
        copies(fake, &ids).values().all(|n| *n >= 1)
    })
    .await;
    fake.clear_faults();
    let counts = copies(fake, &ids);
    let delivered = counts.values().filter(|n| **n >= 1).count();
    let duplicates: usize = counts.values().map(|n| n.saturating_sub(1)).sum();
    let failed = fake
        .calls_to("sendMessage")
        .iter()
        .filter(|c| !c.is_ok())
        .count();
    println!("created {} approvals in {:.1?}", ids.len(), created_in);
    println!(
        "sendMessage calls: {} ({} failed by injection)",
        fake.calls_to("sendMessage").len(),
        failed
    );
    println!(
        "delivered: {delivered}/{} = {:.2}% (target 100%) in {}",
        ids.len(),
        100.0 * delivered as f64 / ids.len() as f64,
        delivered_in.map_or("— not within 15 min".into(), |d| format!(
            "{d:.1?} after the last create"
        ))
    );
    println!(
        "duplicates: {duplicates} = {:.2}% (target < 0.5%)",
        100.0 * duplicates as f64 / ids.len() as f64
    );
    Ok(())
}

async fn outage_phase(args: &Args, fake: &FakeTelegram, service: &Service) -> Result<(), BoxError> {
    println!(
        "\n== 2. a {} s outage with {} approvals created during it",
        args.outage_seconds, args.outage_approvals
    );
    fake.set_down(Some(Fault::DropConnection), false);
    let outage = Instant::now();
    let ids = create_many(service, 1_000_000, args.outage_approvals).await?;
    tokio::time::sleep(Duration::from_secs(args.outage_seconds).saturating_sub(outage.elapsed()))
        .await;
    let queued = service
        .metric("approval_gate_telegram_outbox_size")
        .await
        .unwrap_or(-1.0);
    fake.clear_faults();
    let back = Instant::now();
    let shown = until(Duration::from_secs(600), || {
        copies(fake, &ids).values().all(|n| *n >= 1)
    })
    .await;
    let mut drained = None;
    while back.elapsed() < Duration::from_secs(600) {
        if service.metric("approval_gate_telegram_outbox_size").await == Some(0.0) {
            drained = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("outbox at the end of the outage: {queued}");
    println!(
        "all shown on Telegram {} after it came back; outbox empty after {}",
        shown.map_or("— never".into(), |d| format!("{d:.2?}")),
        drained.map_or("— never".into(), |d| format!("{d:.2?}"))
    );
    println!("(the breaker probes every 2 s here: the drain includes waiting for the next probe)");
    Ok(())
}

async fn tap_phase(args: &Args, fake: &FakeTelegram, service: &Service) -> Result<(), BoxError> {
    println!(
        "\n== 3. tap → long poll return, {} taps, no injected latency",
        args.taps
    );
    let operator = FakeUser::new(OPERATOR).with_username("bench_ops");
    let mut latencies = Vec::with_capacity(args.taps);
    for i in 0..args.taps {
        let id = service.create(2_000_000 + i).await?;
        until(Duration::from_secs(30), || {
            copies(fake, std::slice::from_ref(&id))[&id] >= 1
        })
        .await;
        let message = fake
            .messages()
            .into_iter()
            .find(|m| m.text.contains(&id))
            .ok_or("message")?;
        let data = message
            .callback_data()
            .into_iter()
            .find(|d| d.starts_with("a:"))
            .ok_or("button")?;
        let poll = service.long_poll(&id);
        let tap = async {
            // Tap once the long poll is registered, so the figure is tap → return, not a race.
            while service.metric("approval_gate_waiters").await.unwrap_or(0.0) < 1.0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let at = Instant::now();
            fake.inject_callback(&operator, CHAT_ID, message.message_id, &data);
            at
        };
        let (polled, tapped_at) = tokio::join!(poll, tap);
        let polled = polled?;
        if polled["status"] != "approved" {
            return Err(format!("tap did not approve: {polled}").into());
        }
        latencies.push(tapped_at.elapsed());
    }
    latencies.sort();
    println!(
        "tap → long poll: p50 {:.1?}, p99 {:.1?}, max {:.1?} (target p99 < 50 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// The agents issue's figures: `approval-gate hook claude-code` start to exit when a policy rule
/// allows at once, and tap → HTTP hook reply (the hook is held, the operator taps).
async fn hooks_phase(args: &Args, fake: &FakeTelegram, service: &Service) -> Result<(), BoxError> {
    println!(
        "\n== hooks: command-hook start → exit on a policy allow, {} runs",
        args.taps
    );
    let mut runs = Vec::with_capacity(args.taps);
    for i in 0..args.taps {
        let input = json!({"session_id": "bench", "hook_event_name": "PreToolUse", "tool_name": "Read",
            "tool_input": {"file_path": "/etc/hosts"}, "tool_use_id": format!("toolu_read_{i}")});
        let started = Instant::now();
        let mut child = Command::new(&args.binary)
            .args(["hook", "claude-code", "--url", &service.base])
            .env("APPROVAL_GATE_TOKEN", AGENT_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(input.to_string().as_bytes())?;
        }
        let output = child.wait_with_output()?;
        runs.push(started.elapsed());
        let answer: Value = serde_json::from_slice(&output.stdout)?;
        if answer["hookSpecificOutput"]["permissionDecision"] != "allow" {
            return Err(format!("the policy did not allow: {answer}").into());
        }
    }
    runs.sort();
    println!(
        "command hook start → exit: p50 {:.1?}, p99 {:.1?}, max {:.1?} (target < 50 ms)",
        percentile(&runs, 0.5),
        percentile(&runs, 0.99),
        runs.last().copied().unwrap_or_default()
    );

    println!(
        "\n== hooks: tap → Claude Code HTTP hook reply, {} taps",
        args.taps
    );
    let operator = FakeUser::new(OPERATOR).with_username("bench_ops");
    let mut latencies = Vec::with_capacity(args.taps);
    for i in 0..args.taps {
        let input = json!({"session_id": format!("hook-{i}"), "hook_event_name": "PreToolUse",
            "tool_name": "Bash", "tool_input": {"command": format!("make deploy-{i}")},
            "tool_use_id": format!("toolu_bash_{i}")});
        let held = service
            .http
            .post(format!("{}/hooks/claude-code/pre-tool-use", service.base))
            .bearer_auth(AGENT_TOKEN)
            .json(&input)
            .send();
        let tap = async {
            let command = format!("make deploy-{i}");
            let message = loop {
                if let Some(m) = fake
                    .messages()
                    .into_iter()
                    .find(|m| m.plain_text.contains(&command))
                {
                    break m;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            while service.metric("approval_gate_waiters").await.unwrap_or(0.0) < 1.0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let data = message
                .callback_data()
                .into_iter()
                .find(|d| d.starts_with("a:"));
            let at = Instant::now();
            if let Some(data) = data {
                fake.inject_callback(&operator, CHAT_ID, message.message_id, &data);
            }
            at
        };
        let (response, tapped_at) = tokio::join!(held, tap);
        let body = response?.text().await?;
        latencies.push(tapped_at.elapsed());
        let answer: Value = serde_json::from_str(body.trim())?;
        if answer["hookSpecificOutput"]["permissionDecision"] != "allow" {
            return Err(format!("the tap did not allow: {answer}").into());
        }
    }
    latencies.sort();
    println!(
        "tap → hook reply: p50 {:.1?}, p99 {:.1?}, max {:.1?} (target p99 < 50 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let fake = FakeTelegram::start();
    let service = Service::start(&args.binary, &fake, &args.send_interval).await?;
    println!(
        "approval-gate telegram benchmark on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if args.only_hooks {
        return hooks_phase(&args, &fake, &service).await;
    }
    fivexx_phase(&args, &fake, &service).await?;
    if args.only_5xx {
        return Ok(());
    }
    faults_phase(&args, &fake, &service).await?;
    outage_phase(&args, &fake, &service).await?;
    tap_phase(&args, &fake, &service).await?;
    Ok(())
}
