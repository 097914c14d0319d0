//! The handle of a stream we produce and the peer consumes: the connection
//! (as a [`Host`]) and the stream's id. Its state lives in the protocol
//! (`produce.rs`); every method locks the connection once (or not at all:
//! a small item without capabilities goes through the producer's lane, and a
//! flush with room reads the published signals), and none is called with it
//! locked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::lane::LaneWriter;
use super::{later_on, no_connection, on_host, Host, Protocol, Signals};
use crate::payload::{self, CapEntry};
use crate::wire::Window;
use crate::RpcError;

/// Our producer side of a stream the peer consumes.
pub(crate) struct RemoteProducer {
    /// `None` for a handle bound to no connection (the protocol's test harness).
    host: Option<Arc<dyn Host>>,
    id: u32,
    bytes: bool,
    signals: Arc<Signals>,
    /// Item bytes queued since a flush last let other tasks run.
    unyielded: AtomicUsize,
}

/// A flush that finds room still yields once after this many item bytes were
/// queued since it last did: the connection's writer, perhaps on the same
/// thread, then sends them while the producer goes on, so the consumer works
/// in parallel instead of waiting for the whole window to fill.
pub(crate) const YIELD_EVERY: usize = 64 << 10;

/// Items up to this size go through the lane, without the lock; a larger
/// one is queued under it (its copy, not the lock, is what it costs).
const STAGE_MAX: usize = 4 << 10;

/// A writing end's own state: its hold on the producer's lane (`lane.rs`),
/// taken on the first write by the one end that writes (an end that finds
/// it taken, a relay after a splice, queues under the lock instead), and the
/// buffer it encodes items into (its own, so a write takes no thread-local
/// out and puts it back).
#[derive(Default)]
pub(crate) struct WriterLane {
    hold: LaneHold,
    scratch: BytesMut,
}

impl WriterLane {
    /// For a write by no lasting end (a pair's core passing one unit on):
    /// it queues under the lock and leaves the lane to the end that writes.
    pub(crate) fn none() -> Self {
        WriterLane { hold: LaneHold { tried: true, lane: None }, scratch: BytesMut::new() }
    }
}

#[derive(Default)]
struct LaneHold {
    tried: bool,
    lane: Option<LaneWriter>,
}

/// A writing end keeps an encoding buffer up to this size; a larger one
/// (after a large item) is dropped rather than held by every idle writer.
const SCRATCH_KEPT: usize = STAGE_MAX;

impl RemoteProducer {
    pub(crate) fn new(host: Arc<dyn Host>, id: u32, bytes: bool, signals: Arc<Signals>) -> Arc<Self> {
        Arc::new(RemoteProducer { host: Some(host), id, bytes, signals, unyielded: AtomicUsize::new(0) })
    }

