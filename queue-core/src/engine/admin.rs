//! Operator access: what the `queue` CLI shows and does. Reads are O(1) or O(log n + page) per
//! queue (no KEYS, no scan of all jobs); writes go through one script per state change.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::engine::client::{now_ms, Client, QueueCounts, MAX_BATCH};
use crate::engine::codec::{self, Outcome};
use crate::engine::history::{self, Minute};
use crate::engine::job::{Job, JobId, JobState};
use crate::engine::scripts::scripts;
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::scan::Scan;

/// A state as operators name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum State {
    /// Ready to run.
    Pending,
    /// Delayed.
    Scheduled,
    /// Failed, waiting for the retry.
    Retrying,
    /// Taken back from a worker that was lost, waiting to run again (a worker process leases
    /// at most one of them at a time).
    Recovered,
    /// Leased by a worker.
    Active,
    /// Dead-lettered.
    Dead,
    /// Finished and retained (completed or discarded).
    Completed,
}

impl State {
    /// Every state, in life order.
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Scheduled,
        State::Retrying,
        State::Recovered,
        State::Active,
        State::Dead,
        State::Completed,
    ];

    /// Parses a state name (`pending`, `scheduled`, `retrying`, `recovered`, `active`, `dead`,
    /// `completed`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the valid states.
    pub fn parse(s: &str) -> Result<State> {
        State::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| Error::Config(format!("unknown state {s:?}; expected one of: pending, scheduled, retrying, recovered, active, dead, completed")))
    }

    /// What a view's `at_ms` is in this state: `runs` (scheduled, retrying), `lease ends`
    /// (active), `died` (dead), `finished` (completed), `at` otherwise.
    pub fn at_label(self) -> &'static str {
        match self {
            State::Scheduled | State::Retrying => "runs",
            State::Active => "lease ends",
            State::Dead => "died",
            State::Completed => "finished",
            _ => "at",
        }
    }

    /// The state's name, as [`State::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Scheduled => "scheduled",
            State::Retrying => "retrying",
            State::Recovered => "recovered",
            State::Active => "active",
            State::Dead => "dead",
            State::Completed => "completed",
        }
    }

    /// (sorted set, hash, whether the sorted set holds whole members).
    fn storage(self, k: &QueueKeys) -> (String, String, bool) {
        match self {
            State::Pending => (k.pending(), k.pending(), true),
            State::Scheduled => (k.scheduled(), k.scheduled(), true),
            State::Retrying => (k.retry(), k.retry(), true),
            State::Recovered => (k.recovered(), k.recovered(), true),
            State::Active => (k.active(), k.inflight(), false),
            State::Dead => (k.dead(), k.dead_jobs(), false),
            State::Completed => (k.completed(), k.results(), false),
        }
    }
}

/// Throughput and health figures of one queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Jobs by state.
    pub pending: u64,
    /// Delayed jobs.
    pub scheduled: u64,
    /// Jobs waiting for a retry.
    pub retrying: u64,
    /// Jobs taken back from lost workers, waiting to run again.
    pub recovered: u64,
    /// Running jobs.
    pub active: u64,
    /// Dead-lettered jobs.
    pub dead: u64,
    /// Retained finished jobs.
    pub completed: u64,
    /// Whether workers lease from it.
    pub paused: bool,
    /// Jobs completed in the last minute (10-second resolution).
    pub processed_1m: u64,
    /// Failed attempts in the last minute.
    pub failed_1m: u64,
    /// Jobs completed in the last hour.
    pub processed_1h: u64,
    /// Failed attempts in the last hour.
    pub failed_1h: u64,
    /// Failed attempts / all attempts in the last hour, 0..=1.
    pub error_rate_1h: f64,
    /// How long the oldest pending job has existed, ms (its id's creation time).
    pub oldest_pending_ms: Option<i64>,
}

impl QueueStats {
    /// The jobs in `state`.
    pub fn count(&self, state: State) -> u64 {
        match state {
            State::Pending => self.pending,
            State::Scheduled => self.scheduled,
            State::Retrying => self.retrying,
            State::Recovered => self.recovered,
            State::Active => self.active,
            State::Dead => self.dead,
            State::Completed => self.completed,
        }
    }
}

/// A job as listed or shown to operators.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Where it is.
    pub state: State,
    /// The queue.
    pub queue: String,
    /// The job id.
    pub id: JobId,
    /// The envelope, or why it does not decode.
    pub job: std::result::Result<Job, String>,
    /// Run-at (scheduled, retrying), lease deadline (active) or finish time (dead, completed), ms.
    pub at_ms: Option<i64>,
    /// The outcome (completed jobs).
    pub outcome: Option<Outcome>,
    /// The member exactly as stored (empty when not retained): operations match on these
    /// bytes, never on a re-encoding, so jobs written by any producer are found.
    pub member: Vec<u8>,
}

/// A live or dead worker process, from its heartbeat record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerInfo {
    /// Worker id (`host:pid:suffix`).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues and weights, e.g. `emails:3,default:1`.
    pub queues: String,
    /// Configured concurrency.
    pub concurrency: u64,
    /// Jobs held at the last heartbeat.
    pub in_flight: u64,
    /// When it started, ms.
    pub started_ms: i64,
    /// Last heartbeat, ms.
    pub last_beat_ms: i64,
    /// Heartbeat interval, ms.
    pub beat_every_ms: i64,
}

