//! The stream table: opening and naming streams, the lifetime of each
//! half's state, emitting data in bounded rounds, and the five stream
//! messages from the peer.
//!
//! A half's state lives here from the moment it is opened until both the
//! protocol is done with it (its end was sent or received, or the
//! connection closed) and its handle is gone: a reader still drains what
//! arrived before the end, a writer still learns why its stream ended.
//! Only live halves count against the limits.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::consume::Consuming;
use super::produce::Producing;
use super::Ending;
use super::{Effect, Protocol, Shell, Violation};
use crate::payload::{CapEntry, StreamEnd, StreamSlot};
use crate::wire::Window;
use crate::wire::{frame, CapDescriptor, Message};
use crate::RpcError;

/// Stream bytes one producer may emit per writer round before the others
/// (and call frames) get their turn: bounds head-of-line blocking.
const ROUND_BUDGET: u64 = 256 << 10;

/// Our half of a stream on this connection.
pub(crate) enum StreamHalf {
    Producer(Box<Producing>),
    Consumer(Box<Consuming>),
}

/// A half's state, and who still needs it.
pub(crate) struct StreamEntry {
    pub(super) half: StreamHalf,
    /// The protocol is not done with it: messages for it are expected.
    pub(super) live: bool,
    /// Its handle (`RemoteProducer`/`RemoteConsumer`) still exists.
    pub(super) handle: bool,
}

impl Protocol {
    fn open_stream_id(&mut self) -> Result<u32, RpcError> {
        if let Some(reason) = &self.closed {
            return Err(reason.clone());
        }
        let max = self.peer_limits.max_exports as usize;
        if self.live_streams >= max || self.streams_opened >= u32::MAX >> 1 {
            return Err(RpcError::limit(format!("cannot open more than {max} streams to this peer")));
        }
        let id = self.streams_opened << 1 | self.stream_parity;
        self.streams_opened += 1;
        Ok(id)
    }

    fn insert_stream(&mut self, id: u32, half: StreamHalf) {
        let (role, bytes) = match &half {
            StreamHalf::Producer(p) => ("producer", p.bytes_mode),
            StreamHalf::Consumer(c) => ("consumer", c.bytes_mode),
        };
        self.streams.insert(id, StreamEntry { half, live: true, handle: true });
        self.live_streams += 1;
        self.trace_stream_open(id, role, bytes);
    }

    /// A new stream we produce and the peer consumes (`bytes`: a byte
    /// stream); its handle comes from `shell`.
    pub(crate) fn open_producer(
        &mut self,
        shell: &dyn Shell,
        window: Window,
        bytes: bool,
    ) -> Result<Arc<super::RemoteProducer>, RpcError> {
        let id = self.open_stream_id()?;
        let producing = Producing::new(window, bytes, &self.limits, &self.peer_limits);
        let handle = shell.producer(id, bytes, producing.signals.clone());
        self.insert_stream(id, StreamHalf::Producer(Box::new(producing)));
        Ok(handle)
    }

    /// A new stream the peer produces and we consume (`bytes`: a byte stream).
    pub(crate) fn open_consumer(
        &mut self,
        shell: &dyn Shell,
        window: Window,
        bytes: bool,
    ) -> Result<Arc<super::RemoteConsumer>, RpcError> {
        let id = self.open_stream_id()?;
        let consuming = Consuming::new(window, bytes, &self.limits);
        let handle = shell.consumer(id, bytes, self.limits.max_depth, consuming.signals.clone());
        self.insert_stream(id, StreamHalf::Consumer(Box::new(consuming)));
        Ok(handle)
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
        let end: Box<dyn StreamEnd> = if reader {
            let consuming = Consuming::new(window, bytes, &self.limits);
            let handle = shell.consumer(stream, bytes, self.limits.max_depth, consuming.signals.clone());
            self.insert_stream(stream, StreamHalf::Consumer(Box::new(consuming)));
            shell.received_reader(handle)
        } else {
            let producing = Producing::new(window, bytes, &self.limits, &self.peer_limits);
            let handle = shell.producer(stream, bytes, producing.signals.clone());
            self.insert_stream(stream, StreamHalf::Producer(Box::new(producing)));
            shell.received_writer(handle)
        };
        Ok(CapEntry::Stream(StreamSlot::new(end)))
    }

    /// Checks a stream id the peer allocated for a new stream.
    fn accept_peer_stream(&mut self, id: u32) -> Result<(), Violation> {
        // Ids only grow: reusing an ended stream's id would let its late
        // messages land on the new one.
        let reused = self.max_peer_stream.is_some_and(|max| id <= max);
        if id & 1 == self.stream_parity || reused || self.streams.contains_key(&id) {
            return Err(RpcError::protocol(format!("the peer named stream {id} as new, but it is not")));
        }
        if self.live_streams >= self.limits.max_exports as usize {
            return Err(RpcError::limit(format!("the peer opened more than {} streams", self.limits.max_exports)));
        }
        self.max_peer_stream = Some(self.max_peer_stream.map_or(id, |m| m.max(id)));
        Ok(())
    }

