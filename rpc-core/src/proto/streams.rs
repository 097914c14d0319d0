//! The stream half of the protocol state: the stream table, opening and
//! naming streams, emitting data in bounded rounds, and the five stream
//! messages. Like the rest of `Protocol`, it does no I/O.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Effect, Protocol, Shell, StreamHalf, Violation};
use crate::payload::CapEntry;
use crate::stream::{Ending, ReceivedReader, ReceivedWriter, RemoteConsumer, RemoteProducer, StreamSlot, Window};
use crate::wire::{frame, CapDescriptor, Message};
use crate::RpcError;

/// Stream bytes one producer may emit per writer round before the others
/// (and call frames) get their turn: bounds head-of-line blocking.
const ROUND_BUDGET: u64 = 256 << 10;

impl Protocol {
    pub(super) fn open_stream_id(&mut self) -> Result<u32, RpcError> {
        if let Some(reason) = &self.closed {
            return Err(reason.clone());
        }
        let max = self.peer_limits.max_exports as usize;
        if self.streams.len() >= max || self.streams_opened >= u32::MAX >> 1 {
            return Err(RpcError::limit(format!("cannot open more than {max} streams to this peer")));
        }
        let id = self.streams_opened << 1 | self.stream_parity;
        self.streams_opened += 1;
        Ok(id)
    }

    /// A new stream we produce and the peer consumes (`bytes`: a byte stream).
    pub(crate) fn open_producer(
        &mut self,
        shell: &dyn Shell,
        window: Window,
        bytes: bool,
    ) -> Result<Arc<RemoteProducer>, RpcError> {
        let id = self.open_stream_id()?;
        let producer = shell.producer(id, window, bytes);
        self.streams.insert(id, StreamHalf::Producer(producer.clone()));
        self.trace_stream_open(id, "producer", bytes);
        Ok(producer)
    }

    /// A new stream the peer produces and we consume (`bytes`: a byte stream).
    pub(crate) fn open_consumer(
        &mut self,
        shell: &dyn Shell,
        window: Window,
        bytes: bool,
    ) -> Result<Arc<RemoteConsumer>, RpcError> {
        let id = self.open_stream_id()?;
        let consumer = shell.consumer(id, window, bytes, self.limits.max_depth);
        self.streams.insert(id, StreamHalf::Consumer(consumer.clone()));
        self.trace_stream_open(id, "consumer", bytes);
        Ok(consumer)
    }

    /// A stream end the peer sent us: our half of it, registered under its id.
    pub(super) fn import_stream_end(
        &mut self,
        shell: &dyn Shell,
        descriptor: &CapDescriptor,
    ) -> Result<CapEntry, Violation> {
        let (stream, window, reader, bytes) = match *descriptor {
            CapDescriptor::SequenceReader { stream, window } => (stream, window, true, false),
            CapDescriptor::SequenceWriter { stream, window } => (stream, window, false, false),
            CapDescriptor::BytesReader { stream, window } => (stream, window, true, true),
            CapDescriptor::BytesWriter { stream, window } => (stream, window, false, true),
            _ => unreachable!("only stream descriptors are passed here"),
        };
        self.accept_peer_stream(stream)?;
        // The peer sent the reader: it produces and we consume (and the other way round).
        let end: Box<dyn crate::stream::StreamEnd> = if reader {
            let consumer = shell.consumer(stream, window, bytes, self.limits.max_depth);
            self.streams.insert(stream, StreamHalf::Consumer(consumer.clone()));
            self.trace_stream_open(stream, "consumer", bytes);
            Box::new(ReceivedReader(Some(consumer)))
        } else {
            let producer = shell.producer(stream, window, bytes);
            self.streams.insert(stream, StreamHalf::Producer(producer.clone()));
            self.trace_stream_open(stream, "producer", bytes);
            Box::new(ReceivedWriter(Some(producer)))
        };
        Ok(CapEntry::Stream(StreamSlot::new(end)))
    }