    /// A handle for stream `id` of no connection: every command fails.
    #[cfg(any(test, feature = "fuzzing"))]
    #[allow(dead_code)] // for the protocol's test harness (proto/pair.rs)
    pub(crate) fn detached(id: u32, bytes: bool, signals: Arc<Signals>) -> Arc<Self> {
        Arc::new(RemoteProducer { host: None, id, bytes, signals, unyielded: AtomicUsize::new(0) })
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn is_bytes(&self) -> bool {
        self.bytes
    }

    /// The consumer's window as last heard (no lock taken).
    pub(crate) fn window(&self) -> Window {
        self.signals.window()
    }

    /// Runs `f` on the locked protocol (never call with it locked already).
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Protocol) -> R) -> Result<R, RpcError> {
        on_host(&self.host, f)
    }

    /// Runs `work` on the locked protocol: now, or, if this thread holds the
    /// lock (a handle ended from a drop under it), once it is released.
    fn later(&self, work: impl FnOnce(&mut Protocol) + Send + 'static) {
        later_on(&self.host, work);
    }

    /// Encodes `item` and queues it for the peer; never waits.
    pub(crate) fn write<T: Serialize>(&self, lane: &mut WriterLane, item: &T) -> Result<(), RpcError> {
        // Encoded before any lock is taken.
        let scratch = &mut lane.scratch;
        scratch.clear();
        let result = match payload::encode_into(scratch, item) {
            Ok(caps) => self.write_item(&mut lane.hold, scratch, caps),
            Err(err) => Err(err),
        };
        if scratch.capacity() > SCRATCH_KEPT {
            *scratch = BytesMut::new();
        }
        result
    }

    /// Queues one item already encoded elsewhere (a relay passing items on
    /// without knowing their type), with the capabilities it refers to.
    pub(crate) fn write_raw(&self, lane: &mut WriterLane, item: &[u8], caps: Vec<CapEntry>) -> Result<(), RpcError> {
        self.write_item(&mut lane.hold, item, caps)
    }

    #[inline]
    fn write_item(&self, hold: &mut LaneHold, item: &[u8], caps: Vec<CapEntry>) -> Result<(), RpcError> {
        // One writer at a time in practice: a plain load and store, no locked add.
        self.unyielded.store(self.unyielded.load(Ordering::Relaxed) + item.len(), Ordering::Relaxed);
        let host = self.host.as_ref().ok_or_else(no_connection)?;
        // An item without capabilities goes through the lane, without the
        // connection's lock; one that holds some (or a stream that ended,
        // whose error the lock tells) goes through the protocol at once.
        if caps.is_empty() && item.len() <= STAGE_MAX && !self.signals.ended.load(Ordering::Acquire) {
            if !hold.tried {
                hold.tried = true;
                hold.lane = self.signals.lane.take();
            }
            if let Some(lane) = &mut hold.lane {
                // This end is the one writer of the staged counters: a plain
                // load and store each, no locked add.
                let (staged, staged_bytes) =
                    (self.signals.staged.load(Ordering::Relaxed), self.signals.staged_bytes.load(Ordering::Relaxed));
                self.signals.staged.store(staged + 1, Ordering::Release);
                self.signals.staged_bytes.store(staged_bytes + item.len() as u64, Ordering::Release);
                if lane.push(item) {
                    // Nobody is coming for the lane yet: the host takes it
                    // in on its next lock, and makes sure one comes soon.
                    host.lane_listed(self.id);
                }
                return Ok(());
            }
        }
        host.push_item(self.id, item, caps)
    }

    /// Queues a copy of `data` on a byte stream (small writes are gathered
    /// into one buffer there: no allocation per write).
    pub(crate) fn write_slice(&self, data: &[u8]) -> Result<(), RpcError> {
        self.host.as_ref().ok_or_else(no_connection)?.push_slice(self.id, data)
    }

    /// Queues a chunk of a byte stream (kept as is: no copy until it is framed).
    pub(crate) fn write_bytes(&self, chunk: Bytes) -> Result<(), RpcError> {
        self.with(|proto| proto.producer_push_chunk(self.id, chunk))?
    }

    /// Room left in the window (in bytes, for a byte stream); pending while none.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, RpcError>> {
        match self.signals.room.load(Ordering::Acquire) {
            0 => {}
            room => return Poll::Ready(Ok(room as usize)),
        }
        self.with(|proto| proto.producer_poll_room(self.id, cx.waker())).unwrap_or_else(|e| Poll::Ready(Err(e)))
    }

    #[inline]
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        // The common case needs no lock: the protocol publishes when there is room.
        // Room for more than what is staged and not yet taken (else the lock
        // takes the staged items in and answers exactly).
        if self.signals.room_beyond_staged() {
            if self.unyielded.load(Ordering::Relaxed) < YIELD_EVERY {
                return Poll::Ready(Ok(()));
            }
            self.unyielded.store(0, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.unyielded.store(0, Ordering::Relaxed);
        self.with(|proto| proto.producer_poll_flush(self.id, cx.waker())).unwrap_or_else(|e| Poll::Ready(Err(e)))
    }

    /// Ends the stream after what was written (with `error`, if any).
    pub(crate) fn close(&self, error: Option<RpcError>) {
        let id = self.id;
        self.later(move |proto| proto.producer_close(id, error));
    }

    /// Ready once the end was sent (or the stream ended otherwise).
    pub(crate) fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.with(|proto| proto.producer_poll_closed(self.id, cx.waker())).unwrap_or_else(|e| Poll::Ready(Err(e)))
    }

    pub(crate) async fn closed(&self) -> Result<(), RpcError> {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    /// Ends the stream at once: what was not sent is dropped.
    pub(crate) fn abort(&self) {
        let id = self.id;
        self.later(move |proto| proto.producer_abort(id));
    }
}

impl Drop for RemoteProducer {
    fn drop(&mut self) {
        if let Some(host) = &self.host {
            host.handle_dropped(self.id);
        }
    }
}
