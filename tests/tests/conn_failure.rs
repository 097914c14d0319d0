//! Connection failure: pending calls end with `Disconnected` when the
//! connection goes (however it goes), keepalive catches a silent peer, a peer
//! of another protocol version is refused at the handshake, and connections
//! run over any byte stream with a bootstrap offered by either side.
//!
//! Time-sensitive tests run on tokio's paused clock, so "promptly" is exact:
//! no tokio time may pass. Every wait is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::FutureExt;
use rpc_core::{eventual, Config, Connection, ErrorKind, Limits, RpcError, PROTOCOL_VERSION};
use rpc_tests::{connect_pair, latency_pipe, DropCounter};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// Bound on any single wait in this file.
const LIMIT: Duration = Duration::from_secs(60);

#[eventual]
pub trait Stall {
    /// Never returns; the handler holds a drop token while it runs.
    async fn hang(&self, tag: u32) -> u32;
    fn ping(&self, x: u32) -> u32;
    fn name(&self) -> String;
}

struct Staller {
    name: String,
    /// One token per running `hang` handler: counts cancelled handlers.
    cancelled: DropCounter,
}

impl Staller {
    fn new(name: &str) -> Self {
        Staller { name: name.into(), cancelled: DropCounter::default() }
    }
}

impl Stall for Staller {
    async fn hang(&self, tag: u32) -> u32 {
        let _token = self.cancelled.token();
        std::future::pending::<()>().await;
        tag
    }
    fn ping(&self, x: u32) -> u32 {
        x
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

fn staller(name: &str) -> (StallProxy, DropCounter) {
    let staller = Staller::new(name);
    let cancelled = staller.cancelled.clone();
    (StallProxy::new(staller), cancelled)
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"))
}

fn assert_disconnected<T: std::fmt::Debug>(what: &str, result: Result<T, RpcError>) {
    match result {
        Err(err) => assert_eq!(err.kind(), ErrorKind::Disconnected, "{what}: {err}"),
        Ok(value) => panic!("{what}: succeeded with {value:?} after the connection went"),
    }
}

/// A connection pair over two duplex pipes joined by a relay task; aborting
/// the task drops the relay's ends, so the transport vanishes under both sides.
async fn relayed_pair(bootstrap: StallProxy, config: Config) -> (Connection, Connection, StallProxy, JoinHandle<()>) {
    let (server_io, mut relay_a) = tokio::io::duplex(1 << 16);
    let (mut relay_b, client_io) = tokio::io::duplex(1 << 16);
    let relay = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut relay_a, &mut relay_b).await;
    });
    let (server, client, stall) = connect_pair(server_io, client_io, bootstrap, config).await.expect("connect");
    (server, client, stall, relay)
}

// ----- 1: connection loss ends every pending promise -------------------------

#[derive(Clone, Copy, Debug)]
enum Kill {
    ServerClose,
    ClientClose,
    Transport,
}

async fn pending_calls_fail_promptly(kill: Kill) {
    let (bootstrap, cancelled) = staller("server");
    let (server, client, stall, relay) = relayed_pair(bootstrap, Config::default()).await;
    let pending: Vec<_> = (0..10).map(|tag| stall.hang(tag)).collect();
    // E-order: once this answer is back, every `hang` reached the server first.
    assert_eq!(within("ping", stall.ping(1)).await.unwrap(), 1);
    assert_eq!(cancelled.count(), 0);

    let start = Instant::now();
    match kill {
        Kill::ServerClose => server.close(),
        Kill::ClientClose => client.close(),
        Kill::Transport => relay.abort(),
    }
    let results = within("pending calls", futures::future::join_all(pending)).await;
    // On the paused clock no time may pass: nothing waited for a timer.
    assert!(start.elapsed() < Duration::from_millis(1), "{kill:?}: took {:?} of tokio time", start.elapsed());
    for (tag, result) in results.into_iter().enumerate() {
        assert_disconnected(&format!("{kill:?}: hang({tag})"), result);
    }
    for (side, conn) in [("server", &server), ("client", &client)] {
        let reason = within("closed", conn.closed()).await;
        assert_eq!(reason.kind(), ErrorKind::Disconnected, "{kill:?}: {side}: {reason}");
    }
    // Calls made after the close fail at once: no await needed.
    let late = stall.ping(2).now_or_never().expect("a call after close must fail at once");
    assert_disconnected(&format!("{kill:?}: late ping"), late);
    let late = stall.hang(3).now_or_never().expect("a call after close must fail at once");
    assert_disconnected(&format!("{kill:?}: late hang"), late);
    // The server's handlers saw the disconnection as a cancellation.
    assert!(cancelled.wait_for(10).await, "{kill:?}: {} of 10 handlers cancelled", cancelled.count());
}

