//! What a stream end is attached to, for sequences and byte streams alike:
//! the in-process core of its pair, or a connection-bound half.
//!
//! The public ends (`Sequence`/`SequenceWriter`, `Bytes`/`BytesWriter`)
//! hold one of these and leave everything that does not depend on their
//! unit to it: following redirects, windows, cancel, abort and close.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::core::Shared;
use super::end::Keep;
use super::kind::{Consume, Kind, Produce};
use super::ReadCache;
use super::Window;
use super::{RemoteConsumer, RemoteProducer, WriterLane};
use crate::RpcError;

/// Where a consumer end reads from.
pub(crate) enum ReaderBackend<K: Kind> {
    /// A pair made in this process (perhaps with its producer sent away since).
    Local(Arc<Shared<K>>),
    /// A consumer end received over a connection, with the batch it is
    /// reading: the cache goes wherever the end goes, so items taken from
    /// the connection and not yet read are never left behind.
    Remote(Arc<RemoteConsumer>, ReadCache),
}

/// Where a producer end writes to.
pub(crate) enum WriterBackend<K: Kind> {
    /// A pair made in this process (perhaps with its consumer sent away since).
    Local(Arc<Shared<K>>),
    /// A producer end received over a connection, with its hold on the
    /// producer's lane (small items go there without the lock).
    Remote(Arc<RemoteProducer>, WriterLane),
}

impl<K: Kind> ReaderBackend<K> {
    /// The consumer's window as set on this end.
    pub(crate) fn window(&self) -> Window {
        match self {
            ReaderBackend::Local(shared) => shared.lock().window,
            ReaderBackend::Remote(consumer, _) => consumer.window(),
        }
    }

    /// The window that holds for a producer feeding this end from afar.
    pub(crate) fn effective_window(&self) -> Window {
        match self {
            ReaderBackend::Local(shared) => shared.window(),
            ReaderBackend::Remote(consumer, _) => consumer.window(),
        }
    }

    pub(crate) fn set_window(&self, window: Window) {
        match self {
            ReaderBackend::Local(shared) => shared.set_window(window),
            ReaderBackend::Remote(consumer, _) => consumer.set_window(window),
        }
    }

    /// A consumer end received over a connection, nothing read yet.
    pub(crate) fn remote(consumer: Arc<RemoteConsumer>) -> Self {
        ReaderBackend::Remote(consumer, ReadCache::default())
    }

    /// The next unit (at most `max` of weight).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<K::Unit>, RpcError>>
    where
        K: Consume,
    {
        match self {
            ReaderBackend::Local(shared) => shared.poll_read(cx, max),
            ReaderBackend::Remote(consumer, cache) => K::poll_read_cached(consumer, cache, cx, max),
        }
    }

    /// Ends the stream from the consumer side.
    pub(crate) fn cancel(self, reason: Option<String>) {
        match self {
            ReaderBackend::Local(shared) => shared.cancel(reason),
            ReaderBackend::Remote(consumer, _) => consumer.cancel(reason),
        }
    }

    /// Once the producer end went over a connection and what it wrote before
    /// is read, read from the connection directly.
    #[inline]
    pub(crate) fn follow_source(&mut self) {
        if let ReaderBackend::Local(shared) = self {
            if let Some(source) = shared.drained_source() {
                *self = ReaderBackend::remote(source);
            }
        }
    }

    /// The core of a pair whose producer is in this process and feeds it
    /// directly (nothing to keep alive, not fed from a connection): such a
    /// producer can be pointed wherever this end goes.
    pub(crate) fn fed_here(&self, keep: &Option<Keep>) -> Option<&Arc<Shared<K>>> {
        match self {
            ReaderBackend::Local(shared) if keep.is_none() && !shared.has_source() => Some(shared),
            _ => None,
        }
    }
}

impl<K: Kind> WriterBackend<K> {
    /// A producer end bound to a connection.
    pub(crate) fn remote(producer: Arc<RemoteProducer>) -> Self {
        WriterBackend::Remote(producer, WriterLane::default())
    }

