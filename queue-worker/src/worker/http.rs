//! The worker's opt-in HTTP endpoints (`WorkerBuilder::serve_http`, `QUEUE_HTTP_ADDR`):
//!
//! - `/livez`: 200 while the worker's loops tick (its async runtime ran its pulse within
//!   [`live_within`], 10 s by default, and the heartbeat thread stepped within it), 503 otherwise: a
//!   restart helps. A Redis outage does not make a worker dead (a restart would not help).
//! - `/readyz`: 200 when it answers Redis (a `PING` within [`READY_PING`]), its registry holds a
//!   handler, and it is not shutting down; 503 with the reason otherwise.
//! - `/metrics`: Prometheus text format (prometheus-client), gathered at each scrape: job
//!   counters and run and wait histograms by queue and job name (this process's, since it
//!   started), queue depth by state (read from Redis, the same for every worker), in-flight jobs,
//!   lease losses, recovered jobs, and the Redis round trip.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use queue_core::admin::BUCKETS_MS;
use queue_core::broker::Total;
use queue_core::QueueCounts;
use tokio::sync::watch;

use super::Runtime;

/// How recent the runtime's pulse and the heartbeat's last step must be for `/livez`, at the
/// least: a worker with a longer heartbeat or lease gets [`live_within`].
pub(super) const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// The `/livez` bound of a worker: [`LIVE_WITHIN`], or twice a beat and a lease when that is
/// longer. The heartbeat ticks before each queue's beat, and each call fails within half the
/// margin (`lease - heartbeat`), so a live heartbeat never goes longer than a beat plus half a
/// lease without a tick.
pub(super) fn live_within(rt: &Runtime) -> Duration {
    LIVE_WITHIN.max(2 * (rt.config.heartbeat + rt.config.lease))
}

/// How long `/readyz` waits for Redis's answer.
pub(super) const READY_PING: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct State {
    rt: Arc<Runtime>,
    stopping: watch::Receiver<bool>,
}

/// Serves the endpoints on `listener` until `stop`.
pub(super) async fn serve(
    rt: Arc<Runtime>,
    listener: std::net::TcpListener,
    stopping: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the HTTP endpoints");
            return;
        }
    };
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(State { rt, stopping });
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "the HTTP endpoints stopped");
    }
}

async fn livez(axum::extract::State(s): axum::extract::State<State>) -> Response {
    let pulse = s.rt.stalled_for();
    let beat = s.rt.heartbeat_idle_for();
    let within = live_within(&s.rt);
    if pulse > within {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the async runtime has not run for {pulse:?}\n"),
        )
            .into_response();
    }
    if beat > within {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the heartbeat has not gone round for {beat:?}\n"),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(axum::extract::State(s): axum::extract::State<State>) -> Response {
    if *s.stopping.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if s.rt.registry.names().is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no job handler registered\n",
        )
            .into_response();
    }
    match tokio::time::timeout(READY_PING, s.rt.client.ping()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Redis did not answer within {READY_PING:?}\n"),
        )
            .into_response(),
    }
}

async fn metrics(axum::extract::State(s): axum::extract::State<State>) -> Response {
    let snapshot = Snapshot::take(&s.rt).await;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// What one scrape shows, gathered before encoding.
#[derive(Debug)]
struct Snapshot {
    /// (queue, job name, totals since start).
    jobs: Vec<(String, String, Total)>,
    /// (queue, counts by state), for the queues Redis answered for.
    depth: Vec<(String, QueueCounts)>,
    in_flight: u64,
    concurrency: u64,
    lease_lost: u64,
    recovered: u64,
    redis_up: bool,
    redis_rtt: Option<Duration>,
    /// (used, maxmemory) bytes from `INFO`, when the user may run it.
    memory: Option<(u64, u64)>,
}

impl Snapshot {
    async fn take(rt: &Runtime) -> Snapshot {
        let mut jobs = Vec::new();
        for q in &rt.queues {
            for (name, t) in q.broker.recorder().totals() {
                jobs.push((q.broker.queue().to_string(), name, t));
            }
        }
        let started = Instant::now();
        let ping = tokio::time::timeout(READY_PING, rt.client.ping()).await;
        let redis_up = matches!(ping, Ok(Ok(_)));
        let redis_rtt = redis_up.then(|| started.elapsed());
        let mut depth = Vec::new();
        let mut memory = None;
        if redis_up {
            let admin = queue_core::admin::Admin::new(rt.client.clone());
            if let Ok(Ok(info)) = tokio::time::timeout(READY_PING, admin.server()).await {
                memory = Some((info.used_memory, info.maxmemory));
            }
            for q in &rt.queues {
                if let Ok(Ok(c)) =
                    tokio::time::timeout(READY_PING, rt.client.counts(q.broker.queue())).await
                {
                    depth.push((q.broker.queue().to_string(), c));
                }
            }
        }
        let concurrency = rt.config.concurrency as u64;
        Snapshot {
            jobs,
            depth,
            in_flight: concurrency.saturating_sub(rt.slots.available_permits() as u64),
            concurrency,
            lease_lost: rt.counters.lease_lost.load(Ordering::Relaxed),
            recovered: rt.counters.recovered.load(Ordering::Relaxed),
            redis_up,
            redis_rtt,
            memory,
        }
    }
}

/// A counter or gauge value, encoded as the descriptor says.
#[derive(Debug)]
enum Value {
    Counter(u64),
    /// A whole-number gauge (counts print without a fraction).
    Level(i64),
    Gauge(f64),
}

impl EncodeMetric for Value {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        match self {
            Value::Counter(v) => {
                encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(v, None)
            }
            Value::Level(v) => encoder.encode_gauge(v),
            Value::Gauge(v) => encoder.encode_gauge(v),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Value::Counter(_) => MetricType::Counter,
            Value::Level(_) | Value::Gauge(_) => MetricType::Gauge,
        }
    }
}

