//! Compile-fail (UI) tests of `#[eventual]`: see `tests/macro_ui.rs`.
//!
//! They live in this crate rather than in `rpc-tests` because trybuild
//! compiles its cases as a separate project that depends on everything this
//! crate depends on, dev-dependencies included. Here that is `rpc-core` and
//! `serde`, what the cases use; in `rpc-tests` it was also the examples
//! (ratatui, crossterm, clap) and proptest, which made the test several
//! times slower to build.
