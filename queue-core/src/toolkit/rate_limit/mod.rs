//! Distributed rate limiting: exact sliding-window log, cheap sliding-window counter, and GCRA,
//! checked atomically across all the limits of one request.
//!
//! Keys are `<ns>:rl:{<subject>}:<limit>`: every limit of one subject shares a hash tag, so the
//! one script that checks them all touches one slot. Every key carries a TTL.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::engine::client::Client;
use crate::error::{Error, Result};

crate::script::scripts! {
    fn scripts() -> Scripts {
        // The algorithms are files of their own, assembled into the one script that checks
        // every limit of a request atomically.
        rate_limit => ["sliding_log.lua", "sliding_counter.lua", "gcra.lua", "check.lua"],
        rate_block => ["block.lua"],
    }
}

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Exact: never more than `max` in any window; one stored entry per admitted request.
    SlidingLog,
    /// Cheap (one small hash per subject), approximate. Never more than `max` per fixed window
    /// (so the average rate holds), and fewer than `2 x max` in any sliding window: it weights
    /// the previous window's count as if its requests were spread evenly, so a burst at the end
    /// of the previous window lets up to `max x f` more through, `f` being the fraction of the
    /// current window elapsed. Measured with 64 clients hammering 100/s: 137 in the worst 1 s
    /// window (docs/BENCHMARKS.md). Use the sliding log where the window bound must be exact.
    SlidingCounter,
    /// GCRA token bucket: requests spaced `window / max` apart, `burst` at once; never more
    /// than `max + burst - 1` in any window (exactly `max` with burst 1). One key per subject.
    Gcra {
        /// Requests that may arrive at once.
        burst: u64,
    },
}

impl Algorithm {
    fn wire(self) -> (&'static str, u64) {
        match self {
            Algorithm::SlidingLog => ("log", 1),
            Algorithm::SlidingCounter => ("counter", 1),
            Algorithm::Gcra { burst } => ("gcra", burst.max(1)),
        }
    }
}

/// One limit: at most `max` per `window`, counted by `algorithm`.
///
/// Its name must not be empty, and no two limits of one [`RateLimiter`] may share a name (they
/// would count in the same key): [`RateLimiter::try_new`] refuses both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Name used in keys and metrics (default: the spec, e.g. `100/1m`).
    pub name: String,
    /// Requests allowed per window.
    pub max: u64,
    /// The window.
    pub window: Duration,
    /// The algorithm.
    pub algorithm: Algorithm,
}

impl Limit {
    /// Parses `"100/1m"`, `"10/s"`, `"1000/1h"` (count, slash, duration with unit ms, s, m, h,
    /// d; a bare unit means 1), counted with the exact sliding log.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed spec.
    pub fn parse(spec: &str) -> Result<Limit> {
        let bad = || {
            Error::Config(format!(
                "invalid rate limit {spec:?}: expected e.g. \"100/1m\", \"10/s\", \"1000/1h\""
            ))
        };
        let (max, window) = crate::duration::parse_rate(spec).ok_or_else(bad)?;
        Ok(Limit {
            name: spec.trim().to_string(),
            max,
            window,
            algorithm: Algorithm::SlidingLog,
        })
    }

    /// Counts with `algorithm` instead.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Limit {
        self.algorithm = algorithm;
        self
    }

    /// Names the limit (keys and metrics).
    pub fn named(mut self, name: impl Into<String>) -> Limit {
        self.name = name.into();
        self
    }
}

/// What to do when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Let requests through (availability first; the default for APIs).
    #[default]
    FailOpen,
    /// Reject requests (protection first).
    FailClosed,
}

/// The verdict on one limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitState {
    /// The limit's name.
    pub name: String,
    /// Its maximum.
    pub limit: u64,
    /// Whether this limit alone would admit the request.
    pub allowed: bool,
    /// Requests left in the window after this one.
    pub remaining: u64,
    /// Until the limit is back to full capacity.
    pub reset: Duration,
    /// Until a rejected request may be retried.
    pub retry_after: Duration,
}

/// The verdict on a request: allowed or not, and the figures for `RateLimit-*` headers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why, when it was not counted: `bypass`, `redis unreachable (fail open|closed)`.
    pub note: Option<String>,
    /// Redis time of the decision, ms (with microseconds).
    pub at_ms: f64,
    /// Every limit's state.
    pub limits: Vec<LimitState>,
}

