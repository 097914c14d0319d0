//! The halves of a sequence bound to a connection.
//!
//! [`RemoteProducer`] is our producer side of a stream whose consumer is the
//! peer: writes encode items into a pending buffer, and the connection's
//! writer task emits them as `StreamData` messages of at most `batch` items,
//! never past the consumer's window. [`RemoteConsumer`] is our consumer side
//! of a stream the peer produces: data messages append raw batches, reads
//! decode one item at a time, and every so often a `StreamWindow` tells the
//! producer how far we have read.
//!
//! Locking: methods named `on_*`, and `emit`, run with the connection state
//! locked; every other method takes the half's own lock, releases it, and
//! only then talks to the connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Ending, Window};
use crate::conn::{ConnShared, ConnState};
use crate::payload::{self, CapEntry};
use crate::wire::Message;
use crate::RpcError;

/// The largest byte-stream message, whatever the consumer's batch size.
pub(crate) const MAX_BYTES_PER_MESSAGE: u64 = 64 << 10;

// ----- producer ------------------------------------------------------------

/// Our producer side of a stream the peer consumes.
pub(crate) struct RemoteProducer {
    conn: Weak<ConnShared>,
    id: u32,
    state: Mutex<Producing>,
}

struct Producing {
    /// Encoded items not yet sent, back to back.
    pending: BytesMut,
    /// Per pending item: its encoded length and how many capabilities it holds.
    items: VecDeque<(u32, u32)>,
    /// Byte streams: unsent chunks as written (no copy), and their total length.
    chunks: VecDeque<Bytes>,
    chunk_bytes: u64,
    /// A byte stream: windows and counts are in bytes, not items.
    bytes_mode: bool,
    caps: VecDeque<CapEntry>,
    sent: u64,
    /// Items the consumer has read (from its last window message).
    acked: u64,
    window: Window,
    ending: Option<Ending>,
    /// `close` was called: send the end once `pending` is empty.
    closing: Option<Option<RpcError>>,
    end_sent: bool,
    scheduled: bool,
    flusher: Option<Waker>,
    closer: Option<Waker>,
}

impl Producing {
    /// Items (or bytes) written and not yet sent.
    fn pending_units(&self) -> u64 {
        if self.bytes_mode {
            self.chunk_bytes
        } else {
            self.items.len() as u64
        }
    }

    fn unread(&self) -> u64 {
        self.pending_units() + (self.sent - self.acked)
    }

    fn credit(&self) -> u64 {
        (self.window.capacity as u64).saturating_sub(self.sent - self.acked)
    }

    /// Whether `emit` has something to do now.
    fn wants_emit(&self) -> bool {
        if self.end_sent {
            return false;
        }
        let data = self.pending_units() > 0 && self.credit() > 0;
        let end = self.closing.is_some() && self.pending_units() == 0;
        match self.ending {
            None => data || end,
            Some(Ending::Aborted) => true,
            Some(_) => false,
        }
    }

    fn wake(&mut self) {
        for waker in [self.flusher.take(), self.closer.take()].into_iter().flatten() {
            waker.wake();
        }
    }
}

impl RemoteProducer {
    pub(crate) fn new(conn: &Arc<ConnShared>, id: u32, window: Window) -> Arc<Self> {
        Self::with_mode(conn, id, window, false)
    }

    /// A producer of a byte stream.
    pub(crate) fn new_bytes(conn: &Arc<ConnShared>, id: u32, window: Window) -> Arc<Self> {
        Self::with_mode(conn, id, window, true)
    }

    pub(crate) fn is_bytes(&self) -> bool {
        self.lock().bytes_mode
    }

