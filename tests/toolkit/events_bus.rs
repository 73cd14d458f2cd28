//! The event bus and lifecycle events against a real Redis, including a Redis restart.

use crate::common;

use std::time::Duration;

use common::{bounded, Env};
use futures_util::StreamExt;
use queue::events::gaps;
use queue::events::EventBus;
use queue::events::Gap;
use queue::events::Lifecycle;
use queue::events::LifecycleEvent;
use queue::{job, Client, JobError, JobState, NewJob};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderCreated {
    id: u64,
    total_cents: u64,
}

#[tokio::test]
async fn typed_events_reach_matching_subscribers_only() {
    let env = Env::start().await;
    let bus = EventBus::new(env.client.clone());
    let mut orders = bus
        .subscribe::<OrderCreated>("orders.*")
        .await
        .expect("subscribe");
    let mut other = bus
        .subscribe::<OrderCreated>("invoices.*")
        .await
        .expect("subscribe");
    let receivers = bus
        .publish(
            "orders.created",
            &OrderCreated {
                id: 7,
                total_cents: 4200,
            },
        )
        .await
        .expect("publish");
    assert_eq!(receivers, 1);
    let ev = bounded(Duration::from_secs(5), "the event", orders.next())
        .await
        .expect("open")
        .expect("decodes");
    assert_eq!(ev.channel, "orders.created");
    assert_eq!(
        ev.payload,
        OrderCreated {
            id: 7,
            total_cents: 4200
        }
    );
    assert!(ev.at_ms > 0);
    // Not for invoices.*: the first event that subscriber sees is one published after, on its
    // own pattern (events reach a subscriber in publish order), so no waiting for an absence.
    bus.publish(
        "invoices.created",
        &OrderCreated {
            id: 8,
            total_cents: 1,
        },
    )
    .await
    .expect("publish");
    let first = bounded(Duration::from_secs(5), "the invoice event", other.next())
        .await
        .expect("open")
        .expect("decodes");
    assert_eq!(
        (first.channel.as_str(), first.payload.id),
        ("invoices.created", 8),
        "not for invoices.*"
    );
    // A payload of another shape is an error item, not a crash.
    bus.publish("orders.weird", &"just a string")
        .await
        .expect("publish");
    let bad = bounded(Duration::from_secs(5), "the bad event", orders.next())
        .await
        .expect("open");
    assert!(matches!(bad, Err(queue::Error::Decode { .. })));
}

#[tokio::test]
async fn subscribers_and_clients_recover_from_a_redis_restart() {
    let mut env = Env::start().await;
    let bus = EventBus::new(env.client.clone());
    let mut sub = bus.subscribe::<u32>("ping").await.expect("subscribe");
    env.server.restart().expect("restart redis");
    // The publisher's connection also broke: the first calls may fail while it reconnects.
    let got = bounded(
        Duration::from_secs(20),
        "an event after the restart",
        async {
            let mut n = 0u32;
            loop {
                n += 1;
                let _ = bus.publish("ping", &n).await;
                if let Ok(Some(Ok(ev))) =
                    tokio::time::timeout(Duration::from_millis(100), sub.next()).await
                {
                    return ev.payload;
                }
            }
        },
    )
    .await;
    assert!(got >= 1);
}

