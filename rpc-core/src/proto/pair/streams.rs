//! Streams on a [`Pair`]: stream ends a test sends in a call, the handles
//! the test shell mints (bound to no connection), and stream commands by id.
//!
//! A handle's drop cannot reach the protocol (it has no connection), so the
//! shell keeps a clone of each and the harness polls: once the shell's is
//! the last, the handle is gone and the protocol is told
//! ([`Protocol::stream_handle_dropped`]), as a connection's handle would.

use std::any::Any;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::task::{Poll, Waker};

use super::{Pair, Side, TestCall, TestShell};
use crate::cap::Client;
use crate::payload::{self, CapEntry, Payload};
use crate::payload::{StreamEnd, StreamSlot};
use crate::proto::{Protocol, Shell};
use crate::proto::{RemoteConsumer, RemoteProducer};
use crate::wire::CapDescriptor;
use crate::wire::Window;
use crate::RpcError;

/// A stream half's handle, as the shell minted it.
#[derive(Clone)]
pub(super) enum StreamHandle {
    Producer(Arc<RemoteProducer>),
    Consumer(Arc<RemoteConsumer>),
}

impl StreamHandle {
    fn is_shared(&self) -> bool {
        match self {
            StreamHandle::Producer(p) => Arc::strong_count(p) > 1,
            StreamHandle::Consumer(c) => Arc::strong_count(c) > 1,
        }
    }

    fn id(&self) -> u32 {
        match self {
            StreamHandle::Producer(p) => p.id(),
            StreamHandle::Consumer(c) => c.id(),
        }
    }
}

impl TestShell {
    pub(super) fn mint_producer(&self, id: u32, handle: Arc<RemoteProducer>) -> Arc<RemoteProducer> {
        self.streams.borrow_mut().insert(id, StreamHandle::Producer(handle.clone()));
        handle
    }

    pub(super) fn mint_consumer(&self, id: u32, handle: Arc<RemoteConsumer>) -> Arc<RemoteConsumer> {
        self.streams.borrow_mut().insert(id, StreamHandle::Consumer(handle.clone()));
        handle
    }

    /// Stream handles nobody but the shell holds any more: forgotten here,
    /// their ids returned for [`Protocol::stream_handle_dropped`].
    pub(super) fn dropped_streams(&self) -> Vec<u32> {
        let mut streams = self.streams.borrow_mut();
        let gone: Vec<u32> = streams.values().filter(|h| !h.is_shared()).map(StreamHandle::id).collect();
        let handles: Vec<StreamHandle> = gone.iter().filter_map(|id| streams.remove(id)).collect();
        drop(streams);
        drop(handles);
        gone
    }

    /// Ids of the stream halves whose handles are alive: (producers, consumers).
    pub(super) fn stream_ids(&self) -> (Vec<u32>, Vec<u32>) {
        let streams = self.streams.borrow();
        let mut ids: (Vec<u32>, Vec<u32>) = Default::default();
        for (&id, handle) in streams.iter().filter(|(_, h)| h.is_shared()) {
            match handle {
                StreamHandle::Producer(_) => ids.0.push(id),
                StreamHandle::Consumer(_) => ids.1.push(id),
            }
        }
        ids.0.sort_unstable();
        ids.1.sort_unstable();
        ids
    }
}

/// A stream end a test sends: bound, it opens our half, whose handle goes
/// to the test's [`TestStream`].
struct TestEnd {
    /// The peer gets the reader (we produce), or the writer (we consume).
    reader: bool,
    window: Window,
    /// Where the handle of the half it opened goes.
    bound: Sender<StreamHandle>,
}

