//! The client through a fault proxy: latency, a blackhole (a silent, half-open connection) and
//! connections reset in the middle of a reply.

use crate::common;

use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::Env;
use queue::{Client, ClientConfig, JobType, NewJob};

struct Ping;
impl JobType for Ping {
    const NAME: &'static str = "test.ping";
    type Args = u32;
}

async fn through(env: &Env, proxy: &Proxy, response_timeout: Duration) -> Client {
    let _ = env;
    let mut config = ClientConfig::new(common::as_suite(&proxy.url()));
    config.response_timeout = response_timeout;
    config.connect_timeout = response_timeout;
    Client::connect_with(config)
        .await
        .expect("connect through the proxy")
}

/// A silent connection (blackhole, half-open) makes a call fail with a retryable error within
/// its deadline plus a second, never hang; once the path heals, calls go through again.
#[tokio::test]
async fn a_blackholed_call_returns_within_its_deadline() {
    let env = Env::start().await;
    let proxy = Proxy::start(&env.server.url().replace("redis://", "")).await;
    let deadline = Duration::from_secs(1);
    let client = through(&env, &proxy, deadline).await;
    client.counts("q").await.expect("a healthy call");
    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let err = common::bounded(
        deadline + Duration::from_secs(1),
        "a blackholed call",
        async { client.counts("q").await },
    )
    .await
    .expect_err("nothing comes back");
    assert!(err.is_retryable(), "{err}");
    println!(
        "blackholed call failed after {:?}: {err}",
        started.elapsed()
    );
    proxy.set(Fault::None);
    common::eventually(
        Duration::from_secs(10),
        "calls to go through again",
        || async {
            match client.counts("q").await {
                Ok(_) => true,
                Err(e) => {
                    println!("after healing: {e}");
                    false
                }
            }
        },
    )
    .await;
}

/// A half-open connection (it stays open and never delivers again, while new connections work):
/// the call that meets it fails within its deadline plus a second, and the next call goes
/// through at once on a fresh connection. A connection manager alone keeps a timed-out
/// connection, so without the client's replacement every later call timed out too.
#[tokio::test]
async fn a_half_open_connection_is_replaced_after_one_timeout() {
    let env = Env::start().await;
    let proxy = Proxy::start(&env.server.url().replace("redis://", "")).await;
    let deadline = Duration::from_secs(1);
    let client = through(&env, &proxy, deadline).await;
    client.counts("q").await.expect("a healthy call");
    proxy.strand_open_connections();
    let err = common::bounded(
        deadline + Duration::from_secs(1),
        "a call on the stranded connection",
        async { client.counts("q").await },
    )
    .await
    .expect_err("nothing comes back");
    assert!(err.is_retryable(), "{err}");
    // The path is fine for new connections: the very next call must succeed, bounded by its
    // deadline too.
    common::bounded(
        deadline + Duration::from_secs(1),
        "the next call, on a fresh connection",
        async { client.counts("q").await },
    )
    .await
    .expect("the next call goes through a new connection");
}

/// Connections reset in the middle of replies while producers enqueue with unique keys and
/// retry every retryable failure: exactly one job per key, none lost.
#[tokio::test]
async fn unique_enqueues_retried_through_resets_give_one_job_per_key() {
    let env = Env::start().await;
    let proxy = Proxy::start(&env.server.url().replace("redis://", "")).await;
    let client = through(&env, &proxy, Duration::from_secs(2)).await;
    proxy.reset_next_replies(15);
    let mut retries = 0;
    for key in 0..30u32 {
        let job = || {
            NewJob::of::<Ping>(&key)
                .expect("encode")
                .queue("resets")
                .unique(format!("key-{key}"), Duration::from_secs(600))
        };
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 50, "key {key} never went through");
            match client.enqueue_job(job()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() => retries += 1,
                Err(e) => panic!("key {key}: {e}"),
            }
        }
    }
    assert!(retries > 0, "the proxy reset some replies");
    // Counted on the server itself, not through the proxy.
    assert_eq!(
        env.client.counts("resets").await.expect("counts").pending,
        30
    );
}

/// Every chunk delayed by 200 ms both ways: a worker through the proxy still runs every job.
#[tokio::test]
async fn a_worker_behind_200ms_of_latency_loses_nothing() {
    let env = Env::start().await;
    let proxy = Proxy::start(&env.server.url().replace("redis://", "")).await;
    let client = through(&env, &proxy, Duration::from_secs(5)).await;
    let jobs: Vec<NewJob> = (0..30u32)
        .map(|i| NewJob::of::<Ping>(&i).expect("encode").queue("slowlink"))
        .collect();
    env.client.enqueue_batch(jobs).await.expect("enqueue");
    proxy.set(Fault::Latency(Duration::from_millis(200)));
    let broker = queue::broker::Broker::new(client.clone(), "slowlink").expect("broker");
    let mut done = 0;
    while done < 30 {
        let fetched = broker
            .fetch(10, Duration::from_secs(30))
            .await
            .expect("fetch");
        let completions: Vec<_> = fetched
            .jobs
            .into_iter()
            .map(|l| queue::broker::Completion {
                lease: l.lease,
                result: Vec::new(),
                name: String::new(),
                timing: Default::default(),
                unique_key: None,
            })
            .collect();
        let recorded = broker
            .complete(&completions, &queue::Retention::default())
            .await
            .expect("complete");
        done += recorded.iter().filter(|r| **r).count();
    }
    let c = env.client.counts("slowlink").await.expect("counts");
    assert_eq!((c.pending, c.active, c.completed), (0, 0, 30));
}
