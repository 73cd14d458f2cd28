//! The worker runtime against a real Redis: retries with backoff, dead-letter, bad input,
//! panics, timeouts, graceful shutdown, pause, wake-ups and delayed jobs.
//!
//! Latency figures (how soon an idle worker starts a job, how late a delayed one starts) are
//! measured by `queue bench`, not asserted here: a loaded machine makes any bound a flake.

use crate::common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Env;
use queue::{job, Backoff, JobContext, JobError, JobState, NewJob, WorkerBuilder};

/// Start times of every attempt, by test key (tests in this binary run in parallel).
static STARTS: Mutex<Option<HashMap<String, Vec<Instant>>>> = Mutex::new(None);

fn record(key: &str) -> usize {
    let mut g = STARTS.lock().unwrap_or_else(|p| p.into_inner());
    let v = g
        .get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_default();
    v.push(Instant::now());
    v.len()
}

fn starts(key: &str) -> Vec<Instant> {
    STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_default()
}

#[job(name = "test.echo")]
async fn echo(s: String) -> Result<String, JobError> {
    record(&s);
    Ok(s)
}

#[job(name = "test.flaky", backoff = "200ms", max_attempts = 3)]
async fn flaky(key: String, ctx: JobContext) -> Result<u32, JobError> {
    record(&key);
    if ctx.attempt < 3 {
        return Err(JobError::retry(format!("attempt {} failed", ctx.attempt)));
    }
    Ok(ctx.attempt)
}

#[job(name = "test.always_fails", backoff_fixed = "10ms", max_attempts = 2)]
async fn always_fails(key: String) -> Result<(), JobError> {
    record(&key);
    Err(JobError::retry("database is down"))
}

#[job(name = "test.panics", backoff_fixed = "10ms", max_attempts = 1)]
async fn panics(_key: String) -> Result<(), JobError> {
    panic!("handler bug")
}

#[job(name = "test.slow", timeout = "100ms", max_attempts = 1)]
async fn slow(_key: String) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[job(name = "test.sleeps")]
async fn sleeps(ms: u64) -> Result<(), JobError> {
    record(&format!("sleeps-{ms}"));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

#[job(name = "test.discards")]
async fn discards(_key: String) -> Result<(), JobError> {
    Err(JobError::discard("nothing to do"))
}

#[job(name = "test.inflate")]
async fn inflate(bytes: usize) -> Result<String, JobError> {
    Ok("x".repeat(bytes))
}

/// Every handler of this file: the workers here run them all, and none of the other files'.
const JOBS: &[&str] = &[
    "test.inflate",
    "test.echo",
    "test.flaky",
    "test.always_fails",
    "test.panics",
    "test.slow",
    "test.sleeps",
    "test.discards",
    "test.fails_once",
];

async fn start_worker(
    env: &Env,
    configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
) -> common::RunningWorker {
    common::start_worker(&env.client, JOBS, |b| configure(b.concurrency(10))).await
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn retries_with_backoff_within_jitter_bounds_then_succeeds() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    let e = env
        .client
        .enqueue::<flaky>(&"flaky-1".to_string())
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &e.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Completed);
    assert_eq!(out.result::<u32>().expect("result"), 3);
    let t = starts("flaky-1");
    assert_eq!(t.len(), 3);
    // Equal jitter: the delay after failure n lies in [d/2, d] with d = 200 ms * 2^(n-1). A
    // retry never starts before its due time, so the lower bounds hold on any machine; the
    // upper bounds are the engine's (`backoff_delays_lie_within_equal_jitter_bounds` in the
    // engine tests checks them on the scheduled scores), not a latency this test can bound.
    let d1 = t[1] - t[0];
    let d2 = t[2] - t[1];
    assert!(d1 >= Duration::from_millis(100), "first backoff {d1:?}");
    assert!(d2 >= Duration::from_millis(200), "second backoff {d2:?}");
    let report = running.stop().await;
    assert_eq!((report.completed, report.failed), (1, 2));
}

/// The backoff is far longer than the test: the test makes the retry due itself (in Redis),
/// so no worker can pick it up before the test is ready.
#[job(name = "test.fails_once", backoff_fixed = "1h")]
async fn fails_once(key: String, ctx: JobContext) -> Result<u32, JobError> {
    record(&key);
    if ctx.attempt == 1 {
        return Err(JobError::retry("first attempt fails"));
    }
    Ok(ctx.attempt)
}

