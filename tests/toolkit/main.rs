//! The toolkit against real Redis (and PostgreSQL): cache, events, rate limits, sessions, and
//! the axum/tower layers.

#[path = "../common/mod.rs"]
mod common;

mod cache_jobs;
mod cache_layer;
mod cache_postgres;
mod events_bus;
mod http_layers;
mod ratelimit_jobs;
mod ratelimit_limits;
mod sessions_store;
