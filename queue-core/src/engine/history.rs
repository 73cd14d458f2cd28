//! The metrics history of a queue: per minute and per job name, how many attempts completed,
//! failed, were retried and went dead, and histograms of the wait (enqueue to start) and the
//! run time in fixed buckets.
//!
//! Each worker counts the attempts it settled (what the settling scripts recorded) in memory
//! ([`Recorder`]) and its heartbeat sends them once a second (`scripts/record.lua`), so the
//! history costs the hot path no command at all. A worker killed with SIGKILL loses at most
//! its last second of counts; the `stats` counters stay exact. Read by
//! [`Admin::history`](crate::admin::Admin::history), `queue history`, the dashboard and the
//! Prometheus exporter.
//!
//! Layout (docs/PROTOCOL.md): one hash per queue and minute, `<ns>:{<queue>}:metrics:<minute>`
//! (`<minute>` = Unix milliseconds / 60,000 on the worker's clock), expiring [`RETENTION`]
//! after its last new field. Fields are `<metric>|<job name>`: `c` completed, `f` failed
//! attempts, `r` retried, `d` dead, `w<i>` and `t<i>` the wait and run-time histogram buckets
//! (`i` indexes [`BUCKETS_MS`]; `BUCKETS_MS.len()` is the overflow bucket). The metric never
//! holds `|`, so the field names are injective whatever the job name. Only non-zero fields
//! exist: a queue with one job name and steady traffic holds about ten fields a minute.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the histogram buckets, in milliseconds (the last bucket, beyond them, has
/// no bound): the same for every queue so that histograms add up.
pub const BUCKETS_MS: [u64; 15] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// Buckets per histogram: [`BUCKETS_MS`] and the overflow.
pub const BUCKETS: usize = BUCKETS_MS.len() + 1;

/// How long a minute's hash lives after its last new field: 72 hours of history, plus an hour
/// so that a full 72 hours are always there.
pub const RETENTION: Duration = Duration::from_secs(73 * 3600);

/// The longest job name the history keeps as it is, in bytes: a longer one is counted under
/// its first bytes and `…` (record.lua refuses fields over 1,024 bytes, and a name that long
/// is a producer's mistake, not a label).
pub const MAX_NAME_BYTES: usize = 200;

/// How many job names one worker counts apart, per minute and since it started: the names
/// beyond them are counted together under [`OTHER_NAMES`], so a producer sending random names
/// cannot grow a worker's memory or a minute's hash without bound.
pub const MAX_NAMES: usize = 1_000;

/// The label of the names beyond [`MAX_NAMES`].
pub const OTHER_NAMES: &str = "(other names)";

/// The label a job name is counted under: itself, or its first [`MAX_NAME_BYTES`] bytes (at
/// a character boundary) and `…`.
fn label(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= MAX_NAME_BYTES {
        return name.into();
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end]).into()
}

/// The entry of `name` in `map`, or [`OTHER_NAMES`]' once the map holds [`MAX_NAMES`] names.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, name: &str) -> &'m mut V {
    if !map.contains_key(name) {
        let key = if map.len() >= MAX_NAMES {
            OTHER_NAMES
        } else {
            name
        };
        return map.entry(key.to_string()).or_default();
    }
    map.get_mut(name).expect("just checked")
}

/// The minute a time falls in (Unix milliseconds / 60,000).
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// The bucket of a duration in milliseconds.
pub fn bucket_of(ms: u64) -> usize {
    BUCKETS_MS.partition_point(|&b| b < ms)
}

/// How long one attempt waited and ran, as the worker measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// From when a first attempt was due (its enqueue, or its run-at when delayed) to its
    /// start; `None` for later attempts (their due time is not in the envelope).
    pub wait_ms: Option<u64>,
    /// How long the handler ran; `None` when it did not run here (a recovered job).
    pub run_ms: Option<u64>,
}

/// What one minute's counts are as fields of its hash: `<metric>|<name>` and a count, the
/// non-zero ones only.
pub(crate) fn fields(names: &BTreeMap<String, Counts>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (name, c) in names {
        for (metric, n) in [
            ("c", c.completed),
            ("f", c.failed),
            ("r", c.retried),
            ("d", c.dead),
        ] {
            if n > 0 {
                out.push((format!("{metric}|{name}"), n));
            }
        }
        for (prefix, h) in [('w', &c.wait), ('t', &c.run)] {
            for (i, &n) in h.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
                out.push((format!("{prefix}{i}|{name}"), n));
            }
        }
    }
    out
}

