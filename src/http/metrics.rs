//! `/metrics`: the Prometheus text exposition, rendered by the MetricsCollector actor.

use actix_web::{HttpResponse, web};
use approval_gate_actors::metrics::Gather;

use super::AppState;
use super::error::ApiError;

#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text format (path: monitoring.metrics_path)", content_type = "text/plain", body = String)))]
pub async fn metrics(
    state: web::Data<AppState>,
    _access: super::auth::MonitoringAccess,
) -> Result<HttpResponse, ApiError> {
    refresh(&state).await;
    let text = state.actors.metrics.send(Gather).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// Facts that are cheaper to read at scrape time than to track: each actor's ping, and the
/// store's size, last commit and dead letters. Sent before `Gather`, so the scrape includes them.
async fn refresh(state: &AppState) {
    use approval_gate_actors::metrics::Metric;
    let timeout = std::time::Duration::from_secs(1);
    let pings = state.actors.ping_all(timeout).await;
    // Exactly what `/health/ready` answers, so an alert can page on it.
    let accepting = state.accepting.load(std::sync::atomic::Ordering::Relaxed);
    let ready = accepting && super::health::not_ready(pings.clone()).is_empty();
    state.actors.metrics.do_send(Metric::Ready(ready));
    let actors = pings
        .into_iter()
        .map(|(actor, answer)| match answer {
            Some((_, took)) => (actor, true, took.as_secs_f64()),
            None => (actor, false, timeout.as_secs_f64()),
        })
        .collect();
    state.actors.metrics.do_send(Metric::Actors(actors));
    if let Ok(stats) = state
        .actors
        .registry
        .send(approval_gate_actors::registry::Stats)
        .timeout(timeout)
        .await
    {
        // The approvals' and queue entries' times are the shared clock's: so is their age.
        let now_ms = state.actors.clock.now_ms();
        let age = |ms: i64| approval_gate_actors::store::queue::seconds_since(ms, now_ms);
        if let Some(database) = stats.store.database {
            state.actors.metrics.do_send(Metric::Database(database));
        }
        state.actors.metrics.do_send(Metric::Store {
            size_bytes: stats.store.size_on_disk,
            last_commit_seconds: stats.store.last_sync_us as f64 / 1e6,
            commit_failures: stats.store.commit_failures,
            commits: stats.store.commits,
            dead_letters: stats.dead_letters,
            oldest_pending_seconds: stats.oldest_pending_ms.map_or(0.0, age),
            oldest_queued_seconds: stats
                .oldest_queued_ms
                .iter()
                .map(|(channel, ms)| (channel.as_str(), ms.map_or(0.0, age)))
                .collect(),
        });
    }
}
