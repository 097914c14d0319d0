//! Network partitions on a deterministic link.
//!
//! Two connections talk over a hand-made in-memory link (a fixed one-way
//! delay on tokio's clock) whose delivery can be stopped — the partition —
//! and resumed. While partitioned, writes are accepted and held (like a TCP
//! send buffer), and nothing is delivered either way, not even an end of
//! stream; on repair everything held arrives, in order. Every test runs on
//! the paused clock, so the times are exact, and every wait is bounded.
//!
//! 1. A partition shorter than the keepalive timeout (interval 1 s, timeout
//!    3 s, partition 2 s) in the middle of a 10,000-item download, a
//!    10,000-item upload and unary calls: both streams complete intact, in
//!    order, exactly once, the calls succeed, the connection stays up.
//! 2. A partition longer than the keepalive timeout: every capability,
//!    pending call and stream on both sides ends with `Disconnected` within
//!    the keepalive timeout (plus one interval), nothing hangs; after the
//!    repair a new connection over a new link works.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rpc_core::{eventual, Config, Connection, ErrorKind, RpcError, Sequence, SequenceWriter};
use rpc_tests::{connect_pair, partitionable_pipe, DropCounter, DropToken, Partition};
use serde::{Deserialize, Serialize};

use tokio::time::{sleep, timeout, Instant};

/// Bound on any single wait in this file (tokio time).
const LIMIT: Duration = Duration::from_secs(60);
const ONE_WAY: Duration = Duration::from_millis(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
const ITEMS: u64 = 10_000;

// ----- the service -----------------------------------------------------------------

/// What an upload looked like at the server.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    /// Every item was the previous plus one, starting at 0.
    pub in_order: bool,
}

#[eventual]
pub trait Store {
    /// `0..count`, written as fast as the window allows.
    fn numbers(&self, count: u64) -> Sequence<u64>;
    /// Reads an uploaded sequence to its end.
    async fn upload(&self, numbers: Sequence<u64>) -> Result<Summary, RpcError>;
    fn echo(&self, x: u64) -> u64;
    /// Never returns; holds a drop token while it runs.
    async fn hang(&self) -> u64;
    /// Another object on the same side, returned pipelined.
    fn sub(&self) -> StoreProxy;
    /// Keeps `store` (the test reads it from `StoreImpl::kept`).
    async fn keep(&self, store: StoreProxy);
}

/// What the server-side ends of the streams saw, for the test to check.
#[derive(Default)]
struct Seen {
    producer_end: Mutex<Option<Result<(), RpcError>>>,
    upload_end: Mutex<Option<UploadEnd>>,
    upload_progress: AtomicU64,
}

/// How the server's upload handler ended.
#[derive(Debug)]
enum UploadEnd {
    Returned(Result<Summary, RpcError>),
    /// The handler was dropped mid-read (its call was cancelled).
    Dropped,
}

/// Records [`UploadEnd::Dropped`] unless the handler recorded how it returned.
struct UploadGuard(Arc<Seen>);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.upload_end.lock().unwrap().get_or_insert(UploadEnd::Dropped);
    }
}

#[derive(Clone, Default)]
struct StoreImpl {
    running: DropCounter,
    kept: Arc<Mutex<Vec<StoreProxy>>>,
    seen: Arc<Seen>,
}

impl StoreImpl {
    async fn read_upload(&self, numbers: &mut Sequence<u64>) -> Result<Summary, RpcError> {
        // A small window, so the upload takes a while.
        numbers.set_capacity(256);
        let mut summary = Summary { count: 0, in_order: true };
        while let Some(n) = numbers.read().await? {
            summary.in_order &= n == summary.count;
            summary.count += 1;
            self.seen.upload_progress.store(summary.count, Ordering::SeqCst);
        }
        Ok(summary)
    }
}

