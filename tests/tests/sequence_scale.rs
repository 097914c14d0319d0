//! Sequences at scale: a thousand concurrent sequences on one connection,
//! each with its own window (one of them stuck without holding up the rest),
//! and batching: ten thousand small items take few socket writes.
//!
//! Every wait is bounded.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{eventual, Config, RpcError, Sequence, SequenceWriter};
use rpc_tests::{connect_pair, latency_pipe, Via};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

/// Bound on the whole thousand-sequence run.
const SCALE_LIMIT: Duration = Duration::from_secs(120);
/// Bound on any other single wait.
const LIMIT: Duration = Duration::from_secs(60);

#[eventual]
pub trait Bulk {
    /// `count` numbers `id << 32 | i`, written by a spawned task (write, then flush).
    fn numbers(&self, id: u32, count: u32) -> Sequence<u64>;
    /// Writes `count` numbers `id << 32 | i` into `into` (write, then flush);
    /// the progress of stream `STUCK` is recorded.
    async fn fill(&self, id: u32, count: u32, into: SequenceWriter<u64>) -> Result<(), RpcError>;
    /// `0..count` as small items, written as fast as the window allows.
    fn small(&self, count: u32) -> Sequence<u32>;
    fn ping(&self, x: u32) -> u32;
}

/// The stream whose consumer stops reading.
const STUCK: u32 = 0;

#[derive(Default)]
struct Probe {
    /// Items written by the producer of `STUCK`.
    written: AtomicU64,
    /// Flushes it completed.
    flushed: AtomicU64,
}

impl Probe {
    fn stuck_progress(&self) -> (u64, u64) {
        (self.written.load(Ordering::SeqCst), self.flushed.load(Ordering::SeqCst))
    }
}

struct BulkImpl {
    probe: Arc<Probe>,
}

fn item(id: u32, i: u32) -> u64 {
    u64::from(id) << 32 | u64::from(i)
}

impl Bulk for BulkImpl {
    fn numbers(&self, id: u32, count: u32) -> Sequence<u64> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                writer.write(item(id, i))?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    async fn fill(&self, id: u32, count: u32, mut into: SequenceWriter<u64>) -> Result<(), RpcError> {
        for i in 0..count {
            into.write(item(id, i))?;
            if id == STUCK {
                self.probe.written.store(u64::from(i) + 1, Ordering::SeqCst);
            }
            into.flush().await?;
            if id == STUCK {
                self.probe.flushed.store(u64::from(i) + 1, Ordering::SeqCst);
            }
        }
        into.close(None).await
    }

    fn small(&self, count: u32) -> Sequence<u32> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                writer.write(i)?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    fn ping(&self, x: u32) -> u32 {
        x
    }
}

