//! Transports against misbehaving peers, over loopback: a client that
//! connects and never finishes the TLS or WebSocket handshake holds up only
//! itself; a WebSocket peer sending a text message is disconnected at once,
//! and one over the message limit is refused before its bytes are read. The server keeps serving everyone else.
//!
//! The server's handshake timeout is set far beyond the test's bound, so a
//! server that waited for it (instead of acting at once) fails the test.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rpc_core::transport::tls::{rustls, TlsListener};
use rpc_core::transport::ws::{tokio_tungstenite, WebSocketListener, MAX_INCOMING_MESSAGE};
use rpc_core::{eventual, Config, Connection, Listener, RpcError, Server, ServerHandle};
use rpc_tests::raw_peer::{framed, CLIENT_LIMITS, CLIENT_NONCE};
use rpc_tests::wire_mirror::{encode, WireHello, MAGIC};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Bound on every wait; well below the server's handshake timeout.
const LIMIT: Duration = Duration::from_secs(20);
/// The server's handshake timeout.
const SERVER_HANDSHAKE: Duration = Duration::from_secs(120);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

#[eventual]
pub trait Ping {
    fn ping(&self, x: u32) -> u32;
}

struct Pong;

impl Ping for Pong {
    fn ping(&self, x: u32) -> u32 {
        x
    }
}

async fn start<L: Listener>(make: impl FnOnce(TcpListener) -> L) -> (ServerHandle, std::net::SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let config = Config { handshake_timeout: SERVER_HANDSHAKE, ..Config::default() };
    let server = Server::new(make(tcp)).config(config).spawn(|_| Ok::<_, RpcError>(PingProxy::new(Pong)));
    (server, addr)
}

async fn assert_serves(connection: Connection, what: &str) {
    let ping: PingProxy = connection.bootstrap();
    assert_eq!(within(what, ping.ping(42)).await.unwrap(), 42, "{what}");
}

fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the certificate");
    let server =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key).expect("server config");
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test]
async fn a_silent_tls_client_holds_up_only_itself() {
    let (server_config, client_config) = tls_configs();
    let (server, addr) = start(|tcp| TlsListener::new(tcp, server_config)).await;
    // Connected, never says a word.
    let silent: Vec<TcpStream> = vec![within("tcp", TcpStream::connect(addr)).await.expect("tcp")];
    let connection =
        within("connect", Connection::builder().connect_tls(addr, "localhost", client_config)).await.expect("connect");
    assert_serves(connection, "a client after the silent one").await;
    drop(silent);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn a_silent_websocket_client_holds_up_only_itself() {
    let (server, addr) = start(WebSocketListener::new).await;
    let silent = within("tcp", TcpStream::connect(addr)).await.expect("tcp");
    let url = format!("ws://{addr}/");
    let connection = within("connect", Connection::builder().connect_websocket(&url)).await.expect("connect");
    assert_serves(connection, "a client after the silent one").await;
    drop(silent);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn a_websocket_peer_sending_text_is_disconnected() {
    let (server, addr) = start(WebSocketListener::new).await;
    let url = format!("ws://{addr}/");
    let socket = within("tcp", TcpStream::connect(addr)).await.expect("tcp");
    let (mut ws, _) = within("upgrade", tokio_tungstenite::client_async(url.as_str(), socket)).await.expect("upgrade");
    let _ = within("send", ws.send(Message::Text("hello".into()))).await;
    // The server's Hello may come first; then it hangs up (not after its handshake timeout).
    let binary = within("the server hangs up", binary_messages_until_the_end(&mut ws)).await;
    assert!(binary <= 1, "{binary} binary messages");
    let connection = within("connect", Connection::builder().connect_websocket(&url)).await.expect("connect");
    assert_serves(connection, "a client after the bad one").await;
    within("shutdown", server.shutdown()).await;
}

/// A message of `len` bytes starting with a valid client Hello, the rest
/// zeros: read, it completes the handshake and then breaks the protocol, so
/// the server answers with an `Abort` (a second binary message after its
/// Hello); refused unread, it gets no answer but the hang-up.
async fn binary_messages_after_a_hello_of(addr: std::net::SocketAddr, len: usize) -> usize {
    let hello = WireHello {
        magic: MAGIC,
        version: rpc_core::PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: CLIENT_NONCE,
    };
    let mut message = framed(&encode(&hello));
    message.resize(len, 0);
    let socket = within("tcp", TcpStream::connect(addr)).await.expect("tcp");
    let url = format!("ws://{addr}/");
    let (mut ws, _) = within("upgrade", tokio_tungstenite::client_async(url.as_str(), socket)).await.expect("upgrade");
    let _ = within("send", ws.send(Message::Binary(message.into()))).await;
    within("the server hangs up", binary_messages_until_the_end(&mut ws)).await
}

async fn binary_messages_until_the_end<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut binary = 0;
    for _ in 0..64 {
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => binary += 1,
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return binary,
        }
    }
    panic!("the server keeps talking");
}

#[tokio::test]
async fn websocket_messages_over_the_limit_are_refused_unread() {
    let (server, addr) = start(WebSocketListener::new).await;
    // At the limit: read, so the server's Abort follows its Hello.
    assert_eq!(binary_messages_after_a_hello_of(addr, MAX_INCOMING_MESSAGE).await, 2, "a message at the limit");
    // Over it: never read, only the server's Hello came.
    assert_eq!(binary_messages_after_a_hello_of(addr, MAX_INCOMING_MESSAGE + 1).await, 1, "a message over the limit");
    let url = format!("ws://{addr}/");
    let connection = within("connect", Connection::builder().connect_websocket(&url)).await.expect("connect");
    assert_serves(connection, "a client after the bad ones").await;
    within("shutdown", server.shutdown()).await;
}
