//! A server's lifecycle: graceful shutdown drains running calls and then
//! closes every connection with a reason the peer sees; no connection is
//! accepted once shutdown starts; a server dropped or aborted takes its
//! connections with it.
//!
//! The drain tests run on in-memory pipes with tokio's paused clock, so the
//! deadlines are exact; the "no new connection" tests use real TCP loopback.

mod server_support;

use std::sync::Arc;
use std::time::Duration;

use rpc_core::{eventual, Connection, ErrorKind, RpcError, Sequence, Server};
use rpc_tests::{DropCounter, DropToken};
use server_support::{scripted_listener, within};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[eventual]
pub trait Work {
    /// Sleeps `ms` milliseconds of tokio time, then returns `ms`.
    async fn sleep(&self, ms: u64) -> u64;
    /// Waits until the test opens the gate, then returns 7.
    async fn hold(&self) -> u32;
    /// Answers at once.
    fn quick(&self, x: u32) -> u32;
    /// The numbers `0..n`.
    fn numbers(&self, n: u32) -> Sequence<u32>;
    /// A sequence that never ends.
    fn forever(&self) -> Sequence<u32>;
}

/// What the test watches and controls of the server's objects.
#[derive(Clone)]
struct Probes {
    /// One permit per handler that has started.
    started: Arc<Semaphore>,
    /// `hold` takes one permit.
    gate: Arc<Semaphore>,
    /// Counts handler futures dropped (finished or cancelled).
    handlers_dropped: DropCounter,
}

impl Probes {
    fn new() -> Self {
        Probes {
            started: Arc::new(Semaphore::new(0)),
            gate: Arc::new(Semaphore::new(0)),
            handlers_dropped: DropCounter::default(),
        }
    }

    fn worker(&self) -> WorkProxy {
        WorkProxy::new(Worker(self.clone()))
    }

    async fn wait_started(&self, what: &str) {
        within(what, self.started.acquire()).await.expect("semaphore open").forget();
    }
}

struct Worker(Probes);

