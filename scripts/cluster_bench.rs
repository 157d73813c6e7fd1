//! `scripts/bench-cluster`: the PostgreSQL backend's figures (issue 23), each measured in one
//! run against a baseline measured in the same run, never asserted.
//!
//! 1. Durable creates/s of one instance on PostgreSQL against `pg-baseline-server` (bare
//!    actix-web and one INSERT per request through the same client crates).
//! 2. Three instances on one database: total creates/s and p99 (load spread over them).
//! 3. A decision on instance A until a long poll on instance B returns: p50 and p99.
//! 4. With `--large`: 100,000 pending and 1,000,000 decided approvals in the database: an
//!    instance's time to ready, its RSS once ready, and the time to list pending approvals.
//! 5. With `--host-cores C`: one and three instances again, each confined to C cores (a
//!    cgroup quota, [`host`]), as on hosts of their own with only the database shared.
//! 6. With `--backlog`: what three idle instances cost the database while notifications they
//!    cannot deliver wait in the shared queues (each instance counts the queues for metrics).
//!
//! Phases 1 and 2 also report CPU per create (by thread, and PostgreSQL's), what the
//! database's backends waited on, and the server's WAL flushes per second with the creates
//! per flush: where three instances spend what one does not.
//!
//! Every phase gets a database of its own on the admin URL's server, dropped afterwards.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use approval_gate_actors::domain::{Actor, Approval, ApprovalId, Decision, NewApproval, Outcome};
use clap::Parser;
use tokio_postgres::NoTls;

#[path = "cluster_bench/host.rs"]
mod host;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(
    about = "The PostgreSQL backend's figures: creates/s against a bare INSERT, three instances, cross-instance wake-ups, a large store"
)]
struct Args {
    #[arg(long, default_value = "target/release/approval-gate")]
    binary: String,
    #[arg(long, default_value = "target/release/examples/pg-baseline-server")]
    baseline: String,
    /// A server where databases may be created and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    admin_url: String,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Rounds of decision-on-A, long-poll-on-B.
    #[arg(long, default_value_t = 300)]
    rounds: usize,
    /// Also measure an instance over 100k pending + 1M decided approvals (seeding takes minutes).
    #[arg(long)]
    large: bool,
    /// Only the baseline and one instance (with its CPU per thread): for profiling.
    #[arg(long)]
    one_only: bool,
    /// Also measure what three idle instances cost the database with a backlog of notifications
    /// they cannot deliver (an email channel whose server refuses connections).
    #[arg(long)]
    backlog: bool,
    /// Also measure one and three instances each confined to this many cores (a cgroup CPU
    /// quota; needs root), as if each ran on a host of its own with only the database shared.
    #[arg(long)]
    host_cores: Option<f64>,
}

/// CPU ticks (user + system) of every process on this machine named `comm` (PostgreSQL's
/// backends are processes of their own).
fn process_cpu(comm: &str) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
        .filter_map(|stat| {
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            (&stat[open + 1..close] == comm).then(|| {
                let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
                let tick = |i: usize| fields.get(i).and_then(|t| t.parse::<u64>().ok());
                tick(11).unwrap_or(0) + tick(12).unwrap_or(0)
            })
        })
        .sum()
}

/// Microseconds of CPU per create from a tick count over a load phase (100 ticks a second;
/// warm-up included in the time, as in the creates' count).
fn us_per_create(ticks: u64, rate: f64, seconds: f64) -> f64 {
    ticks as f64 * 10_000.0 / (rate * (seconds + 1.0)).max(1.0)
}

