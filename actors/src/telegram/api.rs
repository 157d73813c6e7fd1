//! The Bot API transport: teloxide's payload and response types over our own HTTP client.
//!
//! Why not teloxide's own sending: on any 5xx it sleeps 10 s inside the request before reading the
//! body (`DELAY_ON_SERVER_ERROR`), so under our per-call timeout every 5xx looked like a timeout and
//! cost the whole timeout. Here a payload built by teloxide is serialized as JSON, POSTed to
//! `<api_url>/bot<token>/<Method>`, and the answer is read at once: a 5xx comes back as a 5xx in
//! milliseconds and the retry policy, not the library, sets the pace. Every call is still bounded
//! by `request_timeout`.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use teloxide::payloads::{
    AnswerCallbackQuery, DeleteWebhook, EditMessageText, GetMe, GetUpdates, GetWebhookInfo,
    SendMessage, SetWebhook,
};
use teloxide::requests::Payload;
use teloxide::types::{
    AllowedUpdate, CallbackQueryId, ChatId, InlineKeyboardMarkup, Me, Message, MessageId,
    ParseMode, True, Update, WebhookInfo,
};

use super::retry::{Failure, classify_answer};
use crate::domain::TelegramMessageRef;

/// One Bot API call's outcome and how long it took.
pub struct Attempt<T> {
    pub method: &'static str,
    pub result: Result<T, Failure>,
    pub took: Duration,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

/// The Bot API's envelope: `{"ok": true, "result": …}` or an error description.
#[derive(serde::Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(serde::Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

/// What the server answered, before classification.
pub struct ErrorAnswer {
    pub status: u16,
    pub description: String,
    pub retry_after: Option<Duration>,
    pub migrated: bool,
}

impl Api {
    pub fn new(token: &str, api_url: Option<reqwest::Url>, timeout: Duration) -> Self {
        let base = api_url
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_else(|| "https://api.telegram.org".to_string());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: format!("{base}/bot{token}"),
            timeout,
        }
    }

    /// POST one payload; `bound` caps the whole exchange.
    async fn call<P>(
        &self,
        method: &'static str,
        payload: &P,
        bound: Duration,
    ) -> Attempt<P::Output>
    where
        P: Payload + Serialize,
        P::Output: DeserializeOwned,
    {
        let started = Instant::now();
        let url = format!("{}/{}", self.base, P::NAME);
        let exchange = async {
            let response = self
                .http
                .post(url)
                .json(payload)
                .send()
                .await
                .map_err(|e| Failure::network(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| Failure::network(e.without_url().to_string()))?;
            read::<P::Output>(status, &body)
        };
        let result = match tokio::time::timeout(bound, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::timeout(bound)),
        };
        Attempt {
            method,
            result,
            took: started.elapsed(),
        }
    }

    pub async fn send(
        &self,
        chat_id: i64,
        text: String,
        keyboard: Option<InlineKeyboardMarkup>,
    ) -> Attempt<TelegramMessageRef> {
        let mut payload = SendMessage::new(ChatId(chat_id), text);
        payload.parse_mode = Some(ParseMode::Html);
        payload.reply_markup = keyboard.map(Into::into);
        let attempt: Attempt<Message> = self.call("sendMessage", &payload, self.timeout).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|message| TelegramMessageRef {
                chat_id: message.chat.id.0,
                message_id: message.id.0,
            }),
        }
    }

    /// Replace a message's text; without a keyboard the buttons are removed.
    pub async fn edit(
        &self,
        message: TelegramMessageRef,
        text: String,
        keyboard: Option<InlineKeyboardMarkup>,
    ) -> Attempt<()> {
        let mut payload =
            EditMessageText::new(ChatId(message.chat_id), MessageId(message.message_id), text);
        payload.parse_mode = Some(ParseMode::Html);
        payload.reply_markup = keyboard;
        let attempt = self.call("editMessageText", &payload, self.timeout).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|_| ()),
        }
    }

    pub async fn answer(&self, query_id: String, text: String, alert: bool) -> Attempt<()> {
        let mut payload = AnswerCallbackQuery::new(CallbackQueryId(query_id));
        payload.text = Some(text);
        payload.show_alert = Some(alert);
        let attempt = self
            .call("answerCallbackQuery", &payload, self.timeout)
            .await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|_| ()),
        }
    }

    /// Long poll for updates; the bound is the poll timeout plus the request timeout.
    pub async fn updates(&self, offset: i32, poll: Duration) -> Attempt<Vec<Update>> {
        let mut payload = GetUpdates::new();
        payload.offset = Some(offset);
        payload.timeout = Some(poll.as_secs() as u32);
        payload.allowed_updates = Some(vec![AllowedUpdate::CallbackQuery]);
        self.call("getUpdates", &payload, poll + self.timeout).await
    }

    /// The URL of a webhook set on the bot, if any (`getWebhookInfo`).
    pub async fn webhook_url(&self) -> Attempt<Option<String>> {
        let attempt: Attempt<WebhookInfo> = self
            .call("getWebhookInfo", &GetWebhookInfo::new(), self.timeout)
            .await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|info| info.url.map(|u| u.to_string())),
        }
    }

    /// Point the bot's updates (button taps only) at `url`, signed with `secret`.
    pub async fn set_webhook(&self, url: reqwest::Url, secret: &str) -> Attempt<()> {
        let mut payload = SetWebhook::new(url);
        payload.secret_token = Some(secret.to_string());
        payload.allowed_updates = Some(vec![AllowedUpdate::CallbackQuery]);
        let attempt: Attempt<True> = self.call("setWebhook", &payload, self.timeout).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|_| ()),
        }
    }

    /// Remove the bot's webhook, keeping its pending updates for getUpdates.
    pub async fn delete_webhook(&self) -> Attempt<()> {
        let attempt: Attempt<True> = self
            .call("deleteWebhook", &DeleteWebhook::new(), self.timeout)
            .await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|_| ()),
        }
    }

    /// The bot's own username (`getMe`).
    pub async fn me(&self) -> Attempt<String> {
        let attempt: Attempt<Me> = self.call("getMe", &GetMe::new(), self.timeout).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt
                .result
                .map(|me| me.user.username.clone().unwrap_or_default()),
        }
    }
}

/// Decode one answer: a result, or a failure classified from the status and the description.
fn read<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, Failure> {
    let envelope: Result<Envelope<T>, _> = serde_json::from_slice(body);
    match envelope {
        Ok(Envelope {
            ok: true,
            result: Some(result),
            ..
        }) => Ok(result),
        Ok(envelope) => {
            let parameters = envelope.parameters;
            Err(classify_answer(ErrorAnswer {
                status,
                description: envelope.description.unwrap_or_default(),
                retry_after: parameters
                    .as_ref()
                    .and_then(|p| p.retry_after)
                    .map(Duration::from_secs),
                migrated: parameters.and_then(|p| p.migrate_to_chat_id).is_some(),
            }))
        }
        // Not the Bot API's JSON (a proxy's HTML error page, a truncated body).
        Err(error) if status >= 500 => Err(classify_answer(ErrorAnswer {
            status,
            description: format!("HTTP {status}"),
            retry_after: None,
            migrated: false,
        }))
        .map_err(|mut f: Failure| {
            f.detail = format!("HTTP {status}: {error}");
            f
        }),
        Err(error) => Err(Failure::invalid_response(format!(
            "HTTP {status}: unreadable answer: {error}"
        ))),
    }
}
