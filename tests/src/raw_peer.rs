//! A hostile peer's tools: a raw TCP client that does the handshake by hand
//! and sends frames built from the [`crate::wire_mirror`] types (or raw
//! bytes), the framing helpers it uses, and a real server on loopback for it
//! to talk to.
//!
//! The raw client says nonce [`CLIENT_NONCE`](crate::raw_peer::CLIENT_NONCE)
//! in its Hello, so a server (whose random nonce is all but surely larger)
//! numbers its streams odd and the raw client uses even ids such as
//! [`OUR_STREAM`](crate::raw_peer::OUR_STREAM). Every read is bounded by
//! [`READ_TIMEOUT`](crate::raw_peer::READ_TIMEOUT) and every loop by a count.

use std::net::SocketAddr;
use std::time::Duration;

use rpc_core::{Capability, Config, Limits, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::wire_mirror::{call, encode, CapDesc, Kind, Msg, WireError, WireHello, WireLimits, BOOTSTRAP, MAGIC};

/// What the raw client advertises: roomy, so the server never holds back on our account.
pub const CLIENT_LIMITS: WireLimits = WireLimits {
    max_frame_size: 1 << 20,
    max_outstanding_calls: 64,
    max_exports: 64,
    max_depth: 64,
    max_decoded_size: 4 << 20,
    max_stream_window: 65_536,
    max_stream_window_bytes: 16 << 20,
};

/// The nonce in the raw client's Hello.
pub const CLIENT_NONCE: u64 = 0x5eed;

/// A stream id of the raw client's parity: the server, whose random nonce is
/// all but surely above ours, numbers its streams odd.
pub const OUR_STREAM: u32 = 2;

/// Upper bound for any single wait on the network.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on frames read while looking for one in particular.
pub const MAX_FRAMES: usize = 64;

/// A server configuration with `limits`, and keepalive slow enough that no
/// keepalive close happens during a test.
pub fn server_config(limits: Limits) -> Config {
    Config {
        limits,
        // Long enough that no keepalive close happens during a test.
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A real server on TCP loopback, on a runtime of its own: if a hostile frame
/// wedges one of its threads, the test's own runtime (and its timeouts) still
/// run. Dropping it stops the server without waiting for it.
pub struct LoopbackServer {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<Runtime>,
    task: JoinHandle<std::io::Result<()>>,
}

impl LoopbackServer {
    /// Serves `factory()`'s capability as the bootstrap of every connection, with `config`.
    pub fn start<C, F>(config: Config, factory: F) -> LoopbackServer
    where
        C: Capability,
        F: Fn() -> C + Send + 'static,
    {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build().expect("server runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let task = runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener)?;
            rpc_core::serve_with(listener, config, factory).await
        });
        LoopbackServer { addr, runtime: Some(runtime), task }
    }

    /// The accept loop still runs.
    pub fn assert_serving(&self) {
        assert!(!self.task.is_finished(), "the accept loop stopped");
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(runtime) = self.runtime.take() {
            // Never waits: a wedged server thread must not hang the test.
            runtime.shutdown_background();
        }
    }
}

/// The server's bootstrap, as far as [`RawPeer::assert_usable`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    /// The bootstrap's interface id.
    pub interface: u64,
    /// A method of that interface taking `(a: i64, b: i64)` and answering `a + b`.
    pub add: u16,
}

/// A connection to a real server, spoken to with hand-made frames.
pub struct RawPeer {
    /// The socket, after the handshake.
    pub stream: TcpStream,
    /// The Hello the server sent.
    pub server_hello: WireHello,
    /// The server's bootstrap, for [`RawPeer::assert_usable`].
    pub bootstrap: Bootstrap,
    /// Window updates for this stream are skipped while waiting for a `Return`.
    pub skip_windows_of: Option<u32>,
}

/// Connects and does the handshake by hand: sends our Hello, then checks the
/// server's magic, version and that it advertises `server_limits`.
pub async fn handshake(addr: SocketAddr, server_limits: Limits, bootstrap: Bootstrap) -> RawPeer {
    let mut stream = raw_connect(addr).await;
    let ours = WireHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: CLIENT_NONCE,
    };
    send_frame_on(&mut stream, &encode(&ours)).await;
    let frame = read_frame_on(&mut stream).await.expect("the server closed during the handshake");
    let server_hello: WireHello = postcard::from_bytes(&frame).expect("the server's Hello decodes");
    assert_eq!(server_hello.magic, MAGIC);
    assert_eq!(server_hello.version, PROTOCOL_VERSION);
    assert_eq!(server_hello.limits, WireLimits::from(server_limits));
    RawPeer { stream, server_hello, bootstrap, skip_windows_of: None }
}

/// A TCP connection to `addr` with Nagle off, no handshake.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = timeout(READ_TIMEOUT, TcpStream::connect(addr)).await.expect("connect timed out").expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Writes `bytes` as they are.
pub async fn send_bytes_on(stream: &mut TcpStream, bytes: &[u8]) {
    timeout(READ_TIMEOUT, stream.write_all(bytes)).await.expect("write timed out").expect("write");
}

/// `body` with its little-endian `u32` length prefix.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Writes `body` as one frame.
pub async fn send_frame_on(stream: &mut TcpStream, body: &[u8]) {
    send_bytes_on(stream, &framed(body)).await;
}