/// Each thread's CPU per create between two [`thread_cpu`] readings, for one line.
fn by_thread(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    rate: f64,
    seconds: f64,
) -> String {
    after
        .iter()
        .map(|(name, after)| {
            let ticks = after.saturating_sub(before.get(name).copied().unwrap_or(0));
            format!("{name} {:.0} us", us_per_create(ticks, rate, seconds))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU time per thread name of process `pid` (utime + stime, clock ticks), from /proc.
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        *out.entry(name).or_insert(0) += ticks;
    }
    out
}

const BODY: &str = r#"{"session_id":"bench","tool_name":"Bash","tool_input":{"command":"cargo test --workspace"},"reason":"run the tests","timeout":"2h"}"#;

/// What the database's active backends were waiting on while the instances created, sampled
/// from `pg_stat_activity` every 20 ms: contention between instances would show as lock waits.
async fn sample_waits(url: String, stop: Arc<AtomicBool>) -> Result<Waits> {
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    let started = Instant::now();
    let flushes = async || -> Result<i64> {
        Ok(client
            .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
            .await?
            .get(0))
    };
    let flushes_before = flushes().await?;
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    let mut active = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let rows = client
            .query(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'none (on CPU)') FROM pg_stat_activity
                 WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .await?;
        for row in rows {
            active += 1;
            *counts.entry(row.get(0)).or_insert(0) += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shares: Vec<String> = counts
        .iter()
        .map(|(what, n)| format!("{what} {:.0}%", *n as f64 * 100.0 / active.max(1) as f64))
        .collect();
    let flushes = flushes().await? - flushes_before;
    Ok(Waits {
        waits: format!(
            "active backends sampled: {active}; waiting on: {}",
            shares.join(", ")
        ),
        flushes_per_second: flushes as f64 / started.elapsed().as_secs_f64(),
    })
}

/// What [`sample_waits`] saw: the waits, and the WAL flushes (`pg_stat_wal.wal_sync`, the
/// whole server's) per second over the same time.
struct Waits {
    waits: String,
    flushes_per_second: f64,
}

impl Waits {
    /// Both, for the report, with the creates per WAL flush at `rate` creates/s.
    fn report(&self, rate: f64) -> String {
        format!(
            "{}\n  WAL flushes: {:.0}/s, {:.1} creates per flush",
            self.waits,
            self.flushes_per_second,
            rate / self.flushes_per_second.max(1.0)
        )
    }
}

struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin: &str, tag: &str) -> Result<Database> {
        let name = format!(
            "bench_{tag}_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let (client, connection) = tokio_postgres::connect(admin, NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let config: tokio_postgres::Config = admin.parse()?;
        let mut parts = vec![format!("dbname={name}")];
        if let Some(user) = config.get_user() {
            parts.push(format!("user={user}"));
        }
        for host in config.get_hosts() {
            if let tokio_postgres::config::Host::Tcp(host) = host {
                parts.push(format!("host={host}"));
            }
        }
        if let Some(port) = config.get_ports().first() {
            parts.push(format!("port={port}"));
        }
        Ok(Database {
            admin: admin.to_string(),
            name,
            url: parts.join(" "),
        })
    }

    async fn drop_it(self) {
        if let Ok((client, connection)) = tokio_postgres::connect(&self.admin, NoTls).await {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process, killed when dropped; then the cgroup it was confined to (if any) is
/// removed, which needs the process gone.
struct Process(Child, Option<host::Host>);

impl Process {
    /// The same process confined to `host` (its CPU quota) from now on.
    fn confined(mut self, host: host::Host) -> Result<Process> {
        host.adopt(self.0.id())?;
        self.1 = Some(host);
        Ok(self)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An approval-gate instance on `db`, listening on `port`, with the shipped defaults otherwise.
fn instance(
    binary: &str,
    db: &Database,
    port: u16,
    name: &str,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> Result<Process> {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder)?;
    let child = Command::new(binary)
        .arg("serve")
        .env(
            "APPROVAL_GATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("APPROVAL_GATE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("APPROVAL_GATE__STORE__PATH", &folder)
        .env("APPROVAL_GATE__STORE__BACKEND", "postgres")
        .env("APPROVAL_GATE__STORE__POSTGRES__URL", &db.url)
        .env("APPROVAL_GATE__STORE__POSTGRES__INSTANCE", name)
        .env("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "1000000")
        .env("APPROVAL_GATE__LIMITS__CREATE_BURST", "1000000")
        .env("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0")
        .env("APPROVAL_GATE__LIMITS__DECISIONS_PER_SECOND", "1000000")
        .env("APPROVAL_GATE__LIMITS__DECISION_BURST", "1000000")
        .env("APPROVAL_GATE__LOGGING__LEVEL", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Process(child, None))
}

async fn wait_ready(client: &reqwest::Client, base: &str, deadline: Duration) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if let Ok(response) = client.get(format!("{base}/health/ready")).send().await
            && response.status().is_success()
        {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("{base} not ready within {deadline:?}").into())
}

/// `connections` clients creating as fast as they can for `seconds` against `bases` (spread
/// round-robin): creates/s and latency percentiles (ms).
async fn create_load(
    bases: &[String],
    connections: usize,
    seconds: f64,
) -> Result<(f64, f64, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    // Warm-up: connections opened, statements prepared.
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (client, url, stop) = (
            client.clone(),
            format!("{}/api/approvals", bases[i % bases.len()]),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await
                    .map(|r| r.status() == reqwest::StatusCode::CREATED)
                    .unwrap_or(false);
                if Instant::now() > warm_until {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1) + Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, failed) = task.await?;
        all.extend(latencies);
        errors += failed;
    }
    if errors > 0 {
        eprintln!("  ({errors} creates failed)");
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok((all.len() as f64 / seconds, pct(0.5), pct(0.99)))
}

/// Decision on `a`, long poll on `b`: ms from sending the decision until the poll returned.
async fn wake_latency(a: &str, b: &str, rounds: usize) -> Result<(f64, f64, f64)> {
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let created: serde_json::Value = client
            .post(format!("{a}/api/approvals"))
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await?
            .json()
            .await?;
        let id = created["id"].as_str().ok_or("no id")?.to_string();
        let poll = client
            .get(format!("{b}/api/approvals/{id}?wait=30s"))
            .send();
        let poll = tokio::spawn(async move {
            let response = poll.await?;
            let _ = response.bytes().await?;
            Ok::<Instant, reqwest::Error>(Instant::now())
        });
        // Let B register the waiter (it reads the approval first).
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sent = Instant::now();
        let decided = client
            .post(format!("{a}/api/approvals/{id}/decision"))
            .header("content-type", "application/json")
            .body(r#"{"decision":"approve"}"#)
            .send()
            .await?;
        if !decided.status().is_success() {
            return Err(format!("the decision answered {}", decided.status()).into());
        }
        let returned = poll.await??;
        latencies.push(returned.saturating_duration_since(sent));
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len() - 1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok((pct(0.5), pct(0.99), pct(1.0)))
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// 100,000 pending and 1,000,000 decided approvals, written straight into the schema.
async fn seed_large(db: &Database) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await?;
    tokio::spawn(connection);
    let now = chrono::Utc::now();
    let millis = |t: chrono::DateTime<chrono::Utc>| {
        approval_gate_actors::store::millis(t.timestamp_millis())
    };
    let mut generator = ulid::Generator::new();
    const BATCH: usize = 10_000;
    for batch in 0..110 {
        let pending = batch < 10;
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let (mut status, mut created, mut expires, mut decided, mut records) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..BATCH {
            let id = ApprovalId::next(&mut generator);
            let mut approval = Approval::create(
                id,
                NewApproval {
                    session_id: "bench".into(),
                    tool_name: "Bash".into(),
                    tool_input: r#"{"command":"cargo test --workspace"}"#.into(),
                    reason: Some("run the tests".into()),
                    agent: None,
                    requested_by: "anonymous".into(),
                    idempotency_key: None,
                    timeout: Duration::from_secs(2 * 3600),
                    max_timeout: None,
                    idempotent_while_pending: false,
                    cwd: None,
                },
                millis(now),
            );
            if !pending {
                let _ = approval.apply(
                    Decision {
                        outcome: Outcome::Approve,
                        actor: Actor::System,
                        comment: None,
                    },
                    millis(now),
                );
            }
            ids.push(id.to_bytes().to_vec());
            status.push(i16::from(approval_gate_actors::store::status_code(
                approval.status,
            )));
            created.push(approval.created_at.timestamp_millis());
            expires.push(approval.expires_at.timestamp_millis());
            decided.push(approval.decided_at.map(|t| t.timestamp_millis()));
            records.push(approval_gate_actors::store::encode_approval(&approval)?);
        }
        client
            .execute(
                "INSERT INTO approvals (id, status, requested_by, agent, session_id, tool_name,
                     tool_input, idempotency_key, created_at_ms, expires_at_ms, record, decided_at_ms)
                 SELECT id, st, 'anonymous', '', 'bench', 'Bash',
                     '{\"command\":\"cargo test --workspace\"}'::jsonb, NULL, c, e, r, d
                 FROM unnest($1::bytea[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bytea[], $6::bigint[])
                     AS t(id, st, c, e, r, d)",
                &[&ids, &status, &created, &expires, &records, &decided],
            )
            .await?;
    }
    client.batch_execute("ANALYZE approvals").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    println!(
        "cluster bench: {} connections, {} s per load phase, {} cores",
        args.connections,
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1. The baseline and one instance, same load, same run.
    let db = Database::create(&args.admin_url, "baseline").await?;
    let port = free_port()?;
    let baseline = Process(
        Command::new(&args.baseline)
            .args([port.to_string(), db.url.clone(), "16".into()])
            .stdout(Stdio::null())
            .spawn()?,
        None,
    );
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while http
        .post(format!("{base}/api/approvals"))
        .body(BODY)
        .send()
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the baseline server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (bare, bare_p50, bare_p99) = create_load(&[base], args.connections, args.seconds).await?;
    drop(baseline);
    db.drop_it().await;
    println!(
        "baseline (actix-web + one prepared INSERT per request): {bare:.0} creates/s, p50 {bare_p50:.1} ms, p99 {bare_p99:.1} ms"
    );

    let db = Database::create(&args.admin_url, "one").await?;
    let port = free_port()?;
    let one = instance(&args.binary, &db, port, "one", dir.path(), &[])?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base, Duration::from_secs(20)).await?;
    // Sampled in both phases, so that both carry the sampler's queries.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_waits(db.url.clone(), Arc::clone(&stop)));
    let cpu_before = thread_cpu(one.0.id());
    let pg_before = process_cpu("postgres");
    let (single, p50, p99) = create_load(&[base], args.connections, args.seconds).await?;
    let pg_one = process_cpu("postgres").saturating_sub(pg_before);
    let cpu_after = thread_cpu(one.0.id());
    stop.store(true, Ordering::Relaxed);
    let one_waits = sampler.await;
    drop(one);
    db.drop_it().await;
    println!(
        "one instance on PostgreSQL: {single:.0} creates/s = {:.2}x the baseline, p50 {p50:.1} ms, p99 {p99:.1} ms",
        single / bare
    );
    println!(
        "  CPU per create by thread: {}",
        by_thread(&cpu_before, &cpu_after, single, args.seconds)
    );
    let service_one: u64 = cpu_after.values().sum::<u64>() - cpu_before.values().sum::<u64>();
    println!(
        "  CPU per create: the instance {:.0} us, PostgreSQL {:.0} us",
        us_per_create(service_one, single, args.seconds),
        us_per_create(pg_one, single, args.seconds)
    );
    if let Ok(Ok(waits)) = one_waits {
        println!("  {}", waits.report(single));
    }
    if args.one_only {
        return Ok(());
    }

    // 2 and 3. Three instances on one database.
    let db = Database::create(&args.admin_url, "three").await?;
    let mut processes = Vec::new();
    let mut bases = Vec::new();
    for i in 0..3 {
        let port = free_port()?;
        processes.push(instance(
            &args.binary,
            &db,
            port,
            &format!("gate-{i}"),
            dir.path(),
            &[],
        )?);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        wait_ready(&http, base, Duration::from_secs(20)).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_waits(db.url.clone(), Arc::clone(&stop)));
    let instances_cpu = |processes: &[Process]| -> u64 {
        processes
            .iter()
            .map(|p| thread_cpu(p.0.id()).values().sum::<u64>())
            .sum()
    };
    let threads = |processes: &[Process]| -> Vec<_> {
        processes.iter().map(|p| thread_cpu(p.0.id())).collect()
    };
    let (three_before, pg_before) = (instances_cpu(&processes), process_cpu("postgres"));
    let threads_before = threads(&processes);
    let (total, p50, p99) = create_load(&bases, args.connections, args.seconds).await?;
    let pg_three = process_cpu("postgres").saturating_sub(pg_before);
    let three_cpu = instances_cpu(&processes).saturating_sub(three_before);
    let threads_after = threads(&processes);
    stop.store(true, Ordering::Relaxed);
    println!(
        "three instances on one PostgreSQL: {total:.0} creates/s in all = {:.2}x one instance, p50 {p50:.1} ms, p99 {p99:.1} ms",
        total / single
    );
    println!(
        "  CPU per create: the three instances {:.0} us, PostgreSQL {:.0} us",
        us_per_create(three_cpu, total, args.seconds),
        us_per_create(pg_three, total, args.seconds)
    );
    for (i, (before, after)) in threads_before.iter().zip(&threads_after).enumerate() {
        println!(
            "  gate-{i}, CPU per create (of all three's) by thread: {}",
            by_thread(before, after, total, args.seconds)
        );
    }
    if let Ok(Ok(waits)) = sampler.await {
        println!("  {}", waits.report(total));
    }
    let (w50, w99, wmax) = wake_latency(&bases[0], &bases[1], args.rounds).await?;
    println!(
        "decision on A -> long poll on B returns ({} rounds): p50 {w50:.1} ms, p99 {w99:.1} ms, max {wmax:.1} ms",
        args.rounds
    );
    drop(processes);
    db.drop_it().await;

    if let Some(cores) = args.host_cores {
        hosts_of_their_own(&args, dir.path(), cores).await?;
    }

    if args.backlog {
        backlog(&args, dir.path()).await?;
    }

    // 4. A large store.
    if args.large {
        let db = Database::create(&args.admin_url, "large").await?;
        // The schema: one instance started and stopped.
        let port = free_port()?;
        let first = instance(&args.binary, &db, port, "seed", dir.path(), &[])?;
        wait_ready(
            &http,
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(20),
        )
        .await?;
        drop(first);
        let seeding = Instant::now();
        seed_large(&db).await?;
        println!(
            "seeded 100,000 pending + 1,000,000 decided in {:.0} s",
            seeding.elapsed().as_secs_f64()
        );
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let large = instance(&args.binary, &db, port, "large", dir.path(), &[])?;
        let ready = wait_ready(&http, &base, Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_mb(large.0.id());
        let mut list = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let response = http
                .get(format!("{base}/api/approvals?status=pending&limit=50"))
                .send()
                .await?;
            let _ = response.bytes().await?;
            list.push(started.elapsed());
        }
        list.sort();
        let rss_after = rss_mb(large.0.id());
        println!(
            "100k pending + 1M decided: ready in {:.2} s, RSS {rss:.1} MB once ready ({rss_after:.1} MB after listing), listing 50 pending: p50 {:.1} ms, p99 {:.1} ms",
            ready.as_secs_f64(),
            list[25].as_secs_f64() * 1000.0,
            list[49].as_secs_f64() * 1000.0
        );
        drop(large);
        db.drop_it().await;
    }
    Ok(())
}

/// Three instances, an email channel that cannot deliver, `args.seconds` of creates: then the
/// database's CPU over 10 s while the cluster idles with the backlog queued.
async fn backlog(args: &Args, dir: &std::path::Path) -> Result<()> {
    const EMAIL: [(&str, &str); 6] = [
        ("APPROVAL_GATE__FALLBACK__ORDER", "console,file,email"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_HOST", "127.0.0.1"),
        // The discard port: nothing listens there, so every delivery fails and is retried.
        ("APPROVAL_GATE__FALLBACK__EMAIL__SMTP_PORT", "9"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__TLS", "none"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__FROM", "gate@example.com"),
        ("APPROVAL_GATE__FALLBACK__EMAIL__TO", "ops@example.com"),
    ];
    let http = reqwest::Client::new();
    let db = Database::create(&args.admin_url, "backlog").await?;
    let mut processes = Vec::new();
    let mut bases = Vec::new();
    for i in 0..3 {
        let port = free_port()?;
        let name = format!("backlog-{i}");
        processes.push(instance(&args.binary, &db, port, &name, dir, &EMAIL)?);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        wait_ready(&http, base, Duration::from_secs(20)).await?;
    }
    create_load(&bases, args.connections, args.seconds).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await?;
    tokio::spawn(connection);
    let queued: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await?
        .get(0);
    let before = process_cpu("postgres");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks = process_cpu("postgres").saturating_sub(before);
    println!(
        "three idle instances, {queued} notifications queued that cannot be delivered: PostgreSQL {:.1}% of a core (10 s)",
        ticks as f64 / 10.0
    );
    drop(client);
    drop(processes);
    db.drop_it().await;
    Ok(())
}

/// One instance, then three, each confined to `cores` (a host of its own, [`host`]), the same
/// load: whether the shared database lets three instances' work add up.
async fn hosts_of_their_own(args: &Args, dir: &std::path::Path, cores: f64) -> Result<()> {
    if !(cores > 0.0 && cores.is_finite()) {
        return Err(format!("--host-cores must be a positive number of cores, not {cores}").into());
    }
    println!(
        "each instance on a host of its own ({cores} cores each, a cgroup quota; PostgreSQL and the load generator share the rest):"
    );
    let mut rates = Vec::new();
    for count in [1, 3] {
        let db = Database::create(&args.admin_url, &format!("host{count}")).await?;
        let mut processes = Vec::new();
        let mut bases = Vec::new();
        for i in 0..count {
            let port = free_port()?;
            let name = format!("host{count}-{i}");
            let process = instance(&args.binary, &db, port, &name, dir, &[])?;
            let cgroup = format!("approval-gate-bench-{}-{name}", std::process::id());
            processes.push(process.confined(host::Host::new(&cgroup, cores)?)?);
            bases.push(format!("http://127.0.0.1:{port}"));
        }
        let http = reqwest::Client::new();
        for base in &bases {
            wait_ready(&http, base, Duration::from_secs(30)).await?;
        }
        let throttled = |processes: &[Process]| -> u64 {
            processes
                .iter()
                .filter_map(|p| p.1.as_ref().map(host::Host::throttled))
                .sum()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn(sample_waits(db.url.clone(), Arc::clone(&stop)));
        let (throttled_before, pg_before) = (throttled(&processes), process_cpu("postgres"));
        let (rate, p50, p99) = create_load(&bases, args.connections, args.seconds).await?;
        let pg = process_cpu("postgres").saturating_sub(pg_before);
        let throttled = throttled(&processes).saturating_sub(throttled_before);
        stop.store(true, Ordering::Relaxed);
        let versus = match rates.first() {
            Some(one) => format!(" = {:.2}x one instance", rate / one),
            None => String::new(),
        };
        println!(
            "  {count} instance(s): {rate:.0} creates/s{versus}, p50 {p50:.1} ms, p99 {p99:.1} ms; quota reached {throttled} times; PostgreSQL {:.0} us of CPU per create",
            us_per_create(pg, rate, args.seconds)
        );
        if let Ok(Ok(waits)) = sampler.await {
            println!("    {}", waits.report(rate).replace('\n', "\n  "));
        }
        rates.push(rate);
        drop(processes);
        db.drop_it().await;
    }
    Ok(())
}
