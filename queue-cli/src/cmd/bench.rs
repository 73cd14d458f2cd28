//! `queue bench`: an end-to-end benchmark in the spirit of redis-benchmark.
//!
//! Phases, each on its own queue of a throwaway namespace: enqueue N jobs in batches (measuring
//! Redis memory per waiting job), drain them with a no-op handler at the given concurrency,
//! then measure enqueue-to-start latency at a steady rate. Redis CPU and commands per job come
//! from Redis's own INFO counters, like the BullMQ peer benchmark in `shared/bench/peers`.
//!
//! The benchmark job is an ordinary `#[job]` run by an ordinary worker: no shortcut anywhere.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use queue::{job, Client, JobError, NewJob, RedisServer, Retention, WorkerBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Worker concurrency for the drain phase.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Jobs per `enqueue_batch` call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rate of the latency phase, jobs per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency phase, seconds (0 skips it).
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Worker concurrency for the latency phase.
    #[arg(long, default_value_t = 10)]
    latency_concurrency: usize,
    /// Completed jobs the drain worker retains (0 = remove on complete, like the BullMQ run
    /// with removeOnComplete; the library default keeps 1000).
    #[arg(long, default_value_t = 0)]
    keep_completed: u64,
    /// Turn lifecycle events on for the benchmark's queues (to measure what they cost)
    #[arg(long)]
    events: bool,
    /// Length of the event-bus latency phase, seconds (0 skips it)
    #[arg(long, default_value_t = 0)]
    bus_secs: u64,
    /// Rate of the event-bus latency phase, events per second
    #[arg(long, default_value_t = 1000)]
    bus_rate: u64,
    /// Only enqueue the jobs into `--queue` and leave them waiting.
    #[arg(long, requires = "queue")]
    enqueue_only: bool,
    /// Queue for `--enqueue-only`.
    #[arg(long)]
    queue: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    i: u64,
    /// Enqueue time, ms since the epoch (sub-ms precision).
    ts: f64,
    pad: String,
}

/// Latency samples of the latency phase, and the count of runs.
static LATENCIES: Mutex<Vec<f64>> = Mutex::new(Vec::new());
static RECORD_LATENCY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static RUNS: AtomicU64 = AtomicU64::new(0);

fn now_ms_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The benchmark's no-op handler.
#[job(name = "bench.noop", crate = "::queue")]
async fn noop(p: Payload) -> Result<(), JobError> {
    RUNS.fetch_add(1, Ordering::Relaxed);
    if RECORD_LATENCY.load(Ordering::Relaxed) {
        let lat = now_ms_f64() - p.ts;
        LATENCIES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lat);
    }
    Ok(())
}

fn payload(i: u64) -> Payload {
    Payload {
        i,
        ts: now_ms_f64(),
        pad: "x".repeat(64),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Snap {
    calls: u64,
    cpu: f64,
    memory: u64,
}

async fn snap(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Snap> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await?;
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(con).await?;
    let mem: String = redis::cmd("INFO").arg("memory").query_async(con).await?;
    let mut calls = 0;
    for line in stats.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            if let Some(c) = rest
                .split("calls=")
                .nth(1)
                .and_then(|s| s.split(',').next())
            {
                calls += c.parse::<u64>().unwrap_or(0);
            }
        }
    }
    let field = |text: &str, k: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    };
    Ok(Snap {
        calls,
        cpu: field(&cpu, "used_cpu_sys:") + field(&cpu, "used_cpu_user:"),
        memory: field(&mem, "used_memory:") as u64,
    })
}

#[derive(Debug, Default, Serialize)]
struct Results {
    jobs: u64,
    concurrency: usize,
    batch: usize,
    keep_completed: u64,
    redis_version: String,
    enqueue_jobs_per_sec: f64,
    process_jobs_per_sec: f64,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    latency_jobs: u64,
    bytes_per_waiting_job: f64,
    redis_cpu_us_per_job: f64,
    redis_cmds_per_job: f64,
    enqueue_redis_cpu_us_per_job: f64,
    process_redis_cpu_us_per_job: f64,
    lifecycle_events: bool,
    event_bus_p50_ms: Option<f64>,
    event_bus_p99_ms: Option<f64>,
    event_bus_sent: u64,
    event_bus_received: u64,
}

