//! `/api/approvals…`: create, read (with long poll) and list; deciding and cancelling are in
//! `decisions`.
//! Handlers translate HTTP to registry messages and back; the rules live in the registry.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use approval_gate_actors::domain::{Approval, ApprovalId, NewApproval};
use approval_gate_actors::registry::{
    ApprovalRegistry, Create, Get, List, Unwait, Wait, WaitReply,
};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::AppState;
use super::auth::{AgentCaller, Caller, OperatorCaller};
use super::context::RequestId;
use super::error::ApiError;
use super::view::ApprovalView;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/approvals")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .route(
        "/api/approvals/export",
        web::get().to(super::search::export),
    )
    .service(
        web::resource("/api/approvals/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(super::decisions::cancel)),
    )
    .service(
        web::resource("/api/approvals/{id}/decision")
            .route(web::post().to(super::decisions::decide)),
    )
    .service(
        web::resource("/api/approvals/{id}/events").route(web::get().to(super::history::events)),
    );
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct CreateBody {
    session_id: String,
    tool_name: String,
    /// Any JSON; stored and returned byte for byte.
    #[schema(value_type = Object)]
    tool_input: Box<RawValue>,
    reason: Option<String>,
    timeout: Option<String>,
    idempotency_key: Option<String>,
    agent: Option<String>,
    /// The agent's working directory (absolute). Not stored: the `outside_workdir` risk
    /// detector compares the paths a file-writing tool names with it.
    cwd: Option<String>,
}

pub(super) fn parse_id(raw: &str) -> Result<ApprovalId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no approval with id {raw}")))
}

fn request_timeout(state: &AppState, raw: Option<&str>) -> Result<Duration, ApiError> {
    let settings = state.settings();
    let limits = &settings.approval_timeout;
    let Some(raw) = raw else {
        return Ok(limits.default);
    };
    let requested = humantime::parse_duration(raw.trim()).map_err(|e| {
        ApiError::Unprocessable(format!(
            "`timeout` {raw:?} is not a duration like \"10m\": {e}"
        ))
    })?;
    if requested < limits.min || requested > limits.max {
        return Err(ApiError::TimeoutOutOfRange {
            requested: raw.to_string(),
            min: humantime::format_duration(limits.min).to_string(),
            max: humantime::format_duration(limits.max).to_string(),
        });
    }
    Ok(requested)
}

/// Ask for an approval (agent token). `201` once it is on disk; `200` with the original for a
/// repeated `idempotency_key`; policy rules and session grants may decide it at once.
#[utoipa::path(post, path = "/api/approvals", tag = "approvals", request_body = CreateBody,
    responses((status = 201, body = super::view::ApprovalView), (status = 200, body = super::view::ApprovalView),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    AgentCaller(caller): AgentCaller,
    request_id: RequestId,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    state.limits().create(&caller.name)?;
    let body = body.into_inner();
    let timeout = request_timeout(&state, body.timeout.as_deref())?;
    let new = NewApproval {
        session_id: body.session_id,
        tool_name: body.tool_name,
        tool_input: body.tool_input.get().to_string(),
        reason: body.reason,
        agent: body.agent,
        requested_by: caller.name,
        idempotency_key: body.idempotency_key,
        timeout,
        max_timeout: None,
        idempotent_while_pending: false,
        cwd: body.cwd,
    };
    let created = state
        .actors
        .registry
        .send(Create {
            new,
            request_id: Some(request_id.0),
        })
        .await??;
    super::context::note_approval(&req, created.approval.id);
    let view = ApprovalView::from(&created.approval);
    if created.created {
        Ok(HttpResponse::Created()
            .insert_header(("Location", format!("/api/approvals/{}", view.id)))
            .json(view))
    } else {
        Ok(HttpResponse::Ok()
            .insert_header(("Location", format!("/api/approvals/{}", view.id)))
            .json(view))
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

/// Frees the registry's waiter if the long poll ends any way but by being woken (client hung
/// up and actix dropped the handler, wait elapsed, error).
struct WaiterGuard {
    registry: actix::Addr<ApprovalRegistry>,
    unwait: Option<Unwait>,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Some(unwait) = self.unwait.take() {
            self.registry.do_send(unwait);
        }
    }
}

/// Another agent's approval answers exactly like a missing one, so ids do not leak existence.
pub(super) fn visible(caller: &Caller, approval: &Approval) -> Result<(), ApiError> {
    if caller.sees(&approval.requested_by) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no approval with id {}",
            approval.id
        )))
    }
}

