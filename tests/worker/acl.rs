//! Target 7 of the hostile-input issue: least privilege. The ACL users of docs/OPERATIONS.md
//! (producer, worker, operator), created on a real server, run the producer's, the worker's
//! and the operator's work, none with a `@dangerous` command; a producer cannot touch another
//! namespace. The rules below are the documented ones, word for word.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::{job, Client, ClientConfig, JobError, JobState, NewJob};

/// Commands every role's scripts run inside Redis (a script's commands are checked against
/// its caller's ACL too), and what every connection sends.
const COMMON: &str = "-@all +ping +script|load +evalsha +time \
    +get +set +del +exists +pexpire +pttl +rename \
    +hget +hset +hmget +hdel +hexists +hgetall +hkeys +hincrby \
    +zadd +zrem +zcard +zscore +zmscore +zrange +zrangebyscore +zrangebylex +zpopmin \
    +zremrangebyrank +zremrangebyscore +zremrangebylex \
    +sadd +srem +rpush +llen +xadd +publish +pubsub|numsub";

/// A producer: enqueues, awaits outcomes.
const PRODUCER: &str = "+subscribe +unsubscribe";

/// A worker: what a producer does, and the wake-up, the liveness subscription, its record,
/// maintenance and durability waits.
const WORKER: &str = "+subscribe +unsubscribe +psubscribe +punsubscribe +blpop +hmset \
    +smembers +scan +zscan +unlink +wait";

/// An operator (the CLI, the dashboard): reads everything of its namespace, changes jobs.
/// `INFO` is the one `@dangerous` command it uses (server memory and version in `stats` and
/// `health`); without it those show no server figures.
const OPERATOR: &str = "-@all +@read +@write +@scripting +@pubsub +@connection -@dangerous +info";

/// The documented user `name` of namespace `namespace`: its keys and channels, and `rules`.
async fn create_user(env: &Env, name: &str, namespace: &str, rules: &[&str]) -> String {
    let scope = format!("~{namespace}:* &{namespace}:*");
    let mut all = vec![scope.as_str()];
    all.extend_from_slice(rules);
    env.user(name, &all).await
}

#[job(name = "acl.double")]
async fn double(n: u64) -> Result<u64, JobError> {
    Ok(n * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_worker_and_operator_run_with_their_documented_users() {
    let env = Env::start().await;
    let producer = create_user(&env, "producer", "queue", &[COMMON, PRODUCER]).await;
    let worker = create_user(&env, "worker", "queue", &[COMMON, WORKER]).await;
    let operator = create_user(&env, "operator", "queue", &[OPERATOR]).await;

    // The worker, on its user: heartbeat, liveness subscription, waker, record.
    let worker_client = Client::connect(&worker).await.expect("worker connects");
    let running = common::start_worker(&worker_client, &["acl.double"], |b| b).await;

    // The producer, on its: single, batch, delayed, unique, awaited.
    let client = Client::connect(&producer).await.expect("producer connects");
    let one = client.enqueue::<double>(&21).await.expect("enqueue");
    let batch: Vec<NewJob> = (0..5u64)
        .map(|i| NewJob::of::<double>(&i).expect("encode"))
        .collect();
    client.enqueue_batch(batch).await.expect("batch");
    let delayed = client
        .enqueue_job(
            NewJob::of::<double>(&1)
                .expect("encode")
                .delay(Duration::from_millis(200))
                .unique("acl-once", Duration::from_secs(60)),
        )
        .await
        .expect("delayed, unique");
    for id in [&one.id, &delayed.id] {
        let out = client
            .wait_for("default", id, Duration::from_secs(30))
            .await
            .expect("awaited over the producer's channels");
        assert_eq!(out.state, JobState::Completed);
    }

    // The worker's liveness subscription held under its channel rule.
    let keys = env.client.keys("default").expect("keys");
    let records: Vec<String> = redis::cmd("HVALS")
        .arg(keys.watchers())
        .query_async(&mut env.raw().await)
        .await
        .expect("hvals");
    assert!(
        records.iter().any(|r| r.contains(":alive:")),
        "no confirmed liveness channel: {records:?}"
    );

    // The operator, on its: stats, a job, the workers.
    let admin = queue::admin::Admin::new(Client::connect(&operator).await.expect("operator"));
    let stats = admin.stats("default").await.expect("stats");
    assert_eq!(stats.dead, 0, "{stats:?}");
    assert!(admin
        .find(one.id.as_str(), Some("default"))
        .await
        .expect("find")
        .is_some());
    assert_eq!(admin.workers().await.expect("workers").len(), 1);
    let ops = Client::connect(&operator).await.expect("operator");
    ops.pause("default").await.expect("pause");
    ops.resume("default").await.expect("resume");
    assert!(!ops.is_paused("default").await.expect("is paused"));
    running.stop().await;

    // A producer of namespace `queue` cannot reach another namespace.
    let mut other = ClientConfig::new(&producer);
    other.namespace = "other".into();
    let err = match Client::connect_with(other).await {
        Err(e) => e,
        Ok(c) => c
            .enqueue::<double>(&1)
            .await
            .expect_err("another namespace's keys"),
    };
    assert_eq!(err.kind(), queue::ErrorKind::Permission, "{err}");
}
