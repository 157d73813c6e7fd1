//! FallbackNotifier: tells operators about approvals through channels that do not need Telegram
//! (console, local file, SMTP email), in the configured priority order.
//!
//! Two strategies: `all` tells every channel (the default: the console line and the file both
//! exist to be read), `first` walks the chain and stops at the first channel that succeeds, so a
//! failing channel hands over to the next. Notifications are handled one at a time, in order.
//! This actor owns only its channels and their counters; it never reads approval state itself.

mod console;
mod email;
mod file;
mod text;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use serde::Serialize;

use email::EmailChannel;
pub use email::{EmailSettings, EmailTls};

use crate::metrics::Metric;
use crate::notification::{Notification, Notify, OperatorHints};
use crate::supervision::{ActorHealth, HealthStatus, Ping, Restarts};

pub const NAME: &str = "fallback_notifier";

#[derive(Debug, Clone)]
pub enum ChannelConfig {
    Console,
    File { path: PathBuf },
    Email(EmailSettings),
}

impl ChannelConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelConfig::Console => "console",
            ChannelConfig::File { .. } => "file",
            ChannelConfig::Email(_) => "email",
        }
    }
}

/// Something for operators that is not about one approval (e.g. "Telegram is unreachable").
#[derive(Debug, Clone)]
pub struct Announcement {
    pub subject: String,
    pub text: String,
}

#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Announce(pub Announcement);

/// What a channel is asked to deliver.
enum Outgoing {
    Approval(Box<Notification>),
    Announcement(Announcement),
}

impl Outgoing {
    fn label(&self) -> (String, Option<String>) {
        match self {
            Outgoing::Approval(n) => (n.approval.id.to_string(), n.request_id.clone()),
            Outgoing::Announcement(a) => (a.subject.clone(), None),
        }
    }
}

/// A ready-to-use channel (the email transport is built once, at start).
enum Channel {
    Console,
    File(PathBuf),
    Email(Box<EmailChannel>),
    /// A channel whose configuration could not be turned into a transport; every delivery
    /// fails with this reason and hands over to the next channel.
    Broken(String),
}

impl Channel {
    fn build(config: &ChannelConfig) -> Self {
        match config {
            ChannelConfig::Console => Channel::Console,
            ChannelConfig::File { path } => Channel::File(path.clone()),
            ChannelConfig::Email(settings) => match EmailChannel::new(settings) {
                Ok(channel) => Channel::Email(Box::new(channel)),
                Err(error) => Channel::Broken(error),
            },
        }
    }

