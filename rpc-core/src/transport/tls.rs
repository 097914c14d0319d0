//! TLS (feature `tls`) through tokio-rustls.
//!
//! [`rustls`] and [`tokio_rustls`] are re-exported so that the configurations
//! you build match the versions used here. The feature enables rustls's
//! `ring` provider only, so `ServerConfig::builder()` and
//! `ClientConfig::builder()` use it; if your build enables another provider
//! too, pick one with `builder_with_provider` or install a process default.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::ToSocketAddrs;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use tokio_rustls;
pub use tokio_rustls::rustls;

use super::Listener;
use crate::{Connection, ConnectionBuilder, ErrorKind, RpcError};

/// A byte stream whose writes complete only once flushed to the socket.
///
/// TLS buffers encrypted records when the socket is full and reports the
/// write done; the connection's writer then waits for new output and the
/// records would sit there until it has some. This wrapper keeps the write
/// pending until they are out. A write that returns `Pending` after its
/// bytes were taken finishes on the next call, which must pass the same
/// bytes again (as `write_all` and the connection's writer do).
///
/// [`TlsListener`] and [`ConnectionBuilder::connect_tls`] wrap their
/// streams in it; wrap a TLS stream you open yourself the same way.
///
/// # Examples
///
/// ```
/// use rpc_core::transport::tls::WriteThrough;
/// use rpc_core::Connection;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// // Any byte stream works; a TLS stream is where it matters.
/// let (a, b) = tokio::io::duplex(64 << 10);
/// let (ours, _theirs) =
///     tokio::try_join!(Connection::builder().open(WriteThrough::new(a)), Connection::builder().open(b))?;
/// assert!(ours.peer_limits().max_frame_size > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WriteThrough<S> {
    inner: S,
    /// Bytes already taken by the inner stream, being flushed.
    taken: usize,
}

impl<S> WriteThrough<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        WriteThrough { inner, taken: 0 }
    }

    /// The wrapped stream (e.g. to read the TLS session's details).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteThrough<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteThrough<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.taken == 0 {
            this.taken = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            if this.taken == 0 {
                return Poll::Ready(Ok(0));
            }
        }
        let flushed = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        let n = std::mem::take(&mut this.taken);
        flushed?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves TLS on top of another listener (usually a
/// `tokio::net::TcpListener`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use rpc_core::transport::tls::{rustls, TlsListener};
/// use rpc_core::{eventual, Connection, Server};
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
/// fn tls_configs(
///     cert: Vec<rustls::pki_types::CertificateDer<'static>>,
///     key: rustls::pki_types::PrivateKeyDer<'static>,
/// ) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), rustls::Error> {
///     let mut roots = rustls::RootCertStore::empty();
///     roots.add(cert[0].clone())?;
///     let server = rustls::ServerConfig::builder()
///         .with_no_client_auth()
///         .with_single_cert(cert, key)?;
///     let client = rustls::ClientConfig::builder()
///         .with_root_certificates(roots)
///         .with_no_client_auth();
///     Ok((Arc::new(server), Arc::new(client)))
/// }
///
/// async fn run(
///     cert: Vec<rustls::pki_types::CertificateDer<'static>>,
///     key: rustls::pki_types::PrivateKeyDer<'static>,
/// ) -> Result<(), Box<dyn std::error::Error>> {
///     let (server_config, client_config) = tls_configs(cert, key)?;
///     let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let addr = tcp.local_addr()?;
///     let server = Server::new(TlsListener::new(tcp, server_config)).spawn(|_| Ok(EchoProxy::new(Parrot)));
///
///     // The certificate names "localhost".
///     let connection = Connection::builder().connect_tls(addr, "localhost", client_config).await?;
///     let echo: EchoProxy = connection.bootstrap();
///     assert_eq!(echo.echo("hi".into()).await?, "hi");
///     server.shutdown().await;
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
/// # let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
/// # run(vec![certified.cert.der().clone()], key).await
/// # }
/// ```
pub struct TlsListener<L> {
    inner: L,
    acceptor: TlsAcceptor,
}

impl<L: std::fmt::Debug> std::fmt::Debug for TlsListener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<L: Listener> TlsListener<L> {
    /// TLS with `config` over the connections `inner` accepts.
    pub fn new(inner: L, config: Arc<ServerConfig>) -> Self {
        TlsListener { inner, acceptor: TlsAcceptor::from(config) }
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Conn = L::Conn;
    type Io = WriteThrough<tokio_rustls::server::TlsStream<L::Io>>;
    type Addr = L::Addr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Conn, Self::Addr)>> + Send {
        self.inner.accept()
    }

    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static {
        let inner = self.inner.handshake(conn);
        let acceptor = self.acceptor.clone();
        async move {
            let io = inner.await?;
            Ok(WriteThrough::new(acceptor.accept(io).await?))
        }
    }
}

impl ConnectionBuilder {
    /// Connects over TCP, runs a TLS handshake with `config`, verifying the
    /// server's certificate for `server_name`, then runs our handshake.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] for an invalid `server_name`,
    /// [`ErrorKind::Disconnected`] if the server cannot be reached or the TLS
    /// handshake fails (an untrusted certificate, say),
    /// [`ErrorKind::Timeout`] if that takes longer than
    /// `Config::handshake_timeout`; otherwise as [`ConnectionBuilder::open`].
    ///
    /// # Examples
    ///
    /// See [`TlsListener`].
    pub async fn connect_tls(
        self,
        addr: impl ToSocketAddrs,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<Connection, RpcError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|err| RpcError::protocol(format!("bad TLS server name {server_name:?}: {err}")))?;
        let handshake = async {
            let socket = tokio::net::TcpStream::connect(addr).await?;
            socket.set_nodelay(true)?;
            let tls = TlsConnector::from(config)
                .connect(name, socket)
                .await
                .map_err(|err| RpcError::disconnected(format!("TLS handshake failed: {err}")))?;
            Ok::<_, RpcError>(tls)
        };
        let tls = tokio::time::timeout(self.settings().handshake_timeout, handshake)
            .await
            .map_err(|_| RpcError::new(ErrorKind::Timeout, "the TLS connection was not made in time"))??;
        self.open(WriteThrough::new(tls)).await
    }
}