impl Work for Worker {
    async fn sleep(&self, ms: u64) -> u64 {
        let _token: DropToken = self.0.handlers_dropped.token();
        self.0.started.add_permits(1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    async fn hold(&self) -> u32 {
        let _token: DropToken = self.0.handlers_dropped.token();
        self.0.started.add_permits(1);
        self.0.gate.acquire().await.expect("gate open").forget();
        7
    }

    fn quick(&self, x: u32) -> u32 {
        x
    }

    fn numbers(&self, n: u32) -> Sequence<u32> {
        Sequence::from_stream(futures::stream::iter(0..n))
    }

    fn forever(&self) -> Sequence<u32> {
        Sequence::from_stream(futures::stream::pending())
    }
}

/// A server of probed workers, one client connection to it, and the client's proxy.
struct Served {
    probes: Probes,
    server: rpc_core::ServerHandle,
    dialer: server_support::Dialer,
    connection: Connection,
    work: WorkProxy,
}

/// Serves probed workers with `drain` as the drain timeout, and connects once.
async fn serve_one(drain: Duration) -> Served {
    let probes = Probes::new();
    let (listener, dialer) = scripted_listener();
    let factory_probes = probes.clone();
    let server = Server::new(listener).drain_timeout(drain).spawn(move |_| Ok::<_, RpcError>(factory_probes.worker()));
    let connection = within("connect", dialer.connect()).await.expect("connect");
    let work: WorkProxy = connection.bootstrap();
    Served { probes, server, dialer, connection, work }
}

fn assert_shutdown_reason(what: &str, err: &RpcError) {
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{what}: {err}");
    assert!(err.message().contains("the server is shutting down"), "{what}: {err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_running_call_finish_then_closes_with_a_reason() {
    let Served { probes, server, dialer, connection, work } = serve_one(Duration::from_secs(10)).await;
    assert_eq!(within("quick", work.quick(1)).await.unwrap(), 1);

    let running = work.sleep(3_000);
    probes.wait_started("the handler starts").await;
    let began = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());

    // The handler still running when shutdown began finishes, and its caller gets the reply.
    assert_eq!(within("the running call", running).await.unwrap(), 3_000);
    // Then the connection closes, with a reason this side sees.
    let reason = within("closed", connection.closed()).await;
    assert_shutdown_reason("closed()", &reason);
    within("shutdown", shutdown).await.expect("shutdown task");
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(10), "shutdown took {took:?}");
    // Calls made after the close see the reason.
    let late = within("late call", work.quick(2)).await.unwrap_err();
    assert_shutdown_reason("a call after the close", &late);
    // The listener went first: nothing more is accepted.
    assert!(dialer.listener_dropped());
    assert!(dialer.connect().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_draining_connection_refuses_new_calls_and_closes_when_the_running_one_ends() {
    let Served { probes, server, connection, work, dialer: _dialer } = serve_one(Duration::from_secs(10)).await;
    let running = work.sleep(3_000);
    probes.wait_started("the handler starts").await;
    let began = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await; // the drain has begun

    // New calls are answered at once with the reason, quick or long: they
    // do not keep the connection busy.
    let asked = Instant::now();
    let refused = within("a call during the drain", work.quick(1)).await.unwrap_err();
    assert_shutdown_reason("a call made during the drain", &refused);
    let refused = within("a long call during the drain", work.sleep(60_000)).await.unwrap_err();
    assert_shutdown_reason("a long call made during the drain", &refused);
    assert!(asked.elapsed() < Duration::from_millis(100), "refusing took {:?}", asked.elapsed());

    // The call that was running finishes, and the shutdown follows at once,
    // long before the 10 s deadline.
    assert_eq!(within("the running call", running).await.unwrap(), 3_000);
    within("shutdown", shutdown).await.expect("shutdown task");
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_millis(3_100), "shutdown took {took:?}");
    assert_shutdown_reason("closed()", &within("closed", connection.closed()).await);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_at_the_deadline_and_cancels_what_still_runs() {
    let Served { probes, server, connection: _connection, work, dialer: _dialer } =
        serve_one(Duration::from_secs(2)).await;

    let stuck = work.hold();
    probes.wait_started("the handler starts").await;
    let began = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());

    // The handler never finishes: at the deadline its caller sees the close reason.
    let err = within("the stuck call", stuck).await.unwrap_err();
    assert_shutdown_reason("the call still running at the deadline", &err);
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(3), "closed after {took:?}");
    within("shutdown", shutdown).await.expect("shutdown task");
    // The server's side dropped the handler (cancelled it).
    assert!(probes.handlers_dropped.wait_for(1).await, "the stuck handler was not cancelled");
    let late = within("late call", work.quick(3)).await.unwrap_err();
    assert_shutdown_reason("a call after the deadline", &late);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_at_once_and_every_peer_sees_the_reason() {
    let probes = Probes::new();
    let (listener, dialer) = scripted_listener();
    let factory_probes = probes.clone();
    let server = Server::new(listener).spawn(move |_| Ok::<_, RpcError>(factory_probes.worker()));
    let mut connections = Vec::new();
    for _ in 0..3 {
        let connection = within("connect", dialer.connect()).await.expect("connect");
        let work: WorkProxy = connection.bootstrap();
        assert_eq!(within("quick", work.quick(5)).await.unwrap(), 5);
        connections.push(connection);
    }
    let began = Instant::now();
    within("shutdown", server.shutdown()).await;
    // Nothing was running: no waiting for the drain deadline (10 s by default).
    assert!(began.elapsed() < Duration::from_secs(1), "shutdown took {:?}", began.elapsed());
    for connection in &connections {
        assert_shutdown_reason("an idle client", &within("closed", connection.closed()).await);
    }
}

#[tokio::test]
async fn no_connection_is_accepted_once_shutdown_starts() {
    let probes = Probes::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (factory_probes, counter) = (probes.clone(), made.clone());
    let server = Server::new(tcp).spawn(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok::<_, RpcError>(factory_probes.worker())
    });
    let connection = within("connect", Connection::connect(addr)).await.expect("connect");
    let work: WorkProxy = connection.bootstrap();
    let held = work.hold();
    probes.wait_started("the handler starts").await;

    let shutdown = tokio::spawn(server.shutdown());
    // On this current-thread runtime, every task woken by the signal runs
    // before this timer fires: the listener is closed by then.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Refused by the kernel: the listening socket is closed (a listener
    // left open but not accepting would give a handshake timeout instead).
    let refused = within("connect after shutdown", Connection::connect(addr)).await;
    let err = refused.expect_err("a connection was accepted during shutdown");
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    assert!(err.message().contains("Connection refused"), "{err}");
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1, "the factory ran for a new connection");

