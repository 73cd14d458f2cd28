//! The job envelope: what is stored in Redis for every job, and the options a producer sets.
//!
//! The wire format is documented in `docs/PROTOCOL.md`; field names are short because every
//! byte is paid once per waiting job.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the envelope wire format written by this crate.
pub const WIRE_VERSION: u8 = 1;

/// Default number of attempts (the original plan's `QUEUE_CONFIG`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default base delay of the exponential backoff.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default cap of the exponential backoff.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many past failures an envelope keeps (the oldest are dropped first).
pub const ERROR_HISTORY: usize = 10;

/// A job id: a ULID, 26 Crockford base32 characters, sortable by creation time.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Length of every job id on the wire.
    pub const LEN: usize = 26;

    /// A new id, strictly greater than every id this process generated before (monotonic ULID),
    /// which is what makes jobs of one priority run in the order they were enqueued.
    pub fn generate() -> JobId {
        static GEN: Mutex<Option<ulid::Generator>> = Mutex::new(None);
        // A poisoned lock only means another thread panicked mid-generate; the generator state
        // is still a valid ULID, so keep going rather than propagate the panic.
        let mut guard = GEN.lock().unwrap_or_else(|p| p.into_inner());
        let gen = guard.get_or_insert_with(ulid::Generator::new);
        // The monotonic generator fails only when 2^80 ids are made in one millisecond; fall back
        // to a fresh random id then.
        let id = gen.generate().unwrap_or_else(|_| ulid::Ulid::new());
        JobId(id.to_string())
    }

    /// The same id for the same inputs, on any machine: a ULID whose time part is
    /// `timestamp_ms` and whose random part is a hash of `seed`. Cron ticks use it, so every
    /// scheduler derives the one id of a tick.
    pub fn deterministic(timestamp_ms: u64, seed: &str) -> JobId {
        let hi = fnv1a(seed.as_bytes(), 0xcbf2_9ce4_8422_2325);
        let lo = fnv1a(seed.as_bytes(), 0x8422_2325_cbf2_9ce4);
        let random = ((u128::from(hi) << 16) | u128::from(lo & 0xffff)) & ((1u128 << 80) - 1);
        JobId(ulid::Ulid::from_parts(timestamp_ms, random).to_string())
    }

    /// Parses and validates an id given by a user or read from Redis.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] when `s` is not a ULID.
    pub fn parse(s: &str) -> Result<JobId> {
        ulid::Ulid::from_string(s)
            .map(|u| JobId(u.to_string()))
            .map_err(|e| Error::InvalidJob(format!("job id {s:?} is not a ULID: {e}")))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_wire(s: String) -> JobId {
        JobId(s)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

/// How long to wait before the next attempt after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Backoff {
    /// `base * 2^(attempt-1)`, capped at `cap`, with "equal jitter": the delay is drawn uniformly
    /// from `[d/2, d]`, so retries of jobs that failed together spread out but never come sooner
    /// than half the nominal delay.
    Exponential {
        /// Delay before the second attempt, in milliseconds.
        base_ms: u64,
        /// Upper bound of any delay, in milliseconds.
        cap_ms: u64,
    },
    /// The same delay before every retry (no jitter).
    Fixed {
        /// The delay, in milliseconds.
        delay_ms: u64,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base_ms: DEFAULT_BACKOFF_BASE.as_millis() as u64,
            cap_ms: DEFAULT_BACKOFF_CAP.as_millis() as u64,
        }
    }
}

impl Backoff {
    /// Exponential backoff from `base`, capped at `cap`.
    pub fn exponential(base: Duration, cap: Duration) -> Backoff {
        Backoff::Exponential {
            base_ms: millis(base),
            cap_ms: millis(cap),
        }
    }

    /// A fixed delay.
    pub fn fixed(delay: Duration) -> Backoff {
        Backoff::Fixed {
            delay_ms: millis(delay),
        }
    }

    /// The nominal (jitter-free, upper bound) delay after `failed` attempts (1 = first failure).
    pub fn nominal(&self, failed: u32) -> Duration {
        match *self {
            Backoff::Exponential { base_ms, cap_ms } => {
                let shift = failed.saturating_sub(1).min(62);
                let d = base_ms.saturating_mul(1u64 << shift).min(cap_ms);
                Duration::from_millis(d)
            }
            Backoff::Fixed { delay_ms } => Duration::from_millis(delay_ms),
        }
    }

    /// The delay to use after `failed` attempts, with jitter drawn from `unit` (a number in
    /// `[0, 1)`; pass a random one in production and a fixed one in tests).
    pub fn delay(&self, failed: u32, unit: f64) -> Duration {
        let nominal = self.nominal(failed);
        match self {
            Backoff::Exponential { .. } => {
                let unit = unit.clamp(0.0, 1.0);
                let half = nominal / 2;
                half + (nominal - half).mul_f64(unit)
            }
            Backoff::Fixed { .. } => nominal,
        }
    }
}

