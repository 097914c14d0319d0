//! The receive state of a stream the peer produces and we consume.
//!
//! Data messages append raw batches (checked against the window we granted,
//! the stream's byte window and the connection's buffer budget); reads take
//! one item, a whole batch, or bytes, still encoded: the reader decodes them
//! after the lock is released. Every half window, or when the buffer runs
//! dry, a `StreamWindow` tells the producer how far we have read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::Ending;
use super::{Effect, Protocol};
use crate::payload::CapEntry;
use crate::wire::Message;
use crate::wire::Window;
use crate::{Limits, RpcError};

/// One item still encoded, with the capabilities it refers to.
pub(crate) type RawItem = (Bytes, Vec<CapEntry>);

/// One `StreamData` message, read one item at a time.
pub(crate) struct RawBatch {
    pub(crate) bytes: Bytes,
    pub(crate) remaining: u32,
    /// The encoded length of each item left.
    pub(crate) lens: VecDeque<u32>,
    /// Capabilities per item (empty when none of the items holds any).
    pub(crate) item_caps: VecDeque<u32>,
    pub(crate) caps: VecDeque<CapEntry>,
}

impl RawBatch {
    /// The next item, still encoded, with its capabilities.
    pub(crate) fn take_next(&mut self) -> RawItem {
        let cap_count = self.item_caps.pop_front().unwrap_or(0) as usize;
        let caps: Vec<CapEntry> =
            if cap_count == 0 { Vec::new() } else { self.caps.drain(..cap_count.min(self.caps.len())).collect() };
        self.remaining -= 1;
        // `on_data` checked that the lengths cover the bytes exactly.
        let len = self.lens.pop_front().unwrap_or(0) as usize;
        (self.bytes.split_to(len.min(self.bytes.len())), caps)
    }
}

/// What a stream's handle reads without the lock: shared by the half's
/// state and its handle (plain atomics, no lock).
#[derive(Default)]
pub(crate) struct Signals {
    /// Set when the stream ends in a way that drops unread items (abort,
    /// cancel): a reader's cache checks it before every item.
    pub(crate) discarded: AtomicBool,
    /// Half the window: how many cached reads to count before telling the producer.
    pub(crate) half_window: AtomicU64,
    /// The current window, packed (`capacity << 32 | batch`).
    window: AtomicU64,
    /// A producer's room: how many more units (items, or bytes) its writer
    /// may queue now; 0 when the window or byte bound is full or the stream
    /// ended. `flush` and `poll_room` return at once when it is not 0,
    /// without taking the connection's lock.
    pub(crate) room: AtomicU64,
    /// Items a producer's writer put in its lane without the lock, and
    /// how many of them the protocol has taken in since: `flush` subtracts
    /// the difference from `room`. Two counters, each written by one side
    /// only (the writer; the protocol under the lock), so neither needs a
    /// locked read-modify-write per item.
    pub(crate) staged: AtomicU64,
    pub(crate) taken: AtomicU64,
    /// The same in bytes, against `room_bytes`: what the producer may still
    /// queue before its local byte bound (`max_stream_window_bytes`) is full.
    pub(crate) staged_bytes: AtomicU64,
    pub(crate) taken_bytes: AtomicU64,
    pub(crate) room_bytes: AtomicU64,
    /// The producer can take no more writes (ended, or closed by its
    /// writer): a write takes the lock to learn why instead of staging.
    pub(crate) ended: AtomicBool,
    /// A producer's lane, until the end that writes takes it.
    pub(crate) lane: super::TakeOnce<super::LaneWriter>,
}

impl Signals {
    pub(crate) fn new(window: Window) -> Arc<Self> {
        let signals = Arc::new(Signals::default());
        signals.set_window(window);
        signals
    }

