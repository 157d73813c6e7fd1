//! Builds the running service from settings: opens the store, starts the supervised actors,
//! binds the HTTP server. `main` and the tests both go through [`Application::build`], so tests
//! exercise exactly what production runs.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use approval_gate_actors::store::StoreError;
use approval_gate_actors::system::{ActorSystem, SystemSettings};

use crate::http::{self, AppState, Tokens};
use crate::settings::{self, Settings, SettingsError};

mod actor_settings;

use actor_settings::chain_settings;
pub(crate) use actor_settings::{registry_settings, telegram_settings};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error("server.tls: {0}")]
    Tls(String),
}

/// Why [`Application::run_until_stopped`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A signal or `handle().stop()`.
    Requested,
    /// The store could not commit for `store.restart_after`: exit for a restart.
    StoreFailing,
}

pub struct Application {
    port: u16,
    server: Server,
    /// The TLS certificate served, when `[server.tls]` is set (a reload reads the files again).
    certificates: Option<Arc<crate::tls::Certificates>>,
    state: web::Data<AppState>,
    tokens: web::Data<Tokens>,
    /// Where settings came from and the log level handle, when reloads are on (`serve`).
    reload: Option<(
        settings::Sources,
        crate::telemetry::LogLevel,
        Option<crate::reload::Hangups>,
    )>,
    /// The separate monitoring listener (`monitoring.bind`) and its port.
    monitoring: Option<(Server, u16)>,
    /// Run once the service is ready (`serve` hands start-up memory back; tests run nothing).
    after_ready: Option<fn()>,
    actors: ActorSystem,
    accepting: Arc<AtomicBool>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Must run inside an actix `System` (`#[actix_web::main]` or `#[actix_web::test]`).
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        if settings.auth_is_open() {
            tracing::warn!(
                bind = %settings.server.bind,
                "NO AUTH TOKENS CONFIGURED: anyone who can reach {} may create and decide approvals. \
                 Configure [auth] agent_tokens and operator_tokens before exposing this service.",
                settings.server.bind
            );
        }
        let addr = settings::validate::bind_address(&settings.server.bind)?;
        let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
            bind: settings.server.bind.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(addr.port());

        let system = ActorSystem::start(SystemSettings {
            store_path: settings.store.path.clone(),
            store_cache_bytes: settings.store.cache_mib * 1024 * 1024,
            commit_stall: settings.store.commit_stall,
            checkpoint_every: settings.store.checkpoint_every,
            registry: registry_settings(&settings)?,
            check_interval: settings.approval_timeout.check_interval,
            fallback: chain_settings(&settings),
            telegram: telegram_settings(&settings),
            callback_secret: Some(settings.telegram.callback_secret.clone())
                .filter(|s| !s.is_empty()),
            fallback_always: settings.fallback.always,
            postgres: postgres_settings(&settings),
        })?;
        // Opening the store (sled's recovery, on this thread) left its buffers freed.
        crate::memory::return_freed();

