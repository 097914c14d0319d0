//! Stream ends inside payloads.
//!
//! Serializing a `Sequence` or `SequenceWriter` moves its end into the
//! payload's capability table as a [`StreamSlot`]. If the payload stays in the
//! process (a call to a local object) the end is taken back out as it was; if
//! it goes over a connection, the connection *binds* it: the end that stays
//! behind is redirected to a remote half registered under a stream id, and
//! the peer gets a descriptor naming that id with the consumer's window.

use std::any::Any;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::sequence::ReaderBackend;
use super::writer::WriterBackend;
use super::{RemoteConsumer, RemoteProducer};
use super::{Sequence, SequenceWriter};
use crate::conn::{ConnShared, ConnState};
use crate::payload::{self, CapEntry};
use crate::wire::CapDescriptor;
use crate::RpcError;

/// A stream end on its way somewhere.
pub(crate) trait StreamEnd: Send + 'static {
    /// Binds the end to `conn` (called with its state locked); returns how
    /// the peer names it.
    fn bind(self: Box<Self>, state: &mut ConnState, conn: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError>;
    /// For taking the typed end back out.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// A capability-table entry holding a stream end, taken at most once.
pub(crate) struct StreamSlot(Mutex<Option<Box<dyn StreamEnd>>>);

impl StreamSlot {
    pub(crate) fn new(end: Box<dyn StreamEnd>) -> Arc<StreamSlot> {
        Arc::new(StreamSlot(Mutex::new(Some(end))))
    }

    pub(crate) fn take(&self) -> Option<Box<dyn StreamEnd>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSlot")
    }
}

/// A typed consumer end (`None` once taken).
pub(crate) struct ReaderEnd<T>(pub(crate) Option<ReaderBackend<T>>);
/// A typed producer end.
pub(crate) struct WriterEnd<T>(pub(crate) Option<WriterBackend<T>>);
/// A consumer end that arrived over a connection and was not decoded yet.
pub(crate) struct ReceivedReader(pub(crate) Option<Arc<RemoteConsumer>>);
/// A producer end that arrived over a connection and was not decoded yet.
pub(crate) struct ReceivedWriter(pub(crate) Option<Arc<RemoteProducer>>);

// An end dropped on its way (a payload never delivered) ends its sequence the
// way dropping the handle would: a reader cancels, a writer aborts.
impl<T> Drop for ReaderEnd<T> {
    fn drop(&mut self) {
        if let Some(backend) = self.0.take() {
            super::sequence::cancel_backend(backend, None);
        }
    }
}

impl<T> Drop for WriterEnd<T> {
    fn drop(&mut self) {
        if let Some(backend) = self.0.take() {
            super::writer::abort_backend(backend);
        }
    }
}

impl ReceivedReader {
    /// The consumer, if it is of a byte stream.
    pub(crate) fn take_bytes(&mut self) -> Option<Arc<RemoteConsumer>> {
        self.0.take_if(|consumer| consumer.is_bytes())
    }

    /// The consumer, if it is of a sequence.
    fn take_items(&mut self) -> Option<Arc<RemoteConsumer>> {
        self.0.take_if(|consumer| !consumer.is_bytes())
    }
}

impl ReceivedWriter {
    /// The producer, if it is of a byte stream.
    pub(crate) fn take_bytes(&mut self) -> Option<Arc<RemoteProducer>> {
        self.0.take_if(|producer| producer.is_bytes())
    }

    fn take_items(&mut self) -> Option<Arc<RemoteProducer>> {
        self.0.take_if(|producer| !producer.is_bytes())
    }
}

impl Drop for ReceivedReader {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            consumer.cancel(None);
        }
    }
}

impl Drop for ReceivedWriter {
    fn drop(&mut self) {
        if let Some(producer) = self.0.take() {
            producer.abort();
        }
    }
}

pub(crate) fn serialize<S: Serializer>(end: Box<dyn StreamEnd>, serializer: S) -> Result<S::Ok, S::Error> {
    let index = payload::push_cap(CapEntry::Stream(StreamSlot::new(end))).map_err(serde::ser::Error::custom)?;
    serializer.serialize_u32(index)
}

pub(crate) fn take_end<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<dyn Any>, D::Error> {
    let index = u32::deserialize(deserializer)?;
    match payload::cap_at(index).map_err(serde::de::Error::custom)? {
        CapEntry::Stream(slot) => {
            slot.take().map(StreamEnd::into_any).ok_or_else(|| serde::de::Error::custom("stream end already taken"))
        }
        CapEntry::Object(_) => Err(serde::de::Error::custom("expected a stream end, found an object capability")),
    }
}

