//! The create load: closed-loop workers posting creates over bare HTTP/1.1 connections (one
//! per worker, so the client costs the shared cores as little as possible), and `/health`
//! sampled while creates arrive at a fixed rate.

use super::*;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;

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