/// One approval; with `wait`, held (long poll) until it ends or the wait elapses.
#[utoipa::path(get, path = "/api/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "approval id"),
        ("wait" = Option<String>, Query, description = "hold up to this long, e.g. `30s` (≤ server.max_wait)")),
    responses((status = 200, body = super::view::ApprovalView), (status = 404, body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let wait = match query.wait.as_deref() {
        None => Duration::ZERO,
        Some(raw) => humantime::parse_duration(raw.trim()).map_err(|e| {
            ApiError::InvalidQuery(format!(
                "`wait` {raw:?} is not a duration like \"30s\": {e}"
            ))
        })?,
    }
    .min(state.settings().server.max_wait);
    let registry = &state.actors.registry;
    if wait.is_zero() {
        let approval = registry.send(Get(id)).await??;
        visible(&caller, &approval)?;
        return Ok(HttpResponse::Ok().json(ApprovalView::from(&approval)));
    }
    let ticket = match registry.send(Wait(id)).await?? {
        WaitReply::Ready(approval) => {
            visible(&caller, &approval)?;
            return Ok(HttpResponse::Ok().json(ApprovalView::from(approval.as_ref())));
        }
        WaitReply::Pending(ticket) => ticket,
    };
    let guard = WaiterGuard {
        registry: registry.clone(),
        unwait: Some(ticket.cancel_message()),
    };
    // Checked after the guard exists, so a refused wait still frees its waiter.
    visible(&caller, &ticket.current)?;
    let registry = registry.clone();
    let mut stopping = state.stopping.clone();
    let outcome = async move {
        // Move the whole guard in (not just the field the body touches): it must live exactly
        // as long as this future.
        let mut guard = guard;
        let last_known = *ticket.current;
        let woken = tokio::select! {
            woken = tokio::time::timeout(wait, ticket.receiver) => woken.ok().and_then(Result::ok),
            // Shutting down: answer with the current state now instead of being cut off.
            _ = stopping.wait_for(|stopping| *stopping) => None,
        };
        if let Some(approval) = woken {
            // Woken: the registry already forgot this waiter.
            guard.unwait = None;
            return approval;
        }
        // Wait elapsed, shutdown, or the registry restarted and dropped its waiters: answer
        // with the current state (the guard frees the waiter).
        current_state(&registry, id, last_known).await
    };
    let heartbeat = state.settings().server.long_poll_heartbeat;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(long_poll_body(Box::pin(outcome), heartbeat)))
}