/// Runs the benchmark against `--redis-url`, or a throwaway redis-server when none is given.
pub async fn run(
    g: &crate::Global,
    out: crate::output::Out,
    args: Args,
) -> anyhow::Result<ExitCode> {
    if args.jobs == 0 || args.concurrency == 0 || args.batch == 0 {
        bail!("--jobs, --concurrency and --batch must be positive");
    }
    let (_server, url) = match g.redis_url.clone() {
        Some(u) => (None, u),
        None => {
            let s = RedisServer::start()
                .context("starting a throwaway redis-server (or pass --redis-url)")?;
            let u = s.url().to_string();
            (Some(s), u)
        }
    };
    // A namespace of its own: the benchmark never touches anyone else's keys.
    let namespace = format!("bench-{}", queue::JobId::generate().as_str().to_lowercase());
    let mut config = queue::ClientConfig::new(url.clone());
    config.namespace = if args.enqueue_only {
        g.namespace.clone()
    } else {
        namespace.clone()
    };
    let client = Client::connect_with(config)
        .await
        .with_context(|| format!("connecting to {}", queue::core::redact(&url)))?;
    let mut raw = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;

    if args.enqueue_only {
        let q = args.queue.clone().unwrap_or_default();
        let t0 = Instant::now();
        enqueue(&client, &q, args.jobs, args.batch).await?;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "enqueued {} jobs into {q:?} in {secs:.2}s ({:.0} jobs/s)",
            args.jobs,
            args.jobs as f64 / secs
        );
        return Ok(ExitCode::SUCCESS);
    }

    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut raw)
        .await?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mut r = Results {
        jobs: args.jobs,
        concurrency: args.concurrency,
        batch: args.batch,
        keep_completed: args.keep_completed,
        redis_version,
        lifecycle_events: args.events,
        ..Results::default()
    };
    if args.events {
        let life = queue::core::Lifecycle::new(client.clone());
        life.set_enabled("bench", true).await?;
        life.set_enabled("bench-latency", true).await?;
    }

    // Phase 1: enqueue, measuring memory per waiting job.
    let drain_q = "bench";
    let s0 = snap(&mut raw).await?;
    let t0 = Instant::now();
    enqueue(&client, drain_q, args.jobs, args.batch).await?;
    let enqueue_secs = t0.elapsed().as_secs_f64();
    let s1 = snap(&mut raw).await?;
    r.enqueue_jobs_per_sec = round(args.jobs as f64 / enqueue_secs);
    r.bytes_per_waiting_job = round(s1.memory.saturating_sub(s0.memory) as f64 / args.jobs as f64);
    r.enqueue_redis_cpu_us_per_job = round((s1.cpu - s0.cpu) * 1e6 / args.jobs as f64);

    // Phase 2: drain with a no-op handler.
    let retention = Retention {
        completed_count: args.keep_completed,
        ..Retention::default()
    };
    let worker = WorkerBuilder::with_client(client.clone())
        .queue(drain_q, 1)
        .concurrency(args.concurrency)
        .retention(retention)
        .build()
        .await?;
    let keys = client.keys(drain_q)?;
    let s2 = snap(&mut raw).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t1 = Instant::now();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    wait_completed(&mut raw, &keys.stats(), args.jobs, Duration::from_secs(600)).await?;
    let process_secs = t1.elapsed().as_secs_f64();
    let s3 = snap(&mut raw).await?;
    let _ = stop_tx.send(());
    running.await??;
    r.process_jobs_per_sec = round(args.jobs as f64 / process_secs);
    r.process_redis_cpu_us_per_job = round((s3.cpu - s2.cpu) * 1e6 / args.jobs as f64);
    r.redis_cpu_us_per_job = round(r.enqueue_redis_cpu_us_per_job + r.process_redis_cpu_us_per_job);
    // The completion poll below adds a few commands; they are counted, which only hurts us.
    r.redis_cmds_per_job =
        round(((s1.calls - s0.calls) + (s3.calls - s2.calls)) as f64 / args.jobs as f64);

    // Phase 3: enqueue-to-start latency at a steady rate, single-job enqueues.
    if args.latency_secs > 0 && args.rate > 0 {
        let lat_q = "bench-latency";
        let worker = WorkerBuilder::with_client(client.clone())
            .queue(lat_q, 1)
            .concurrency(args.latency_concurrency)
            .retention(Retention::default().remove_on_complete())
            .build()
            .await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.run(async move {
            let _ = stop_rx.await;
        }));
        // Let the worker go idle first, as in the peer benchmark.
        tokio::time::sleep(Duration::from_millis(500)).await;
        LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).clear();
        RECORD_LATENCY.store(true, Ordering::Relaxed);
        let n = args.rate * args.latency_secs;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut inflight = tokio::task::JoinSet::new();
        while sent < n {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * args.rate as f64) as u64).min(n);
            while sent < due {
                let c = client.clone();
                let i = sent;
                inflight.spawn(async move {
                    c.enqueue_job(NewJob::of::<noop>(&payload(i))?.queue(lat_q))
                        .await
                });
                sent += 1;
            }
            while let Some(res) = inflight.try_join_next() {
                res??;
            }
        }
        while let Some(res) = inflight.join_next().await {
            res??;
        }
        let lk = client.keys(lat_q)?;
        wait_completed(
            &mut raw,
            &lk.stats(),
            n,
            Duration::from_secs(args.latency_secs + 60),
        )
        .await?;
        RECORD_LATENCY.store(false, Ordering::Relaxed);
        let _ = stop_tx.send(());
        running.await??;
        let mut lat = std::mem::take(&mut *LATENCIES.lock().unwrap_or_else(|e| e.into_inner()));
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .map(|v| round3(*v))
        };
        r.latency_p50_ms = pct(0.5);
        r.latency_p99_ms = pct(0.99);
        r.latency_max_ms = lat.last().map(|v| round3(*v));
        r.latency_jobs = lat.len() as u64;
        cleanup(&mut raw, &lk).await?;
    }
    cleanup(&mut raw, &keys).await?;

    if args.bus_secs > 0 && args.bus_rate > 0 {
        bus_latency(&client, args.bus_rate, args.bus_secs, &mut r).await?;
    }

    if out.json {
        out.json(&r)?;
    } else {
        println!(
            "queue bench against Redis {} ({} jobs, ~100-byte payloads)",
            r.redis_version, r.jobs
        );
        println!(
            "  enqueue (batches of {}):       {:>10.0} jobs/s",
            r.batch, r.enqueue_jobs_per_sec
        );
        println!(
            "  drain (concurrency {}):        {:>10.0} jobs/s",
            r.concurrency, r.process_jobs_per_sec
        );
        if let (Some(p50), Some(p99)) = (r.latency_p50_ms, r.latency_p99_ms) {
            println!(
                "  enqueue-to-start at {}/s:     p50 {p50:.3} ms, p99 {p99:.3} ms",
                args.rate
            );
        }
        println!(
            "  Redis memory per waiting job:  {:>10.1} bytes",
            r.bytes_per_waiting_job
        );
        println!(
            "  Redis CPU per job:             {:>10.1} us (enqueue {:.1} + fetch/complete {:.1})",
            r.redis_cpu_us_per_job, r.enqueue_redis_cpu_us_per_job, r.process_redis_cpu_us_per_job
        );
        println!(
            "  Redis commands per job:        {:>10.2}",
            r.redis_cmds_per_job
        );
        if r.lifecycle_events {
            println!("  (lifecycle events on)");
        }
        if let (Some(p50), Some(p99)) = (r.event_bus_p50_ms, r.event_bus_p99_ms) {
            println!(
                "  event bus at {}/s:             p50 {p50:.3} ms, p99 {p99:.3} ms ({} of {} received)",
                args.bus_rate, r.event_bus_received, r.event_bus_sent
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Publish-to-receive latency of the event bus at a steady rate: one subscriber, one publisher.
async fn bus_latency(client: &Client, rate: u64, secs: u64, r: &mut Results) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let bus = queue::core::EventBus::new(client.clone());
    let mut sub = bus.subscribe::<f64>("bench.bus").await?;
    let n = rate * secs;
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n as usize);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs + 30);
        while (lat.len() as u64) < n {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(Ok(ev))) => lat.push(now_ms_f64() - ev.payload),
                Ok(Some(Err(_))) => {}
                _ => break,
            }
        }
        lat
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while sent < n {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(n);
        while sent < due {
            bus.publish("bench.bus", &now_ms_f64()).await?;
            sent += 1;
        }
    }
    let mut lat = receiver.await?;
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map(|v| round3(*v))
    };
    r.event_bus_p50_ms = pct(0.5);
    r.event_bus_p99_ms = pct(0.99);
    r.event_bus_sent = sent;
    r.event_bus_received = lat.len() as u64;
    Ok(())
}

async fn enqueue(client: &Client, queue: &str, n: u64, batch: usize) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let m = (batch as u64).min(n - i);
        let jobs = (i..i + m)
            .map(|k| Ok(NewJob::of::<noop>(&payload(k))?.queue(queue)))
            .collect::<queue::Result<Vec<_>>>()?;
        client.enqueue_batch(jobs).await?;
        i += m;
    }
    Ok(())
}

/// Waits until the queue's completed counter reaches `n`. Polling is the measurement here, not
/// synchronisation of the system under test; it costs one HGET every 2 ms.
async fn wait_completed(
    raw: &mut redis::aio::MultiplexedConnection,
    stats: &str,
    n: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let done: Option<u64> = redis::cmd("HGET")
            .arg(stats)
            .arg("completed")
            .query_async(raw)
            .await?;
        if done.unwrap_or(0) >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} jobs completed within {within:?}",
                done.unwrap_or(0)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn cleanup(
    raw: &mut redis::aio::MultiplexedConnection,
    keys: &queue::core::QueueKeys,
) -> anyhow::Result<()> {
    redis::cmd("DEL")
        .arg(keys.all_fixed())
        .query_async::<()>(raw)
        .await?;
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
