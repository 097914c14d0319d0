//! Stream ends that arrived over a connection and were not decoded: passed
//! on over another connection (a call forwarded through this process), they
//! are relayed item by item, still encoded, with flow control and endings
//! passed on both ways.

use std::any::Any;
use std::sync::Arc;

use crate::payload::StreamEnd;
use crate::proto::{stream_descriptor as descriptor, Protocol, RemoteConsumer, RemoteProducer, Shell};
use crate::wire::CapDescriptor;
use crate::RpcError;

/// A consumer end that arrived over a connection and was not decoded yet.
pub(crate) struct ReceivedReader(pub(crate) Option<Arc<RemoteConsumer>>);
/// A producer end that arrived over a connection and was not decoded yet.
pub(crate) struct ReceivedWriter(pub(crate) Option<Arc<RemoteProducer>>);

impl ReceivedReader {
    /// The consumer, if it is of a stream of kind `K`.
    pub(crate) fn take(&mut self, bytes: bool) -> Option<Arc<RemoteConsumer>> {
        self.0.take_if(|consumer| consumer.is_bytes() == bytes)
    }
}

impl ReceivedWriter {
    /// The producer, if it is of a stream of kind `K`.
    pub(crate) fn take(&mut self, bytes: bool) -> Option<Arc<RemoteProducer>> {
        self.0.take_if(|producer| producer.is_bytes() == bytes)
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

// An end received on one connection and sent on over another without being
// decoded (a call forwarded through this process): relayed item by item,
// still encoded, with flow control and endings passed on both ways.
impl StreamEnd for ReceivedReader {
    fn bind(mut self: Box<Self>, state: &mut Protocol, conn: &dyn Shell) -> Result<CapDescriptor, RpcError> {
        let consumer = self.0.take().ok_or_else(taken)?;
        let (window, bytes) = (consumer.window(), consumer.is_bytes());
        let producer = state.open_producer(conn, window, bytes)?;
        let stream = producer.id();
        tokio::spawn(pump_raw(consumer, producer));
        Ok(descriptor(true, bytes, stream, window))
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl StreamEnd for ReceivedWriter {
    fn bind(mut self: Box<Self>, state: &mut Protocol, conn: &dyn Shell) -> Result<CapDescriptor, RpcError> {
        let producer = self.0.take().ok_or_else(taken)?;
        let (window, bytes) = (producer.window(), producer.is_bytes());
        let consumer = state.open_consumer(conn, window, bytes)?;
        let stream = consumer.id();
        tokio::spawn(pump_raw(consumer, producer));
        Ok(descriptor(false, bytes, stream, window))
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Relays a stream between two connections without decoding its items.
async fn pump_raw(from: Arc<RemoteConsumer>, to: Arc<RemoteProducer>) {
    let bytes = from.is_bytes();
    let mut lane = crate::proto::WriterLane::default();
    loop {
        let next = tokio::select! {
            next = std::future::poll_fn(|cx| {
                if bytes {
                    let read = from.poll_read_bytes(cx, crate::proto::MAX_BYTES_PER_MESSAGE as usize);
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
                let written = if bytes { to.write_bytes(data) } else { to.write_raw(&mut lane, &data, caps) };
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

fn taken() -> RpcError {
    RpcError::serialization("stream end already taken")
}