#[tokio::test(start_paused = true)]
async fn pending_calls_fail_when_the_server_closes() {
    pending_calls_fail_promptly(Kill::ServerClose).await
}

#[tokio::test(start_paused = true)]
async fn pending_calls_fail_when_the_client_closes() {
    pending_calls_fail_promptly(Kill::ClientClose).await
}

#[tokio::test(start_paused = true)]
async fn pending_calls_fail_when_the_transport_is_dropped() {
    pending_calls_fail_promptly(Kill::Transport).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_calls_fail_when_the_server_closes_multi_thread() {
    // Real time here: "promptly" is a bound far below any keepalive timeout.
    let (bootstrap, cancelled) = staller("server");
    let (server, _client, stall, _relay) = relayed_pair(bootstrap, Config::default()).await;
    let pending: Vec<_> = (0..10).map(|tag| stall.hang(tag)).collect();
    assert_eq!(within("ping", stall.ping(1)).await.unwrap(), 1);
    let start = std::time::Instant::now();
    server.close();
    for (tag, result) in within("pending", futures::future::join_all(pending)).await.into_iter().enumerate() {
        assert_disconnected(&format!("hang({tag})"), result);
    }
    // Below the default keepalive timeout (15 s), so the close, not keepalive, ended them;
    // generous so a busy machine does not trip it.
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(cancelled.wait_for(10).await);
}

/// The server runs on its own runtime (a stand-in for its process) and is
/// shut down whole: its tasks and sockets vanish without a goodbye.
#[tokio::test]
async fn pending_calls_fail_when_the_server_process_goes_away() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let server_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
    let cancelled = DropCounter::default();
    let tokens = cancelled.clone();
    server_runtime.spawn(async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        let _ = rpc_core::serve(listener, move || {
            StallProxy::new(Staller { name: "process".into(), cancelled: tokens.clone() })
        })
        .await;
    });
    let stream = within("connect", tokio::net::TcpStream::connect(addr)).await.expect("connect");
    let client = within("open", Connection::builder().open(stream)).await.expect("open");
    let stall: StallProxy = client.bootstrap();
    assert_eq!(within("name", stall.name()).await.unwrap(), "process");
    let pending: Vec<_> = (0..10).map(|tag| stall.hang(tag)).collect();
    assert_eq!(within("ping", stall.ping(5)).await.unwrap(), 5);

    server_runtime.shutdown_background();
    let reason = within("client closed()", client.closed()).await;
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    for (tag, result) in within("pending", futures::future::join_all(pending)).await.into_iter().enumerate() {
        assert_disconnected(&format!("hang({tag})"), result);
    }
    assert_disconnected("late ping", stall.ping(6).now_or_never().expect("fails at once"));
    // The runtime went down with the handlers: their futures were dropped.
    assert!(cancelled.wait_for(10).await, "{} of 10 handlers dropped", cancelled.count());
}

// ----- 2: keepalive ------------------------------------------------------------

/// The fields of the `Hello` every connection opens with, as far as these
/// tests need them (a mirror of rpc-core's private type). Fields rpc-core may
/// append after these are carried through untouched by [`answer_hello`].
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    magic: [u8; 4],
    version: u32,
    limits: Limits,
    offers_bootstrap: bool,
    /// Random per connection; decides which side's stream ids are odd.
    nonce: u64,
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Reads one frame (bounded).
async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> Vec<u8> {
    let mut len = [0; 4];
    within("frame length", io.read_exact(&mut len)).await.expect("read length");
    let len = u32::from_le_bytes(len) as usize;
    assert!(len < 1024, "a handshake frame of {len} bytes");
    let mut body = vec![0; len];
    within("frame body", io.read_exact(&mut body)).await.expect("read body");
    body
}

