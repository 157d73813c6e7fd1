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

#[path = "../tests/support/mod.rs"]
mod support;

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

struct Bench<'a> {
    args: &'a Args,
    /// The fake Bot API, when `--telegram` is up or down.
    telegram: Option<support::fake_telegram::FakeTelegram>,
    binary: PathBuf,
    dir: PathBuf,
    /// Services started so far; names their log files.
    spawned: usize,
}

impl Bench<'_> {
    async fn run_all(&mut self) -> Result<Report> {
        // The throughput phase gets a service of its own: it leaves a notification backlog
        // behind (the file channel fsyncs each one) that would disturb anything measured after
        // it, and a store of however many approvals it managed. The second service holds
        // exactly `--pending` approvals; the fan-out runs on it once its notifications are
        // written, so the waiters are woken in a registry of realistic size on a quiet machine.
        let baseline = match &self.args.baseline {
            Some(path) => Some(self.baseline(path).await?),
            None => None,
        };
        let service = self.spawn(THROUGHPUT)?;
        service.wait_ready(Duration::from_secs(30)).await?;
        let mut creates = self.creates(&service).await?;
        creates.baseline = baseline;
        step("stopping the throughput service (SIGTERM)");
        // Generous: the file channel writes its whole backlog before the process exits.
        match service.stop(Duration::from_secs(300)).await {
            Ok(took) => {
                println!("  exited {} after SIGTERM", ms(took));
                creates.shutdown = Some(took);
            }
            Err(error) => println!("  {error}; killed it"),
        }
        if self.args.health_under_load {
            let service = self.spawn("health")?;
            service.wait_ready(Duration::from_secs(30)).await?;
            step("/health every 10 ms while creates arrive at 1,000/s for 10 s");
            let api = service.api(64);
            let (health, creates) = health_under_load(&api, 1000, Duration::from_secs(10)).await?;
            let health = Percentiles::of(health);
            println!(
                "  /health under {creates} creates in 10 s: p50 {} p99 {} max {} (target p99 < 5 ms)",
                ms(health.p50),
                ms(health.p99),
                ms(health.max)
            );
            if let Err(error) = service.stop(Duration::from_secs(300)).await {
                println!("  {error}; killed it");
            }
        }
        if self.args.rate_limits {
            let service = self.spawn(LIMITED)?;
            service.wait_ready(Duration::from_secs(30)).await?;
            step("the same creates with rate limits on (never refusing)");
            let limited = self.creates(&service).await?;
            if let Err(error) = service.stop(Duration::from_secs(300)).await {
                println!("  {error}; killed it");
            }
            println!(
                "  rate limits off → on: {:.0}/s → {:.0}/s; p50 {} → {}; p99 {} → {}; CPU {:.0} → {:.0} µs/create",
                creates.per_second,
                limited.per_second,
                ms(creates.latency.p50),
                ms(limited.latency.p50),
                ms(creates.latency.p99),
                ms(limited.latency.p99),
                creates.service_cpu.as_secs_f64() * 1e6 / creates.ok.max(1) as f64,
                limited.service_cpu.as_secs_f64() * 1e6 / limited.ok.max(1) as f64,
            );
        }

        let service = self.spawn(PENDING)?;
        service.wait_ready(Duration::from_secs(30)).await?;
        let memory = self.fill(&service).await?;
        let fanout = self.fanout(&service).await?;
        let startup = self.restart(service, &memory.sample_id).await?;
        if self.args.large > 0 {
            self.large(self.args.large).await?;
        }
        Ok(Report {
            creates,
            fanout,
            memory,
            startup,
        })
    }

    /// The file channel's JSON-lines file of the service called `name`.
    fn notifications(&self, name: &str) -> PathBuf {
        self.dir.join(format!("notifications-{name}.jsonl"))
    }

    /// Start the service on the store `store-<name>` (reused if it exists) and a free port.
    fn spawn(&mut self, name: &str) -> Result<Service> {
        self.spawned += 1;
        // Binding port 0 and passing the port on (rather than reading it back from the log)
        // lets the start-up measurement poll from the very moment of spawn.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let max_waiters = self.args.waiters.max(10_000).to_string();
        let request_logging = self.args.request_logging.to_string();
        let store = self.dir.join(format!("store-{name}"));
        let notifications = self.notifications(name);
        let env = BTreeMap::from([
            (
                "APPROVAL_GATE_CONFIG_DIR",
                self.args.config_dir.display().to_string(),
            ),
            ("APPROVAL_GATE__SERVER__BIND", format!("127.0.0.1:{port}")),
            ("APPROVAL_GATE__SERVER__MAX_WAITERS", max_waiters),
            ("APPROVAL_GATE__STORE__PATH", store.display().to_string()),
            (
                "APPROVAL_GATE__FALLBACK__FILE_PATH",
                notifications.display().to_string(),
            ),
            (
                "APPROVAL_GATE__AUTH__AGENT_TOKENS__BENCH",
                AGENT_TOKEN.into(),
            ),
            (
                "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__OPS",
                OPERATOR_TOKEN.into(),
            ),
            (
                "APPROVAL_GATE__FALLBACK__ORDER",
                self.args.fallback_order.clone(),
            ),
            ("APPROVAL_GATE__LOGGING__FORMAT", "json".into()),
            // The bench counts the file's lines: no rotation to a second file.
            ("APPROVAL_GATE__FALLBACK__FILE_MAX_BYTES", "0".into()),
            (
                "APPROVAL_GATE__MONITORING__REQUEST_LOGGING",
                request_logging,
            ),
        ]);
        let mut env = env;
        // Limits off, except on the service that measures them (quotas no load here reaches).
        let (rate, cap) = if name == LIMITED {
            ("1000000", "1000000")
        } else {
            ("0", "0")
        };
        env.extend([
            (
                "APPROVAL_GATE__LIMITS__CREATES_PER_SECOND",
                rate.to_string(),
            ),
            ("APPROVAL_GATE__LIMITS__CREATE_BURST", rate.to_string()),
            (
                "APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT",
                cap.to_string(),
            ),
        ]);
        if name == THROUGHPUT
            && let Some(fake) = &self.telegram
        {
            env.extend([
                ("APPROVAL_GATE__TELEGRAM__ENABLED", "true".to_string()),
                (
                    "APPROVAL_GATE__TELEGRAM__BOT_TOKEN",
                    fake.token().to_string(),
                ),
                ("APPROVAL_GATE__TELEGRAM__API_URL", fake.url()),
                ("APPROVAL_GATE__TELEGRAM__CHAT_ID", "-100500".to_string()),
                (
                    "APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS",
                    "4711".to_string(),
                ),
                // The fake has no per-chat limit; pacing would only measure itself.
                ("APPROVAL_GATE__TELEGRAM__SEND_INTERVAL", "0s".to_string()),
                (
                    "APPROVAL_GATE__TELEGRAM__GROUP_MESSAGES_PER_MINUTE",
                    "0".to_string(),
                ),
                ("APPROVAL_GATE__TELEGRAM__REQUEST_TIMEOUT", "1s".to_string()),
            ]);
        }
        let log = self
            .dir
            .join(format!("service-{}-{name}.log", self.spawned));
        Service::spawn(&self.binary, &env, &log, port)
    }

    /// A store of `n` ended approvals: how long the service takes to be ready on it, and how
    /// fast it lists the pending ones (the status index makes that O(page), not O(history)).
    async fn large(&mut self, n: usize) -> Result<()> {
        use approval_gate_actors::domain::{
            Actor, Approval, ApprovalId, Decision, NewApproval, Outcome,
        };
        use approval_gate_actors::store::{ApprovalStore, Change, SledStore, millis};
        const NAME: &str = "large";
        step(&format!(
            "writing {n} ended approvals and 100 pending ones into a store"
        ));
        let started = Instant::now();
        {
            let store = SledStore::open(&self.dir.join(format!("store-{NAME}")))?;
            let mut ids = ulid::Generator::new();
            let now = millis(chrono::Utc::now().timestamp_millis());
            for i in 0..n + 100 {
                let new = NewApproval {
                    session_id: "bench-large".into(),
                    tool_name: "Bash".into(),
                    tool_input: r#"{"command":"ls -la ./build"}"#.into(),
                    reason: Some("benchmark".into()),
                    agent: None,
                    requested_by: "bench".into(),
                    idempotency_key: None,
                    timeout: Duration::from_secs(7200),
                    max_timeout: None,
                    idempotent_while_pending: false,
                };
                let mut approval = Approval::create(ApprovalId::next(&mut ids), new, now);
                if i < n {
                    let decision = Decision {
                        outcome: Outcome::Approve,
                        actor: Actor::Operator("bench".into()),
                        comment: None,
                    };
                    approval.apply(decision, now).map_err(|_| "cannot decide")?;
                }
                store.apply(&Change {
                    approval: &approval,
                    previous: None,
                    event: None,
                    channels: &[],
                    request_id: None,
                    grant: None,
                    events: &[],
                })?;
                if i % 20_000 == 19_999 {
                    store.commit().wait().await?;
                }
            }
            store.commit().wait().await?;
        }
        println!("  written in {:.1} s", started.elapsed().as_secs_f64());
        let service = self.spawn(NAME)?;
        let ready = service.wait_ready(Duration::from_secs(120)).await?;
        let rss = service.memory()?.rss_kib;
        let api = service.api(1);
        let mut samples = Vec::with_capacity(200);
        for _ in 0..200 {
            let sent = Instant::now();
            let response = api
                .http
                .get(format!(
                    "{}/api/approvals?status=pending&limit=50",
                    api.base
                ))
                .bearer_auth(OPERATOR_TOKEN)
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != StatusCode::OK || !body.starts_with(b"{\"approvals\":[{") {
                return Err(unexpected("list pending", status, &body));
            }
            samples.push(sent.elapsed());
        }
        let list = Percentiles::of(samples);
        println!(
            "  {n} ended + 100 pending: ready after {}, RSS {}; listing pending (50 per page): p50 {} p99 {}",
            ms(ready),
            mib(rss),
            ms(list.p50),
            ms(list.p99)
        );
        // An online backup of the same store, read to the end as a client would.
        let started = Instant::now();
        let response = api
            .http
            .get(format!("{}/api/admin/backup", api.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if status != StatusCode::OK {
            return Err(unexpected("backup", status, &body));
        }
        println!(
            "  online backup of {} approvals: {} in {}",
            n + 100,
            mib(body.len() as u64 / 1024),
            ms(started.elapsed())
        );
        Ok(())
    }

    /// The same create load against the baseline server: the honest durable limit.
    async fn baseline(&self, path: &Path) -> Result<Baseline> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let store = self.dir.join("store-baseline");
        let child = Command::new(path)
            .args([port.to_string(), store.display().to_string()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", path.display()))?;
        let service = Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            spawned_at: Instant::now(),
        };
        let accepting = poll_until(Duration::from_secs(30), || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
        if accepting.is_none() {
            return Err("the baseline server did not start listening".into());
        }
        let args = self.args;
        let api = service.api(args.concurrency);
        step(&format!(
            "baseline (bare sled insert + flush + fdatasync): {:.0} s warm-up, {:.0} s measured",
            args.warmup_seconds, args.creates_seconds
        ));
        create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.warmup_seconds)),
        )
        .await
        .check("baseline warm-up")?;
        let cpu = service.cpu_time()?;
        let load = create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.creates_seconds)),
        )
        .await;
        let cpu = service.cpu_time()?.saturating_sub(cpu);
        load.check("baseline creates")?;
        let baseline = Baseline {
            per_second: load.ok as f64 / load.elapsed.as_secs_f64(),
            cpu_us_per_create: cpu.as_secs_f64() * 1e6 / load.ok.max(1) as f64,
            p99: Percentiles::of(load.latencies).p99,
        };
        println!(
            "  {:.0}/s, p99 {}, {:.0} CPU µs per create",
            baseline.per_second,
            ms(baseline.p99),
            baseline.cpu_us_per_create
        );
        Ok(baseline)
    }

    async fn creates(&self, service: &Service) -> Result<CreatesReport> {
        let args = self.args;
        let api = service.api(args.concurrency);
        step(&format!(
            "warm-up: {:.0} s of creates at concurrency {}",
            args.warmup_seconds, args.concurrency
        ));
        let warmup = create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.warmup_seconds)),
        )
        .await;
        warmup.check("warm-up")?;

        step(&format!(
            "measuring durable creates: {:.0} s at concurrency {}",
            args.creates_seconds, args.concurrency
        ));
        let service_cpu = service.cpu_time()?;
        let threads_before = thread_cpu(service.pid());
        let client_cpu = cpu_time("self")?;
        let machine_cpu = machine_busy()?;
        let load = create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.creates_seconds)),
        )
        .await;
        let service_cpu = service.cpu_time()?.saturating_sub(service_cpu);
        let threads = thread_cpu_since(service.pid(), &threads_before);
        let client_cpu = cpu_time("self")?.saturating_sub(client_cpu);
        // Whatever else ran meanwhile (a build, a test run) skews the figures: show it.
        let other_cpu = machine_busy()?
            .saturating_sub(machine_cpu)
            .saturating_sub(service_cpu + client_cpu);
        load.check("creates")?;
        // The 201 waits for the store only; notifications are sent behind it. How far they lag
        // shows whether the channels keep up with this rate.
        let notified = count_lines(&self.notifications(THROUGHPUT));
        let report = CreatesReport {
            per_second: load.ok as f64 / load.elapsed.as_secs_f64(),
            latency: Percentiles::of(load.latencies),
            ok: load.ok,
            failed: load.failed,
            elapsed: load.elapsed,
            service_cpu,
            client_cpu,
            other_cpu,
            created_total: warmup.ok + load.ok,
            notified,
            shutdown: None,
            baseline: None,
        };
        println!(
            "  {} created in {:.2} s = {:.0}/s, {} failed; latency p50 {} p99 {} max {}",
            report.ok,
            report.elapsed.as_secs_f64(),
            report.per_second,
            report.failed,
            ms(report.latency.p50),
            ms(report.latency.p99),
            ms(report.latency.max),
        );
        println!(
            "  CPU during the run: service {:.2} s ({:.0}% of one core), bench client {:.2} s ({:.0}%), \
             everything else (kernel threads, other processes) {:.2} s ({:.0}%)",
            service_cpu.as_secs_f64(),
            100.0 * service_cpu.as_secs_f64() / report.elapsed.as_secs_f64(),
            client_cpu.as_secs_f64(),
            100.0 * client_cpu.as_secs_f64() / report.elapsed.as_secs_f64(),
            other_cpu.as_secs_f64(),
            100.0 * other_cpu.as_secs_f64() / report.elapsed.as_secs_f64(),
        );
        println!(
            "  service CPU per create by thread: {}",
            by_thread(&threads, report.ok)
        );
        if let Some(fake) = self
            .telegram
            .as_ref()
            .filter(|_| self.args.telegram == "up")
        {
            println!(
                "  the fake Bot API had {} messages of {} approvals when the run ended",
                fake.messages().len(),
                report.created_total
            );
        }
        if let Some(notified) = notified {
            println!(
                "  file channel had written {notified} of {} notifications when the run ended",
                report.created_total
            );
        }
        Ok(report)
    }

    async fn fanout(&self, service: &Service) -> Result<FanoutReport> {
        let n = self.args.waiters;
        // One connection per long poll: HTTP/1.1 holds a connection for the whole wait.
        let api = service.api(n);
        let mut rounds = Vec::with_capacity(self.args.fanout_rounds);
        for round in 1..=self.args.fanout_rounds {
            step(&format!(
                "fan-out round {round}: {n} long polls on one approval, then the decision"
            ));
            let result = fanout_round(&api, n).await?;
            println!(
                "  all {n} returned {} after the decision (p50 {}, p90 {}, p99 {}; decision POST answered in {}); waiters registered in {}",
                ms(result.returns.max),
                ms(result.returns.p50),
                ms(result.returns.p90),
                ms(result.returns.p99),
                ms(result.decision),
                ms(result.registering),
            );
            rounds.push(result);
        }
        // Median by the figure the target is about: the time until the last poll returned.
        rounds.sort_by_key(|r| r.returns.max);
        let all_max = rounds.iter().map(|r| r.returns.max).collect();
        let median = rounds.swap_remove(rounds.len() / 2);
        Ok(FanoutReport {
            median,
            all_max,
            waiters: n,
        })
    }

    /// Create `--pending` approvals on a fresh store, then read the service's memory.
    async fn fill(&self, service: &Service) -> Result<MemoryReport> {
        let n = self.args.pending;
        step(&format!(
            "creating {n} pending approvals (timeout 2h) at concurrency {}",
            self.args.concurrency
        ));
        let api = service.api(self.args.concurrency);
        let load = create_load(&api, self.args.concurrency, Stop::Count(n)).await;
        load.check("filling the store")?;
        println!(
            "  {} created in {:.1} s = {:.0}/s, {} failed",
            load.ok,
            load.elapsed.as_secs_f64(),
            load.ok as f64 / load.elapsed.as_secs_f64(),
            load.failed
        );
        let sample_id = load
            .last_id
            .ok_or("no approval was created while filling the store")?;
        let loaded = Instant::now();
        let with_backlog = service.memory()?;
        println!(
            "  RSS right after the creates {} (notifications still queued: {})",
            mib(with_backlog.rss_kib),
            count_lines(&self.notifications(PENDING)).map_or_else(
                || "unknown".into(),
                |n| (load.ok.saturating_sub(n)).to_string()
            ),
        );

        // The figure is about holding the approvals, so measure once the notification
        // backlog (one per create, fsynced one by one by the file channel) is written.
        step("waiting for the notification channels to catch up");
        let file = self.notifications(PENDING);
        let file_channel = self
            .args
            .fallback_order
            .split(',')
            .any(|channel| channel.trim() == "file");
        let drain_deadline = Duration::from_secs(300);
        let drained = loop {
            if !file_channel {
                break None;
            }
            if count_lines(&file).unwrap_or(0) >= load.ok {
                break Some(loaded.elapsed());
            }
            if loaded.elapsed() > drain_deadline {
                break None;
            }
            // Counting re-reads a file of tens of MB; no need to do it often.
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        match drained {
            Some(took) => println!("  all written {} after the last create", ms(took)),
            None if file_channel => {
                println!("  still not all written after {drain_deadline:?}; measuring anyway");
            }
            None => println!("  the file channel is off; nothing to wait for"),
        }
        // Let allocator and sled caches settle before reading the figure.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pending = api
            .metric("approval_gate_pending_approvals")
            .await?
            .unwrap_or(f64::NAN);
        let memory = service.memory()?;
        let store_bytes = dir_size(&self.dir.join(format!("store-{PENDING}")));
        println!(
            "  pending gauge {pending}; RSS {} (peak {}); store on disk {:.0} MiB",
            mib(memory.rss_kib),
            mib(memory.peak_kib),
            store_bytes as f64 / (1024.0 * 1024.0),
        );
        Ok(MemoryReport {
            created: load.ok,
            fill_rate: load.ok as f64 / load.elapsed.as_secs_f64(),
            pending,
            with_backlog,
            drained,
            memory,
            store_bytes,
            sample_id,
        })
    }

    /// SIGTERM the filled service, start it again on the same store and time it.
    async fn restart(&mut self, service: Service, sample_id: &str) -> Result<StartupReport> {
        step("stopping the service (SIGTERM)");
        let shutdown = service.stop(Duration::from_secs(300)).await?;
        println!("  exited {} after SIGTERM", ms(shutdown));

        step(&format!(
            "restarting on the store with {} pending approvals",
            self.args.pending
        ));
        let service = self.spawn(PENDING)?;
        let spawned = service.spawned_at;
        let api = service.api(4);
        let deadline = Duration::from_secs(60);
        // Both poll from the moment of spawn: a ready probe and a real read are different
        // promises, and either could come first.
        let (ready, first_get) = tokio::join!(
            poll_until(deadline, || async {
                api.ready().await.unwrap_or(false).then_some(())
            }),
            poll_until(deadline, || async { api.get(sample_id).await.ok() }),
        );
        let ready = ready.ok_or("the restarted service never reported ready")?;
        let (first_get, status) = first_get.ok_or("the restarted service never served a GET")?;
        let ready = ready.0.duration_since(spawned);
        let first_get = first_get.duration_since(spawned);
        if status != "pending" {
            return Err(format!("approval {sample_id} came back {status:?}, not pending").into());
        }
        let memory_at_ready = service.memory()?;
        let pending = api
            .metric("approval_gate_pending_approvals")
            .await?
            .unwrap_or(f64::NAN);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let memory_settled = service.memory()?;
        println!(
            "  ready after {}, first GET after {}; pending gauge {pending}; RSS {} at ready, {} a second later (peak {})",
            ms(ready),
            ms(first_get),
            mib(memory_at_ready.rss_kib),
            mib(memory_settled.rss_kib),
            mib(memory_settled.peak_kib),
        );
        if let Err(error) = service.stop(Duration::from_secs(300)).await {
            println!("  {error}; killed it");
        }
        Ok(StartupReport {
            shutdown,
            ready,
            first_get,
            pending,
            memory: memory_settled,
        })
    }
}

