//! `/api/diagnostics/…`: JSON views for operators (store facts, counter summary) and the
//! fault-injection route that proves supervision (only when `debug.fault_injection` is on).

use actix_web::{HttpResponse, web};
use approval_gate_actors::metrics::Summary;
use approval_gate_actors::notification::LoseWakes;
use approval_gate_actors::registry::{FailCommits, Stats};
use approval_gate_actors::store::CommitFault;
use approval_gate_actors::telegram::gateway::BreakerStatus;
use serde_json::json;

use super::AppState;
use super::auth::{MonitoringAccess, OperatorCaller};
use super::error::ApiError;

/// The read-only views (main listener, or the separate monitoring listener).
pub fn views(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/diagnostics/database", web::get().to(database))
        .route("/api/diagnostics/metrics", web::get().to(metrics_summary))
        .route(
            "/api/diagnostics/circuit-breaker",
            web::get().to(circuit_breaker),
        );
}

/// Fault injection (main listener only, operator token, `debug.fault_injection`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/debug/actors/{name}/crash", web::post().to(crash))
        .route(
            "/api/debug/actors/{name}/lose-wakes",
            web::post().to(lose_wakes),
        )
        .route(
            "/api/debug/store/fail-commits",
            web::post().to(fail_commits),
        );
}

#[utoipa::path(get, path = "/api/diagnostics/database", tag = "monitoring",
    responses((status = 200, description = "store facts", body = Object), (status = 401, body = super::error::ErrorBody)))]
async fn database(
    state: web::Data<AppState>,
    _access: MonitoringAccess,
) -> Result<HttpResponse, ApiError> {
    let stats = state.actors.registry.send(Stats).await?;
    let last_flush = (stats.store.last_flush_ms > 0)
        .then(|| approval_gate_actors::store::millis(stats.store.last_flush_ms).to_rfc3339());
    Ok(HttpResponse::Ok().json(json!({
        "path": stats.store.path,
        "size_on_disk_bytes": stats.store.size_on_disk,
        "counts": stats.counts,
        "waiters": stats.waiters,
        "last_flush": last_flush,
        "committing": stats.store.committing,
        "commit_failures": stats.store.commit_failures,
        "last_sync_us": stats.store.last_sync_us,
        "commit_running_ms": stats.store.commit_running_ms,
        "commits": commits_json(&stats.store.commits),
        "journal_replayed_at_start": {
            "files": stats.store.replayed.files,
            "records": stats.store.replayed.records,
            "operations": stats.store.replayed.ops,
            "torn": stats.store.replayed.torn,
        },
        "dead_letters": stats.dead_letters,
        "queue_entries_unspilled": stats.store.queue_entries_unspilled,
    })))
}

/// The group commit since start: how many, how many requests each answered on average, and
/// where its time went per commit (microseconds), so a slow disk or an oversized batch shows.
fn commits_json(c: &approval_gate_actors::store::CommitTotals) -> serde_json::Value {
    let per_commit_us = |seconds: f64| (seconds * 1e6 / c.commits.max(1) as f64).round();
    json!({
        "total": c.commits,
        "requests": c.requests,
        "requests_per_commit": (c.requests as f64 / c.commits.max(1) as f64 * 10.0).round() / 10.0,
        "apply_us_per_commit": per_commit_us(c.apply_seconds),
        "flush_us_per_commit": per_commit_us(c.flush_seconds),
        "fdatasync_us_per_commit": per_commit_us(c.fdatasync_seconds),
        "checkpoints": c.checkpoints,
        "checkpoint_failures": c.checkpoint_failures,
    })
}

#[utoipa::path(get, path = "/api/diagnostics/circuit-breaker", tag = "monitoring",
    responses((status = 200, description = "the Telegram breaker", body = Object), (status = 401, body = super::error::ErrorBody)))]
async fn circuit_breaker(
    state: web::Data<AppState>,
    _access: MonitoringAccess,
) -> Result<HttpResponse, ApiError> {
    let Some(gateway) = &state.actors.telegram else {
        return Ok(HttpResponse::Ok().json(json!({ "enabled": false })));
    };
    let report = gateway.send(BreakerStatus).await?;
    let mut body = serde_json::to_value(report).unwrap_or_default();
    body["enabled"] = json!(true);
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(get, path = "/api/diagnostics/metrics", tag = "monitoring",
    responses((status = 200, description = "a JSON summary of the counters", body = Object), (status = 401, body = super::error::ErrorBody)))]
async fn metrics_summary(
    state: web::Data<AppState>,
    _access: MonitoringAccess,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.actors.metrics.send(Summary).await?))
}

#[derive(serde::Deserialize)]
struct CrashQuery {
    /// `timer`: panic inside a timer callback instead of the handler.
    #[serde(rename = "in")]
    place: Option<String>,
}

fn fault_injection(state: &AppState) -> Result<(), ApiError> {
    if state.settings().debug.fault_injection {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "fault injection is disabled (debug.fault_injection)".into(),
        ))
    }
}

