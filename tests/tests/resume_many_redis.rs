//! 200 clients whose session state lives in a real Redis lose their
//! connections at once and all resume: every one gets every item exactly
//! once, in order, and this process's memory stays bounded (the logs are in
//! Redis, so what grows here is connections and streams only).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::resume::{RedisStore, ResumeProxy, ResumeServer, SessionStore};
use rpc_tests::peak_alloc::{peak, reset_peak, PeakCounting};
use rpc_tests::resume_support::{RedisServer, Relay, Storm};

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

    let storm = Storm::new(CLIENTS, ITEMS, WINDOW);
    let clients: Vec<_> =
        (0..CLIENTS).map(|client| storm.spawn(store.clone(), relay.addr(), format!("client-{client}"))).collect();
    tokio::time::timeout(LIMIT, storm.halfway.wait()).await.expect("every client halfway in time");
    let before_cut = peak() - baseline;
    relay.cut();
    let reconnects =
        tokio::time::timeout(LIMIT, futures::future::try_join_all(clients)).await.expect("in time").unwrap();
    let storm_peak = peak() - baseline;
    println!(
        "{CLIENTS} resumable streams through Redis: {} KiB before the cut, {} KiB peak with the reconnect storm",
        before_cut / 1024,
        storm_peak / 1024
    );
    assert_eq!(reconnects.iter().filter(|&&r| r == 0).count(), 0, "every client lost its connection and resumed");
    assert_eq!(storm.resumed.load(Ordering::Relaxed), CLIENTS);
    // Connections, streams and reader state only: the logs are in Redis.
    assert!(storm_peak < CLIENTS * (256 << 10), "memory stays bounded: {storm_peak} B for {CLIENTS} streams");
}
