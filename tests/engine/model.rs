//! A model-based property test of the engine: random sequences of producer, worker and
//! operator operations run against a real redis-server and against a small in-memory model of
//! what the engine promises. After every step the queue is read back whole and compared.
//!
//! The operations: enqueue (one job or a batch; priority, delay, idempotency key, attempts),
//! fetch (with a limit on recovered jobs), complete (batches), fail through `Settle::decide`
//! and `Broker::fail` exactly as the worker does (retry now, retry later, backoff, dead-letter,
//! discard, snooze), requeue, heartbeat (`Broker::extend`, and `Broker::beat`, which extends a
//! worker's leases and takes over others' expired ones in one call), a worker crash (its lease
//! deadline passes), reclaim of expired leases (settled as `worker_lost` like the worker does,
//! or left held), an outage nobody watched (the next pass is an amnesty), zombies (settling,
//! extending or requeueing with a lease that was lost), the operator's replay of dead jobs and
//! promotion of waiting ones, pause and resume, and the passing of time.
//!
//! Checked after every step:
//! - every job id is in exactly one state (pending, scheduled, retrying, recovered, active,
//!   dead, completed): the one the model says, with the paired hashes (inflight, dead jobs,
//!   results) holding exactly the ids of their sorted sets, and no id the model does not know;
//! - the operator's view (`Admin::list` over every `State`) and `Client::counts` agree;
//! - fetch leases exactly the jobs the model predicts, in order: recovered jobs first (at most
//!   as many as asked), then by priority, then first in, first out;
//! - no job is leased before its due time, and a waiting job's score is in the past exactly
//!   when the model says it is due;
//! - a job's attempt count and error history never decrease (an operator replay gives a fresh
//!   set of attempts by design; the history is kept) and match the model's;
//! - leases that were settled, requeued or reclaimed are refused by every settle call;
//! - each idempotency key is held by the job the model says, or by none.
//!
//! Time: Redis keeps its own clock, never faked. The model's clock counts hours, and a delay of
//! h hours is a real delay of h hours, so nothing becomes due by itself during a run; advancing
//! the model's clock rescores exactly the jobs that became due to the past (what
//! `common::rescore_all` does for a whole set). Leases last six hours; a crash moves a lease's
//! deadline to the past. No step sleeps or waits for the clock.
//!
//! One redis-server serves the whole run; every case has a queue of its own (deleted when the
//! case passes), so cases never see each other and a shrunk case replays from a clean state.
//! `QUEUE_SOAK=1` runs 10,000 cases instead of the default few hundred. A failure prints the
//! shrunk sequence of steps, the step that failed and why; the run ends with a tally of what
//! the steps did (how many jobs were leased from the recovered set, passes that were amnesties,
//! ...), so a change that makes a path unreachable shows.
//!
//! Measured (debug build, 2 cores): 300 cases, about 9,000 steps, 10 to 18 s alone and 35 s
//! beside other test builds and two busy loops (load 4.8); the 10,000-case soak, 520 s.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Env;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use queue::admin::{Admin, State};
use queue::broker::{Broker, Cause, Completion, Fetched, Lease, Reclaimed, Settle, Watch};
use queue::wire::{Job, QueueKeys};
use queue::{Action, Backoff, Client, JobId, JobType, NewJob, Retention};

/// Cases of a default run: a few hundred, well under a minute on a busy 2-core machine.
const CASES: u32 = 300;
/// Cases of a soak run (`QUEUE_SOAK=1`).
const SOAK_CASES: u32 = 10_000;
/// Steps of one case, at most.
const MAX_STEPS: usize = 60;
/// A bound on one case, so a hung call fails the case instead of the whole run.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// One tick of the model's clock.
const HOUR_MS: i64 = 3_600_000;
/// Leases outlast any run: they expire only when a step says their worker crashed. Also the
/// reclaim's watch gap, so no amnesty is ever due in a run.
const LEASE: Duration = Duration::from_secs(6 * 3600);
/// Every job's backoff: a fixed two hours (no jitter, so the model knows when a retry is due).
const BACKOFF_HOURS: i64 = 2;
/// Idempotency keys live longer than any run.
const UNIQUE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Idempotency keys are drawn from this many names, so they collide often.
const UNIQUE_KEYS: u8 = 3;
/// Envelopes keep this many failures.
const HISTORY: usize = queue::wire::ERROR_HISTORY;
/// Settled leases kept for zombie steps.
const STALE_KEPT: usize = 16;

struct ModelJob;
impl JobType for ModelJob {
    const NAME: &'static str = "test.model";
    type Args = u64;
}

fn unique_name(u: u8) -> String {
    format!("k{u}")
}

// ---------------------------------------------------------------------------------------------
// Operations

/// A job to enqueue.
#[derive(Clone)]
struct Spec {
    priority: u8,
    delay_hours: Option<i64>,
    unique: Option<u8>,
    max_attempts: u32,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} m{}", self.priority, self.max_attempts)?;
        if let Some(h) = self.delay_hours {
            write!(f, " +{h}h")?;
        }
        if let Some(u) = self.unique {
            write!(f, " u{u}")?;
        }
        Ok(())
    }
}

/// What the handler of a failed attempt asks for.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// `Action::RetryAfter(0)`: back to pending at once.
    RetryNow,
    /// `Action::RetryAfter(h hours)`.
    RetryAfter(i64),
    /// `Action::Retry`: the job's backoff (fixed, two hours).
    Backoff,
    DeadLetter,
    Discard,
    /// `Action::Snooze(h hours)`: no attempt counted.
    Snooze(i64),
}

impl Fate {
    fn action(self) -> Action {
        match self {
            Fate::RetryNow => Action::RetryAfter(Duration::ZERO),
            Fate::RetryAfter(h) => Action::RetryAfter(hours(h)),
            Fate::Backoff => Action::Retry,
            Fate::DeadLetter => Action::DeadLetter,
            Fate::Discard => Action::Discard,
            Fate::Snooze(h) => Action::Snooze(hours(h)),
        }
    }
}

/// What a pass over the leases is expected to do.
enum Pass {
    /// Take over these expired leases (of all that many expired ones).
    TakeOver(Vec<(String, usize)>, usize),
    /// An amnesty for these expired leases.
    Amnesty(Vec<usize>),
}

