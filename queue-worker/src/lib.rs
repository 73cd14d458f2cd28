//! The worker runtime of `queue`: discovers every `#[job]` handler linked into the binary and
//! runs them with bounded concurrency, per-job timeouts, panics caught as failures, a middleware
//! chain, lease heartbeats, crash recovery and graceful shutdown.

#![deny(unreachable_pub)]
#![warn(missing_docs)]

mod builder;
mod error;
#[cfg(feature = "logging")]
mod logging;
pub mod middleware;
#[cfg(feature = "otel")]
mod otel;
mod registry;
mod scheduler;
mod worker;

pub use builder::{QueueOrder, WorkerBuilder, WorkerConfig};
pub use error::{Error, Result};
#[cfg(feature = "logging")]
pub use logging::{init_logging, init_logging_as, LogFormat};
#[cfg(feature = "otel")]
pub use otel::{init_tracing_otel, OtelGuard};
pub use registry::Registry;
pub use scheduler::{MaintenanceTask, MAINTENANCE, MAINTENANCE_CRON};
pub use worker::{Report, Worker};