    /// Whether a writer may go on at once: room, in items and in bytes,
    /// beyond what it staged that the protocol has not taken in yet.
    #[inline]
    pub(crate) fn room_beyond_staged(&self) -> bool {
        // `taken` first: it never passes what `staged` held before it.
        let taken = self.taken.load(Ordering::Acquire);
        let untaken = self.staged.load(Ordering::Acquire).saturating_sub(taken);
        if self.room.load(Ordering::Acquire) <= untaken {
            return false;
        }
        let taken_bytes = self.taken_bytes.load(Ordering::Acquire);
        let untaken_bytes = self.staged_bytes.load(Ordering::Acquire).saturating_sub(taken_bytes);
        self.room_bytes.load(Ordering::Acquire) > untaken_bytes
    }

    pub(crate) fn window(&self) -> Window {
        let packed = self.window.load(Ordering::Relaxed);
        Window { capacity: (packed >> 32) as u32, batch: packed as u32 }
    }

    pub(crate) fn set_window(&self, window: Window) {
        self.window.store(u64::from(window.capacity) << 32 | u64::from(window.batch), Ordering::Relaxed);
        self.half_window.store(half(window), Ordering::Relaxed);
    }
}

/// Our consumer half of one stream.
pub(crate) struct Consuming {
    batches: VecDeque<RawBatch>,
    received: u64,
    read: u64,
    /// The most the producer may have sent: read + capacity, as last told.
    granted: u64,
    /// `read` as of the last window message.
    reported: u64,
    pub(crate) window: Window,
    pub(crate) ending: Option<Ending>,
    reader: Option<Waker>,
    /// A byte stream: counts are bytes and batches are raw data.
    pub(crate) bytes_mode: bool,
    /// The first parts of an item too large for one message.
    partial: BytesMut,
    /// Bytes received and not yet taken by a reader (queued batches and
    /// `partial`), also counted in the protocol's `stream_buffered`.
    unread_bytes: u64,
    /// Most bytes of items a well-behaved producer may have unread here.
    max_unread_bytes: u64,
    /// The largest item accepted, in bytes.
    max_item: usize,
    limits: Limits,
    pub(crate) signals: Arc<Signals>,
}

impl Consuming {
    pub(crate) fn new(window: Window, bytes_mode: bool, limits: &Limits) -> Self {
        let window = window.capped(limits, bytes_mode);
        let signals = Signals::new(window);
        Consuming {
            batches: VecDeque::new(),
            received: 0,
            read: 0,
            granted: window.capacity as u64,
            reported: 0,
            window,
            ending: None,
            reader: None,
            bytes_mode,
            partial: BytesMut::new(),
            unread_bytes: 0,
            max_unread_bytes: u64::from(limits.max_stream_window_bytes),
            max_item: limits.max_frame_size as usize,
            limits: *limits,
            signals,
        }
    }

    /// What a read sees when it cannot take data: the ending, if unread data
    /// was discarded or nothing is queued after the end; pending (to be
    /// woken) if nothing is queued yet; `None` when a batch is ready.
    fn unreadable<T>(&mut self, waker: &Waker) -> Option<Poll<Result<Option<T>, RpcError>>> {
        if let Some(ending) = self.ending.as_ref().filter(|e| e.discards()) {
            return Some(Poll::Ready(ending.for_reader()));
        }
        if !self.batches.is_empty() {
            return None;
        }
        Some(match &self.ending {
            Some(ending) => Poll::Ready(ending.for_reader()),
            None => {
                self.reader = Some(waker.clone());
                Poll::Pending
            }
        })
    }

    /// Whether to tell the producer how far we read: after half a window, or
    /// when the buffer runs dry (so a small window never stalls).
    fn due_report(&mut self) -> Option<(u64, Window)> {
        let unreported = self.read - self.reported;
        let half = (self.window.capacity as u64).div_ceil(2);
        if unreported == 0 || (unreported < half && !self.batches.is_empty()) || self.ending.is_some() {
            return None;
        }
        self.reported = self.read;
        self.granted = self.granted.max(self.read + self.window.capacity as u64);
        Some((self.read, self.window))
    }

