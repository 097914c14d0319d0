//! Windows are chosen by the side that buffers (issue 10, finding 4): a
//! window a peer declares is capped by our own limits, in items and in bytes;
//! sequence items are bounded in bytes as well as in count; and all the
//! streams of a connection share a budget. Before, a declared `u32::MAX`
//! window made a server queue without bound, and a peer sending 1 MiB items
//! into a 1,024-item window made it buffer a gigabyte.
//!
//! Each test drives the hostile input with hand-made frames and asserts the
//! bound; every wait is bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Bytes, Config, Limits, RpcError, Sequence, SequenceWriter};
use tokio::time::timeout;

use rpc_tests::{raw_peer::*, wire_mirror::*};

#[eventual]
pub trait Windows {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: keeps an uploaded sequence of blobs without reading it.
    fn hold(&self, items: Sequence<Vec<u8>>) -> u32;
    /// Method 2: keeps an uploaded byte stream without reading it.
    fn hold_bytes(&self, data: Bytes) -> u32;
    /// Method 3: writes `n` blobs of `size` bytes into the caller's writer,
    /// counting each write accepted by a flush.
    async fn fill(&self, n: u64, size: u32, into: SequenceWriter<Vec<u8>>) -> Result<(), RpcError>;
}

/// Uploads kept unread: sequences and byte streams.
type Held = (Vec<Sequence<Vec<u8>>>, Vec<Bytes>);

struct Server {
    held: Mutex<Held>,
    written: Arc<AtomicU64>,
}

impl Windows for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn hold(&self, items: Sequence<Vec<u8>>) -> u32 {
        let mut held = self.held.lock().unwrap();
        held.0.push(items);
        held.0.len() as u32
    }
    fn hold_bytes(&self, data: Bytes) -> u32 {
        let mut held = self.held.lock().unwrap();
        held.1.push(data);
        held.1.len() as u32
    }
    async fn fill(&self, n: u64, size: u32, mut into: SequenceWriter<Vec<u8>>) -> Result<(), RpcError> {
        for _ in 0..n {
            into.write(vec![7u8; size as usize])?;
            into.flush().await?;
            self.written.fetch_add(1, Ordering::Relaxed);
        }
        into.close(None).await
    }
}

const WINDOWS: u64 = rpc_core::__private::interface_id("Windows");
const ADD: u16 = 0;
const HOLD: u16 = 1;
const HOLD_BYTES: u16 = 2;
const FILL: u16 = 3;
const SERVER: Bootstrap = Bootstrap { interface: WINDOWS, add: ADD };

/// Our caps: 100 items, 1 MiB per stream.
const SERVER_LIMITS: Limits = Limits {
    max_frame_size: 1 << 20,
    max_outstanding_calls: 64,
    max_exports: 64,
    max_depth: 16,
    max_decoded_size: 4 << 20,
    max_stream_window: 100,
    max_stream_window_bytes: 1 << 20,
};

const HANG: Duration = Duration::from_secs(60);

fn start(config: Config, written: Arc<AtomicU64>) -> LoopbackServer {
    LoopbackServer::start(config, move || {
        WindowsProxy::new(Server { held: Mutex::new((Vec::new(), Vec::new())), written: written.clone() })
    })
}

async fn raw_client(server: &LoopbackServer) -> RawPeer {
    let peer = handshake(server.addr, SERVER_LIMITS, SERVER).await;
    assert!(peer.server_hello.nonce > CLIENT_NONCE, "the server's nonce decides the parity");
    peer.skipping_windows_of(OUR_STREAM)
}

async fn assert_healthy(server: &LoopbackServer) {
    server.assert_serving();
    let check = async {
        let windows: WindowsProxy = rpc_core::connect(server.addr).await?;
        windows.add(40, 2).await
    };
    assert_eq!(timeout(HANG, check).await.expect("a normal client hung").expect("a normal client failed"), 42);
}

/// A blob of `size` bytes as a sequence item, with its encoded length.
fn blob(size: usize) -> (Vec<u8>, u32) {
    let encoded = encode(&vec![1u8; size]);
    let len = encoded.len() as u32;
    (encoded, len)
}

async fn upload(peer: &mut RawPeer, method: u16, descriptor: CapDesc) {
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: WINDOWS, method, caps: vec![descriptor] };
    peer.send(&msg, &encode(&(0u32,))).await;
    assert_eq!(peer.expect_value::<u32>(0).await, 1);
}

