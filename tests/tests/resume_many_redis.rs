//! 200 clients whose session state lives in a real Redis lose their
//! connections at once and all resume: every one gets every item exactly
//! once, in order, and this process's memory stays bounded (the logs are in
//! Redis, so what grows here is connections and streams only).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::resume::{
    Backoff, Reconnecting, RedisStore, ResumableSequence, ResumableWriter, ResumeOptions, ResumeProxy, ResumeServer,
    SessionStore,
};
use rpc_tests::peak_alloc::{peak, reset_peak, PeakCounting};
use rpc_tests::resume_support::{RedisServer, Relay};
use tokio::sync::Barrier;

#[global_allocator]
static ALLOCATOR: PeakCounting = PeakCounting;

const CLIENTS: usize = 200;
const ITEMS: u64 = 60;
const WINDOW: u32 = 8;
/// Every wait in this test is bounded by this.
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_200_clients_through_redis_reconnecting_at_once() {
    let redis = RedisServer::start();
    let store: Arc<dyn SessionStore> = Arc::new(RedisStore::connect(&redis.url(), "many:").await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(listener.local_addr().unwrap()).await;
    let served = store.clone();
    tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(served.clone()))));
    let baseline = reset_peak();

    let halfway = Arc::new(Barrier::new(CLIENTS + 1));
    let resumed = Arc::new(AtomicUsize::new(0));
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(500),
        max_attempts: Some(100),
        jitter: true,
    };
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let key = format!("client-{client}");
        let (writer_store, writer_key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let mut writer = ResumableWriter::<u64>::open(writer_store, writer_key, WINDOW).await.unwrap();
            for n in 1..=ITEMS {
                writer.send(&n).await.unwrap();
            }
            writer.close(None).await.unwrap();
        });
        let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), backoff.clone());
        let (halfway, resumed) = (halfway.clone(), resumed.clone());
        clients.push(tokio::spawn(async move {
            let options = ResumeOptions { capacity: 4, batch: 2, ack_every: 4, ..ResumeOptions::default() };
            let mut feed = ResumableSequence::<u64>::new(&link, key, ResumeProxy::clone).with_options(options);
            let (mut expected, mut counted) = (1, false);
            while let Some(n) = feed.read().await.unwrap() {
                assert_eq!(n, expected, "exactly once, in order");
                if n == ITEMS / 2 {
                    halfway.wait().await;
                }
                if !counted && feed.reconnects() > 0 {
                    counted = true;
                    resumed.fetch_add(1, Ordering::Relaxed);
                }
                expected += 1;
            }
            assert_eq!(expected, ITEMS + 1, "every item arrived");
            feed.reconnects()
        }));
    }
    tokio::time::timeout(LIMIT, halfway.wait()).await.expect("every client halfway in time");
    let before_cut = peak() - baseline;
    relay.cut();
    let reconnects =
        tokio::time::timeout(LIMIT, futures::future::try_join_all(clients)).await.expect("in time").unwrap();
    let storm = peak() - baseline;
    println!(
        "{CLIENTS} resumable streams through Redis: {} KiB before the cut, {} KiB peak with the reconnect storm",
        before_cut / 1024,
        storm / 1024
    );
    assert_eq!(reconnects.iter().filter(|&&r| r == 0).count(), 0, "every client lost its connection and resumed");
    assert_eq!(resumed.load(Ordering::Relaxed), CLIENTS);
    // Connections, streams and reader state only: the logs are in Redis.
    assert!(storm < CLIENTS * (256 << 10), "memory stays bounded: {storm} B for {CLIENTS} streams");
}
