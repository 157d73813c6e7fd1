//! Thin, owned wrappers over the teloxide calls the gateway makes. Every call is bounded by our
//! own timeout (teloxide sleeps 10 s inside a request on any 5xx; the retry policy, not the
//! library, must set the pace) and comes back as a [`Failure`] the gateway can act on.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, CallbackQueryId, InlineKeyboardMarkup, MessageId, ParseMode, Update,
};

use super::retry::{Failure, classify};
use crate::domain::TelegramMessageRef;

/// One Bot API call's outcome and how long it took.
pub struct Attempt<T> {
    pub method: &'static str,
    pub result: Result<T, Failure>,
    pub took: Duration,
}

#[derive(Clone)]
pub struct Api {
    bot: Bot,
    timeout: Duration,
}

async fn bounded<T, F>(method: &'static str, timeout: Duration, call: F) -> Attempt<T>
where
    F: IntoFuture<Output = Result<T, teloxide::RequestError>>,
{
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, call.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(Failure::timeout(timeout)),
    };
    Attempt {
        method,
        result,
        took: started.elapsed(),
    }
}

impl Api {
    pub fn new(token: &str, api_url: Option<reqwest::Url>, timeout: Duration) -> Self {
        let mut bot = Bot::new(token);
        if let Some(url) = api_url {
            bot = bot.set_api_url(url);
        }
        Self { bot, timeout }
    }

    pub async fn send(
        &self,
        chat_id: i64,
        text: String,
        keyboard: Option<InlineKeyboardMarkup>,
    ) -> Attempt<TelegramMessageRef> {
        let mut request = self
            .bot
            .send_message(ChatId(chat_id), text)
            .parse_mode(ParseMode::Html);
        if let Some(keyboard) = keyboard {
            request = request.reply_markup(keyboard);
        }
        let attempt = bounded("sendMessage", self.timeout, request).await;
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
        let mut request = self
            .bot
            .edit_message_text(ChatId(message.chat_id), MessageId(message.message_id), text)
            .parse_mode(ParseMode::Html);
        if let Some(keyboard) = keyboard {
            request = request.reply_markup(keyboard);
        }
        let attempt = bounded("editMessageText", self.timeout, request).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|_| ()),
        }
    }

    pub async fn answer(&self, query_id: String, text: String, alert: bool) -> Attempt<()> {
        let request = self
            .bot
            .answer_callback_query(CallbackQueryId(query_id))
            .text(text)
            .show_alert(alert);
        let attempt = bounded("answerCallbackQuery", self.timeout, request).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|_| ()),
        }
    }

    /// Long poll for updates; the bound is the poll timeout plus the request timeout.
    pub async fn updates(&self, offset: i32, poll: Duration) -> Attempt<Vec<Update>> {
        let request = self
            .bot
            .get_updates()
            .offset(offset)
            .timeout(poll.as_secs() as u32)
            .allowed_updates([AllowedUpdate::CallbackQuery]);
        bounded("getUpdates", poll + self.timeout, request).await
    }

    pub async fn me(&self) -> Attempt<String> {
        let attempt = bounded("getMe", self.timeout, self.bot.get_me()).await;
        Attempt {
            method: attempt.method,
            took: attempt.took,
            result: attempt.result.map(|me| me.username().to_string()),
        }
    }
}
