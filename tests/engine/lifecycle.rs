//! The lifecycle scripts driven directly through the broker: order, leases and fencing,
//! recovery, dead-letter and replay, retention, pause.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::broker::Broker;
use queue::broker::Cause;
use queue::broker::Completion;
use queue::broker::Settle;
use queue::Action;
use queue::{JobType, NewJob, Retention};

struct Ping;
impl JobType for Ping {
    const NAME: &'static str = "test.ping";
    type Args = u32;
}

fn job(i: u32) -> NewJob {
    NewJob::of::<Ping>(&i).expect("encode")
}

const LEASE: Duration = Duration::from_secs(30);

async fn fetch_args(broker: &Broker, n: usize) -> Vec<u32> {
    let f = broker.fetch(n, LEASE).await.expect("fetch");
    f.jobs
        .iter()
        .map(|l| {
            queue::wire::decode_value(&l.job.as_ref().expect("decodes").args, "args").expect("u32")
        })
        .collect()
}

#[tokio::test]
async fn higher_priority_first_and_fifo_within_a_priority() {
    let env = Env::start().await;
    let mut jobs = Vec::new();
    for i in 0..30u32 {
        // Priorities 0, 5 and 9 interleaved; args encode the expected rank within a priority.
        let p = [0u8, 5, 9][(i % 3) as usize];
        jobs.push(job(i).priority(p));
    }
    env.client.enqueue_batch(jobs).await.expect("enqueue");
    // One more low-priority job enqueued later must come last, one more high-priority job
    // enqueued later must come right after the other priority-9 jobs.
    env.client
        .enqueue_job(job(100).priority(0))
        .await
        .expect("enqueue");
    env.client
        .enqueue_job(job(101).priority(9))
        .await
        .expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let mut got = Vec::new();
    // Fetch in small batches: order must hold across fetches too.
    for _ in 0..8 {
        got.extend(fetch_args(&broker, 4).await);
    }
    let p9: Vec<u32> = (0..30).filter(|i| i % 3 == 2).chain([101]).collect();
    let p5: Vec<u32> = (0..30).filter(|i| i % 3 == 1).collect();
    let p0: Vec<u32> = (0..30).filter(|i| i % 3 == 0).chain([100]).collect();
    let expected: Vec<u32> = p9.into_iter().chain(p5).chain(p0).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_completed_lease_cannot_be_completed_again_and_a_reclaimed_one_is_fenced() {
    let env = Env::start().await;
    env.client.enqueue_job(job(1)).await.expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let mut f = broker.fetch(10, LEASE).await.expect("fetch");
    assert_eq!(f.jobs.len(), 1);
    let old = f.jobs.remove(0);
    // The lease expires (seeded: its deadline moved to the past in Redis, instead of waiting
    // for the clock); another worker reclaims the job.
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    assert_eq!(common::rescore_all(&mut raw, &keys.active(), 0).await, 1);
    let mut reclaimed = broker.reclaim(10, LEASE).await.expect("reclaim").jobs;
    assert_eq!(reclaimed.len(), 1);
    let new = reclaimed.remove(0);
    assert_eq!(new.lease.id, old.lease.id);
    assert_ne!(new.lease.token, old.lease.token, "a new fencing token");
    let done = |l: &queue::broker::Lease| Completion {
        lease: l.clone(),
        result: vec![0xc0],
        name: String::new(),
        timing: Default::default(),
        unique_key: None,
    };
    // The zombie (old token) is refused; the new owner succeeds exactly once.
    assert_eq!(
        broker
            .complete(&[done(&old.lease)], &Retention::default())
            .await
            .expect("complete"),
        vec![false]
    );
    // The same lease twice in one call is recorded once (found by the model test).
    assert_eq!(
        broker
            .complete(&[done(&new.lease), done(&new.lease)], &Retention::default())
            .await
            .expect("complete"),
        vec![true, false]
    );
    assert_eq!(
        broker
            .complete(&[done(&new.lease)], &Retention::default())
            .await
            .expect("complete"),
        vec![false]
    );
    let completed: Option<u64> = redis::cmd("HGET")
        .arg(keys.stats())
        .arg("completed")
        .query_async(&mut raw)
        .await
        .expect("stats");
    assert_eq!(completed, Some(1), "counted once");
    assert!(
        !broker
            .extend(&[old.lease.key().to_string()], LEASE)
            .await
            .expect("extend")[0]
    );
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.active, c.completed), (0, 0, 1));
}