    // The connection already open is still being served while it drains.
    probes.gate.add_permits(1);
    assert_eq!(within("the held call", held).await.unwrap(), 7);
    assert_shutdown_reason("closed()", &within("closed", connection.closed()).await);
    within("shutdown", shutdown).await.expect("shutdown task");
}

#[tokio::test]
async fn dropping_the_server_handle_closes_its_connections() {
    let probes = Probes::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let factory_probes = probes.clone();
    let server = Server::new(tcp).spawn(move |_| Ok::<_, RpcError>(factory_probes.worker()));
    let connection = within("connect", Connection::connect(addr)).await.expect("connect");
    let work: WorkProxy = connection.bootstrap();
    assert_eq!(within("quick", work.quick(9)).await.unwrap(), 9);

    drop(server);
    let reason = within("closed", connection.closed()).await;
    assert_eq!(reason.kind(), ErrorKind::Disconnected, "{reason}");
    assert!(reason.message().contains("the server stopped"), "{reason}");
}

#[tokio::test]
async fn aborting_serve_closes_its_connections() {
    let probes = Probes::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let factory_probes = probes.clone();
    let server = tokio::spawn(rpc_core::serve(tcp, move || factory_probes.worker()));
    let connection = within("connect", Connection::connect(addr)).await.expect("connect");
    let work: WorkProxy = connection.bootstrap();
    let held = work.hold();
    probes.wait_started("the handler starts").await;

    server.abort();
    let err = within("the held call", held).await.unwrap_err();
    assert!(err.message().contains("the server stopped"), "{err}");
    assert!(within("closed", connection.closed()).await.message().contains("the server stopped"));
    assert!(probes.handlers_dropped.wait_for(1).await, "the handler was not cancelled");
}

#[tokio::test(start_paused = true)]
async fn serve_with_shutdown_returns_after_the_signal_and_the_drain() {
    let probes = Probes::new();
    let (listener, dialer) = scripted_listener();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let factory_probes = probes.clone();
    let serving = tokio::spawn(Server::new(listener).serve_with_shutdown(
        move |_| Ok::<_, RpcError>(factory_probes.worker()),
        async {
            let _ = stopped.await;
        },
    ));
    let connection = within("connect", dialer.connect()).await.expect("connect");
    let work: WorkProxy = connection.bootstrap();
    let running = work.sleep(500);
    probes.wait_started("the handler starts").await;
    stop.send(()).expect("the server listens");
    assert_eq!(within("the running call", running).await.unwrap(), 500);
    within("serve_with_shutdown", serving).await.expect("server task");
    assert_shutdown_reason("closed()", &within("closed", connection.closed()).await);
}

#[tokio::test(start_paused = true)]
async fn an_open_stream_is_drained_until_the_deadline_and_a_finished_one_is_not_waited_for() {
    let Served { probes: _probes, server, connection: _connection, work, dialer: _dialer } =
        serve_one(Duration::from_secs(4)).await;

    // Read to its end, still held: not a reason to wait.
    let mut finished = work.numbers(3);
    for expected in 0..3 {
        assert_eq!(within("item", finished.read()).await.unwrap(), Some(expected));
    }
    assert_eq!(within("end", finished.read()).await.unwrap(), None);
    // Still open: the drain waits for it, up to the deadline.
    let mut open = work.forever();
    assert_eq!(within("quick", work.quick(1)).await.unwrap(), 1);

    let began = Instant::now();
    within("shutdown", server.shutdown()).await;
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(5), "shutdown took {took:?}");
    let err = within("the open stream", open.read()).await.unwrap_err();
    assert_shutdown_reason("the stream still open at the deadline", &err);
    drop(finished);
}