    /// Checks a stream id the peer allocated for a new stream.
    pub(super) fn accept_peer_stream(&mut self, id: u32) -> Result<(), Violation> {
        // Ids only grow: reusing an ended stream's id would let its late
        // messages land on the new one.
        let reused = self.max_peer_stream.is_some_and(|max| id <= max);
        if id & 1 == self.stream_parity || reused || self.streams.contains_key(&id) {
            return Err(RpcError::protocol(format!("the peer named stream {id} as new, but it is not")));
        }
        if self.streams.len() >= self.limits.max_exports as usize {
            return Err(RpcError::limit(format!("the peer opened more than {} streams", self.limits.max_exports)));
        }
        self.max_peer_stream = Some(self.max_peer_stream.map_or(id, |m| m.max(id)));
        Ok(())
    }

    /// Whether `id` named a stream once (late messages for it are harmless).
    pub(super) fn stream_existed(&self, id: u32) -> bool {
        if id & 1 == self.stream_parity {
            (id >> 1) < self.streams_opened
        } else {
            self.max_peer_stream.is_some_and(|max| id <= max)
        }
    }

    pub(super) fn unknown_stream(&self, id: u32, what: &str) -> Result<(), Violation> {
        if self.stream_existed(id) {
            Ok(())
        } else {
            Err(RpcError::protocol(format!("{what} for stream {id}, which does not exist")))
        }
    }

    /// Queues producer `id` for the writer task to emit.
    pub(crate) fn schedule_stream(&mut self, id: u32) {
        self.ready.push(id);
    }

    /// Opens stream `id`'s `rpc.stream` span (kept only if tracing wants it).
    pub(super) fn trace_stream_open(&mut self, id: u32, role: &'static str, bytes: bool) {
        let kind = if bytes { "bytes" } else { "sequence" };
        let span = tracing::debug_span!(parent: &self.span, "rpc.stream", id, role, kind);
        if !span.is_disabled() {
            tracing::debug!(parent: &span, "stream opened");
            self.stream_spans.insert(id, span);
        }
    }

    /// Closes stream `id`'s span, saying how it ended.
    pub(super) fn trace_stream_end(&mut self, id: u32, how: &str) {
        if let Some(span) = self.stream_spans.remove(&id) {
            tracing::debug!(parent: &span, how, "stream ended");
        }
    }

    /// Our half of stream `id` is done: forget it, telling the peer `message`.
    pub(crate) fn end_stream(&mut self, id: u32, message: Option<Message>) {
        if !self.stream_spans.is_empty() {
            let how = match &message {
                Some(Message::StreamEnd { error: None, .. }) => "closed here",
                Some(Message::StreamEnd { error: Some(_), .. }) => "closed here with an error",
                Some(Message::StreamAbort { .. }) => "aborted here",
                Some(Message::StreamCancel { .. }) => "cancelled here",
                Some(_) => "ended here",
                None => "ended by the peer",
            };
            self.trace_stream_end(id, how);
        }
        let half = self.streams.remove(&id);
        self.defer_drop(half);
        if let (Some(message), None) = (message, &self.closed) {
            self.send(&message, &[]);
        }
    }

    /// Writes `message` with a trailer of `len` bytes appended by `fill`.
    pub(crate) fn send_message_with(&mut self, message: &Message, len: usize, fill: impl FnOnce(&mut BytesMut)) {
        if let Err(err) = frame::encode_with(&mut self.out, message, len, fill) {
            tracing::error!("dropping unencodable frame: {err}");
        }
    }

    pub(crate) fn send_message(&mut self, message: &Message) {
        if self.closed.is_none() {
            self.send(message, &[]);
        }
    }

    /// Writes one data message; the capabilities its items hold are exported here.
    pub(crate) fn send_stream_data(
        &mut self,
        shell: &dyn Shell,
        stream: u32,
        count: u32,
        (item_caps, item_lens): (Vec<u32>, Vec<u32>),
        caps: Vec<CapEntry>,
        data: &[u8],
    ) -> Result<(), RpcError> {
        let descriptors = self.export_caps(shell, &caps);
        self.defer_drop(caps);
        let caps = descriptors?;
        self.send(&Message::StreamData { stream, count, item_caps, caps, item_lens }, data);
        Ok(())
    }

