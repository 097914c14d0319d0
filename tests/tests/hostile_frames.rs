//! A hostile peer: hand-made frames the framework never produces, sent over a
//! raw TCP socket to a real server, and what the server must do about them.
//!
//! Every frame here is built by the tests (the mirror types of
//! `rpc_tests::wire_mirror` encoded with postcard, or raw bytes), never by
//! rpc-core; the raw client is `rpc_tests::raw_peer`. Each test ends by checking that a normal
//! framework client can still use the same server, so one hostile connection
//! never takes down the others. Every read is bounded by a timeout and every
//! loop by a count.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, ErrorKind, Limits, RpcError, Sequence, SequenceWriter, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

use rpc_tests::{raw_peer::*, wire_mirror::*};

// ----- the interfaces the server offers ------------------------------------

/// A recursive value, for the nesting-depth limit.
#[derive(Debug, Serialize, Deserialize)]
pub enum Nested {
    Leaf,
    Node(Box<Nested>),
}

impl Nested {
    fn levels(&self) -> u32 {
        let mut n = 0;
        let mut at = self;
        while let Nested::Node(inner) = at {
            n += 1;
            at = inner;
        }
        n
    }
}

#[eventual]
pub trait Hostile {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: returns a fresh capability (an export on the connection).
    async fn child(&self) -> ChildProxy;
    /// Method 2: waits until the test opens the gate (bounded), then returns `tag`.
    async fn slow(&self, tag: u32) -> u32;
    /// Method 3: how many `Node`s wrap the leaf.
    fn depth(&self, value: Nested) -> u32;
    /// Method 4: reads an uploaded sequence to its end and counts the items.
    async fn count(&self, numbers: Sequence<u64>) -> Result<u64, RpcError>;
    /// Method 5: writes `n` numbers into the caller's writer.
    async fn fill(&self, n: u64, into: SequenceWriter<u64>) -> Result<(), RpcError>;
}

#[eventual]
pub trait Child {
    /// Method 0.
    fn ping(&self) -> u32;
}

/// What `Child::ping` answers.
const CHILD_PING: u32 = 7;
/// What `slow` answers if the gate never opened.
const GATE_TIMED_OUT: u32 = u32::MAX;

struct Server {
    gate: Arc<watch::Sender<bool>>,
}

impl Hostile for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn child(&self) -> ChildProxy {
        ChildProxy::new(Kid)
    }

    async fn slow(&self, tag: u32) -> u32 {
        let mut gate = self.gate.subscribe();
        let opened = matches!(timeout(Duration::from_secs(60), gate.wait_for(|open| *open)).await, Ok(Ok(_)));
        if opened {
            tag
        } else {
            GATE_TIMED_OUT
        }
    }

    fn depth(&self, value: Nested) -> u32 {
        value.levels()
    }

    async fn count(&self, mut numbers: Sequence<u64>) -> Result<u64, RpcError> {
        let mut n = 0;
        while numbers.read().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn fill(&self, n: u64, mut into: SequenceWriter<u64>) -> Result<(), RpcError> {
        for i in 0..n {
            into.write(i)?;
            into.flush().await?;
        }
        into.close(None).await
    }
}

struct Kid;

impl Child for Kid {
    fn ping(&self) -> u32 {
        CHILD_PING
    }
}

// ----- ids of the interfaces ---------------------------------------------------

const HOSTILE: u64 = rpc_core::__private::interface_id("Hostile");
const CHILD: u64 = rpc_core::__private::interface_id("Child");
const ADD: u16 = 0;
const CHILD_METHOD: u16 = 1;
const SLOW: u16 = 2;
const DEPTH: u16 = 3;
const COUNT: u16 = 4;
const FILL: u16 = 5;
const PING: u16 = 0;

/// postcard of `n` nested `Nested::Node`s around a `Leaf`: one variant byte each.
fn nested_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![1u8; n];
    bytes.push(0);
    bytes
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

/// The server for the tests, with a gate `slow` calls wait for.
struct TestServer {
    addr: std::net::SocketAddr,
    gate: Arc<watch::Sender<bool>>,
    server: LoopbackServer,
}

