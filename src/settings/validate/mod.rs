//! Bounds on every setting. The first violation stops start-up with one line naming the key,
//! its value and the allowed range. Here: the helpers, the order of the checks, and the server,
//! agents, logging and limits sections; `notify.rs`: the sections that tell operators
//! (fallback, email, Telegram, circuit breaker); `secrets.rs`: tokens and Telegram's secrets.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Settings, SettingsError};
use notify::{validate_breaker, validate_fallback, validate_telegram};
use secrets::{validate_auth, validate_callback_secrets};

mod notify;
mod routing;
mod secrets;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

pub(super) fn invalid(
    key: &'static str,
    value: impl Display,
    allowed: impl Into<String>,
) -> SettingsError {
    SettingsError::Invalid {
        key,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

fn show(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

pub(super) fn in_range<T: PartialOrd + Display + Copy>(
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

pub(super) fn duration_in(
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

pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn validate(s: &Settings) -> Result<(), SettingsError> {
    validate_server(s)?;
    validate_timeouts(s)?;
    validate_auth(s)?;
    validate_logging(s)?;
    validate_fallback(s)?;
    validate_telegram(s)?;
    validate_breaker(s)?;
    validate_agents(s)?;
    validate_console(s)?;
    validate_callback_secrets(s)?;
    routing::validate_routing(s)?;
    let limits = &s.limits;
    in_range(
        "limits.creates_per_second",
        limits.creates_per_second,
        0,
        1_000_000,
    )?;
    in_range("limits.create_burst", limits.create_burst, 0, 1_000_000)?;
    in_range(
        "limits.max_pending_per_agent",
        limits.max_pending_per_agent,
        0,
        1_000_000,
    )?;
    in_range(
        "limits.decisions_per_second",
        limits.decisions_per_second,
        0,
        1_000_000,
    )?;
    in_range("limits.decision_burst", limits.decision_burst, 0, 1_000_000)?;
    in_range(
        "limits.failed_auth_per_minute",
        limits.failed_auth_per_minute,
        0,
        1_000_000,
    )?;
    if !s.monitoring.bind.trim().is_empty() {
        let monitoring = bind_address(&s.monitoring.bind).map_err(|_| {
            invalid(
                "monitoring.bind",
                &s.monitoring.bind,
                "must be empty or HOST:PORT like 127.0.0.1:9284",
            )
        })?;
        if monitoring.port() != 0
            && bind_address(&s.server.bind).is_ok_and(|main| main == monitoring)
        {
            return Err(invalid(
                "monitoring.bind",
                &s.monitoring.bind,
                "must differ from server.bind",
            ));
        }
    }
    if !s.monitoring.metrics_path.starts_with('/') {
        return Err(invalid(
            "monitoring.metrics_path",
            &s.monitoring.metrics_path,
            "must start with /",
        ));
    }
    Ok(())
}

fn validate_console(s: &Settings) -> Result<(), SettingsError> {
    let console = &s.console;
    duration_in(
        "console.session_ttl",
        console.session_ttl,
        secs(60),
        secs(30 * 24 * 3600),
    )?;
    duration_in("console.keepalive", console.keepalive, secs(1), secs(300))?;
    in_range(
        "console.search_scan_limit",
        console.search_scan_limit,
        100,
        10_000_000,
    )?;
    in_range(
        "console.export_max_rows",
        console.export_max_rows,
        1,
        1_000_000,
    )?;
    Ok(())
}

fn validate_agents(s: &Settings) -> Result<(), SettingsError> {
    let agents = &s.agents;
    duration_in(
        "agents.hook_wait",
        agents.hook_wait,
        secs(1),
        secs(24 * 3600),
    )?;
    duration_in(
        "agents.hangup_check",
        agents.hangup_check,
        Duration::from_millis(100),
        secs(10),
    )?;
    duration_in(
        "agents.max_grant",
        agents.max_grant,
        secs(1),
        secs(30 * 24 * 3600),
    )?;
    duration_in(
        "agents.session_grant",
        agents.session_grant,
        secs(1),
        agents.max_grant,
    )?;
    let policy = approval_gate_actors::policy::Policy::compile(&s.policy.rules)
        .map_err(|e| invalid("policy.rules", format!("`{}`", e.rule), e.problem))?;
    drop(policy);
    let limits = &s.approval_timeout;
    for rule in &s.policy.rules {
        if let Some(timeout) = rule.timeout
            && (timeout < limits.min || timeout > limits.max)
        {
            return Err(invalid(
                "policy.rules.timeout",
                format!("{} (rule `{}`)", show(timeout), rule.name),
                format!(
                    "must be within approval_timeout.min ..= max ({} ..= {})",
                    show(limits.min),
                    show(limits.max)
                ),
            ));
        }
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
    in_range("server.max_input_depth", server.max_input_depth, 1, 1024)?;
    if server.tls.cert.trim().is_empty() != server.tls.key.trim().is_empty() {
        return Err(invalid(
            "server.tls",
            "cert or key missing",
            "give both cert and key (PEM files), or neither for plain HTTP",
        ));
    }
    in_range(
        "server.max_tool_input_bytes",
        server.max_tool_input_bytes,
        16,
        16 * MIB,
    )?;
    in_range("server.max_waiters", server.max_waiters, 1, 1_000_000)?;
    in_range(
        "server.max_waiters_per_agent",
        server.max_waiters_per_agent,
        1,
        1_000_000,
    )?;
    duration_in(
        "server.long_poll_heartbeat",
        server.long_poll_heartbeat,
        Duration::from_millis(50),
        secs(60),
    )?;
    in_range("server.max_page_size", server.max_page_size, 1, 10_000)?;
    in_range(
        "server.list_preview_bytes",
        server.list_preview_bytes,
        64,
        1 << 20,
    )?;
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
    duration_in(
        "store.commit_stall",
        s.store.commit_stall,
        secs(1),
        secs(600),
    )?;
    in_range("store.cache_mib", s.store.cache_mib, 1, 65536)?;
    duration_in(
        "store.checkpoint_every",
        s.store.checkpoint_every,
        Duration::from_millis(10),
        secs(3600),
    )?;
    postgres(s)?;
    let restart_after = s.store.restart_after;
    if !restart_after.is_zero() && !(secs(1)..=secs(24 * 3600)).contains(&restart_after) {
        return Err(invalid(
            "store.restart_after",
            show(restart_after),
            "allowed is \"0s\" (stay up) or \"1s\" ..= \"1day\"",
        ));
    }
    Ok(())
}

/// `[store.postgres]`, checked only when it is the backend in use.
fn postgres(s: &Settings) -> Result<(), SettingsError> {
    use crate::settings::StoreBackend;
    duration_in(
        "telegram.leader_lease",
        s.telegram.leader_lease,
        secs(2),
        secs(300),
    )?;
    if s.store.backend != StoreBackend::Postgres {
        return Ok(());
    }
    let pg = &s.store.postgres;
    if pg.url.trim().is_empty() {
        return Err(invalid(
            "store.postgres.url",
            "\"\"",
            "must name the database when store.backend = \"postgres\" (a postgres:// URL, or file:PATH)",
        ));
    }
    if pg
        .url
        .parse::<approval_gate_actors::store::postgres::ConnectionString>()
        .is_err()
    {
        // The value may hold a password: never repeated.
        return Err(invalid(
            "store.postgres.url",
            "(hidden)",
            "must be a PostgreSQL connection URL (postgres://user:password@host:5432/db) or key=value string",
        ));
    }
    in_range("store.postgres.pool_size", pg.pool_size as u64, 1, 1000)?;
    duration_in(
        "store.postgres.statement_timeout",
        pg.statement_timeout,
        Duration::from_millis(100),
        secs(600),
    )?;
    duration_in(
        "store.postgres.pool_wait",
        pg.pool_wait,
        Duration::from_millis(100),
        secs(60),
    )?;
    if !matches!(pg.tls.as_str(), "disable" | "require" | "verify-full") {
        return Err(invalid(
            "store.postgres.tls",
            format!("{:?}", pg.tls),
            "allowed: \"disable\", \"require\", \"verify-full\"",
        ));
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
