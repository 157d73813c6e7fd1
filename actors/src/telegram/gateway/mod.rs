//! TelegramGateway: all Bot API traffic. It turns notifications into outbox entries and drains
//! the outbox (`delivery`), runs the getUpdates loop and turns taps into decisions (`updates`),
//! and owns the retry policy and the circuit breaker.
//!
//! It owns the `outbox`, `outbox_dead`, `telegram_messages` trees and its keys in `meta`. It
//! never touches approval state: decisions go to the registry as `Decide`, like a REST decision.

mod delivery;
mod updates;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::api::Api;
use super::breaker::{BreakerSettings, CircuitBreaker, Transition};
use super::callback::CallbackCodec;
use super::outbox::{MessageLog, Outbox};
use super::retry::RetryPolicy;
use crate::fallback::{Announce, Announcement, FallbackNotifier};
use crate::metrics::{Metric, TelegramMetric};
use crate::notification::{Event, Notify};
use crate::registry::ApprovalRegistry;
use crate::store::{Committer, StoreError};
use crate::supervision::{ActorHealth, HealthStatus, Ping, Restarts, guarded};

pub const NAME: &str = "telegram_gateway";
const OFFSET_KEY: &[u8] = b"telegram_update_offset";
const SECRET_KEY: &[u8] = b"telegram_callback_secret";

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
}

/// The trees the gateway owns, opened while wiring up.
pub struct GatewayStore {
    pub outbox: sled::Tree,
    pub dead: sled::Tree,
    pub messages: sled::Tree,
    pub meta: sled::Tree,
    pub committer: Committer,
}

/// The configured secret, or the one stored in sled, or a new random one (stored and flushed),
/// so buttons keep working across restarts.
pub fn callback_secret(meta: &sled::Tree, configured: Option<&str>) -> Result<Vec<u8>, StoreError> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok(secret.as_bytes().to_vec());
    }
    if let Some(stored) = meta.get(SECRET_KEY)? {
        return Ok(stored.to_vec());
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| StoreError::Io(sled::Error::Unsupported("no system randomness".into())))?;
    meta.insert(SECRET_KEY, &secret)?;
    meta.flush()?;
    Ok(secret.to_vec())
}

/// Tells the gateway where the registry is (the registry starts after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect(pub Addr<ApprovalRegistry>);

/// Circuit-breaker facts for `/api/diagnostics/circuit-breaker`.
#[derive(Message)]
#[rtype(result = "BreakerReport")]
pub struct BreakerStatus;

#[derive(Debug, Clone, Serialize)]
pub struct BreakerReport {
    pub state: &'static str,
    pub calls_in_window: usize,
    pub failures_in_window: usize,
    pub opened_at: Option<String>,
    pub next_probe_at: Option<String>,
    pub outbox_size: usize,
}

