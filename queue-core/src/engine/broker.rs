//! The worker side of a job's life: lease, heartbeat, settle, recover.
//!
//! This file and `scripts/` are where a job's life is decided:
//!
//! ```text
//!  enqueue ──► pending ◄──── scheduled ◄── (delay / retry backoff)
//!                │  fetch (lease + token)        ▲
//!                ▼                               │ fail: retry
//!              active ──── complete ──► completed (retention) ─► trimmed
//!                │  └───── fail: dead ─► dead ─► replay ─► pending
//!                └── lease expired ─► reclaim ─► fail(worker_lost) ─► recovered ─► fetch
//!                                                      (at most one per worker process)
//! ```

use std::time::Duration;

use crate::endpoint::Connection;
use crate::engine::client::{now_ms, Client, MAX_BATCH};
use crate::engine::codec::{self, Outcome};
use crate::engine::history::{self, Recorder, Settled, Timing};
use crate::engine::job::{millis, Job, JobId, JobState};
use crate::engine::registry::Action;
use crate::engine::scripts::scripts;
use crate::error::{Error, Result};
use crate::keys::QueueKeys;

/// A job leased to this worker: the proof of ownership every settle call must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job id.
    pub id: JobId,
    /// The fencing token of the fetch that leased it.
    pub token: u64,
    /// The job's member as stored (priority prefix, id, envelope).
    pub member: Vec<u8>,
    /// `<id>:<token>`, built once: it is used at every step of the job's life in the worker.
    key: String,
}

impl Lease {
    /// A lease of job `id` under fencing `token`.
    pub fn new(id: JobId, token: u64, member: Vec<u8>) -> Lease {
        let key = format!("{id}:{token}");
        Lease {
            id,
            token,
            member,
            key,
        }
    }

    /// The lease's entry in the active set: `<id>:<token>`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A leased job: its lease, and its decoded envelope (or why it does not decode).
#[derive(Debug)]
pub struct Leased {
    /// Proof of ownership.
    pub lease: Lease,
    /// The job, or the decode error that will dead-letter it.
    pub job: Result<Job>,
}

/// What a fetch may take besides pending jobs, and what it looks for. Each costs a command per
/// fetch, so a worker turns them on only when it has a reason to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    /// The most jobs to take from the recovered set (leased first); a worker process asks for
    /// one only while it runs none (default 1).
    pub recovered: usize,
    /// Report whether some worker's lease has expired ([`Fetched::expired`]; default true).
    pub report_expired: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            recovered: 1,
            report_expired: true,
        }
    }
}

/// What a fetch returned.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The leased jobs, in queue order.
    pub jobs: Vec<Leased>,
    /// When the earliest scheduled job is due (ms since the epoch), if any.
    pub next_due_ms: Option<i64>,
    /// The batch's fencing token (0 when nothing was leased).
    pub token: u64,
    /// Members without a job id header found in the pending set and dead-lettered as they
    /// were, under these ids.
    pub garbage: Vec<JobId>,
    /// How many of `jobs` (the first ones) came from the recovered set: jobs taken back from a
    /// lost worker, which may be what killed it.
    pub recovered: usize,
    /// Some worker's lease has expired: a pass now ([`Broker::beat`]) recovers its job without
    /// waiting for the next heartbeat.
    pub expired: bool,
}

/// How long completed and dead jobs are kept. Bounded by count and by age, so Redis memory
/// stays bounded under any load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How many completed jobs (with their outcome and arguments) to keep; 0 removes a job as
    /// soon as it completes.
    pub completed_count: u64,
    /// How long to keep completed jobs.
    pub completed_age: Duration,
    /// How many dead jobs to keep.
    pub dead_count: u64,
    /// How long to keep dead jobs.
    pub dead_age: Duration,
}

impl Default for Retention {
    /// The last 1,000 completed jobs for a day; the last 10,000 dead jobs for 30 days (the
    /// dead-set bounds Sidekiq users know).
    fn default() -> Self {
        Retention {
            completed_count: 1_000,
            completed_age: Duration::from_secs(24 * 3600),
            dead_count: 10_000,
            dead_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Retention {
    /// Removes completed jobs at once (the outcome still reaches `wait_for` callers that are
    /// waiting when the job completes).
    pub fn remove_on_complete(mut self) -> Self {
        self.completed_count = 0;
        self
    }
}

/// What to do with a failed attempt. Decided by [`Settle::decide`] from the job and the handler's
/// answer; applied atomically by the `fail` script.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Run again at this time (ms since the epoch; now or earlier means at once).
    Retry {
        /// When.
        at_ms: i64,
    },
    /// Move to the dead-letter set.
    Dead,
    /// Drop the job (the handler asked for it).
    Discard,
    /// Run again at this time without counting an attempt.
    Snooze {
        /// When.
        at_ms: i64,
    },
}

/// Why an attempt is being settled as a failure: it picks the counter the attempt bumps
/// (`failed` or `recovered` in the queue's stats hash), checked again by the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The handler failed, timed out or panicked, or the job cannot run here.
    Handler,
    /// The job's worker was lost: its lease expired and another worker recovered the job.
    WorkerLost,
}

impl Cause {
    fn counter(self) -> &'static str {
        match self {
            Cause::Handler => "failed",
            Cause::WorkerLost => "recovered",
        }
    }
}