/// What a zombie (a worker whose lease is gone) tries.
#[derive(Debug, Clone, Copy)]
enum Zombie {
    Complete,
    Retry,
    Dead,
    Discard,
    Snooze,
    Extend,
    Requeue,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Vec<Spec>),
    /// Lease up to `n` jobs; `recovered`: the most of them from the recovered set (None: the
    /// default of `Broker::fetch`, one).
    Fetch {
        n: usize,
        recovered: Option<usize>,
    },
    /// Complete up to three held jobs in one call (picks among the active jobs).
    Complete(Vec<u8>),
    Fail(u8, Fate),
    Requeue(u8),
    Heartbeat(u8),
    /// The worker holding this lease dies: its deadline passes.
    Crash(u8),
    /// Every lease held expires (one worker process held them all and died).
    CrashAll,
    /// A reclaim pass; `settle`: the reclaimer records the lost attempt at once (as the
    /// worker does), else it holds the leases (and may die in turn).
    Reclaim {
        limit: usize,
        settle: bool,
    },
    Zombie(u8, Zombie),
    /// A worker's heartbeat (`Broker::beat`): extends its leases (picks among the active
    /// jobs, and a lost lease when `zombie`), and with `watch` takes over up to that many
    /// expired leases of other workers, settling them as lost attempts.
    Beat {
        picks: Vec<u8>,
        zombie: bool,
        watch: Option<usize>,
    },
    /// Nobody watches the leases for longer than a lease (Redis frozen, every worker down):
    /// the last pass is moved back in time.
    Unwatched,
    /// The model's clock moves on.
    Advance(i64),
    /// Operator: replay a dead job (`Admin::retry`, or `Client::replay_dead`).
    Replay {
        pick: u8,
        via_client: bool,
    },
    /// Operator: run a scheduled, retrying or recovered job now (`Admin::retry`).
    Promote(u8),
    Pause,
    Resume,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(0u8), Just(1u8), Just(9u8)],
        prop::option::weighted(0.25, 1i64..=3),
        prop::option::weighted(0.3, 0..UNIQUE_KEYS),
        1u32..=3,
    )
        .prop_map(|(priority, delay_hours, unique, max_attempts)| Spec {
            priority,
            delay_hours,
            unique,
            max_attempts,
        })
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        3 => Just(Fate::RetryNow),
        2 => (1i64..=3).prop_map(Fate::RetryAfter),
        2 => Just(Fate::Backoff),
        1 => Just(Fate::DeadLetter),
        1 => Just(Fate::Discard),
        1 => (1i64..=3).prop_map(Fate::Snooze),
    ]
}

fn zombie() -> impl Strategy<Value = Zombie> {
    prop_oneof![
        Just(Zombie::Complete),
        Just(Zombie::Retry),
        Just(Zombie::Dead),
        Just(Zombie::Discard),
        Just(Zombie::Snooze),
        Just(Zombie::Extend),
        Just(Zombie::Requeue),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(spec(), 1..=3).prop_map(Op::Enqueue),
        6 => (1usize..=4, prop::option::weighted(0.5, 0usize..=2))
            .prop_map(|(n, recovered)| Op::Fetch { n, recovered }),
        3 => prop::collection::vec(any::<u8>(), 1..=3).prop_map(Op::Complete),
        4 => (any::<u8>(), fate()).prop_map(|(p, f)| Op::Fail(p, f)),
        1 => any::<u8>().prop_map(Op::Requeue),
        1 => any::<u8>().prop_map(Op::Heartbeat),
        3 => any::<u8>().prop_map(Op::Crash),
        1 => Just(Op::CrashAll),
        3 => (1usize..=3, prop::bool::weighted(0.75)).prop_map(|(limit, settle)| Op::Reclaim { limit, settle }),
        1 => (any::<u8>(), zombie()).prop_map(|(p, z)| Op::Zombie(p, z)),
        3 => (
            prop::collection::vec(any::<u8>(), 0..=3),
            prop::bool::weighted(0.2),
            prop::option::weighted(0.7, 1usize..=3),
        )
            .prop_map(|(picks, zombie, watch)| Op::Beat { picks, zombie, watch }),
        2 => (1i64..=3).prop_map(Op::Advance),
        1 => Just(Op::Unwatched),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(pick, via_client)| Op::Replay { pick, via_client }),
        1 => any::<u8>().prop_map(Op::Promote),
        1 => Just(Op::Pause),
        5 => Just(Op::Resume),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=MAX_STEPS)
}

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Where {
    Pending,
    Scheduled,
    Retrying,
    Recovered,
    Active,
    Dead,
    Completed,
}

impl Where {
    const ALL: [Where; 7] = [
        Where::Pending,
        Where::Scheduled,
        Where::Retrying,
        Where::Recovered,
        Where::Active,
        Where::Dead,
        Where::Completed,
    ];

    /// The operator's name of the state (`queue::admin::State::name`).
    fn name(self) -> &'static str {
        match self {
            Where::Pending => "pending",
            Where::Scheduled => "scheduled",
            Where::Retrying => "retrying",
            Where::Recovered => "recovered",
            Where::Active => "active",
            Where::Dead => "dead",
            Where::Completed => "completed",
        }
    }

    fn named(name: &str) -> Option<Where> {
        Where::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// A lease the test holds, as a worker would: the lease and the envelope it was handed.
#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    job: Job,
    /// Its deadline was moved to the past (the holder crashed).
    expired: bool,
}

#[derive(Debug)]
struct MJob {
    /// Creation order: FIFO within a priority.
    seq: u64,
    id: String,
    priority: u8,
    max_attempts: u32,
    unique: Option<String>,
    failed: u32,
    errors: usize,
    at: Where,
    /// When a scheduled or retrying job is due (model hours).
    due: i64,
    held: Option<Held>,
}

/// Whether the engine sends attempts lost with their worker to a recovered set (probed once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LostGoTo {
    Pending,
    Recovered,
}

#[derive(Debug)]
struct Model {
    /// The model's clock, in hours.
    now: i64,
    paused: bool,
    jobs: Vec<MJob>,
    by_id: HashMap<String, usize>,
    /// Idempotency key -> the id of the job holding it.
    unique: BTreeMap<String, String>,
    /// Leases that were settled, requeued or reclaimed, with the envelope their holder had.
    stale: Vec<(Lease, Job)>,
    next_seq: u64,
    lost: LostGoTo,
    /// The lowest attempt count and history length each job may show from now on.
    floor: HashMap<String, (u32, usize)>,
    /// Nobody watched the leases for longer than a lease: the next pass is an amnesty.
    unwatched: bool,
}

impl Model {
    fn new(lost: LostGoTo) -> Model {
        Model {
            now: 0,
            paused: false,
            jobs: Vec::new(),
            by_id: HashMap::new(),
            unique: BTreeMap::new(),
            stale: Vec::new(),
            next_seq: 0,
            lost,
            floor: HashMap::new(),
            unwatched: false,
        }
    }

    /// The jobs in one of `states`, in creation order.
    fn in_states(&self, states: &[Where]) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&i| states.contains(&self.jobs[i].at))
            .collect()
    }

    fn pick(&self, sel: u8, states: &[Where]) -> Option<usize> {
        let c = self.in_states(states);
        (!c.is_empty()).then(|| c[sel as usize % c.len()])
    }

    /// The run order of waiting jobs: priority, then creation.
    fn run_order(&self, mut ix: Vec<usize>) -> Vec<usize> {
        ix.sort_by_key(|&i| (std::cmp::Reverse(self.jobs[i].priority), self.jobs[i].seq));
        ix
    }

    fn release_unique(&mut self, i: usize) {
        if let Some(u) = self.jobs[i].unique.clone() {
            if self.unique.get(&u) == Some(&self.jobs[i].id) {
                self.unique.remove(&u);
            }
        }
    }

    fn retire(&mut self, i: usize) {
        if let Some(h) = self.jobs[i].held.take() {
            self.stale.push((h.lease, h.job));
            if self.stale.len() > STALE_KEPT {
                self.stale.remove(0);
            }
        }
    }

    /// A failed attempt is recorded against job `i`.
    fn count_failure(&mut self, i: usize) {
        let j = &mut self.jobs[i];
        j.failed += 1;
        j.errors = (j.errors + 1).min(HISTORY);
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case

type R<T = ()> = Result<T, TestCaseError>;

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| fail(format!("{what}: {e}")))
    }
}

fn hours(h: i64) -> Duration {
    Duration::from_millis((h * HOUR_MS) as u64)
}