impl TestServer {
    async fn start() -> TestServer {
        let gate = Arc::new(watch::channel(false).0);
        let for_factory = gate.clone();
        let server = LoopbackServer::start(server_config(SERVER_LIMITS), move || {
            HostileProxy::new(Server { gate: for_factory.clone() })
        });
        TestServer { addr: server.addr, gate, server }
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// The server still accepts and serves a normal framework client.
    async fn assert_healthy(&self) {
        self.server.assert_serving();
        let check = async {
            let hostile: HostileProxy = rpc_core::connect(self.addr).await?;
            hostile.add(40, 2).await
        };
        let sum =
            timeout(READ_TIMEOUT, check).await.expect("a normal client timed out").expect("a normal client failed");
        assert_eq!(sum, 42);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Releases waiting `slow` calls before the server stops.
        self.gate.send_replace(true);
    }
}

// ----- the raw peer ------------------------------------------------------------

/// The bootstrap as `RawPeer::assert_usable` calls it.
const SERVER: Bootstrap = Bootstrap { interface: HOSTILE, add: ADD };

/// Connects and does the handshake by hand; the server offers its bootstrap.
async fn raw_client(addr: std::net::SocketAddr) -> RawPeer {
    let peer = handshake(addr, SERVER_LIMITS, SERVER).await;
    assert!(peer.server_hello.offers_bootstrap);
    peer
}

// ----- framing -----------------------------------------------------------------

#[tokio::test]
async fn length_prefix_of_u32_max_closes_with_reason() {
    let server = TestServer::start().await;
    let before = vm_peak_kib();
    let mut peer = raw_client(server.addr).await;
    peer.send_bytes(&u32::MAX.to_le_bytes()).await;
    let err = peer.expect_close_with("exceeds the limit").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains(&u32::MAX.to_string()), "{err:?}");
    assert!(err.message.contains(&SERVER_LIMITS.max_frame_size.to_string()), "{err:?}");
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        // Reserving the announced 4 GiB would show here even if never touched.
        assert!(after.saturating_sub(before) < 2 << 20, "VmPeak grew from {before} KiB to {after} KiB");
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn length_prefix_of_max_plus_one_closes_with_reason() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let len = SERVER_LIMITS.max_frame_size + 1;
    peer.send_bytes(&len.to_le_bytes()).await;
    let err = peer.expect_close_with("exceeds the limit").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains(&len.to_string()), "{err:?}");
    assert!(err.message.contains(&SERVER_LIMITS.max_frame_size.to_string()), "{err:?}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn frame_of_exactly_max_size_is_read_then_judged() {
    // The boundary: a frame of exactly max_frame_size is accepted by the
    // framing layer (it is garbage, so the message layer closes it).
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send_frame(&vec![0xFF; SERVER_LIMITS.max_frame_size as usize]).await;
    let err = peer.expect_close_with("malformed frame").await;
    assert_eq!(err.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn garbage_frame_after_handshake_closes_as_malformed() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // Deterministic noise; the high bit on every byte makes the leading varint
    // (the message type) run past its maximum length, so it cannot decode.
    let mut x: u32 = 0x9E37_79B9;
    let garbage: Vec<u8> = (0..512)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            0x80 | (x as u8)
        })
        .collect();
    peer.send_frame(&garbage).await;
    let err = peer.expect_close_with("malformed frame").await;
    assert_eq!(err.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn empty_frame_after_handshake_closes_as_malformed() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send_frame(&[]).await;
    let err = peer.expect_close_with("malformed frame").await;
    assert_eq!(err.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn unknown_message_type_closes_as_malformed() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // Variant index 200 as a postcard varint, then a few bytes of "body".
    peer.send_frame(&[0xC8, 0x01, 0x00, 0x01, 0x02]).await;
    let err = peer.expect_close_with("malformed frame").await;
    assert_eq!(err.kind, Kind::Protocol);
    // Just past the last real variant (StreamPart = 14) too.
    let mut peer = raw_client(server.addr).await;
    peer.send_frame(&[15]).await;
    peer.expect_close_with("malformed frame").await;
    server.assert_healthy().await;
}

// ----- handshake -----------------------------------------------------------------

#[tokio::test]
async fn garbage_instead_of_hello_fails_the_handshake() {
    let server = TestServer::start().await;

    // Not our protocol at all: an HTTP request. The "length" "GET " is huge.
    let mut stream = raw_connect(server.addr).await;
    let hello = read_frame_on(&mut stream).await.expect("the server opens with its Hello");
    postcard::from_bytes::<WireHello>(&hello).expect("a Hello");
    send_bytes_on(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_handshake_refused(&mut stream, &["bad handshake"]).await;

    // A well-formed Hello with the wrong magic.
    let mut stream = raw_connect(server.addr).await;
    read_frame_on(&mut stream).await.expect("the server opens with its Hello");
    let wrong = WireHello {
        magic: *b"HTTP",
        version: PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: 0x5eed,
    };
    send_frame_on(&mut stream, &encode(&wrong)).await;
    assert_handshake_refused(&mut stream, &["does not speak this protocol"]).await;

    // A short frame that is no Hello.
    let mut stream = raw_connect(server.addr).await;
    read_frame_on(&mut stream).await.expect("the server opens with its Hello");
    send_frame_on(&mut stream, b"EV").await;
    assert_handshake_refused(&mut stream, &["bad handshake"]).await;

    server.assert_healthy().await;
}

/// After a refused handshake the server either explains with an `Abort` whose
/// reason contains all of `words`, or simply closes.
async fn assert_handshake_refused(stream: &mut TcpStream, words: &[&str]) {
    for _ in 0..MAX_FRAMES {
        let Some(frame) = read_frame_on(stream).await else {
            return;
        };
        match postcard::take_from_bytes::<Msg>(&frame) {
            Ok((Msg::Ping(_) | Msg::Pong(_), _)) => continue,
            Ok((Msg::Abort(err), _)) => {
                for word in words {
                    assert!(err.message.contains(word), "refusal {:?} does not mention {word:?}", err.message);
                }
                assert!(read_frame_on(stream).await.is_none(), "frames after the refusal");
                return;
            }
            other => panic!("after a failed handshake the server sent {other:?}"),
        }
    }
    panic!("the server kept the refused connection open");
}

#[tokio::test]
async fn hello_with_another_version_is_refused() {
    let server = TestServer::start().await;

    // Raw side: a Hello of the next version is refused (closed, or an Abort naming both versions).
    let mut stream = raw_connect(server.addr).await;
    let theirs = read_frame_on(&mut stream).await.expect("the server opens with its Hello");
    let theirs: WireHello = postcard::from_bytes(&theirs).expect("a Hello");
    assert_eq!(theirs.version, PROTOCOL_VERSION);
    let other = PROTOCOL_VERSION + 1;
    let hello =
        WireHello { magic: MAGIC, version: other, limits: CLIENT_LIMITS, offers_bootstrap: false, nonce: 0x5eed };
    send_frame_on(&mut stream, &encode(&hello)).await;
    assert_handshake_refused(&mut stream, &["version", &other.to_string(), &PROTOCOL_VERSION.to_string()]).await;

    // Framework side: a fake server answering with version 999.
    let fake = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fake_addr = fake.local_addr().expect("addr");
    let fake_task = tokio::spawn(async move {
        let (mut stream, _) = fake.accept().await.expect("accept");
        let hello =
            WireHello { magic: MAGIC, version: 999, limits: CLIENT_LIMITS, offers_bootstrap: true, nonce: 0x5eed };
        send_frame_on(&mut stream, &encode(&hello)).await;
        let theirs = read_frame_on(&mut stream).await.expect("the client sends its Hello");
        let theirs: WireHello = postcard::from_bytes(&theirs).expect("a Hello");
        // Whatever follows (nothing, or an Abort), the client must close.
        let mut extra = Vec::new();
        for _ in 0..MAX_FRAMES {
            match read_frame_on(&mut stream).await {
                Some(frame) => extra.push(frame),
                None => break,
            }
        }
        (theirs, extra)
    });
    let err =
        match timeout(READ_TIMEOUT, rpc_core::connect::<HostileProxy>(fake_addr)).await.expect("connect timed out") {
            Ok(_) => panic!("a client accepted a server of version 999"),
            Err(err) => err,
        };
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.message().contains("version"), "{err:?}");
    assert!(err.message().contains("999"), "{err:?}");
    assert!(err.message().contains(&PROTOCOL_VERSION.to_string()), "{err:?}");
    let (client_hello, extra) = timeout(READ_TIMEOUT, fake_task).await.expect("fake server").expect("fake server task");
    assert_eq!(client_hello.version, PROTOCOL_VERSION);
    assert_eq!(client_hello.magic, MAGIC);
    assert!(extra.len() <= 1, "the refusing client sent {extra:?}");

    server.assert_healthy().await;
}

#[tokio::test]
async fn framework_advertises_version_and_limits_in_its_first_frame() {
    let limits = Limits {
        max_frame_size: 12_345,
        max_outstanding_calls: 3,
        max_exports: 5,
        max_depth: 7,
        max_decoded_size: 49_380,
        max_stream_window: 65_536,
        max_stream_window_bytes: 16 << 20,
    };
    let config = Config { limits, ..server_config(SERVER_LIMITS) };
    let (ours, mut theirs) = tokio::io::duplex(64 << 10);
    let gate = Arc::new(watch::channel(true).0);
    let opening =
        tokio::spawn(Connection::builder().config(config).bootstrap(HostileProxy::new(Server { gate })).open(ours));

    // The first frame: length prefix and postcard bytes of the Hello; all but
    // the random nonce is known exactly.
    let mut prefix = [0u8; 4];
    timeout(READ_TIMEOUT, theirs.read_exact(&mut prefix)).await.expect("first frame timed out").expect("prefix");
    let mut first = vec![0u8; u32::from_le_bytes(prefix) as usize];
    assert!(first.len() < 64, "a Hello is small, got {} bytes", first.len());
    timeout(READ_TIMEOUT, theirs.read_exact(&mut first)).await.expect("first frame timed out").expect("first frame");
    assert_eq!(&first[..4], b"EVRP");
    let decoded: WireHello = postcard::from_bytes(&first).expect("Hello decodes");
    let expected = WireHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: WireLimits::from(limits),
        offers_bootstrap: true,
        nonce: decoded.nonce,
    };
    assert_eq!(decoded, expected);
    assert_eq!(framed(&encode(&expected)), [&prefix[..], &first[..]].concat(), "the Hello is exactly these bytes");

    // Finish the handshake by hand; the connection sees our limits.
    let hello = WireHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: 0x5eed,
    };
    theirs.write_all(&framed(&encode(&hello))).await.expect("write Hello");
    let connection = timeout(READ_TIMEOUT, opening).await.expect("open timed out").expect("open task").expect("open");
    let peer = connection.peer_limits();
    assert_eq!(WireLimits::from(peer), CLIENT_LIMITS);

    // And it serves a hand-made call.
    let mut call_frame = encode(&call(0, BOOTSTRAP, HOSTILE, ADD));
    call_frame.extend_from_slice(&encode(&(1i64, 2i64)));
    theirs.write_all(&framed(&call_frame)).await.expect("write call");
    for _ in 0..MAX_FRAMES {
        let mut prefix = [0u8; 4];
        timeout(READ_TIMEOUT, theirs.read_exact(&mut prefix)).await.expect("reply timed out").expect("reply");
        let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
        theirs.read_exact(&mut body).await.expect("reply body");
        match postcard::take_from_bytes::<Msg>(&body).expect("reply decodes") {
            (Msg::Ping(_) | Msg::Pong(_), _) => continue,
            (Msg::Return { question: 0, result: Ok(caps) }, payload) => {
                assert!(caps.is_empty());
                assert_eq!(postcard::from_bytes::<i64>(payload).expect("i64"), 3);
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no Return");
}

// ----- calls to things that are not there ---------------------------------------

#[tokio::test]
async fn call_to_unknown_capability_gets_unimplemented_and_connection_survives() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(0, Target::Export(77), HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    let err = peer.expect_error(0, Kind::Unimplemented).await;
    assert!(err.message.contains("77"), "{err:?}");
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.assert_usable(1).await;
    // A huge id is just a miss too.
    peer.send(&call(2, Target::Export(u32::MAX), HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    peer.expect_error(2, Kind::Unimplemented).await;
    peer.send(&Msg::Finish { question: 2 }, &[]).await;
    // Pipelining on an answer that never existed.
    peer.send(&call(3, Target::Answer { question: 50, cap: 0 }, HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    let err = peer.expect_error(3, Kind::Unimplemented).await;
    assert!(err.message.contains("50"), "{err:?}");
    peer.send(&Msg::Finish { question: 3 }, &[]).await;
    peer.assert_usable(4).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn call_to_released_capability_gets_error_and_connection_survives() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;

    // Get a capability: the server exports it under some id.
    peer.send(&call(0, BOOTSTRAP, HOSTILE, CHILD_METHOD), &[]).await;
    let (caps, payload) = peer.expect_return(0).await.expect("child() succeeds");
    let [CapDesc::SenderHosted(child)] = caps[..] else { panic!("expected one exported capability, got {caps:?}") };
    assert_eq!(postcard::from_bytes::<u32>(&payload).expect("cap index"), 0);
    assert_ne!(child, 0, "the child must not reuse the bootstrap id");
    peer.send(&Msg::Finish { question: 0 }, &[]).await;

    // It works while held.
    peer.send(&call(1, Target::Export(child), CHILD, PING), &[]).await;
    assert_eq!(peer.expect_value::<u32>(1).await, CHILD_PING);

    // Release exactly the one reference we got; then it is gone.
    peer.send(&Msg::Release { export: child, count: 1 }, &[]).await;
    peer.send(&call(2, Target::Export(child), CHILD, PING), &[]).await;
    let err = peer.expect_error(2, Kind::Unimplemented).await;
    assert!(err.message.contains(&child.to_string()), "{err:?}");
    peer.send(&Msg::Finish { question: 2 }, &[]).await;

    peer.assert_usable(3).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn unknown_method_or_interface_on_bootstrap_gets_error_return() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;

    peer.send(&call(0, BOOTSTRAP, HOSTILE, 99), &[]).await;
    let err = peer.expect_error(0, Kind::Unimplemented).await;
    assert!(err.message.contains("99"), "{err:?}");
    peer.send(&Msg::Finish { question: 0 }, &[]).await;

    peer.send(&call(1, BOOTSTRAP, HOSTILE, u16::MAX), &[]).await;
    peer.expect_error(1, Kind::Unimplemented).await;
    peer.send(&Msg::Finish { question: 1 }, &[]).await;

    let wrong = rpc_core::__private::interface_id("NotHostile");
    peer.send(&call(2, BOOTSTRAP, wrong, ADD), &encode(&(1i64, 2i64))).await;
    let err = peer.expect_error(2, Kind::Unimplemented).await;
    assert!(err.message.contains("Hostile"), "{err:?}");
    peer.send(&Msg::Finish { question: 2 }, &[]).await;

    // Right method, wrong argument bytes: a Serialization error, not a close.
    peer.send(&call(3, BOOTSTRAP, HOSTILE, ADD), &[0xFF]).await;
    peer.expect_error(3, Kind::Serialization).await;
    peer.send(&Msg::Finish { question: 3 }, &[]).await;

    peer.assert_usable(4).await;
    server.assert_healthy().await;
}

// ----- reference counting and question bookkeeping ------------------------------

#[tokio::test]
async fn release_of_more_references_than_held_closes_with_counts() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(0, BOOTSTRAP, HOSTILE, CHILD_METHOD), &[]).await;
    let (caps, _) = peer.expect_return(0).await.expect("child() succeeds");
    let [CapDesc::SenderHosted(child)] = caps[..] else { panic!("expected one exported capability, got {caps:?}") };
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.send(&Msg::Release { export: child, count: 5 }, &[]).await;
    let err = peer.expect_close_with("Release of 5 references").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains("holds 1"), "{err:?}");
    assert!(err.message.contains(&format!("export {child}")), "{err:?}");

    // Releasing the (uncounted) bootstrap, or an id that never existed, closes too.
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Release { export: 0, count: 1 }, &[]).await;
    peer.expect_close_with("Release of 1 references to export 0").await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Release { export: 500, count: 1 }, &[]).await;
    peer.expect_close_with("export 500").await;

    server.assert_healthy().await;
}

#[tokio::test]
async fn finish_for_question_never_asked_closes_but_after_answer_is_fine() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // Asked, answered (no capabilities), then finished: harmless.
    peer.assert_usable(0).await;
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.assert_usable(1).await;
    // Never asked.
    peer.send(&Msg::Finish { question: 5000 }, &[]).await;
    let err = peer.expect_close_with("5000").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains("never asked"), "{err:?}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn finish_on_a_fresh_connection_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.expect_close_with("never asked").await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn too_many_outstanding_calls_get_limit_exceeded() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // The limit the server advertised is the one it enforces.
    let max = peer.server_hello.limits.max_outstanding_calls;
    assert_eq!(max, 8);
    for q in 0..max {
        peer.send(&call(q, BOOTSTRAP, HOSTILE, SLOW), &encode(&(100 + q,))).await;
    }
    // One more: refused at once, while the others are still waiting.
    peer.send(&call(max, BOOTSTRAP, HOSTILE, SLOW), &encode(&(100 + max,))).await;
    let err = peer.expect_error(max, Kind::LimitExceeded).await;
    assert!(err.message.contains(&max.to_string()), "{err:?}");
    // The refused question was never recorded: finishing it is harmless.
    peer.send(&Msg::Finish { question: max }, &[]).await;

    server.open_gate();
    let mut seen = Vec::new();
    for _ in 0..max {
        match peer.next_message().await {
            Some((Msg::Return { question, result: Ok(caps) }, payload)) => {
                assert!(caps.is_empty());
                let tag: u32 = postcard::from_bytes(&payload).expect("u32");
                assert_eq!(tag, 100 + question, "question {question} was not released by the gate");
                seen.push(question);
            }
            other => panic!("expected a Return of a slow call, got {other:?}"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..max).collect::<Vec<_>>());
    // All answered (without capabilities), so the table is empty again.
    for q in 0..max {
        peer.assert_usable(20 + q).await;
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn errored_answers_count_until_finished() {
    // An error Return is kept until the caller's Finish; a peer that never
    // finishes fills the kept-answer budget (calls in flight + exports) and
    // gets LimitExceeded.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let max = SERVER_LIMITS.max_outstanding_calls + SERVER_LIMITS.max_exports;
    for q in 0..max {
        peer.send(&call(q, BOOTSTRAP, HOSTILE, 99), &[]).await;
        peer.expect_error(q, Kind::Unimplemented).await;
    }
    peer.send(&call(max, BOOTSTRAP, HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    peer.expect_error(max, Kind::LimitExceeded).await;
    for q in 0..max {
        peer.send(&Msg::Finish { question: q }, &[]).await;
    }
    peer.assert_usable(max + 1).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn payload_nested_deeper_than_max_depth_gets_serialization_error() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;

    // Within the limit: decodes and runs.
    peer.send(&call(0, BOOTSTRAP, HOSTILE, DEPTH), &nested_bytes(5)).await;
    assert_eq!(peer.expect_value::<u32>(0).await, 5);

    // 10,000 levels: refused while decoding, without recursing that deep.
    let deep = nested_bytes(10_000);
    assert!(deep.len() < SERVER_LIMITS.max_frame_size as usize);
    peer.send(&call(1, BOOTSTRAP, HOSTILE, DEPTH), &deep).await;
    let err = peer.expect_error(1, Kind::Serialization).await;
    assert!(err.message.contains("cannot decode"), "{err:?}");
    peer.send(&Msg::Finish { question: 1 }, &[]).await;

    // Just over the limit of 16 (the argument tuple is one level, each enum one).
    peer.send(&call(2, BOOTSTRAP, HOSTILE, DEPTH), &nested_bytes(SERVER_LIMITS.max_depth as usize)).await;
    peer.expect_error(2, Kind::Serialization).await;
    peer.send(&Msg::Finish { question: 2 }, &[]).await;

    peer.assert_usable(3).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn question_id_reused_while_active_closes_with_reason() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(3, BOOTSTRAP, HOSTILE, SLOW), &encode(&(1u32,))).await;
    peer.send(&call(3, BOOTSTRAP, HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    let err = peer.expect_close_with("reused").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains("question id 3"), "{err:?}");
    server.open_gate();
    server.assert_healthy().await;
}

#[tokio::test]

async fn question_id_reused_while_active_with_a_capability_closes_with_reason() {
    // As above, but the offending call also names a capability we export.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(3, BOOTSTRAP, HOSTILE, SLOW), &encode(&(1u32,))).await;
    let reuse = Msg::Call {
        question: 3,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::SenderHosted(1)],
    };
    peer.send(&reuse, &encode(&(1i64, 1i64))).await;
    let err = peer.expect_close_with("reused").await;
    assert_eq!(err.kind, Kind::Protocol);
    server.open_gate();
    server.assert_healthy().await;
}

#[tokio::test]
async fn question_id_reused_after_finish_is_fine() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    for _ in 0..3 {
        peer.assert_usable(0).await;
    }
    peer.send(&call(1, BOOTSTRAP, HOSTILE, 99), &[]).await;
    peer.expect_error(1, Kind::Unimplemented).await;
    peer.send(&Msg::Finish { question: 1 }, &[]).await;
    peer.assert_usable(1).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn return_for_question_never_asked_closes_with_reason() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Return { question: 3, result: Ok(Vec::new()) }, &encode(&5i64)).await;
    let err = peer.expect_close_with("Return for question 3").await;
    assert_eq!(err.kind, Kind::Protocol);

    let mut peer = raw_client(server.addr).await;
    let fake = WireError { kind: Kind::Application, message: "forged".into(), payload: None };
    peer.send(&Msg::Return { question: 0, result: Err(fake) }, &[]).await;
    peer.expect_close_with("Return for question 0").await;
    server.assert_healthy().await;
}

// ----- other things a hostile peer can name -------------------------------------

#[tokio::test]
async fn capability_descriptors_naming_missing_objects_close() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let bogus = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::ReceiverHosted(42)],
    };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    peer.expect_close_with("export 42").await;

    let mut peer = raw_client(server.addr).await;
    let bogus = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::ReceiverAnswer { question: 9, cap: 0 }],
    };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    peer.expect_close_with("answer 9").await;
    server.assert_healthy().await;
}

