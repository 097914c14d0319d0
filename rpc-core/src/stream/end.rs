//! Stream ends inside payloads.
//!
//! Serializing a stream end (`Sequence`, `SequenceWriter`, `Bytes`,
//! `BytesWriter`) moves it into the
//! payload's capability table as a [`StreamSlot`]. If the payload stays in the
//! process (a call to a local object) the end is taken back out as it was; if
//! it goes over a connection, the connection *binds* it: the end that stays
//! behind is redirected to a remote half registered under a stream id, and
//! the peer gets a descriptor naming that id with the consumer's window.

use std::any::Any;
use std::future::poll_fn;

use serde::{Deserialize, Deserializer, Serializer};

use super::backend::{ReaderBackend, WriterBackend};
use super::kind::{Consume, Kind, Produce};
use crate::conn::{ReceivedReader, ReceivedWriter};
use crate::payload;
use crate::payload::{CapEntry, StreamEnd, StreamSlot};
use crate::proto::{stream_descriptor as descriptor, Protocol, Shell};
use crate::wire::CapDescriptor;
use crate::RpcError;

/// What a stream keeps alive while it lives (the call that fills it).
pub(crate) type Keep = Box<dyn Send + Sync>;

/// A stream kind whose ends can travel: bound to a connection or pumped.
pub(crate) trait Transfer: Produce + Consume + Send + 'static {}

impl<K: Produce + Consume + Send + 'static> Transfer for K {}

/// A typed consumer end (`backend` is `None` once taken), with what it keeps alive.
pub(crate) struct ReaderEnd<K: Kind> {
    pub(crate) backend: Option<ReaderBackend<K>>,
    pub(crate) keep: Option<Keep>,
}
/// A typed producer end.
pub(crate) struct WriterEnd<K: Kind>(pub(crate) Option<WriterBackend<K>>);

// An end dropped on its way (a payload never delivered) ends its stream the
// way dropping the handle would: a reader cancels, a writer aborts.
impl<K: Kind> Drop for ReaderEnd<K> {
    fn drop(&mut self) {
        if let Some(backend) = self.backend.take() {
            backend.cancel(None);
        }
    }
}

impl<K: Kind> Drop for WriterEnd<K> {
    fn drop(&mut self) {
        if let Some(backend) = self.0.take() {
            backend.abort();
        }
    }
}

pub(crate) fn serialize<S: Serializer>(end: Box<dyn StreamEnd>, serializer: S) -> Result<S::Ok, S::Error> {
    let index = payload::push_cap(CapEntry::Stream(StreamSlot::new(end))).map_err(serde::ser::Error::custom)?;
    serializer.serialize_u32(index)
}

fn take_end<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<dyn Any>, D::Error> {
    let index = u32::deserialize(deserializer)?;
    match payload::cap_at(index).map_err(serde::de::Error::custom)? {
        CapEntry::Stream(slot) => {
            slot.take().map(StreamEnd::into_any).ok_or_else(|| serde::de::Error::custom("stream end already taken"))
        }
        CapEntry::Object(_) => Err(serde::de::Error::custom("expected a stream end, found an object capability")),
    }
}

/// Takes a consumer end of kind `K` out of the payload being decoded.
pub(crate) fn deserialize_reader<'de, K: Kind + 'static, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<(ReaderBackend<K>, Option<Keep>), D::Error> {
    let end = take_end(deserializer)?;
    let taken = match end.downcast::<ReaderEnd<K>>() {
        Ok(mut typed) => typed.backend.take().map(|backend| (backend, typed.keep.take())),
        Err(end) => match end.downcast::<ReceivedReader>() {
            Ok(mut received) => received.take(K::BYTES).map(|consumer| (ReaderBackend::remote(consumer), None)),
            Err(_) => return Err(serde::de::Error::custom(format_args!("expected a {} of this type", K::NAME))),
        },
    };
    taken.ok_or_else(|| serde::de::Error::custom(format_args!("expected a {}, or it was already taken", K::NAME)))
}

/// Takes a producer end of kind `K` out of the payload being decoded.
pub(crate) fn deserialize_writer<'de, K: Kind + 'static, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<WriterBackend<K>, D::Error> {
    let end = take_end(deserializer)?;
    let taken = match end.downcast::<WriterEnd<K>>() {
        Ok(mut typed) => typed.0.take(),
        Err(end) => match end.downcast::<ReceivedWriter>() {
            Ok(mut received) => received.take(K::BYTES).map(WriterBackend::remote),
            Err(_) => return Err(serde::de::Error::custom(format_args!("expected a {} writer of this type", K::NAME))),
        },
    };
    taken
        .ok_or_else(|| serde::de::Error::custom(format_args!("expected a {} writer, or it was already taken", K::NAME)))
}