fn jid(id: &str) -> R<JobId> {
    JobId::parse(id).ctx("job id")
}

/// The id in a member (`PP` + 26-character id + envelope).
fn id_of(member: &[u8]) -> R<String> {
    Ok(queue::wire::member_id(member)
        .ctx("member id")?
        .as_str()
        .to_string())
}

/// The id in a lease (`<id>:<token>`).
fn id_of_lease(lease: &[u8]) -> R<String> {
    let s = std::str::from_utf8(lease).ctx("lease")?;
    s.split_once(':')
        .map(|(id, _)| id.to_string())
        .ok_or_else(|| fail(format!("lease {s:?} has no token")))
}

/// Leases up to `n` jobs, at most `recovered` of them from the recovered set.
async fn fetch(broker: &Broker, n: usize, recovered: Option<usize>) -> queue::Result<Fetched> {
    match recovered {
        None => broker.fetch(n, LEASE).await,
        Some(r) => broker.fetch_limited(n, r, LEASE).await,
    }
}

struct Case {
    client: Client,
    admin: Admin,
    broker: Broker,
    keys: QueueKeys,
    raw: redis::aio::MultiplexedConnection,
    queue: String,
    retention: Retention,
    m: Model,
    /// What the steps did (not what they were asked): reported at the end of the run.
    tally: BTreeMap<&'static str, u64>,
}

impl Case {
    fn new(
        env: &Env,
        raw: redis::aio::MultiplexedConnection,
        queue: &str,
        lost: LostGoTo,
    ) -> R<Case> {
        let client = env.client.clone();
        let keys = client.keys(queue).ctx("keys")?;
        Ok(Case {
            admin: Admin::new(client.clone()),
            broker: Broker::new(client.clone(), queue).ctx("broker")?,
            keys,
            client,
            raw,
            queue: queue.to_string(),
            retention: Retention::default(),
            m: Model::new(lost),
            tally: BTreeMap::new(),
        })
    }

    fn did(&mut self, what: &'static str, n: usize) {
        if n > 0 {
            *self.tally.entry(what).or_default() += n as u64;
        }
    }

    async fn step(&mut self, op: &Op) -> R {
        match op {
            Op::Enqueue(specs) => self.enqueue(specs).await,
            Op::Fetch { n, recovered } => self.fetch(*n, *recovered).await,
            Op::Complete(picks) => self.complete(picks).await,
            Op::Fail(pick, fate) => self.fail(*pick, *fate).await,
            Op::Requeue(pick) => self.requeue(*pick).await,
            Op::Heartbeat(pick) => self.heartbeat(*pick).await,
            Op::Crash(pick) => {
                if let Some(i) = self.m.pick(*pick, &[Where::Active]) {
                    self.crash(i).await?;
                }
                Ok(())
            }
            Op::CrashAll => {
                for i in self.m.in_states(&[Where::Active]) {
                    self.crash(i).await?;
                }
                Ok(())
            }
            Op::Reclaim { limit, settle } => self.reclaim(*limit, *settle).await,
            Op::Zombie(pick, z) => self.zombie(*pick, *z).await,
            Op::Beat {
                picks,
                zombie,
                watch,
            } => self.beat(picks, *zombie, *watch).await,
            Op::Advance(h) => self.advance(*h).await,
            Op::Unwatched => {
                let long_ago = common::now_ms() - 2 * LEASE.as_millis() as i64;
                let _: i64 = redis::cmd("HSET")
                    .arg(self.keys.meta())
                    .arg("watched_at")
                    .arg(long_ago)
                    .query_async(&mut self.raw)
                    .await
                    .ctx("move the last pass back")?;
                self.m.unwatched = true;
                Ok(())
            }
            Op::Replay { pick, via_client } => self.replay(*pick, *via_client).await,
            Op::Promote(pick) => self.promote(*pick).await,
            Op::Pause => {
                self.client.pause(&self.queue).await.ctx("pause")?;
                self.m.paused = true;
                Ok(())
            }
            Op::Resume => {
                self.client.resume(&self.queue).await.ctx("resume")?;
                self.m.paused = false;
                Ok(())
            }
        }
    }

    async fn enqueue(&mut self, specs: &[Spec]) -> R {
        let mut jobs = Vec::new();
        let mut seqs = Vec::new();
        for s in specs {
            let seq = self.m.next_seq;
            self.m.next_seq += 1;
            seqs.push(seq);
            let mut j = NewJob::of::<ModelJob>(&seq)
                .ctx("encode")?
                .queue(self.queue.as_str())
                .priority(s.priority)
                .max_attempts(s.max_attempts)
                .backoff(Backoff::fixed(hours(BACKOFF_HOURS)));
            if let Some(h) = s.delay_hours {
                j = j.delay(hours(h));
            }
            if let Some(u) = s.unique {
                j = j.unique(unique_name(u), UNIQUE_TTL);
            }
            jobs.push(j);
        }
        let out = if jobs.len() == 1 {
            vec![self
                .client
                .enqueue_job(jobs.remove(0))
                .await
                .ctx("enqueue")?]
        } else {
            self.client.enqueue_batch(jobs).await.ctx("enqueue batch")?
        };
        prop_assert_eq!(out.len(), specs.len(), "one result per job");
        for ((s, seq), e) in specs.iter().zip(seqs).zip(out) {
            let key = s.unique.map(unique_name);
            if let Some(holder) = key.as_ref().and_then(|k| self.m.unique.get(k)) {
                self.tally
                    .entry("enqueue: duplicate")
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                prop_assert!(
                    e.duplicate && e.id.as_str() == holder,
                    "key {:?} is held by {}: expected a duplicate of it, got {:?}",
                    key,
                    holder,
                    e
                );
                continue;
            }
            prop_assert!(!e.duplicate, "expected a new job, got {:?}", e);
            let id = e.id.as_str().to_string();
            if let Some(last) = self.m.jobs.last() {
                prop_assert!(
                    id > last.id,
                    "ids grow with creation (FIFO rests on it): {} after {}",
                    id,
                    last.id
                );
            }
            let (at, due) = match s.delay_hours {
                Some(h) => (Where::Scheduled, self.m.now + h),
                None => (Where::Pending, self.m.now),
            };
            if let Some(k) = &key {
                self.m.unique.insert(k.clone(), id.clone());
            }
            self.did(
                if s.delay_hours.is_some() {
                    "enqueue: scheduled"
                } else {
                    "enqueue: pending"
                },
                1,
            );
            self.m.by_id.insert(id.clone(), self.m.jobs.len());
            self.m.jobs.push(MJob {
                seq,
                id,
                priority: s.priority,
                max_attempts: s.max_attempts,
                unique: key,
                failed: 0,
                errors: 0,
                at,
                due,
                held: None,
            });
        }
        Ok(())
    }