impl Decision {
    fn unlimited(note: &str, allowed: bool) -> Decision {
        Decision {
            allowed,
            note: Some(note.to_string()),
            at_ms: 0.0,
            limits: Vec::new(),
        }
    }

    /// The most constraining limit (fewest remaining), which the headers describe.
    pub fn tightest(&self) -> Option<&LimitState> {
        self.limits.iter().min_by_key(|l| (l.allowed, l.remaining))
    }

    /// When a rejected request may be retried (the longest wait of the rejecting limits).
    pub fn retry_after(&self) -> Option<Duration> {
        (!self.allowed).then(|| {
            self.limits
                .iter()
                .filter(|l| !l.allowed)
                .map(|l| l.retry_after)
                .max()
                .unwrap_or_default()
        })
    }

    /// The standard headers (IETF draft `RateLimit-Limit`, `RateLimit-Remaining`,
    /// `RateLimit-Reset` in whole seconds, and `Retry-After` when rejected).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(l) = self.tightest() {
            h.push(("ratelimit-limit", l.limit.to_string()));
            h.push(("ratelimit-remaining", l.remaining.to_string()));
            h.push(("ratelimit-reset", ceil_secs(l.reset).to_string()));
        }
        if let Some(r) = self.retry_after() {
            h.push(("retry-after", ceil_secs(r).max(1).to_string()));
        }
        h
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// A predicate on the subject: true skips the check.
type BypassRule = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Who skips the check entirely. Its `Debug` shows how many allow-listed subjects there are,
/// never which (they are often API keys).
#[derive(Default)]
pub struct Bypass {
    keys: HashSet<String>,
    rule: Option<BypassRule>,
}

impl std::fmt::Debug for Bypass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bypass")
            .field("keys", &self.keys.len())
            .field("rule", &self.rule.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    rejected: AtomicU64,
}

/// Builds a [`RateLimiter`] with bypass rules and an [`OnError`] mode.
#[derive(Debug)]
pub struct RateLimiterBuilder {
    client: Client,
    limits: Vec<Limit>,
    bypass: Bypass,
    on_error: OnError,
}

