//! The service under test (the compiled binary as a child process, on the fake Bot API) and
//! the helpers every phase uses: creating approvals, counting their Telegram copies, waiting on
//! a condition with a deadline, percentiles.

use super::*;

pub(crate) struct Service {
    child: Child,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Service {
    pub(crate) async fn start(
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

    pub(crate) async fn ready(&self) -> bool {
        let response = self
            .http
            .get(format!("{}/health/ready", self.base))
            .send()
            .await;
        response.is_ok_and(|r| r.status().is_success())
    }

    pub(crate) async fn create(&self, i: usize) -> Result<String, BoxError> {
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

    pub(crate) async fn long_poll(&self, id: &str) -> Result<Value, BoxError> {
        let url = format!("{}/api/approvals/{id}?wait=60s", self.base);
        let response = self.http.get(url).bearer_auth(AGENT_TOKEN).send().await?;
        Ok(serde_json::from_slice(
            &response.error_for_status()?.bytes().await?,
        )?)
    }

    pub(crate) async fn metric(&self, name: &str) -> Option<f64> {
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

pub(crate) async fn create_many(
    service: &Service,
    from: usize,
    n: usize,
) -> Result<Vec<String>, BoxError> {
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
pub(crate) fn copies(fake: &FakeTelegram, ids: &[String]) -> HashMap<String, usize> {
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

pub(crate) async fn until(deadline: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Create `n` approvals and time it until Telegram shows all of them (first create → last
/// message), counting messages rather than matching ids so the check costs nothing.
pub(crate) async fn deliver_timed(
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