#[tokio::test]
async fn a_retry_in_backoff_survives_its_worker() {
    let env = Env::start().await;
    let first = start_worker(&env, |b| b).await;
    let e = env
        .client
        .enqueue::<fails_once>(&"backoff-survives".to_string())
        .await
        .expect("enqueue");
    common::eventually(
        Duration::from_secs(10),
        "the first attempt to fail",
        || async {
            env.client
                .counts("default")
                .await
                .map(|c| c.retrying == 1)
                .unwrap_or(false)
        },
    )
    .await;
    // The worker that scheduled the retry goes away; the retry lives in Redis, not in it.
    first.stop().await;
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    assert_eq!(
        common::rescore_all(&mut raw, &keys.retry(), 0).await,
        1,
        "the retry waits in Redis"
    );
    let second = start_worker(&env, |b| b).await;
    let out = env
        .client
        .wait_for("default", &e.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.result::<u32>().expect("result"), 2);
    assert_eq!(second.stop().await.completed, 1);
}

#[tokio::test]
async fn dead_letter_after_max_attempts_keeps_the_error() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    let e = env
        .client
        .enqueue::<always_fails>(&"dies-1".to_string())
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &e.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    assert_eq!(out.error.as_deref(), Some("error: database is down"));
    assert_eq!(starts("dies-1").len(), 2);
    let dead = env.client.dead_jobs("default", 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].failed, 2);
    assert_eq!(
        dead[0].last_error().map(|f| f.message.as_str()),
        Some("database is down")
    );
    running.stop().await;
}

/// A result over the payload cap is not stored: the job dies as `too_large`, with both sizes
/// in its error, and the worker keeps running.
#[tokio::test]
async fn a_result_over_the_payload_cap_fails_the_job_instead_of_being_stored() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    let cap = queue::wire::DEFAULT_MAX_PAYLOAD;
    let big = env
        .client
        .enqueue::<inflate>(&(cap + 1))
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &big.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    let error = out.error.unwrap_or_default();
    assert!(
        error.starts_with("too_large:") && error.contains(&cap.to_string()),
        "{error}"
    );
    assert!(out.result.is_none(), "nothing of the result is kept");
    // The worker goes on: a result within the cap completes.
    let small = env.client.enqueue::<inflate>(&1000).await.expect("enqueue");
    let out = env
        .client
        .wait_for("default", &small.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Completed);
    running.stop().await;
}

/// An envelope of a later wire version (an upgraded producer ran ahead of this worker) is
/// dead-lettered as `unsupported_version`, its bytes kept, and not run.
#[tokio::test]
async fn a_later_wire_version_is_dead_lettered_as_unsupported() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    let mut job = queue::wire::Job::new(
        queue::JobId::generate(),
        "default",
        "test.echo",
        queue::wire::encode_value("from the future", "args").expect("encode"),
        common::now_ms(),
    );
    job.version = queue::wire::WIRE_VERSION + 1;
    let member = queue::wire::encode_member(&job).expect("encode");
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    // Written as an older enqueue script would have taken it (it does not read the envelope).
    redis::pipe()
        .zadd(keys.pending(), member.as_slice(), 0)
        .rpush(keys.wake(), 1)
        .query_async::<()>(&mut raw)
        .await
        .expect("zadd");
    let out = env
        .client
        .wait_for("default", &job.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    let error = out.error.unwrap_or_default();
    assert!(error.starts_with("unsupported_version:"), "{error}");
    assert!(starts("from the future").is_empty(), "never run");
    running.stop().await;
}

#[tokio::test]
async fn malformed_payload_and_unknown_job_are_dead_lettered_and_the_worker_keeps_running() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;

    // Arguments that are not a MessagePack string.
    let bad = env
        .client
        .enqueue_job(NewJob::raw("test.echo", vec![0xc1, 0xff, 0x00]))
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &bad.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    let reason = out.error.unwrap_or_default();
    assert!(
        reason.starts_with("decode: arguments of job \"test.echo\" do not decode"),
        "{reason}"
    );

    // A job name no handler knows: retried (another worker version may know it), then dead.
    let unknown = env
        .client
        .enqueue_job(
            NewJob::raw("billing.unknown", vec![0xc0])
                .max_attempts(2)
                .backoff(Backoff::fixed(Duration::from_millis(10))),
        )
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &unknown.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    let reason = out.error.unwrap_or_default();
    assert!(
        reason.contains("unknown_job")
            && reason.contains("billing.unknown")
            && reason.contains("test.echo"),
        "{reason}"
    );

    // An envelope that is not MessagePack at all, written by a broken producer.
    let mut raw = env.raw().await;
    let keys = env.client.keys("default").expect("keys");
    let id = queue::JobId::generate();
    let mut member = b"ff".to_vec();
    member.extend_from_slice(id.as_str().as_bytes());
    member.extend_from_slice(b"\xc1 not msgpack");
    let _: () = redis::cmd("ZADD")
        .arg(keys.pending())
        .arg(0)
        .arg(&member)
        .query_async(&mut raw)
        .await
        .expect("zadd");
    let _: () = redis::cmd("RPUSH")
        .arg(keys.wake())
        .arg(1)
        .query_async(&mut raw)
        .await
        .expect("wake");
    let out = env
        .client
        .wait_for("default", &id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    assert!(out
        .error
        .unwrap_or_default()
        .starts_with("decode: the job's envelope does not decode"));

    // Still alive.
    let ok = env
        .client
        .enqueue::<echo>(&"alive".to_string())
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &ok.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.result::<String>().expect("result"), "alive");
    running.stop().await;
}