#[tokio::test]
async fn heartbeat_keeps_a_lease_alive() {
    let env = Env::start().await;
    env.client
        .enqueue_batch(vec![job(1), job(2)])
        .await
        .expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let f = broker.fetch(2, LEASE).await.expect("fetch");
    assert_eq!(f.jobs.len(), 2);
    let beating = f.jobs[0].lease.key().to_string();
    let silent = f.jobs[1].lease.id.clone();
    // Both deadlines pass (seeded in Redis); only one of the two workers sends heartbeats.
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    assert_eq!(common::rescore_all(&mut raw, &keys.active(), 0).await, 2);
    for _ in 0..4 {
        assert_eq!(
            broker
                .extend(std::slice::from_ref(&beating), LEASE)
                .await
                .expect("extend"),
            vec![true]
        );
    }
    let reclaimed = broker.reclaim(10, LEASE).await.expect("reclaim").jobs;
    assert_eq!(
        reclaimed
            .iter()
            .map(|l| l.lease.id.clone())
            .collect::<Vec<_>>(),
        vec![silent],
        "the silent lease is reclaimed, the extended one is not"
    );
}

#[tokio::test]
async fn backoff_delays_lie_within_equal_jitter_bounds() {
    let env = Env::start().await;
    env.client
        .enqueue_job(job(1).max_attempts(5).backoff(queue::Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(3600),
        )))
        .await
        .expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let leased = broker.fetch(1, LEASE).await.expect("fetch").jobs.remove(0);
    let mut j = leased.job.expect("decodes");
    // Equal jitter: after failure n the delay lies in [d/2, d] with d = 200 ms * 2^(n-1); the
    // jitter draw is the last argument, so both ends are checked exactly.
    for (n, d) in [(1u32, 200i64), (2, 400), (3, 800)] {
        j.record_failure("error", &format!("boom {n}"), 0);
        let now = queue_now();
        let delay = |unit: f64| match Settle::decide(&j, &Action::Retry, now, unit) {
            Settle::Retry { at_ms } => at_ms - now,
            other => panic!("failure {n}: expected a retry, got {other:?}"),
        };
        let (low, high) = (delay(0.0), delay(0.999_999));
        assert!(
            d / 2 <= low && low <= high && high <= d,
            "failure {n}: delays {low}..{high} ms, expected within {}..{d} ms",
            d / 2
        );
    }
}

#[tokio::test]
async fn failure_retries_later_then_dead_letters_with_the_error_kept_and_replays() {
    let env = Env::start().await;
    env.client
        .enqueue_job(job(1).max_attempts(2))
        .await
        .expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let retention = Retention::default();

    // Attempt 1 fails: retry in the future goes to the scheduled set.
    let leased = broker.fetch(1, LEASE).await.expect("fetch").jobs.remove(0);
    let mut j = leased.job.expect("decodes");
    j.record_failure("error", "boom 1", 0);
    let settle = Settle::decide(&j, &Action::Retry, queue_now(), 0.5);
    assert!(matches!(settle, Settle::Retry { .. }));
    assert!(broker
        .fail(
            &leased.lease,
            &j,
            &Settle::Retry {
                at_ms: queue_now() + 60_000
            },
            Cause::Handler,
            Default::default(),
            &retention
        )
        .await
        .expect("fail"));
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.scheduled, c.retrying, c.active), (0, 0, 1, 0));

    // Make it due now and fail attempt 2: max attempts reached, dead.
    let mut raw = env.raw().await;
    let keys = env.client.keys("default").expect("keys");
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(keys.retry())
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .expect("zrange");
    let _: () = redis::cmd("ZADD")
        .arg(keys.retry())
        .arg(0)
        .arg(&members[0])
        .query_async(&mut raw)
        .await
        .expect("zadd");
    let leased = broker.fetch(1, LEASE).await.expect("fetch").jobs.remove(0);
    let mut j = leased.job.expect("decodes");
    assert_eq!(j.attempt(), 2);
    j.record_failure("error", "boom 2", 0);
    assert_eq!(
        Settle::decide(&j, &Action::Retry, queue_now(), 0.5),
        Settle::Dead
    );
    assert!(broker
        .fail(
            &leased.lease,
            &j,
            &Settle::Dead,
            Cause::Handler,
            Default::default(),
            &retention
        )
        .await
        .expect("fail"));

    let dead = env.client.dead_jobs("default", 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]
            .errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["boom 1", "boom 2"]
    );

    env.client
        .replay_dead("default", &dead[0].id)
        .await
        .expect("replay");
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.dead), (1, 0));
    let again = broker
        .fetch(1, LEASE)
        .await
        .expect("fetch")
        .jobs
        .remove(0)
        .job
        .expect("decodes");
    assert_eq!(again.attempt(), 1, "replay gives a fresh set of attempts");
    assert_eq!(again.errors.len(), 2, "and keeps the history");
}