    fn with_mode(conn: &Arc<ConnShared>, id: u32, window: Window, bytes_mode: bool) -> Arc<Self> {
        Arc::new(RemoteProducer {
            conn: Arc::downgrade(conn),
            id,
            state: Mutex::new(Producing {
                pending: BytesMut::new(),
                items: VecDeque::new(),
                chunks: VecDeque::new(),
                chunk_bytes: 0,
                bytes_mode,
                caps: VecDeque::new(),
                sent: 0,
                acked: 0,
                window: window.sane(),
                ending: None,
                closing: None,
                end_sent: false,
                scheduled: false,
                flusher: None,
                closer: None,
            }),
        })
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Producing> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn window(&self) -> Window {
        self.lock().window
    }

    /// Encodes `item` into the pending buffer; returns whether the connection
    /// must be told there is something to emit.
    pub(crate) fn push<T: Serialize>(&self, item: &T) -> Result<bool, RpcError> {
        let mut state = self.lock();
        if let Some(ending) = &state.ending {
            return Err(ending.for_writer());
        }
        if state.closing.is_some() {
            return Err(Ending::Closed.for_writer());
        }
        let before = state.pending.len();
        let caps = payload::encode_into(&mut state.pending, item)?;
        let len = (state.pending.len() - before) as u32;
        state.items.push_back((len, caps.len() as u32));
        state.caps.extend(caps);
        Ok(self.claim_schedule(&mut state))
    }

    /// Queues a chunk of a byte stream (kept as is: no copy until it is framed).
    pub(crate) fn push_bytes(&self, chunk: Bytes) -> Result<bool, RpcError> {
        let mut state = self.lock();
        if let Some(ending) = &state.ending {
            return Err(ending.for_writer());
        }
        if state.closing.is_some() {
            return Err(Ending::Closed.for_writer());
        }
        if !chunk.is_empty() {
            state.chunk_bytes += chunk.len() as u64;
            state.chunks.push_back(chunk);
        }
        Ok(self.claim_schedule(&mut state))
    }

    pub(crate) fn write_bytes(&self, chunk: Bytes) -> Result<(), RpcError> {
        if self.push_bytes(chunk)? {
            self.schedule();
        }
        Ok(())
    }

    fn claim_schedule(&self, state: &mut Producing) -> bool {
        if state.scheduled || !state.wants_emit() {
            return false;
        }
        state.scheduled = true;
        true
    }

    /// Tells the connection to emit whatever is pending (not with its lock held).
    pub(crate) fn schedule_now(&self) {
        let schedule = {
            let mut state = self.lock();
            self.claim_schedule(&mut state)
        };
        if schedule {
            self.schedule();
        }
    }

    fn schedule(&self) {
        if let Some(conn) = self.conn.upgrade() {
            conn.lock().schedule_stream(self.id);
        }
    }

    pub(crate) fn write<T: Serialize>(&self, item: &T) -> Result<(), RpcError> {
        if self.push(item)? {
            self.schedule();
        }
        Ok(())
    }

    /// Room left in the window (in bytes, for a byte stream); pending while none.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        let mut state = self.lock();
        if let Some(ending) = &state.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        let capacity = state.window.capacity as u64;
        if state.unread() < capacity {
            return Poll::Ready(Ok((capacity - state.unread()) as usize));
        }
        state.flusher = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let mut state = self.lock();
        if let Some(ending) = &state.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        if state.unread() < state.window.capacity as u64 {
            return Poll::Ready(Ok(()));
        }
        state.flusher = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn close(&self, error: Option<RpcError>) {
        if self.mark_closing(error) {
            self.schedule();
        }
    }

    /// Records a close; returns whether the connection must be told.
    pub(crate) fn mark_closing(&self, error: Option<RpcError>) -> bool {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(error);
        }
        self.claim_schedule(&mut state)
    }