    /// Once the consumer end went over a connection (or was spliced into
    /// another pair), write there directly instead of through this core.
    #[inline]
    pub(crate) fn follow_redirect(&mut self) {
        if matches!(self, WriterBackend::Local(_)) {
            self.follow_local_redirect();
        }
    }

    fn follow_local_redirect(&mut self) {
        while let WriterBackend::Local(shared) = self {
            if let Some(forward) = shared.forward() {
                *self = WriterBackend::Local(forward);
            } else if let Some(sink) = shared.sink() {
                *self = WriterBackend::remote(sink);
            } else {
                break;
            }
        }
    }

    /// The consumer's window, wherever the consumer is.
    pub(crate) fn window(&self) -> Window {
        match self {
            WriterBackend::Local(shared) => shared.window(),
            WriterBackend::Remote(producer, _) => producer.window(),
        }
    }

    /// Ends the stream at once.
    pub(crate) fn abort(self) {
        match self {
            WriterBackend::Local(shared) => shared.abort(),
            WriterBackend::Remote(producer, _) => producer.abort(),
        }
    }

    /// The call carrying this end failed with `err`: close with it.
    pub(crate) fn fail(self, err: &RpcError) {
        match self {
            WriterBackend::Local(shared) => drop(shared.close(Some(err.clone()))),
            WriterBackend::Remote(producer, _) => producer.close(Some(err.clone())),
        }
    }

    #[inline]
    pub(crate) fn write(&mut self, unit: K::Unit) -> Result<(), RpcError>
    where
        K: Produce,
    {
        match self {
            WriterBackend::Local(shared) => shared.write(unit),
            WriterBackend::Remote(producer, lane) => K::write(producer, lane, unit),
        }
    }

    /// Ready once the consumer's window has room.
    #[inline]
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        match self {
            WriterBackend::Local(shared) => shared.poll_room(cx).map_ok(drop),
            WriterBackend::Remote(producer, _) => K::poll_flush(producer, cx),
        }
    }

    /// Room in the consumer's window (at least 1 when ready).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        match self {
            WriterBackend::Local(shared) => shared.poll_room(cx),
            WriterBackend::Remote(producer, _) => K::poll_room(producer, cx),
        }
    }
}

/// A read as a `futures::Stream` item: after the end or one error the
/// stream is over (`slot` is emptied; the stream ended, nothing to cancel).
pub(crate) fn stream_item<K: Kind, U>(
    slot: &mut Option<ReaderBackend<K>>,
    read: Poll<Result<Option<U>, RpcError>>,
) -> Poll<Option<Result<U, RpcError>>> {
    let item = std::task::ready!(read).transpose();
    if !matches!(item, Some(Ok(_))) {
        *slot = None;
    }
    Poll::Ready(item)
}

/// The error of a writer whose end is gone.
pub(crate) fn writer_gone() -> RpcError {
    RpcError::new(crate::ErrorKind::Aborted, "this writer was closed or sent away")
}

/// Closes the end in `slot` once everything buffered is delivered; a
/// redirected end closes its remote half directly, so a cancel or a
/// disconnect that already happened is reported.
pub(crate) async fn close<K: Kind>(slot: Option<WriterBackend<K>>, error: Option<RpcError>) -> Result<(), RpcError> {
    let Some(mut backend) = slot else { return Ok(()) };
    backend.follow_redirect();
    match backend {
        WriterBackend::Local(shared) => shared.close(error),
        WriterBackend::Remote(producer, _) => {
            producer.close(error);
            producer.closed().await
        }
    }
}

/// Polls a close of the end in `slot` (emptied once the close is done).
pub(crate) fn poll_close<K: Kind>(
    slot: &mut Option<WriterBackend<K>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), RpcError>> {
    if let Some(backend) = slot {
        backend.follow_redirect();
    }
    match slot {
        Some(WriterBackend::Local(shared)) => {
            let closed = shared.close(None);
            *slot = None;
            Poll::Ready(closed)
        }
        Some(WriterBackend::Remote(producer, _)) => {
            producer.close(None);
            let done = producer.poll_closed(cx);
            if done.is_ready() {
                *slot = None;
            }
            done
        }
        None => Poll::Ready(Ok(())),
    }
}
