//! A call or reply too large for the peer's advertised frame limit fails
//! alone, with a reason, and the connection stays up; a peer that closes the
//! connection with a reason has every pending call and stream see it.
//!
//! Most tests give one side a small `max_frame_size` (256 KiB) to stay fast;
//! one sends the 64 MiB argument of the original report against the default
//! 16 MiB. Every wait is bounded by a timeout and every loop by a count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, ErrorKind, Limits, RpcError, Sequence, SequenceWriter};
use rpc_tests::raw_peer::{framed, CLIENT_NONCE};
use rpc_tests::wire_mirror::{encode, Kind, Msg, WireError, WireHello, WireLimits, MAGIC};
use rpc_tests::{DropCounter, DropToken};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

#[eventual]
pub trait Store {
    /// How many bytes arrived.
    fn size(&self, data: Vec<u8>) -> u64;
    /// `n` bytes back.
    fn make(&self, n: u64) -> Vec<u8>;
    /// Calls `tag` on the capability, then returns `data.len()`.
    async fn hold(&self, tag: TagProxy, data: Vec<u8>) -> Result<u64, RpcError>;
    /// Reads the sequence to its end; returns `data.len()` plus the item count.
    async fn drain(&self, items: Sequence<u64>, data: Vec<u8>) -> Result<u64, RpcError>;
    /// A capability with `n` bytes of padding in the same reply.
    fn tagged(&self, n: u64) -> (TagProxy, Vec<u8>);
    /// Never answers by itself (until the connection goes).
    async fn wait(&self) -> u32;
    /// A sequence nothing is ever written to.
    fn silent(&self) -> Sequence<u64>;
}

#[eventual]
pub trait Tag {
    fn tag(&self) -> u32;
}

struct Tagged(#[allow(dead_code)] DropToken);

impl Tag for Tagged {
    fn tag(&self) -> u32 {
        7
    }
}

#[derive(Default)]
struct Server {
    drops: DropCounter,
    /// Writers of `silent` sequences, kept so they never end by themselves.
    writers: Mutex<Vec<SequenceWriter<u64>>>,
}

impl Store for Arc<Server> {
    fn size(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }

    fn make(&self, n: u64) -> Vec<u8> {
        vec![0xab; n as usize]
    }

    async fn hold(&self, tag: TagProxy, data: Vec<u8>) -> Result<u64, RpcError> {
        assert_eq!(tag.tag().await?, 7);
        Ok(data.len() as u64)
    }

    async fn drain(&self, mut items: Sequence<u64>, data: Vec<u8>) -> Result<u64, RpcError> {
        let mut n = 0;
        while items.read().await?.is_some() {
            n += 1;
        }
        Ok(data.len() as u64 + n)
    }

    fn tagged(&self, n: u64) -> (TagProxy, Vec<u8>) {
        (TagProxy::new(Tagged(self.drops.token())), vec![1; n as usize])
    }

    async fn wait(&self) -> u32 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        0
    }

    fn silent(&self) -> Sequence<u64> {
        let (writer, reader) = Sequence::channel();
        self.writers.lock().unwrap().push(writer);
        reader
    }
}

const SMALL: u32 = 256 << 10;

fn small_frames() -> Config {
    Config { limits: Limits { max_frame_size: SMALL, ..Limits::default() }, ..Config::default() }
}

/// A server with `server` settings and a client with `client` settings over `a`/`b`.
async fn pair<IO>(a: IO, b: IO, server: Config, client: Config) -> (Arc<Server>, Connection, Connection, StoreProxy)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let object = Arc::new(Server::default());
    let server = Connection::builder().config(server).bootstrap(StoreProxy::new(object.clone())).open(a);
    let client = Connection::builder().config(client).open(b);
    let (server, client) = timeout(Duration::from_secs(10), async { tokio::try_join!(server, client) })
        .await
        .expect("handshake timed out")
        .expect("handshake");
    let store = client.bootstrap();
    (object, server, client, store)
}

async fn tcp_streams() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted, connected) = tokio::join!(listener.accept(), TcpStream::connect(addr));
    let (a, b) = (accepted.expect("accept").0, connected.expect("connect"));
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    timeout(Duration::from_secs(30), future).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

fn assert_too_large(err: &RpcError, size: usize, limit: u32) {
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    let message = err.message();
    assert!(message.contains(&size.to_string()), "the error names the size {size}: {message}");
    assert!(message.contains(&limit.to_string()), "the error names the limit {limit}: {message}");
    assert!(message.contains("Bytes") && message.contains("Sequence"), "the error points at streams: {message}");
}

// ----- oversized calls ---------------------------------------------------------