impl Settle {
    /// Decides the fate of a failed attempt of `job` (whose `failed` count already includes
    /// this attempt) from what the handler asked. `unit` is the jitter draw in `[0, 1)`.
    pub fn decide(job: &Job, action: &Action, now_ms: i64, unit: f64) -> Settle {
        decide(job, action, now_ms, unit)
    }
}

fn decide(job: &Job, action: &Action, now_ms: i64, unit: f64) -> Settle {
    let exhausted = job.failed >= job.max_attempts();
    match action {
        Action::Snooze(d) | Action::RateLimited(d) => Settle::Snooze {
            at_ms: now_ms.saturating_add(millis(*d) as i64),
        },
        Action::Discard => Settle::Discard,
        Action::DeadLetter => Settle::Dead,
        _ if exhausted => Settle::Dead,
        Action::RetryAfter(d) => Settle::Retry {
            at_ms: now_ms.saturating_add(millis(*d) as i64),
        },
        Action::Retry => {
            let delay = job.backoff().delay(job.failed, unit);
            Settle::Retry {
                at_ms: now_ms.saturating_add(millis(delay) as i64),
            }
        }
    }
}

/// What a reclaim pass did.
#[derive(Debug)]
pub struct Reclaimed {
    /// Jobs whose lease had expired, now leased to the caller.
    pub jobs: Vec<Leased>,
    /// Set when nobody had watched the leases for longer than a lease: nothing was reclaimed
    /// and the expired leases were extended instead.
    pub amnesty: Option<Amnesty>,
}

/// The watch half of a heartbeat ([`Broker::beat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// The most expired leases to take over (1..=1000).
    pub limit: usize,
    /// A pass this long after the previous pass of any worker means nobody was watching:
    /// expired leases then get an amnesty instead of being taken over. Longer than the
    /// heartbeat (or a lone worker's own late beat looks like an outage), and no longer than a
    /// lease (or a Redis freeze that expired live leases goes unnoticed).
    pub gap: Duration,
}

/// What a heartbeat did.
#[derive(Debug)]
pub struct Beat {
    /// Per lease passed in, whether it is still held (false: another worker took it over).
    pub held: Vec<bool>,
    /// When the earliest lease of any worker expires, from now (None when no lease is held): a
    /// lease whose owner is late, expiring before the next beat, is worth a pass at that time.
    pub next_expiry: Option<Duration>,
    /// How many recovered jobs wait in the queue (a worker asks fetch for one when there are).
    pub recovered_waiting: u64,
    /// Whether this worker's liveness channel has its subscriber (false without a
    /// [`Presence`] channel; when a channel was given, false means the subscription is gone
    /// and should be made again, under a new session).
    pub present: bool,
    /// The pass's result (empty without a [`Watch`]).
    pub reclaimed: Reclaimed,
}

/// A worker's liveness subscription: one connection subscribed to its channel in every queue
/// it serves ([`Broker::alive_channel`]). Redis drops the subscriptions the moment the
/// connection closes, which is how other workers learn that this one died.
pub struct Alive {
    sink: redis::aio::PubSubSink,
    messages: redis::aio::PubSubStream,
    timeout: Duration,
}

impl std::fmt::Debug for Alive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alive").finish_non_exhaustive()
    }
}

impl Alive {
    /// Opens the connection and subscribes to `channels`.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call closes its connection.
    pub async fn subscribe(client: &Client, channels: &[String]) -> Result<Alive> {
        let mut pubsub = client.pubsub().await?;
        let timeout = client.config().response_timeout;
        let subscribed = tokio::time::timeout(timeout, pubsub.subscribe(channels)).await;
        match subscribed {
            Ok(r) => r.map_err(Error::redis(client.url()))?,
            Err(_) => {
                return Err(Error::unreachable(
                    client.url(),
                    format!("no subscription within {timeout:?}"),
                ))
            }
        }
        let (sink, messages) = pubsub.split();
        Ok(Alive {
            sink,
            messages,
            timeout,
        })
    }

