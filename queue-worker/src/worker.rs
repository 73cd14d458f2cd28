//! The worker: fetches leased jobs, runs them through the middleware chain with bounded
//! concurrency, settles them in batches, heartbeats its leases and recovers other workers' lost
//! ones.
//!
//! Tasks of a running worker:
//! - the fetch loop (this task): waits for a free slot, leases as many jobs as there are free
//!   slots in one script call, spawns them; when the queues are empty it sleeps until woken;
//! - the waker: blocks on the queues' wake lists (BLPOP, own connection) and wakes the fetch loop;
//! - the acker: records completions in batches (one script call for all that finished meanwhile);
//! - the heartbeat (`heartbeat.rs`, its own thread): extends the leases of running jobs and
//!   takes over expired leases of dead workers, one script call per queue and beat;
//! - the recoverer: records the lost attempt of each job the heartbeat took over;
//! - the record: this worker's entry for `queue workers`, and the middlewares' flushed figures.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::admin::{Admin, WorkerInfo};
use queue_core::broker::{
    Broker, Cause, Completion, FetchPolicy, Lease, Leased, Settle, Timing, Waker,
};
use queue_core::wire::{Job, MAX_BATCH};
use queue_core::{Action, Client, JobContext, JobId};
use rand::Rng;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::builder::{QueueOrder, WorkerConfig};
use crate::error::Result;
use crate::middleware::{Middleware, Next, Request};
use crate::registry::Registry;

mod heartbeat;
#[cfg(feature = "http")]
mod http;

/// How often a busy worker's fetches look for expired leases.
const EXPIRY_LOOK: Duration = Duration::from_millis(200);

/// How long the waker's BLPOP blocks before it is sent again: an idle worker's only steady
/// command besides its heartbeat. Stopping does not wait for it (the call is dropped).
const WAKER_BLOCK: Duration = Duration::from_secs(5);

/// How often this worker's record (`queue workers`) is refreshed and the middlewares flush.
const RECORD_EVERY: Duration = Duration::from_secs(10);

/// A configured worker, ready to [`run`](Worker::run).
pub struct Worker {
    rt: Arc<Runtime>,
    scheduler: Option<crate::scheduler::Scheduler>,
    /// The bound address of `WorkerBuilder::serve_http`.
    http: Option<std::net::TcpListener>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.rt.config)
            .finish_non_exhaustive()
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Attempts that succeeded and were recorded.
    pub completed: u64,
    /// Attempts that failed (retried, dead-lettered or discarded).
    pub failed: u64,
    /// Jobs moved to the dead-letter set by this worker.
    pub dead: u64,
    /// Expired leases of other workers this worker recovered.
    pub recovered: u64,
    /// Jobs handed back to the queue at shutdown.
    pub requeued: u64,
    /// Results rejected because the lease had been lost (another worker re-ran the job).
    pub lease_lost: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    recovered: AtomicU64,
    requeued: AtomicU64,
    lease_lost: AtomicU64,
}

struct QueueState {
    broker: Broker,
    weight: u32,
    /// The configured queue this one serves: itself, or the queue it is a shard of (the
    /// shards of one queue and the queue form a group, weighted once).
    group: usize,
    /// Leases (`id:token`) this worker holds in this queue, and whether each is being settled
    /// (its complete/fail call is under way). The heartbeat extends them all; a lease found
    /// gone while still running was lost, while one being settled was simply settled. Shutdown
    /// hands back what is left.
    inflight: Mutex<HashMap<String, bool>>,
    /// Recovered jobs may wait here: set by the heartbeat (it counts them), by this worker's
    /// recoverer and by wake-ups; cleared by a fetch that asked for one and got none. Asking
    /// costs a command per fetch, so a busy worker asks only when told.
    recovered_hint: AtomicBool,
    /// The highest lease token whose jobs this worker holds or has held (raised after they are
    /// in `inflight`): the heartbeat's horizon (`Presence::horizon`).
    horizon: AtomicU64,
}

impl QueueState {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        // A poisoned lock means a panic elsewhere mid-update of a plain map; the map is still
        // usable, and losing the heartbeat would be worse.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn hold(&self, lease: &Lease) {
        self.leases().insert(lease.key().to_string(), false);
    }
    fn settling(&self, key: &str) {
        if let Some(s) = self.leases().get_mut(key) {
            *s = true;
        }
    }
    fn release(&self, key: &str) {
        self.leases().remove(key);
    }
    /// Forgets a lease the heartbeat found gone; true if it was still running (really lost).
    fn lost(&self, key: &str) -> bool {
        let mut leases = self.leases();
        if leases.get(key) == Some(&false) {
            leases.remove(key);
            return true;
        }
        false
    }
    fn held(&self) -> Vec<String> {
        self.leases().keys().cloned().collect()
    }
}

