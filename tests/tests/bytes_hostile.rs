//! A hostile peer against byte streams: hand-made `StreamData` and
//! `StreamWindow` frames on a raw TCP socket, and what the server must do
//! about them.
//!
//! The mirror types, the raw client and the loopback server are shared with
//! `hostile_framing.rs (server in rpc_tests::hostile_server)` (`rpc_tests::wire_mirror`, `rpc_tests::raw_peer`). The
//! raw client says nonce `0x5eed` in its Hello, so the server (whose random
//! nonce is all but surely larger) numbers its streams odd and we use even ids. Each test ends by checking that a
//! normal framework client can still use the same server. Every read is
//! bounded by a timeout and every loop by a count.

use rpc_core::{eventual, Bytes, BytesWriter, Limits, RpcError};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use rpc_tests::{raw_peer::*, wire_mirror::*};

// ----- the interface the server offers -------------------------------------

#[eventual]
pub trait Bytewise {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: reads an uploaded byte stream to its end: (length, sum of the bytes).
    async fn upload(&self, data: Bytes) -> Result<(u64, u64), RpcError>;
    /// Method 2: writes `n` bytes (`i as u8`) into the caller's writer, 1000 at a time, then closes it.
    async fn fill(&self, n: u64, into: BytesWriter) -> Result<(), RpcError>;
}

struct Server;

impl Bytewise for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn upload(&self, mut data: Bytes) -> Result<(u64, u64), RpcError> {
        let (mut len, mut sum) = (0u64, 0u64);
        while let Some(chunk) = data.read_chunk().await? {
            len += chunk.len() as u64;
            sum += chunk.iter().map(|b| u64::from(*b)).sum::<u64>();
        }
        Ok((len, sum))
    }

    async fn fill(&self, n: u64, mut into: BytesWriter) -> Result<(), RpcError> {
        let mut at = 0;
        while at < n {
            let end = (at + 1000).min(n);
            into.write((at..end).map(|i| i as u8).collect::<Vec<u8>>())?;
            into.flush().await?;
            at = end;
        }
        into.close(None).await
    }
}

// ----- ids of the interface ----------------------------------------------------

const BYTEWISE: u64 = rpc_core::__private::interface_id("Bytewise");
const ADD: u16 = 0;
const UPLOAD: u16 = 1;
const FILL: u16 = 2;
/// The largest byte-stream data message the framework sends.
const MAX_BYTES_PER_MESSAGE: u32 = 64 << 10;

/// A byte-stream data message header for `count` bytes.
fn data(stream: u32, count: u32) -> Msg {
    Msg::StreamData { stream, count, item_caps: Vec::new(), caps: Vec::new(), item_lens: Vec::new() }
}

// ----- the server ------------------------------------------------------------

const SERVER_LIMITS: Limits = Limits {
    max_frame_size: 64 << 10,
    max_outstanding_calls: 8,
    max_exports: 16,
    max_depth: 16,
    max_decoded_size: 256 << 10,
    max_stream_window: 65_536,
    max_stream_window_bytes: 16 << 20,
};

/// VmPeak is per process and the tests of a file run in parallel: every test
/// holds this lock (through its [`TestServer`]), so a peak is charged to the
/// test that caused it, not to a neighbour starting its threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The server for the tests, holding [`SERIAL`] while it lives.
struct TestServer {
    server: LoopbackServer,
    _serial: tokio::sync::MutexGuard<'static, ()>,
    addr: std::net::SocketAddr,
}

impl TestServer {
    async fn start() -> TestServer {
        let serial = SERIAL.lock().await;
        let server = LoopbackServer::start(server_config(SERVER_LIMITS), || BytewiseProxy::new(Server));
        TestServer { addr: server.addr, server, _serial: serial }
    }

    /// The server still accepts and serves a normal framework client, byte streams included.
    async fn assert_healthy(&self) {
        self.server.assert_serving();
        let check = async {
            let server: BytewiseProxy = rpc_core::connect(self.addr).await?;
            let sum = server.add(40, 2).await?;
            let (mut writer, upload) = Bytes::channel();
            let answer = server.upload(upload);
            writer.write(vec![1u8; 50_000])?;
            writer.close(None).await?;
            Ok::<_, RpcError>((sum, answer.await?))
        };
        let (sum, uploaded) =
            timeout(READ_TIMEOUT, check).await.expect("a normal client timed out").expect("a normal client failed");
        assert_eq!(sum, 42);
        assert_eq!(uploaded, (50_000, 50_000));
    }
}