impl WorkerInfo {
    /// A worker is presumed dead after three missed heartbeats.
    pub fn alive(&self, now_ms: i64) -> bool {
        now_ms - self.last_beat_ms <= 3 * self.beat_every_ms.max(1000)
    }
}

/// How long a worker's record outlives its last heartbeat (it is then shown as dead, and
/// pruned after an hour).
const WORKER_RECORD_TTL: Duration = Duration::from_secs(3600);

/// Operator access to the queues of one namespace.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

fn rerr(client: &Client) -> impl Fn(redis::RedisError) -> Error + '_ {
    Error::redis(client.url())
}

impl Admin {
    /// Operator access through `client`.
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Queues producers and workers have used, sorted (a split queue once, not its shards).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn queues(&self) -> Result<Vec<String>> {
        let ns = self.client.namespace_keys()?;
        let raw: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(ns.queues())
            .query_async(&mut self.client.con())
            .await
            .map_err(rerr(&self.client))?;
        // Any producer may write the registry: a member that is no valid queue name (not
        // UTF-8, a newline) names no queue, and must not take every listing down with it.
        let mut qs: Vec<String> = Vec::with_capacity(raw.len());
        for member in raw {
            match String::from_utf8(member) {
                // A shard is listed as part of its queue.
                Ok(q) if crate::keys::shard_of(&q).is_some() => {}
                Ok(q) if self.client.keys(&q).is_ok() => qs.push(q),
                Ok(q) => {
                    tracing::debug!(queue = ?q, "the queue registry holds an invalid queue name; skipped")
                }
                Err(e) => {
                    tracing::debug!(bytes = ?e.as_bytes(), "the queue registry holds a name that is not UTF-8; skipped")
                }
            }
        }
        qs.sort();
        Ok(qs)
    }

