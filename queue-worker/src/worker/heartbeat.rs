//! The heartbeat: once per beat and queue, one script call (`Broker::beat`) extends this
//! worker's leases and takes over the expired leases of any worker.
//!
//! It runs on its own OS thread, with its own single-threaded runtime and its own Redis
//! connection. A handler that blocks the worker's runtime (CPU-bound work without
//! `spawn_blocking`, a blocking client) delays its own job, but cannot silence the heartbeat:
//! with a 1.5 s lease and a beat every 750 ms, a beat may be 750 ms late, and that margin must
//! not depend on what the handlers do. Jobs taken over from dead workers are handed to the worker's
//! runtime, which records their lost attempt.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use queue_core::broker::{Broker, Leased, Watch};
use queue_core::Client;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{jittered, Outage, Runtime};

/// How many expired leases one beat takes over.
const RECLAIM_BATCH: usize = 100;

/// The closest two passes may follow each other when fetches report expired leases.
const MIN_SPACING: Duration = Duration::from_millis(100);

/// The first pause before a failed beat is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(50);

/// How late a beat must be before its worker's lease counts as late: beyond scheduling noise.
const LATE: Duration = Duration::from_millis(100);

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
            runtime.block_on(beat_loop(rt, stopping, done, found));
        })
}

/// The watch gap: longer than a beat (a lone worker's next pass comes one beat later, maybe a
/// little late), shorter than a lease (a Redis freeze long enough to expire live leases must
/// be noticed): halfway between.
fn gap(rt: &Runtime) -> Duration {
    let (beat, lease) = (rt.config.heartbeat, rt.config.lease);
    beat + lease.saturating_sub(beat) / 2
}

async fn beat_loop(
    rt: Arc<Runtime>,
    stopping: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
    found: mpsc::UnboundedSender<Found>,
) {
    let mut outage = Outage::default();
    // Its own connection, driven by this thread's runtime.
    let client = loop {
        match Client::connect_with(rt.client.config().clone()).await {
            Ok(c) => break c,
            Err(e) => {
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
        .map(|q| Broker::new(client.clone(), q.broker.queue()))
        .collect()
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
    let every = rt.config.heartbeat;
    // A lease expiring sooner than this from a beat belongs to a worker that missed its own
    // beat (it would have pushed the deadline a lease away): worth a pass when it expires,
    // rather than at the next beat.
    let late = rt.config.lease.saturating_sub(every).saturating_sub(LATE);
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
            _ = done.changed() => return,
        }
        let now = Instant::now();
        last = now;
        early = None;
        if now >= next {
            next = now + every;
        }
        // A worker shutting down keeps its own leases, and takes over no one else's.
        let watching = (!*stopping.borrow()).then_some(watch);
        let mut failed = false;
        for (qi, (q, broker)) in rt.queues.iter().zip(&brokers).enumerate() {
            let held = q.held();
            if held.is_empty() && watching.is_none() {
                continue;
            }
            let beat = match broker.beat(&held, rt.config.lease, watching).await {
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
            if beat.recovered_waiting > 0 {
                q.recovered_hint.store(true, Ordering::Relaxed);
            }
            for (key, ok) in held.iter().zip(beat.held) {
                if !ok && q.lost(key) {
                    tracing::warn!(lease = %key, "lease lost (the worker stalled past its lease); the job was recovered elsewhere");
                }
            }
            if let Some(a) = beat.reclaimed.amnesty {
                tracing::warn!(
                    queue = broker.queue(),
                    unwatched = ?a.unwatched,
                    leases = a.leases,
                    "no worker reached Redis for longer than a beat (Redis frozen or restarting?): expired leases get one more lease instead of being recovered"
                );
            }
            for leased in beat.reclaimed.jobs {
                q.hold(&leased.lease);
                rt.counters.recovered.fetch_add(1, Ordering::Relaxed);
                // Sent while the worker runs (the receiver lives until this thread ends); were it
                // gone, the lease would expire and another worker recover the job.
                let _ = found.send((qi, leased));
            }
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
}