impl StreamEnd for TestEnd {
    fn bind(self: Box<Self>, state: &mut Protocol, shell: &dyn Shell) -> Result<CapDescriptor, RpcError> {
        let window = self.window;
        let (handle, descriptor) = if self.reader {
            let producer = state.open_producer(shell, window, false)?;
            let stream = producer.id();
            (StreamHandle::Producer(producer), CapDescriptor::SequenceReader { stream, window })
        } else {
            let consumer = state.open_consumer(shell, window, false)?;
            let stream = consumer.id();
            (StreamHandle::Consumer(consumer), CapDescriptor::SequenceWriter { stream, window })
        };
        // The test's TestStream takes it (or, gone, lets it drop).
        let _ = self.bound.send(handle);
        Ok(descriptor)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// The test's hold on its half of a stream it sent the peer an end of.
/// Dropping it is dropping the handle: a producer nobody closed aborts, a
/// consumer cancels.
pub(crate) struct TestStream {
    handle: Option<StreamHandle>,
}

impl TestStream {
    /// The stream's id, once its end was sent.
    pub(crate) fn id(&self) -> Option<u32> {
        self.handle.as_ref().map(StreamHandle::id)
    }
}

impl Pair {
    /// Calls `method` of `target` from `side` with one sequence end (of
    /// `u32`s) as the arguments: a reader (`reader`: we write, the peer
    /// reads) or a writer (the peer writes, we read), with `window`.
    pub(crate) fn call_with_stream(
        &mut self,
        side: Side,
        target: &Client,
        method: u16,
        reader: bool,
        window: Window,
    ) -> (TestCall, TestStream) {
        let (bound, handles) = channel();
        let end = TestEnd { reader, window, bound };
        let mut payload = Payload::encode(&0u32).expect("an index encodes");
        payload.caps.push(CapEntry::Stream(StreamSlot::new(Box::new(end))));
        let call = self.call_payload(side, target, method, payload);
        let handle = handles.try_recv().ok();
        (call, TestStream { handle })
    }

    /// `side`'s stream halves with live handles: (producers, consumers),
    /// those it received in payloads included.
    pub(crate) fn stream_ids(&self, side: Side) -> (Vec<u32>, Vec<u32>) {
        self.side(side).shell.stream_ids()
    }

    /// Writes `item` to `side`'s producer `id`, then settles.
    ///
    /// # Errors
    ///
    /// Why the stream no longer takes items.
    pub(crate) fn write(&mut self, side: Side, id: u32, item: u32) -> Result<(), RpcError> {
        let written = self.side_mut(side).proto.producer_encode_item(id, &item);
        self.settle();
        written
    }

    /// Whether `side`'s producer `id` has room to write (its window is not full).
    ///
    /// # Errors
    ///
    /// How the stream ended.
    pub(crate) fn poll_flush(&mut self, side: Side, id: u32) -> Poll<Result<(), RpcError>> {
        let polled = self.side_mut(side).proto.producer_poll_flush(id, Waker::noop());
        self.settle();
        polled
    }

    /// Reads the next item of `side`'s consumer `id`: `Ready(Ok(None))` at
    /// its end, `Pending` when nothing arrived yet.
    pub(crate) fn read(&mut self, side: Side, id: u32) -> Poll<Result<Option<u32>, RpcError>> {
        let end = self.side_mut(side);
        let max_depth = end.proto.limits.max_depth;
        let polled = end.proto.consumer_poll_item(id, Waker::noop());
        self.settle();
        polled.map(|read| match read? {
            None => Ok(None),
            Some((bytes, caps)) => {
                payload::decode_from::<u32>(&bytes, &caps, max_depth, u64::MAX).map(|(v, _)| Some(v))
            }
        })
    }

    /// Reads every item available now from `side`'s consumer `id`; also
    /// returns how it ended, if it did.
    pub(crate) fn read_available(&mut self, side: Side, id: u32) -> (Vec<u32>, Option<Result<(), RpcError>>) {
        let mut items = Vec::new();
        loop {
            match self.read(side, id) {
                Poll::Ready(Ok(Some(item))) => items.push(item),
                Poll::Ready(Ok(None)) => return (items, Some(Ok(()))),
                Poll::Ready(Err(err)) => return (items, Some(Err(err))),
                Poll::Pending => return (items, None),
            }
        }
    }

    /// Closes `side`'s producer `id` after what was written (with `error`).
    pub(crate) fn close_stream(&mut self, side: Side, id: u32, error: Option<RpcError>) {
        self.side_mut(side).proto.producer_close(id, error);
        self.settle();
    }

    /// Aborts `side`'s producer `id`: what was not sent is dropped.
    pub(crate) fn abort_stream(&mut self, side: Side, id: u32) {
        self.side_mut(side).proto.producer_abort(id);
        self.settle();
    }

    /// Cancels `side`'s consumer `id`.
    pub(crate) fn cancel_stream(&mut self, side: Side, id: u32, reason: Option<String>) {
        self.side_mut(side).proto.consumer_cancel(id, reason);
        self.settle();
    }
}
