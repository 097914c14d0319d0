//! Accepting: a server survives accept errors (with a growing pause between
//! retries), its factory sees each peer's address and live connection and
//! may refuse it, and a client holds its `Connection` and passes a `Config`.
//! Also: accept errors and factory panics are logged, `max_connections`
//! holds back the accept loop, and `connect_unix` gives up in time.

mod server_support;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, ErrorKind, Limits, RpcError, Server};
use rpc_tests::trace_capture::capture;
use server_support::{scripted_listener, within};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::Level;

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

#[eventual]
pub trait Recorder {
    /// Appends `index` to the server's log and returns it.
    fn record(&self, index: u32) -> u32;
}

struct Log(Arc<Mutex<Vec<u32>>>);

impl Recorder for Log {
    fn record(&self, index: u32) -> u32 {
        self.0.lock().unwrap().push(index);
        index
    }
}

/// Polls `done` every 10 ms, at most 500 times; whether it became true.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_before_the_factory_returns_wait_for_it_in_order() {
    const N: u32 = 20;
    let (listener, dialer) = scripted_listener();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    let server_side: Arc<Mutex<Option<Connection>>> = Arc::default();
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (slot, log) = (server_side.clone(), seen.clone());
    let server = Server::new(listener).spawn(move |incoming| {
        *slot.lock().unwrap() = Some(incoming.connection().clone());
        // Blocks this connection's task (one worker thread) until the test lets it go.
        released.lock().unwrap().recv_timeout(Duration::from_secs(5)).expect("the test releases the factory");
        Ok::<_, RpcError>(RecorderProxy::new(Log(log.clone())))
    });
    let connection = within("connect", dialer.connect()).await.expect("connect");
    let recorder: RecorderProxy = connection.bootstrap();
    let calls: Vec<_> = (0..N).map(|index| recorder.record(index)).collect();

    // Every call is out, and the server has taken every one in, while the factory still blocks.
    assert!(eventually(|| connection.metrics().calls_in_flight == N as usize).await, "the calls were not all sent");
    let server_calls = || server_side.lock().unwrap().as_ref().map_or(0, |c| c.metrics().calls_running);
    assert!(eventually(|| server_calls() == N as usize).await, "the server holds {} calls", server_calls());
    assert_eq!(connection.metrics().calls_in_flight, N as usize, "a call was answered before the factory returned");
    assert!(seen.lock().unwrap().is_empty());

    release.send(()).expect("the factory waits");
    for (index, call) in (0..N).zip(calls) {
        assert_eq!(within("record", call).await.unwrap(), index);
    }
    assert_eq!(*seen.lock().unwrap(), (0..N).collect::<Vec<_>>(), "the queued calls ran out of order");
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

#[tokio::test(start_paused = true)]
async fn each_failed_accept_is_a_warning_with_the_error_and_the_pause() {
    let capture = capture();
    let (listener, dialer) = scripted_listener();
    let server = Server::new(listener).spawn(|_| Ok::<_, RpcError>(GreeterProxy::new(Host("x".into()))));
    for _ in 0..3 {
        dialer.fail_next(emfile());
    }
    let connection = within("connect after errors", dialer.connect()).await.expect("connect");
    let greeter: GreeterProxy = connection.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, x");
    within("shutdown", server.shutdown()).await;

    let warnings: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.message() == "accepting a connection failed; retrying after a pause")
        .collect();
    assert_eq!(warnings.len(), 3, "one event per failed accept: {warnings:?}");
    for (warning, delay) in warnings.iter().zip(["5ms", "10ms", "20ms"]) {
        assert_eq!(warning.level, Level::WARN, "{warning:?}");
        assert!(warning.field("error").is_some_and(|e| e.contains("os error 24")), "{warning:?}");
        assert_eq!(warning.field("delay"), Some(delay), "{warning:?}");
    }
}

#[tokio::test]
async fn a_serve_factory_that_panics_refuses_that_connection_only() {
    let capture = capture();
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let count = std::sync::atomic::AtomicUsize::new(0);
    let server = tokio::spawn(rpc_core::serve(tcp, move || {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("no database");
        }
        GreeterProxy::new(Host("second".into()))
    }));
    let first = within("connect", Connection::connect(addr)).await.expect("the handshake itself succeeds");
    let greeter: GreeterProxy = first.bootstrap();
    let err = within("refused hello", greeter.hello()).await.unwrap_err();
    assert!(err.message().contains("factory panicked: no database"), "{err}");
    let reason = within("closed", first.closed()).await;
    assert!(reason.message().contains("factory panicked: no database"), "{reason}");

    // The server goes on.
    let second = within("connect", Connection::connect(addr)).await.expect("connect");
    let greeter: GreeterProxy = second.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, second");
    assert!(!server.is_finished(), "the accept loop stopped");
    let warned = capture.events().into_iter().any(|e| {
        e.level == Level::WARN
            && e.message().starts_with("connection refused")
            && e.message().contains("factory panicked: no database")
    });
    assert!(warned, "no warning about the panic: {:?}", capture.events());
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn at_max_connections_the_next_client_waits_until_one_closes() {
    let (listener, dialer) = scripted_listener();
    let server = Server::new(listener)
        .max_connections(2)
        .spawn(|incoming| Ok::<_, RpcError>(GreeterProxy::new(Host(incoming.peer_addr().clone()))));
    let first = within("connect", dialer.connect()).await.expect("connect");
    let greeter: GreeterProxy = first.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, pipe-1");
    // A client still in its handshake counts too.
    let silent = dialer.dial_silently();

    let waiting = dialer.clone();
    let third = tokio::spawn(async move { waiting.connect().await });
    // Well within the handshake timeout (10 s): the server is not taking it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!third.is_finished(), "a third connection was served over the limit");
    assert_eq!(dialer.accepts(), 2, "the server accepted over the limit");

    // The silent client goes away: the waiting one is accepted and served.
    drop(silent);
    let third = within("third", third).await.expect("task").expect("connect");
    let greeter: GreeterProxy = third.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, pipe-3");

    // At the limit again: the next waits until a served client disconnects.
    let waiting = dialer.clone();
    let fourth = tokio::spawn(async move { waiting.connect().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fourth.is_finished(), "a fourth connection was served over the limit");
    first.close();
    let fourth = within("fourth", fourth).await.expect("task").expect("connect");
    let greeter: GreeterProxy = fourth.bootstrap();
    assert_eq!(within("hello", greeter.hello()).await.unwrap(), "hello, pipe-4");
    within("shutdown", server.shutdown()).await;
}

#[cfg(unix)]
#[tokio::test]
async fn connect_unix_gives_up_on_a_listener_that_never_answers() {
    let path = std::env::temp_dir().join(format!("rpc-server-accept-{}-silent.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    // Accepts one connection and holds it without a word.
    let silent = tokio::spawn(async move {
        let held = listener.accept().await;
        std::future::pending::<()>().await;
        drop(held);
    });
    let config = Config { handshake_timeout: Duration::from_millis(300), ..Config::default() };
    let err = within("connect_unix", Connection::builder().config(config).connect_unix(&path)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    silent.abort();
    let _ = std::fs::remove_file(&path);
}