    /// Resolves when the connection has closed (nothing is ever published on the channels),
    /// or a PING sent every `keepalive` went unanswered within the response timeout. The PINGs
    /// keep proxies with idle timeouts from closing a connection that otherwise never speaks,
    /// and find a half-open one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn closed(&mut self, keepalive: Duration) {
        use futures_util::StreamExt;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            tokio::select! {
                m = self.messages.next() => if m.is_none() { return },
                _ = tick.tick() => {
                    let pong = tokio::time::timeout(self.timeout, self.sink.ping::<String>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}

/// A worker's presence in a heartbeat ([`Broker::beat_as`]): its liveness subscription, so
/// other workers can recover its jobs the moment its process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence<'a> {
    /// The channel ([`Broker::alive_channel`]) this worker's liveness connection is subscribed
    /// to, None while that connection is down.
    pub channel: Option<&'a str>,
    /// The highest lease token of this queue whose fetch reply this worker has processed: its
    /// tokens up to it that it no longer holds are forgotten.
    pub horizon: u64,
    /// By when, from now, this worker's next beat will have come: its beat interval and a
    /// tolerance. Its liveness channel found empty makes it gone only once this has passed,
    /// so a live worker whose liveness connection alone broke, but which beats on time, is
    /// never taken for dead.
    pub due: Duration,
}

/// Leases extended because nobody was watching them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amnesty {
    /// How many leases (expired, or expiring within a lease) got a full lease from now.
    pub leases: u64,
    /// How long no reclaim pass had run (how long Redis, or every worker, was away).
    pub unwatched: Duration,
}

/// A successful attempt waiting to be recorded.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The lease.
    pub lease: Lease,
    /// The handler's return value, MessagePack-encoded.
    pub result: Vec<u8>,
    /// The job's unique key, released on completion.
    pub unique_key: Option<String>,
    /// The job's name, under which the metrics history counts it (empty: not counted).
    pub name: String,
    /// How long the attempt waited and ran, for the history's histograms.
    pub timing: Timing,
}

/// The worker-side operations of one queue.
#[derive(Debug, Clone)]
pub struct Broker {
    client: Client,
    keys: QueueKeys,
    /// The caller's receipt field in the queue's meta hash, when it asked for one.
    receipt: Option<String>,
    /// The worker id given to [`Broker::with_receipt`].
    worker: Option<String>,
    /// Its owner prefix `<len>:<worker>:` in the watchers hash and the owners set.
    owner: Option<String>,
    /// The settled attempts not yet sent to the metrics history.
    recorder: Recorder,
}

impl Broker {
    /// The operations of `queue` over `client`'s connection.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid queue name.
    pub fn new(client: Client, queue: &str) -> Result<Broker> {
        let keys = client.keys(queue)?;
        Ok(Broker {
            client,
            keys,
            receipt: None,
            worker: None,
            owner: None,
            recorder: Recorder::default(),
        })
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    fn durability(&self) -> crate::script::Durability {
        self.client.config().durability
    }

    /// The queue name.
    pub fn queue(&self) -> &str {
        self.keys.queue()
    }

    /// Promotes due scheduled jobs and leases up to `n` pending jobs for `lease`.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if dropped after sending, jobs may be leased to nobody; with a receipt
    /// ([`Broker::with_receipt`]) [`Broker::redeem`] hands them back, otherwise they come back
    /// when the lease expires.
    pub async fn fetch(&self, n: usize, lease: Duration) -> Result<Fetched> {
        self.fetch_with(n, lease, FetchPolicy::default()).await
    }

    /// Like [`Broker::fetch`], with at most `recovered` of the `n` jobs taken from the
    /// recovered set (jobs whose worker was lost; they are leased first). A worker process asks
    /// for one only while it holds none: a job that kills its worker then kills it alone.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// As [`Broker::fetch`].
    pub async fn fetch_limited(
        &self,
        n: usize,
        recovered: usize,
        lease: Duration,
    ) -> Result<Fetched> {
        let policy = FetchPolicy {
            recovered,
            ..FetchPolicy::default()
        };
        self.fetch_with(n, lease, policy).await
    }

    /// Like [`Broker::fetch`], with what else the fetch may take and report.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// As [`Broker::fetch`].
    pub async fn fetch_with(
        &self,
        n: usize,
        lease: Duration,
        policy: FetchPolicy,
    ) -> Result<Fetched> {
        self.fetch_inner(n, lease, policy).await
    }

    /// Records a receipt for every fetch under the name `worker` (unique per worker process):
    /// if a fetch's reply is lost with its connection, [`Broker::redeem`] hands its leases back
    /// to the worker instead of leaving them to expire as lost attempts.
    pub fn with_receipt(mut self, worker: &str) -> Broker {
        self.receipt = Some(format!("receipt:{worker}"));
        self.worker = Some(worker.to_string());
        self
    }

    /// Takes part in liveness by connection under the name given to
    /// [`Broker::with_receipt`] (without one, does nothing): fetches record their tokens, so
    /// that other workers find this worker's leases the moment its liveness connection
    /// ([`Alive`]) closes, and [`Broker::beat_as`] keeps its record. A caller that opts in must
    /// beat with a [`Presence`] (which forgets the tokens it no longer needs) and
    /// [`Broker::leave`] when it stops.
    pub fn with_liveness(mut self) -> Broker {
        self.owner = self.worker.as_deref().map(|w| format!("{}:{w}:", w.len()));
        self
    }

    /// Claims the leases of this worker's last fetch if its reply never arrived: `known` is the
    /// token of the last fetch whose reply did arrive (0 if none). Call it after a fetch failed
    /// with a connection error, once Redis answers again. Needs [`Broker::with_receipt`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] without a receipt; [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: redeemed leases dropped by the caller expire and are recovered later.
    pub async fn redeem(&self, known: u64, lease: Duration) -> Result<Vec<Leased>> {
        let Some(receipt) = &self.receipt else {
            return Err(Error::Config("redeem needs Broker::with_receipt".into()));
        };
        let k = &self.keys;
        let mut call = scripts().redeem.call();
        call.key(k.active()).key(k.inflight()).key(k.meta());
        call.arg(receipt.as_str()).arg(known).arg(millis(lease));
        let reply: Vec<redis::Value> = call
            .invoke(&mut self.client.con(), self.client.url())
            .await?;
        let mut it = reply.into_iter();
        let token: u64 = int(it.next())?;
        self.leased_all(it, token, "redeem reply")
    }

    /// Removes this worker's receipt (graceful shutdown); a worker that died leaves a field of a
    /// few bytes behind in the queue's meta hash, until maintenance drops it
    /// ([`Admin::prune_receipts`](crate::admin::Admin::prune_receipts)).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn drop_receipt(&self) -> Result<()> {
        let Some(receipt) = &self.receipt else {
            return Ok(());
        };
        redis::cmd("HDEL")
            .arg(self.keys.meta())
            .arg(receipt)
            .query_async::<()>(&mut self.client.con())
            .await
            .map_err(Error::redis(self.client.url()))
    }

