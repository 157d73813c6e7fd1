//! The HTTP front door: shared state, extractor configuration and the route table. Handlers live
//! in one module per resource; errors map to HTTP in `error`.

mod admin;
mod approvals;
mod auth;
mod console;
mod context;
mod decisions;
mod diagnostics;
mod error;
mod grants;
mod health;
mod history;
mod hooks;
mod limits;
mod metrics;
mod openapi;
mod search;
mod telegram;
mod view;

/// The API's approval type, shared with the CLI.
pub use view::ApprovalView;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use approval_gate_actors::system::Actors;

pub use auth::Tokens;
pub use console::session::Sessions;
pub use error::ApiError;

use crate::settings::Settings;

/// What every handler can reach: actor addresses and settings, nothing mutable but the
/// shutdown flag.
pub struct AppState {
    pub actors: Actors,
    /// The running settings; replaced whole by a reload (`reload.rs`).
    pub live: arc_swap::ArcSwap<Settings>,
    pub accepting: Arc<AtomicBool>,
    /// Turns true on shutdown: open long polls answer with the current state at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub started: Instant,
    /// Rate limits per token and per source address (rebuilt by a reload).
    pub live_limits: arc_swap::ArcSwap<limits::Limits>,
    /// Console sign-ins (`console/session.rs`).
    pub sessions: Arc<console::session::Sessions>,
}

pub use limits::Limits;

impl AppState {
    /// The settings in force now (a reload may replace them between two requests).
    pub fn settings(&self) -> Arc<Settings> {
        self.live.load_full()
    }

    pub fn limits(&self) -> Arc<limits::Limits> {
        self.live_limits.load_full()
    }

    /// A list endpoint's `limit`: 50 by default, 1 ..= `server.max_page_size`.
    pub fn page_limit(&self, requested: Option<usize>) -> Result<usize, ApiError> {
        let max = self.settings().server.max_page_size;
        let limit = requested.unwrap_or(50.min(max));
        if limit == 0 || limit > max {
            return Err(ApiError::InvalidQuery(format!(
                "`limit` must be between 1 and {max}"
            )));
        }
        Ok(limit)
    }
}

/// Everything an `App` needs, in one place so the server and tests build the same app.
pub fn configure(
    state: web::Data<AppState>,
    tokens: web::Data<Tokens>,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.settings().server.max_body_bytes;
        let metrics_enabled = state.settings().monitoring.metrics_enabled;
        let metrics_path = state.settings().monitoring.metrics_path.clone();
        let separate_monitoring = !state.settings().monitoring.bind.trim().is_empty();
        let console_enabled = state.settings().console.enabled;
        cfg.app_data(state)
            .app_data(tokens)
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .content_type_required(false)
                    .error_handler(move |e, _| error::json_error(e, limit).into()),
            )
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::InvalidQuery(e.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::NotFound(e.to_string()).into()),
            )
            .configure(approvals::routes)
            .configure(admin::routes)
            .configure(grants::routes)
            .configure(hooks::routes)
            .configure(telegram::routes)
            .configure(openapi::routes)
            .configure(health::routes)
            .configure(diagnostics::routes);
        if console_enabled {
            cfg.configure(console::routes);
        }
        if !separate_monitoring {
            cfg.configure(diagnostics::views);
            if metrics_enabled {
                cfg.route(&metrics_path, web::get().to(metrics::metrics));
            }
        }
    }
}

/// The separate monitoring listener (`monitoring.bind`): health, metrics and diagnostics, no
/// token asked. Nothing here changes state.
pub fn configure_monitoring(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let metrics_enabled = state.settings().monitoring.metrics_enabled;
        let metrics_path = state.settings().monitoring.metrics_path.clone();
        cfg.app_data(state)
            .app_data(web::Data::new(auth::MonitoringOpen(true)))
            .configure(health::routes)
            .configure(diagnostics::views);
        if metrics_enabled {
            cfg.route(&metrics_path, web::get().to(metrics::metrics));
        }
    }
}

pub use context::request_context;

/// JSON 404 for unknown routes (and 405-ish mismatches), instead of actix's empty body.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())).error_response()
}