/// What a settled attempt was, for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Completed,
    Retried,
    Dead,
    /// Failed for good without a dead letter.
    Discarded,
}

/// The counts of one minute, by job name.
pub(crate) type Names = BTreeMap<String, Counts>;

/// A worker's counts not yet sent, by minute: filled as attempts settle, emptied by each
/// heartbeat ([`Broker::flush_metrics`](crate::broker::Broker::flush_metrics)). Clones share
/// the counts, so the heartbeat's brokers send what the fetch loop's brokers counted.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    minutes: Arc<Mutex<BTreeMap<i64, Names>>>,
    /// Everything counted since the process started, never sent: what a Prometheus exporter
    /// serves (counters only grow).
    totals: Arc<Mutex<BTreeMap<String, Total>>>,
}

/// One job name's counts since the process started, with the sums a Prometheus histogram
/// carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Total {
    /// The counts and histograms.
    pub counts: Counts,
    /// Sum of the waits counted, ms.
    pub wait_sum_ms: u64,
    /// Sum of the run times counted, ms.
    pub run_sum_ms: u64,
}

impl Recorder {
    /// Counts one settled attempt of job `name` at `now_ms` (no allocation once the name is
    /// known in the minute: this runs once per job).
    /// A name longer than [`MAX_NAME_BYTES`] is shortened, and beyond [`MAX_NAMES`] names
    /// the rest count as [`OTHER_NAMES`].
    pub(crate) fn settled(&self, now_ms: i64, name: &str, what: Settled, timing: Timing) {
        let name = label(name);
        {
            let mut minutes = self.lock();
            let names = minutes.entry(minute_of(now_ms)).or_default();
            count(entry(names, &name), what, timing);
        }
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let t = entry(&mut totals, &name);
        count(&mut t.counts, what, timing);
        t.wait_sum_ms += timing.wait_ms.unwrap_or(0);
        t.run_sum_ms += timing.run_ms.unwrap_or(0);
    }

    /// Every job name's counts since the process started.
    pub fn totals(&self) -> BTreeMap<String, Total> {
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Takes every minute counted so far.
    pub(crate) fn take(&self) -> BTreeMap<i64, Names> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back a minute whose sending failed (merged with what came meanwhile), unless it
    /// is older than the history keeps ([`RETENTION`]): a Redis away for days does not make
    /// a worker hold days of counts.
    pub(crate) fn restore(&self, now_ms: i64, minute: i64, names: Names) {
        if minute < minute_of(now_ms) - (RETENTION.as_secs() / 60) as i64 {
            return;
        }
        let mut minutes = self.lock();
        let into = minutes.entry(minute).or_default();
        for (name, c) in names {
            entry(into, &name).merge(&c);
        }
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Names>> {
        // Counts are plain numbers: a panic elsewhere cannot leave them half-written.
        self.minutes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Adds one settled attempt to `c`.
fn count(c: &mut Counts, what: Settled, timing: Timing) {
    match what {
        Settled::Completed => c.completed += 1,
        Settled::Retried => {
            c.failed += 1;
            c.retried += 1;
        }
        Settled::Dead => {
            c.failed += 1;
            c.dead += 1;
        }
        Settled::Discarded => c.failed += 1,
    }
    if let Some(w) = timing.wait_ms {
        c.wait.record(w);
    }
    if let Some(r) = timing.run_ms {
        c.run.record(r);
    }
}

/// A histogram in the fixed [`BUCKETS_MS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Counts per bucket; the last is the overflow.
    pub buckets: [u64; BUCKETS],
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&mut self, ms: u64) {
        self.buckets[bucket_of(ms)] += 1;
    }

    /// How many durations it holds.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated inside its bucket (the overflow
    /// bucket answers with its lower bound); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BUCKETS_MS[i - 1] } as f64;
                let Some(&upper) = BUCKETS_MS.get(i) else {
                    return Some(lower);
                };
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper as f64 - lower) * within);
            }
            seen += n;
        }
        None
    }
}