    async fn fetch_inner(&self, n: usize, lease: Duration, policy: FetchPolicy) -> Result<Fetched> {
        let k = &self.keys;
        let minute = history::minute_of(now_ms());
        let mut call = scripts().fetch.call();
        call.key(k.pending())
            .key(k.scheduled())
            .key(k.active())
            .key(k.inflight())
            .key(k.meta())
            .key(k.wake())
            .key(k.retry())
            .key(k.events())
            .key(k.dead())
            .key(k.dead_jobs())
            .key(k.stats())
            .key(k.recovered())
            .key(k.owners())
            .key(k.metrics(minute))
            .key(k.metrics_hour(minute.div_euclid(60)));
        call.arg(n.min(MAX_BATCH))
            .arg(millis(lease))
            .arg(self.receipt.as_deref().unwrap_or(""))
            .arg(policy.recovered.min(MAX_BATCH))
            .arg(if policy.report_expired { "1" } else { "0" })
            .arg(self.owner.as_deref().unwrap_or(""))
            .arg(millis(history::RETENTION));
        let reply: Vec<redis::Value> = call
            .invoke(&mut self.client.con(), self.client.url())
            .await?;
        let mut it = reply.into_iter();
        let token: u64 = int(it.next())?;
        let next_due: i64 = int(it.next())?;
        let expired: i64 = int(it.next())?;
        let bad: usize = int(it.next())?;
        let garbage = it
            .by_ref()
            .take(bad)
            .map(|v| {
                let id: String = redis::FromRedisValue::from_redis_value(v)
                    .map_err(|e| Error::decode("fetch reply", e))?;
                Ok(JobId::from_wire(id))
            })
            .collect::<Result<Vec<_>>>()?;
        let recovered: usize = int(it.next())?;
        let jobs = self.leased_all(it, token, "fetch reply")?;
        Ok(Fetched {
            expired: expired == 1,
            recovered: recovered.min(jobs.len()),
            jobs,
            next_due_ms: (next_due >= 0).then_some(next_due),
            token,
            garbage,
        })
    }

    /// The leased jobs of a script reply: every remaining value is a member under `token`.
    fn leased_all(
        &self,
        members: impl Iterator<Item = redis::Value>,
        token: u64,
        what: &'static str,
    ) -> Result<Vec<Leased>> {
        members
            .map(|v| {
                let member: Vec<u8> = redis::FromRedisValue::from_redis_value(v)
                    .map_err(|e| Error::decode(what, e))?;
                Ok(self.leased(member, token))
            })
            .collect()
    }

    fn leased(&self, member: Vec<u8>, token: u64) -> Leased {
        // The id is readable even when the envelope is not, so a malformed job can still be
        // dead-lettered under its own id.
        let id = codec::member_id(&member)
            .unwrap_or_else(|_| JobId::from_wire(String::from_utf8_lossy(&member).into()));
        let job = codec::decode_member(&member, self.queue());
        Leased {
            lease: Lease::new(id, token, member),
            job,
        }
    }

