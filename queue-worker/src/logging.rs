//! `init_logging`: the log set-up a worker binary wants, so every deployment gets the same
//! switches (feature `logging`).

use std::io::IsTerminal;

use crate::error::{Error, Result};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event (coloured only on a terminal).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, and the spans (the
    /// job's id, name, queue and attempt), for a log collector.
    Json,
}

impl LogFormat {
    /// `QUEUE_LOG_FORMAT`: `text` (or unset) or `json`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for any other value.
    pub fn from_env() -> Result<LogFormat> {
        match std::env::var("QUEUE_LOG_FORMAT").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("text") => Ok(LogFormat::Text),
            Ok("json") => Ok(LogFormat::Json),
            Ok(other) => Err(Error::Config(format!(
                "QUEUE_LOG_FORMAT must be text or json, not {other:?}"
            ))),
        }
    }
}

/// Installs a global `tracing` subscriber writing to stderr: the filter from `RUST_LOG`
/// (`info,redis=error` when unset or empty), the format from `QUEUE_LOG_FORMAT`, colour codes only when
/// stderr is a terminal and `NO_COLOR` is unset or empty (a log file or a pipe gets plain text).
///
/// # Errors
///
/// [`Error::Config`] for an invalid `QUEUE_LOG_FORMAT` or `RUST_LOG`, or when a global
/// subscriber is already installed.
pub fn init_logging() -> Result<()> {
    init_logging_as(LogFormat::from_env()?)
}

/// [`init_logging`] with the format given.
///
/// # Errors
///
/// As [`init_logging`].
pub fn init_logging_as(format: LogFormat) -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    tracing_subscriber::registry()
        .with(env_filter()?)
        .with(fmt_layer(format))
        .try_init()
        .map_err(|e| Error::Config(format!("cannot install the log subscriber: {e}")))
}

/// What is logged without `RUST_LOG`: `info`, and of redis-rs only errors. Its warnings are
/// one line per failed attempt of its own retries (a cluster failover makes a thousand in ten
/// seconds), while the worker already says once per outage what failed and that it retries.
pub(crate) const DEFAULT_FILTER: &str = "info,redis=error";

/// The filter from `RUST_LOG`, [`DEFAULT_FILTER`] when unset or empty. Shared with
/// `init_tracing_otel` (feature `otel`), so both subscribers log the same lines.
pub(crate) fn env_filter() -> Result<tracing_subscriber::EnvFilter> {
    // Unset or empty (`RUST_LOG=` in a unit file): the default.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_FILTER.into());
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| Error::Config(format!("RUST_LOG {filter:?}: {e}")))
}

/// The layer writing log lines to stderr in `format`, colour codes only on a terminal with
/// `NO_COLOR` unset or empty.
pub(crate) fn fmt_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // no-color.org: NO_COLOR counts when set and not empty.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => Box::new(layer.with_ansi(ansi)),
        LogFormat::Json => Box::new(layer.json().with_ansi(false)),
    }
}
