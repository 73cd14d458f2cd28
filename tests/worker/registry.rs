//! The handler registry: two handlers with one job name are a start-up error that names both
//! places, an empty registry is a start-up error raised before connecting, and a worker can be
//! given exactly the handlers it should run.

use queue::worker::Error as WorkerError;
use queue::worker::Registry;
use queue::{job, JobError, WorkerBuilder};

// The duplicate lives in this binary on purpose: every other worker here is built with
// `Registry::with_jobs`, which only looks at the names it is given.
#[job(name = "registry.same.name")]
async fn first(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[job(name = "registry.same.name")]
async fn second(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[test]
fn duplicate_job_names_are_a_startup_error() {
    let err = queue::__private::registered_jobs().expect_err("duplicates must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("duplicate job names: \"registry.same.name\""),
        "{msg}"
    );
    assert_eq!(
        msg.matches("registry.rs:").count(),
        2,
        "both places are named: {msg}"
    );
    // Discovering every linked handler refuses this binary, naming the duplicate.
    match Registry::discover() {
        Err(WorkerError::Registry(m)) => assert!(m.contains("registry.same.name"), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
    // Choosing the duplicated name refuses it too, with both places.
    match Registry::with_jobs(&["registry.same.name"]) {
        Err(WorkerError::Registry(m)) => {
            assert!(
                m.contains("duplicate job names: \"registry.same.name\""),
                "{m}"
            );
            assert_eq!(m.matches("registry.rs:").count(), 2, "{m}");
        }
        other => panic!("expected a registry error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_without_an_explicit_registry_refuses_a_binary_with_duplicates() {
    // The URL is never dialled: the registry is checked first.
    let err = WorkerBuilder::new("redis://127.0.0.1:1")
        .build()
        .await
        .expect_err("must fail");
    match err {
        WorkerError::Registry(m) => assert!(m.contains("registry.same.name"), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_empty_registry_is_a_startup_error() {
    match Registry::with_jobs(&[]) {
        Err(WorkerError::Registry(m)) => assert!(m.contains("at least one #[job] handler"), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
}

#[test]
fn unknown_names_are_refused_and_known_ones_selected() {
    match Registry::with_jobs(&["test.echo", "no.such.job"]) {
        Err(WorkerError::Registry(m)) => assert!(m.contains("\"no.such.job\""), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
    let r = Registry::with_jobs(&["test.echo", "crash.work"]).expect("registry");
    assert_eq!(r.names(), ["crash.work", "test.echo"]);
    assert!(r.get("test.slow").is_none(), "only the chosen handlers");
}
