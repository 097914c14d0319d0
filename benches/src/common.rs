//! What every contender shares: the payloads and the interface the runner drives.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;
pub type Fut<'a, T> = futures::future::LocalBoxFuture<'a, Res<T>>;

/// Request and reply size of the unary calls.
pub const PAYLOAD: usize = 64;
/// Calls kept in flight on one connection.
pub const IN_FLIGHT: usize = 64;
/// Calls in a dependent chain.
pub const CHAIN: usize = 10;

/// The streamed item: a small struct, 14 bytes of fields (as in `sequence_throughput`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Small {
    pub id: u64,
    pub x: u32,
    pub flags: u16,
}

pub fn small(i: u64) -> Small {
    Small { id: i, x: i as u32 ^ 0x5a5a, flags: (i % 7) as u16 }
}

/// A contender: each measurement it supports returns `Some`.
pub trait Contender {
    fn name(&self) -> &'static str;
    /// `calls` sequential 64-byte calls: one duration per call.
    fn unary(&self, _calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        None
    }
    /// `calls` 64-byte calls with 64 in flight on one connection: the elapsed time.
    fn inflight(&self, _calls: usize) -> Option<Fut<'_, Duration>> {
        None
    }
    /// `chains` chains of 10 dependent calls, pipelined or awaited one by one:
    /// one duration per chain.
    fn chain(&self, _chains: usize, _pipelined: bool) -> Option<Fut<'_, Vec<Duration>>> {
        None
    }
    /// `count` small structs streamed from the server to the client: the elapsed time.
    fn stream(&self, _count: u64) -> Option<Fut<'_, Duration>> {
        None
    }
    /// `bytes` bytes from the server to the client: the elapsed time.
    fn bulk(&self, _bytes: u64) -> Option<Fut<'_, Duration>> {
        None
    }
}

pub fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}
