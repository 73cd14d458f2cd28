//! Deployments beyond one Redis server: a primary found through Redis Sentinel and followed
//! through failovers; what Redis Cluster support relies on.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod sentinel;
