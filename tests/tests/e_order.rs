//! E-order: calls made on one capability start in the order they were made,
//! directly, through a pipelined proxy before and after it resolves, and when
//! the promise resolves to an object on the caller's own side (the embargo case).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, RpcError};
use rpc_tests::{connect_pair, latency_pipe, Via};

type Entries = Arc<Mutex<Vec<(u32, u32)>>>;

#[eventual]
pub trait Log {
    /// Records `(task, seq)` when the handler starts.
    fn record(&self, task: u32, seq: u32);
    /// Records, then yields: handlers interleave but must start in order.
    async fn record_then_yield(&self, task: u32, seq: u32);
    async fn entries(&self) -> Vec<(u32, u32)>;
    /// A new log writing into the same entries.
    async fn open(&self) -> Result<LogProxy, RpcError>;
    /// Returns the capability it was given.
    fn echo(&self, log: LogProxy) -> LogProxy;
}

#[derive(Clone, Default)]
struct Recorder(Entries);

impl Log for Recorder {
    fn record(&self, task: u32, seq: u32) {
        self.0.lock().unwrap().push((task, seq));
    }
    async fn record_then_yield(&self, task: u32, seq: u32) {
        self.0.lock().unwrap().push((task, seq));
        tokio::task::yield_now().await;
    }
    async fn entries(&self) -> Vec<(u32, u32)> {
        self.0.lock().unwrap().clone()
    }
    async fn open(&self) -> Result<LogProxy, RpcError> {
        Ok(LogProxy::new(self.clone()))
    }
    fn echo(&self, log: LogProxy) -> LogProxy {
        log
    }
}

/// Asserts each task's sequence numbers appear complete and in order.
fn assert_in_order(entries: &[(u32, u32)], tasks: u32, per_task: u32) {
    for task in 0..tasks {
        let seqs: Vec<u32> = entries.iter().filter(|(t, _)| *t == task).map(|(_, s)| *s).collect();
        assert_eq!(seqs, (0..per_task).collect::<Vec<_>>(), "task {task} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_from_many_tasks_each_start_in_the_order_made() {
    const TASKS: u32 = 6;
    const CALLS: u32 = 300;
    for via in Via::BOTH {
        let (log, _conns) = via.reach(LogProxy::new(Recorder::default())).await;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut promises = Vec::new();
                for seq in 0..CALLS {
                    if seq % 2 == 0 {
                        promises.push(log.record(task, seq));
                    } else {
                        promises.push(log.record_then_yield(task, seq));
                    }
                    if seq % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                for promise in promises {
                    promise.await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let entries = log.entries().await.unwrap();
        assert_eq!(entries.len(), (TASKS * CALLS) as usize, "{via:?}");
        assert_in_order(&entries, TASKS, CALLS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_a_pipelined_proxy_keep_order_across_its_resolution() {
    pipelined_calls_keep_order().await;
}

/// The same on a current-thread runtime: the serving reader starts the
/// calls itself, hundreds arriving together, started and answered in parts
/// (`rpc-core/src/conn/driver.rs`, `start_collected_writing`).
#[tokio::test]
async fn calls_a_reader_starts_in_parts_keep_order_through_a_pipelined_proxy() {
    pipelined_calls_keep_order().await;
}

async fn pipelined_calls_keep_order() {
    for via in Via::BOTH {
        let (factory, _conns) = via.reach(LogProxy::new(Recorder::default())).await;
        let mut promise = factory.open();
        let log = promise.pipeline();
        let mut calls: Vec<_> = (0..200).map(|seq| log.record(0, seq)).collect();
        // Resolve the promise mid-stream; later calls go to the resolved target.
        let resolved = (&mut promise).await.unwrap();
        calls.extend((200..400).map(|seq| log.record(0, seq)));
        calls.extend((400..500).map(|seq| resolved.record(1, seq - 400)));
        for call in calls {
            // Bounded: a call left unstarted must fail the test, not hang it.
            tokio::time::timeout(Duration::from_secs(10), call).await.expect("a call never returned").unwrap();
        }
        let entries = factory.entries().await.unwrap();
        assert_in_order(&entries, 1, 400);
        let task1: Vec<u32> = entries.iter().filter(|(t, _)| *t == 1).map(|(_, s)| *s).collect();
        assert_eq!(task1, (0..100).collect::<Vec<_>>(), "{via:?}");
    }
}

/// The pipelined proxy resolves to an object on the caller's side. Calls made
/// before resolution travel through the peer and back; calls made after must
/// not overtake them, though the target is now local.
#[tokio::test(start_paused = true)]
async fn a_promise_resolving_to_a_local_object_does_not_let_later_calls_overtake() {
    let one_way = Duration::from_millis(50);
    let (a, b) = latency_pipe(one_way);
    let (_server, _client, remote): (Connection, Connection, LogProxy) =
        connect_pair(a, b, LogProxy::new(Recorder::default()), Config::default()).await.unwrap();
    let mine = Recorder::default();
    let local = LogProxy::new(mine.clone());
    let reflected = remote.echo(local.clone());
    // 60 calls, one every 5 ms: those made before the answer arrives (at one
    // RTT) go through the peer; the rest find the promise resolved locally.
    let mut calls = Vec::new();
    for seq in 0..60 {
        calls.push(reflected.record(0, seq));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, call) in calls.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(5), call).await;
        assert!(
            matches!(r, Ok(Ok(()))),
            "call {i}: {r:?} entries {:?} reflected {reflected:?}",
            mine.0.lock().unwrap()
        );
    }
    let entries = mine.0.lock().unwrap().clone();
    assert_in_order(&entries, 1, 60);
    // The capability did come home: it is the caller's own object.
    assert!(reflected.record(0, 60).await.is_ok());
}