#[tokio::test]
async fn handler_defaults_apply_to_jobs_enqueued_without_options() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    // Enqueued by name only, as the CLI or another language would: no timeout, no attempts.
    let raw = NewJob::raw(
        "test.slow",
        queue::wire::encode_value(&"raw".to_string(), "args").expect("encode"),
    );
    let e = env.client.enqueue_job(raw).await.expect("enqueue");
    let out = env
        .client
        .wait_for("default", &e.id, WAIT)
        .await
        .expect("wait");
    // test.slow declares timeout = "100ms" and max_attempts = 1: both apply.
    assert_eq!(out.state, JobState::Dead);
    assert_eq!(out.error.as_deref(), Some("timeout: timed out after 100ms"));
    let dead = env.client.dead_jobs("default", 1).await.expect("dead");
    assert_eq!(
        (dead[0].max_attempts, dead[0].timeout_ms),
        (Some(1), Some(100))
    );
    running.stop().await;
}

/// A job recovered from a lost worker is settled with its handler's options too: a raw job
/// (no options) for `test.slow` (max_attempts = 1) is dead after one lost attempt, not retried
/// under the crate default of three.
#[tokio::test]
async fn handler_defaults_apply_to_recovered_jobs() {
    let env = Env::start().await;
    let raw = NewJob::raw(
        "test.slow",
        queue::wire::encode_value(&"lost".to_string(), "args").expect("encode"),
    );
    let e = env.client.enqueue_job(raw).await.expect("enqueue");
    // A worker that leased the job and died: its lease is already past its deadline.
    let broker = queue::broker::Broker::new(env.client.clone(), "default").expect("broker");
    let leased = broker
        .fetch(1, Duration::from_secs(60))
        .await
        .expect("fetch");
    assert_eq!(leased.jobs.len(), 1);
    let active = queue::wire::QueueKeys::new("queue", "default")
        .expect("keys")
        .active();
    assert_eq!(
        common::rescore_all(&mut env.raw().await, &active, 1).await,
        1
    );
    let running = start_worker(&env, |b| b).await;
    common::eventually(WAIT, "the recovered job to be dead-lettered", || async {
        env.client
            .dead_jobs("default", 1)
            .await
            .map(|d| d.len() == 1)
            .unwrap_or(false)
    })
    .await;
    running.stop().await;
    let dead = env.client.dead_jobs("default", 1).await.expect("dead");
    assert_eq!(dead[0].id, e.id);
    assert_eq!(dead[0].max_attempts, Some(1));
    let kinds: Vec<&str> = dead[0].errors.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["worker_lost"]);
}

#[tokio::test]
async fn a_panic_and_a_timeout_are_failed_attempts() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    let p = env
        .client
        .enqueue::<panics>(&"p".to_string())
        .await
        .expect("enqueue");
    let t = env
        .client
        .enqueue::<slow>(&"t".to_string())
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &p.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(
        out.error.as_deref(),
        Some("panic: handler panicked: handler bug")
    );
    let out = env
        .client
        .wait_for("default", &t.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.error.as_deref(), Some("timeout: timed out after 100ms"));
    let d = env
        .client
        .enqueue::<discards>(&"d".to_string())
        .await
        .expect("enqueue");
    let out = env
        .client
        .wait_for("default", &d.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Discarded);
    let report = running.stop().await;
    assert_eq!(report.dead, 2);
}

