//! The heartbeat: once per beat and queue, one script call (`Broker::beat_as`) extends this
//! worker's leases and takes over the leases of workers that are gone.
//!
//! It runs on its own OS thread, with its own single-threaded runtime and its own Redis
//! connections. A handler that blocks the worker's runtime (CPU-bound work without
//! `spawn_blocking`, a blocking client) delays its own job, but cannot silence the heartbeat:
//! with a 3 s lease and a beat every second, a beat may be 2 s late, and that margin must
//! not depend on what the handlers do. (A runtime that stops for good is another matter: see
//! `WEDGED`.) Jobs taken over from dead workers are handed to the worker's
//! runtime, which records their lost attempt.
//!
//! The same thread keeps the worker's liveness subscription (`Alive`): a connection that only
//! exists, subscribed to this worker's channel in each queue. When the process dies, the kernel
//! closes it, Redis drops the subscription, and the next beat of any other worker sees the
//! channel empty and takes the jobs over: recovery within about a beat, whatever the lease.
//! The lease stays the answer for a worker that stalls or loses its network, whose connection
//! Redis still sees open.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use queue_core::broker::{Alive, Broker, Leased, Presence, Watch};
use queue_core::Client;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::{jittered, Outage, Runtime};

/// How many expired leases one beat takes over.
const RECLAIM_BATCH: usize = 100;

/// The closest two passes may follow each other when fetches report expired leases.
const MIN_SPACING: Duration = Duration::from_millis(100);

/// A runtime that has not run its pulse task for this long is wedged (a deadlock, a loop that
/// never yields on every thread): the heartbeat stops extending this worker's leases, so other
/// workers recover the jobs, as if the process had died. Handlers that block for a while (the
/// reason the heartbeat has its own thread) come back well within it.
const WEDGED: Duration = Duration::from_secs(30);

/// The first pause before a failed beat is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(50);

/// How late a beat must be before its worker's lease counts as late: beyond scheduling noise.
const LATE: Duration = Duration::from_millis(100);

/// The longest pause between two tries of the liveness subscription.
const SUBSCRIBE_BACKOFF: Duration = Duration::from_millis(400);

/// The pause after Redis refused the subscription for want of permission (an ACL user without
/// `&` channel rules): the worker runs on without liveness by connection (its jobs are
/// recovered when its leases expire, should it die), and asks again now and then.
const SUBSCRIBE_REFUSED: Duration = Duration::from_secs(30);

/// How often the liveness connection sends a PING (it says nothing otherwise).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A job whose lease another worker lost, now held by this worker: queue index and lease.
pub(super) type Found = (usize, Leased);

/// Starts the heartbeat thread. It watches other workers' leases until `stopping`, and extends
/// this worker's own until `done`; `found` receives the jobs it takes over.
///
/// # Errors
///
/// The OS refused a thread.
pub(super) fn spawn(
    rt: Arc<Runtime>,
    stopping: watch::Receiver<bool>,
    done: watch::Receiver<bool>,
    found: mpsc::UnboundedSender<Found>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("queue-heartbeat".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "no runtime for the heartbeat; leases will expire and jobs run again elsewhere");
                    return;
                }
            };
            runtime.block_on(beat_loop(rt, stopping, done, found, ready));
        })
}

/// The watch gap: longer than a beat (a lone worker's next pass comes one beat later, maybe a
/// little late), shorter than the margin `lease - beat` (a Redis freeze or restart long enough
/// to make a live worker miss the beats that keep its lease must be noticed: a shorter one
/// cannot expire a live lease). A third of the margin past the beat: with the heartbeat at a
/// third of the lease, 1.67 beats against a margin of 2 (the builder keeps the beat at most
/// 40% of the lease, so the gap stays below the margin).
fn gap(rt: &Runtime) -> Duration {
    let (beat, lease) = (rt.config.heartbeat, rt.config.lease);
    beat + lease.saturating_sub(beat) / 3
}

