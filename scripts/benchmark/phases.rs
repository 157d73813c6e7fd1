//! The bench's run: its state ([`Bench`]), the order of its phases (`throughput.rs`, then
//! `store.rs`), and spawning the service the way a user would configure it.

use super::*;

pub(super) struct Bench<'a> {
    pub(super) args: &'a Args,
    /// The fake Bot API, when `--telegram` is up or down.
    pub(super) telegram: Option<support::fake_telegram::FakeTelegram>,
    pub(super) binary: PathBuf,
    pub(super) dir: PathBuf,
    /// Services started so far; names their log files.
    pub(super) spawned: usize,
}

impl Bench<'_> {
    pub(super) async fn run_all(&mut self) -> Result<Report> {
        // The throughput phase gets a service of its own: it leaves a notification backlog
        // behind (the file channel fsyncs each one) that would disturb anything measured after
        // it, and a store of however many approvals it managed. The second service holds
        // exactly `--pending` approvals; the fan-out runs on it once its notifications are
        // written, so the waiters are woken in a registry of realistic size on a quiet machine.
        // The baseline runs before and after the service, and the ratio is to their mean: this
        // VM has slow spells of minutes (every thread a third slower), and one baseline run
        // on the far side of a change of pace skewed the ratio by that much.
        let before = match &self.args.baseline {
            Some(path) => Some(self.baseline(path, "before").await?),
            None => None,
        };
        let service = self.spawn(THROUGHPUT)?;
        service.wait_ready(Duration::from_secs(30)).await?;
        let mut creates = self.creates(&service).await?;
        step("stopping the throughput service (SIGTERM)");
        // Generous: the file channel writes its whole backlog before the process exits.
        match service.stop(Duration::from_secs(300)).await {
            Ok(took) => {
                println!("  exited {} after SIGTERM", ms(took));
                creates.shutdown = Some(took);
            }
            Err(error) => println!("  {error}; killed it"),
        }
        if let (Some(path), Some(before)) = (&self.args.baseline, before) {
            let after = self.baseline(path, "after").await?;
            creates.baseline = Some(Baseline::mean(before, after));
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
    pub(super) fn notifications(&self, name: &str) -> PathBuf {
        self.dir.join(format!("notifications-{name}.jsonl"))
    }

    /// Start the service on the store `store-<name>` (reused if it exists) and a free port.
    pub(super) fn spawn(&mut self, name: &str) -> Result<Service> {
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
                ("APPROVAL_GATE__TELEGRAM__REQUEST_TIMEOUT", "1s".to_string()),
            ]);
            if self.args.unpaced {
                // The fake has no limits: the gateway then sends as fast as it answers.
                env.extend([
                    ("APPROVAL_GATE__TELEGRAM__SEND_INTERVAL", "0s".to_string()),
                    (
                        "APPROVAL_GATE__TELEGRAM__GROUP_MESSAGES_PER_MINUTE",
                        "0".to_string(),
                    ),
                ]);
            }
        }
        let log = self
            .dir
            .join(format!("service-{}-{name}.log", self.spawned));
        Service::spawn(&self.binary, &env, &log, port)
    }
}

pub(super) fn step(what: &str) {
    println!("==> {what}");
}

// ---------------------------------------------------------------------------------------------
// The service as a child process.