#[job(name = "ev.ok", queue = "ev")]
async fn ok_job(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[job(
    name = "ev.bad",
    queue = "ev",
    max_attempts = 2,
    backoff_fixed = "10ms"
)]
async fn bad_job(_n: u32) -> Result<(), JobError> {
    Err(JobError::retry("no luck"))
}

async fn run_worker(client: &Client, until: impl std::future::Future<Output = ()>) {
    let worker = common::start_worker(client, &["ev.ok", "ev.bad"], |b| b.queue("ev", 1)).await;
    until.await;
    worker.stop().await;
}

#[tokio::test]
async fn lifecycle_events_are_logged_in_order_and_published_live() {
    let env = Env::start().await;
    let life = Lifecycle::new(env.client.clone());
    life.set_enabled("ev", true).await.expect("enable");
    let mut live = life.subscribe("ev").await.expect("subscribe");

    let ok = env
        .client
        .enqueue_job(
            NewJob::of::<ok_job>(&1)
                .expect("encode")
                .unique("u1", Duration::from_secs(60)),
        )
        .await
        .expect("enqueue");
    let dup = env
        .client
        .enqueue_job(
            NewJob::of::<ok_job>(&1)
                .expect("encode")
                .unique("u1", Duration::from_secs(60)),
        )
        .await
        .expect("enqueue");
    assert!(dup.duplicate);
    let bad = env.client.enqueue::<bad_job>(&2).await.expect("enqueue");
    let client = env.client.clone();
    run_worker(&env.client, async {
        client
            .wait_for("ev", &ok.id, Duration::from_secs(20))
            .await
            .expect("ok outcome");
        let o = client
            .wait_for("ev", &bad.id, Duration::from_secs(20))
            .await
            .expect("bad outcome");
        assert_eq!(o.state, JobState::Dead);
    })
    .await;

    let log = life.read("ev", None, 1000).await.expect("read");
    assert!(gaps(None, &log).is_empty(), "sequence numbers are gapless");
    assert_eq!(log.first().map(|e| e.seq), Some(1));
    let kinds_of = |id: &str| -> Vec<String> {
        log.iter()
            .filter(|e| e.ids.iter().any(|i| i == id))
            .map(|e| e.kind.clone())
            .collect()
    };
    assert_eq!(
        kinds_of(ok.id.as_str()),
        ["enqueued", "deduplicated", "started", "completed"]
    );
    assert_eq!(
        kinds_of(bad.id.as_str()),
        ["enqueued", "started", "failed", "retrying", "started", "failed", "dead"]
    );
    let dead = log.iter().find(|e| e.kind == "dead").expect("dead event");
    assert_eq!(dead.error.as_deref(), Some("error: no luck"));

    // The same events arrived live over pub/sub.
    let mut seen: Vec<LifecycleEvent> = Vec::new();
    while seen.len() < log.len() {
        let ev = bounded(Duration::from_secs(5), "live events", live.next())
            .await
            .expect("open")
            .expect("decodes");
        seen.push(ev);
    }
    assert_eq!(
        seen.iter().map(|e| e.seq).collect::<Vec<_>>(),
        log.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_consumer_that_was_away_catches_up_and_sees_its_gap() {
    let env = Env::start().await;
    let life = Lifecycle::new(env.client.clone());
    life.set_enabled("ev", true).await.expect("enable");
    for i in 0..2u32 {
        env.client.enqueue::<ok_job>(&i).await.expect("enqueue");
    }
    let first = life.read("ev", None, 100).await.expect("read");
    let last_seen = first.last().cloned().expect("two events");
    assert_eq!(last_seen.seq, 2);
    // While the consumer is away, 10 more events, and the stream is trimmed to its last 3.
    for i in 0..10u32 {
        env.client.enqueue::<ok_job>(&i).await.expect("enqueue");
    }
    let mut raw = env.raw().await;
    let keys = env.client.keys("ev").expect("keys");
    let _: i64 = redis::cmd("XTRIM")
        .arg(keys.events())
        .arg("MAXLEN")
        .arg(3)
        .query_async(&mut raw)
        .await
        .expect("xtrim");
    let caught_up = life
        .read("ev", Some(&last_seen.entry), 100)
        .await
        .expect("read");
    assert_eq!(
        caught_up.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    assert_eq!(
        gaps(Some(last_seen.seq), &caught_up),
        vec![Gap { from: 3, to: 9 }]
    );

    // Following: a blocked read returns as soon as something happens.
    let tail = caught_up.last().expect("entry").entry.clone();
    let client = env.client.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.enqueue::<ok_job>(&99).await.expect("enqueue");
    });
    let next = life
        .follow("ev", &tail, Duration::from_secs(10))
        .await
        .expect("follow");
    later.await.expect("join");
    assert_eq!(
        next.iter()
            .map(|e| (e.kind.as_str(), e.seq))
            .collect::<Vec<_>>(),
        vec![("enqueued", 13)]
    );
}

#[tokio::test]
async fn lifecycle_events_are_off_by_default() {
    let env = Env::start().await;
    env.client.enqueue::<ok_job>(&1).await.expect("enqueue");
    let life = Lifecycle::new(env.client.clone());
    assert!(life.read("ev", None, 10).await.expect("read").is_empty());
}

#[tokio::test]
async fn a_worker_keeps_working_across_a_redis_restart() {
    let mut env = Env::start().await;
    let client = env.client.clone();
    let worker = common::start_worker(&client, &["ev.ok"], |b| b.queue("ev", 1)).await;
    let first = client.enqueue::<ok_job>(&1).await.expect("enqueue");
    client
        .wait_for("ev", &first.id, Duration::from_secs(20))
        .await
        .expect("before restart");
    env.server.restart().expect("restart");
    // Redis came back empty (no persistence): enqueue again once the client has reconnected.
    let again = bounded(
        Duration::from_secs(20),
        "an enqueue after the restart",
        async {
            loop {
                match client.enqueue::<ok_job>(&2).await {
                    Ok(e) => return e,
                    Err(e) => {
                        assert!(e.is_retryable(), "{e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        },
    )
    .await;
    let outcome = client
        .wait_for("ev", &again.id, Duration::from_secs(20))
        .await
        .expect("the job after the restart");
    assert_eq!(
        outcome.state,
        JobState::Completed,
        "the worker ran it after the restart"
    );
    let report = worker.stop().await;
    assert_eq!(report.completed, 2);
}
