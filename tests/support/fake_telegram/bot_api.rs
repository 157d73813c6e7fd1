//! The Bot API state machine behind the fake: stored messages, the update
//! queue and the method handlers, producing JSON shaped like Telegram's so
//! teloxide-core 0.13 deserializes it (mind the required fields: `Message`
//! needs `message_id`, `date` ≠ 0, `chat` with `type`; `CallbackQuery` needs
//! `chat_instance`; `Me` needs the `can_*`/`supports_*`/`has_main_web_app`
//! flags).

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Value, json};

use super::wire::{
    bad_request, bot_user, chat_id, inline_markup, target, text, unix_now, user_json,
};
use super::{BOT_ID, BOT_USERNAME, Call, CallbackAnswer, FakeUser, SentMessage};

pub use super::wire::Reply;

pub const CONFLICT: &str = "Conflict: terminated by other getUpdates request; make sure that only \
                            one bot instance is running";
pub const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message \
                                content and reply markup are exactly the same as a current content \
                                and reply markup of the message";
const INVALID_QUERY: &str =
    "Bad Request: query is too old and response timeout expired or query id is invalid";

/// Methods the fake knows, used to canonicalize case (Telegram matches
/// method names case-insensitively).
const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "getWebhookInfo",
    "deleteWebhook",
    "setWebhook",
    "setMyCommands",
    "deleteMyCommands",
    "getMyCommands",
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "answerCallbackQuery",
    "deleteMessage",
];

pub fn canonical(method: &str) -> String {
    METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .map_or_else(|| method.to_owned(), |m| (*m).to_owned())
}

#[derive(Default)]
pub struct State {
    pub calls: Vec<Call>,
    pub messages: Vec<SentMessage>,
    pub answers: Vec<CallbackAnswer>,
    /// Bumped by every getUpdates; an older poll that sees a newer
    /// generation answers 409 like Telegram does.
    pub poll_generation: u64,
    users: HashMap<i64, FakeUser>,
    last_message_id: HashMap<i64, i32>,
    updates: VecDeque<(u32, Value)>,
    update_counter: u32,
    open_callbacks: HashSet<String>,
    callback_counter: u64,
    allowed_updates: Option<Vec<String>>,
    /// The webhook URL and secret token, while one is set (getUpdates then answers 409).
    pub webhook: Option<(String, Option<String>)>,
}

impl State {
    pub fn call(&mut self, method: &str, p: &Value) -> Reply {
        let result = match method {
            "getMe" => Ok(json!({
                "id": BOT_ID, "is_bot": true, "first_name": "Approval Gate Test Bot",
                "username": BOT_USERNAME, "can_join_groups": true,
                "can_read_all_group_messages": false, "supports_inline_queries": false,
                "can_connect_to_business": false, "has_main_web_app": false,
            })),
            "getWebhookInfo" => Ok(json!({
                "url": self.webhook.as_ref().map_or("", |(url, _)| url.as_str()),
                "has_custom_certificate": false,
                "pending_update_count": self.updates.len(),
            })),
            "deleteWebhook" => {
                if p["drop_pending_updates"].as_bool() == Some(true) {
                    self.updates.clear();
                }
                self.webhook = None;
                Ok(json!(true))
            }
            "setWebhook" => match p["url"].as_str() {
                Some("") | None => {
                    self.webhook = None;
                    Ok(json!(true))
                }
                Some(url) => {
                    let secret = p["secret_token"].as_str().map(str::to_owned);
                    self.webhook = Some((url.to_owned(), secret));
                    Ok(json!(true))
                }
            },
            "setMyCommands" | "deleteMyCommands" => Ok(json!(true)),
            "getMyCommands" => Ok(json!([])),
            "sendMessage" => self.send_message(p),
            "editMessageText" => self.edit_message_text(p),
            "editMessageReplyMarkup" => self.edit_reply_markup(p),
            "answerCallbackQuery" => self.answer_callback(p),
            "deleteMessage" => self.delete_message(p),
            _ => Err(Reply::error(404, "Not Found: method not found")),
        };
        result.map_or_else(|e| e, Reply::ok)
    }

