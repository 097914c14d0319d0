//! A hostile peer that asks for output and never reads it: a ping flood, a
//! call flood, and pings faster than the server allows.
//!
//! The server is a real framework connection. The attacker speaks the wire
//! by hand (the `rpc_tests::wire_mirror` types). Most tests run over an
//! in-memory duplex on tokio's paused clock: a full pipe blocks the writer as
//! a peer that does not read would, and every timeout is exact. One test
//! does the same over TCP loopback. A counting global allocator (this
//! binary's own) measures how much memory the server holds while flooded.
//! Tests that measure memory hold [`SERIAL`], so no other test of this binary
//! allocates meanwhile. Every wait is bounded by a timeout and every loop by
//! a count.

use std::time::Duration;

use futures::FutureExt;
use rpc_core::{eventual, Config, Connection, ErrorKind, Limits, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::Mutex;
use tokio::time::timeout;

use rpc_tests::peak_alloc::{peak, reset_peak, PeakCounting};
use rpc_tests::raw_peer::{framed, CLIENT_LIMITS, CLIENT_NONCE};
use rpc_tests::wire_mirror::{call, encode, Kind, Msg, WireHello, BOOTSTRAP, MAGIC};

// ----- a counting allocator: live heap bytes and their peak ------------------

#[global_allocator]
static ALLOCATOR: PeakCounting = PeakCounting;

/// Tests of this binary run one at a time, so memory figures are their own.
/// (Each test has its own runtime; a tokio mutex works across them.)
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

const MIB: f64 = (1 << 20) as f64;

// ----- the server --------------------------------------------------------------

#[eventual]
pub trait Flood {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
}

struct Adder;

impl Flood for Adder {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

const FLOOD: u64 = rpc_core::__private::interface_id("Flood");
const ADD: u16 = 0;

/// Small bound and stall time, no keepalive traffic of the server's own, no
/// strikes, and few calls in flight (each holds some memory until answered).
fn flood_config() -> Config {
    Config {
        limits: Limits { max_outstanding_calls: 256, ..Limits::default() },
        keepalive_interval: Duration::from_secs(3600),
        keepalive_timeout: Duration::from_secs(7200),
        max_unsent_output: 256 << 10,
        write_stall_timeout: Duration::from_secs(2),
        ping_min_interval: Duration::ZERO,
        ..Config::default()
    }
}

/// A server connection on one end of an in-memory pipe of `pipe` bytes; the
/// other end after a hand-made handshake.
async fn duplex_server(config: Config, pipe: usize) -> (Connection, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(pipe);
    let server = tokio::spawn(Connection::builder().config(config).bootstrap(FloodProxy::new(Adder)).open(ours));
    let mut peer = theirs;
    raw_handshake(&mut peer).await;
    let conn = server.await.expect("server task").expect("server handshake");
    (conn, peer)
}

async fn raw_handshake<S: AsyncRead + AsyncWrite + Unpin>(peer: &mut S) {
    let hello = WireHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: CLIENT_NONCE,
    };
    peer.write_all(&framed(&encode(&hello))).await.expect("write hello");
    let frame = read_frame(peer).await.expect("server hello");
    let hello: WireHello = postcard::from_bytes(&frame).expect("hello decodes");
    assert_eq!(hello.magic, MAGIC);
}

/// One frame, or `None` at the end of the stream (or a reset).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let read = async {
        let mut prefix = [0u8; 4];
        match r.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(_) => return None,
        }
        let len = u32::from_le_bytes(prefix);
        assert!(len <= CLIENT_LIMITS.max_frame_size, "the server sent a frame of {len} bytes");
        let mut body = vec![0u8; len as usize];
        r.read_exact(&mut body).await.ok()?;
        Some(body)
    };
    timeout(Duration::from_secs(600), read).await.expect("no frame from the server within the timeout")
}

fn assert_open(conn: &Connection) {
    if let Some(reason) = conn.closed().now_or_never() {
        panic!("the connection closed: {reason}");
    }
}

/// What the attacker finds when it finally reads: every frame to the end.
#[derive(Debug, Default)]
struct Seen {
    pongs: usize,
    returns: usize,
    abort: Option<String>,
    bytes: usize,
}

