//! The public face of a connection: open, bootstrap, close, serve, connect.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use super::{driver, ConnShared, UserRef};
use crate::cap::{Capability, Client};
use crate::{Config, Limits, RpcError};

/// A live connection to a peer.
///
/// Both sides are equal: either may offer a bootstrap capability and either
/// may call the other. The connection stays open while this handle, any
/// capability imported through it or any call in flight exists, or while it
/// serves objects to the peer; it closes when the peer goes, on keepalive
/// timeout, on a protocol violation, or on [`Connection::close`].
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, Connection};
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
///
/// struct Parrot;
/// impl Echo for Parrot {
///     async fn echo(&self, text: String) -> String { text }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let (a, b) = tokio::io::duplex(64 << 10);
/// let server = Connection::builder().bootstrap(EchoProxy::new(Parrot)).open(a);
/// let client = Connection::builder().open(b);
/// let (_server, client) = tokio::try_join!(server, client)?;
/// let echo: EchoProxy = client.bootstrap();
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connection {
    user: UserRef,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("closed", &self.shared().closed_reason()).finish()
    }
}

impl Connection {
    /// Starts configuring a connection.
    pub fn builder() -> ConnectionBuilder {
        ConnectionBuilder::default()
    }

    /// Connects over TCP with the default [`Config`] and offers no bootstrap
    /// of our own; [`ConnectionBuilder::connect`] takes both.
    ///
    /// Unlike [`connect`], this hands back the connection itself: take the
    /// server's capability with [`Connection::bootstrap`], and keep the
    /// connection to [`close`](Connection::close) it, wait until it is
    /// [`closed`](Connection::closed) or read its
    /// [`peer_limits`](Connection::peer_limits).
    ///
    /// # Errors
    ///
    /// As [`ConnectionBuilder::connect`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use rpc_core::{eventual, Connection};
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # tokio::spawn(rpc_core::serve(listener, || EchoProxy::new(Parrot)));
    /// let connection = Connection::connect(addr).await?;
    /// let echo: EchoProxy = connection.bootstrap();
    /// assert_eq!(echo.echo("hi".into()).await?, "hi");
    /// connection.close();
    /// assert!(echo.echo("again".into()).await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Connection, RpcError> {
        Connection::builder().connect(addr).await
    }

    fn shared(&self) -> &Arc<ConnShared> {
        self.user.shared()
    }

    /// The peer's bootstrap capability, usable at once (no round trip).
    ///
    /// If the peer offers none, calls on it fail with
    /// [`crate::ErrorKind::Unimplemented`].
    pub fn bootstrap<C: Capability>(&self) -> C {
        let shared = self.shared();
        // Bootstrap references are not counted: the peer never releases it early.
        let client = shared.lock().import_counted(shared, 0, 0);
        C::from_client(client.unwrap_or_else(Client::broken))
    }

    /// Closes the connection: pending calls and imports fail with `Disconnected`.
    pub fn close(&self) {
        self.close_with(RpcError::disconnected("closed on purpose"));
    }

    /// Closes the connection with `reason`, which the peer is told: its
    /// pending calls and streams fail with an error that carries the reason's
    /// message. Ours fail with `reason` itself. Closing a closed connection
    /// does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{Connection, ErrorKind, RpcError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), RpcError> {
    /// let (a, b) = tokio::io::duplex(64 << 10);
    /// let (ours, theirs) = tokio::try_join!(Connection::builder().open(a), Connection::builder().open(b))?;
    /// ours.close_with(RpcError::disconnected("maintenance"));
    /// let seen = theirs.closed().await;
    /// assert_eq!(seen.kind(), ErrorKind::Disconnected);
    /// assert!(seen.message().contains("maintenance"), "{seen}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn close_with(&self, reason: RpcError) {
        self.shared().close(reason, true);
    }

    /// Whether handlers of the peer's calls are running or streams are open
    /// (what a graceful server shutdown waits for).
    pub(crate) fn is_busy(&self) -> bool {
        self.shared().lock().is_busy()
    }

    /// Answers every new call from the peer with `reason` from now on,
    /// while calls already running finish (a draining server).
    pub(crate) fn refuse_new_calls(&self, reason: RpcError) {
        self.shared().lock().refuse_new_calls(reason);
    }

    /// Waits until the connection's writer has ended (after a close: until
    /// the goodbye is written or given up on).
    pub(crate) async fn written_out(&self) {
        let mut done = self.shared().writer_done.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Waits until the connection is closed and returns why.
    pub async fn closed(&self) -> RpcError {
        let mut watch = self.shared().closed.subscribe();
        let reason = match watch.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        reason.unwrap_or_else(|| RpcError::disconnected("the connection was closed"))
    }

    /// The limits the peer advertised in its handshake.
    pub fn peer_limits(&self) -> Limits {
        self.shared().peer_limits
    }

    /// A snapshot of this connection's activity: calls in flight, streams
    /// open, bytes in and out, the last keepalive round trip.
    ///
    /// See [`ConnectionMetrics`](crate::ConnectionMetrics) for an example.
    pub fn metrics(&self) -> crate::ConnectionMetrics {
        let shared = self.shared();
        let mut metrics = crate::ConnectionMetrics::default();
        {
            let state = shared.lock();
            state.fill_metrics(&mut metrics);
            metrics.closed = state.is_closed().is_some();
        }
        shared.io.fill(&mut metrics);
        metrics
    }

    /// The sizes of this connection's tables, for tests. Not a stable API.
    #[doc(hidden)]
    pub fn debug_counts(&self) -> crate::__private::TableCounts {
        self.shared().lock().counts()
    }
}

