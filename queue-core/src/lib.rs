//! The Redis engine of `queue` and the toolkit beside it.
//!
//! - `engine/`: the job engine. Its job-facing types are at this crate's root ([`Client`],
//!   [`NewJob`], [`JobError`]...); the operator, worker-side, wire and cron APIs are the
//!   [`admin`], [`broker`], [`wire`] and [`cron`] modules.
//! - `toolkit/`: what applications use beside the queue, one module a concern, each behind a
//!   cargo feature: `cache` (`cache`, `sqlx`), `rate_limit` (`rate-limit`), `session`
//!   (`sessions`), the axum/tower adapters inside those two (`http`), and [`events`] (always).
//! - `testing/`: a throwaway `redis-server` for tests and the quickstart (`testing`).
//!
//! Shared by all: [`Error`] (`error.rs`), key names (`keys.rs`, the only place that builds
//! them), the script machinery (`script.rs`), the one SCAN loop (`scan.rs`) and the one
//! duration grammar (`duration.rs`).

#![deny(unreachable_pub)]
#![warn(missing_docs)]

pub mod acl;
mod duration;
mod endpoint;
mod engine;
mod error;
mod keys;
mod scan;
mod script;
#[cfg(feature = "testing")]
pub mod testing;
mod toolkit;

pub use duration::{parse_duration, DurationError};
pub use engine::broker::Retention;
pub use engine::client::{
    Client, ClientConfig, Enqueued, NewJob, QueueCounts, RedisConnection, TlsFiles,
};
pub use engine::codec::Outcome;
pub use engine::job::{Backoff, Failure, JobId, JobOptions, JobState};
pub use engine::registry::{Action, BoxError, JobContext, JobError, JobType};
pub use error::{Error, ErrorKind, Result, Source};
pub use script::Durability;

/// Operating queues: counts and stats, finding, retrying and deleting jobs, worker records.
pub mod admin {
    pub use crate::engine::admin::{Admin, JobView, QueueStats, ServerInfo, State, WorkerInfo};
    pub use crate::engine::history::{
        bucket_of, minute_of, steps as history_steps, Counts, Histogram, Minute,
        Step as HistoryStep, BUCKETS, BUCKETS_MS, MAX_NAMES, MAX_NAME_BYTES, OTHER_NAMES,
        RETENTION as HISTORY_RETENTION,
    };
    pub use crate::engine::search::{Bulk, BulkDone, Query, SearchPage, SEARCH_BUDGET};
    pub use crate::error::redact;
}

/// The worker side of the engine, for runtimes and benchmarks: lease, settle, recover.
///
/// `queue-worker` is built on it; applications have no reason to call it.
pub mod broker {
    pub use crate::engine::broker::{
        Alive, Amnesty, Beat, Broker, Cause, Completion, FetchPolicy, Fetched, Lease, Leased,
        Presence, Reclaimed, Settle, Waker, Watch,
    };
    pub use crate::engine::history::{Recorder, Timing, Total};
}

/// The wire format (docs/PROTOCOL.md): the envelope, its MessagePack encoding, key names.
pub mod wire {
    pub use crate::endpoint::SENTINEL_PORT;
    pub use crate::engine::client::{DEFAULT_MAX_PAYLOAD, MAX_BATCH, MIN_REDIS};
    pub use crate::engine::codec::{
        decode_member, decode_value, encode_member, encode_value, member_id, priority_prefix,
        MEMBER_HEADER, UNSUPPORTED_VERSION,
    };
    pub use crate::engine::job::{
        valid_traceparent, Job, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_MAX_ATTEMPTS,
        DEFAULT_QUEUE, DEFAULT_TIMEOUT, ERROR_HISTORY, UNDECODABLE, WIRE_VERSION,
    };
    pub use crate::keys::{
        escape, hash_slot, session_tag, shard_for_key, shard_name, shard_of, CacheKeys,
        NamespaceKeys, QueueKeys, RateLimitKeys, DEFAULT_NAMESPACE, MAX_QUEUE_NAME, MAX_SHARDS,
    };
}

/// Cron schedules: expressions, time zones, misfire policies, exactly-once ticks.
pub mod cron {
    pub use crate::engine::cron::{
        due_ticks, next_tick, parse_tz, resolve, Cron, CronExpr, Fired, Misfire, Schedule,
        ScheduleDef, ScheduleState, Tick, MISFIRE_GRACE,
    };
}

/// Typed pub/sub events, and the lifecycle log of a queue's jobs.
pub mod events {
    pub use crate::toolkit::events::{
        gaps, Event, EventBus, Gap, Lifecycle, LifecycleEvent, Subscription,
    };
}

/// Cache-aside for query results: TTL policies, single flight, invalidation, an optional L1.
#[cfg(feature = "cache")]
pub mod cache {
    #[cfg(feature = "sqlx")]
    pub use crate::toolkit::cache::sqlx::SqlParam;
    pub use crate::toolkit::cache::{hash_bytes, stats, Cache, CacheKey, CachePolicy, CacheStats};
}

/// Sliding-window and GCRA rate limits, checked atomically across processes.
#[cfg(feature = "rate-limit")]
pub mod rate_limit {
    #[cfg(feature = "http")]
    pub use crate::toolkit::http::{
        constant_time_eq, ForwardedHeader, KeyBy, RateLimitLayer, RateLimitService, SubjectFn,
        TrustedProxies,
    };
    pub use crate::toolkit::rate_limit::{
        stats, Algorithm, Bypass, Decision, Limit, LimitState, OnError, RateLimiter,
        RateLimiterBuilder,
    };
}

/// Server-side sessions: random ids stored hashed, idle and absolute timeouts, rotation.
#[cfg(feature = "sessions")]
pub mod session {
    #[cfg(feature = "http")]
    pub use crate::toolkit::http::RedisSessionStore;
    pub use crate::toolkit::session::{
        Session, SessionConfig, SessionId, SessionInfo, Sessions, Update,
    };
}

/// Handler registration for `#[job]` and the worker's registry; not for direct use.
#[doc(hidden)]
pub mod __private {
    pub use crate::engine::registry::__private::*;
    pub use crate::engine::registry::{
        linked_jobs, registered, registered_jobs, HandlerFn, HandlerFuture, JobRegistration,
    };
}
