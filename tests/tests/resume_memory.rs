//! Resumable sequences over the in-memory session store: drops through a
//! cutting relay, gaps, ends and cancels across reconnects, the window, the
//! link's bounded backoff. Every test name contains `resum`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::resume::{
    store_error, Backoff, Entry, LinkState, LogRead, LogState, MemoryStore, Reconnecting, ResumableSequence,
    ResumableWriter, ResumeGap, ResumeOptions, ResumeProxy, ResumeServer, SessionStore, StoreFuture,
};
use rpc_core::{ErrorKind, RpcError};
use rpc_tests::resume_support::Relay;

const LIMIT: Duration = Duration::from_secs(60);

async fn server(store: &MemoryStore) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = store.clone();
    tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(Arc::new(store.clone())))));
    addr
}

fn quick() -> Backoff {
    Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(100), max_attempts: Some(50), jitter: true }
}

fn reader<T: serde::de::DeserializeOwned>(link: &Reconnecting<ResumeProxy>, key: &str) -> ResumableSequence<T> {
    ResumableSequence::new(link, key, ResumeProxy::clone)
}

async fn produce(store: &MemoryStore, key: &str, count: u32, window: u32) {
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store.clone()), key, window).await.unwrap();
    for n in 1..=count {
        writer.write(&n).unwrap();
        if n % 32 == 0 {
            writer.flush().await.unwrap();
        }
    }
    writer.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_through_100_drops_over_10000_items_exactly_once_in_order() {
    let store = MemoryStore::new();
    let relay = Relay::start(server(&store).await).await;
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    tokio::spawn({
        let store = store.clone();
        async move { produce(&store, "drops", 10_000, 256).await }
    });
    // A small window, so that every cut catches the sequence mid-flight.
    let options = ResumeOptions { capacity: 32, batch: 16, ack_every: 16, ..ResumeOptions::default() };
    let mut feed = reader::<u32>(&link, "drops").with_options(options);
    let started = Instant::now();
    let mut expected = 1;
    tokio::time::timeout(LIMIT, async {
        while let Some(n) = feed.read().await.unwrap() {
            assert_eq!(n, expected, "every item exactly once, in order");
            expected += 1;
            if n % 100 == 50 {
                relay.cut();
            }
        }
    })
    .await
    .expect("the sequence finished in time");
    assert_eq!(expected, 10_001);
    // 100 cuts; a cut lands a moment after its abort, so two may rarely merge into one loss.
    assert!(feed.reconnects() >= 90, "{} reconnects", feed.reconnects());
    let elapsed = started.elapsed();
    println!(
        "10000 items across {} drops in {elapsed:?}: {:.0} items/s, {:?} per drop on average",
        feed.reconnects(),
        10_000.0 / elapsed.as_secs_f64(),
        elapsed / feed.reconnects() as u32
    );
    // The last acknowledgement travels after the end was read.
    for _ in 0..200 {
        if store.held_entries() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.held_entries(), 0, "everything acknowledged at the end");
}

#[tokio::test]
async fn resume_gap_that_cannot_be_filled_is_an_error_naming_the_ids() {
    let store = MemoryStore::new();
    let addr = server(&store).await;
    produce(&store, "gap", 10, 16).await;
    store.ack("gap", 5).await.unwrap(); // trimmed by someone else
    let link = Reconnecting::<ResumeProxy>::tcp(addr, quick());
    let mut feed = ResumableSequence::<u32>::resume_after(&link, "gap", 2, ResumeProxy::clone);
    let err = feed.read().await.unwrap_err();
    let gap = ResumeGap::from_error(&err).expect("a gap error");
    assert_eq!(gap, ResumeGap { key: "gap".into(), after: 2, first_kept: Some(6) });
    assert!(err.message().contains("items 3..=5 are gone"), "{err}");

    let mut unknown = ResumableSequence::<u32>::resume_after(&link, "never-written", 7, ResumeProxy::clone);
    let err = unknown.read().await.unwrap_err();
    assert_eq!(ResumeGap::from_error(&err).unwrap().first_kept, None);
    assert!(err.message().contains("after item 7"), "{err}");
}