/// Options for opening a [`Connection`]: its [`Config`] and the bootstrap
/// capability this side offers. Then [`open`](ConnectionBuilder::open) it
/// over any byte stream, or [`connect`](ConnectionBuilder::connect) over TCP
/// (other transports: `connect_unix`, `connect_websocket`, `connect_tls`).
///
/// # Examples
///
/// A client that also offers the server a capability of its own, with a
/// tighter keepalive:
///
/// ```
/// use std::time::Duration;
/// use rpc_core::{eventual, Config, Connection};
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
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # tokio::spawn(rpc_core::serve(listener, || EchoProxy::new(Parrot)));
/// let mut config = Config::default();
/// config.keepalive_interval = Duration::from_secs(5);
/// config.keepalive_timeout = Duration::from_secs(15);
/// let connection = Connection::builder()
///     .config(config)
///     .bootstrap(EchoProxy::new(Parrot)) // the server may call us too
///     .connect(addr)
///     .await?;
/// let server: EchoProxy = connection.bootstrap();
/// assert_eq!(server.echo("hi".into()).await?, "hi");
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct ConnectionBuilder {
    config: Config,
    bootstrap: Option<Client>,
}

impl ConnectionBuilder {
    /// Uses `config` (limits, keepalive).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Offers `capability` to the peer as this side's bootstrap object.
    pub fn bootstrap<C: Capability>(mut self, capability: C) -> Self {
        self.bootstrap = Some(capability.client().clone());
        self
    }

    /// Offers `client` as the bootstrap object (the server's deferred one).
    pub(crate) fn bootstrap_client(mut self, client: Client) -> Self {
        self.bootstrap = Some(client);
        self
    }

    /// The settings the connection will use.
    pub(crate) fn settings(&self) -> &Config {
        &self.config
    }