    /// Whether `id` named a stream once (late messages for it are harmless).
    fn stream_existed(&self, id: u32) -> bool {
        if id & 1 == self.stream_parity {
            (id >> 1) < self.streams_opened
        } else {
            self.max_peer_stream.is_some_and(|max| id <= max)
        }
    }

    fn unknown_stream(&self, id: u32, what: &str) -> Result<(), Violation> {
        if self.stream_existed(id) {
            Ok(())
        } else {
            Err(RpcError::protocol(format!("{what} for stream {id}, which does not exist")))
        }
    }

    /// Queues producer `id` for emitting (unconditionally: after a redirect,
    /// writes may have been queued without scheduling).
    pub(crate) fn schedule_stream(&mut self, id: u32) {
        if let Some(StreamEntry { half: StreamHalf::Producer(p), live: true, .. }) = self.streams.get_mut(&id) {
            if !p.scheduled {
                p.scheduled = true;
                self.ready.push(id);
            }
        }
    }

    /// Opens stream `id`'s `rpc.stream` span (kept only if tracing wants it).
    fn trace_stream_open(&mut self, id: u32, role: &'static str, bytes: bool) {
        if !super::debug_spans() {
            return;
        }
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

    /// The protocol is done with our half of stream `id`: it stops counting,
    /// and goes once its handle is gone too. Tells the peer `message`.
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
        if let Some(entry) = self.streams.get_mut(&id).filter(|e| e.live) {
            entry.live = false;
            self.live_streams -= 1;
            if !entry.handle {
                self.forget_stream(id);
            }
        }
        if let (Some(message), None) = (message, &self.closed) {
            self.send(&message, &[]);
        }
    }

    /// Ends our half of stream `id` with `ending` (its call failed, or the
    /// connection closed) without telling the peer.
    pub(super) fn end_stream_locally(&mut self, id: u32, ending: Ending) {
        let Some(mut entry) = self.streams.remove(&id) else { return };
        match &mut entry.half {
            StreamHalf::Producer(p) => {
                let dropped = p.on_end(ending, &mut self.effects);
                self.effects.push(Effect::Drop(dropped));
            }
            StreamHalf::Consumer(c) => self.consumer_on_end(c, ending),
        }
        self.streams.insert(id, entry);
        self.end_stream(id, None);
    }

    /// Drops stream `id`'s state (nothing needs it any more).
    fn forget_stream(&mut self, id: u32) {
        let Some(mut entry) = self.streams.remove(&id) else { return };
        if let StreamHalf::Consumer(c) = &mut entry.half {
            self.consumer_forget(c);
        }
        self.defer_boxed(Box::new(entry.half));
    }

    /// The handle of stream `id` is gone. A producer nobody closed is
    /// aborted (what was written is not delivered: its writer was dropped);
    /// a consumer nobody reads is cancelled.
    pub(crate) fn stream_handle_dropped(&mut self, id: u32) {
        let Some(entry) = self.streams.get_mut(&id) else { return };
        entry.handle = false;
        if !entry.live {
            return self.forget_stream(id);
        }
        match &entry.half {
            StreamHalf::Producer(p) if !p.is_closing() => self.producer_abort(id),
            StreamHalf::Producer(_) => {}
            StreamHalf::Consumer(_) => self.consumer_cancel(id, None),
        }
    }

    /// Runs `f` on consumer `id`'s state, wherever it is in its life.
    pub(super) fn with_consumer<R>(
        &mut self,
        id: u32,
        f: impl FnOnce(&mut Self, &mut Consuming) -> R,
    ) -> Result<R, RpcError> {
        let Some(mut entry) = self.streams.remove(&id) else { return Err(self.stream_gone(id)) };
        let result = match &mut entry.half {
            StreamHalf::Consumer(c) => Ok(f(self, c)),
            StreamHalf::Producer(_) => Err(RpcError::protocol(format!("stream {id} is not one we consume"))),
        };
        self.streams.insert(id, entry);
        result
    }