async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    timeout(limit, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

/// Reads `count` items of stream `id`, in order, then the end.
async fn check(id: u32, count: u32, mut numbers: Sequence<u64>) -> Result<(), String> {
    for i in 0..count {
        match numbers.read().await {
            Ok(Some(n)) if n == item(id, i) => {}
            other => return Err(format!("stream {id}, item {i}: got {other:?}")),
        }
    }
    match numbers.read().await {
        Ok(None) => Ok(()),
        other => Err(format!("stream {id}: expected the end, got {other:?}")),
    }
}

// ----- 8. a thousand sequences on one connection ---------------------------------

async fn thousand_sequences(settle: Duration) {
    const STREAMS: u32 = 1000;
    const ITEMS: u32 = 50;
    const STUCK_ITEMS: u32 = 1000;
    let probe = Arc::new(Probe::default());
    let (bulk, _conns) = Via::Remote.reach(BulkProxy::new(BulkImpl { probe: probe.clone() })).await;

    // The stuck stream: its window (4) travels with the call; its consumer never reads.
    let (stuck_writer, stuck) = Sequence::<u64>::channel();
    stuck.set_capacity(4);
    let stuck_call = bulk.fill(STUCK, STUCK_ITEMS, stuck_writer);

    // 999 flowing streams, each with capacity 4: half returned by the server
    // (the window set right after the call), half filled through a writer
    // the client sent (the window travels with the call).
    let mut readers = JoinSet::new();
    for id in 1..STREAMS {
        if id % 2 == 0 {
            let numbers = bulk.numbers(id, ITEMS);
            numbers.set_capacity(4);
            readers.spawn(check(id, ITEMS, numbers));
        } else {
            let (writer, numbers) = Sequence::<u64>::channel();
            numbers.set_capacity(4);
            let call = bulk.fill(id, ITEMS, writer);
            readers.spawn(async move {
                check(id, ITEMS, numbers).await?;
                call.await.map_err(|e| format!("fill {id}: {e}"))
            });
        }
    }
    // Unary calls on the same connection, made while the streams flow.
    let pings: Vec<_> = (0..200).map(|x| bulk.ping(x)).collect();

    let everything = async {
        let mut done = 0;
        while let Some(result) = readers.join_next().await {
            result.expect("reader task").unwrap_or_else(|e| panic!("{e}"));
            done += 1;
        }
        for (x, ping) in pings.into_iter().enumerate() {
            assert_eq!(ping.await.expect("ping"), x as u32);
        }
        done
    };
    let done = within("999 sequences and 200 calls", SCALE_LIMIT, everything).await;
    assert_eq!(done, STREAMS - 1);
    // A call made now, with the stuck stream still stuck, is answered too.
    assert_eq!(within("late ping", LIMIT, bulk.ping(7)).await.expect("late ping"), 7);

    // The stuck producer: at most the window written, its flush pending, and it stays so.
    let (written, flushed) = probe.stuck_progress();
    assert!((4..=5).contains(&written), "the stuck producer wrote {written} items with a window of 4");
    assert_eq!(flushed, written - 1, "the stuck producer's last flush must be pending");
    sleep(settle).await;
    assert_eq!(probe.stuck_progress(), (written, flushed), "the stuck producer moved without a reader");

    // Once read, it completes like the others.
    within("stuck stream", SCALE_LIMIT, check(STUCK, STUCK_ITEMS, stuck)).await.unwrap_or_else(|e| panic!("{e}"));
    within("stuck call", LIMIT, stuck_call).await.expect("stuck fill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_sequences_share_one_connection_and_one_stuck_consumer_blocks_only_its_own() {
    thousand_sequences(Duration::from_millis(200)).await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_sequences_share_one_connection_paused_clock() {
    thousand_sequences(Duration::from_millis(200)).await;
}

// ----- 9. batching --------------------------------------------------------------

const SMALL_ITEMS: u32 = 10_000;

/// Streams `SMALL_ITEMS` small items (capacity 1,024, batch 256) over a
/// latency pipe; returns the socket writes the producing side made meanwhile.
async fn socket_writes_for_small_items(one_way: Duration) -> usize {
    let (a, b) = latency_pipe(one_way);
    let server_writes: Arc<AtomicUsize> = a.write_counter();
    let probe = Arc::new(Probe::default());
    let (_server, _client, bulk) =
        connect_pair(a, b, BulkProxy::new(BulkImpl { probe }), Config::default()).await.expect("connect");
    let before = server_writes.load(Ordering::SeqCst);
    let start = Instant::now();
    let mut items = bulk.small(SMALL_ITEMS);
    items.set_capacity(1024);
    items.set_batch_size(256);
    let read_all = async {
        for i in 0..SMALL_ITEMS {
            assert_eq!(items.read().await.expect("read"), Some(i), "items arrive in order");
        }
        assert_eq!(items.read().await.expect("end"), None);
    };
    within("10,000 items", LIMIT, read_all).await;
    let writes = server_writes.load(Ordering::SeqCst) - before;
    println!(
        "batching, one way {one_way:?}: {writes} socket writes for {SMALL_ITEMS} items ({:?} of tokio time)",
        start.elapsed()
    );
    writes
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_small_items_take_few_socket_writes_paused_clock() {
    let writes = socket_writes_for_small_items(Duration::from_millis(1)).await;
    assert!(writes < SMALL_ITEMS as usize / 20, "{writes} socket writes for {SMALL_ITEMS} items");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_small_items_take_few_socket_writes_multi_thread() {
    let writes = socket_writes_for_small_items(Duration::ZERO).await;
    assert!(writes < SMALL_ITEMS as usize / 20, "{writes} socket writes for {SMALL_ITEMS} items");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_small_items_take_few_socket_writes_one_ms_multi_thread() {
    let writes = socket_writes_for_small_items(Duration::from_millis(1)).await;
    assert!(writes < SMALL_ITEMS as usize / 20, "{writes} socket writes for {SMALL_ITEMS} items");
}