#[utoipa::path(post, path = "/api/debug/actors/{name}/crash", tag = "debug",
    params(("name" = String, Path, description = "actor name"), ("in" = Option<String>, Query, description = "`timer` to panic in a timer")),
    responses((status = 202, body = Object), (status = 404, body = super::error::ErrorBody)), security(("bearer" = [])))]
async fn crash(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    name: web::Path<String>,
    query: web::Query<CrashQuery>,
) -> Result<HttpResponse, ApiError> {
    fault_injection(&state)?;
    let in_timer = match query.place.as_deref() {
        None | Some("handler") => false,
        Some("timer") => true,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "`in` {other:?}: expected handler or timer"
            )));
        }
    };
    if !state.actors.crash(&name, in_timer) {
        return Err(ApiError::NotFound(format!(
            "no actor named {name:?}; known: {}",
            approval_gate_actors::system::ACTOR_NAMES.join(", ")
        )));
    }
    Ok(HttpResponse::Accepted().json(json!({ "crashed": name.as_str() })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoseWakesBody {
    count: u32,
}

/// Fault injection: a notifier (`fallback_notifier` or `telegram_gateway`) ignores its next
/// `count` wake-ups (1 ..= 1000), as one that lost them would; `/health` then reports what is
/// left stuck behind them. `timeout_sweeper` ignores its next `count` deadlines (the registry's
/// own deadline check must then hold).
#[utoipa::path(post, path = "/api/debug/actors/{name}/lose-wakes", tag = "debug", request_body = Object,
    params(("name" = String, Path, description = "`fallback_notifier`, `telegram_gateway` or `timeout_sweeper`")),
    responses((status = 202, body = Object), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)), security(("bearer" = [])))]
async fn lose_wakes(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    name: web::Path<String>,
    body: web::Json<LoseWakesBody>,
) -> Result<HttpResponse, ApiError> {
    fault_injection(&state)?;
    if !(1..=1000).contains(&body.count) {
        return Err(ApiError::Unprocessable(format!(
            "count {}: expected 1 ..= 1000",
            body.count
        )));
    }
    let lose = LoseWakes(body.count);
    match (name.as_str(), &state.actors.telegram) {
        ("fallback_notifier", _) => state.actors.fallback.send(lose).await?,
        ("telegram_gateway", Some(gateway)) => gateway.send(lose).await?,
        ("timeout_sweeper", _) => state.actors.sweeper.send(lose).await?,
        (other, _) => {
            return Err(ApiError::NotFound(format!(
                "no notifier named {other:?} (with Telegram off there is no telegram_gateway)"
            )));
        }
    }
    Ok(HttpResponse::Accepted().json(json!({ "actor": name.as_str(), "lose_wakes": body.count })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FailCommitsBody {
    count: u32,
    #[serde(default)]
    mode: FaultMode,
    /// How long each stalled commit hangs (`mode` `stall`), milliseconds.
    #[serde(default)]
    ms: u64,
}

/// How an injected commit fails.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum FaultMode {
    #[default]
    Error,
    Panic,
    Stall,
    Refuse,
    Checkpoint,
}

/// Longest injected stall: long enough to outlast any `store.commit_stall`, short enough that a
/// typo cannot wedge a test machine for good.
const MAX_STALL_MS: u64 = 15 * 60 * 1000;

/// Fault injection: the next `count` store commits fail (`mode` `error`, as a failing disk
/// would; the default), panic while applying their writes to sled (`panic`, as a bug in sled would),
/// have their writes refused while an empty sync still succeeds (`refuse`, as sled does once a
/// write of its own failed; only commits with writes count) or
/// hang `ms` milliseconds before their sync (`stall`, as a disk that stops answering would);
/// or the next `count` checkpoints fail (`checkpoint`: the journal keeps their files and the next
/// checkpoint retries).
#[utoipa::path(post, path = "/api/debug/store/fail-commits", tag = "debug", request_body = Object,
    responses((status = 202, body = Object), (status = 404, body = super::error::ErrorBody)), security(("bearer" = [])))]
async fn fail_commits(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    body: web::Json<FailCommitsBody>,
) -> Result<HttpResponse, ApiError> {
    fault_injection(&state)?;
    let fault = match body.mode {
        FaultMode::Error => CommitFault::Error,
        FaultMode::Panic => CommitFault::Panic,
        FaultMode::Refuse => CommitFault::Refuse,
        FaultMode::Checkpoint => CommitFault::Checkpoint,
        FaultMode::Stall if (1..=MAX_STALL_MS).contains(&body.ms) => {
            CommitFault::Stall(std::time::Duration::from_millis(body.ms))
        }
        FaultMode::Stall => {
            return Err(ApiError::Unprocessable(format!(
                "`ms` must be 1 ..= {MAX_STALL_MS} for mode stall"
            )));
        }
    };
    state
        .actors
        .registry
        .send(FailCommits {
            count: body.count,
            fault,
        })
        .await?;
    Ok(HttpResponse::Accepted()
        .json(json!({ "failing_commits": body.count, "fault": format!("{fault:?}") })))
}
