//! Promise pipelining, measured in round trips with injected latency and
//! tokio's paused clock (so the figures are exact, not timings).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, ErrorKind, RpcError};
use rpc_tests::{connect_pair, latency_pipe};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

const ONE_WAY: Duration = Duration::from_millis(50);
const RTT: Duration = Duration::from_millis(100);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ChainError {
    TooDeep(u32),
    Rpc(String),
}

impl From<RpcError> for ChainError {
    fn from(err: RpcError) -> Self {
        ChainError::Rpc(err.to_string())
    }
}

#[eventual]
pub trait Node {
    /// The next node down, as a capability (pipelinable).
    async fn child(&self) -> Result<NodeProxy, ChainError>;
    /// The same, returned directly as a pipelined proxy.
    fn next(&self) -> NodeProxy;
    async fn depth(&self) -> u32;
    async fn checked_depth(&self) -> Result<u32, ChainError>;
}

struct Chain {
    depth: u32,
    max: u32,
}

impl Node for Chain {
    async fn child(&self) -> Result<NodeProxy, ChainError> {
        if self.depth >= self.max {
            return Err(ChainError::TooDeep(self.depth));
        }
        Ok(NodeProxy::new(Chain { depth: self.depth + 1, max: self.max }))
    }
    fn next(&self) -> NodeProxy {
        NodeProxy::new(Chain { depth: self.depth + 1, max: self.max })
    }
    async fn depth(&self) -> u32 {
        self.depth
    }
    async fn checked_depth(&self) -> Result<u32, ChainError> {
        Ok(self.depth)
    }
}

async fn remote_root(max: u32) -> (NodeProxy, (Connection, Connection)) {
    let (a, b) = latency_pipe(ONE_WAY);
    let (server, client, root) =
        connect_pair(a, b, NodeProxy::new(Chain { depth: 0, max }), Config::default()).await.expect("connect");
    (root, (server, client))
}

#[tokio::test(start_paused = true)]
async fn a_pipelined_chain_of_ten_calls_costs_one_round_trip() {
    let (root, conns) = remote_root(100).await;
    let _conns = conns;
    let start = Instant::now();
    // Nine dependent `next` calls and a final `depth`: ten calls, none awaited.
    let mut node = root.clone();
    for _ in 0..9 {
        node = node.next();
    }
    let depth = node.depth().await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(depth, 9);
    assert!(elapsed < 2 * RTT, "pipelined chain took {elapsed:?} (RTT {RTT:?})");
    assert!(elapsed >= RTT, "faster than light: {elapsed:?}");
}

/// On a current-thread runtime (as here) the server resolves a pipelined
/// chain in one pass: every hop's call is started by the connection's
/// reader as the previous reply releases it, so the ten replies leave in one
/// write (they used to leave in five, the writer task running between the
/// hops' serving tasks).
#[tokio::test(start_paused = true)]
async fn the_replies_of_a_pipelined_chain_leave_the_server_in_one_write() {
    let (a, b) = latency_pipe(ONE_WAY);
    let server_writes = a.write_counter();
    let (_server, _client, root) =
        connect_pair(a, b, NodeProxy::new(Chain { depth: 0, max: 100 }), Config::default()).await.expect("connect");
    // Settle the handshake's writes.
    assert_eq!(root.depth().await.unwrap(), 0);
    let before = server_writes.load(Ordering::SeqCst);
    let start = Instant::now();
    let mut node = root.clone();
    for _ in 0..9 {
        node = node.next();
    }
    assert_eq!(node.depth().await.unwrap(), 9);
    assert!(start.elapsed() < 2 * RTT, "pipelined chain took {:?} (RTT {RTT:?})", start.elapsed());
    let writes = server_writes.load(Ordering::SeqCst) - before;
    assert_eq!(writes, 1, "the ten replies of the chain left the server in {writes} writes");
}

#[tokio::test(start_paused = true)]
async fn awaiting_each_call_of_the_chain_costs_a_round_trip_each() {
    let (root, conns) = remote_root(100).await;
    let _conns = conns;
    let start = Instant::now();
    let mut node = root.clone();
    for _ in 0..9 {
        node = node.child().await.unwrap();
    }
    let depth = node.depth().await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(depth, 9);
    assert!(elapsed >= 10 * RTT, "awaited chain took {elapsed:?}");
    assert!(elapsed < 11 * RTT, "awaited chain took {elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn pipelining_through_promises_of_results_also_costs_one_round_trip() {
    let (root, conns) = remote_root(100).await;
    let _conns = conns;
    let start = Instant::now();
    let mut node = root.clone();
    for _ in 0..9 {
        node = node.child().pipeline();
    }
    assert_eq!(node.checked_depth().await.unwrap(), 9);
    assert!(start.elapsed() < 2 * RTT, "took {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_call_pipelined_on_a_rejected_promise_fails_with_the_same_error() {
    let (root, conns) = remote_root(2).await;
    let _conns = conns;
    // Depth 2 is the maximum: the third `child` fails, and calls on its promise too.
    let failed = root.child().pipeline().child().pipeline().child();
    let beyond = failed.pipeline();
    let typed = beyond.checked_depth();
    let untyped = beyond.depth();
    assert_eq!(typed.await.unwrap_err(), ChainError::TooDeep(2));
    let err = untyped.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application);
    assert_eq!(err.application_value::<ChainError>(), Some(ChainError::TooDeep(2)));
    assert_eq!(failed.await.unwrap_err(), ChainError::TooDeep(2));
    // Deeper pipelines fail the same way.
    assert_eq!(beyond.child().pipeline().checked_depth().await.unwrap_err(), ChainError::TooDeep(2));
}

#[tokio::test]
async fn local_promises_pipeline_too() {
    let root = NodeProxy::new(Chain { depth: 0, max: 3 });
    assert_eq!(root.next().next().next().depth().await.unwrap(), 3);
    let failed = root.child().pipeline().child().pipeline().child().pipeline().child();
    assert_eq!(failed.pipeline().checked_depth().await.unwrap_err(), ChainError::TooDeep(3));
}