        let accepting = Arc::new(AtomicBool::new(true));
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let state = web::Data::new(AppState {
            actors: system.actors.clone(),
            live: arc_swap::ArcSwap::from_pointee(settings.clone()),
            accepting: Arc::clone(&accepting),
            stopping: stopping_rx,
            started: Instant::now(),
            live_limits: arc_swap::ArcSwap::from_pointee(http::Limits::new(&settings.limits)),
            sessions: Arc::new(http::Sessions::new(system.actors.registry.clone())),
        });
        let tokens = web::Data::new(Tokens::new(&settings.auth));
        let monitoring = monitoring_server(&settings, &state)?;
        let (app_state, app_tokens) = (state.clone(), tokens.clone());
        let mut server = HttpServer::new(move || {
            // Runs once per worker, on the worker's own thread.
            approval_gate_actors::threads::name_current("ag-http");
            App::new()
                .wrap(from_fn(http::request_context))
                .configure(http::configure(app_state.clone(), app_tokens.clone()))
                .default_service(web::to(http::not_found))
        })
        // Nagle's algorithm would hold the last chunk of a streamed long-poll body until the
        // client's delayed ACK (~40 ms): every decision would reach its waiters that much later.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs());
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let bind_error = |source| StartupError::Bind {
            bind: settings.server.bind.clone(),
            source,
        };
        let certificates = if settings.server.tls.enabled() {
            let tls = &settings.server.tls;
            Some(
                crate::tls::Certificates::load(tls.cert.trim().as_ref(), tls.key.trim().as_ref())
                    .map_err(|e| StartupError::Tls(e.to_string()))?,
            )
        } else {
            None
        };
        let server = match &certificates {
            Some(certificates) => {
                let config = certificates
                    .server_config()
                    .map_err(|e| StartupError::Tls(e.to_string()))?;
                server
                    .listen_rustls_0_23(listener, config)
                    .map_err(bind_error)?
            }
            None => server.listen(listener).map_err(bind_error)?,
        }
        .run();
        tracing::info!(%addr, port, store = %settings.store.path.display(), "approval-gate listening");
        Ok(Self {
            port,
            server,
            certificates,
            state,
            tokens,
            reload: None,
            after_ready: None,
            monitoring,
            actors: system,
            accepting,
            stopping,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Reload the configuration from `sources` on SIGHUP and when the `--config` file changes.
    /// `hangups`: the SIGHUP listener, installed before start-up ([`crate::reload::hangups`]).
    pub fn reloading(
        mut self,
        sources: settings::Sources,
        log_level: crate::telemetry::LogLevel,
        hangups: Option<crate::reload::Hangups>,
    ) -> Self {
        self.reload = Some((sources, log_level, hangups));
        self
    }

    /// Run `then` once, when the service is ready (listening and its store loaded).
    pub fn after_ready(mut self, then: fn()) -> Self {
        self.after_ready = Some(then);
        self
    }

    /// The port of the separate monitoring listener, when `monitoring.bind` is set.
    pub fn monitoring_port(&self) -> Option<u16> {
        self.monitoring.as_ref().map(|(_, port)| *port)
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until SIGTERM/SIGINT (or `handle().stop()`), or until the store has not committed
    /// for `store.restart_after` ([`crate::store_guard`]), then drain in-flight requests within
    /// `server.shutdown_timeout`, stop the actors and flush the store.
    pub async fn run_until_stopped(self) -> std::io::Result<Stopped> {
        let Self {
            server,
            monitoring,
            actors,
            accepting,
            stopping,
            state,
            tokens,
            reload,
            certificates,
            after_ready,
            ..
        } = self;
        // sled does not recover from a failed write in-process, so a restart is its cure; the
        // PostgreSQL store reconnects by itself when the database returns: never restart it.
        let restart_after = match state.settings().store.backend {
            settings::StoreBackend::Sled => state.settings().store.restart_after,
            settings::StoreBackend::Postgres => std::time::Duration::ZERO,
        };
        if let Some((sources, log_level, hangups)) = reload {
            let reloader =
                crate::reload::Reloader::new(sources, state, tokens, log_level, certificates);
            actix_rt::spawn(reloader.watch(hangups));
        }
        // Listening and loaded: tell systemd (Type=notify), and keep its watchdog fed.
        actix_rt::spawn(crate::systemd::ready_then_watchdog(
            actors.actors.clone(),
            after_ready,
        ));
        let handle = server.handle();
        let monitoring_handle = monitoring.as_ref().map(|(server, _)| server.handle());
        if let Some((monitoring, _)) = monitoring {
            actix_rt::spawn(monitoring);
        }
        let guarded = actors.actors.clone();
        let store_failed = Arc::new(AtomicBool::new(false));
        let failed = Arc::clone(&store_failed);
        actix_rt::spawn(async move {
            tokio::select! {
                () = shutdown_signal() => {}
                () = crate::store_guard::failing_for(guarded, restart_after) => {
                    tracing::error!(
                        restart_after = %humantime::format_duration(restart_after),
                        exit_status = crate::store_guard::EXIT_STORE_FAILING,
                        "the store has not committed for store.restart_after; stopping so the \
                         supervisor restarts the service (sled recovers from its log on open)"
                    );
                    failed.store(true, Ordering::SeqCst);
                }
            }
            tracing::info!("shutdown requested: no longer accepting, draining in-flight requests");
            crate::systemd::stopping();
            accepting.store(false, Ordering::Relaxed);
            // Open long polls finish now with the approval's current state, so graceful stop
            // does not cut their bodies off.
            let _ = stopping.send(true);
            if let Some(monitoring) = monitoring_handle {
                monitoring.stop(true).await;
            }
            handle.stop(true).await;
        });
        let result = server.await;
        // Joining the arbiters blocks briefly while the final flush completes (at most a few
        // seconds when the disk hangs).
        actors.stop();
        if store_failed.load(Ordering::SeqCst) {
            tracing::warn!("approval-gate stopped because its store could not commit");
            return result.map(|()| Stopped::StoreFailing);
        }
        tracing::info!("approval-gate stopped; store flushed");
        result.map(|()| Stopped::Requested)
    }
}

/// The separate monitoring listener, if `monitoring.bind` asks for one.
fn monitoring_server(
    settings: &Settings,
    state: &web::Data<AppState>,
) -> Result<Option<(Server, u16)>, StartupError> {
    let bind = settings.monitoring.bind.trim();
    if bind.is_empty() {
        return Ok(None);
    }
    let addr = settings::validate::bind_address(bind)?;
    let error = |source| StartupError::Bind {
        bind: bind.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(error)?;
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(addr.port());
    let state = state.clone();
    let server = HttpServer::new(move || {
        approval_gate_actors::threads::name_current("ag-monitoring");
        App::new()
            .wrap(from_fn(http::request_context))
            .configure(http::configure_monitoring(state.clone()))
            .default_service(web::to(http::not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(error)?
    .run();
    tracing::info!(%addr, port, "monitoring listening (health, metrics, diagnostics; no token)");
    Ok(Some((server, port)))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The PostgreSQL backend's settings when `store.backend = "postgres"` (validated already).
fn postgres_settings(
    settings: &Settings,
) -> Option<approval_gate_actors::store::postgres::backend::PgBackendSettings> {
    use approval_gate_actors::store::postgres::{PgSettings, PgTls, TlsMode};
    if settings.store.backend != settings::StoreBackend::Postgres {
        return None;
    }
    let pg = &settings.store.postgres;
    let mode = match pg.tls.as_str() {
        "require" => TlsMode::Require,
        "verify-full" => TlsMode::VerifyFull,
        _ => TlsMode::Disable,
    };
    let instance = if pg.instance.trim().is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}-{}", std::process::id())
    } else {
        pg.instance.trim().to_string()
    };
    Some(
        approval_gate_actors::store::postgres::backend::PgBackendSettings {
            connection: PgSettings {
                url: pg.url.clone(),
                pool_size: pg.pool_size,
                statement_timeout: pg.statement_timeout,
                pool_wait: pg.pool_wait,
                tls: PgTls {
                    mode,
                    ca_file: (!pg.ca_file.trim().is_empty())
                        .then(|| std::path::PathBuf::from(pg.ca_file.trim())),
                },
            },
            instance,
            leader_lease: settings.telegram.leader_lease,
        },
    )
}
