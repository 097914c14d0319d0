//! Compile-fail tests: each misuse of `#[eventual]` in `ui/<family>/` gets
//! an error pointing at the offending tokens (snapshots in `.stderr` files;
//! regenerate with `TRYBUILD=overwrite` and review the diff).

#[test]
fn misuses_of_eventual_fail_to_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*/*.rs");
}