impl Store for StoreImpl {
    fn numbers(&self, count: u64) -> Sequence<u64> {
        let (mut writer, reader) = Sequence::channel();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let result = async {
                for n in 0..count {
                    writer.write(n)?;
                    if n % 64 == 63 {
                        writer.flush().await?;
                    }
                }
                writer.close(None).await
            }
            .await;
            *seen.producer_end.lock().unwrap() = Some(result);
        });
        reader
    }
    async fn upload(&self, mut numbers: Sequence<u64>) -> Result<Summary, RpcError> {
        let _guard = UploadGuard(self.seen.clone());
        let result = self.read_upload(&mut numbers).await;
        let copy = match &result {
            Ok(summary) => Ok(Summary { count: summary.count, in_order: summary.in_order }),
            Err(err) => Err(err.clone()),
        };
        *self.seen.upload_end.lock().unwrap() = Some(UploadEnd::Returned(copy));
        result
    }
    fn echo(&self, x: u64) -> u64 {
        x
    }
    async fn hang(&self) -> u64 {
        let _token: DropToken = self.running.token();
        std::future::pending::<()>().await;
        0
    }
    fn sub(&self) -> StoreProxy {
        StoreProxy::new(StoreImpl::default())
    }
    async fn keep(&self, store: StoreProxy) {
        self.kept.lock().unwrap().push(store);
    }
}

// ----- helpers ---------------------------------------------------------------------

fn config() -> Config {
    Config { keepalive_interval: KEEPALIVE_INTERVAL, keepalive_timeout: KEEPALIVE_TIMEOUT, ..Config::default() }
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"))
}

fn assert_disconnected<T: std::fmt::Debug>(what: &str, result: Result<T, RpcError>) {
    match result {
        Err(err) => assert_eq!(err.kind(), ErrorKind::Disconnected, "{what}: {err}"),
        Ok(value) => panic!("{what}: succeeded with {value:?} across a long partition"),
    }
}

struct Pair {
    link: Partition,
    server: Connection,
    client: Connection,
    store: StoreProxy,
    server_obj: StoreImpl,
}

async fn open_pair() -> Pair {
    let (link, a, b) = partitionable_pipe(ONE_WAY);
    let server_obj = StoreImpl::default();
    let (server, client, store) =
        connect_pair(a, b, StoreProxy::new(server_obj.clone()), config()).await.expect("connect");
    Pair { link, server, client, store, server_obj }
}

/// Writes `0..count` into `writer`, flushing every 64 items; `progress`
/// counts items written. Returns how the writer ended.
async fn write_numbers(mut writer: SequenceWriter<u64>, count: u64, progress: Arc<AtomicU64>) -> Result<(), RpcError> {
    for n in 0..count {
        writer.write(n)?;
        progress.store(n + 1, Ordering::SeqCst);
        if n % 64 == 63 {
            writer.flush().await?;
        }
    }
    writer.close(None).await
}

/// Whether the connection pair is still up (neither side closed).
fn both_open(pair: &Pair) -> bool {
    pair.client.closed().now_or_never().is_none() && pair.server.closed().now_or_never().is_none()
}

