//! The send state of a stream we produce and the peer consumes.
//!
//! Writes queue encoded items (or byte chunks, uncopied) in `pending`;
//! [`Protocol::emit_producer`] turns them into `StreamData` messages of at
//! most `batch` items and 64 KiB, never past the consumer's window, a bounded
//! share per round. Plain data: wakers are stored here and woken by the
//! owner (`Effect::Wake`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::consume::Signals;
use super::lane::{self, LaneReader};
use super::streams::{StreamEntry, StreamHalf};
use super::Ending;
use super::{Effect, Protocol, Shell};
use crate::payload::CapEntry;
use crate::wire::Message;
use crate::wire::Window;
use crate::{Limits, RpcError};

/// The largest byte-stream message, whatever the consumer's batch size.
pub(crate) const MAX_BYTES_PER_MESSAGE: u64 = 64 << 10;

/// The block small byte-stream writes are gathered into (then queued as one chunk).
const TAIL_BLOCK: usize = 4 << 10;

/// Byte-stream pieces at least this large are not copied into the output:
/// the writer sends them in place, beside the frame headers.
const ZERO_COPY_MIN: usize = 4 << 10;

/// Our producer half of one stream.
pub(crate) struct Producing {
    /// Encoded items not yet sent, back to back.
    pending: BytesMut,
    /// Per pending item: its encoded length and how many capabilities it holds.
    items: VecDeque<(u32, u32)>,
    /// Byte streams: unsent chunks as written (no copy), then small writes
    /// copied together into `tail`; `chunk_bytes` counts both.
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    chunk_bytes: u64,
    /// A byte stream: windows and counts are in bytes, not items.
    pub(crate) bytes_mode: bool,
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
    limits: Limits,
    sent: u64,
    /// Items the consumer has read (from its last window message).
    acked: u64,
    pub(crate) window: Window,
    ending: Option<Ending>,
    /// `close` was called: send the end once `pending` is empty.
    closing: Option<Option<RpcError>>,
    end_sent: bool,
    /// Queued in the protocol's `ready` list.
    pub(crate) scheduled: bool,
    flusher: Option<Waker>,
    closer: Option<Waker>,
    /// Shared with the handle: the window, readable without the lock.
    pub(crate) signals: Arc<Signals>,
    /// A sequence's lane: items its writer queued without the lock, taken
    /// in by [`Protocol::producer_absorb`].
    lane: Option<LaneReader>,
}

impl Producing {
    pub(crate) fn new(window: Window, bytes_mode: bool, limits: &Limits, peer_limits: &Limits) -> Self {
        let window = window.capped(limits, bytes_mode);
        let signals = Signals::new(window);
        let lane = (!bytes_mode).then(|| {
            let (writer, reader) = lane::lane();
            signals.lane.put(writer);
            reader
        });
        let producing = Producing {
            lane,
            signals,
            pending: BytesMut::new(),
            items: VecDeque::new(),
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            chunk_bytes: 0,
            bytes_mode,
            caps: VecDeque::new(),
            part_sent: 0,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            peer_bytes: u64::from(peer_limits.max_stream_window_bytes),
            local_bytes: u64::from(limits.max_stream_window_bytes),
            limits: *limits,
            sent: 0,
            acked: 0,
            window,
            ending: None,
            closing: None,
            end_sent: false,
            scheduled: false,
            flusher: None,
            closer: None,
        };
        producing.refresh();
        producing
    }

    /// Items (or bytes) written and not yet sent.
    #[inline]
    fn pending_units(&self) -> u64 {
        if self.bytes_mode {
            self.chunk_bytes
        } else {
            self.items.len() as u64
        }
    }

    #[inline]
    fn unread(&self) -> u64 {
        self.pending_units() + (self.sent - self.acked)
    }

    #[inline]
    fn credit(&self) -> u64 {
        (self.window.capacity as u64).saturating_sub(self.sent - self.acked)
    }

    /// Whether an item of `len` bytes may be sent after `extra` more bytes
    /// of this round: within the peer's byte window, or alone.
    #[inline]
    fn byte_room(&self, extra: u64, len: u64) -> bool {
        let unacked = self.inflight_bytes + extra;
        self.bytes_mode || unacked == 0 || unacked + len <= self.peer_bytes
    }

