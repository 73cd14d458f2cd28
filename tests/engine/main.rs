//! The engine driven through the client and the broker: enqueue, the job lifecycle scripts.
//! One binary per area (engine, worker, cron, toolkit): fewer link steps, one fixture.

#[path = "../common/mod.rs"]
mod common;

mod enqueue;
mod faults;
mod fuzz;
mod lifecycle;
mod liveness;
mod model;
mod secrets;
mod tls;