// ----- 1: a short partition ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_partition_shorter_than_the_keepalive_timeout_loses_nothing() {
    let pair = open_pair().await;
    let store = &pair.store;
    assert_eq!(within("echo", store.echo(1)).await.unwrap(), 1);

    let mut download = store.numbers(ITEMS);
    // A small window, so the transfer is well under way, not over, at the cut.
    download.set_capacity(256);
    let (writer, upload_reader) = Sequence::channel();
    let upload = store.upload(upload_reader);
    let written = Arc::new(AtomicU64::new(0));
    let uploader = tokio::spawn(write_numbers(writer, ITEMS, written.clone()));

    let partition = Duration::from_secs(2);
    let mut received = Vec::with_capacity(ITEMS as usize);
    let mut during = Vec::new();
    let mut cut_at = None;
    let mut repaired_at = None;
    loop {
        let item = within("download item", download.read()).await.expect("download item");
        let Some(n) = item else { break };
        received.push(n);
        if received.len() == 3_000 {
            // The cut, with both transfers under way.
            let uploaded = pair.server_obj.seen.upload_progress.load(Ordering::SeqCst);
            assert!(uploaded > 0 && uploaded < ITEMS, "upload at {uploaded} of {ITEMS} when cut");
            pair.link.partition();
            let at = Instant::now();
            cut_at = Some(at);
            during = (0..5u64).map(|x| (x, store.echo(100 + x))).collect();
            let link = pair.link.clone();
            repaired_at = Some(tokio::spawn(async move {
                sleep(partition).await;
                link.repair();
                Instant::now()
            }));
        }
    }
    let cut_at = cut_at.expect("the partition happened");
    let repaired_at = within("repair", repaired_at.unwrap()).await.expect("repair task");
    assert_eq!(repaired_at - cut_at, partition);
    // The download: every item, in order, exactly once; it finished after the repair.
    assert_eq!(received.len() as u64, ITEMS, "items received");
    assert!(received.iter().enumerate().all(|(i, &n)| i as u64 == n), "items out of order or repeated");
    assert!(Instant::now() > repaired_at, "the download finished during the partition");
    assert!(matches!(*pair.server_obj.seen.producer_end.lock().unwrap(), Some(Ok(()))));
    // The upload: the same at the server.
    within("uploader", uploader).await.expect("uploader task").expect("upload writer");
    assert_eq!(within("upload", upload).await.expect("upload"), Summary { count: ITEMS, in_order: true });
    // The calls made during the partition were answered after it.
    for (x, call) in during {
        assert_eq!(within("echo during the partition", call).await.expect("echo"), 100 + x);
    }
    assert!(Instant::now() - cut_at >= partition);
    // The connection stayed up, through another keepalive timeout of idling.
    sleep(KEEPALIVE_TIMEOUT * 2).await;
    assert!(both_open(&pair), "a 2 s partition closed the connection");
    assert_eq!(within("echo after", store.echo(7)).await.unwrap(), 7);
    // A returned sequence read to its end still holds its call's question
    // (its keep-alive) until the reader is dropped.
    drop(download);
    sleep(Duration::from_millis(100)).await;
    let counts = pair.client.debug_counts();
    assert_eq!((counts.questions, counts.streams, counts.closed), (0, 0, false), "client: {counts:?}");
    let counts = pair.server.debug_counts();
    assert_eq!((counts.answers, counts.streams, counts.closed), (0, 0, false), "server: {counts:?}");
}

/// Several short partitions back to back, each under the timeout, during
/// unary calls only: the pings that queued up arrive together on repair
/// and must not count as a misbehaving peer.
#[tokio::test(start_paused = true)]
async fn repeated_short_partitions_keep_the_connection() {
    let pair = open_pair().await;
    for round in 0..10u64 {
        assert_eq!(within("echo", pair.store.echo(round)).await.unwrap(), round);
        pair.link.partition();
        let call = pair.store.echo(1000 + round);
        sleep(Duration::from_millis(2_900)).await;
        pair.link.repair();
        assert_eq!(within("echo across", call).await.unwrap(), 1000 + round);
        sleep(Duration::from_millis(100)).await;
    }
    assert!(both_open(&pair));
}

