//! Job types, handler registration (through `inventory`) and what a handler may answer.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::client::Client;
use crate::engine::job::{JobId, JobOptions};
use crate::error::{Error, Result};

/// A job type: its stable wire name, its argument type and its default options.
///
/// Implemented by `#[job]`; implement it by hand for a producer that must not link handlers.
pub trait JobType {
    /// The stable name stored with every job and used to find its handler.
    const NAME: &'static str;
    /// The handler's argument.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// Defaults for jobs of this type (queue, priority, attempts...).
    fn options() -> JobOptions {
        JobOptions::default()
    }
}

/// The error type of a boxed error a handler can return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What to do after a failed attempt, as a handler asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Retry with the job's backoff while attempts remain (the default for `?` errors).
    Retry,
    /// Retry after this delay while attempts remain.
    RetryAfter(Duration),
    /// Dead-letter now.
    DeadLetter,
    /// Drop the job silently (it is counted, not dead-lettered).
    Discard,
    /// Run again after this delay without counting an attempt (rate limited).
    Snooze(Duration),
    /// An upstream answered 429: push the job's rate-limit key back for this long (when the job
    /// has a `rate_limit`), and run again then without counting an attempt.
    RateLimited(Duration),
}

/// A failed attempt: what went wrong and what to do about it.
///
/// Any error converts into a retryable `JobError` with `?`; the constructors choose another
/// action.
pub struct JobError {
    action: Action,
    kind: &'static str,
    message: String,
}

impl JobError {
    /// Retry with backoff.
    pub fn retry(message: impl fmt::Display) -> JobError {
        JobError {
            action: Action::Retry,
            kind: "error",
            message: message.to_string(),
        }
    }
    /// Retry after `delay`.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> JobError {
        JobError {
            action: Action::RetryAfter(delay),
            kind: "error",
            message: message.to_string(),
        }
    }
    /// Dead-letter now, whatever attempts remain.
    pub fn dead_letter(message: impl fmt::Display) -> JobError {
        JobError {
            action: Action::DeadLetter,
            kind: "error",
            message: message.to_string(),
        }
    }
    /// Drop the job.
    pub fn discard(message: impl fmt::Display) -> JobError {
        JobError {
            action: Action::Discard,
            kind: "discarded",
            message: message.to_string(),
        }
    }
    /// Run again after `delay`, not counted as an attempt (the job could not run yet).
    pub fn snooze(delay: Duration, message: impl fmt::Display) -> JobError {
        JobError {
            action: Action::Snooze(delay),
            kind: "snoozed",
            message: message.to_string(),
        }
    }
    /// An upstream service answered 429 (too many requests): with a `rate_limit` on the job,
    /// every job of its rate key waits `retry_after`; this one runs again then, not counted
    /// as an attempt.
    pub fn rate_limited(retry_after: Duration) -> JobError {
        JobError {
            action: Action::RateLimited(retry_after),
            kind: "rate_limited",
            message: format!("upstream rate limit: retry after {retry_after:?}"),
        }
    }
    /// Sets the short kind recorded in the error history (`error`, `panic`, `timeout`...).
    pub fn with_kind(mut self, kind: &'static str) -> JobError {
        self.kind = kind;
        self
    }
    /// The requested action.
    pub fn action(&self) -> Action {
        self.action
    }
    /// The recorded kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JobError({:?}, {}: {})",
            self.action, self.kind, self.message
        )
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

// `JobError` deliberately does not implement `std::error::Error`, so that this blanket
// conversion (the one that makes `?` work on any error) does not overlap `From<T> for T`.
impl<E: Into<BoxError>> From<E> for JobError {
    fn from(e: E) -> JobError {
        let e: BoxError = e.into();
        JobError::retry(e)
    }
}