    async fn fetch(&mut self, n: usize, recovered: Option<usize>) -> R {
        // Due jobs are promoted by every fetch, paused or not.
        let now = self.m.now;
        let mut promoted = 0;
        for j in &mut self.m.jobs {
            if matches!(j.at, Where::Scheduled | Where::Retrying) && j.due <= now {
                j.at = Where::Pending;
                j.due = now;
                promoted += 1;
            }
        }
        self.did("fetch: promoted", promoted);
        let ready = self.m.in_states(&[Where::Pending, Where::Recovered]).len();
        self.did(
            "fetch: paused with jobs ready",
            usize::from(self.m.paused && ready > 0),
        );
        let (first, rest) = if self.m.paused {
            (Vec::new(), Vec::new())
        } else {
            let mut first = self.m.run_order(self.m.in_states(&[Where::Recovered]));
            first.truncate(recovered.unwrap_or(1).min(n));
            let mut rest = self.m.run_order(self.m.in_states(&[Where::Pending]));
            rest.truncate(n - first.len());
            (first, rest)
        };
        let expected: Vec<usize> = first.iter().chain(&rest).copied().collect();
        let any_expired = self.expired(0)?.1 > 0;
        self.did("fetch: leased", expected.len());
        self.did("fetch: leased recovered", first.len());
        self.did(
            "fetch: recovered jobs left behind by the limit",
            usize::from(
                !first.is_empty() && self.m.in_states(&[Where::Recovered]).len() > first.len(),
            ),
        );
        let mut prios: Vec<u8> = expected.iter().map(|&i| self.m.jobs[i].priority).collect();
        prios.dedup();
        self.did(
            "fetch: batch of mixed priorities",
            usize::from(prios.len() > 1),
        );
        let f = fetch(&self.broker, n, recovered).await.ctx("fetch")?;
        prop_assert!(f.garbage.is_empty(), "garbage: {:?}", f.garbage);
        prop_assert_eq!(f.expired, any_expired, "fetch: some lease has expired");
        let got: Vec<&str> = f.jobs.iter().map(|l| l.lease.id.as_str()).collect();
        let want: Vec<&str> = expected
            .iter()
            .map(|&i| self.m.jobs[i].id.as_str())
            .collect();
        prop_assert_eq!(
            &got,
            &want,
            "fetch order: recovered first, then priority, then FIFO"
        );
        prop_assert_eq!(f.recovered, first.len(), "recovered jobs in the batch");
        let waiting = !self
            .m
            .in_states(&[Where::Scheduled, Where::Retrying])
            .is_empty();
        prop_assert_eq!(
            f.next_due_ms.is_some(),
            waiting,
            "next due time iff jobs wait"
        );
        for (leased, &i) in f.jobs.into_iter().zip(&expected) {
            prop_assert!(leased.lease.token > 0 && leased.lease.token == f.token);
            let job = leased.job.ctx("leased envelope")?;
            let mj = &self.m.jobs[i];
            prop_assert!(mj.due <= now, "{} started before its due time", mj.id);
            prop_assert_eq!(job.failed, mj.failed, "attempts of {}", &mj.id);
            prop_assert_eq!(job.errors.len(), mj.errors, "history of {}", &mj.id);
            prop_assert_eq!(job.priority, mj.priority);
            let mj = &mut self.m.jobs[i];
            mj.at = Where::Active;
            mj.held = Some(Held {
                lease: leased.lease,
                job,
                expired: false,
            });
        }
        Ok(())
    }

    fn held(&self, i: usize) -> R<Held> {
        self.m.jobs[i]
            .held
            .clone()
            .ok_or_else(|| fail(format!("model: active job {} has no lease", i)))
    }

    async fn complete(&mut self, picks: &[u8]) -> R {
        let mut ix: Vec<usize> = Vec::new();
        for p in picks {
            if let Some(i) = self.m.pick(*p, &[Where::Active]) {
                if !ix.contains(&i) {
                    ix.push(i);
                }
            }
        }
        if ix.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for &i in &ix {
            let h = self.held(i)?;
            done.push(Completion {
                unique_key: h.job.unique_key.clone(),
                lease: h.lease,
                result: vec![0xc0],
                name: h.job.name.clone(),
                timing: Default::default(),
            });
        }
        let ok = self
            .broker
            .complete(&done, &self.retention)
            .await
            .ctx("complete")?;
        prop_assert_eq!(ok, vec![true; ix.len()], "held leases complete");
        self.did("complete", ix.len());
        for i in ix {
            self.m.jobs[i].at = Where::Completed;
            self.m.release_unique(i);
            self.m.retire(i);
        }
        Ok(())
    }

    async fn fail(&mut self, pick: u8, fate: Fate) -> R {
        let Some(i) = self.m.pick(pick, &[Where::Active]) else {
            return Ok(());
        };
        let h = self.held(i)?;
        let mut job = h.job.clone();
        let snooze = matches!(fate, Fate::Snooze(_));
        let now_ms = common::now_ms();
        if !snooze {
            job.record_failure("error", "model: the handler failed", now_ms);
        }
        let settle = Settle::decide(&job, &fate.action(), now_ms, 0.5);
        let mj = &self.m.jobs[i];
        let exhausted = mj.failed + 1 >= mj.max_attempts;
        let now = self.m.now;
        // (where it goes, when it is due, the settle the worker must have decided)
        let (to, due, want) = match fate {
            Fate::Snooze(h) => (
                Where::Scheduled,
                now + h,
                Settle::Snooze {
                    at_ms: now_ms + h * HOUR_MS,
                },
            ),
            Fate::Discard => (Where::Completed, now, Settle::Discard),
            Fate::DeadLetter => (Where::Dead, now, Settle::Dead),
            _ if exhausted => (Where::Dead, now, Settle::Dead),
            Fate::RetryNow => (Where::Pending, now, Settle::Retry { at_ms: now_ms }),
            Fate::RetryAfter(h) => (
                Where::Retrying,
                now + h,
                Settle::Retry {
                    at_ms: now_ms + h * HOUR_MS,
                },
            ),
            Fate::Backoff => (
                Where::Retrying,
                now + BACKOFF_HOURS,
                Settle::Retry {
                    at_ms: now_ms + BACKOFF_HOURS * HOUR_MS,
                },
            ),
        };
        prop_assert_eq!(&settle, &want, "Settle::decide for {:?}", fate);
        let ok = self
            .broker
            .fail(
                &h.lease,
                &job,
                &settle,
                Cause::Handler,
                Default::default(),
                &self.retention,
            )
            .await
            .ctx("fail")?;
        prop_assert!(ok, "a held lease settles");
        self.did(
            match (&want, to) {
                (Settle::Dead, _) if exhausted && !matches!(fate, Fate::DeadLetter) => {
                    "fail: exhausted, dead"
                }
                (Settle::Dead, _) => "fail: dead-lettered",
                (Settle::Discard, _) => "fail: discarded",
                (Settle::Snooze { .. }, _) => "fail: snoozed",
                (_, Where::Pending) => "fail: retry now",
                _ => "fail: retry later",
            },
            1,
        );
        if !snooze {
            self.m.count_failure(i);
        }
        let mj = &mut self.m.jobs[i];
        mj.at = to;
        mj.due = due;
        if matches!(to, Where::Dead | Where::Completed) {
            self.m.release_unique(i);
        }
        self.m.retire(i);
        Ok(())
    }

    async fn requeue(&mut self, pick: u8) -> R {
        let Some(i) = self.m.pick(pick, &[Where::Active]) else {
            return Ok(());
        };
        let h = self.held(i)?;
        let n = self
            .broker
            .requeue(&[h.lease.key().to_string()])
            .await
            .ctx("requeue")?;
        prop_assert_eq!(n, 1, "a held lease is requeued");
        self.did("requeue", 1);
        self.m.jobs[i].at = Where::Pending;
        self.m.jobs[i].due = self.m.now;
        self.m.retire(i);
        Ok(())
    }

