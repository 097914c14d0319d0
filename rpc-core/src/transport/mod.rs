//! Transports: where connections come from.
//!
//! A connection runs over any `AsyncRead + AsyncWrite` byte stream
//! ([`crate::ConnectionBuilder::open`]). This module makes the usual ones one
//! line on each side:
//!
//! | transport | server ([`crate::Server::new`]) | client |
//! |---|---|---|
//! | TCP | `tokio::net::TcpListener` | [`crate::ConnectionBuilder::connect`] |
//! | Unix sockets | `tokio::net::UnixListener` | [`crate::ConnectionBuilder::connect_unix`] |
//! | WebSocket (feature `websocket`) | `ws::WebSocketListener` | `ConnectionBuilder::connect_websocket` |
//! | TLS (feature `tls`) | `tls::TlsListener` | `ConnectionBuilder::connect_tls` |
//!
//! The wrappers compose: `WebSocketListener::new(TlsListener::new(tcp, config))`
//! serves WebSocket over TLS. Anything else becomes a transport by
//! implementing [`Listener`].

use std::fmt;
use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "websocket")]
pub mod ws;

/// A source of incoming connections for [`crate::Server`].
///
/// Accepting is split in two: [`accept`](Listener::accept) takes the next
/// connection off the listener and should return quickly (the server calls
/// it in a loop); [`handshake`](Listener::handshake) turns it into the byte
/// stream the connection runs over (a TLS or WebSocket handshake) and runs
/// on the connection's own task, so a slow client holds up only itself.
///
/// # Examples
///
/// Connections handed over through a channel, e.g. from in-memory pipes:
///
/// ```
/// use rpc_core::{eventual, Connection, Listener, Server};
/// use tokio::io::DuplexStream;
/// use tokio::sync::mpsc;
///
/// struct Pipes(mpsc::Receiver<DuplexStream>);
///
/// impl Listener for Pipes {
///     type Conn = DuplexStream;
///     type Io = DuplexStream;
///     type Addr = &'static str;
///
///     async fn accept(&mut self) -> std::io::Result<(DuplexStream, &'static str)> {
///         match self.0.recv().await {
///             Some(pipe) => Ok((pipe, "in-memory")),
///             None => std::future::pending().await, // no more: idle
///         }
///     }
///
///     fn handshake(&self, conn: DuplexStream) -> impl std::future::Future<Output = std::io::Result<DuplexStream>> + Send + 'static {
///         std::future::ready(Ok(conn))
///     }
/// }
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
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let (dial, pipes) = mpsc::channel(4);
/// let server = Server::new(Pipes(pipes)).spawn(|incoming| {
///     assert_eq!(*incoming.peer_addr(), "in-memory");
///     Ok(EchoProxy::new(Parrot))
/// });
/// let (ours, theirs) = tokio::io::duplex(64 << 10);
/// dial.send(theirs).await.expect("the server listens");
/// let connection = Connection::builder().open(ours).await?;
/// let echo: EchoProxy = connection.bootstrap();
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait Listener: Send + 'static {
    /// A connection as accepted, before its transport handshake.
    type Conn: Send + 'static;
    /// The byte stream a connection runs over, after the handshake.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The peer's address, as the server's factory sees it.
    type Addr: fmt::Debug + Send + Sync + 'static;

    /// Waits for the next connection.
    ///
    /// The server retries after an error (with a growing pause), so errors
    /// about one connection or a passing shortage (`EMFILE`) do not stop it.
    /// Cancelled only when the server shuts down.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Conn, Self::Addr)>> + Send;

    /// Finishes accepting `conn`: the transport's own handshake, if any.
    /// Runs on the connection's task, bounded by `Config::handshake_timeout`.
    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static;
}

/// TCP, with `TCP_NODELAY` set on every connection (calls are small and
/// already coalesced by the connection's writer).
impl Listener for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> io::Result<(Self::Conn, Self::Addr)> {
        tokio::net::TcpListener::accept(self).await
    }

    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static {
        std::future::ready(conn.set_nodelay(true).map(|()| conn))
    }
}

/// Unix domain sockets.
#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> io::Result<(Self::Conn, Self::Addr)> {
        tokio::net::UnixListener::accept(self).await
    }

    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static {
        std::future::ready(Ok(conn))
    }
}

#[cfg(unix)]
impl crate::ConnectionBuilder {
    /// Connects to a Unix domain socket at `path` and runs the handshake.
    /// Connecting is bounded by `Config::handshake_timeout`, as the
    /// handshake itself is.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Disconnected`] if the socket cannot be reached,
    /// [`crate::ErrorKind::Timeout`] if connecting takes longer than the
    /// handshake timeout, otherwise as [`crate::ConnectionBuilder::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use rpc_core::{eventual, Connection, Server};
    /// # #[eventual]
    /// # pub trait Echo { async fn echo(&self, text: String) -> String; }
    /// # struct Parrot;
    /// # impl Echo for Parrot { async fn echo(&self, text: String) -> String { text } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let path = std::env::temp_dir().join(format!("rpc-doc-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let server = Server::new(tokio::net::UnixListener::bind(&path)?).spawn(|_| Ok(EchoProxy::new(Parrot)));
    ///
    /// let connection = Connection::builder().connect_unix(&path).await?;
    /// let echo: EchoProxy = connection.bootstrap();
    /// assert_eq!(echo.echo("hi".into()).await?, "hi");
    /// server.shutdown().await;
    /// # std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_unix(self, path: impl AsRef<std::path::Path>) -> Result<crate::Connection, crate::RpcError> {
        let connecting = tokio::net::UnixStream::connect(path);
        let stream = tokio::time::timeout(self.settings().handshake_timeout, connecting).await.map_err(|_| {
            crate::RpcError::new(crate::ErrorKind::Timeout, "the Unix socket connection was not made in time")
        })??;
        self.open(stream).await
    }
}