    fn chat_json(&self, chat_id: i64) -> Value {
        if chat_id > 0 {
            let mut chat = json!({
                "id": chat_id, "type": "private", "first_name": format!("Test User {chat_id}"),
            });
            if let Some(name) = self.users.get(&chat_id).and_then(|u| u.username.as_ref()) {
                chat["username"] = json!(name);
            }
            chat
        } else if chat_id <= -1_000_000_000_000 {
            json!({ "id": chat_id, "type": "supergroup", "title": "Approval Gate Test Supergroup" })
        } else {
            json!({ "id": chat_id, "type": "group", "title": "Approval Gate Test Group" })
        }
    }

    fn message_json(&self, m: &SentMessage) -> Value {
        let mut v = json!({
            "message_id": m.message_id,
            "from": bot_user(),
            "chat": self.chat_json(m.chat_id),
            "date": m.date,
            "text": m.plain_text,
        });
        if let Some(markup) = &m.reply_markup {
            v["reply_markup"] = markup.clone();
        }
        if let Some(edited) = m.edit_date {
            v["edit_date"] = json!(edited);
        }
        v
    }

    fn next_message_id(&mut self, chat_id: i64) -> i32 {
        let id = self.last_message_id.entry(chat_id).or_insert(0);
        *id += 1;
        *id
    }

    fn find(&self, chat_id: i64, message_id: i32) -> Option<usize> {
        self.messages
            .iter()
            .position(|m| m.chat_id == chat_id && m.message_id == message_id && !m.deleted)
    }

    fn send_message(&mut self, p: &Value) -> Result<Value, Reply> {
        let chat_id = chat_id(p)?;
        let (text, parse_mode, plain_text) = text(p, "message is too long")?;
        let reply_markup = inline_markup(p)?;
        let message_id = self.next_message_id(chat_id);
        let message = SentMessage {
            chat_id,
            message_id,
            text,
            parse_mode,
            plain_text,
            reply_markup,
            edits: 0,
            deleted: false,
            date: unix_now(),
            edit_date: None,
        };
        let json = self.message_json(&message);
        self.messages.push(message);
        Ok(json)
    }

    fn edit_message_text(&mut self, p: &Value) -> Result<Value, Reply> {
        let (chat_id, message_id) = target(p, "message to edit not found")?;
        let (text, parse_mode, plain_text) = text(p, "MESSAGE_TOO_LONG")?;
        // Omitting reply_markup removes the keyboard, as on Telegram.
        let reply_markup = inline_markup(p)?;
        let i = self
            .find(chat_id, message_id)
            .ok_or_else(|| bad_request("message to edit not found"))?;
        let m = &mut self.messages[i];
        if m.text == text && m.parse_mode == parse_mode && m.reply_markup == reply_markup {
            return Err(Reply::error(400, NOT_MODIFIED));
        }
        (m.text, m.parse_mode, m.plain_text, m.reply_markup) =
            (text, parse_mode, plain_text, reply_markup);
        m.edits += 1;
        m.edit_date = Some(unix_now());
        Ok(self.message_json(&self.messages[i]))
    }

    fn edit_reply_markup(&mut self, p: &Value) -> Result<Value, Reply> {
        let (chat_id, message_id) = target(p, "message to edit not found")?;
        let reply_markup = inline_markup(p)?;
        let i = self
            .find(chat_id, message_id)
            .ok_or_else(|| bad_request("message to edit not found"))?;
        let m = &mut self.messages[i];
        if m.reply_markup == reply_markup {
            return Err(Reply::error(400, NOT_MODIFIED));
        }
        m.reply_markup = reply_markup;
        m.edits += 1;
        m.edit_date = Some(unix_now());
        Ok(self.message_json(&self.messages[i]))
    }

