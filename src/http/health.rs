//! `/health` (per-actor detail), `/health/live` (the process and its actors answer) and
//! `/health/ready` (registry and sweeper answering and healthy, the store committing; not while
//! shutting down).
//!
//! The rules: an actor that does not answer its ping is `unhealthy`. The registry (and with it
//! the store) and the sweeper are critical: either unhealthy makes the service unhealthy (503)
//! and not ready. Any other actor unhealthy or degraded makes the service degraded (200).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use approval_gate_actors::supervision::HealthStatus;
use approval_gate_actors::system::PingResult;
use serde_json::{Value, json};

use super::AppState;

const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

#[utoipa::path(get, path = "/health", tag = "monitoring",
    responses((status = 200, description = "healthy or degraded, per actor", body = Object), (status = 503, description = "unhealthy", body = Object)))]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let pings = state.actors.ping_all(PING_TIMEOUT).await;
    let mut overall = HealthStatus::Healthy;
    let mut actors = serde_json::Map::new();
    for (name, answer) in pings {
        let entry = match answer {
            Some((health, took)) => {
                overall = worst(overall, health.status, name);
                json!({
                    "status": health.status,
                    "restarts": health.restarts,
                    "ping_ms": took.as_secs_f64() * 1000.0,
                    "detail": health.detail,
                })
            }
            None => {
                overall = worst(overall, HealthStatus::Unhealthy, name);
                json!({ "status": "unhealthy", "detail": "not answering its ping", "restarts": null, "ping_ms": null })
            }
        };
        actors.insert(name.to_string(), entry);
    }
    let body = json!({
        "status": overall,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "accepting": state.accepting.load(Ordering::Relaxed),
        "actors": actors,
    });
    let mut response = if overall == HealthStatus::Unhealthy {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    response.json(body)
}

/// The actors without which approvals cannot be recorded or time out.
const CRITICAL: [&str; 2] = [
    approval_gate_actors::registry::NAME,
    approval_gate_actors::sweeper::NAME,
];

/// A critical actor failing makes the service unhealthy; anything else degrades it.
fn worst(current: HealthStatus, actor: HealthStatus, name: &str) -> HealthStatus {
    let actor = match actor {
        HealthStatus::Unhealthy if !CRITICAL.contains(&name) => HealthStatus::Degraded,
        other => other,
    };
    let rank = |s: HealthStatus| match s {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    };
    if rank(actor) > rank(current) {
        actor
    } else {
        current
    }
}

#[utoipa::path(get, path = "/health/live", tag = "monitoring", responses((status = 200, body = Object)))]
async fn live(state: web::Data<AppState>) -> HttpResponse {
    let pings = state.actors.ping_all(PING_TIMEOUT).await;
    let silent: Vec<&str> = pings
        .iter()
        .filter(|(_, a)| a.is_none())
        .map(|(n, _)| *n)
        .collect();
    if silent.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "alive" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_answering", "actors": silent }))
    }
}

/// The readiness-critical actors that are unhealthy or silent, with why (empty = ready). Also
/// behind the `approval_gate_ready` gauge.
pub(super) fn not_ready(pings: Vec<PingResult>) -> serde_json::Map<String, Value> {
    let mut failing = serde_json::Map::new();
    for (name, answer) in pings.into_iter().filter(|(n, _)| CRITICAL.contains(n)) {
        match answer {
            Some((health, _)) if health.status != HealthStatus::Unhealthy => {}
            Some((health, _)) => {
                failing.insert(name.to_string(), health.detail);
            }
            None => {
                failing.insert(name.to_string(), json!("not answering"));
            }
        }
    }
    failing
}

#[utoipa::path(get, path = "/health/ready", tag = "monitoring",
    responses((status = 200, body = Object), (status = 503, description = "loading, shutting down or the store cannot commit", body = Object)))]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if !state.accepting.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "shutting_down" }));
    }
    let failing = not_ready(state.actors.ping_all(PING_TIMEOUT).await);
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not_ready", "actors": failing }))
    }
}
