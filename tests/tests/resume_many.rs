//! 200 clients lose their connections at once and all resume: every one
//! gets every item exactly once, memory stays bounded, and the figure for
//! memory held per resumable stream is printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::resume::{MemoryStore, ResumableWriter, ResumeProxy, ResumeServer};
use rpc_tests::peak_alloc::{peak, reset_peak, PeakCounting};
use rpc_tests::resume_support::{Relay, Storm};

#[global_allocator]
static ALLOCATOR: PeakCounting = PeakCounting;

/// The allocator's counts are process-wide: the tests here take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CLIENTS: usize = 200;
const ITEMS: u32 = 100;
const WINDOW: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_200_clients_reconnecting_at_once() {
    let _turn = TURN.lock().await;
    let store = MemoryStore::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(listener.local_addr().unwrap()).await;
    let served = store.clone();
    tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(Arc::new(served.clone())))));
    let baseline = reset_peak();

    let storm = Storm::new(CLIENTS, u64::from(ITEMS), WINDOW);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| storm.spawn(Arc::new(store.clone()), relay.addr(), format!("client-{client}")))
        .collect();
    let limit = Duration::from_secs(120);
    tokio::time::timeout(limit, storm.halfway.wait()).await.expect("every client halfway in time");
    let live = peak() - baseline;
    println!(
        "{CLIENTS} live resumable streams (window {WINDOW}, with their connections): {} KiB peak, {} B per stream; store holds {} entries",
        live / 1024,
        live / CLIENTS,
        store.held_entries()
    );
    assert!(store.held_entries() <= CLIENTS * WINDOW as usize);
    let cut = Instant::now();
    relay.cut();
    let all_resumed = tokio::time::timeout(limit, async {
        while storm.resumed.load(std::sync::atomic::Ordering::Relaxed) < CLIENTS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    match all_resumed.await {
        Ok(()) => println!("all {CLIENTS} clients resumed {:?} after the cut", cut.elapsed()),
        Err(_) => println!("only {} clients resumed", storm.resumed.load(std::sync::atomic::Ordering::Relaxed)),
    }
    let reconnect_peak = peak() - baseline;
    println!("peak during the reconnect storm: {} KiB", reconnect_peak / 1024);
    assert!(reconnect_peak < CLIENTS * (512 << 10), "memory stays bounded: {reconnect_peak} B");
    let reconnects =
        tokio::time::timeout(limit, futures::future::try_join_all(clients)).await.expect("in time").unwrap();
    let unfelt = reconnects.iter().filter(|&&r| r == 0).count();
    assert_eq!(unfelt, 0, "every client lost its connection and resumed");
    assert!(store.held_entries() <= CLIENTS, "only end entries may wait for their last ack");
}

#[tokio::test]
async fn resume_store_memory_per_stream_is_bounded_by_the_window() {
    use rpc_core::resume::SessionStore;
    const LOGS: usize = 1000;
    let _turn = TURN.lock().await;
    let store = MemoryStore::new();
    let baseline = reset_peak();
    let shared: Arc<dyn SessionStore> = Arc::new(store.clone());
    for log in 0..LOGS {
        let mut writer = ResumableWriter::<u64>::open(shared.clone(), format!("log-{log}"), WINDOW).await.unwrap();
        for n in 0..u64::from(WINDOW) {
            writer.write(&n).unwrap();
        }
        writer.flush().await.unwrap();
        // The window is full: one more would wait for an acknowledgement.
        writer.write(&0).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(1), writer.flush()).await.is_err());
        std::mem::forget(writer); // keep the log open (a dropped writer aborts)
    }
    let held = rpc_tests::peak_alloc::reset_peak() - baseline;
    println!("the store holds {} B per resumable stream with a full window of {WINDOW} u64 items", held / LOGS);
    assert_eq!(store.held_entries(), LOGS * WINDOW as usize);
    assert!(held / LOGS < 4096, "{} B per stream", held / LOGS);
}

/// Cancels on keys with no log create nothing, and a long reason is cut.
#[tokio::test]
async fn resume_memory_store_creates_no_log_on_cancel() {
    use rpc_core::resume::{Entry, SessionStore, MAX_CANCEL_REASON};
    let _turn = TURN.lock().await;
    let store = MemoryStore::new();
    store.append("live", vec![(1, Entry::Item(vec![1]))]).await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        store.cancel(&format!("invented-{seed:x}"), "x".repeat(4096)).await.unwrap();
    }
    assert_eq!(store.len(), 1, "cancels on unknown keys create no log");
    store.cancel("live", "é".repeat(4096)).await.unwrap();
    let reason = store.state("live").await.unwrap().unwrap().cancelled.unwrap();
    assert!(reason.len() <= MAX_CANCEL_REASON && !reason.is_empty(), "reason of {} bytes", reason.len());
}

#[tokio::test]
async fn resume_memory_store_removes_a_log_once_its_end_is_acked() {
    use rpc_core::resume::{Entry, SessionStore};
    let _turn = TURN.lock().await;
    let store = MemoryStore::new();
    store.append("done", vec![(1, Entry::Item(vec![1])), (2, Entry::Closed(None))]).await.unwrap();
    store.ack("done", 1).await.unwrap();
    assert!(store.state("done").await.unwrap().is_some(), "the end is not acknowledged yet");
    store.ack("done", 2).await.unwrap();
    assert!(store.state("done").await.unwrap().is_none(), "a log whose end is acknowledged is gone");
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn resume_memory_store_expires_idle_logs() {
    use rpc_core::resume::{Entry, SessionStore};
    let _turn = TURN.lock().await;
    let store = MemoryStore::new().with_ttl(Duration::from_secs(60));
    store.append("live", vec![(1, Entry::Item(vec![1]))]).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    store.ack("live", 1).await.unwrap(); // activity renews the TTL
    store.append("idle", vec![(1, Entry::Item(vec![1]))]).await.unwrap();
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(store.len(), 2, "nothing has been idle for the TTL yet");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(store.state("live").await.unwrap().is_none(), "idle for 80 s with a 60 s TTL");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(store.is_empty(), "every idle log expired");
}
