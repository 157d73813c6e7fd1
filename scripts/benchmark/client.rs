//! The bench's HTTP client: the API calls it makes and one long-poll fan-out round. The
//! closed-loop create load and `/health` under load: `load.rs`.

use super::*;

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
