//! The one error type of `queue-core`.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to the queue.
///
/// Errors say whether retrying the same call can succeed ([`Error::is_retryable`]), so callers
/// never need to inspect a third-party error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached, or the connection broke mid-call.
    #[error("redis is unreachable at {url}: {message}")]
    Unreachable {
        /// The address that was tried, without credentials.
        url: String,
        /// What the connection attempt reported.
        message: String,
    },
    /// Redis answered with an error (a script error, a wrong type, an authentication failure...).
    #[error("redis error: {0}")]
    Redis(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A job or its arguments could not be encoded.
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// Bytes read from Redis (or given by a producer) do not decode.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Encoded size of the job.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A job option is out of range (empty name, zero attempts...).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A wait for a job's outcome ran out of time.
    #[error("timed out after {0:?} waiting for the job")]
    Timeout(std::time::Duration),
    /// No job with this id is known to the queue.
    #[error("no job with id {0}")]
    NotFound(String),
    /// The registry of job handlers is invalid (duplicates, empty).
    #[error("invalid job registry: {0}")]
    Registry(String),
    /// A local process (such as an embedded `redis-server`) could not be started.
    #[error("cannot start {what}: {message}")]
    Spawn {
        /// The program.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

impl Error {
    /// Whether the same call may succeed if retried later (the connection or server state can
    /// change); configuration, encoding and validation errors never will.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Timeout(_))
    }

    pub(crate) fn redis(url: &str) -> impl Fn(redis::RedisError) -> Error + '_ {
        move |e| Error::from_redis(url, e)
    }

    pub(crate) fn from_redis(url: &str, e: redis::RedisError) -> Error {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            Error::Unreachable {
                url: redact(url),
                message: e.to_string(),
            }
        } else {
            Error::Redis(e.to_string())
        }
    }

    pub(crate) fn decode(what: &'static str, e: impl fmt::Display) -> Error {
        Error::Decode {
            what,
            message: e.to_string(),
        }
    }

    pub(crate) fn encode(what: &'static str, e: impl fmt::Display) -> Error {
        Error::Encode {
            what,
            message: e.to_string(),
        }
    }
}

/// Removes a password from a Redis URL so it never reaches a log or an error message.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("redis://user:secret@host:1/0"),
            "redis://***@host:1/0"
        );
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