    /// Fails with [`Error::NotFound`] when `queue` is neither registered nor holds any job.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (the message lists the known queues), [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn require_queue(&self, queue: &str) -> Result<QueueKeys> {
        let keys = self.client.keys(queue)?;
        let known = self.queues().await?;
        if known.iter().any(|q| q == queue) {
            return Ok(keys);
        }
        let exists: u64 = redis::cmd("EXISTS")
            .arg(keys.all_fixed())
            .query_async(&mut self.client.con())
            .await
            .map_err(rerr(&self.client))?;
        if exists > 0 {
            return Ok(keys);
        }
        Err(Error::NotFound(format!(
            "queue {queue:?} (known queues: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    /// A queue's metrics history, minute by minute, from `from_ms` to `to_ms` (Unix ms, both
    /// included, clamped to the last [`HISTORY_RETENTION`](crate::admin::HISTORY_RETENTION)): one entry per minute, empty
    /// minutes included, oldest first. One pipelined `HGETALL` per minute (4,380 for the
    /// whole history).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn history(&self, queue: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Minute>> {
        let mut parts = Vec::new();
        for part in self.client.shards_of(queue).await? {
            parts.push(self.history_of(&part, from_ms, to_ms, false).await?);
        }
        Ok(merge_parts(parts))
    }

    /// [`Admin::history`] (or [`Admin::history_hours`]) of one queue or shard.
    async fn history_of(
        &self,
        queue: &str,
        from_ms: i64,
        to_ms: i64,
        hours: bool,
    ) -> Result<Vec<Minute>> {
        if hours {
            return self.hours_of(queue, from_ms, to_ms).await;
        }
        let k = self.client.keys(queue)?;
        let last = history::minute_of(to_ms.min(now_ms()));
        let oldest = last - (history::RETENTION.as_secs() as i64 / 60) + 1;
        let first = history::minute_of(from_ms).max(oldest);
        if first > last {
            return Ok(Vec::new());
        }
        let minutes: Vec<(i64, String)> =
            (first..=last).map(|m| (m * 60_000, k.metrics(m))).collect();
        self.read_history(&minutes).await
    }

    /// As [`Admin::history`], hour by hour (each entry the sum of its minutes, `at_ms` the
    /// hour's start), from the hourly hashes the workers write beside the minutes: 72 reads
    /// for three days instead of 4,320.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn history_hours(
        &self,
        queue: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Minute>> {
        let mut parts = Vec::new();
        for part in self.client.shards_of(queue).await? {
            parts.push(self.history_of(&part, from_ms, to_ms, true).await?);
        }
        Ok(merge_parts(parts))
    }

    async fn hours_of(&self, queue: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Minute>> {
        let k = self.client.keys(queue)?;
        let hour = |ms: i64| ms.div_euclid(3_600_000);
        let last = hour(to_ms.min(now_ms()));
        let oldest = last - (history::RETENTION.as_secs() as i64 / 3600) + 1;
        let first = hour(from_ms).max(oldest);
        if first > last {
            return Ok(Vec::new());
        }
        let hours: Vec<(i64, String)> = (first..=last)
            .map(|h| (h * 3_600_000, k.metrics_hour(h)))
            .collect();
        self.read_history(&hours).await
    }

    /// Reads history hashes (start in ms, key), in pipelines.
    async fn read_history(&self, keys: &[(i64, String)]) -> Result<Vec<Minute>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut con = self.client.con();
        // Pipelines of a few hundred keep each reply small and the server responsive.
        for chunk in keys.chunks(512) {
            let mut pipe = redis::pipe();
            for (_, key) in chunk {
                pipe.hgetall(key);
            }
            let hashes: Vec<BTreeMap<String, i64>> = pipe
                .query_async(&mut con)
                .await
                .map_err(rerr(&self.client))?;
            for ((at_ms, _), fields) in chunk.iter().zip(hashes) {
                out.push(Minute::decode(*at_ms, fields));
            }
        }
        Ok(out)
    }

    /// Counts, throughput and the oldest pending job of a queue: a fixed number of O(1) and
    /// O(log n) commands, whatever the queue's size.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let parts = self.client.shards_of(queue).await?;
        let mut all = Vec::with_capacity(parts.len());
        for part in &parts {
            all.push(self.stats_of(part).await?);
        }
        let mut total = all.pop().unwrap_or_default();
        for s in all {
            total.pending += s.pending;
            total.scheduled += s.scheduled;
            total.retrying += s.retrying;
            total.recovered += s.recovered;
            total.active += s.active;
            total.dead += s.dead;
            total.completed += s.completed;
            total.paused |= s.paused;
            total.processed_1m += s.processed_1m;
            total.failed_1m += s.failed_1m;
            total.processed_1h += s.processed_1h;
            total.failed_1h += s.failed_1h;
            total.oldest_pending_ms = match (total.oldest_pending_ms, s.oldest_pending_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let attempts = total.processed_1h + total.failed_1h;
        total.error_rate_1h = if attempts == 0 {
            0.0
        } else {
            total.failed_1h as f64 / attempts as f64
        };
        total.queue = queue.to_string();
        Ok(total)
    }

    /// [`Admin::stats`] of one queue or shard.
    pub(crate) async fn stats_of(&self, queue: &str) -> Result<QueueStats> {
        let k = self.client.keys(queue)?;
        let mut con = self.client.con();
        let counts: QueueCounts = self.client.counts(queue).await?;
        let (paused, ring): (bool, HashMap<String, i64>) = redis::pipe()
            .hexists(k.meta(), "paused")
            .hgetall(k.throughput())
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        let now = now_ms();
        let bucket = now / 10_000;
        let (mut c1m, mut f1m, mut c1h, mut f1h) = (0u64, 0u64, 0u64, 0u64);
        for slot in 0..360 {
            let Some(b) = ring.get(&format!("t:{slot}")) else {
                continue;
            };
            let age = bucket - b;
            if !(0..360).contains(&age) {
                continue;
            }
            let c = ring.get(&format!("c:{slot}")).copied().unwrap_or(0).max(0) as u64;
            let f = ring.get(&format!("f:{slot}")).copied().unwrap_or(0).max(0) as u64;
            c1h += c;
            f1h += f;
            if age < 6 {
                c1m += c;
                f1m += f;
            }
        }
        let heads: Vec<Vec<u8>> = {
            let mut call = scripts().locate.call();
            call.key(k.pending()).arg("");
            call.invoke(&mut con, self.client.url()).await?
        };
        let oldest = heads
            .iter()
            .filter_map(|h| codec::member_id(h).ok())
            .filter_map(|id| ulid::Ulid::from_string(id.as_str()).ok())
            .map(|u| u.timestamp_ms() as i64)
            .min()
            .map(|created| (now - created).max(0));
        let attempts = c1h + f1h;
        Ok(QueueStats {
            queue: queue.to_string(),
            pending: counts.pending,
            scheduled: counts.scheduled,
            retrying: counts.retrying,
            recovered: counts.recovered,
            active: counts.active,
            dead: counts.dead,
            completed: counts.completed,
            paused,
            processed_1m: c1m,
            failed_1m: f1m,
            processed_1h: c1h,
            failed_1h: f1h,
            error_rate_1h: if attempts == 0 {
                0.0
            } else {
                f1h as f64 / attempts as f64
            },
            oldest_pending_ms: oldest,
        })
    }

    /// One page of jobs in `state`: pending in run order, scheduled and retrying by run-at,
    /// active by lease deadline, dead and completed newest first. O(log n + limit).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn list(
        &self,
        queue: &str,
        state: State,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobView>> {
        let parts = self.client.shards_of(queue).await?;
        if parts.len() == 1 {
            return self.list_of(queue, state, offset, limit).await;
        }
        // A split queue lists its parts one after another (the queue itself, then each
        // shard), each in its own order (newest first is per part): a page reads at most
        // `offset + limit` of each.
        let mut all = Vec::new();
        for part in &parts {
            let upto = offset.saturating_add(limit);
            all.extend(self.list_of(part, state, 0, upto).await?);
            if all.len() >= upto {
                break;
            }
        }
        Ok(all.into_iter().skip(offset).take(limit).collect())
    }

    /// [`Admin::list`] of one queue or shard.
    pub(crate) async fn list_of(
        &self,
        queue: &str,
        state: State,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobView>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let k = self.client.keys(queue)?;
        let (zset, hash, members) = state.storage(&k);
        let mut con = self.client.con();
        // Redis takes signed 64-bit positions: past them there is nothing to list.
        let Some(last) = offset
            .checked_add(limit - 1)
            .filter(|l| i64::try_from(*l).is_ok())
        else {
            return Ok(Vec::new());
        };
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&zset).arg(offset).arg(last);
        if matches!(state, State::Dead | State::Completed) {
            cmd.arg("REV");
        }
        cmd.arg("WITHSCORES");
        let entries: Vec<(Vec<u8>, f64)> = cmd
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        if members {
            return Ok(entries
                .into_iter()
                .map(|(m, score)| {
                    self.view_member(
                        queue,
                        state,
                        &m,
                        (!matches!(state, State::Pending | State::Recovered))
                            .then_some(score as i64),
                    )
                })
                .collect());
        }
        // Id-keyed states: fetch the bodies in one HMGET.
        let ids: Vec<String> = entries
            .iter()
            .map(|(e, _)| {
                let s = String::from_utf8_lossy(e).to_string();
                // Leases are `<id>:<token>`.
                s.split(':').next().unwrap_or_default().to_string()
            })
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let bodies: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&hash)
            .arg(&ids)
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        Ok(ids
            .into_iter()
            .zip(bodies)
            .zip(entries)
            .map(|((id, body), (_, score))| {
                self.view_stored(queue, state, &id, body.as_deref(), Some(score as i64))
            })
            .collect())
    }

    fn view_member(&self, queue: &str, state: State, member: &[u8], at_ms: Option<i64>) -> JobView {
        let id = codec::member_id(member).unwrap_or_default();
        JobView {
            state,
            queue: queue.to_string(),
            id,
            job: codec::decode_member(member, queue).map_err(|e| e.to_string()),
            at_ms,
            outcome: None,
            member: member.to_vec(),
        }
    }

    /// A job stored by id: an inflight or dead member, or a completed outcome.
    fn view_stored(
        &self,
        queue: &str,
        state: State,
        id: &str,
        body: Option<&[u8]>,
        at_ms: Option<i64>,
    ) -> JobView {
        let id = JobId::parse(id).unwrap_or_default();
        let Some(body) = body else {
            return JobView {
                state,
                queue: queue.into(),
                id,
                job: Err("no stored body".into()),
                at_ms,
                outcome: None,
                member: Vec::new(),
            };
        };
        if state == State::Completed {
            let outcome = Outcome::decode(body).ok();
            let member = outcome
                .as_ref()
                .and_then(|o| o.job.clone())
                .unwrap_or_default();
            let job = if member.is_empty() {
                Err("arguments not retained (retention keeps outcomes only)".into())
            } else {
                codec::decode_member(&member, queue).map_err(|e| e.to_string())
            };
            return JobView {
                state,
                queue: queue.into(),
                id,
                job,
                at_ms,
                outcome,
                member,
            };
        }
        let mut v = self.view_member(queue, state, body, at_ms);
        v.id = id;
        v
    }

    /// Finds a job by id in `queue`, or in every known queue. Pending jobs are found in
    /// O(bands x log n); delayed and retrying jobs need a scan of those sets (ZSCAN), so they
    /// are looked up last.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for an id that is not a ULID, [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn find(&self, id: &str, queue: Option<&str>) -> Result<Option<JobView>> {
        let id = JobId::parse(id)?;
        let queues = match queue {
            Some(q) => vec![q.to_string()],
            None => self.queues().await?,
        };
        let mut parts = Vec::new();
        for q in &queues {
            parts.extend(self.client.shards_of(q).await?);
        }
        for q in &parts {
            let scans = [State::Recovered, State::Retrying, State::Scheduled];
            if let Some(v) = self.find_in(&id, q, &scans).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// As [`Admin::find`] in one queue, in bounded time: the states kept by id (active, dead,
    /// completed) and pending (located by its key), plus `state` when it is one of the sets
    /// that can only be searched whole (scheduled, retrying, recovered: one `ZSCAN` pass over
    /// that set alone). Without such a `state` those three are not looked in.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed id; [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn find_quick(
        &self,
        id: &str,
        queue: &str,
        state: Option<State>,
    ) -> Result<Option<JobView>> {
        let id = JobId::parse(id)?;
        let scans: Vec<State> = state
            .filter(|s| matches!(s, State::Recovered | State::Retrying | State::Scheduled))
            .into_iter()
            .collect();
        for part in self.client.shards_of(queue).await? {
            if let Some(v) = self.find_in(&id, &part, &scans).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    async fn find_in(&self, id: &JobId, queue: &str, scans: &[State]) -> Result<Option<JobView>> {
        let k = self.client.keys(queue)?;
        let mut con = self.client.con();
        // One round trip for every id-keyed state: the body and, where kept, the time.
        type Body = Option<Vec<u8>>;
        let (inflight, dead, dead_at, result, done_at, cap): (
            Body,
            Body,
            Option<f64>,
            Body,
            Option<f64>,
            Option<String>,
        ) = redis::pipe()
            .hget(k.inflight(), id.as_str())
            .hget(k.dead_jobs(), id.as_str())
            .zscore(k.dead(), id.as_str())
            .hget(k.results(), id.as_str())
            .zscore(k.completed(), id.as_str())
            .hget(k.meta(), "max_payload")
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        // A dead member over the queue's cap was dead-lettered by `fetch` without a run: say so
        // instead of showing the job as if it had failed without an error.
        // Read as the scripts read it (`payload_cap`): a field that is no sane size is the
        // default.
        let cap = cap
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|c| (29..=512 << 20).contains(c))
            .unwrap_or(crate::engine::client::DEFAULT_MAX_PAYLOAD);
        if let (Some(body), Some(at)) = (&dead, dead_at) {
            if body.len() > cap {
                // Not decoded: the point of the cap is that nobody holds a second copy.
                return Ok(Some(JobView {
                    state: State::Dead,
                    queue: queue.into(),
                    id: id.clone(),
                    job: Err(format!(
                        "too_large: the member's {} bytes exceed the queue's payload cap of \
                         {cap} bytes; dead-lettered unrun",
                        body.len()
                    )),
                    at_ms: Some(at as i64),
                    outcome: None,
                    member: Vec::new(),
                }));
            }
        }
        let stored = [
            (State::Active, inflight, None),
            (State::Dead, dead, dead_at),
            (State::Completed, result, done_at),
        ];
        for (state, body, at) in stored {
            if let Some(body) = body {
                return Ok(Some(self.view_stored(
                    queue,
                    state,
                    id.as_str(),
                    Some(&body),
                    at.map(|a| a as i64),
                )));
            }
        }
        let pending: Option<Vec<u8>> = {
            let mut call = scripts().locate.call();
            call.key(k.pending()).arg(id.as_str());
            call.invoke(&mut con, self.client.url()).await?
        };
        if let Some(m) = pending {
            return Ok(Some(self.view_member(queue, State::Pending, &m, None)));
        }
        for &state in scans {
            let (zset, _, _) = state.storage(&k);
            if let Some((m, at)) = self.scan_for(&zset, id).await? {
                let at = (state != State::Recovered).then_some(at);
                return Ok(Some(self.view_member(queue, state, &m, at)));
            }
        }
        Ok(None)
    }

    /// Scans a member-keyed sorted set for the job `id` (ZSCAN with a MATCH on the id).
    async fn scan_for(&self, zset: &str, id: &JobId) -> Result<Option<(Vec<u8>, i64)>> {
        let mut con = self.client.con();
        let mut scan = Scan::zset(zset.to_string(), QueueKeys::member_pattern(id.as_str()));
        while let Some(found) = scan
            .next::<(Vec<u8>, f64)>(&mut con)
            .await
            .map_err(rerr(&self.client))?
        {
            if let Some((m, at)) = found.into_iter().next() {
                return Ok(Some((m, at as i64)));
            }
        }
        Ok(None)
    }

    /// Deletes jobs (not running ones) of one state; releases their idempotency keys. Returns
    /// how many were removed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for active jobs (they finish, or are recovered by their lease);
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have deleted some jobs.
    pub async fn delete(&self, views: &[JobView]) -> Result<u64> {
        let mut removed = 0;
        for group in group_by_queue_state(views) {
            let (queue, state, items) = group;
            if state == State::Active {
                return Err(Error::InvalidJob(format!(
                    "{} job(s) are running; a running job cannot be deleted (it finishes, or its lease expires and it is recovered)",
                    items.len()
                )));
            }
            let k = self.client.keys(&queue)?;
            let (zset, hash, members) = state.storage(&k);
            for chunk in items.chunks(MAX_BATCH) {
                let mut call = scripts().delete.call();
                call.key(zset.clone()).key(hash.clone());
                call.arg(if members { "member" } else { "id" });
                let mut uniques: Vec<String> = Vec::new();
                let mut args: Vec<(Vec<u8>, usize)> = Vec::new();
                for v in chunk {
                    let entry = if members {
                        v.member.clone()
                    } else {
                        v.id.as_str().as_bytes().to_vec()
                    };
                    let idx = match v.job.as_ref().ok().and_then(|j| j.unique_key.clone()) {
                        Some(u) => {
                            let pos = uniques.iter().position(|x| *x == u).unwrap_or_else(|| {
                                uniques.push(u.clone());
                                uniques.len() - 1
                            });
                            pos + 1
                        }
                        None => 0,
                    };
                    args.push((entry, idx));
                }
                if args.is_empty() {
                    continue;
                }
                for u in &uniques {
                    call.key(k.unique(u));
                }
                for (entry, idx) in &args {
                    call.arg(entry.as_slice()).arg(*idx);
                }
                let n: u64 = call
                    .invoke(&mut self.client.con(), self.client.url())
                    .await?;
                removed += n;
            }
        }
        Ok(removed)
    }

    /// Runs jobs again now: dead jobs are replayed with a fresh set of attempts, delayed and
    /// retrying jobs move to pending. Returns how many moved.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for pending, active or completed jobs; [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn retry(&self, views: &[JobView]) -> Result<u64> {
        let mut moved = 0;
        for (queue, state, items) in group_by_queue_state(views) {
            let k = self.client.keys(&queue)?;
            for chunk in items.chunks(MAX_BATCH) {
                let jobs: Vec<&Job> = chunk.iter().filter_map(|v| v.job.as_ref().ok()).collect();
                if jobs.is_empty() {
                    continue;
                }
                let n: u64 = match state {
                    State::Dead => {
                        let mut call = scripts().replay.call();
                        call.key(k.dead())
                            .key(k.dead_jobs())
                            .key(k.pending())
                            .key(k.wake());
                        for job in jobs {
                            let mut fresh = job.clone();
                            fresh.failed = 0;
                            call.arg(job.id.as_str()).arg(codec::encode_member(&fresh)?);
                        }
                        call.invoke(&mut self.client.con(), self.client.url())
                            .await?
                    }
                    State::Scheduled | State::Retrying | State::Recovered => {
                        let (zset, _, _) = state.storage(&k);
                        let mut call = scripts().promote.call();
                        call.key(zset).key(k.pending()).key(k.wake());
                        for v in chunk {
                            call.arg(v.member.as_slice());
                        }
                        call.invoke(&mut self.client.con(), self.client.url())
                            .await?
                    }
                    other => {
                        return Err(Error::InvalidJob(format!(
                        "{} job(s) are {}: only dead, scheduled, retrying and recovered jobs can be retried",
                        chunk.len(),
                        other.name()
                    )))
                    }
                };
                moved += n;
            }
        }
        Ok(moved)
    }

    /// Removes up to `limit` jobs of a state, oldest first (one bounded script call); call in a
    /// loop to empty a large set. Idempotency keys of purged pending jobs expire at their TTL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for the active state; [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn purge_some(&self, queue: &str, state: State, limit: usize) -> Result<u64> {
        if state == State::Active {
            return Err(Error::InvalidJob("running jobs cannot be purged".into()));
        }
        // A split queue: the first part that still has some.
        for part in self.client.shards_of(queue).await? {
            let n = self.purge_part(&part, state, limit).await?;
            if n > 0 {
                return Ok(n);
            }
        }
        Ok(0)
    }

