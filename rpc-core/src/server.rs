//! Serving connections: the accept loop, per-connection context, graceful
//! shutdown.
//!
//! The accept loop takes connections from any [`Listener`] and gives each
//! its own task: finish the transport's handshake (TLS, WebSocket), run ours,
//! decide the bootstrap object, then wait until the connection closes or the
//! server shuts down. Every connection task sits in one `JoinSet`, so
//! dropping the loop aborts them, and each holds a guard that closes its
//! connection when dropped: no connection outlives its server.
//!
//! Shutting down stops accepting (the listener is dropped), then each
//! connection drains: it answers new calls from its peer with "the server is
//! shutting down" at once, keeps serving the calls already running until no
//! handler of the peer's calls runs and no stream is open, or until the
//! drain deadline, and then closes with that same reason, which its peer
//! sees.
//!
//! At most `max_connections` connections (counting those in their
//! handshake) are open at once: at the limit the loop stops accepting until
//! one closes.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout, Instant};

use crate::cap::{Client, QueuedClient};
use crate::transport::Listener;
use crate::{Capability, Config, Connection, ConnectionBuilder, RpcError};

/// How long a shutdown waits for running calls by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections a [`Server`] holds open at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The first pause after a failed `accept`; it doubles while failures repeat.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between failed `accept`s.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// How often a draining connection looks whether it is still busy.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// The reason a draining connection is closed with.
const SHUTDOWN_REASON: &str = "the server is shutting down";
/// The reason a connection is closed with when its server is dropped.
const STOPPED_REASON: &str = "the server stopped";

/// A connection a [`Server`] has just accepted, handed to its factory: who
/// it is from, and the live [`Connection`] (for logging, for its limits, or
/// to call the client's own bootstrap capability later).
///
/// # Examples
///
/// ```
/// # use rpc_core::{eventual, Incoming, RpcError};
/// # #[eventual]
/// # pub trait Echo { async fn echo(&self, text: String) -> String; }
/// # struct Parrot;
/// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
/// fn factory(incoming: &Incoming<std::net::SocketAddr>) -> Result<EchoProxy, RpcError> {
///     println!("{} connected, frame limit {}", incoming.peer_addr(), incoming.connection().peer_limits().max_frame_size);
///     Ok(EchoProxy::new(Parrot))
/// }
/// # let _ = factory;
/// ```
pub struct Incoming<A> {
    peer_addr: A,
    connection: Connection,
}

impl<A> Incoming<A> {
    /// The peer's address, as the listener reported it.
    pub fn peer_addr(&self) -> &A {
        &self.peer_addr
    }

    /// The connection, its handshake done.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl<A: fmt::Debug> fmt::Debug for Incoming<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").field("peer_addr", &self.peer_addr).field("connection", &self.connection).finish()
    }
}

/// A per-connection factory with the context, type-erased.
type Factory<A> = dyn Fn(&Incoming<A>) -> Result<Client, RpcError> + Send + Sync;

/// Where a connection's bootstrap object comes from.
pub(crate) enum Bootstrap<A> {
    /// Made before the handshake ([`crate::serve`]'s factory takes nothing).
    Ready(Client),
    /// Made after the handshake, from the [`Incoming`] context.
    Decide(Arc<Factory<A>>),
    /// Refused before the handshake (a [`crate::serve`] factory panicked):
    /// the connection is closed with this reason once it is open.
    Refused(RpcError),
}

/// A server over any [`Listener`]: TCP, Unix sockets, WebSocket, TLS, or
/// your own. It gives each connection a bootstrap object made by a factory
/// that sees the peer's address and the connection (and may refuse it),
/// survives accept errors, and shuts down gracefully.
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, Connection, ErrorKind, RpcError, Server};
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
/// struct Parrot;
/// impl Echo for Parrot {
///     async fn echo(&self, text: String) -> String { text }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let server = Server::new(listener).spawn(|incoming| {
///     if !incoming.peer_addr().ip().is_loopback() {
///         return Err(RpcError::disconnected("local clients only"));
///     }
///     Ok(EchoProxy::new(Parrot))
/// });
///
/// let connection = Connection::connect(addr).await?;
/// let echo: EchoProxy = connection.bootstrap();
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
///
/// server.shutdown().await; // drains running calls, then closes with a reason
/// let reason = connection.closed().await;
/// assert_eq!(reason.kind(), ErrorKind::Disconnected);
/// assert!(reason.message().contains("shutting down"), "{reason}");
/// # Ok(())
/// # }
/// ```
pub struct Server<L> {
    listener: L,
    config: Config,
    drain_timeout: Duration,
    max_connections: usize,
}