// ----- 2: a long partition -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_partition_longer_than_the_keepalive_timeout_ends_everything_then_a_new_link_works() {
    let pair = open_pair().await;
    let store = &pair.store;
    // Capabilities both ways: a server object the client holds, a client
    // object the server holds.
    let sub = store.sub();
    assert_eq!(within("sub.echo", sub.echo(2)).await.unwrap(), 2);
    let here = StoreImpl::default();
    within("keep", store.keep(StoreProxy::new(here.clone()))).await.unwrap();
    let theirs = pair.server_obj.kept.lock().unwrap()[0].clone();
    assert_eq!(within("theirs.echo", theirs.echo(3)).await.unwrap(), 3);
    // Pending calls both ways, and streams both ways, under way.
    let hangs: Vec<_> = (0..3).map(|_| store.hang()).collect();
    let server_hang = theirs.hang();
    let mut download = store.numbers(u64::MAX);
    let (writer, upload_reader) = Sequence::channel();
    let upload = store.upload(upload_reader);
    let written = Arc::new(AtomicU64::new(0));
    let uploader = tokio::spawn(write_numbers(writer, u64::MAX, written.clone()));
    let mut next = 0;
    while next < 2_000 {
        assert_eq!(within("download", download.read()).await.unwrap(), Some(next));
        next += 1;
    }
    assert_eq!(within("echo", store.echo(4)).await.unwrap(), 4);
    assert_eq!(pair.server_obj.running.count(), 0);
    assert!(pair.server_obj.seen.upload_progress.load(Ordering::SeqCst) > 0, "the upload has not started");

    pair.link.partition();
    let cut_at = Instant::now();
    let during = store.echo(5);
    let during_sub = sub.echo(6);
    let server_during = theirs.echo(7);

    // Each side gives up on its own, by keepalive, the link still cut.
    let bound = KEEPALIVE_TIMEOUT + KEEPALIVE_INTERVAL;
    for (side, conn) in [("client", &pair.client), ("server", &pair.server)] {
        let reason = within("closed", conn.closed()).await;
        assert_eq!(reason.kind(), ErrorKind::Disconnected, "{side}: {reason}");
        assert!(reason.message().contains("keepalive"), "{side}: {reason}");
        assert!(cut_at.elapsed() <= bound, "{side} closed {:?} after the cut", cut_at.elapsed());
    }
    // Everything pending on either side is over once both have closed.
    let closed_at = cut_at.elapsed();
    assert_disconnected("echo during", within("echo during", during).await);
    assert_disconnected("sub.echo during", within("sub.echo", during_sub).await);
    assert_disconnected("server's call during", within("theirs.echo", server_during).await);
    assert_disconnected("server's pending call", within("theirs.hang", server_hang).await);
    for (i, hang) in hangs.into_iter().enumerate() {
        assert_disconnected(&format!("hang {i}"), within("hang", hang).await);
    }
    // The download: what was buffered, in order, then `Disconnected`.
    let end = loop {
        match within("download", download.read()).await {
            Ok(Some(n)) => {
                assert_eq!(n, next, "download out of order");
                next += 1;
            }
            other => break other,
        }
    };
    assert_disconnected("download", end);
    assert_disconnected("upload writer", within("uploader", uploader).await.expect("uploader task"));
    assert_disconnected("upload", within("upload", upload).await);
    // The server's ends of both streams saw it too.
    assert!(pair.server_obj.running.wait_for(3).await, "the server's hang handlers were not cancelled");
    for _ in 0..100 {
        let seen = &pair.server_obj.seen;
        if seen.producer_end.lock().unwrap().is_some() && seen.upload_end.lock().unwrap().is_some() {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let producer_end = pair.server_obj.seen.producer_end.lock().unwrap().take().expect("the producer task ended");
    assert_disconnected("server's download writer", producer_end);
    // The upload's handler either read `Disconnected` or was cancelled with its call.
    match pair.server_obj.seen.upload_end.lock().unwrap().take().expect("the upload handler ended") {
        UploadEnd::Dropped => {}
        UploadEnd::Returned(result) => assert_disconnected("server's upload reader", result),
    }
    assert!(here.running.wait_for(1).await, "the client's hang handler was not cancelled");
    // New calls on the old capabilities fail at once, on both sides.
    assert_disconnected("late echo", store.echo(8).now_or_never().expect("fails at once"));
    assert_disconnected("late sub.echo", sub.echo(9).now_or_never().expect("fails at once"));
    assert_disconnected("late theirs.echo", theirs.echo(10).now_or_never().expect("fails at once"));
    for (side, conn) in [("client", &pair.client), ("server", &pair.server)] {
        let counts = conn.debug_counts();
        let empty = rpc_core::__private::TableCounts { closed: true, ..Default::default() };
        assert_eq!(counts, empty, "{side}'s tables after the close");
    }
    assert!(cut_at.elapsed() - closed_at < Duration::from_millis(200), "endings took {:?}", cut_at.elapsed());

    // The repair: the old link delivers what it held to ends that are gone;
    // a new connection over a new link works.
    sleep(Duration::from_secs(10)).await;
    pair.link.repair();
    sleep(Duration::from_millis(100)).await;
    let fresh = open_pair().await;
    assert_eq!(within("fresh echo", fresh.store.echo(11)).await.unwrap(), 11);
    let fresh_sub = fresh.store.sub();
    assert_eq!(within("fresh sub", fresh_sub.echo(12)).await.unwrap(), 12);
    let mut numbers = fresh.store.numbers(1_000);
    for n in 0..1_000 {
        assert_eq!(within("fresh numbers", numbers.read()).await.unwrap(), Some(n));
    }
    assert_eq!(within("fresh end", numbers.read()).await.unwrap(), None);
    assert!(both_open(&fresh));
}
