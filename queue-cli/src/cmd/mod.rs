//! One file per subcommand.

pub mod acl;
pub mod bench;
pub mod cache;
pub mod cron;
pub mod dash;
pub mod enqueue;
pub mod events;
pub mod health;
pub mod history;
pub mod job;
pub mod jobs;
pub mod queue;
pub mod ratelimit;
pub mod stats;
pub mod web;
pub mod workers;
