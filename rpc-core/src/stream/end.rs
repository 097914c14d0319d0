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
    /// The call carrying this end failed with `err`: end the stream with it
    /// (a writer closes with the error, so its reader reads `err`). By
    /// default the end is dropped: a reader cancels, a writer aborts.
    fn fail(self: Box<Self>, err: &RpcError) {
        let _ = err;
    }
}

/// The call carrying `caps` failed with `err`: every stream end among them
/// ends with that error rather than a bare abort. Not with a connection locked.
pub(crate) fn fail_streams(caps: Vec<CapEntry>, err: &RpcError) {
    for entry in caps {
        if let CapEntry::Stream(slot) = entry {
            if let Some(end) = slot.take() {
                end.fail(err);
            }
        }
    }
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

/// What a sequence keeps alive while it lives (the call that fills it).
pub(crate) type Keep = Box<dyn Send + Sync>;

/// A typed consumer end (`backend` is `None` once taken), with what it keeps alive.
pub(crate) struct ReaderEnd<T> {
    pub(crate) backend: Option<ReaderBackend<T>>,
    pub(crate) keep: Option<Keep>,
}
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
        if let Some(backend) = self.backend.take() {
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
) -> Result<(ReaderBackend<T>, Option<Keep>), D::Error> {
    let end = take_end(deserializer)?;
    let taken = match end.downcast::<ReaderEnd<T>>() {
        Ok(mut typed) => typed.backend.take().map(|backend| (backend, typed.keep.take())),
        Err(end) => match end.downcast::<ReceivedReader>() {
            Ok(mut received) => received.take_items().map(|consumer| (ReaderBackend::Remote(consumer), None)),
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
        let Some(backend) = self.backend.take() else { return Err(taken()) };
        match backend {
            // A pair made here whose writer is still here: the writer writes
            // straight to the connection from now on.
            ReaderBackend::Local(shared) if self.keep.is_none() && !shared.has_source() => {
                let window = shared.lock().window;
                let producer = state.open_producer(conn, window, false)?;
                shared.redirect_to_sink(&producer);
                state.schedule_stream(producer.id());
                Ok(CapDescriptor::SequenceReader { stream: producer.id(), window })
            }
            // Items come from elsewhere (a connection, a call that fills the
            // pair): pump them across with backpressure, keeping the call
            // alive as long as the pump runs.
            backend => {
                let window = match &backend {
                    ReaderBackend::Local(shared) => shared.window(),
                    ReaderBackend::Remote(consumer) => consumer.window(),
                };
                let producer = state.open_producer(conn, window, false)?;
                let id = producer.id();
                let mut from = Sequence::<T>::from_backend(backend);
                if let Some(keep) = self.keep.take() {
                    from.keep_alive(keep);
                }
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
            // A pair whose reader is still here: it reads from the connection.
            WriterBackend::Local(shared) if !shared.is_redirected() => {
                let window = shared.lock().window;
                let consumer = state.open_consumer(conn, window, false)?;
                shared.redirect_to_source(&consumer);
                Ok(CapDescriptor::SequenceWriter { stream: consumer.id(), window })
            }
            // Its reader went elsewhere already: pump what arrives into it.
            WriterBackend::Local(shared) => {
                let window = shared.window();
                let consumer = state.open_consumer(conn, window, false)?;
                let id = consumer.id();
                let from = Sequence::<T>::from_backend(ReaderBackend::Remote(consumer));
                tokio::spawn(pump(from, SequenceWriter::from_backend(WriterBackend::Local(shared))));
                Ok(CapDescriptor::SequenceWriter { stream: id, window })
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

    fn fail(mut self: Box<Self>, err: &RpcError) {
        match self.0.take() {
            Some(WriterBackend::Local(shared)) => drop(shared.close(Some(err.clone()))),
            Some(WriterBackend::Remote(producer)) => producer.close(Some(err.clone())),
            None => {}
        }
    }
}

// An end received on one connection and sent on over another without being
// decoded (a call forwarded through this process): relayed item by item,
// still encoded, with flow control and endings passed on both ways.
impl StreamEnd for ReceivedReader {
    fn bind(mut self: Box<Self>, state: &mut ConnState, conn: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError> {
        let consumer = self.0.take().ok_or_else(taken)?;
        let (window, bytes) = (consumer.window(), consumer.is_bytes());
        let producer = state.open_producer(conn, window, bytes)?;
        let stream = producer.id();
        tokio::spawn(pump_raw(consumer, producer));
        Ok(if bytes {
            CapDescriptor::BytesReader { stream, window }
        } else {
            CapDescriptor::SequenceReader { stream, window }
        })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl StreamEnd for ReceivedWriter {
    fn bind(mut self: Box<Self>, state: &mut ConnState, conn: &Arc<ConnShared>) -> Result<CapDescriptor, RpcError> {
        let producer = self.0.take().ok_or_else(taken)?;
        let (window, bytes) = (producer.window(), producer.is_bytes());
        let consumer = state.open_consumer(conn, window, bytes)?;
        let stream = consumer.id();
        tokio::spawn(pump_raw(consumer, producer));
        Ok(if bytes {
            CapDescriptor::BytesWriter { stream, window }
        } else {
            CapDescriptor::SequenceWriter { stream, window }
        })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

fn taken() -> RpcError {
    RpcError::serialization("stream end already taken")
}

/// Relays a stream between two connections without decoding its items.
async fn pump_raw(from: Arc<RemoteConsumer>, to: Arc<RemoteProducer>) {
    let bytes = from.is_bytes();
    loop {
        let next = tokio::select! {
            next = std::future::poll_fn(|cx| {
                if bytes {
                    let read = from.poll_read_bytes(cx, super::producer::MAX_BYTES_PER_MESSAGE as usize);
                    read.map(|r| r.map(|chunk| chunk.map(|chunk| (chunk, Vec::new()))))
                } else {
                    from.poll_read_raw(cx)
                }
            }) => next,
            // The far consumer cancelled: stop reading too.
            Err(err) = std::future::poll_fn(|cx| to.poll_flush(cx)) => {
                return from.cancel(Some(err.message().to_string()));
            }
        };
        match next {
            Ok(Some((data, caps))) => {
                let written = if bytes { to.write_bytes(data) } else { to.write_raw(&data, caps) };
                let sent = match written {
                    Ok(()) => std::future::poll_fn(|cx| to.poll_flush(cx)).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = sent {
                    return from.cancel(Some(err.message().to_string()));
                }
            }
            Ok(None) => return to.close(None),
            Err(err) => return to.close(Some(err)),
        }
    }
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