impl<L: fmt::Debug> fmt::Debug for Server<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("drain_timeout", &self.drain_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl<L: Listener> Server<L> {
    /// A server taking connections from `listener`, with the default
    /// [`Config`], a drain timeout of [`DEFAULT_DRAIN_TIMEOUT`] and at most
    /// [`DEFAULT_MAX_CONNECTIONS`] connections at once.
    pub fn new(listener: L) -> Self {
        Server {
            listener,
            config: Config::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Uses `config` for every connection.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// How long a shutdown lets running calls and open streams finish
    /// before it closes their connections (default [`DEFAULT_DRAIN_TIMEOUT`]).
    ///
    /// While it drains, a connection answers every new call from its peer
    /// with [`crate::ErrorKind::Disconnected`] "the server is shutting
    /// down" at once; only the calls and streams already running are waited
    /// for. After the drain, each connection gets up to
    /// [`Config::write_stall_timeout`] to write its last words, so a
    /// shutdown can take up to `drain_timeout + write_stall_timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::{eventual, Config, Server};
    ///
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let server = Server::new(listener)
    ///     .config(Config { keepalive_timeout: Duration::from_secs(10), ..Config::default() })
    ///     .drain_timeout(Duration::from_secs(3))
    ///     .spawn(|_| Ok(EchoProxy::new(Parrot)));
    /// server.shutdown().await; // nothing runs: returns at once
    /// # Ok(())
    /// # }
    /// ```
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How many connections may be open at once, counting those still in
    /// their handshake (default [`DEFAULT_MAX_CONNECTIONS`]; at least 1).
    /// At the limit, the server accepts nothing more until one of them
    /// closes: clients that connect meanwhile wait in the listener's
    /// backlog, and silent clients cannot make the server grow without
    /// bound (each is also dropped after `Config::handshake_timeout`).
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{eventual, Server};
    ///
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let server = Server::new(listener).max_connections(500).spawn(|_| Ok(EchoProxy::new(Parrot)));
    /// server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Serves until the returned future is dropped, giving each connection
    /// the capability `factory` makes for it.
    ///
    /// The factory runs once per connection, after the handshake, with the
    /// peer's address and the [`Connection`]. Returning an error refuses the
    /// connection: it is closed with that error as the reason, which the
    /// peer sees. A factory that panics refuses the connection the same way
    /// (the reason names the panic); the server goes on. Calls that arrive
    /// before the factory has returned wait for it, in order.
    ///
    /// Dropping the future closes every connection at once with "the server
    /// stopped"; [`Server::serve_with_shutdown`] and [`Server::spawn`] shut
    /// down gracefully instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use rpc_core::{eventual, Server};
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
    /// Server::new(listener).serve(|_incoming| Ok(EchoProxy::new(Parrot))).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve<C, F>(self, factory: F)
    where
        C: Capability,
        F: Fn(&Incoming<L::Addr>) -> Result<C, RpcError> + Send + Sync + 'static,
    {
        self.serve_with_shutdown(factory, std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops
    /// accepting, lets running calls and open streams finish for up to the
    /// [drain timeout](Server::drain_timeout), then closes each connection
    /// with "the server is shutting down", which its peer sees. Returns once
    /// every connection is closed and its last words are written.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use rpc_core::{eventual, Server};
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # drop(stop);
    /// // e.g. on a signal: stop.send(())
    /// Server::new(listener)
    ///     .serve_with_shutdown(|_incoming| Ok(EchoProxy::new(Parrot)), async {
    ///         let _ = stopped.await;
    ///     })
    ///     .await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve_with_shutdown<C, F, S>(self, factory: F, signal: S)
    where
        C: Capability,
        F: Fn(&Incoming<L::Addr>) -> Result<C, RpcError> + Send + Sync + 'static,
        S: Future<Output = ()>,
    {
        let factory: Arc<Factory<L::Addr>> =
            Arc::new(move |incoming: &Incoming<L::Addr>| factory(incoming).map(|cap| cap.client().clone()));
        self.run(move || Bootstrap::Decide(factory.clone()), signal).await
    }

    /// Serves on a task of its own; the handle shuts it down.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Examples
    ///
    /// See [`Server`].
    pub fn spawn<C, F>(self, factory: F) -> ServerHandle
    where
        C: Capability,
        F: Fn(&Incoming<L::Addr>) -> Result<C, RpcError> + Send + Sync + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve_with_shutdown(factory, async {
            let _ = stopped.await;
        }));
        ServerHandle { stop: Some(stop), task }
    }

    /// The accept loop: runs until `signal`, then drains and closes every
    /// connection. `bootstrap_for` is asked once per accepted connection.
    pub(crate) async fn run<M, S>(self, mut bootstrap_for: M, signal: S)
    where
        M: FnMut() -> Bootstrap<L::Addr>,
        S: Future<Output = ()>,
    {
        let Server { mut listener, config, drain_timeout, max_connections } = self;
        let settings = Arc::new(Settings { config, drain_timeout });
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut pause = AcceptPause::default();
        let mut signal = std::pin::pin!(signal);
        loop {
            while connections.try_join_next().is_some() {}
            if connections.len() >= max_connections {
                tokio::select! {
                    biased;
                    _ = &mut signal => break,
                    _ = connections.join_next() => continue,
                }
            }
            let accepted = tokio::select! {
                biased;
                _ = &mut signal => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((conn, peer)) => {
                    pause.reset();
                    let handshake = listener.handshake(conn);
                    let bootstrap = bootstrap_catching_panics(&mut bootstrap_for, &peer);
                    // The connection's `rpc.connection` span nests in this one.
                    let span = tracing::info_span!("rpc.server.connection", peer = ?peer);
                    let task = serve_connection(handshake, peer, settings.clone(), bootstrap, stopping.clone());
                    connections.spawn(tracing::Instrument::instrument(task, span));
                }
                Err(error) => {
                    let delay = pause.next();
                    tracing::warn!(%error, ?delay, "accepting a connection failed; retrying after a pause");
                    tokio::select! {
                        _ = &mut signal => break,
                        _ = sleep(delay) => {}
                    }
                }
            }
        }
        drop(listener);
        stop.send_replace(true);
        while connections.join_next().await.is_some() {}
    }
}

/// A server running on its own task ([`Server::spawn`]).
///
/// Dropping the handle stops the server at once: every connection closes
/// with "the server stopped". [`ServerHandle::shutdown`] stops it gracefully.
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, Connection, Server};
///
/// # #[eventual]
/// # pub trait Echo { async fn echo(&self, text: String) -> String; }
/// # struct Parrot;
/// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let server = Server::new(listener).spawn(|_| Ok(EchoProxy::new(Parrot)));
/// let connection = Connection::connect(addr).await?;
///
/// drop(server); // not a graceful shutdown
/// let reason = connection.closed().await;
/// assert!(reason.message().contains("the server stopped"), "{reason}");
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the handle stops the server"]
#[derive(Debug)]
pub struct ServerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Shuts the server down gracefully (see [`Server::serve_with_shutdown`])
    /// and waits until it is done.
    ///
    /// # Examples
    ///
    /// See [`Server`].
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every connection task of one server shares.
struct Settings {
    config: Config,
    drain_timeout: Duration,
}

/// Asks `bootstrap_for` for a connection's bootstrap; if it panics, that
/// connection alone is refused with [`crate::ErrorKind::HandlerPanicked`].
fn bootstrap_catching_panics<A: fmt::Debug>(
    bootstrap_for: &mut impl FnMut() -> Bootstrap<A>,
    peer: &A,
) -> Bootstrap<A> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(bootstrap_for)).unwrap_or_else(|payload| {
        let reason = factory_panicked(&*payload);
        tracing::warn!(?peer, "connection refused: {reason}");
        Bootstrap::Refused(reason)
    })
}