#[tokio::test]
async fn graceful_shutdown_finishes_short_jobs_and_hands_back_long_ones() {
    let env = Env::start().await;
    // The grace period is long next to the short job (50 ms) so a loaded machine still
    // finishes it in time; the long job (60 s) outlasts it whatever the machine.
    let running = start_worker(&env, |b| b.grace(Duration::from_secs(3))).await;
    let short = env.client.enqueue::<sleeps>(&50).await.expect("enqueue");
    let long = env
        .client
        .enqueue::<sleeps>(&60_000)
        .await
        .expect("enqueue");
    common::eventually(Duration::from_secs(10), "both jobs to start", || async {
        !starts("sleeps-50").is_empty() && !starts("sleeps-60000").is_empty()
    })
    .await;
    let report = running.stop().await;
    assert_eq!(
        report.completed, 1,
        "the short job finished within the grace period"
    );
    assert_eq!(report.requeued, 1, "the long one was handed back");
    let out = env
        .client
        .wait_for("default", &short.id, Duration::from_secs(1))
        .await
        .expect("short outcome");
    assert_eq!(out.state, JobState::Completed);
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.active), (1, 0));
    let broker = queue::broker::Broker::new(env.client.clone(), "default").expect("broker");
    let back = broker
        .fetch(1, Duration::from_secs(5))
        .await
        .expect("fetch")
        .jobs
        .remove(0)
        .job
        .expect("decodes");
    assert_eq!(back.id, long.id);
    assert_eq!(back.attempt(), 1, "handing back does not count an attempt");
}

#[tokio::test]
async fn pause_stops_fetching_and_resume_restarts_it() {
    let env = Env::start().await;
    env.client.pause("default").await.expect("pause");
    let running = start_worker(&env, |b| b.queue("default", 1).queue("unpaused", 1)).await;
    let e = env
        .client
        .enqueue::<echo>(&"paused-1".to_string())
        .await
        .expect("enqueue");
    // The same worker serves another queue meanwhile: it is running and fetching, so the
    // paused job not starting is the pause at work (enqueued after, it would be fetched with).
    let witness = env
        .client
        .enqueue_job(
            NewJob::of::<echo>(&"unpaused-1".to_string())
                .expect("encode")
                .queue("unpaused"),
        )
        .await
        .expect("enqueue");
    env.client
        .wait_for("unpaused", &witness.id, WAIT)
        .await
        .expect("the unpaused queue is served");
    // Absence can only be checked over a bounded time.
    let waited = env
        .client
        .wait_for("default", &e.id, Duration::from_millis(500))
        .await;
    assert!(
        matches!(waited, Err(queue::Error::Timeout(_))),
        "a paused queue runs nothing"
    );
    assert!(starts("paused-1").is_empty());
    env.client.resume("default").await.expect("resume");
    let out = env
        .client
        .wait_for("default", &e.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Completed);
    running.stop().await;
}

#[tokio::test]
async fn an_idle_worker_is_woken_by_an_enqueue() {
    let env = Env::start().await;
    // No polling to fall back on: an idle worker looks again only when woken.
    let running = start_worker(&env, |b| b.idle_recheck(Duration::from_secs(3600))).await;
    // Let the worker go idle (blocked on the wake list).
    let warm = env
        .client
        .enqueue::<echo>(&"warm".to_string())
        .await
        .expect("enqueue");
    env.client
        .wait_for("default", &warm.id, WAIT)
        .await
        .expect("wait");
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let key = format!("wake-{i}");
        // Idle first: the last job's completion is recorded and nothing waits.
        common::eventually(WAIT, "the worker to be idle", || async {
            env.client
                .counts("default")
                .await
                .is_ok_and(|c| c.pending == 0 && c.active == 0)
        })
        .await;
        let t0 = Instant::now();
        let e = env.client.enqueue::<echo>(&key).await.expect("enqueue");
        // With the recheck an hour away, only the wake-up can start the job within the wait.
        env.client
            .wait_for("default", &e.id, WAIT)
            .await
            .expect("the enqueue woke the idle worker");
        worst = worst.max(starts(&key)[0] - t0);
    }
    // How fast is `queue bench`'s figure; on a loaded machine any bound here would flake.
    println!("idle worker started a job {worst:?} after its enqueue (worst of 5)");
    running.stop().await;
}

#[tokio::test]
async fn a_delayed_job_does_not_start_early() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b).await;
    let t0 = Instant::now();
    let e = env
        .client
        .enqueue_job(
            NewJob::of::<echo>(&"delayed-1".to_string())
                .expect("encode")
                .delay(Duration::from_millis(300)),
        )
        .await
        .expect("enqueue");
    env.client
        .wait_for("default", &e.id, WAIT)
        .await
        .expect("wait");
    let started = starts("delayed-1")[0] - t0;
    assert!(
        started >= Duration::from_millis(300),
        "started after {started:?}"
    );
    // How late after its due time is `queue bench --delayed-secs`'s figure.
    println!("delayed job due at 300 ms started after {started:?}");
    running.stop().await;
}