/// FNV-1a, 64 bits, from `offset`: a stable hash (the standard library's hasher is seeded per
/// process, so it cannot give the same answer in two producers).
pub(crate) fn fnv1a(bytes: &[u8], offset: u64) -> u64 {
    bytes.iter().fold(offset, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One failed attempt, kept in the envelope's error history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The attempt that failed (1-based).
    #[serde(rename = "n")]
    pub attempt: u32,
    /// When it failed, in milliseconds since the Unix epoch.
    #[serde(rename = "at")]
    pub at_ms: i64,
    /// Short machine-readable kind: `error`, `panic`, `timeout`, `worker_lost`, `decode`,
    /// `unknown_job`.
    #[serde(rename = "k")]
    pub kind: String,
    /// Human-readable message.
    #[serde(rename = "m")]
    pub message: String,
}

impl Failure {
    /// `kind: message`, as events, outcomes and the CLI show it.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.kind, self.message)
    }
}

/// The envelope of one job, as stored in Redis (MessagePack map with the short field names
/// below; see `docs/PROTOCOL.md`).
///
/// The id and the queue are not inside the encoded map: the id is part of the sorted-set member
/// that carries the envelope and the queue is the key it lives in, so storing them again would
/// cost ~40 bytes per waiting job. [`Job::id`] and [`Job::queue`] are filled in on decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job id (not encoded; see the type docs).
    #[serde(skip)]
    pub id: JobId,
    /// The queue (not encoded; see the type docs).
    #[serde(skip)]
    pub queue: String,
    /// Wire format version.
    #[serde(rename = "v")]
    pub version: u8,
    /// The stable job name that selects the handler.
    #[serde(rename = "n")]
    pub name: String,
    /// The handler's arguments, MessagePack-encoded by the producer.
    #[serde(rename = "a", with = "serde_bytes")]
    pub args: Vec<u8>,
    /// When the job was created, in milliseconds since the Unix epoch.
    #[serde(rename = "c")]
    pub created_ms: i64,
    /// Priority, 0..=255, higher runs first.
    #[serde(rename = "p", default, skip_serializing_if = "is_zero_u8")]
    pub priority: u8,
    /// Attempts that already failed.
    #[serde(rename = "f", default, skip_serializing_if = "is_zero_u32")]
    pub failed: u32,
    /// Maximum number of attempts (absent: [`DEFAULT_MAX_ATTEMPTS`]).
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff policy (absent: [`Backoff::default`]).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout in milliseconds (absent: [`DEFAULT_TIMEOUT`]).
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When the job was first due, in milliseconds since the Unix epoch (absent: at once).
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<i64>,
    /// The unique key, if the job was enqueued with one.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Failure history, oldest first, at most [`ERROR_HISTORY`] entries.
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Failure>,
    /// The producer's W3C trace context (`traceparent`), so the job's span can join the
    /// producer's trace (see [`valid_traceparent`]).
    #[serde(rename = "tp", default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Whether `s` is a W3C `traceparent` header value of version 00 (or a later version's first
