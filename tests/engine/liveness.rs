//! Connection liveness (`beat.lua`): a worker whose liveness connection closes loses its
//! leases at the next pass of another worker once it is late for its beat, long before they
//! expire; a Redis restart, which drops every subscription at once, is not taken for deaths;
//! nor is a worker whose own subscription is down, one that beats on time, or one whose
//! lateness an outage explains.

use crate::common;

use std::time::{Duration, Instant};

use common::Env;
use queue::broker::{Alive, Beat, Broker, Presence, Watch};
use queue::{Client, JobType, NewJob};

struct Ping;
impl JobType for Ping {
    const NAME: &'static str = "test.ping";
    type Args = u32;
}

/// Far longer than any test here: a lease that is taken over was taken because its worker's
/// connection closed, never because it expired.
const LEASE: Duration = Duration::from_secs(60);

/// The suspect delay of `beat.lua`.
const SUSPECT: Duration = Duration::from_millis(250);

const WATCH: Watch = Watch {
    limit: 100,
    gap: Duration::from_secs(60),
};

/// A worker as the heartbeat drives it: a broker with its id, its liveness subscription and
/// session, the leases it holds, its horizon and when its next beat is due.
struct Member {
    broker: Broker,
    client: Client,
    alive: Option<Alive>,
    session: u64,
    held: Vec<String>,
    horizon: u64,
    due: Duration,
}

/// How late a test member's beat may be (the heartbeat's default is a beat and 250 ms).
const DUE: Duration = Duration::from_millis(100);

impl Member {
    async fn join(client: &Client, id: &str) -> Member {
        let broker = Broker::new(client.clone(), "default")
            .expect("broker")
            .with_receipt(id)
            .with_liveness();
        let mut m = Member {
            broker,
            client: client.clone(),
            alive: None,
            session: 0,
            held: Vec::new(),
            horizon: 0,
            due: DUE,
        };
        m.subscribe().await;
        let b = m.beat(None).await;
        assert!(b.present, "{id}: a fresh subscription is seen");
        m
    }

    async fn subscribe(&mut self) {
        self.session += 1;
        let channel = self.channel();
        self.alive = Some(
            Alive::subscribe(&self.client, &[channel])
                .await
                .expect("subscribe"),
        );
    }

    /// Drops the liveness connection and waits (bounded) until Redis has seen it close, as
    /// it does at once when a process dies.
    async fn disconnect(&mut self) {
        drop(self.alive.take());
        let channel = self.channel();
        let raw = redis::Client::open(self.client.config().url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        common::eventually(Duration::from_secs(5), "Redis to see the close", || {
            let channel = channel.clone();
            let mut raw = raw.clone();
            async move {
                let counts: Vec<redis::Value> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut raw)
                    .await
                    .expect("PUBSUB NUMSUB");
                counts.get(1) == Some(&redis::Value::Int(0))
            }
        })
        .await;
    }

    fn channel(&self) -> String {
        self.broker
            .alive_channel(self.session)
            .expect("a broker with an id has a channel")
    }

    /// A beat that believes the subscription of its current session holds.
    async fn beat(&mut self, watch: Option<Watch>) -> Beat {
        let channel = self.channel();
        self.beat_with(watch, Some(&channel)).await
    }

    async fn beat_with(&mut self, watch: Option<Watch>, channel: Option<&str>) -> Beat {
        let presence = Presence {
            channel,
            horizon: self.horizon,
            due: self.due,
        };
        let b = self
            .broker
            .beat_as(&self.held, LEASE, watch, Some(presence))
            .await
            .expect("beat");
        for l in &b.reclaimed.jobs {
            self.held.push(l.lease.key().to_string());
        }
        b
    }

    async fn fetch(&mut self, n: usize) -> usize {
        let f = self.broker.fetch(n, LEASE).await.expect("fetch");
        for l in &f.jobs {
            self.held.push(l.lease.key().to_string());
            self.horizon = self.horizon.max(l.lease.token);
        }
        f.jobs.len()
    }
}

/// The watchers' record names and the owners set's members.
async fn records(
    raw: &mut redis::aio::MultiplexedConnection,
    keys: &queue::wire::QueueKeys,
) -> (Vec<String>, Vec<String>) {
    let (watchers, owners): (Vec<String>, Vec<String>) = redis::pipe()
        .cmd("HKEYS")
        .arg(keys.watchers())
        .cmd("ZRANGE")
        .arg(keys.owners())
        .arg(0)
        .arg(-1)
        .query_async(raw)
        .await
        .expect("records");
    (watchers, owners)
}

