//! Deployments beyond one Redis server: a primary found through Redis Sentinel, followed
//! through failovers.

#[path = "../common/mod.rs"]
mod common;

mod sentinel;
