//! Payloads: serialized values plus the capabilities they carry.
//!
//! A value is encoded with postcard. When a capability (a proxy, later a
//! stream end) is serialized, it is not turned into bytes: it is pushed onto
//! the payload's capability table and only its index is written. Decoding does
//! the reverse. The table is handed to serde through a thread-local context set
//! around each encode and decode, which is why [`crate::Client`] can implement
//! `Serialize` without knowing which connection it is being sent on.

use std::any::Any;
use std::cell::Cell;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cap::Client;
use crate::proto::{Protocol, Shell};
use crate::wire::encode::to_bytes_mut;
use crate::wire::{depth, CapDescriptor};
use crate::RpcError;

/// Default nesting limit for payloads decoded without a connection's limit.
pub(crate) const DEFAULT_MAX_DEPTH: u32 = 64;
/// Decoded-size limit for payloads that never crossed a connection (made in
/// this process, so trusted): none.
pub(crate) const LOCAL_MAX_DECODED: u64 = u64::MAX;

/// One entry of a payload's capability table.
#[derive(Clone, Debug)]
pub(crate) enum CapEntry {
    /// An object reference.
    Object(Client),
    /// A sequence end (taken out once, when decoded or sent).
    Stream(Arc<StreamSlot>),
}

/// A stream end on its way somewhere.
pub(crate) trait StreamEnd: Send + 'static {
    /// Binds the end to `conn` (called with its state locked); returns how
    /// the peer names it.
    fn bind(self: Box<Self>, state: &mut Protocol, conn: &dyn Shell) -> Result<CapDescriptor, RpcError>;
    /// For taking the typed end back out.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    /// The call carrying this end failed with `err`: end the stream with it
    /// (a writer closes with the error, so its reader reads `err`). By
    /// default the end is dropped: a reader cancels, a writer aborts.
    fn fail(self: Box<Self>, err: &RpcError) {
        let _ = err;
    }
}

/// The call carrying `caps` failed with `err`: every stream end among them
/// ends with that error rather than a bare abort. Not with a connection locked.
pub(crate) fn fail_streams(caps: Vec<CapEntry>, err: &RpcError) {
    for entry in caps {
        if let CapEntry::Stream(slot) = entry {
            if let Some(end) = slot.take() {
                end.fail(err);
            }
        }
    }
}

/// A capability-table entry holding a stream end, taken at most once.
pub(crate) struct StreamSlot(Mutex<Option<Box<dyn StreamEnd>>>);

impl StreamSlot {
    pub(crate) fn new(end: Box<dyn StreamEnd>) -> Arc<StreamSlot> {
        Arc::new(StreamSlot(Mutex::new(Some(end))))
    }

    pub(crate) fn take(&self) -> Option<Box<dyn StreamEnd>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSlot")
    }
}

/// A serialized value together with its capability table.
///
/// Payloads are what calls carry as arguments and results: the arguments
/// tuple of a call, or its result, encoded with postcard, plus the
/// capabilities (proxies, sequences, byte streams) found inside, which travel
/// beside the bytes. They are produced and consumed by the code
/// `#[eventual]` generates and never need to be built by hand; the type is
/// public because generated code names it.
///
/// A payload must fit in one frame: one larger than the receiver's
/// [`Limits::max_frame_size`](crate::Limits::max_frame_size) is not sent,
/// and the call fails alone with
/// [`ErrorKind::LimitExceeded`](crate::ErrorKind::LimitExceeded). Its
/// decoded size and nesting depth are bounded by the receiver's
/// [`Limits::max_decoded_size`](crate::Limits::max_decoded_size) and
/// [`Limits::max_depth`](crate::Limits::max_depth).
///
/// # Examples
///
/// The empty payload (what a call with no arguments carries, in effect):
///
/// ```
/// let empty = rpc_core::Payload::default();
/// assert!(format!("{empty:?}").starts_with("Payload"));
/// ```
#[derive(Debug, Default)]
pub struct Payload {
    pub(crate) bytes: Bytes,
    pub(crate) caps: Vec<CapEntry>,
    pub(crate) max_depth: u32,
    /// Decoded-size budget (see [`crate::Limits::max_decoded_size`]).
    pub(crate) max_decoded: u64,
}

thread_local! {
    /// The capability table of the payload this thread is encoding, if any:
    /// a local of the encoding function, set by [`encoding_into`] for as long
    /// as the value serializes. Plain pointers (no `RefCell<Option<Vec>>`), so
    /// that setting it costs a stream item a few instructions, not a hundred.
    static ENCODING: Cell<*mut Vec<CapEntry>> = const { Cell::new(std::ptr::null_mut()) };
    /// The same for the payload being decoded ([`decoding_from`]).
    static DECODING: Cell<*const [CapEntry]> = const { Cell::new(std::ptr::slice_from_raw_parts(std::ptr::null(), 0)) };
}

/// Payloads up to this size are copied out of the scratch buffer.
const SMALL_PAYLOAD: usize = 4096;

/// A scratch buffer grown past this is not kept for the next encoding.
const SCRATCH_KEPT: usize = 64 << 10;

thread_local! {
    /// Where payloads and stream items are encoded first (user `Serialize`
    /// code never runs with a connection locked); keeps its capacity.
    static SCRATCH: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's scratch buffer, empty. It is taken out
/// meanwhile, so an encoding nested in `f` (an effect of a lock `f` takes,
/// a payload inside a value) gets a buffer of its own.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut BytesMut) -> R) -> R {
    let mut scratch = SCRATCH.take().unwrap_or_default();
    scratch.clear();
    let result = f(&mut scratch);
    if scratch.capacity() <= SCRATCH_KEPT {
        SCRATCH.set(Some(scratch));
    }
    result
}