    /// Deliver a batch; one result per item, in order.
    async fn deliver(&self, batch: &[&Outgoing], hints: &OperatorHints) -> Vec<Result<(), String>> {
        match self {
            Channel::Console => batch
                .iter()
                .map(|outgoing| match outgoing {
                    Outgoing::Approval(n) => console::deliver(n, hints),
                    Outgoing::Announcement(a) => console::announce(a),
                })
                .collect(),
            Channel::File(path) => {
                let lines: String = batch
                    .iter()
                    .map(|outgoing| match outgoing {
                        Outgoing::Approval(n) => file::approval_line(n, hints),
                        Outgoing::Announcement(a) => file::announcement_line(a),
                    })
                    .collect();
                let result = file::append(path, &lines);
                vec![result; batch.len()]
            }
            Channel::Email(email) => {
                let mut results = Vec::with_capacity(batch.len());
                for outgoing in batch {
                    let (subject, body) = match outgoing {
                        Outgoing::Approval(n) => text::email(n, hints),
                        Outgoing::Announcement(a) => {
                            (format!("[approval-gate] {}", a.subject), a.text.clone())
                        }
                    };
                    results.push(email.send(&subject, body).await);
                }
                results
            }
            Channel::Broken(error) => vec![Err(error.clone()); batch.len()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    All,
    First,
}

#[derive(Debug, Clone)]
pub struct FallbackSettings {
    pub channels: Vec<ChannelConfig>,
    pub strategy: Strategy,
    pub hints: OperatorHints,
}

#[derive(Debug, Default, Clone, Serialize)]
struct ChannelStats {
    channel: &'static str,
    delivered: u64,
    failed: u64,
    last_error: Option<String>,
    consecutive_failures: u64,
}

pub struct FallbackNotifier {
    settings: Arc<FallbackSettings>,
    channels: Arc<Vec<Channel>>,
    /// What arrived while a batch was being delivered; it goes out as the next batch.
    queue: Vec<Outgoing>,
    draining: bool,
    stats: Vec<ChannelStats>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
}

impl FallbackNotifier {
    /// Must be called on the arbiter the actor runs on (the email transport binds to its runtime).
    pub fn new(settings: FallbackSettings, metrics: Recipient<Metric>) -> Self {
        let stats = settings
            .channels
            .iter()
            .map(|c| ChannelStats {
                channel: c.name(),
                ..Default::default()
            })
            .collect();
        let channels = settings.channels.iter().map(Channel::build).collect();
        Self {
            settings: Arc::new(settings),
            channels: Arc::new(channels),
            queue: Vec::new(),
            draining: false,
            stats,
            metrics,
            restarts: Restarts::default(),
        }
    }

    /// Queue, and start a batch unless one is under way. Batches go out one after the other,
    /// so operators see notifications in the order they happened.
    fn dispatch(&mut self, outgoing: Outgoing, ctx: &mut Context<Self>) {
        self.queue.push(outgoing);
        self.drain(ctx);
    }

    /// Walk the chain with everything queued: each channel gets the whole batch (the file
    /// channel writes it with one fsync). With strategy `first`, a channel only gets the items
    /// every earlier channel failed to deliver.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.queue.is_empty() {
            return;
        }
        self.draining = true;
        let batch = std::mem::take(&mut self.queue);
        let channels = Arc::clone(&self.channels);
        let settings = Arc::clone(&self.settings);
        let walk = async move {
            let mut results = Vec::new();
            let mut remaining: Vec<usize> = (0..batch.len()).collect();
            for (index, channel) in channels.iter().enumerate() {
                if remaining.is_empty() {
                    break;
                }
                let items: Vec<&Outgoing> = remaining.iter().map(|&i| &batch[i]).collect();
                let outcomes = channel.deliver(&items, &settings.hints).await;
                let mut failed = Vec::new();
                for (&item, outcome) in remaining.iter().zip(outcomes) {
                    if outcome.is_err() {
                        failed.push(item);
                    }
                    results.push((index, outcome, batch[item].label()));
                }
                if settings.strategy == Strategy::First {
                    remaining = failed;
                }
            }
            results
        };
        // The walk runs outside any handler, so guard it here: a panic becomes a stop and the
        // supervisor restarts the notifier (an unguarded panic would take the actor down).
        let walk = std::panic::AssertUnwindSafe(walk).catch_unwind();
        ctx.spawn(walk.into_actor(self).map(|outcome, act, ctx| {
            act.draining = false;
            match outcome {
                Ok(results) => {
                    for (index, result, label) in results {
                        act.record(index, result, &label);
                    }
                    act.drain(ctx);
                }
                Err(_) => {
                    tracing::error!(
                        actor = NAME,
                        "a fallback channel panicked; restarting the notifier"
                    );
                    ctx.stop();
                }
            }
        }));
    }

    fn record(
        &mut self,
        index: usize,
        result: Result<(), String>,
        (subject, request_id): &(String, Option<String>),
    ) {
        let Some(stats) = self.stats.get_mut(index) else {
            return;
        };
        let outcome = match result {
            Ok(()) => {
                stats.delivered += 1;
                stats.consecutive_failures = 0;
                "delivered"
            }
            Err(error) => {
                tracing::error!(
                    channel = stats.channel,
                    subject = %subject,
                    request_id = request_id.as_deref().unwrap_or("-"),
                    %error,
                    "fallback channel failed; handing over to the next one"
                );
                stats.failed += 1;
                stats.consecutive_failures += 1;
                stats.last_error = Some(error);
                "failed"
            }
        };
        self.metrics.do_send(Metric::Fallback {
            channel: stats.channel,
            outcome,
        });
    }
}

impl Actor for FallbackNotifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for FallbackNotifier {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The batch in flight was dropped with the old context; what is queued still goes out.
        self.draining = false;
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Notify> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, Notify(notification): Notify, ctx: &mut Context<Self>) {
        self.dispatch(Outgoing::Approval(Box::new(notification)), ctx);
    }
}

impl Handler<Announce> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, Announce(announcement): Announce, ctx: &mut Context<Self>) {
        self.dispatch(Outgoing::Announcement(announcement), ctx);
    }
}

impl Handler<Ping> for FallbackNotifier {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let failing = self
            .stats
            .iter()
            .filter(|s| s.consecutive_failures > 0)
            .count();
        let status = if failing == 0 {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        };
        MessageResult(ActorHealth {
            actor: NAME,
            status,
            restarts: self.restarts.count(),
            detail: serde_json::json!({
                "strategy": self.settings.strategy,
                "channels": self.stats,
            }),
        })
    }
}

crate::supervision::crash_handler!(FallbackNotifier, NAME);
