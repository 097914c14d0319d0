//! The consumer end of a sequence.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::backend::{self, ReaderBackend, WriterBackend};
use super::core::Shared;
use super::end::{self, Keep, ReaderEnd};
use super::kind::Items;
use super::writer::SequenceWriter;
use super::Window;
use crate::RpcError;

/// The consumer end of a sequence of `T`: read items in the order written,
/// each exactly once.
///
/// A `Sequence` is a capability: it can be returned from a method, passed as
/// an argument, or held in a struct or another sequence. It is also a
/// [`futures::Stream`] of `Result<T, RpcError>`; the stream ends (`None`)
/// when the producer closes it, and yields an error when the producer closes
/// with an error, aborts, or the connection is lost.
///
/// Dropping a `Sequence` cancels it; the producer sees that on its next write
/// or flush.
///
/// # Examples
///
/// A game's event loop: a method returns a sequence at once, the client
/// sets its window and reads.
///
/// ```
/// use futures::StreamExt;
/// use rpc_core::{eventual, Sequence};
///
/// #[eventual]
/// pub trait Game {
///     fn events(&self) -> Sequence<String>;
/// }
///
/// struct Arena;
/// impl Game for Arena {
///     fn events(&self) -> Sequence<String> {
///         let (mut writer, events) = Sequence::channel();
///         tokio::spawn(async move {
///             for event in ["start", "goal", "end"] {
///                 writer.write(event.to_string())?;
///             }
///             writer.close(None).await
///         });
///         events
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let game = GameProxy::new(Arena);
/// let mut events = game.events(); // no round trip: the sequence is here now
/// events.set_capacity(16);
/// let mut log = Vec::new();
/// while let Some(event) = events.next().await {
///     log.push(event?);
/// }
/// assert_eq!(log, ["start", "goal", "end"]);
/// # Ok(())
/// # }
/// ```
pub struct Sequence<T> {
    /// `None` once the end was sent away or consumed.
    backend: Mutex<Option<ReaderBackend<Items<T>>>>,
    /// Keeps alive what this sequence depends on (the call that fills it);
    /// travels with the end when it is sent on.
    keep: Mutex<Option<Keep>>,
    /// Ends the sequence when no item arrives for this long (set through
    /// `&self`, so behind a lock that `poll_read` reaches with `get_mut`).
    idle: Mutex<Option<IdleTimeout>>,
}

impl<T> Sequence<T> {
    /// Creates a connected pair with the default window.
    pub fn channel() -> (SequenceWriter<T>, Sequence<T>) {
        let shared = Shared::new(Window::default());
        (
            SequenceWriter::from_backend(WriterBackend::Local(shared.clone())),
            Sequence::from_backend(ReaderBackend::Local(shared)),
        )
    }

    pub(crate) fn from_backend(backend: ReaderBackend<Items<T>>) -> Self {
        Sequence { backend: Mutex::new(Some(backend)), keep: Mutex::new(None), idle: Mutex::new(None) }
    }

    pub(crate) fn keep_alive(&mut self, keep: Keep) {
        *self.keep.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(keep);
    }

    /// Takes the end out to send it on: its backend with every unread item
    /// (a partly read batch travels in it) and what it keeps alive.
    pub(crate) fn take_end(&self) -> Option<ReaderEnd<Items<T>>> {
        let backend = self.take_backend()?;
        let keep = self.keep.lock().unwrap_or_else(|e| e.into_inner()).take();
        Some(ReaderEnd { backend: Some(backend), keep })
    }

    pub(crate) fn take_backend(&self) -> Option<ReaderBackend<Items<T>>> {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn with_backend<R>(&self, f: impl FnOnce(&ReaderBackend<Items<T>>) -> R) -> Option<R> {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(f)
    }

    /// Sets how many items may be unread at once (at least 1). Takes effect
    /// at once, also on a sequence whose call has not returned yet.
    pub fn set_capacity(&self, capacity: u32) {
        self.update_window(|w| w.capacity = capacity);
    }

    /// Sets how many items travel in one network message (at least 1).
    pub fn set_batch_size(&self, batch: u32) {
        self.update_window(|w| w.batch = batch);
    }

    /// The current capacity.
    pub fn capacity(&self) -> u32 {
        self.window().capacity
    }

    /// The current batch size.
    pub fn batch_size(&self) -> u32 {
        self.window().batch
    }

    fn window(&self) -> Window {
        self.with_backend(ReaderBackend::window).unwrap_or_default()
    }

    fn update_window(&self, change: impl FnOnce(&mut Window)) {
        let mut window = self.window();
        change(&mut window);
        let window = window.sane();
        self.with_backend(|backend| backend.set_window(window));
    }

    /// Ends the sequence from the consumer side; the producer sees `reason`
    /// on its next write or flush.
    pub fn cancel(self, reason: Option<String>) {
        if let Some(backend) = self.take_backend() {
            backend.cancel(reason);
        }
    }
}

/// A consumer's idle timeout: the deadline moves on with every item read.
struct IdleTimeout {
    timeout: Duration,
    deadline: tokio::time::Instant,
    /// Made on the first read that waits, so setting the timeout needs no
    /// runtime.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimeout {
    fn new(timeout: Duration) -> Self {
        IdleTimeout { timeout, deadline: tokio::time::Instant::now() + timeout, sleep: None }
    }