    /// Connects over TCP (with `TCP_NODELAY`, as [`serve`] sets on its side)
    /// and runs the handshake.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Disconnected`] if the TCP connection cannot be
    /// made, otherwise as [`ConnectionBuilder::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use rpc_core::{eventual, Config, Connection};
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # tokio::spawn(rpc_core::serve(listener, || EchoProxy::new(Parrot)));
    /// let connection = Connection::builder().config(Config::default()).connect(addr).await?;
    /// println!("the server accepts frames of up to {} bytes", connection.peer_limits().max_frame_size);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Connection, RpcError> {
        let stream = tokio::time::timeout(self.config.handshake_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| RpcError::new(crate::ErrorKind::Timeout, "the TCP connection was not made in time"))??;
        stream.set_nodelay(true)?;
        self.open(stream).await
    }

    /// Runs the handshake over `io` and starts the connection.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Protocol`] if the peer speaks another protocol or
    /// version, [`crate::ErrorKind::Timeout`] if it does not answer in time,
    /// [`crate::ErrorKind::Disconnected`] if the transport fails.
    pub async fn open<IO>(self, io: IO) -> Result<Connection, RpcError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let user = driver::open(io, self.config, self.bootstrap).await?;
        Ok(Connection { user })
    }
}

/// Connects over TCP and returns the server's bootstrap capability.
///
/// The connection lives as long as the returned capability (or anything
/// obtained through it) does. To hold the connection itself (to close it,
/// wait until it is closed, or read the peer's limits) or to pass a
/// [`Config`], use [`Connection::connect`] or [`ConnectionBuilder::connect`].
///
/// # Errors
///
/// As [`ConnectionBuilder::connect`].
///
/// # Examples
///
/// ```
/// use rpc_core::eventual;
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
/// # struct Parrot;
/// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # tokio::spawn(rpc_core::serve(listener, || EchoProxy::new(Parrot)));
/// let echo: EchoProxy = rpc_core::connect(addr).await?;
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// # Ok(())
/// # }
/// ```
pub async fn connect<C: Capability>(addr: impl ToSocketAddrs) -> Result<C, RpcError> {
    Ok(Connection::connect(addr).await?.bootstrap())
}

/// Accepts TCP connections until dropped, offering each a fresh bootstrap
/// object made by `factory`, with the default [`Config`].
///
/// A failed `accept` (out of file descriptors, a connection reset before it
/// was accepted) is logged as a `tracing` warning and retried after a short
/// pause that grows while failures repeat, so the server keeps serving.
/// Dropping the future (or aborting its task) closes every connection it
/// accepted, telling each peer "the server stopped". A `factory` that
/// panics refuses that connection only (a `tracing` warning; the peer sees
/// `HandlerPanicked`); the server goes on.
///
/// For a graceful shutdown, the peer's address, the ability to refuse a
/// connection, or transports other than TCP, use [`crate::Server`].
///
/// # Errors
///
/// None today: accept errors are retried. The `Result` is kept so existing
/// callers compile unchanged.
///
/// # Examples
///
/// ```
/// use rpc_core::eventual;
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
///
/// struct Parrot;
/// impl Echo for Parrot {
///     async fn echo(&self, text: String) -> String { text }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let server = tokio::spawn(rpc_core::serve(listener, || EchoProxy::new(Parrot)));
///
/// let echo: EchoProxy = rpc_core::connect(addr).await?;
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// server.abort(); // stops accepting and closes the connections
/// # Ok(())
/// # }
/// ```
pub async fn serve<C, F>(listener: TcpListener, factory: F) -> std::io::Result<()>
where
    C: Capability,
    F: Fn() -> C,
{
    serve_with(listener, Config::default(), factory).await
}

/// [`serve`] with explicit connection settings.
///
/// # Errors
///
/// None today, as [`serve`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rpc_core::{eventual, Config};
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
/// # struct Parrot;
/// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = Config::default();
/// config.keepalive_timeout = Duration::from_secs(10); // drop silent clients sooner
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(rpc_core::serve_with(listener, config, || EchoProxy::new(Parrot)));
/// let echo: EchoProxy = rpc_core::connect(addr).await?;
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// # Ok(())
/// # }
/// ```
pub async fn serve_with<C, F>(listener: TcpListener, config: Config, factory: F) -> std::io::Result<()>
where
    C: Capability,
    F: Fn() -> C,
{
    let server = crate::server::Server::new(listener).config(config);
    server.run(move || crate::server::Bootstrap::Ready(factory().client().clone()), std::future::pending()).await;
    Ok(())
}
