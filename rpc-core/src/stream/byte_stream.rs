//! `Bytes`: a byte stream capability, and its writer.
//!
//! Our [`Bytes`] is a *stream*, not a chunk of memory: chunks are
//! [`bytes::Bytes`]. A byte stream keeps no chunk boundaries: the consumer
//! sets a window in bytes and a maximum read size, a write may be delivered
//! in parts, and a read returns up to `min(available, max read)` bytes
//! however they were written.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::backend::{self, ReaderBackend, WriterBackend};
use super::core::Shared;
use super::end::{self, Keep, ReaderEnd, WriterEnd};
use super::kind::Chunks;
use super::Window;
use crate::RpcError;

/// Default window of a byte stream, in bytes.
pub const DEFAULT_BYTE_WINDOW: u32 = 256 << 10;
/// Default maximum read size of a byte stream, in bytes.
pub const DEFAULT_MAX_READ: u32 = 64 << 10;

fn default_window() -> Window {
    Window { capacity: DEFAULT_BYTE_WINDOW, batch: DEFAULT_MAX_READ }
}

type ByteReader = ReaderBackend<Chunks>;
type ByteWriter = WriterBackend<Chunks>;

/// The consumer end of a byte stream (not a chunk: chunks are [`bytes::Bytes`]).
///
/// Read it chunk by chunk with [`Bytes::read_chunk`], as a `futures::Stream`
/// of chunks, or as a tokio [`AsyncRead`] (so `AsyncReadExt::read`,
/// `read_to_end` and `tokio::io::copy` work as usual). Dropping it cancels
/// the stream.
///
/// # Examples
///
/// A download with `tokio::io::copy` into any `AsyncWrite`:
///
/// ```
/// use rpc_core::{eventual, Bytes};
/// use tokio::io::AsyncWriteExt;
///
/// #[eventual]
/// pub trait Archive {
///     fn replay(&self, round: u32) -> Bytes;
/// }
///
/// struct Recorder;
/// impl Archive for Recorder {
///     fn replay(&self, round: u32) -> Bytes {
///         let (mut writer, replay) = Bytes::channel();
///         tokio::spawn(async move {
///             writer.write_all(format!("round {round}: ").as_bytes()).await?;
///             writer.write_all(b"blue wins").await?;
///             writer.shutdown().await
///         });
///         replay
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let archive = ArchiveProxy::new(Recorder);
/// let mut replay = archive.replay(3);
/// let mut file = Vec::new();
/// tokio::io::copy(&mut replay, &mut file).await?;
/// assert_eq!(file, b"round 3: blue wins");
/// # Ok(())
/// # }
/// ```
///
/// Reads into a buffer of your own with `AsyncReadExt::read` (the chunk by
/// chunk read is [`read_chunk`](Self::read_chunk), so the names do not clash):
///
/// ```
/// use rpc_core::Bytes;
/// use tokio::io::AsyncReadExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (mut writer, mut reader) = Bytes::channel();
/// writer.write("abcdef").map_err(std::io::Error::other)?;
/// writer.close(None).await.map_err(std::io::Error::other)?;
/// let mut buf = [0u8; 4];
/// let n = reader.read(&mut buf).await?;
/// assert_eq!(&buf[..n], b"abcd");
/// # Ok(())
/// # }
/// ```
pub struct Bytes {
    backend: Mutex<Option<ByteReader>>,
    /// Keeps alive the call that fills it; travels with the end when sent on.
    keep: Mutex<Option<Keep>>,
}

/// The producer end of a byte stream.
///
/// [`write`](Self::write) queues a chunk without copying and never waits;
/// [`flush`](Self::flush) waits until the consumer's window has room;
/// [`close`](Self::close), [`abort`](Self::abort) and dropping behave as for
/// [`crate::SequenceWriter`]. It is also a tokio [`AsyncWrite`] (a write takes
/// what the window has room for) and a `futures::Sink` of chunks.
///
/// The inherent [`write`](Self::write) and [`flush`](Self::flush) take
/// precedence over `AsyncWriteExt`'s methods of the same names; call
/// `write_all` (or `AsyncWriteExt::write(&mut writer, buf)`) for the
/// `AsyncWrite` forms.
///
/// # Examples
///
/// A producer that sends chunks without copying, waits for room, and closes:
///
/// ```
/// use rpc_core::Bytes;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let (mut writer, mut reader) = Bytes::channel();
/// let upload = tokio::spawn(async move {
///     for part in ["hello, ", "byte ", "stream"] {
///         writer.write(part)?; // a `&'static str`, `Vec<u8>` or `bytes::Bytes`
///         writer.flush().await?; // waits while the reader's window is full
///     }
///     writer.close(None).await
/// });
///
/// let mut text = Vec::new();
/// while let Some(chunk) = reader.read_chunk().await? {
///     text.extend_from_slice(&chunk);
/// }
/// assert_eq!(text, b"hello, byte stream");
/// upload.await.expect("the writer task")?;
/// # Ok(())
/// # }
/// ```
///
/// As a tokio `AsyncWrite`:
///
/// ```
/// use rpc_core::Bytes;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (mut writer, mut reader) = Bytes::channel();
/// writer.write_all(b"copied").await?;
/// writer.shutdown().await?; // the end of the stream
/// let mut text = String::new();
/// reader.read_to_string(&mut text).await?;
/// assert_eq!(text, "copied");
/// # Ok(())
/// # }
/// ```
pub struct BytesWriter {
    backend: Mutex<Option<ByteWriter>>,
}

