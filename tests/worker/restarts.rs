//! Redis restarted under load with real worker processes (issue 10, target 1), and the soak
//! (target 9).
//!
//! The worker processes are this test binary re-executed on `restarts::child_worker` (as in
//! `crash.rs`), with the queue's Redis URL, a second Redis that only counts runs (never
//! restarted, so a count cannot be lost with the queue's data) and the worker's settings in
//! the environment. Their stderr (the worker's log) is read line by line and stamped on
//! arrival, so the outage messages of each worker can be counted per outage.
//!
//! Leases and heartbeats are the crate's defaults (3 s, beaten every second), passed
//! explicitly so other points of the lease/outage space can be replayed. The outages here last
//! 0.2 to 4 s (on a loaded machine). An earlier amnesty forgave only the leases already expired
//! when the first pass after an outage ran, so a live worker whose heartbeat reconnected a
//! little later than the others lost the leases that expired in between: with these settings
//! the test re-ran jobs of live workers in 5 of 10 runs (at a 1.5 s lease beaten every 750 ms).
//! Now an amnesty forgives every lease expiring within a lease, a failed beat is retried within
//! 50 ms, and the watch gap is shorter than the margin a live worker has.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{bounded, eventually, now_ms};
use queue::testing::{RedisServer, RedisServerOptions};
use queue::wire::QueueKeys;
use queue::{job, Backoff, Client, ErrorKind, JobContext, JobError, JobId, NewJob, Retention};
use serde::{Deserialize, Serialize};

/// In the counting server: job id -> how many times a handler started it.
const RUNS: &str = "restarts:runs";
/// In the counting server: job id -> its attempt number, for every run that was not attempt 1.
const LATER_ATTEMPTS: &str = "restarts:later-attempts";
/// In the counting server: the ids of jobs whose first attempt failed on purpose.
const INJECTED: &str = "restarts:injected";

static COUNTER: OnceLock<redis::aio::MultiplexedConnection> = OnceLock::new();

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    seq: u64,
    /// The first attempt fails (a handler error, retried).
    fail_first: bool,
    /// How long the handler holds the job.
    hold_ms: u32,
}

#[job(
    name = "restarts.work",
    queue = "restarts",
    max_attempts = 10,
    backoff_fixed = "200ms"
)]
async fn work(w: Work, ctx: JobContext) -> Result<(), JobError> {
    let mut con = COUNTER
        .get()
        .ok_or_else(|| JobError::retry("no counting connection"))?
        .clone();
    let mut p = redis::pipe();
    p.hincr(RUNS, ctx.id.as_str(), 1).ignore();
    if ctx.attempt > 1 {
        p.hset(LATER_ATTEMPTS, ctx.id.as_str(), ctx.attempt)
            .ignore();
    }
    p.query_async::<()>(&mut con).await?;
    tokio::time::sleep(Duration::from_millis(u64::from(w.hold_ms))).await;
    if w.fail_first && ctx.attempt == 1 {
        redis::cmd("SADD")
            .arg(INJECTED)
            .arg(ctx.id.as_str())
            .query_async::<()>(&mut con)
            .await?;
        return Err(JobError::retry(format!(
            "injected failure of job {}",
            w.seq
        )));
    }
    Ok(())
}

const ENV_URL: &str = "QUEUE_RESTARTS_CHILD_URL";
const ENV_COUNT_URL: &str = "QUEUE_RESTARTS_CHILD_COUNT_URL";
const ENV_QUEUES: &str = "QUEUE_RESTARTS_CHILD_QUEUES";
const ENV_LEASE_MS: &str = "QUEUE_RESTARTS_CHILD_LEASE_MS";
const ENV_HEARTBEAT_MS: &str = "QUEUE_RESTARTS_CHILD_HEARTBEAT_MS";
const ENV_CONCURRENCY: &str = "QUEUE_RESTARTS_CHILD_CONCURRENCY";
const ENV_KEEP: &str = "QUEUE_RESTARTS_CHILD_KEEP_COMPLETED";

/// The body of a child worker process; does nothing in a normal test run.
#[test]
fn child_worker() {
    let Ok(url) = std::env::var(ENV_URL) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let count_url = var(ENV_COUNT_URL);
    let queues = var(ENV_QUEUES);
    let lease = Duration::from_millis(var(ENV_LEASE_MS).parse().expect("lease"));
    let heartbeat = Duration::from_millis(var(ENV_HEARTBEAT_MS).parse().expect("heartbeat"));
    let concurrency: usize = var(ENV_CONCURRENCY).parse().expect("concurrency");
    let keep: u64 = var(ENV_KEEP).parse().expect("retention");
    // The worker's log goes to stderr, where the parent reads and counts it.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let report = rt.block_on(async move {
        let counter = redis::Client::open(count_url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("counting connection");
        let _ = COUNTER.set(counter);
        let mut builder = queue::WorkerBuilder::new(url)
            .registry(common::registry(&["restarts.work"]))
            .concurrency(concurrency)
            .lease(lease)
            .heartbeat(heartbeat)
            .grace(Duration::from_secs(5))
            .retention(Retention {
                completed_count: keep,
                ..Retention::default()
            });
        for q in queues.split(',') {
            builder = builder.queue(q, 1);
        }
        let worker = builder.build().await.expect("build worker");
        worker.run_until_signal().await.expect("run")
    });
    println!(
        "REPORT completed={} failed={} recovered={} lease_lost={} requeued={}",
        report.completed, report.failed, report.recovered, report.lease_lost, report.requeued
    );
}

/// A worker's lines in some interval.
#[derive(Debug, Default, Clone, Copy)]
struct Lines {
    /// A loop saw Redis fail and says it will retry (one per loop per outage).
    starts: usize,
    /// A loop got through again.
    ends: usize,
    /// Anything else (a harmless lease-lost warning per completion applied just before a kill,
    /// an amnesty...).
    other: usize,
}

/// Some(true) for the line a worker loop logs when an outage starts, Some(false) for the one
/// it logs when the outage ends, None for others.
fn outage_line(line: &str) -> Option<bool> {
    if line.contains("until Redis answers") || line.contains("while Redis is away") {
        Some(true)
    } else if line.contains("Redis answers again") || line.contains(" went through tries=") {
        Some(false)
    } else {
        None
    }
}