#[tokio::test]
async fn weighted_queues_are_all_served() {
    let env = Env::start().await;
    let jobs = (0..60)
        .map(|i| {
            let q = ["high", "low"][i % 2];
            NewJob::of::<echo>(&format!("w-{i}"))
                .expect("encode")
                .queue(q)
        })
        .collect();
    let out = env.client.enqueue_batch(jobs).await.expect("enqueue");
    let running = start_worker(&env, |b| b.queue("high", 5).queue("low", 1)).await;
    for e in &out {
        env.client
            .wait_for(&e.queue, &e.id, WAIT)
            .await
            .expect("wait");
    }
    let report = running.stop().await;
    assert_eq!(report.completed, 60);
}

#[tokio::test]
async fn strict_order_drains_earlier_queues_first() {
    let env = Env::start().await;
    let jobs = (0..20)
        .map(|i| {
            let q = if i < 10 { "second" } else { "first" };
            NewJob::of::<echo>(&format!("strict-{q}-{i}"))
                .expect("encode")
                .queue(q)
        })
        .collect();
    let out = env.client.enqueue_batch(jobs).await.expect("enqueue");
    let running = start_worker(&env, |b| {
        b.queue("first", 1)
            .queue("second", 1)
            .order(queue::QueueOrder::Strict)
            .concurrency(1)
    })
    .await;
    for e in &out {
        env.client
            .wait_for(&e.queue, &e.id, WAIT)
            .await
            .expect("wait");
    }
    running.stop().await;
    let last_first = (10..20)
        .map(|i| starts(&format!("strict-first-{i}"))[0])
        .max()
        .expect("first");
    let first_second = (0..10)
        .map(|i| starts(&format!("strict-second-{i}"))[0])
        .min()
        .expect("second");
    assert!(
        last_first < first_second,
        "every job of `first` ran before any of `second`"
    );
}

/// A user middleware: sees every job, and short-circuits the ones it is told to.
struct Gate;
impl queue::middleware::Middleware for Gate {
    fn call<'a>(
        &'a self,
        req: queue::middleware::Request,
        next: queue::middleware::Next<'a>,
    ) -> futures_util::future::BoxFuture<'a, queue::middleware::Response> {
        Box::pin(async move {
            record(&format!("gate-{}", req.ctx.name));
            if req.job.priority == 42 {
                return Err(JobError::dead_letter("blocked by the gate"));
            }
            next.run(req).await
        })
    }
}

#[tokio::test]
async fn user_middlewares_wrap_every_handler_call() {
    let env = Env::start().await;
    let running = start_worker(&env, |b| b.queue("gated", 1).layer(Gate)).await;
    let ok = env
        .client
        .enqueue_job(
            NewJob::of::<echo>(&"gated-ok".to_string())
                .expect("encode")
                .queue("gated"),
        )
        .await
        .expect("enqueue");
    let blocked = env
        .client
        .enqueue_job(
            NewJob::of::<echo>(&"gated-blocked".to_string())
                .expect("encode")
                .queue("gated")
                .priority(42),
        )
        .await
        .expect("enqueue");
    assert_eq!(
        env.client
            .wait_for("gated", &ok.id, WAIT)
            .await
            .expect("wait")
            .state,
        JobState::Completed
    );
    let out = env
        .client
        .wait_for("gated", &blocked.id, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.error.as_deref(), Some("error: blocked by the gate"));
    assert!(starts("gated-blocked").is_empty(), "the handler never ran");
    assert!(starts("gate-test.echo").len() >= 2);
    running.stop().await;
}

#[tokio::test]
async fn invalid_worker_configuration_is_an_error() {
    let env = Env::start().await;
    let err = WorkerBuilder::with_client(env.client.clone())
        .registry(common::registry(JOBS))
        .concurrency(0)
        .build()
        .await
        .expect_err("invalid");
    assert!(err.to_string().contains("concurrency"), "{err}");
    let err = WorkerBuilder::with_client(env.client.clone())
        .registry(common::registry(JOBS))
        .queue("a", 0)
        .build()
        .await
        .expect_err("invalid");
    assert!(err.to_string().contains("weight"), "{err}");
    let err = WorkerBuilder::with_client(env.client.clone())
        .registry(common::registry(JOBS))
        .queue("a b", 1)
        .build()
        .await
        .expect_err("invalid");
    assert!(err.to_string().contains("queue name"), "{err}");
}
