//! A worker binary with no handlers linked is a start-up error, raised before connecting.

use queue::worker::Error as WorkerError;
use queue::WorkerBuilder;

#[tokio::test]
async fn an_empty_registry_is_a_startup_error() {
    // The URL is never dialled: the registry is checked first.
    let err = WorkerBuilder::new("redis://127.0.0.1:1")
        .build()
        .await
        .expect_err("must fail");
    match err {
        WorkerError::Registry(m) => assert!(m.contains("no #[job] handlers"), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
}