/// The pause after failed `accept`s: short at first, doubling up to a cap.
#[derive(Default)]
struct AcceptPause {
    last: Option<Duration>,
}

impl AcceptPause {
    fn next(&mut self) -> Duration {
        let next = self.last.map_or(FIRST_ACCEPT_PAUSE, |last| (last * 2).min(MAX_ACCEPT_PAUSE));
        self.last = Some(next);
        next
    }

    fn reset(&mut self) {
        self.last = None;
    }
}

/// Closes the connection when dropped: a server task aborted with its
/// server takes its connection with it.
struct CloseOnDrop(Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close_with(RpcError::disconnected(STOPPED_REASON));
    }
}

/// One connection's life: handshakes, bootstrap, then serve until it closes
/// or the server stops.
async fn serve_connection<H, IO, A>(
    handshake: H,
    peer: A,
    settings: Arc<Settings>,
    bootstrap: Bootstrap<A>,
    mut stopping: watch::Receiver<bool>,
) where
    H: Future<Output = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    A: fmt::Debug + Send + Sync + 'static,
{
    let mut refused = None;
    let (builder, decide) = match bootstrap {
        Bootstrap::Ready(client) => (Connection::builder().bootstrap_client(client), None),
        Bootstrap::Refused(reason) => {
            refused = Some(reason.clone());
            (Connection::builder().bootstrap_client(Client::broken(reason)), None)
        }
        Bootstrap::Decide(factory) => {
            let queue = Arc::new(QueuedClient::new());
            let builder = Connection::builder().bootstrap_client(Client { hook: queue.clone() });
            (builder, Some((queue, factory)))
        }
    };
    let builder = builder.config(settings.config.clone());
    let opened = tokio::select! {
        opened = open_connection(handshake, builder) => opened,
        _ = stopped(&mut stopping) => return,
    };
    let connection = match opened {
        Ok(connection) => connection,
        Err(err) => return tracing::debug!(?peer, "handshake failed: {err}"),
    };
    if let Some(reason) = refused {
        return connection.close_with(reason);
    }
    let _guard = CloseOnDrop(connection.clone());
    let incoming = Incoming { peer_addr: peer, connection };
    if let Some((queue, factory)) = decide {
        if let Err(reason) = decide_bootstrap(&incoming, &queue, &*factory) {
            tracing::info!(peer = ?incoming.peer_addr, "connection refused: {reason}");
            return incoming.connection.close_with(reason);
        }
    }
    let Incoming { peer_addr: peer, connection } = incoming;
    tokio::select! {
        reason = connection.closed() => tracing::debug!(?peer, "connection closed: {reason}"),
        _ = stopped(&mut stopping) => drain(&connection, &settings).await,
    }
}

