//! The bench's HTTP client: the API calls it makes, the closed-loop create load, `/health`
//! under load and one long-poll fan-out round.

use super::*;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;

#[derive(Clone)]
pub(super) struct Api {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
}

#[derive(Deserialize)]
pub(super) struct ApprovalBody {
    pub(super) id: String,
    pub(super) status: String,
}

impl Api {
    /// Create one approval; `Ok` only for 201 (durable), with its id.
    pub(super) async fn create(&self) -> Result<String> {
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
    pub(super) async fn get(&self, id: &str) -> Result<String> {
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
    pub(super) async fn long_poll(&self, id: &str) -> Result<(Instant, String)> {
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

    pub(super) async fn decide(&self, id: &str) -> Result<()> {
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

    pub(super) async fn ready(&self) -> Result<bool> {
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

    /// The value of one sample from `/metrics`, named with its labels as exposed
    /// (`name{label="value"}`).
    pub(super) async fn metric(&self, name: &str) -> Result<Option<f64>> {
        Ok(self.metrics(&[name]).await?[0])
    }

    /// The values of several samples from one scrape, in order.
    pub(super) async fn metrics(&self, names: &[&str]) -> Result<Vec<Option<f64>>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let sample = |name: &str| {
            text.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
        };
        Ok(names.iter().map(|name| sample(name)).collect())
    }

    /// The group commit's counters: commits, requests, and seconds in apply, flush, fdatasync.
    pub(super) async fn commit_totals(&self) -> Result<[f64; 5]> {
        let values = self
            .metrics(&[
                "approval_gate_store_commits_total",
                "approval_gate_store_commit_requests_total",
                "approval_gate_store_commit_phase_seconds_total{phase=\"apply\"}",
                "approval_gate_store_commit_phase_seconds_total{phase=\"flush\"}",
                "approval_gate_store_commit_phase_seconds_total{phase=\"fdatasync\"}",
            ])
            .await?;
        let mut totals = [0.0; 5];
        for (total, value) in totals.iter_mut().zip(values) {
            *total = value.ok_or("/metrics lacks a group-commit counter")?;
        }
        Ok(totals)
    }
}

pub(super) async fn expect_json(
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

pub(super) fn unexpected(what: &str, status: StatusCode, body: &[u8]) -> BoxError {
    format!(
        "{what} answered {status}: {}",
        String::from_utf8_lossy(body)
    )
    .into()
}

/// Call `check` every few milliseconds until it returns `Some` (with the instant it did) or
/// `deadline` passes.
pub(super) async fn poll_until<T, F, Fut>(deadline: Duration, mut check: F) -> Option<(Instant, T)>
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
pub(super) enum Stop {
    After(Duration),
    Count(usize),
}

#[derive(Default)]
pub(super) struct Load {
    pub(super) ok: usize,
    pub(super) failed: usize,
    pub(super) first_error: Option<String>,
    pub(super) latencies: Vec<Duration>,
    pub(super) elapsed: Duration,
    /// The id of the last approval a worker created, to read back after a restart.
    pub(super) last_id: Option<String>,
}

impl Load {
    /// Any failure invalidates a durability benchmark: report it rather than a flattering rate.
    pub(super) fn check(&self, phase: &str) -> Result<()> {
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
pub(super) async fn health_under_load(
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

pub(super) async fn create_load(api: &Api, concurrency: usize, stop: Stop) -> Load {
    let started = Instant::now();
    let claimed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut creator = Creator::new(&api.base);
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
                    match creator.create().await {
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

/// One load worker's keep-alive connection, posting the same create again and again.
///
/// hyper's connection API rather than reqwest: the client shares the machine's two cores with
/// the server it measures, and reqwest's pool, URL parsing and header maps cost the client
/// about as much CPU per request as the baseline server spends (24 µs per create, measured);
/// every microsecond it takes is one the service under test does not get.
struct Creator {
    address: String,
    authorization: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Creator {
    fn new(base: &str) -> Self {
        Self {
            address: base.trim_start_matches("http://").to_string(),
            authorization: format!("Bearer {AGENT_TOKEN}"),
            sender: None,
        }
    }

    /// Create one approval; `Ok` only for 201 (durable), with its id. A failed request drops
    /// the connection, so the next one starts on a fresh one.
    async fn create(&mut self) -> Result<String> {
        let answered = tokio::time::timeout(Duration::from_secs(120), self.send()).await;
        match answered {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(error)) => {
                self.sender = None;
                Err(error)
            }
            Err(_) => {
                self.sender = None;
                Err("create: no answer within 120 s".into())
            }
        }
    }

    async fn send(&mut self) -> Result<String> {
        let sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => self.sender.insert(sender),
            _ => {
                let sender = self.connect().await?;
                self.sender.insert(sender)
            }
        };
        sender.ready().await?;
        let request = hyper::Request::post("/api/approvals")
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(CREATE_BODY.as_bytes())))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::CREATED {
            return Err(unexpected("create", status, &body));
        }
        let approval: ApprovalBody =
            serde_json::from_slice(&body).map_err(|e| format!("create: unexpected body ({e})"))?;
        Ok(approval.id)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

pub(super) struct FanoutRound {
    /// Decision sent → each long poll's body fully received.
    pub(super) returns: Percentiles,
    /// Decision sent → its own 200.
    pub(super) decision: Duration,
    /// Long polls opened → the waiter gauge showed all of them.
    pub(super) registering: Duration,
}

pub(super) async fn fanout_round(api: &Api, n: usize) -> Result<FanoutRound> {
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
