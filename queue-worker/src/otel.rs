//! `init_tracing_otel`: [`init_logging`](crate::init_logging)'s log lines, plus every span
//! exported to an OpenTelemetry collector over OTLP/HTTP (feature `otel`).
//!
//! The job span *links* to the producer's trace context rather than taking it as its parent
//! (see `middleware/trace.rs`): a job runs long after its producer's request ended, once per
//! attempt, so each attempt is a trace of its own that points back at the request that enqueued
//! it, as the OpenTelemetry messaging conventions describe for consumers.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::{Error, Result};
use crate::logging::{env_filter, fmt_layer, LogFormat};

/// Where spans go when no `OTEL_EXPORTER_OTLP_*ENDPOINT` says otherwise: a collector (or
/// agent) on the same host, OTLP/HTTP's port.
const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4318";

/// The `service.name` of the exported spans when `OTEL_SERVICE_NAME` is unset or empty.
const DEFAULT_SERVICE_NAME: &str = "queue-worker";

/// How long one export request may take (OTLP's default timeout).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs a global `tracing` subscriber that writes the log lines of
/// [`init_logging`](crate::init_logging) (`RUST_LOG`, `QUEUE_LOG_FORMAT`) and exports every span
/// it lets through, batched, to an OpenTelemetry collector over OTLP/HTTP (protobuf). Each job
/// span carries a link to its producer's trace context when the producer sent one
/// ([`NewJob::traceparent`](queue_core::NewJob::traceparent)).
///
/// The standard variables configure it:
///
/// | variable | meaning | default |
/// | --- | --- | --- |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | the collector's base URL; spans go to its `/v1/traces` | `http://127.0.0.1:4318` |
/// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the full URL for spans, used as it is (wins over the above) | |
/// | `OTEL_SERVICE_NAME` | the spans' `service.name` | `queue-worker` |
/// | `OTEL_EXPORTER_OTLP_HEADERS` | `key=value,...` headers on each export (an API key) | |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL` | only `http/protobuf` is built in | `http/protobuf` |
///
/// Export is plain HTTP: this build carries no TLS stack of its own (the process keeps one
/// rustls crypto provider), so send to a collector or agent on the host or in the pod, which
/// forwards over TLS. It also installs the tracer provider as OpenTelemetry's global one and
/// the W3C trace-context propagator, so a handler using the `opentelemetry` API directly
/// exports through the same pipeline.
///
/// Keep the returned guard for the life of the process: dropping it, or
/// [`OtelGuard::shutdown`], flushes the spans still batched.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let otel = queue_worker::init_tracing_otel()?;
/// // ... build and run the worker ...
/// otel.shutdown();
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Config`] for an invalid `QUEUE_LOG_FORMAT` or `RUST_LOG`, an endpoint that is not
/// an `http://` URL, a protocol other than `http/protobuf`, an exporter setting it refuses, or
/// when a global subscriber is already installed.
pub fn init_tracing_otel() -> Result<OtelGuard> {
    let format = LogFormat::from_env()?;
    let filter = env_filter()?;
    let endpoint = traces_endpoint(
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?.as_deref(),
        env("OTEL_EXPORTER_OTLP_ENDPOINT")?.as_deref(),
    )?;
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        match env(var)?.as_deref().map(str::trim) {
            None | Some("http/protobuf") => {}
            Some(other) => {
                return Err(Error::Config(format!(
                    "{var} must be http/protobuf (the only OTLP protocol built in), not {other:?}"
                )))
            }
        }
    }
    let service_name =
        env("OTEL_SERVICE_NAME")?.unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());

    let runtime = ExportRuntime::start()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_http_client(runtime.client())
        .build()
        .map_err(|e| Error::Config(format!("OTLP exporter to {endpoint}: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer_with_scope(
        opentelemetry::InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    // From here on the guard owns the pipeline: an early return below shuts it down.
    let guard = OtelGuard {
        provider: Some(provider),
        runtime: Some(runtime),
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(format))
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .map_err(|e| Error::Config(format!("cannot install the log subscriber: {e}")))?;
    if let Some(provider) = &guard.provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(guard)
}

/// Keeps the span export of [`init_tracing_otel`] running; dropping it flushes the spans still
/// batched and stops the export, as [`OtelGuard::shutdown`] does.
#[derive(Debug)]
#[must_use = "dropping the guard stops the span export"]
pub struct OtelGuard {
    provider: Option<SdkTracerProvider>,
    runtime: Option<ExportRuntime>,
}

impl OtelGuard {
    /// Flushes the spans still batched to the collector (waiting for its answer, a few seconds
    /// at most) and stops the export; spans ended afterwards are dropped, log lines still
    /// written. A collector that cannot be reached is logged (the exporter reports each failed
    /// batch): at shutdown there is nothing else to do about it.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The batch processor's thread exports through `ExportRuntime`, which is still
            // running here: the flush needs it.
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "cannot flush the spans to the OTLP collector");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.stop();
        }
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A variable's value; unset and empty are both `None`.
fn env(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Config(format!("{var} is not valid UTF-8")))
        }
    }
}

