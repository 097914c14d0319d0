//! Shared by the fuzz targets and the seed recorder: the server the
//! `connection` target talks to, the representative payload types, and the
//! harness that runs one connection on a paused clock.

pub mod harness;
pub mod service;
pub mod values;

/// Path of the fuzz crate (for the recorder, which writes corpus files).
pub const FUZZ_DIR: &str = env!("CARGO_MANIFEST_DIR");