async fn enqueue(client: &Client, n: u32) {
    let jobs = (0..n)
        .map(|i| NewJob::of::<Ping>(&i).expect("job"))
        .collect();
    client.enqueue_batch(jobs).await.expect("enqueue");
}

/// Passes of `watcher` until it takes something over (bounded); returns what it took and when.
async fn pass_until_taken(watcher: &mut Member, within: Duration) -> (usize, Instant) {
    let deadline = Instant::now() + within;
    loop {
        let b = watcher.beat(Some(WATCH)).await;
        if !b.reclaimed.jobs.is_empty() {
            return (b.reclaimed.jobs.len(), Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "nothing taken over within {within:?}"
        );
        // The pass says when a suspect is due for another look.
        let wait = b.next_expiry.unwrap_or(SUSPECT).min(SUSPECT);
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_worker_whose_connection_closes_loses_its_leases_at_the_next_pass() {
    let env = Env::start().await;
    let mut survivor = Member::join(&env.client, "survivor").await;
    let mut victim = Member::join(&env.client, "victim").await;
    enqueue(&env.client, 7).await;
    assert_eq!(victim.fetch(5).await, 5);
    assert_eq!(survivor.fetch(5).await, 2);
    // A beat after the fetch, as the heartbeat gives every second; the fetch alone recorded
    // the token too, so this is not what makes the leases findable.
    victim.beat(None).await;

    // While the victim's connection is open, a pass takes nothing.
    let b = survivor.beat(Some(WATCH)).await;
    assert!(b.reclaimed.jobs.is_empty());
    assert!(b.reclaimed.amnesty.is_none());

    // The victim's process dies: its liveness connection closes.
    let died = Instant::now();
    victim.disconnect().await;
    let (taken, at) = pass_until_taken(&mut survivor, Duration::from_secs(5)).await;
    assert_eq!(
        taken, 5,
        "exactly the victim's leases, not the survivor's own"
    );
    assert!(
        at - died >= SUSPECT,
        "an empty channel is a suspect first, for {SUSPECT:?}"
    );

    // The victim is forgotten: its record and tokens are gone.
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    let (watchers, owners) = records(&mut raw, &keys).await;
    assert_eq!(watchers, ["8:survivor:"]);
    assert!(
        owners.iter().all(|m| m.starts_with("8:survivor:")),
        "{owners:?}"
    );
}

/// A worker that joins after the victim learns from one pass that the victim is alive, and
/// can tell its death from then on, with no beat of the victim in between.
#[tokio::test]
async fn a_newcomer_vouches_for_the_workers_it_saw_alive() {
    let env = Env::start().await;
    let mut victim = Member::join(&env.client, "victim").await;
    enqueue(&env.client, 3).await;
    assert_eq!(victim.fetch(3).await, 3);
    victim.beat(None).await;
    let mut newcomer = Member::join(&env.client, "newcomer").await;
    let b = newcomer.beat(Some(WATCH)).await;
    assert!(b.reclaimed.jobs.is_empty());
    victim.disconnect().await;
    let (taken, _) = pass_until_taken(&mut newcomer, Duration::from_secs(5)).await;
    assert_eq!(taken, 3);
}

#[tokio::test]
async fn a_worker_whose_subscription_is_down_is_not_taken_for_dead() {
    let env = Env::start().await;
    let mut survivor = Member::join(&env.client, "survivor").await;
    let mut flaky = Member::join(&env.client, "flaky").await;
    enqueue(&env.client, 3).await;
    assert_eq!(flaky.fetch(3).await, 3);

    // Its subscriber connection breaks while the process lives; its next beat says so (the
    // heartbeat beats at once when the subscription ends), with no channel...
    flaky.disconnect().await;
    let b = flaky.beat_with(None, None).await;
    assert!(!b.present);
    for _ in 0..3 {
        let b = survivor.beat(Some(WATCH)).await;
        assert!(b.reclaimed.jobs.is_empty(), "taken from a live worker");
        tokio::time::sleep(SUSPECT).await;
    }
    // ... or with the channel it still believes in, which Redis no longer has: the beat tells
    // it to subscribe again, and withdraws it meanwhile.
    let b = flaky.beat(None).await;
    assert!(!b.present, "the beat reports the subscription missing");
    for _ in 0..3 {
        let b = survivor.beat(Some(WATCH)).await;
        assert!(b.reclaimed.jobs.is_empty(), "taken from a live worker");
        tokio::time::sleep(SUSPECT).await;
    }
    flaky.subscribe().await;
    assert!(flaky.beat(None).await.present);
    assert_eq!(flaky.beat(None).await.held, [true, true, true]);
}

#[tokio::test]
async fn a_watcher_whose_own_subscription_is_down_takes_nothing_by_connection() {
    let env = Env::start().await;
    let mut watcher = Member::join(&env.client, "watcher").await;
    let mut victim = Member::join(&env.client, "victim").await;
    enqueue(&env.client, 2).await;
    assert_eq!(victim.fetch(2).await, 2);
    victim.beat(None).await;
    // The watcher cannot vouch for the server's continuity without its own subscription.
    watcher.disconnect().await;
    victim.disconnect().await;
    for _ in 0..3 {
        let b = watcher.beat(Some(WATCH)).await;
        assert!(!b.present);
        assert!(b.reclaimed.jobs.is_empty());
        tokio::time::sleep(SUSPECT).await;
    }
    // Subscribed again (a new session), it sees the victim gone. The victim's record was
    // confirmed before the watcher's new session began, though: the watcher cannot tell its
    // channel emptied in this run of Redis, so it leaves the leases to expire.
    watcher.subscribe().await;
    for _ in 0..3 {
        let b = watcher.beat(Some(WATCH)).await;
        assert!(b.present);
        assert!(b.reclaimed.jobs.is_empty());
        tokio::time::sleep(SUSPECT).await;
    }
}

/// Redis restarts (kill -9, back from its append-only file in 200 ms, quicker than any watch
/// gap, so no amnesty covers it): every subscription is gone at once, and the first worker to
/// subscribe again must not take the others for dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_not_taken_for_deaths() {
    common::init_tracing();
    let mut server = common::aof_server();
    let client = Client::connect(&common::url_of(&server))
        .await
        .expect("connect");
    let mut first = Member::join(&client, "first").await;
    let mut other = Member::join(&client, "other").await;
    enqueue(&client, 4).await;
    assert_eq!(other.fetch(4).await, 4);
    other.beat(None).await;
    first.beat(Some(WATCH)).await;

    tokio::task::block_in_place(|| server.restart_after(Duration::from_millis(200)))
        .expect("restart");
    // Both subscriptions died with the server; `first` notices first and subscribes again.
    first.subscribe().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut passes = 0;
    while passes < 4 {
        match first
            .broker
            .beat_as(
                &first.held,
                LEASE,
                Some(WATCH),
                Some(Presence {
                    channel: Some(&first.channel()),
                    horizon: first.horizon,
                    due: first.due,
                }),
            )
            .await
        {
            Ok(b) => {
                assert!(b.reclaimed.jobs.is_empty(), "a restart taken for a death");
                passes += 1;
            }
            // The client reconnects on its own; until then, the beat fails.
            Err(_) => assert!(Instant::now() < deadline, "Redis did not come back"),
        }
        tokio::time::sleep(SUSPECT).await;
    }
    // `other` comes back: its jobs are still its own.
    other.subscribe().await;
    let b = other.beat(None).await;
    assert!(b.present);
    assert_eq!(b.held, [true; 4]);
}

#[tokio::test]
async fn a_worker_that_leaves_is_forgotten() {
    let env = Env::start().await;
    let mut w = Member::join(&env.client, "w").await;
    enqueue(&env.client, 1).await;
    assert_eq!(w.fetch(1).await, 1);
    w.beat(None).await;
    w.broker.leave().await.expect("leave");
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    for key in [keys.watchers(), keys.owners()] {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("exists");
        assert!(!exists, "{key} left behind");
    }
}

/// A worker whose liveness connection closed but whose beat is not late yet keeps its jobs:
/// the channel alone does not make it dead (a proxy may have reset that one connection).
#[tokio::test]
async fn an_empty_channel_takes_nothing_before_its_worker_is_late() {
    let env = Env::start().await;
    let mut survivor = Member::join(&env.client, "survivor").await;
    let mut victim = Member::join(&env.client, "victim").await;
    victim.due = Duration::from_secs(2);
    enqueue(&env.client, 2).await;
    assert_eq!(victim.fetch(2).await, 2);
    victim.beat(None).await;
    let beat = Instant::now();
    victim.disconnect().await;
    let (taken, at) = pass_until_taken(&mut survivor, Duration::from_secs(10)).await;
    assert_eq!(taken, 2);
    assert!(
        at - beat >= victim.due,
        "taken {:?} after the victim's beat, before it was due",
        at - beat
    );
}

/// A lateness that an outage explains (an amnesty: nobody reached Redis for longer than the
/// watch gap) is no sign of death: the leases are left to expire.
#[tokio::test]
async fn lateness_from_before_an_amnesty_takes_nothing() {
    let env = Env::start().await;
    let mut survivor = Member::join(&env.client, "survivor").await;
    let mut victim = Member::join(&env.client, "victim").await;
    enqueue(&env.client, 2).await;
    assert_eq!(victim.fetch(2).await, 2);
    victim.beat(None).await;
    victim.disconnect().await;
    // The victim's beat falls due during the outage...
    tokio::time::sleep(DUE * 2).await;
    // ... seeded: the last pass of anyone was 10 minutes ago (Redis was frozen, say).
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    redis::cmd("HSET")
        .arg(keys.meta())
        .arg("watched_at")
        .arg(common::now_ms() - 600_000)
        .query_async::<()>(&mut raw)
        .await
        .expect("seed");
    let b = survivor.beat(Some(WATCH)).await;
    assert!(
        b.reclaimed.amnesty.is_some(),
        "the seeded gap gives an amnesty"
    );
    for _ in 0..4 {
        let b = survivor.beat(Some(WATCH)).await;
        assert!(
            b.reclaimed.jobs.is_empty(),
            "taken for a death an outage explains"
        );
        tokio::time::sleep(SUSPECT).await;
    }
}

/// More than 1,000 leases take several calls per beat; every one of them is found when the
/// worker dies.
#[tokio::test]
async fn a_dead_worker_with_more_than_a_thousand_leases_loses_them_all() {
    let env = Env::start().await;
    let mut survivor = Member::join(&env.client, "survivor").await;
    let mut victim = Member::join(&env.client, "victim").await;
    for _ in 0..2 {
        enqueue(&env.client, 1000).await;
    }
    assert_eq!(victim.fetch(1000).await, 1000);
    assert_eq!(victim.fetch(1000).await, 1000);
    victim.beat(None).await;
    victim.disconnect().await;
    let mut taken = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken < 2000 {
        assert!(Instant::now() < deadline, "only {taken} of 2000 taken over");
        taken += pass_until_taken(&mut survivor, Duration::from_secs(5))
            .await
            .0;
    }
    assert_eq!(taken, 2000);
}

/// Any pass forgets a record long stale, even one that cannot see channels.
#[tokio::test]
async fn stale_records_are_forgotten_without_a_subscription() {
    let env = Env::start().await;
    let mut watcher = Member::join(&env.client, "watcher").await;
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    // A worker that died an hour ago, recorded with its tokens.
    redis::cmd("HSET")
        .arg(keys.watchers())
        .arg("4:gone:")
        .arg("1:1:1:1:0:some-channel")
        .query_async::<()>(&mut raw)
        .await
        .expect("seed");
    redis::cmd("ZADD")
        .arg(keys.owners())
        .arg(0)
        .arg("4:gone:0000000000000007")
        .query_async::<()>(&mut raw)
        .await
        .expect("seed");
    watcher.disconnect().await;
    let b = watcher.beat_with(Some(WATCH), None).await;
    assert!(!b.present);
    let (watchers, owners) = records(&mut raw, &keys).await;
    assert_eq!(watchers, ["7:watcher:"]);
    assert!(
        owners.iter().all(|m| !m.starts_with("4:gone:")),
        "{owners:?}"
    );
}

/// Maintenance drops the tokens of a worker that is neither live nor watching (it died before
/// its first beat): no pass would.
#[tokio::test]
async fn maintenance_drops_the_tokens_of_workers_nobody_watches() {
    let env = Env::start().await;
    let mut orphan = Member::join(&env.client, "orphan").await;
    enqueue(&env.client, 1).await;
    assert_eq!(orphan.fetch(1).await, 1);
    let keys = env.client.keys("default").expect("keys");
    let mut raw = env.raw().await;
    redis::cmd("HDEL")
        .arg(keys.watchers())
        .arg("6:orphan:")
        .query_async::<()>(&mut raw)
        .await
        .expect("unwatch");
    let admin = queue::admin::Admin::new(env.client.clone());
    let live = std::collections::HashSet::new();
    assert!(admin.prune_receipts("default", &live).await.expect("prune") >= 1);
    let owners: u64 = redis::cmd("ZCARD")
        .arg(keys.owners())
        .query_async(&mut raw)
        .await
        .expect("zcard");
    assert_eq!(owners, 0);
}