/// The URL spans are posted to: `traces` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) as it is, else
/// `base` (`OTEL_EXPORTER_OTLP_ENDPOINT`, else [`DEFAULT_OTLP_ENDPOINT`]) with `/v1/traces`
/// appended, as the OTLP exporter specification says. Only `http://` URLs with a host pass.
fn traces_endpoint(traces: Option<&str>, base: Option<&str>) -> Result<String> {
    let (var, value, url) = match (traces, base) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url, url.to_string()),
        (None, base) => {
            let base = base.unwrap_or(DEFAULT_OTLP_ENDPOINT);
            let url = format!("{}/v1/traces", base.trim_end_matches('/'));
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base, url)
        }
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("{var}={value:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Error::Config(format!(
                "{var}={value:?}: https is not built in (no TLS stack of its own); export over \
                 http:// to a collector or agent on the host"
            )))
        }
        _ => {
            return Err(Error::Config(format!(
                "{var}={value:?} is not an http:// URL"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::Config(format!("{var}={value:?} names no host")));
    }
    Ok(url)
}

/// A Tokio runtime on a thread of its own for the exporter's HTTP requests.
///
/// The SDK's batch processor exports from its own thread, outside any runtime, and hyper needs
/// one. The application's runtime would do until shutdown: a guard dropped at the end of a
/// current-thread `main` blocks that runtime while it waits for the flush, which then could
/// never run. Its own runtime keeps the flush independent of how the application runs.
#[derive(Debug)]
struct ExportRuntime {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ExportRuntime {
    fn start() -> Result<ExportRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the OTLP export runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The runtime is dropped on its own thread, never inside the application's runtime
        // (where Tokio refuses to drop one).
        let thread = std::thread::Builder::new()
            .name("queue-otel-export".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| Error::Config(format!("cannot start the OTLP export thread: {e}")))?;
        Ok(ExportRuntime {
            handle,
            stop,
            thread,
        })
    }

    fn client(&self) -> ExportClient {
        ExportClient {
            handle: self.handle.clone(),
            inner: opentelemetry_http::hyper::HyperClient::with_default_connector(
                EXPORT_TIMEOUT,
                None,
            ),
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        // Nothing is left to run: the provider is shut down before the runtime stops.
        let _ = self.thread.join();
    }
}

/// hyper's OTLP client, run on [`ExportRuntime`] whatever thread calls it.
#[derive(Debug, Clone)]
struct ExportClient {
    handle: tokio::runtime::Handle,
    inner: opentelemetry_http::hyper::HyperClient,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        self.handle
            .spawn(async move { inner.send_bytes(request).await })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::traces_endpoint;

    #[test]
    fn the_traces_endpoint_follows_the_otlp_variables() {
        let ok = |t, b| traces_endpoint(t, b).expect("valid");
        assert_eq!(ok(None, None), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(
            ok(None, Some("http://collector:4318/")),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            ok(None, Some("http://collector:4318/otlp")),
            "http://collector:4318/otlp/v1/traces"
        );
        // The per-signal variable is used as it is, and wins.
        assert_eq!(
            ok(Some("http://x:1/spans"), Some("http://collector:4318")),
            "http://x:1/spans"
        );
        for (traces, base, says) in [
            (None, Some("not a url"), "is not a URL"),
            (
                None,
                Some("https://collector:4318"),
                "https is not built in",
            ),
            (
                Some("ftp://collector/v1/traces"),
                None,
                "not an http:// URL",
            ),
            (None, Some("collector:4318"), "is not a URL"),
            (Some("/v1/traces"), None, "not an http:// URL"),
        ] {
            let err = traces_endpoint(traces, base).expect_err("invalid");
            assert!(matches!(err, crate::Error::Config(_)), "{err}");
            assert!(err.to_string().contains(says), "{traces:?} {base:?}: {err}");
        }
    }
}