#[tokio::test]
async fn resume_keeps_close_with_error_and_abort_across_a_drop() {
    let store = MemoryStore::new();
    let relay = Relay::start(server(&store).await).await;
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let shared: Arc<dyn SessionStore> = Arc::new(store.clone());

    let mut writer = ResumableWriter::<u32>::open(shared.clone(), "failing", 16).await.unwrap();
    for n in 1..=3 {
        writer.write(&n).unwrap();
    }
    writer.close(Some(RpcError::new(ErrorKind::Application, "feed broke"))).await.unwrap();
    let mut feed = reader::<u32>(&link, "failing");
    assert_eq!(feed.read().await.unwrap(), Some(1));
    relay.cut();
    assert_eq!(feed.read().await.unwrap(), Some(2));
    assert_eq!(feed.read().await.unwrap(), Some(3));
    let err = feed.read().await.unwrap_err();
    assert_eq!(err.message(), "feed broke");
    assert_eq!(feed.read().await.unwrap_err().message(), "feed broke", "the end stays");

    let mut writer = ResumableWriter::<u32>::open(shared.clone(), "aborted", 16).await.unwrap();
    writer.send(&1).await.unwrap();
    let mut feed = reader::<u32>(&link, "aborted");
    assert_eq!(feed.read().await.unwrap(), Some(1));
    relay.cut();
    writer.write(&2).unwrap();
    writer.abort().await.unwrap();
    assert_eq!(feed.read().await.unwrap_err().kind(), ErrorKind::Aborted);

    let writer = ResumableWriter::<u32>::open(shared, "dropped", 16).await.unwrap();
    drop(writer); // dropped without close: an abort
    let mut feed = reader::<u32>(&link, "dropped");
    let err = tokio::time::timeout(LIMIT, feed.read()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Aborted);
}

#[tokio::test]
async fn resume_cancel_reaches_the_producer_after_a_reconnect() {
    let store = MemoryStore::new();
    let relay = Relay::start(server(&store).await).await;
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store.clone()), "cancel", 16).await.unwrap();
    writer.send(&1).await.unwrap();
    let mut feed = reader::<u32>(&link, "cancel");
    assert_eq!(feed.read().await.unwrap(), Some(1));
    relay.cut();
    feed.cancel("enough").await.unwrap();
    let err = writer.flush().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(err.message().contains("enough"), "{err}");
    assert_eq!(writer.write(&2).unwrap_err().kind(), ErrorKind::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_window_bounds_what_the_producer_keeps() {
    const WINDOW: u32 = 8;
    let store = MemoryStore::new();
    let relay = Relay::start(server(&store).await).await;
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let producer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut writer = ResumableWriter::<u32>::open(Arc::new(store), "window", WINDOW).await.unwrap();
            for n in 1..=200 {
                writer.send(&n).await.unwrap();
            }
            writer.close(None).await.unwrap();
        }
    });
    // Nobody reads yet: the producer stops at the window.
    for _ in 0..500 {
        if store.held_entries() >= WINDOW as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.held_entries(), WINDOW as usize);
    assert!(!producer.is_finished());
    let options = ResumeOptions { capacity: 4, batch: 2, ack_every: 3, ..ResumeOptions::default() };
    let mut feed = reader::<u32>(&link, "window").with_options(options);
    let mut expected = 1;
    while let Some(n) = tokio::time::timeout(LIMIT, feed.read()).await.unwrap().unwrap() {
        assert_eq!(n, expected);
        assert!(store.held_entries() <= WINDOW as usize + 1, "held {}", store.held_entries());
        if n % 40 == 0 {
            relay.cut();
        }
        expected += 1;
    }
    assert_eq!(expected, 201);
    producer.await.unwrap();
}

