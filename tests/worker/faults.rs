//! Redis itself failing under a live worker: frozen (SIGSTOP) for longer than the lease, killed
//! and restarted with its append-only file. The worker stays alive throughout, so nothing may be
//! charged to its jobs and none may run twice.

use crate::common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{bounded, eventually, Env};
use queue::{job, Client, JobError, NewJob};

static RUNS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn ran(key: &str) -> u32 {
    let mut runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let n = runs
        .get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_insert(0);
    *n += 1;
    *n
}

fn runs_of(prefix: &str) -> Vec<(String, u32)> {
    let runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, u32)> = runs
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    v.sort();
    v
}

/// Holds its job for a while, so that the job is running while Redis is away.
#[job(name = "fault.hold", queue = "faults")]
async fn hold(key: String) -> Result<(), JobError> {
    ran(&key);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    Ok(())
}

#[job(name = "fault.quick", queue = "faults")]
async fn quick(key: String) -> Result<(), JobError> {
    ran(&key);
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(())
}

/// Short enough to keep the freeze test short, long enough that a busy machine never starves
/// a live worker's heartbeat past it.
const LEASE: Duration = Duration::from_secs(2);

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

async fn stats(client: &Client) -> HashMap<String, u64> {
    let k = client.keys("faults").expect("keys");
    let mut con = redis::Client::open(client.config().url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw");
    redis::cmd("HGETALL")
        .arg(k.stats())
        .query_async(&mut con)
        .await
        .expect("stats")
}

/// Redis frozen for twice the lease while a live worker runs a job: when Redis resumes, every
/// lease has expired on its clock, yet the live worker's job is not recovered (an amnesty, not
/// a reclaim): it runs once, completes, and no attempt is charged. A job whose worker really
/// died before the freeze is still recovered, with one lost attempt.
#[tokio::test]
async fn a_redis_freeze_longer_than_the_lease_takes_nothing_from_live_workers() {
    let env = Env::start().await;
    // The orphan: leased by a "worker" that then died (nobody heartbeats it).
    let orphan = env
        .client
        .enqueue::<quick>(&"freeze-orphan".to_string())
        .await
        .expect("enqueue");
    let dead_worker = queue::broker::Broker::new(env.client.clone(), "faults").expect("broker");
    assert_eq!(
        dead_worker.fetch(1, LEASE).await.expect("fetch").jobs.len(),
        1
    );
    let live = env
        .client
        .enqueue::<hold>(&"freeze-live".to_string())
        .await
        .expect("enqueue");
    let running = common::start_worker(&env.client, &["fault.hold", "fault.quick"], |b| {
        // The heartbeat runs at a fifth of the lease.
        b.queue("faults", 1).lease(LEASE).heartbeat(LEASE / 5)
    })
    .await;
    eventually(Duration::from_secs(10), "the live job to start", || async {
        !runs_of("freeze-live").is_empty()
    })
    .await;
    // The fault itself lasts a fixed time: twice the lease.
    signal(env.server.pid(), "STOP");
    tokio::time::sleep(2 * LEASE).await;
    signal(env.server.pid(), "CONT");
    let out = bounded(Duration::from_secs(20), "the live job's outcome", async {
        env.client
            .wait_for("faults", &live.id, Duration::from_secs(20))
            .await
    })
    .await
    .expect("outcome");
    assert_eq!(out.state, queue::JobState::Completed);
    let orphan_out = env
        .client
        .wait_for("faults", &orphan.id, Duration::from_secs(20))
        .await
        .expect("the orphan is recovered");
    assert_eq!(orphan_out.state, queue::JobState::Completed);
    let report = running.stop().await;
    assert_eq!(runs_of("freeze-live"), [("freeze-live".to_string(), 1)]);
    assert_eq!(report.lease_lost, 0, "{report:?}");
    // Exactly one recovery: the orphan's, whose worker did die.
    assert_eq!(report.recovered, 1, "{report:?}");
    let s = stats(&env.client).await;
    assert_eq!(s.get("recovered").copied(), Some(1), "{s:?}");
    assert_eq!(s.get("failed").copied(), None, "{s:?}");
}

/// Redis killed (SIGKILL) and restarted from its append-only file three times, down for 2 s each
/// time (longer than a few quick retries), while a worker drains jobs: every job completes, none
/// is dead, no attempt is charged, and completions are retried through the outage instead of
/// dropped (a dropped completion re-runs its job once its lease expires).
// Several threads: the restart blocks one of them while the worker runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_under_load_lose_nothing_and_charge_nothing() {
    common::init_tracing();
    let mut server = common::aof_server();
    let client = Client::connect(&common::url_of(&server))
        .await
        .expect("connect");
    let total = 600u32;
    let jobs: Vec<NewJob> = (0..total)
        .map(|i| NewJob::of::<quick>(&format!("restart-{i:04}")).expect("job"))
        .collect();
    client.enqueue_batch(jobs).await.expect("enqueue");
    let running = common::start_worker(&client, &["fault.quick"], |b| {
        b.queue("faults", 1).concurrency(10)
    })
    .await;
    let done = |client: Client| async move {
        client
            .counts("faults")
            .await
            .map(|c| c.pending == 0 && c.active == 0 && c.scheduled == 0 && c.retrying == 0)
            .unwrap_or(false)
    };
    for round in 1..=3u32 {
        // Restart while jobs are being worked on: wait for progress first.
        eventually(
            Duration::from_secs(30),
            "the worker to make progress",
            || async { runs_of("restart-").len() as u32 >= round * total / 5 },
        )
        .await;
        tokio::task::block_in_place(|| server.restart_after(Duration::from_secs(2)))
            .expect("restart");
    }
    eventually(Duration::from_secs(60), "every job to finish", || {
        done(client.clone())
    })
    .await;
    let report = running.stop().await;
    let runs = runs_of("restart-");
    assert_eq!(runs.len() as u32, total, "every job ran");
    let counts = client.counts("faults").await.expect("counts");
    assert_eq!(counts.dead, 0);
    let s = stats(&client).await;
    assert_eq!(s.get("failed").copied(), None, "no handler failure: {s:?}");
    // Each completion recorded once. (A completion applied just before a kill whose reply was
    // lost is retried and finds its lease gone: the worker counts it `lease_lost`, harmlessly.)
    assert_eq!(s.get("completed").copied(), Some(u64::from(total)), "{s:?}");
    // Nothing is charged to the live worker: completions are retried through the outage, and a
    // fetch whose reply died with the connection is redeemed, not left to expire.
    let reruns: Vec<_> = runs.iter().filter(|(_, n)| *n > 1).collect();
    assert!(reruns.is_empty(), "re-runs: {reruns:?}; {report:?}");
    assert_eq!(report.recovered, 0, "{report:?}");
    assert_eq!(s.get("recovered").copied(), None, "{s:?}");
    println!(
        "re-runs after 3 restarts: {}; {report:?}; stats {s:?}",
        reruns.len()
    );
}