    /// The whole length of the first pending item (parts already sent included).
    #[inline]
    fn first_len(&self) -> u64 {
        self.items.front().map_or(0, |(len, _)| u64::from(*len) + u64::from(self.part_sent))
    }

    /// Whether `flush` must wait: the window is full, or (sequences) the
    /// items queued and in flight hold more bytes than we keep for a peer.
    #[inline]
    fn full(&self) -> bool {
        self.unread() >= self.window.capacity as u64
            || (!self.bytes_mode && self.pending.len() as u64 + self.inflight_bytes >= self.local_bytes)
    }

    /// Puts stream `id` on `ready` if it is live and has something to emit
    /// now (and is not there already).
    #[inline]
    fn schedule(&mut self, id: u32, live: bool, ready: &mut Vec<u32>) {
        if live && !self.scheduled && self.wants_emit() {
            self.scheduled = true;
            ready.push(id);
        }
    }

    /// Whether emitting has something to do now.
    #[inline]
    pub(crate) fn wants_emit(&self) -> bool {
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

    /// Whether a close was asked for (the end goes out after what is pending).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Publishes whether a flush may return at once (see [`Signals::room`]).
    #[inline]
    fn refresh(&self) {
        let room = if self.ending.is_none() && !self.full() { self.window.capacity as u64 - self.unread() } else { 0 };
        self.signals.room.store(room, std::sync::atomic::Ordering::Release);
        let room_bytes = if room == 0 {
            0
        } else if self.bytes_mode {
            u64::MAX
        } else {
            self.local_bytes.saturating_sub(self.pending.len() as u64 + self.inflight_bytes)
        };
        self.signals.room_bytes.store(room_bytes, std::sync::atomic::Ordering::Release);
        let ended = self.ending.is_some() || self.closing.is_some();
        self.signals.ended.store(ended, std::sync::atomic::Ordering::Release);
    }

    fn wake(&mut self, effects: &mut Vec<Effect>) {
        for waker in [self.flusher.take(), self.closer.take()].into_iter().flatten() {
            effects.push(Effect::Wake(waker));
        }
    }

    #[inline]
    pub(super) fn writable(&self) -> Result<(), RpcError> {
        if let Some(ending) = &self.ending {
            return Err(ending.for_writer());
        }
        if self.closing.is_some() {
            return Err(Ending::Closed.for_writer());
        }
        Ok(())
    }

    /// Queues one encoded item with the capabilities it refers to.
    #[inline]
    /// The caller checked [`Self::writable`] (so a refused item's
    /// capabilities drop as an effect, not under the lock).
    pub(crate) fn push_item(&mut self, item: &[u8], caps: Vec<CapEntry>) {
        self.pending.extend_from_slice(item);
        self.items.push_back((item.len() as u32, caps.len() as u32));
        if !caps.is_empty() {
            self.caps.extend(caps);
        }
        self.refresh();
    }

    /// Encodes `item` straight into the pending buffer (an in-process pair's
    /// buffered items moving here as its consumer end leaves).
    pub(crate) fn encode_item<T: serde::Serialize>(&mut self, item: &T) -> Result<(), RpcError> {
        self.writable()?;
        let before = self.pending.len();
        let caps = match crate::payload::encode_into(&mut self.pending, item) {
            Ok(caps) => caps,
            Err(err) => {
                self.pending.truncate(before);
                return Err(err);
            }
        };
        let len = (self.pending.len() - before) as u32;
        self.items.push_back((len, caps.len() as u32));
        self.caps.extend(caps);
        self.refresh();
        Ok(())
    }

    /// Queues a chunk of a byte stream (kept as is: no copy until it is framed).
    pub(crate) fn push_chunk(&mut self, chunk: Bytes) -> Result<(), RpcError> {
        self.writable()?;
        if !chunk.is_empty() {
            self.seal_tail();
            self.chunk_bytes += chunk.len() as u64;
            self.chunks.push_back(chunk);
        }
        self.refresh();
        Ok(())
    }

    /// Queues a copy of `data` (a small write through `AsyncWrite`): appended
    /// to the tail, so a run of small writes costs no allocation each.
    pub(crate) fn push_slice(&mut self, data: &[u8]) -> Result<(), RpcError> {
        self.writable()?;
        if self.tail.capacity() - self.tail.len() < data.len() {
            // Full: queue it as it is and start another (growing it instead
            // would copy what it holds).
            self.seal_tail();
            self.tail.reserve(data.len().max(TAIL_BLOCK));
        }
        self.tail.extend_from_slice(data);
        self.chunk_bytes += data.len() as u64;
        self.refresh();
        Ok(())
    }

    /// Moves the small writes gathered in `tail` behind the chunks.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Room left in the window (in bytes, for a byte stream); pending while none.
    pub(crate) fn poll_room(&mut self, waker: &Waker) -> Poll<Result<usize, RpcError>> {
        if let Some(ending) = &self.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        if self.end_sent {
            // Closed and its end sent: no acknowledgement will come any more.
            return Poll::Ready(Err(Ending::Closed.for_writer()));
        }
        let capacity = self.window.capacity as u64;
        if self.unread() < capacity {
            return Poll::Ready(Ok((capacity - self.unread()) as usize));
        }
        self.flusher = Some(waker.clone());
        Poll::Pending
    }

    pub(crate) fn poll_flush(&mut self, waker: &Waker) -> Poll<Result<(), RpcError>> {
        if let Some(ending) = &self.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        // Closed and its end sent: everything went out, and no
        // acknowledgement will come any more.
        if !self.full() || self.end_sent {
            return Poll::Ready(Ok(()));
        }
        self.flusher = Some(waker.clone());
        Poll::Pending
    }

    /// Records a close: the end goes out after what is pending.
    pub(crate) fn close(&mut self, error: Option<RpcError>) {
        if self.closing.is_none() {
            self.closing = Some(error);
        }
        self.refresh();
    }

    /// Ready once the end was sent (or the stream ended otherwise).
    pub(crate) fn poll_closed(&mut self, waker: &Waker) -> Poll<Result<(), RpcError>> {
        if self.end_sent {
            return Poll::Ready(Ok(()));
        }
        if let Some(ending) = &self.ending {
            return Poll::Ready(Err(ending.for_writer()));
        }
        self.closer = Some(waker.clone());
        Poll::Pending
    }

    /// Records an abort: the buffer goes at once (returned, for the owner to
    /// drop: it may hold capabilities).
    pub(crate) fn abort(&mut self, effects: &mut Vec<Effect>) -> Option<Box<dyn Send>> {
        if self.ending.is_some() || self.end_sent {
            return None;
        }
        self.ending = Some(Ending::Aborted);
        self.wake(effects);
        let dropped = self.take_buffers();
        self.refresh();
        Some(dropped)
    }

    fn take_buffers(&mut self) -> Box<dyn Send> {
        self.items.clear();
        self.chunk_bytes = 0;
        self.tail.clear();
        Box::new((std::mem::take(&mut self.pending), std::mem::take(&mut self.caps), std::mem::take(&mut self.chunks)))
    }

    /// The consumer read up to `read` and set its window.
    pub(crate) fn on_window(
        &mut self,
        id: u32,
        read: u64,
        window: Window,
        effects: &mut Vec<Effect>,
    ) -> Result<(), RpcError> {
        if read > self.sent || read < self.acked {
            return Err(RpcError::protocol(format!(
                "stream {id}: the consumer acknowledged {read} items, but {} were sent and {} acknowledged before",
                self.sent, self.acked
            )));
        }
        while let Some(&(_, bytes)) = self.inflight.front().filter(|(end, _)| *end <= read) {
            self.inflight.pop_front();
            self.inflight_bytes -= bytes.min(self.inflight_bytes);
        }
        self.acked = read;
        self.window = window.capped(&self.limits, self.bytes_mode);
        self.signals.set_window(self.window);
        self.refresh();
        self.wake(effects);
        Ok(())
    }

    /// The stream ended from the other side or with the connection; what
    /// was pending is returned for the owner to drop.
    pub(crate) fn on_end(&mut self, ending: Ending, effects: &mut Vec<Effect>) -> Box<dyn Send> {
        if self.ending.is_none() && !self.end_sent {
            self.ending = Some(ending);
        }
        self.wake(effects);
        let dropped = self.take_buffers();
        self.refresh();
        dropped
    }
}

impl Protocol {
    /// Emits what producer `id`'s window allows, up to about `budget` bytes.
    /// Returns whether the stream is finished (its end is out, or it ended
    /// otherwise) and whether it has more to emit now (so the writer goes
    /// round again, letting other frames in between).
    pub(super) fn emit_producer(&mut self, shell: &dyn Shell, id: u32, p: &mut Producing, budget: u64) -> (bool, bool) {
        p.scheduled = false;
        let mut spent = 0;
        if p.bytes_mode {
            spent = self.emit_bytes(id, p, budget);
        }
        while p.ending.is_none()
            && !p.items.is_empty()
            && p.credit() > 0
            && spent < budget
            && p.byte_room(0, p.first_len())
        {
            spent += self.emit_items(shell, id, p);
        }
        self.emit_end(id, p);
        let finished = p.end_sent || p.ending.is_some();
        let more = !finished && p.wants_emit();
        p.scheduled = more;
        (finished, more)
    }