async fn beat_loop(
    rt: Arc<Runtime>,
    stopping: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
    found: mpsc::UnboundedSender<Found>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut outage = Outage::default();
    // Its own connection, driven by this thread's runtime. A beat must fail well within the
    // margin (`lease - beat`) so that its retry still lands in time: the client's default
    // reply timeout (10 s) would outlast every lease.
    let margin = rt.config.lease.saturating_sub(rt.config.heartbeat);
    let mut config = rt.client.config().clone();
    config.response_timeout = config.response_timeout.min(margin / 2);
    config.connect_timeout = config.connect_timeout.min(margin / 2);
    let client = loop {
        match Client::connect_with(config.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                // Still going round: a Redis outage is no reason to restart the worker.
                rt.heartbeat_ticked();
                outage.failed("heartbeat connection", "", &e);
                tokio::select! {
                    _ = tokio::time::sleep(jittered(Duration::from_millis(500))) => {}
                    _ = done.changed() => return,
                }
            }
        }
    };
    let brokers: Vec<Broker> = match rt
        .queues
        .iter()
        .map(|q| {
            Ok(Broker::new(client.clone(), q.broker.queue())?
                .with_receipt(&rt.identity.id)
                .with_liveness()
                .with_recorder(q.broker.recorder().clone()))
        })
        .collect::<queue_core::Result<Vec<_>>>()
    {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "heartbeat cannot start");
            return;
        }
    };
    let watch = Watch {
        limit: RECLAIM_BATCH,
        gap: gap(&rt),
    };
    // The liveness subscription: its session number while it holds, None while it is down.
    let (session_tx, session) = watch::channel(None);
    let again = Arc::new(Notify::new());
    let channels: Vec<Broker> = brokers.clone();
    let alive = tokio::spawn(alive_loop(
        rt.clone(),
        client.clone(),
        channels,
        session_tx,
        again.clone(),
    ));
    // The first beat carries the subscription if it comes within half the margin (it may
    // not: the beats go on without it, and the lease covers this worker meanwhile): its pass
    // then vouches at once for the workers it sees alive, so it can tell their deaths.
    {
        let mut session = session.clone();
        let _ = tokio::time::timeout(margin / 2, session.wait_for(Option::is_some)).await;
    }
    // Sent after the first round of beats: the worker fetches (and shows in `queue workers`)
    // once its heartbeat watches.
    let mut ready = Some(ready);
    let mut wedged = false;
    let every = rt.config.heartbeat;
    // A lease expiring sooner than this from a beat belongs to a worker that missed its own
    // beat (it would have pushed the deadline a lease away): worth a pass when it expires,
    // rather than at the next beat.
    let late = rt.config.lease.saturating_sub(every).saturating_sub(LATE);
    // How late this worker's beat may be before, its liveness connection found closed, it is
    // taken for dead: a quarter of a beat, at least 250 ms (a live worker whose connections all
    // reset reconnects within 400 ms, and its retried beat lands within that too).
    let due_tolerance = (every / 4).max(Duration::from_millis(250));
    let mut next = Instant::now();
    let mut early: Option<Instant> = None;
    let mut last = Instant::now();
    // After a failed beat, the next try comes soon (50 ms, doubling up to a beat): a beat
    // missed to a short outage must land before the lease it extends runs out.
    let mut retry = RETRY_FIRST;
    loop {
        let at = early.map_or(next, |e| e.min(next));
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            // A fetch saw an expired lease: pass now (or as soon as the spacing allows).
            _ = rt.beat_now.notified() => {
                let soonest = last + MIN_SPACING;
                if Instant::now() < soonest {
                    early = Some(early.map_or(soonest, |e| e.min(soonest)));
                    continue;
                }
            }
            _ = done.changed() => break,
        }
        let now = Instant::now();
        rt.heartbeat_ticked();
        last = now;
        early = None;
        if now >= next {
            next = now + every;
        }
        // A worker shutting down keeps its own leases, and takes over no one else's; nor does
        // one whose runtime is not running (it could not run what it took over). One whose
        // runtime is wedged lets its own leases go.
        let stalled = rt.stalled_for();
        if stalled > WEDGED {
            if !wedged {
                tracing::error!(stalled = ?stalled, "the worker's runtime has not run for {WEDGED:?}: its leases are left to expire, and other workers recover its jobs");
                wedged = true;
            }
            next = now + every;
            continue;
        }
        wedged = false;
        let runtime_alive = stalled < every * 2;
        let watching = (!*stopping.borrow() && runtime_alive).then_some(watch);
        let mut failed = false;
        let sub = *session.borrow();
        for (qi, (q, broker)) in rt.queues.iter().zip(&brokers).enumerate() {
            // Going round, queue by queue: with many queues and a slow Redis a round can
            // outlast `/livez`'s bound, but no single call can (each fails within half the
            // margin).
            rt.heartbeat_ticked();
            // The horizon before the leases: a token at or below it has its leases in `held`.
            let horizon = q.horizon.load(Ordering::Relaxed);
            let held = q.held();
            let channel = sub.and_then(|n| broker.alive_channel(n));
            let presence = Presence {
                channel: channel.as_deref(),
                horizon,
                due: every + due_tolerance,
            };
            let beat = match broker
                .beat_as(&held, rt.config.lease, watching, Some(presence))
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    failed = true;
                    outage.failed("heartbeat", broker.queue(), &e);
                    continue;
                }
            };
            if let Some(d) = beat.next_expiry.filter(|d| *d < late) {
                let at = now + d + Duration::from_millis(10);
                if at < next && watching.is_some() {
                    early = Some(early.map_or(at, |e| e.min(at)));
                }
            }
            if channel.is_some() && !beat.present && *session.borrow() == sub {
                // Redis no longer has the subscription this worker believes it holds (a
                // restart it has not noticed yet, a connection half-closed): make a new one.
                again.notify_one();
            }
            if beat.recovered_waiting > 0 {
                q.recovered_hint.store(true, Ordering::Relaxed);
                // An idle fetch loop waits for a wake-up: this is one.
                rt.wake.notify_one();
            }
            for (key, ok) in held.iter().zip(beat.held) {
                if !ok && q.lost(key) {
                    tracing::warn!(lease = %key, "lease lost (the worker stalled past its lease); the job was recovered elsewhere");
                }
            }
            if let Some(a) = beat.reclaimed.amnesty.filter(|a| a.leases > 0) {
                tracing::warn!(
                    queue = broker.queue(),
                    unwatched = ?a.unwatched,
                    leases = a.leases,
                    "no worker reached Redis for longer than a beat (Redis frozen or restarting?): expired leases get one more lease instead of being recovered"
                );
            }
            for leased in beat.reclaimed.jobs {
                q.hold(&leased.lease);
                q.horizon.fetch_max(leased.lease.token, Ordering::Relaxed);
                rt.counters.recovered.fetch_add(1, Ordering::Relaxed);
                // Sent while the worker runs (the receiver lives until this thread ends); were it
                // gone, the lease would expire and another worker recover the job.
                let _ = found.send((qi, leased));
            }
        }
        // The metrics history, after the leases (it can wait; they cannot). What fails stays
        // counted for the next beat.
        if !failed {
            for broker in brokers.iter().filter(|b| !b.recorder().is_empty()) {
                rt.heartbeat_ticked();
                if let Err(e) = broker.flush_metrics().await {
                    tracing::debug!(queue = broker.queue(), error = %e, "metrics not sent; kept for the next beat");
                }
            }
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        if failed {
            let at = jittered(retry).min(every);
            early = Some(early.map_or(now + at, |e| e.min(now + at)));
            retry = (retry * 2).min(every);
        } else {
            retry = RETRY_FIRST;
            outage.ok("heartbeat");
        }
    }
    // Shutdown: this worker holds no lease any more. It leaves the watchers before its
    // subscription closes, so nobody looks for its jobs (there are none; it would be a wasted
    // scan). A leave that fails is harmless: the first pass that sees the channel empty finds
    // no lease of this worker and forgets it.
    // The last second of the metrics history: every attempt is settled by now.
    let flushes = futures_util::future::join_all(brokers.iter().map(|b| b.flush_metrics()));
    if let Ok(results) = tokio::time::timeout(margin, flushes).await {
        for e in results.into_iter().filter_map(|r| r.err()) {
            tracing::debug!(error = %e, "could not send the last metrics; the history misses them");
        }
    }
    let leaves = futures_util::future::join_all(brokers.iter().map(|b| b.leave()));
    let left = tokio::time::timeout(margin, leaves).await;
    if !left.is_ok_and(|all| all.iter().all(|r| r.is_ok())) {
        tracing::debug!("could not leave the watchers of every queue; the first pass that sees this worker gone forgets it");
    }
    alive.abort();
}

