//! `#[job]` compile-time behaviour: valid declarations compile, each invalid one is a clear
//! compile error with a fix-it (the `.stderr` files are the expected messages).

#[test]
fn job_macro_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
