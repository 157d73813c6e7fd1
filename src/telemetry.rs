//! Logging: the tracing subscriber (pretty or JSON on stdout, optional daily-rolling files).
//! The request-id middleware that puts a correlation id on every line lives in `http::context`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::settings::{LogFormat, LoggingSettings};

/// Keeps the background log writers alive; drop it only when the process ends, or lines are lost.
#[must_use]
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Changes the log level of the running process (a configuration reload).
#[derive(Clone)]
pub struct LogLevel {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// RUST_LOG was set at start: it wins over `logging.level`, reloads included.
    pinned: bool,
}

impl LogLevel {
    pub fn set(&self, level: &str) -> Result<(), String> {
        if self.pinned {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

pub fn init(settings: &LoggingSettings) -> (LogGuards, LogLevel) {
    let pinned = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // One filter for every output, behind a reload handle so a reload can change the level.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let mut guards = Vec::new();
    let (stdout, guard) = tracing_appender::non_blocking(std::io::stdout());
    guards.push(guard);
    let console = match settings.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(stdout)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_target(false).with_writer(stdout).boxed(),
    };
    let file = (!settings.directory.trim().is_empty()).then(|| {
        let appender =
            tracing_appender::rolling::daily(settings.directory.trim(), &settings.file_prefix);
        let (writer, guard) = tracing_appender::non_blocking(appender);
        guards.push(guard);
        // Files are for machines: always JSON, never colour codes.
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(writer)
            .boxed()
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file);
    // A second init (tests starting several apps) keeps the first subscriber.
    let _ = registry.try_init();
    (LogGuards(guards), LogLevel { handle, pinned })
}
