//! End-to-end benchmark of the compiled `approval-gate serve`, measuring the four figures the
//! performance issue names:
//!
//! 1. durable creates per second, and their p50/p99 latency, at a fixed concurrency on
//!    keep-alive connections (`POST /api/approvals` answers 201 only once the record is fsynced);
//! 2. the time from an operator decision until every one of N waiting long polls has received
//!    its full body (several rounds; the median round is reported);
//! 3. the resident memory (VmRSS) of the service holding 100,000 pending approvals;
//! 4. the start-up time of the service on that store: from spawn to `/health/ready` answering
//!    200, and to the first successful read of one of the stored approvals.
//!
//! Run it with `scripts/bench`, which builds the release binary and this example and passes any
//! flags on, e.g. `scripts/bench --pending 2000 --creates-seconds 2` for a quick pass, or
//! `scripts/bench --help`.
//!
//! How: the service runs as a child process on `127.0.0.1` against fresh sled stores in a temp
//! folder (under `$TMPDIR`, which must be a real disk for fsync to cost what it costs in
//! production; the bench warns on tmpfs). It is configured as a user would leave it: fallback
//! channels `console,file`, log level `info`, JSON logs; only the per-request access log is off
//! (`--request-logging` turns it on). Its stdout and stderr go straight to a log file, not a
//! pipe, so no client thread has to drain them. The throughput phase runs on a service of its
//! own, because it leaves a backlog of notifications behind (the file channel fsyncs each one);
//! the second service is filled with exactly `--pending` approvals, measured once that backlog
//! is written, then hosts the long-poll fan-out and is restarted for the start-up figures.
//!
//! The client is a tokio runtime with two worker threads. On a small machine it competes with
//! the service for the same cores, so every figure includes the client's own cost.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../../tests/support/mod.rs"]
mod support;

mod client;
mod load;
mod machine;
mod phases;
mod report;
mod service;
mod store;
mod throughput;

use client::*;
use load::*;
use machine::*;
use phases::*;
use report::*;
use service::*;

use clap::Parser;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const AGENT_TOKEN: &str = "bench-agent-token-0123456789";
const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789";
/// A typical small tool call; the long timeout keeps every approval pending for the whole run.
const CREATE_BODY: &str = r#"{"session_id":"bench-session","tool_name":"Bash","tool_input":{"command":"ls -la ./build"},"reason":"benchmark","timeout":"2h"}"#;
/// A worker gives up after this many failures in a row: the service is down or refusing, and
/// spinning on instant errors would only distort the figures.
const MAX_CONSECUTIVE_FAILURES: usize = 10;
/// Names of the two services (their stores, logs and notification files).
const THROUGHPUT: &str = "throughput";
/// The throughput service again with every rate limit on (quotas far above the load, so the
/// limiters run on every request but never refuse): the cost of rate limiting.
const LIMITED: &str = "limited";
const PENDING: &str = "pending";
/// The issue's "300 MB", read as decimal megabytes (the stricter reading).
const RSS_TARGET_BYTES: u64 = 300_000_000;

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark the approval-gate binary: durable creates/s, long-poll fan-out, memory, start-up"
)]
struct Args {
    /// The `approval-gate` executable to benchmark.
    #[arg(long, default_value = "target/release/approval-gate")]
    binary: PathBuf,
    /// How long to measure durable creates.
    #[arg(long, default_value_t = 10.0)]
    creates_seconds: f64,
    /// Creates sent first and not measured (connections, allocator, sled caches).
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Concurrent create requests, each worker on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Pending approvals for the memory and start-up figures.
    #[arg(long, default_value_t = 100_000)]
    pending: usize,
    /// Long polls waiting on one approval when the operator decides it.
    #[arg(long, default_value_t = 1000)]
    waiters: usize,
    /// Fan-out rounds (each on a fresh approval); the median round is reported.
    #[arg(long, default_value_t = 3)]
    fanout_rounds: usize,
    /// Also measure a store of this many ended approvals (plus 100 pending), written directly
    /// with the store API before the service starts: start-up to ready, and listing pending
    /// (`GET /api/approvals?status=pending`) latency. 0 = skip (it takes a while).
    #[arg(long, default_value_t = 0)]
    large: usize,
    /// Telegram for the throughput service: `off`, `up` (the tests' fake Bot API over real
    /// HTTP, answering every call) or `down` (the fake drops every sendMessage connection).
    #[arg(long, default_value = "off", value_parser = ["off", "up", "down"])]
    telegram: String,
    /// With `--telegram up`: lift the service's pacing (`telegram.send_interval = 0s`, no group
    /// limit), so the gateway sends as fast as the fake answers (about 0.1 ms a call on
    /// loopback). A stress of the gateway, not a pace real Telegram accepts (about one message a
    /// second per chat, 20 a minute per group); without it the service keeps its defaults.
    #[arg(long)]
    unpaced: bool,
    /// The baseline server (`scripts/baseline_server.rs`): a bare sled insert + flush +
    /// fdatasync group commit behind the same actix-web setup, measured in the same run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Also measure creates with rate limits on (same run), to report their added latency.
    #[arg(long)]
    rate_limits: bool,
    /// Also measure `/health` latency while creates arrive at 1,000/s (10 s).
    #[arg(long)]
    health_under_load: bool,
    /// `fallback.order` of the service (the default config's channels).
    #[arg(long, default_value = "console,file")]
    fallback_order: String,
    /// Keep the service's per-request log line on (`monitoring.request_logging`).
    #[arg(long)]
    request_logging: bool,
    /// Folder with `default.toml` (the binary also embeds a copy).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/config"))]
    config_dir: PathBuf,
    /// Keep the temp folder (stores, notification file, service logs) and print its path.
    #[arg(long)]
    keep: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Dropping `run` on Ctrl-C drops the running service's guard, which kills it.
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if args.concurrency == 0 || args.pending == 0 || args.waiters == 0 || args.fanout_rounds == 0 {
        return Err("--concurrency, --pending, --waiters and --fanout-rounds must be > 0".into());
    }
    let binary = std::fs::canonicalize(&args.binary)
        .map_err(|e| format!("binary {}: {e}", args.binary.display()))?;
    raise_fd_limit((args.waiters + args.concurrency + 256) as libc::rlim_t);
    let dir = tempfile::Builder::new()
        .prefix("approval-gate-bench-")
        .tempdir()?;
    if on_tmpfs(dir.path()) {
        eprintln!(
            "warning: {} is on tmpfs, where fsync is free; set TMPDIR to a folder on disk",
            dir.path().display()
        );
    }
    let machine = Machine::read();
    machine.print();
    println!("binary: {}", binary.display());
    println!("work dir: {}", dir.path().display());

    let telegram = (args.telegram != "off").then(|| {
        let fake = support::fake_telegram::FakeTelegram::start();
        if args.telegram == "down" {
            fake.set_down(Some(support::fake_telegram::Fault::DropConnection), false);
        }
        fake
    });
    let mut bench = Bench {
        telegram,
        args: &args,
        binary,
        dir: dir.path().to_path_buf(),
        spawned: 0,
    };
    let report = bench.run_all().await;
    // Also after a failure: the service's own account is usually the explanation.
    println!("{}", log_summary(dir.path()));
    if args.keep {
        println!("kept work dir: {}", dir.keep().display());
    }
    report?.print(&args, &machine);
    Ok(())
}
