//! A fake Telegram Bot API server speaking real HTTP/1.1 on 127.0.0.1, for
//! pointing teloxide at with `Bot::set_api_url(fake.api_url())`. It records
//! every call, lets tests inject updates (button presses, texts) and injects
//! faults (5xx, 429 flood control, latency, dropped connections).
//!
//! Wire format (teloxide-core 0.13, `net/request.rs` + `net.rs`): every
//! method is `POST {api_url}/bot{token}/{Method}` with
//! `Content-Type: application/json` and a JSON object body (`{}` when the
//! payload has no fields); answers are `{"ok":true,"result":…}` or
//! `{"ok":false,"error_code":N,"description":…,"parameters":{…}}`.
#![allow(dead_code)]

mod bot_api;
mod http;
mod markup;
mod server;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use self::server::{Faults, Shared, XorShift};
use super::server_thread::{ServerThread, notify, wait_for};

/// The token tests should give teloxide; any other non-empty token works too
/// and is recorded in [`Call::token`].
pub const TEST_TOKEN: &str = "123456:TEST-TOKEN";
/// `getMe` identity of the fake bot (also `from` of every sent message).
pub const BOT_ID: u64 = 4242;
pub const BOT_USERNAME: &str = "approval_gate_test_bot";

/// A scripted or random misbehaviour applied to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and a Telegram-shaped JSON error body.
    /// Note: teloxide sleeps 10 s inside the request on any 5xx.
    Status(u16),
    /// Flood control: 429 with `parameters.retry_after`.
    TooManyRequests { retry_after: u32 },
    /// Wait, then process and answer normally (the effect happens even if
    /// the client gave up meanwhile).
    Delay(Duration),
    /// Reset the connection (RST) without processing or answering.
    DropConnection,
    /// Process the request, then reset the connection: the "sent but the
    /// response was lost" case that produces duplicates on retry.
    DropAfterProcessing,
}

/// How a recorded request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Status(u16),
    Dropped,
}

#[derive(Clone, Debug)]
pub struct Call {
    /// Canonical method name (e.g. `sendMessage`), or the raw request
    /// target if it was not a `/bot<token>/<method>` path.
    pub method: String,
    pub token: String,
    /// The JSON parameters (`{}` if none; the raw body as a string if it
    /// was not JSON).
    pub body: Value,
    /// When the request arrived (before any latency/fault delay).
    pub at: Instant,
    pub outcome: Outcome,
    pub fault: Option<Fault>,
    /// The JSON that was sent back, if any.
    pub response: Option<Value>,
}

impl Call {
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// A message the bot sent, as the fake currently stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct SentMessage {
    pub chat_id: i64,
    pub message_id: i32,
    /// Text exactly as the bot sent it (markup included).
    pub text: String,
    pub parse_mode: Option<String>,
    /// What a Telegram user would see (HTML/MarkdownV2 rendered).
    pub plain_text: String,
    /// The inline keyboard currently attached.
    pub reply_markup: Option<Value>,
    pub edits: u32,
    pub deleted: bool,
    pub date: i64,
    pub edit_date: Option<i64>,
}

impl SentMessage {
    /// Every `callback_data` on the attached keyboard, row by row.
    pub fn callback_data(&self) -> Vec<String> {
        let rows = self
            .reply_markup
            .as_ref()
            .and_then(|m| m["inline_keyboard"].as_array());
        rows.into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
            .collect()
    }
}

/// A Telegram user pressing buttons or writing to the bot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FakeUser {
    pub id: u64,
    pub username: Option<String>,
}

impl FakeUser {
    pub fn new(id: u64) -> Self {
        Self { id, username: None }
    }

    pub fn with_username(mut self, username: &str) -> Self {
        self.username = Some(username.to_owned());
        self
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub text: Option<String>,
    pub show_alert: bool,
}

/// Handle to a running fake; dropping it stops the server.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    server: ServerThread,
}

impl FakeTelegram {
    pub fn start() -> Self {
        let shared = Arc::new(Shared::new());
        let server_shared = Arc::clone(&shared);
        let server = ServerThread::spawn("fake-telegram", move |listener| {
            server::serve(server_shared, listener)
        });
        Self { shared, server }
    }

    /// `http://127.0.0.1:PORT/`. teloxide appends `bot<token>/<method>` as
    /// path segments, so a root URL with or without the slash both work.
    pub fn url(&self) -> String {
        format!("http://{}/", self.server.addr())
    }

    /// [`Self::url`] parsed, ready for `Bot::set_api_url`.
    pub fn api_url(&self) -> reqwest::Url {
        reqwest::Url::parse(&self.url()).expect("valid fake Telegram URL")
    }