    pub(crate) async fn purge_part(&self, queue: &str, state: State, limit: usize) -> Result<u64> {
        let k = self.client.keys(queue)?;
        let (zset, hash, members) = state.storage(&k);
        let mut call = scripts().purge.call();
        call.key(zset)
            .key(hash)
            .arg(if members { "member" } else { "id" })
            .arg(limit.clamp(1, MAX_BATCH));
        call.invoke(&mut self.client.con(), self.client.url()).await
    }

    /// Deletes every key of a queue and drops it from the registry. The caller checks that it
    /// is empty (or was told to force).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn remove_queue(&self, queue: &str) -> Result<()> {
        // A split queue: its shards, then the queue, then the split itself.
        let mut parts = self.client.shards_of(queue).await?;
        parts.rotate_left(1);
        for part in &parts {
            self.remove_part(part).await?;
        }
        if parts.len() > 1 {
            let ns = self.client.namespace_keys()?;
            redis::cmd("HDEL")
                .arg(ns.shards())
                .arg(queue)
                .query_async::<()>(&mut self.client.con())
                .await
                .map_err(rerr(&self.client))?;
            self.client.forget_shards(queue);
        }
        Ok(())
    }

    async fn remove_part(&self, queue: &str) -> Result<()> {
        let k = self.client.keys(queue)?;
        let ns = self.client.namespace_keys()?;
        let mut con = self.client.con();
        // Idempotency keys and the minutes of the metrics history are the keys of a queue with
        // open-ended names; SCAN finds them without blocking the server (this is an operator
        // action, not a hot path).
        for pattern in [k.unique_pattern(), k.metrics_pattern()] {
            let mut scan = Scan::keys_beside(&k.wake(), pattern);
            while let Some(keys) = scan
                .next::<String>(&mut con)
                .await
                .map_err(rerr(&self.client))?
            {
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<()>(&mut con)
                        .await
                        .map_err(rerr(&self.client))?;
                }
            }
        }
        // Two commands, not one pipeline: on a cluster the registry and the queue are in
        // different slots. The queue goes first, so an interrupted removal leaves it listed
        // (and removable again), never a listed queue's keys orphaned.
        redis::cmd("DEL")
            .arg(k.all_fixed())
            .query_async::<()>(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        redis::cmd("SREM")
            .arg(ns.queues())
            .arg(queue)
            .query_async::<()>(&mut con)
            .await
            .map_err(rerr(&self.client))
    }

    /// Applies `retention` to a queue now (the maintenance schedule calls it for idle queues).
    /// Returns (completed, dead) jobs removed.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (trimming is idempotent).
    pub async fn trim(
        &self,
        queue: &str,
        retention: &crate::engine::broker::Retention,
    ) -> Result<(u64, u64)> {
        let k = self.client.keys(queue)?;
        let mut call = scripts().trim.call();
        call.key(k.completed())
            .key(k.results())
            .key(k.dead())
            .key(k.dead_jobs())
            .key(k.waiters());
        call.arg(retention.completed_count)
            .arg(crate::engine::job::millis(retention.completed_age))
            .arg(retention.dead_count)
            .arg(crate::engine::job::millis(retention.dead_age));
        call.invoke(&mut self.client.con(), self.client.url()).await
    }

    /// Removes the fetch receipts (`receipt:<worker id>` in the queue's meta hash) of workers not
    /// in `live`: a worker that dies leaves its receipt behind, and a receipt is only of use to
    /// its own worker, within a lease of its last fetch. Also removes the lease tokens (the
    /// `owners` set) of workers neither in `live` nor watching the queue. Returns how many
    /// entries were removed.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a live worker whose receipt is removed writes it again at its next fetch).
    pub async fn prune_receipts(
        &self,
        queue: &str,
        live: &std::collections::HashSet<String>,
    ) -> Result<u64> {
        let k = self.client.keys(queue)?;
        let mut con = self.client.con();
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(k.meta())
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        let gone: Vec<&String> = fields
            .iter()
            .filter(|f| {
                f.strip_prefix("receipt:")
                    .is_some_and(|worker| !live.contains(worker))
            })
            .collect();
        let mut removed = 0;
        if !gone.is_empty() {
            removed += redis::cmd("HDEL")
                .arg(k.meta())
                .arg(&gone)
                .query_async::<u64>(&mut con)
                .await
                .map_err(rerr(&self.client))?;
        }
        // Lease tokens of workers that are neither live nor watching (one that died before its
        // first beat; a consumer that opted into liveness and never beat): no pass would ever
        // forget them.
        let watching: std::collections::HashSet<String> = redis::cmd("HKEYS")
            .arg(k.watchers())
            .query_async::<Vec<String>>(&mut con)
            .await
            .map_err(rerr(&self.client))?
            .into_iter()
            .collect();
        let owners: Vec<String> = redis::cmd("ZRANGE")
            .arg(k.owners())
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        let orphans: std::collections::BTreeSet<&str> = owners
            .iter()
            .filter_map(|m| owner_prefix(m))
            .filter(|(prefix, worker)| !watching.contains(*prefix) && !live.contains(*worker))
            .map(|(prefix, _)| prefix)
            .collect();
        for prefix in orphans {
            removed += redis::cmd("ZREMRANGEBYLEX")
                .arg(k.owners())
                .arg(format!("[{prefix}"))
                .arg(format!("({prefix};"))
                .query_async::<u64>(&mut con)
                .await
                .map_err(rerr(&self.client))?;
        }
        Ok(removed)
    }

    /// Every worker that sent a heartbeat in the last hour, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let ns = self.client.namespace_keys()?;
        let mut con = self.client.con();
        let ids: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(ns.workers())
            .arg(0)
            .arg(-1)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &ids {
            pipe.hgetall(ns.worker(id));
        }
        let records: Vec<HashMap<String, String>> = pipe
            .query_async(&mut con)
            .await
            .map_err(rerr(&self.client))?;
        Ok(ids
            .into_iter()
            .zip(records)
            .map(|((id, beat), r)| {
                let num = |f: &str| r.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                WorkerInfo {
                    id,
                    host: r.get("host").cloned().unwrap_or_default(),
                    pid: num("pid") as u32,
                    queues: r.get("queues").cloned().unwrap_or_default(),
                    concurrency: num("concurrency") as u64,
                    in_flight: num("in_flight") as u64,
                    started_ms: num("started"),
                    last_beat_ms: beat as i64,
                    beat_every_ms: num("beat_every"),
                }
            })
            .collect())
    }

    /// Records a worker's heartbeat (called by workers every heartbeat interval); prunes
    /// records of workers silent for an hour.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent writes).
    pub async fn beat(&self, w: &WorkerInfo) -> Result<()> {
        let ns = self.client.namespace_keys()?;
        let now = now_ms();
        let key = ns.worker(&w.id);
        redis::pipe()
            .hset_multiple(
                &key,
                &[
                    ("host", w.host.clone()),
                    ("pid", w.pid.to_string()),
                    ("queues", w.queues.clone()),
                    ("concurrency", w.concurrency.to_string()),
                    ("in_flight", w.in_flight.to_string()),
                    ("started", w.started_ms.to_string()),
                    ("beat_every", w.beat_every_ms.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, WORKER_RECORD_TTL.as_millis() as i64)
            .ignore()
            .zadd(ns.workers(), &w.id, now)
            .ignore()
            .zrembyscore(
                ns.workers(),
                "-inf",
                now - WORKER_RECORD_TTL.as_millis() as i64,
            )
            .ignore()
            .query_async::<()>(&mut self.client.con())
            .await
            .map_err(rerr(&self.client))
    }

    /// Removes a worker's record (graceful shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn retire(&self, id: &str) -> Result<()> {
        let ns = self.client.namespace_keys()?;
        redis::pipe()
            .zrem(ns.workers(), id)
            .ignore()
            .del(ns.worker(id))
            .ignore()
            .query_async::<()>(&mut self.client.con())
            .await
            .map_err(rerr(&self.client))
    }

    /// Facts about the server for health checks. On a cluster, the masters' facts combined:
    /// the fullest master's memory (a queue lives on one, so one full master is the alarm),
    /// the oldest version, a policy other than `noeviction` if any master has one, and all
    /// clients.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn server(&self) -> Result<ServerInfo> {
        let all: Vec<ServerInfo> = self
            .info_by_node(None)
            .await?
            .iter()
            .map(|(_, text)| ServerInfo::parse(text))
            .collect();
        // One server's facts combine into themselves.
        Ok(ServerInfo::combine(all))
    }

    /// `INFO [section]` of the server, or on a cluster of each master that serves slots, with
    /// the node's address (`host:port`; on one server, `server`).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn info_by_node(&self, section: Option<&str>) -> Result<Vec<(String, String)>> {
        let mut con = self.client.con();
        let mut info = redis::cmd("INFO");
        if let Some(section) = section {
            info.arg(section);
        }
        let Some(masters) = con.masters().await.map_err(rerr(&self.client))? else {
            let text: String = info
                .query_async(&mut con)
                .await
                .map_err(rerr(&self.client))?;
            return Ok(vec![("server".to_string(), text)]);
        };
        let mut all = Vec::new();
        for (host, port) in masters {
            let text: String = con
                .query_at(&info, &crate::endpoint::Target::Node(host.clone(), port))
                .await
                .map_err(rerr(&self.client))?;
            all.push((format!("{host}:{port}"), text));
        }
        Ok(all)
    }
}