/// The hand-made side of a handshake: reads the real side's Hello and answers
/// with a Hello offering a bootstrap, with `magic` and `version`. Anything the
/// real Hello holds after the mirrored fields is copied into the answer (a
/// leading `u64`, such as a tie-breaking nonce, with its low bit flipped so
/// the two sides differ). Returns the real side's Hello.
async fn answer_hello<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, magic: [u8; 4], version: u32) -> Hello {
    let body = read_frame(io).await;
    let (real, rest): (Hello, &[u8]) = postcard::take_from_bytes(&body).expect("decode the real Hello");
    let mut rest = rest.to_vec();
    if let Ok((nonce, tail)) = postcard::take_from_bytes::<u64>(&rest) {
        let mut changed = postcard::to_stdvec(&(nonce ^ 1)).expect("encode");
        changed.extend_from_slice(tail);
        rest = changed;
    }
    let ours = Hello { magic, version, limits: Limits::default(), offers_bootstrap: true, nonce: 0x5eed };
    let mut body = postcard::to_stdvec(&ours).expect("encode hello");
    body.extend_from_slice(&rest);
    io.write_all(&frame(&body)).await.expect("write hello");
    real
}

fn keepalive_config() -> Config {
    Config {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

/// Opens a real connection against a hand-made peer that answers the
/// handshake and then never writes again (keeping its end open). Returns the
/// connection, the peer's end, and the tokio time of the peer's last byte.
async fn open_against_silent_peer(config: Config) -> (Connection, DuplexStream, Instant) {
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let peer = async {
        let hello = answer_hello(&mut theirs, *b"EVRP", PROTOCOL_VERSION).await;
        (hello, Instant::now())
    };
    let (connection, (hello, last_byte)) = tokio::join!(Connection::builder().config(config).open(ours), peer);
    let connection = connection.expect("open");
    // The real side's Hello is what the mirror type describes.
    assert_eq!((hello.magic, hello.version, hello.offers_bootstrap), (*b"EVRP", PROTOCOL_VERSION, false));
    (connection, theirs, last_byte)
}

#[tokio::test(start_paused = true)]
async fn keepalive_detects_a_silent_peer() {
    let (connection, silent, last_byte) = open_against_silent_peer(keepalive_config()).await;
    let stall: StallProxy = connection.bootstrap();
    let pending = stall.ping(1);
    let reason = within("closed", connection.closed()).await;
    let at = last_byte.elapsed();
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    assert!(reason.message().contains("keepalive"), "reason does not mention keepalive: {reason}");
    assert!(at >= Duration::from_secs(3) && at < Duration::from_secs(4), "closed {at:?} after the last byte");
    // The pending call failed at that very moment, with the same reason.
    let err = pending.now_or_never().expect("the pending call is over when closed() resolves").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    assert!(err.message().contains("keepalive"), "{err}");
    assert_disconnected("late ping", stall.ping(2).now_or_never().expect("fails at once"));
    drop(silent);
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_the_peer_while_idle() {
    // The silent peer reads what we send: within 3 s of silence we must have
    // sent pings (so a healthy peer would have had something to answer).
    let (connection, mut silent, _) = open_against_silent_peer(keepalive_config()).await;
    let closed = connection.closed();
    tokio::pin!(closed);
    let mut seen = Vec::new();
    let start = Instant::now();
    for _ in 0..2 {
        let mut len = [0; 4];
        tokio::select! {
            read = silent.read_exact(&mut len) => { read.expect("read ping length"); }
            reason = &mut closed => panic!("closed before a ping was sent: {reason}"),
        }
        let mut body = vec![0; u32::from_le_bytes(len) as usize];
        silent.read_exact(&mut body).await.expect("read ping body");
        seen.push((start.elapsed(), body.len()));
    }
    assert!(seen.iter().all(|(at, _)| *at <= Duration::from_secs(3)), "pings at {seen:?}");
    assert!(seen[1].0 >= Duration::from_secs(1), "pings sent faster than the interval: {seen:?}");
}

#[tokio::test(start_paused = true)]
async fn keepalive_keeps_a_healthy_idle_pair_open() {
    let (bootstrap, cancelled) = staller("idle");
    let (a, b) = tokio::io::duplex(1 << 16);
    let (server, client, stall) = connect_pair(a, b, bootstrap, keepalive_config()).await.expect("connect");
    // A call in flight the whole time must not be failed either.
    let pending = stall.hang(1);
    assert_eq!(within("ping", stall.ping(1)).await.unwrap(), 1);
    let start = Instant::now();
    let either_closed = async {
        tokio::select! {
            reason = server.closed() => ("server", reason),
            reason = client.closed() => ("client", reason),
        }
    };
    if let Ok((side, reason)) = timeout(Duration::from_secs(30), either_closed).await {
        panic!("{side} closed after {:?} of idle time: {reason}", start.elapsed());
    }
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert_eq!(within("ping", stall.ping(2)).await.unwrap(), 2);
    assert_eq!(cancelled.count(), 0, "the pending handler was cancelled on a healthy connection");
    // Only now does it go.
    server.close();
    assert_disconnected("hang", within("hang", pending).await);
}

// ----- 3: version mismatch ------------------------------------------------------

#[tokio::test]
async fn a_peer_of_another_version_is_refused_at_open() {
    // We open against a hand-made peer speaking version 999...
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let (opened, _) = tokio::join!(Connection::builder().open(ours), answer_hello(&mut theirs, *b"EVRP", 999));
    let err = opened.expect_err("version 999 accepted");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    let text = err.to_string();
    assert!(text.contains("999"), "the peer's version is not named: {text}");
    assert!(text.contains(&format!("version {PROTOCOL_VERSION}")), "our version is not named: {text}");

    // ...and a server with a bootstrap refuses such a client the same way.
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let server = Connection::builder().bootstrap(staller("s").0).open(ours);
    let (opened, _) = tokio::join!(server, answer_hello(&mut theirs, *b"EVRP", 999));
    let err = opened.expect_err("version 999 accepted");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.message().contains("999") && err.message().contains(&PROTOCOL_VERSION.to_string()), "{err}");
}

#[tokio::test]
async fn a_peer_of_another_protocol_is_refused_at_open() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let (opened, _) =
        tokio::join!(Connection::builder().open(ours), answer_hello(&mut theirs, *b"HTTP", PROTOCOL_VERSION));
    let err = opened.expect_err("bad magic accepted");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    // Garbage that is not even a Hello.
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    theirs.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write garbage");
    let err = within("open", Connection::builder().open(ours)).await.expect_err("garbage accepted");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_hangs_up_or_stays_silent_during_the_handshake_fails_open() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    drop(theirs);
    let err = within("open", Connection::builder().open(ours)).await.expect_err("open without a peer");
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");

    let (ours, _silent) = tokio::io::duplex(1 << 16);
    let config = Config { handshake_timeout: Duration::from_secs(2), ..Config::default() };
    let start = Instant::now();
    let err = within("open", Connection::builder().config(config).open(ours)).await.expect_err("silent handshake");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

// ----- 4: the server going away closes the client --------------------------------

#[tokio::test(start_paused = true)]
async fn the_client_notices_when_the_server_closes() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (server, client, stall) = connect_pair(a, b, staller("s").0, Config::default()).await.expect("connect");
    assert_eq!(within("ping", stall.ping(1)).await.unwrap(), 1);
    let start = Instant::now();
    server.close();
    drop(server);
    let reason = within("closed", client.closed()).await;
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    assert!(reason.message().contains("peer"), "{reason}");
    assert!(start.elapsed() < Duration::from_millis(1), "took {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_server_without_bootstrap_that_drops_its_connection_closes_it() {
    // Nothing is served and nothing is imported: dropping the server's handle
    // leaves it idle, so it closes gracefully and the client notices.
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = Connection::builder().open(a);
    let client = Connection::builder().open(b);
    let (server, client) = tokio::try_join!(server, client).expect("connect");
    drop(server);
    let reason = within("closed", client.closed()).await;
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_drops_everything_closes_the_connection() {
    let (bootstrap, _) = staller("s");
    let (a, b) = tokio::io::duplex(1 << 16);
    let (server, client, stall) = connect_pair(a, b, bootstrap, Config::default()).await.expect("connect");
    drop(client);
    // The bootstrap import keeps the connection open...
    assert_eq!(within("ping", stall.ping(1)).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.closed().now_or_never().is_none(), "closed while the client still holds a proxy");
    // ...until it goes too.
    drop(stall);
    let reason = within("server closed", server.closed()).await;
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
}

// ----- 5: any AsyncRead + AsyncWrite ------------------------------------------------

async fn small_call_test(stall: &StallProxy, transport: &str) {
    assert_eq!(within("name", stall.name()).await.unwrap(), "over", "{transport}");
    let promises: Vec<_> = (0..50).map(|x| stall.ping(x)).collect();
    let answers: Vec<u32> =
        within("pings", futures::future::join_all(promises)).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers, (0..50).collect::<Vec<_>>(), "{transport}");
}

async fn over<IO: AsyncRead + AsyncWrite + Send + 'static>(a: IO, b: IO, transport: &str) {
    let (server, client, stall) = connect_pair(a, b, staller("over").0, Config::default()).await.expect(transport);
    small_call_test(&stall, transport).await;
    client.close();
    let reason = within("closed", server.closed()).await;
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{transport}: {reason}");
}

#[tokio::test]
async fn runs_over_an_in_memory_duplex() {
    let (a, b) = tokio::io::duplex(1 << 10);
    over(a, b, "duplex").await;
}

#[tokio::test(start_paused = true)]
async fn runs_over_a_latency_pipe() {
    let (a, b) = latency_pipe(Duration::from_millis(20));
    over(a, b, "latency pipe").await;
}

#[tokio::test]
async fn runs_over_a_unix_socket_pair() {
    let (a, b) = tokio::net::UnixStream::pair().expect("socket pair");
    over(a, b, "unix socket pair").await;
}

#[tokio::test]
async fn runs_over_tcp_loopback_with_serve_and_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let server = tokio::spawn(rpc_core::serve(listener, || staller("over").0));
    let stall: StallProxy = within("connect", rpc_core::connect(addr)).await.expect("connect");
    small_call_test(&stall, "tcp").await;
    // A second client of the same server gets its own bootstrap object.
    let other: StallProxy = within("connect", rpc_core::connect(addr)).await.expect("connect");
    small_call_test(&other, "tcp (second client)").await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_tcp_loopback_on_the_multi_thread_runtime() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(rpc_core::serve(listener, || staller("over").0));
    let stall: StallProxy = within("connect", rpc_core::connect(addr)).await.expect("connect");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let stall = stall.clone();
            tokio::spawn(async move { small_call_test(&stall, "tcp mt").await })
        })
        .collect();
    for task in tasks {
        within("task", task).await.expect("task");
    }
    server.abort();
}