pub struct TelegramGateway {
    settings: Arc<TelegramSettings>,
    api: Api,
    codec: Arc<CallbackCodec>,
    outbox: Outbox,
    messages: MessageLog,
    meta: sled::Tree,
    committer: Committer,
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
    consecutive_failures: u32,
    /// Entries past `told_through` already told individually (retries exhausted).
    told_fallback: HashSet<u64>,
    /// Every entry up to this sequence number has been told to the fallback channels.
    told_through: u64,
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
        Ok(Self {
            api,
            codec: Arc::new(CallbackCodec::new(&secret)),
            outbox: Outbox::open(store.outbox, store.dead)?,
            messages: MessageLog::new(store.messages),
            meta: store.meta,
            committer: store.committer,
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
            consecutive_failures: 0,
            told_fallback: HashSet::new(),
            told_through: 0,
        })
    }

    fn metric(&self, metric: TelegramMetric) {
        self.metrics.do_send(Metric::Telegram(metric));
    }

    fn publish_outbox(&self) {
        self.metric(TelegramMetric::OutboxSize(self.outbox.len() as i64));
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
                self.outbox.len()
            ),
            "half_open" => "Probing Telegram again after the break.".to_string(),
            _ => format!(
                "Telegram is reachable again; delivering {} queued notifications.",
                self.outbox.len()
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

    fn commit_in_background(&self, ctx: &mut Context<Self>) {
        let commit = self.committer.commit();
        ctx.spawn(
            async move {
                if let Err(error) = commit.wait().await {
                    tracing::error!(actor = NAME, %error, "cannot flush the outbox");
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
        self.delivery = delivery::State::default();
        self.polling = updates::State::default();
        self.publish_outbox();
        self.metric(TelegramMetric::BreakerState(self.breaker.state().gauge()));
        self.poll(ctx);
        self.pump(ctx);
    }
}

impl Supervised for TelegramGateway {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Connect> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, Connect(registry): Connect, ctx: &mut Context<Self>) {
        self.registry = Some(registry.clone());
        // Announce pending approvals no message shows yet (e.g. created while Telegram was
        // disabled, or lost between the approval's commit and its outbox entry).
        registry
            .send(crate::registry::Unannounced)
            .into_actor(self)
            .map(|result, act, ctx| {
                let Ok(Ok(approvals)) = result else { return };
                let mut added = 0;
                for approval in approvals {
                    if !act.outbox.has_send_for(approval.id)
                        && act.outbox.push_created(approval, None).is_ok()
                    {
                        added += 1;
                    }
                }
                if added > 0 {
                    tracing::info!(
                        actor = NAME,
                        added,
                        "queued pending approvals that Telegram has not shown yet"
                    );
                    act.commit_in_background(ctx);
                    act.publish_outbox();
                    act.pump(ctx);
                }
            })
            .spawn(ctx);
    }
}

impl Handler<Notify> for TelegramGateway {
    type Result = ();

    fn handle(&mut self, Notify(notification): Notify, ctx: &mut Context<Self>) {
        let request_id = notification.request_id.clone();
        let pushed = guarded(NAME, ctx, || match notification.event {
            Event::Created => self
                .outbox
                .push_created(notification.approval.clone(), request_id),
            Event::Ended => self
                .outbox
                .push_ended(notification.approval.clone(), request_id),
        });
        match pushed {
            Ok(Ok(seq)) => {
                self.commit_in_background(ctx);
                self.publish_outbox();
                // While Telegram is known to be down, operators hear about it at once.
                if self.breaker.state() != super::breaker::BreakerState::Closed {
                    self.tell_fallback(seq, notification);
                }
                self.pump(ctx);
            }
            Ok(Err(error)) => {
                tracing::error!(actor = NAME, %error, "cannot queue a Telegram notification; telling the fallback channels");
                self.fallback.do_send(Notify(notification));
            }
            Err(_) => self.fallback.do_send(Notify(notification)),
        }
    }
}

impl Handler<BreakerStatus> for TelegramGateway {
    type Result = MessageResult<BreakerStatus>;

    fn handle(&mut self, _: BreakerStatus, _: &mut Context<Self>) -> Self::Result {
        let (calls, failures) = self.breaker.window_counts(Instant::now());
        MessageResult(BreakerReport {
            state: self.breaker.state().as_str(),
            calls_in_window: calls,
            failures_in_window: failures,
            opened_at: self.breaker.opened_at().map(when),
            next_probe_at: self.breaker.next_probe_at().map(when_future),
            outbox_size: self.outbox.len(),
        })
    }
}

impl Handler<Ping> for TelegramGateway {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ActorHealth {
            actor: NAME,
            status: self.health_status(),
            restarts: self.restarts.count(),
            detail: serde_json::json!({
                "breaker_state": self.breaker.state().as_str(),
                "bot_username": self.bot_username,
                "last_success": self.last_success.map(when),
                "last_error": self.last_error,
                "consecutive_failures": self.consecutive_failures,
                "poll_failures": self.polling.failures,
                "outbox_size": self.outbox.len(),
                "dead_letters": self.outbox.dead_letters(),
            }),
        })
    }
}

crate::supervision::crash_handler!(TelegramGateway, NAME);