    /// Ready once the end was sent (or the stream ended otherwise).
    pub(crate) fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let mut state = self.lock();
        if state.end_sent {
            return Poll::Ready(Ok(()));
        }
        if let Some(ending) = &state.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        state.closer = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) async fn closed(&self) -> Result<(), RpcError> {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    pub(crate) fn abort(&self) {
        let (schedule, dropped) = self.mark_aborted();
        drop(dropped);
        if schedule {
            self.schedule();
        }
    }

    /// Records an abort (the buffer goes at once); returns whether the
    /// connection must be told, and what to drop outside any lock.
    pub(crate) fn mark_aborted(&self) -> (bool, Box<dyn Send>) {
        let mut state = self.lock();
        if state.ending.is_some() || state.end_sent {
            return (false, Box::new(()));
        }
        state.ending = Some(Ending::Aborted);
        state.items.clear();
        state.chunk_bytes = 0;
        state.wake();
        let dropped = Box::new((
            std::mem::take(&mut state.pending),
            std::mem::take(&mut state.caps),
            std::mem::take(&mut state.chunks),
        ));
        (self.claim_schedule(&mut state), dropped)
    }

    // ----- with the connection locked -----------------------------------

    /// Emits what the window allows, up to about `budget` bytes, into
    /// `conn`'s output. Returns whether the stream is finished (it can leave
    /// the connection's table) and whether it has more to emit now (so the
    /// writer goes round again, letting other frames in between).
    pub(crate) fn emit(&self, conn: &mut ConnState, shared: &Arc<ConnShared>, budget: u64) -> (bool, bool) {
        let mut state = self.lock();
        state.scheduled = false;
        let mut spent = 0;
        if state.bytes_mode {
            spent = Self::emit_bytes(&mut state, conn, self.id, budget);
        }
        while state.ending.is_none() && !state.items.is_empty() && state.credit() > 0 && spent < budget {
            spent += self.emit_items(&mut state, conn, shared);
        }
        self.emit_end(&mut state, conn);
        let finished = state.end_sent || state.ending.is_some();
        let more = !finished && state.wants_emit();
        state.scheduled = more;
        (finished, more)
    }

    /// One message of whole items, or one fragment of an item too large for
    /// a message; returns the bytes emitted.
    fn emit_items(&self, state: &mut Producing, conn: &mut ConnState, shared: &Arc<ConnShared>) -> u64 {
        let first = state.items[0].0 as u64;
        if first > MAX_BYTES_PER_MESSAGE {
            // A large item goes in parts, so frames of other streams and calls
            // can pass between them; its last part travels as the data message.
            let part = state.pending.split_to(MAX_BYTES_PER_MESSAGE as usize);
            conn.send_message_with(&Message::StreamPart { stream: self.id }, part.len(), |out| {
                out.extend_from_slice(&part)
            });
            state.items[0].0 -= MAX_BYTES_PER_MESSAGE as u32;
            return MAX_BYTES_PER_MESSAGE;
        }
        let most = (state.window.batch as u64).min(state.credit()) as usize;
        let (mut count, mut bytes) = (0usize, 0u64);
        for (len, _) in state.items.iter().take(most) {
            if count > 0 && bytes + *len as u64 > MAX_BYTES_PER_MESSAGE {
                break;
            }
            count += 1;
            bytes += *len as u64;
        }
        let batch: Vec<(u32, u32)> = state.items.drain(..count).collect();
        let cap_total: u32 = batch.iter().map(|(_, caps)| caps).sum();
        let data = state.pending.split_to(bytes as usize);
        let caps: Vec<CapEntry> = state.caps.drain(..cap_total as usize).collect();
        let item_caps = if cap_total == 0 { Vec::new() } else { batch.iter().map(|(_, c)| *c).collect() };
        match conn.send_stream_data(shared, self.id, count as u32, item_caps, caps, &data) {
            Ok(()) => state.sent += count as u64,
            Err(err) => {
                // The items cannot be named to the peer: end the stream with why.
                conn.send_message(&Message::StreamEnd { stream: self.id, error: Some(err.clone()) });
                state.ending = Some(Ending::Failed(err));
                state.end_sent = true;
                state.wake();
            }
        }
        bytes
    }

    /// Sends the end (or the abort) once it is due.
    fn emit_end(&self, state: &mut Producing, conn: &mut ConnState) {
        if state.end_sent {
            return;
        }
        let end = match (&state.ending, &state.closing) {
            (Some(Ending::Aborted), _) => Some(Message::StreamAbort { stream: self.id }),
            (None, Some(error)) if state.pending_units() == 0 => {
                Some(Message::StreamEnd { stream: self.id, error: error.clone() })
            }
            _ => None,
        };
        if let Some(end) = end {
            conn.send_message(&end);
            state.end_sent = true;
            state.wake();
        }
    }

    /// Emits byte-stream data: messages of at most `batch` bytes (and never
    /// more than [`MAX_BYTES_PER_MESSAGE`]), within the window. Bounded
    /// messages let other streams' and calls' frames interleave with a bulk
    /// transfer instead of queueing behind it.
    fn emit_bytes(state: &mut Producing, conn: &mut ConnState, id: u32, budget: u64) -> u64 {
        let mut spent = 0;
        while state.ending.is_none() && state.chunk_bytes > 0 && state.credit() > 0 && spent < budget {
            let limit = (state.window.batch as u64).min(MAX_BYTES_PER_MESSAGE);
            let n = limit.min(state.credit()).min(state.chunk_bytes) as usize;
            let chunks = &mut state.chunks;
            let header = Message::StreamData { stream: id, count: n as u32, item_caps: Vec::new(), caps: Vec::new() };
            conn.send_message_with(&header, n, |out| {
                let mut left = n;
                while left > 0 {
                    let front = chunks.front_mut().expect("chunk_bytes counts the chunks");
                    let take = left.min(front.len());
                    out.extend_from_slice(&front.split_to(take));
                    if front.is_empty() {
                        chunks.pop_front();
                    }
                    left -= take;
                }
            });
            state.chunk_bytes -= n as u64;
            state.sent += n as u64;
            spent += n as u64;
        }
        spent
    }

    /// The consumer read up to `read` and set its window; returns whether to schedule.
    pub(crate) fn on_window(&self, read: u64, window: Window) -> Result<bool, RpcError> {
        let mut state = self.lock();
        if read > state.sent || read < state.acked {
            return Err(RpcError::protocol(format!(
                "stream {}: the consumer acknowledged {read} items, but {} were sent and {} acknowledged before",
                self.id, state.sent, state.acked
            )));
        }
        state.acked = read;
        state.window = window.sane();
        state.wake();
        Ok(self.claim_schedule(&mut state))
    }

    /// The stream ended from the other side or with the connection; what
    /// must be dropped is returned so it drops after the lock is released.
    pub(crate) fn on_end(&self, ending: Ending) -> Box<dyn Send> {
        let mut state = self.lock();
        if state.ending.is_none() && !state.end_sent {
            state.ending = Some(ending);
        }
        state.wake();
        state.chunk_bytes = 0;
        Box::new((
            std::mem::take(&mut state.pending),
            std::mem::take(&mut state.caps),
            std::mem::take(&mut state.chunks),
        ))
    }
}

