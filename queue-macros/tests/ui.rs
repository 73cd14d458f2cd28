//! `#[job]` compile-time behaviour: valid declarations compile, each invalid one is a clear
//! compile error with a fix-it (the `.stderr` files are the expected messages).
//!
//! The cases build against `queue` without its default features (trybuild compiles them in a
//! target directory of its own, so every dependency here is built again): the macro needs
//! only the engine.
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
