//! Issue 10, finding 6: "keep what holds". Hostile-peer behaviour that was
//! measured to hold, each kept as a test so it keeps holding:
//!
//! - a connection that never sends its Hello is closed after the handshake
//!   timeout (10 s by default), and other connections are served meanwhile;
//! - acknowledgements of `u64::MAX` (and other impossible ones) for a
//!   sequence close the connection with `Protocol`, the numbers in the reason
//!   (`bytes_hostile.rs` covers the byte-stream case);
//! - data messages counting `u32::MAX` items or bytes, and credit that would
//!   wrap past `u32::MAX`, close with `Protocol` and the numbers.
//!
//! 100k cancelled calls leaving memory flat is in `hold_memory.rs` (it needs
//! a counting allocator of its own). Every wait is bounded, generously: the
//! bounds catch hangs, not slowness.

use std::sync::Mutex;
use std::time::Duration;

use rpc_core::{eventual, Bytes, Config, Connection, ErrorKind, Limits, RpcError, Sequence, SequenceWriter};
use tokio::io::AsyncReadExt;
use tokio::time::{timeout, Instant};

use rpc_tests::{raw_peer::*, wire_mirror::*};

// ----- the server ------------------------------------------------------------

#[eventual]
pub trait Holds {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: keeps the uploaded sequence without reading it; answers how many it holds.
    fn hold(&self, items: Sequence<u64>) -> u32;
    /// Method 2: keeps the uploaded byte stream without reading it.
    fn hold_bytes(&self, data: Bytes) -> u32;
    /// Method 3: writes `0..n` into the caller's writer, flushing after each, then closes it.
    async fn fill(&self, n: u64, into: SequenceWriter<u64>) -> Result<(), RpcError>;
}

#[derive(Default)]
struct Server {
    held: Mutex<(Vec<Sequence<u64>>, Vec<Bytes>)>,
}

impl Holds for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn hold(&self, items: Sequence<u64>) -> u32 {
        let mut held = self.held.lock().unwrap();
        held.0.push(items);
        held.0.len() as u32
    }
    fn hold_bytes(&self, data: Bytes) -> u32 {
        let mut held = self.held.lock().unwrap();
        held.1.push(data);
        held.1.len() as u32
    }
    async fn fill(&self, n: u64, mut into: SequenceWriter<u64>) -> Result<(), RpcError> {
        for i in 0..n {
            into.write(i)?;
            into.flush().await?;
        }
        into.close(None).await
    }
}

const HOLDS: u64 = rpc_core::__private::interface_id("Holds");
const ADD: u16 = 0;
const HOLD: u16 = 1;
const HOLD_BYTES: u16 = 2;
const FILL: u16 = 3;
const SERVER: Bootstrap = Bootstrap { interface: HOLDS, add: ADD };
const SERVER_LIMITS: Limits = Limits {
    max_frame_size: 64 << 10,
    max_outstanding_calls: 8,
    max_exports: 16,
    max_depth: 16,
    max_decoded_size: 1 << 20,
    max_stream_window: 65_536,
    max_stream_window_bytes: 16 << 20,
};

/// Generous: only a hang trips it.
const HANG: Duration = Duration::from_secs(60);

fn start(config: Config) -> LoopbackServer {
    LoopbackServer::start(config, || HoldsProxy::new(Server::default()))
}

/// A normal framework client still gets served.
async fn assert_healthy(server: &LoopbackServer) {
    server.assert_serving();
    let check = async {
        let holds: HoldsProxy = rpc_core::connect(server.addr).await?;
        let mut sums = Vec::new();
        for i in 0..10 {
            sums.push(holds.add(i, 1).await?);
        }
        Ok::<_, RpcError>(sums)
    };
    let sums = timeout(HANG, check).await.expect("a normal client hung").expect("a normal client failed");
    assert_eq!(sums, (1..=10).collect::<Vec<i64>>());
}

async fn raw_client(server: &LoopbackServer) -> RawPeer {
    let peer = handshake(server.addr, SERVER_LIMITS, SERVER).await;
    assert!(
        peer.server_hello.nonce > CLIENT_NONCE,
        "the server's nonce decides the parity: our stream ids would be odd"
    );
    peer.skipping_windows_of(OUR_STREAM)
}

// ----- the handshake timeout ----------------------------------------------------

