//! The rate-limit job middleware: limited jobs wait their turn without using attempts, and an
//! upstream 429 pushes the whole key back.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{bounded, Env};
use queue::{job, JobError, JobState};

static STARTS: Mutex<Option<HashMap<String, Vec<Instant>>>> = Mutex::new(None);

fn record(key: &str) {
    let mut g = STARTS.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_default()
        .push(Instant::now());
}

fn starts(key: &str) -> Vec<Instant> {
    let mut v = STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_default();
    v.sort();
    v
}

#[job(name = "rl.send", queue = "rl", rate_limit = "5/1s", rate_key = "smtp")]
async fn send(_n: u32) -> Result<(), JobError> {
    record("smtp");
    Ok(())
}

static THROTTLED: AtomicBool = AtomicBool::new(false);

#[job(
    name = "rl.partner",
    queue = "rl2",
    rate_limit = "100/1s",
    rate_key = "partner"
)]
async fn partner(n: u32) -> Result<u32, JobError> {
    record("partner");
    if n == 0 && !THROTTLED.swap(true, Ordering::SeqCst) {
        // The partner API answered 429 with Retry-After: 400 ms.
        return Err(JobError::rate_limited(Duration::from_millis(400)));
    }
    Ok(n)
}

async fn with_worker<F: std::future::Future<Output = ()>>(env: &Env, queue: &str, f: F) {
    let worker = common::start_worker(&env.client, &["rl.send", "rl.partner"], |b| {
        b.queue(queue, 1).concurrency(20)
    })
    .await;
    f.await;
    worker.stop().await;
}

#[tokio::test]
async fn limited_jobs_wait_their_turn_without_using_attempts() {
    let env = Env::start().await;
    let jobs = (0..15u32)
        .map(|i| queue::NewJob::of::<send>(&i).expect("encode"))
        .collect();
    let enq = env.client.enqueue_batch(jobs).await.expect("enqueue");
    with_worker(&env, "rl", async {
        for e in &enq {
            let o = bounded(
                Duration::from_secs(30),
                "a limited job",
                env.client.wait_for("rl", &e.id, Duration::from_secs(30)),
            )
            .await
            .expect("outcome");
            assert_eq!(o.state, JobState::Completed);
            let job = queue::wire::decode_member(o.job.as_deref().expect("retained"), "rl")
                .expect("member");
            assert_eq!(job.failed, 0, "waiting for the limit is not an attempt");
        }
    })
    .await;
    let t = starts("smtp");
    assert_eq!(t.len(), 15);
    for w in t.windows(6) {
        assert!(
            w[5] - w[0] >= Duration::from_millis(950),
            "6 starts within {:?}",
            w[5] - w[0]
        );
    }
    let mut raw = env.raw().await;
    let keys = env.client.keys("rl").expect("keys");
    let (snoozed, failed): (Option<u64>, Option<u64>) = redis::pipe()
        .hget(keys.stats(), "snoozed")
        .hget(keys.stats(), "failed")
        .query_async(&mut raw)
        .await
        .expect("stats");
    assert!(snoozed.unwrap_or(0) >= 10, "snoozed {snoozed:?}");
    assert_eq!(failed, None, "nothing failed");
}

#[tokio::test]
async fn an_upstream_429_pushes_the_whole_key_back() {
    let env = Env::start().await;
    let first = env.client.enqueue::<partner>(&0).await.expect("enqueue");
    let t0 = Instant::now();
    with_worker(&env, "rl2", async {
        // Wait until the first job hit the 429, then enqueue more of the same key.
        common::eventually(Duration::from_secs(10), "the 429", || async {
            THROTTLED.load(Ordering::SeqCst)
        })
        .await;
        let others: Vec<_> = (1..4u32)
            .map(|i| queue::NewJob::of::<partner>(&i).expect("encode"))
            .collect();
        let others = env.client.enqueue_batch(others).await.expect("enqueue");
        for e in others.iter().chain(std::iter::once(&first)) {
            let o = env
                .client
                .wait_for("rl2", &e.id, Duration::from_secs(20))
                .await
                .expect("outcome");
            assert_eq!(o.state, JobState::Completed);
        }
    })
    .await;
    let t = starts("partner");
    assert_eq!(t.len(), 5, "four jobs, one of them twice");
    // After the 429 nothing of the key ran before the 400 ms push-back ended.
    assert!(
        t[1] - t[0] >= Duration::from_millis(380),
        "next start after {:?}",
        t[1] - t[0]
    );
    assert!(t0.elapsed() >= Duration::from_millis(400));
}
