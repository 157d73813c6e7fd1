//! `POST /telegram/webhook`: Telegram's deliveries in webhook mode.
//!
//! Every delivery must carry the secret token the gateway registered
//! (`X-Telegram-Bot-Api-Secret-Token`, compared in constant time); anything else gets 401 and
//! is counted. A verified update is handed to the TelegramGateway, which decides a tap; the
//! route answers 200 only once that decision is durable (as polling saves its offset only
//! after the taps are decided). Telegram delivers an update again until it gets a 2xx, so a
//! crash before the commit, or a store that cannot commit, loses no tap: it comes back.

use actix_web::{HttpRequest, HttpResponse, web};
use approval_gate_actors::metrics::Metric;
use approval_gate_actors::telegram::gateway::WebhookUpdate;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// How long a delivery may wait for its tap to be decided before Telegram is told to deliver it
/// again (a store stalled this long is failing; Telegram waits far longer for an answer).
const WEBHOOK_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/telegram/webhook", web::post().to(webhook));
}

#[utoipa::path(post, path = "/telegram/webhook", tag = "telegram", request_body = Object,
    params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "the registered secret token")),
    responses((status = 200, description = "dealt with: a tap is decided and durable"), (status = 401, body = Object), (status = 404, body = super::error::ErrorBody),
        (status = 503, description = "the tap could not be recorded; Telegram delivers it again", body = super::error::ErrorBody)))]
async fn webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (Some(gateway), Some(secret)) = (
        &state.actors.telegram,
        &state.actors.telegram_webhook_secret,
    ) else {
        return Err(ApiError::NotFound("Telegram webhook mode is off".into()));
    };
    let presented = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(presented.ct_eq(secret.as_bytes())) {
        let source = req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        tracing::warn!(%source, reason = "webhook_secret", "refused a webhook delivery");
        state.actors.metrics.do_send(Metric::Refused {
            reason: "webhook_secret",
        });
        return Ok(HttpResponse::Unauthorized().json(serde_json::json!({
            "error": "unauthorized",
            "message": "the webhook secret token is missing or wrong",
        })));
    }
    // The gateway reads the update (it owns the Bot API's formats); Telegram gets its 200 once
    // the tap is decided and durable, well inside its own timeout.
    let handled = gateway
        .send(WebhookUpdate(body.to_vec()))
        .timeout(WEBHOOK_ANSWER_WITHIN)
        .await;
    match handled {
        Ok(true) => Ok(HttpResponse::Ok().finish()),
        Ok(false) | Err(_) => Err(ApiError::Unavailable(
            "the tap could not be recorded yet; Telegram will deliver it again".into(),
        )),
    }
}