/// The approval's current state for a long poll that has already started streaming: its body
/// must end with the approval's JSON, so a failing read is retried briefly and, failing that,
/// answered with the state the poll last knew.
async fn current_state(
    registry: &actix::Addr<ApprovalRegistry>,
    id: ApprovalId,
    last_known: Approval,
) -> Approval {
    let mut delay = Duration::from_millis(50);
    for _ in 0..5 {
        if let Ok(Ok(approval)) = registry.send(Get(id)).timeout(Duration::from_secs(2)).await {
            return approval;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    tracing::warn!(approval_id = %id, "long poll answered with the last known state: the registry did not answer");
    last_known
}

type PendingOutcome = std::pin::Pin<Box<dyn std::future::Future<Output = Approval>>>;

/// The body of a pending long poll: a space every `heartbeat` (leading whitespace is valid
/// JSON), then the approval. actix-web does not notice a client that hung up until it writes to
/// the socket (actix/actix-web#1313); the heartbeat write fails, actix drops this stream, and
/// with it the waiter guard, so abandoned long polls free their waiter.
fn long_poll_body(
    outcome: PendingOutcome,
    heartbeat: Duration,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures_util::stream::unfold(Some((outcome, ticker)), |state| async move {
        let (mut outcome, mut ticker) = state?;
        tokio::select! {
            approval = &mut outcome => {
                let json = serde_json::to_vec(&ApprovalView::from(&approval)).unwrap_or_default();
                Some((Ok(Bytes::from(json)), None))
            }
            _ = ticker.tick() => Some((Ok(Bytes::from_static(b" ")), Some((outcome, ticker)))),
        }
    })
}

/// Approvals newest first, paginated (operator token); with filters, a search (`search.rs`):
/// a page may then hold fewer than `limit` rows and still have a `next_cursor`.
#[utoipa::path(get, path = "/api/approvals", tag = "approvals",
    params(("status" = Option<String>, Query, description = "pending, approved, rejected, timed_out or cancelled"),
        ("limit" = Option<usize>, Query, description = "1 ..= server.max_page_size, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("agent" = Option<String>, Query, description = "agent token or agent name (exact, any case)"),
        ("tool" = Option<String>, Query, description = "tool name (exact, any case)"),
        ("q" = Option<String>, Query, description = "text in the input, reason, comment, session, tool or id (any case)"),
        ("since" = Option<String>, Query, description = "created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "created before (RFC 3339)")),
    responses((status = 200, description = "`{\"approvals\": [...], \"next_cursor\", \"scanned\"}`", body = Object),
        (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    query: web::Query<super::search::Filters>,
) -> Result<HttpResponse, ApiError> {
    let filters = query.into_inner();
    let search = super::search::Search::parse(&filters)?;
    let limit = state.page_limit(filters.limit)?;
    let (page, next_cursor, scanned) = if search.filters() {
        let scan_limit = state.settings().console.search_scan_limit;
        let found = super::search::search(&state, &search, limit, scan_limit).await?;
        (found.approvals, found.next_cursor, Some(found.scanned))
    } else {
        let mut page = state
            .actors
            .registry
            .send(List {
                status: search.status,
                before: search.before,
                limit: limit + 1,
            })
            .await??;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more.then(|| page.last().map(|a| a.id)).flatten();
        (page, next, None)
    };
    // A struct, not `json!`: `serde_json::Value` would re-sort each `tool_input`.
    #[derive(serde::Serialize)]
    struct Page {
        approvals: Vec<ApprovalView>,
        next_cursor: Option<String>,
        /// With filters: how many approvals this page read to find its rows.
        #[serde(skip_serializing_if = "Option::is_none")]
        scanned: Option<usize>,
    }
    Ok(HttpResponse::Ok().json(Page {
        approvals: page
            .iter()
            .map(|a| ApprovalView::row(a, state.settings().server.list_preview_bytes))
            .collect(),
        next_cursor: next_cursor.map(|id| id.to_string()),
        scanned,
    }))
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::CreateBody;
    use crate::http::decisions::DecisionBody;

    /// JSON-ish bytes: valid documents, near-misses and noise.
    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<Vec<u8>>(),
            "[\\[\\]{}\",:a-z0-9 \\\\]{0,200}".prop_map(String::into_bytes),
            (any::<String>(), any::<String>(), any::<String>()).prop_map(|(s, t, d)| {
                serde_json::json!({"session_id": s, "tool_name": t, "tool_input": {"x": d},
                    "decision": d, "timeout": t})
                .to_string()
                .into_bytes()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn the_create_decision_and_hook_parsers_never_panic(body in bodies()) {
            let _ = serde_json::from_slice::<CreateBody>(&body);
            let _ = serde_json::from_slice::<DecisionBody>(&body);
            let _ = crate::agents::HookInput::parse(&body);
        }
    }
}
