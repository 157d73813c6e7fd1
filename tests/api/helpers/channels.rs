//! The notification channels as tests see them: settings that point the service at the fake
//! Bot API (test-speed timings), and the fallback notifications file it writes.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{TestApp, eventually, spawn_app_with};

/// The chat and operator the Telegram tests use.
pub const CHAT_ID: i64 = -100_200;
pub const OPERATOR_USER_ID: u64 = 9001;

/// Settings that point the service at the fake Bot API, with test-speed timings.
pub fn telegram_env(api_url: &str, token: &str) -> Vec<(String, String)> {
    [
        ("APPROVAL_GATE__TELEGRAM__ENABLED", "true".to_string()),
        ("APPROVAL_GATE__TELEGRAM__BOT_TOKEN", token.to_string()),
        ("APPROVAL_GATE__TELEGRAM__API_URL", api_url.to_string()),
        ("APPROVAL_GATE__TELEGRAM__CHAT_ID", CHAT_ID.to_string()),
        (
            "APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS",
            OPERATOR_USER_ID.to_string(),
        ),
        (
            "APPROVAL_GATE__TELEGRAM__REQUEST_TIMEOUT",
            "400ms".to_string(),
        ),
        ("APPROVAL_GATE__TELEGRAM__POLL_TIMEOUT", "1s".to_string()),
        ("APPROVAL_GATE__TELEGRAM__SEND_INTERVAL", "0s".to_string()),
        (
            "APPROVAL_GATE__TELEGRAM__GROUP_MESSAGES_PER_MINUTE",
            "0".to_string(),
        ),
        (
            "APPROVAL_GATE__TELEGRAM__RETRY__INITIAL_DELAY",
            "20ms".to_string(),
        ),
        (
            "APPROVAL_GATE__TELEGRAM__RETRY__MAX_DELAY",
            "200ms".to_string(),
        ),
        (
            "APPROVAL_GATE__CIRCUIT_BREAKER__BREAK_DURATION",
            "1s".to_string(),
        ),
        ("APPROVAL_GATE__FALLBACK__ORDER", "file".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `spawn_app_with` plus the Telegram settings; `extra` wins over both.
pub async fn spawn_telegram_app(api_url: &str, token: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut owned = telegram_env(api_url, token);
    owned.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let borrowed: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    spawn_app_with(&borrowed).await
}

/// The fallback notifications file as it is now (empty if not written yet).
pub fn notifications_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("notifications.jsonl")).unwrap_or_default()
}

/// Wait until the fallback notifications file mentions every one of `ids`.
pub async fn notified(dir: &Path, what: &str, ids: &[&str]) {
    eventually(Duration::from_secs(15), what, || async {
        let text = notifications_text(dir);
        ids.iter().all(|id| text.contains(id)).then_some(())
    })
    .await;
}

/// The lines of the fallback notifications file that mention `needle`.
pub fn notification_lines(dir: &Path, needle: &str) -> Vec<Value> {
    notifications_text(dir)
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
