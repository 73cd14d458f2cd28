//! Clients and workers on a `redis+sentinel://` URL (issue 13, point 1): they find the primary
//! through the Sentinels, and find it again after each failover, whether asked for
//! (`SENTINEL FAILOVER`) or forced (the primary killed with SIGKILL).
//!
//! The default run does one failover of each kind; `QUEUE_SOAK=1` does ten (five of each).
//! Every deployment is real processes on loopback: a primary, a replica and three Sentinels
//! with `down-after-milliseconds` 1500.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{bounded, eventually};
use queue::testing::{SentinelOptions, SentinelSet};
use queue::{job, Client, ClientConfig, Durability, Error, JobContext, JobError, NewJob};

/// The ids the handler has run.
static SEEN: common::Seen = common::Seen::new();

fn seen() -> HashSet<String> {
    SEEN.all()
}

fn seen_count() -> usize {
    SEEN.count()
}

#[job(name = "topology.mark", queue = "topology")]
async fn mark(_seq: u64, ctx: JobContext) -> Result<(), JobError> {
    // 8 slots of 20 ms: 400 jobs/s at most, slower than the producer, so a backlog is
    // there to drain when a failover ends.
    tokio::time::sleep(Duration::from_millis(20)).await;
    SEEN.insert(ctx.id.to_string());
    Ok(())
}

/// A deployment for the suite: in the ACL mode the servers have the administrator's password
/// and the suite's user, and the Sentinels log in with the former.
fn deployment() -> SentinelSet {
    deployment_with(&[])
}

/// [`deployment`] with `args` for every data server.
fn deployment_with(args: &[&str]) -> SentinelSet {
    let mut opts = SentinelOptions::default();
    opts.server.args.extend(args.iter().map(|a| a.to_string()));
    if common::acl_mode() {
        let (name, password) = common::acl::SUITE_USER;
        opts.server.password = Some(common::acl::ADMIN_PASSWORD.into());
        opts.server
            .args
            .extend(["--masterauth", common::acl::ADMIN_PASSWORD].map(String::from));
        opts.server = opts.server.user(name, password, &common::acl::suite());
        opts.auth_pass = Some(common::acl::ADMIN_PASSWORD.into());
    }
    SentinelSet::start(opts).expect("a Sentinel deployment (redis-server must be installed)")
}

fn replicated(url: &str, timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new(url);
    config.durability = Durability::Replicated {
        replicas: 1,
        timeout,
    };
    config
}

/// The longest consumption may stop after a failover is set off (issue 13's bound): the
/// Sentinels' detection (1.5 s) and election, and the clients' finding the new primary.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