/// Keeps the liveness subscription: subscribes (under a new session number each time, so a
/// channel name is never subscribed twice), publishes the session to the beat loop, and starts
/// over when the connection closes or a beat finds the subscription gone. Each change asks for
/// a beat at once: a new subscription is confirmed, a lost one withdrawn (so that other workers
/// do not take this worker's jobs for a dead one's while it subscribes again).
async fn alive_loop(
    rt: Arc<Runtime>,
    client: Client,
    brokers: Vec<Broker>,
    session: watch::Sender<Option<u64>>,
    again: Arc<Notify>,
) {
    let mut outage = Outage::default();
    let mut n = 0u64;
    let mut pause = RETRY_FIRST;
    let mut refused = false;
    loop {
        n += 1;
        let channels: Vec<String> = brokers.iter().filter_map(|b| b.alive_channel(n)).collect();
        match Alive::subscribe(&client, &channels).await {
            Ok(mut alive) => {
                outage.ok("liveness subscription");
                if refused {
                    tracing::info!("the liveness subscription is allowed again");
                    refused = false;
                }
                pause = RETRY_FIRST;
                let _ = session.send(Some(n));
                rt.beat_now.notify_one();
                tokio::select! {
                    _ = alive.closed(KEEPALIVE) => {}
                    _ = again.notified() => {}
                }
                let _ = session.send(None);
                rt.beat_now.notify_one();
            }
            Err(e) if e.kind() == queue_core::ErrorKind::Permission => {
                if !refused {
                    tracing::warn!(error = %e, "Redis refuses this worker's liveness subscription (an ACL user needs `&<namespace>:*`): a dead worker's jobs are recovered when its leases expire instead of at once");
                    refused = true;
                }
                tokio::time::sleep(jittered(SUBSCRIBE_REFUSED)).await;
            }
            Err(e) => {
                outage.failed("liveness subscription", "", &e);
                tokio::time::sleep(jittered(pause)).await;
                pause = (pause * 2).min(SUBSCRIBE_BACKOFF);
            }
        }
    }
}