    /// One message of whole items, or one fragment of an item too large for
    /// a message; returns the bytes emitted.
    fn emit_items(&mut self, shell: &dyn Shell, id: u32, p: &mut Producing) -> u64 {
        let first = p.items[0].0 as u64;
        if first > MAX_BYTES_PER_MESSAGE {
            // A large item goes in parts, so frames of other streams and calls
            // can pass between them; its last part travels as the data message.
            let part = &p.pending[..MAX_BYTES_PER_MESSAGE as usize];
            self.send_message_with(&Message::StreamPart { stream: id }, part.len(), |out| out.extend_from_slice(part));
            // Advance rather than split: a split would share the buffer and make
            // the next write move everything still pending.
            bytes::Buf::advance(&mut p.pending, MAX_BYTES_PER_MESSAGE as usize);
            p.items[0].0 -= MAX_BYTES_PER_MESSAGE as u32;
            p.part_sent += MAX_BYTES_PER_MESSAGE as u32;
            return MAX_BYTES_PER_MESSAGE;
        }
        let most = (p.window.batch as u64).min(p.credit()) as usize;
        let (mut count, mut bytes) = (0usize, 0u64);
        for (i, (len, _)) in p.items.iter().take(most).enumerate() {
            let whole = *len as u64 + if i == 0 { p.part_sent as u64 } else { 0 };
            if count > 0 && (bytes + *len as u64 > MAX_BYTES_PER_MESSAGE || !p.byte_room(bytes, whole)) {
                break;
            }
            count += 1;
            bytes += *len as u64;
        }
        // One pass over the batch's entries (as slices: a deque's iterator
        // costs more per item): their lengths, and how many capabilities.
        let mut item_lens: Vec<u32> = Vec::with_capacity(count);
        let mut cap_total = 0u32;
        let (front, back) = p.items.as_slices();
        for &(len, caps) in front.iter().chain(back).take(count) {
            item_lens.push(len);
            cap_total += caps;
        }
        let caps: Vec<CapEntry> = p.caps.drain(..cap_total as usize).collect();
        let item_caps = if cap_total == 0 { Vec::new() } else { p.items.iter().take(count).map(|(_, c)| *c).collect() };
        p.items.drain(..count);
        // Whole lengths: the first item's earlier parts count too.
        item_lens[0] += std::mem::take(&mut p.part_sent);
        let message_bytes = item_lens.iter().map(|&len| u64::from(len)).sum::<u64>();
        p.inflight_bytes += message_bytes;
        let end = p.sent + count as u64;
        p.inflight.push_back((end, message_bytes));
        let sent =
            self.send_stream_data(shell, id, count as u32, (item_caps, item_lens), caps, &p.pending[..bytes as usize]);
        bytes::Buf::advance(&mut p.pending, bytes as usize);
        match sent {
            Ok(()) => p.sent += count as u64,
            Err(err) => {
                // The items cannot be named to the peer: end the stream with why.
                self.send_message(&Message::StreamEnd { stream: id, error: Some(err.clone()) });
                p.ending = Some(Ending::Failed(err));
                p.end_sent = true;
                p.refresh();
                p.wake(&mut self.effects);
            }
        }
        bytes
    }