/// Garbage in a pending set (random bytes, truncated members, two with the same leading bytes)
/// is dead-lettered as it was, byte for byte, each under an id of its own; it is never leased,
/// the worker keeps running, and readers of the dead set show it.
#[tokio::test]
async fn garbage_in_the_pending_set_is_dead_lettered_as_it_was() {
    use rand::Rng;
    let env = Env::start().await;
    let k = env.client.keys("faults").expect("keys");
    let mut rng = rand::rng();
    let mut garbage: Vec<Vec<u8>> = (0..200)
        .map(|_| {
            let len = rng.random_range(1..200);
            (0..len).map(|_| rng.random::<u8>()).collect()
        })
        .collect();
    // Truncated: a header cut short, and a header with nothing after it.
    garbage.push(b"ff01JDX5Q0N3".to_vec());
    garbage.push(b"ff01JDX5Q0N3S9M2Y7A4B8C6D1E0".to_vec());
    // Two that share the bytes an id would occupy.
    garbage.push(b"ff\x00\x01\x02 same garbage id bytes 1".to_vec());
    garbage.push(b"ff\x00\x01\x02 same garbage id bytes 2".to_vec());
    // Two with the same valid id and envelopes that do not decode (0xc1 is never valid
    // MessagePack): one is dead under its id, the other under a fresh one, both kept.
    garbage.push(b"ff01JDX5Q0N3S9M2Y7A4B8C6D1E0\xc1 one".to_vec());
    garbage.push(b"ff01JDX5Q0N3S9M2Y7A4B8C6D1E0\xc1 two".to_vec());
    garbage.sort();
    garbage.dedup();
    let mut raw = env.raw().await;
    for g in &garbage {
        let _: () = redis::cmd("ZADD")
            .arg(k.pending())
            .arg(0)
            .arg(g.as_slice())
            .query_async(&mut raw)
            .await
            .expect("zadd");
    }
    // A real job among them still runs.
    let real = env
        .client
        .enqueue::<quick>(&"garbage-neighbour".to_string())
        .await
        .expect("enqueue");
    let running =
        common::start_worker(&env.client, &["fault.quick"], |b| b.queue("faults", 1)).await;
    env.client
        .wait_for("faults", &real.id, Duration::from_secs(20))
        .await
        .expect("the real job runs");
    eventually(
        Duration::from_secs(10),
        "every garbage member to be dead",
        || async {
            env.client
                .counts("faults")
                .await
                .is_ok_and(|c| c.dead as usize == garbage.len() && c.pending == 0)
        },
    )
    .await;
    running.stop().await;
    let counts = env.client.counts("faults").await.expect("counts");
    assert_eq!(counts.active, 0, "garbage is never leased");
    let kept: Vec<Vec<u8>> = redis::cmd("HVALS")
        .arg(k.dead_jobs())
        .query_async(&mut raw)
        .await
        .expect("hvals");
    // Members without a usable id are kept as they were; one with an id whose envelope does not
    // decode is dead under its id as a stand-in job whose arguments are its bytes.
    let mut kept: Vec<Vec<u8>> = kept
        .into_iter()
        .map(|v| match queue::wire::decode_member(&v, "faults") {
            Ok(job) if job.name == queue::wire::UNDECODABLE => job.args,
            _ => v,
        })
        .collect();
    kept.sort();
    assert_eq!(kept, garbage, "every member kept byte for byte");
    let shown = env
        .client
        .dead_jobs("faults", 1000)
        .await
        .expect("readers show undecodable dead jobs");
    assert_eq!(shown.len(), garbage.len());
    assert!(shown.iter().all(|j| j.name == queue::wire::UNDECODABLE));
    // Their ids are ids like any other: an operator can look one up.
    for j in &shown {
        queue::JobId::parse(j.id.as_str()).expect("a ULID");
    }
    let found = queue::admin::Admin::new(env.client.clone())
        .find(shown[0].id.as_str(), Some("faults"))
        .await
        .expect("find");
    assert!(found.is_some());
}