/// Asks the server to fill `n` items of `size` bytes into our stream, which
/// we consume with a declared window of `u32::MAX` items and never acknowledge.
async fn fill_into_huge_window(peer: &mut RawPeer, n: u64, size: u32) {
    let window = WireWindow { capacity: u32::MAX, batch: u32::MAX };
    let caps = vec![CapDesc::SequenceWriter { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: WINDOWS, method: FILL, caps };
    peer.send(&msg, &encode(&(n, size, 0u32))).await;
}

/// Stream bytes the server sends until it falls silent (bounded).
async fn stream_bytes_until_silence(peer: &mut RawPeer) -> u64 {
    let mut bytes = 0u64;
    for _ in 0..MAX_FRAMES * 64 {
        match timeout(Duration::from_millis(500), peer.next_message()).await {
            Ok(Some((Msg::StreamData { .. } | Msg::StreamPart { .. }, payload))) => bytes += payload.len() as u64,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the server closed"),
            Err(_) => break,
        }
    }
    bytes
}

#[tokio::test]
async fn a_declared_u32_max_window_is_capped_for_what_the_server_produces() {
    let written = Arc::new(AtomicU64::new(0));
    let server = start(server_config(SERVER_LIMITS), written.clone());
    let mut peer = handshake(server.addr, SERVER_LIMITS, SERVER).await;
    fill_into_huge_window(&mut peer, 1_000_000, 16).await;
    let mut received = 0u64;
    for _ in 0..MAX_FRAMES * 64 {
        match timeout(Duration::from_millis(500), peer.next_message()).await {
            Ok(Some((Msg::StreamData { count, .. }, _))) => received += u64::from(count),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the server closed"),
            // Silence: the server stopped at its own cap.
            Err(_) => break,
        }
    }
    let cap = u64::from(SERVER_LIMITS.max_stream_window);
    assert_eq!(received, cap, "the server sends exactly its own cap of items, not the declared u32::MAX");
    // The handler's flush waits at the cap too: it queues no more than the window.
    let accepted = written.load(Ordering::Relaxed);
    assert!(accepted <= cap, "{accepted} writes accepted against a window capped at {cap}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_declared_u32_max_window_is_capped_in_bytes_for_what_the_server_produces() {
    let written = Arc::new(AtomicU64::new(0));
    let server = start(server_config(SERVER_LIMITS), written.clone());
    let mut peer = handshake(server.addr, SERVER_LIMITS, SERVER).await;
    // 64 KiB items: 100 of them would be 6.4 MiB; the byte windows stop it far sooner.
    fill_into_huge_window(&mut peer, 1_000, 64 << 10).await;
    let bytes = stream_bytes_until_silence(&mut peer).await;
    // Our limit of 1 MiB bounds what the server keeps queued plus unacknowledged,
    // so it stops after about 1 MiB (one item may straddle the line).
    let item = 64u64 << 10;
    let local = u64::from(SERVER_LIMITS.max_stream_window_bytes);
    assert!(bytes <= local + item + 1024, "{bytes} bytes sent unacknowledged, our bound is {local}");
    let accepted = written.load(Ordering::Relaxed);
    assert!(accepted * item <= local + item, "the server accepted {accepted} writes of 64 KiB");
    assert_healthy(&server).await;
}

/// Caps where the byte bound, not the item window, binds small items.
const SMALL_ITEM_LIMITS: Limits = Limits { max_stream_window: 65_536, ..SERVER_LIMITS };

/// Small items are staged without the connection's lock; the producer's
/// flush still stops at the byte bound (1 MiB), counting what it staged.
#[tokio::test]
async fn small_staged_items_stop_at_the_byte_bound_too() {
    let written = Arc::new(AtomicU64::new(0));
    let server = start(server_config(SMALL_ITEM_LIMITS), written.clone());
    let mut peer = handshake(server.addr, SMALL_ITEM_LIMITS, SERVER).await;
    // 2 KiB items: 65,536 of them would be 128 MiB.
    let item = 2u64 << 10;
    fill_into_huge_window(&mut peer, 65_536, item as u32).await;
    let bytes = stream_bytes_until_silence(&mut peer).await;
    let local = u64::from(SMALL_ITEM_LIMITS.max_stream_window_bytes);
    assert!(bytes <= local + item + 1024, "{bytes} bytes sent unacknowledged, our bound is {local}");
    let accepted = written.load(Ordering::Relaxed);
    assert!(accepted * item <= local + item, "the server accepted {accepted} writes of 2 KiB");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn large_items_past_the_byte_window_are_a_protocol_violation() {
    let server = start(server_config(SERVER_LIMITS), Arc::default());
    let mut peer = raw_client(&server).await;
    // A window of 1,024 items, as the attacker declared; our cap is 100 items, 1 MiB.
    let window = WireWindow { capacity: 1024, batch: 1024 };
    upload(&mut peer, HOLD, CapDesc::SequenceReader { stream: OUR_STREAM, window }).await;
    let (item, len) = blob(300 << 10);
    // Three items of 300 KiB fit in 1 MiB; the fourth is past it.
    for _ in 0..4 {
        let msg =
            Msg::StreamData { stream: OUR_STREAM, count: 1, item_caps: vec![], caps: vec![], item_lens: vec![len] };
        peer.send(&msg, &item).await;
    }
    let reason = peer.expect_close_with("byte window").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
    assert!(reason.message.contains(&(1u32 << 20).to_string()), "the reason names the limit: {reason:?}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn one_item_larger_than_the_byte_window_still_travels_alone() {
    let server = start(server_config(SERVER_LIMITS), Arc::default());
    let mut peer = raw_client(&server).await;
    let window = WireWindow { capacity: 10, batch: 10 };
    upload(&mut peer, HOLD, CapDesc::SequenceReader { stream: OUR_STREAM, window }).await;
    // Over the 1 MiB byte window, under the frame limit: accepted when nothing else is unread.
    let (item, len) = blob((1 << 20) - 32);
    let (small, small_len) = blob(64);
    let whole =
        Msg::StreamData { stream: OUR_STREAM, count: 1, item_caps: vec![], caps: vec![], item_lens: vec![small_len] };
    peer.send(&whole, &small).await;
    // With one small item unread, the big one is past the window.
    let big = Msg::StreamData { stream: OUR_STREAM, count: 1, item_caps: vec![], caps: vec![], item_lens: vec![len] };
    peer.send(&big, &item).await;
    peer.expect_close_with("byte window").await;

    let mut peer = raw_client(&server).await;
    upload(&mut peer, HOLD, CapDesc::SequenceReader { stream: OUR_STREAM, window }).await;
    peer.send(&big, &item).await;
    peer.assert_usable(1).await;
}

#[tokio::test]
async fn a_declared_one_gib_byte_window_is_capped() {
    let server = start(server_config(SERVER_LIMITS), Arc::default());
    let mut peer = raw_client(&server).await;
    let window = WireWindow { capacity: 1 << 30, batch: 64 << 10 };
    upload(&mut peer, HOLD_BYTES, CapDesc::BytesReader { stream: OUR_STREAM, window }).await;
    // 1 MiB is our cap; send 1 MiB + 64 KiB without waiting.
    let chunk = vec![9u8; 64 << 10];
    let data =
        Msg::StreamData { stream: OUR_STREAM, count: 64 << 10, item_caps: vec![], caps: vec![], item_lens: vec![] };
    for _ in 0..17 {
        peer.send(&data, &chunk).await;
    }
    let reason = peer.expect_close_with("past the consumer's window").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
    assert!(reason.message.contains(&(1u64 << 20).to_string()), "{reason:?}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn all_streams_of_a_connection_share_a_budget() {
    let config = Config { stream_buffer_budget: 2 << 20, ..server_config(SERVER_LIMITS) };
    let server = start(config, Arc::default());
    let mut peer = raw_client(&server).await;
    let window = WireWindow { capacity: 100, batch: 100 };
    let (item, len) = blob(250 << 10);
    // Each stream stays within its own 1 MiB; together they pass the 2 MiB
    // budget at the ninth item (8 x 250 KiB fit, 9 do not). Nothing is sent
    // after it: data the server never reads would turn its close into a
    // reset, and the write or the read of its reason could fail.
    for (s, items) in [(0u32, 4), (1, 4), (2, 1)] {
        let stream = OUR_STREAM + 2 * s;
        let msg = Msg::Call {
            question: s,
            target: BOOTSTRAP,
            interface: WINDOWS,
            method: HOLD,
            caps: vec![CapDesc::SequenceReader { stream, window }],
        };
        peer.send(&msg, &encode(&(0u32,))).await;
        for _ in 0..items {
            let data = Msg::StreamData { stream, count: 1, item_caps: vec![], caps: vec![], item_lens: vec![len] };
            peer.send(&data, &item).await;
        }
    }
    let reason = peer.expect_close_with("stream_buffer_budget").await;
    assert_eq!(reason.kind, Kind::LimitExceeded, "{reason:?}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_framework_peer_with_a_huge_capacity_gets_the_producers_cap_and_all_items() {
    // Both sides are ours: the consumer asks for u32::MAX, the producer caps it, nothing is lost.
    let written = Arc::new(AtomicU64::new(0));
    let server = start(server_config(SERVER_LIMITS), written.clone());
    let windows: WindowsProxy = rpc_core::connect(server.addr).await.expect("connect");
    let (writer, mut items) = Sequence::<Vec<u8>>::channel();
    items.set_capacity(u32::MAX);
    let fill = windows.fill(5_000, 100, writer);
    let mut n = 0;
    while let Some(item) = timeout(HANG, items.read()).await.expect("hung").expect("read") {
        assert_eq!(item.len(), 100);
        n += 1;
    }
    assert_eq!(n, 5_000);
    timeout(HANG, fill).await.expect("hung").expect("fill");
}