/// The transport's handshake (bounded by the handshake timeout), then ours.
async fn open_connection<H, IO>(handshake: H, builder: ConnectionBuilder) -> Result<Connection, RpcError>
where
    H: Future<Output = std::io::Result<IO>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let io = match timeout(builder.settings().handshake_timeout, handshake).await {
        Ok(io) => io?,
        Err(_) => return Err(RpcError::new(crate::ErrorKind::Timeout, "the transport handshake took too long")),
    };
    builder.open(io).await
}

/// Waits until the server stops.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Asks the factory for the bootstrap object and releases the calls waiting
/// for it (or fails them with the refusal).
///
/// A factory that panics refuses the connection with
/// [`crate::ErrorKind::HandlerPanicked`]; the server carries on.
fn decide_bootstrap<A>(incoming: &Incoming<A>, queue: &QueuedClient, factory: &Factory<A>) -> Result<(), RpcError> {
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(incoming)))
        .unwrap_or_else(|payload| Err(factory_panicked(&*payload)));
    match decided {
        Ok(client) => {
            queue.resolve(Ok(client));
            Ok(())
        }
        Err(reason) => {
            queue.resolve(Err(reason.clone()));
            Err(reason)
        }
    }
}

/// The refusal of a connection whose factory panicked.
fn factory_panicked(payload: &(dyn std::any::Any + Send)) -> RpcError {
    let text = match (payload.downcast_ref::<&'static str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (None, Some(text)) => text.clone(),
        (None, None) => "a payload that is not a string".to_owned(),
    };
    RpcError::new(crate::ErrorKind::HandlerPanicked, format!("the server's connection factory panicked: {text}"))
}

/// Refuses new calls, lets the connection finish its running calls and open
/// streams, up to the drain deadline, then closes it with the shutdown
/// reason and waits until that is written.
async fn drain(connection: &Connection, settings: &Settings) {
    connection.refuse_new_calls(RpcError::disconnected(SHUTDOWN_REASON));
    let deadline = Instant::now() + settings.drain_timeout;
    while connection.is_busy() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::select! {
            _ = sleep(DRAIN_POLL.min(deadline - now)) => {}
            _ = connection.closed() => break,
        }
    }
    connection.close_with(RpcError::disconnected(SHUTDOWN_REASON));
    let _ = timeout(settings.config.write_stall_timeout, connection.written_out()).await;
}