/// Reads whatever the server sends until it closes; `None` if it did not within [`HANG`].
async fn until_closed(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    timeout(HANG, read).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_close_after_the_handshake_timeout() {
    const HANDSHAKE: Duration = Duration::from_millis(1500);
    let server = start(Config { handshake_timeout: HANDSHAKE, ..server_config(SERVER_LIMITS) });
    let opened = Instant::now();
    // Twenty peers that say nothing, one that stops inside a length prefix.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(raw_connect(server.addr).await);
    }
    let mut trickle = raw_connect(server.addr).await;
    send_bytes_on(&mut trickle, &[0x10, 0x00]).await;
    silent.push(trickle);

    // Meanwhile a normal client connects and is served (the silent ones hold no one up).
    assert_healthy(&server).await;
    let mut raw = raw_client(&server).await;
    raw.assert_usable(0).await;

    // Each silent peer got the server's Hello, then the end: never before the timeout.
    let mut slowest = Duration::ZERO;
    for (i, stream) in silent.iter_mut().enumerate() {
        let got = until_closed(stream).await.unwrap_or_else(|| panic!("silent peer {i} still open after {HANG:?}"));
        let elapsed = opened.elapsed();
        assert!(elapsed >= HANDSHAKE, "silent peer {i} closed after {elapsed:?}, before the handshake timeout");
        slowest = slowest.max(elapsed);
        // What came is the server's Hello (and maybe an Abort after it), whole frames only.
        assert!(got.len() >= 4, "peer {i} got {} bytes", got.len());
        let len = u32::from_le_bytes(got[..4].try_into().unwrap()) as usize;
        let hello: WireHello = postcard::from_bytes(&got[4..4 + len]).expect("the server's Hello");
        assert_eq!(hello.magic, MAGIC);
    }
    println!("21 silent peers closed by {slowest:?} after opening (handshake timeout {HANDSHAKE:?})");
    // The connection that did its handshake is unaffected by the others' timeouts.
    raw.assert_usable(1).await;
    assert_healthy(&server).await;
}

#[tokio::test(start_paused = true)]
async fn the_default_handshake_timeout_is_ten_seconds_and_others_are_served_meanwhile() {
    assert_eq!(Config::default().handshake_timeout, Duration::from_secs(10));
    // A side whose peer never speaks: the duplex's other end is held, silent.
    let (ours, _silent) = tokio::io::duplex(1 << 16);
    let started = Instant::now();
    let waiting = tokio::spawn(Connection::builder().bootstrap(HoldsProxy::new(Server::default())).open(ours));

    // Meanwhile, on the same runtime, a normal pair connects and calls, at
    // a paused clock that only moves when everything is idle.
    let (a, b) = tokio::io::duplex(1 << 16);
    let (_server, _client, holds) =
        rpc_tests::connect_pair(a, b, HoldsProxy::new(Server::default()), Config::default()).await.unwrap();
    for i in 0..100 {
        assert_eq!(holds.add(i, i).await.unwrap(), 2 * i);
    }
    assert!(started.elapsed() < Duration::from_secs(1), "the normal pair waited on the clock: {:?}", started.elapsed());
    assert!(!waiting.is_finished(), "the silent side's handshake ended early");

    let err = match waiting.await.unwrap() {
        Ok(_) => panic!("a handshake with a silent peer succeeded"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.message().contains("handshake"), "{err}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_millis(10_100),
        "closed after {elapsed:?} of tokio time"
    );
}

// ----- acknowledgements the producer never earned ----------------------------------

/// Calls `fill(n)` into our stream with `window`; waits for `items` items.
async fn open_fill(peer: &mut RawPeer, n: u64, window: WireWindow, items: u32) {
    let caps = vec![CapDesc::SequenceWriter { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOLDS, method: FILL, caps };
    peer.send(&msg, &encode(&(n, 0u32))).await;
    let mut seen = 0;
    while seen < items {
        match peer.next_message().await {
            Some((Msg::StreamData { stream: OUR_STREAM, count, .. }, _)) => seen += count,
            other => panic!("expected stream data, got {other:?}"),
        }
    }
    assert_eq!(seen, items, "the server sent past our window");
}

#[tokio::test]
async fn a_sequence_ack_of_u64_max_closes_with_the_numbers() {
    let server = start(server_config(SERVER_LIMITS));
    let mut peer = raw_client(&server).await;
    let window = WireWindow { capacity: 2, batch: 1 };
    open_fill(&mut peer, 10, window, 2).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: u64::MAX, window }, &[]).await;
    let reason = peer.expect_close_with("acknowledged").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
    let numbers = format!("acknowledged {} items, but 2 were sent and 0 acknowledged before", u64::MAX);
    assert!(reason.message.contains(&numbers), "{reason:?}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_sequence_ack_past_what_was_sent_or_going_backwards_closes_with_the_numbers() {
    let server = start(server_config(SERVER_LIMITS));
    let window = WireWindow { capacity: 2, batch: 1 };

    // One past what was sent (sent - read would wrap below zero).
    let mut peer = raw_client(&server).await;
    open_fill(&mut peer, 10, window, 2).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 3, window }, &[]).await;
    let reason = peer.expect_close_with("acknowledged 3 items, but 2 were sent and 0 acknowledged before").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");

    // Backwards: 2 acknowledged, 4 sent, then 1.
    let mut peer = raw_client(&server).await;
    open_fill(&mut peer, 10, window, 2).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 2, window }, &[]).await;
    let mut seen = 2;
    while seen < 4 {
        match peer.next_message().await {
            Some((Msg::StreamData { stream: OUR_STREAM, count, .. }, _)) => seen += count,
            other => panic!("expected stream data, got {other:?}"),
        }
    }
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 1, window }, &[]).await;
    let reason = peer.expect_close_with("acknowledged 1 items, but 4 were sent and 2 acknowledged before").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
    assert_healthy(&server).await;
}

