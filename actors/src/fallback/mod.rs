//! FallbackNotifier: tells operators about approvals through channels that do not need Telegram
//! (console, local file, and later email), in the configured priority order.
//!
//! Two strategies: `all` tells every channel (the default: the console line and the file both
//! exist to be read), `first` walks the chain and stops at the first channel that succeeds, so a
//! failing channel hands over to the next. Notifications are handled one at a time, in order.
//! This actor owns only its channels and their counters; it never reads approval state itself.

mod console;
mod file;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::metrics::Metric;
use crate::notification::{Notification, Notify, OperatorHints};
use crate::supervision::{ActorHealth, Crash, HealthStatus, Ping, Restarts, guarded};

pub const NAME: &str = "fallback_notifier";

#[derive(Debug, Clone)]
pub enum ChannelConfig {
    Console,
    File { path: PathBuf },
}

impl ChannelConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelConfig::Console => "console",
            ChannelConfig::File { .. } => "file",
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
    stats: Vec<ChannelStats>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
}

impl FallbackNotifier {
    pub fn new(settings: FallbackSettings, metrics: Recipient<Metric>) -> Self {
        let stats = settings
            .channels
            .iter()
            .map(|c| ChannelStats {
                channel: c.name(),
                ..Default::default()
            })
            .collect();
        Self {
            settings: Arc::new(settings),
            stats,
            metrics,
            restarts: Restarts::default(),
        }
    }

    fn deliver(&mut self, notification: &Notification) {
        let settings = Arc::clone(&self.settings);
        for (index, channel) in settings.channels.iter().enumerate() {
            let result = match channel {
                ChannelConfig::Console => console::deliver(notification, &settings.hints),
                ChannelConfig::File { path } => file::deliver(path, notification, &settings.hints),
            };
            let ok = result.is_ok();
            self.record(index, result, notification);
            if ok && settings.strategy == Strategy::First {
                return;
            }
        }
    }

    fn record(&mut self, index: usize, result: Result<(), String>, notification: &Notification) {
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
                    approval_id = %notification.approval.id,
                    request_id = notification.request_id.as_deref().unwrap_or("-"),
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
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Notify> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, Notify(notification): Notify, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || self.deliver(&notification));
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

impl Handler<Crash> for FallbackNotifier {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || panic!("fault injection: crash requested"));
    }
}