/// One frame, or `None` at end of stream (a reset counts as the end too).
/// Panics if nothing arrives within [`READ_TIMEOUT`].
pub async fn read_frame_on(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < prefix.len() {
            match stream.read(&mut prefix[got..]).await {
                Ok(0) if got == 0 => return None,
                Ok(0) => panic!("end of stream inside a length prefix"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read error: {e}"),
            }
        }
        let len = u32::from_le_bytes(prefix);
        assert!(len <= CLIENT_LIMITS.max_frame_size, "the server sent a frame of {len} bytes");
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await.expect("frame body");
        Some(body)
    };
    timeout(READ_TIMEOUT, read).await.expect("no frame from the server within the timeout")
}

impl RawPeer {
    /// Skips window updates for `stream` while waiting for a `Return` (for
    /// tests whose uploads the server acknowledges along the way).
    pub fn skipping_windows_of(mut self, stream: u32) -> Self {
        self.skip_windows_of = Some(stream);
        self
    }

    /// Writes `bytes` as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        send_bytes_on(&mut self.stream, bytes).await;
    }

    /// Writes `body` as one frame.
    pub async fn send_frame(&mut self, body: &[u8]) {
        send_frame_on(&mut self.stream, body).await;
    }

    /// Sends `msg` with `payload` after its header, in one frame.
    pub async fn send(&mut self, msg: &Msg, payload: &[u8]) {
        let mut body = encode(msg);
        body.extend_from_slice(payload);
        self.send_frame(&body).await;
    }

    /// One frame, or `None` at end of stream; see [`read_frame_on`].
    pub async fn read_frame(&mut self) -> Option<Vec<u8>> {
        read_frame_on(&mut self.stream).await
    }

    /// The next message other than keepalive traffic, with its payload bytes;
    /// `None` at end of stream.
    pub async fn next_message(&mut self) -> Option<(Msg, Vec<u8>)> {
        for _ in 0..MAX_FRAMES {
            let frame = self.read_frame().await?;
            let (msg, rest) = postcard::take_from_bytes::<Msg>(&frame)
                .unwrap_or_else(|e| panic!("the server sent an undecodable frame {frame:?}: {e}"));
            match msg {
                Msg::Ping(_) | Msg::Pong(_) => continue,
                msg => return Some((msg, rest.to_vec())),
            }
        }
        panic!("more than {MAX_FRAMES} keepalive frames in a row");
    }

    /// The next message (after window updates of [`RawPeer::skip_windows_of`],
    /// if set) must be the `Return` for `question`.
    pub async fn expect_return(&mut self, question: u32) -> Result<(Vec<CapDesc>, Vec<u8>), WireError> {
        for _ in 0..MAX_FRAMES {
            match self.next_message().await {
                Some((Msg::StreamWindow { stream, .. }, _)) if Some(stream) == self.skip_windows_of => continue,
                Some((Msg::Return { question: q, result }, payload)) if q == question => {
                    return result.map(|caps| (caps, payload))
                }
                other => panic!("expected the Return for question {question}, got {other:?}"),
            }
        }
        panic!("no Return for question {question} within {MAX_FRAMES} frames");
    }

    /// The next message must be a successful `Return` for `question`; decodes its value.
    pub async fn expect_value<T: DeserializeOwned>(&mut self, question: u32) -> T {
        let (caps, payload) =
            self.expect_return(question).await.unwrap_or_else(|e| panic!("question {question} failed: {e:?}"));
        assert!(caps.is_empty(), "unexpected capabilities {caps:?}");
        postcard::from_bytes(&payload).expect("result decodes")
    }

    /// The next message must be an error `Return` for `question` of `kind`.
    pub async fn expect_error(&mut self, question: u32, kind: Kind) -> WireError {
        match self.expect_return(question).await {
            Ok(ok) => panic!("question {question} succeeded ({ok:?}), expected a {kind:?} error"),
            Err(err) => {
                assert_eq!(err.kind, kind, "{err:?}");
                err
            }
        }
    }

    /// A round trip through the connection: `add` on the bootstrap answers.
    pub async fn assert_usable(&mut self, question: u32) {
        let Bootstrap { interface, add } = self.bootstrap;
        self.send(&call(question, BOOTSTRAP, interface, add), &encode(&(20i64, 3i64))).await;
        assert_eq!(self.expect_value::<i64>(question).await, 23);
    }

    /// Reads (skipping other messages) until an `Abort`, checks its reason,
    /// then requires the end of the stream. Returns the reason.
    pub async fn expect_close_with(&mut self, reason: &str) -> WireError {
        for _ in 0..MAX_FRAMES {
            match self.next_message().await {
                Some((Msg::Abort(err), _)) => {
                    assert!(err.message.contains(reason), "close reason {:?} does not mention {reason:?}", err.message);
                    self.expect_eof().await;
                    return err;
                }
                Some(_) => continue,
                None => panic!("the connection ended without an Abort (expected one mentioning {reason:?})"),
            }
        }
        panic!("no Abort within {MAX_FRAMES} frames");
    }

    /// The server closes its end (skipping keepalive traffic).
    pub async fn expect_eof(&mut self) {
        if let Some(msg) = self.next_message().await {
            panic!("expected the end of the stream, got {msg:?}");
        }
    }
}

/// VmPeak of this process in KiB, where /proc exists.
pub fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
