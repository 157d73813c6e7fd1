//! TelegramGateway: all Bot API traffic. It owns the retry policy and the circuit breaker.
//! `delivery` drains the Telegram queue and `outcome` handles each call's result; `handover`
//! tells the fallback channels what Telegram cannot deliver; `updates` runs the getUpdates loop
//! (or takes webhook updates) and `taps` turns button taps into decisions; `handlers` is the
//! mailbox. Here: the actor, its settings, start-up and the queue's in-memory index.
//!
//! It alone consumes the store's Telegram queue (the registry appends to it inside each commit
//! and sends [`Wake`](crate::notification::Wake) once the commit is durable), and owns
//! `telegram_messages` and its keys in `meta`. When Telegram cannot deliver, it appends to the
//! fallback channels' queues. It never touches approval state: decisions go to the registry
//! as `Decide`, like a REST decision.

mod delivery;
mod digests;
mod handlers;
mod handover;
mod outcome;
mod superseded;
mod taps;
mod updates;

pub use handlers::{BreakerReport, BreakerStatus, Connect, Reconfigure};
pub use updates::WebhookUpdate;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::api::Api;
use super::breaker::{BreakerSettings, CircuitBreaker, Transition};
use super::callback::CallbackCodec;
use super::retry::RetryPolicy;
use crate::fallback::{Announce, Announcement, FallbackNotifier};
use crate::metrics::{Metric, TelegramMetric};
use crate::registry::ApprovalRegistry;
use crate::store::{Channel, Queues, StoreError};
use crate::supervision::{self, HealthStatus, Restarts};

pub const NAME: &str = "telegram_gateway";
/// On a shared store: how often the gateway checks the poller's lease and reads its queue's
/// front for entries other instances wrote (they come with no wake-up).
const FOLLOW_LEASE_EVERY: Duration = Duration::from_millis(250);
const SECRET_KEY: &str = "telegram_callback_secret";

#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub bot_token: String,
    pub api_url: Option<reqwest::Url>,
    pub chat_id: i64,
    pub allowed_user_ids: Vec<u64>,
    pub request_timeout: Duration,
    pub poll_timeout: Duration,
    /// Least time between two messages to the chat (Telegram allows about one per second).
    pub send_interval: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    /// How long the "✅ Allow for this session" button allows the tool; `None` hides it.
    pub session_grant: Option<Duration>,
    /// The callback secret before a rotation, accepted until the instant.
    pub previous_secret: Option<(Vec<u8>, std::time::Instant)>,
    /// Webhook mode: Telegram POSTs taps to this URL with this secret; `None` polls.
    pub webhook: Option<Webhook>,
    /// New messages per minute to a group chat (Telegram allows about 20); 0 = no limit.
    /// Entries over it wait in the durable queue; nothing is dropped.
    pub group_messages_per_minute: u32,
    /// Further chats by name (`[telegram.chats]`), for routes and escalation steps.
    pub chats: HashMap<String, i64>,
    /// Post a burst as digests when more approvals wait than the chat's budget can post one by
    /// one within this (`telegram.digest_after`); zero: never.
    pub digest_after: Duration,
    /// The web console's address (`server.public_url` + `/console/`), linked from a message
    /// whose input had to be cut; `None` when the console is off.
    pub console_url: Option<String>,
    /// Whether each escalation step re-posts to the approval's first chat (by step, 0-based).
    pub escalation_reposts: Vec<bool>,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: reqwest::Url,
    /// `X-Telegram-Bot-Api-Secret-Token`: 1–256 of `A-Za-z0-9_-`.
    pub secret: String,
}

const WEBHOOK_SECRET_KEY: &str = "telegram_webhook_secret";

fn random_bytes() -> Result<[u8; 32], StoreError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| StoreError::Queue("no system randomness".into()))?;
    Ok(bytes)
}

/// The configured webhook secret, or the one stored, or a new random one (stored durably; on a
/// shared store the first instance's), so Telegram's deliveries keep verifying across restarts.
pub fn webhook_secret(queues: &Queues, configured: Option<&str>) -> Result<String, StoreError> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok(secret.to_string());
    }
    let fresh = hex::encode(random_bytes()?);
    let stored = queues.meta_init(WEBHOOK_SECRET_KEY, fresh.as_bytes())?;
    Ok(String::from_utf8_lossy(&stored).into_owned())
}

/// What the gateway is given of the store, while wiring up.
pub struct GatewayStore {
    pub queues: Queues,
    /// The fallback channels' queues, for entries Telegram cannot deliver.
    pub fallback_channels: Vec<Channel>,
}