// ----- the raw peer ------------------------------------------------------------

/// The bootstrap as `RawPeer::assert_usable` calls it.
const SERVER: Bootstrap = Bootstrap { interface: BYTEWISE, add: ADD };

/// Connects and does the handshake by hand; skips the server's window updates
/// for our uploads while waiting for an answer.
async fn raw_client(addr: std::net::SocketAddr) -> RawPeer {
    let peer = handshake(addr, SERVER_LIMITS, SERVER).await;
    assert!(peer.server_hello.nonce > 0x5eed, "the server's nonce decides the parity: our stream ids would be odd");
    peer.skipping_windows_of(OUR_STREAM)
}

/// The raw peer's byte-stream calls on a `Bytewise` server.
trait BytesPeer {
    /// Calls `upload` with our stream `stream` as its byte stream, with `window`.
    async fn open_upload_on(&mut self, question: u32, stream: u32, window: WireWindow);
    /// Calls `upload` with our stream `OUR_STREAM` as its byte stream, with `window`.
    async fn open_upload(&mut self, question: u32, window: WireWindow);
    /// Calls `fill(n)` with our stream `OUR_STREAM` as the writer it fills (we consume, with `window`).
    async fn open_fill(&mut self, question: u32, n: u64, window: WireWindow);
    /// Reads data of `OUR_STREAM` until `want` bytes in all arrived; checks every
    /// message carries what it announces and no more than the window allowed.
    async fn expect_data(&mut self, received: &mut u64, want: u64, allowed: u64);
}

impl BytesPeer for RawPeer {
    async fn open_upload_on(&mut self, question: u32, stream: u32, window: WireWindow) {
        let caps = vec![CapDesc::BytesReader { stream, window }];
        let msg = Msg::Call { question, target: BOOTSTRAP, interface: BYTEWISE, method: UPLOAD, caps };
        // The argument tuple holds one capability: index 0 of the table.
        self.send(&msg, &encode(&(0u32,))).await;
    }

    async fn open_upload(&mut self, question: u32, window: WireWindow) {
        self.open_upload_on(question, OUR_STREAM, window).await;
    }

    async fn open_fill(&mut self, question: u32, n: u64, window: WireWindow) {
        let caps = vec![CapDesc::BytesWriter { stream: OUR_STREAM, window }];
        let msg = Msg::Call { question, target: BOOTSTRAP, interface: BYTEWISE, method: FILL, caps };
        self.send(&msg, &encode(&(n, 0u32))).await;
    }

    async fn expect_data(&mut self, received: &mut u64, want: u64, allowed: u64) {
        for _ in 0..MAX_FRAMES * 16 {
            if *received >= want {
                return;
            }
            match self.next_message().await {
                Some((Msg::StreamData { stream: OUR_STREAM, count, item_caps, caps, .. }, payload)) => {
                    assert!(item_caps.is_empty() && caps.is_empty(), "byte data with capabilities");
                    assert_eq!(payload.len(), count as usize, "a data message carries what it announces");
                    assert!(count <= MAX_BYTES_PER_MESSAGE, "a data message of {count} bytes");
                    for (i, b) in payload.iter().enumerate() {
                        assert_eq!(*b, (*received + i as u64) as u8, "byte {} of the fill", *received + i as u64);
                    }
                    *received += u64::from(count);
                    assert!(*received <= allowed, "the server sent {} bytes, {allowed} allowed", *received);
                }
                other => panic!("expected data for stream {OUR_STREAM}, got {other:?}"),
            }
        }
        panic!("only {} of {want} bytes arrived", *received);
    }
}

// ----- a well-behaved raw upload and fill: the harness speaks the protocol -------