struct Runtime {
    client: Client,
    /// This worker's heartbeat record (`queue workers` reads it).
    identity: WorkerInfo,
    config: WorkerConfig,
    registry: Registry,
    chain: Vec<Arc<dyn Middleware>>,
    queues: Vec<QueueState>,
    slots: Arc<Semaphore>,
    wake: Notify,
    /// Asks the heartbeat for a pass now: a fetch saw an expired lease.
    beat_now: Notify,
    /// When the worker's runtime last ran a task (ms since `started`): the heartbeat's view of
    /// whether this process can still run the jobs it would take over.
    pulse: std::sync::atomic::AtomicU64,
    /// When the heartbeat thread last went round its loop (ms since `started`), for `/livez`.
    heartbeat_tick: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    counters: Counters,
    /// The recovered job this process runs, if any (queue index, lease key): a job taken back
    /// from a lost worker may be what killed it, so a process runs at most one at a time, and
    /// if it dies again the culprit is among the jobs charged, while the other recovered jobs
    /// are safe elsewhere.
    suspect: Mutex<Option<(usize, String)>>,
}

impl Runtime {
    /// How many recovered jobs the next fetch from queue `qi` may lease: one when this process
    /// runs none (the one it ran is settled once its lease is released).
    fn suspects_allowed(&self) -> usize {
        let mut suspect = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((qi, key)) = suspect.as_ref() {
            if self.queues[*qi].leases().contains_key(key) {
                return 0;
            }
            *suspect = None;
        }
        1
    }

    fn suspect(&self, qi: usize, lease: &Lease) {
        *self.suspect.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((qi, lease.key().to_string()));
    }
}

struct Ack {
    queue: usize,
    completion: Completion,
}

