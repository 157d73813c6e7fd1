//! The serving side of the fake: connection handling, routing, fault
//! injection and getUpdates long polling, on top of `bot_api::State`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::super::server_thread::notify;
use super::bot_api::{self, CONFLICT, Reply, State};
use super::http;
use super::{Call, Fault, Outcome};

/// xorshift64: deterministic, dependency-free fault dice.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's only fixed point.
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
pub struct Faults {
    pub scripted: VecDeque<(Option<String>, Fault)>,
    /// Outage fault and whether it also hits getUpdates.
    pub down: Option<(Fault, bool)>,
    /// Probability, dice, fault pool.
    pub random: Option<(f64, XorShift, Vec<Fault>)>,
    pub latency: Duration,
}

impl Faults {
    /// getUpdates is exempt from untargeted faults: a long-poll loop would
    /// otherwise swallow faults meant for the calls under test.
    fn pick(&mut self, method: &str) -> Option<Fault> {
        let poll = method == "getUpdates";
        let scripted = self.scripted.iter().position(|(m, _)| match m {
            Some(m) => m.eq_ignore_ascii_case(method),
            None => !poll,
        });
        if let Some(i) = scripted {
            return self.scripted.remove(i).map(|(_, f)| f);
        }
        if let Some((fault, include_poll)) = &self.down
            && (!poll || *include_poll)
        {
            return Some(fault.clone());
        }
        if let Some((p, rng, faults)) = &mut self.random
            && !poll
            && !faults.is_empty()
            && rng.next_f64() < *p
        {
            let i = (rng.next_f64() * faults.len() as f64) as usize;
            return faults.get(i.min(faults.len() - 1)).cloned();
        }
        None
    }
}

pub struct Shared {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    /// Bumped on every state change; drives all waiting.
    pub changed: watch::Sender<u64>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            faults: Mutex::new(Faults::default()),
            changed: watch::Sender::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(Arc::clone(&shared), stream));
            }
            Err(e) => {
                eprintln!("fake_telegram: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    loop {
        let request = match http::read_request(&mut conn).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                eprintln!("fake_telegram: dropping connection after unreadable request: {e}");
                return;
            }
        };
        let keep_alive = request.keep_alive;
        let Some(reply) = respond(&shared, request).await else {
            // Zero linger turns the close into a RST, like a crashed proxy.
            if let Err(e) = conn.get_ref().set_zero_linger() {
                eprintln!("fake_telegram: set_zero_linger: {e}");
            }
            return;
        };
        let body = reply.body.to_string();
        if let Err(e) =
            http::write_response(conn.get_mut(), reply.status, body.as_bytes(), keep_alive).await
        {
            eprintln!("fake_telegram: writing response failed (client gone?): {e}");
            return;
        }
        if !keep_alive {
            return;
        }
    }
}

/// `/bot<token>/<method>` → `(token, method)`.
fn route(target: &str) -> Option<(String, String)> {
    let path = target.split('?').next()?;
    let (token, method) = path.strip_prefix("/bot")?.split_once('/')?;
    (!token.is_empty() && !method.is_empty() && !method.contains('/'))
        .then(|| (token.to_owned(), bot_api::canonical(method)))
}

fn params(request: &http::Request) -> Result<Value, Reply> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let content_type = request.header("content-type").unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        let why = format!("Bad Request: the fake only understands JSON bodies, got {content_type}");
        return Err(Reply::error(400, why));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Reply::error(
            400,
            "Bad Request: parameters must be a JSON object",
        )),
        Err(e) => Err(Reply::error(
            400,
            format!("Bad Request: can't parse JSON: {e}"),
        )),
    }
}

/// Runs one request through faults and the Bot API; `None` means "drop the
/// connection without answering".
async fn respond(shared: &Shared, request: http::Request) -> Option<Reply> {
    let at = Instant::now();
    let Some((token, method)) = route(&request.target) else {
        let reply = Reply::error(404, "Not Found");
        record(
            shared,
            request.target.clone(),
            String::new(),
            Value::Null,
            at,
            None,
            Some(&reply),
        );
        return Some(reply);
    };
    let params = params(&request);
    let body = match &params {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&request.body).into_owned()),
    };
    let (fault, latency) = {
        let mut faults = shared.faults();
        (faults.pick(&method), faults.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reply = match (&fault, params) {
        (Some(Fault::Status(code)), _) => Some(Reply::error(*code, fault_description(*code))),
        (Some(Fault::TooManyRequests { retry_after }), _) => Some(Reply::retry_after(*retry_after)),
        (Some(Fault::DropConnection), _) => None,
        (_, Err(reply)) => Some(reply),
        (Some(Fault::Delay(delay)), Ok(p)) => {
            tokio::time::sleep(*delay).await;
            Some(process(shared, &method, &p).await)
        }
        (Some(Fault::DropAfterProcessing), Ok(p)) => {
            process(shared, &method, &p).await;
            None
        }
        (None, Ok(p)) => Some(process(shared, &method, &p).await),
    };
    record(shared, method, token, body, at, fault, reply.as_ref());
    reply
}

fn record(
    shared: &Shared,
    method: String,
    token: String,
    body: Value,
    at: Instant,
    fault: Option<Fault>,
    reply: Option<&Reply>,
) {
    let outcome = match reply {
        None => Outcome::Dropped,
        Some(r) if r.status == 200 => Outcome::Ok,
        Some(r) => Outcome::Status(r.status),
    };
    let response = reply.map(|r| r.body.clone());
    shared.state().calls.push(Call {
        method,
        token,
        body,
        at,
        outcome,
        fault,
        response,
    });
    notify(&shared.changed);
}

const WEBHOOK_ACTIVE: &str = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

fn fault_description(code: u16) -> String {
    match code {
        403 => "Forbidden: bot was blocked by the user".to_owned(),
        409 => CONFLICT.to_owned(),
        _ => http::reason(code).to_owned(),
    }
}

async fn process(shared: &Shared, method: &str, params: &Value) -> Reply {
    if method == "getUpdates" {
        return long_poll(shared, params).await;
    }
    let reply = shared.state().call(method, params);
    notify(&shared.changed);
    reply
}

/// getUpdates: answers at once if updates are pending, otherwise holds the
/// request until one arrives or `timeout` seconds pass.
async fn long_poll(shared: &Shared, p: &Value) -> Reply {
    let offset = p["offset"].as_i64().unwrap_or(0);
    let limit = usize::try_from(p["limit"].as_u64().unwrap_or(100).clamp(1, 100)).unwrap_or(100);
    let deadline = Instant::now() + Duration::from_secs(p["timeout"].as_u64().unwrap_or(0));
    let mut allowed = p["allowed_updates"].as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let generation = {
        let mut state = shared.state();
        state.poll_generation += 1;
        state.poll_generation
    };
    notify(&shared.changed);
    let mut changes = shared.changed.subscribe();
    loop {
        changes.borrow_and_update();
        {
            let mut state = shared.state();
            if state.webhook.is_some() {
                return Reply::error(409, WEBHOOK_ACTIVE);
            }
            if state.poll_generation != generation {
                return Reply::error(409, CONFLICT);
            }
            let updates = state.take_updates(offset, limit, allowed.take());
            if !updates.is_empty() || Instant::now() >= deadline {
                return Reply::ok(Value::Array(updates));
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Reply::ok(json!([])) },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}
