//! Cron schedules: parsing, the next wall-clock occurrences in a time zone (correct across DST
//! changes), misfire policies, and firing a tick exactly once whatever the number of schedulers.
//!
//! Exactly once: each tick is fired by one script that compares the tick with the schedule's
//! last fired tick and, only if it is newer, records it and enqueues the job, whose id is derived
//! from the schedule and the tick. Any number of schedulers can race on the same tick; one wins,
//! the others see it fired. No leader, nothing to expire, O(1) memory per schedule.
//!
//! DST: a schedule fires once per local wall-clock occurrence. A time repeated when clocks go
//! back fires once, at its first occurrence; a time skipped when clocks go forward fires when the
//! gap ends (02:30 on the night Paris goes from 02:00 to 03:00 fires at 03:00), as Vixie cron
//! does.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::engine::client::{Client, Enqueued, NewJob};
use crate::engine::job::JobId;
use crate::engine::registry::JobType;
use crate::engine::scripts::scripts;
use crate::error::{Error, Result};

/// A parsed cron expression: 5 fields (`min hour dom month dow`), 6 with seconds first, or an
/// alias (`@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`). Days of week follow crontab:
/// 0 or 7 is Sunday, 1 Monday ... 6 Saturday (names `SUN`..`SAT` work too).
#[derive(Debug, Clone)]
pub struct CronExpr {
    source: String,
    schedule: cron::Schedule,
}

const DAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