impl Worker {
    /// A worker serving `served`: (queue or shard, weight, index of its configured queue).
    pub(crate) fn new(
        client: Client,
        config: WorkerConfig,
        served: Vec<(String, u32, usize)>,
        registry: Registry,
        user: Vec<Arc<dyn Middleware>>,
        scheduler: Option<crate::scheduler::Scheduler>,
    ) -> Result<Worker> {
        let mut chain = crate::middleware::builtins(&client, &registry)?;
        chain.extend(user);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let pid = std::process::id();
        let suffix = JobId::generate().as_str()[20..].to_lowercase();
        let identity = WorkerInfo {
            id: format!("{host}:{pid}:{suffix}"),
            host,
            pid,
            queues: config
                .queues
                .iter()
                .map(|(q, w)| format!("{q}:{w}"))
                .collect::<Vec<_>>()
                .join(","),
            concurrency: config.concurrency as u64,
            in_flight: 0,
            started_ms: chrono_now_ms(),
            last_beat_ms: 0,
            beat_every_ms: RECORD_EVERY.as_millis() as i64,
        };
        let queues = served
            .iter()
            .map(|(q, w, group)| {
                Ok(QueueState {
                    group: *group,
                    // Every fetch leaves a receipt, so a batch whose reply is lost with the
                    // connection is redeemed, not left to expire as lost attempts.
                    broker: Broker::new(client.clone(), q)?
                        .with_receipt(&identity.id)
                        .with_liveness(),
                    weight: *w,
                    inflight: Mutex::new(HashMap::new()),
                    recovered_hint: AtomicBool::new(true),
                    horizon: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        Ok(Worker {
            scheduler,
            http: None,
            rt: Arc::new(Runtime {
                client,
                identity,
                config,
                registry,
                chain,
                queues,
                slots,
                wake: Notify::new(),
                beat_now: Notify::new(),
                pulse: AtomicU64::new(0),
                heartbeat_tick: AtomicU64::new(0),
                started: std::time::Instant::now(),
                counters: Counters::default(),
                suspect: Mutex::new(None),
            }),
        })
    }

    /// Serves `/livez`, `/readyz` and `/metrics` on `listener` while the worker runs.
    pub(crate) fn with_http(mut self, listener: std::net::TcpListener) -> Worker {
        self.http = Some(listener);
        self
    }

    /// The address `/metrics`, `/livez` and `/readyz` are served on
    /// ([`WorkerBuilder::serve_http`](crate::WorkerBuilder::serve_http)), port 0 resolved.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The client this worker uses (to enqueue from the same process).
    pub fn client(&self) -> &Client {
        &self.rt.client
    }

    /// The configuration in force.
    pub fn config(&self) -> &WorkerConfig {
        &self.rt.config
    }

    /// Job names this worker can run.
    pub fn job_names(&self) -> Vec<&'static str> {
        self.rt.registry.names()
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// Only if the signal handlers cannot be installed; Redis errors while running are logged
    /// and retried, never fatal.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future skips the graceful hand-back (leases then expire and
    /// the jobs are recovered by other workers, counted as an attempt).
    pub async fn run_until_signal(self) -> Result<Report> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).map_err(|e| {
                crate::Error::Config(format!("cannot install SIGTERM handler: {e}"))
            })?;
            let mut int = signal(SignalKind::interrupt())
                .map_err(|e| crate::Error::Config(format!("cannot install SIGINT handler: {e}")))?;
            self.run(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
            })
            .await
        }
        #[cfg(not(unix))]
        {
            self.run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
    }

    /// Runs until `shutdown` completes, then stops fetching, lets running jobs finish within
    /// the grace period, hands unfinished ones back to their queue and returns what it did.
    ///
    /// # Errors
    ///
    /// None in practice; Redis errors while running are logged and retried.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Worker::run_until_signal`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Report> {
        let rt = self.rt;
        let scheduler = self.scheduler;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (final_tx, final_rx) = watch::channel(false);
        #[cfg(feature = "http")]
        let http = self.http.map(|l| {
            tokio::spawn(http::serve(
                rt.clone(),
                l,
                stop_rx.clone(),
                final_rx.clone(),
            ))
        });
        #[cfg(not(feature = "http"))]
        let _ = self.http;
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        // The heartbeat outlives the fetch loop: jobs finishing during the grace period still
        // need their leases. It starts first (nothing else is running yet if it cannot).
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let heartbeat = heartbeat::spawn(
            rt.clone(),
            stop_rx.clone(),
            final_rx.clone(),
            found_tx,
            ready_tx,
        )
        .map_err(|e| crate::Error::Config(format!("cannot start the heartbeat thread: {e}")))?;
        let stopper = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let waker = tokio::spawn(waker_loop(rt.clone(), stop_rx.clone()));
        // The runtime's pulse: the heartbeat stops watching other workers' leases when it stops
        // (their jobs would be taken over by a process that cannot run them).
        let pulse = tokio::spawn(pulse_loop(rt.clone(), final_rx.clone()));
        let recoverer = tokio::spawn(recover_loop(rt.clone(), found_rx));
        let acker = tokio::spawn(ack_loop(rt.clone(), ack_rx));
        let scheduler = scheduler.map(|s| tokio::spawn(s.run(stop_rx.clone())));
        tracing::info!(
            queues = ?rt.config.queues,
            concurrency = rt.config.concurrency,
            jobs = ?rt.registry.names(),
            "worker started"
        );

        let queue_names: Vec<String> = rt.config.queues.iter().map(|(q, _)| q.clone()).collect();
        if let Err(e) = rt.client.register_queues(&queue_names).await {
            tracing::warn!(error = %e, "could not register the queues (operators will not list them)");
        }
        // Leases are fetched once the heartbeat can keep them (bounded: a heartbeat that cannot
        // connect keeps trying, and the leases then expire and are recovered, as after a crash).
        if tokio::time::timeout(rt.config.lease * 3, ready_rx)
            .await
            .is_err()
        {
            tracing::warn!("the heartbeat has no connection yet; fetching anyway");
        }
        // The record (`queue workers`) once the heartbeat watches: a worker listed there can
        // tell the deaths of the others.
        let record = tokio::spawn(record_loop(rt.clone(), final_rx));
        let mut tasks = JoinSet::new();
        fetch_loop(&rt, &mut tasks, ack_tx, stop_rx).await;

        // Graceful shutdown: running jobs get the grace period.
        let deadline = tokio::time::Instant::now() + rt.config.grace;
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let unfinished = tasks.len();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // All senders are gone with the tasks: the acker drains what is left and stops.
        let _ = acker.await;
        // What is still held was aborted (or its result could not be recorded): hand it back.
        for q in &rt.queues {
            let held = q.held();
            if held.is_empty() {
                continue;
            }
            match q.broker.requeue(&held).await {
                Ok(n) => {
                    rt.counters.requeued.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(queue = q.broker.queue(), error = %e, "could not hand jobs back; they return when their lease expires")
                }
            }
        }
        let _ = final_tx.send(true);
        let _ = tokio::task::spawn_blocking(move || heartbeat.join()).await;
        let _ = recoverer.await;
        let _ = record.await;
        let _ = pulse.await;
        // Metrics counted since the last heartbeat are not lost at shutdown: the recoverer may
        // have settled jobs after the heartbeat's last round.
        // Each bounded: a Redis that went away does not hold the shutdown.
        let flushes = async {
            for m in &rt.chain {
                m.flush().await;
            }
            for q in &rt.queues {
                if let Err(e) = q.broker.flush_metrics().await {
                    tracing::debug!(queue = q.broker.queue(), error = %e, "could not send the last metrics; the history misses them");
                }
            }
        };
        if tokio::time::timeout(LAST_STEP, flushes).await.is_err() {
            tracing::debug!(
                "the last metrics were not sent within {LAST_STEP:?}; the history misses them"
            );
        }
        // Graceful, but a scraper holding its connection open does not hold the shutdown.
        #[cfg(feature = "http")]
        if let Some(mut h) = http {
            if tokio::time::timeout(LAST_STEP, &mut h).await.is_err() {
                h.abort();
            }
        }
        for q in &rt.queues {
            let _ = q.broker.drop_receipt().await;
        }
        if let Err(e) = Admin::new(rt.client.clone()).retire(&rt.identity.id).await {
            tracing::warn!(error = %e, "could not remove this worker's heartbeat record; it ages out");
        }
        let _ = waker.await;
        if let Some(s) = scheduler {
            let _ = s.await;
        }
        stopper.abort();
        let c = &rt.counters;
        let report = Report {
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            requeued: c.requeued.load(Ordering::Relaxed),
            lease_lost: c.lease_lost.load(Ordering::Relaxed),
        };
        tracing::info!(?report, unfinished, "worker stopped");
        Ok(report)
    }
}

