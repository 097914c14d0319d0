//! Per-call deadlines: `Promise::with_timeout` fails the call with `Timeout`
//! at the deadline and cancels its handler (a drop guard in the handler
//! sees it), locally at once and over a connection half a round trip later
//! (the `Finish` a dropped promise sends). Calls pipelined on a promise that
//! timed out fail with the same `Timeout`. Tokio's clock is paused and the
//! link has a fixed latency, so the instants asserted are exact.

use std::time::Duration;

use rpc_core::{eventual, CallError, Config, Connection, ErrorKind, RpcError};
use rpc_tests::{connect_pair, latency_pipe, DropCounter};
use tokio::time::Instant;

const ONE_WAY: Duration = Duration::from_millis(10);
const TIMEOUT: Duration = Duration::from_millis(100);

#[eventual]
pub trait Slow {
    /// Never returns; its drop guard counts the cancellation.
    async fn hang(&self) -> Result<u32, RpcError>;
    /// Returns at once.
    fn quick(&self, x: u32) -> u32;
    /// Never returns a child; calls pipelined on it wait.
    async fn hang_child(&self) -> Result<SlowProxy, RpcError>;
}

#[derive(Clone)]
struct Server {
    cancelled: DropCounter,
}

impl Slow for Server {
    async fn hang(&self) -> Result<u32, RpcError> {
        let _guard = self.cancelled.token();
        std::future::pending().await
    }
    fn quick(&self, x: u32) -> u32 {
        x
    }
    async fn hang_child(&self) -> Result<SlowProxy, RpcError> {
        let _guard = self.cancelled.token();
        std::future::pending().await
    }
}

/// The object locally, or through a connection with `ONE_WAY` latency.
async fn reach(remote: bool) -> (SlowProxy, DropCounter, Option<(Connection, Connection)>) {
    let cancelled = DropCounter::default();
    let local = SlowProxy::new(Server { cancelled: cancelled.clone() });
    if !remote {
        return (local, cancelled, None);
    }
    let (a, b) = latency_pipe(ONE_WAY);
    let (server, client, proxy) = connect_pair(a, b, local, Config::default()).await.expect("connect");
    (proxy, cancelled, Some((server, client)))
}

#[tokio::test(start_paused = true)]
async fn a_deadline_fails_the_call_with_timeout_and_cancels_the_handler() {
    for remote in [false, true] {
        let (slow, cancelled, _conns) = reach(remote).await;
        let start = Instant::now();
        let err = slow.hang().with_timeout(TIMEOUT).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "remote {remote}: {err}");
        assert_eq!(start.elapsed(), TIMEOUT, "remote {remote}: the promise fails exactly at the deadline");
        // Locally the handler is aborted at the deadline; remotely when the
        // Finish arrives, one way later.
        let latency = if remote { ONE_WAY } else { Duration::ZERO };
        tokio::time::sleep(latency.saturating_sub(Duration::from_millis(1))).await;
        if remote {
            assert_eq!(cancelled.count(), 0, "the peer cannot know before the Finish arrives");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(cancelled.count(), 1, "remote {remote}: the handler was not cancelled at the deadline");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_returns_in_time_is_not_affected() {
    for remote in [false, true] {
        let (slow, cancelled, _conns) = reach(remote).await;
        assert_eq!(slow.quick(7).with_timeout(TIMEOUT).await, Ok(7), "remote {remote}");
        let keep = slow.hang();
        tokio::time::sleep(TIMEOUT * 3).await;
        assert_eq!(cancelled.count(), 0, "remote {remote}: an unrelated call was cancelled");
        drop(keep);
        assert!(cancelled.wait_for(1).await);
    }
}

#[tokio::test(start_paused = true)]
async fn the_earlier_deadline_wins() {
    for remote in [false, true] {
        let (slow, _, _conns) = reach(remote).await;
        let start = Instant::now();
        let err = slow.hang().with_timeout(TIMEOUT).with_timeout(TIMEOUT * 5).await.unwrap_err();
        assert_eq!((err.kind(), start.elapsed()), (ErrorKind::Timeout, TIMEOUT), "remote {remote}");
        let start = Instant::now();
        let deadline = start + TIMEOUT / 2;
        let err = slow.hang().with_timeout(TIMEOUT).with_deadline(deadline).await.unwrap_err();
        assert_eq!((err.kind(), start.elapsed()), (ErrorKind::Timeout, TIMEOUT / 2), "remote {remote}");
    }
}

#[tokio::test(start_paused = true)]
async fn calls_pipelined_on_a_promise_that_timed_out_fail_with_timeout() {
    for remote in [false, true] {
        let (slow, cancelled, _conns) = reach(remote).await;
        let promise = slow.hang_child().with_timeout(TIMEOUT);
        let child = promise.pipeline();
        let before = child.quick(1);
        let start = Instant::now();
        let err = before.await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "remote {remote}: a call made before the deadline: {err}");
        assert_eq!(start.elapsed(), TIMEOUT, "remote {remote}: it fails at the deadline");
        let after = child.quick(2).await.unwrap_err();
        assert_eq!(after.kind(), ErrorKind::Timeout, "remote {remote}: a call made after the deadline: {after}");
        assert_eq!(promise.await.unwrap_err().kind(), ErrorKind::Timeout, "remote {remote}");
        assert!(cancelled.wait_for(1).await, "remote {remote}: the promised call's handler was not cancelled");
        // The capability is known to be broken, with the same reason.
        assert_eq!(child.when_broken().await.kind(), ErrorKind::Timeout, "remote {remote}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_set_after_pipelining_fails_the_pipelined_calls_at_it() {
    for remote in [false, true] {
        let (slow, _, _conns) = reach(remote).await;
        let promise = slow.hang_child();
        let child = promise.pipeline();
        // Pipelined first, the deadline set afterwards.
        let before = child.quick(1);
        let promise = promise.with_timeout(TIMEOUT);
        let start = Instant::now();
        let err = before.await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "remote {remote}: {err}");
        assert_eq!(start.elapsed(), TIMEOUT, "remote {remote}: at the deadline, not a round trip later");
        assert_eq!(promise.await.unwrap_err().kind(), ErrorKind::Timeout, "remote {remote}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_reads_as_a_framework_error_in_the_split_form() {
    for remote in [false, true] {
        let (slow, _, _conns) = reach(remote).await;
        match slow.hang().with_timeout(TIMEOUT).split_errors().await {
            Err(CallError::Rpc(err)) => assert_eq!(err.kind(), ErrorKind::Timeout, "remote {remote}"),
            other => panic!("remote {remote}: expected a framework timeout, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_not_yet_started_never_runs_after_its_deadline() {
    // A remote call queued behind a slow link: the deadline passes before
    // the call reaches the peer; the Finish follows it and the handler is
    // cancelled before it can return.
    let (slow, cancelled, _conns) = reach(true).await;
    let err = slow.hang().with_timeout(ONE_WAY / 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(cancelled.wait_for(1).await, "the handler that started after the deadline was not cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_work_on_the_multi_threaded_runtime() {
    for via in rpc_tests::Via::BOTH {
        let cancelled = DropCounter::default();
        let (slow, _conns) = via.reach(SlowProxy::new(Server { cancelled: cancelled.clone() })).await;
        let err = slow.hang().with_timeout(Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{via:?}: {err}");
        assert!(cancelled.wait_for(1).await, "{via:?}: the handler was not cancelled");
        assert_eq!(slow.quick(3).with_timeout(Duration::from_secs(60)).await, Ok(3), "{via:?}");
    }
}
