//! The result-cache job middleware: the same job with the same arguments within the TTL returns
//! the cached result without running the handler; failures are never cached.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::Env;
use queue::{job, JobError, JobState};

static RUNS: AtomicU32 = AtomicU32::new(0);
static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

#[job(name = "cj.price", queue = "cj", cache_ttl = "5m")]
async fn price(sku: String) -> Result<u64, JobError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(sku.len() as u64 * 100)
}

#[job(name = "cj.flaky", queue = "cj", cache_ttl = "5m", max_attempts = 1)]
async fn flaky(_sku: String) -> Result<u64, JobError> {
    if FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(JobError::retry("upstream down"));
    }
    Ok(7)
}

#[tokio::test]
async fn same_arguments_are_answered_from_the_cache_and_failures_are_not_cached() {
    let env = Env::start().await;
    let worker =
        common::start_worker(&env.client, &["cj.price", "cj.flaky"], |b| b.queue("cj", 1)).await;
    let wait = |id: queue::JobId| {
        let c = env.client.clone();
        async move {
            c.wait_for("cj", &id, Duration::from_secs(20))
                .await
                .expect("outcome")
        }
    };
    for _ in 0..3 {
        let e = env
            .client
            .enqueue::<price>(&"shoe".to_string())
            .await
            .expect("enqueue");
        let o = wait(e.id).await;
        assert_eq!(o.result::<u64>().expect("result"), 400);
    }
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        1,
        "the handler ran once for three identical jobs"
    );
    let other = env
        .client
        .enqueue::<price>(&"boots".to_string())
        .await
        .expect("enqueue");
    assert_eq!(wait(other.id).await.result::<u64>().expect("result"), 500);
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        2,
        "other arguments run the handler"
    );

    let first = env
        .client
        .enqueue::<flaky>(&"x".to_string())
        .await
        .expect("enqueue");
    assert_eq!(wait(first.id).await.state, JobState::Dead);
    let second = env
        .client
        .enqueue::<flaky>(&"x".to_string())
        .await
        .expect("enqueue");
    assert_eq!(
        wait(second.id).await.result::<u64>().expect("result"),
        7,
        "the failure was not cached"
    );
    assert_eq!(FLAKY_RUNS.load(Ordering::SeqCst), 2);

    worker.stop().await;
    // Hits and misses are counted per job (flushed by the worker's heartbeat).
    let stats = queue::cache::stats(&env.client).await.expect("stats");
    let s = stats
        .iter()
        .find(|s| s.policy == "job:cj.price")
        .expect("job policy stats");
    assert_eq!((s.hits, s.misses), (2, 2), "{s:?}");
}