/// The configured secret, or the one stored, or a new random one (stored durably; on a shared
/// store every instance signs with the first one's), so buttons keep working across restarts
/// and a tap verifies on whichever instance receives it.
pub fn callback_secret(queues: &Queues, configured: Option<&str>) -> Result<Vec<u8>, StoreError> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok(secret.as_bytes().to_vec());
    }
    queues.meta_init(SECRET_KEY, &random_bytes()?)
}

pub struct TelegramGateway {
    settings: Arc<TelegramSettings>,
    api: Api,
    codec: Arc<CallbackCodec>,
    /// The approvals' spans (from the registry's Wake), so Bot API calls are their children.
    spans: HashMap<crate::domain::ApprovalId, tracing::Span>,
    /// Telegram's per-group limit on new messages (a sliding window, `budget.rs`; `None` for a private chat
    /// or when off).
    group_sends: Option<crate::telegram::budget::GroupBudget>,
    queues: Queues,
    /// The store's clock: history entries and queue ages are reckoned by the time the
    /// approvals were stamped with, on whichever instance.
    clock: crate::clock::Clock,
    /// Entries of the Telegram queue known to be durable: every seq up to `ready_through`
    /// (what was on disk at start) and each one a [`Wake`] confirmed since.
    ready: BTreeSet<u64>,
    ready_through: u64,
    /// Entries in the Telegram queue (counted once at start, then kept up to date).
    queued: usize,
    /// On a shared store: when the queue is counted again.
    counts: crate::notification::CountPacer,
    /// Approvals with a durable "ended" entry queued: (its seq). A first message still queued
    /// for such an approval is posted already decided, and the ended entry is then moot.
    superseded: superseded::Superseded,
    /// The content of durable entries, as their Wake carried it (or as read back once),
    /// within a byte budget: an outage's backlog is read back from the store when its turn comes.
    cache: crate::wake_cache::WakeCache,
    fallback_channels: Vec<Channel>,
    /// What each digest message shows now (a fingerprint of its last edit), so an ending that
    /// changes nothing on it costs no call. Forgotten on restart: one edit more.
    digests_shown: HashMap<crate::domain::TelegramMessageRef, u64>,
    /// Digests posted by this gateway whose approvals may still get messages of their own once
    /// the backlog is gone (`digests.rs`), oldest first, with the approvals not posted yet.
    open_digests: std::collections::VecDeque<(
        crate::domain::TelegramMessageRef,
        Vec<crate::domain::ApprovalId>,
    )>,
    /// Endings this gateway has noted, and how many it had when a digest was last found too
    /// big to break up: nothing to look at again until another approval ends.
    endings_noted: u64,
    break_up_waits_for: Option<u64>,
    /// Digest renders of calls in flight, by entry, until the call's outcome is known.
    digests_rendering: HashMap<u64, Vec<(crate::domain::TelegramMessageRef, u64)>>,
    breaker: CircuitBreaker,
    registry: Option<Addr<ApprovalRegistry>>,
    fallback: Addr<FallbackNotifier>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
    delivery: delivery::State,
    polling: updates::State,
    bot_username: Option<String>,
    last_success: Option<Instant>,
    last_error: Option<String>,
    last_poll_error: Option<String>,
    consecutive_failures: u32,
    /// Entries past `told_through` already told individually (retries exhausted).
    told_fallback: HashSet<u64>,
    /// Every entry up to this sequence number has been told to the fallback channels.
    told_through: u64,
    /// On a shared store, how far each recent hand-over walk read, and when: the watermark
    /// trails them by `handover::LATE_COMMIT_HORIZON` (`handover.rs`).
    walked: std::collections::VecDeque<(Instant, u64)>,
    /// This instance polls Telegram and delivers the queue (always, unless the store is shared
    /// and another instance holds the poller's lease).
    leading: bool,
    /// The getUpdates loop is not running (not leading, or webhook mode).
    poll_stopped: bool,
}

fn when(at: Instant) -> String {
    let ago = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
    (chrono::Utc::now() - ago).to_rfc3339()
}

