//! Bounds on every setting. The first violation stops start-up with one line naming the key,
//! its value and the allowed range.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Settings, SettingsError};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn invalid(key: &'static str, value: impl Display, allowed: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

fn show(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

fn in_range<T: PartialOrd + Display + Copy>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), SettingsError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            value,
            format!("allowed range is {min} ..= {max}"),
        ));
    }
    Ok(())
}

fn duration_in(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), SettingsError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            show(value),
            format!("allowed range is {} ..= {}", show(min), show(max)),
        ));
    }
    Ok(())
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn validate(s: &Settings) -> Result<(), SettingsError> {
    validate_server(s)?;
    validate_timeouts(s)?;
    validate_auth(s)?;
    validate_logging(s)?;
    validate_fallback(s)?;
    if !s.monitoring.metrics_path.starts_with('/') {
        return Err(invalid(
            "monitoring.metrics_path",
            &s.monitoring.metrics_path,
            "must start with /",
        ));
    }
    Ok(())
}

fn validate_server(s: &Settings) -> Result<(), SettingsError> {
    let server = &s.server;
    bind_address(&server.bind)?;
    in_range(
        "server.max_body_bytes",
        server.max_body_bytes,
        KIB,
        16 * MIB,
    )?;
    duration_in("server.max_wait", server.max_wait, secs(1), secs(3600))?;
    in_range("server.max_waiters", server.max_waiters, 1, 1_000_000)?;
    duration_in(
        "server.long_poll_heartbeat",
        server.long_poll_heartbeat,
        Duration::from_millis(50),
        secs(60),
    )?;
    in_range("server.max_page_size", server.max_page_size, 1, 10_000)?;
    in_range("server.workers", server.workers, 0, 256)?;
    duration_in(
        "server.shutdown_timeout",
        server.shutdown_timeout,
        secs(0),
        secs(300),
    )?;
    let url = server.public_url.trim();
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(
            "server.public_url",
            url,
            "must be empty or start with http:// or https://",
        ));
    }
    if s.store.path.as_os_str().is_empty() {
        return Err(invalid("store.path", "\"\"", "must name a folder"));
    }
    Ok(())
}

/// Parse `server.bind`; `localhost:PORT` is accepted and means the IPv4 loopback.
pub fn bind_address(bind: &str) -> Result<SocketAddr, SettingsError> {
    let normalised = bind
        .strip_prefix("localhost:")
        .map(|port| format!("127.0.0.1:{port}"));
    normalised.as_deref().unwrap_or(bind).parse().map_err(|_| {
        invalid(
            "server.bind",
            format!("{bind:?}"),
            "must be IP:PORT, e.g. 127.0.0.1:5284 or 0.0.0.0:5284",
        )
    })
}

fn validate_timeouts(s: &Settings) -> Result<(), SettingsError> {
    let t = &s.approval_timeout;
    duration_in("approval_timeout.max", t.max, secs(1), secs(30 * 24 * 3600))?;
    duration_in("approval_timeout.min", t.min, secs(1), t.max)?;
    if t.default < t.min || t.default > t.max {
        return Err(invalid(
            "approval_timeout.default",
            show(t.default),
            format!(
                "must lie within approval_timeout.min ..= approval_timeout.max ({} ..= {})",
                show(t.min),
                show(t.max)
            ),
        ));
    }
    duration_in(
        "approval_timeout.check_interval",
        t.check_interval,
        Duration::from_millis(100),
        secs(3600),
    )?;
    duration_in(
        "approval_timeout.grace_period",
        t.grace_period,
        secs(0),
        secs(3600),
    )?;
    Ok(())
}

fn validate_auth(s: &Settings) -> Result<(), SettingsError> {
    let tokens = s
        .auth
        .agent_tokens
        .iter()
        .map(|(name, token)| ("auth.agent_tokens", name, token))
        .chain(
            s.auth
                .operator_tokens
                .iter()
                .map(|(name, token)| ("auth.operator_tokens", name, token)),
        );
    let mut seen = std::collections::HashSet::new();
    for (key, name, token) in tokens {
        if token.len() < 16 {
            return Err(invalid(
                key,
                format!("{name} = ***"),
                "each token must be at least 16 characters long",
            ));
        }
        if !seen.insert(token.as_str()) {
            return Err(invalid(
                key,
                format!("{name} = ***"),
                "every token must be distinct (an agent token cannot also be an operator token)",
            ));
        }
    }
    if s.auth_is_open() {
        let addr = bind_address(&s.server.bind)?;
        if !addr.ip().is_loopback() {
            return Err(invalid(
                "server.bind",
                &s.server.bind,
                "a non-loopback bind requires tokens in [auth] agent_tokens and operator_tokens",
            ));
        }
    }
    Ok(())
}

fn validate_logging(s: &Settings) -> Result<(), SettingsError> {
    if tracing_subscriber::EnvFilter::try_new(&s.logging.level).is_err() {
        return Err(invalid(
            "logging.level",
            &s.logging.level,
            "must be trace, debug, info, warn, error or a tracing filter",
        ));
    }
    if !s.logging.directory.trim().is_empty() && s.logging.file_prefix.trim().is_empty() {
        return Err(invalid(
            "logging.file_prefix",
            "\"\"",
            "must not be empty when logging.directory is set",
        ));
    }
    Ok(())
}

fn validate_fallback(s: &Settings) -> Result<(), SettingsError> {
    const KNOWN: [&str; 2] = ["console", "file"];
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
    Ok(())
}
