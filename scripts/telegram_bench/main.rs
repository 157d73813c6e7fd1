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

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use support::fake_telegram::{FakeTelegram, FakeUser, Fault};

mod phases;
mod service;

use phases::*;
use service::*;

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