/// One line a worker process wrote to stderr, stamped when the parent read it. (The outage
/// lines above are the worker's own messages: `Outage` and `retrying` in queue-worker.)
struct LogLine {
    at: Instant,
    worker: usize,
    line: String,
}

struct Proc {
    label: usize,
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// Worker processes, killed and reaped on drop.
struct Pool {
    procs: Vec<Proc>,
    env: Vec<(&'static str, String)>,
    logs: Arc<Mutex<Vec<LogLine>>>,
    next: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Pool {
    fn new(env: Vec<(&'static str, String)>) -> Pool {
        Pool {
            procs: Vec::new(),
            env,
            logs: Arc::new(Mutex::new(Vec::new())),
            next: 0,
        }
    }

    /// Starts a worker process and returns its label (0, 1, 2... in start order).
    fn spawn(&mut self) -> usize {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .arg(common::test_name(module_path!(), "child_worker"))
            .args(["--exact", "--nocapture", "--test-threads=1"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn,queue_worker=info,queue_core=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker process");
        let label = self.next;
        self.next += 1;
        let err = child.stderr.take().expect("stderr");
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                logs.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(LogLine {
                        at,
                        worker: label,
                        line,
                    });
            }
        });
        let out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(out).read_to_string(&mut s);
            s
        });
        self.procs.push(Proc {
            label,
            child,
            stdout: Some(stdout),
        });
        label
    }

    fn pid(&self, label: usize) -> u32 {
        self.procs
            .iter()
            .find(|p| p.label == label)
            .map(|p| p.child.id())
            .expect("a running worker with this label")
    }

    fn has_logged(&self, label: usize, needle: &str) -> bool {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.worker == label && l.line.contains(needle))
    }

    /// Waits (bounded) for the worker's "worker started" line: it has connected and runs.
    async fn started(&self, label: usize) {
        eventually(
            Duration::from_secs(30),
            &format!("worker {label} to start"),
            || async { self.has_logged(label, "worker started") },
        )
        .await;
    }

    /// SIGKILL, reaped.
    fn kill(&mut self, label: usize) {
        let i = self
            .procs
            .iter()
            .position(|p| p.label == label)
            .expect("worker");
        let mut p = self.procs.remove(i);
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reap");
    }

    /// SIGTERM to every worker, then each one's report line (each must exit cleanly).
    fn stop_all(&mut self) -> Vec<String> {
        for p in &self.procs {
            signal(p.child.id(), "TERM");
        }
        let mut reports = Vec::new();
        for mut p in self.procs.drain(..) {
            let status = p.child.wait().expect("wait");
            let out = p
                .stdout
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            assert!(
                status.success(),
                "worker {} exited with {status}: {out}",
                p.label
            );
            reports.push(
                out.lines()
                    .find_map(|l| l.find("REPORT").map(|at| &l[at..]))
                    .map(|l| format!("worker {}: {l}", p.label))
                    .unwrap_or_else(|| format!("worker {}: no report in {out:?}", p.label)),
            );
        }
        reports
    }

    /// Per worker, the lines logged in `[from, to)`: outage starts, outage ends, and others.
    fn lines_between(&self, from: Instant, to: Instant) -> BTreeMap<usize, Lines> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<usize, Lines> = BTreeMap::new();
        for l in logs.iter().filter(|l| l.at >= from && l.at < to) {
            let e = out.entry(l.worker).or_default();
            match outage_line(&l.line) {
                Some(true) => e.starts += 1,
                Some(false) => e.ends += 1,
                None => e.other += 1,
            }
        }
        out
    }

    /// Whether every outage a worker logged since `from` has ended (each loop that logged
    /// the start of an outage has logged that Redis answers again).
    fn outages_closed(&self, from: Instant) -> bool {
        let lines = self.lines_between(from, Instant::now() + Duration::from_secs(3600));
        self.procs
            .iter()
            .all(|p| lines.get(&p.label).is_none_or(|l| l.ends >= l.starts))
    }

    /// Every worker's lines around the first line that mentions one of `ids` (3 s either
    /// side), labelled: what each worker did while those jobs were lost.
    fn around(&self, ids: &[&String]) -> Vec<String> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(first) = logs
            .iter()
            .filter(|l| ids.iter().any(|id| l.line.contains(id.as_str())))
            .map(|l| l.at)
            .min()
        else {
            return Vec::new();
        };
        let span = Duration::from_secs(3);
        logs.iter()
            .filter(|l| l.at + span >= first && l.at <= first + span)
            .map(|l| format!("w{}: {}", l.worker, l.line))
            .collect()
    }

    /// Per worker, when it first logged a line containing `needle` in `[from, ..)`, as a
    /// signed offset in ms from `since`.
    fn first_after(&self, from: Instant, since: Instant, needle: &str) -> BTreeMap<usize, i64> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for l in logs
            .iter()
            .filter(|l| l.at >= from && l.line.contains(needle))
        {
            out.entry(l.worker).or_insert_with(|| {
                if l.at >= since {
                    l.at.duration_since(since).as_millis() as i64
                } else {
                    -(since.duration_since(l.at).as_millis() as i64)
                }
            });
        }
        out
    }

    fn log_lines(&self, from: Instant, to: Instant, worker: usize) -> Vec<String> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.iter()
            .filter(|l| l.at >= from && l.at < to && (worker == usize::MAX || l.worker == worker))
            .map(|l| l.line.clone())
            .collect()
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