    /// Sends the end (or the abort) once it is due.
    fn emit_end(&mut self, id: u32, p: &mut Producing) {
        if p.end_sent {
            return;
        }
        let end = match (&p.ending, &p.closing) {
            (Some(Ending::Aborted), _) => Some(Message::StreamAbort { stream: id }),
            (None, Some(error)) if p.pending_units() == 0 => {
                Some(Message::StreamEnd { stream: id, error: error.clone() })
            }
            _ => None,
        };
        if let Some(end) = end {
            self.send_message(&end);
            p.end_sent = true;
            p.wake(&mut self.effects);
        }
    }

    /// Emits byte-stream data: messages of at most `batch` bytes (and never
    /// more than [`MAX_BYTES_PER_MESSAGE`]), within the window. Bounded
    /// messages let other streams' and calls' frames interleave with a bulk
    /// transfer instead of queueing behind it.
    fn emit_bytes(&mut self, id: u32, p: &mut Producing, budget: u64) -> u64 {
        p.seal_tail();
        let mut spent = 0;
        while p.ending.is_none() && p.chunk_bytes > 0 && p.credit() > 0 && spent < budget {
            let limit = (p.window.batch as u64).min(MAX_BYTES_PER_MESSAGE);
            let n = limit.min(p.credit()).min(p.chunk_bytes) as usize;
            let chunks = &mut p.chunks;
            let header = Message::StreamData {
                stream: id,
                count: n as u32,
                item_caps: Vec::new(),
                caps: Vec::new(),
                item_lens: Vec::new(),
            };
            if let Err(err) = crate::wire::frame::encode_header(&mut self.out, &header, n) {
                tracing::error!("dropping unencodable frame: {err}");
                break;
            }
            let mut left = n;
            while left > 0 {
                let front = chunks.front_mut().expect("chunk_bytes counts the chunks");
                let take = left.min(front.len());
                let piece = front.split_to(take);
                if piece.len() >= ZERO_COPY_MIN {
                    // Sent from where the writer put it (a vectored write).
                    self.out_chunks.push((self.out.len(), piece));
                } else {
                    self.out.extend_from_slice(&piece);
                }
                if front.is_empty() {
                    chunks.pop_front();
                }
                left -= take;
            }
            p.chunk_bytes -= n as u64;
            p.sent += n as u64;
            spent += n as u64;
        }
        spent
    }
}

/// Commands on a producer half by stream id (from its handle).
impl Protocol {
    /// The producer half `id`, if it still exists.
    fn producer_mut(&mut self, id: u32) -> Result<&mut Producing, RpcError> {
        // Two fields borrowed apart, so the miss can say why without a second lookup.
        let Protocol { streams, closed, .. } = self;
        match streams.get_mut(&id).map(|entry| &mut entry.half) {
            Some(StreamHalf::Producer(p)) => Ok(p),
            Some(StreamHalf::Consumer(_)) => Err(RpcError::protocol(format!("stream {id} is not one we produce"))),
            None => Err(super::streams::gone(closed, id)),
        }
    }