    /// Lets every scheduled producer emit what its window allows.
    pub(crate) fn emit_streams(&mut self, shell: &dyn Shell) {
        if self.closed.is_some() {
            self.ready.clear();
            return;
        }
        let mut again = Vec::new();
        for id in std::mem::take(&mut self.ready) {
            if let Some(StreamHalf::Producer(producer)) = self.streams.get(&id).cloned() {
                let (finished, more) = producer.emit(self, shell, ROUND_BUDGET);
                if finished {
                    self.trace_stream_end(id, "ended here: its end was sent");
                    self.end_stream(id, None);
                } else if more {
                    again.push(id);
                }
            }
        }
        self.ready.extend(again);
    }

    pub(crate) fn handle_stream_part(&mut self, stream: u32, bytes: &[u8]) -> Result<(), Violation> {
        match self.streams.get(&stream).cloned() {
            Some(StreamHalf::Consumer(consumer)) => consumer.on_part(bytes),
            Some(StreamHalf::Producer(_)) => {
                Err(RpcError::protocol(format!("data for stream {stream}, which we produce")))
            }
            None => self.unknown_stream(stream, "data"),
        }
    }

    pub(crate) fn handle_stream_data(
        &mut self,
        shell: &dyn Shell,
        stream: u32,
        count: u32,
        (item_caps, item_lens): (Vec<u32>, Vec<u32>),
        descriptors: &[CapDescriptor],
        trailer: Bytes,
    ) -> Result<(), Violation> {
        // The stream is looked up before the descriptors are imported: an
        // import may open a stream, and data naming a stream its own items
        // open would hold itself alive (a cycle no close could break).
        let consumer = match self.streams.get(&stream).cloned() {
            Some(StreamHalf::Consumer(consumer)) => Some(consumer),
            Some(StreamHalf::Producer(_)) => {
                return Err(RpcError::protocol(format!("data for stream {stream}, which we produce")));
            }
            None => {
                self.unknown_stream(stream, "data")?;
                None
            }
        };
        let mut caps = self.import_caps(shell, descriptors)?;
        // Late data for an ended stream: its capabilities are imported only to be released.
        let handled = consumer.map_or(Ok(()), |c| c.on_data(count, trailer, (item_caps, item_lens), &mut caps));
        // On every path, error paths included: what was just imported may
        // lock this connection when it drops.
        self.defer_drop(caps);
        handled
    }

    pub(crate) fn handle_stream_window(&mut self, stream: u32, read: u64, window: Window) -> Result<(), Violation> {
        match self.streams.get(&stream).cloned() {
            Some(StreamHalf::Producer(producer)) => {
                if producer.on_window(read, window)? {
                    self.schedule_stream(stream);
                }
                Ok(())
            }
            Some(StreamHalf::Consumer(_)) => {
                Err(RpcError::protocol(format!("window for stream {stream}, which we consume")))
            }
            None => self.unknown_stream(stream, "window"),
        }
    }

    /// The producer ended stream `stream` (end, end with error, or abort).
    pub(crate) fn handle_stream_end(&mut self, stream: u32, ending: Ending) -> Result<(), Violation> {
        match self.streams.get(&stream).cloned() {
            Some(StreamHalf::Consumer(consumer)) => {
                if let Some(span) = self.stream_spans.get(&stream) {
                    tracing::debug!(parent: span, ?ending, "the peer ended the stream");
                }
                let dropped = consumer.on_end(ending);
                self.effects.push(Effect::Drop(dropped));
                self.end_stream(stream, None);
                Ok(())
            }
            Some(StreamHalf::Producer(_)) => {
                Err(RpcError::protocol(format!("end of stream {stream}, which we produce")))
            }
            None => self.unknown_stream(stream, "end"),
        }
    }

    pub(crate) fn handle_stream_cancel(&mut self, stream: u32, reason: Option<String>) -> Result<(), Violation> {
        match self.streams.get(&stream).cloned() {
            Some(StreamHalf::Producer(producer)) => {
                if let Some(span) = self.stream_spans.get(&stream) {
                    tracing::debug!(parent: span, ?reason, "the peer cancelled the stream");
                }
                let dropped = producer.on_end(Ending::Cancelled(reason));
                self.effects.push(Effect::Drop(dropped));
                self.end_stream(stream, None);
                Ok(())
            }
            Some(StreamHalf::Consumer(_)) => {
                Err(RpcError::protocol(format!("cancel of stream {stream}, which we consume")))
            }
            None => self.unknown_stream(stream, "cancel"),
        }
    }
}