    pub fn token(&self) -> &'static str {
        TEST_TOKEN
    }

    /// Full URL of `method` for raw (non-teloxide) requests.
    pub fn method_url(&self, method: &str) -> String {
        format!("{}bot{TEST_TOKEN}/{method}", self.url())
    }

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.state().calls.clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        let state = self.shared.state();
        state
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    pub fn ok_calls_to(&self, method: &str) -> Vec<Call> {
        let state = self.shared.state();
        state
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method) && c.is_ok())
            .cloned()
            .collect()
    }

    /// Every message the bot sent, in order, deleted ones included.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.shared.state().messages.clone()
    }

    pub fn message(&self, chat_id: i64, message_id: i32) -> Option<SentMessage> {
        let state = self.shared.state();
        state
            .messages
            .iter()
            .find(|m| m.chat_id == chat_id && m.message_id == message_id)
            .cloned()
    }

    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.shared.state().answers.clone()
    }

    /// Updates injected but not yet confirmed by a later getUpdates offset.
    pub fn pending_updates(&self) -> usize {
        self.shared.state().pending_updates()
    }

    /// One line per method: total calls and how they ended.
    pub fn summary(&self) -> String {
        let mut lines: Vec<(String, Vec<Outcome>)> = Vec::new();
        for call in self.shared.state().calls.iter() {
            match lines.iter_mut().find(|(m, _)| *m == call.method) {
                Some((_, outcomes)) => outcomes.push(call.outcome),
                None => lines.push((call.method.clone(), vec![call.outcome])),
            }
        }
        let lines: Vec<String> = lines
            .into_iter()
            .map(|(method, o)| {
                let ok = o.iter().filter(|o| **o == Outcome::Ok).count();
                format!(
                    "  {method}: {} calls, {ok} ok, others {:?}",
                    o.len(),
                    o.iter().filter(|o| **o != Outcome::Ok).collect::<Vec<_>>()
                )
            })
            .collect();
        if lines.is_empty() {
            "  (no calls)".to_owned()
        } else {
            lines.join("\n")
        }
    }

    /// Waits until `predicate` holds; panics after `timeout` with `what`
    /// and a summary of the recorded calls.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        predicate: impl Fn(&Self) -> bool,
    ) {
        let deadline = self.server.sleep(timeout);
        if wait_for(&self.shared.changed, deadline, || {
            predicate(self).then_some(())
        })
        .await
        .is_none()
        {
            panic!(
                "fake Telegram: timed out after {timeout:?} waiting for {what}; calls:\n{}",
                self.summary()
            );
        }
    }

    /// Waits for at least `n` calls to `method` (any outcome) and returns them all.
    pub async fn wait_for_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let what = format!("{n} call(s) to {method}");
        self.wait_until(timeout, &what, |f| f.calls_to(method).len() >= n)
            .await;
        self.calls_to(method)
    }

    /// Waits for at least `n` successful calls to `method` and returns them.
    pub async fn wait_for_ok_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let what = format!("{n} successful call(s) to {method}");
        self.wait_until(timeout, &what, |f| f.ok_calls_to(method).len() >= n)
            .await;
        self.ok_calls_to(method)
    }

    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let what = format!("{n} sent message(s)");
        self.wait_until(timeout, &what, |f| f.shared.state().messages.len() >= n)
            .await;
        self.messages()
    }

    pub async fn wait_for_answer(
        &self,
        callback_query_id: &str,
        timeout: Duration,
    ) -> CallbackAnswer {
        let find = || {
            self.callback_answers()
                .into_iter()
                .find(|a| a.callback_query_id == callback_query_id)
        };
        let what = format!("answerCallbackQuery for {callback_query_id}");
        self.wait_until(timeout, &what, |_| find().is_some()).await;
        find().expect("answer present after wait")
    }

    /// Queues a button press on `(chat_id, message_id)`; returns the
    /// callback query id the bot must answer.
    pub fn inject_callback(
        &self,
        from: &FakeUser,
        chat_id: i64,
        message_id: i32,
        data: &str,
    ) -> String {
        let id = self
            .shared
            .state()
            .inject_callback(from, chat_id, message_id, data);
        notify(&self.shared.changed);
        id
    }

    /// Queues a text message from `from` in `chat_id`; returns its message id.
    pub fn inject_text_message(&self, from: &FakeUser, chat_id: i64, text: &str) -> i32 {
        let id = self.shared.state().inject_text_message(from, chat_id, text);
        notify(&self.shared.changed);
        id
    }

    /// Queues `fault` for the next request to `method` (`None`: to any
    /// method except getUpdates). Queued faults are consumed in order.
    pub fn push_fault(&self, method: Option<&str>, fault: Fault) {
        self.shared
            .faults()
            .scripted
            .push_back((method.map(str::to_owned), fault));
    }

    /// Simulates an outage: every request gets `fault` until `set_down(None, _)`.
    pub fn set_down(&self, fault: Option<Fault>, include_get_updates: bool) {
        self.shared.faults().down = fault.map(|f| (f, include_get_updates));
    }

    /// With `probability`, a request (not getUpdates) gets one of `faults`,
    /// chosen by a PRNG seeded with `seed` (reproducible per request order).
    pub fn set_random_faults(&self, probability: f64, seed: u64, faults: Vec<Fault>) {
        let rng = XorShift::new(seed);
        self.shared.faults().random = Some((probability.clamp(0.0, 1.0), rng, faults));
    }

    /// Extra delay before every response (getUpdates included).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = latency;
    }

    /// A webhook set on the bot (by another deployment, or by webhook mode).
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.shared.state().webhook.clone()
    }

    /// Take the oldest queued update as the JSON Telegram would POST to a webhook.
    pub fn take_update(&self) -> Option<serde_json::Value> {
        self.shared.state().take_update()
    }

    pub fn set_webhook(&self, url: &str) {
        self.shared.state().webhook = Some((url.to_owned(), None));
    }

    pub fn clear_faults(&self) {
        *self.shared.faults() = Faults::default();
    }
}