fn queue_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[tokio::test]
async fn retention_bounds_completed_jobs_by_count() {
    let env = Env::start().await;
    let jobs = (0..50u32).map(job).collect();
    env.client.enqueue_batch(jobs).await.expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let retention = Retention {
        completed_count: 10,
        ..Retention::default()
    };
    let f = broker.fetch(50, LEASE).await.expect("fetch");
    let done: Vec<Completion> = f
        .jobs
        .iter()
        .map(|l| Completion {
            lease: l.lease.clone(),
            result: vec![0xc0],
            name: String::new(),
            timing: Default::default(),
            unique_key: None,
        })
        .collect();
    assert!(broker
        .complete(&done, &retention)
        .await
        .expect("complete")
        .iter()
        .all(|ok| *ok));
    let mut raw = env.raw().await;
    let keys = env.client.keys("default").expect("keys");
    let (kept, results, inflight): (u64, u64, u64) = redis::pipe()
        .zcard(keys.completed())
        .hlen(keys.results())
        .hlen(keys.inflight())
        .query_async(&mut raw)
        .await
        .expect("counts");
    assert_eq!((kept, results, inflight), (10, 10, 0));

    // Remove-on-complete keeps nothing.
    env.client.enqueue_job(job(1)).await.expect("enqueue");
    let f = broker.fetch(1, LEASE).await.expect("fetch");
    let done = [Completion {
        lease: f.jobs[0].lease.clone(),
        result: vec![0xc0],
        name: String::new(),
        timing: Default::default(),
        unique_key: None,
    }];
    broker
        .complete(&done, &Retention::default().remove_on_complete())
        .await
        .expect("complete");
    let kept: u64 = redis::cmd("ZCARD")
        .arg(keys.completed())
        .query_async(&mut raw)
        .await
        .expect("zcard");
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn retention_bounds_completed_jobs_by_age() {
    let env = Env::start().await;
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let retention = Retention {
        completed_age: Duration::from_millis(100),
        ..Retention::default()
    };
    let complete_all = |n: u32| {
        let broker = broker.clone();
        let client = env.client.clone();
        async move {
            client
                .enqueue_batch((0..n).map(job).collect())
                .await
                .expect("enqueue");
            let f = broker.fetch(n as usize, LEASE).await.expect("fetch");
            let done: Vec<Completion> = f
                .jobs
                .iter()
                .map(|l| Completion {
                    lease: l.lease.clone(),
                    result: vec![0xc0],
                    name: String::new(),
                    timing: Default::default(),
                    unique_key: None,
                })
                .collect();
            broker.complete(&done, &retention).await.expect("complete");
        }
    };
    complete_all(5).await;
    // The first five grow older than the limit: seeded, their completion times moved an hour
    // back in Redis, instead of waiting for the clock.
    let mut raw = env.raw().await;
    let keys = env.client.keys("default").expect("keys");
    let hour_ago = queue_now() - 3_600_000;
    assert_eq!(
        common::rescore_all(&mut raw, &keys.completed(), hour_ago).await,
        5
    );
    complete_all(3).await;
    let (kept, results): (u64, u64) = redis::pipe()
        .zcard(keys.completed())
        .hlen(keys.results())
        .query_async(&mut raw)
        .await
        .expect("counts");
    assert_eq!(
        (kept, results),
        (3, 3),
        "jobs older than the age limit were trimmed"
    );
}

#[tokio::test]
async fn completion_releases_the_unique_key() {
    let env = Env::start().await;
    env.client
        .enqueue_job(job(1).unique("u", Duration::from_secs(600)))
        .await
        .expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let f = broker.fetch(1, LEASE).await.expect("fetch");
    let done = [Completion {
        lease: f.jobs[0].lease.clone(),
        result: vec![0xc0],
        name: String::new(),
        timing: Default::default(),
        unique_key: Some("u".into()),
    }];
    broker
        .complete(&done, &Retention::default())
        .await
        .expect("complete");
    let again = env
        .client
        .enqueue_job(job(2).unique("u", Duration::from_secs(600)))
        .await
        .expect("enqueue");
    assert!(!again.duplicate, "the key was released on completion");
}

#[tokio::test]
async fn paused_queue_leases_nothing_until_resumed() {
    let env = Env::start().await;
    env.client.enqueue_job(job(1)).await.expect("enqueue");
    env.client.pause("default").await.expect("pause");
    assert!(env.client.is_paused("default").await.expect("paused"));
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    assert!(broker
        .fetch(10, LEASE)
        .await
        .expect("fetch")
        .jobs
        .is_empty());
    env.client.resume("default").await.expect("resume");
    assert_eq!(broker.fetch(10, LEASE).await.expect("fetch").jobs.len(), 1);
}

#[tokio::test]
async fn due_jobs_are_promoted_in_bounded_steps() {
    let env = Env::start().await;
    // Scheduled an hour out, then made due by moving their scores to the past in Redis: a
    // short delay would race the clock (a slow batch lands its later chunks already due).
    let jobs = (0..2500u32)
        .map(|i| job(i).delay(Duration::from_secs(3600)))
        .collect();
    env.client.enqueue_batch(jobs).await.expect("enqueue");
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.scheduled), (0, 2500));
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    assert_eq!(
        common::rescore_all(&mut raw, &keys.scheduled(), queue_now() - 1000).await,
        2500
    );
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    // One fetch promotes at most 1000 due jobs; the rest follow on later fetches.
    let f = broker.fetch(0, LEASE).await.expect("fetch");
    assert!(f.jobs.is_empty());
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.scheduled), (1000, 1500));
    broker.fetch(0, LEASE).await.expect("fetch");
    broker.fetch(0, LEASE).await.expect("fetch");
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.scheduled), (2500, 0));
}

