//! Accepting: a server survives accept errors (with a growing pause between
//! retries), its factory sees each peer's address and live connection and
//! may refuse it, and a client holds its `Connection` and passes a `Config`.

mod server_support;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, ErrorKind, Limits, RpcError, Server};
use server_support::{scripted_listener, within};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[eventual]
pub trait Greeter {
    /// Says hello, naming the peer address the server saw.
    fn hello(&self) -> String;
}

struct Host(String);

impl Greeter for Host {
    fn hello(&self) -> String {
        format!("hello, {}", self.0)
    }
}

fn emfile() -> io::Error {
    io::Error::from_raw_os_error(24) // EMFILE: too many open files
}

#[tokio::test(start_paused = true)]
async fn accept_errors_are_survived_with_a_growing_pause() {
    let (listener, dialer) = scripted_listener();
    let server = Server::new(listener)
        .spawn(|incoming| Ok::<_, RpcError>(GreeterProxy::new(Host(incoming.peer_addr().clone()))));

    // Five failures in a row, then a good connection.
    for _ in 0..5 {
        dialer.fail_next(emfile());
    }
    dialer.fail_next(io::Error::from(io::ErrorKind::ConnectionAborted));
    let began = Instant::now();
    let connection = within("connect after errors", dialer.connect()).await.expect("connect");
    let greeter: GreeterProxy = connection.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, pipe-1");
    assert_eq!(dialer.accepts(), 7, "six failed accepts and one good one");
    // The pauses: 5, 10, 20, 40, 80 and 160 ms, before the good connection was taken.
    let waited = began.elapsed();
    assert!(waited >= Duration::from_millis(315), "retried after only {waited:?}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");

    // A success resets the pause; later errors are survived too.
    dialer.fail_next(emfile());
    let second = within("connect again", dialer.connect()).await.expect("connect");
    let greeter: GreeterProxy = second.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, pipe-2");
    // The first connection was never disturbed.
    let first: GreeterProxy = connection.bootstrap();
    assert_eq!(within("hello", first.hello()).await.unwrap(), "hello, pipe-1");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(start_paused = true)]