    /// Throws away what is unread (abort, cancel); returns it for the owner
    /// to drop, and the bytes it held.
    fn discard(&mut self) -> (VecDeque<RawBatch>, u64) {
        self.signals.discarded.store(true, Ordering::Release);
        self.partial.clear();
        (std::mem::take(&mut self.batches), std::mem::take(&mut self.unread_bytes))
    }
}

/// Half a window (at least 1): reads counted before the producer is told.
fn half(window: Window) -> u64 {
    (window.sane().capacity as u64).div_ceil(2)
}

impl Protocol {
    /// `n` received bytes of a stream left its queue (read, or thrown away).
    fn release_buffered(&mut self, c: &mut Consuming, n: u64) {
        let n = n.min(c.unread_bytes);
        c.unread_bytes -= n;
        self.stream_buffered -= n.min(self.stream_buffered);
    }

    /// `n` more received bytes are queued: within the stream's byte window
    /// (`others` is what was unread before the item they belong to began;
    /// one item alone may exceed it) and the connection's budget, or a violation.
    fn admit(&mut self, id: u32, c: &mut Consuming, n: u64, others: u64, alone: bool) -> Result<(), RpcError> {
        let after = c.unread_bytes + n;
        if !c.bytes_mode && after > c.max_unread_bytes && !(others == 0 && alone) {
            return Err(RpcError::protocol(format!(
                "stream {id}: the producer sent past the consumer's byte window ({after} bytes unread, {} allowed)",
                c.max_unread_bytes
            )));
        }
        let total = self.stream_buffered + n;
        if total > self.stream_buffer_budget {
            return Err(RpcError::limit(format!(
                "the peer's streams hold {total} bytes unread, over the connection's budget of {} \
                 (stream_buffer_budget)",
                self.stream_buffer_budget
            )));
        }
        self.stream_buffered = total;
        c.unread_bytes = after;
        Ok(())
    }

    /// Sends the window report `due_report` asked for.
    fn report(&mut self, id: u32, report: Option<(u64, Window)>) {
        if let Some((read, window)) = report {
            self.send_message(&Message::StreamWindow { stream: id, read, window });
        }
    }

    /// The next item of consumer `id`, still encoded.
    pub(crate) fn consumer_poll_item(&mut self, id: u32, waker: &Waker) -> Poll<Result<Option<RawItem>, RpcError>> {
        self.with_consumer(id, |proto, c| {
            if let Some(done) = c.unreadable(waker) {
                return done;
            }
            let batch = c.batches.front_mut().expect("checked: a batch is queued");
            let item = batch.take_next();
            if batch.remaining == 0 {
                c.batches.pop_front();
            }
            proto.release_buffered(c, item.0.len() as u64);
            c.read += 1;
            let report = c.due_report();
            proto.report(id, report);
            Poll::Ready(Ok(Some(item)))
        })
        .unwrap_or_else(|err| Poll::Ready(Err(err)))
    }

    /// The next whole batch of consumer `id` (its reads are counted later,
    /// with [`Self::consumer_count_read`]), or how the stream ended.
    pub(crate) fn consumer_poll_batch(&mut self, id: u32, waker: &Waker) -> Poll<Result<RawBatch, Ending>> {
        let polled = self.with_consumer(id, |proto, c| {
            if let Some(ending) = c.ending.as_ref().filter(|e| e.discards()) {
                return Poll::Ready(Err(ending.clone()));
            }
            if let Some(batch) = c.batches.pop_front() {
                proto.release_buffered(c, batch.bytes.len() as u64);
                return Poll::Ready(Ok(batch));
            }
            match &c.ending {
                Some(ending) => Poll::Ready(Err(ending.clone())),
                None => {
                    c.reader = Some(waker.clone());
                    Poll::Pending
                }
            }
        });
        polled.unwrap_or_else(|err| Poll::Ready(Err(Ending::Disconnected(err))))
    }

