//! Shared by the `hostile_*` raw-frame tests: the interfaces a real server
//! offers (with their wire ids), that server on loopback with a gate its
//! `slow` calls wait for, and a raw client that has done the handshake.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::{eventual, Limits, RpcError, Sequence, SequenceWriter};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::raw_peer::*;

// ----- the interfaces the server offers ------------------------------------

/// A recursive value, for the nesting-depth limit.
#[derive(Debug, Serialize, Deserialize)]
pub enum Nested {
    Leaf,
    Node(Box<Nested>),
}

impl Nested {
    pub fn levels(&self) -> u32 {
        let mut n = 0;
        let mut at = self;
        while let Nested::Node(inner) = at {
            n += 1;
            at = inner;
        }
        n
    }
}

#[eventual]
pub trait Hostile {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: returns a fresh capability (an export on the connection).
    async fn child(&self) -> ChildProxy;
    /// Method 2: waits until the test opens the gate (bounded), then returns `tag`.
    async fn slow(&self, tag: u32) -> u32;
    /// Method 3: how many `Node`s wrap the leaf.
    fn depth(&self, value: Nested) -> u32;
    /// Method 4: reads an uploaded sequence to its end and counts the items.
    async fn count(&self, numbers: Sequence<u64>) -> Result<u64, RpcError>;
    /// Method 5: writes `n` numbers into the caller's writer.
    async fn fill(&self, n: u64, into: SequenceWriter<u64>) -> Result<(), RpcError>;
}

#[eventual]
pub trait Child {
    /// Method 0.
    fn ping(&self) -> u32;
}

/// What `Child::ping` answers.
pub const CHILD_PING: u32 = 7;
/// What `slow` answers if the gate never opened.
pub const GATE_TIMED_OUT: u32 = u32::MAX;

pub struct Server {
    pub gate: Arc<watch::Sender<bool>>,
}

impl Hostile for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn child(&self) -> ChildProxy {
        ChildProxy::new(Kid)
    }

    async fn slow(&self, tag: u32) -> u32 {
        let mut gate = self.gate.subscribe();
        let opened = matches!(timeout(Duration::from_secs(60), gate.wait_for(|open| *open)).await, Ok(Ok(_)));
        if opened {
            tag
        } else {
            GATE_TIMED_OUT
        }
    }

    fn depth(&self, value: Nested) -> u32 {
        value.levels()
    }

    async fn count(&self, mut numbers: Sequence<u64>) -> Result<u64, RpcError> {
        let mut n = 0;
        while numbers.read().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn fill(&self, n: u64, mut into: SequenceWriter<u64>) -> Result<(), RpcError> {
        for i in 0..n {
            into.write(i)?;
            into.flush().await?;
        }
        into.close(None).await
    }
}

pub struct Kid;

impl Child for Kid {
    fn ping(&self) -> u32 {
        CHILD_PING
    }
}

// ----- ids of the interfaces ---------------------------------------------------

pub const HOSTILE: u64 = rpc_core::__private::interface_id("Hostile");
pub const CHILD: u64 = rpc_core::__private::interface_id("Child");
pub const ADD: u16 = 0;
pub const CHILD_METHOD: u16 = 1;
pub const SLOW: u16 = 2;
pub const DEPTH: u16 = 3;
pub const COUNT: u16 = 4;
pub const FILL: u16 = 5;
pub const PING: u16 = 0;

/// postcard of `n` nested `Nested::Node`s around a `Leaf`: one variant byte each.
pub fn nested_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![1u8; n];
    bytes.push(0);
    bytes
}

// ----- the server ------------------------------------------------------------

pub const SERVER_LIMITS: Limits = Limits {
    max_frame_size: 64 << 10,
    max_outstanding_calls: 8,
    max_exports: 16,
    max_depth: 16,
    max_decoded_size: 256 << 10,
    max_stream_window: 65_536,
    max_stream_window_bytes: 16 << 20,
};

/// The server for the tests, with a gate `slow` calls wait for.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub gate: Arc<watch::Sender<bool>>,
    pub server: LoopbackServer,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let gate = Arc::new(watch::channel(false).0);
        let for_factory = gate.clone();
        let server = LoopbackServer::start(server_config(SERVER_LIMITS), move || {
            HostileProxy::new(Server { gate: for_factory.clone() })
        });
        TestServer { addr: server.addr, gate, server }
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// The server still accepts and serves a normal framework client.
    pub async fn assert_healthy(&self) {
        self.server.assert_serving();
        let check = async {
            let hostile: HostileProxy = rpc_core::connect(self.addr).await?;
            hostile.add(40, 2).await
        };
        let sum =
            timeout(READ_TIMEOUT, check).await.expect("a normal client timed out").expect("a normal client failed");
        assert_eq!(sum, 42);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Releases waiting `slow` calls before the server stops.
        self.gate.send_replace(true);
    }
}

// ----- the raw peer ------------------------------------------------------------

/// The bootstrap as `RawPeer::assert_usable` calls it.
pub const SERVER: Bootstrap = Bootstrap { interface: HOSTILE, add: ADD };

/// Connects and does the handshake by hand; the server offers its bootstrap.
pub async fn raw_client(addr: std::net::SocketAddr) -> RawPeer {
    let peer = handshake(addr, SERVER_LIMITS, SERVER).await;
    assert!(peer.server_hello.offers_bootstrap);
    peer
}
