//! The Redis engine of `queue`: job envelopes, the Lua scripts that move jobs between states,
//! the producer [`Client`], the worker-side [`Broker`], and handler registration.
//!
//! Where a job's life is decided: [`lifecycle`](Broker) (Rust side) and `src/scripts/job/*.lua`
//! (one atomic script per state change). Key names are built only in `keys.rs`; MessagePack is
//! named only in `codec.rs`.

mod admin;
mod cache;
#[cfg(feature = "sqlx")]
mod cache_sqlx;
mod client;
mod codec;
mod cron;
mod error;
mod events;
#[cfg(feature = "axum")]
mod http;
mod job;
mod keys;
mod lifecycle;
mod rate_limit;
mod registry;
mod scripts;
mod server;
mod session;

pub use admin::{Admin, JobView, QueueStats, ServerInfo, State, WorkerInfo};
pub use cache::{cache_stats, hash_bytes, Cache, CacheKey, CachePolicy, CacheStats};
#[cfg(feature = "sqlx")]
pub use cache_sqlx::SqlParam;
pub use client::{
    Client, ClientConfig, Enqueued, NewJob, QueueCounts, DEFAULT_MAX_PAYLOAD, MAX_BATCH,
};
pub use codec::{decode_member, decode_value, encode_member, encode_value, member_id, Outcome};
pub use cron::{
    due_ticks, next_tick, parse_tz, resolve, Cron, CronExpr, Fired, Misfire, Schedule, ScheduleDef,
    ScheduleState, Tick, MISFIRE_GRACE,
};
pub use error::{redact, Error, Result};
pub use events::{gaps, Event, EventBus, Gap, Lifecycle, LifecycleEvent, Subscription};
#[cfg(feature = "axum")]
pub use http::{KeyBy, RateLimitLayer, RateLimitService, RedisSessionStore};
pub use job::{
    Backoff, Failure, Job, JobId, JobOptions, JobState, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, DEFAULT_TIMEOUT, WIRE_VERSION,
};
pub use keys::{NamespaceKeys, QueueKeys, DEFAULT_NAMESPACE};
pub use lifecycle::{
    decide, Broker, Completion, Failed, Fetched, Lease, Leased, Retention, Settle,
};
pub use rate_limit::{
    rate_limit_stats, Algorithm, Bypass, Decision, Limit, LimitState, OnError, RateLimiter,
    RateLimiterBuilder,
};
pub use registry::{
    registered_jobs, Action, BoxError, HandlerFn, HandlerFuture, JobContext, JobError,
    JobRegistration, JobType,
};
pub use server::{RedisServer, RedisServerOptions};
pub use session::{Session, SessionConfig, SessionId, SessionInfo, Sessions, Update};

#[doc(hidden)]
pub use registry::__private;

/// The wake-up list key is read by workers' blocking connection; exposed for the worker crate.
#[doc(hidden)]
pub mod __worker {
    pub use crate::client::Client;
    /// A dedicated connection for blocking commands (`BLPOP`).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unreachable`].
    pub async fn dedicated(
        client: &Client,
        timeout: Option<std::time::Duration>,
    ) -> crate::Result<redis::aio::MultiplexedConnection> {
        client.dedicated(timeout).await
    }
}