// ----- counts of u32::MAX and credit past it -----------------------------------------

/// Calls `hold` (or `hold_bytes`) with our stream as the upload, declaring `window`.
async fn open_hold(peer: &mut RawPeer, bytes: bool, window: WireWindow) {
    let (caps, method) = if bytes {
        (vec![CapDesc::BytesReader { stream: OUR_STREAM, window }], HOLD_BYTES)
    } else {
        (vec![CapDesc::SequenceReader { stream: OUR_STREAM, window }], HOLD)
    };
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOLDS, method, caps };
    peer.send(&msg, &encode(&(0u32,))).await;
    assert_eq!(peer.expect_value::<u32>(0).await, 1);
}

/// A data message of `count` items (or bytes) claiming no item lengths: a
/// window check must refuse it before the lengths are looked at.
fn data(count: u32) -> Msg {
    Msg::StreamData { stream: OUR_STREAM, count, item_caps: vec![], caps: vec![], item_lens: vec![] }
}

#[tokio::test]
async fn data_counting_u32_max_items_or_bytes_closes_with_the_numbers() {
    let server = start(server_config(SERVER_LIMITS));
    for bytes in [false, true] {
        let mut peer = raw_client(&server).await;
        open_hold(&mut peer, bytes, WireWindow { capacity: 16, batch: 16 }).await;
        // A frame of a few bytes claiming 4 Gi items (or bytes).
        peer.send(&data(u32::MAX), &encode(&7u64)).await;
        let reason = peer.expect_close_with("past the consumer's window").await;
        assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
        let numbers = format!("({} items, 16 allowed)", u32::MAX);
        assert!(reason.message.contains(&numbers), "bytes: {bytes}: {reason:?}");
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn credit_past_u32_max_does_not_wrap() {
    // We declare the largest window there is; counts add up past u32::MAX.
    // Whether the server honours that window or caps it by its own limits,
    // the connection must close with the numbers, never wrap and accept.
    let server = start(server_config(SERVER_LIMITS));
    let huge = WireWindow { capacity: u32::MAX, batch: u32::MAX };

    let mut peer = raw_client(&server).await;
    open_hold(&mut peer, false, huge).await;
    peer.send(&data(u32::MAX), &encode(&7u64)).await;
    let two = Msg::StreamData { stream: OUR_STREAM, count: 2, item_caps: vec![], caps: vec![], item_lens: vec![1, 1] };
    peer.send(&two, &[encode(&8u64), encode(&9u64)].concat()).await;
    // Refused as past the window (honoured or capped), or as 2^32 - 1 items
    // whose lengths are missing: never wrapped and accepted.
    let reason = peer.expect_close_with("").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
    let wrapped = u64::from(u32::MAX) + 2;
    assert!(
        reason.message.contains(&format!("({wrapped} items, {} allowed)", u32::MAX))
            || reason.message.contains(&format!("({} items, ", u32::MAX))
            || reason.message.contains(&format!("for {} items", u32::MAX)),
        "{reason:?}"
    );

    // Bytes: a window of u32::MAX bytes, a message announcing all of it.
    let mut peer = raw_client(&server).await;
    open_hold(&mut peer, true, huge).await;
    peer.send(&data(u32::MAX), &[1u8; 8]).await;
    let reason = peer.expect_close_with("").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");
    assert!(
        reason.message.contains(&format!("announces {} bytes but carries 8", u32::MAX))
            || reason.message.contains(&format!("({} items, ", u32::MAX)),
        "{reason:?}"
    );
    assert_healthy(&server).await;
}
