//! Deployments beyond one Redis server: a primary found through Redis Sentinel and followed
//! through failovers; a Redis Cluster, through failovers and a live reshard, and one queue
//! split over its masters.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod sentinel;
