//! The metrics history: a worker's completions, retries and dead letters are counted per
//! minute and job name by the scripts that settle them, with wait and run-time histograms,
//! in hashes that expire on their own and go with their queue.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::admin::{bucket_of, Admin, Counts, HISTORY_RETENTION};
use queue::{job, JobContext, JobError, JobState, NewJob};

#[job(name = "history.ok", queue = "hist")]
async fn ok(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[job(
    name = "history.flaky",
    queue = "hist",
    backoff_fixed = "10ms",
    max_attempts = 3
)]
async fn flaky(_n: u32, ctx: JobContext) -> Result<(), JobError> {
    if ctx.attempt < 3 {
        return Err(JobError::retry("not yet"));
    }
    Ok(())
}

#[job(
    name = "history.dies",
    queue = "hist",
    backoff_fixed = "10ms",
    max_attempts = 2
)]
async fn dies(_n: u32) -> Result<(), JobError> {
    Err(JobError::retry("never"))
}

#[job(name = "history.sleeps", queue = "hist")]
async fn sleeps(ms: u64) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

const JOBS: &[&str] = &[
    "history.ok",
    "history.flaky",
    "history.dies",
    "history.sleeps",
];
const WAIT: Duration = Duration::from_secs(30);

/// The history of the last ten minutes, added up by job name.
async fn by_name(admin: &Admin) -> std::collections::BTreeMap<String, Counts> {
    let now = chrono::Utc::now().timestamp_millis();
    let minutes = admin
        .history("hist", now - 600_000, now)
        .await
        .expect("history");
    assert_eq!(minutes.len(), 11, "one entry per minute, empty ones too");
    let mut out = std::collections::BTreeMap::<String, Counts>::new();
    for m in minutes {
        for (name, c) in m.names {
            out.entry(name).or_default().merge(&c);
        }
    }
    out
}

#[tokio::test]
async fn settled_attempts_are_counted_per_minute_and_job_name() {
    let env = Env::start().await;
    let running =
        common::start_worker(&env.client, JOBS, |b| b.queue("hist", 1).concurrency(4)).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(env.client.enqueue::<ok>(&n).await.expect("enqueue").id);
    }
    ids.push(env.client.enqueue::<flaky>(&0).await.expect("enqueue").id);
    let dead = env.client.enqueue::<dies>(&0).await.expect("enqueue").id;
    ids.push(env.client.enqueue::<sleeps>(&30).await.expect("enqueue").id);
    for id in &ids {
        let out = env.client.wait_for("hist", id, WAIT).await.expect("wait");
        assert_eq!(out.state, JobState::Completed);
    }
    let out = env
        .client
        .wait_for("hist", &dead, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Dead);
    running.stop().await;

    let admin = Admin::new(env.client.clone());
    let h = by_name(&admin).await;
    assert_eq!(h.len(), 4, "{h:#?}");
    let ok = &h["history.ok"];
    assert_eq!((ok.completed, ok.failed, ok.retried, ok.dead), (5, 0, 0, 0));
    assert_eq!((ok.wait.count(), ok.run.count()), (5, 5));
    let flaky = &h["history.flaky"];
    assert_eq!(
        (flaky.completed, flaky.failed, flaky.retried, flaky.dead),
        (1, 2, 2, 0)
    );
    // Only a first attempt has a known due time; every attempt ran.
    assert_eq!((flaky.wait.count(), flaky.run.count()), (1, 3));
    let dies = &h["history.dies"];
    assert_eq!(
        (dies.completed, dies.failed, dies.retried, dies.dead),
        (0, 2, 1, 1)
    );
    assert_eq!(dies.run.count(), 2);
    // A 30 ms handler lands in a bucket that holds 30 ms or more, however loaded the machine.
    let slow = &h["history.sleeps"];
    let bucket = slow
        .run
        .buckets
        .iter()
        .position(|&n| n > 0)
        .expect("one run");
    assert!(bucket >= bucket_of(30), "{:?}", slow.run);
    assert!(slow.run.quantile(0.5).expect("p50") >= 25.0);

    // The hourly hashes hold the same sums (the long charts read them).
    let now = chrono::Utc::now().timestamp_millis();
    let hours = admin
        .history_hours("hist", now - 2 * 3_600_000, now)
        .await
        .expect("hours");
    assert_eq!(hours.len(), 3, "one entry per hour, empty ones too");
    let mut by_hour = std::collections::BTreeMap::<String, Counts>::new();
    for h in hours {
        for (name, c) in h.names {
            by_hour.entry(name).or_default().merge(&c);
        }
    }
    assert_eq!(by_hour, h, "hours and minutes agree");

    // Every minute's hash expires on its own after the retention.
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("queue:{hist}:metrics:[0-9]*")
        .query_async(&mut raw)
        .await
        .expect("keys");
    assert!(!keys.is_empty() && keys.len() <= 2, "{keys:?}");
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut raw)
            .await
            .expect("pttl");
        let max = HISTORY_RETENTION.as_millis() as i64;
        assert!(ttl > max - 600_000 && ttl <= max, "{k}: {ttl}");
    }

    // They go with their queue.
    admin.remove_queue("hist").await.expect("remove");
    assert!(by_name(&admin).await.is_empty());
}

/// A hostile producer's 2,000-byte job name (dead-lettered: no handler has it) is counted
/// under a shortened label, and the history keeps flowing for every other name.
#[tokio::test]
async fn a_very_long_job_name_does_not_stop_the_history() {
    let env = Env::start().await;
    let running =
        common::start_worker(&env.client, JOBS, |b| b.queue("hist", 1).concurrency(2)).await;
    let long = "x".repeat(2_000);
    // MessagePack 0: arguments a handler could read, had it the name.
    let args = vec![0x00];
    let odd = env
        .client
        .enqueue_job(NewJob::raw(long.as_str(), args).queue("hist"))
        .await
        .expect("enqueue")
        .id;
    let out = env.client.wait_for("hist", &odd, WAIT).await.expect("wait");
    assert_eq!(out.state, JobState::Dead, "{out:?}");
    let fine = env.client.enqueue::<ok>(&1).await.expect("enqueue").id;
    let out = env
        .client
        .wait_for("hist", &fine, WAIT)
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Completed);
    running.stop().await;

    let h = by_name(&Admin::new(env.client.clone())).await;
    assert_eq!(h["history.ok"].completed, 1, "{:?}", h.keys());
    let label = format!("{}…", &long[..queue::admin::MAX_NAME_BYTES]);
    assert_eq!(h[&label].dead, 1, "{:?}", h.keys());
}