impl Bytes {
    /// Creates a connected pair with a 256 KiB window and 64 KiB reads.
    pub fn channel() -> (BytesWriter, Bytes) {
        let core = Shared::new(default_window());
        (BytesWriter::from_backend(ByteWriter::Local(core.clone())), Bytes::from_backend(ByteReader::Local(core)))
    }

    pub(crate) fn from_backend(backend: ByteReader) -> Self {
        Bytes { backend: Mutex::new(Some(backend)), keep: Mutex::new(None) }
    }

    fn take_backend(&self) -> Option<ByteReader> {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn window(&self) -> Window {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or_else(default_window, ByteReader::window)
    }

    fn update_window(&self, change: impl FnOnce(&mut Window)) {
        let mut window = self.window();
        change(&mut window);
        let window = window.sane();
        if let Some(backend) = &*self.backend.lock().unwrap_or_else(|e| e.into_inner()) {
            backend.set_window(window);
        }
    }

    /// Sets the window: how many bytes may be unread at once (at least 1).
    pub fn set_window(&self, bytes: u32) {
        self.update_window(|w| w.capacity = bytes);
    }

    /// Sets the largest chunk a read returns (and a network message carries).
    pub fn set_max_read(&self, bytes: u32) {
        self.update_window(|w| w.batch = bytes);
    }

    /// The current window in bytes.
    pub fn window_size(&self) -> u32 {
        self.window().capacity
    }

    /// The current maximum read size in bytes.
    pub fn max_read(&self) -> u32 {
        self.window().batch
    }

    /// Polls for the next chunk of at most `max` bytes.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<bytes::Bytes>, RpcError>> {
        let backend = self.backend.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(backend) = backend.as_mut() {
            backend.follow_source();
        }
        match backend {
            Some(ByteReader::Local(core)) => core.poll_read(cx, max),
            Some(ByteReader::Remote(consumer, _)) => consumer.poll_read_bytes(cx, max),
            None => Poll::Ready(Err(RpcError::cancelled("this byte stream end was sent away"))),
        }
    }

