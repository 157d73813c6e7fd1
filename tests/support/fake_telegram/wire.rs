//! The wire side of the fake Bot API: Telegram's `{"ok":…}` envelopes, the bot and user
//! objects teloxide expects, and the method parameters as Telegram reads (and refuses) them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::markup;
use super::{BOT_ID, BOT_USERNAME, FakeUser};

pub const MAX_TEXT: usize = 4096;

/// An HTTP status plus Telegram's `{"ok":…}` envelope.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(result: Value) -> Self {
        Self {
            status: 200,
            body: json!({ "ok": true, "result": result }),
        }
    }

    pub fn error(status: u16, description: impl Into<String>) -> Self {
        let description = description.into();
        Self {
            status,
            body: json!({ "ok": false, "error_code": status, "description": description }),
        }
    }

    /// Exactly Telegram's flood-control answer; teloxide reads only
    /// `parameters.retry_after`.
    pub fn retry_after(seconds: u32) -> Self {
        Self {
            status: 429,
            body: json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {seconds}"),
                "parameters": { "retry_after": seconds },
            }),
        }
    }
}

pub(super) fn bad_request(what: impl std::fmt::Display) -> Reply {
    Reply::error(400, format!("Bad Request: {what}"))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_secs()).unwrap_or(1))
}

pub fn bot_user() -> Value {
    json!({
        "id": BOT_ID,
        "is_bot": true,
        "first_name": "Approval Gate Test Bot",
        "username": BOT_USERNAME,
    })
}

pub(super) fn user_json(user: &FakeUser) -> Value {
    let mut v = json!({
        "id": user.id,
        "is_bot": false,
        "first_name": format!("Test User {}", user.id),
        "language_code": "en",
    });
    if let Some(name) = &user.username {
        v["username"] = json!(name);
    }
    v
}

pub(super) fn chat_id(p: &Value) -> Result<i64, Reply> {
    match p.get("chat_id") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad_request("chat not found")),
        Some(Value::String(s)) if !s.is_empty() => {
            s.parse().map_err(|_| bad_request("chat not found"))
        }
        _ => Err(bad_request("chat_id is empty")),
    }
}

/// `(chat_id, message_id)` of an edit/delete; inline messages are not
/// tracked, so they are reported as missing.
pub(super) fn target(p: &Value, missing: &str) -> Result<(i64, i32), Reply> {
    if p.get("chat_id").is_none() && p.get("inline_message_id").is_some() {
        return Err(bad_request(missing));
    }
    let chat_id = chat_id(p)?;
    let message_id = match p.get("message_id") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .and_then(|n| i32::try_from(n).ok())
    .ok_or_else(|| bad_request("message identifier is not specified"))?;
    Ok((chat_id, message_id))
}

/// `(text as sent, parse_mode, rendered plain text)`, validated like Telegram.
pub(super) fn text(p: &Value, too_long: &str) -> Result<(String, Option<String>, String), Reply> {
    let text = p["text"].as_str().unwrap_or_default().to_owned();
    let parse_mode = p["parse_mode"].as_str().map(str::to_owned);
    let plain = markup::render(&text, parse_mode.as_deref())
        .map_err(|e| bad_request(format!("can't parse entities: {e}")))?;
    if plain.trim().is_empty() {
        return Err(bad_request("message text is empty"));
    }
    if markup::telegram_len(&plain) > MAX_TEXT {
        return Err(bad_request(too_long));
    }
    Ok((text, parse_mode, plain))
}

/// The inline keyboard a message will carry, validated like Telegram.
pub(super) fn inline_markup(p: &Value) -> Result<Option<Value>, Reply> {
    markup::inline_keyboard(p.get("reply_markup")).map_err(bad_request)
}