    async fn heartbeat(&mut self, pick: u8) -> R {
        let Some(i) = self.m.pick(pick, &[Where::Active]) else {
            return Ok(());
        };
        let h = self.held(i)?;
        let held = self
            .broker
            .extend(&[h.lease.key().to_string()], LEASE)
            .await
            .ctx("extend")?;
        prop_assert_eq!(held, vec![true], "a held lease is extended");
        self.did("heartbeat", 1);
        self.did(
            "heartbeat: revived an expired lease",
            usize::from(h.expired),
        );
        if let Some(h) = self.m.jobs[i].held.as_mut() {
            h.expired = false;
        }
        Ok(())
    }

    async fn crash(&mut self, i: usize) -> R {
        let h = self.held(i)?;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.active())
            .arg("XX")
            .arg(0)
            .arg(h.lease.key())
            .query_async(&mut self.raw)
            .await
            .ctx("expire a lease")?;
        self.did("crash", 1);
        if let Some(h) = self.m.jobs[i].held.as_mut() {
            h.expired = true;
        }
        Ok(())
    }

    /// The expired leases a pass takes over: they all score 0, so the first `limit` in the
    /// order of their `<id>:<token>`.
    fn expired(&self, limit: usize) -> R<(Vec<(String, usize)>, usize)> {
        let mut expired: Vec<(String, usize)> = Vec::new();
        for i in self.m.in_states(&[Where::Active]) {
            let h = self.held(i)?;
            if h.expired {
                expired.push((h.lease.key().to_string(), i));
            }
        }
        expired.sort();
        let all = expired.len();
        expired.truncate(limit);
        Ok((expired, all))
    }

    /// What the next pass does: after an outage, an amnesty for every lease (expired, or
    /// expiring within a lease: with leases of one length, every lease held); else the
    /// take-over of the first `limit` expired leases.
    fn pass(&self, limit: usize) -> R<Pass> {
        if self.m.unwatched {
            return Ok(Pass::Amnesty(self.m.in_states(&[Where::Active])));
        }
        let (expired, all) = self.expired(limit)?;
        Ok(Pass::TakeOver(expired, all))
    }

    async fn reclaim(&mut self, limit: usize, settle: bool) -> R {
        let expected = self.pass(limit)?;
        let r = self.broker.reclaim(limit, LEASE).await.ctx("reclaim")?;
        let all = match &expected {
            Pass::TakeOver(_, all) => *all,
            Pass::Amnesty(_) => 0,
        };
        self.did(
            "reclaim: more expired than the limit",
            usize::from(all > limit),
        );
        self.take_over(r, expected, settle).await
    }

    /// A worker's heartbeat: extends the leases it holds (picks among the active jobs, and one
    /// lost lease when `zombie`), and with `watch` takes over expired leases in the same call.
    async fn beat(&mut self, picks: &[u8], zombie: bool, watch: Option<usize>) -> R {
        let mut ix: Vec<usize> = Vec::new();
        for p in picks {
            if let Some(i) = self.m.pick(*p, &[Where::Active]) {
                if !ix.contains(&i) {
                    ix.push(i);
                }
            }
        }
        let mut leases = Vec::new();
        for &i in &ix {
            leases.push(self.held(i)?.lease.key().to_string());
        }
        let mut want_held = vec![true; ix.len()];
        if zombie && !self.m.stale.is_empty() {
            let (lost, _) = &self.m.stale[picks.len() % self.m.stale.len()];
            leases.push(lost.key().to_string());
            want_held.push(false);
        }
        // The caller's own leases are extended first: a late worker never takes over its own.
        let mut revived = 0;
        for &i in &ix {
            if let Some(h) = self.m.jobs[i].held.as_mut() {
                revived += usize::from(h.expired);
                h.expired = false;
            }
        }
        let expected = match watch {
            Some(limit) => Some(self.pass(limit)?),
            None => None,
        };
        // Leases still expired once the call is done: the pass forgives or takes over some.
        let (_, expired_now) = self.expired(0)?;
        let left_expired = match &expected {
            None => expired_now,
            Some(Pass::Amnesty(_)) => 0,
            Some(Pass::TakeOver(taken, all)) => all - taken.len(),
        };
        let any_lease = !self.m.in_states(&[Where::Active]).is_empty();
        let b = self
            .broker
            .beat(
                &leases,
                LEASE,
                watch.map(|limit| Watch { limit, gap: LEASE }),
            )
            .await
            .ctx("beat")?;
        prop_assert_eq!(&b.held, &want_held, "beat: the leases still held");
        match b.next_expiry {
            None => prop_assert!(!any_lease, "beat: no next expiry, yet leases are held"),
            Some(d) if left_expired > 0 => prop_assert_eq!(
                d,
                Duration::ZERO,
                "beat: {} leases are still expired",
                left_expired
            ),
            Some(d) => prop_assert!(
                any_lease && d > Duration::ZERO && d <= LEASE,
                "beat: next expiry in {:?} (leases held: {})",
                d,
                any_lease
            ),
        }
        self.did("beat: extended", ix.len());
        self.did("beat: revived its own expired lease", revived);
        self.did("beat: refused a lost lease", want_held.len() - ix.len());
        match expected {
            Some(expected) => self.take_over(b.reclaimed, expected, true).await,
            None => {
                prop_assert!(
                    b.reclaimed.jobs.is_empty() && b.reclaimed.amnesty.is_none(),
                    "a beat without a watch takes nothing over"
                );
                Ok(())
            }
        }
    }

    /// Checks a pass's take-overs against the `expected` expired leases; the caller now holds
    /// them, and with `settle` records the lost attempts as the worker does.
    async fn take_over(&mut self, r: Reclaimed, pass: Pass, settle: bool) -> R {
        let expected = match pass {
            Pass::TakeOver(expected, _) => expected,
            Pass::Amnesty(ix) => {
                // Nobody watched: every lease gets a full lease, none is taken over.
                self.m.unwatched = false;
                let a = r
                    .amnesty
                    .ok_or_else(|| fail("an unwatched pass gives an amnesty"))?;
                prop_assert!(r.jobs.is_empty(), "an amnesty takes nothing over");
                prop_assert_eq!(a.leases, ix.len() as u64, "leases under the amnesty");
                prop_assert!(a.unwatched > LEASE, "unwatched for {:?}", a.unwatched);
                self.did("pass: amnesty", 1);
                self.did("pass: leases under an amnesty", ix.len());
                for i in ix {
                    if let Some(h) = self.m.jobs[i].held.as_mut() {
                        h.expired = false;
                    }
                }
                return Ok(());
            }
        };
        prop_assert!(r.amnesty.is_none(), "no amnesty: {:?}", r.amnesty);
        let got: Vec<&str> = r.jobs.iter().map(|l| l.lease.id.as_str()).collect();
        let want: Vec<&str> = expected
            .iter()
            .map(|(_, i)| self.m.jobs[*i].id.as_str())
            .collect();
        prop_assert_eq!(&got, &want, "a pass takes over the expired leases");
        self.did("pass: taken over", got.len());
        let mut taken = Vec::new();
        for (leased, (old, i)) in r.jobs.into_iter().zip(expected) {
            prop_assert!(
                leased.lease.key() != old,
                "a lease taken over gets a new token"
            );
            let job = leased.job.ctx("envelope taken over")?;
            let mj = &self.m.jobs[i];
            prop_assert_eq!(job.failed, mj.failed, "attempts of {}", &mj.id);
            prop_assert_eq!(job.errors.len(), mj.errors, "history of {}", &mj.id);
            self.m.retire(i);
            self.m.jobs[i].held = Some(Held {
                lease: leased.lease,
                job,
                expired: false,
            });
            taken.push(i);
        }
        if settle {
            for i in taken {
                self.settle_lost(i).await?;
            }
        }
        Ok(())
    }

    /// What the worker's reclaimer does with a reclaimed job: one lost attempt, back at once.
    async fn settle_lost(&mut self, i: usize) -> R {
        let h = self.held(i)?;
        let mut job = h.job.clone();
        let now_ms = common::now_ms();
        job.record_failure("worker_lost", "model: the worker was lost", now_ms);
        let settle = Settle::decide(&job, &Action::RetryAfter(Duration::ZERO), now_ms, 0.5);
        let mj = &self.m.jobs[i];
        let (to, want) = if mj.failed + 1 >= mj.max_attempts {
            (Where::Dead, Settle::Dead)
        } else {
            let to = match self.m.lost {
                LostGoTo::Pending => Where::Pending,
                LostGoTo::Recovered => Where::Recovered,
            };
            (to, Settle::Retry { at_ms: now_ms })
        };
        prop_assert_eq!(&settle, &want, "Settle::decide for a lost attempt");
        let ok = self
            .broker
            .fail(
                &h.lease,
                &job,
                &settle,
                Cause::WorkerLost,
                Default::default(),
                &self.retention,
            )
            .await
            .ctx("fail (worker lost)")?;
        prop_assert!(ok, "the reclaimer's lease settles");
        self.did(
            match to {
                Where::Dead => "lost attempt: dead",
                Where::Recovered => "lost attempt: recovered",
                _ => "lost attempt: pending",
            },
            1,
        );
        self.m.count_failure(i);
        self.m.jobs[i].at = to;
        self.m.jobs[i].due = self.m.now;
        if to == Where::Dead {
            self.m.release_unique(i);
        }
        self.m.retire(i);
        Ok(())
    }

    async fn zombie(&mut self, pick: u8, z: Zombie) -> R {
        if self.m.stale.is_empty() {
            return Ok(());
        }
        let (lease, job) = self.m.stale[pick as usize % self.m.stale.len()].clone();
        let now_ms = common::now_ms();
        let mut failed = job.clone();
        failed.record_failure("error", "model: a zombie failed", now_ms);
        let r = &self.retention;
        let b = &self.broker;
        let refused = match z {
            Zombie::Complete => {
                let done = [Completion {
                    unique_key: job.unique_key.clone(),
                    lease: lease.clone(),
                    result: vec![0xc0],
                    name: job.name.clone(),
                    timing: Default::default(),
                }];
                b.complete(&done, r).await.ctx("complete")? == vec![false]
            }
            Zombie::Retry => {
                let s = Settle::Retry { at_ms: now_ms };
                !b.fail(&lease, &failed, &s, Cause::Handler, Default::default(), r)
                    .await
                    .ctx("fail")?
            }
            Zombie::Dead => !b
                .fail(
                    &lease,
                    &failed,
                    &Settle::Dead,
                    Cause::Handler,
                    Default::default(),
                    r,
                )
                .await
                .ctx("fail")?,
            Zombie::Discard => !b
                .fail(
                    &lease,
                    &failed,
                    &Settle::Discard,
                    Cause::Handler,
                    Default::default(),
                    r,
                )
                .await
                .ctx("fail")?,
            Zombie::Snooze => {
                let s = Settle::Snooze { at_ms: now_ms };
                !b.fail(&lease, &job, &s, Cause::Handler, Default::default(), r)
                    .await
                    .ctx("fail")?
            }
            Zombie::Extend => {
                b.extend(&[lease.key().to_string()], LEASE)
                    .await
                    .ctx("extend")?
                    == vec![false]
            }
            Zombie::Requeue => b.requeue(&[lease.key().to_string()]).await.ctx("requeue")? == 0,
        };
        prop_assert!(refused, "a lost lease {} is refused ({:?})", lease.key(), z);
        self.did("zombie refused", 1);
        Ok(())
    }

    async fn advance(&mut self, h: i64) -> R {
        self.m.now += h;
        let now = self.m.now;
        let due: HashSet<String> = self
            .m
            .jobs
            .iter()
            .filter(|j| matches!(j.at, Where::Scheduled | Where::Retrying) && j.due <= now)
            .map(|j| j.id.clone())
            .collect();
        self.did("advance: became due", due.len());
        if due.is_empty() {
            return Ok(());
        }
        for set in [self.keys.scheduled(), self.keys.retry()] {
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(&set)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.raw)
                .await
                .ctx("zrange")?;
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&set).arg("XX");
            let mut any = false;
            for m in &members {
                if due.contains(&id_of(m)?) {
                    cmd.arg(0).arg(m.as_slice());
                    any = true;
                }
            }
            if any {
                let _: i64 = cmd.query_async(&mut self.raw).await.ctx("rescore")?;
            }
        }
        Ok(())
    }

    async fn replay(&mut self, pick: u8, via_client: bool) -> R {
        let Some(i) = self.m.pick(pick, &[Where::Dead]) else {
            return Ok(());
        };
        let id = self.m.jobs[i].id.clone();
        if via_client {
            self.client
                .replay_dead(&self.queue, &jid(&id)?)
                .await
                .ctx("replay_dead")?;
        } else {
            let view = self
                .admin
                .find(&id, Some(&self.queue))
                .await
                .ctx("find")?
                .ok_or_else(|| fail(format!("admin does not find dead job {id}")))?;
            prop_assert_eq!(view.state, State::Dead);
            let n = self.admin.retry(&[view]).await.ctx("admin retry")?;
            prop_assert_eq!(n, 1, "a dead job is replayed");
        }
        self.did(
            if via_client {
                "replay: client"
            } else {
                "replay: admin"
            },
            1,
        );
        // A fresh set of attempts: the only way the attempt count goes down.
        let mj = &mut self.m.jobs[i];
        mj.at = Where::Pending;
        mj.due = self.m.now;
        mj.failed = 0;
        if let Some(f) = self.m.floor.get_mut(&id) {
            f.0 = 0;
        }
        Ok(())
    }

    async fn promote(&mut self, pick: u8) -> R {
        let waiting = [Where::Scheduled, Where::Retrying, Where::Recovered];
        let Some(i) = self.m.pick(pick, &waiting) else {
            return Ok(());
        };
        let id = self.m.jobs[i].id.clone();
        let view = self
            .admin
            .find(&id, Some(&self.queue))
            .await
            .ctx("find")?
            .ok_or_else(|| fail(format!("admin does not find waiting job {id}")))?;
        prop_assert_eq!(view.state.name(), self.m.jobs[i].at.name(), "find {}", &id);
        let n = self.admin.retry(&[view]).await.ctx("admin retry")?;
        prop_assert_eq!(n, 1, "a waiting job is promoted");
        self.did("promote", 1);
        // The operator overrides the due time: the job is due now.
        self.m.jobs[i].at = Where::Pending;
        self.m.jobs[i].due = self.m.now;
        Ok(())
    }

    /// Reads the whole queue back and compares it with the model.
    async fn check(&mut self) -> R {
        let k = &self.keys;
        let zsets = [
            (Where::Pending, k.pending()),
            (Where::Scheduled, k.scheduled()),
            (Where::Retrying, k.retry()),
            (Where::Recovered, self.keys.recovered()),
            (Where::Active, k.active()),
            (Where::Dead, k.dead()),
            (Where::Completed, k.completed()),
        ];
        let hashes = [k.inflight(), k.dead_jobs(), k.results()];
        let mut pipe = redis::pipe();
        for (_, z) in &zsets {
            pipe.cmd("ZRANGE").arg(z).arg(0).arg(-1).arg("WITHSCORES");
        }
        for h in &hashes {
            pipe.hgetall(h);
        }
        for u in 0..UNIQUE_KEYS {
            pipe.get(k.unique(&unique_name(u)));
        }
        pipe.hexists(k.meta(), "paused");
        let values: Vec<redis::Value> = pipe
            .query_async(&mut self.raw)
            .await
            .ctx("read the queue back")?;
        let real_now = common::now_ms();
        let mut values = values.into_iter();
        let mut next = || values.next().ok_or_else(|| fail("short pipeline reply"));
        fn parse<T: redis::FromRedisValue>(v: redis::Value) -> R<T> {
            redis::FromRedisValue::from_redis_value(v).ctx("pipeline reply")
        }

        // id -> where Redis has it (each sorted set), with the score and the member or lease.
        let mut seen: BTreeMap<String, Vec<(Where, f64, Vec<u8>)>> = BTreeMap::new();
        for (w, _) in &zsets {
            let entries: Vec<(Vec<u8>, f64)> = parse(next()?)?;
            for (e, score) in entries {
                let id = match w {
                    Where::Pending | Where::Scheduled | Where::Retrying | Where::Recovered => {
                        id_of(&e)?
                    }
                    Where::Active => id_of_lease(&e)?,
                    Where::Dead | Where::Completed => String::from_utf8(e.clone()).ctx("id")?,
                };
                seen.entry(id).or_default().push((*w, score, e));
            }
        }
        let inflight: HashMap<String, Vec<u8>> = parse(next()?)?;
        let dead_jobs: HashMap<String, Vec<u8>> = parse(next()?)?;
        let results: HashMap<String, Vec<u8>> = parse(next()?)?;
        let mut uniques = BTreeMap::new();
        for u in 0..UNIQUE_KEYS {
            let holder: Option<String> = parse(next()?)?;
            if let Some(h) = holder {
                uniques.insert(unique_name(u), h);
            }
        }
        let paused: bool = parse(next()?)?;

        // Exactly one state per job, and the one the model says.
        for (id, places) in &seen {
            let states: Vec<Where> = places.iter().map(|p| p.0).collect();
            prop_assert_eq!(
                places.len(),
                1,
                "job {} is in more than one state: {:?}",
                id,
                states
            );
            prop_assert!(
                self.m.by_id.contains_key(id),
                "job {} in {:?} is unknown to the model",
                id,
                states
            );
        }
        for j in &self.m.jobs {
            let Some(places) = seen.get(&j.id) else {
                return Err(fail(format!(
                    "job {} (model: {:?}) is in no state",
                    j.id, j.at
                )));
            };
            let (w, score, entry) = &places[0];
            prop_assert_eq!(*w, j.at, "state of job {}", &j.id);
            let score = *score as i64;
            // The member or envelope the state keeps, to read the attempts from.
            let member: Option<Vec<u8>> = match w {
                Where::Pending => {
                    prop_assert_eq!(score, 0, "pending score of {}", &j.id);
                    Some(entry.clone())
                }
                Where::Recovered => Some(entry.clone()),
                Where::Scheduled | Where::Retrying => {
                    prop_assert_eq!(
                        score <= real_now,
                        j.due <= self.m.now,
                        "{} ({:?}, due at hour {}, now hour {}) has score {}: in the past iff due",
                        &j.id,
                        j.at,
                        j.due,
                        self.m.now,
                        score
                    );
                    Some(entry.clone())
                }
                Where::Active => {
                    let h = j
                        .held
                        .as_ref()
                        .ok_or_else(|| fail(format!("model: active {} holds no lease", j.id)))?;
                    prop_assert_eq!(
                        entry.as_slice(),
                        h.lease.key().as_bytes(),
                        "the lease of {}",
                        &j.id
                    );
                    prop_assert_eq!(
                        score <= real_now,
                        h.expired,
                        "lease {} expired iff its worker crashed",
                        h.lease.key()
                    );
                    Some(
                        inflight
                            .get(&j.id)
                            .cloned()
                            .ok_or_else(|| fail(format!("active {} has no inflight", j.id)))?,
                    )
                }
                Where::Dead => Some(
                    dead_jobs
                        .get(&j.id)
                        .cloned()
                        .ok_or_else(|| fail(format!("dead {} has no stored member", j.id)))?,
                ),
                Where::Completed => {
                    let o = results
                        .get(&j.id)
                        .ok_or_else(|| fail(format!("completed {} has no result", j.id)))?;
                    queue::Outcome::decode(o).ctx("outcome")?.job
                }
            };
            if let Some(member) = member {
                let job = queue::wire::decode_member(&member, &self.queue).ctx("envelope")?;
                prop_assert_eq!(&job.id.as_str(), &j.id.as_str());
                // The envelope survives every state change: only attempts and history move.
                let seq: u64 = queue::wire::decode_value(&job.args, "args").ctx("args")?;
                prop_assert_eq!(
                    (job.name.as_str(), seq, job.priority, job.max_attempts),
                    (ModelJob::NAME, j.seq, j.priority, Some(j.max_attempts)),
                    "envelope of {}",
                    &j.id
                );
                prop_assert_eq!(&job.unique_key, &j.unique, "unique key of {}", &j.id);
                prop_assert_eq!(
                    job.backoff,
                    Some(Backoff::fixed(hours(BACKOFF_HOURS))),
                    "backoff of {}",
                    &j.id
                );
                let floor = self.m.floor.entry(j.id.clone()).or_insert((0, 0));
                prop_assert!(
                    job.failed >= floor.0 && job.errors.len() >= floor.1,
                    "attempts of {} went down: {} failed, {} errors after {:?}",
                    &j.id,
                    job.failed,
                    job.errors.len(),
                    *floor
                );
                *floor = (job.failed, job.errors.len());
                prop_assert_eq!(job.failed, j.failed, "attempts of {} ({:?})", &j.id, j.at);
                prop_assert_eq!(job.errors.len(), j.errors, "history of {}", &j.id);
            }
        }
        // The paired hashes hold exactly the ids of their sorted sets.
        let ids_in = |w: Where| -> HashSet<&str> {
            self.m
                .jobs
                .iter()
                .filter(|j| j.at == w)
                .map(|j| j.id.as_str())
                .collect()
        };
        fn keys_of(h: &HashMap<String, Vec<u8>>) -> HashSet<&str> {
            h.keys().map(String::as_str).collect()
        }
        prop_assert_eq!(keys_of(&inflight), ids_in(Where::Active), "inflight");
        prop_assert_eq!(keys_of(&dead_jobs), ids_in(Where::Dead), "dead jobs");
        prop_assert_eq!(keys_of(&results), ids_in(Where::Completed), "results");
        prop_assert_eq!(&uniques, &self.m.unique, "idempotency keys");
        prop_assert_eq!(paused, self.m.paused, "paused");

        // The operator's view: every state it knows lists what the model has there.
        let lists = futures_util::future::try_join_all(
            State::ALL
                .into_iter()
                .map(|s| self.admin.list(&self.queue, s, 0, 1000)),
        )
        .await
        .ctx("admin list")?;
        for (s, views) in State::ALL.into_iter().zip(lists) {
            let w = Where::named(s.name())
                .ok_or_else(|| fail(format!("the model knows no state {:?}", s.name())))?;
            let mut listed: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
            listed.sort_unstable();
            let mut want: Vec<&str> = ids_in(w).into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(listed, want, "admin list of {}", s.name());
        }
        let c = self.client.counts(&self.queue).await.ctx("counts")?;
        let n = |w: Where| ids_in(w).len() as u64;
        prop_assert_eq!(
            (
                c.pending,
                c.scheduled,
                c.retrying,
                c.recovered,
                c.active,
                c.dead,
                c.completed
            ),
            (
                n(Where::Pending),
                n(Where::Scheduled),
                n(Where::Retrying),
                n(Where::Recovered),
                n(Where::Active),
                n(Where::Dead),
                n(Where::Completed)
            ),
            "counts"
        );

        // The metrics history counts what the stats counters count, once the broker has sent
        // what it counted (a worker's heartbeat does): lost leases are not counted, and fetch
        // counts the garbage it dead-letters. Every minute of the queue is added up.
        self.broker.flush_metrics().await.ctx("flush metrics")?;
        // The minutes' hashes and the hours' each add up to the counters, on their own.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(self.keys.metrics_pattern())
            .query_async(&mut self.raw)
            .await
            .ctx("metrics keys")?;
        let mut history: HashMap<String, i64> = HashMap::new();
        let mut hourly: HashMap<String, i64> = HashMap::new();
        for key in &keys {
            let fields: HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut self.raw)
                .await
                .ctx("metrics")?;
            let sums = if key.contains(":metrics:hour:") {
                &mut hourly
            } else {
                &mut history
            };
            for (field, n) in fields {
                let metric = field.split_once('|').map_or(field.as_str(), |(m, _)| m);
                *sums.entry(metric.to_string()).or_default() += n;
            }
        }
        prop_assert_eq!(&hourly, &history, "the hours' sums against the minutes'");
        let stats: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(self.keys.stats())
            .query_async(&mut self.raw)
            .await
            .ctx("stats")?;
        let stat = |f: &str| stats.get(f).copied().unwrap_or(0);
        let hist = |f: &str| history.get(f).copied().unwrap_or(0);
        prop_assert_eq!(
            (hist("c"), hist("f"), hist("r"), hist("d")),
            (
                stat("completed"),
                stat("failed") + stat("recovered"),
                stat("retried"),
                stat("dead")
            ),
            "history (completed, failed, retried, dead) against the stats counters"
        );
        Ok(())
    }

    /// Deletes every key of the case's queue (a passing case leaves nothing behind).
    async fn cleanup(&mut self) -> R {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(self.keys.metrics_pattern())
            .query_async(&mut self.raw)
            .await
            .ctx("metrics keys")?;
        keys.extend(self.keys.all_fixed());
        keys.extend((0..UNIQUE_KEYS).map(|u| self.keys.unique(&unique_name(u))));
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut self.raw)
            .await
            .ctx("cleanup")?;
        Ok(())
    }
}

