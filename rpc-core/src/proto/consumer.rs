//! The handle of a stream the peer produces and we consume: the connection
//! (as a [`Host`]) and the stream's id. Its state lives in the protocol
//! (`consume.rs`);
//! a read takes an item (or a whole batch, into the reader's cache) under the
//! lock and decodes it after releasing it, so user `Deserialize` code and
//! the capabilities an item holds never run with the connection locked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::{later_on, on_host, Host, Protocol, RawBatch, RawItem, Signals};
use crate::payload::{self, CapEntry};
use crate::wire::Window;
use crate::RpcError;

/// Our consumer side of a stream the peer produces.
pub(crate) struct RemoteConsumer {
    /// `None` for a handle bound to no connection (the protocol's test harness).
    host: Option<Arc<dyn Host>>,
    id: u32,
    bytes: bool,
    max_depth: u32,
    /// Decoded-size budget of one item (`Limits::max_decoded_size`).
    max_decoded: u64,
    signals: Arc<Signals>,
}

/// Items a reader took from its consumer in one go, so it can decode them
/// without taking the connection's lock per item.
#[derive(Default)]
pub(crate) struct ReadCache {
    batch: Option<RawBatch>,
    /// Items read from the cache and not yet counted as read by the consumer.
    uncounted: u64,
    /// A window report just went out: the next read yields once, so the
    /// connection's writer (on this thread, perhaps) sends it before this
    /// reader drains the rest of its batches.
    yield_next: bool,
}

impl RemoteConsumer {
    pub(crate) fn new(host: Arc<dyn Host>, id: u32, bytes: bool, max_depth: u32, signals: Arc<Signals>) -> Arc<Self> {
        let max_decoded = host.max_decoded();
        Arc::new(RemoteConsumer { host: Some(host), id, bytes, max_depth, max_decoded, signals })
    }

