//! Target 7 of the hostile-input issue: least privilege. The ACL users of docs/OPERATIONS.md
//! (producer, worker, operator; `queue::acl` has their rules, word for word), created on a
//! real server, run the producer's, the worker's
//! and the operator's work, none with a `@dangerous` command; a producer cannot touch another
//! namespace.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::acl::{self, Role};
use queue::{job, Client, ClientConfig, JobError, JobState, NewJob};

/// The documented user of `role` for namespace `queue`, named after it.
async fn create_user(env: &Env, role: Role) -> String {
    let rules = acl::rules(role, "queue").expect("rules");
    env.user(role.name(), &[rules.as_str()]).await
}

#[job(name = "acl.double")]
async fn double(n: u64) -> Result<u64, JobError> {
    Ok(n * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_worker_and_operator_run_with_their_documented_users() {
    let env = Env::start().await;
    let producer = create_user(&env, Role::Producer).await;
    let worker = create_user(&env, Role::Worker).await;
    let operator = create_user(&env, Role::Operator).await;

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

/// Replicated durability waits with `WAIT` after the write: a documented producer and worker,
/// each on its own user, enqueue and settle with it (without `+wait` the write would be applied
/// and then reported refused, and a producer's retry would enqueue it twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durability_runs_under_the_documented_producer_and_worker() {
    let env = Env::start().await;
    let durable = |url: String| {
        let mut config = ClientConfig::new(&url);
        // No replica here: zero confirmations are enough, but WAIT still runs.
        config.durability = queue::Durability::Replicated {
            replicas: 0,
            timeout: Duration::from_millis(100),
        };
        config
    };
    let producer = create_user(&env, Role::Producer).await;
    let worker = create_user(&env, Role::Worker).await;
    let worker_client = Client::connect_with(durable(worker))
        .await
        .expect("worker connects");
    let running = common::start_worker(&worker_client, &["acl.double"], |b| b).await;
    let client = Client::connect_with(durable(producer))
        .await
        .expect("producer connects");
    let job = client.enqueue::<double>(&4).await.expect("durable enqueue");
    let out = client
        .wait_for("default", &job.id, Duration::from_secs(30))
        .await
        .expect("awaited");
    assert_eq!(out.state, JobState::Completed, "{out:?}");
    running.stop().await;
    let stats = queue::admin::Admin::new(env.client.clone())
        .stats("default")
        .await
        .expect("stats");
    assert_eq!(
        (stats.processed_1h, stats.failed_1h, stats.dead),
        (1, 0, 0),
        "{stats:?}"
    );
}