#[tokio::test]
async fn resume_link_gives_up_after_its_attempts_and_says_so() {
    let unused = rpc_tests::resume_support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], unused));
    let backoff = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        max_attempts: Some(3),
        jitter: false,
    };
    let link = Reconnecting::<ResumeProxy>::tcp(addr, backoff);
    let mut states = link.watch();
    let err = tokio::time::timeout(LIMIT, link.connected()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected);
    assert!(err.message().contains("gave up reconnecting after 3 attempts"), "{err}");
    let failed = tokio::time::timeout(LIMIT, states.wait_for(|s| matches!(s, LinkState::Failed(_)))).await.unwrap();
    assert!(failed.is_ok());
    let mut feed = reader::<u32>(&link, "nowhere");
    assert!(feed.read().await.unwrap_err().message().contains("gave up"));
}

#[tokio::test]
async fn resume_link_redials_and_old_capabilities_fail_disconnected() {
    let store = MemoryStore::new();
    let relay = Relay::start(server(&store).await).await;
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let first = link.connected().await.unwrap();
    first.ack("x".into(), 0).await.unwrap();
    assert_eq!(link.state(), LinkState::Connected { generation: 1 });
    let started = Instant::now();
    relay.cut();
    let (generation, second) = tokio::time::timeout(LIMIT, link.connected_with_generation(1)).await.unwrap().unwrap();
    println!("reconnected in {:?}", started.elapsed());
    assert_eq!(generation, 2);
    assert_eq!(first.ack("x".into(), 0).await.unwrap_err().kind(), ErrorKind::Disconnected);
    second.ack("x".into(), 0).await.unwrap();
}

#[tokio::test]
async fn resume_capability_scoped_to_one_session_refuses_others() {
    let store = MemoryStore::new();
    produce(&store, "alice", 3, 16).await;
    produce(&store, "bob", 3, 16).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = store.clone();
    tokio::spawn(rpc_core::serve(listener, move || {
        ResumeProxy::new(ResumeServer::only(Arc::new(served.clone()), "alice"))
    }));
    let link = Reconnecting::<ResumeProxy>::tcp(addr, quick());
    let mut alice = reader::<u32>(&link, "alice");
    assert_eq!(alice.read().await.unwrap(), Some(1));
    let mut bob = reader::<u32>(&link, "bob");
    let err = tokio::time::timeout(LIMIT, bob.read()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unimplemented, "{err}");
    assert!(err.message().contains("serves the sequence 'alice', not 'bob'"), "{err}");
}

/// A memory store whose chosen append and ack calls fail once (a store
/// blip); 0 means never.
#[derive(Clone)]
struct Flaky {
    inner: MemoryStore,
    fail_append: u32,
    fail_ack: u32,
    appends: Arc<AtomicU32>,
    acks: Arc<AtomicU32>,
}

impl Flaky {
    fn new(inner: &MemoryStore, fail_append: u32, fail_ack: u32) -> Self {
        Flaky { inner: inner.clone(), fail_append, fail_ack, appends: Arc::default(), acks: Arc::default() }
    }
}

fn blip<'a>() -> StoreFuture<'a, ()> {
    Box::pin(std::future::ready(Err(store_error("blip"))))
}

impl SessionStore for Flaky {
    fn append<'a>(&'a self, key: &'a str, entries: Vec<(u64, Entry)>) -> StoreFuture<'a, ()> {
        if self.appends.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_append {
            return blip();
        }
        self.inner.append(key, entries)
    }
    fn read_after<'a>(&'a self, key: &'a str, after: u64, max: usize) -> StoreFuture<'a, Option<LogRead>> {
        self.inner.read_after(key, after, max)
    }
    fn ack<'a>(&'a self, key: &'a str, upto: u64) -> StoreFuture<'a, ()> {
        if self.acks.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_ack {
            return blip();
        }
        self.inner.ack(key, upto)
    }
    fn state<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<LogState>> {
        self.inner.state(key)
    }
    fn cancel<'a>(&'a self, key: &'a str, reason: String) -> StoreFuture<'a, ()> {
        self.inner.cancel(key, reason)
    }
    fn discard<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.inner.discard(key)
    }
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.inner.remove(key)
    }
    fn changed<'a>(&'a self, key: &'a str, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        self.inner.changed(key, timeout)
    }
}