    fn delete_message(&mut self, p: &Value) -> Result<Value, Reply> {
        let (chat_id, message_id) = target(p, "message to delete not found")?;
        let i = self
            .find(chat_id, message_id)
            .ok_or_else(|| bad_request("message to delete not found"))?;
        self.messages[i].deleted = true;
        Ok(json!(true))
    }

    fn answer_callback(&mut self, p: &Value) -> Result<Value, Reply> {
        let id = p["callback_query_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // A query can be answered once; afterwards Telegram reports it as too old.
        if !self.open_callbacks.remove(&id) {
            return Err(Reply::error(400, INVALID_QUERY));
        }
        self.answers.push(CallbackAnswer {
            callback_query_id: id,
            text: p["text"].as_str().map(str::to_owned),
            show_alert: p["show_alert"].as_bool().unwrap_or(false),
        });
        Ok(json!(true))
    }

    fn push_update(&mut self, kind: &str, payload: Value) -> u32 {
        self.update_counter += 1;
        // Telegram update ids are large and only ever increase.
        let id = 800_000_000 + self.update_counter;
        let mut update = json!({ "update_id": id });
        update[kind] = payload;
        self.updates.push_back((id, update));
        id
    }

    pub fn inject_callback(
        &mut self,
        from: &FakeUser,
        chat_id: i64,
        message_id: i32,
        data: &str,
    ) -> String {
        self.users
            .insert(i64::try_from(from.id).unwrap_or(i64::MAX), from.clone());
        let message = match self
            .messages
            .iter()
            .find(|m| m.chat_id == chat_id && m.message_id == message_id)
        {
            Some(m) if !m.deleted => self.message_json(m),
            // date 0 is how Bot API marks an inaccessible (deleted) message.
            Some(_) => {
                json!({ "message_id": message_id, "chat": self.chat_json(chat_id), "date": 0 })
            }
            None => json!({
                "message_id": message_id, "from": bot_user(), "chat": self.chat_json(chat_id),
                "date": unix_now(), "text": "",
            }),
        };
        self.callback_counter += 1;
        let id = (4_000_000_000_000_000_000u64 + self.callback_counter).to_string();
        self.open_callbacks.insert(id.clone());
        let query = json!({
            "id": id,
            "from": user_json(from),
            "message": message,
            "chat_instance": format!("{}", chat_id.unsigned_abs().wrapping_mul(2_654_435_761)),
            "data": data,
        });
        self.push_update("callback_query", query);
        id
    }

    pub fn inject_text_message(&mut self, from: &FakeUser, chat_id: i64, text: &str) -> i32 {
        self.users
            .insert(i64::try_from(from.id).unwrap_or(i64::MAX), from.clone());
        let message_id = self.next_message_id(chat_id);
        let message = json!({
            "message_id": message_id, "from": user_json(from), "chat": self.chat_json(chat_id),
            "date": unix_now(), "text": text,
        });
        self.push_update("message", message);
        message_id
    }

    pub fn take_update(&mut self) -> Option<Value> {
        self.updates.pop_front().map(|(_, update)| update)
    }

    pub fn pending_updates(&self) -> usize {
        self.updates.len()
    }

    /// getUpdates semantics: `offset` confirms (drops) older updates, a
    /// negative offset keeps only the last `-offset`; `allowed_updates` is
    /// remembered across calls and filtered-out updates are never delivered.
    pub fn take_updates(
        &mut self,
        offset: i64,
        limit: usize,
        allowed: Option<Vec<String>>,
    ) -> Vec<Value> {
        if let Some(allowed) = allowed {
            self.allowed_updates = (!allowed.is_empty()).then_some(allowed);
        }
        if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            while self.updates.len() > keep {
                self.updates.pop_front();
            }
        } else {
            self.updates.retain(|(id, _)| i64::from(*id) >= offset);
        }
        if let Some(allowed) = &self.allowed_updates {
            self.updates.retain(|(_, u)| {
                let kind = u
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "update_id"));
                kind.is_some_and(|k| allowed.contains(k))
            });
        }
        self.updates
            .iter()
            .take(limit)
            .map(|(_, u)| u.clone())
            .collect()
    }
}