// ----- consumer ------------------------------------------------------------

/// Our consumer side of a stream the peer produces.
pub(crate) struct RemoteConsumer {
    conn: Weak<ConnShared>,
    id: u32,
    state: Mutex<Consuming>,
}

/// One `StreamData` message, read one item at a time.
struct RawBatch {
    bytes: Bytes,
    remaining: u32,
    /// Capabilities per item (empty when none of the items holds any).
    item_caps: VecDeque<u32>,
    caps: VecDeque<CapEntry>,
}

struct Consuming {
    batches: VecDeque<RawBatch>,
    received: u64,
    read: u64,
    /// The most the producer may have sent: read + capacity, as last told.
    granted: u64,
    /// `read` as of the last window message.
    reported: u64,
    window: Window,
    ending: Option<Ending>,
    reader: Option<Waker>,
    max_depth: u32,
    /// A byte stream: counts are bytes and batches are raw data.
    bytes_mode: bool,
    /// The first parts of an item too large for one message.
    partial: BytesMut,
    /// The largest item accepted, in bytes.
    max_item: usize,
}

impl RemoteConsumer {
    pub(crate) fn new(conn: &Arc<ConnShared>, id: u32, window: Window, max_depth: u32) -> Arc<Self> {
        Self::with_mode(conn, id, window, max_depth, false)
    }

    /// A consumer of a byte stream.
    pub(crate) fn new_bytes(conn: &Arc<ConnShared>, id: u32, window: Window) -> Arc<Self> {
        Self::with_mode(conn, id, window, 0, true)
    }

    pub(crate) fn is_bytes(&self) -> bool {
        self.lock().bytes_mode
    }

