//! Exactly one job per tick with several scheduler processes, one of them killed (SIGKILL) and
//! restarted at intervals: no tick is fired twice, none is missing while a scheduler lives.
//!
//! Default: 3 schedulers for 8 s, a kill every 3 s. `QUEUE_SOAK=1`: the full run, 5
//! schedulers for 60 s with a kill every 15 s.

use crate::common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Env, Guard};
use queue::{job, JobError, WorkerBuilder};

/// Every second, into a queue no worker serves, so the jobs can be counted.
#[job(name = "tick", cron = "* * * * * *", queue = "ticks")]
async fn tick(_unit: ()) -> Result<(), JobError> {
    Ok(())
}

/// The body of a scheduler process; does nothing in a normal test run.
#[test]
fn child_scheduler() {
    let Ok(url) = std::env::var("QUEUE_CRON_CHILD_URL") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let worker = WorkerBuilder::new(url)
            .registry(common::registry(&["tick"]))
            .queue("idle", 1)
            .build()
            .await
            .expect("build");
        worker.run_until_signal().await.expect("run");
    });
}

fn spawn(url: &str) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .arg(common::test_name(module_path!(), "child_scheduler"))
        .args(["--exact", "--nocapture", "--test-threads=1"])
        .env("QUEUE_CRON_CHILD_URL", url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn scheduler")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_job_per_tick_with_schedulers_killed_and_restarted() {
    let soak = std::env::var("QUEUE_SOAK").is_ok_and(|v| v == "1");
    let (procs, run, kill_every) = if soak {
        (5, Duration::from_secs(60), Duration::from_secs(15))
    } else {
        (3, Duration::from_secs(8), Duration::from_secs(3))
    };
    let env = Env::start().await;
    let mut guard = Guard((0..procs).map(|_| spawn(env.url())).collect());
    let keys = env.client.keys("ticks").expect("keys");
    let mut raw = env.raw().await;
    // The run starts at the first tick, not at spawn: how long the child processes take to
    // start (a loaded machine, a debug build) is not what this test measures.
    eventually(Duration::from_secs(60), "the first tick", || async {
        env.client
            .counts("ticks")
            .await
            .is_ok_and(|c| c.pending >= 1)
    })
    .await;
    let start = Instant::now();
    let mut next_kill = start + kill_every;
    let mut victim = 0;
    while start.elapsed() < run {
        // The test is about time passing: it sleeps through its window.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() >= next_kill {
            let c = &mut guard.0[victim % procs];
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
            guard.0[victim % procs] = spawn(env.url());
            victim += 1;
            next_kill += kill_every;
        }
    }
    // Ticks keep firing after the last restart: wait (bounded) for the tick of the second the
    // run ended in, instead of assuming the schedulers were on time.
    let end_ms = common::now_ms() / 1000 * 1000;
    eventually(
        Duration::from_secs(30),
        "the tick at the end of the run",
        || {
            let mut raw = raw.clone();
            let key = keys.pending();
            async move {
                let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut raw)
                    .await
                    .unwrap_or_default();
                members.iter().any(|m| {
                    queue::wire::member_id(m).is_ok_and(|id| ulid_ms(id.as_str()) as i64 >= end_ms)
                })
            }
        },
    )
    .await;
    drop(guard);
    let stopped_ms = common::now_ms();
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(keys.pending())
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .expect("zrange");
    let ids: Vec<String> = members
        .iter()
        .map(|m| queue::wire::member_id(m).expect("id").to_string())
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a tick was fired twice");
    let mut ticks: Vec<u64> = ids.iter().map(|id| ulid_ms(id)).collect();
    ticks.sort_unstable();
    let gaps: Vec<(u64, u64)> = ticks
        .windows(2)
        .filter(|w| w[1] - w[0] != 1000)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        gaps.is_empty(),
        "ticks must be consecutive seconds; gaps: {gaps:?}"
    );
    // Consecutive and distinct, from the first tick to at least the end of the run, and none
    // ahead of the clock: exactly one job for every second the run covered.
    let expected = run.as_secs() as usize;
    assert!(
        ticks.len() > expected,
        "{} ticks over a {expected} s run ({} kills)",
        ticks.len(),
        victim
    );
    assert!(
        ticks.last().is_some_and(|&t| t as i64 <= stopped_ms),
        "no tick is fired ahead of its time"
    );
    assert!(victim >= 2, "schedulers were killed during the run");
}

fn ulid_ms(id: &str) -> u64 {
    // The first 10 characters of a ULID are its millisecond timestamp in Crockford base32.
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    id.chars().take(10).fold(0u64, |acc, c| {
        acc * 32 + ALPHABET.find(c).expect("base32") as u64
    })
}