    /// Why a handle finds no state: the connection closed (and dropped it).
    pub(super) fn stream_gone(&self, id: u32) -> RpcError {
        gone(&self.closed, id)
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
            let Some(mut entry) = self.streams.remove(&id) else { continue };
            let outcome = match &mut entry.half {
                StreamHalf::Producer(p) if entry.live => Some(self.emit_producer(shell, id, p, ROUND_BUDGET)),
                _ => None,
            };
            self.streams.insert(id, entry);
            match outcome {
                Some((true, _)) => {
                    self.trace_stream_end(id, "ended here: its end was sent");
                    self.end_stream(id, None);
                }
                Some((false, true)) => again.push(id),
                _ => {}
            }
        }
        self.ready.extend(again);
    }

    /// The live consumer half of `stream`, taken out of the table (the
    /// caller puts it back), or what a message for it means otherwise.
    fn take_live_consumer(&mut self, stream: u32, what: &str) -> Result<Option<StreamEntry>, Violation> {
        match self.streams.get(&stream) {
            Some(StreamEntry { half: StreamHalf::Consumer(_), live: true, .. }) => Ok(self.streams.remove(&stream)),
            Some(StreamEntry { half: StreamHalf::Producer(_), .. }) => {
                Err(RpcError::protocol(format!("{what} for stream {stream}, which we produce")))
            }
            _ => self.unknown_stream(stream, what).map(|()| None),
        }
    }

    pub(crate) fn handle_stream_part(&mut self, stream: u32, bytes: &[u8]) -> Result<(), Violation> {
        let Some(mut entry) = self.take_live_consumer(stream, "data")? else { return Ok(()) };
        let StreamHalf::Consumer(c) = &mut entry.half else { unreachable!("taken as a consumer") };
        let handled = self.consumer_on_part(stream, c, bytes);
        self.streams.insert(stream, entry);
        handled
    }

    pub(crate) fn handle_stream_data(
        &mut self,
        shell: &dyn Shell,
        stream: u32,
        count: u32,
        lens: (Vec<u32>, Vec<u32>),
        descriptors: &[CapDescriptor],
        trailer: Bytes,
    ) -> Result<(), Violation> {
        // The stream is looked up before the descriptors are imported: an
        // import may open a stream, and data naming a stream its own items
        // open would hold itself alive (a cycle no close could break).
        let entry = self.take_live_consumer(stream, "data")?;
        let mut caps = match self.import_caps(shell, descriptors) {
            Ok(caps) => caps,
            Err(violation) => {
                if let Some(entry) = entry {
                    self.streams.insert(stream, entry);
                }
                return Err(violation);
            }
        };
        // Late data for an ended stream: its capabilities are imported only to be released.
        let handled = match entry {
            Some(mut entry) => {
                let StreamHalf::Consumer(c) = &mut entry.half else { unreachable!("taken as a consumer") };
                let handled = self.consumer_on_data(stream, c, count, trailer, lens, &mut caps);
                self.streams.insert(stream, entry);
                handled
            }
            None => Ok(()),
        };
        // On every path, error paths included: what was just imported may
        // lock this connection when it drops.
        self.defer_drop(caps);
        handled
    }

    pub(crate) fn handle_stream_window(&mut self, stream: u32, read: u64, window: Window) -> Result<(), Violation> {
        match self.streams.get_mut(&stream) {
            Some(StreamEntry { half: StreamHalf::Producer(p), live: true, .. }) => {
                p.on_window(stream, read, window, &mut self.effects)?;
                if !p.scheduled && p.wants_emit() {
                    p.scheduled = true;
                    self.ready.push(stream);
                }
                Ok(())
            }
            Some(StreamEntry { half: StreamHalf::Consumer(_), .. }) => {
                Err(RpcError::protocol(format!("window for stream {stream}, which we consume")))
            }
            _ => self.unknown_stream(stream, "window"),
        }
    }

    /// The producer ended stream `stream` (end, end with error, or abort).
    pub(crate) fn handle_stream_end(&mut self, stream: u32, ending: Ending) -> Result<(), Violation> {
        match self.streams.get(&stream) {
            Some(StreamEntry { half: StreamHalf::Consumer(_), live: true, .. }) => {
                if let Some(span) = self.stream_spans.get(&stream) {
                    tracing::debug!(parent: span, ?ending, "the peer ended the stream");
                }
                self.end_stream_locally(stream, ending);
                Ok(())
            }
            Some(StreamEntry { half: StreamHalf::Producer(_), .. }) => {
                Err(RpcError::protocol(format!("end of stream {stream}, which we produce")))
            }
            _ => self.unknown_stream(stream, "end"),
        }
    }

    pub(crate) fn handle_stream_cancel(&mut self, stream: u32, reason: Option<String>) -> Result<(), Violation> {
        match self.streams.get(&stream) {
            Some(StreamEntry { half: StreamHalf::Producer(_), live: true, .. }) => {
                if let Some(span) = self.stream_spans.get(&stream) {
                    tracing::debug!(parent: span, ?reason, "the peer cancelled the stream");
                }
                self.end_stream_locally(stream, Ending::Cancelled(reason));
                Ok(())
            }
            Some(StreamEntry { half: StreamHalf::Consumer(_), .. }) => {
                Err(RpcError::protocol(format!("cancel of stream {stream}, which we consume")))
            }
            _ => self.unknown_stream(stream, "cancel"),
        }
    }
}

/// Why a handle finds no state for stream `id`: the connection closed.
pub(super) fn gone(closed: &Option<RpcError>, id: u32) -> RpcError {
    closed.clone().unwrap_or_else(|| RpcError::disconnected(format!("stream {id} is no longer open")))
}

/// How the peer names a stream end we bind: a consumer end (`reader`) or a
/// producer end, of a byte stream or a sequence.
pub(crate) fn stream_descriptor(reader: bool, bytes: bool, stream: u32, window: Window) -> CapDescriptor {
    match (reader, bytes) {
        (true, true) => CapDescriptor::BytesReader { stream, window },
        (true, false) => CapDescriptor::SequenceReader { stream, window },
        (false, true) => CapDescriptor::BytesWriter { stream, window },
        (false, false) => CapDescriptor::SequenceWriter { stream, window },
    }
}
