//! Two handlers with one job name are a start-up error that names both places.

use queue::worker::Error as WorkerError;
use queue::{job, JobError};

#[job(name = "same.name")]
async fn first(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[job(name = "same.name")]
async fn second(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[test]
fn duplicate_job_names_are_a_startup_error() {
    let err = queue::__private::registered_jobs().expect_err("duplicates must be refused");
    let msg = err.to_string();
    assert!(msg.contains("duplicate job names: \"same.name\""), "{msg}");
    assert_eq!(
        msg.matches("worker_registry_duplicate.rs:").count(),
        2,
        "both places are named: {msg}"
    );
    match queue_worker_registry() {
        Err(WorkerError::Registry(m)) => assert!(m.contains("same.name"), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
}

fn queue_worker_registry() -> Result<(), WorkerError> {
    queue::worker::Registry::discover().map(|_| ())
}
