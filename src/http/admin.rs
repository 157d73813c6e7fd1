//! `/api/admin/…`: operator-only views and repairs. Dead letters are notifications a channel
//! could never deliver; an operator lists them and puts one back on its queue once the cause is
//! fixed (a chat id corrected, a mail relay back).

use actix_web::{HttpResponse, web};
use approval_gate_actors::registry::{DeadLetters, Requeue};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::OperatorCaller;
use super::error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/dead-letters", web::get().to(list))
        .route(
            "/api/admin/dead-letters/{id}/requeue",
            web::post().to(requeue),
        );
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<u64>,
}

async fn list(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = state.page_limit(query.limit)?;
    let mut letters = state
        .actors
        .registry
        .send(DeadLetters {
            after: query.cursor.unwrap_or(0),
            limit: limit + 1,
        })
        .await??;
    let more = letters.len() > limit;
    letters.truncate(limit);
    let next_cursor = more
        .then(|| letters.last().map(|l| l.id.to_string()))
        .flatten();
    let rows: Vec<_> = letters
        .iter()
        .map(|letter| {
            json!({
                "id": letter.id.to_string(),
                "channel": letter.channel.as_str(),
                "reason": letter.reason,
                "dead_at": approval_gate_actors::store::millis(letter.dead_at_ms).to_rfc3339(),
                "event": letter.entry.event,
                "approval_id": letter.entry.approval.id.to_string(),
                "status": letter.entry.approval.status,
                "tool_name": letter.entry.approval.tool_name,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "dead_letters": rows, "next_cursor": next_cursor })))
}

async fn requeue(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no dead letter with id {id}"));
    let number: u64 = id.parse().map_err(|_| not_found())?;
    match state.actors.registry.send(Requeue(number)).await?? {
        Some((channel, seq)) => Ok(HttpResponse::Ok().json(json!({
            "requeued": id.as_str(),
            "channel": channel.as_str(),
            "queue_id": seq.to_string(),
        }))),
        None => Err(not_found()),
    }
}