    /// Reads the next chunk: up to `min(available, max read)` bytes, or
    /// `Ok(None)` at the end of the stream. The chunk is handed over as
    /// received, without a copy.
    ///
    /// (For reads into a buffer of your own, `Bytes` is a tokio
    /// [`AsyncRead`]: use `AsyncReadExt::read`, `read_exact` or
    /// `read_to_end`.)
    ///
    /// # Errors
    ///
    /// As for [`crate::Sequence::read`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::Bytes;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rpc_core::RpcError> {
    /// let (mut writer, mut reader) = Bytes::channel();
    /// writer.write("one chunk")?;
    /// writer.close(None).await?;
    /// assert_eq!(reader.read_chunk().await?.as_deref(), Some(&b"one chunk"[..]));
    /// assert_eq!(reader.read_chunk().await?, None); // the end
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_chunk(&mut self) -> Result<Option<bytes::Bytes>, RpcError> {
        let max = self.max_read() as usize;
        std::future::poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Ends the stream from the consumer side.
    pub fn cancel(self, reason: Option<String>) {
        if let Some(backend) = self.take_backend() {
            backend.cancel(reason);
        }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Some(backend) = self.take_backend() {
            backend.cancel(None);
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bytes").field("window", &self.window()).finish_non_exhaustive()
    }
}

impl AsyncRead for Bytes {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let max = buf.remaining().min(this.max_read() as usize);
        match this.poll_read_chunk(cx, max) {
            Poll::Ready(Ok(Some(chunk))) => {
                buf.put_slice(&chunk);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(io::Error::other(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::Stream for Bytes {
    type Item = Result<bytes::Bytes, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.backend.get_mut().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Poll::Ready(None);
        }
        let max = this.max_read() as usize;
        let read = this.poll_read_chunk(cx, max);
        backend::stream_item(this.backend.get_mut().unwrap_or_else(|e| e.into_inner()), read)
    }
}

impl BytesWriter {
    fn from_backend(backend: ByteWriter) -> Self {
        BytesWriter { backend: Mutex::new(Some(backend)) }
    }

    fn backend(&mut self) -> Result<&mut ByteWriter, RpcError> {
        let backend = self.backend.get_mut().unwrap_or_else(|e| e.into_inner());
        // Once the consumer end went over a connection, write to it directly.
        if let Some(backend) = backend.as_mut() {
            backend.follow_redirect();
        }
        backend.as_mut().ok_or_else(backend::writer_gone)
    }

    fn take_backend(&self) -> Option<ByteWriter> {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Queues `chunk` for the consumer without waiting (a `bytes::Bytes` is
    /// not copied until it is framed).
    ///
    /// # Errors
    ///
    /// `Cancelled` with the consumer's reason, or `Disconnected`.
    pub fn write(&mut self, chunk: impl Into<bytes::Bytes>) -> Result<(), RpcError> {
        self.backend()?.write(chunk.into())
    }

    /// Polls for room in the consumer's window; `Ready(Ok(n))` with `n > 0`.
    pub fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        match self.backend() {
            Ok(backend) => backend.poll_room(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Waits until backpressure has eased (fewer unread bytes than the window).
    ///
    /// # Errors
    ///
    /// `Cancelled` with the consumer's reason, or `Disconnected`.
    pub async fn flush(&mut self) -> Result<(), RpcError> {
        std::future::poll_fn(|cx| self.poll_room(cx).map_ok(|_| ())).await
    }

    /// Ends the stream after everything queued is delivered; with an error,
    /// the consumer reads the bytes and then that error.
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush).
    pub async fn close(self, error: Option<RpcError>) -> Result<(), RpcError> {
        backend::close(self.take_backend(), error).await
    }

    /// Ends the stream at once, dropping unread bytes on both sides.
    pub fn abort(self) {
        if let Some(backend) = self.take_backend() {
            backend.abort();
        }
    }

    /// The consumer's current window in bytes.
    pub fn window_size(&self) -> u32 {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |b| b.window().capacity)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        backend::poll_close(self.backend.get_mut().unwrap_or_else(|e| e.into_inner()), cx)
    }
}

impl Drop for BytesWriter {
    fn drop(&mut self) {
        if let Some(backend) = self.take_backend() {
            backend.abort();
        }
    }
}

impl fmt::Debug for BytesWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesWriter").finish_non_exhaustive()
    }
}

impl AsyncWrite for BytesWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let room = match this.poll_room(cx) {
            Poll::Ready(Ok(room)) => room,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
            Poll::Pending => return Poll::Pending,
        };
        // Take what the window has room for: a write may be delivered in parts.
        let n = room.min(data.len());
        let written = match this.backend() {
            Ok(WriterBackend::Remote(producer, _)) => producer.write_slice(&data[..n]),
            Ok(_) => this.write(bytes::Bytes::copy_from_slice(&data[..n])),
            Err(err) => Err(err),
        };
        match written {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(err) => Poll::Ready(Err(io::Error::other(err))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything written is queued for sending; the writer task sends it.
        let _ = cx;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close(cx).map_err(io::Error::other)
    }
}

impl futures::Sink<bytes::Bytes> for BytesWriter {
    type Error = RpcError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_room(cx).map_ok(|_| ())
    }

    fn start_send(self: Pin<&mut Self>, chunk: bytes::Bytes) -> Result<(), RpcError> {
        self.get_mut().write(chunk)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_room(cx).map_ok(|_| ())
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_close(cx)
    }
}

// ----- as capabilities --------------------------------------------------------

impl Bytes {
    /// Takes the end out to send it on, with what it keeps alive.
    fn take_end(&self) -> Option<ReaderEnd<Chunks>> {
        let backend = self.take_backend()?;
        let keep = self.keep.lock().unwrap_or_else(|e| e.into_inner()).take();
        Some(ReaderEnd { backend: Some(backend), keep })
    }

    fn with_keep(mut self, keep: Option<Keep>) -> Bytes {
        *self.keep.get_mut().unwrap_or_else(|e| e.into_inner()) = keep;
        self
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let end = self.take_end().ok_or_else(|| serde::ser::Error::custom("this byte stream was already sent"))?;
        end::serialize(Box::new(end), serializer)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (backend, keep) = end::deserialize_reader(deserializer)?;
        Ok(Bytes::from_backend(backend).with_keep(keep))
    }
}

impl Serialize for BytesWriter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let backend = self.take_backend().ok_or_else(|| serde::ser::Error::custom("this writer was already sent"))?;
        end::serialize(Box::new(WriterEnd(Some(backend))), serializer)
    }
}

impl<'de> Deserialize<'de> for BytesWriter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        end::deserialize_writer(deserializer).map(BytesWriter::from_backend)
    }
}

/// For generated code: the caller's end of a returned byte stream, holding
/// the call that fills it.
pub fn bytes_result(reader: Bytes, call: crate::Promise<()>) -> Bytes {
    reader.with_keep(Some(Box::new(call)))
}

/// For generated code: connects the byte stream a handler returned to the
/// writer the caller sent.
pub fn splice_bytes(from: Bytes, to: BytesWriter) {
    end::splice(from.take_end(), to.take_backend());
}
