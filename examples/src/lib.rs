//! Examples for the eventual RPC framework.
//!
//! The library part is the multiplayer game ([`game`]); the binaries in
//! `src/bin/` are small `main`s around it (`game-server`, `game-client`,
//! `game-demo`), plus the `hello` tour and the throughput probes.
#![warn(missing_docs, unreachable_pub)]

pub mod feed;
pub mod game;
pub mod small;