/// The order in which to try the queues for one fetch: the configured queues in their order
/// (strict, or a weighted random permutation), and within a split queue its shards starting
/// from the one after the last fetch's first (`turn`), so no shard waits behind another.
fn queue_order(rt: &Runtime, turn: usize) -> Vec<usize> {
    let groups = rt.queues.iter().map(|q| q.group).max().map_or(0, |g| g + 1);
    let mut order: Vec<usize> = (0..groups).collect();
    if rt.config.order == QueueOrder::Weighted && groups > 1 {
        // Weighted random permutation: repeatedly draw the next queue in proportion to weight.
        let weight = |g: usize| {
            rt.queues
                .iter()
                .find(|q| q.group == g)
                .map_or(0, |q| u64::from(q.weight))
        };
        let mut rng = rand::rng();
        let mut out = Vec::with_capacity(groups);
        while !order.is_empty() {
            let total: u64 = order.iter().map(|&g| weight(g)).sum();
            let mut pick = rng.random_range(0..total.max(1));
            let mut chosen = 0;
            for (pos, &g) in order.iter().enumerate() {
                let w = weight(g);
                if pick < w {
                    chosen = pos;
                    break;
                }
                pick -= w;
            }
            out.push(order.remove(chosen));
        }
        order = out;
    }
    let mut idx = Vec::with_capacity(rt.queues.len());
    for g in order {
        // A split queue's parts: the queue itself first, then its shards. The shards take
        // turns. The queue itself holds what it had before the split, cron jobs (a tick is
        // fired atomically with the queue's cron state) and what producers that have not read
        // the split yet sent: it is asked last, so a busy worker does not pay a fetch for it
        // each time, except first once every WHOLE_FIRST_EVERY fetches, so that under a
        // backlog in the shards it is still served.
        const WHOLE_FIRST_EVERY: usize = 16;
        let parts: Vec<usize> = (0..rt.queues.len())
            .filter(|&i| rt.queues[i].group == g)
            .collect();
        let (whole, shards) = parts.split_at(1.min(parts.len()));
        let first = !shards.is_empty() && turn % WHOLE_FIRST_EVERY == 0;
        if first {
            idx.extend(whole);
        }
        let start = turn % shards.len().max(1);
        idx.extend(shards[start..].iter().chain(&shards[..start]));
        if !first {
            idx.extend(whole);
        }
    }
    idx
}