    /// An item arrived: the timeout counts from now.
    fn restart(&mut self) {
        self.deadline = tokio::time::Instant::now() + self.timeout;
        if let Some(sleep) = &mut self.sleep {
            sleep.as_mut().reset(self.deadline);
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline))).as_mut().poll(cx)
    }
}

impl<T: DeserializeOwned> Sequence<T> {
    /// Reads the next item: `Ok(None)` at the end of the sequence.
    ///
    /// An item already buffered is returned without yielding or allocating.
    ///
    /// # Errors
    ///
    /// The producer's error when it closed with one; `Aborted` when it aborted
    /// (or was dropped without closing); `Disconnected` when the connection
    /// went away.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only when the future completes.
    pub async fn read(&mut self) -> Result<Option<T>, RpcError> {
        std::future::poll_fn(|cx| self.poll_read(cx)).await
    }

    /// Polls for the next item; see [`Sequence::read`].
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RpcError>> {
        let backend = self.backend.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(backend) = backend.as_mut() {
            backend.follow_source();
        }
        let polled = match backend {
            Some(ReaderBackend::Local(shared)) => shared.poll_read(cx, 1),
            Some(ReaderBackend::Remote(consumer, cache)) => consumer.poll_read_cached(cache, cx),
            None => Poll::Ready(Err(RpcError::cancelled("this sequence end was sent away"))),
        };
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(idle) = idle else { return polled };
        let timeout = idle.timeout;
        if polled.is_ready() {
            idle.restart();
            return polled;
        }
        if idle.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(backend) = self.take_backend() {
            backend.cancel(Some(format!("idle timeout: no item for {timeout:?}")));
        }
        Poll::Ready(Err(RpcError::new(crate::ErrorKind::Timeout, format!("no item for {timeout:?}"))))
    }

    /// Ends the sequence with a [`crate::ErrorKind::Timeout`] error when no
    /// item arrives for `timeout` while a read is waiting; the producer sees
    /// the sequence cancelled with the reason "idle timeout". `None` turns it off.
    ///
    /// The time counts from this call and from each item read since.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::{ErrorKind, Sequence};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (writer, mut quiet) = Sequence::<u32>::channel();
    /// quiet.set_idle_timeout(Some(Duration::from_millis(10)));
    /// let err = quiet.read().await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// # drop(writer);
    /// # }
    /// ```
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = timeout.map(IdleTimeout::new);
    }

    /// Sends every item into `sink` with backpressure, then closes it. The
    /// sequence's error, if it ends with one, is returned; a sink error
    /// cancels the sequence with the sink's message.
    ///
    /// # Errors
    ///
    /// The sequence's ending error, or the sink's error as `Cancelled`.
    pub async fn forward_to<K>(mut self, sink: K) -> Result<(), RpcError>
    where
        K: Sink<T>,
        K::Error: std::fmt::Display,
    {
        let mut sink = std::pin::pin!(sink);
        let sink_error = |e: K::Error| RpcError::cancelled(format!("the sink failed: {e}"));
        while let Some(item) = self.read().await? {
            if let Err(e) = sink.send(item).await {
                let err = sink_error(e);
                self.cancel(Some(err.message().to_string()));
                return Err(err);
            }
        }
        sink.close().await.map_err(sink_error)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Sequence<T> {
    /// A sequence fed from any stream: a task pumps `stream` into it,
    /// waiting whenever the consumer's window is full, and closes it at the
    /// stream's end. Must be called within a Tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    /// use rpc_core::Sequence;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let squares = Sequence::from_stream(futures::stream::iter(1..=3u32).map(|n| n * n));
    /// let all: Vec<u32> = squares.map(Result::unwrap).collect().await;
    /// assert_eq!(all, [1, 4, 9]);
    /// # }
    /// ```
    pub fn from_stream<S>(stream: S) -> Sequence<T>
    where
        S: Stream<Item = T> + Send + 'static,
    {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if writer.write(item).is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.close(None).await;
        });
        reader
    }
}

impl<T: DeserializeOwned> Stream for Sequence<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.backend.get_mut().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Poll::Ready(None);
        }
        let read = this.poll_read(cx);
        backend::stream_item(this.backend.get_mut().unwrap_or_else(|e| e.into_inner()), read)
    }
}

impl<T> Drop for Sequence<T> {
    fn drop(&mut self) {
        if let Some(backend) = self.take_backend() {
            backend.cancel(None);
        }
    }
}

impl<T> fmt::Debug for Sequence<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let here = self.with_backend(|b| matches!(b, ReaderBackend::Local(_)));
        f.debug_struct("Sequence").field("local", &here).finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Serialize for Sequence<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let end = self.take_end().ok_or_else(|| serde::ser::Error::custom("this sequence end was already sent"))?;
        end::serialize(Box::new(end), serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Send + 'static> Deserialize<'de> for Sequence<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (backend, keep) = end::deserialize_reader(deserializer)?;
        let mut sequence = Sequence::from_backend(backend);
        if let Some(keep) = keep {
            sequence.keep_alive(keep);
        }
        Ok(sequence)
    }
}