    /// Queues producer `id` for emitting if it has something to emit now.
    fn schedule_if_wanted(&mut self, id: u32) {
        let Protocol { streams, ready, .. } = self;
        if let Some(StreamEntry { half: StreamHalf::Producer(p), live, .. }) = streams.get_mut(&id) {
            p.schedule(id, *live, ready);
        }
    }

    /// Queues one encoded item on producer `id`: one table lookup, since
    /// every item of a stream comes through here.
    #[inline]
    pub(crate) fn producer_push_item(&mut self, id: u32, item: &[u8], caps: Vec<CapEntry>) -> Result<(), RpcError> {
        let Protocol { streams, closed, ready, .. } = self;
        let refused = match streams.get_mut(&id) {
            Some(StreamEntry { half: StreamHalf::Producer(p), live, .. }) => match p.writable() {
                Ok(()) => {
                    p.push_item(item, caps);
                    p.schedule(id, *live, ready);
                    return Ok(());
                }
                Err(err) => err,
            },
            _ => super::streams::gone(closed, id),
        };
        // The item's capabilities may lock a connection when they drop.
        self.defer_drop(caps);
        Err(refused)
    }

    /// Takes in the items producer `id`'s writer put in its lane without the
    /// lock (none holding a capability), queued as if written one by one. A
    /// stream that can take no more drops them: it published `ended` when it
    /// ended, so the writer's next write or flush takes the lock and learns why.
    pub(crate) fn producer_absorb(&mut self, id: u32) {
        let Protocol { streams, ready, .. } = self;
        let Some(StreamEntry { half: StreamHalf::Producer(p), live, .. }) = streams.get_mut(&id) else { return };
        let writable = p.writable().is_ok();
        let Producing { lane: Some(lane), pending, items, .. } = &mut **p else { return };
        let (mut count, mut bytes) = (0u64, 0u64);
        lane.take(|run, lens| {
            if writable {
                pending.extend_from_slice(run);
                items.extend(lens.iter().map(|&len| (len, 0)));
            }
            count += lens.len() as u64;
            bytes += run.len() as u64;
        });
        if count == 0 {
            return;
        }
        if writable {
            p.refresh();
            p.schedule(id, *live, ready);
        }
        // After `room` took them in: a flush never counts them twice as free.
        let taken = p.signals.taken.load(std::sync::atomic::Ordering::Relaxed) + count;
        p.signals.taken.store(taken, std::sync::atomic::Ordering::Release);
        let taken = p.signals.taken_bytes.load(std::sync::atomic::Ordering::Relaxed) + bytes;
        p.signals.taken_bytes.store(taken, std::sync::atomic::Ordering::Release);
    }