impl ServerInfo {
    /// The facts in an `INFO` reply.
    fn parse(info: &str) -> ServerInfo {
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let num = |k: &str| field(k).parse::<u64>().unwrap_or(0);
        ServerInfo {
            version: field("redis_version:"),
            used_memory: num("used_memory:"),
            maxmemory: num("maxmemory:"),
            maxmemory_policy: field("maxmemory_policy:"),
            connected_clients: num("connected_clients:"),
        }
    }

    /// The facts of a cluster's masters as one (see [`Admin::server`]).
    fn combine(all: Vec<ServerInfo>) -> ServerInfo {
        let version =
            |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
        let fill = |s: &ServerInfo| match s.maxmemory {
            0 => 0.0,
            max => s.used_memory as f64 / max as f64,
        };
        let clients = all.iter().map(|s| s.connected_clients).sum();
        let oldest = all
            .iter()
            .min_by_key(|s| version(&s.version))
            .map(|s| s.version.clone())
            .unwrap_or_default();
        let policy = all
            .iter()
            .map(|s| s.maxmemory_policy.clone())
            .find(|p| p != "noeviction")
            .unwrap_or_else(|| "noeviction".into());
        let fullest = all
            .into_iter()
            .max_by(|a, b| {
                fill(a)
                    .total_cmp(&fill(b))
                    .then(a.used_memory.cmp(&b.used_memory))
            })
            .unwrap_or_default();
        ServerInfo {
            version: oldest,
            maxmemory_policy: policy,
            connected_clients: clients,
            ..fullest
        }
    }
}

