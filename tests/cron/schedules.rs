//! Cron schedules in a worker: declared with #[job(cron)], registered in code, paused,
//! triggered, misfires after downtime, and the maintenance schedule.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{eventually, Env};
use queue::cron::Cron;
use queue::cron::Misfire;
use queue::cron::Schedule;
use queue::cron::ScheduleDef;
use queue::{job, JobError, NewJob, Retention, WorkerBuilder};

static HEARTBEATS: AtomicU32 = AtomicU32::new(0);

/// Declared with a schedule: runs every second with its arguments' default value.
#[job(name = "cron.heartbeat", cron = "* * * * * *", queue = "cron")]
async fn heartbeat(_unit: ()) -> Result<(), JobError> {
    HEARTBEATS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[job(name = "cron.report", queue = "reports")]
async fn report(day: String) -> Result<String, JobError> {
    Ok(day)
}

/// A worker serving the `cron` queue with the handlers `jobs` (and so their declared
/// schedules: only the declared-schedule test runs `cron.heartbeat`).
async fn start(
    env: &Env,
    jobs: &[&str],
    b: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
) -> common::RunningWorker {
    common::start_worker(&env.client, jobs, |w| b(w.queue("cron", 1))).await
}

async fn pending(env: &Env, queue: &str) -> u64 {
    env.client
        .counts(queue)
        .await
        .map(|c| c.pending)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_declared_schedule_runs_every_tick_and_is_listed() {
    let env = Env::start().await;
    let running = start(&env, &["cron.heartbeat"], |b| b).await;
    eventually(
        Duration::from_secs(10),
        "the heartbeat job to run twice",
        || async { HEARTBEATS.load(Ordering::SeqCst) >= 2 },
    )
    .await;
    running.stop().await;
    let list = Cron::new(env.client.clone()).list().await.expect("list");
    let hb = list
        .iter()
        .find(|s| s.def.name == "cron.heartbeat")
        .expect("listed");
    assert_eq!(hb.def.cron, "* * * * * *");
    assert_eq!(hb.def.queue, "cron");
    assert!(hb.last_ms.is_some() && hb.next_ms.is_some() && !hb.paused);
}

#[tokio::test]
async fn schedules_registered_in_code_can_be_paused_resumed_and_triggered() {
    let env = Env::start().await;
    let s = Schedule::of::<report>("daily-report", "* * * * * *", &"today".to_string())
        .expect("schedule");
    // A second schedule on the same scheduler, never paused: its ticks show the scheduler kept
    // running while the paused one fired nothing.
    let witness = Schedule::new(
        "witness",
        "* * * * * *",
        NewJob::of::<report>(&"w".to_string())
            .expect("encode")
            .queue("witness"),
    )
    .expect("schedule");
    // The worker serves "cron" only: jobs of "reports" stay pending, so they can be counted.
    let running = start(&env, &["cron.report"], |b| b.schedule(s).schedule(witness)).await;
    eventually(Duration::from_secs(10), "two ticks", || async {
        pending(&env, "reports").await >= 2
    })
    .await;

    let cron = Cron::new(env.client.clone());
    cron.set_paused("daily-report", true).await.expect("pause");
    // The fire script checks the pause flag atomically: once `set_paused` returned, no tick of
    // this schedule can land, so the count is final now.
    let paused_at = pending(&env, "reports").await;
    let witnessed = pending(&env, "witness").await;
    eventually(
        Duration::from_secs(20),
        "two more ticks of the unpaused witness schedule",
        || async { pending(&env, "witness").await >= witnessed + 2 },
    )
    .await;
    assert_eq!(
        pending(&env, "reports").await,
        paused_at,
        "no ticks fire while paused"
    );
    assert!(cron
        .list()
        .await
        .expect("list")
        .iter()
        .any(|s| s.def.name == "daily-report" && s.paused));

    let e = cron.trigger("daily-report").await.expect("trigger");
    assert!(!e.duplicate);
    assert_eq!(
        pending(&env, "reports").await,
        paused_at + 1,
        "trigger enqueues at once, even paused"
    );

    cron.set_paused("daily-report", false)
        .await
        .expect("resume");
    eventually(Duration::from_secs(10), "ticks after resume", || async {
        pending(&env, "reports").await >= paused_at + 2
    })
    .await;
    running.stop().await;
    assert!(matches!(
        cron.trigger("nope").await,
        Err(queue::Error::NotFound(_))
    ));
}

async fn misfire_run(policy: Misfire, name: &str) -> u64 {
    let env = Env::start().await;
    let job = NewJob::raw(
        "cron.report",
        queue::wire::encode_value(&"x".to_string(), "args").expect("encode"),
    )
    .queue("missed");
    let s = Schedule::new(name, "0 * * * * *", job)
        .expect("schedule")
        .misfire(policy);
    // Every scheduler was down for ten minutes: the last tick fired ten whole minutes ago.
    let keys = env.client.keys("missed").expect("keys");
    let now = chrono::Utc::now().timestamp_millis();
    let ten_ago = (now / 60_000 - 10) * 60_000;
    let mut raw = env.raw().await;
    let _: () = redis::cmd("HSET")
        .arg(keys.cron())
        .arg(format!("last:{name}"))
        .arg(ten_ago)
        .query_async(&mut raw)
        .await
        .expect("hset");
    let running = start(&env, &["cron.report"], |b| b.schedule(s)).await;
    let cron = Cron::new(env.client.clone());
    eventually(
        Duration::from_secs(10),
        "the scheduler to catch up",
        || async {
            cron.list()
                .await
                .map(|l| {
                    l.iter()
                        .any(|s| s.def.name == name && s.last_ms.is_some_and(|l| l > ten_ago))
                })
                .unwrap_or(false)
        },
    )
    .await;
    running.stop().await;
    pending(&env, "missed").await
}

#[tokio::test]
async fn misfire_policies_after_every_scheduler_was_down() {
    // The minute ticks missed are 9 or 10 (the current minute's tick may be on time or not yet
    // due); the policies bound what fires.
    let once = misfire_run(Misfire::FireOnce, "m-once").await;
    assert!((1..=2).contains(&once), "fire once: {once}");
    let catch = misfire_run(Misfire::CatchUp(3), "m-catch").await;
    assert!((3..=4).contains(&catch), "catch up 3: {catch}");
}

#[tokio::test]
async fn misfire_skip_fires_nothing_from_the_downtime() {
    let env = Env::start().await;
    let job = NewJob::raw("cron.report", vec![0xc0]).queue("skipped");
    // A yearly schedule whose last tick was two years ago: nothing is due now (an hourly one
    // would be, in the test's window, once an hour), and skip ignores the missed ones.
    let s = Schedule::new("m-skip", "0 0 0 1 1 *", job)
        .expect("schedule")
        .misfire(Misfire::Skip);
    let keys = env.client.keys("skipped").expect("keys");
    let mut raw = env.raw().await;
    let day_ago = chrono::Utc::now().timestamp_millis() - 2 * 366 * 86_400_000;
    let _: () = redis::cmd("HSET")
        .arg(keys.cron())
        .arg("last:m-skip")
        .arg(day_ago)
        .query_async(&mut raw)
        .await
        .expect("hset");
    // A witness schedule on the same scheduler: once it ticked twice, the scheduler has been
    // through at least two rounds over every schedule, the skipping one included.
    let witness = Schedule::new(
        "skip-witness",
        "* * * * * *",
        NewJob::of::<report>(&"w".to_string())
            .expect("encode")
            .queue("skip-witness"),
    )
    .expect("schedule");
    let running = start(&env, &["cron.report"], |b| b.schedule(s).schedule(witness)).await;
    eventually(
        Duration::from_secs(20),
        "two ticks of the witness schedule",
        || async { pending(&env, "skip-witness").await >= 2 },
    )
    .await;
    running.stop().await;
    assert_eq!(pending(&env, "skipped").await, 0);
}

#[tokio::test]
async fn maintenance_trims_idle_queues_and_runs_registered_tasks() {
    let env = Env::start().await;
    // An idle queue holding 20 completed jobs, beyond a retention of 5.
    let client = env.client.clone();
    client
        .enqueue_batch(
            (0..20)
                .map(|i| NewJob::raw("x", vec![i]).queue("idle"))
                .collect(),
        )
        .await
        .expect("enqueue");
    let broker = queue::broker::Broker::new(client.clone(), "idle").expect("broker");
    let f = broker
        .fetch(20, Duration::from_secs(30))
        .await
        .expect("fetch");
    let done: Vec<queue::broker::Completion> = f
        .jobs
        .iter()
        .map(|l| queue::broker::Completion {
            lease: l.lease.clone(),
            result: vec![0xc0],
            name: String::new(),
            timing: Default::default(),
            unique_key: None,
        })
        .collect();
    broker
        .complete(&done, &Retention::default())
        .await
        .expect("complete");
    assert_eq!(client.counts("idle").await.expect("counts").completed, 20);

    // A user index pointing at a session that expired.
    let sessions = queue::session::Sessions::with_config(
        client.clone(),
        queue::session::SessionConfig {
            idle: Duration::from_millis(50),
            absolute: Duration::from_secs(60),
        },
    )
    .expect("sessions");
    sessions.create(Some("zoe"), []).await.expect("create");
    let raw = env.raw().await;
    let index = client.namespace_keys().expect("ns").user_sessions("zoe");
    let ran = std::sync::Arc::new(AtomicU32::new(0));
    let seen = ran.clone();
    let retention = Retention {
        completed_count: 5,
        ..Retention::default()
    };
    let running = start(&env, &["cron.report"], move |b| {
        b.retention(retention)
            .maintenance_cron("* * * * * *")
            .maintenance_task("count", move |_client| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            })
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "maintenance to trim and run the task",
        || async {
            client
                .counts("idle")
                .await
                .map(|c| c.completed == 5)
                .unwrap_or(false)
                && ran.load(Ordering::SeqCst) >= 1
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the expired session's index entry to be pruned",
        || {
            let mut raw = raw.clone();
            let index = index.clone();
            async move {
                redis::cmd("SCARD")
                    .arg(&index)
                    .query_async::<u64>(&mut raw)
                    .await
                    .unwrap_or(1)
                    == 0
            }
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn invalid_schedules_are_start_up_errors() {
    let env = Env::start().await;
    let job = NewJob::raw("x", vec![0xc0]);
    assert!(Schedule::new("bad", "every minute", job.clone()).is_err());
    assert!(Schedule::new("bad", "* * * * *", job.clone())
        .expect("valid")
        .tz("Mars/Olympus")
        .is_err());
    let s = Schedule::new("twice", "* * * * *", job.clone()).expect("valid");
    let err = WorkerBuilder::with_client(env.client.clone())
        .registry(common::registry(&["cron.report"]))
        .schedule(s.clone())
        .schedule(s)
        .build()
        .await
        .expect_err("dup");
    assert!(
        err.to_string()
            .contains("two schedules are named \"twice\""),
        "{err}"
    );
    let def: ScheduleDef = Schedule::new("d", "0 9 * * 1-5", job)
        .expect("valid")
        .tz("Europe/Paris")
        .expect("tz")
        .def();
    assert_eq!(
        (def.tz.as_str(), def.cron.as_str()),
        ("Europe/Paris", "0 9 * * 1-5")
    );
}

/// A tick is enqueued exactly as any job is: it emits the `enqueued` lifecycle event under the
/// tick's id, honours the producer's payload cap, and a schedule with a unique key is
/// deduplicated against a job already holding it.
#[tokio::test]
async fn a_tick_goes_through_the_enqueue_path() {
    use queue::events::Lifecycle;
    let env = Env::start().await;
    Lifecycle::new(env.client.clone())
        .set_enabled("reports", true)
        .await
        .expect("events on");
    let cron = Cron::new(env.client.clone());
    let schedule = Schedule::of::<report>("enqueue-path", "0 0 1 1 *", &"2026-01-01".to_string())
        .expect("schedule");
    let now = chrono::Utc::now();
    let tick = queue::cron::Tick {
        local: now.naive_utc(),
        at: now,
    };
    let fired = cron.fire(&schedule, &tick, true).await.expect("fire");
    let queue::cron::Fired::Fired(id) = fired else {
        panic!("the first fire of a tick fires: {fired:?}");
    };
    let events = Lifecycle::new(env.client.clone())
        .tail("reports", 10)
        .await
        .expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "enqueued" && e.ids.contains(&id.to_string())),
        "{events:?}"
    );
    assert_eq!(pending(&env, "reports").await, 1);

    // The payload cap of the scheduler's client applies to ticks too.
    let mut small = queue::ClientConfig::new(env.url());
    small.max_payload = 40;
    let small = queue::Client::connect_with(small).await.expect("connect");
    let big = Schedule::of::<report>("too-big", "0 0 1 1 *", &"x".repeat(200)).expect("schedule");
    let err = Cron::new(small)
        .fire(&big, &tick, true)
        .await
        .expect_err("over the cap");
    assert_eq!(err.kind(), queue::ErrorKind::PayloadTooLarge, "{err}");

    // A unique key held by a job makes the tick's job a duplicate (SET NX, as for enqueue).
    let holder = env
        .client
        .enqueue_job(
            NewJob::of::<report>(&"held".to_string())
                .expect("job")
                .unique("nightly", Duration::from_secs(600)),
        )
        .await
        .expect("holder");
    let unique = Schedule::new(
        "unique-tick",
        "0 0 1 1 *",
        NewJob::of::<report>(&"tick".to_string())
            .expect("job")
            .unique("nightly", Duration::from_secs(600)),
    )
    .expect("schedule");
    assert_eq!(
        cron.fire(&unique, &tick, true).await.expect("fire"),
        queue::cron::Fired::Deduplicated(holder.id.clone())
    );
    // Only the holder and the first tick's job wait: the unique tick created nothing.
    assert_eq!(pending(&env, "reports").await, 2, "holder {}", holder.id);
}

/// A schedule that never fired lists no last run (the instant recorded at its registration is
/// no run), and a paused one no next run; a fired tick is a last run.
#[tokio::test]
async fn the_listing_shows_only_runs_that_happened_and_no_next_run_while_paused() {
    let env = Env::start().await;
    let cron = Cron::new(env.client.clone());
    let yearly = Schedule::of::<report>("yearly", "0 0 1 1 *", &"y".to_string()).expect("schedule");
    cron.register(std::slice::from_ref(&yearly))
        .await
        .expect("register");
    let find = |list: Vec<queue::cron::ScheduleState>| {
        list.into_iter()
            .find(|s| s.def.name == "yearly")
            .expect("listed")
    };
    let listed = find(cron.list().await.expect("list"));
    assert_eq!(listed.last_ms, None, "never ran: {listed:?}");
    assert!(listed.next_ms.is_some());
    cron.set_paused("yearly", true).await.expect("pause");
    let paused = find(cron.list().await.expect("list"));
    assert!(paused.paused && paused.next_ms.is_none(), "{paused:?}");
    cron.set_paused("yearly", false).await.expect("resume");
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let tick = queue::cron::Tick {
        local: now.naive_utc(),
        at: now,
    };
    cron.fire(&yearly, &tick, false).await.expect("fire");
    let fired = find(cron.list().await.expect("list"));
    assert_eq!(fired.last_ms, Some(now.timestamp_millis()), "{fired:?}");
}
