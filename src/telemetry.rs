//! Logging: the tracing subscriber (pretty or JSON on stdout, optional daily-rolling files).
//! The request-id middleware that puts a correlation id on every line lives in `http::context`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::settings::{LogFormat, LoggingSettings};

/// Keeps the background log writers (and the OTLP exporter) alive; drop it only when the
/// process ends, or lines and spans are lost.
#[must_use]
pub struct LogGuards {
    _writers: Vec<WorkerGuard>,
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

#[cfg(feature = "otlp")]
impl Drop for LogGuards {
    fn drop(&mut self) {
        // Flush what the batch exporter still holds.
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Changes the log level of the running process (a configuration reload).
#[derive(Clone)]
pub struct LogLevel {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// RUST_LOG was set at start: it wins over `logging.level`, reloads included.
    pinned: bool,
}

impl LogLevel {
    /// Check a level; `None` when RUST_LOG pins the filter (nothing to apply).
    pub fn parse(&self, level: &str) -> Result<Option<EnvFilter>, String> {
        if self.pinned {
            return Ok(None);
        }
        EnvFilter::try_new(level)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Apply a level [`Self::parse`] accepted.
    pub fn apply(&self, filter: Option<EnvFilter>) {
        if let Some(filter) = filter
            && let Err(error) = self.handle.reload(filter)
        {
            // Only fails once the subscriber is gone (the process is ending).
            tracing::warn!(%error, "cannot change the log level");
        }
    }
}

/// Whether the pretty format may colour its lines: stdout is a terminal and `NO_COLOR` is unset.
fn colour_on_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Where spans go over OTLP, if anywhere: the setting, else `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn otlp_endpoint(configured: &str) -> Option<String> {
    Some(configured.trim().to_string())
        .filter(|e| !e.is_empty())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty())
}

#[cfg(feature = "otlp")]
fn otlp_layer<S>(
    endpoint: &str,
) -> Result<(impl Layer<S>, opentelemetry_sdk::trace::SdkTracerProvider), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("approval-gate")
                .build(),
        )
        .build();
    let tracer = provider.tracer("approval-gate");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

pub fn init(settings: &LoggingSettings) -> (LogGuards, LogLevel) {
    init_with(settings, None)
}

/// `init`, plus OTLP export of spans to `otlp` when built with the `otlp` feature.
pub fn init_with(settings: &LoggingSettings, otlp: Option<&str>) -> (LogGuards, LogLevel) {
    let pinned = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // One filter for every output, behind a reload handle so a reload can change the level.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let mut guards = Vec::new();
    // Buffered: the appender's worker writes everything queued so far, then flushes, so a burst
    // of lines costs one write call instead of one per line.
    let (stdout, guard) = log_queue(buffered(std::io::stdout()));
    guards.push(guard);
    let console = match settings.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(stdout)
            .boxed(),
        // Colour only on a terminal: journald, files and pipes get plain text (and NO_COLOR
        // turns it off anywhere).
        LogFormat::Pretty => fmt::layer()
            .with_target(false)
            .with_ansi(colour_on_stdout())
            .with_writer(stdout)
            .boxed(),
    };
    let file = (!settings.directory.trim().is_empty()).then(|| {
        let appender =
            tracing_appender::rolling::daily(settings.directory.trim(), &settings.file_prefix);
        let (writer, guard) = log_queue(buffered(appender));
        guards.push(guard);
        // Files are for machines: always JSON, never colour codes.
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(writer)
            .boxed()
    });
    #[cfg(feature = "otlp")]
    let (otlp, provider) = match otlp.map(otlp_layer) {
        Some(Ok((layer, provider))) => (Some(layer), Some(provider)),
        Some(Err(error)) => {
            eprintln!("approval-gate: OTLP export disabled: {error}");
            (None, None)
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let otlp_ignored = otlp.is_some();
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp);
    // A second init (tests starting several apps) keeps the first subscriber.
    let _ = registry.try_init();
    #[cfg(not(feature = "otlp"))]
    if otlp_ignored {
        tracing::warn!(
            "an OTLP endpoint is configured but this build has no OTLP export (build with --features otlp)"
        );
    }
    (
        LogGuards {
            _writers: guards,
            #[cfg(feature = "otlp")]
            provider,
        },
        LogLevel { handle, pinned },
    )
}

/// Lines a log writer's queue holds before new ones are dropped (and counted by the appender).
/// tracing-appender's default, 128,000, preallocates its whole ring: 4 MB resident per writer
/// before the first line. 8,192 lines is still more than half a second of a create burst at the
/// default `info` level, and the worker drains the queue in one batched write.
const LOG_QUEUE_LINES: usize = 8192;

fn log_queue<W: std::io::Write + Send + 'static>(
    writer: W,
) -> (tracing_appender::non_blocking::NonBlocking, WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .finish(writer)
}

/// A log writer that batches lines: tracing-appender's worker flushes it each time it has
/// written every line queued so far, so no line waits for more to come.
fn buffered<W: std::io::Write>(writer: W) -> std::io::BufWriter<W> {
    std::io::BufWriter::with_capacity(64 * 1024, writer)
}