    /// Records successful attempts (at most [`MAX_BATCH`] per call). Returns, per completion,
    /// whether it was recorded (false: the lease was lost and another worker owns the job).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have recorded some completions.
    pub async fn complete(&self, done: &[Completion], retention: &Retention) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.keys;
        let mut call = scripts().complete.call();
        call.key(k.active())
            .key(k.inflight())
            .key(k.completed())
            .key(k.results())
            .key(k.stats())
            .key(k.waiters())
            .key(k.throughput())
            .key(k.meta())
            .key(k.events());
        let mut uniques: Vec<&str> = Vec::new();
        for c in done {
            if let Some(u) = &c.unique_key {
                if !uniques.contains(&u.as_str()) {
                    uniques.push(u);
                    call.key(k.unique(u));
                }
            }
        }
        call.arg(done.len())
            .arg(retention.completed_count)
            .arg(millis(retention.completed_age))
            .arg(k.done_channel());
        let now = now_ms();
        for c in done {
            let outcome = Outcome {
                id: c.lease.id.clone(),
                state: JobState::Completed,
                finished_ms: now,
                result: Some(c.result.clone()),
                error: None,
                job: (retention.completed_count > 0).then(|| c.lease.member.clone()),
            };
            let idx = c
                .unique_key
                .as_deref()
                .and_then(|u| uniques.iter().position(|x| *x == u))
                .map_or(0, |p| p + 1);
            call.arg(c.lease.key()).arg(outcome.encode()?).arg(idx);
        }
        // Counted by what the script did, also when the wait fell short (applied on the
        // primary: recorded, only less durably).
        let (reply, durable): (Vec<i64>, _) = call
            .invoke_then_wait(&mut self.client.con(), self.client.url(), self.durability())
            .await?;
        for (c, _) in done.iter().zip(&reply).filter(|(_, r)| **r == 1) {
            self.count(now, &c.name, Settled::Completed, c.timing);
        }
        durable?;
        Ok(reply.into_iter().map(|r| r == 1).collect())
    }

    /// Counts a settled attempt for the metrics history (sent by [`Broker::flush_metrics`]).
    fn count(&self, now: i64, name: &str, what: Settled, timing: Timing) {
        if !name.is_empty() {
            self.recorder.settled(now, name, what, timing);
        }
    }

    /// Applies a failed attempt's fate. `job` must already carry the failure (see
    /// [`Job::record_failure`]). Returns false when the lease was lost (nothing changed).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Encode`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn fail(
        &self,
        lease: &Lease,
        job: &Job,
        settle: &Settle,
        cause: Cause,
        timing: Timing,
        retention: &Retention,
    ) -> Result<bool> {
        let k = &self.keys;
        let member = codec::encode_member(job)?;
        let settled = match settle {
            Settle::Retry { .. } => Some(Settled::Retried),
            Settle::Dead => Some(Settled::Dead),
            Settle::Discard => Some(Settled::Discarded),
            // Not an attempt.
            Settle::Snooze { .. } => None,
        };
        let count = || {
            if let Some(what) = settled {
                self.count(now_ms(), &job.name, what, timing);
            }
        };
        let error = || job.last_error().map(|f| f.summary()).unwrap_or_default();
        // A finished job's outcome, for waiters (and kept, for a discarded one).
        let outcome = |state: JobState| {
            Outcome {
                id: lease.id.clone(),
                state,
                finished_ms: now_ms(),
                result: None,
                error: job.last_error().map(|f| f.summary()),
                job: Some(member.clone()),
            }
            .encode()
        };
        let scripts = scripts();
        let call = match settle {
            Settle::Retry { at_ms } => {
                let mut call = scripts.retry.call();
                call.key(k.active())
                    .key(k.inflight())
                    .key(k.pending())
                    .key(k.retry())
                    .key(k.stats())
                    .key(k.wake())
                    .key(k.throughput())
                    .key(k.meta())
                    .key(k.events())
                    .key(k.recovered());
                call.arg(lease.key())
                    .arg(member.as_slice())
                    .arg(*at_ms)
                    .arg(cause.counter())
                    .arg(error());
                call
            }
            Settle::Snooze { at_ms } => {
                let mut call = scripts.snooze.call();
                call.key(k.active())
                    .key(k.inflight())
                    .key(k.scheduled())
                    .key(k.stats())
                    .key(k.wake())
                    .key(k.meta())
                    .key(k.events());
                call.arg(lease.key()).arg(member.as_slice()).arg(*at_ms);
                call
            }
            // Both end the job: same contract, different sets (dead letters, or the
            // completed jobs for a discard) and retention.
            Settle::Dead | Settle::Discard => {
                let dead = *settle == Settle::Dead;
                let (mut call, set, hash, keep, age, state) = if dead {
                    let r = (retention.dead_count, retention.dead_age);
                    (
                        scripts.dead.call(),
                        k.dead(),
                        k.dead_jobs(),
                        r.0,
                        r.1,
                        JobState::Dead,
                    )
                } else {
                    let r = (retention.completed_count, retention.completed_age);
                    let call = scripts.discard.call();
                    (
                        call,
                        k.completed(),
                        k.results(),
                        r.0,
                        r.1,
                        JobState::Discarded,
                    )
                };
                call.key(k.active())
                    .key(k.inflight())
                    .key(set)
                    .key(hash)
                    .key(k.stats())
                    .key(k.waiters())
                    .key(k.throughput())
                    .key(k.meta())
                    .key(k.events());
                if let Some(u) = &job.unique_key {
                    call.key(k.unique(u));
                }
                call.arg(lease.key())
                    .arg(member.as_slice())
                    .arg(keep)
                    .arg(millis(age))
                    .arg(cause.counter())
                    .arg(k.done_channel())
                    .arg(outcome(state)?)
                    .arg(error());
                call
            }
        };
        let (applied, durable): (i64, _) = call
            .invoke_then_wait(&mut self.client.con(), self.client.url(), self.durability())
            .await?;
        if applied == 1 {
            count();
        }
        durable?;
        Ok(applied == 1)
    }

    /// The recorder of this broker's settled attempts. Clones of a broker share it.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Counts into `recorder` instead (the heartbeat's brokers share the fetch loop's, so
    /// the heartbeat sends what the fetch loop settled).
    pub fn with_recorder(mut self, recorder: Recorder) -> Broker {
        self.recorder = recorder;
        self
    }

    /// Sends the attempts counted since the last call to the metrics history: one
    /// `record.lua` call per minute counted (usually one). A worker's heartbeat calls it once
    /// a beat; what fails to go is kept for the next call.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call loses the counts it was sending.
    pub async fn flush_metrics(&self) -> Result<()> {
        // At most 36 fields a job name, so 250 names stay under the script's 10,000 pairs.
        let mut groups: Vec<(i64, history::Names)> = Vec::new();
        for (minute, mut names) in self.recorder.take() {
            while names.len() > 250 {
                let Some(split) = names.keys().nth(250).cloned() else {
                    break;
                };
                let rest = names.split_off(&split);
                groups.push((minute, names));
                names = rest;
            }
            groups.push((minute, names));
        }
        // What is not sent goes back to the recorder, also when this future is dropped
        // midway (a shutdown's timeout): the next flush sends it.
        let mut unsent = Unsent {
            recorder: &self.recorder,
            groups,
        };
        while let Some((minute, names)) = unsent.groups.last() {
            let fields = history::fields(names);
            let mut call = scripts().record.call();
            call.key(self.keys.metrics(*minute))
                .key(self.keys.metrics_hour(minute.div_euclid(60)))
                .arg(millis(history::RETENTION))
                .arg(fields.len());
            for (field, n) in &fields {
                call.arg(field.as_str()).arg(*n);
            }
            let sent: Result<i64> = call.invoke(&mut self.client.con(), self.client.url()).await;
            match sent {
                Ok(_) => {}
                // Redis away or busy: kept for the next beat.
                Err(e) if e.is_retryable() => return Err(e),
                // Refused as it is (a permission, a script error): sending it again would be
                // refused again and hold up every later minute, so it is dropped.
                Err(e) => {
                    unsent.groups.pop();
                    return Err(e);
                }
            }
            unsent.groups.pop();
        }
        Ok(())
    }

    /// A worker's heartbeat in this queue: extends the leases in `held` (the ones this worker
    /// still runs) for `lease`, and with `watch` also takes over the leases of workers that are
    /// gone, in the same script call. The caller then holds the leases taken over and must
    /// record the lost attempt through [`Broker::fail`] ([`Cause::WorkerLost`]).
    ///
    /// A worker is gone when its lease expired, or (with [`Presence`], for a broker made
    /// [`Broker::with_receipt`]) at once when its liveness channel lost its subscriber: its
    /// process died and the kernel closed its connection (see `beat.lua` for why a Redis
    /// restart, which drops every subscription, is not taken for deaths).
    ///
    /// Every worker passes once per heartbeat. If the previous pass of any worker is older than
    /// [`Watch::gap`], nobody was watching (Redis was frozen or restarting, or every worker was
    /// down): expired leases then get one more lease instead of being taken over
    /// ([`Reclaimed::amnesty`]), so live workers keep their jobs, and the jobs of workers that
    /// really died are recovered one lease later.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: leases taken over and dropped by the caller expire again and are taken
    /// over later, so nothing is lost, only delayed. Extending alone is idempotent.
    pub async fn beat(
        &self,
        held: &[String],
        lease: Duration,
        watch: Option<Watch>,
    ) -> Result<Beat> {
        self.beat_as(held, lease, watch, None).await
    }

    /// [`Broker::beat`] with this worker's [`Presence`] (ignored without
    /// [`Broker::with_receipt`]).
    ///
    /// # Errors
    ///
    /// As [`Broker::beat`].
    ///
    /// # Cancel safety
    ///
    /// As [`Broker::beat`].
    pub async fn beat_as(
        &self,
        held: &[String],
        lease: Duration,
        watch: Option<Watch>,
        presence: Option<Presence<'_>>,
    ) -> Result<Beat> {
        let k = &self.keys;
        let (owner, channel, horizon, due) = match (&self.owner, presence) {
            (Some(o), Some(p)) => (o.as_str(), p.channel.unwrap_or(""), p.horizon, p.due),
            _ => ("", "", 0, lease),
        };
        let mut still = Vec::with_capacity(held.len());
        let mut reclaimed = None;
        let mut next_expiry = None;
        let mut recovered_waiting = 0;
        let mut present = false;
        let mut chunks: Vec<&[String]> = held.chunks(MAX_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            // One pass per beat, with the last chunk: every lease of this worker is extended
            // before it, so a late worker never takes over its own jobs.
            let watch = watch.filter(|_| i == last);
            let mut call = scripts().beat.call();
            call.key(k.active())
                .key(k.inflight())
                .key(k.meta())
                .key(k.recovered())
                .key(k.watchers())
                .key(k.owners());
            call.arg(millis(lease))
                .arg(watch.map_or(0, |w| w.limit.clamp(1, MAX_BATCH)))
                .arg(millis(watch.map_or(lease, |w| w.gap)).max(1))
                .arg(owner)
                .arg(channel)
                // Only the first call forgets tokens: the others put back their own.
                .arg(if i == 0 { horizon } else { 0 })
                .arg(millis(due).max(1));
            for l in chunk {
                call.arg(l.as_str());
            }
            let reply: Vec<redis::Value> = call
                .invoke(&mut self.client.con(), self.client.url())
                .await?;
            let mut it = reply.into_iter();
            for _ in 0..chunk.len() {
                still.push(int::<i64>(it.next())? == 1);
            }
            let next: i64 = int(it.next())?;
            let waiting: u64 = int(it.next())?;
            let up: i64 = int(it.next())?;
            if i == last {
                next_expiry = u64::try_from(next).ok().map(Duration::from_millis);
                recovered_waiting = waiting;
                present = up == 1;
            }
            if watch.is_some() {
                reclaimed = Some(self.reclaimed(it)?);
            }
        }
        Ok(Beat {
            held: still,
            next_expiry,
            recovered_waiting,
            present,
            reclaimed: reclaimed.unwrap_or(Reclaimed {
                jobs: Vec::new(),
                amnesty: None,
            }),
        })
    }

    /// Removes this worker's liveness record and lease tokens (graceful shutdown, once it holds
    /// no lease): its channel may then close without anyone looking for its jobs. A worker that
    /// dies leaves them to the first pass that sees its channel empty.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn leave(&self) -> Result<()> {
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        redis::pipe()
            .hdel(self.keys.watchers(), owner)
            .ignore()
            .cmd("ZREMRANGEBYLEX")
            .arg(self.keys.owners())
            .arg(format!("[{owner}"))
            .arg(format!("({owner};"))
            .ignore()
            .query_async::<()>(&mut self.client.con())
            .await
            .map_err(Error::redis(self.client.url()))
    }

    /// The liveness channel of this worker's `session`-th subscription (None without
    /// [`Broker::with_receipt`]).
    pub fn alive_channel(&self, session: u64) -> Option<String> {
        self.worker
            .as_deref()
            .map(|w| self.keys.alive_channel(w, session))
    }

    fn reclaimed(&self, mut it: impl Iterator<Item = redis::Value>) -> Result<Reclaimed> {
        let token: u64 = int(it.next())?;
        if token == 0 {
            let amnesty = match (it.next(), it.next()) {
                (Some(n), Some(gap)) => Some(Amnesty {
                    leases: int(Some(n))?,
                    unwatched: Duration::from_millis(int(Some(gap))?),
                }),
                _ => None,
            };
            return Ok(Reclaimed {
                jobs: Vec::new(),
                amnesty,
            });
        }
        let jobs = self.leased_all(it, token, "beat reply")?;
        Ok(Reclaimed {
            jobs,
            amnesty: None,
        })
    }

    /// A pass without a heartbeat: takes over up to `limit` expired leases, with a watch gap
    /// of one `lease` (see [`Broker::beat`]).
    ///
    /// # Errors
    ///
    /// As [`Broker::beat`].
    ///
    /// # Cancel safety
    ///
    /// As [`Broker::beat`].
    pub async fn reclaim(&self, limit: usize, lease: Duration) -> Result<Reclaimed> {
        let watch = Watch { limit, gap: lease };
        Ok(self.beat(&[], lease, Some(watch)).await?.reclaimed)
    }

    /// A heartbeat without a pass: extends leases this worker still holds; returns, per lease,
    /// whether it is still held.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: extending is idempotent.
    pub async fn extend(&self, leases: &[String], lease: Duration) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.beat(leases, lease, None).await?.held)
    }

    /// Hands leased jobs back to the queue without counting an attempt (graceful shutdown).
    /// Returns how many went back.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe; jobs not handed back return when their lease expires.
    pub async fn requeue(&self, leases: &[String]) -> Result<u64> {
        let k = &self.keys;
        let mut back = 0;
        for chunk in leases.chunks(MAX_BATCH) {
            let mut call = scripts().requeue.call();
            call.key(k.active())
                .key(k.inflight())
                .key(k.pending())
                .key(k.wake());
            for l in chunk {
                call.arg(l.as_str());
            }
            let n: u64 = call
                .invoke(&mut self.client.con(), self.client.url())
                .await?;
            back += n;
        }
        Ok(back)
    }
}

