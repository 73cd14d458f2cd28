//! The one error type of `queue-core`.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error kept as the [`source`](std::error::Error::source) of ours: for Redis failures
/// it is the `redis::RedisError` itself (downcast it if you must), so no third-party type
/// appears in this crate's API.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong when talking to the queue.
///
/// Every error says what kind it is ([`Error::kind`]) and whether retrying the same call can
/// succeed ([`Error::is_retryable`]); a Redis failure keeps the Redis error as its source.
/// Callers decide on the kind, never on the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached, or the connection broke or timed out mid-call.
    #[error("redis is unreachable at {url}: {source}")]
    Unreachable {
        /// The address that was tried, without credentials.
        url: String,
        /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`].
        kind: ErrorKind,
        /// The Redis client's error.
        #[source]
        source: Source,
    },
    /// Redis answered with an error (loading, read-only, out of memory, refused credentials,
    /// a script's refusal...): [`Error::kind`] tells which.
    #[error("redis error ({context}): {source}")]
    Redis {
        /// What the server said, classified.
        kind: ErrorKind,
        /// The command or script that failed.
        context: String,
        /// The Redis client's error.
        #[source]
        source: Source,
    },
    /// Redis answered something this version does not expect (a reply of the wrong shape).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
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
    /// A loader given to the cache failed.
    #[error("the loader failed: {0}")]
    Loader(String),
    /// The write was applied on the primary, but fewer copies than the client's durability
    /// asks for confirmed it in time (a retry of an enqueue without a unique key would add a
    /// second job).
    #[error("write applied but not durable: {confirmed} of {wanted} replicas confirmed{}", if *local { "" } else { ", and the primary's fsync did not" })]
    NotDurable {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that confirmed.
        confirmed: u32,
        /// Whether the primary itself confirmed (always true for WAIT).
        local: bool,
    },
    /// A local process (such as an embedded `redis-server`) could not be started.
    #[error("cannot start {what}: {message}")]
    Spawn {
        /// The program.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

/// What kind of failure an [`Error`] is: the one classification every caller uses to decide
/// whether to retry, back off, alert or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection could not be made, was refused, reset or dropped.
    Connection,
    /// A command got no answer within the response timeout.
    Timeout,
    /// The server is loading its dataset after a restart (`LOADING`).
    Loading,
    /// The server is a replica and refused a write (`READONLY`): a failover is under way.
    ReadOnly,
    /// The replica lost its master (`MASTERDOWN`).
    MasterDown,
    /// The cluster asks to try again (`TRYAGAIN`).
    TryAgain,
    /// The cluster is down (`CLUSTERDOWN`).
    ClusterDown,
    /// The key lives on another cluster node (`MOVED`, `ASK`).
    Redirect,
    /// A script or function is running too long (`BUSY`).
    Busy,
    /// The server reached `maxmemory` and refuses writes (`OOM`).
    OutOfMemory,
    /// The server refused the credentials, or asks for some (`NOAUTH`, `WRONGPASS`).
    Auth,
    /// The user may not run this command or touch this key (`NOPERM`).
    Permission,
    /// One of our scripts refused the call (a broken invariant, reported with code `QUEUE`).
    Script,
    /// Any other error reply of the server.
    Server,
    /// A reply of an unexpected shape.
    Protocol,
    /// A configuration value is invalid.
    Config,
    /// A value could not be encoded.
    Encode,
    /// Bytes do not decode.
    Decode,
    /// A payload is over the limit.
    PayloadTooLarge,
    /// A job option is out of range.
    InvalidJob,
    /// A wait for an outcome ran out of time.
    WaitTimeout,
    /// No such job.
    NotFound,
    /// The handler registry is invalid.
    Registry,
    /// A cache loader failed.
    Loader,
    /// A write was applied but not confirmed as durable as asked.
    NotDurable,
    /// A local process could not be started.
    Spawn,
}

impl ErrorKind {
    /// Whether a failure of this kind can pass by itself, so the same call may succeed later:
    /// connection trouble, timeouts, a server loading or failing over, cluster redirections
    /// and a busy script. Out of memory is not: it needs an operator.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::Loading
                | ErrorKind::ReadOnly
                | ErrorKind::MasterDown
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::Redirect
                | ErrorKind::Busy
                | ErrorKind::WaitTimeout
        )
    }

    /// The kind of a Redis client error, from its error kind and reply code (never from its
    /// message text).
    pub(crate) fn of_redis(e: &redis::RedisError) -> ErrorKind {
        use redis::ErrorKind as K;
        use redis::ServerErrorKind as S;
        if e.is_timeout() {
            return ErrorKind::Timeout;
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            return ErrorKind::Connection;
        }
        match e.kind() {
            K::AuthenticationFailed => ErrorKind::Auth,
            K::Parse | K::UnexpectedReturnType => ErrorKind::Protocol,
            K::InvalidClientConfig => ErrorKind::Config,
            K::ClusterConnectionNotFound => ErrorKind::Connection,
            K::Server(S::BusyLoading) => ErrorKind::Loading,
            K::Server(S::ReadOnly) => ErrorKind::ReadOnly,
            K::Server(S::MasterDown) => ErrorKind::MasterDown,
            K::Server(S::TryAgain) => ErrorKind::TryAgain,
            K::Server(S::ClusterDown) => ErrorKind::ClusterDown,
            K::Server(S::Moved | S::Ask) => ErrorKind::Redirect,
            K::Server(S::NoPerm) => ErrorKind::Permission,
            // Codes the client does not map to a kind of its own (and, should a client version
            // stop mapping one, the same codes read directly).
            _ => match e.code() {
                Some("LOADING") => ErrorKind::Loading,
                Some("READONLY") => ErrorKind::ReadOnly,
                Some("MASTERDOWN") => ErrorKind::MasterDown,
                Some("TRYAGAIN") => ErrorKind::TryAgain,
                Some("CLUSTERDOWN") => ErrorKind::ClusterDown,
                Some("MOVED" | "ASK") => ErrorKind::Redirect,
                Some("OOM") => ErrorKind::OutOfMemory,
                Some("BUSY") => ErrorKind::Busy,
                Some("NOAUTH" | "WRONGPASS") => ErrorKind::Auth,
                Some("NOPERM") => ErrorKind::Permission,
                Some("QUEUE") => ErrorKind::Script,
                _ => ErrorKind::Server,
            },
        }
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unreachable { kind, .. } | Error::Redis { kind, .. } => *kind,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Config(_) => ErrorKind::Config,
            Error::Encode { .. } => ErrorKind::Encode,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::InvalidJob(_) => ErrorKind::InvalidJob,
            Error::Timeout(_) => ErrorKind::WaitTimeout,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Registry(_) => ErrorKind::Registry,
            Error::Loader(_) => ErrorKind::Loader,
            Error::NotDurable { .. } => ErrorKind::NotDurable,
            Error::Spawn { .. } => ErrorKind::Spawn,
        }
    }

    /// Whether the same call may succeed if retried later (see [`ErrorKind::is_retryable`]);
    /// configuration, encoding and validation errors never will.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The error of a failed command to the server at `url`.
    pub(crate) fn redis(url: &str) -> impl Fn(redis::RedisError) -> Error + '_ {
        move |e| Error::from_redis(url, "command", e)
    }

    /// Classifies a Redis client error once: connection trouble becomes
    /// [`Error::Unreachable`], everything else [`Error::Redis`] with its kind.
    pub(crate) fn from_redis(url: &str, context: &str, e: redis::RedisError) -> Error {
        let kind = ErrorKind::of_redis(&e);
        match kind {
            ErrorKind::Connection | ErrorKind::Timeout => Error::Unreachable {
                url: redact(url),
                kind,
                source: Box::new(e),
            },
            _ => Error::Redis {
                kind,
                context: context.to_string(),
                source: Box::new(e),
            },
        }
    }

    /// A connection failure that did not come from the Redis client (a subscriber gave up).
    pub(crate) fn unreachable(url: &str, message: impl Into<String>) -> Error {
        Error::Unreachable {
            url: redact(url),
            kind: ErrorKind::Connection,
            source: message.into().into(),
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

    fn server_error(code: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_string(), Some("detail".into()))
    }

    #[test]
    fn classifies_reply_codes_into_kinds() {
        for (code, kind, retry) in [
            ("OOM", ErrorKind::OutOfMemory, false),
            ("BUSY", ErrorKind::Busy, true),
            ("NOAUTH", ErrorKind::Auth, false),
            ("WRONGPASS", ErrorKind::Auth, false),
            ("QUEUE", ErrorKind::Script, false),
            ("WHATEVER", ErrorKind::Server, false),
        ] {
            let e = Error::from_redis("redis://x", "test", server_error(code));
            assert_eq!(e.kind(), kind, "{code}");
            assert_eq!(e.is_retryable(), retry, "{code}");
            let source = std::error::Error::source(&e).expect("keeps its source");
            assert!(
                source.downcast_ref::<redis::RedisError>().is_some(),
                "{code}"
            );
        }
    }

    /// A reply as a server sends it, parsed by the client as it parses real replies.
    fn server_reply(line: &str) -> redis::RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()) {
            Ok(v) => v.extract_error().expect_err("an error reply"),
            Err(e) => e,
        }
    }

    #[test]
    fn classifies_real_server_replies() {
        for (line, kind, retry) in [
            (
                "LOADING Redis is loading the dataset in memory",
                ErrorKind::Loading,
                true,
            ),
            (
                "READONLY You can't write against a read only replica.",
                ErrorKind::ReadOnly,
                true,
            ),
            (
                "MASTERDOWN Link with MASTER is down",
                ErrorKind::MasterDown,
                true,
            ),
            (
                "TRYAGAIN Multiple keys request during rehashing",
                ErrorKind::TryAgain,
                true,
            ),
            (
                "CLUSTERDOWN The cluster is down",
                ErrorKind::ClusterDown,
                true,
            ),
            ("MOVED 3999 127.0.0.1:6381", ErrorKind::Redirect, true),
            ("ASK 3999 127.0.0.1:6381", ErrorKind::Redirect, true),
            ("BUSY Redis is busy running a script", ErrorKind::Busy, true),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                ErrorKind::OutOfMemory,
                false,
            ),
            ("NOAUTH Authentication required.", ErrorKind::Auth, false),
            (
                "WRONGPASS invalid username-password pair",
                ErrorKind::Auth,
                false,
            ),
            (
                "NOPERM this user has no permissions to run the 'eval' command",
                ErrorKind::Permission,
                false,
            ),
            (
                "QUEUE enqueue takes 1 to 1000 jobs, got 0",
                ErrorKind::Script,
                false,
            ),
            ("ERR unknown command", ErrorKind::Server, false),
        ] {
            let e = Error::from_redis("redis://x", "test", server_reply(line));
            assert_eq!(e.kind(), kind, "{line}");
            assert_eq!(e.is_retryable(), retry, "{line}");
            assert!(matches!(e, Error::Redis { .. }), "{line}");
        }
    }

    #[test]
    fn connection_trouble_is_unreachable_and_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::from_redis("redis://:pw@x:1", "test", redis::RedisError::from(io));
        assert!(
            matches!(&e, Error::Unreachable { url, .. } if url == "redis://***@x:1"),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.is_retryable());
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("redis://user:secret@host:1/0"),
            "redis://***@host:1/0"
        );
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