async fn oversized_argument_fails_alone<IO: AsyncRead + AsyncWrite + Send + 'static>(a: IO, b: IO) {
    let (_object, _server, client, store) = pair(a, b, small_frames(), Config::default()).await;
    assert_eq!(client.peer_limits().max_frame_size, SMALL);
    let big = 4 * SMALL as usize;
    // The postcard length prefix of a Vec of 1 MiB takes 3 bytes.
    let err = within("oversized call", store.size(vec![0; big])).await.expect_err("too large for the peer");
    assert_too_large(&err, big + 3, SMALL);
    // The connection is up: a later call (also one just under the limit) works.
    assert_eq!(within("small call", store.size(vec![1; 1000])).await.expect("small call"), 1000);
    let near = SMALL as usize - 64;
    assert_eq!(within("near-limit call", store.size(vec![1; near])).await.expect("near-limit call"), near as u64);
}

#[tokio::test]
async fn oversized_argument_fails_alone_over_duplex() {
    let (a, b) = tokio::io::duplex(64 << 10);
    oversized_argument_fails_alone(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_argument_fails_alone_over_tcp() {
    let (a, b) = tcp_streams().await;
    oversized_argument_fails_alone(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_argument_against_the_default_16_mib_limit_fails_alone() {
    let (a, b) = tcp_streams().await;
    let (_object, _server, client, store) = pair(a, b, Config::default(), Config::default()).await;
    let limit = client.peer_limits().max_frame_size;
    assert_eq!(limit, 16 << 20);
    for round in 0..3 {
        let err = within("64 MiB call", store.size(vec![0; 64 << 20])).await.expect_err("too large");
        // 64 MiB of bytes plus a 4-byte length prefix.
        assert_too_large(&err, (64 << 20) + 4, limit);
        assert_eq!(within("later call", store.size(vec![0; round])).await.expect("later call"), round as u64);
    }
}

#[tokio::test]
async fn oversized_reply_becomes_limit_exceeded_and_the_connection_stays() {
    let (a, b) = tokio::io::duplex(64 << 10);
    // The client accepts small frames; the server must not send it a big one.
    let (_object, server, _client, store) = pair(a, b, Config::default(), small_frames()).await;
    assert_eq!(server.peer_limits().max_frame_size, SMALL);
    let big = 2 * SMALL as usize;
    let err = within("oversized reply", store.make(big as u64)).await.expect_err("too large for the caller");
    assert_too_large(&err, big + 3, SMALL);
    assert_eq!(within("small reply", store.make(10)).await.expect("small reply").len(), 10);
}

#[tokio::test]
async fn oversized_reply_with_a_capability_releases_its_export() {
    let (a, b) = tokio::io::duplex(64 << 10);
    let (object, _server, _client, store) = pair(a, b, Config::default(), small_frames()).await;
    let err = within("oversized reply", store.tagged(2 * SMALL as u64)).await.expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    // The capability made for the reply was exported and taken back: dropped.
    assert!(object.drops.wait_for(1).await, "the capability of the failed reply leaked");
    let (tag, pad) = within("small reply", store.tagged(10)).await.expect("small reply");
    assert_eq!((within("tag", tag.tag()).await.expect("tag"), pad.len()), (7, 10));
}

/// Arguments of every size around the limit, each with a fresh capability:
/// some fit, some fail (on the header's last bytes too), and no export of a
/// failed call leaks.
#[tokio::test]
async fn near_limit_calls_with_capabilities_never_leak_exports() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (_object, _server, _client, store) = pair(a, b, small_frames(), Config::default()).await;
    let drops = DropCounter::default();
    let (mut fitted, mut failed) = (0, 0);
    let sizes = (SMALL as usize - 48)..(SMALL as usize + 4);
    let total = sizes.len();
    for n in sizes {
        let tag = TagProxy::new(Tagged(drops.token()));
        match within("near-limit call", store.hold(tag, vec![0; n])).await {
            Ok(len) => {
                assert_eq!(len, n as u64);
                fitted += 1;
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
                failed += 1;
            }
        }
    }
    assert!(fitted > 0 && failed > 0, "fitted {fitted}, failed {failed}");
    assert!(drops.wait_for(total).await, "{} of {total} capabilities dropped", drops.count());
    let tag = TagProxy::new(Tagged(drops.token()));
    assert_eq!(within("call after", store.hold(tag, vec![0; 10])).await.expect("call after"), 10);
}

/// The same with a sequence among the arguments: the writer we keep sees a
/// failed call's error instead of waiting forever.
#[tokio::test]
async fn near_limit_calls_with_a_sequence_end_the_sequence_with_the_error() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (_object, _server, _client, store) = pair(a, b, small_frames(), Config::default()).await;
    let (mut fitted, mut failed) = (0, 0);
    for n in (SMALL as usize - 48)..(SMALL as usize + 4) {
        let (mut writer, items) = Sequence::channel();
        let reply = store.drain(items, vec![0; n]);
        // The call went out (or failed) at once: so did the sequence.
        let wrote = writer.write(1);
        let flushed = within("flush", writer.flush()).await;
        let closed = within("close", writer.close(None)).await;
        match within("near-limit call", reply).await {
            Ok(len) => {
                wrote.and(flushed).and(closed).expect("writing to a sequence the server reads");
                assert_eq!(len, n as u64 + 1);
                fitted += 1;
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
                let seen = wrote.and(flushed).and(closed).expect_err("the writer of a failed call's sequence fails");
                assert_eq!(seen.kind(), ErrorKind::LimitExceeded, "{seen}");
                failed += 1;
            }
        }
    }
    assert!(fitted > 0 && failed > 0, "fitted {fitted}, failed {failed}");
    assert_eq!(within("call after", store.size(vec![0; 10])).await.expect("call after"), 10);
}

// ----- a peer that closes with a reason ------------------------------------------

/// The client has calls pending, a sequence open and large calls streaming
/// out when the server closes on purpose. Everything pending sees the
/// server's reason, never an I/O error of our own write.
async fn close_reaches_pending_calls<IO: AsyncRead + AsyncWrite + Send + 'static>(a: IO, b: IO) {
    let (_object, server, client, store) = pair(a, b, Config::default(), Config::default()).await;
    let waiting: Vec<_> = (0..8).map(|_| store.wait()).collect();
    let mut silent = store.silent();
    // Keep our writer busy: calls of 512 KiB each, back to back.
    let uploads: Vec<_> = (0..8).map(|_| store.size(vec![0; 512 << 10])).collect();
    // Let some of it reach the server, then close there.
    assert_eq!(within("first upload", store.size(vec![0; 10])).await.expect("first upload"), 10);
    server.close();
    let check = |what: &str, err: RpcError| {
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{what}: {err}");
        assert!(err.message().contains("closed on purpose"), "{what} saw {err}, not the peer's reason");
    };
    for call in waiting {
        check("a pending call", within("pending call", call).await.expect_err("the connection closed"));
    }
    let read = within("sequence read", silent.read()).await;
    check("an open sequence", read.expect_err("the connection closed"));
    for call in uploads {
        // An upload may have been answered before the close.
        if let Err(err) = within("upload", call).await {
            check("an upload", err);
        }
    }
    check("the connection", within("closed", client.closed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_with_a_reason_reaches_every_pending_call_over_tcp() {
    for _ in 0..20 {
        let (a, b) = tcp_streams().await;
        close_reaches_pending_calls(a, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_with_a_reason_reaches_every_pending_call_over_duplex() {
    for _ in 0..20 {
        let (a, b) = tokio::io::duplex(64 << 10);
        close_reaches_pending_calls(a, b).await;
    }
}

/// A hand-made server that lets the client's writes pile up unread, then
/// sends an `Abort` and drops the connection with the client's data unread
/// (a reset, on TCP): the client's write fails at about the moment its
/// reader finds the `Abort`. The client must report the `Abort`'s reason.
async fn abort_reaches_pending_calls<IO: AsyncRead + AsyncWrite + Send + Unpin + 'static>(raw: IO, b: IO) {
    let (client_ready, ready) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut raw = raw;
        let hello = WireHello {
            magic: MAGIC,
            version: rpc_core::PROTOCOL_VERSION,
            limits: WireLimits::from(Limits::default()),
            offers_bootstrap: true,
            nonce: CLIENT_NONCE,
        };
        raw.write_all(&framed(&encode(&hello))).await.expect("hello");
        let mut prefix = [0u8; 4];
        raw.read_exact(&mut prefix).await.expect("client hello");
        let mut body = vec![0; u32::from_le_bytes(prefix) as usize];
        raw.read_exact(&mut body).await.expect("client hello");
        let _ = timeout(Duration::from_secs(10), ready).await;
        // Give the client's writer time to fill the pipe (not a speed check).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reason = WireError { kind: Kind::Protocol, message: "down for maintenance".into(), payload: None };
        raw.write_all(&framed(&encode(&Msg::Abort(reason)))).await.expect("abort");
        raw.flush().await.expect("flush");
        // Dropped with the client's calls unread.
    });
    let client = within("handshake", Connection::builder().open(b)).await.expect("handshake");
    let store: StoreProxy = client.bootstrap();
    let waiting: Vec<_> = (0..8).map(|_| store.wait()).collect();
    let mut silent = store.silent();
    let uploads: Vec<_> = (0..16).map(|_| store.size(vec![0; 512 << 10])).collect();
    client_ready.send(()).expect("server waits");
    let check = |what: &str, err: RpcError| {
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{what}: {err}");
        assert!(err.message().contains("down for maintenance"), "{what} saw {err}, not the peer's reason");
    };
    for call in waiting {
        check("a pending call", within("pending call", call).await.expect_err("the connection closed"));
    }
    for call in uploads {
        check("a pending upload", within("pending upload", call).await.expect_err("the connection closed"));
    }
    check("an open sequence", within("sequence read", silent.read()).await.expect_err("the connection closed"));
    check("the connection", within("closed", client.closed()).await);
    server.await.expect("raw server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_racing_our_failed_write_is_what_calls_see_over_tcp() {
    for _ in 0..20 {
        let (a, b) = tcp_streams().await;
        abort_reaches_pending_calls(a, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_racing_our_failed_write_is_what_calls_see_over_duplex() {
    for _ in 0..20 {
        let (a, b) = tokio::io::duplex(64 << 10);
        abort_reaches_pending_calls(a, b).await;
    }
}
