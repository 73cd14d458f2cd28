//! The metrics history of a queue: per minute and per job name, how many attempts completed,
//! failed, were retried and went dead, and histograms of the wait (enqueue to start) and the
//! run time in fixed buckets.
//!
//! Written by the scripts that settle attempts (complete, retry, dead, discard), in the same
//! call, so it costs no round trip; read by [`Admin::history`](crate::admin::Admin::history),
//! `queue history`, the dashboard and the Prometheus exporter.
//!
//! Layout (docs/PROTOCOL.md): one hash per queue and minute, `<ns>:{<queue>}:metrics:<minute>`
//! (`<minute>` = Unix milliseconds / 60,000 on the worker's clock), expiring [`RETENTION`]
//! after its last new field. Fields are `<metric>|<job name>`: `c` completed, `f` failed
//! attempts, `r` retried, `d` dead, `w<i>` and `t<i>` the wait and run-time histogram buckets
//! (`i` indexes [`BUCKETS_MS`]; `BUCKETS_MS.len()` is the overflow bucket). The metric never
//! holds `|`, so the field names are injective whatever the job name. Only non-zero fields
//! exist: a queue with one job name and steady traffic holds about ten fields a minute.

use std::collections::BTreeMap;
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

/// Field-increment pairs for one script call, merged by field.
#[derive(Debug, Default)]
pub(crate) struct Increments {
    fields: BTreeMap<String, i64>,
}

impl Increments {
    /// Counts one of `metric` for `name`.
    pub(crate) fn add(&mut self, metric: &str, name: &str, n: i64) {
        *self.fields.entry(format!("{metric}|{name}")).or_default() += n;
    }

    /// Counts an attempt's wait and run time in their histograms.
    pub(crate) fn timing(&mut self, name: &str, t: Timing) {
        if let Some(w) = t.wait_ms {
            self.add(&format!("w{}", bucket_of(w)), name, 1);
        }
        if let Some(r) = t.run_ms {
            self.add(&format!("t{}", bucket_of(r)), name, 1);
        }
    }

    /// Adds a histogram's non-zero buckets as `<prefix><i>` of `name`.
    pub(crate) fn histogram(&mut self, prefix: char, name: &str, h: &Histogram) {
        for (i, &n) in h.buckets.iter().enumerate() {
            if n > 0 {
                self.add(&format!("{prefix}{i}"), name, n as i64);
            }
        }
    }

    /// The pairs, for ARGV: how many, then field and increment each.
    pub(crate) fn args(&self) -> impl Iterator<Item = (&str, i64)> {
        self.fields.iter().map(|(f, n)| (f.as_str(), *n))
    }

    pub(crate) fn len(&self) -> usize {
        self.fields.len()
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

/// One minute of a queue's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// The minute's start, Unix milliseconds.
    pub at_ms: i64,
    /// By job name.
    pub names: BTreeMap<String, Counts>,
}

impl Minute {
    /// Decodes a minute's hash; fields that do not parse are skipped.
    pub(crate) fn decode(minute: i64, fields: BTreeMap<String, i64>) -> Minute {
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
        Minute {
            at_ms: minute * 60_000,
            names,
        }
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
        let mut inc = Increments::default();
        for name in ["a", "a|b", "", "c|", "w1|x"] {
            inc.add("c", name, 2);
            inc.timing(
                name,
                Timing {
                    wait_ms: Some(3),
                    run_ms: Some(70_000),
                },
            );
        }
        inc.add("c", "a", 1);
        let fields: BTreeMap<String, i64> = inc.args().map(|(f, n)| (f.to_string(), n)).collect();
        let m = Minute::decode(10, fields);
        assert_eq!(m.at_ms, 600_000);
        assert_eq!(m.names.len(), 5);
        assert_eq!(m.names["a"].completed, 3);
        assert_eq!(m.names["a|b"].completed, 2);
        assert_eq!(m.names["w1|x"].wait.buckets[2], 1);
        assert_eq!(m.names["c|"].run.buckets[BUCKETS - 1], 1);
        assert_eq!(m.total().completed, 11);
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
}