async fn fetch_loop(
    rt: &Arc<Runtime>,
    tasks: &mut JoinSet<()>,
    ack_tx: mpsc::UnboundedSender<Ack>,
    mut stop: watch::Receiver<bool>,
) {
    let max_batch = rt.config.concurrency.min(MAX_BATCH);
    let mut failures = 0u32;
    let mut outage = Outage::default();
    // Per queue: the token of the last batch whose reply arrived, and whether a fetch failed in
    // a way that leaves its outcome unknown (the script may have run, its reply lost).
    let mut known = vec![0u64; rt.queues.len()];
    let mut unsure = vec![false; rt.queues.len()];
    // When each queue's fetch last looked for expired leases: a few times a second is enough
    // for a busy worker to recover a dead one's jobs at once, and each look costs a command.
    let mut looked = vec![std::time::Instant::now(); rt.queues.len()];
    let mut turn = 0usize;
    loop {
        if *stop.borrow() {
            break;
        }
        let first = tokio::select! {
            p = rt.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let mut permits = vec![first];
        while permits.len() < max_batch {
            match rt.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let want = permits.len();
        let mut got = 0;
        let mut next_due: Option<i64> = None;
        let mut failed = false;
        let mut busy = false;
        turn = turn.wrapping_add(1);
        for qi in queue_order(rt, turn) {
            if got == want {
                break;
            }
            let q = &rt.queues[qi];
            if unsure[qi] {
                match q.broker.redeem(known[qi], rt.config.lease).await {
                    Ok(orphans) => {
                        unsure[qi] = false;
                        if !orphans.is_empty() {
                            tracing::info!(
                                queue = q.broker.queue(),
                                jobs = orphans.len(),
                                "redeemed the leases of a fetch whose reply was lost"
                            );
                        }
                        let mut back = Vec::new();
                        for leased in orphans {
                            q.hold(&leased.lease);
                            q.horizon.fetch_max(leased.lease.token, Ordering::Relaxed);
                            match permits.pop() {
                                Some(permit) => {
                                    tasks.spawn(run_job(
                                        rt.clone(),
                                        qi,
                                        leased,
                                        permit,
                                        ack_tx.clone(),
                                    ));
                                    got += 1;
                                }
                                None => back.push(leased.lease.key().to_string()),
                            }
                        }
                        if !back.is_empty() {
                            // More than the free slots: hand the rest back, no attempt counted.
                            if q.broker.requeue(&back).await.is_ok() {
                                for key in &back {
                                    q.release(key);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        failed = true;
                        outage.failed("redeem", q.broker.queue(), &e);
                        continue;
                    }
                }
                if got == want {
                    break;
                }
            }
            let recovered = if q.recovered_hint.load(Ordering::Relaxed) {
                rt.suspects_allowed()
            } else {
                0
            };
            let report_expired = looked[qi].elapsed() >= EXPIRY_LOOK;
            if report_expired {
                looked[qi] = std::time::Instant::now();
            }
            let policy = FetchPolicy {
                recovered,
                report_expired,
            };
            match q
                .broker
                .fetch_with(want - got, rt.config.lease, policy)
                .await
            {
                Ok(f) => {
                    if recovered > 0 && f.recovered == 0 {
                        q.recovered_hint.store(false, Ordering::Relaxed);
                    }
                    if f.token != 0 {
                        known[qi] = f.token;
                    }
                    if f.expired {
                        rt.beat_now.notify_one();
                    }
                    if !f.garbage.is_empty() {
                        // Garbage took the place of jobs: the queue is not drained, look again.
                        busy = true;
                        let ids: Vec<&str> = f.garbage.iter().map(|id| id.as_str()).collect();
                        tracing::warn!(queue = q.broker.queue(), count = ids.len(), ids = ?ids, "members that cannot be leased (no job id, or over the payload cap) were dead-lettered as they were (see `queue job show <id>`)");
                    }
                    next_due = match (next_due, f.next_due_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    for (i, leased) in f.jobs.into_iter().enumerate() {
                        q.hold(&leased.lease);
                        q.horizon.fetch_max(leased.lease.token, Ordering::Relaxed);
                        if i < f.recovered {
                            rt.suspect(qi, &leased.lease);
                        }
                        let Some(permit) = permits.pop() else { break };
                        tasks.spawn(run_job(rt.clone(), qi, leased, permit, ack_tx.clone()));
                        got += 1;
                    }
                }
                Err(e) => {
                    failed = true;
                    // A connection that broke mid-call may have carried the script to Redis.
                    if matches!(e, queue_core::Error::Unreachable { .. }) {
                        unsure[qi] = true;
                    }
                    outage.failed("fetch", q.broker.queue(), &e);
                }
            }
        }
        drop(permits);
        while tasks.try_join_next().is_some() {}
        if failed {
            // Redis is unreachable or erroring: back off instead of spinning, but never more
            // than 400 ms, so work resumes well within a second of Redis answering again.
            failures += 1;
            let pause = jittered(Duration::from_millis(50 * 2u64.pow(failures.min(5))))
                .min(Duration::from_millis(400));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        failures = 0;
        outage.ok("fetch");
        if got < want && !busy {
            // The queues are drained: sleep until an enqueue wakes us, the next scheduled job is
            // due, or the safety-net recheck.
            // The recheck is a safety net should a wake marker be lost (for example when Redis
            // restarts between an enqueue and a worker's BLPOP).
            let mut sleep = rt.config.idle_recheck;
            if let Some(due) = next_due {
                let ms = due - chrono_now_ms();
                sleep = sleep.min(Duration::from_millis(ms.max(0) as u64));
            }
            tokio::select! {
                _ = rt.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => break,
            }
        }
    }
}

/// One loop's view of a Redis outage, so that it logs the outage, not every failed try: the
/// first failure at warn, the others at debug, and the recovery at info with how long it took.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
    failures: u64,
}

impl Outage {
    fn failed(&mut self, what: &str, queue: &str, e: &queue_core::Error) {
        self.failures += 1;
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(queue, error = %e, kind = ?e.kind(), "{what} failed; retrying with backoff until Redis answers");
        } else {
            tracing::debug!(queue, error = %e, failures = self.failures, "{what} failed again");
        }
    }

    fn ok(&mut self, what: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(after = ?since.elapsed(), failures = self.failures, "{what}: Redis answers again");
        }
        self.failures = 0;
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn run_job(
    rt: Arc<Runtime>,
    qi: usize,
    leased: Leased,
    permit: OwnedSemaphorePermit,
    ack_tx: mpsc::UnboundedSender<Ack>,
) {
    let Leased { lease, job } = leased;
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            drop(permit);
            settle_undecodable(&rt, qi, lease, e).await;
            return;
        }
    };
    let Some(registration) = rt.registry.get(&job.name) else {
        drop(permit);
        let wait_ms = waited(&job);
        let message = format!(
            "no handler for job {:?} in this worker (it knows: {})",
            job.name,
            rt.registry.names().join(", ")
        );
        settle_failure(
            &rt,
            qi,
            &lease,
            job,
            "unknown_job",
            &message,
            Action::Retry,
            Cause::Handler,
            Timing {
                wait_ms,
                run_ms: None,
            },
        )
        .await;
        return;
    };
    // The arguments move into the request (no copy); the envelope is shared read-only.
    let mut job = job;
    resolve(&rt, &mut job);
    let wait_ms = waited(&job);
    let args = std::mem::take(&mut job.args);
    let job = Arc::new(job);
    let ctx = JobContext {
        id: job.id.clone(),
        queue: queue_core::wire::shard_of(&job.queue)
            .map_or(job.queue.as_str(), |(q, _)| q)
            .to_string(),
        name: job.name.clone(),
        attempt: job.attempt(),
        max_attempts: job.max_attempts(),
        client: rt.client.clone(),
        traceparent: job.traceparent.clone(),
    };
    let req = Request {
        ctx,
        job: job.clone(),
        args,
    };
    let started = std::time::Instant::now();
    let res = Next::new(&rt.chain, registration.handler).run(req).await;
    let timing = Timing {
        wait_ms,
        run_ms: Some(started.elapsed().as_millis() as u64),
    };
    // The slot frees before the result is recorded: completions are acknowledged in batches by
    // the acker, and the lease stays held (and heartbeated) until then.
    drop(permit);
    let cap = rt.client.config().max_payload;
    match res {
        // A result is kept in Redis like a job: over the same cap it would fill the server
        // with what no reader needs whole. The job fails for good, with the size in its error.
        Ok(result) if result.len() > cap => {
            let job = match queue_core::wire::decode_member(&lease.member, job.queue.as_str()) {
                Ok(full) => full,
                Err(_) => Arc::unwrap_or_clone(job),
            };
            let message = format!(
                "the handler's result is {} bytes, over the payload cap of {cap} bytes \
                 (ClientConfig::max_payload); it was not stored",
                result.len()
            );
            drop(result);
            settle_failure(
                &rt,
                qi,
                &lease,
                job,
                "too_large",
                &message,
                Action::DeadLetter,
                Cause::Handler,
                timing,
            )
            .await;
        }
        Ok(result) => {
            let completion = Completion {
                lease,
                result,
                unique_key: job.unique_key.clone(),
                name: job.name.clone(),
                timing,
            };
            if ack_tx
                .send(Ack {
                    queue: qi,
                    completion,
                })
                .is_err()
            {
                tracing::error!("acker stopped; the job's lease will expire and it will run again");
            }
        }
        Err(e) => {
            // Failures are rare: rebuild the whole envelope (arguments included) from the
            // member rather than keep a copy of the arguments for every job.
            let job = match queue_core::wire::decode_member(&lease.member, job.queue.as_str()) {
                Ok(full) => full,
                Err(_) => Arc::unwrap_or_clone(job),
            };
            settle_failure(
                &rt,
                qi,
                &lease,
                job,
                e.kind(),
                e.message(),
                e.action(),
                Cause::Handler,
                timing,
            )
            .await;
        }
    }
}

/// How long a first attempt waited from when it was due (its enqueue, or its run-at) to now;
/// `None` for a later attempt, whose due time the envelope does not hold. Producer and worker
/// clocks differ by their skew.
fn waited(job: &Job) -> Option<u64> {
    if job.failed > 0 {
        return None;
    }
    let due = job.run_at_ms.unwrap_or(job.created_ms).max(job.created_ms);
    Some((chrono_now_ms() - due).max(0) as u64)
}

/// A job whose envelope does not decode is dead-lettered under its own id, with a readable
/// reason; its original bytes are kept as the arguments of a stand-in envelope so nothing is
/// lost for inspection.
async fn settle_undecodable(rt: &Runtime, qi: usize, lease: Lease, error: queue_core::Error) {
    let q = &rt.queues[qi];
    let message = format!(
        "the job's envelope does not decode ({error}); its raw bytes are kept as its arguments"
    );
    // A later wire version is not garbage: an upgraded producer ran ahead of this worker.
    let kind = match &error {
        queue_core::Error::Decode { what, .. }
            if *what == queue_core::wire::UNSUPPORTED_VERSION =>
        {
            "unsupported_version"
        }
        _ => "decode",
    };
    let stand_in = Job::unreadable(
        kind,
        lease.id.clone(),
        q.broker.queue(),
        lease.member.clone(),
        chrono_now_ms(),
        &message,
    );
    let timing = Timing::default();
    apply(
        rt,
        qi,
        &lease,
        &stand_in,
        &Settle::Dead,
        Cause::Handler,
        timing,
    )
    .await;
}

/// Fills the options a leased job's producer left unset from its handler's `#[job]`
/// attributes ([`Job::resolve_options`]). Every job this worker runs or settles passes here, the
/// recovered ones included, so a job enqueued by the CLI with a handler declaring
/// `max_attempts = 10` gets ten attempts whichever way it fails.
fn resolve(rt: &Runtime, job: &mut Job) {
    if let Some(registration) = rt.registry.get(&job.name) {
        job.resolve_options(&(registration.options)());
    }
}

#[allow(clippy::too_many_arguments)]
async fn settle_failure(
    rt: &Runtime,
    qi: usize,
    lease: &Lease,
    mut job: Job,
    kind: &str,
    message: &str,
    action: Action,
    cause: Cause,
    timing: Timing,
) {
    resolve(rt, &mut job);
    let now = chrono_now_ms();
    // A snooze (rate limited) is not an attempt: nothing is recorded against the job.
    if !matches!(action, Action::Snooze(_) | Action::RateLimited(_)) {
        job.record_failure(kind, message, now);
    }
    let settle = Settle::decide(&job, &action, now, rand::rng().random::<f64>());
    apply(rt, qi, lease, &job, &settle, cause, timing).await;
}

/// Applies a failure's fate, retrying while Redis is unreachable (bounded); if it never gets
/// through, the lease expires and the job is recovered, so nothing is lost.
async fn apply(
    rt: &Runtime,
    qi: usize,
    lease: &Lease,
    job: &Job,
    settle: &Settle,
    cause: Cause,
    timing: Timing,
) {
    let q = &rt.queues[qi];
    q.settling(lease.key());
    let recorded = retrying("recording a failure", || {
        q.broker
            .fail(lease, job, settle, cause, timing, &rt.config.retention)
    })
    .await;
    match recorded {
        Ok(true) => {
            rt.counters.failed.fetch_add(1, Ordering::Relaxed);
            if *settle == Settle::Dead {
                rt.counters.dead.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %job.id, name = ?job.name, error = ?job.last_error().map(|f| &f.message), "job dead-lettered");
            }
        }
        Ok(false) => {
            rt.counters.lease_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = %job.id, "lease lost before the failure was recorded; another worker owns the job");
        }
        Err(e @ queue_core::Error::NotDurable { .. }) => {
            // Applied on the primary: the job's fate is recorded, only less durably than asked.
            rt.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = %job.id, error = %e, "failure recorded on the primary, not confirmed as durable as configured");
        }
        Err(e) => {
            tracing::error!(id = %job.id, error = %e, "could not record a failure; the job returns when its lease expires");
        }
    }
    q.release(lease.key());
}

/// How long a completion or a failure is retried while Redis is away (restarting, loading,
/// failing over, unreachable) before the worker gives up and lets the lease decide. The leases
/// are safe meanwhile: the heartbeat extends them as soon as Redis answers again, and a Redis
/// that was away for longer than a lease grants an amnesty instead of recovering them (see
/// `Broker::reclaim`), so only an outage longer than this re-runs jobs that had finished.
const SETTLE_BUDGET: Duration = Duration::from_secs(60);

/// Runs `op` until it succeeds or fails for a reason a retry cannot fix ([`Error::is_retryable`]
/// decides), for at most [`SETTLE_BUDGET`], with jittered pauses doubling from 50 ms to 1 s.
/// One warning per outage, not one per try.
///
/// [`Error::is_retryable`]: queue_core::Error::is_retryable
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> queue_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = queue_core::Result<T>>,
{
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut tries = 1u32;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && started.elapsed() < SETTLE_BUDGET => {
                if tries == 1 {
                    tracing::warn!(error = %e, kind = ?e.kind(), "{what} failed; retrying while Redis is away");
                } else {
                    tracing::debug!(error = %e, tries, "{what} failed again");
                }
                tokio::time::sleep(jittered(delay)).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                tries += 1;
            }
            Ok(v) => {
                if tries > 1 {
                    tracing::info!(tries, after = ?started.elapsed(), "{what} went through");
                }
                return Ok(v);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `d` spread over [d/2, d], so workers that lost Redis together do not all return at once.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * rand::rng().random::<f64>())
}

async fn ack_loop(rt: Arc<Runtime>, mut rx: mpsc::UnboundedReceiver<Ack>) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
        // Group by queue, moving the completions (their members can be large).
        let mut by_queue: Vec<Vec<Completion>> = (0..rt.queues.len()).map(|_| Vec::new()).collect();
        for ack in buf.drain(..) {
            by_queue[ack.queue].push(ack.completion);
        }
        for (qi, batch) in by_queue.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let q = &rt.queues[qi];
            for c in &batch {
                q.settling(c.lease.key());
            }
            match retrying("recording completions", || {
                q.broker.complete(&batch, &rt.config.retention)
            })
            .await
            {
                Ok(recorded) => {
                    for (c, ok) in batch.iter().zip(recorded) {
                        if ok {
                            rt.counters.completed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            rt.counters.lease_lost.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(id = %c.lease.id, "lease lost before completion; result discarded (another worker re-ran the job, or an earlier try of this completion went through and its reply was lost)");
                        }
                    }
                }
                Err(e @ queue_core::Error::NotDurable { .. }) => {
                    // Applied on the primary: the jobs are completed, only less durably.
                    rt.counters
                        .completed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(error = %e, jobs = batch.len(), "completions recorded on the primary, not confirmed as durable as configured");
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "could not record completions; the jobs run again when their leases expire");
                }
            }
            for c in &batch {
                q.release(c.lease.key());
            }
        }
    }
}

