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
    /// The TLS handshake failed: the server's certificate does not verify against the CA (or
    /// names another host), or the server refused the client's certificate. A retry meets the
    /// same certificates.
    Tls,
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
        if is_tls_failure(e) {
            return ErrorKind::Tls;
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
            // stop mapping one, the same codes read directly). A pipeline that failed in Redis
            // has no code of its own but carries its commands' errors: the first says what
            // happened (an OOM refusing one of its writes, say).
            _ => match e.code() {
                Some(code) => ErrorKind::of_code(code),
                None => e
                    .clone()
                    .into_server_errors()
                    .and_then(|errs| errs.first().map(|(_, err)| ErrorKind::of_code(err.code())))
                    .unwrap_or(ErrorKind::Server),
            },
        }
    }

    /// The kind of a Redis reply code.
    fn of_code(code: &str) -> ErrorKind {
        match Some(code) {
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
        }
    }
}

/// Whether a rustls error is behind `e`: redis-rs reports a failed handshake as an I/O error
/// (behind an `Arc`) whose payload is the rustls error, and neither an `Arc` nor an `io::Error`
/// shows its payload through `source()`, hence the unwrapping.
fn is_tls_failure(e: &redis::RedisError) -> bool {
    fn is_tls(c: &(dyn std::error::Error + 'static)) -> bool {
        // A certificate or a handshake refused: a setting to fix, not an outage. A record
        // garbled mid-session (a decrypt error, a peer misbehaving) is a broken connection
        // like any other, and retried.
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return matches!(
                t,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::AlertReceived(_)
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::InappropriateHandshakeMessage { .. }
                    | rustls::Error::HandshakeNotComplete
                    | rustls::Error::InvalidCertRevocationList(_)
                    | rustls::Error::NoApplicationProtocol
            );
        }
        if let Some(arc) = c.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>() {
            return is_tls(arc.as_ref());
        }
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            return is_tls(inner);
        }
        false
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if is_tls(c) {
            return true;
        }
        cause = c.source();
    }
    false
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
            // Which server's certificates: the context of a command says nothing about them.
            ErrorKind::Tls => Error::Redis {
                kind,
                context: format!("TLS handshake with {}", redact(url)),
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

/// Removes every secret from a Redis URL so it never reaches a log, a `Debug` or an error
/// message; the rest stays readable.
///
/// Covers every form the Redis client accepts:
///
/// - `redis://user:pw@host`, `redis://:pw@host`, and the same with `rediss://`, `valkey://`,
///   `valkeys://`: the password becomes `***`, the user name stays (it is not a secret). A
///   user part without a `:` is hidden whole (some services put a token there).
/// - `redis+unix:///path?user=u&pass=pw&db=1` (and `unix://`, `valkey+unix://`): the value of
///   `pass` becomes `***`; `user`, `db`, `protocol` and the path stay.
///
/// It errs on the side of hiding: any query parameter whose name contains `pass`, `pwd`,
/// `secret` or `token`, or is `auth`, is hidden too (percent-encoded names included), and so
/// is whatever follows such a value up to the next `user`, `db` or `protocol` parameter (a
/// password holding a raw `&` would otherwise show its tail). In a TCP URL everything up to
/// the last `@` is taken for credentials, so a password holding a raw `/`, `?` or `#` (a URL
/// the client cannot parse) is still hidden.
///
/// # Examples
///
/// ```
/// use queue_core::admin::redact;
///
/// assert_eq!(redact("redis://app:hunter2@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(
///     redact("redis+unix:///run/redis.sock?user=app&pass=hunter2&db=1"),
///     "redis+unix:///run/redis.sock?user=app&pass=***&db=1"
/// );
/// assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn redact(url: &str) -> String {
    let Some(sep) = url.find("://") else {
        // Not a URL the client accepts; still, whatever precedes an `@` may be a credential.
        return match url.rfind('@') {
            Some(at) => format!("***@{}", &url[at + 1..]),
            None => url.to_string(),
        };
    };
    // A Sentinel or cluster URL is shown rebuilt from its parts (or not at all when it does
    // not parse).
    if let Some(shown) = crate::endpoint::SentinelUrl::redacted(url)
        .or_else(|| crate::endpoint::ClusterUrl::redacted(url))
    {
        return shown;
    }
    let (scheme, rest) = (&url[..sep], &url[sep + 3..]);
    let unix = scheme.to_ascii_lowercase().ends_with("unix");
    // Nothing after the host of a TCP URL may hold an `@` (a db number, `?protocol=`,
    // `#insecure`), so its last `@` ends the credentials even when the password holds a raw
    // delimiter. A unix URL's path and query may (`/run/a@b.sock`, `user=app@corp`), so there
    // only the part before the path counts (empty in every URL the client accepts).
    let at = if unix {
        rest[..rest.find(['/', '?']).unwrap_or(rest.len())].rfind('@')
    } else {
        rest.rfind('@')
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    let after = match at {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                None => out.push_str("***@"),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match after.split_once('?') {
        Some((head, query)) => {
            out.push_str(head);
            out.push('?');
            redact_query(query, &mut out);
        }
        None => out.push_str(after),
    }
    out
}

/// Appends `query` to `out` with the values of secret parameters replaced by `***` (see
/// [`redact`]).
fn redact_query(query: &str, out: &mut String) {
    // The parameters the client reads besides the password: the end of a hidden value.
    const PUBLIC: [&str; 3] = ["user", "db", "protocol"];
    let mut hiding = false;
    let mut first = true;
    for pair in query.split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name = percent_decode(raw_name).to_ascii_lowercase();
        // A part of a hidden value that held a raw `&`.
        if hiding && !PUBLIC.contains(&name.as_str()) {
            continue;
        }
        if !first {
            out.push('&');
        }
        first = false;
        hiding = name == "auth"
            || ["pass", "pwd", "secret", "token"]
                .iter()
                .any(|s| name.contains(s));
        if hiding {
            out.push_str(raw_name);
            out.push_str("=***");
        } else {
            out.push_str(pair);
        }
    }
}

/// Decodes `%XX` escapes and `+` as the URL parser does for query names (lossy: only to
/// recognise a name).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                bytes.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                bytes.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                bytes.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
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
            matches!(&e, Error::Unreachable { url, .. } if url == "redis://:***@x:1"),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.is_retryable());
    }

    /// The password of every test URL below.
    const PW: &str = "hunter2";

    /// Every URL form the Redis client accepts, with the password `PW`, and its redaction.
    const FORMS: [(&str, &str); 19] = [
        ("redis://user:hunter2@host:1/0", "redis://user:***@host:1/0"),
        ("redis://:hunter2@host:1", "redis://:***@host:1"),
        ("redis://default:hunter2@host", "redis://default:***@host"),
        (
            "rediss://user:hunter2@host:6380/2",
            "rediss://user:***@host:6380/2",
        ),
        (
            "rediss://:hunter2@host:6380/#insecure",
            "rediss://:***@host:6380/#insecure",
        ),
        ("valkeys://:hunter2@host", "valkeys://:***@host"),
        // Percent-encoded and raw delimiters inside the password.
        ("redis://u:hunter2%40x@host", "redis://u:***@host"),
        ("redis://u:a@b/hunter2?@host:1", "redis://u:***@host:1"),
        (
            "redis+unix:///run/redis.sock?user=app&pass=hunter2&db=1",
            "redis+unix:///run/redis.sock?user=app&pass=***&db=1",
        ),
        (
            "redis+unix:///run/redis.sock?pass=hunter2",
            "redis+unix:///run/redis.sock?pass=***",
        ),
        (
            "unix:///tmp/r.sock?db=2&password=hunter2",
            "unix:///tmp/r.sock?db=2&password=***",
        ),
        (
            "valkey+unix:///tmp/r.sock?pa%73s=hunter2&user=a@b",
            "valkey+unix:///tmp/r.sock?pa%73s=***&user=a@b",
        ),
        // A raw `&` or `#` inside the password hides up to the next known parameter.
        (
            "redis+unix:///s?pass=hun&ter2#x&db=3",
            "redis+unix:///s?pass=***&db=3",
        ),
        ("hunter2@host:1", "***@host:1"),
        (
            "redis+sentinel://app:hunter2@s1,s2:26380/mymaster/1",
            "redis+sentinel://app:***@s1:26379,s2:26380/mymaster/1",
        ),
        (
            "rediss+sentinel://a:hunter2@s1/m?sentinel_user=u&sentinel_password=hunter2",
            "rediss+sentinel://a:***@s1:26379/m?sentinel_user=u&sentinel_password=***",
        ),
        // Raw delimiters in a password: the URL does not parse, and nothing of it shows.
        (
            "redis+sentinel://s1,s2/m?sentinel_password=hun@ter2",
            "redis+sentinel://<a Sentinel URL that does not parse>",
        ),
        (
            "redis+sentinel://app:hun/ter2@127.0.0.1:1/m",
            "redis+sentinel://<a Sentinel URL that does not parse>",
        ),
        (
            "redis+sentinel://app:hunter2p@ss?whunter2@127.0.0.1:1/m",
            "redis+sentinel://<a Sentinel URL that does not parse>",
        ),
    ];

    #[test]
    fn redacts_every_url_form() {
        for (url, redacted) in FORMS {
            let got = redact(url);
            assert_eq!(got, redacted, "{url}");
            assert!(
                !got.contains("hunter") && !got.contains("ter2"),
                "{url} -> {got}"
            );
        }
        for clean in [
            "redis://host:1",
            "redis://127.0.0.1:6379/0?protocol=resp3",
            "rediss://host/#insecure",
            "redis+unix:///run/redis.sock?user=app&db=1",
            "unix:///tmp/a@b/r.sock",
            "",
        ] {
            assert_eq!(redact(clean), clean);
        }
    }

    #[test]
    fn a_redacted_url_names_the_same_server_and_user() {
        use redis::IntoConnectionInfo;
        // TLS URLs are left out: without a TLS feature the client refuses to parse them.
        for (url, _) in FORMS
            .iter()
            .filter(|(u, _)| u.starts_with("redis") && !u.starts_with("rediss"))
        {
            let Ok(original) = url.into_connection_info() else {
                // Malformed on purpose (a raw delimiter in the password).
                continue;
            };
            let redacted = redact(url)
                .into_connection_info()
                .unwrap_or_else(|e| panic!("{url}: the redaction parses: {e}"));
            assert_eq!(original.addr(), redacted.addr(), "{url}");
            let (o, r) = (original.redis_settings(), redacted.redis_settings());
            assert_eq!(o.username(), r.username(), "{url}");
            assert!(o.password().is_some(), "{url}");
            assert_eq!(r.password(), Some("***"), "{url}");
        }
    }

    #[test]
    fn errors_never_show_the_password() {
        for (url, redacted) in FORMS {
            let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
            for e in [
                Error::from_redis(url, "connect", redis::RedisError::from(io)),
                Error::from_redis(url, "command", server_error("WRONGPASS")),
                Error::unreachable(url, "subscription closed"),
            ] {
                for shown in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
                    assert!(!shown.contains(PW), "{url}: {shown}");
                }
                if let Error::Unreachable { url: shown, .. } = &e {
                    assert_eq!(shown, redacted);
                }
            }
        }
    }
}