#[tokio::test]
async fn a_well_behaved_raw_byte_upload_is_counted() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 16, batch: 16 }).await;
    // Exactly the window: allowed.
    peer.send(&data(OUR_STREAM, 16), &[3u8; 16]).await;
    // The server reads them and grants more.
    let mut acked = 0;
    for _ in 0..MAX_FRAMES {
        match peer.next_message().await {
            Some((Msg::StreamWindow { stream: OUR_STREAM, read, window }, _)) => {
                assert_eq!(window, WireWindow { capacity: 16, batch: 16 });
                acked = read;
                if acked == 16 {
                    break;
                }
            }
            other => panic!("expected a window update, got {other:?}"),
        }
    }
    assert_eq!(acked, 16, "the server acknowledged what it read");
    peer.send(&data(OUR_STREAM, 16), &[1u8; 16]).await;
    peer.send(&Msg::StreamEnd { stream: OUR_STREAM, error: None }, &[]).await;
    assert_eq!(peer.expect_value::<(u64, u64)>(0).await, (32, 16 * 3 + 16));
    peer.assert_usable(1).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_well_behaved_raw_fill_is_delivered_within_the_window() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let window = WireWindow { capacity: 100, batch: 30 };
    peer.open_fill(0, 250, window).await;
    let mut received = 0;
    peer.expect_data(&mut received, 100, 100).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 100, window }, &[]).await;
    peer.expect_data(&mut received, 200, 200).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 200, window }, &[]).await;
    peer.expect_data(&mut received, 250, 250).await;
    let mut ended = false;
    for _ in 0..MAX_FRAMES {
        match peer.next_message().await {
            Some((Msg::StreamEnd { stream: OUR_STREAM, error: None }, _)) => ended = true,
            Some((Msg::Return { question: 0, result: Ok(caps) }, _)) => {
                assert!(caps.is_empty());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ended, "the stream ended before the answer");
    peer.assert_usable(1).await;
    server.assert_healthy().await;
}

// ----- 8. data past the window ------------------------------------------------------

#[tokio::test]
async fn byte_data_past_the_window_is_a_protocol_violation() {
    let server = TestServer::start().await;
    // Warm up first: the server's threads make their allocator arenas now, not during the measurement.
    server.assert_healthy().await;
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 16, batch: 16 }).await;
    let before = vm_peak_kib();
    // Nothing read or acknowledged yet: 17 bytes in one message is past a window of 16.
    peer.send(&data(OUR_STREAM, 17), &[0xAB; 17]).await;
    let reason = peer.expect_close_with("past the consumer's window").await;
    assert_eq!(reason.kind, Kind::Protocol);
    assert!(reason.message.contains("17"), "{reason:?}");
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        assert!(after < before + 64 * 1024, "memory grew from {before} KiB to {after} KiB");
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn byte_data_past_the_window_over_two_messages_is_a_protocol_violation() {
    // 10 + 7 bytes in one socket write, without waiting for a window update:
    // the second message crosses the window of 16 unless the server read and
    // acknowledged the first in between.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 16, batch: 16 }).await;
    let mut both = framed(&[encode(&data(OUR_STREAM, 10)), vec![1u8; 10]].concat());
    both.extend(framed(&[encode(&data(OUR_STREAM, 7)), vec![2u8; 7]].concat()));
    timeout(READ_TIMEOUT, peer.stream.write_all(&both)).await.expect("write timed out").expect("write");
    // Either the server read and acknowledged the 10 bytes before it handled
    // the 7 (a race it is allowed to win: then 17 <= 10 + 16 is legal), or it
    // closes. Both are fine; a crash or a hang is not.
    match peer.next_message().await {
        Some((Msg::Abort(err), _)) => {
            assert_eq!(err.kind, Kind::Protocol, "{err:?}");
            assert!(err.message.contains("past the consumer's window"), "{err:?}");
            peer.expect_eof().await;
        }
        Some((Msg::StreamWindow { .. }, _)) => {
            peer.send(&Msg::StreamEnd { stream: OUR_STREAM, error: None }, &[]).await;
            assert_eq!(peer.expect_value::<(u64, u64)>(0).await, (17, 24));
        }
        other => panic!("unexpected {other:?}"),
    }
    server.assert_healthy().await;
}

// ----- 9. data that does not carry what it announces --------------------------------