/// The histogram buckets in seconds, with their per-bucket counts (the encoder adds them up).
fn buckets(h: &queue_core::admin::Histogram) -> Vec<(f64, u64)> {
    BUCKETS_MS
        .iter()
        .map(|ms| *ms as f64 / 1000.0)
        .chain(std::iter::once(f64::INFINITY))
        .zip(h.buckets)
        .collect()
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "queue_jobs",
                "Settled attempts of this worker since it started, by queue, job and outcome (failed counts every failed attempt: retried, dead, discarded, lost with a worker)",
                None,
                MetricType::Counter,
            )?;
            for (queue, job, t) in &self.jobs {
                let c = &t.counts;
                for (outcome, n) in [
                    ("completed", c.completed),
                    ("failed", c.failed),
                    ("retried", c.retried),
                    ("dead", c.dead),
                ] {
                    let labels = [
                        ("queue", queue.as_str()),
                        ("job", job.as_str()),
                        ("outcome", outcome),
                    ];
                    Value::Counter(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, pick) in [
            (
                "queue_job_run_seconds",
                "Handler run time of settled attempts",
                (|t: &Total| (&t.counts.run, t.run_sum_ms))
                    as fn(&Total) -> (&queue_core::admin::Histogram, u64),
            ),
            (
                "queue_job_wait_seconds",
                "Wait of first attempts from when they were due to their start",
                |t: &Total| (&t.counts.wait, t.wait_sum_ms),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (queue, job, t) in &self.jobs {
                let (h, sum_ms) = pick(t);
                let labels = [("queue", queue.as_str()), ("job", job.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum_ms as f64 / 1000.0,
                        h.count(),
                        &buckets(h),
                        None,
                    )?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "queue_depth",
                "Jobs of each served queue by state, read from Redis at the scrape",
                None,
                MetricType::Gauge,
            )?;
            for (queue, c) in &self.depth {
                for (state, n) in [
                    ("pending", c.pending),
                    ("scheduled", c.scheduled),
                    ("retrying", c.retrying),
                    ("recovered", c.recovered),
                    ("active", c.active),
                    ("dead", c.dead),
                    ("completed", c.completed),
                ] {
                    let labels = [("queue", queue.as_str()), ("state", state)];
                    Value::Level(n as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let singles = [
            (
                "queue_jobs_in_flight",
                "Jobs this worker runs now",
                Value::Level(self.in_flight as i64),
            ),
            (
                "queue_worker_concurrency",
                "Most jobs this worker runs at once",
                Value::Level(self.concurrency as i64),
            ),
            (
                "queue_lease_lost",
                "Leases this worker lost before settling their job (another worker took it over)",
                Value::Counter(self.lease_lost),
            ),
            (
                "queue_jobs_recovered",
                "Jobs this worker took over from lost workers",
                Value::Counter(self.recovered),
            ),
            (
                "queue_redis_up",
                "1 when Redis answered this scrape's PING",
                Value::Level(i64::from(self.redis_up)),
            ),
        ];
        for (name, help, v) in &singles {
            let metric_type = v.metric_type();
            v.encode(encoder.encode_descriptor(name, help, None, metric_type)?)?;
        }
        if let Some((used, max)) = self.memory {
            for (name, help, v) in [
                (
                    "queue_redis_memory_used_bytes",
                    "Redis used_memory (INFO)",
                    used,
                ),
                (
                    "queue_redis_maxmemory_bytes",
                    "Redis maxmemory (INFO; 0 = no limit)",
                    max,
                ),
            ] {
                Value::Level(v as i64).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Some(rtt) = self.redis_rtt {
            Value::Gauge(rtt.as_secs_f64()).encode(encoder.encode_descriptor(
                "queue_redis_roundtrip_seconds",
                "How long this scrape's PING to Redis took",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
