//! The producer end of a sequence.

use std::fmt;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::backend::{self, WriterBackend};
use super::end::{self, WriterEnd};
use super::kind::Items;
use crate::RpcError;

/// The producer end of a sequence of `T`.
///
/// * [`write`](Self::write) buffers an item and never waits;
/// * [`flush`](Self::flush) waits until the consumer's window has room;
/// * [`close`](Self::close) ends the sequence after the buffered items, with
///   or without an error for the consumer;
/// * [`abort`](Self::abort) ends it at once and frees the buffer. Dropping a
///   writer without closing it aborts.
///
/// It is also a [`futures::Sink`], so `stream.forward(writer)` pumps any
/// stream into a sequence with backpressure.
///
/// # Examples
///
/// An upload: the client writes, the server reads.
///
/// ```
/// use rpc_core::{eventual, RpcError, Sequence};
///
/// #[eventual]
/// pub trait Scores {
///     async fn total(&self, scores: Sequence<u32>) -> Result<u64, RpcError>;
/// }
///
/// struct Summer;
/// impl Scores for Summer {
///     async fn total(&self, mut scores: Sequence<u32>) -> Result<u64, RpcError> {
///         let mut total = 0;
///         while let Some(score) = scores.read().await? {
///             total += u64::from(score);
///         }
///         Ok(total)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), RpcError> {
/// let scores = ScoresProxy::new(Summer);
/// let (mut writer, reader) = Sequence::channel();
/// let total = scores.total(reader);
/// for score in [3, 4, 5] {
///     writer.write(score)?;
///     writer.flush().await?;
/// }
/// writer.close(None).await?;
/// assert_eq!(total.await?, 12);
/// # Ok(())
/// # }
/// ```
pub struct SequenceWriter<T> {
    backend: Mutex<Option<WriterBackend<Items<T>>>>,
}

impl<T> SequenceWriter<T> {
    pub(crate) fn from_backend(backend: WriterBackend<Items<T>>) -> Self {
        SequenceWriter { backend: Mutex::new(Some(backend)) }
    }

    /// Once the consumer end went over a connection, write to it directly
    /// instead of through the local core on every item.
    fn follow_redirect(&mut self) {
        if let Some(backend) = self.backend.get_mut().unwrap_or_else(|e| e.into_inner()) {
            backend.follow_redirect();
        }
    }

    pub(crate) fn take_backend(&self) -> Option<WriterBackend<Items<T>>> {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn backend(&mut self) -> Result<&mut WriterBackend<Items<T>>, RpcError> {
        self.backend.get_mut().unwrap_or_else(|e| e.into_inner()).as_mut().ok_or_else(backend::writer_gone)
    }

    /// Polls until the consumer's window has room; see [`SequenceWriter::flush`].
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        match self.backend() {
            Ok(backend) => backend.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Whether the consumer's window has room now, without waiting: a producer
    /// can skip or coalesce redundant items while the consumer is behind
    /// (a game server dropping position snapshots for a slow client).
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::Sequence;
    ///
    /// let (mut writer, reader) = Sequence::<u32>::channel();
    /// reader.set_capacity(1);
    /// assert!(writer.has_room());
    /// writer.write(1).unwrap();
    /// assert!(!writer.has_room()); // one unread item fills a window of one
    /// ```
    pub fn has_room(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // A flush with room still yields now and then (to let the
        // connection's writer run): asked twice, that is not "no room".
        (0..2).any(|_| matches!(self.poll_flush(&mut cx), Poll::Ready(Ok(()))))
    }

    /// Waits until backpressure has eased: fewer than `capacity` items are
    /// unread by the consumer.
    ///
    /// # Errors
    ///
    /// `Cancelled` (with the consumer's reason) if the consumer cancelled;
    /// `Disconnected` if the connection went away.
    pub async fn flush(&mut self) -> Result<(), RpcError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Ends the sequence once everything buffered is delivered. With
    /// `Some(error)` the consumer reads the items, then that error. To end
    /// with your own application error, pass
    /// [`RpcError::application(&value)`](RpcError::application): the
    /// consumer gets it back with
    /// [`application_value`](RpcError::application_value).
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush).
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{ErrorKind, RpcError, Sequence};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), RpcError> {
    /// let (mut writer, mut lines) = Sequence::<String>::channel();
    /// writer.write("first line".to_string())?;
    /// writer.close(Some(RpcError::application(&"no such file: b.txt".to_string()))).await?;
    ///
    /// assert_eq!(lines.read().await?, Some("first line".to_string()));
    /// let end = lines.read().await.unwrap_err();
    /// assert_eq!(end.kind(), ErrorKind::Application);
    /// assert_eq!(end.application_value::<String>().as_deref(), Some("no such file: b.txt"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn close(self, error: Option<RpcError>) -> Result<(), RpcError> {
        backend::close(self.take_backend(), error).await
    }

    /// Ends the sequence at once; unread items are dropped on both sides.
    pub fn abort(self) {
        if let Some(backend) = self.take_backend() {
            backend.abort();
        }
    }

    /// The consumer's current capacity (items that may be unread at once).
    pub fn capacity(&self) -> u32 {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |b| b.window().capacity)
    }
}

impl<T: Serialize> SequenceWriter<T> {
    /// Buffers `item` for the consumer without waiting.
    ///
    /// # Errors
    ///
    /// `Cancelled` (with the consumer's reason) once the consumer cancelled;
    /// `Disconnected` once the connection is gone.
    pub fn write(&mut self, item: T) -> Result<(), RpcError> {
        self.follow_redirect();
        self.backend()?.write(item)
    }
}

impl<T> Drop for SequenceWriter<T> {
    fn drop(&mut self) {
        if let Some(backend) = self.take_backend() {
            backend.abort();
        }
    }
}

impl<T> fmt::Debug for SequenceWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequenceWriter").finish_non_exhaustive()
    }
}

impl<T: Serialize> futures::Sink<T> for SequenceWriter<T> {
    type Error = RpcError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_flush(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), RpcError> {
        self.get_mut().write(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        backend::poll_close(self.get_mut().backend.get_mut().unwrap_or_else(|e| e.into_inner()), cx)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Serialize for SequenceWriter<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let backend = self.take_backend().ok_or_else(|| serde::ser::Error::custom("this writer was already sent"))?;
        end::serialize(Box::new(WriterEnd(Some(backend))), serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Send + 'static> Deserialize<'de> for SequenceWriter<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        end::deserialize_writer(deserializer).map(SequenceWriter::from_backend)
    }
}
