//! A worker binary with no `#[job]` handlers linked: this is the one test binary that links
//! none (the macro's compile-time cases are `queue-macros/tests/ui.rs`, built apart).

/// A worker binary with no handlers linked is a start-up error, raised before connecting.
#[tokio::test]
async fn a_binary_without_handlers_is_a_startup_error() {
    // The URL is never dialled: the registry is checked first.
    let err = queue::WorkerBuilder::new("redis://127.0.0.1:1")
        .build()
        .await
        .expect_err("must fail");
    match err {
        queue::worker::Error::Registry(m) => assert!(m.contains("no #[job] handlers"), "{m}"),
        other => panic!("expected a registry error, got {other:?}"),
    }
}