/// How long each last step of a shutdown may take (sending the last metrics, closing the HTTP
/// endpoints' connections).
const LAST_STEP: Duration = Duration::from_secs(5);

/// How often the runtime's pulse is taken.
const PULSE_EVERY: Duration = Duration::from_millis(100);

/// Marks the runtime alive every [`PULSE_EVERY`], until `stop`.
async fn pulse_loop(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PULSE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        rt.pulse
            .store(rt.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Runtime {
    /// How long since the heartbeat thread last went round its loop.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn heartbeat_idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat_tick.load(Ordering::Relaxed)))
    }

    /// Marks a round of the heartbeat thread.
    fn heartbeat_ticked(&self) {
        self.heartbeat_tick
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the worker's runtime last ran its pulse task.
    fn stalled_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.pulse.load(Ordering::Relaxed)))
    }
}

/// Refreshes this worker's record and flushes the middlewares' figures, until `stop`.
async fn record_loop(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RECORD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let admin = Admin::new(rt.client.clone());
    let mut outage = Outage::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let record = WorkerInfo {
            in_flight: rt.queues.iter().map(|q| q.leases().len() as u64).sum(),
            ..rt.identity.clone()
        };
        match admin.beat(&record).await {
            Ok(()) => outage.ok("worker record"),
            Err(e) => outage.failed("worker record", "", &e),
        }
        for m in &rt.chain {
            m.flush().await;
        }
    }
}