    /// `n` more items of consumer `id` were read from a reader's cache.
    /// Returns whether a window report went out (the reader then lets the
    /// connection's writer run before it reads on).
    pub(crate) fn consumer_count_read(&mut self, id: u32, n: u64) -> bool {
        let reported = self.with_consumer(id, |proto, c| {
            c.read += n;
            let report = c.due_report();
            proto.report(id, report);
            report.is_some()
        });
        reported.unwrap_or(false)
    }

    /// Reads up to `max` bytes of byte stream `id`: from one chunk without
    /// copying when it holds enough, else gathered across chunks.
    pub(crate) fn consumer_poll_bytes(
        &mut self,
        id: u32,
        waker: &Waker,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, RpcError>> {
        self.with_consumer(id, |proto, c| {
            if let Some(done) = c.unreadable(waker) {
                return done;
            }
            let data = take_bytes(&mut c.batches, max.max(1));
            proto.release_buffered(c, data.len() as u64);
            c.read += data.len() as u64;
            let report = c.due_report();
            proto.report(id, report);
            Poll::Ready(Ok(Some(data)))
        })
        .unwrap_or_else(|err| Poll::Ready(Err(err)))
    }

    /// The consumer sets a new window for stream `id` (told to the producer at once).
    pub(crate) fn consumer_set_window(&mut self, id: u32, window: Window) {
        let _ = self.with_consumer(id, |proto, c| {
            c.window = window.capped(&c.limits, c.bytes_mode);
            c.signals.set_window(c.window);
            c.reported = c.read;
            c.granted = c.granted.max(c.read + c.window.capacity as u64);
            let (read, window) = (c.read, c.window);
            if c.ending.is_none() {
                proto.report(id, Some((read, window)));
            }
        });
    }

    /// The consumer cancels stream `id`: unread data goes, the producer is told.
    pub(crate) fn consumer_cancel(&mut self, id: u32, reason: Option<String>) {
        let ended = self.with_consumer(id, |proto, c| {
            if c.ending.as_ref().is_some_and(|e| !matches!(e, Ending::Closed | Ending::Failed(_))) {
                return None;
            }
            let finished = c.ending.is_some();
            c.ending = Some(Ending::Cancelled(reason.clone()));
            let (batches, unread) = c.discard();
            proto.stream_buffered -= unread.min(proto.stream_buffered);
            proto.defer_boxed(Box::new(batches));
            Some(finished)
        });
        if let Ok(Some(false)) = ended {
            self.end_stream(id, Some(Message::StreamCancel { stream: id, reason }));
        }
    }

    /// A part of a large item arrived for consumer `id`.
    pub(super) fn consumer_on_part(&mut self, id: u32, c: &mut Consuming, bytes: &[u8]) -> Result<(), RpcError> {
        if c.bytes_mode {
            return Err(RpcError::protocol(format!("stream {id}: item parts on a byte stream")));
        }
        if c.partial.len() + bytes.len() > c.max_item {
            return Err(RpcError::limit(format!("stream {id}: an item larger than the limit of {} bytes", c.max_item)));
        }
        let others = c.unread_bytes - c.partial.len() as u64;
        self.admit(id, c, bytes.len() as u64, others, true)?;
        c.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// A data message arrived for consumer `id`. `caps` is taken only when
    /// the batch is kept: the caller drops what is left once unlocked.
    pub(super) fn consumer_on_data(
        &mut self,
        id: u32,
        c: &mut Consuming,
        count: u32,
        bytes: Bytes,
        (item_caps, item_lens): (Vec<u32>, Vec<u32>),
        caps: &mut Vec<CapEntry>,
    ) -> Result<(), RpcError> {
        let (arriving, partial_len) = (bytes.len() as u64, c.partial.len() as u64);
        let received = c.received + count as u64;
        if received > c.granted {
            return Err(RpcError::protocol(format!(
                "stream {id}: the producer sent past the consumer's window ({received} items, {} allowed)",
                c.granted
            )));
        }
        if !item_caps.is_empty() && item_caps.len() != count as usize {
            return Err(RpcError::protocol(format!("stream {id}: capability counts do not match items")));
        }
        if c.bytes_mode
            && (bytes.len() != count as usize || !item_caps.is_empty() || !caps.is_empty() || !item_lens.is_empty())
        {
            return Err(RpcError::protocol(format!(
                "stream {id}: byte-stream data announces {count} bytes but carries {} (and no capabilities)",
                bytes.len()
            )));
        }
        let bytes = if c.partial.is_empty() {
            bytes
        } else if count == 0 {
            return Err(RpcError::protocol(format!("stream {id}: item parts with no item to end them")));
        } else {
            // The first item began in earlier parts.
            let mut whole = std::mem::take(&mut c.partial);
            whole.extend_from_slice(&bytes);
            whole.freeze()
        };
        if !c.bytes_mode {
            let total: u64 = item_lens.iter().map(|&len| u64::from(len)).sum();
            if item_lens.len() != count as usize || total != bytes.len() as u64 {
                return Err(RpcError::protocol(format!(
                    "stream {id}: {} item lengths totalling {total} bytes for {count} items of {} bytes",
                    item_lens.len(),
                    bytes.len()
                )));
            }
        }
        c.received = received;
        if c.ending.is_some() || count == 0 {
            // Not kept: the parts it joined are no longer held either.
            self.release_buffered(c, partial_len);
            return Ok(());
        }
        let others = c.unread_bytes - partial_len;
        self.admit(id, c, arriving, others, count == 1)?;
        let caps = std::mem::take(caps);
        let batch = RawBatch {
            bytes,
            remaining: count,
            lens: item_lens.into(),
            item_caps: item_caps.into(),
            caps: caps.into(),
        };
        c.batches.push_back(batch);
        if let Some(waker) = c.reader.take() {
            self.effects.push(Effect::Wake(waker));
        }
        Ok(())
    }

    /// The producer ended stream `id` (or the connection did).
    pub(super) fn consumer_on_end(&mut self, c: &mut Consuming, ending: Ending) {
        if c.ending.is_none() {
            c.ending = Some(ending);
        }
        if let Some(waker) = c.reader.take() {
            self.effects.push(Effect::Wake(waker));
        }
        if c.ending.as_ref().is_some_and(Ending::discards) {
            let (batches, unread) = c.discard();
            self.stream_buffered -= unread.min(self.stream_buffered);
            self.defer_boxed(Box::new(batches));
        }
    }

    /// Consumer `id`'s state is dropped: what it held unread no longer counts.
    pub(super) fn consumer_forget(&mut self, c: &mut Consuming) {
        let unread = std::mem::take(&mut c.unread_bytes);
        self.stream_buffered -= unread.min(self.stream_buffered);
        if !c.batches.is_empty() {
            self.defer_boxed(Box::new(std::mem::take(&mut c.batches)));
        }
    }
}

/// A received chunk at least this large is read on its own, without a copy,
/// rather than gathered with the next ones: bulk data arrives in 64 KiB
/// messages, and copying them together into one large read cost more than
/// the extra reads.
const ZERO_COPY_READ: usize = 16 << 10;

/// Takes up to `max` bytes off the front of `batches`: a slice of the front
/// chunk when it holds enough or is large, else small chunks gathered.
fn take_bytes(batches: &mut VecDeque<RawBatch>, max: usize) -> Bytes {
    let single = batches.len() == 1;
    let front = &mut batches.front_mut().expect("checked non-empty").bytes;
    if front.len() >= max || single || front.len() >= ZERO_COPY_READ {
        let take = max.min(front.len());
        let data = front.split_to(take);
        if front.is_empty() {
            batches.pop_front();
        }
        return data;
    }
    // Sized by what is buffered, never by `max` alone: a peer chooses `max`.
    let mut want = 0;
    for batch in batches.iter() {
        want += batch.bytes.len();
        if want >= max {
            break;
        }
    }
    let mut gathered = BytesMut::with_capacity(want.min(max));
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
