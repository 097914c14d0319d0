//! Sequences end to end: returned, uploaded, in both directions, local and remote.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{eventual, ErrorKind, RpcError, Sequence, SequenceWriter};
use rpc_tests::Via;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    pub n: u64,
    pub label: String,
}

#[eventual]
pub trait Feed {
    /// `count` ticks, then the end.
    fn ticks(&self, count: u64) -> Sequence<Tick>;
    /// Sums an uploaded sequence.
    async fn sum(&self, numbers: Sequence<u64>) -> Result<u64, RpcError>;
    /// Writes `count` numbers into a writer the caller sent, then closes it.
    async fn fill(&self, count: u64, into: SequenceWriter<u64>) -> Result<(), RpcError>;
    /// Ticks, then an error.
    fn failing(&self, count: u64) -> Sequence<u64>;
    /// Echoes each item back, doubled: full duplex.
    fn double(&self, numbers: Sequence<u64>) -> Sequence<u64>;
}

struct Source;

impl Feed for Source {
    fn ticks(&self, count: u64) -> Sequence<Tick> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for n in 0..count {
                writer.write(Tick { n, label: format!("tick {n}") })?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    async fn sum(&self, mut numbers: Sequence<u64>) -> Result<u64, RpcError> {
        let mut total = 0;
        while let Some(n) = numbers.read().await? {
            total += n;
        }
        Ok(total)
    }

    async fn fill(&self, count: u64, mut into: SequenceWriter<u64>) -> Result<(), RpcError> {
        for n in 0..count {
            into.write(n)?;
            into.flush().await?;
        }
        into.close(None).await
    }

    fn failing(&self, count: u64) -> Sequence<u64> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for n in 0..count {
                writer.write(n)?;
            }
            writer.close(Some(RpcError::new(ErrorKind::Aborted, "the source broke"))).await
        });
        reader
    }

    fn double(&self, mut numbers: Sequence<u64>) -> Sequence<u64> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            while let Some(n) = numbers.read().await? {
                writer.write(n * 2)?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }
}

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_sequence_delivers_every_item_in_order_then_ends() {
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let mut ticks = feed.ticks(1000);
        ticks.set_capacity(16);
        ticks.set_batch_size(4);
        let mut seen = 0;
        while let Some(tick) = bounded("read", ticks.next()).await {
            let tick = tick.unwrap();
            assert_eq!(tick, Tick { n: seen, label: format!("tick {seen}") }, "{via:?}");
            seen += 1;
        }
        assert_eq!(seen, 1000, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_sequence_is_read_by_the_server() {
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let (mut writer, numbers) = Sequence::channel();
        let total = feed.sum(numbers);
        for n in 1..=500u64 {
            writer.write(n).unwrap();
            bounded("flush", writer.flush()).await.unwrap();
        }
        bounded("close", writer.close(None)).await.unwrap();
        assert_eq!(bounded("sum", total).await.unwrap(), 500 * 501 / 2, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_sent_to_the_server_fills_the_callers_sequence() {
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let (writer, mut numbers) = Sequence::channel();
        let done = feed.fill(300, writer);
        let mut seen = Vec::new();
        while let Some(n) = bounded("read", numbers.read()).await.unwrap() {
            seen.push(n);
        }
        assert_eq!(seen, (0..300).collect::<Vec<_>>(), "{via:?}");
        bounded("fill", done).await.unwrap();
    }
}

#[tokio::test]
async fn close_with_an_error_is_seen_after_the_items() {
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let mut numbers = feed.failing(5);
        for n in 0..5 {
            assert_eq!(bounded("read", numbers.read()).await.unwrap(), Some(n), "{via:?}");
        }
        let err = bounded("read", numbers.read()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Aborted, "{via:?}");
        assert!(err.message().contains("the source broke"), "{via:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_a_call_takes_and_returns_a_sequence() {
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let (mut writer, numbers) = Sequence::channel();
        let mut doubled = feed.double(numbers);
        for n in 0..200u64 {
            writer.write(n).unwrap();
            bounded("flush", writer.flush()).await.unwrap();
            assert_eq!(bounded("read", doubled.read()).await.unwrap(), Some(n * 2), "{via:?}");
        }
        bounded("close", writer.close(None)).await.unwrap();
        assert_eq!(bounded("end", doubled.read()).await.unwrap(), None, "{via:?}");
    }
}

#[eventual]
pub trait Blobs {
    /// `count` items of `size` bytes each, item `i` filled with `i as u8`.
    fn blobs(&self, count: u32, size: u32) -> Sequence<Vec<u8>>;
    async fn ping(&self) -> u32;
}

struct BlobSource;

impl Blobs for BlobSource {
    fn blobs(&self, count: u32, size: u32) -> Sequence<Vec<u8>> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                writer.write(vec![i as u8; size as usize])?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    async fn ping(&self) -> u32 {
        7
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_larger_than_a_message_arrive_whole() {
    for via in Via::BOTH {
        let (blobs, _conns) = via.reach(BlobsProxy::new(BlobSource)).await;
        let mut items = blobs.blobs(6, 1_000_003);
        items.set_capacity(2);
        for i in 0..6u32 {
            let item = bounded("read", items.read()).await.unwrap().unwrap();
            assert_eq!(item.len(), 1_000_003, "{via:?}");
            assert!(item.iter().all(|b| *b == i as u8), "{via:?}: item {i} corrupted");
        }
        assert_eq!(bounded("end", items.read()).await.unwrap(), None);
    }
}

/// Large items are cut into bounded parts and each stream emits a bounded
/// share per writer round, so a call's frames pass between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_not_stuck_behind_large_items() {
    let (blobs, _conns) = Via::Remote.reach(BlobsProxy::new(BlobSource)).await;
    let mut items = blobs.blobs(30, 1 << 20);
    items.set_capacity(4);
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(item) = items.read().await.unwrap() {
            assert_eq!(item.len(), 1 << 20);
            n += 1;
            counter.store(n, Ordering::SeqCst);
        }
        n
    });
    // Measured in items, not time, so a busy machine cannot fail it: how many
    // 1 MiB items reached the reader while each ping was on its way. A ping
    // queued behind whole windows of items would see several pass every time.
    bounded("the first item", async {
        while read.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let mut passed = Vec::new();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let (before, start) = (read.load(Ordering::SeqCst), std::time::Instant::now());
        assert_eq!(bounded("ping", blobs.ping()).await.unwrap(), 7);
        worst = worst.max(start.elapsed());
        passed.push(read.load(Ordering::SeqCst) - before);
    }
    let during = read.load(Ordering::SeqCst) < 30;
    assert_eq!(bounded("reader", reader).await.unwrap(), 30);
    passed.sort_unstable();
    println!("pings done before the last item: {during}");
    println!("items passing a ping: {passed:?}; slowest ping {worst:?} (printed, not asserted)");
    assert!(passed[passed.len() / 2] <= 2, "half the pings waited behind more than 2 MiB of items: {passed:?}");
}

#[eventual]
pub trait Trickle {
    /// `count` items, one per millisecond.
    fn trickle(&self, count: u32) -> Sequence<u32>;
}

struct Dripper;

impl Trickle for Dripper {
    fn trickle(&self, count: u32) -> Sequence<u32> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for n in 0..count {
                writer.write(n)?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            writer.close(None).await
        });
        reader
    }
}

/// Socket writes the server makes while trickling 20 items, one per millisecond.
async fn trickle_writes(nagle: Option<Duration>) -> usize {
    let (a, b) = rpc_tests::latency_pipe(Duration::from_millis(1));
    let server_writes = a.write_counter();
    let config = rpc_core::Config { stream_nagle: nagle, ..rpc_core::Config::default() };
    let (_server, _client, trickle) = rpc_tests::connect_pair(a, b, TrickleProxy::new(Dripper), config).await.unwrap();
    let before = server_writes.load(std::sync::atomic::Ordering::SeqCst);
    let mut items = trickle.trickle(20);
    let mut seen = Vec::new();
    while let Some(n) = bounded("read", items.read()).await.unwrap() {
        seen.push(n);
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    server_writes.load(std::sync::atomic::Ordering::SeqCst) - before
}

#[tokio::test(start_paused = true)]
async fn a_nagle_delay_coalesces_items_written_across_turns() {
    let eager = trickle_writes(None).await;
    let nagled = trickle_writes(Some(Duration::from_millis(10))).await;
    // Without a delay every item leaves on its own; with 10 ms, about one write per 10 items.
    assert!(eager >= 20, "without nagle: {eager} writes for 20 items");
    assert!(nagled <= 6, "with a 10 ms nagle: {nagled} writes for 20 items");
}

/// DESIGN: an optional idle timeout ends a sequence with a timeout error on
/// the consumer, and the producer sees it cancelled with the reason.
#[tokio::test(start_paused = true)]
async fn an_idle_timeout_ends_the_sequence_on_both_sides() {
    // Through a call, local and remote: the consumer's read times out.
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let (mut writer, numbers) = Sequence::<u64>::channel();
        let mut doubled = feed.double(numbers);
        doubled.set_idle_timeout(Some(Duration::from_millis(200)));
        writer.write(1).unwrap();
        assert_eq!(bounded("first", doubled.read()).await.unwrap(), Some(2), "{via:?}");
        let err = bounded("idle", doubled.read()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{via:?}: {err}");
    }
    // The producer sees the reason on its next write.
    let (mut writer, mut reader) = Sequence::<u64>::channel();
    reader.set_idle_timeout(Some(Duration::from_millis(50)));
    assert_eq!(bounded("idle", reader.read()).await.unwrap_err().kind(), ErrorKind::Timeout);
    let err = writer.write(9).unwrap_err();
    assert!(err.message().contains("idle timeout"), "{err}");
}

#[tokio::test]
async fn forward_to_pumps_a_sequence_into_any_sink() {
    for via in Via::BOTH {
        let (feed, _conns) = via.reach(FeedProxy::new(Source)).await;
        let ticks = feed.ticks(50);
        let (sink, collected) = futures::channel::mpsc::unbounded();
        bounded("forward", ticks.forward_to(sink)).await.unwrap();
        let all: Vec<Tick> = collected.collect().await;
        assert_eq!(all.len(), 50, "{via:?}");
        assert!(all.iter().enumerate().all(|(i, t)| t.n == i as u64), "{via:?}");
    }
}

struct Backlog;

impl Trickle for Backlog {
    fn trickle(&self, count: u32) -> Sequence<u32> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for n in 0..count {
                writer.write(n)?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }
}

/// A consumer draining a backlog on a busy thread must not hold its window
/// report until it has read everything: its read yields once after a report
/// goes out, so the connection's writer (on this same thread) sends it while
/// the reader goes on. Without that, the producer stalls for the whole backlog.
#[tokio::test(start_paused = true)]
async fn a_window_report_leaves_while_the_reader_drains_a_backlog() {
    let (a, b) = rpc_tests::latency_pipe(Duration::from_millis(1));
    let client_writes = b.write_counter();
    let config = rpc_core::Config::default();
    let (_server, _client, trickle) = rpc_tests::connect_pair(a, b, TrickleProxy::new(Backlog), config).await.unwrap();
    let items = trickle.trickle(10_000);
    items.set_capacity(1024);
    items.set_batch_size(128);
    // Let the producer fill the window: 1024 items wait here, unread.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = client_writes.load(std::sync::atomic::Ordering::SeqCst);
    let mut items = items;
    let mut read = 0u32;
    let mut writes_while_draining = 0;
    while read < 1024 {
        let n = bounded("read", items.read()).await.unwrap().expect("an item");
        assert_eq!(n, read);
        read += 1;
        if read < 1024 {
            writes_while_draining = client_writes.load(std::sync::atomic::Ordering::SeqCst) - before;
        }
    }
    assert!(writes_while_draining > 0, "no window report left the client while it drained the 1024 buffered items");
}

/// Writes `count` items with room to spare, noting how many socket writes the
/// server made while it was writing them.
struct Eager {
    server_writes: Arc<AtomicUsize>,
    during: Arc<AtomicUsize>,
}

impl Trickle for Eager {
    fn trickle(&self, count: u32) -> Sequence<u32> {
        let (mut writer, reader) = Sequence::channel();
        let (server_writes, during) = (self.server_writes.clone(), self.during.clone());
        tokio::spawn(async move {
            let before = server_writes.load(Ordering::SeqCst);
            for n in 0..count {
                writer.write(n)?;
                writer.flush().await?;
            }
            during.store(server_writes.load(Ordering::SeqCst) - before, Ordering::SeqCst);
            writer.close(None).await
        });
        reader
    }
}

/// A producer whose window never fills must still let its connection's
/// writer run: on one thread, items leave while it goes on writing, so the
/// consumer works in parallel with it. Without the flush's periodic yield the
/// whole stream is encoded before its first byte is sent.
#[tokio::test(start_paused = true)]
async fn a_producer_with_room_lets_its_connection_send_while_it_writes() {
    let (a, b) = rpc_tests::latency_pipe(Duration::from_millis(1));
    let during = Arc::new(AtomicUsize::new(0));
    let server = Eager { server_writes: a.write_counter(), during: during.clone() };
    let config = rpc_core::Config::default();
    let (_server, _client, trickle) = rpc_tests::connect_pair(a, b, TrickleProxy::new(server), config).await.unwrap();
    // About 150 KiB of items, all within the window.
    let count = 50_000;
    let mut items = trickle.trickle(count);
    items.set_capacity(65_536);
    for want in 0..count {
        assert_eq!(bounded("read", items.read()).await.unwrap(), Some(want));
    }
    assert_eq!(bounded("end", items.read()).await.unwrap(), None);
    let during = during.load(Ordering::SeqCst);
    assert!(during >= 2, "the server wrote to its socket {during} times while its producer wrote 50,000 items");
}

/// Once its reader is on the connection, writes `count` items and never
/// flushes, closes or drops the writer (it keeps it): items staged without
/// the connection's lock must still reach the consumer, the writer task
/// taking them in by itself.
struct Keeper {
    kept: Arc<std::sync::Mutex<Vec<SequenceWriter<u32>>>>,
}

impl Trickle for Keeper {
    fn trickle(&self, count: u32) -> Sequence<u32> {
        let (mut writer, reader) = Sequence::channel();
        let kept = self.kept.clone();
        tokio::spawn(async move {
            // Let the reply (and with it the reader) go over the connection first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            for n in 0..count {
                writer.write(n).expect("the consumer is reading");
            }
            kept.lock().unwrap().push(writer);
        });
        reader
    }
}

async fn written_items_arrive_without_a_flush() {
    for via in Via::BOTH {
        let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (trickle, _conns) = via.reach(TrickleProxy::new(Keeper { kept: kept.clone() })).await;
        for count in [1u32, 3, 5_000] {
            let mut items = trickle.trickle(count);
            // Well within the keepalive interval (5 s), whose ping would
            // also lock the connection and so take the items in.
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                for want in 0..count {
                    assert_eq!(items.read().await.unwrap(), Some(want), "{via:?}, {count} items");
                }
            });
            read.await.unwrap_or_else(|_| panic!("{via:?}: {count} written items did not arrive"));
        }
        assert_eq!(kept.lock().unwrap().len(), 3, "{via:?}: the writers are still open");
    }
}

#[tokio::test]
async fn written_items_arrive_without_a_flush_current_thread() {
    written_items_arrive_without_a_flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_items_arrive_without_a_flush_multi_thread() {
    written_items_arrive_without_a_flush().await;
}