#[tokio::test]
async fn byte_data_announcing_another_count_than_it_carries_closes() {
    let server = TestServer::start().await;
    // Fewer bytes than announced.
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 1000, batch: 1000 }).await;
    peer.send(&data(OUR_STREAM, 5), &[1, 2, 3]).await;
    let reason = peer.expect_close_with("announces").await;
    assert_eq!(reason.kind, Kind::Protocol);
    assert!(reason.message.contains("announces 5 bytes but carries 3"), "{reason:?}");

    // More bytes than announced.
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 1000, batch: 1000 }).await;
    peer.send(&data(OUR_STREAM, 3), &[1, 2, 3, 4, 5]).await;
    let reason = peer.expect_close_with("announces").await;
    assert!(reason.message.contains("announces 3 bytes but carries 5"), "{reason:?}");

    // Zero announced, some carried.
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 1000, batch: 1000 }).await;
    peer.send(&data(OUR_STREAM, 0), &[9; 100]).await;
    peer.expect_close_with("announces").await;

    // Byte data with per-item capability counts.
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 1000, batch: 1000 }).await;
    let msg =
        Msg::StreamData { stream: OUR_STREAM, count: 3, item_caps: vec![0, 0, 0], caps: vec![], item_lens: vec![] };
    peer.send(&msg, &[1, 2, 3]).await;
    peer.expect_close_with("announces").await;

    // Byte data carrying a capability.
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 1000, batch: 1000 }).await;
    let msg = Msg::StreamData {
        stream: OUR_STREAM,
        count: 3,
        item_caps: vec![],
        caps: vec![CapDesc::SenderHosted(5)],
        item_lens: vec![],
    };
    peer.send(&msg, &[1, 2, 3]).await;
    let reason = peer.expect_close_with("").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");

    server.assert_healthy().await;
}

// ----- 10. data for streams that do not exist (any more) ----------------------------

#[tokio::test]
async fn byte_data_for_a_stream_that_never_existed_closes() {
    let server = TestServer::start().await;
    // Our parity, never opened.
    let mut peer = raw_client(server.addr).await;
    peer.send(&data(1000, 3), &[1, 2, 3]).await;
    let reason = peer.expect_close_with("does not exist").await;
    assert_eq!(reason.kind, Kind::Protocol);
    assert!(reason.message.contains("1000"), "{reason:?}");

    // The server's parity, never opened by it.
    let mut peer = raw_client(server.addr).await;
    peer.send(&data(1001, 3), &[1, 2, 3]).await;
    peer.expect_close_with("does not exist").await;

    // Our parity, beyond a stream we did open.
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 100, batch: 100 }).await;
    peer.send(&data(OUR_STREAM + 2, 3), &[1, 2, 3]).await;
    peer.expect_close_with("does not exist").await;

    // A window for a byte stream that never existed.
    let mut peer = raw_client(server.addr).await;
    let window = WireWindow { capacity: 16, batch: 16 };
    peer.send(&Msg::StreamWindow { stream: 1001, read: 0, window }, &[]).await;
    peer.expect_close_with("does not exist").await;

    server.assert_healthy().await;
}