/// Two members with the same valid id and envelopes that do not decode, leased one at a time
/// (concurrency 1, so never in one batch): the second is dead-lettered under a fresh id, and
/// both are kept, byte for byte, as stand-ins.
#[tokio::test]
async fn two_undecodable_members_sharing_an_id_are_both_kept() {
    let env = Env::start().await;
    let k = env.client.keys("faults").expect("keys");
    let mut raw = env.raw().await;
    let pair: [&[u8]; 2] = [
        b"ff01JDX5Q0N3S9M2Y7A4B8C6D1E0\xc1 one",
        b"ff01JDX5Q0N3S9M2Y7A4B8C6D1E0\xc1 two",
    ];
    for m in pair {
        let _: () = redis::cmd("ZADD")
            .arg(k.pending())
            .arg(0)
            .arg(m)
            .query_async(&mut raw)
            .await
            .expect("zadd");
    }
    let running = common::start_worker(&env.client, &["fault.quick"], |b| {
        b.queue("faults", 1).concurrency(1)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "both members to be dead",
        || async {
            env.client
                .counts("faults")
                .await
                .is_ok_and(|c| c.dead == 2 && c.pending == 0 && c.active == 0)
        },
    )
    .await;
    running.stop().await;
    let kept: Vec<Vec<u8>> = redis::cmd("HVALS")
        .arg(k.dead_jobs())
        .query_async(&mut raw)
        .await
        .expect("hvals");
    let mut raw_bytes: Vec<Vec<u8>> = kept
        .iter()
        .map(|v| {
            let job = queue::wire::decode_member(v, "faults").expect("a stand-in");
            assert_eq!(job.name, queue::wire::UNDECODABLE);
            job.args
        })
        .collect();
    raw_bytes.sort();
    assert_eq!(raw_bytes, pair.map(<[u8]>::to_vec).to_vec());
}