/// What one job name (or a whole queue) did in some span of time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Completed attempts.
    pub completed: u64,
    /// Failed attempts (retried, dead or discarded, and attempts lost with their worker).
    pub failed: u64,
    /// Failed attempts that will run again.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Enqueue-to-start of first attempts.
    pub wait: Histogram,
    /// Handler run time.
    pub run: Histogram,
}

impl Counts {
    /// Adds another's counts.
    pub fn merge(&mut self, other: &Counts) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.retried += other.retried;
        self.dead += other.dead;
        self.wait.merge(&other.wait);
        self.run.merge(&other.run);
    }

    /// Failed attempts / all attempts, 0..=1 (0 without attempts).
    pub fn failure_rate(&self) -> f64 {
        let all = self.completed + self.failed;
        if all == 0 {
            0.0
        } else {
            self.failed as f64 / all as f64
        }
    }

    /// Applies one stored field; false for a field this version does not know (skipped, so a
    /// newer writer does not break an older reader).
    fn apply(&mut self, metric: &str, n: u64) -> bool {
        let slot = |h: &mut Histogram, i: &str| match i.parse::<usize>() {
            Ok(i) if i < BUCKETS => {
                h.buckets[i] += n;
                true
            }
            _ => false,
        };
        match metric {
            "c" => self.completed += n,
            "f" => self.failed += n,
            "r" => self.retried += n,
            "d" => self.dead += n,
            m if m.starts_with('w') => return slot(&mut self.wait, &m[1..]),
            m if m.starts_with('t') => return slot(&mut self.run, &m[1..]),
            _ => return false,
        }
        true
    }
}

/// Some minutes of a queue's history added up (see [`steps`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The first minute's start, Unix milliseconds.
    pub at_ms: i64,
    /// The counts of the step's minutes (of one job name, or of all).
    pub counts: Counts,
}

/// `minutes` (consecutive, oldest first, as [`Admin::history`](crate::admin::Admin::history)
/// returns them) added up in steps of `step` minutes, counted back from the last minute so that
/// the last step ends with it (only the oldest step may hold fewer minutes); oldest first.
/// With `name`, only that job name's counts.
pub fn steps(minutes: &[Minute], step: usize, name: Option<&str>) -> Vec<Step> {
    let step = step.max(1);
    let mut out: Vec<Step> = Vec::new();
    let partial = minutes.len() % step;
    for (i, m) in minutes.iter().enumerate() {
        // The oldest step holds the `partial` minutes that do not fill a whole one.
        if i == 0 || (i + step - partial) % step == 0 {
            out.push(Step {
                at_ms: m.at_ms,
                counts: Counts::default(),
            });
        }
        let Some(s) = out.last_mut() else { continue };
        for (n, c) in &m.names {
            if name.is_none_or(|want| want == n) {
                s.counts.merge(c);
            }
        }
    }
    out
}

/// One minute of a queue's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// The minute's start, Unix milliseconds.
    pub at_ms: i64,
    /// By job name.
    pub names: BTreeMap<String, Counts>,
}

impl Minute {
    /// Decodes a minute's (or an hour's) hash starting at `at_ms`; fields that do not parse
    /// are skipped.
    pub(crate) fn decode(at_ms: i64, fields: BTreeMap<String, i64>) -> Minute {
        let mut names: BTreeMap<String, Counts> = BTreeMap::new();
        for (field, n) in fields {
            let Some((metric, name)) = field.split_once('|') else {
                continue;
            };
            let Ok(n) = u64::try_from(n) else { continue };
            let mut counts = names.remove(name).unwrap_or_default();
            counts.apply(metric, n);
            if counts != Counts::default() {
                names.insert(name.to_string(), counts);
            }
        }
        Minute { at_ms, names }
    }

    /// The whole queue's counts in this minute (every name added up).
    pub fn total(&self) -> Counts {
        let mut all = Counts::default();
        for c in self.names.values() {
            all.merge(c);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(60_000), 14);
        assert_eq!(bucket_of(60_001), 15);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        h.buckets[bucket_of(8)] = 100; // (5, 10]
        assert_eq!(h.quantile(0.5), Some(7.5));
        assert_eq!(h.quantile(1.0), Some(10.0));
        h.buckets[BUCKETS - 1] = 100;
        assert_eq!(h.quantile(0.99), Some(60_000.0));
    }

