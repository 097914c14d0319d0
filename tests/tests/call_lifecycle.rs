//! A call leaves when it is made, not when its promise is first polled; a
//! dropped promise cancels the handler still running on the callee.

use std::time::Duration;

use rpc_core::eventual;
use rpc_tests::{DropCounter, Via};
use tokio::sync::mpsc;

#[eventual]
pub trait Job {
    /// Reports `id` when it starts, then never finishes.
    async fn hang(&self, id: u32);
    /// Reports `id` when it runs.
    fn poke(&self, id: u32);
    /// A job whose result is a capability, for pipelining.
    async fn spawn_job(&self) -> Result<JobProxy, rpc_core::RpcError>;
}

#[derive(Clone)]
struct Worker {
    started: mpsc::UnboundedSender<u32>,
    cancelled: DropCounter,
}

impl Job for Worker {
    async fn hang(&self, id: u32) {
        let _guard = self.cancelled.token();
        let _ = self.started.send(id);
        std::future::pending::<()>().await;
    }
    fn poke(&self, id: u32) {
        let _ = self.started.send(id);
    }
    async fn spawn_job(&self) -> Result<JobProxy, rpc_core::RpcError> {
        // Slow to answer, so pipelined calls queue behind it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(JobProxy::new(self.clone()))
    }
}

fn worker() -> (Worker, mpsc::UnboundedReceiver<u32>, DropCounter) {
    let (started, rx) = mpsc::unbounded_channel();
    let cancelled = DropCounter::default();
    (Worker { started, cancelled: cancelled.clone() }, rx, cancelled)
}

async fn next_started(rx: &mut mpsc::UnboundedReceiver<u32>) -> Option<u32> {
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.ok().flatten()
}

#[tokio::test]
async fn a_call_runs_although_its_promise_is_never_polled() {
    for via in Via::BOTH {
        let (worker, mut started, _) = worker();
        let (job, _conns) = via.reach(JobProxy::new(worker)).await;
        let promise = job.poke(7);
        assert_eq!(next_started(&mut started).await, Some(7), "{via:?}");
        drop(promise);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_promise_cancels_the_running_handler() {
    for via in Via::BOTH {
        let (worker, mut started, cancelled) = worker();
        let (job, _conns) = via.reach(JobProxy::new(worker)).await;
        let keep = job.hang(1);
        let dropped = job.hang(2);
        assert_eq!(next_started(&mut started).await, Some(1));
        assert_eq!(next_started(&mut started).await, Some(2));
        assert_eq!(cancelled.count(), 0, "{via:?}: nothing dropped yet");
        drop(dropped);
        assert!(cancelled.wait_for(1).await, "{via:?}: the handler of the dropped promise was not cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cancelled.count(), 1, "{via:?}: only the dropped call is cancelled");
        drop(keep);
        assert!(cancelled.wait_for(2).await, "{via:?}");
    }
}

#[tokio::test]
async fn a_promise_dropped_before_its_handler_starts_never_runs_it_to_completion() {
    for via in Via::BOTH {
        let (worker, mut started, cancelled) = worker();
        let (job, _conns) = via.reach(JobProxy::new(worker)).await;
        drop(job.hang(1));
        // Either the handler never starts, or it starts and is cancelled.
        let marker = job.poke(99);
        let mut seen = Vec::new();
        while let Some(id) = next_started(&mut started).await {
            seen.push(id);
            if id == 99 {
                break;
            }
        }
        marker.await.unwrap();
        if seen.contains(&1) {
            assert!(cancelled.wait_for(1).await, "{via:?}");
        }
    }
}

#[tokio::test]
async fn a_promise_with_a_live_pipelined_call_is_not_cancelled() {
    for via in Via::BOTH {
        let (worker, mut started, _) = worker();
        let (job, _conns) = via.reach(JobProxy::new(worker)).await;
        // Drop the promise at once; the pipelined call still needs its result.
        let poke = job.spawn_job().pipeline().poke(5);
        poke.await.unwrap();
        assert_eq!(next_started(&mut started).await, Some(5), "{via:?}");
    }
}