pub(crate) fn deserialize_reader<'de, T: 'static, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ReaderBackend<T>, D::Error> {
    let end = take_end(deserializer)?;
    let taken = match end.downcast::<ReaderEnd<T>>() {
        Ok(mut typed) => typed.0.take(),
        Err(end) => match end.downcast::<ReceivedReader>() {
            Ok(mut received) => received.take_items().map(ReaderBackend::Remote),
            Err(_) => return Err(serde::de::Error::custom("expected a sequence of this item type")),
        },
    };
    taken.ok_or_else(|| serde::de::Error::custom("stream end already taken"))
}

pub(crate) fn deserialize_writer<'de, T: 'static, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<WriterBackend<T>, D::Error> {
    let end = take_end(deserializer)?;
    let taken = match end.downcast::<WriterEnd<T>>() {
        Ok(mut typed) => typed.0.take(),
        Err(end) => match end.downcast::<ReceivedWriter>() {
            Ok(mut received) => received.take_items().map(WriterBackend::Remote),
            Err(_) => return Err(serde::de::Error::custom("expected a sequence writer of this item type")),
        },
    };
    taken.ok_or_else(|| serde::de::Error::custom("stream end already taken"))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> StreamEnd for ReaderEnd<T> {
    fn bind(mut self: Box<Self>, state: &mut ConnState, conn: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError> {
        let Some(backend) = self.0.take() else { return Err(taken()) };
        match backend {
            ReaderBackend::Local(shared) => {
                let window = shared.lock().window;
                let producer = state.open_producer(conn, window, false)?;
                shared.redirect_to_sink(&producer);
                state.schedule_stream(producer.id());
                Ok(CapDescriptor::SequenceReader { stream: producer.id(), window })
            }
            ReaderBackend::Remote(consumer) => {
                // Received on another connection: pump it across, with backpressure.
                let window = consumer.window();
                let producer = state.open_producer(conn, window, false)?;
                let id = producer.id();
                let from = Sequence::<T>::from_backend(ReaderBackend::Remote(consumer));
                tokio::spawn(pump(from, SequenceWriter::from_backend(WriterBackend::Remote(producer))));
                Ok(CapDescriptor::SequenceReader { stream: id, window })
            }
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> StreamEnd for WriterEnd<T> {
    fn bind(mut self: Box<Self>, state: &mut ConnState, conn: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError> {
        let Some(backend) = self.0.take() else { return Err(taken()) };
        match backend {
            WriterBackend::Local(shared) => {
                let window = shared.lock().window;
                let consumer = state.open_consumer(conn, window, false)?;
                shared.redirect_to_source(&consumer);
                Ok(CapDescriptor::SequenceWriter { stream: consumer.id(), window })
            }
            WriterBackend::Remote(producer) => {
                let window = producer.window();
                let consumer = state.open_consumer(conn, window, false)?;
                let id = consumer.id();
                let from = Sequence::<T>::from_backend(ReaderBackend::Remote(consumer));
                tokio::spawn(pump(from, SequenceWriter::from_backend(WriterBackend::Remote(producer))));
                Ok(CapDescriptor::SequenceWriter { stream: id, window })
            }
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl StreamEnd for ReceivedReader {
    fn bind(self: Box<Self>, _: &mut ConnState, _: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError> {
        Err(forward_error())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl StreamEnd for ReceivedWriter {
    fn bind(self: Box<Self>, _: &mut ConnState, _: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError> {
        Err(forward_error())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

fn taken() -> RpcError {
    RpcError::serialization("stream end already taken")
}

fn forward_error() -> RpcError {
    RpcError::unimplemented(
        "a stream end received over one connection must be decoded (awaited) before it is sent over another",
    )
}

/// Moves items from one sequence into another, keeping backpressure end to
/// end, and carries the ending across in either direction.
pub(crate) async fn pump<T: Serialize + DeserializeOwned>(mut from: Sequence<T>, mut to: SequenceWriter<T>) {
    loop {
        let next = tokio::select! {
            next = from.read() => next,
            // The far consumer cancelled: stop reading too.
            Err(err) = std::future::poll_fn(|cx| to.poll_flush(cx)) => {
                from.cancel(Some(err.message().to_string()));
                return;
            }
        };
        match next {
            Ok(Some(item)) => {
                // Pass the consumer's reason back to the producer.
                let sent = match to.write(item) {
                    Ok(()) => to.flush().await,
                    Err(err) => Err(err),
                };
                if let Err(err) = sent {
                    return from.cancel(Some(err.message().to_string()));
                }
            }
            Ok(None) => {
                let _ = to.close(None).await;
                return;
            }
            Err(err) => {
                let _ = to.close(Some(err)).await;
                return;
            }
        }
    }
}
