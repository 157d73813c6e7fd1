//! Bounds on the settings that tell operators: the fallback channels, SMTP, Telegram and the
//! circuit breaker. Same rules as the rest of `validate`: the first violation names the key,
//! its value and the allowed range.

use std::time::Duration;

use super::{duration_in, in_range, invalid, secs};
use crate::settings::{Settings, SettingsError};

pub(super) fn validate_fallback(s: &Settings) -> Result<(), SettingsError> {
    const KNOWN: [&str; 3] = ["console", "file", "email"];
    let mut seen = std::collections::HashSet::new();
    for channel in &s.fallback.order {
        if !KNOWN.contains(&channel.as_str()) {
            return Err(invalid(
                "fallback.order",
                channel,
                format!("known channels are {}", KNOWN.join(", ")),
            ));
        }
        if !seen.insert(channel) {
            return Err(invalid(
                "fallback.order",
                channel,
                "each channel may appear once",
            ));
        }
    }
    if s.fallback.order.iter().any(|c| c == "file") && s.fallback.file_path.as_os_str().is_empty() {
        return Err(invalid(
            "fallback.file_path",
            "\"\"",
            "must name a file when the file channel is used",
        ));
    }
    if s.fallback.order.iter().any(|c| c == "email") {
        validate_email(s)?;
    }
    in_range("fallback.max_attempts", s.fallback.max_attempts, 1, 100)?;
    duration_in(
        "fallback.dead_letter_after",
        s.fallback.dead_letter_after,
        Duration::ZERO,
        secs(30 * 24 * 3600),
    )?;
    duration_in(
        "fallback.retry_delay",
        s.fallback.retry_delay,
        Duration::from_millis(10),
        secs(60),
    )?;
    duration_in(
        "fallback.batch_interval",
        s.fallback.batch_interval,
        Duration::ZERO,
        secs(1),
    )?;
    if s.fallback.file_max_bytes != 0 {
        in_range(
            "fallback.file_max_bytes",
            s.fallback.file_max_bytes,
            1024,
            1 << 40,
        )?;
    }
    if !s.store.retention.is_zero() {
        duration_in(
            "store.retention",
            s.store.retention,
            secs(3600),
            secs(10 * 365 * 24 * 3600),
        )?;
    }
    Ok(())
}

pub(super) fn validate_email(s: &Settings) -> Result<(), SettingsError> {
    let email = &s.fallback.email;
    let required = "required when \"email\" is in fallback.order";
    if email.smtp_host.trim().is_empty() {
        return Err(invalid("fallback.email.smtp_host", "\"\"", required));
    }
    if email.smtp_port == 0 {
        return Err(invalid(
            "fallback.email.smtp_port",
            0,
            "allowed range is 1 ..= 65535",
        ));
    }
    if !email.from.contains('@') {
        return Err(invalid(
            "fallback.email.from",
            format!("{:?}", email.from),
            "must be an address like approval-gate@example.com",
        ));
    }
    if email.to.is_empty() || email.to.iter().any(|to| !to.contains('@')) {
        return Err(invalid(
            "fallback.email.to",
            format!("{:?}", email.to),
            "must list at least one address",
        ));
    }
    if email.username.is_empty() != email.password.is_empty() {
        return Err(invalid(
            "fallback.email.username",
            &email.username,
            "username and password (or password_file) go together",
        ));
    }
    duration_in("fallback.email.timeout", email.timeout, secs(1), secs(300))
}

pub(super) fn validate_telegram(s: &Settings) -> Result<(), SettingsError> {
    let t = &s.telegram;
    if !t.enabled {
        return Ok(());
    }
    if t.bot_token.trim().is_empty() {
        return Err(invalid(
            "telegram.bot_token",
            "\"\"",
            "required when telegram.enabled = true (or set TELEGRAM_BOT_TOKEN or telegram.bot_token_file)",
        ));
    }
    if t.chat_id == 0 {
        return Err(invalid(
            "telegram.chat_id",
            0,
            "required when telegram.enabled = true (or set TELEGRAM_CHAT_ID)",
        ));
    }
    if t.allowed_user_ids.is_empty() {
        return Err(invalid(
            "telegram.allowed_user_ids",
            "[]",
            "list the Telegram user ids allowed to decide",
        ));
    }
    match reqwest::Url::parse(&t.api_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => {
            return Err(invalid(
                "telegram.api_url",
                format!("{:?}", t.api_url),
                "must be an http(s) URL",
            ));
        }
    }
    duration_in(
        "telegram.request_timeout",
        t.request_timeout,
        Duration::from_millis(100),
        secs(60),
    )?;
    duration_in("telegram.poll_timeout", t.poll_timeout, secs(1), secs(15))?;
    duration_in("telegram.send_interval", t.send_interval, secs(0), secs(10))?;
    duration_in("telegram.digest_after", t.digest_after, secs(0), secs(600))?;
    let r = &t.retry;
    in_range("telegram.retry.max_attempts", r.max_attempts, 1, 10)?;
    duration_in(
        "telegram.retry.initial_delay",
        r.initial_delay,
        Duration::from_millis(1),
        secs(60),
    )?;
    duration_in(
        "telegram.retry.max_delay",
        r.max_delay,
        r.initial_delay,
        secs(3600),
    )?;
    Ok(())
}

pub(super) fn validate_breaker(s: &Settings) -> Result<(), SettingsError> {
    let b = &s.circuit_breaker;
    in_range(
        "circuit_breaker.failure_threshold",
        b.failure_threshold,
        1,
        1000,
    )?;
    in_range("circuit_breaker.failure_ratio", b.failure_ratio, 0.0, 1.0)?;
    in_range(
        "circuit_breaker.minimum_throughput",
        b.minimum_throughput,
        1,
        10_000,
    )?;
    duration_in(
        "circuit_breaker.sampling_duration",
        b.sampling_duration,
        secs(1),
        secs(3600),
    )?;
    duration_in(
        "circuit_breaker.break_duration",
        b.break_duration,
        Duration::from_millis(100),
        secs(3600),
    )
}