/// Rewrites numeric days of week (crontab numbering) as names, which mean the same to every
/// cron dialect (the parser below numbers Sunday 1).
fn dow_names(field: &str) -> Result<String> {
    let word = |t: &str| -> Result<String> {
        match t.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(DAYS[n].to_string()),
            Ok(n) => Err(Error::Config(format!(
                "day of week {n} is out of range 0-7"
            ))),
            Err(_) => Ok(t.to_string()),
        }
    };
    field
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let range = match range.split_once('-') {
                Some((a, b)) => format!("{}-{}", word(a)?, word(b)?),
                None => word(range)?,
            };
            Ok(match step {
                Some(s) => format!("{range}/{s}"),
                None => range,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(|v| v.join(","))
}

impl CronExpr {
    /// Parses an expression.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying what is wrong with it.
    pub fn parse(source: &str) -> Result<CronExpr> {
        let s = source.trim();
        let bad = |m: String| Error::Config(format!("invalid cron expression {source:?}: {m}"));
        let full = if s.starts_with('@') {
            s.to_string()
        } else {
            let fields: Vec<&str> = s.split_whitespace().collect();
            let (sec, rest) = match fields.len() {
                5 => ("0", &fields[..]),
                6 => (fields[0], &fields[1..]),
                n => return Err(bad(format!("expected 5 fields (min hour day month weekday) or 6 with seconds first, got {n}"))),
            };
            let dow = dow_names(rest[4]).map_err(|e| bad(e.to_string()))?;
            format!(
                "{sec} {} {} {} {} {dow}",
                rest[0], rest[1], rest[2], rest[3]
            )
        };
        let schedule = cron::Schedule::from_str(&full).map_err(|e| bad(e.to_string()))?;
        Ok(CronExpr {
            source: s.to_string(),
            schedule,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The next wall-clock time strictly after `after` (both local, zone-less).
    pub fn next_local(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        // Local times are computed in a zone without transitions (UTC used as "floating"
        // time), so every wall-clock occurrence appears exactly once.
        self.schedule
            .after(&Utc.from_utc_datetime(&after))
            .next()
            .map(|t| t.naive_utc())
    }
}

/// The instant a local wall-clock time denotes in `tz`: the first of two when clocks went back,
/// the end of the gap when clocks went forward.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return t.with_timezone(&Utc);
    }
    // In a gap: the first whole minute after it. Gaps are at most a few hours.
    let mut probe = local.with_second(0).unwrap_or(local);
    for _ in 0..(24 * 60) {
        probe += chrono::Duration::minutes(1);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    Utc.from_utc_datetime(&local)
}

/// What to do with ticks that passed while no scheduler was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy", content = "n")]
pub enum Misfire {
    /// Forget them; fire only ticks that are due now.
    Skip,
    /// Fire the latest missed tick once (the default).
    #[default]
    FireOnce,
    /// Fire up to this many of the latest missed ticks, oldest first.
    CatchUp(u32),
}

/// A tick is "on time" when it is at most this late; older unfired ticks are misfires.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(5);

/// One occurrence of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The wall-clock time it was scheduled for, in the schedule's zone.
    pub local: NaiveDateTime,
    /// The instant it denotes.
    pub at: DateTime<Utc>,
}

/// The ticks to fire now, oldest first: every occurrence after `last` (the last fired instant,
/// or none) up to `now`, filtered by the misfire policy. Without a `last`, nothing before `now -
/// grace` is fired: a new schedule does not backfill. Pure: takes the clock as an argument.
pub fn due_ticks(
    expr: &CronExpr,
    tz: Tz,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    misfire: Misfire,
) -> Vec<Tick> {
    let grace =
        chrono::Duration::from_std(MISFIRE_GRACE).unwrap_or_else(|_| chrono::Duration::seconds(5));
    // A very old `last` (schedulers down for days) would mean walking every tick since; a day
    // of history is more than any policy needs.
    let floor = now - chrono::Duration::days(1);
    let from = match last {
        Some(l) if l > floor => l,
        Some(_) => floor,
        None => now - grace,
    };
    let mut on_time = Vec::new();
    let mut missed = Vec::new();
    let mut cursor = from.with_timezone(&tz).naive_local();
    let mut last_at = from;
    for _ in 0..200_000 {
        let Some(next) = expr.next_local(cursor) else {
            break;
        };
        cursor = next;
        let at = resolve(tz, next);
        // Several ticks in one DST gap resolve to the same instant: fire it once.
        if at <= last_at {
            continue;
        }
        if at > now {
            break;
        }
        last_at = at;
        let tick = Tick { local: next, at };
        if at >= now - grace {
            on_time.push(tick);
        } else {
            missed.push(tick);
        }
    }
    let keep = match misfire {
        Misfire::Skip => 0,
        Misfire::FireOnce => 1,
        Misfire::CatchUp(n) => n as usize,
    };
    let mut out: Vec<Tick> = missed.split_off(missed.len().saturating_sub(keep));
    out.extend(on_time);
    out
}

/// The next tick strictly after `now`.
pub fn next_tick(expr: &CronExpr, tz: Tz, now: DateTime<Utc>) -> Option<Tick> {
    let mut cursor = now.with_timezone(&tz).naive_local();
    for _ in 0..10_000 {
        let next = expr.next_local(cursor)?;
        let at = resolve(tz, next);
        if at > now {
            return Some(Tick { local: next, at });
        }
        cursor = next;
    }
    None
}

/// Parses an IANA time zone name (`Europe/Paris`, `UTC`).
///
/// # Errors
///
/// [`Error::Config`] for an unknown zone.
pub fn parse_tz(name: &str) -> Result<Tz> {
    name.parse::<Tz>()
        .map_err(|e| Error::Config(format!("unknown time zone {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn parses_five_and_six_fields_aliases_and_crontab_weekdays() {
        assert!(CronExpr::parse("*/5 * * * *").is_ok());
        assert!(CronExpr::parse("0 */5 * * * *").is_ok());
        assert!(CronExpr::parse("@hourly").is_ok());
        assert!(CronExpr::parse("* * *").is_err());
        assert!(CronExpr::parse("0 0 * * 8").is_err());
        // Crontab numbering: 0 is Sunday, 1-5 Monday to Friday.
        let sunday = CronExpr::parse("0 9 * * 0").expect("parse");
        let next = sunday
            .next_local(utc("2026-11-26T00:00:00Z").naive_utc())
            .expect("next");
        assert_eq!(next.to_string(), "2026-11-29 09:00:00", "the next Sunday");
        let weekdays = CronExpr::parse("30 8 * * 1-5").expect("parse");
        let next = weekdays
            .next_local(utc("2026-11-28T00:00:00Z").naive_utc())
            .expect("next");
        assert_eq!(
            next.to_string(),
            "2026-11-30 08:30:00",
            "Saturday -> Monday"
        );
    }

    #[test]
    fn every_second_ticks_once_per_second() {
        let e = CronExpr::parse("* * * * * *").expect("parse");
        let last = utc("2026-01-01T00:00:00Z");
        let ticks = due_ticks(
            &e,
            Tz::UTC,
            Some(last),
            utc("2026-01-01T00:00:03Z"),
            Misfire::Skip,
        );
        let secs: Vec<u32> = ticks.iter().map(|t| t.at.second()).collect();
        assert_eq!(secs, vec![1, 2, 3]);
        // Nothing is fired twice: from the last fired tick on.
        let again = due_ticks(
            &e,
            Tz::UTC,
            Some(utc("2026-01-01T00:00:03Z")),
            utc("2026-01-01T00:00:03Z"),
            Misfire::Skip,
        );
        assert!(again.is_empty());
    }

    #[test]
    fn misfire_policies() {
        let e = CronExpr::parse("0 * * * * *").expect("every minute");
        let last = Some(utc("2026-01-01T00:00:00Z"));
        let now = utc("2026-01-01T00:10:02Z");
        let skip = due_ticks(&e, Tz::UTC, last, now, Misfire::Skip);
        assert_eq!(
            skip.iter().map(|t| t.at.minute()).collect::<Vec<_>>(),
            vec![10],
            "only the on-time tick"
        );
        let once = due_ticks(&e, Tz::UTC, last, now, Misfire::FireOnce);
        assert_eq!(
            once.iter().map(|t| t.at.minute()).collect::<Vec<_>>(),
            vec![9, 10]
        );
        let catch = due_ticks(&e, Tz::UTC, last, now, Misfire::CatchUp(3));
        assert_eq!(
            catch.iter().map(|t| t.at.minute()).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        let new = due_ticks(&e, Tz::UTC, None, now, Misfire::CatchUp(3));
        assert_eq!(
            new.iter().map(|t| t.at.minute()).collect::<Vec<_>>(),
            vec![10],
            "a new schedule fires the tick due now, and does not backfill older ones"
        );
    }

    #[test]
    fn daily_0230_in_paris_across_both_dst_changes() {
        let paris = parse_tz("Europe/Paris").expect("tz");
        let e = CronExpr::parse("30 2 * * *").expect("parse");
        // Spring forward: on 2026-03-29 clocks jump from 02:00 to 03:00 (01:00 UTC).
        let before = utc("2026-03-28T12:00:00Z");
        let t = next_tick(&e, paris, before).expect("tick");
        assert_eq!(
            t.at,
            utc("2026-03-29T01:00:00Z"),
            "02:30 does not exist: fires at 03:00 local"
        );
        let t2 = next_tick(&e, paris, t.at).expect("tick");
        assert_eq!(
            t2.at,
            utc("2026-03-30T00:30:00Z"),
            "then 02:30 CEST as usual"
        );
        // Fall back: on 2026-10-25 02:00-03:00 happens twice; 02:30 fires once, the first time.
        let t = next_tick(&e, paris, utc("2026-10-24T12:00:00Z")).expect("tick");
        assert_eq!(t.at, utc("2026-10-25T00:30:00Z"), "first 02:30 (CEST)");
        let t2 = next_tick(&e, paris, t.at).expect("tick");
        assert_eq!(
            t2.at,
            utc("2026-10-26T01:30:00Z"),
            "not again at 02:30 CET; next day"
        );
        // The same through due_ticks over the whole night: exactly one tick.
        let night = due_ticks(
            &e,
            paris,
            Some(utc("2026-10-24T23:00:00Z")),
            utc("2026-10-25T04:00:00Z"),
            Misfire::CatchUp(10),
        );
        assert_eq!(night.len(), 1);
    }

    #[test]
    fn ticks_inside_a_dst_gap_fire_once_at_its_end() {
        let paris = parse_tz("Europe/Paris").expect("tz");
        let e = CronExpr::parse("*/15 * * * *").expect("parse");
        let ticks = due_ticks(
            &e,
            paris,
            Some(utc("2026-03-29T00:50:00Z")),
            utc("2026-03-29T01:20:00Z"),
            Misfire::CatchUp(100),
        );
        let local: Vec<String> = ticks
            .iter()
            .map(|t| t.local.format("%H:%M").to_string())
            .collect();
        // 01:00 CET, then 02:00/02:15/02:30/02:45 do not exist -> one firing at 03:00, then 03:15.
        assert_eq!(local, vec!["02:00", "03:15"]);
        assert_eq!(ticks[0].at, utc("2026-03-29T01:00:00Z"));
    }
}

/// A schedule: the job to enqueue at each tick of a cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    expr: CronExpr,
    tz: Tz,
    job: NewJob,
    misfire: Misfire,
}

impl Schedule {
    /// A schedule named `name` (unique in the namespace) that enqueues `job` on `expr`, in UTC.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid expression or name.
    pub fn new(name: impl Into<String>, expr: &str, job: NewJob) -> Result<Schedule> {
        let name = name.into();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(format!(
                "schedule name {name:?} must be non-empty, without spaces or control characters"
            )));
        }
        Ok(Schedule {
            name,
            expr: CronExpr::parse(expr)?,
            tz: Tz::UTC,
            job,
            misfire: Misfire::default(),
        })
    }

    /// A schedule of job type `J` with `args`.
    ///
    /// # Errors
    ///
    /// As [`Schedule::new`], and [`Error::Encode`] for the arguments.
    pub fn of<J: JobType>(name: impl Into<String>, expr: &str, args: &J::Args) -> Result<Schedule> {
        Schedule::new(name, expr, NewJob::of::<J>(args)?)
    }

    /// Sets the time zone (IANA name, e.g. `Europe/Paris`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown zone.
    pub fn tz(mut self, tz: &str) -> Result<Schedule> {
        self.tz = parse_tz(tz)?;
        Ok(self)
    }

    /// Sets the misfire policy.
    pub fn misfire(mut self, misfire: Misfire) -> Schedule {
        self.misfire = misfire;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue its jobs go to.
    pub fn queue(&self) -> String {
        self.job
            .options()
            .queue
            .clone()
            .unwrap_or_else(|| crate::engine::job::DEFAULT_QUEUE.to_string())
    }

    /// The cron expression.
    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    /// The time zone.
    pub fn zone(&self) -> Tz {
        self.tz
    }

    /// The misfire policy.
    pub fn misfire_policy(&self) -> Misfire {
        self.misfire
    }

    /// The definition stored for operators.
    pub fn def(&self) -> ScheduleDef {
        let o = self.job.options();
        ScheduleDef {
            name: self.name.clone(),
            cron: self.expr.as_str().to_string(),
            tz: self.tz.name().to_string(),
            queue: self.queue(),
            job: self.job.name().to_string(),
            args_hex: self.job.args().iter().map(|b| format!("{b:02x}")).collect(),
            priority: o.priority.unwrap_or(0),
            misfire: self.misfire,
        }
    }
}

/// A schedule as stored in `<ns>:schedules` (JSON) for operators and `queue cron trigger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// Schedule name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// Time zone.
    pub tz: String,
    /// Target queue.
    pub queue: String,
    /// Job name.
    pub job: String,
    /// The job's MessagePack arguments, hex.
    pub args_hex: String,
    /// Priority.
    pub priority: u8,
    /// Misfire policy.
    pub misfire: Misfire,
}

impl ScheduleDef {
    /// The job a tick (or a manual trigger) enqueues.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the stored arguments are not hex.
    pub fn new_job(&self) -> Result<NewJob> {
        let args = (0..self.args_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(self.args_hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|e| Error::decode("schedule arguments", e))?;
        Ok(NewJob::raw(self.job.clone(), args)
            .queue(self.queue.clone())
            .priority(self.priority))
    }

    /// The schedule rebuilt from its definition.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Decode`] for a corrupt definition.
    pub fn schedule(&self) -> Result<Schedule> {
        Ok(
            Schedule::new(self.name.clone(), &self.cron, self.new_job()?)?
                .tz(&self.tz)?
                .misfire(self.misfire),
        )
    }
}

/// A schedule with its state, as `queue cron ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleState {
    /// The definition.
    #[serde(flatten)]
    pub def: ScheduleDef,
    /// When the last tick fired (its instant, ms); `None` when none has since it was
    /// registered.
    pub last_ms: Option<i64>,
    /// When the next tick is due (ms); `None` while paused.
    pub next_ms: Option<i64>,
    /// Whether ticks are skipped.
    pub paused: bool,
}

/// What firing a tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// This call fired it; the job has this id.
    Fired(JobId),
    /// It had already fired (another scheduler, or this one before).
    AlreadyFired,
    /// The schedule is paused.
    Paused,
    /// The tick fired, but its job was a duplicate: the job with this id holds its unique key,
    /// and nothing was created.
    Deduplicated(JobId),
}

/// Cron operations on Redis.
#[derive(Debug, Clone)]
pub struct Cron {
    client: Client,
}

impl Cron {
    /// Cron operations through `client`.
    pub fn new(client: Client) -> Cron {
        Cron { client }
    }

    fn err(&self) -> impl Fn(redis::RedisError) -> Error + '_ {
        Error::redis(self.client.url())
    }

    /// Publishes schedule definitions for operators (idempotent).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn register(&self, schedules: &[Schedule]) -> Result<()> {
        if schedules.is_empty() {
            return Ok(());
        }
        let ns = self.client.namespace_keys()?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(ns.schedules());
        for s in schedules {
            let json = serde_json::to_string(&s.def()).map_err(|e| Error::encode("schedule", e))?;
            cmd.arg(s.name()).arg(json);
        }
        // A schedule starts from its first registration: recording "now" as its last tick
        // (HSETNX, so only the first scheduler to register does) means no tick from before it
        // existed is ever fired, while every later tick is.
        let now = Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).ignore();
        for s in schedules {
            let k = self.client.keys(&s.queue())?;
            // `registered:` keeps that instant, so a listing tells it from a fired tick.
            pipe.hset_nx(k.cron(), format!("last:{}", s.name()), now)
                .ignore()
                .hset_nx(k.cron(), format!("registered:{}", s.name()), now)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.client.con())
            .await
            .map_err(self.err())?;
        let queues: Vec<String> = schedules.iter().map(Schedule::queue).collect();
        self.client.register_queues(&queues).await
    }

    /// The instant of the schedule's last fired tick.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn last(&self, s: &Schedule) -> Result<Option<DateTime<Utc>>> {
        let k = self.client.keys(&s.queue())?;
        let last: Option<i64> = redis::cmd("HGET")
            .arg(k.cron())
            .arg(format!("last:{}", s.name()))
            .query_async(&mut self.client.con())
            .await
            .map_err(self.err())?;
        Ok(last.and_then(DateTime::from_timestamp_millis))
    }

    /// Fires one tick: enqueues the schedule's job with the tick's deterministic id, unless the
    /// tick (or a later one) already fired or the schedule is paused. `enqueue = false` only
    /// claims the tick (for work the scheduler runs itself, like maintenance).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Encode`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, but idempotent: firing the same tick again does nothing.
    pub async fn fire(&self, s: &Schedule, tick: &Tick, enqueue: bool) -> Result<Fired> {
        let k = self.client.keys(&s.queue())?;
        let id = JobId::deterministic(
            tick.at.timestamp_millis().max(0) as u64,
            &format!("{}@{}", s.name(), tick.local),
        );
        // The tick's job is prepared and sent exactly as an enqueue is (validation, size cap,
        // unique key), under an id derived from the tick so that a re-fire is recognisable.
        let mut jobs = Vec::new();
        if enqueue {
            let mut p = self
                .client
                .prepare(0, s.job.clone(), Utc::now().timestamp_millis())?;
            p.job.id = id.clone();
            p.member = crate::engine::codec::encode_member(&p.job)?;
            jobs.push(p);
        }
        let mut call = scripts().cron_fire.call();
        call.key(k.cron())
            .key(k.pending())
            .key(k.scheduled())
            .key(k.wake())
            .key(k.meta())
            .key(k.events());
        call.arg(s.name())
            .arg(tick.at.timestamp_millis())
            .arg(jobs.len());
        crate::engine::client::push_jobs(&mut call, &k, &jobs);
        let r: redis::Value = call
            .invoke(&mut self.client.con(), self.client.url())
            .await?;
        Ok(match r {
            redis::Value::Int(1) => Fired::Fired(id),
            redis::Value::Int(-1) => Fired::Paused,
            redis::Value::Int(_) => Fired::AlreadyFired,
            other => {
                let holder: String = redis::FromRedisValue::from_redis_value(other)
                    .map_err(|e| Error::decode("cron_fire reply", e))?;
                Fired::Deduplicated(JobId::from_wire(holder))
            }
        })
    }

    /// Every registered schedule with its last and next run. A definition that does not decode,
    /// or names an invalid queue, is skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn list(&self) -> Result<Vec<ScheduleState>> {
        let ns = self.client.namespace_keys()?;
        let mut con = self.client.con();
        let defs: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(ns.schedules())
            .query_async(&mut con)
            .await
            .map_err(self.err())?;
        let now = Utc::now();
        let mut out = Vec::new();
        for (name, json) in &defs {
            // Anyone with write access can put anything in the hash: one bad entry must not
            // hide the others from an operator (`get` still reports it as an error).
            let def = match serde_json::from_str::<ScheduleDef>(json) {
                Ok(def) => def,
                Err(e) => {
                    tracing::warn!(schedule = ?name, error = %e, "skipping a schedule definition that does not decode");
                    continue;
                }
            };
            let k = match self.client.keys(&def.queue) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(schedule = ?name, error = %e, "skipping a schedule definition with an invalid queue");
                    continue;
                }
            };
            let (last, registered, paused): (Option<i64>, Option<i64>, bool) = redis::pipe()
                .hget(k.cron(), format!("last:{}", def.name))
                .hget(k.cron(), format!("registered:{}", def.name))
                .hexists(k.cron(), format!("paused:{}", def.name))
                .query_async(&mut con)
                .await
                .map_err(self.err())?;
            // The baseline recorded at registration is no run.
            let last = last.filter(|l| Some(*l) != registered);
            // A paused schedule has no next run.
            let next = (!paused)
                .then(|| def.schedule().ok())
                .flatten()
                .and_then(|s| next_tick(&s.expr, s.tz, now))
                .map(|t| t.at.timestamp_millis());
            out.push(ScheduleState {
                def,
                last_ms: last,
                next_ms: next,
                paused,
            });
        }
        Ok(out)
    }

    /// A registered schedule's definition.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn get(&self, name: &str) -> Result<ScheduleDef> {
        let ns = self.client.namespace_keys()?;
        let json: Option<String> = redis::cmd("HGET")
            .arg(ns.schedules())
            .arg(name)
            .query_async(&mut self.client.con())
            .await
            .map_err(self.err())?;
        let json = json.ok_or_else(|| Error::NotFound(format!("schedule {name:?}")))?;
        serde_json::from_str(&json).map_err(|e| Error::decode("schedule definition", e))
    }

    /// Pauses or resumes a schedule (its ticks are skipped while paused).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name; [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        let def = self.get(name).await?;
        let k = self.client.keys(&def.queue)?;
        let field = format!("paused:{name}");
        let mut cmd = if paused {
            redis::cmd("HSET")
        } else {
            redis::cmd("HDEL")
        };
        cmd.arg(k.cron()).arg(&field);
        if paused {
            cmd.arg(1);
        }
        cmd.query_async::<()>(&mut self.client.con())
            .await
            .map_err(self.err())
    }

    /// Enqueues the schedule's job now, outside its ticks.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name; as [`Client::enqueue_job`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn trigger(&self, name: &str) -> Result<Enqueued> {
        let def = self.get(name).await?;
        self.client.enqueue_job(def.new_job()?).await
    }

    /// Removes a schedule's definition and state (a scheduler that still declares it publishes
    /// it again when it starts).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let def = self.get(name).await?;
        let ns = self.client.namespace_keys()?;
        let k = self.client.keys(&def.queue)?;
        redis::pipe()
            .hdel(ns.schedules(), name)
            .ignore()
            .hdel(
                k.cron(),
                &[
                    format!("last:{name}"),
                    format!("paused:{name}"),
                    format!("registered:{name}"),
                ],
            )
            .ignore()
            .query_async::<()>(&mut self.client.con())
            .await
            .map_err(self.err())
    }
}