/// Under load (a producer with `Durability::Replicated(1)` keeping a backlog, a worker draining
/// it), failovers of both kinds: after each, consumption resumes within 10 s, and in the end
/// every acknowledged enqueue has run and the worker still takes new work and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_workers_follow_the_primary_through_failovers() {
    common::init_tracing();
    let soak = std::env::var("QUEUE_SOAK").is_ok_and(|v| v == "1");
    let rounds = if soak { 10 } else { 2 };
    eprintln!("start {:?}", std::time::SystemTime::now());
    let mut set = tokio::task::block_in_place(deployment);
    let url = common::as_suite(&set.url());

    let producer_client = Client::connect_with(replicated(&url, Duration::from_secs(2)))
        .await
        .expect("connect through the Sentinels");
    let side = producer_client.clone();
    let worker_client = Client::connect(&url).await.expect("connect");
    let worker = common::start_worker(&worker_client, &["topology.mark"], |b| {
        b.queue("topology", 1)
            .concurrency(8)
            .lease(Duration::from_secs(2))
            .heartbeat(Duration::from_millis(400))
    })
    .await;

    // The producer keeps about 600 jobs ahead of the worker (1.5 s of work), so consumption
    // never stops for want of work, and counts what it could not enqueue. (While the new
    // primary has no replica yet, no `Replicated(1)` enqueue is acknowledged: after a
    // requested failover, until the Sentinels turn the old primary into a replica.)
    let load = common::load::Load::start(
        producer_client,
        600,
        |seq| NewJob::of::<mark>(&seq).expect("encode"),
        seen_count,
    );

    eventually(Duration::from_secs(30), "the first jobs to run", || async {
        seen_count() >= 100
    })
    .await;
    // A caller awaiting an outcome across the first failover: the job runs on the new
    // primary (2 s from now; the failover takes about 1), whose outcome the wait must find.
    let awaited = side
        .enqueue_job(
            NewJob::of::<mark>(&u64::MAX)
                .expect("encode")
                .delay(Duration::from_secs(2)),
        )
        .await
        .expect("enqueue the awaited job");
    let waiter = tokio::spawn({
        let client = Client::connect(&url).await.expect("connect");
        async move {
            client
                .wait_for("topology", &awaited.id, Duration::from_secs(30))
                .await
        }
    });
    let mut resumed_after = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let kind = if round % 2 == 0 {
            "SENTINEL FAILOVER"
        } else {
            "kill -9"
        };
        tokio::task::block_in_place(|| {
            if round % 2 == 0 {
                set.failover().map(|_| ())
            } else {
                let (killed, _) = set.kill_primary()?;
                // As a supervisor would: the killed server comes back (empty) and the
                // Sentinels make it a replica of the new primary.
                set.restart(killed)
            }
        })
        .unwrap_or_else(|e| panic!("round {round} ({kind}): {e}"));
        let promoted = started.elapsed();
        let at_promotion = seen_count();
        bounded(
            RESUME_WITHIN.saturating_sub(started.elapsed()) + Duration::from_millis(1),
            &format!("consumption to resume after round {round} ({kind})"),
            async {
                while seen_count() < at_promotion + 50 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        )
        .await;
        resumed_after.push((kind, promoted, started.elapsed()));
    }
    let outcome = bounded(Duration::from_secs(40), "the awaited outcome", waiter)
        .await
        .expect("waiter")
        .expect("the outcome of a job that ran on the new primary");
    assert_eq!(outcome.state, queue::JobState::Completed, "{outcome:?}");
    let (acked, refused) = load.stop().await;

    // Nothing acknowledged is lost: every acknowledged job runs (a lease lost with a failover
    // is recovered after 2 s, so this may take a few).
    eventually(
        Duration::from_secs(60),
        "every acknowledged job to run",
        || async {
            let seen = seen();
            acked.iter().all(|id| seen.contains(id))
        },
    )
    .await;
    // No worker is stuck: new work still runs, and the worker stops cleanly.
    let last = Client::connect(&url)
        .await
        .expect("connect")
        .enqueue::<mark>(&u64::MAX)
        .await
        .expect("enqueue after the failovers");
    eventually(
        Duration::from_secs(30),
        "a job enqueued after the failovers to run",
        || async { seen().contains(last.id.as_str()) },
    )
    .await;
    worker.stop().await;
    eprintln!(
        "{rounds} failovers: {} jobs acknowledged and run, {} enqueues refused ({:?}); \
         (failover, promoted after, consumption resumed after): {resumed_after:?}",
        acked.len(),
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>(),
    );
}