#[tokio::test]
async fn requeue_hands_jobs_back_without_counting_an_attempt() {
    let env = Env::start().await;
    env.client.enqueue_job(job(1)).await.expect("enqueue");
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let f = broker.fetch(1, LEASE).await.expect("fetch");
    assert_eq!(
        broker
            .requeue(&[f.jobs[0].lease.key().to_string()])
            .await
            .expect("requeue"),
        1
    );
    let again = broker
        .fetch(1, LEASE)
        .await
        .expect("fetch")
        .jobs
        .remove(0)
        .job
        .expect("decodes");
    assert_eq!(again.attempt(), 1);
}

/// The payload cap holds in the scripts, for producers that skip the client's check: the
/// enqueue script refuses a member over the queue's cap, and a member over it that got in
/// anyway (an older producer, a raw ZADD) is dead-lettered by `fetch` as it is, unleased, so
/// no worker ever holds it.
#[tokio::test]
async fn the_payload_cap_holds_in_the_scripts() {
    let env = Env::start().await;
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    // A producer configured with a 1 MiB cap writes it into the queue's meta...
    let mut config = queue::ClientConfig::new(env.url());
    config.max_payload = 1 << 20;
    let wide = queue::Client::connect_with(config).await.expect("connect");
    wide.enqueue_job(job(1)).await.expect("small");
    let cap: usize = redis::cmd("HGET")
        .arg(keys.meta())
        .arg("max_payload")
        .query_async(&mut raw)
        .await
        .expect("hget");
    assert_eq!(cap, 1 << 20);
    // ... an operator lowers it to the default again: the script refuses what the client
    // would still send.
    redis::cmd("HSET")
        .arg(keys.meta())
        .arg("max_payload")
        .arg(queue::wire::DEFAULT_MAX_PAYLOAD)
        .query_async::<()>(&mut raw)
        .await
        .expect("hset");
    let blob = queue::wire::encode_value(&vec![7u8; queue::wire::DEFAULT_MAX_PAYLOAD], "blob")
        .expect("encode");
    let err = wide
        .enqueue_job(NewJob::raw("test.ping", blob.clone()))
        .await
        .expect_err("over the queue's cap");
    assert!(err.to_string().contains("payload cap"), "{err}");

    // A member over the cap already in the pending set.
    let broker = Broker::new(env.client.clone(), "default").expect("broker");
    let _ = broker.fetch(10, LEASE).await.expect("drain the small one");
    let id = queue::JobId::generate();
    let mut member = queue::wire::priority_prefix(0).into_bytes();
    member.extend_from_slice(id.as_str().as_bytes());
    member.extend_from_slice(&blob);
    redis::cmd("ZADD")
        .arg(keys.pending())
        .arg(0)
        .arg(member.as_slice())
        .query_async::<()>(&mut raw)
        .await
        .expect("zadd");
    let f = broker.fetch(10, LEASE).await.expect("fetch");
    assert!(f.jobs.is_empty(), "an oversize member is never leased");
    assert_eq!(
        f.garbage,
        std::slice::from_ref(&id),
        "dead-lettered under its own id"
    );
    let kept: Vec<u8> = redis::cmd("HGET")
        .arg(keys.dead_jobs())
        .arg(id.as_str())
        .query_async(&mut raw)
        .await
        .expect("hget");
    assert_eq!(kept, member, "kept byte for byte");
    let too_large: u64 = redis::cmd("HGET")
        .arg(keys.stats())
        .arg("too_large")
        .query_async(&mut raw)
        .await
        .expect("hget");
    assert_eq!(too_large, 1);
    let admin = queue::admin::Admin::new(env.client.clone());
    let view = admin
        .find(id.as_str(), Some("default"))
        .await
        .expect("find")
        .expect("found");
    let why = view.job.expect_err("shown as too large, not decoded");
    assert!(why.starts_with("too_large:"), "{why}");
}