async fn run_case(
    env: &Env,
    raw: redis::aio::MultiplexedConnection,
    queue: &str,
    lost: LostGoTo,
    ops: &[Op],
    tally: &std::sync::Mutex<BTreeMap<&'static str, u64>>,
) -> R {
    let mut case = Case::new(env, raw, queue, lost)?;
    for (n, op) in ops.iter().enumerate() {
        let at = |e: TestCaseError| fail(format!("step {n} {op:?} (queue {queue}): {e}"));
        case.step(op).await.map_err(at)?;
        case.check().await.map_err(at)?;
    }
    {
        let mut total = tally.lock().unwrap_or_else(|p| p.into_inner());
        for (what, n) in std::mem::take(&mut case.tally) {
            *total.entry(what).or_default() += n;
        }
    }
    case.cleanup().await
}

/// Where the engine puts an attempt lost with its worker (pending, or a recovered set):
/// one job through fetch, a crash, reclaim and the worker's settle.
async fn probe(env: &Env, mut raw: redis::aio::MultiplexedConnection) -> LostGoTo {
    let queue = "model-probe";
    let broker = Broker::new(env.client.clone(), queue).expect("broker");
    let keys = env.client.keys(queue).expect("keys");
    env.client
        .enqueue_job(
            NewJob::of::<ModelJob>(&0)
                .expect("encode")
                .queue(queue)
                .max_attempts(3),
        )
        .await
        .expect("enqueue");
    assert_eq!(broker.fetch(1, LEASE).await.expect("fetch").jobs.len(), 1);
    assert_eq!(common::rescore_all(&mut raw, &keys.active(), 0).await, 1);
    let mut r = broker.reclaim(1, LEASE).await.expect("reclaim").jobs;
    assert_eq!(r.len(), 1, "the crashed lease is reclaimed");
    let leased = r.remove(0);
    let mut job = leased.job.expect("decodes");
    let now = common::now_ms();
    job.record_failure("worker_lost", "probe", now);
    let settle = Settle::decide(&job, &Action::RetryAfter(Duration::ZERO), now, 0.5);
    assert!(broker
        .fail(
            &leased.lease,
            &job,
            &settle,
            Cause::WorkerLost,
            Default::default(),
            &Retention::default()
        )
        .await
        .expect("fail"));
    let (pending, recovered): (u64, u64) = redis::pipe()
        .zcard(keys.pending())
        .zcard(keys.recovered())
        .query_async(&mut raw)
        .await
        .expect("zcard");
    match (pending, recovered) {
        (1, 0) => LostGoTo::Pending,
        (0, 1) => LostGoTo::Recovered,
        other => panic!("a lost attempt went nowhere known: (pending, recovered) = {other:?}"),
    }
}

