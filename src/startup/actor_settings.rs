//! The actors' share of the settings: each section of the validated [`Settings`] translated into
//! the settings type of the actor that uses it, at start-up and (registry, Telegram) on every
//! reload. Nothing here validates: [`crate::settings`] did that at load.

use std::sync::Arc;

use approval_gate_actors::fallback::{
    ChannelConfig, EmailSettings, FallbackSettings as ChainSettings,
};
use approval_gate_actors::notification::OperatorHints;
use approval_gate_actors::registry::RegistrySettings;
use approval_gate_actors::telegram::breaker::BreakerSettings;
use approval_gate_actors::telegram::gateway::TelegramSettings;
use approval_gate_actors::telegram::retry::RetryPolicy;

use super::StartupError;
use crate::settings::{self, Settings};

pub(super) fn chain_settings(s: &Settings) -> ChainSettings {
    let channels = s
        .fallback
        .order
        .iter()
        .filter_map(|name| match name.as_str() {
            "console" => Some(ChannelConfig::Console),
            "file" => Some(ChannelConfig::File {
                path: s.fallback.file_path.clone(),
                max_bytes: s.fallback.file_max_bytes,
            }),
            "email" => Some(ChannelConfig::Email(email_settings(s))),
            // Unknown names are rejected by settings validation before we get here.
            _ => None,
        })
        .collect();
    ChainSettings {
        channels,
        strategy: s.fallback.strategy,
        hints: OperatorHints {
            public_url: s.public_url(),
        },
        max_attempts: s.fallback.max_attempts,
        dead_letter_after: s.fallback.dead_letter_after,
        retry_delay: s.fallback.retry_delay,
        batch_interval: s.fallback.batch_interval,
    }
}

fn email_settings(s: &Settings) -> EmailSettings {
    let e = &s.fallback.email;
    let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_string());
    EmailSettings {
        host: e.smtp_host.clone(),
        port: e.smtp_port,
        tls: e.tls,
        username: non_empty(&e.username),
        password: non_empty(&e.password),
        from: e.from.clone(),
        to: e.to.clone(),
        timeout: e.timeout,
    }
}

/// The registry's share of the settings (at start and on every reload).
pub(crate) fn registry_settings(settings: &Settings) -> Result<RegistrySettings, StartupError> {
    Ok(RegistrySettings {
        max_waiters: settings.server.max_waiters,
        // Never more than all of them (a lower max_waiters alone must not need both set).
        max_waiters_per_agent: settings
            .server
            .max_waiters_per_agent
            .min(settings.server.max_waiters),
        grace_period: settings.approval_timeout.grace_period,
        retention: Some(settings.store.retention).filter(|r| !r.is_zero()),
        // Validated at load, so compiling again cannot fail here.
        policy: Arc::new(
            approval_gate_actors::policy::Policy::compile(&settings.policy.rules).map_err(|e| {
                settings::SettingsError::Invalid {
                    key: "policy.rules",
                    value: e.rule,
                    allowed: e.problem,
                }
            })?,
        ),
        risk: Arc::new(approval_gate_actors::risk::Assessor::new(
            &settings.risk.detectors,
        )),
        require_comment_at: settings.policy.require_comment_at,
        escalation: Arc::new(settings.escalation.clone()),
        max_grant: settings.agents.max_grant,
        max_pending_per_agent: settings.limits.max_pending_per_agent,
        return_freed_memory: crate::memory::return_freed,
        trace_approvals: cfg!(feature = "otlp")
            && crate::telemetry::otlp_endpoint(&settings.monitoring.otlp_endpoint).is_some(),
        input_limits: approval_gate_actors::domain::InputLimits {
            max_depth: settings.server.max_input_depth,
            max_bytes: settings.server.max_tool_input_bytes,
        },
    })
}

pub(crate) fn telegram_settings(s: &Settings) -> Option<TelegramSettings> {
    let t = &s.telegram;
    let b = &s.circuit_breaker;
    t.enabled.then(|| TelegramSettings {
        bot_token: t.bot_token.clone(),
        // Validated at load; the official URL is teloxide's default anyway.
        api_url: reqwest::Url::parse(&t.api_url).ok(),
        chat_id: t.chat_id,
        allowed_user_ids: t.allowed_user_ids.clone(),
        request_timeout: t.request_timeout,
        poll_timeout: t.poll_timeout,
        send_interval: t.send_interval,
        retry: RetryPolicy {
            max_attempts: t.retry.max_attempts,
            initial_delay: t.retry.initial_delay,
            max_delay: t.retry.max_delay,
            jitter: t.retry.jitter,
        },
        breaker: BreakerSettings {
            failure_threshold: b.failure_threshold,
            failure_ratio: b.failure_ratio,
            sampling_duration: b.sampling_duration,
            minimum_throughput: b.minimum_throughput,
            break_duration: b.break_duration,
        },
        session_grant: s.agents.session_button.then_some(s.agents.session_grant),
        previous_secret: (!t.previous_callback_secret.is_empty()).then(|| {
            (
                t.previous_callback_secret.as_bytes().to_vec(),
                std::time::Instant::now() + t.callback_secret_grace,
            )
        }),
        group_messages_per_minute: t.group_messages_per_minute,
        chats: t
            .chats
            .iter()
            .map(|(name, id)| (name.clone(), *id))
            .collect(),
        escalation_reposts: s.escalation.iter().map(|step| step.repost).collect(),
        digest_after: t.digest_after,
        console_url: s
            .console
            .enabled
            .then(|| format!("{}/console/", s.public_url())),
        // Validated at load: webhook mode has a parseable URL.
        webhook: (t.mode == settings::TelegramMode::Webhook)
            .then(|| reqwest::Url::parse(t.webhook_url.trim()).ok())
            .flatten()
            .map(|url| approval_gate_actors::telegram::gateway::Webhook {
                url,
                secret: t.webhook_secret.clone(),
            }),
    })
}
