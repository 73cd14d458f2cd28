//! The worker runtime: retries, dead letters, shutdown, pause, queue order, middlewares; crash
//! safety with real worker processes; the handler registry.
//!
//! This binary links two handlers with one name on purpose (`registry`), so every worker in it
//! is built with an explicit `Registry::with_jobs`: `Registry::discover` refuses the binary.

#[path = "../common/mod.rs"]
mod common;

mod acl;
mod crash;
mod faults;
mod history;
mod http;
mod logs;
mod otel;
mod registry;
mod restarts;
mod runtime;