fn step(what: &str) {
    println!("==> {what}");
}

// ---------------------------------------------------------------------------------------------
// The service as a child process.

/// The running service. Dropping it kills the process, so no exit path (error, panic, Ctrl-C)
/// leaves it behind.
struct Service {
    child: Child,
    base: String,
    spawned_at: Instant,
}

impl Service {
    fn spawn(binary: &Path, env: &BTreeMap<&str, String>, log: &Path, port: u16) -> Result<Self> {
        let stdout = File::create(log).map_err(|e| format!("log file {}: {e}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let spawned_at = Instant::now();
        let child = Command::new(binary)
            .arg("serve")
            // Only what we set: a stray RUST_LOG or APPROVAL_GATE__* would change the figures.
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            spawned_at,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for this service with room for `connections` keep-alive connections.
    fn api(&self, connections: usize) -> Api {
        let http = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(connections)
            // Longer than any long poll the bench opens, short enough to end a hung run.
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("the reqwest client configuration is valid");
        Api {
            base: self.base.clone(),
            http,
        }
    }

    async fn wait_ready(&self, deadline: Duration) -> Result<Duration> {
        let api = self.api(1);
        poll_until(deadline, || async {
            api.ready().await.unwrap_or(false).then_some(())
        })
        .await
        .map(|(at, ())| at.duration_since(self.spawned_at))
        .ok_or_else(|| format!("service not ready within {deadline:?}").into())
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGTERM, then wait for the exit (the graceful path flushes the store); returns how long
    /// the exit took.
    async fn stop(mut self, deadline: Duration) -> Result<Duration> {
        let pid = libc::pid_t::try_from(self.pid())?;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet (`self` owns it).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!("SIGTERM: {}", std::io::Error::last_os_error()).into());
        }
        let sent = Instant::now();
        while sent.elapsed() < deadline {
            if let Some(status) = self.exited()? {
                if !status.success() {
                    return Err(format!("service exited with {status} after SIGTERM").into());
                }
                return Ok(sent.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(format!("service still running {deadline:?} after SIGTERM").into())
    }

    fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().strip_suffix(" kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("{name} missing from {path}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    fn cpu_time(&self) -> Result<Duration> {
        cpu_time(&self.pid().to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time all processes together have used since boot (the busy columns of `/proc/stat`).
fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let columns: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = columns[..] else {
        return Err("cannot parse /proc/stat".into());
    };
    Ok(ticks_to_duration(
        user + nice + system + irq + softirq + steal,
    ))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// User plus system CPU time of `/proc/<pid>` (`self` for this process).
fn cpu_time(pid: &str) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may contain spaces; fields are counted after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the `)`.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(format!("cannot parse {path}").into());
    };
    Ok(ticks_to_duration(user + system))
}

/// CPU time per thread group of `pid`: threads named alike (`ag-http` ×2, `sled-io-0..6`)
/// are summed under one name, so the figures say which job the service's CPU went to.
fn thread_cpu(pid: u32) -> BTreeMap<String, (usize, Duration)> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let name = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        if let Ok(cpu) = cpu_time(&format!("{pid}/task/{tid}")) {
            let entry = groups
                .entry(name.to_string())
                .or_insert((0, Duration::ZERO));
            entry.0 += 1;
            entry.1 += cpu;
        }
    }
    groups
}

fn thread_cpu_since(
    pid: u32,
    before: &BTreeMap<String, (usize, Duration)>,
) -> Vec<(String, usize, Duration)> {
    let mut used: Vec<_> = thread_cpu(pid)
        .into_iter()
        .map(|(name, (threads, cpu))| {
            let earlier = before.get(&name).map_or(Duration::ZERO, |(_, cpu)| *cpu);
            (name, threads, cpu.saturating_sub(earlier))
        })
        .filter(|(_, _, cpu)| !cpu.is_zero())
        .collect();
    used.sort_by_key(|(_, _, cpu)| std::cmp::Reverse(*cpu));
    used
}

/// "sled-group-comm 38 µs, ag-http ×2 29 µs, …": CPU µs per create of each thread group.
fn by_thread(threads: &[(String, usize, Duration)], creates: usize) -> String {
    threads
        .iter()
        .map(|(name, count, cpu)| {
            let per = cpu.as_secs_f64() * 1e6 / creates.max(1) as f64;
            if *count > 1 {
                format!("{name} ×{count} {per:.0} µs")
            } else {
                format!("{name} {per:.0} µs")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1,000 long polls need 1,000 sockets in both processes (the child inherits the limit).
fn raise_fd_limit(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the local struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0
        || limit.rlim_cur >= wanted
    {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the local struct it is given.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } == 0;
    if !raised || limit.rlim_max < wanted {
        eprintln!(
            "warning: open-file limit {} is below the {wanted} sockets this run needs",
            limit.rlim_max
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The API client.

#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ApprovalBody {
    id: String,
    status: String,
}

impl Api {
    /// Create one approval; `Ok` only for 201 (durable), with its id.
    async fn create(&self) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/api/approvals", self.base))
            .bearer_auth(AGENT_TOKEN)
            .header(CONTENT_TYPE, "application/json")
            .body(CREATE_BODY)
            .send()
            .await?;
        let approval = expect_json(response, StatusCode::CREATED, "create").await?;
        Ok(approval.id)
    }

    /// Read an approval, without waiting; returns its status.
    async fn get(&self, id: &str) -> Result<String> {
        let response = self
            .http
            .get(format!("{}/api/approvals/{id}", self.base))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await?;
        Ok(expect_json(response, StatusCode::OK, "get").await?.status)
    }

    /// Long poll until the approval is decided; returns when the whole body had arrived, and
    /// the status it carried.
    async fn long_poll(&self, id: &str) -> Result<(Instant, String)> {
        let response = self
            .http
            .get(format!("{}/api/approvals/{id}?wait=60s", self.base))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let done = Instant::now();
        if status != StatusCode::OK {
            return Err(unexpected("long poll", status, &body));
        }
        // The body may start with heartbeat spaces; serde_json skips leading whitespace.
        let approval: ApprovalBody = serde_json::from_slice(&body)?;
        Ok((done, approval.status))
    }

    async fn decide(&self, id: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/api/approvals/{id}/decision", self.base))
            .bearer_auth(OPERATOR_TOKEN)
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"decision":"approve","comment":"benchmark"}"#)
            .send()
            .await?;
        expect_json(response, StatusCode::OK, "decision").await?;
        Ok(())
    }

    async fn ready(&self) -> Result<bool> {
        let response = self
            .http
            .get(format!("{}/health/ready", self.base))
            // A listener bound before the server runs accepts and then says nothing; a short
            // timeout keeps polling instead of hanging on that.
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        Ok(response.status() == StatusCode::OK)
    }

    /// The value of one unlabelled sample from `/metrics`.
    async fn metric(&self, name: &str) -> Result<Option<f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        }))
    }
}

async fn expect_json(
    response: reqwest::Response,
    expected: StatusCode,
    what: &str,
) -> Result<ApprovalBody> {
    let status = response.status();
    let body = response.bytes().await?;
    if status != expected {
        return Err(unexpected(what, status, &body));
    }
    Ok(serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{what}: unexpected body ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?)
}

fn unexpected(what: &str, status: StatusCode, body: &[u8]) -> BoxError {
    format!(
        "{what} answered {status}: {}",
        String::from_utf8_lossy(body)
    )
    .into()
}

/// Call `check` every few milliseconds until it returns `Some` (with the instant it did) or
/// `deadline` passes.
async fn poll_until<T, F, Fut>(deadline: Duration, mut check: F) -> Option<(Instant, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < deadline {
        if let Some(value) = check().await {
            return Some((Instant::now(), value));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Workloads.

#[derive(Clone, Copy)]
enum Stop {
    After(Duration),
    Count(usize),
}

#[derive(Default)]
struct Load {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// The id of the last approval a worker created, to read back after a restart.
    last_id: Option<String>,
}

impl Load {
    /// Any failure invalidates a durability benchmark: report it rather than a flattering rate.
    fn check(&self, phase: &str) -> Result<()> {
        match &self.first_error {
            Some(error) => Err(format!(
                "{phase}: {} of {} creates failed; first error: {error}",
                self.failed,
                self.ok + self.failed
            )
            .into()),
            None if self.ok == 0 => Err(format!("{phase}: no create succeeded").into()),
            None => Ok(()),
        }
    }
}

/// `concurrency` workers each send one create at a time, back to back, on their own keep-alive
/// connection, until `stop`.
/// Creates paced at `per_second` (each on its own task, so a slow one does not hold the pace)
/// while `/health` is sampled every 10 ms; returns the health latencies and the creates done.
async fn health_under_load(
    api: &Api,
    per_second: u64,
    duration: Duration,
) -> Result<(Vec<Duration>, usize)> {
    let started = Instant::now();
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            while started.elapsed() < duration {
                ticker.tick().await;
                let api = api.clone();
                tasks.push(tokio::spawn(async move { api.create().await.is_ok() }));
            }
            let mut ok = 0;
            for task in tasks {
                ok += usize::from(task.await.unwrap_or(false));
            }
            ok
        })
    };
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        let sent = Instant::now();
        let response = api.http.get(format!("{}/health", api.base)).send().await?;
        let _ = response.bytes().await?;
        samples.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let creates = creator.await.unwrap_or(0);
    Ok((samples, creates))
}

async fn create_load(api: &Api, concurrency: usize, stop: Stop) -> Load {
    let started = Instant::now();
    let claimed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let api = api.clone();
            let claimed = Arc::clone(&claimed);
            tokio::spawn(async move {
                let mut load = Load::default();
                let mut failures_in_a_row = 0;
                loop {
                    let more = match stop {
                        Stop::After(duration) => started.elapsed() < duration,
                        Stop::Count(n) => claimed.fetch_add(1, Ordering::Relaxed) < n,
                    };
                    if !more || failures_in_a_row >= MAX_CONSECUTIVE_FAILURES {
                        break;
                    }
                    let sent = Instant::now();
                    match api.create().await {
                        Ok(id) => {
                            load.latencies.push(sent.elapsed());
                            load.ok += 1;
                            load.last_id = Some(id);
                            failures_in_a_row = 0;
                        }
                        Err(error) => {
                            load.failed += 1;
                            load.first_error.get_or_insert_with(|| error.to_string());
                            failures_in_a_row += 1;
                        }
                    }
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for worker in workers {
        let load = worker.await.unwrap_or_else(|e| Load {
            failed: 1,
            first_error: Some(format!("load worker panicked: {e}")),
            ..Load::default()
        });
        total.ok += load.ok;
        total.failed += load.failed;
        total.latencies.extend(load.latencies);
        if total.first_error.is_none() {
            total.first_error = load.first_error;
        }
        total.last_id = load.last_id.or(total.last_id);
    }
    // Until the last in-flight request came back, so the rate counts only finished work.
    total.elapsed = started.elapsed();
    total
}

struct FanoutRound {
    /// Decision sent → each long poll's body fully received.
    returns: Percentiles,
    /// Decision sent → its own 200.
    decision: Duration,
    /// Long polls opened → the waiter gauge showed all of them.
    registering: Duration,
}

async fn fanout_round(api: &Api, n: usize) -> Result<FanoutRound> {
    let id = api.create().await?;
    let baseline = api.metric("approval_gate_waiters").await?.unwrap_or(0.0);
    let opened = Instant::now();
    let polls: Vec<_> = (0..n)
        .map(|_| {
            let api = api.clone();
            let id = id.clone();
            tokio::spawn(async move { api.long_poll(&id).await })
        })
        .collect();
    // Decide only once every poll is parked in the registry, or some would just read the
    // decided record and flatter the figure.
    let target = baseline + n as f64;
    let registered = poll_until(Duration::from_secs(30), || async {
        let waiters = api.metric("approval_gate_waiters").await.ok()??;
        (waiters >= target).then_some(())
    })
    .await;
    if registered.is_none() {
        for poll in &polls {
            poll.abort();
        }
        return Err(format!("the waiter gauge did not reach {target} within 30 s").into());
    }
    let registering = opened.elapsed();

    let decided = Instant::now();
    api.decide(&id).await?;
    let decision = decided.elapsed();
    let mut returns = Vec::with_capacity(n);
    for poll in polls {
        let (done, status) = poll.await??;
        if status != "approved" {
            return Err(format!("a long poll returned {status:?}, not approved").into());
        }
        returns.push(done.saturating_duration_since(decided));
    }
    Ok(FanoutRound {
        returns: Percentiles::of(returns),
        decision,
        registering,
    })
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least p of all samples at or below it.
        let at = |p: f64| {
            let rank = (p * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Copy)]
struct Memory {
    rss_kib: u64,
    peak_kib: u64,
}

struct CreatesReport {
    per_second: f64,
    latency: Percentiles,
    ok: usize,
    failed: usize,
    elapsed: Duration,
    service_cpu: Duration,
    client_cpu: Duration,
    /// Used by everything else on the machine during the run: kernel threads (journal, I/O),
    /// other processes.
    other_cpu: Duration,
    /// Including the warm-up.
    created_total: usize,
    /// Lines in the file channel's file when the measured run ended.
    notified: Option<usize>,
    /// SIGTERM → exit of the throughput service, if it exited in time.
    shutdown: Option<Duration>,
    /// The baseline server measured in the same run, if one was given.
    baseline: Option<Baseline>,
}

struct Baseline {
    per_second: f64,
    cpu_us_per_create: f64,
    p99: Duration,
}

struct FanoutReport {
    median: FanoutRound,
    all_max: Vec<Duration>,
    waiters: usize,
}

struct MemoryReport {
    created: usize,
    fill_rate: f64,
    pending: f64,
    /// Right after the last create, notifications still queued.
    with_backlog: Memory,
    /// Last create → every notification written to the file channel.
    drained: Option<Duration>,
    memory: Memory,
    store_bytes: u64,
    sample_id: String,
}

struct StartupReport {
    shutdown: Duration,
    ready: Duration,
    first_get: Duration,
    pending: f64,
    memory: Memory,
}

struct Report {
    creates: CreatesReport,
    fanout: FanoutReport,
    memory: MemoryReport,
    startup: StartupReport,
}

impl Report {
    fn print(&self, args: &Args, machine: &Machine) {
        let Self {
            creates,
            fanout,
            memory,
            startup,
        } = self;
        let c = args.concurrency;
        let n = args.pending;
        let mut rows: Vec<(String, String, String, Option<bool>)> = vec![
            (
                format!("durable creates/s (concurrency {c})"),
                format!("{:.0}/s", creates.per_second),
                "≥ 5000/s".into(),
                Some(creates.per_second >= 5000.0),
            ),
            (
                "  create latency p50".into(),
                ms(creates.latency.p50),
                String::new(),
                None,
            ),
            (
                "  create latency p99".into(),
                ms(creates.latency.p99),
                "< 10 ms".into(),
                Some(creates.latency.p99 < Duration::from_millis(10)),
            ),
            (
                format!("decision → all {} long polls returned", fanout.waiters),
                ms(fanout.median.returns.max),
                "< 50 ms".into(),
                Some(fanout.median.returns.max < Duration::from_millis(50)),
            ),
            (
                "  per-poll return p50".into(),
                ms(fanout.median.returns.p50),
                String::new(),
                None,
            ),
            (
                format!("RSS with {n} pending"),
                mib(memory.memory.rss_kib),
                "< 300 MB".into(),
                Some(memory.memory.rss_kib * 1024 < RSS_TARGET_BYTES),
            ),
            (
                "  RSS before their notifications were written".into(),
                mib(memory.with_backlog.rss_kib),
                "< 300 MB".into(),
                Some(memory.with_backlog.rss_kib * 1024 < RSS_TARGET_BYTES),
            ),
            (
                format!("start-up to /health/ready ({n} pending)"),
                ms(startup.ready),
                "< 3 s".into(),
                Some(startup.ready < Duration::from_secs(3)),
            ),
            (
                "start-up to first GET of a stored approval".into(),
                ms(startup.first_get),
                "< 3 s".into(),
                Some(startup.first_get < Duration::from_secs(3)),
            ),
            (
                "  RSS after restart".into(),
                mib(startup.memory.rss_kib),
                String::new(),
                None,
            ),
        ];
        // Against the baseline measured in the same run (rows 3.. follow the create latency).
        if let Some(b) = &creates.baseline {
            let ratio = creates.per_second / b.per_second;
            let service_us = creates.service_cpu.as_secs_f64() * 1e6 / creates.ok.max(1) as f64;
            let baseline_rows = [
                (
                    "baseline: bare sled + fdatasync creates/s".to_string(),
                    format!("{:.0}/s", b.per_second),
                    String::new(),
                    None,
                ),
                (
                    "  service ÷ baseline".into(),
                    format!("{ratio:.2}×"),
                    "≥ 0.7×".into(),
                    Some(ratio >= 0.7),
                ),
                (
                    "  CPU µs per create: service / baseline".into(),
                    format!("{service_us:.0} / {:.0}", b.cpu_us_per_create),
                    String::new(),
                    None,
                ),
                (
                    "  baseline create p99".into(),
                    ms(b.p99),
                    String::new(),
                    None,
                ),
            ];
            rows.splice(3..3, baseline_rows);
        }

        println!();
        println!("details");
        println!(
            "  creates: {} in {:.2} s, {} failed, max latency {}; CPU: service {:.1} s, bench client {:.1} s, \
             everything else {:.1} s",
            creates.ok,
            creates.elapsed.as_secs_f64(),
            creates.failed,
            ms(creates.latency.max),
            creates.service_cpu.as_secs_f64(),
            creates.client_cpu.as_secs_f64(),
            creates.other_cpu.as_secs_f64(),
        );
        println!(
            "  creates: file channel had written {} of {} notifications when the run ended; SIGTERM → exit took {}",
            creates
                .notified
                .map_or_else(|| "?".into(), |n| n.to_string()),
            creates.created_total,
            creates
                .shutdown
                .map_or_else(|| "too long (killed)".into(), ms),
        );
        let rounds: Vec<String> = fanout.all_max.iter().map(|d| ms(*d)).collect();
        println!(
            "  fan-out: last poll returned after [{}] in the {} rounds (median shown); decision POST {} in the median round",
            rounds.join(", "),
            rounds.len(),
            ms(fanout.median.decision),
        );
        println!(
            "  pending store: {} created at {:.0}/s, notifications all written {} after the last create; \
             pending gauge {} before and {} after the restart; {:.0} MiB on disk",
            memory.created,
            memory.fill_rate,
            memory
                .drained
                .map_or_else(|| "(never / file channel off)".into(), ms),
            memory.pending,
            startup.pending,
            memory.store_bytes as f64 / (1024.0 * 1024.0),
        );
        println!(
            "  RSS peak: {} while filling, {} after the restart; SIGTERM → exit {}",
            mib(memory.memory.peak_kib),
            mib(startup.memory.peak_kib),
            ms(startup.shutdown),
        );

        println!();
        println!(
            "{:<46} {:>12}  {:<10} result",
            "figure", "measured", "target"
        );
        println!("{}", "-".repeat(80));
        for (figure, measured, target, met) in rows {
            let result = match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            println!("{figure:<46} {measured:>12}  {target:<10} {result}");
        }
        println!("{}", "-".repeat(80));
        println!(
            "machine: {} CPUs ({}), {} RAM, kernel {}; load average before {}, after {}",
            machine.cpus,
            machine.cpu_model,
            mib(machine.mem_total_kib),
            machine.kernel,
            machine.load_before,
            read_trimmed("/proc/loadavg"),
        );
        println!(
            "The bench client (tokio, 2 worker threads) runs on the same CPUs as the service, \
             so every figure includes its cost. Memory is shown in MiB; the 300 MB target is \
             checked as 300,000,000 bytes (286.1 MiB)."
        );
    }
}

struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_total_kib: u64,
    kernel: String,
    load_before: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map_or_else(|| "unknown model".into(), |(_, m)| m.trim().to_string()),
            mem_total_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix(" kB"))
                .and_then(|kib| kib.trim().parse().ok())
                .unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_before: read_trimmed("/proc/loadavg"),
        }
    }

    fn print(&self) {
        println!(
            "machine: {} CPUs ({}), {} RAM, kernel {}",
            self.cpus,
            self.cpu_model,
            mib(self.mem_total_kib),
            self.kernel
        );
        println!("load average: {}", self.load_before);
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Errors and warnings the services logged, apart from the console channel's one WARN line per
/// notification, which is its job.
fn log_summary(dir: &Path) -> String {
    let mut errors = 0;
    let mut warnings = 0;
    let mut examples = Vec::new();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let level = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .map(|v| {
                    let level = v["level"].as_str().unwrap_or("").to_string();
                    let console = v["target"].as_str().unwrap_or("").contains("console");
                    (level, console)
                });
            match level {
                Some((level, _)) if level == "ERROR" => errors += 1,
                Some((level, false)) if level == "WARN" => warnings += 1,
                Some(_) => continue,
                // Not a JSON log line: a panic message or similar, always worth showing.
                None => errors += 1,
            }
            if examples.len() < 5 {
                examples.push(format!("    {line}"));
            }
        }
    }
    let mut summary = format!(
        "service logs: {errors} error and {warnings} warning lines (besides console notifications) in {} files",
        logs.len()
    );
    for example in examples {
        summary.push('\n');
        summary.push_str(&example);
    }
    summary
}

fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs reads a valid C string and writes the zeroed local struct it is given.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &raw mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
    }
}

/// Lines in a file, or `None` if it cannot be read (e.g. the file channel is off).
fn count_lines(path: &Path) -> Option<usize> {
    let bytes = std::fs::read(path).ok()?;
    Some(bytes.iter().filter(|&&b| b == b'\n').count())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn ms(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1000.0;
    if millis < 10.0 {
        format!("{millis:.2} ms")
    } else {
        format!("{millis:.1} ms")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
