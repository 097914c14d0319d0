//! WebSocket (feature `websocket`): the connection's byte stream carried in
//! binary messages, for clients behind HTTP proxies and, later, browsers.
//!
//! Message boundaries mean nothing: the protocol's frames are a byte stream
//! cut into messages of at most [`MAX_MESSAGE`] bytes, and a reader takes
//! the bytes in order whatever the cut. Incoming messages over
//! [`MAX_INCOMING_MESSAGE`] bytes close the connection (the WebSocket layer
//! buffers a message whole before it hands it on, so this bounds what a
//! peer can make us hold). Text messages are a protocol error; pings are
//! answered by the WebSocket layer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

pub use tokio_tungstenite;

use super::Listener;
use crate::{Connection, ConnectionBuilder, ErrorKind, RpcError};

/// The largest message we send: writes are cut into messages this long.
pub const MAX_MESSAGE: usize = 64 << 10;
/// The largest message (and WebSocket frame) we accept.
pub const MAX_INCOMING_MESSAGE: usize = 1 << 20;

/// The WebSocket settings both sides use: bounded incoming messages, a
/// modest read buffer, and every message written out at once. Use them for
/// a WebSocket you open yourself (see [`WebSocketIo`]).
///
/// # Examples
///
/// ```
/// use rpc_core::transport::ws::{websocket_config, MAX_INCOMING_MESSAGE};
///
/// assert_eq!(websocket_config().max_message_size, Some(MAX_INCOMING_MESSAGE));
/// ```
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(MAX_MESSAGE)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_INCOMING_MESSAGE))
        .max_frame_size(Some(MAX_INCOMING_MESSAGE))
}

/// A [`WebSocketStream`] as a byte stream (`AsyncRead + AsyncWrite`), so a
/// [`Connection`] runs over it: [`ConnectionBuilder::open`] takes it.
///
/// A write completes once its message is handed to the socket, so nothing
/// waits in the WebSocket layer's buffer for a later write to push it out.
///
/// # Examples
///
/// A client over a WebSocket made by hand (through a proxy, say):
///
/// ```
/// use rpc_core::transport::ws::{tokio_tungstenite, websocket_config, WebSocketIo, WebSocketListener};
/// use rpc_core::{eventual, Connection, Server};
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
/// # let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = tcp.local_addr()?;
/// # let server = Server::new(WebSocketListener::new(tcp)).spawn(|_| Ok(EchoProxy::new(Parrot)));
/// let socket = tokio::net::TcpStream::connect(addr).await?;
/// let url = format!("ws://{addr}/");
/// let (ws, _response) = tokio_tungstenite::client_async_with_config(url, socket, Some(websocket_config())).await?;
/// let connection = Connection::builder().open(WebSocketIo::new(ws)).await?;
/// let echo: EchoProxy = connection.bootstrap();
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// # server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WebSocketIo<S> {
    ws: WebSocketStream<S>,
    /// The rest of the message being read.
    reading: bytes::Bytes,
    /// Bytes of the caller's buffer already sent as a message and being
    /// flushed: the write completes with this count once flushed.
    sending: usize,
}

impl<S> WebSocketIo<S> {
    /// Wraps an open WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WebSocketIo { ws, reading: bytes::Bytes::new(), sending: 0 }
    }
}

/// A WebSocket error as an I/O error.
fn io_error(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.reading.is_empty() {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) | Some(Err(WsError::ConnectionClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Ok(Message::Binary(data))) => this.reading = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "a text WebSocket message")))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(err)) => return Poll::Ready(Err(io_error(err))),
            }
        }
        let n = this.reading.len().min(buf.remaining());
        buf.put_slice(&this.reading.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketIo<S> {
    /// Sends up to [`MAX_MESSAGE`] bytes of `buf` as one binary message and
    /// completes once it is flushed. A call that returns `Pending` after the
    /// message was queued finishes on the next call, which must pass the
    /// same bytes again (as `write_all` and the connection's writer do).
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.sending == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
            let n = buf.len().min(MAX_MESSAGE);
            let message = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
            Pin::new(&mut this.ws).start_send(message).map_err(io_error)?;
            this.sending = n;
        }
        let flushed = ready!(Pin::new(&mut this.ws).poll_flush(cx));
        let n = std::mem::take(&mut this.sending);
        flushed.map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}

/// Serves WebSocket connections on top of another listener: a
/// `tokio::net::TcpListener` for `ws://`, a `tls::TlsListener` (feature `tls`) for
/// `wss://`. Any request path is accepted.
///
/// # Examples
///
/// ```
/// use rpc_core::transport::ws::WebSocketListener;
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
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = tcp.local_addr()?;
/// let server = Server::new(WebSocketListener::new(tcp)).spawn(|_| Ok(EchoProxy::new(Parrot)));
///
/// let connection = Connection::builder().connect_websocket(&format!("ws://{addr}/rpc")).await?;
/// let echo: EchoProxy = connection.bootstrap();
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WebSocketListener<L> {
    inner: L,
}

impl<L: Listener> WebSocketListener<L> {
    /// WebSocket over the connections `inner` accepts.
    pub fn new(inner: L) -> Self {
        WebSocketListener { inner }
    }
}

impl<L: Listener> Listener for WebSocketListener<L> {
    type Conn = L::Conn;
    type Io = WebSocketIo<L::Io>;
    type Addr = L::Addr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Conn, Self::Addr)>> + Send {
        self.inner.accept()
    }

    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static {
        let inner = self.inner.handshake(conn);
        async move {
            let io = inner.await?;
            let ws =
                tokio_tungstenite::accept_async_with_config(io, Some(websocket_config())).await.map_err(io_error)?;
            Ok(WebSocketIo::new(ws))
        }
    }
}

impl ConnectionBuilder {
    /// Connects to a `ws://` URL (host, port and path are used) and runs the
    /// handshake over WebSocket. For `wss://` or a proxy, make the
    /// WebSocket yourself and [`open`](ConnectionBuilder::open) a
    /// [`WebSocketIo`] over it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] for a URL that is not `ws://`,
    /// [`ErrorKind::Disconnected`] if the server cannot be reached or refuses
    /// the WebSocket upgrade, [`ErrorKind::Timeout`] if that takes longer than
    /// `Config::handshake_timeout`; otherwise as
    /// [`ConnectionBuilder::open`].
    ///
    /// # Examples
    ///
    /// See [`WebSocketListener`].
    pub async fn connect_websocket(self, url: &str) -> Result<Connection, RpcError> {
        let request =
            url.into_client_request().map_err(|err| RpcError::protocol(format!("bad WebSocket URL: {err}")))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            return Err(RpcError::protocol(format!("connect_websocket takes a ws:// URL, not {url}")));
        }
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let upgrade = async {
            let socket = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            socket.set_nodelay(true)?;
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(request, socket, Some(websocket_config()))
                    .await
                    .map_err(|err| RpcError::disconnected(format!("WebSocket handshake failed: {err}")))?;
            Ok::<_, RpcError>(ws)
        };
        let ws = tokio::time::timeout(self.settings().handshake_timeout, upgrade)
            .await
            .map_err(|_| RpcError::new(ErrorKind::Timeout, "the WebSocket was not opened in time"))??;
        self.open(WebSocketIo::new(ws)).await
    }
}