#[tokio::test]
async fn byte_data_after_the_end_of_a_stream_leaves_the_server_healthy() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.open_upload(0, WireWindow { capacity: 100, batch: 100 }).await;
    peer.send(&data(OUR_STREAM, 3), &[1, 2, 3]).await;
    peer.send(&Msg::StreamEnd { stream: OUR_STREAM, error: None }, &[]).await;
    // Late data for the ended stream, even past its old window.
    peer.send(&data(OUR_STREAM, 2), &[4, 5]).await;
    peer.send(&data(OUR_STREAM, 500), &[6; 500]).await;
    // Tolerated (the answer counts only what came before the end, and the
    // connection stays usable), or closed with a reason.
    let mut answered = false;
    for _ in 0..MAX_FRAMES {
        match peer.next_message().await {
            Some((Msg::StreamWindow { stream: OUR_STREAM, .. }, _)) => continue,
            Some((Msg::Return { question: 0, result: Ok(caps) }, payload)) => {
                assert!(caps.is_empty());
                assert_eq!(postcard::from_bytes::<(u64, u64)>(&payload).expect("(u64, u64)"), (3, 6));
                answered = true;
                break;
            }
            Some((Msg::Abort(err), _)) => {
                assert!(!err.message.is_empty(), "a close without a reason");
                peer.expect_eof().await;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if answered {
        peer.assert_usable(1).await;
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn byte_data_for_a_stream_the_server_produces_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let window = WireWindow { capacity: 16, batch: 16 };
    peer.open_fill(0, 1000, window).await;
    let mut received = 0;
    peer.expect_data(&mut received, 16, 16).await;
    // We are the consumer of this stream: data from us is nonsense.
    peer.send(&data(OUR_STREAM, 3), &[1, 2, 3]).await;
    let reason = peer.expect_close_with("which we produce").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

// ----- 11. windows acknowledging what was never sent ---------------------------------

#[tokio::test]
async fn a_byte_window_acknowledging_more_than_was_sent_closes() {
    let server = TestServer::start().await;
    let window = WireWindow { capacity: 16, batch: 16 };
    // read = u64::MAX.
    let mut peer = raw_client(server.addr).await;
    peer.open_fill(0, 100, window).await;
    let mut received = 0;
    peer.expect_data(&mut received, 16, 16).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: u64::MAX, window }, &[]).await;
    let reason = peer.expect_close_with("acknowledged").await;
    assert_eq!(reason.kind, Kind::Protocol);
    assert!(reason.message.contains(&u64::MAX.to_string()), "{reason:?}");

    // One byte more than was sent.
    let mut peer = raw_client(server.addr).await;
    peer.open_fill(0, 100, window).await;
    let mut received = 0;
    peer.expect_data(&mut received, 16, 16).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 17, window }, &[]).await;
    peer.expect_close_with("acknowledged").await;

    // Going backwards.
    let mut peer = raw_client(server.addr).await;
    peer.open_fill(0, 100, window).await;
    let mut received = 0;
    peer.expect_data(&mut received, 16, 16).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 16, window }, &[]).await;
    peer.expect_data(&mut received, 32, 32).await;
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 8, window }, &[]).await;
    peer.expect_close_with("acknowledged").await;

    server.assert_healthy().await;
}

#[tokio::test]
async fn a_byte_window_of_u32_max_from_the_consumer_is_accepted_without_allocating_it() {
    // We consume, the server produces: a huge window and read size from us.
    const N: u64 = 300_000;
    let server = TestServer::start().await;
    // Warm up first: the server's threads make their allocator arenas now, not during the measurement.
    server.assert_healthy().await;
    let before = vm_peak_kib();
    let mut peer = raw_client(server.addr).await;
    let small = WireWindow { capacity: 16, batch: 16 };
    peer.open_fill(0, N, small).await;
    let mut received = 0;
    peer.expect_data(&mut received, 16, 16).await;
    // The server sends the rest in messages of at most 64 KiB, never
    // anything sized by the window.
    let huge = WireWindow { capacity: u32::MAX, batch: u32::MAX };
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: 16, window: huge }, &[]).await;
    peer.expect_data(&mut received, N, N).await;
    let mut ended = false;
    for _ in 0..MAX_FRAMES {
        match peer.next_message().await {
            Some((Msg::StreamEnd { stream: OUR_STREAM, error: None }, _)) => ended = true,
            Some((Msg::Return { question: 0, result: Ok(caps) }, _)) => {
                assert!(caps.is_empty());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ended, "the stream ended before the answer");
    peer.assert_usable(1).await;
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        assert!(after < before + 256 * 1024, "VmPeak grew from {before} KiB to {after} KiB");
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_byte_window_of_u32_max_in_a_descriptor_is_accepted_without_allocating_it() {
    // We produce, the server consumes with the window and read size we named:
    // four messages of 60,000 bytes, likely buffered together before it reads.
    let server = TestServer::start().await;
    // Warm up first: the server's threads make their allocator arenas now, not during the measurement.
    server.assert_healthy().await;
    let before = vm_peak_kib();
    let mut peer = raw_client(server.addr).await;
    let huge = WireWindow { capacity: u32::MAX, batch: u32::MAX };
    peer.open_upload(0, huge).await;
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend(framed(&[encode(&data(OUR_STREAM, 60_000)), vec![1u8; 60_000]].concat()));
    }
    all.extend(framed(&encode(&Msg::StreamEnd { stream: OUR_STREAM, error: None })));
    timeout(READ_TIMEOUT, peer.stream.write_all(&all)).await.expect("write timed out").expect("write");
    assert_eq!(peer.expect_value::<(u64, u64)>(0).await, (240_000, 240_000));
    peer.assert_usable(1).await;
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        assert!(after < before + 256 * 1024, "VmPeak grew from {before} KiB to {after} KiB");
    }
    server.assert_healthy().await;
}
