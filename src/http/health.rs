//! `/health` (per-actor detail), `/health/live` (the process and its actors answer) and
//! `/health/ready` (store open and registry answering; not while shutting down).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use approval_gate_actors::supervision::HealthStatus;
use serde_json::json;

use super::AppState;

const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

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
                json!({ "status": "not_answering", "restarts": null, "ping_ms": null })
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

/// Only the registry failing makes the service unhealthy; anything else degrades it.
fn worst(current: HealthStatus, actor: HealthStatus, name: &str) -> HealthStatus {
    let actor = match actor {
        HealthStatus::Unhealthy if name != approval_gate_actors::registry::NAME => {
            HealthStatus::Degraded
        }
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

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if !state.accepting.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "shutting_down" }));
    }
    let registry = state
        .actors
        .registry
        .send(approval_gate_actors::supervision::Ping)
        .timeout(PING_TIMEOUT)
        .await;
    match registry {
        Ok(health) if health.status != HealthStatus::Unhealthy => {
            HttpResponse::Ok().json(json!({ "status": "ready" }))
        }
        Ok(health) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "registry": health.detail })),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "registry": "not answering" })),
    }
}
