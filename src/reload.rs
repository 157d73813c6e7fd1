//! Live reconfiguration: SIGHUP, or a change to the `serve --config` file, loads the settings
//! again through the same loader and validation as start-up.
//!
//! An invalid configuration is rejected with a log line naming the key, and the running
//! settings stay. A valid one is applied to everything that can change while running: tokens,
//! rate limits, policy, grants and input limits (registry), approval timeouts and hook waits
//! (HTTP), Telegram's retry, breaker, pacing and allowed users, the fallback retries, the log
//! level. Settings that need a restart (listeners, the store, the bot and chat, channels) keep
//! their running values and are named in a warning. `approval_gate_config_reloads_total{outcome}`
//! counts both outcomes. Owns nothing but the watch; it reaches the actors only by message.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::web;
use approval_gate_actors::metrics::Metric;
use serde_json::Value;

use crate::http::{AppState, Limits, Tokens};
use crate::settings::{self, Settings, Sources};
use crate::telemetry::LogLevel;

/// How often the `--config` file's modification time is checked. Polling one file's metadata
/// is cheap and needs no watcher crate; a reload a second or two late is fine for operators.
const FILE_CHECK: Duration = Duration::from_secs(2);

/// Keys whose new values need a restart: kept at their running values by a reload.
const RESTART_ONLY: &[&str] = &[
    "server.bind",
    "server.workers",
    "server.max_body_bytes",
    "server.shutdown_timeout",
    "server.tls",
    "server.public_url",
    "approval_timeout.check_interval",
    "store",
    "monitoring.bind",
    "monitoring.metrics_enabled",
    "monitoring.metrics_path",
    "monitoring.otlp_endpoint",
    "logging.format",
    "logging.directory",
    "logging.file_prefix",
    "telegram.enabled",
    "telegram.bot_token",
    "telegram.bot_token_file",
    "telegram.api_url",
    "telegram.chat_id",
    "telegram.mode",
    "telegram.webhook_url",
    "telegram.webhook_secret",
    "telegram.callback_secret",
    "telegram.previous_callback_secret",
    "telegram.callback_secret_grace",
    "telegram.request_timeout",
    "telegram.poll_timeout",
    "fallback.order",
    "fallback.strategy",
    "fallback.file_path",
    "fallback.file_max_bytes",
    "fallback.always",
    "fallback.email",
    "debug",
];

/// The SIGHUP listener.
pub type Hangups = tokio::signal::unix::Signal;

/// Listen for SIGHUP from now on (on a runtime); `None`, logged, if the signal cannot be caught.
pub fn hangups() -> Option<Hangups> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reloads follow the config file only");
            None
        }
    }
}