    #[test]
    fn fields_round_trip_whatever_the_name() {
        let rec = Recorder::default();
        let t = Timing {
            wait_ms: Some(3),
            run_ms: Some(70_000),
        };
        for name in ["a", "a|b", "c|", "w1|x"] {
            rec.settled(600_000, name, Settled::Completed, t);
            rec.settled(600_000, name, Settled::Retried, Timing::default());
        }
        rec.settled(600_000, "a", Settled::Dead, Timing::default());
        let mut minutes = rec.take();
        assert!(rec.is_empty());
        let names = minutes.remove(&10).expect("minute 10");
        let fields: BTreeMap<String, i64> = fields(&names)
            .into_iter()
            .map(|(f, n)| (f, n as i64))
            .collect();
        let m = Minute::decode(600_000, fields);
        assert_eq!(m.at_ms, 600_000);
        assert_eq!(m.names, names);
        assert_eq!(m.names["a"].failed, 2);
        assert_eq!(m.names["a|b"].retried, 1);
        assert_eq!(m.names["w1|x"].wait.buckets[2], 1);
        assert_eq!(m.names["c|"].run.buckets[BUCKETS - 1], 1);
        assert_eq!(m.total().completed, 4);
        rec.restore(600_000, 10, names.clone());
        rec.restore(600_000, 10, names);
        assert_eq!(rec.take()[&10]["a"].dead, 2, "restored counts add up");
    }

    #[test]
    fn unknown_or_broken_fields_are_skipped() {
        let fields = [
            ("zz|a", 1),
            ("w99|a", 1),
            ("nobar", 1),
            ("c|a", -5),
            ("d|a", 2),
        ]
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
        let m = Minute::decode(0, fields);
        assert_eq!(m.names.len(), 1);
        assert_eq!(m.names["a"].dead, 2);
    }

    #[test]
    fn names_are_bounded_in_length_and_number() {
        let rec = Recorder::default();
        let long = "é".repeat(150); // 300 bytes, two per character
        rec.settled(600_000, &long, Settled::Dead, Timing::default());
        for i in 0..MAX_NAMES + 5 {
            rec.settled(
                600_000,
                &format!("n{i}"),
                Settled::Completed,
                Timing::default(),
            );
        }
        let minute = &rec.take()[&10];
        assert_eq!(minute.len(), MAX_NAMES + 1, "the cap and the other names");
        let short = format!("{}…", "é".repeat(MAX_NAME_BYTES / 2));
        assert_eq!(minute[&short].dead, 1, "{:?}", minute.keys().next());
        assert_eq!(minute[OTHER_NAMES].completed, 6);
        for (field, _) in fields(minute) {
            assert!(field.len() <= 1024, "{field}");
        }
        assert_eq!(rec.totals().len(), MAX_NAMES + 1);
        assert_eq!(rec.totals()[OTHER_NAMES].counts.completed, 6);
    }

    #[test]
    fn a_minute_older_than_the_history_is_not_restored() {
        let rec = Recorder::default();
        let mut names = Names::new();
        names.entry("a".into()).or_default().completed = 1;
        let now = 1_000 * 60_000;
        let keep = (RETENTION.as_secs() / 60) as i64;
        rec.restore(now, 1_000 - keep - 1, names.clone());
        assert!(rec.is_empty(), "beyond the retention: dropped");
        rec.restore(now, 1_000 - keep, names);
        assert!(!rec.is_empty());
    }

    #[test]
    fn steps_end_with_the_last_minute() {
        let minutes: Vec<Minute> = (0..7)
            .map(|m| {
                let mut names = Names::new();
                names.entry("a".into()).or_default().completed = 1;
                names.entry("b".into()).or_default().failed = 1;
                Minute {
                    at_ms: m * 60_000,
                    names,
                }
            })
            .collect();
        let s = steps(&minutes, 3, None);
        let at: Vec<i64> = s.iter().map(|s| s.at_ms / 60_000).collect();
        assert_eq!(at, [0, 1, 4], "the oldest step holds the odd minute");
        let done: Vec<u64> = s.iter().map(|s| s.counts.completed).collect();
        assert_eq!(done, [1, 3, 3]);
        assert_eq!(steps(&minutes, 1, Some("b")).len(), 7);
        assert_eq!(steps(&minutes, 7, Some("b"))[0].counts.failed, 7);
        assert_eq!(steps(&minutes, 7, Some("b"))[0].counts.completed, 0);
        assert!(steps(&[], 5, None).is_empty());
    }
}
