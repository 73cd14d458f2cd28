//! `#[job]` compile-time behaviour: valid declarations compile, each invalid one is a clear
//! compile error with a fix-it (the `.stderr` files are the expected messages).
//!
//! An argument type without `Serialize`/`Deserialize` is refused by rustc itself (the
//! `JobType::Args` bound, pointing at the argument); it has no case here because rustc's help
//! text for it (its list of other implementors) is not stable between builds.

#[test]
fn job_macro_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}

/// A worker binary with no handlers linked is a start-up error, raised before connecting. It
/// lives here because this is the one test binary that links no `#[job]` at all (the trybuild
/// cases are compiled separately); every other binary links handlers.
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