/// Blocks until one of a worker's queues may have work, on a connection of its own (a blocking
/// `BLPOP` on the shared connection would hold up every other call).
///
/// The enqueue, fail and requeue scripts push one marker to a queue's wake list when they add
/// runnable work; a waiting worker pops it. A marker can be missed (Redis restarted in between),
/// so workers also recheck on a timer: the waker makes the common case instant, not correct.
///
/// On a cluster, one `BLPOP` cannot wait on lists in different slots: the lists are grouped by
/// slot, each group waits on a connection of its own, and the first to pop wakes the worker.
/// A wait still in flight when another group woke the worker is kept for the next call, so
/// its marker is not lost.
pub struct Waker {
    client: Client,
    /// The wake lists, one group per cluster slot (on one server, one group).
    groups: Vec<Vec<String>>,
    /// Per group: its connection, and its `BLPOP` in flight.
    lines: Vec<Line>,
}

type Popped = redis::RedisResult<Option<(String, String)>>;

#[derive(Default)]
struct Line {
    /// The connection and the client's epoch it was opened in.
    con: Option<(Connection, u64)>,
    pending: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Popped> + Send>>>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Waker {
    /// A waker for the queues of `brokers`.
    pub fn new(client: Client, brokers: &[&Broker]) -> Waker {
        let keys: Vec<String> = brokers.iter().map(|b| b.keys.wake()).collect();
        let groups = if client.is_cluster() {
            let mut by_slot: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
            for key in keys {
                by_slot
                    .entry(crate::keys::hash_slot(key.as_bytes()))
                    .or_default()
                    .push(key);
            }
            by_slot.into_values().collect()
        } else {
            vec![keys]
        };
        let lines = groups.iter().map(|_| Line::default()).collect();
        Waker {
            client,
            groups,
            lines,
        }
    }

    /// Waits up to `timeout` (whole seconds, at least one) for a wake marker: `Ok(true)` when
    /// woken, `Ok(false)` when the time ran out.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`]; the connection is dropped and the next call
    /// opens a new one, so the caller only decides how long to pause.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the waits in flight are kept for the next call.
    pub async fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let secs = timeout.as_secs().max(1);
        // Behind Sentinels, a connection to a primary that may have moved is replaced.
        let now = self.client.epoch();
        for line in &mut self.lines {
            if line.con.as_ref().is_some_and(|(_, e)| *e != now) {
                *line = Line::default();
            }
        }
        let mut epoch = now;
        for (line, keys) in self.lines.iter_mut().zip(&self.groups) {
            if line.con.is_none() {
                // The response timeout must outlast the blocking call itself.
                let limit = Duration::from_secs(secs + 4);
                line.con = Some(self.client.dedicated(Some(limit)).await?);
            }
            let Some((con, opened)) = line.con.as_ref() else {
                continue;
            };
            epoch = epoch.min(*opened);
            if line.pending.is_none() {
                let mut con = con.clone();
                let mut cmd = redis::cmd("BLPOP");
                cmd.arg(keys).arg(secs);
                line.pending = Some(Box::pin(async move { cmd.query_async(&mut con).await }));
            }
        }
        let first = std::future::poll_fn(|cx| {
            for (i, line) in self.lines.iter_mut().enumerate() {
                if let Some(pending) = line.pending.as_mut() {
                    if let std::task::Poll::Ready(reply) = pending.as_mut().poll(cx) {
                        line.pending = None;
                        return std::task::Poll::Ready((i, reply));
                    }
                }
            }
            std::task::Poll::Pending
        });
        let (i, reply) = tokio::select! {
            first = first => first,
            // Behind Sentinels, the primary moved: markers are pushed there now, so the
            // caller is woken to fetch from it.
            () = self.client.moved(epoch) => {
                for line in &mut self.lines {
                    *line = Line::default();
                }
                return Ok(true);
            }
        };
        match reply {
            Ok(popped) => Ok(popped.is_some()),
            Err(e) => {
                self.lines[i] = Line::default();
                self.client.observe_failure(epoch, &e);
                Err(Error::from_redis(self.client.url(), "BLPOP", e))
            }
        }
    }
}

