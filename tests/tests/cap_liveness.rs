//! Liveness of any capability: `when_broken()` resolves when an import's
//! connection is lost, when the promise a capability was pipelined on fails,
//! and at once for a broken proxy; it stays pending while the capability is
//! healthy, and for a local object.

use std::time::Duration;

use rpc_core::{eventual, Config, Connection, ErrorKind, RpcError};
use rpc_tests::{connect_pair, latency_pipe, partitionable_pipe, DropCounter};
use serde::{Deserialize, Serialize};

const ONE_WAY: Duration = Duration::from_millis(5);
/// Longer than any reaction the tests wait for, on the paused clock.
const PATIENCE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refused {
    NoRoom,
    Rpc(String),
}

impl From<RpcError> for Refused {
    fn from(err: RpcError) -> Self {
        Refused::Rpc(err.to_string())
    }
}

#[eventual]
pub trait Room {
    fn ping(&self) -> u32;
    /// A child room (an export of its own), dropped when released.
    async fn child(&self) -> Result<RoomProxy, Refused>;
    /// Always refuses.
    async fn refuse(&self) -> Result<RoomProxy, Refused>;
}

#[derive(Clone, Default)]
struct Hall {
    dropped: DropCounter,
}

struct Child {
    _guard: rpc_tests::DropToken,
}

impl Room for Hall {
    fn ping(&self) -> u32 {
        1
    }
    async fn child(&self) -> Result<RoomProxy, Refused> {
        Ok(RoomProxy::new(Child { _guard: self.dropped.token() }))
    }
    async fn refuse(&self) -> Result<RoomProxy, Refused> {
        Err(Refused::NoRoom)
    }
}

impl Room for Child {
    fn ping(&self) -> u32 {
        2
    }
    async fn child(&self) -> Result<RoomProxy, Refused> {
        Err(Refused::NoRoom)
    }
    async fn refuse(&self) -> Result<RoomProxy, Refused> {
        Err(Refused::NoRoom)
    }
}

async fn remote(hall: Hall) -> (RoomProxy, Connection, Connection) {
    let (a, b) = latency_pipe(ONE_WAY);
    let (server, client, room) = connect_pair(a, b, RoomProxy::new(hall), Config::default()).await.expect("connect");
    (room, server, client)
}

/// Whether `future` is still pending after `PATIENCE` of (paused) time.
async fn stays_pending<F: std::future::Future>(future: F) -> bool {
    tokio::time::timeout(PATIENCE, future).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn an_import_stays_alive_while_its_connection_is_healthy() {
    let (room, _server, _client) = remote(Hall::default()).await;
    assert!(stays_pending(room.when_broken()).await, "resolved while the connection was up");
    assert_eq!(room.ping().await, Ok(1), "and the capability still works");
}

#[tokio::test(start_paused = true)]
async fn an_import_breaks_when_the_peer_closes_with_the_peers_reason() {
    let (room, server, _client) = remote(Hall::default()).await;
    let watching = tokio::spawn(room.when_broken());
    tokio::time::sleep(ONE_WAY * 4).await;
    assert!(!watching.is_finished(), "resolved before the connection closed");
    server.close();
    let reason = tokio::time::timeout(PATIENCE, watching).await.expect("resolves").expect("task");
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    assert!(reason.message().contains("closed on purpose"), "the peer's reason: {reason}");
    // Awaited again after the loss, it resolves at once.
    assert_eq!(room.when_broken().await.kind(), ErrorKind::Disconnected);
}

#[tokio::test(start_paused = true)]
async fn an_import_breaks_when_the_link_is_lost() {
    let (link, a, b) = partitionable_pipe(ONE_WAY);
    let hall = RoomProxy::new(Hall::default());
    let (_server, _client, room) = connect_pair(a, b, hall, Config::default()).await.expect("connect");
    let child = room.child().pipeline();
    assert_eq!(child.ping().await, Ok(2));
    link.partition();
    // The keepalive notices the silence; both capabilities learn of it.
    let reason = tokio::time::timeout(PATIENCE, room.when_broken()).await.expect("the loss is noticed");
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    let child_reason = tokio::time::timeout(PATIENCE, child.when_broken()).await.expect("the child learns too");
    assert_eq!(child_reason.kind(), ErrorKind::Disconnected, "{child_reason}");
}

#[tokio::test(start_paused = true)]
async fn a_capability_pipelined_on_a_failed_promise_is_broken() {
    for remote_side in [false, true] {
        let (room, _conns) = if remote_side {
            let (room, server, client) = remote(Hall::default()).await;
            (room, Some((server, client)))
        } else {
            (RoomProxy::new(Hall::default()), None)
        };
        let refused = room.refuse().pipeline();
        let reason = tokio::time::timeout(PATIENCE, refused.when_broken()).await.expect("resolves");
        assert_eq!(reason.kind(), ErrorKind::Application, "remote {remote_side}: {reason}");
        assert_eq!(reason.application_value::<Refused>(), Some(Refused::NoRoom), "remote {remote_side}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_capability_pipelined_on_a_promise_that_succeeds_follows_its_target() {
    let (room, server, _client) = remote(Hall::default()).await;
    let child = room.child().pipeline();
    assert!(stays_pending(child.when_broken()).await, "a healthy child resolved");
    let watching = tokio::spawn(child.when_broken());
    server.close();
    let reason = tokio::time::timeout(PATIENCE, watching).await.expect("resolves").expect("task");
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_local_object_and_its_local_pipelines_never_break() {
    let room = RoomProxy::new(Hall::default());
    assert!(stays_pending(room.when_broken()).await);
    let child = room.child().pipeline();
    assert!(stays_pending(child.when_broken()).await, "a local pipeline that resolved to an object");
}

#[tokio::test]
async fn a_broken_proxy_is_broken_at_once() {
    let room = RoomProxy::broken(RpcError::aborted("no such room"));
    assert_eq!(room.when_broken().await, RpcError::aborted("no such room"));
    let err = room.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Aborted, "calls fail with the same error: {err}");
}

#[tokio::test(start_paused = true)]
async fn watching_an_import_does_not_keep_it_alive() {
    let hall = Hall::default();
    let dropped = hall.dropped.clone();
    let (room, _server, _client) = remote(hall).await;
    let child = room.child().pipeline();
    assert_eq!(child.ping().await, Ok(2));
    let watching = child.when_broken();
    drop(child);
    assert!(dropped.wait_for(1).await, "the server still holds the child while it is only watched");
    drop(watching);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_works_on_the_multi_threaded_runtime() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let hall = RoomProxy::new(Hall::default());
    let (server, _client, room) = connect_pair(a, b, hall, Config::default()).await.expect("connect");
    let child = room.child().pipeline();
    assert_eq!(child.ping().await, Ok(2));
    let watchers = [tokio::spawn(room.when_broken()), tokio::spawn(child.when_broken())];
    server.close();
    for watcher in watchers {
        let reason = tokio::time::timeout(Duration::from_secs(60), watcher).await.expect("resolves").expect("task");
        assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    }
}