/// The history of a split queue's parts as one: each minute's counts summed by job name.
fn merge_parts(parts: Vec<Vec<Minute>>) -> Vec<Minute> {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut total: BTreeMap<i64, Minute> = BTreeMap::new();
    for minute in parts.into_iter().flatten() {
        let m = total.entry(minute.at_ms).or_insert_with(|| Minute {
            at_ms: minute.at_ms,
            names: BTreeMap::new(),
        });
        for (name, counts) in minute.names {
            m.names.entry(name).or_default().merge(&counts);
        }
    }
    total.into_values().collect()
}

/// Server facts shown by `queue stats` and checked by `queue health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    /// `redis_version`.
    pub version: String,
    /// Bytes in use.
    pub used_memory: u64,
    /// `maxmemory` (0 = no limit).
    pub maxmemory: u64,
    /// `maxmemory-policy`.
    pub maxmemory_policy: String,
    /// Connected clients.
    pub connected_clients: u64,
}

fn group_by_queue_state(views: &[JobView]) -> Vec<(String, State, Vec<&JobView>)> {
    let mut out: Vec<(String, State, Vec<&JobView>)> = Vec::new();
    for v in views {
        match out
            .iter_mut()
            .find(|(q, s, _)| *q == v.queue && *s == v.state)
        {
            Some((_, _, items)) => items.push(v),
            None => out.push((v.queue.clone(), v.state, vec![v])),
        }
    }
    out
}

