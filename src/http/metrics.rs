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
    let text = state.actors.metrics.send(Gather).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