impl RateLimiterBuilder {
    /// Subjects in `keys` skip the check (an allow-list).
    pub fn allow_list(mut self, keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bypass.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Subjects for which `rule` is true skip the check (admin users...).
    pub fn bypass_if(mut self, rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.bypass.rule = Some(Box::new(rule));
        self
    }

    /// What to do when Redis is unreachable.
    pub fn on_error(mut self, mode: OnError) -> Self {
        self.on_error = mode;
        self
    }

    /// The limiter.
    ///
    /// # Panics
    ///
    /// When a limit's name is empty or two limits share a name; [`RateLimiterBuilder::try_build`]
    /// returns that as an error instead.
    pub fn build(self) -> RateLimiter {
        match self.try_build() {
            Ok(limiter) => limiter,
            Err(e) => panic!("{e}"),
        }
    }

    /// The limiter, once its limits are checked.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a limit's name is empty or two limits share a name (they would
    /// count in one key).
    pub fn try_build(self) -> Result<RateLimiter> {
        validate_limits(&self.limits)?;
        Ok(RateLimiter::build(
            self.client,
            self.limits,
            self.bypass,
            self.on_error,
        ))
    }
}

/// A set of limits applied together to subjects (a user, an IP, any string).
///
/// ```no_run
/// # async fn demo(client: queue_core::Client) -> queue_core::Result<()> {
/// use queue_core::rate_limit::{Limit, RateLimiter};
/// let limiter = RateLimiter::new(client, vec![Limit::parse("10/s")?, Limit::parse("1000/h")?]);
/// let d = limiter.check("user:42").await;
/// if !d.allowed { /* 429 with d.headers() */ }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    limits: Vec<Limit>,
    bypass: Bypass,
    on_error: OnError,
    counters: Vec<Counters>,
    /// Counts not yet added to the shared metrics in Redis.
    flushed: Mutex<Vec<(u64, u64)>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.inner.limits)
            .field("on_error", &self.inner.on_error)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter applying every one of `limits` to each subject; fails open.
    ///
    /// # Panics
    ///
    /// When a limit's name is empty or two limits share a name (`Limit::parse("10/s")` twice
    /// does); [`RateLimiter::try_new`] returns that as an error instead.
    pub fn new(client: Client, limits: Vec<Limit>) -> RateLimiter {
        match RateLimiter::try_new(client, limits) {
            Ok(limiter) => limiter,
            Err(e) => panic!("{e}"),
        }
    }

    /// A limiter applying every one of `limits` to each subject, once they are checked; fails
    /// open.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a limit's name is empty or two limits share a name (they would
    /// count in one key, each request twice).
    pub fn try_new(client: Client, limits: Vec<Limit>) -> Result<RateLimiter> {
        validate_limits(&limits)?;
        Ok(RateLimiter::build(
            client,
            limits,
            Bypass::default(),
            OnError::FailOpen,
        ))
    }

    fn build(client: Client, limits: Vec<Limit>, bypass: Bypass, on_error: OnError) -> RateLimiter {
        let counters = limits.iter().map(|_| Counters::default()).collect();
        let flushed = Mutex::new(vec![(0, 0); limits.len()]);
        RateLimiter {
            inner: Arc::new(Inner {
                client,
                limits,
                bypass,
                on_error,
                counters,
                flushed,
            }),
        }
    }

    /// A builder, for bypass rules and the behaviour when Redis is unreachable.
    pub fn builder(client: Client, limits: Vec<Limit>) -> RateLimiterBuilder {
        RateLimiterBuilder {
            client,
            limits,
            bypass: Bypass::default(),
            on_error: OnError::FailOpen,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &[Limit] {
        &self.inner.limits
    }

    fn keys(&self, subject: &str) -> (String, Vec<String>) {
        let keys = crate::keys::RateLimitKeys::of_valid(&self.inner.client.config().namespace);
        (
            keys.block(subject),
            self.inner
                .limits
                .iter()
                .map(|l| keys.limit(subject, &l.name))
                .collect(),
        )
    }

    /// Checks and, if every limit allows it, counts one request of `subject`.
    ///
    /// Never fails: when Redis is unreachable the decision follows [`OnError`] and says so in
    /// [`Decision::note`]. An empty subject is a caller's bug (every such request would share
    /// one budget): it is rejected uncounted, with the note `empty subject`, whatever the
    /// [`OnError`] mode ([`RateLimiter::try_check`] returns it as an error).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have counted the request.
    pub async fn check(&self, subject: &str) -> Decision {
        if subject.is_empty() {
            tracing::warn!("rate limit check of an empty subject refused");
            return Decision::unlimited("empty subject", false);
        }
        if self.bypassed(subject) {
            return Decision::unlimited("bypass", true);
        }
        match self.run_check(subject).await {
            Ok(d) => {
                self.count(&d);
                d
            }
            Err(e) => {
                let open = self.inner.on_error == OnError::FailOpen;
                // The subject is often an API key or a user's address: the log names it by a
                // hash, enough to tell whether two lines are about the same subject.
                tracing::warn!(
                    subject = %subject_hash(subject),
                    error = %e,
                    fail_open = open,
                    "rate limit check failed"
                );
                Decision::unlimited(
                    if open {
                        "redis unreachable (fail open)"
                    } else {
                        "redis unreachable (fail closed)"
                    },
                    open,
                )
            }
        }
    }

    /// Like [`RateLimiter::check`], but a Redis failure is returned instead of being decided
    /// by [`OnError`], and the local metrics count the request only when Redis answered.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty subject (nothing is sent); [`Error::Unreachable`],
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have counted the request.
    pub async fn try_check(&self, subject: &str) -> Result<Decision> {
        validate_subject(subject)?;
        if self.bypassed(subject) {
            return Ok(Decision::unlimited("bypass", true));
        }
        let d = self.run_check(subject).await?;
        self.count(&d);
        Ok(d)
    }

    fn bypassed(&self, subject: &str) -> bool {
        let b = &self.inner.bypass;
        b.keys.contains(subject) || b.rule.as_ref().is_some_and(|r| r(subject))
    }

    async fn run_check(&self, subject: &str) -> Result<Decision> {
        let (block, keys) = self.keys(subject);
        let mut call = scripts().rate_limit.call();
        call.key(block);
        for k in keys {
            call.key(k);
        }
        call.arg(rand::random::<u64>());
        for l in &self.inner.limits {
            let (algo, burst) = l.algorithm.wire();
            call.arg(algo)
                .arg(l.max)
                .arg(l.window.as_millis() as u64)
                .arg(burst);
        }
        let reply: Vec<String> = call
            .invoke(&mut self.inner.client.con(), self.inner.client.url())
            .await?;
        let num = |i: usize| -> f64 {
            reply
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let ms = |v: f64| Duration::from_micros((v.max(0.0) * 1000.0) as u64);
        let limits = self
            .inner
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| LimitState {
                name: l.name.clone(),
                limit: l.max,
                allowed: num(2 + i * 4) == 1.0,
                remaining: num(3 + i * 4) as u64,
                reset: ms(num(4 + i * 4)),
                retry_after: ms(num(5 + i * 4)),
            })
            .collect();
        Ok(Decision {
            allowed: num(0) == 1.0,
            note: None,
            at_ms: num(1),
            limits,
        })
    }

    /// Rejects every request of `subject` for `duration` (an upstream answered 429).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty subject (nothing is sent); [`Error::Unreachable`],
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn push_back(&self, subject: &str, duration: Duration) -> Result<()> {
        validate_subject(subject)?;
        let (block, _) = self.keys(subject);
        let mut call = scripts().rate_block.call();
        call.key(block).arg(duration.as_millis().max(1) as u64);
        let _: i64 = call
            .invoke(&mut self.inner.client.con(), self.inner.client.url())
            .await?;
        Ok(())
    }

    /// Adds this process's allowed and rejected counts since the last flush to the shared
    /// metrics (`<ns>:ratelimit:stats`, read by `queue ratelimit stats`). Cheap; call it
    /// periodically or at shutdown (the axum layer and the job middleware do).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`] (the counts are kept for the next flush).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: counts are marked flushed only after Redis took them.
    pub async fn flush_metrics(&self) -> Result<()> {
        let now: Vec<(u64, u64)> = self
            .inner
            .counters
            .iter()
            .map(|c| {
                (
                    c.allowed.load(Ordering::Relaxed),
                    c.rejected.load(Ordering::Relaxed),
                )
            })
            .collect();
        let before = self
            .inner
            .flushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let key = stats_key(&self.inner.client);
        let mut pipe = redis::pipe();
        let mut any = false;
        for (i, l) in self.inner.limits.iter().enumerate() {
            let (a, r) = (now[i].0 - before[i].0, now[i].1 - before[i].1);
            if a > 0 {
                pipe.hincr(&key, format!("{}:allowed", l.name), a).ignore();
                any = true;
            }
            if r > 0 {
                pipe.hincr(&key, format!("{}:rejected", l.name), r).ignore();
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        pipe.query_async::<()>(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        *self.inner.flushed.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(())
    }

    /// Adds a decision Redis made to this process's counts.
    fn count(&self, d: &Decision) {
        for (l, c) in d.limits.iter().zip(&self.inner.counters) {
            if d.allowed {
                c.allowed.fetch_add(1, Ordering::Relaxed);
            } else if !l.allowed {
                c.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Allowed and rejected counts of this process, per limit name.
    pub fn local_metrics(&self) -> Vec<(String, u64, u64)> {
        self.inner
            .limits
            .iter()
            .zip(&self.inner.counters)
            .map(|(l, c)| {
                (
                    l.name.clone(),
                    c.allowed.load(Ordering::Relaxed),
                    c.rejected.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Refuses limits that would share a key or name none: an empty name, and two limits with one
/// name (each request would be counted twice in one key, under two maxima).
fn validate_limits(limits: &[Limit]) -> Result<()> {
    if limits.iter().any(|l| l.name.is_empty()) {
        return Err(Error::Config("a rate limit name must not be empty".into()));
    }
    let mut seen = HashSet::new();
    let mut twice: Vec<&str> = limits
        .iter()
        .filter(|l| !seen.insert(l.name.as_str()))
        .map(|l| l.name.as_str())
        .collect();
    if !twice.is_empty() {
        twice.sort_unstable();
        twice.dedup();
        return Err(Error::Config(format!(
            "two rate limits of one limiter share a name ({}): name them apart with Limit::named",
            twice
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Refuses an empty subject: every caller that computed none would share one budget (and in
/// a cluster, an empty hash tag spreads one subject's keys over several slots).
fn validate_subject(subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(Error::Config(
            "a rate limit subject must not be empty".into(),
        ));
    }
    Ok(())
}

/// A short, stable stand-in for a subject in logs (FNV-1a, 64 bits, hex). Not a secret hash:
/// it keeps a raw API key out of log files while two lines about one subject still match.
/// SHA-256 is not used because this module's feature does not depend on `sha2`.
fn subject_hash(subject: &str) -> String {
    format!(
        "{:016x}",
        crate::engine::job::fnv1a(subject.as_bytes(), 0xcbf2_9ce4_8422_2325)
    )
}

fn stats_key(client: &Client) -> String {
    crate::keys::RateLimitKeys::of_valid(&client.config().namespace).stats()
}

/// Allowed and rejected counts per limit name across all processes (flushed metrics).
///
/// # Errors
///
/// [`Error::Unreachable`], [`Error::Redis`].
///
/// # Cancel safety
///
/// Cancel safe (read only).
pub async fn stats(client: &Client) -> Result<Vec<(String, u64, u64)>> {
    let all: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(stats_key(client))
        .query_async(&mut client.con())
        .await
        .map_err(Error::redis(client.url()))?;
    let mut by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (field, n) in all {
        if let Some(name) = field.strip_suffix(":allowed") {
            by.entry(name.to_string()).or_default().0 += n;
        } else if let Some(name) = field.strip_suffix(":rejected") {
            by.entry(name.to_string()).or_default().1 += n;
        }
    }
    Ok(by.into_iter().map(|(k, (a, r))| (k, a, r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        let l = Limit::parse("100/1m").expect("valid");
        assert_eq!((l.max, l.window), (100, Duration::from_secs(60)));
        assert_eq!(
            Limit::parse("10/s").expect("valid").window,
            Duration::from_secs(1)
        );
        assert_eq!(
            Limit::parse("5/250ms").expect("valid").window,
            Duration::from_millis(250)
        );
        for bad in ["", "10", "0/s", "10/0s", "x/s", "10/5y"] {
            assert!(Limit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_follow_the_tightest_limit() {
        let d = Decision {
            allowed: false,
            note: None,
            at_ms: 0.0,
            limits: vec![
                LimitState {
                    name: "a".into(),
                    limit: 10,
                    allowed: false,
                    remaining: 0,
                    reset: Duration::from_millis(400),
                    retry_after: Duration::from_millis(400),
                },
                LimitState {
                    name: "b".into(),
                    limit: 1000,
                    allowed: true,
                    remaining: 900,
                    reset: Duration::from_secs(3000),
                    retry_after: Duration::ZERO,
                },
            ],
        };
        let h: HashMap<_, _> = d.headers().into_iter().collect();
        assert_eq!(h["ratelimit-limit"], "10");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "1");
        assert_eq!(h["retry-after"], "1");
    }

    #[test]
    fn refuses_empty_and_shared_limit_names() {
        let ten = Limit::parse("10/s").expect("valid");
        assert!(validate_limits(&[ten.clone(), Limit::parse("100/m").expect("valid")]).is_ok());
        assert!(validate_limits(&[]).is_ok());
        let empty = validate_limits(&[ten.clone().named("")]).expect_err("empty name");
        assert_eq!(empty.kind(), crate::ErrorKind::Config);
        // `Limit::parse("10/s")` twice names both `10/s`: they would count in one key.
        let twice = validate_limits(&[ten.clone(), ten.clone(), ten.clone().named("b")])
            .expect_err("shared name");
        assert_eq!(twice.kind(), crate::ErrorKind::Config);
        assert!(twice.to_string().contains("\"10/s\""), "{twice}");
        assert!(validate_limits(&[ten.clone().named("a"), ten.named("b")]).is_ok());
    }

    #[test]
    fn refuses_empty_subjects() {
        let e = validate_subject("").expect_err("empty");
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(validate_subject("user:42").is_ok());
    }

    #[test]
    fn bypass_debug_counts_keys_without_naming_them() {
        let b = Bypass {
            keys: ["sk_live_abc123".to_string(), "sk_live_def456".to_string()].into(),
            rule: Some(Box::new(|_| false)),
        };
        let shown = format!("{b:?}");
        assert_eq!(shown, "Bypass { keys: 2, rule: true }");
    }

    #[test]
    fn logs_name_subjects_by_a_stable_hash() {
        let h = subject_hash("x-api-key:sk_live_abc123");
        assert_eq!(h.len(), 16);
        assert!(!h.contains("sk_live"));
        assert_eq!(h, subject_hash("x-api-key:sk_live_abc123"));
        assert_ne!(h, subject_hash("x-api-key:sk_live_abc124"));
    }
}