/// Anyone who can write the queue registry can put anything in it: a name that is no queue
/// (a newline, bytes that are not UTF-8) is skipped, not fatal to every listing.
#[tokio::test]
async fn a_bad_name_in_the_queue_registry_is_skipped() {
    let env = Env::start().await;
    env.client.enqueue_job(job(1)).await.expect("enqueue");
    let ns = env.client.namespace_keys().expect("keys");
    redis::cmd("SADD")
        .arg(ns.queues())
        .arg("evil\nFAKE running 999")
        .arg(&b"\xff\xfe"[..])
        .query_async::<()>(&mut env.raw().await)
        .await
        .expect("sadd");
    let admin = queue::admin::Admin::new(env.client.clone());
    assert_eq!(admin.queues().await.expect("queues"), ["default"]);
}

/// A dead worker's fetch receipt is dropped by maintenance; a live worker's stays.
#[tokio::test]
async fn receipts_of_dead_workers_are_pruned() {
    let env = Env::start().await;
    for name in ["w-live", "w-dead"] {
        let broker = Broker::new(env.client.clone(), "default")
            .expect("broker")
            .with_receipt(name);
        env.client.enqueue_job(job(1)).await.expect("enqueue");
        assert_eq!(broker.fetch(1, LEASE).await.expect("fetch").jobs.len(), 1);
    }
    let keys = env.client.keys("default").expect("keys");
    let raw = env.raw().await;
    let meta = keys.meta();
    let receipts = |mut raw: redis::aio::MultiplexedConnection| {
        let meta = meta.clone();
        async move {
            let mut fields: Vec<String> = redis::cmd("HKEYS")
                .arg(meta)
                .query_async(&mut raw)
                .await
                .expect("hkeys");
            fields.retain(|f| f.starts_with("receipt:"));
            fields.sort();
            fields
        }
    };
    assert_eq!(
        receipts(raw.clone()).await,
        ["receipt:w-dead", "receipt:w-live"]
    );
    let live: std::collections::HashSet<String> = ["w-live".to_string()].into();
    let admin = queue::admin::Admin::new(env.client.clone());
    assert_eq!(
        admin.prune_receipts("default", &live).await.expect("prune"),
        1
    );
    assert_eq!(receipts(raw).await, ["receipt:w-live"]);
}
