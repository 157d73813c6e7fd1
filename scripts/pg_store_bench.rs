//! The PostgreSQL store's create against a bare INSERT, measured in the same run (issue 23's
//! figure, at the store layer until the service runs on PostgreSQL): durable creates/s of
//! `store::postgres::approvals::create` (the approval row, its history entry and two outbox
//! rows, atomically) against one autocommitted, prepared INSERT per create, both with
//! `synchronous_commit = on`, from the same number of concurrent connections.
//!
//!   scripts/bench-postgres [--seconds 10] [--connections 32]
//!
//! Creates a database of its own on APPROVAL_GATE_TEST_POSTGRES (default the machine's
//! PostgreSQL) and drops it afterwards. Baseline runs before and after the store's run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use approval_gate_actors::domain::{Approval, ApprovalId, AuditEvent, NewApproval};
use approval_gate_actors::store::postgres::approvals::{self, Notice};
use approval_gate_actors::store::postgres::{self, PgSettings, PgTls};
use tokio_postgres::NoTls;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// `connections` tasks doing `one` in a loop for `seconds`; creates/s and latency.
async fn run<F, Fut>(connections: u64, seconds: u64, one: F) -> Run
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|worker| {
            let (one, stop, count) = (Arc::clone(&one), Arc::clone(&stop), Arc::clone(&count));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    one(worker).await;
                    latencies.push(t.elapsed());
                    count.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("join"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Run {
        per_second: count.load(Ordering::Relaxed) as f64 / elapsed,
        p50: at(0.5),
        p99: at(0.99),
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn baseline(url: &str, connections: u64, seconds: u64) -> Run {
    // Each connection prepares its INSERT once, as a well-written service would.
    let mut clients = Vec::new();
    for _ in 0..connections {
        let client = connect(url).await;
        let insert = client
            .prepare("INSERT INTO bench_baseline (id, body) VALUES ($1, $2)")
            .await
            .expect("prepare");
        clients.push(Arc::new((client, insert)));
    }
    let clients = Arc::new(clients);
    run(connections, seconds, move |worker| {
        let connection = Arc::clone(&clients[worker as usize]);
        async move {
            let (client, insert) = &*connection;
            client
                .execute(insert, &[&ApprovalId::new().to_bytes().as_slice(), &BODY])
                .await
                .expect("insert");
        }
    })
    .await
}

const BODY: &str =
    r#"{"session_id":"bench","tool_name":"Bash","tool_input":{"command":"make test"}}"#;

async fn store(url: &str, connections: u64, seconds: u64) -> Run {
    let settings = PgSettings {
        url: url.to_string(),
        pool_size: connections as usize,
        statement_timeout: Duration::from_secs(30),
        pool_wait: Duration::from_secs(30),
        tls: PgTls::default(),
    };
    let pool = postgres::pool(&settings).expect("pool");
    run(connections, seconds, move |_| {
        let pool = pool.clone();
        async move {
            let approval = Approval::create(
                ApprovalId::new(),
                NewApproval {
                    session_id: "bench".into(),
                    tool_name: "Bash".into(),
                    tool_input: r#"{"command":"make test"}"#.into(),
                    reason: None,
                    agent: Some("bench".into()),
                    requested_by: "bench".into(),
                    idempotency_key: None,
                    timeout: Duration::from_secs(7200),
                    max_timeout: None,
                    idempotent_while_pending: false,
                    cwd: None,
                },
                chrono::Utc::now(),
            );
            let notices = [
                Notice {
                    channel: 1,
                    entry: vec![0; 300],
                },
                Notice {
                    channel: 2,
                    entry: vec![0; 300],
                },
            ];
            let client = pool.get().await.expect("a connection");
            approvals::create(
                &client,
                &approval,
                &[AuditEvent::at(
                    chrono::Utc::now().timestamp_millis(),
                    "created",
                )],
                &notices,
            )
            .await
            .expect("create");
        }
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = arg("--seconds", 10);
    let connections = arg("--connections", 32);
    let admin_url = std::env::var("APPROVAL_GATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = connect(&admin_url).await;
    let name = format!("ag_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the bench database");
    let mut config: tokio_postgres::Config = admin_url.parse().expect("URL");
    config.dbname(&name);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let url = format!(
        "host={host} port={} user={} dbname={name}",
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("postgres"),
    );
    let pool = postgres::pool(&PgSettings {
        url: url.clone(),
        pool_size: 1,
        statement_timeout: Duration::from_secs(30),
        pool_wait: Duration::from_secs(30),
        tls: PgTls::default(),
    })
    .expect("pool");
    postgres::connect_and_migrate(&pool).await.expect("migrate");
    connect(&url)
        .await
        .batch_execute("CREATE TABLE bench_baseline (id bytea PRIMARY KEY, body text NOT NULL)")
        .await
        .expect("baseline table");
    let sync: String = connect(&url)
        .await
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show")
        .get(0);
    println!(
        "PostgreSQL store bench: {connections} connections, {seconds} s each, synchronous_commit = {sync}"
    );
    let before = baseline(&url, connections, seconds).await;
    let measured = store(&url, connections, seconds).await;
    let after = baseline(&url, connections, seconds).await;
    let base = (before.per_second + after.per_second) / 2.0;
    for (label, r) in [
        ("baseline (before)", &before),
        ("store create", &measured),
        ("baseline (after)", &after),
    ] {
        println!(
            "  {label:<18} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            r.per_second,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
    println!("  store ÷ baseline   {:.2}×", measured.per_second / base);
    drop(pool);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop the bench database");
}