impl JobView {
    /// The job's state in the engine's vocabulary, for display.
    pub fn engine_state(&self) -> JobState {
        match self.state {
            State::Pending | State::Recovered => JobState::Pending,
            State::Scheduled | State::Retrying => JobState::Scheduled,
            State::Active => JobState::Active,
            State::Dead => JobState::Dead,
            State::Completed => self
                .outcome
                .as_ref()
                .map(|o| o.state)
                .unwrap_or(JobState::Completed),
        }
    }
}

/// The owner prefix `<len>:<worker>:` at the start of an `owners` member, and the worker.
fn owner_prefix(member: &str) -> Option<(&str, &str)> {
    let (len, rest) = member.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let worker = rest.get(..len)?;
    rest.get(len..len + 1).filter(|c| *c == ":")?;
    Some((member.get(..member.len() - rest.len() + len + 1)?, worker))
}

#[cfg(test)]
mod tests {
    use super::owner_prefix;

    #[test]
    fn owner_prefixes_are_read_back_whatever_the_worker_id_holds() {
        assert_eq!(
            owner_prefix("12:host:1:abcde:0000000000000042"),
            Some(("12:host:1:abcde:", "host:1:abcde"))
        );
        assert_eq!(owner_prefix("1:a:0000000000000001"), Some(("1:a:", "a")));
        // A length that does not end on a separator, or runs past the member, is no prefix.
        assert_eq!(owner_prefix("2:a:0001"), None);
        assert_eq!(owner_prefix("99:short"), None);
        assert_eq!(owner_prefix("x:y:z"), None);
    }
}
