//! Our consumer side of a stream the peer produces.
//!
//! Data messages append raw batches; reads decode one item at a time (or take
//! bytes for a byte stream); every half window, or when the buffer runs dry,
//! a `StreamWindow` tells the producer how far we have read.
//!
//! Locking: the `on_*` methods run with the connection state locked; every
//! other method takes the consumer's own lock, releases it, and only then
//! talks to the connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;

use super::{Ending, Window};
use crate::conn::ConnShared;
use crate::payload::{self, CapEntry};
use crate::wire::Message;
use crate::RpcError;

/// Our consumer side of a stream the peer produces.
pub(crate) struct RemoteConsumer {
    conn: Weak<ConnShared>,
    id: u32,
    state: Mutex<Consuming>,
    /// Set when the stream ends in a way that drops unread items (abort,
    /// cancel): a reader's cache checks it before every item.
    discarded: AtomicBool,
    /// Half the window: how many cached reads to count before telling the consumer.
    half_window: AtomicU64,
    /// Our limits: windows are capped by them, whoever sets them.
    limits: crate::Limits,
    /// The connection's count of unread stream bytes, and its budget.
    conn_buffered: Arc<AtomicU64>,
    conn_budget: u64,
    max_depth: u32,
    /// Decoded-size budget of one item (`Limits::max_decoded_size`).
    max_decoded: u64,
}

/// Items a reader took from its consumer in one go, so it can decode them
/// without taking the consumer's lock per item.
#[derive(Default)]
pub(crate) struct ReadCache {
    batch: Option<RawBatch>,
    /// Items read from the cache and not yet counted as read by the consumer.
    uncounted: u64,
}

/// One item still encoded, with the capabilities it refers to.
pub(crate) type RawItem = (Bytes, Vec<CapEntry>);

/// One `StreamData` message, read one item at a time.
struct RawBatch {
    bytes: Bytes,
    remaining: u32,
    /// The encoded length of each item left.
    lens: VecDeque<u32>,
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
    /// A byte stream: counts are bytes and batches are raw data.
    bytes_mode: bool,
    /// The first parts of an item too large for one message.
    partial: BytesMut,
    /// Bytes received and not yet taken by a reader (queued batches and
    /// `partial`), also counted in the connection's `stream_buffered`.
    unread_bytes: u64,
    /// Most bytes of items a well-behaved producer may have unread here.
    max_unread_bytes: u64,
    /// The largest item accepted, in bytes.
    max_item: usize,
}