    /// Encodes `item` into producer `id` (see [`Producing::encode_item`]).
    pub(crate) fn producer_encode_item<T: serde::Serialize>(&mut self, id: u32, item: &T) -> Result<(), RpcError> {
        self.producer_mut(id)?.encode_item(item)?;
        self.schedule_if_wanted(id);
        Ok(())
    }

    /// Queues a copy of `data` on byte stream `id`.
    pub(crate) fn producer_push_slice(&mut self, id: u32, data: &[u8]) -> Result<(), RpcError> {
        self.producer_mut(id)?.push_slice(data)?;
        self.schedule_if_wanted(id);
        Ok(())
    }

    /// Queues a chunk of byte stream `id`.
    pub(crate) fn producer_push_chunk(&mut self, id: u32, chunk: Bytes) -> Result<(), RpcError> {
        self.producer_mut(id)?.push_chunk(chunk)?;
        self.schedule_if_wanted(id);
        Ok(())
    }

    pub(crate) fn producer_poll_room(&mut self, id: u32, waker: &Waker) -> Poll<Result<usize, RpcError>> {
        match self.producer_mut(id) {
            Ok(p) => p.poll_room(waker),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    pub(crate) fn producer_poll_flush(&mut self, id: u32, waker: &Waker) -> Poll<Result<(), RpcError>> {
        match self.producer_mut(id) {
            Ok(p) => p.poll_flush(waker),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Closes producer `id` (with an error, or not): the end goes out after
    /// what is pending.
    pub(crate) fn producer_close(&mut self, id: u32, error: Option<RpcError>) {
        if let Ok(p) = self.producer_mut(id) {
            p.close(error);
            self.schedule_if_wanted(id);
        }
    }

    pub(crate) fn producer_poll_closed(&mut self, id: u32, waker: &Waker) -> Poll<Result<(), RpcError>> {
        match self.producer_mut(id) {
            Ok(p) => p.poll_closed(waker),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Aborts producer `id`: what is pending goes, the peer is told.
    pub(crate) fn producer_abort(&mut self, id: u32) {
        let Some(StreamEntry { half: StreamHalf::Producer(p), .. }) = self.streams.get_mut(&id) else { return };
        if let Some(dropped) = p.abort(&mut self.effects) {
            self.effects.push(Effect::Drop(dropped));
            self.schedule_if_wanted(id);
        }
    }
}