fn int<T: redis::FromRedisValue>(v: Option<redis::Value>) -> Result<T> {
    let v = v.ok_or_else(|| Error::decode("script reply", "missing value"))?;
    redis::FromRedisValue::from_redis_value(v).map_err(|e| Error::decode("script reply", e))
}

/// Minutes of the metrics history taken from a [`history::Recorder`] and not sent yet: put back
/// when dropped.
struct Unsent<'r> {
    recorder: &'r history::Recorder,
    groups: Vec<(i64, history::Names)>,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        let now = now_ms();
        for (minute, names) in self.groups.drain(..) {
            self.recorder.restore(now, minute, names);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::Backoff;

    fn job(failed: u32, max: u32) -> Job {
        let mut job = Job::new(JobId::generate(), "q", "n", vec![], 0);
        job.failed = failed;
        job.max_attempts = Some(max);
        job.backoff = Some(Backoff::exponential(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ));
        job
    }

    #[test]
    fn retries_with_backoff_until_attempts_run_out() {
        assert_eq!(
            decide(&job(1, 3), &Action::Retry, 10_000, 1.0),
            Settle::Retry { at_ms: 11_000 }
        );
        assert_eq!(
            decide(&job(2, 3), &Action::Retry, 10_000, 0.0),
            Settle::Retry { at_ms: 11_000 }
        );
        assert_eq!(
            decide(&job(3, 3), &Action::Retry, 10_000, 0.5),
            Settle::Dead
        );
        assert_eq!(
            decide(
                &job(1, 3),
                &Action::RetryAfter(Duration::from_millis(5)),
                10,
                0.5
            ),
            Settle::Retry { at_ms: 15 }
        );
        assert_eq!(
            decide(&job(1, 3), &Action::DeadLetter, 0, 0.5),
            Settle::Dead
        );
        assert_eq!(
            decide(&job(3, 3), &Action::Discard, 0, 0.5),
            Settle::Discard
        );
    }
}