/// Runs `serialize` with `table` as this thread's encoding table; the outer
/// one (a payload whose encoding encodes another) comes back afterwards, on
/// unwind too.
fn encoding_into<R>(table: &mut Vec<CapEntry>, serialize: impl FnOnce() -> R) -> R {
    struct Restore(*mut Vec<CapEntry>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENCODING.set(self.0);
        }
    }
    let _restore = Restore(ENCODING.replace(table));
    serialize()
}

/// Runs `deserialize` with `table` as this thread's decoding table.
fn decoding_from<R>(table: &[CapEntry], deserialize: impl FnOnce() -> R) -> R {
    struct Restore(*const [CapEntry]);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODING.set(self.0);
        }
    }
    let _restore = Restore(DECODING.replace(table));
    deserialize()
}

impl Payload {
    /// Serializes `value`, collecting the capabilities it holds.
    pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, RpcError> {
        Payload::encode_then(value, |mut payload, encoded| {
            payload.bytes = take_encoded(encoded);
            payload
        })
    }

    /// Serializes `value` into this thread's scratch buffer and hands `then`
    /// the payload without its bytes (its capabilities) and the buffer with
    /// them: a caller that copies them out at once (a call over a
    /// connection) needs no buffer of its own; others take it with
    /// [`take_encoded`].
    pub(crate) fn encode_then<T: Serialize + ?Sized, R>(
        value: &T,
        then: impl FnOnce(Payload, &mut BytesMut) -> R,
    ) -> Result<R, RpcError> {
        let mut caps = Vec::new();
        with_scratch(|scratch| {
            encoding_into(&mut caps, || to_bytes_mut(value, scratch))
                .map_err(|e| RpcError::serialization(format!("cannot encode value: {e}")))?;
            let payload =
                Payload { bytes: Bytes::new(), caps, max_depth: DEFAULT_MAX_DEPTH, max_decoded: LOCAL_MAX_DECODED };
            Ok(then(payload, scratch))
        })
    }

    /// A payload received from a peer, to be decoded within our `limits`.
    pub(crate) fn received(bytes: Bytes, caps: Vec<CapEntry>, limits: &crate::Limits) -> Payload {
        Payload { bytes, caps, max_depth: limits.max_depth, max_decoded: limits.max_decoded_size }
    }

    /// Deserializes a `T`, turning capability indexes back into live handles.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        let result = decoding_from(&self.caps, || {
            depth::from_postcard_bytes::<T>(&self.bytes, self.max_depth, self.max_decoded)
        });
        result.map(|(value, _rest)| value).map_err(|e| e.to_rpc("cannot decode value"))
    }
}

/// The bytes [`Payload::encode_then`] encoded, as a buffer of their own. A
/// small payload is copied out at its exact size: one allocation, where
/// freezing a buffer of its own costs two; a large one keeps the buffer it
/// was written into (no copy).
pub(crate) fn take_encoded(encoded: &mut BytesMut) -> Bytes {
    if encoded.len() <= SMALL_PAYLOAD {
        Bytes::from(encoded.to_vec())
    } else {
        encoded.split().freeze()
    }
}

/// Serializes `value` onto the end of `out`; returns the capabilities it holds.
pub(crate) fn encode_into<T: Serialize + ?Sized>(out: &mut BytesMut, value: &T) -> Result<Vec<CapEntry>, RpcError> {
    let start = out.len();
    let mut caps = Vec::new();
    let result = encoding_into(&mut caps, || to_bytes_mut(value, out));
    if let Err(e) = result {
        out.truncate(start);
        return Err(RpcError::serialization(format!("cannot encode item: {e}")));
    }
    Ok(caps)
}

/// Deserializes one `T` from the front of `bytes` with capability table
/// `caps`, within the nesting and decoded-size limits; returns it and the
/// number of bytes used.
pub(crate) fn decode_from<T: DeserializeOwned>(
    bytes: &[u8],
    caps: &[CapEntry],
    max_depth: u32,
    max_decoded: u64,
) -> Result<(T, usize), RpcError> {
    let result = decoding_from(caps, || depth::from_postcard_bytes::<T>(bytes, max_depth, max_decoded));
    let (value, rest) = result.map_err(|e| e.to_rpc("cannot decode item"))?;
    Ok((value, bytes.len() - rest.len()))
}

/// Adds `entry` to the table of the payload being encoded; returns its index.
pub(crate) fn push_cap(entry: CapEntry) -> Result<u32, String> {
    let table = ENCODING.get();
    if table.is_null() {
        return Err("capabilities can only be serialized as part of an RPC payload".into());
    }
    // SAFETY: non-null only inside `encoding_into`, pointing at its table,
    // which outlives that call and which nothing else touches meanwhile (a
    // nested encoding installs its own and puts this one back).
    let caps = unsafe { &mut *table };
    caps.push(entry);
    Ok((caps.len() - 1) as u32)
}

/// Looks up entry `index` of the payload being decoded.
pub(crate) fn cap_at(index: u32) -> Result<CapEntry, String> {
    let table = DECODING.get();
    if table.is_null() {
        return Err("capabilities can only be deserialized as part of an RPC payload".into());
    }
    // SAFETY: non-null only inside `decoding_from`, pointing at its table,
    // which outlives that call and is only read meanwhile.
    let caps = unsafe { &*table };
    caps.get(index as usize)
        .cloned()
        .ok_or_else(|| format!("capability index {index} out of range ({} in payload)", caps.len()))
}