/// Records the lost attempt of every job the heartbeat took over from a dead worker: it goes
/// to the recovered set (or dead, after its last attempt). Ends with the heartbeat.
async fn recover_loop(rt: Arc<Runtime>, mut found: mpsc::UnboundedReceiver<heartbeat::Found>) {
    while let Some((qi, Leased { lease, job })) = found.recv().await {
        match job {
            Ok(job) => {
                let message = format!(
                    "worker lost: attempt {} stopped heartbeating and its lease expired",
                    job.attempt()
                );
                tracing::warn!(id = %job.id, name = ?job.name, "recovering a job whose worker was lost");
                // The attempt is counted, and a job that keeps killing its workers ends in the
                // dead set as `worker_lost`.
                settle_failure(
                    &rt,
                    qi,
                    &lease,
                    job,
                    "worker_lost",
                    &message,
                    Action::RetryAfter(Duration::ZERO),
                    Cause::WorkerLost,
                    // It ran elsewhere, for how long nobody knows.
                    Timing::default(),
                )
                .await;
                rt.queues[qi].recovered_hint.store(true, Ordering::Relaxed);
                rt.wake.notify_one();
            }
            Err(e) => settle_undecodable(&rt, qi, lease, e).await,
        }
    }
}

async fn waker_loop(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    let brokers: Vec<&Broker> = rt.queues.iter().map(|q| &q.broker).collect();
    let mut waker = Waker::new(rt.client.clone(), &brokers);
    let mut outage = Outage::default();
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            r = waker.wait(WAKER_BLOCK) => match r {
                Ok(woken) => {
                    outage.ok("waker");
                    if woken {
                        // A wake-up may be for a recovered job (the recoverer of another
                        // worker wakes the queue): the next fetch asks for one.
                        for q in &rt.queues {
                            q.recovered_hint.store(true, Ordering::Relaxed);
                        }
                        rt.wake.notify_one();
                    }
                }
                Err(e) => {
                    outage.failed("waker", "", &e);
                    // Work may have arrived while we were disconnected.
                    rt.wake.notify_one();
                    // Reconnect at a bounded, jittered pace: a loading Redis answers at once,
                    // and a tight loop would flood both the log and the server.
                    tokio::select! {
                        _ = tokio::time::sleep(jittered(Duration::from_millis(500))) => {}
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
}