// ----- 6: a bootstrap on either side ------------------------------------------------

#[tokio::test]
async fn both_sides_offer_a_bootstrap_and_call_each_other() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let left = Connection::builder().bootstrap(staller("left").0).open(a);
    let right = Connection::builder().bootstrap(staller("right").0).open(b);
    let (left, right) = within("open", async { tokio::try_join!(left, right) }).await.expect("open");
    let rights: StallProxy = left.bootstrap();
    let lefts: StallProxy = right.bootstrap();
    let (r, l) = tokio::join!(rights.name(), lefts.name());
    assert_eq!(r.unwrap(), "right");
    assert_eq!(l.unwrap(), "left");
    // Calls cross in both directions at once.
    let (r, l) = tokio::join!(rights.ping(1), lefts.ping(2));
    assert_eq!((r.unwrap(), l.unwrap()), (1, 2));
}

#[tokio::test]
async fn a_side_without_a_bootstrap_answers_unimplemented() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let offering = Connection::builder().bootstrap(staller("offering").0).open(a);
    let plain = Connection::builder().open(b);
    let (offering, plain) = within("open", async { tokio::try_join!(offering, plain) }).await.expect("open");
    // The plain side calls the offering side's bootstrap: fine.
    let theirs: StallProxy = plain.bootstrap();
    assert_eq!(within("name", theirs.name()).await.unwrap(), "offering");
    // The offering side calls the plain side's (absent) bootstrap.
    let nothing: StallProxy = offering.bootstrap();
    let err = within("name", nothing.name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unimplemented, "{err}");
    assert!(err.message().contains("bootstrap"), "{err}");
    // Pipelined and repeated calls fail the same way, and the connection survives.
    let err = within("ping", nothing.ping(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unimplemented, "{err}");
    assert_eq!(within("name", theirs.name()).await.unwrap(), "offering");
}
