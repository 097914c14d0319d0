//! Our producer side of a stream whose consumer is the peer.
//!
//! Writes encode items (or queue byte chunks) into a pending buffer; the
//! connection's writer task calls [`RemoteProducer::emit`] to turn them into
//! `StreamData` messages of at most `batch` items and 64 KiB, never past the
//! consumer's window, a bounded share per round.
//!
//! Locking: `emit` and the `on_*` methods run with the connection state
//! locked; every other method takes the producer's own lock, releases it, and
//! only then talks to the connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::{Ending, Window};
use crate::conn::ConnShared;
use crate::payload::{self, CapEntry};
use crate::proto::{Protocol, Shell};
use crate::wire::Message;
use crate::RpcError;

/// The largest byte-stream message, whatever the consumer's batch size.
pub(crate) const MAX_BYTES_PER_MESSAGE: u64 = 64 << 10;

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
    /// Bytes of the first pending item already sent as `StreamPart`s.
    part_sent: u32,
    /// Data messages sent and not wholly acknowledged (sequences): the item
    /// count `sent` reached with each, and its bytes. A message counts in
    /// full until its last item is acknowledged: a little conservative, and
    /// O(1) per message rather than per item.
    inflight: VecDeque<(u64, u64)>,
    inflight_bytes: u64,
    /// The peer's byte window for items: unacknowledged item bytes stay within it.
    peer_bytes: u64,
    /// Our bound on item bytes queued here plus in flight: `flush` waits above it.
    local_bytes: u64,
    /// Our limits: a window the peer declares is capped by them.
    limits: crate::Limits,
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

    /// Whether an item of `len` bytes may be sent after `extra` more bytes
    /// of this round: within the peer's byte window, or alone.
    fn byte_room(&self, extra: u64, len: u64) -> bool {
        let unacked = self.inflight_bytes + extra;
        self.bytes_mode || unacked == 0 || unacked + len <= self.peer_bytes
    }

    /// The whole length of the first pending item (parts already sent included).
    fn first_len(&self) -> u64 {
        self.items.front().map_or(0, |(len, _)| u64::from(*len) + u64::from(self.part_sent))
    }

    /// Whether `flush` must wait: the window is full, or (sequences) the
    /// items queued and in flight hold more bytes than we keep for a peer.
    fn full(&self) -> bool {
        self.unread() >= self.window.capacity as u64
            || (!self.bytes_mode && self.pending.len() as u64 + self.inflight_bytes >= self.local_bytes)
    }

    /// Whether `emit` has something to do now.
    fn wants_emit(&self) -> bool {
        if self.end_sent {
            return false;
        }
        let data = self.pending_units() > 0 && self.credit() > 0 && self.byte_room(0, self.first_len());
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
                part_sent: 0,
                inflight: VecDeque::new(),
                inflight_bytes: 0,
                peer_bytes: u64::from(conn.peer_limits.max_stream_window_bytes),
                local_bytes: u64::from(conn.config.limits.max_stream_window_bytes),
                limits: conn.config.limits,
                sent: 0,
                acked: 0,
                window: window.capped(&conn.config.limits, bytes_mode),
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

    /// Queues one item already encoded elsewhere (a relay passing items on
    /// without knowing their type), with the capabilities it refers to.
    pub(crate) fn push_raw(&self, item: &[u8], caps: Vec<CapEntry>) -> Result<bool, RpcError> {
        let mut state = self.lock();
        if let Some(ending) = &state.ending {
            return Err(ending.for_writer());
        }
        if state.closing.is_some() {
            return Err(Ending::Closed.for_writer());
        }
        state.pending.extend_from_slice(item);
        state.items.push_back((item.len() as u32, caps.len() as u32));
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

    pub(crate) fn write_raw(&self, item: &[u8], caps: Vec<CapEntry>) -> Result<(), RpcError> {
        if self.push_raw(item, caps)? {
            self.schedule();
        }
        Ok(())
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

    /// Tells the connection to emit whatever is pending (not with its lock
    /// held). Unconditional: after a redirect, pushes may have claimed the
    /// schedule without telling the connection.
    pub(crate) fn schedule_now(&self) {
        self.lock().scheduled = true;
        self.schedule();
    }

    fn schedule(&self) {
        if let Some(conn) = self.conn.upgrade() {
            let id = self.id;
            conn.with_state(move |state| state.schedule_stream(id));
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
        if !state.full() {
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
    pub(crate) fn emit(&self, conn: &mut Protocol, shared: &dyn Shell, budget: u64) -> (bool, bool) {
        let mut state = self.lock();
        state.scheduled = false;
        let mut spent = 0;
        if state.bytes_mode {
            spent = Self::emit_bytes(&mut state, conn, self.id, budget);
        }
        while state.ending.is_none()
            && !state.items.is_empty()
            && state.credit() > 0
            && spent < budget
            && state.byte_room(0, state.first_len())
        {
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
    fn emit_items(&self, state: &mut Producing, conn: &mut Protocol, shared: &dyn Shell) -> u64 {
        let first = state.items[0].0 as u64;
        if first > MAX_BYTES_PER_MESSAGE {
            // A large item goes in parts, so frames of other streams and calls
            // can pass between them; its last part travels as the data message.
            let part = &state.pending[..MAX_BYTES_PER_MESSAGE as usize];
            conn.send_message_with(&Message::StreamPart { stream: self.id }, part.len(), |out| {
                out.extend_from_slice(part)
            });
            // Advance rather than split: a split would share the buffer and make
            // the next write move everything still pending.
            bytes::Buf::advance(&mut state.pending, MAX_BYTES_PER_MESSAGE as usize);
            state.items[0].0 -= MAX_BYTES_PER_MESSAGE as u32;
            state.part_sent += MAX_BYTES_PER_MESSAGE as u32;
            return MAX_BYTES_PER_MESSAGE;
        }
        let most = (state.window.batch as u64).min(state.credit()) as usize;
        let (mut count, mut bytes) = (0usize, 0u64);
        for (i, (len, _)) in state.items.iter().take(most).enumerate() {
            let whole = *len as u64 + if i == 0 { state.part_sent as u64 } else { 0 };
            if count > 0 && (bytes + *len as u64 > MAX_BYTES_PER_MESSAGE || !state.byte_room(bytes, whole)) {
                break;
            }
            count += 1;
            bytes += *len as u64;
        }
        let batch: Vec<(u32, u32)> = state.items.drain(..count).collect();
        let cap_total: u32 = batch.iter().map(|(_, caps)| caps).sum();
        let caps: Vec<CapEntry> = state.caps.drain(..cap_total as usize).collect();
        let item_caps = if cap_total == 0 { Vec::new() } else { batch.iter().map(|(_, c)| *c).collect() };
        // Whole lengths: the first item's earlier parts count too.
        let mut item_lens: Vec<u32> = batch.iter().map(|(len, _)| *len).collect();
        item_lens[0] += std::mem::take(&mut state.part_sent);
        let message_bytes = item_lens.iter().map(|&len| u64::from(len)).sum::<u64>();
        state.inflight_bytes += message_bytes;
        let end = state.sent + count as u64;
        state.inflight.push_back((end, message_bytes));
        let sent = conn.send_stream_data(
            shared,
            self.id,
            count as u32,
            (item_caps, item_lens),
            caps,
            &state.pending[..bytes as usize],
        );
        bytes::Buf::advance(&mut state.pending, bytes as usize);
        match sent {
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
    fn emit_end(&self, state: &mut Producing, conn: &mut Protocol) {
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
    fn emit_bytes(state: &mut Producing, conn: &mut Protocol, id: u32, budget: u64) -> u64 {
        let mut spent = 0;
        while state.ending.is_none() && state.chunk_bytes > 0 && state.credit() > 0 && spent < budget {
            let limit = (state.window.batch as u64).min(MAX_BYTES_PER_MESSAGE);
            let n = limit.min(state.credit()).min(state.chunk_bytes) as usize;
            let chunks = &mut state.chunks;
            let header = Message::StreamData {
                stream: id,
                count: n as u32,
                item_caps: Vec::new(),
                caps: Vec::new(),
                item_lens: Vec::new(),
            };
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
        while let Some(&(_, bytes)) = state.inflight.front().filter(|(end, _)| *end <= read) {
            state.inflight.pop_front();
            state.inflight_bytes -= bytes.min(state.inflight_bytes);
        }
        state.acked = read;
        state.window = window.capped(&state.limits, state.bytes_mode);
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
