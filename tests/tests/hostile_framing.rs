//! A hostile peer's framing and handshake: length prefixes past the limit,
//! garbage, empty and unknown frames, a garbage or wrong-version hello; and
//! the version and limits the framework advertises in its first frame.
//!
//! Every frame here is built by the tests (the mirror types of
//! `rpc_tests::wire_mirror` encoded with postcard, or raw bytes), never by
//! rpc-core; the raw client is `rpc_tests::raw_peer`, the server and its
//! interfaces are in `rpc_tests::hostile_server`. Each test ends by checking
//! that a normal framework client can still use the same server, so one
//! hostile connection never takes down the others. Every read is bounded by a
//! timeout and every loop by a count.

use std::sync::Arc;

use rpc_core::{Config, Connection, ErrorKind, Limits, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

use rpc_tests::hostile_server::*;
use rpc_tests::{raw_peer::*, wire_mirror::*};

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
