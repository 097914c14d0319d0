//! Resumable sequences over the in-memory session store: drops through a
//! cutting relay, gaps, ends and cancels across reconnects, the window, the
//! link's bounded backoff. Every test name contains `resum`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::resume::{
    Backoff, LinkState, MemoryStore, Reconnecting, ResumableSequence, ResumableWriter, ResumeGap, ResumeOptions,
    ResumeProxy, ResumeServer, SessionStore,
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