#[tokio::test]

async fn bad_descriptor_after_a_good_one_closes() {
    // The first descriptor is a fine import of ours; the second names nothing.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let bogus = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::SenderHosted(5), CapDesc::ReceiverHosted(42)],
    };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    peer.expect_close_with("export 42").await;
    server.assert_healthy().await;
}

#[tokio::test]

async fn too_many_imports_close_with_the_limit() {
    // The server accepts at most max_exports capabilities from us.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let caps = (1..=SERVER_LIMITS.max_exports + 1).map(CapDesc::SenderHosted).collect();
    let bogus = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOSTILE, method: ADD, caps };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    let err = peer.expect_close_with(&SERVER_LIMITS.max_exports.to_string()).await;
    assert_eq!(err.kind, Kind::LimitExceeded);
    server.assert_healthy().await;
}

#[tokio::test]
async fn disembargo_and_reply_for_unknown_ids_close() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::DisembargoReply { id: 4 }, &[]).await;
    peer.expect_close_with("unknown embargo 4").await;

    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Disembargo { target: BOOTSTRAP, id: 1 }, &[]).await;
    peer.expect_close_with("Disembargo").await;

    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Disembargo { target: Target::Answer { question: 6, cap: 0 }, id: 1 }, &[]).await;
    peer.expect_close_with("answer 6").await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn ping_is_answered_and_abort_from_peer_ends_quietly() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Ping(0xDEAD_BEEF), &[]).await;
    let mut ponged = false;
    for _ in 0..MAX_FRAMES {
        let frame = peer.read_frame().await.expect("connection open");
        match postcard::take_from_bytes::<Msg>(&frame).expect("decodes") {
            (Msg::Pong(0xDEAD_BEEF), rest) => {
                assert!(rest.is_empty());
                ponged = true;
                break;
            }
            (Msg::Ping(_), _) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ponged);
    let reason = WireError { kind: Kind::Aborted, message: "bye".into(), payload: None };
    peer.send(&Msg::Abort(reason), &[]).await;
    // The server closes without answering an Abort with its own.
    peer.expect_eof().await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn many_hostile_connections_leave_the_server_serving() {
    let server = TestServer::start().await;
    let hostile: Vec<Vec<u8>> = vec![
        u32::MAX.to_le_bytes().to_vec(),
        framed(&[0xC8, 0x01]),
        framed(&encode(&Msg::Finish { question: 77 })),
        framed(&encode(&Msg::Return { question: 1, result: Ok(Vec::new()) })),
    ];
    for round in 0..5 {
        for bytes in &hostile {
            let mut peer = raw_client(server.addr).await;
            peer.send_bytes(bytes).await;
            let err = peer.expect_close_with("").await;
            assert_eq!(err.kind, Kind::Protocol, "round {round}: {err:?}");
        }
        server.assert_healthy().await;
    }
}

// ----- streams -----------------------------------------------------------------

/// Uploads a sequence to `count` with the given window, returning nothing.
async fn open_upload(peer: &mut RawPeer, question: u32, capacity: u32) {
    let window = WireWindow { capacity, batch: capacity };
    let caps = vec![CapDesc::SequenceReader { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question, target: BOOTSTRAP, interface: HOSTILE, method: COUNT, caps };
    // The argument tuple holds one capability: index 0 of the table.
    peer.send(&msg, &encode(&(0u32,))).await;
}

fn numbers(n: u64) -> Vec<u8> {
    (0..n).flat_map(|i| encode(&i)).collect()
}

/// The encoded length of each of [`numbers`]' items.
fn number_lens(n: u64) -> Vec<u32> {
    (0..n).map(|i| encode(&i).len() as u32).collect()
}

#[tokio::test]
async fn a_producer_sending_past_the_window_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    open_upload(&mut peer, 0, 4).await;
    // Nothing read or acknowledged yet: five items in one message is past a window of four,
    // however fast the consumer reads. The first such frame closes the connection, so
    // nothing past the window is ever buffered (the frame itself is bounded by the limit).
    peer.send(
        &Msg::StreamData { stream: OUR_STREAM, count: 5, item_caps: vec![], caps: vec![], item_lens: number_lens(5) },
        &numbers(5),
    )
    .await;
    let reason = peer.expect_close_with("past the consumer's window").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn data_for_a_stream_that_never_existed_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(
        &Msg::StreamData { stream: 1000, count: 1, item_caps: vec![], caps: vec![], item_lens: number_lens(1) },
        &numbers(1),
    )
    .await;
    let reason = peer.expect_close_with("does not exist").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_window_acknowledging_more_than_was_sent_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // We consume: the server fills our writer.
    let window = WireWindow { capacity: 2, batch: 1 };
    let caps = vec![CapDesc::SequenceWriter { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOSTILE, method: FILL, caps };
    peer.send(&msg, &encode(&(10u64, 0u32))).await;
    // Two items arrive (the window), then the server waits for us.
    let mut seen = 0;
    while seen < 2 {
        match peer.next_message().await {
            Some((Msg::StreamData { stream, count, .. }, _)) if stream == OUR_STREAM => seen += count,
            other => panic!("expected stream data, got {other:?}"),
        }
    }
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: u64::MAX, window }, &[]).await;
    let reason = peer.expect_close_with("acknowledged").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_stream_opened_with_the_servers_parity_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let window = WireWindow { capacity: 4, batch: 4 };
    let caps = vec![CapDesc::SequenceReader { stream: OUR_STREAM + 1, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOSTILE, method: COUNT, caps };
    peer.send(&msg, &encode(&(0u32,))).await;
    let reason = peer.expect_close_with("not").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_well_behaved_raw_upload_is_counted() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    open_upload(&mut peer, 0, 4).await;
    peer.send(
        &Msg::StreamData { stream: OUR_STREAM, count: 3, item_caps: vec![], caps: vec![], item_lens: number_lens(3) },
        &numbers(3),
    )
    .await;
    peer.send(&Msg::StreamEnd { stream: OUR_STREAM, error: None }, &[]).await;
    // Window updates may come first; then the answer.
    for _ in 0..MAX_FRAMES {
        match peer.next_message().await {
            Some((Msg::StreamWindow { .. }, _)) => continue,
            Some((Msg::Return { question: 0, result: Ok(_) }, payload)) => {
                assert_eq!(postcard::from_bytes::<u64>(&payload).unwrap(), 3);
                return server.assert_healthy().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no answer");
}
