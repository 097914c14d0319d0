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
        self.shared().close(RpcError::disconnected("closed on purpose"), true);
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

/// Options for opening a [`Connection`].
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
/// obtained through it) does.
///
/// # Errors
///
/// As [`ConnectionBuilder::open`], plus connection failures.
pub async fn connect<C: Capability>(addr: impl ToSocketAddrs) -> Result<C, RpcError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let connection = Connection::builder().open(stream).await?;
    Ok(connection.bootstrap())
}

/// Accepts TCP connections forever, offering each a fresh bootstrap object
/// made by `factory`.
///
/// # Errors
///
/// Returns only if accepting fails.
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
/// Returns only if accepting fails.
pub async fn serve_with<C, F>(listener: TcpListener, config: Config, factory: F) -> std::io::Result<()>
where
    C: Capability,
    F: Fn() -> C,
{
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let builder = Connection::builder().config(config.clone()).bootstrap(factory());
        tokio::spawn(async move {
            match builder.open(stream).await {
                Ok(connection) => {
                    let reason = connection.closed().await;
                    tracing::debug!(%peer, "connection closed: {reason}");
                }
                Err(err) => tracing::debug!(%peer, "handshake failed: {err}"),
            }
        });
    }
}
