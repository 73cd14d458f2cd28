//! Cron schedules in workers, and exactly-once ticks across scheduler processes.

#[path = "../common/mod.rs"]
mod common;

mod exactly_once;
mod schedules;