async fn server_over(store: Arc<dyn SessionStore>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(store.clone()))));
    addr
}

/// Bound for a read that must end promptly.
const PROMPT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn resume_caught_up_reader_fails_when_the_store_loses_the_log() {
    let store = MemoryStore::new();
    let link = Reconnecting::<ResumeProxy>::tcp(server(&store).await, quick());
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store.clone()), "lost", 16).await.unwrap();
    for n in 1..=3 {
        writer.write(&n).unwrap();
    }
    writer.flush().await.unwrap();
    // The reader started from 0 and is caught up: its pump waits for more.
    let mut feed = reader::<u32>(&link, "lost");
    for n in 1..=3 {
        assert_eq!(feed.read().await.unwrap(), Some(n));
    }
    let waiting = tokio::spawn(async move { tokio::time::timeout(PROMPT, feed.read()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.remove("lost").await.unwrap(); // e.g. Redis restarted empty, connection still up
    let err = waiting.await.unwrap().expect("the reader is told, not left waiting").unwrap_err();
    let gap = ResumeGap::from_error(&err).expect("a gap error");
    assert_eq!(gap, ResumeGap { key: "lost".into(), after: 3, first_kept: None });
    assert!(err.message().contains("no log"), "{err}");
    std::mem::forget(writer); // its drop would append an abort to the new log
}

#[tokio::test]
async fn resume_after_beyond_the_log_is_refused_and_not_acknowledged() {
    let store = MemoryStore::new();
    let link = Reconnecting::<ResumeProxy>::tcp(server(&store).await, quick());
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store.clone()), "ahead", 16).await.unwrap();
    for n in 1..=5 {
        writer.write(&n).unwrap();
    }
    writer.flush().await.unwrap();
    let mut feed = ResumableSequence::<u32>::resume_after(&link, "ahead", 1000, ResumeProxy::clone);
    let err = tokio::time::timeout(PROMPT, feed.read()).await.expect("refused at once").unwrap_err();
    assert!(err.message().contains("1000") && err.message().contains('5'), "names the ids: {err}");
    let state = store.state("ahead").await.unwrap().unwrap();
    assert_eq!(state.acked, 0, "nothing acknowledged");
    assert_eq!(store.held_entries(), 5, "every entry kept");
    writer.close(None).await.unwrap();
}

