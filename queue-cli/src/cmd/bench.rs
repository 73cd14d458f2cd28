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
use queue::testing::RedisServer;
use queue::{job, Client, JobError, NewJob, Retention, WorkerBuilder};
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
    /// Length of the delayed-jobs phase, seconds: 100 jobs/s, each due 200 ms after its
    /// enqueue; measures how late after its due time each starts (0 skips it)
    #[arg(long, default_value_t = 0)]
    delayed_secs: u64,
    /// Length of the event-bus latency phase, seconds (0 skips it)
    #[arg(long, default_value_t = 0)]
    bus_secs: u64,
    /// Rate of the event-bus latency phase, events per second
    #[arg(long, default_value_t = 1000)]
    bus_rate: u64,
    /// Length of each rate-limiter phase (one per algorithm, 64 concurrent callers), seconds
    #[arg(long, default_value_t = 0)]
    ratelimit_secs: u64,
    /// Sessions to create (and read back) in the session phase (0 skips it)
    #[arg(long, default_value_t = 0)]
    sessions: u64,
    /// Skip the job phases (run only the toolkit phases asked for)
    #[arg(long)]
    skip_jobs: bool,
    /// Only enqueue the jobs into `--queue` and leave them waiting.
    #[arg(long, requires = "queue")]
    enqueue_only: bool,
    /// Split the drain queue in this many shards (`queue queue split`): on a Redis Cluster,
    /// one queue over several masters; the report gives each master's Redis CPU
    #[arg(long, default_value_t = 1)]
    shards: u16,
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

/// Redis as the benchmark reads it: the client's own connection for keyed commands (so they
/// reach the right node of a cluster), and every master's `INFO` counters.
struct Probe {
    con: queue::RedisConnection,
    admin: queue::admin::Admin,
}

impl Probe {
    /// The counters summed over the masters (one server: its own).
    async fn snap(&mut self) -> anyhow::Result<Snap> {
        let mut total = Snap::default();
        for (_, s) in self.snap_nodes().await? {
            total.calls += s.calls;
            total.cpu += s.cpu;
            total.memory += s.memory;
        }
        Ok(total)
    }

    /// The counters of each master (one server: its own), by address.
    async fn snap_nodes(&mut self) -> anyhow::Result<Vec<(String, Snap)>> {
        let stats = self.admin.info_by_node(Some("commandstats")).await?;
        let cpu = self.admin.info_by_node(Some("cpu")).await?;
        let mem = self.admin.info_by_node(Some("memory")).await?;
        let mut out = Vec::new();
        for (node, stats) in stats {
            let of = |all: &[(String, String)]| {
                all.iter()
                    .find(|(n, _)| *n == node)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default()
            };
            out.push((node.clone(), parse_snap(&stats, &of(&cpu), &of(&mem))));
        }
        Ok(out)
    }
}

fn parse_snap(stats: &str, cpu: &str, mem: &str) -> Snap {
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
    Snap {
        calls,
        cpu: field(cpu, "used_cpu_sys:") + field(cpu, "used_cpu_user:"),
        memory: field(mem, "used_memory:") as u64,
    }
}

