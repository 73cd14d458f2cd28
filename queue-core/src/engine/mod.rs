//! The job engine: everything that decides a job's life.
//!
//! - [`job`], [`codec`]: the envelope and its MessagePack wire form (docs/PROTOCOL.md);
//! - [`client`]: the producer side (enqueue, wait for an outcome, pause, counts);
//! - [`broker`]: the worker side (fetch, complete, fail, reclaim, extend, requeue, wake-up);
//! - [`admin`]: the operator side (stats, find, retry, delete, purge, worker records);
//! - [`search`]: finding jobs by name and argument content, bulk retries and deletes;
//! - [`cron`]: schedules, fired through the same enqueue path as any job;
//! - [`history`]: the per-minute metrics history, counted by workers and sent by their heartbeat;
//! - [`registry`]: `#[job]` registration (inventory) and the handler contract;
//! - [`scripts`]: one Lua script per state change, in `scripts/`.

pub(crate) mod admin;
pub(crate) mod broker;
pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod cron;
pub(crate) mod history;
pub(crate) mod job;
pub(crate) mod registry;
pub(crate) mod scripts;
pub(crate) mod search;