    /// A handle for stream `id` of no connection: every read fails.
    #[cfg(any(test, feature = "fuzzing"))]
    #[allow(dead_code)] // for the protocol's test harness (proto/pair.rs)
    pub(crate) fn detached(id: u32, bytes: bool, max_depth: u32, signals: Arc<Signals>) -> Arc<Self> {
        let max_decoded = crate::Limits::default().max_decoded_size;
        Arc::new(RemoteConsumer { host: None, id, bytes, max_depth, max_decoded, signals })
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn is_bytes(&self) -> bool {
        self.bytes
    }

    /// The window as last set (no lock taken).
    pub(crate) fn window(&self) -> Window {
        self.signals.window()
    }

    /// Runs `f` on the locked protocol (never call with it locked already).
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut Protocol) -> R) -> Result<R, RpcError> {
        on_host(&self.host, f)
    }

    /// Runs `work` on the locked protocol: now, or, if this thread holds the
    /// lock (a handle ended from a drop under it), once it is released.
    fn later(&self, work: impl FnOnce(&mut Protocol) + Send + 'static) {
        later_on(&self.host, work);
    }

    /// The next item, decoded.
    pub(crate) fn poll_read<T: DeserializeOwned>(&self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RpcError>> {
        let (bytes, caps) = match self.poll_read_raw(cx) {
            Poll::Ready(Ok(Some(item))) => item,
            Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(self.decode(&bytes, caps).map(Some))
    }

    /// The next item still encoded, with its capabilities: for a relay that
    /// passes a stream on without knowing its item type.
    pub(crate) fn poll_read_raw(&self, cx: &mut Context<'_>) -> Poll<Result<Option<RawItem>, RpcError>> {
        self.with(|proto| proto.consumer_poll_item(self.id, cx.waker())).unwrap_or_else(|e| Poll::Ready(Err(e)))
    }

    /// Decodes one item; an undecodable one cancels the stream.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8], caps: Vec<CapEntry>) -> Result<T, RpcError> {
        let len = bytes.len();
        let decoded =
            payload::decode_from::<T>(bytes, &caps, self.max_depth, self.max_decoded).and_then(|(item, used)| {
                if used == len {
                    Ok(item)
                } else {
                    Err(RpcError::serialization(format!("an item of {len} bytes decoded from only {used} of them")))
                }
            });
        if let Err(err) = &decoded {
            self.cancel(Some(format!("undecodable item: {}", err.message())));
        }
        decoded
    }

    /// Reads the next item through `cache`: a whole batch is taken under the
    /// lock, then decoded item by item without it; reads are counted every
    /// half window and when a batch is used up.
    pub(crate) fn poll_read_cached<T: DeserializeOwned>(
        &self,
        cache: &mut ReadCache,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<T>, RpcError>> {
        if std::mem::take(&mut cache.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if self.signals.discarded.load(Ordering::Acquire) {
                cache.batch = None;
                return self.poll_read(cx);
            }
            if let Some(batch) = cache.batch.as_mut().filter(|b| b.remaining > 0) {
                let decoded = decode_next::<T>(batch, self.max_depth, self.max_decoded);
                let used_up = batch.remaining == 0;
                return Poll::Ready(self.after_cached_read(cache, decoded, used_up));
            }
            cache.batch = None;
            let polled = self.with(|proto| proto.consumer_poll_batch(self.id, cx.waker()));
            match polled {
                Ok(Poll::Ready(Ok(batch))) => cache.batch = Some(batch),
                Ok(Poll::Ready(Err(ending))) => return Poll::Ready(ending.for_reader()),
                Ok(Poll::Pending) => return Poll::Pending,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    #[inline]
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
        if used_up || cache.uncounted >= self.signals.half_window.load(Ordering::Relaxed) {
            let n = std::mem::take(&mut cache.uncounted);
            cache.yield_next = self.with(|proto| proto.consumer_count_read(self.id, n)).unwrap_or(false);
        }
        Ok(Some(item))
    }

    /// Reads up to `max` bytes of a byte stream.
    pub(crate) fn poll_read_bytes(&self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>, RpcError>> {
        self.with(|proto| proto.consumer_poll_bytes(self.id, cx.waker(), max)).unwrap_or_else(|e| Poll::Ready(Err(e)))
    }

    /// Sets the window (told to the producer at once).
    pub(crate) fn set_window(&self, window: Window) {
        let id = self.id;
        self.later(move |proto| proto.consumer_set_window(id, window));
    }

    /// Stops reading: unread data goes and the producer is told.
    pub(crate) fn cancel(&self, reason: Option<String>) {
        let id = self.id;
        self.later(move |proto| proto.consumer_cancel(id, reason));
    }
}

impl Drop for RemoteConsumer {
    fn drop(&mut self) {
        if let Some(host) = &self.host {
            host.handle_dropped(self.id);
        }
    }
}

/// Decodes the next item of `batch` in place and advances past it (no
/// `Bytes` split per item: a cached reader decodes a batch straight through).
fn decode_next<T: DeserializeOwned>(batch: &mut RawBatch, max_depth: u32, max_decoded: u64) -> Result<T, RpcError> {
    let cap_count = batch.item_caps.pop_front().unwrap_or(0) as usize;
    batch.remaining -= 1;
    // The protocol checked that the lengths cover the bytes exactly.
    let len = (batch.lens.pop_front().unwrap_or(0) as usize).min(batch.bytes.len());
    let item = &batch.bytes[..len];
    // Most items hold no capability: no table to build (or drop) for them.
    let decoded = if cap_count == 0 {
        payload::decode_from::<T>(item, &[], max_depth, max_decoded)
    } else {
        let caps: Vec<CapEntry> = batch.caps.drain(..cap_count.min(batch.caps.len())).collect();
        payload::decode_from::<T>(item, &caps, max_depth, max_decoded)
    };
    bytes::Buf::advance(&mut batch.bytes, len);
    let (item, used) = decoded?;
    if used != len {
        return Err(RpcError::serialization(format!("an item of {len} bytes decoded from only {used} of them")));
    }
    Ok(item)
}
