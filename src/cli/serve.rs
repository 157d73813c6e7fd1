//! `approval-gate serve`: load settings, start logging, run the application until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::settings::{self, Sources};
use crate::startup::{Application, Stopped};
use crate::store_guard::EXIT_STORE_FAILING;
use crate::telemetry;

/// Once ready: what the start-up touched and no longer needs goes back to the OS. The code
/// pages on a thread of their own: writing the binary out may wait on the disk.
fn settled() {
    crate::memory::return_freed();
    let spawned = std::thread::Builder::new()
        .name("ag-settle".into())
        .spawn(|| {
            let released = crate::memory::release_start_up_pages();
            tracing::debug!(
                bytes = released,
                "asked the kernel to reclaim start-up code pages"
            );
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the thread that hands start-up pages back");
    }
}

pub fn run(config: Option<PathBuf>) -> ExitCode {
    let sources = Sources {
        config_file: config,
        env: None,
    };
    let settings = match settings::load(&sources) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("approval-gate: {error}");
            return ExitCode::from(2);
        }
    };
    let otlp = telemetry::otlp_endpoint(&settings.monitoring.otlp_endpoint);
    let (_logs, log_level) = telemetry::init_with(&settings.logging, otlp.as_deref());
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        // Before anything is logged as listening: SIGHUP's default action ends the process,
        // and a reload asked for the moment the service came up must not stop it.
        let hangups = crate::reload::hangups();
        let app = Application::build(settings)?
            .reloading(sources, log_level, hangups)
            .after_ready(settled);
        let stopped = app.run_until_stopped().await.map_err(|e| e.to_string())?;
        Ok::<_, Box<dyn std::error::Error>>(stopped)
    });
    match result {
        Ok(Stopped::Requested) => ExitCode::SUCCESS,
        Ok(Stopped::StoreFailing) => {
            eprintln!(
                "approval-gate: the store could not commit for store.restart_after; exiting \
                 with status {EXIT_STORE_FAILING} so the service is restarted"
            );
            ExitCode::from(EXIT_STORE_FAILING)
        }
        Err(error) => {
            tracing::error!(%error, "approval-gate failed");
            eprintln!("approval-gate: {error}");
            ExitCode::FAILURE
        }
    }
}