/// What a running handler knows about its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job id.
    pub id: JobId,
    /// The queue (for a job in a shard of a split queue, the queue it is a shard of).
    pub queue: String,
    /// The job name.
    pub name: String,
    /// This attempt (1-based).
    pub attempt: u32,
    /// The maximum number of attempts.
    pub max_attempts: u32,
    /// A client on the same Redis, to enqueue follow-up jobs.
    pub client: Client,
    /// The producer's W3C trace context, if it sent one ([`NewJob::traceparent`]): pass it on
    /// to follow-up jobs or outgoing requests to keep one trace.
    ///
    /// [`NewJob::traceparent`]: crate::NewJob::traceparent
    pub traceparent: Option<String>,
}

/// The future a type-erased handler returns: the encoded result, or the failure.
pub type HandlerFuture =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<u8>, JobError>> + Send + 'static>>;

/// A type-erased handler: decodes the arguments, runs the user's function, encodes the result.
pub type HandlerFn = fn(JobContext, Vec<u8>) -> HandlerFuture;

/// One `#[job]` handler linked into the binary; collected with `inventory`.
#[derive(Debug)]
pub struct JobRegistration {
    /// The stable job name.
    pub name: &'static str,
    /// The handler.
    pub handler: HandlerFn,
    /// The job type's default options.
    pub options: fn() -> JobOptions,
    /// Where it was declared (`file:line`), for error messages about duplicates.
    pub location: &'static str,
    /// The rate limit declared with `#[job(rate_limit = "100/1m", rate_key = "...")]`: the
    /// limit and the key (default: the job name).
    pub rate_limit: Option<(&'static str, &'static str)>,
    /// The result cache declared with `#[job(cache_ttl = "5m")]`, in milliseconds.
    pub cache_ttl_ms: Option<u64>,
    /// The schedule declared with `#[job(cron = "...")]`, if any.
    pub schedule: Option<fn() -> crate::error::Result<crate::engine::cron::Schedule>>,
}

inventory::collect!(JobRegistration);

/// Every handler linked into this binary, by name.
///
/// # Errors
///
/// [`Error::Registry`] when two handlers share a name (both places are listed).
pub fn registered_jobs() -> Result<HashMap<&'static str, &'static JobRegistration>> {
    registered(linked_jobs())
}

/// Every `#[job]` registration linked into the binary, duplicates included.
pub fn linked_jobs() -> impl Iterator<Item = &'static JobRegistration> {
    inventory::iter::<JobRegistration>.into_iter()
}

/// The registrations of `all` by name; two with one name are an error listing both places.
///
/// # Errors
///
/// [`Error::Registry`] on duplicate names.
pub fn registered(
    all: impl Iterator<Item = &'static JobRegistration>,
) -> Result<HashMap<&'static str, &'static JobRegistration>> {
    let mut map: HashMap<&'static str, &'static JobRegistration> = HashMap::new();
    let mut dups = Vec::new();
    for reg in all {
        if let Some(prev) = map.insert(reg.name, reg) {
            dups.push(format!(
                "{:?} at {} and {}",
                reg.name, prev.location, reg.location
            ));
        }
    }
    if !dups.is_empty() {
        dups.sort();
        return Err(Error::Registry(format!(
            "duplicate job names: {}",
            dups.join("; ")
        )));
    }
    Ok(map)
}

/// Support for code generated by `#[job]`; not a public API.
#[doc(hidden)]
pub(crate) mod __private {
    pub use inventory;

    use super::JobError;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// Decodes a job's arguments; a payload that does not decode is dead-lettered at once
    /// (retrying cannot fix it).
    pub fn decode_args<T: DeserializeOwned>(bytes: &[u8], job: &str) -> Result<T, JobError> {
        crate::engine::codec::decode_value(bytes, "job arguments").map_err(|e| {
            JobError::dead_letter(format!(
                "arguments of job {job:?} do not decode as {}: {e}",
                std::any::type_name::<T>()
            ))
            .with_kind("decode")
        })
    }

    /// Encodes a handler's return value.
    pub fn encode_result<T: Serialize>(value: &T) -> Result<Vec<u8>, JobError> {
        crate::engine::codec::encode_value(value, "job result")
            .map_err(|e| JobError::dead_letter(e).with_kind("encode"))
    }
}