#[tokio::test]
async fn resume_abort_with_the_reader_far_behind_is_an_abort_not_a_gap() {
    let store = MemoryStore::new();
    let relay = Relay::start(server(&store).await).await;
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store.clone()), "far", 128).await.unwrap();
    for n in 1..=100 {
        writer.write(&n).unwrap();
    }
    writer.flush().await.unwrap();
    let options = ResumeOptions { capacity: 2, batch: 1, ack_every: 1, ..ResumeOptions::default() };
    let mut feed = reader::<u32>(&link, "far").with_options(options);
    assert_eq!(feed.read().await.unwrap(), Some(1));
    assert_eq!(feed.read().await.unwrap(), Some(2));
    relay.cut(); // the reader resumes after the abort, far behind it
    writer.abort().await.unwrap();
    let (err, items) = tokio::time::timeout(PROMPT, async {
        for items in 0..100 {
            if let Err(err) = feed.read().await {
                return (err, items);
            }
        }
        panic!("no end after 100 reads");
    })
    .await
    .unwrap();
    assert_eq!(err.kind(), ErrorKind::Aborted, "{err}");
    assert!(items < 98, "the abort dropped what the reader had not read: {items} more items");

    // A reader that comes back after 2 once the writer aborted (nobody read the abort yet).
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store.clone()), "far-late", 128).await.unwrap();
    for n in 1..=100 {
        writer.write(&n).unwrap();
    }
    writer.flush().await.unwrap();
    writer.abort().await.unwrap();
    let mut late = ResumableSequence::<u32>::resume_after(&link, "far-late", 2, ResumeProxy::clone);
    let err = tokio::time::timeout(PROMPT, late.read()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Aborted, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_survives_a_failed_acknowledgement() {
    let store = MemoryStore::new();
    let flaky = Flaky::new(&store, 0, 1); // the reader's first ack fails
    let link = Reconnecting::<ResumeProxy>::tcp(server_over(Arc::new(flaky)).await, quick());
    let producer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut writer = ResumableWriter::<u32>::open(Arc::new(store), "acks", 4).await.unwrap();
            for n in 1..=20 {
                writer.send(&n).await.unwrap();
            }
            writer.close(None).await.unwrap();
        }
    });
    let mut feed = reader::<u32>(&link, "acks");
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while let Some(n) = feed.read().await.unwrap() {
            got.push(n);
        }
    })
    .await
    .expect("the stream does not stall after a failed ack");
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    producer.await.unwrap();
}

#[tokio::test]
async fn resume_writer_keeps_its_items_across_a_failed_append() {
    let store = MemoryStore::new();
    let flaky: Arc<dyn SessionStore> = Arc::new(Flaky::new(&store, 1, 0));
    let link = Reconnecting::<ResumeProxy>::tcp(server(&store).await, quick());
    let mut writer = ResumableWriter::<u32>::open(flaky, "blip", 16).await.unwrap();
    for n in 1..=3 {
        writer.write(&n).unwrap();
    }
    assert!(writer.flush().await.is_err(), "the first append fails");
    writer.write(&4).unwrap();
    writer.flush().await.expect("the next flush stores everything");
    writer.close(None).await.unwrap();
    let mut feed = reader::<u32>(&link, "blip");
    let mut got = Vec::new();
    while let Some(n) = tokio::time::timeout(PROMPT, feed.read()).await.unwrap().unwrap() {
        got.push(n);
    }
    assert_eq!(got, [1, 2, 3, 4], "every item once");
}

#[tokio::test]
async fn resume_writer_dropped_after_a_failed_append_still_aborts_the_log() {
    let store = MemoryStore::new();
    let flaky: Arc<dyn SessionStore> = Arc::new(Flaky::new(&store, 2, 0));
    let mut writer = ResumableWriter::<u32>::open(flaky.clone(), "dropped-blip", 16).await.unwrap();
    writer.send(&1).await.unwrap();
    writer.write(&2).unwrap();
    writer.write(&3).unwrap();
    assert!(writer.flush().await.is_err(), "the second append fails");
    drop(writer);
    let mut ended = None;
    for _ in 0..200 {
        ended = store.state("dropped-blip").await.unwrap().filter(|state| state.ended);
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ended.is_some(), "the log ends with the abort");
    let read = store.read_after("dropped-blip", 1, 10).await.unwrap().unwrap();
    assert_eq!(read.entries.last().map(|(_, entry)| entry), Some(&Entry::Aborted));

    // A writer whose very first append failed: the abort still ends the log.
    let flaky: Arc<dyn SessionStore> = Arc::new(Flaky::new(&store, 1, 0));
    let mut writer = ResumableWriter::<u32>::open(flaky, "first-blip", 16).await.unwrap();
    writer.write(&1).unwrap();
    assert!(writer.flush().await.is_err());
    writer.abort().await.expect("the abort is stored");
    assert!(store.state("first-blip").await.unwrap().unwrap().ended);
}