/// Reads everything the server sent, to the end of the stream (bounded).
async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Seen {
    let mut seen = Seen::default();
    for _ in 0..10_000_000 {
        let Some(frame) = read_frame(r).await else { return seen };
        seen.bytes += frame.len() + 4;
        match postcard::take_from_bytes::<Msg>(&frame).expect("the server's frame decodes").0 {
            Msg::Pong(_) => seen.pongs += 1,
            Msg::Return { .. } => seen.returns += 1,
            Msg::Abort(err) => seen.abort = Some(err.message),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("more than ten million frames");
}

/// Frames `frame(i)` for `i` in `range`, back to back.
fn burst(range: std::ops::Range<usize>, frame: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in range {
        bytes.extend_from_slice(&framed(&frame(i)));
    }
    bytes
}

fn ping(i: usize) -> Vec<u8> {
    encode(&Msg::Ping(i as u64 & 0x7f))
}

fn add_call(i: usize) -> Vec<u8> {
    let mut body = encode(&call(i as u32, BOOTSTRAP, FLOOD, ADD));
    body.extend_from_slice(&encode(&(1i64, 2i64)));
    body
}

/// Frames per write of [`flood`].
const BURST: usize = 4096;

/// The attacker writes frames `frame(0)`, `frame(1)`, ... in bursts of
/// [`BURST`] without reading, until a write fails or blocks for longer than
/// `patience`, or `max_bytes` are sent. Returns the bytes it got to write.
async fn flood<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: fn(usize) -> Vec<u8>,
    max_bytes: usize,
    patience: Duration,
) -> usize {
    let mut sent = 0;
    let mut next = 0;
    while sent < max_bytes {
        let burst = burst(next..next + BURST, frame);
        next += BURST;
        match timeout(patience, w.write_all(&burst)).await {
            Ok(Ok(())) => sent += burst.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// Frames of the attacker that ask for output, up to this many bytes: far
/// more than the bound, so that without one the server's memory shows it.
const FLOOD_BYTES: usize = 48 << 20;

// ----- unsent output stays bounded -----------------------------------------------

async fn flood_never_reading(frame: fn(usize) -> Vec<u8>, what: &str) {
    let config = flood_config();
    let bound = config.max_unsent_output;
    let stall = config.write_stall_timeout;
    let (conn, mut peer) = duplex_server(config, 64 << 10).await;
    let before = reset_peak();
    let started = tokio::time::Instant::now();
    let sent = flood(&mut peer, frame, FLOOD_BYTES, Duration::from_secs(60)).await;
    let growth = peak().saturating_sub(before);
    println!("{what}: attacker wrote {:.1} MiB; server heap grew by {:.2} MiB", sent as f64 / MIB, growth as f64 / MIB);
    let reason = timeout(Duration::from_secs(60), conn.closed()).await.expect("the server never closed");
    let elapsed = started.elapsed();
    drop(conn);
    let seen = read_all(&mut peer).await;
    println!(
        "{what}: attacker wrote {:.1} MiB; server heap grew by at most {:.2} MiB (bound {:.2} MiB); \
         closed after {elapsed:?} (virtual): {reason}; the attacker then read {:.2} MiB: {} pongs, {} returns, abort {:?}",
        sent as f64 / MIB,
        growth as f64 / MIB,
        bound as f64 / MIB,
        seen.bytes as f64 / MIB,
        seen.pongs,
        seen.returns,
        seen.abort,
    );
    assert!(sent < FLOOD_BYTES, "the server read all {sent} bytes of a {what} it could not answer");
    // Besides the owed output: read buffers, frames in hand, the pipe itself.
    let slack = 2 << 20;
    assert!(growth <= bound + slack, "the server's heap grew by {growth} bytes (bound {bound}) during a {what}");
    assert_eq!(reason.kind(), ErrorKind::Timeout, "{reason}");
    assert!(reason.message().contains("not reading"), "{reason}");
    assert!(elapsed >= stall, "closed after {elapsed:?}, before the stall timeout of {stall:?}");
    assert!(seen.bytes <= bound + (128 << 10), "the attacker read {} bytes", seen.bytes);
}

#[tokio::test(start_paused = true)]
async fn ping_flood_never_reading_stays_within_the_bound_and_is_closed() {
    let _serial = serial().await;
    flood_never_reading(ping, "ping flood").await;
}

#[tokio::test(start_paused = true)]
async fn call_flood_never_reading_stays_within_the_bound_and_is_closed() {
    let _serial = serial().await;
    flood_never_reading(add_call, "call flood").await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_that_pauses_to_read_is_served_in_full() {
    let _serial = serial().await;
    // Backpressure, not punishment: a peer that reads late gets every answer
    // (a sum, or an error if it had more calls in flight than the limit).
    let (conn, peer) = duplex_server(flood_config(), 64 << 10).await;
    let (mut rd, mut wr) = tokio::io::split(peer);
    let calls = 50 * BURST;
    let bytes = burst(0..calls, add_call).len();
    let writer = tokio::spawn(async move {
        let sent = flood(&mut wr, add_call, bytes, Duration::from_secs(60)).await;
        (sent, wr)
    });
    // Not reading for a while (under the stall timeout), then reading all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut sums, mut refused) = (0, 0);
    for _ in 0..calls {
        let frame = read_frame(&mut rd).await.expect("connection open");
        match postcard::take_from_bytes::<Msg>(&frame).expect("decodes") {
            (Msg::Return { result: Ok(_), .. }, sum) => {
                assert_eq!(postcard::from_bytes::<i64>(sum), Ok(3));
                sums += 1;
            }
            (Msg::Return { result: Err(err), .. }, _) if err.kind == Kind::LimitExceeded => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    println!("a flood read late: {sums} sums, {refused} refused (too many in flight)");
    let (sent, _wr) = writer.await.expect("writer");
    assert_eq!(sent, bytes);
    assert_eq!(sums + refused, calls);
    assert!(sums > 0);
    assert_open(&conn);
}

#[test]
fn ping_flood_over_tcp_is_cut_off_and_the_server_keeps_serving() {
    let _serial = SERIAL.blocking_lock();
    use rpc_tests::raw_peer::{handshake, Bootstrap, LoopbackServer};
    let config =
        Config { max_unsent_output: 256 << 10, write_stall_timeout: Duration::from_millis(500), ..Config::default() };
    let limits = config.limits;
    let server = LoopbackServer::start(config, || FloodProxy::new(Adder));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut peer = handshake(server.addr, limits, Bootstrap { interface: FLOOD, add: ADD }).await;
        let before = reset_peak();
        let sent = flood(&mut peer.stream, ping, FLOOD_BYTES, Duration::from_secs(10)).await;
        let growth = peak().saturating_sub(before);
        let seen = read_all(&mut peer.stream).await;
        println!(
            "ping flood over TCP: attacker wrote {:.2} MiB; heap grew by at most {:.2} MiB; then read {} pongs, abort {:?}",
            sent as f64 / MIB,
            growth as f64 / MIB,
            seen.pongs,
            seen.abort
        );
        assert!(sent < FLOOD_BYTES, "the server read the whole flood");
        assert!(growth <= (256 << 10) + (4 << 20), "heap grew by {growth} bytes");
        // With default strikes, the flood is a strike-out long before the bound.
        let abort = seen.abort.expect("the server said why it closed");
        assert!(abort.contains("too many pings"), "{abort}");
        server.assert_serving();
        let add: FloodProxy = timeout(Duration::from_secs(5), rpc_core::connect(server.addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        assert_eq!(timeout(Duration::from_secs(5), add.add(40, 2)).await.expect("timed out").expect("add"), 42);
    });
}

// ----- ping strikes ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn pings_faster_than_allowed_close_with_too_many_pings() {
    let _serial = serial().await;
    let config = Config { ping_min_interval: Duration::from_millis(100), max_ping_strikes: 3, ..flood_config() };
    let (conn, mut peer) = duplex_server(config, 64 << 10).await;
    // The first ping is fine; the next three are strikes; the fifth is one too many.
    peer.write_all(&burst(0..5, ping)).await.expect("write");
    let seen = read_all(&mut peer).await;
    let abort = seen.abort.clone().expect("an Abort with the reason");
    assert!(abort.contains("too many pings"), "{abort}");
    assert!(abort.contains("100ms"), "the reason names the interval: {abort}");
    assert!(seen.pongs <= 4, "{seen:?}");
    let reason = conn.closed().await;
    assert_eq!(reason.kind(), ErrorKind::LimitExceeded, "{reason}");
}

#[tokio::test(start_paused = true)]
async fn pings_that_keep_the_interval_are_answered_forever() {
    let _serial = serial().await;
    let config = Config { ping_min_interval: Duration::from_millis(100), max_ping_strikes: 2, ..flood_config() };
    let (conn, mut peer) = duplex_server(config, 64 << 10).await;
    for i in 0..500 {
        // Now and then two close together: strikes, cleared by the next good one.
        let gap = if i % 7 == 3 { Duration::from_millis(10) } else { Duration::from_millis(100) };
        tokio::time::sleep(gap).await;
        peer.write_all(&framed(&ping(i))).await.expect("write");
        let frame = read_frame(&mut peer).await.expect("connection open");
        assert!(matches!(postcard::from_bytes::<Msg>(&frame), Ok(Msg::Pong(_))), "{frame:?}");
    }
    assert_open(&conn);
}

#[tokio::test(start_paused = true)]
async fn a_normal_client_with_keepalive_is_never_struck() {
    let _serial = serial().await;
    // The strictest server this client's keepalive allows.
    let server_config = Config {
        ping_min_interval: Duration::from_millis(200),
        max_ping_strikes: 0,
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let client_config = Config {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let (a, b) = tokio::io::duplex(64 << 10);
    let server = Connection::builder().config(server_config).bootstrap(FloodProxy::new(Adder)).open(a);
    let client = Connection::builder().config(client_config).open(b);
    let (server, client) = tokio::try_join!(server, client).expect("handshake");
    let add: FloodProxy = client.bootstrap();
    // A minute of idling (about 300 pings each way), with calls now and then.
    for round in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if round % 10 == 0 {
            assert_eq!(add.add(round, 1).await.expect("add"), round + 1);
        }
    }
    assert_open(&server);
    assert_open(&client);
}