/// Waits (bounded) until process `pid`, a child of ours (Redis), has exited: it is a zombie
/// until its parent reaps it. The fixture keeps the child handle, so its state in /proc is the
/// only signal there is.
fn wait_exited(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat) => {
                // `pid (comm) S ...`: the state follows the last ')'.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .unwrap_or("");
                if state == "Z" || state == "X" {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-server {pid} did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A plain connection for the test's own reads. Generous timeouts (the client's defaults are
/// 1 s to connect and 500 ms per reply): with `appendfsync always` every write waits for the
/// disk, and a busy machine's disk can take longer than that.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("raw connection")
}

/// Completions recorded after `since_ms` (completed jobs are retained in this test).
async fn completed_since(
    con: &mut redis::aio::MultiplexedConnection,
    keys: &QueueKeys,
    since_ms: i64,
) -> u64 {
    redis::cmd("ZCOUNT")
        .arg(keys.completed())
        .arg(format!("({since_ms}"))
        .arg("+inf")
        .query_async(con)
        .await
        .expect("zcount")
}

async fn info_field(
    con: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> String {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// How a Redis restart happens.
#[derive(Debug, Clone, Copy)]
enum Restart {
    /// SIGKILL, down for this long, restarted from the AOF.
    Kill(Duration),
    /// `SHUTDOWN` (Redis flushes its AOF and exits), then restarted.
    Shutdown,
    /// SIGTERM (the same shutdown, by signal), then restarted.
    Term,
}

/// Restarts `server` as `how` says; blocks the calling thread until Redis answers PING again,
/// that is, until it has loaded its data and accepts commands.
fn restart(server: &mut RedisServer, how: Restart) {
    let restarted = match how {
        Restart::Kill(down) => server.restart_after(down),
        Restart::Shutdown => {
            let pid = server.pid();
            let mut con = redis::Client::open(common::admin_url_of(server))
                .expect("url")
                .get_connection_with_timeout(Duration::from_secs(5))
                .expect("connection for SHUTDOWN");
            // The server closes the connection as it exits: the "error" is the expected answer.
            let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
            wait_exited(pid, Duration::from_secs(20));
            server.restart()
        }
        Restart::Term => {
            let pid = server.pid();
            signal(pid, "TERM");
            wait_exited(pid, Duration::from_secs(20));
            server.restart()
        }
    };
    restarted.unwrap_or_else(|e| panic!("restart ({how:?}): {e}\nlog:\n{}", server.log()));
}

/// The last "DB loaded from append only file: X seconds" of the server's log.
fn last_load_time(server: &RedisServer) -> String {
    server
        .log()
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once("DB loaded from append only file: ")
                .map(|(_, t)| t.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The keys that hold a queue's unfinished jobs (pending, scheduled, retrying, leased, and
/// the recovered set where the engine has one), whatever their type: sizes by name.
async fn outstanding(
    con: &mut redis::aio::MultiplexedConnection,
    keys: &QueueKeys,
) -> Vec<(String, u64)> {
    let names: Vec<String> = keys
        .all_fixed()
        .into_iter()
        .filter(|k| {
            [
                "pending",
                "scheduled",
                "retry",
                "active",
                "inflight",
                "recovered",
            ]
            .iter()
            .any(|s| k.ends_with(&format!(":{s}")))
        })
        .collect();
    let sizes: Vec<u64> = redis::Script::new(
        r"local out = {}
        for i, k in ipairs(KEYS) do
          local t = redis.call('TYPE', k).ok
          local n = 0
          if t == 'zset' then n = redis.call('ZCARD', k)
          elseif t == 'hash' then n = redis.call('HLEN', k)
          elseif t == 'list' then n = redis.call('LLEN', k)
          elseif t == 'set' then n = redis.call('SCARD', k) end
          out[i] = n
        end
        return out",
    )
    .key(&names)
    .invoke_async(con)
    .await
    .expect("outstanding");
    names.into_iter().zip(sizes).collect()
}

async fn drained(mut con: redis::aio::MultiplexedConnection, queues: Vec<QueueKeys>) -> bool {
    for k in &queues {
        if outstanding(&mut con, k).await.iter().any(|(_, n)| *n > 0) {
            return false;
        }
    }
    true
}

async fn stats(
    con: &mut redis::aio::MultiplexedConnection,
    keys: &QueueKeys,
) -> HashMap<String, u64> {
    redis::cmd("HGETALL")
        .arg(keys.stats())
        .query_async(con)
        .await
        .expect("stats")
}

/// A failed enqueue as the producer saw it.
#[derive(Debug, Clone)]
struct Seen {
    at_ms: i64,
    kind: ErrorKind,
    retryable: bool,
    message: String,
}

/// What the producer did.
#[derive(Debug, Default)]
struct Produced {
    /// Acknowledged enqueues without a unique key.
    plain: Vec<JobId>,
    /// Enqueues without a unique key that failed (not retried: a retry could add a second job).
    unacknowledged: usize,
    /// Unique key -> the id the (possibly retried) enqueue was acknowledged with.
    unique: BTreeMap<String, JobId>,
    /// Unique keys whose enqueue was retried after a retryable error.
    unique_retried: usize,
    /// Retries answered "duplicate": the first try had been applied, its reply lost.
    unique_dedup: usize,
    errors: Vec<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct ProducerPlan {
    queue: &'static str,
    /// Every n-th job has a unique key and goes to `unique_queue` (0: none).
    unique_every: u64,
    unique_queue: &'static str,
    /// One job in `fail_every` fails its first attempt (0: none).
    fail_every: u64,
    /// One job in `delay_every` is delayed by 300 ms (0: none).
    delay_every: u64,
    /// Mixed priorities.
    priorities: bool,
    /// One enqueue per tick.
    every: Duration,
    hold_ms: u32,
}

fn record(out: &Mutex<Produced>, e: &queue::Error) {
    let seen = Seen {
        at_ms: now_ms(),
        kind: e.kind(),
        retryable: e.is_retryable(),
        message: e.to_string(),
    };
    out.lock()
        .unwrap_or_else(|p| p.into_inner())
        .errors
        .push(seen);
}

/// Enqueues continuously until `stop`: one job per tick, a unique-key job every
/// `unique_every` (retried on retryable errors until acknowledged), the others once each.
async fn produce(
    client: Client,
    plan: ProducerPlan,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Produced>>,
) {
    let mut tick = tokio::time::interval(plan.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        seq += 1;
        let args = Work {
            seq,
            fail_first: plan.fail_every > 0 && seq % plan.fail_every == plan.fail_every / 2,
            hold_ms: plan.hold_ms + (seq % 3) as u32 * plan.hold_ms / 2,
        };
        let mut job = NewJob::of::<work>(&args).expect("encode").queue(plan.queue);
        if plan.priorities {
            job = job.priority([0u8, 10, 50, 200][(seq % 4) as usize]);
        }
        if plan.delay_every > 0 && seq % plan.delay_every == 3 {
            job = job.delay(Duration::from_millis(300));
        }
        if plan.fail_every > 0 {
            job = job.backoff(Backoff::fixed(Duration::from_millis(200)));
        }
        if plan.unique_every > 0 && seq % plan.unique_every == 0 {
            let key = format!("key-{seq}");
            let job = job
                .queue(plan.unique_queue)
                .unique(key.clone(), Duration::from_secs(3600));
            let started = Instant::now();
            let mut retried = false;
            let enqueued = loop {
                match client.enqueue_job(job.clone()).await {
                    Ok(e) => break e,
                    Err(e) => {
                        record(&out, &e);
                        assert!(e.is_retryable(), "unique enqueue of {key}: {e}");
                        assert!(
                            started.elapsed() < Duration::from_secs(60),
                            "unique enqueue of {key} never went through: {e}"
                        );
                        retried = true;
                        // Paced retries: a refused connection answers at once.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            if retried {
                o.unique_retried += 1;
                if enqueued.duplicate {
                    o.unique_dedup += 1;
                }
            } else {
                assert!(!enqueued.duplicate, "{key} was new");
            }
            o.unique.insert(key, enqueued.id);
        } else {
            match client.enqueue_job(job).await {
                Ok(e) => out
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .plain
                    .push(e.id),
                Err(e) => {
                    record(&out, &e);
                    out.lock().unwrap_or_else(|p| p.into_inner()).unacknowledged += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

fn soak() -> bool {
    std::env::var("QUEUE_SOAK").is_ok_and(|v| v == "1")
}

/// Fills the server with `n` tiny keys and rewrites the AOF so they sit in its RDB base: every
/// restart then spends a noticeable time loading them (300,000 keys: ~0.2 s on an idle
/// machine, seconds on a loaded one), answering LOADING meanwhile. (`key-load-delay` would be steadier, but Redis 7.0
/// applies it to every command of the AOF's tail too, so the loads grow with every restart.)
async fn fill_for_loading(con: &mut redis::aio::MultiplexedConnection, n: u32) {
    let chunk = 100_000u32;
    for from in (0..n).step_by(chunk as usize) {
        let _: () = redis::Script::new(
            r"for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
                redis.call('SET', 'restarts:filler:' .. i, 'x')
              end",
        )
        .arg(from)
        .arg((from + chunk).min(n) - 1)
        .invoke_async(con)
        .await
        .expect("filler");
    }
    let _: () = redis::cmd("BGREWRITEAOF")
        .query_async(con)
        .await
        .expect("bgrewriteaof");
    eventually(Duration::from_secs(60), "the AOF rewrite", || {
        let mut con = con.clone();
        async move {
            info_field(&mut con, "persistence", "aof_rewrite_in_progress").await == "0"
                && info_field(&mut con, "persistence", "aof_rewrite_scheduled").await == "0"
                && info_field(&mut con, "persistence", "aof_last_bgrewrite_status").await == "ok"
        }
    })
    .await;
}

/// When the server last logged "Ready to accept connections" (ms since the epoch): the
/// instant it finished loading and started answering commands.
fn ready_at_ms(server: &RedisServer) -> i64 {
    use chrono::TimeZone;
    let log = server.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Ready to accept connections"))
        .unwrap_or_else(|| panic!("no ready line in the log:\n{log}"));
    // `<pid>:M 01 Dec 2026 23:16:48.715 * Ready to accept connections`, in local time.
    let stamp = line
        .split_once(':')
        .and_then(|(_, rest)| rest.get(2..26))
        .unwrap_or_else(|| panic!("log line {line:?}"));
    let naive = chrono::NaiveDateTime::parse_from_str(stamp, "%d %b %Y %H:%M:%S%.3f")
        .unwrap_or_else(|e| panic!("time in {line:?}: {e}"));
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .expect("local time")
        .timestamp_millis()
}

/// Redis restarted 12 times (10 SIGKILLs with `appendfsync always`, a SHUTDOWN, a SIGTERM)
/// while three worker processes drain what a producer enqueues continuously: no acknowledged
/// enqueue is lost, no job runs twice, no attempt is charged, unique keys retried through the
/// outages give one job each, the producer sees only retryable errors (LOADING included), each
/// worker logs a handful of lines per outage, and work resumes soon after Redis answers.
// Several threads: a restart blocks one of them while the producer runs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_under_load_with_worker_processes_lose_and_charge_nothing() {
    let started_at = Instant::now();
    common::init_tracing();
    let soak = soak();
    // Knobs to replay the test elsewhere in the lease/outage space (the defaults are the
    // committed test): `QUEUE_RESTARTS_LEASE_MS`, `QUEUE_RESTARTS_HEARTBEAT_MS`,
    // `QUEUE_RESTARTS_HOLD_MS` (how long each job runs) and `QUEUE_RESTARTS_DOWN_MS` (below).
    let knob = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect("a number of ms"))
    };
    let lease_ms = knob("QUEUE_RESTARTS_LEASE_MS", 3000);
    let heartbeat_ms = knob("QUEUE_RESTARTS_HEARTBEAT_MS", 1000);
    let hold_ms = knob("QUEUE_RESTARTS_HOLD_MS", 10);
    // Progress between restarts, and a producer the 12 slots keep up with.
    let progress: u64 = if hold_ms >= 100 { 12 } else { 100 };
    let counter = RedisServer::start().expect("counting redis-server");
    let mut server = common::server_with(RedisServerOptions {
        args: [
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            // While loading, answer (LOADING) every KiB read rather than every 2 MiB.
            "--loading-process-events-interval-bytes",
            "1024",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    // The code under test connects as the suite's user, the test's own seeding and counting as
    // the administrator (the same URL outside the ACL run).
    let url = common::url_of(&server);
    let admin = common::admin_url_of(&server);
    let mut con = raw(&admin).await;
    fill_for_loading(&mut con, 300_000).await;

    let client = Client::connect(&url).await.expect("connect");
    let plain_keys = client.keys("restarts").expect("keys");
    let unique_keys = client.keys("restarts-unique").expect("keys");
    // Unique-key jobs wait in a paused queue until the restarts are over: a unique key is
    // released when its job completes, so a retry arriving after a fast worker completed the
    // first try's job would rightly create a second one. Paused, "one job per key" is exact.
    client.pause("restarts-unique").await.expect("pause");

    let mut pool = Pool::new(vec![
        (ENV_URL, url.clone()),
        (ENV_COUNT_URL, counter.url().to_string()),
        (ENV_QUEUES, "restarts,restarts-unique".into()),
        (ENV_LEASE_MS, lease_ms.to_string()),
        (ENV_HEARTBEAT_MS, heartbeat_ms.to_string()),
        (ENV_CONCURRENCY, "4".into()),
        // Every outcome kept: each acknowledged id is checked against the completed set.
        (ENV_KEEP, "10000000".into()),
    ]);
    for _ in 0..3 {
        let w = pool.spawn();
        pool.started(w).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Mutex::new(Produced::default()));
    let producer = tokio::spawn(produce(
        client.clone(),
        ProducerPlan {
            queue: "restarts",
            unique_every: 5,
            unique_queue: "restarts-unique",
            fail_every: 0,
            delay_every: 0,
            priorities: false,
            every: Duration::from_millis((hold_ms / 8).max(4)),
            hold_ms: u32::try_from(hold_ms).expect("hold"),
        },
        stop.clone(),
        produced.clone(),
    ));

    // `QUEUE_RESTARTS_DOWN_MS=4500,4700` replays the kills with other downtimes (the outage is
    // the downtime plus the load, ~0.2 s).
    let downs: Vec<u64> = std::env::var("QUEUE_RESTARTS_DOWN_MS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|d| d.trim().parse().expect("ms"))
                .collect()
        })
        .unwrap_or_else(|| vec![0, 200, 500, 1000, 300]);
    let mut plan: Vec<Restart> = Vec::new();
    let kills = if soak { 30 } else { 10 };
    for i in 0..kills {
        plan.push(Restart::Kill(Duration::from_millis(downs[i % downs.len()])));
        if i == kills / 3 {
            plan.push(Restart::Shutdown);
        }
        if i == 2 * kills / 3 {
            plan.push(Restart::Term);
        }
    }
    struct Round {
        how: Restart,
        at: Instant,
        kill_ms: i64,
        outage_ms: i64,
        loading: String,
        first_completion_ms: i64,
    }
    let mut rounds: Vec<Round> = Vec::new();
    let mut since_ms = 0i64;
    for (i, how) in plan.iter().copied().enumerate() {
        // Under load: at least 100 jobs completed since the last restart, and the producer
        // adding more.
        eventually(
            Duration::from_secs(30),
            &format!("progress before restart {}", i + 1),
            || {
                let mut con = con.clone();
                let keys = plain_keys.clone();
                async move { completed_since(&mut con, &keys, since_ms).await >= progress }
            },
        )
        .await;
        let at = Instant::now();
        let kill_ms = now_ms();
        tokio::task::block_in_place(|| restart(&mut server, how));
        let up_ms = now_ms();
        let up = Instant::now();
        let ready_ms = ready_at_ms(&server);
        con = raw(&admin).await;
        // Scripts run only once the server is ready: a completion scored from then on is one
        // recorded after the restart.
        let completed = plain_keys.completed();
        let first = bounded(
            Duration::from_secs(10),
            &format!("the first completion after restart {} ({how:?})", i + 1),
            async {
                let mut con = con.clone();
                loop {
                    let first: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
                        .arg(&completed)
                        .arg(ready_ms)
                        .arg("+inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1)
                        .query_async(&mut con)
                        .await
                        .expect("zrangebyscore");
                    if let Some((_, score)) = first.first() {
                        return *score;
                    }
                    // No signal leaves the worker processes when they complete a job.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        )
        .await;
        since_ms = first;
        // Every worker's loops have logged the end of this outage before the next one starts,
        // so each outage's lines are counted apart.
        eventually(
            Duration::from_secs(30),
            &format!("every worker to log the end of outage {}", i + 1),
            || async { pool.outages_closed(at) },
        )
        .await;
        let r = Round {
            how,
            at,
            kill_ms,
            outage_ms: ready_ms - kill_ms,
            loading: last_load_time(&server),
            first_completion_ms: first - ready_ms,
        };
        // When each worker's fetch loop got through again, from Redis accepting commands.
        let fetching: Vec<String> = pool
            .first_after(at, up, "fetch: Redis answers again")
            .into_iter()
            .map(|(w, ms)| format!("w{w} {}", ms + (up_ms - ready_ms)))
            .collect();
        println!(
            "restart {:2} {:<14} outage {:5} ms (loading {}), first completion {:4} ms after Redis accepted commands (the fixture saw PING after {} ms; fetch loops back after {})",
            i + 1,
            format!("{:?}", r.how),
            r.outage_ms,
            r.loading,
            r.first_completion_ms,
            up_ms - ready_ms,
            fetching.join(", ")
        );
        rounds.push(r);
    }
    // Work goes on after the last restart before the producer stops.
    eventually(
        Duration::from_secs(30),
        "progress after the last restart",
        || {
            let mut con = con.clone();
            let keys = plain_keys.clone();
            async move { completed_since(&mut con, &keys, since_ms).await >= progress }
        },
    )
    .await;
    let load_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    bounded(Duration::from_secs(60), "the producer to stop", producer)
        .await
        .expect("producer");
    let produced = std::mem::take(&mut *produced.lock().unwrap_or_else(|p| p.into_inner()));

    // One job per unique key, before any of them runs.
    let mut con = raw(&admin).await;
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(unique_keys.pending())
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .expect("unique pending");
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &members {
        let job = queue::wire::decode_member(m, "restarts-unique").expect("member");
        per_key
            .entry(job.unique_key.clone().unwrap_or_default())
            .or_default()
            .push(job.id.to_string());
    }
    let doubled: Vec<_> = per_key.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(
        doubled.is_empty(),
        "keys with more than one job: {doubled:?}"
    );
    for (key, id) in &produced.unique {
        assert_eq!(
            per_key.get(key).map(|ids| ids[0].as_str()),
            Some(id.as_str()),
            "the job of {key} is the one its enqueue was acknowledged with"
        );
    }
    assert_eq!(
        per_key.len(),
        produced.unique.len(),
        "no job for a key the producer did not get through"
    );
    client.resume("restarts-unique").await.expect("resume");
    eventually(Duration::from_secs(120), "every job to finish", || {
        drained(con.clone(), vec![plain_keys.clone(), unique_keys.clone()])
    })
    .await;
    let drain_end = Instant::now();
    let reports = tokio::task::block_in_place(|| pool.stop_all());

    // Nothing acknowledged is lost: every id has its outcome in the completed set.
    let acked: Vec<(&str, &JobId)> = produced
        .plain
        .iter()
        .map(|id| ("restarts", id))
        .chain(produced.unique.values().map(|id| ("restarts-unique", id)))
        .collect();
    let mut lost = Vec::new();
    for (queue, id) in &acked {
        let k = if *queue == "restarts" {
            &plain_keys
        } else {
            &unique_keys
        };
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(k.completed())
            .arg(id.as_str())
            .query_async(&mut con)
            .await
            .expect("zscore");
        if score.is_none() {
            lost.push(id.to_string());
        }
    }
    // Runs and attempts, counted by the handlers on the other server.
    let mut counting = raw(counter.url()).await;
    let runs: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(RUNS)
        .query_async(&mut counting)
        .await
        .expect("runs");
    let later: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(LATER_ATTEMPTS)
        .query_async(&mut counting)
        .await
        .expect("later attempts");
    let reruns: Vec<(&String, &u64)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    let s_plain = stats(&mut con, &plain_keys).await;
    let s_unique = stats(&mut con, &unique_keys).await;
    let completed_total = s_plain.get("completed").copied().unwrap_or(0)
        + s_unique.get("completed").copied().unwrap_or(0);

    // The producer's view of the outages.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for e in &produced.errors {
        *kinds.entry(format!("{:?}", e.kind)).or_default() += 1;
    }
    let mut samples: BTreeMap<String, String> = BTreeMap::new();
    for e in &produced.errors {
        samples
            .entry(format!("{:?}", e.kind))
            .or_insert_with(|| e.message.clone());
    }
    let per_round_kinds: Vec<BTreeMap<String, usize>> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let from = r.kill_ms;
            let to = rounds.get(i + 1).map(|n| n.kill_ms).unwrap_or(i64::MAX);
            let mut m = BTreeMap::new();
            for e in produced
                .errors
                .iter()
                .filter(|e| e.at_ms >= from && e.at_ms < to)
            {
                *m.entry(format!("{:?}", e.kind)).or_default() += 1;
            }
            m
        })
        .collect();

    // The workers' view: lines logged per outage (from one restart to the next).
    let mut worst = Lines::default();
    let mut noisiest = (0usize, 0usize, 0usize);
    let mut starts_per_outage = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        let to = rounds.get(i + 1).map(|n| n.at).unwrap_or(load_end);
        let lines = pool.lines_between(r.at, to);
        let mut shown = Vec::new();
        for (w, l) in &lines {
            worst.starts = worst.starts.max(l.starts);
            worst.ends = worst.ends.max(l.ends);
            worst.other = worst.other.max(l.other);
            starts_per_outage.push(l.starts);
            if l.starts + l.ends + l.other > noisiest.2 {
                noisiest = (i, *w, l.starts + l.ends + l.other);
            }
            shown.push(format!("w{w} {}+{}+{}", l.starts, l.ends, l.other));
        }
        println!(
            "restart {:2}: producer errors {:?}; worker lines (outage start + end + other) {}",
            i + 1,
            per_round_kinds[i],
            shown.join(", ")
        );
    }
    // The lines of the first outage and of the noisiest one, in full.
    for (i, w) in [(0, 0), (noisiest.0, noisiest.1)] {
        let to = rounds.get(i + 1).map(|n| n.at).unwrap_or(load_end);
        println!("worker {w}'s lines for restart {}:", i + 1);
        for l in pool.log_lines(rounds[i].at, to, w) {
            println!("    {l}");
        }
    }
    let latencies: Vec<i64> = rounds.iter().map(|r| r.first_completion_ms).collect();
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    println!(
        "restart to first completion (ms): {latencies:?}; median {}, max {}",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    println!(
        "acknowledged {} plain + {} unique, {} plain enqueues failed, {} unique retried ({} answered duplicate); {} jobs ran, {} completions recorded",
        produced.plain.len(),
        produced.unique.len(),
        produced.unacknowledged,
        produced.unique_retried,
        produced.unique_dedup,
        runs.len(),
        completed_total
    );
    println!("producer error kinds: {kinds:?}; e.g. {samples:?}");
    println!(
        "worker lines per outage: at most {} starts, {} ends, {} others; outage starts per worker and outage {starts_per_outage:?}",
        worst.starts, worst.ends, worst.other
    );
    println!("worker reports: {reports:?}");
    println!("stats: restarts {s_plain:?}; restarts-unique {s_unique:?}");
    println!(
        "wall: {:?} in all ({:?} under load, {:?} to drain)",
        started_at.elapsed(),
        load_end.duration_since(rounds[0].at),
        drain_end.duration_since(load_end)
    );

    assert!(
        lost.is_empty(),
        "{} acknowledged jobs lost: {lost:?}",
        lost.len()
    );
    // On failure: every worker's lines around the first line about the jobs concerned.
    let about = |ids: Vec<&String>| -> Vec<String> { pool.around(&ids) };
    assert!(
        reruns.is_empty(),
        "jobs that ran more than once: {reruns:?}; the workers' lines around them: {:#?}",
        about(reruns.iter().map(|(id, _)| *id).collect())
    );
    assert!(
        later.is_empty(),
        "attempts charged to jobs: {later:?}; the workers' lines around them: {:#?}",
        about(later.keys().collect())
    );
    assert_eq!(
        completed_total,
        runs.len() as u64,
        "every job that ran completed once"
    );
    for s in [&s_plain, &s_unique] {
        for counter in ["failed", "retried", "recovered", "dead"] {
            assert_eq!(s.get(counter).copied().unwrap_or(0), 0, "{counter}: {s:?}");
        }
    }
    for r in &reports {
        assert!(r.contains("recovered=0"), "{r}");
        assert!(r.contains("failed=0"), "{r}");
    }
    for key in produced.unique.values() {
        assert_eq!(runs.get(key.as_str()).copied(), Some(1), "unique job {key}");
    }
    assert!(
        produced.unique_retried > 0,
        "some unique enqueues met an outage and were retried"
    );
    let non_retryable: Vec<&Seen> = produced.errors.iter().filter(|e| !e.retryable).collect();
    assert!(
        non_retryable.is_empty(),
        "non-retryable errors: {non_retryable:?}"
    );
    let unexpected: Vec<&Seen> = produced
        .errors
        .iter()
        .filter(|e| {
            !matches!(
                e.kind,
                ErrorKind::Connection | ErrorKind::Loading | ErrorKind::Timeout
            )
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected kinds: {unexpected:?}");
    assert!(kinds.contains_key("Loading"), "LOADING was seen: {kinds:?}");
    assert!(
        kinds.contains_key("Connection"),
        "refusals were seen: {kinds:?}"
    );
    // Each loop of a worker (fetch, waker, heartbeat, worker record, acker) logs an outage
    // once when it starts and once when it ends: a handful of lines, not one per try.
    assert!(
        worst.starts <= 8 && worst.ends <= 8,
        "a worker logged {worst:?} lines in one outage"
    );
    assert!(
        latencies.iter().all(|l| *l < 10_000),
        "restart to first completion: {latencies:?}"
    );
}

/// The soak: producers enqueue continuously (mixed priorities, some delayed, 1% failing their
/// first attempt) while worker processes are SIGKILLed and replaced, and Redis is restarted.
/// `QUEUE_SOAK=1`: 30 minutes, a kill every minute, a Redis restart every 10 minutes. Default:
/// 40 s, a kill every 7 s, one restart.
///
/// Completed jobs are not retained (`completed_count = 0`): a retained outcome is memory the
/// policy keeps on purpose, and with none kept the drained server must come back to its
/// baseline. What was lost is checked without them: every acknowledged id ran (counted on the
/// other server), nothing is left in any unfinished state or dead, and the queue counted one
/// completion per job that ran (fencing records at most one per job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_worker_kills_and_redis_restarts_lose_nothing_and_leak_nothing() {
    let started_at = Instant::now();
    common::init_tracing();
    let soak = soak();
    // Kills every `kill_every` from `kill_every` on; restarts every `restart_every` from
    // `first_restart` on, half-way between two kills.
    let (duration, kill_every, first_restart, restart_every) = if soak {
        (
            Duration::from_secs(30 * 60),
            Duration::from_secs(60),
            Duration::from_secs(570),
            Duration::from_secs(600),
        )
    } else {
        (
            Duration::from_secs(40),
            Duration::from_secs(7),
            Duration::from_millis(17_500),
            Duration::from_secs(3600),
        )
    };
    let counter = RedisServer::start().expect("counting redis-server");
    let mut server = common::aof_server();
    let url = common::url_of(&server);
    let admin = common::admin_url_of(&server);
    let client = Client::connect(&url).await.expect("connect");
    let keys = client.keys("soak").expect("keys");
    let mut pool = Pool::new(vec![
        (ENV_URL, url.clone()),
        (ENV_COUNT_URL, counter.url().to_string()),
        (ENV_QUEUES, "soak".into()),
        (ENV_LEASE_MS, "3000".into()),
        (ENV_HEARTBEAT_MS, "1000".into()),
        (ENV_CONCURRENCY, "4".into()),
        (ENV_KEEP, "0".into()),
    ]);
    // Worker 0 lives throughout (its RSS is watched); the others are killed in turn.
    let mut victims = Vec::new();
    for i in 0..3 {
        let w = pool.spawn();
        pool.started(w).await;
        if i > 0 {
            victims.push(w);
        }
    }
    let long_lived = pool.pid(0);

    // Warm-up: a first batch drained, so scripts are cached, every key of a running queue
    // exists and the worker records are written; the Redis baseline is taken then.
    let warm: Vec<NewJob> = (0..500u64)
        .map(|seq| {
            NewJob::of::<work>(&Work {
                seq,
                fail_first: false,
                hold_ms: 1,
            })
            .expect("encode")
            .queue("soak")
        })
        .collect();
    client.enqueue_batch(warm).await.expect("warm-up");
    let mut con = raw(&admin).await;
    eventually(Duration::from_secs(60), "the warm-up to drain", || {
        drained(con.clone(), vec![keys.clone()])
    })
    .await;
    let baseline: u64 = info_field(&mut con, "memory", "used_memory")
        .await
        .parse()
        .expect("used_memory");

    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Mutex::new(Produced::default()));
    let producer = tokio::spawn(produce(
        client.clone(),
        ProducerPlan {
            queue: "soak",
            unique_every: 0,
            unique_queue: "soak",
            fail_every: 100,
            delay_every: 50,
            priorities: true,
            every: Duration::from_millis(10),
            hold_ms: 10,
        },
        stop.clone(),
        produced.clone(),
    ));

    let load_start = Instant::now();
    // RSS after warm-up: a sixth of the run in (under load by then).
    let warm_rss_at = duration / 6;
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let mut kills = 0u32;
    let mut restarts = 0u32;
    let mut next_kill = kill_every;
    let mut next_restart = first_restart;
    let mut next_sample = Duration::ZERO;
    let sample_every = if soak {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    };
    let mut warm_rss = 0u64;
    loop {
        let elapsed = load_start.elapsed();
        if elapsed >= duration {
            break;
        }
        let next = next_kill.min(next_restart).min(next_sample).min(duration);
        if next > elapsed {
            // The schedule itself is the timing of the fault; nothing is awaited here.
            tokio::time::sleep(next - elapsed).await;
            continue;
        }
        if next_sample <= elapsed {
            let kb = vm_rss_kb(long_lived);
            rss.push((elapsed, kb));
            if warm_rss == 0 && elapsed >= warm_rss_at {
                warm_rss = kb;
            }
            next_sample += sample_every;
        }
        if next_restart <= elapsed {
            restarts += 1;
            tokio::task::block_in_place(|| {
                restart(&mut server, Restart::Kill(Duration::from_millis(500)))
            });
            println!("{:?}: Redis restarted ({restarts})", load_start.elapsed());
            next_restart += restart_every;
        }
        if next_kill <= elapsed {
            kills += 1;
            let victim = victims.remove(0);
            pool.kill(victim);
            let fresh = pool.spawn();
            pool.started(fresh).await;
            victims.push(fresh);
            println!(
                "{:?}: worker {victim} SIGKILLed, worker {fresh} started",
                load_start.elapsed()
            );
            next_kill += kill_every;
        }
    }
    let final_rss = vm_rss_kb(long_lived);
    stop.store(true, Ordering::Relaxed);
    bounded(Duration::from_secs(60), "the producer to stop", producer)
        .await
        .expect("producer");
    let produced = std::mem::take(&mut *produced.lock().unwrap_or_else(|p| p.into_inner()));
    // Connected after the restarts.
    let mut con = raw(&admin).await;
    eventually(Duration::from_secs(120), "every job to finish", || {
        drained(con.clone(), vec![keys.clone()])
    })
    .await;
    let drain_end = Instant::now();

    let after: u64 = info_field(&mut con, "memory", "used_memory")
        .await
        .parse()
        .expect("used_memory");
    // Every key left without a TTL must be one of the documented permanent keys.
    let ns = client.namespace_keys().expect("namespace keys");
    let mut allowed: HashSet<String> = HashSet::new();
    for q in ["soak", queue::worker::MAINTENANCE] {
        allowed.extend(QueueKeys::new("queue", q).expect("keys").all_fixed());
    }
    allowed.extend([ns.queues(), ns.schedules(), ns.workers()]);
    let mut cursor = 0u64;
    let mut permanent = Vec::new();
    let mut total_keys = 0usize;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("scan");
        for key in batch {
            total_keys += 1;
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut con)
                .await
                .expect("pttl");
            if ttl == -1 {
                permanent.push(key);
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    permanent.sort();
    let stray: Vec<&String> = permanent.iter().filter(|k| !allowed.contains(*k)).collect();
    let meta: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.meta())
        .query_async(&mut con)
        .await
        .expect("meta");
    // A worker that is SIGKILLed leaves its fetch receipt (a field of the meta hash) behind:
    // one field per worker process that ever died, never removed.
    let receipts = meta.keys().filter(|f| f.starts_with("receipt:")).count();
    let live = pool.procs.len();
    let reports = tokio::task::block_in_place(|| pool.stop_all());

    let mut counting = raw(counter.url()).await;
    let runs: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(RUNS)
        .query_async(&mut counting)
        .await
        .expect("runs");
    let injected: HashSet<String> = redis::cmd("SMEMBERS")
        .arg(INJECTED)
        .query_async(&mut counting)
        .await
        .expect("injected");
    let lost: Vec<&JobId> = produced
        .plain
        .iter()
        .filter(|id| !runs.contains_key(id.as_str()))
        .collect();
    let s = stats(&mut con, &keys).await;
    let completed = s.get("completed").copied().unwrap_or(0);
    // Runs beyond the first that were not the retry of an injected failure: the jobs of killed
    // workers (and any others, which would be a finding).
    let reruns: u64 = runs
        .iter()
        .map(|(id, n)| n - 1 - u64::from(injected.contains(id)).min(n - 1))
        .sum();
    let counts = client.counts("soak").await.expect("counts");
    let growth = if warm_rss > 0 {
        (final_rss as f64 - warm_rss as f64) / warm_rss as f64 * 100.0
    } else {
        0.0
    };
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for e in &produced.errors {
        *kinds.entry(format!("{:?}", e.kind)).or_default() += 1;
    }
    println!(
        "soak {:?}: {kills} worker kills, {restarts} Redis restarts; {} acknowledged, {} failed enqueues {kinds:?}; {} jobs ran (the warm-up's 500 included), {} failed on purpose and ran again, {reruns} other re-runs; {completed} completions; stats {s:?}",
        duration,
        produced.plain.len(),
        produced.unacknowledged,
        runs.len(),
        injected.len()
    );
    println!(
        "worker 0 RSS: {warm_rss} kB after warm-up, {final_rss} kB at the end ({growth:+.1}%); samples {:?}",
        rss.iter()
            .map(|(t, kb)| format!("{}s:{kb}", t.as_secs()))
            .collect::<Vec<_>>()
    );
    println!(
        "Redis used_memory: {baseline} B at baseline, {after} B after the drain ({:+} B); {total_keys} keys, without TTL: {permanent:?}; {receipts} receipt fields in meta ({} of workers that are gone)",
        after as i64 - baseline as i64,
        receipts.saturating_sub(live)
    );
    println!("worker reports: {reports:?}");
    println!(
        "wall: {:?} in all, {:?} to drain",
        started_at.elapsed(),
        drain_end.duration_since(load_start + duration)
    );

    assert!(
        lost.is_empty(),
        "{} acknowledged jobs never ran: {lost:?}",
        lost.len()
    );
    assert_eq!(counts.dead, 0, "{counts:?}");
    assert_eq!(
        completed,
        runs.len() as u64,
        "one completion per job that ran (none left unfinished, none recorded twice)"
    );
    assert!(
        kills >= 1 && restarts >= 1,
        "{kills} kills, {restarts} restarts"
    );
    assert!(stray.is_empty(), "keys without a TTL: {stray:?}");
    // A drained server holds what it held at the baseline, give or take a few small records
    // (the records of killed workers, which age out in an hour, their receipts, throughput
    // buckets: tens of KiB after the 30 minutes).
    assert!(
        after <= baseline + 256 * 1024,
        "used_memory {after} B after the drain, {baseline} B at baseline"
    );
    if soak {
        assert!(
            final_rss as f64 <= warm_rss as f64 * 1.10,
            "worker RSS grew from {warm_rss} kB to {final_rss} kB"
        );
    }
}