impl<K: Transfer> StreamEnd for ReaderEnd<K>
where
    K::Unit: Send,
{
    fn bind(mut self: Box<Self>, state: &mut Protocol, conn: &dyn Shell) -> Result<CapDescriptor, RpcError> {
        let Some(backend) = self.backend.take() else { return Err(taken()) };
        // A pair made here whose writer is still here: the writer writes
        // straight to the connection from now on.
        if let Some(shared) = backend.fed_here(&self.keep) {
            let window = shared.lock().window;
            let producer = state.open_producer(conn, window, K::BYTES)?;
            shared.redirect_to_sink(&producer, state);
            state.schedule_stream(producer.id());
            return Ok(descriptor(true, K::BYTES, producer.id(), window));
        }
        // Units come from elsewhere (a connection, a call that fills the
        // pair): pump them across with backpressure, keeping the call alive
        // as long as the pump runs.
        let window = backend.effective_window();
        let producer = state.open_producer(conn, window, K::BYTES)?;
        let stream = producer.id();
        tokio::spawn(pump(backend, self.keep.take(), WriterBackend::remote(producer)));
        Ok(descriptor(true, K::BYTES, stream, window))
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl<K: Transfer> StreamEnd for WriterEnd<K>
where
    K::Unit: Send,
{
    fn bind(mut self: Box<Self>, state: &mut Protocol, conn: &dyn Shell) -> Result<CapDescriptor, RpcError> {
        let Some(backend) = self.0.take() else { return Err(taken()) };
        match backend {
            // A pair whose reader is still here: it reads from the connection.
            WriterBackend::Local(shared) if !shared.is_redirected() => {
                let window = shared.lock().window;
                let consumer = state.open_consumer(conn, window, K::BYTES)?;
                shared.redirect_to_source(&consumer);
                Ok(descriptor(false, K::BYTES, consumer.id(), window))
            }
            // Its reader went elsewhere (or it writes to another connection):
            // pump what arrives into it.
            backend => {
                let window = backend.window();
                let consumer = state.open_consumer(conn, window, K::BYTES)?;
                let stream = consumer.id();
                tokio::spawn(pump(ReaderBackend::remote(consumer), None, backend));
                Ok(descriptor(false, K::BYTES, stream, window))
            }
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }

    fn fail(mut self: Box<Self>, err: &RpcError) {
        if let Some(backend) = self.0.take() {
            backend.fail(err);
        }
    }
}

/// Connects the stream a handler returned (`from`, with what it keeps
/// alive) to the writer the caller sent (`to`), so the handler's units go
/// straight to the caller.
pub(crate) fn splice<K: Transfer>(from: Option<ReaderEnd<K>>, to: Option<WriterBackend<K>>)
where
    K::Unit: Send,
{
    let Some(writer) = to else { return };
    let Some(mut end) = from else { return writer.abort() };
    let (reader, keep) = (end.backend.take().expect("a taken end has its backend"), end.keep.take());
    // The handler's pair is fed by a writer in this process: point it at the caller.
    match (reader.fed_here(&keep), &writer) {
        (Some(shared), WriterBackend::Remote(producer, _)) => {
            // Units buffered here move to the connection under its lock.
            let _ = producer.with(|proto| {
                shared.redirect_to_sink(producer, proto);
                proto.schedule_stream(producer.id());
            });
            return;
        }
        (Some(shared), WriterBackend::Local(target)) if shared.forward_to(target) => return,
        _ => {}
    }
    // Fed from elsewhere (a connection, another call): pump, keeping what it
    // keeps alive. (`forward_to` changed nothing if it declined.)
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(pump(reader, keep, writer))),
        Err(_) => {
            reader.cancel(None);
            writer.abort();
        }
    }
}

fn taken() -> RpcError {
    RpcError::serialization("stream end already taken")
}

/// Moves everything from `from` into `to` with backpressure end to end,
/// passing the ending on in either direction; `keep` lives as long.
async fn pump<K: Transfer>(from: ReaderBackend<K>, keep: Option<Keep>, to: WriterBackend<K>)
where
    K::Unit: Send,
{
    // Held as ends, so a pump dropped unfinished cancels and aborts.
    let mut from = ReaderEnd { backend: Some(from), keep };
    let mut to = WriterEnd(Some(to));
    let (Some(reader), Some(writer)) = (&mut from.backend, &mut to.0) else { return };
    let failed = loop {
        reader.follow_source();
        writer.follow_redirect();
        let max = if K::BYTES { reader.window().batch as usize } else { 1 };
        let next = tokio::select! {
            next = poll_fn(|cx| reader.poll_read(cx, max)) => next,
            // The far consumer cancelled: stop reading too.
            Err(err) = poll_fn(|cx| writer.poll_flush(cx)) => break err,
        };
        let written = match next {
            Ok(Some(unit)) => writer.write(unit),
            Ok(None) => return drop(super::backend::close(to.0.take(), None).await),
            Err(err) => return drop(super::backend::close(to.0.take(), Some(err)).await),
        };
        // Pass the consumer's reason back to the producer.
        if let Err(err) = match written {
            Ok(()) => poll_fn(|cx| writer.poll_flush(cx)).await,
            Err(err) => Err(err),
        } {
            break err;
        }
    };
    if let Some(reader) = from.backend.take() {
        reader.cancel(Some(failed.message().to_string()));
    }
}
