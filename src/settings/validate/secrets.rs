//! Bounds on the secrets callers prove themselves with: agent and operator tokens (and the open
//! mode's loopback rule), Telegram's callback and webhook secrets. Same rules as the rest of
//! `validate`: the first violation names the key and the allowed form, never the secret.

use super::{bind_address, duration_in, in_range, invalid, secs};
use crate::settings::{Settings, SettingsError, TOKEN_HASH_PREFIX, TelegramMode, token_digest};

pub(super) fn validate_auth(s: &Settings) -> Result<(), SettingsError> {
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
        if let Some(hex) = token.strip_prefix(TOKEN_HASH_PREFIX) {
            let hex = hex.trim();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    key,
                    format!("{name} = sha256:***"),
                    "a hashed token is sha256: followed by 64 hex digits (approval-gate hash-token)",
                ));
            }
        } else if token.len() < 16 {
            return Err(invalid(
                key,
                format!("{name} = ***"),
                "each token must be at least 16 characters long",
            ));
        }
        if !seen.insert(token_digest(token)) {
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

pub(super) fn validate_callback_secrets(s: &Settings) -> Result<(), SettingsError> {
    let t = &s.telegram;
    in_range(
        "telegram.group_messages_per_minute",
        t.group_messages_per_minute,
        0,
        1000,
    )?;
    for (key, secret) in [
        ("telegram.callback_secret", &t.callback_secret),
        (
            "telegram.previous_callback_secret",
            &t.previous_callback_secret,
        ),
    ] {
        if !secret.is_empty() && secret.len() < 32 {
            return Err(invalid(
                key,
                format!("*** ({} bytes)", secret.len()),
                "must be empty (generated and stored) or at least 32 bytes",
            ));
        }
    }
    if t.mode == TelegramMode::Webhook && t.enabled {
        let url = t.webhook_url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || reqwest::Url::parse(url).is_err()
        {
            return Err(invalid(
                "telegram.webhook_url",
                url,
                "webhook mode needs the public https:// URL of POST /telegram/webhook",
            ));
        }
    }
    let secret = &t.webhook_secret;
    if !secret.is_empty()
        && (secret.len() > 256
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        return Err(invalid(
            "telegram.webhook_secret",
            "***",
            "1 ..= 256 characters of A-Z a-z 0-9 _ - (or empty: generated)",
        ));
    }
    duration_in(
        "telegram.callback_secret_grace",
        t.callback_secret_grace,
        secs(60),
        secs(30 * 24 * 3600),
    )
}