impl Consuming {
    /// What a read sees when it cannot take data: the ending, if unread data
    /// was discarded or nothing is queued after the end; pending (to be
    /// woken) if nothing is queued yet; `None` when a batch is ready.
    fn unreadable<T>(&mut self, cx: &mut Context<'_>) -> Option<Poll<Result<Option<T>, RpcError>>> {
        if let Some(ending) = self.ending.as_ref().filter(|e| e.discards()) {
            return Some(Poll::Ready(ending.for_reader()));
        }
        if !self.batches.is_empty() {
            return None;
        }
        Some(match &self.ending {
            Some(ending) => Poll::Ready(ending.for_reader()),
            None => {
                self.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
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
        let window = window.capped(&conn.config.limits, bytes_mode);
        Arc::new(RemoteConsumer {
            conn: Arc::downgrade(conn),
            id,
            discarded: AtomicBool::new(false),
            half_window: AtomicU64::new(half(window)),
            max_depth,
            max_decoded: conn.config.limits.max_decoded_size,
            limits: conn.config.limits,
            conn_buffered: conn.stream_buffered.clone(),
            conn_budget: conn.config.stream_buffer_budget,
            state: Mutex::new(Consuming {
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
                max_unread_bytes: u64::from(conn.config.limits.max_stream_window_bytes),
                max_item: conn.config.limits.max_frame_size as usize,
            }),
        })
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// `n` received bytes left the queue (read, or thrown away).
    fn release(&self, state: &mut Consuming, n: u64) {
        let n = n.min(state.unread_bytes);
        state.unread_bytes -= n;
        self.conn_buffered.fetch_sub(n, Ordering::Relaxed);
    }

    /// `n` more received bytes are queued: within this stream's byte window
    /// (`others` is what was unread before the item they belong to began;
    /// one item alone may exceed it) and the connection's budget, or a violation.
    fn admit(&self, state: &mut Consuming, n: u64, others: u64, alone: bool) -> Result<(), RpcError> {
        let after = state.unread_bytes + n;
        if !state.bytes_mode && after > state.max_unread_bytes && !(others == 0 && alone) {
            return Err(RpcError::protocol(format!(
                "stream {}: the producer sent past the consumer's byte window ({after} bytes unread, {} allowed)",
                self.id, state.max_unread_bytes
            )));
        }
        let total = self.conn_buffered.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.conn_budget {
            self.conn_buffered.fetch_sub(n, Ordering::Relaxed);
            return Err(RpcError::limit(format!(
                "the peer's streams hold {total} bytes unread, over the connection's budget of {} \
                 (stream_buffer_budget)",
                self.conn_budget
            )));
        }
        state.unread_bytes = after;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Consuming> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn window(&self) -> Window {
        self.lock().window
    }

    pub(crate) fn poll_read<T: DeserializeOwned>(&self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RpcError>> {
        let mut state = self.lock();
        if let Some(done) = state.unreadable(cx) {
            return done;
        }
        let max_depth = self.max_depth;
        let batch = state.batches.front_mut().expect("checked: a batch is queued");
        let before = batch.bytes.len();
        let decoded = decode_next::<T>(batch, max_depth, self.max_decoded);
        let used = (before - batch.bytes.len()) as u64;
        if batch.remaining == 0 {
            state.batches.pop_front();
        }
        self.release(&mut state, used);
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

    /// The next item still encoded, with its capabilities: for a relay that
    /// passes a stream on without knowing its item type.
    pub(crate) fn poll_read_raw(&self, cx: &mut Context<'_>) -> Poll<Result<Option<RawItem>, RpcError>> {
        let mut state = self.lock();
        if let Some(done) = state.unreadable(cx) {
            return done;
        }
        let batch = state.batches.front_mut().expect("checked: a batch is queued");
        let item = take_next(batch);
        if batch.remaining == 0 {
            state.batches.pop_front();
        }
        self.release(&mut state, item.0.len() as u64);
        state.read += 1;
        let report = self.due_report(&mut state);
        drop(state);
        if let Some((read, window)) = report {
            self.send_window(read, window);
        }
        Poll::Ready(Ok(Some(item)))
    }

    /// Reads the next item through `cache`: a whole batch is taken under the
    /// lock, then decoded item by item without it; reads are counted every
    /// half window and when a batch is used up.
    pub(crate) fn poll_read_cached<T: DeserializeOwned>(
        &self,
        cache: &mut ReadCache,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<T>, RpcError>> {
        loop {
            if self.discarded.load(Ordering::Acquire) {
                cache.batch = None;
                return self.poll_read(cx);
            }
            if let Some(batch) = cache.batch.as_mut().filter(|b| b.remaining > 0) {
                let decoded = decode_next::<T>(batch, self.max_depth(), self.max_decoded);
                let used_up = batch.remaining == 0;
                return Poll::Ready(self.after_cached_read(cache, decoded, used_up));
            }
            cache.batch = None;
            match self.poll_batch(cx) {
                Poll::Ready(Ok(batch)) => cache.batch = Some(batch),
                Poll::Ready(Err(ending)) => return Poll::Ready(ending.for_reader()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn after_cached_read<T>(
        &self,
        cache: &mut ReadCache,
        decoded: Result<T, RpcError>,
        used_up: bool,
    ) -> Result<Option<T>, RpcError> {
        let item = match decoded {
            Ok(item) => item,
            Err(err) => {
                cache.batch = None;
                self.cancel(Some(format!("undecodable item: {}", err.message())));
                return Err(err);
            }
        };
        if used_up {
            cache.batch = None;
        }
        cache.uncounted += 1;
        if used_up || cache.uncounted >= self.half_window.load(Ordering::Relaxed) {
            self.count_read(std::mem::take(&mut cache.uncounted));
        }
        Ok(Some(item))
    }

    /// Takes the next whole batch, or says how the stream ended.
    fn poll_batch(&self, cx: &mut Context<'_>) -> Poll<Result<RawBatch, Ending>> {
        let mut state = self.lock();
        if let Some(ending) = state.ending.as_ref().filter(|e| e.discards()) {
            return Poll::Ready(Err(ending.clone()));
        }
        if let Some(batch) = state.batches.pop_front() {
            self.release(&mut state, batch.bytes.len() as u64);
            return Poll::Ready(Ok(batch));
        }
        match &state.ending {
            Some(ending) => Poll::Ready(Err(ending.clone())),
            None => {
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// A reader's end is sent on: what it took into its cache and did not
    /// read goes back to the front of the queue, and its reads are counted.
    pub(crate) fn restore_cache(&self, cache: &mut ReadCache) {
        let batch = cache.batch.take().filter(|b| b.remaining > 0);
        let uncounted = std::mem::take(&mut cache.uncounted);
        let (report, discarded) = {
            let mut state = self.lock();
            let discarded = match batch {
                Some(batch) if !state.ending.as_ref().is_some_and(Ending::discards) => {
                    // Counted again: it is queued here once more.
                    let len = batch.bytes.len() as u64;
                    state.unread_bytes += len;
                    self.conn_buffered.fetch_add(len, Ordering::Relaxed);
                    state.batches.push_front(batch);
                    None
                }
                other => other,
            };
            state.read += uncounted;
            (self.due_report(&mut state), discarded)
        };
        // Its capabilities may lock a connection: dropped with no lock held.
        drop(discarded);
        if let Some((read, window)) = report {
            self.send_window(read, window);
        }
    }

    /// `n` more items were read from a cache.
    fn count_read(&self, n: u64) {
        let report = {
            let mut state = self.lock();
            state.read += n;
            self.due_report(&mut state)
        };
        if let Some((read, window)) = report {
            self.send_window(read, window);
        }
    }

    fn max_depth(&self) -> u32 {
        self.max_depth
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
            let stream = self.id;
            conn.with_state(move |state| state.send_message(&Message::StreamWindow { stream, read, window }));
        }
    }

    pub(crate) fn set_window(&self, window: Window) {
        let (read, window) = {
            let mut state = self.lock();
            state.window = window.capped(&self.limits, state.bytes_mode);
            self.half_window.store(half(state.window), Ordering::Relaxed);
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
            self.discarded.store(true, Ordering::Release);
            let batches = std::mem::take(&mut state.batches);
            state.partial.clear();
            let unread = state.unread_bytes;
            self.release(&mut state, unread);
            if finished {
                return drop((state, batches));
            }
            batches
        };
        drop(dropped);
        if let Some(conn) = self.conn.upgrade() {
            let stream = self.id;
            conn.with_state(move |state| state.end_stream(stream, Some(Message::StreamCancel { stream, reason })));
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
        let others = state.unread_bytes - state.partial.len() as u64;
        self.admit(&mut state, bytes.len() as u64, others, true)?;
        state.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// Reads up to `max` bytes of a byte stream: from one chunk without
    /// copying when it holds enough, else gathered across chunks.
    pub(crate) fn poll_read_bytes(&self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>, RpcError>> {
        let mut state = self.lock();
        if let Some(done) = state.unreadable(cx) {
            return done;
        }
        let data = take_bytes(&mut state.batches, max.max(1));
        self.release(&mut state, data.len() as u64);
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
        (item_caps, item_lens): (Vec<u32>, Vec<u32>),
        caps: &mut Vec<CapEntry>,
    ) -> Result<(), RpcError> {
        let mut state = self.lock();
        let (arriving, partial_len) = (bytes.len() as u64, state.partial.len() as u64);
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
        if state.bytes_mode
            && (bytes.len() != count as usize || !item_caps.is_empty() || !caps.is_empty() || !item_lens.is_empty())
        {
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
        if !state.bytes_mode {
            let total: u64 = item_lens.iter().map(|&len| u64::from(len)).sum();
            if item_lens.len() != count as usize || total != bytes.len() as u64 {
                return Err(RpcError::protocol(format!(
                    "stream {}: {} item lengths totalling {total} bytes for {count} items of {} bytes",
                    self.id,
                    item_lens.len(),
                    bytes.len()
                )));
            }
        }
        state.received = received;
        if state.ending.is_some() || count == 0 {
            // Not kept: the parts it joined are no longer held either.
            self.release(&mut state, partial_len);
            return Ok(());
        }
        let others = state.unread_bytes - partial_len;
        self.admit(&mut state, arriving, others, count == 1)?;
        let caps = std::mem::take(caps);
        let batch = RawBatch {
            bytes,
            remaining: count,
            lens: item_lens.into(),
            item_caps: item_caps.into(),
            caps: caps.into(),
        };
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
        if discard {
            self.discarded.store(true, Ordering::Release);
            state.partial.clear();
            let unread = state.unread_bytes;
            self.release(&mut state, unread);
        }
        Box::new(if discard { std::mem::take(&mut state.batches) } else { VecDeque::new() })
    }
}

impl Drop for RemoteConsumer {
    fn drop(&mut self) {
        // What was never read no longer counts against the connection.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.conn_buffered.fetch_sub(state.unread_bytes, Ordering::Relaxed);
    }
}

/// Half a window (at least 1): reads counted before the producer is told.
fn half(window: Window) -> u64 {
    (window.sane().capacity as u64).div_ceil(2)
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

/// The next item of `batch`, still encoded, with its capabilities.
fn take_next(batch: &mut RawBatch) -> RawItem {
    let cap_count = batch.item_caps.pop_front().unwrap_or(0) as usize;
    let caps: Vec<CapEntry> = batch.caps.drain(..cap_count.min(batch.caps.len())).collect();
    batch.remaining -= 1;
    // `on_data` checked that the lengths cover the bytes exactly.
    let len = batch.lens.pop_front().unwrap_or(0) as usize;
    (batch.bytes.split_to(len.min(batch.bytes.len())), caps)
}

/// Decodes the next item of `batch` and advances past it.
fn decode_next<T: DeserializeOwned>(batch: &mut RawBatch, max_depth: u32, max_decoded: u64) -> Result<T, RpcError> {
    let cap_count = batch.item_caps.pop_front().unwrap_or(0) as usize;
    let caps: Vec<CapEntry> = batch.caps.drain(..cap_count.min(batch.caps.len())).collect();
    batch.remaining -= 1;
    let len = (batch.lens.pop_front().unwrap_or(0) as usize).min(batch.bytes.len());
    let decoded = payload::decode_from::<T>(&batch.bytes[..len], caps, max_depth, max_decoded);
    bytes::Buf::advance(&mut batch.bytes, len);
    let (item, used) = decoded?;
    if used != len {
        return Err(RpcError::serialization(format!("an item of {len} bytes decoded from only {used} of them")));
    }
    Ok(item)
}