async fn the_pause_is_capped_and_shutdown_interrupts_it() {
    let (listener, dialer) = scripted_listener();
    let server = Server::new(listener).spawn(|_| Ok::<_, RpcError>(GreeterProxy::new(Host("x".into()))));
    for _ in 0..20 {
        dialer.fail_next(emfile());
    }
    let began = Instant::now();
    for _ in 0..2_000 {
        if dialer.accepts() == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 5 ms doubling to a 1 s cap between the 20 failures: 5+10+...+640 ms,
    // then 11 pauses of 1 s (12.275 s).
    let waited = began.elapsed();
    assert_eq!(dialer.accepts(), 20);
    assert!(waited >= Duration::from_millis(12_275) && waited < Duration::from_millis(12_300), "waited {waited:?}");
    let connection = within("connect after many errors", dialer.connect()).await.expect("connect");
    drop(connection);
    // A shutdown during a pause is not held up by it.
    dialer.fail_next(emfile());
    tokio::time::sleep(Duration::from_millis(1)).await;
    let began = Instant::now();
    within("shutdown", server.shutdown()).await;
    assert!(began.elapsed() < Duration::from_millis(5), "shutdown waited {:?}", began.elapsed());
}

#[tokio::test]
async fn the_factory_sees_the_peer_address_and_the_connection() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<(SocketAddr, Limits)>>> = Arc::default();
    let log = seen.clone();
    let server = Server::new(tcp).spawn(move |incoming| {
        let peer = *incoming.peer_addr();
        log.lock().unwrap().push((peer, incoming.connection().peer_limits()));
        Ok::<_, RpcError>(GreeterProxy::new(Host(peer.to_string())))
    });

    // A client with its own limits, so the server's view of the connection can be checked.
    let mut config = Config::default();
    config.limits.max_frame_size = 123_456;
    let stream = within("tcp", TcpStream::connect(addr)).await.expect("tcp");
    let client_addr = stream.local_addr().expect("local addr");
    let connection = within("open", Connection::builder().config(config).open(stream)).await.expect("open");
    let greeter: GreeterProxy = connection.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), format!("hello, {client_addr}"));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, client_addr);
    assert_eq!(seen[0].1.max_frame_size, 123_456);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn the_factory_can_refuse_a_connection_with_a_reason_the_peer_sees() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = Server::new(tcp).spawn(move |incoming| {
        // Every second connection is refused.
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 1 {
            return Err(RpcError::disconnected(format!("{} is not on the list", incoming.peer_addr().ip())));
        }
        Ok(GreeterProxy::new(Host("welcome".into())))
    });
    let welcome = within("connect", Connection::connect(addr)).await.expect("connect");
    let refused = within("connect", Connection::connect(addr)).await.expect("the handshake itself succeeds");

    // Calls made on the refused connection fail with the factory's reason.
    let greeter: GreeterProxy = refused.bootstrap();
    let err = within("refused hello", greeter.hello()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    assert!(err.message().contains("127.0.0.1 is not on the list"), "{err}");
    assert!(within("closed", refused.closed()).await.message().contains("is not on the list"));

    // The other connection is unaffected.
    let greeter: GreeterProxy = welcome.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, welcome");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn calls_made_before_the_factory_returns_wait_for_it_in_order() {
    let (listener, dialer) = scripted_listener();
    let server = Server::new(listener)
        .spawn(|incoming| Ok::<_, RpcError>(GreeterProxy::new(Host(incoming.peer_addr().clone()))));
    let connection = within("connect", dialer.connect()).await.expect("connect");
    let greeter: GreeterProxy = connection.bootstrap();
    // Sent together right after the handshake, before the server's task can have run the factory.
    let calls: Vec<_> = (0..10).map(|_| greeter.hello()).collect();
    for call in calls {
        assert_eq!(within("hello", call).await.unwrap(), "hello, pipe-1");
    }
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn a_client_holds_its_connection_and_passes_a_config() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let server_connections: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let keep = server_connections.clone();
    let mut server_config = Config::default();
    server_config.limits.max_frame_size = 654_321;
    let server = Server::new(tcp).config(server_config).spawn(move |incoming| {
        keep.lock().unwrap().push(incoming.connection().clone());
        Ok::<_, RpcError>(GreeterProxy::new(Host("client".into())))
    });

    let config = Config {
        keepalive_interval: Duration::from_secs(2),
        keepalive_timeout: Duration::from_secs(6),
        ..Config::default()
    };
    let connection = within("connect", Connection::builder().config(config).connect(addr)).await.expect("connect");
    assert_eq!(connection.peer_limits().max_frame_size, 654_321, "the server's config reached the client");
    let greeter: GreeterProxy = connection.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, client");

    // `rpc_core::connect` still hands back the bootstrap directly.
    let direct: GreeterProxy = within("connect", rpc_core::connect(addr)).await.expect("connect");
    assert_eq!(within("hello", direct.hello()).await.unwrap(), "hello, client");

    // The client closes on purpose; the server's connection sees it.
    connection.close();
    let server_side = server_connections.lock().unwrap()[0].clone();
    let reason = within("server side closed", server_side.closed()).await;
    assert!(reason.message().contains("closed on purpose"), "{reason}");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn a_factory_that_panics_refuses_that_connection_only() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = Server::new(tcp).spawn(move |_| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("no database");
        }
        Ok::<_, RpcError>(GreeterProxy::new(Host("second".into())))
    });
    let first = within("connect", Connection::connect(addr)).await.expect("connect");
    let reason = within("closed", first.closed()).await;
    assert!(reason.message().contains("factory panicked: no database"), "{reason}");
    let second = within("connect", Connection::connect(addr)).await.expect("connect");
    let greeter: GreeterProxy = second.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, second");
    within("shutdown", server.shutdown()).await;
}