/// What each durability can lose, shown deterministically: with the replica down, an enqueue
/// with the default durability is acknowledged by the primary alone, and the same enqueue with
/// `Replicated(1)` is reported as not durable. The primary then dies, the replica comes back
/// (from its append-only file, without either write) and is promoted: the acknowledged default
/// enqueue is gone, the replicated one from before survives, and the loss the second
/// replicated one risked was reported to its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_what_only_the_primary_had_and_replicated_durability_says_so() {
    common::init_tracing();
    let mut set = tokio::task::block_in_place(|| {
        deployment_with(&["--appendonly", "yes", "--appendfsync", "always"])
    });
    let url = common::as_suite(&set.url());
    let plain = Client::connect(&url).await.expect("connect");
    let careful = Client::connect_with(replicated(&url, Duration::from_millis(500)))
        .await
        .expect("connect");
    let safe = careful
        .enqueue_job(NewJob::of::<mark>(&1).expect("encode").queue("demo"))
        .await
        .expect("acknowledged by the replica");

    let primary = set.primary().expect("a primary");
    let replica = 1 - primary;
    set.kill(replica);
    let lost = plain
        .enqueue_job(NewJob::of::<mark>(&2).expect("encode").queue("demo"))
        .await
        .expect("the default durability acknowledges what the primary has");
    let reported = careful
        .enqueue_job(NewJob::of::<mark>(&3).expect("encode").queue("demo"))
        .await
        .expect_err("no replica confirms it");
    assert!(
        matches!(
            reported,
            Error::NotDurable {
                wanted: 1,
                confirmed: 0,
                ..
            }
        ),
        "{reported:?}"
    );
    // The primary dies with both writes; the replica comes back without them and is promoted.
    tokio::task::block_in_place(|| {
        set.kill(primary);
        set.start_again(replica)?;
        set.wait_new_primary(primary)
    })
    .expect("the replica promoted");

    let admin = queue::admin::Admin::new(plain.clone());
    let find = |id: String| {
        let admin = admin.clone();
        async move {
            // Through the Sentinels: the first calls may still meet the dead primary.
            for _ in 0..100 {
                match admin.find_quick(&id, "demo", None).await {
                    Ok(found) => return found.is_some(),
                    Err(e) if e.kind().is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("find {id}: {e}"),
                }
            }
            panic!("find {id}: the new primary was not reached");
        }
    };
    assert!(
        find(safe.id.to_string()).await,
        "the replicated enqueue survives"
    );
    assert!(
        !find(lost.id.to_string()).await,
        "the default enqueue, acknowledged by the dead primary alone, is lost"
    );
}

/// Mistakes are typed errors that say so at once, not outages to retry: wrong data-server
/// credentials behind the Sentinels, a master name no Sentinel knows, a plain Redis given as a
/// Sentinel. Every Sentinel unreachable is an outage (retryable), reported within the connect
/// timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mistakes_are_typed_errors_and_outages_are_retryable() {
    common::init_tracing();
    let mut opts = SentinelOptions::default();
    opts.server.password = Some("right-pw".into());
    opts.server
        .args
        .extend(["--masterauth", "right-pw"].map(String::from));
    opts.auth_pass = Some("right-pw".into());
    let set = tokio::task::block_in_place(|| SentinelSet::start(opts)).expect("deployment");
    let hosts = set.url();
    let hosts = hosts
        .strip_prefix("redis+sentinel://")
        .and_then(|h| h.split_once('/'))
        .map(|(h, _)| h.to_string())
        .expect("hosts");
    let master = queue::testing::SENTINEL_MASTER;
    let kind_of = |url: String| async move {
        let started = Instant::now();
        let e = Client::connect(&url).await.expect_err(&url);
        assert!(!e.to_string().contains("wrong-pw"), "{e}");
        (e.kind(), started.elapsed())
    };
    Client::connect(&format!(
        "redis+sentinel://default:right-pw@{hosts}/{master}"
    ))
    .await
    .expect("the right credentials connect");
    let (kind, _) = kind_of(format!(
        "redis+sentinel://default:wrong-pw@{hosts}/{master}"
    ))
    .await;
    assert_eq!(kind, queue::ErrorKind::Auth);
    let (kind, _) = kind_of(format!(
        "redis+sentinel://default:right-pw@{hosts}/no-such-master"
    ))
    .await;
    assert_eq!(kind, queue::ErrorKind::Config);
    assert!(!kind.is_retryable());
    let plain = common::server();
    let port = plain.port().expect("tcp");
    let (kind, _) = kind_of(format!("redis+sentinel://127.0.0.1:{port}/{master}")).await;
    assert!(!kind.is_retryable(), "{kind:?}");
    drop(plain);
    // Nobody listens on these ports (the plain server just stopped, and port 1).
    let (kind, took) = kind_of(format!(
        "redis+sentinel://127.0.0.1:1,127.0.0.1:{port}/{master}"
    ))
    .await;
    assert_eq!(kind, queue::ErrorKind::Connection);
    assert!(took < Duration::from_secs(10), "{took:?}");
}