async fn snap(probe: &mut Probe) -> anyhow::Result<Snap> {
    probe.snap().await
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
    delayed_late_p50_ms: Option<f64>,
    delayed_late_p99_ms: Option<f64>,
    delayed_late_min_ms: Option<f64>,
    delayed_jobs: u64,
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
    ratelimit: Vec<RateRow>,
    sessions: Option<SessionRow>,
    shards: u16,
    /// Redis CPU (enqueue and drain) on each master, microseconds per job of the whole run.
    master_cpu_us_per_job: Vec<(String, f64)>,
    /// The busiest master's CPU over the least busy one's, minus one (0.05 = 5% apart).
    master_cpu_spread: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct RateRow {
    algorithm: &'static str,
    checks_per_sec: f64,
    check_p50_ms: f64,
    check_p99_ms: f64,
}

#[derive(Debug, Default, Serialize)]
struct SessionRow {
    sessions: u64,
    /// Throughput with 64 concurrent callers.
    creates_per_sec: f64,
    gets_per_sec: f64,
    /// Latencies of one caller, one request at a time.
    create_p50_ms: f64,
    create_p99_ms: f64,
    get_p50_ms: f64,
    get_p99_ms: f64,
    bytes_per_session: f64,
}

/// Runs the benchmark against `--redis-url`, or a throwaway redis-server when none is given.
pub async fn run(
    g: &crate::Global,
    out: crate::output::Out,
    args: Args,
) -> anyhow::Result<ExitCode> {
    if (args.jobs == 0 && !args.skip_jobs) || args.concurrency == 0 || args.batch == 0 {
        bail!("--jobs, --concurrency and --batch must be positive");
    }
    if !(1..=queue::wire::MAX_SHARDS).contains(&args.shards) {
        bail!(
            "--shards takes 1 (not split) to {} shards",
            queue::wire::MAX_SHARDS
        );
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
    config.allow_eviction = g.allow_eviction;
    let client = Client::connect_with(config)
        .await
        .with_context(|| format!("connecting to {}", queue::admin::redact(&url)))?;
    let mut raw = Probe {
        con: client.redis_connection(),
        admin: queue::admin::Admin::new(client.clone()),
    };

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

    let redis_version = raw.admin.server().await?.version;
    let mut r = Results {
        jobs: args.jobs,
        concurrency: args.concurrency,
        batch: args.batch,
        keep_completed: args.keep_completed,
        redis_version,
        lifecycle_events: args.events,
        shards: args.shards,
        ..Results::default()
    };
    if args.events {
        let life = queue::events::Lifecycle::new(client.clone());
        life.set_enabled("bench", true).await?;
        life.set_enabled("bench-latency", true).await?;
    }

    // The job phases; `--skip-jobs` runs only the toolkit phases.
    'jobs: {
        if args.skip_jobs {
            break 'jobs;
        }
        // Phase 1: enqueue, measuring memory per waiting job.
        let drain_q = "bench";
        if args.shards > 1 {
            client.split_queue(drain_q, args.shards).await?;
        }
        let nodes0 = raw.snap_nodes().await?;
        let s0 = snap(&mut raw).await?;
        let t0 = Instant::now();
        enqueue(&client, drain_q, args.jobs, args.batch).await?;
        let enqueue_secs = t0.elapsed().as_secs_f64();
        let s1 = snap(&mut raw).await?;
        r.enqueue_jobs_per_sec = round(args.jobs as f64 / enqueue_secs);
        r.bytes_per_waiting_job =
            round(s1.memory.saturating_sub(s0.memory) as f64 / args.jobs as f64);
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
        let parts: Vec<queue::wire::QueueKeys> = client
            .shards_of(drain_q)
            .await?
            .iter()
            .map(|p| client.keys(p))
            .collect::<queue::Result<_>>()?;
        let s2 = snap(&mut raw).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t1 = Instant::now();
        let running = tokio::spawn(worker.run(async move {
            let _ = stop_rx.await;
        }));
        wait_completed(&mut raw, &parts, args.jobs, Duration::from_secs(600)).await?;
        let process_secs = t1.elapsed().as_secs_f64();
        let s3 = snap(&mut raw).await?;
        let nodes3 = raw.snap_nodes().await?;
        for (node, after) in &nodes3 {
            let before = nodes0
                .iter()
                .find(|(n, _)| n == node)
                .map_or(0.0, |(_, s)| s.cpu);
            r.master_cpu_us_per_job.push((
                node.clone(),
                round((after.cpu - before) * 1e6 / args.jobs as f64),
            ));
        }
        let cpus: Vec<f64> = r.master_cpu_us_per_job.iter().map(|(_, c)| *c).collect();
        if cpus.len() > 1 {
            let (lo, hi) = cpus
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
            r.master_cpu_spread = (lo > 0.0).then(|| round3(hi / lo - 1.0));
        }
        let _ = stop_tx.send(());
        running.await??;
        r.process_jobs_per_sec = round(args.jobs as f64 / process_secs);
        r.process_redis_cpu_us_per_job = round((s3.cpu - s2.cpu) * 1e6 / args.jobs as f64);
        r.redis_cpu_us_per_job =
            round(r.enqueue_redis_cpu_us_per_job + r.process_redis_cpu_us_per_job);
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
                std::slice::from_ref(&lk),
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
        for keys in &parts {
            cleanup(&mut raw, keys).await?;
        }
    }

    if args.ratelimit_secs > 0 {
        r.ratelimit = ratelimit_phase(&client, args.ratelimit_secs).await?;
    }
    if args.sessions > 0 {
        r.sessions = Some(session_phase(&client, &mut raw, args.sessions).await?);
    }

    if args.delayed_secs > 0 {
        delayed_phase(&client, &mut raw, args.delayed_secs, &mut r).await?;
    }
    if args.bus_secs > 0 && args.bus_rate > 0 {
        bus_latency(&client, args.bus_rate, args.bus_secs, &mut r).await?;
    }

    // The namespace's own records (its queue registry, the split): the benchmark leaves
    // nothing behind on a server it was pointed at.
    let ns = client.namespace_keys()?;
    for key in [ns.queues(), ns.shards(), ns.workers()] {
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut raw.con)
            .await?;
    }
    if out.json {
        out.json(&r)?;
    } else {
        if !args.skip_jobs {
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
            if r.master_cpu_us_per_job.len() > 1 {
                let per: Vec<String> = r
                    .master_cpu_us_per_job
                    .iter()
                    .map(|(node, us)| format!("{node} {us:.1} us"))
                    .collect();
                println!(
                    "  Redis CPU per job by master ({} shards): {} (spread {:.1}%)",
                    r.shards,
                    per.join(", "),
                    r.master_cpu_spread.unwrap_or(0.0) * 100.0
                );
            }
        }
        if r.lifecycle_events {
            println!("  (lifecycle events on)");
        }
        for rl in &r.ratelimit {
            println!(
                "  rate limit ({}): {:.0} checks/s (64 callers), p50 {:.3} ms, p99 {:.3} ms (one caller)",
                rl.algorithm, rl.checks_per_sec, rl.check_p50_ms, rl.check_p99_ms
            );
        }
        if let Some(sr) = &r.sessions {
            println!(
                "  sessions ({}): create p50 {:.3} ms p99 {:.3} ms, get p50 {:.3} ms p99 {:.3} ms (one caller); \
                 {:.0} creates/s, {:.0} gets/s (64 callers); {:.0} bytes each",
                sr.sessions,
                sr.create_p50_ms,
                sr.create_p99_ms,
                sr.get_p50_ms,
                sr.get_p99_ms,
                sr.creates_per_sec,
                sr.gets_per_sec,
                sr.bytes_per_session
            );
        }
        if let (Some(p50), Some(p99)) = (r.delayed_late_p50_ms, r.delayed_late_p99_ms) {
            println!(
                "  delayed jobs ({}): start p50 {p50:.3} ms, p99 {p99:.3} ms after due (earliest {:.3} ms)",
                r.delayed_jobs,
                r.delayed_late_min_ms.unwrap_or(0.0)
            );
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .map(|v| round3(*v))
        .unwrap_or(0.0)
}

/// Each algorithm's check latency (one caller, one check at a time) and throughput (64
/// concurrent callers), over 1,000 subjects with a limit of 1,000/s each: mostly admitted, as
/// in normal API traffic.
async fn ratelimit_phase(client: &Client, secs: u64) -> anyhow::Result<Vec<RateRow>> {
    use queue::rate_limit::Algorithm;
    use queue::rate_limit::Limit;
    use queue::rate_limit::RateLimiter;
    let mut rows = Vec::new();
    let algorithms = [
        ("sliding_log", Algorithm::SlidingLog),
        ("sliding_counter", Algorithm::SlidingCounter),
        ("gcra", Algorithm::Gcra { burst: 100 }),
    ];
    for (name, algo) in algorithms {
        let limit = Limit::parse("1000/s")?.algorithm(algo).named(name);
        let limiter = RateLimiter::new(client.clone(), vec![limit]);
        let mut one = Vec::with_capacity(2000);
        for i in 0..2000u64 {
            let t0 = Instant::now();
            limiter.check(&format!("bench-solo-{}", i % 1000)).await;
            one.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        one.sort_by(|a, b| a.total_cmp(b));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..64u64 {
            let l = limiter.clone();
            tasks.spawn(async move {
                let mut n = 0u64;
                let mut i = t;
                while Instant::now() < deadline {
                    l.check(&format!("bench-subject-{}", i % 1000)).await;
                    n += 1;
                    i += 64;
                }
                n
            });
        }
        let mut checks = 0;
        while let Some(r) = tasks.join_next().await {
            checks += r?;
        }
        rows.push(RateRow {
            algorithm: name,
            checks_per_sec: round(checks as f64 / start.elapsed().as_secs_f64()),
            check_p50_ms: percentile(&one, 0.5),
            check_p99_ms: percentile(&one, 0.99),
        });
    }
    Ok(rows)
}

fn session_data(i: u64) -> [(String, serde_json::Value); 2] {
    [
        ("user_id".to_string(), serde_json::json!(i)),
        ("role".to_string(), serde_json::json!("member")),
    ]
}

/// Sessions: create and get latency of one caller (one request at a time, 2,000 of each), then
/// throughput with 64 concurrent callers up to `n` sessions, Redis bytes per session, and
/// cleanup.
async fn session_phase(client: &Client, raw: &mut Probe, n: u64) -> anyhow::Result<SessionRow> {
    use queue::session::Sessions;
    let sessions = Sessions::new(client.clone())?;
    let m0 = snap(raw).await?.memory;
    let solo = n.min(2000);
    let mut create_one = Vec::with_capacity(solo as usize);
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..solo {
        let t0 = Instant::now();
        let (id, _) = sessions.create(None, session_data(i)).await?;
        create_one.push(t0.elapsed().as_secs_f64() * 1000.0);
        ids.push(id.expose().to_string());
    }
    let mut get_one = Vec::with_capacity(solo as usize);
    for id in &ids {
        let t0 = Instant::now();
        sessions.get(id).await?;
        get_one.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    create_one.sort_by(|a, b| a.total_cmp(b));
    get_one.sort_by(|a, b| a.total_cmp(b));

    let bulk = n - solo;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = bulk.div_ceil(64);
    for t in 0..64u64 {
        let s = sessions.clone();
        let count = per.min(bulk.saturating_sub(t * per));
        tasks.spawn(async move {
            let mut made = Vec::with_capacity(count as usize);
            for i in 0..count {
                made.push(
                    s.create(None, session_data(t * per + i))
                        .await?
                        .0
                        .expose()
                        .to_string(),
                );
            }
            Ok::<_, queue::Error>(made)
        });
    }
    while let Some(r) = tasks.join_next().await {
        ids.extend(r??);
    }
    let creates_per_sec = round(bulk as f64 / start.elapsed().as_secs_f64().max(1e-9));
    let m1 = snap(raw).await?.memory;

    let sample: Vec<String> = ids
        .iter()
        .step_by((ids.len() / 100_000).max(1))
        .cloned()
        .collect();
    let sample = std::sync::Arc::new(sample);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64usize {
        let s = sessions.clone();
        let sample = sample.clone();
        tasks.spawn(async move {
            for id in sample.iter().skip(t).step_by(64) {
                s.get(id).await?;
            }
            Ok::<_, queue::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let gets_per_sec = round(sample.len() as f64 / start.elapsed().as_secs_f64().max(1e-9));

    // Remove what the phase created (its own namespace).
    sessions.purge().await?;
    Ok(SessionRow {
        sessions: n,
        creates_per_sec,
        gets_per_sec,
        create_p50_ms: percentile(&create_one, 0.5),
        create_p99_ms: percentile(&create_one, 0.99),
        get_p50_ms: percentile(&get_one, 0.5),
        get_p99_ms: percentile(&get_one, 0.99),
        bytes_per_session: round(m1.saturating_sub(m0) as f64 / n as f64),
    })
}

/// How late delayed jobs start after their due time: 100 jobs/s, each due 200 ms after it was
/// enqueued, an idle worker of concurrency 10. The job records its start minus its enqueue time.
async fn delayed_phase(
    client: &Client,
    raw: &mut Probe,
    secs: u64,
    r: &mut Results,
) -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_millis(200);
    let q = "bench-delayed";
    let worker = WorkerBuilder::with_client(client.clone())
        .queue(q, 1)
        .concurrency(10)
        .retention(Retention::default().remove_on_complete())
        .build()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    RECORD_LATENCY.store(true, Ordering::Relaxed);
    let n = 100 * secs;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..n {
        tick.tick().await;
        client
            .enqueue_job(NewJob::of::<noop>(&payload(i))?.queue(q).delay(DELAY))
            .await?;
    }
    let keys = client.keys(q)?;
    wait_completed(
        raw,
        std::slice::from_ref(&keys),
        n,
        Duration::from_secs(secs + 60),
    )
    .await?;
    RECORD_LATENCY.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(());
    running.await??;
    let delay_ms = DELAY.as_secs_f64() * 1000.0;
    let mut late: Vec<f64> =
        std::mem::take(&mut *LATENCIES.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|l| l - delay_ms)
            .collect();
    late.sort_by(|a, b| a.total_cmp(b));
    r.delayed_late_p50_ms = Some(percentile(&late, 0.5));
    r.delayed_late_p99_ms = Some(percentile(&late, 0.99));
    r.delayed_late_min_ms = late.first().map(|v| round3(*v));
    r.delayed_jobs = late.len() as u64;
    cleanup(raw, &keys).await
}

/// Publish-to-receive latency of the event bus at a steady rate: one subscriber, one publisher.
async fn bus_latency(client: &Client, rate: u64, secs: u64, r: &mut Results) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let bus = queue::events::EventBus::new(client.clone());
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
/// Waits until the queues of `parts` (a queue, or a split queue's parts) completed `n` jobs.
async fn wait_completed(
    raw: &mut Probe,
    parts: &[queue::wire::QueueKeys],
    n: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut done = 0;
        for keys in parts {
            let part: Option<u64> = redis::cmd("HGET")
                .arg(keys.stats())
                .arg("completed")
                .query_async(&mut raw.con)
                .await?;
            done += part.unwrap_or(0);
        }
        if done >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} jobs completed within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn cleanup(raw: &mut Probe, keys: &queue::wire::QueueKeys) -> anyhow::Result<()> {
    redis::cmd("DEL")
        .arg(keys.all_fixed())
        .query_async::<()>(&mut raw.con)
        .await?;
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