    fn with_mode(conn: &Arc<ConnShared>, id: u32, window: Window, max_depth: u32, bytes_mode: bool) -> Arc<Self> {
        let window = window.sane();
        Arc::new(RemoteConsumer {
            conn: Arc::downgrade(conn),
            id,
            state: Mutex::new(Consuming {
                batches: VecDeque::new(),
                received: 0,
                read: 0,
                granted: window.capacity as u64,
                reported: 0,
                window,
                ending: None,
                reader: None,
                max_depth,
                bytes_mode,
                partial: BytesMut::new(),
                max_item: conn.config.limits.max_frame_size as usize,
            }),
        })
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Consuming> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn window(&self) -> Window {
        self.lock().window
    }

    pub(crate) fn poll_read<T: DeserializeOwned>(&self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RpcError>> {
        let mut state = self.lock();
        if let Some(ending) = state.ending.as_ref().filter(|e| e.discards()) {
            return Poll::Ready(ending.for_reader());
        }
        let max_depth = state.max_depth;
        let Some(batch) = state.batches.front_mut() else {
            return match &state.ending {
                Some(ending) => Poll::Ready(ending.for_reader()),
                None => {
                    state.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            };
        };
        let decoded = decode_next::<T>(batch, max_depth);
        if batch.remaining == 0 {
            state.batches.pop_front();
        }
        let item = match decoded {
            Ok(item) => item,
            Err(err) => {
                drop(state);
                self.cancel(Some(format!("undecodable item: {}", err.message())));
                return Poll::Ready(Err(err));
            }
        };
        state.read += 1;
        let report = self.due_report(&mut state);
        drop(state);
        if let Some((read, window)) = report {
            self.send_window(read, window);
        }
        Poll::Ready(Ok(Some(item)))
    }

    /// Whether to tell the producer how far we read: after half a window, or
    /// when the buffer runs dry (so a small window never stalls).
    fn due_report(&self, state: &mut Consuming) -> Option<(u64, Window)> {
        let unreported = state.read - state.reported;
        let half = (state.window.capacity as u64).div_ceil(2);
        if unreported == 0 || (unreported < half && !state.batches.is_empty()) || state.ending.is_some() {
            return None;
        }
        state.reported = state.read;
        state.granted = state.granted.max(state.read + state.window.capacity as u64);
        Some((state.read, state.window))
    }

    fn send_window(&self, read: u64, window: Window) {
        if let Some(conn) = self.conn.upgrade() {
            conn.lock().send_message(&Message::StreamWindow { stream: self.id, read, window });
        }
    }

    pub(crate) fn set_window(&self, window: Window) {
        let (read, window) = {
            let mut state = self.lock();
            state.window = window.sane();
            state.reported = state.read;
            state.granted = state.granted.max(state.read + state.window.capacity as u64);
            (state.read, state.window)
        };
        self.send_window(read, window);
    }

    pub(crate) fn cancel(&self, reason: Option<String>) {
        let dropped = {
            let mut state = self.lock();
            if state.ending.as_ref().is_some_and(|e| !matches!(e, Ending::Closed | Ending::Failed(_))) {
                return;
            }
            let finished = state.ending.is_some();
            state.ending = Some(Ending::Cancelled(reason.clone()));
            let batches = std::mem::take(&mut state.batches);
            if finished {
                return drop((state, batches));
            }
            batches
        };
        drop(dropped);
        if let Some(conn) = self.conn.upgrade() {
            conn.lock().end_stream(self.id, Some(Message::StreamCancel { stream: self.id, reason }));
        }
    }

    // ----- with the connection locked -----------------------------------

    /// A part of a large item arrived.
    pub(crate) fn on_part(&self, bytes: &[u8]) -> Result<(), RpcError> {
        let mut state = self.lock();
        if state.bytes_mode {
            return Err(RpcError::protocol(format!("stream {}: item parts on a byte stream", self.id)));
        }
        if state.partial.len() + bytes.len() > state.max_item {
            return Err(RpcError::limit(format!(
                "stream {}: an item larger than the limit of {} bytes",
                self.id, state.max_item
            )));
        }
        state.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// Reads up to `max` bytes of a byte stream: from one chunk without
    /// copying when it holds enough, else gathered across chunks.
    pub(crate) fn poll_read_bytes(&self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>, RpcError>> {
        let mut state = self.lock();
        if let Some(ending) = state.ending.as_ref().filter(|e| e.discards()) {
            return Poll::Ready(ending.for_reader());
        }
        if state.batches.is_empty() {
            return match &state.ending {
                Some(ending) => Poll::Ready(ending.for_reader()),
                None => {
                    state.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            };
        }
        let data = take_bytes(&mut state.batches, max.max(1));
        state.read += data.len() as u64;
        let report = self.due_report(&mut state);
        drop(state);
        if let Some((read, window)) = report {
            self.send_window(read, window);
        }
        Poll::Ready(Ok(Some(data)))
    }

    /// A data message arrived.
    /// `caps` is taken only when the batch is kept: the caller drops what is
    /// left once the connection is unlocked.
    pub(crate) fn on_data(
        &self,
        count: u32,
        bytes: Bytes,
        item_caps: Vec<u32>,
        caps: &mut Vec<CapEntry>,
    ) -> Result<(), RpcError> {
        let mut state = self.lock();
        let received = state.received + count as u64;
        if received > state.granted {
            return Err(RpcError::protocol(format!(
                "stream {}: the producer sent past the consumer's window ({received} items, {} allowed)",
                self.id, state.granted
            )));
        }
        if !item_caps.is_empty() && item_caps.len() != count as usize {
            return Err(RpcError::protocol(format!("stream {}: capability counts do not match items", self.id)));
        }
        if state.bytes_mode && (bytes.len() != count as usize || !item_caps.is_empty() || !caps.is_empty()) {
            return Err(RpcError::protocol(format!(
                "stream {}: byte-stream data announces {count} bytes but carries {} (and no capabilities)",
                self.id,
                bytes.len()
            )));
        }
        let bytes = if state.partial.is_empty() {
            bytes
        } else if count == 0 {
            return Err(RpcError::protocol(format!("stream {}: item parts with no item to end them", self.id)));
        } else {
            // The first item began in earlier parts.
            let mut whole = std::mem::take(&mut state.partial);
            whole.extend_from_slice(&bytes);
            whole.freeze()
        };
        state.received = received;
        if state.ending.is_some() || count == 0 {
            return Ok(());
        }
        let caps = std::mem::take(caps);
        let batch = RawBatch { bytes, remaining: count, item_caps: item_caps.into(), caps: caps.into() };
        state.batches.push_back(batch);
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        Ok(())
    }

    /// The producer ended the stream (or the connection did).
    pub(crate) fn on_end(&self, ending: Ending) -> Box<dyn Send> {
        let mut state = self.lock();
        if state.ending.is_none() {
            state.ending = Some(ending);
        }
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        let discard = state.ending.as_ref().is_some_and(Ending::discards);
        Box::new(if discard { std::mem::take(&mut state.batches) } else { VecDeque::new() })
    }
}

/// Takes up to `max` bytes off the front of `batches`.
fn take_bytes(batches: &mut VecDeque<RawBatch>, max: usize) -> Bytes {
    let single = batches.len() == 1;
    let front = &mut batches.front_mut().expect("checked non-empty").bytes;
    if front.len() >= max || single {
        let take = max.min(front.len());
        let data = front.split_to(take);
        if front.is_empty() {
            batches.pop_front();
        }
        return data;
    }
    let mut gathered = BytesMut::with_capacity(max);
    while gathered.len() < max {
        let Some(batch) = batches.front_mut() else { break };
        let take = (max - gathered.len()).min(batch.bytes.len());
        gathered.extend_from_slice(&batch.bytes.split_to(take));
        if batch.bytes.is_empty() {
            batches.pop_front();
        }
    }
    gathered.freeze()
}

/// Decodes the next item of `batch` and advances past it.
fn decode_next<T: DeserializeOwned>(batch: &mut RawBatch, max_depth: u32) -> Result<T, RpcError> {
    let cap_count = batch.item_caps.pop_front().unwrap_or(0) as usize;
    let caps: Vec<CapEntry> = batch.caps.drain(..cap_count.min(batch.caps.len())).collect();
    batch.remaining -= 1;
    let (item, used) = payload::decode_from::<T>(&batch.bytes, caps, max_depth)?;
    bytes::Buf::advance(&mut batch.bytes, used);
    Ok(item)
}