pub struct Reloader {
    sources: Sources,
    state: web::Data<AppState>,
    tokens: web::Data<Tokens>,
    log_level: LogLevel,
    certificates: Option<Arc<crate::tls::Certificates>>,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub took: Duration,
    /// Changed keys that keep their running value until a restart.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    pub fn new(
        sources: Sources,
        state: web::Data<AppState>,
        tokens: web::Data<Tokens>,
        log_level: LogLevel,
        certificates: Option<Arc<crate::tls::Certificates>>,
    ) -> Self {
        Self {
            sources,
            state,
            tokens,
            log_level,
            certificates,
        }
    }

    /// Reload on SIGHUP (`hangups`) and whenever the `--config` file's modification time
    /// changes.
    pub async fn watch(self, mut hangups: Option<Hangups>) {
        let file = self.sources.config_file.clone();
        let mut seen = file.as_deref().and_then(modified);
        let mut ticker = tokio::time::interval(FILE_CHECK);
        loop {
            let cause = tokio::select! {
                Some(()) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = ticker.tick() => {
                    let now = file.as_deref().and_then(modified);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the config file changed"
                }
            };
            self.reload_logged(cause);
        }
    }

    fn reload_logged(&self, cause: &str) {
        match self.reload() {
            Ok(reloaded) => {
                self.count("applied");
                tracing::info!(
                    cause,
                    took_us = reloaded.took.as_micros() as u64,
                    "configuration reloaded"
                );
                if !reloaded.need_restart.is_empty() {
                    tracing::warn!(
                        keys = ?reloaded.need_restart,
                        "changed settings that take effect only after a restart; they keep their running values"
                    );
                }
            }
            Err(error) => {
                self.count("rejected");
                tracing::error!(cause, %error, "configuration reload rejected; the running settings stay");
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.state
            .actors
            .metrics
            .do_send(Metric::ConfigReload { outcome });
    }

    /// Load, validate and apply. On error nothing changed.
    pub fn reload(&self) -> Result<Reloaded, settings::SettingsError> {
        let started = Instant::now();
        let loaded = settings::load(&self.sources)?;
        let running = self.state.settings();
        let (settings, need_restart) = keep_restart_only(&running, loaded)?;
        let registry = crate::startup::registry_settings(&settings).map_err(|e| {
            settings::SettingsError::Invalid {
                key: "policy.rules",
                value: String::new(),
                allowed: e.to_string(),
            }
        })?;
        // Check everything that can fail before anything is applied: a rejected reload
        // changes nothing.
        let filter = self
            .log_level
            .parse(&settings.logging.level)
            .map_err(|problem| settings::SettingsError::Invalid {
                key: "logging.level",
                value: settings.logging.level.clone(),
                allowed: problem,
            })?;
        let certificate = match &self.certificates {
            // Renewed files (same paths; the paths themselves need a restart).
            Some(_) => {
                let tls = &running.server.tls;
                Some(
                    crate::tls::Certificates::read(
                        tls.cert.trim().as_ref(),
                        tls.key.trim().as_ref(),
                    )
                    .map_err(|e| settings::SettingsError::Invalid {
                        key: "server.tls",
                        value: tls.cert.clone(),
                        allowed: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        // Everything below only sends or swaps; nothing can fail half-way.
        self.log_level.apply(filter);
        if let (Some(certificates), Some(certificate)) = (&self.certificates, certificate) {
            certificates.install(certificate);
        }
        self.tokens.replace(&settings.auth);
        self.state
            .live_limits
            .store(Arc::new(Limits::new(&settings.limits)));
        let actors = &self.state.actors;
        actors
            .registry
            .do_send(approval_gate_actors::registry::Reconfigure(registry));
        if let (Some(gateway), Some(telegram)) = (
            &actors.telegram,
            crate::startup::telegram_settings(&settings),
        ) {
            gateway.do_send(approval_gate_actors::telegram::gateway::Reconfigure(
                telegram,
            ));
        }
        actors
            .fallback
            .do_send(approval_gate_actors::fallback::Reconfigure {
                max_attempts: settings.fallback.max_attempts,
                dead_letter_after: settings.fallback.dead_letter_after,
                retry_delay: settings.fallback.retry_delay,
                batch_interval: settings.fallback.batch_interval,
            });
        self.state.live.store(Arc::new(settings));
        Ok(Reloaded {
            took: started.elapsed(),
            need_restart,
        })
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `loaded` with every restart-only key at its running value, and the keys that differed.
fn keep_restart_only(
    running: &Settings,
    loaded: Settings,
) -> Result<(Settings, Vec<&'static str>), settings::SettingsError> {
    let encode = |s: &Settings| serde_json::to_value(s).unwrap_or(Value::Null);
    let old = encode(running);
    let mut new = encode(&loaded);
    let mut changed = Vec::new();
    for key in RESTART_ONLY {
        let pointer = format!("/{}", key.replace('.', "/"));
        let (Some(before), Some(after)) = (old.pointer(&pointer), new.pointer(&pointer)) else {
            continue;
        };
        if before != after {
            changed.push(*key);
            let before = before.clone();
            if let Some(slot) = new.pointer_mut(&pointer) {
                *slot = before;
            }
        }
    }
    let merged: Settings =
        serde_json::from_value(new).map_err(|e| settings::SettingsError::Invalid {
            key: "(reload)",
            value: String::new(),
            allowed: format!("the reloaded settings could not be merged: {e}"),
        })?;
    // The file was validated on its own values; the process will run the merge. A rule that
    // ties a reloadable key to a restart-only one (tokens to a non-loopback bind, the allow-list
    // to a running Telegram gateway, email settings to a channel in use) must hold for the
    // merge, or a reload could turn authentication off on a public listener.
    settings::validate(&merged)?;
    Ok((merged, changed))
}