#[test]
fn the_engine_agrees_with_its_model() {
    let soak = std::env::var("QUEUE_SOAK").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(Env::start());
    let raw = rt.block_on(env.raw());
    let lost = rt.block_on(probe(&env, raw.clone()));
    let config = Config {
        cases: if soak { SOAK_CASES } else { CASES },
        // Failures are reported with their minimal sequence; nothing is written to the tree.
        failure_persistence: None,
        max_shrink_iters: 4_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let cases = AtomicU64::new(0);
    let steps = AtomicU64::new(0);
    let tally = std::sync::Mutex::new(BTreeMap::new());
    let started = Instant::now();
    let result = runner.run(&ops(), |ops| {
        let queue = format!("model-{}", cases.fetch_add(1, Ordering::Relaxed));
        steps.fetch_add(ops.len() as u64, Ordering::Relaxed);
        rt.block_on(async {
            tokio::time::timeout(
                CASE_LIMIT,
                run_case(&env, raw.clone(), &queue, lost, &ops, &tally),
            )
            .await
            .unwrap_or_else(|_| Err(fail(format!("the case took over {CASE_LIMIT:?}"))))
        })
    });
    eprintln!(
        "model: {} cases, {} steps in {:.1?} (lost attempts go to {:?})",
        cases.load(Ordering::Relaxed),
        steps.load(Ordering::Relaxed),
        started.elapsed(),
        lost
    );
    for (what, n) in tally.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        eprintln!("model:   {what}: {n}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