/// four fields): `vv-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase, ids not
/// all zero, version not `ff`.
pub fn valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [v, trace, parent, flags, rest @ ..] => {
            hex(v, 2)
                && *v != "ff"
                && (rest.is_empty() || *v != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The name of the stand-in envelope that carries a member which does not decode.
pub const UNDECODABLE: &str = "queue.undecodable";

impl Job {
    /// A stand-in for a stored member that does not decode: named [`UNDECODABLE`], its raw
    /// bytes as its arguments, one attempt, failed with kind `decode` and `reason`. What the
    /// worker dead-letters for such a member, and what readers show for one.
    pub fn undecodable(id: JobId, queue: &str, raw: Vec<u8>, at_ms: i64, reason: &str) -> Job {
        Job::unreadable("decode", id, queue, raw, at_ms, reason)
    }

    /// [`Job::undecodable`] with another failure kind (`unsupported_version` for an envelope
    /// of a later wire version).
    pub fn unreadable(
        kind: &str,
        id: JobId,
        queue: &str,
        raw: Vec<u8>,
        at_ms: i64,
        reason: &str,
    ) -> Job {
        let mut job = Job::new(id, queue, UNDECODABLE, raw, at_ms);
        job.max_attempts = Some(1);
        job.record_failure(kind, reason, at_ms);
        job
    }

    /// A fresh job (attempt 1, default options) of `name` in `queue`, with encoded `args`.
    pub fn new(
        id: JobId,
        queue: impl Into<String>,
        name: impl Into<String>,
        args: Vec<u8>,
        created_ms: i64,
    ) -> Job {
        Job {
            id,
            queue: queue.into(),
            version: WIRE_VERSION,
            name: name.into(),
            args,
            created_ms,
            priority: 0,
            failed: 0,
            max_attempts: None,
            backoff: None,
            timeout_ms: None,
            run_at_ms: None,
            unique_key: None,
            errors: Vec::new(),
            traceparent: None,
        }
    }

    /// Effective maximum number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }

    /// Effective backoff policy.
    pub fn backoff(&self) -> Backoff {
        self.backoff.unwrap_or_default()
    }

    /// Effective per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Fills the run-time options the producer left unset (attempts, backoff, timeout) from the
    /// job's handler's `#[job]` attributes, so a job enqueued by the CLI or another language
    /// runs as its handler declares.
    ///
    /// This is where a job's options are resolved, once: what the producer set (typed
    /// producers start from the same attributes, see `NewJob::of`), then the handler's
    /// attributes (here, in the worker), then the crate defaults ([`Job::max_attempts`],
    /// [`Job::backoff`], [`Job::timeout`]).
    pub fn resolve_options(&mut self, handler: &JobOptions) {
        if self.max_attempts.is_none() {
            self.max_attempts = handler.max_attempts;
        }
        if self.backoff.is_none() {
            self.backoff = handler.backoff;
        }
        if self.timeout_ms.is_none() {
            self.timeout_ms = handler.timeout.map(millis);
        }
    }

    /// The attempt that runs next (1-based).
    pub fn attempt(&self) -> u32 {
        self.failed + 1
    }

    /// The last recorded failure.
    pub fn last_error(&self) -> Option<&Failure> {
        self.errors.last()
    }

    /// Records a failed attempt, keeping the history bounded.
    pub fn record_failure(&mut self, kind: &str, message: &str, at_ms: i64) {
        self.failed += 1;
        if self.errors.len() >= ERROR_HISTORY {
            self.errors.remove(0);
        }
        self.errors.push(Failure {
            attempt: self.failed,
            at_ms,
            kind: kind.to_string(),
            message: message.to_string(),
        });
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting in the queue, ready to run.
    Pending,
    /// Waiting for its run-at time (delayed, or a retry in backoff).
    Scheduled,
    /// Leased by a worker.
    Active,
    /// Finished successfully.
    Completed,
    /// Failed for good and kept in the dead-letter set.
    Dead,
    /// Dropped at the handler's request.
    Discarded,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Discarded => "discarded",
        };
        f.write_str(s)
    }
}

/// Options a producer sets on a job; unset fields fall back to the handler's `#[job]` defaults
/// and then to the crate defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    /// Target queue (default `"default"`).
    pub queue: Option<String>,
    /// Priority, higher first.
    pub priority: Option<u8>,
    /// Maximum attempts.
    pub max_attempts: Option<u32>,
    /// Backoff policy.
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Run no earlier than this time.
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Run no earlier than this delay from now.
    pub delay: Option<Duration>,
    /// Idempotency key.
    pub unique_key: Option<String>,
    /// How long the idempotency key lives.
    pub unique_for: Option<Duration>,
}

impl JobOptions {
    /// Fills every unset field of `self` from `defaults`.
    pub fn or(mut self, defaults: &JobOptions) -> JobOptions {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = defaults.$f.clone(); } )* };
        }
        fill!(
            queue,
            priority,
            max_attempts,
            backoff,
            timeout,
            run_at,
            delay,
            unique_key,
            unique_for
        );
        self
    }
}

/// Name of the queue used when none is given.
pub const DEFAULT_QUEUE: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_monotonic() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.as_str().len(), JobId::LEN);
        assert!(JobId::parse(a.as_str()).is_ok());
        assert!(JobId::parse("nope").is_err());
    }

    #[test]
    fn deterministic_ids_agree_and_differ_by_seed() {
        let a = JobId::deterministic(1_700_000_000_000, "nightly@2026-01-01T00:00");
        let b = JobId::deterministic(1_700_000_000_000, "nightly@2026-01-01T00:00");
        let c = JobId::deterministic(1_700_000_000_000, "nightly@2026-01-02T00:00");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(JobId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn exponential_backoff_doubles_and_caps() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.nominal(1), Duration::from_secs(1));
        assert_eq!(b.nominal(2), Duration::from_secs(2));
        assert_eq!(b.nominal(3), Duration::from_secs(4));
        assert_eq!(b.nominal(5), Duration::from_secs(10));
        assert_eq!(b.nominal(500), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
        for failed in 1..8 {
            let nominal = b.nominal(failed);
            assert_eq!(b.delay(failed, 0.0), nominal / 2);
            assert_eq!(b.delay(failed, 1.0), nominal);
            let mid = b.delay(failed, 0.5);
            assert!(mid >= nominal / 2 && mid <= nominal);
        }
        let f = Backoff::fixed(Duration::from_millis(250));
        assert_eq!(f.delay(3, 0.9), Duration::from_millis(250));
    }

    #[test]
    fn failure_history_is_bounded() {
        let mut job = Job::new(JobId::generate(), "q", "n", vec![], 0);
        for i in 0..25 {
            job.record_failure("error", &format!("e{i}"), i);
        }
        assert_eq!(job.failed, 25);
        assert_eq!(job.errors.len(), ERROR_HISTORY);
        assert_eq!(job.last_error().map(|e| e.message.as_str()), Some("e24"));
    }

    #[test]
    fn traceparents_follow_the_w3c_grammar() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
    }
}