fn when_future(at: Instant) -> String {
    let ahead = chrono::Duration::from_std(at.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    (chrono::Utc::now() + ahead).to_rfc3339()
}

impl TelegramGateway {
    pub fn new(
        settings: TelegramSettings,
        store: GatewayStore,
        secret: Vec<u8>,
        fallback: Addr<FallbackNotifier>,
        metrics: Recipient<Metric>,
    ) -> Result<Self, StoreError> {
        let api = Api::new(
            &settings.bot_token,
            settings.api_url.clone(),
            settings.request_timeout,
        );
        // Read the queue once here, so a damaged store stops start-up instead of looping in the
        // supervisor.
        store.queues.scan(Channel::Telegram)?;
        let group_sends = std::num::NonZeroU32::new(settings.group_messages_per_minute)
            .filter(|_| settings.chat_id < 0)
            .map(crate::telegram::budget::GroupBudget::per_minute);
        Ok(Self {
            api,
            spans: HashMap::new(),
            group_sends,
            codec: Arc::new(match &settings.previous_secret {
                Some((previous, until)) => {
                    CallbackCodec::new(&secret).with_previous(previous, *until)
                }
                None => CallbackCodec::new(&secret),
            }),
            clock: store.queues.clock(),
            queues: store.queues,
            ready: BTreeSet::new(),
            ready_through: 0,
            queued: 0,
            counts: Default::default(),
            superseded: superseded::Superseded::default(),
            cache: Default::default(),
            fallback_channels: store.fallback_channels,
            digests_shown: HashMap::new(),
            open_digests: std::collections::VecDeque::new(),
            endings_noted: 0,
            break_up_waits_for: None,
            digests_rendering: HashMap::new(),
            breaker: CircuitBreaker::new(settings.breaker.clone()),
            settings: Arc::new(settings),
            registry: None,
            fallback,
            metrics,
            restarts: Restarts::default(),
            delivery: delivery::State::default(),
            polling: updates::State::default(),
            bot_username: None,
            last_success: None,
            last_error: None,
            last_poll_error: None,
            consecutive_failures: 0,
            told_fallback: HashSet::new(),
            told_through: 0,
            walked: std::collections::VecDeque::new(),
            leading: false,
            poll_stopped: true,
        })
    }

    fn metric(&self, metric: TelegramMetric) {
        self.metrics.do_send(Metric::Telegram(metric));
    }

    fn publish_outbox(&self) {
        self.metric(TelegramMetric::OutboxSize(self.queued as i64));
    }

    /// A queued entry's content: from the cache the registry's wake-up filled, else from sled.
    /// `Ok(None)`: no longer queued (delivered or dead-lettered meanwhile). Not cached: a
    /// backlog handed over after a restart would otherwise be held in memory whole.
    fn entry(&self, seq: u64) -> Result<Option<Arc<crate::store::QueueEntry>>, StoreError> {
        if let Some(entry) = self.cache.get(&seq) {
            return Ok(Some(Arc::clone(entry)));
        }
        Ok(self.queues.get(Channel::Telegram, seq)?.map(Arc::new))
    }

    fn is_ready(&self, seq: u64) -> bool {
        seq <= self.ready_through || self.ready.contains(&seq) || self.queues.visible_is_durable()
    }

    /// On a shared store: follow the poller's lease. Taking it: read the queue afresh (another
    /// instance delivered meanwhile) and start polling from the offset the last leader saved.
    /// Losing it: stop polling and delivering (what is in flight finishes). Leading: read the
    /// queue's front, which may hold entries other instances wrote.
    fn follow_lease(&mut self, ctx: &mut Context<Self>) {
        let leading = self.queues.leading();
        if leading && !self.leading {
            tracing::info!(
                actor = NAME,
                "this instance now polls Telegram and delivers notifications"
            );
            self.metric(TelegramMetric::LeaderChange);
            self.leading = true;
            self.polling = updates::State::default();
            self.reload_queue();
            self.start_polling(ctx);
        } else if !leading && self.leading {
            tracing::warn!(
                actor = NAME,
                "another instance took the Telegram poller's lease; this one stops polling and delivering"
            );
            self.metric(TelegramMetric::LeaderChange);
            self.leading = false;
        }
        // Entries come and go on other instances too: the outbox's size is counted here.
        if self.counts.due(self.leading) {
            self.recount();
        }
        if self.leading {
            self.pump(ctx);
        }
    }

    fn recount(&mut self) {
        match self.queues.scan(Channel::Telegram) {
            Ok((count, last)) => {
                self.queued = count;
                self.ready_through = self.ready_through.max(last);
                let through = self.ready_through;
                self.ready.retain(|&seq| seq > through);
                self.publish_outbox();
            }
            Err(error) => tracing::warn!(actor = NAME, %error, "cannot count the Telegram queue"),
        }
    }

    fn start_polling(&mut self, ctx: &mut Context<Self>) {
        match self.settings.webhook.clone() {
            Some(webhook) => self.register_webhook(webhook, 1, ctx),
            None if self.poll_stopped => {
                self.poll_stopped = false;
                self.poll(ctx);
            }
            None => {}
        }
    }

    /// (Re)read the queue: everything in it now is durable (it survived to be read).
    fn reload_queue(&mut self) {
        match self.queues.scan(Channel::Telegram) {
            Ok((count, last)) => {
                self.queued = count;
                self.ready_through = last;
                self.ready.clear();
                self.cache.clear();
                self.superseded.clear();
                // Which approvals already ended, so a first message still queued is posted
                // decided. Streamed: a day-long outage's backlog is not held in memory at once.
                let superseded = &mut self.superseded;
                let visited = self.queues.visit(Channel::Telegram, &mut |seq, entry| {
                    if entry.event.is_change() && entry.only.is_none() {
                        superseded.insert(entry.approval.id, seq);
                    }
                });
                if let Err(error) = visited {
                    tracing::error!(actor = NAME, %error, "cannot read the Telegram queue");
                }
                if count > 0 {
                    tracing::info!(
                        actor = NAME,
                        queued = count,
                        "replaying undelivered Telegram notifications"
                    );
                }
            }
            Err(error) => {
                self.last_error = Some(format!("cannot read the Telegram queue: {error}"));
                tracing::error!(actor = NAME, %error, "cannot read the Telegram queue");
            }
        }
    }

    /// Log, count and announce a breaker state change.
    fn on_transition(&mut self, transition: Option<Transition>) {
        let Some(Transition { from, to }) = transition else {
            return;
        };
        self.metric(TelegramMetric::BreakerState(to.gauge()));
        self.metric(TelegramMetric::BreakerTransition { to: to.as_str() });
        let text = match to.as_str() {
            "open" => format!(
                "Telegram is failing: the circuit breaker opened after repeated errors (last: {}). \
                 Notifications wait in the outbox ({} queued) and go out when Telegram is back; \
                 decide meanwhile with `approval-gate approvals list` / `approve ID` or the REST API.",
                self.last_error.as_deref().unwrap_or("unknown"),
                self.queued
            ),
            "half_open" => "Probing Telegram again after the break.".to_string(),
            _ => format!(
                "Telegram is reachable again; delivering {} queued notifications.",
                self.queued
            ),
        };
        tracing::warn!(
            actor = NAME,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker: {text}"
        );
        self.fallback.do_send(Announce(Announcement {
            subject: format!("Telegram circuit breaker {}", to.as_str().replace('_', "-")),
            text,
        }));
    }

    /// Make the gateway's saved update offset durable without waiting on it (a full commit: it is
    /// written straight to sled).
    fn commit_in_background(&self, ctx: &mut Context<Self>) {
        let commit = self.queues.commit();
        ctx.spawn(
            async move {
                if let Err(error) = commit.wait().await {
                    tracing::error!(actor = NAME, %error, "cannot commit the gateway's state");
                }
            }
            .into_actor(self),
        );
    }

    fn health_status(&self) -> HealthStatus {
        let failing = self.consecutive_failures > 0 || self.polling.failures > 0;
        if self.breaker.state() != super::breaker::BreakerState::Closed || failing {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }
}

impl Actor for TelegramGateway {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        supervision::guarded_with(NAME, self, ctx, |act, ctx| {
            // A restart drops every future of the old incarnation: nothing is in flight now.
            act.delivery = delivery::State::default();
            act.polling = updates::State::default();
            act.breaker.forget_probe();
            act.told_fallback.clear();
            act.told_through = 0;
            act.walked.clear();
            act.reload_queue();
            act.publish_outbox();
            act.metric(TelegramMetric::BreakerState(act.breaker.state().gauge()));
            act.poll_stopped = true;
            act.leading = act.queues.leading();
            if act.leading {
                act.start_polling(ctx);
            }
            if act.queues.shared() {
                supervision::run_interval(ctx, NAME, FOLLOW_LEASE_EVERY, |act, ctx| {
                    act.follow_lease(ctx)
                });
            }
            act.pump(ctx);
        });
    }
}

/// One log line per Bot API call made for an approval, with the approval id and the id of the
/// request (or tap) that caused it, so an operator can follow one approval across every actor.
pub(super) fn log_call<T>(
    attempt: &super::api::Attempt<T>,
    approval_id: Option<crate::domain::ApprovalId>,
    request_id: &str,
) {
    let approval_id = approval_id.map(|id| id.to_string());
    let approval_id = approval_id.as_deref().unwrap_or("-");
    let took_ms = (attempt.took.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    match &attempt.result {
        Ok(_) => tracing::info!(
            actor = NAME,
            method = attempt.method,
            approval_id,
            request_id,
            outcome = "ok",
            took_ms,
            "telegram call"
        ),
        Err(failure) => tracing::info!(
            actor = NAME,
            method = attempt.method,
            approval_id,
            request_id,
            outcome = failure.reason,
            error = %failure.detail,
            took_ms,
            "telegram call"
        ),
    }
}
