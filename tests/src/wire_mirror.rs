//! A mirror of the wire format, independent of rpc-core's private types, for
//! tests that build frames by hand (see [`crate::raw_peer`]).
//!
//! Every enum lists the variants of its original in declaration order, so the
//! postcard variant indexes match: `Msg` mirrors `rpc_core::wire::Message`,
//! `CapDesc` mirrors `CapDescriptor`, `Kind` mirrors [`rpc_core::ErrorKind`].
//! Encoded with postcard, these produce exactly the bytes rpc-core reads.

use rpc_core::Limits;
use serde::{Deserialize, Serialize};

/// The four bytes that open every Hello.
pub const MAGIC: [u8; 4] = *b"EVRP";

/// The server's bootstrap export.
pub const BOOTSTRAP: Target = Target::Export(0);

/// Mirror of [`rpc_core::Limits`], as it appears in a Hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLimits {
    /// Largest frame the sender accepts, in bytes.
    pub max_frame_size: u32,
    /// Calls the sender accepts in flight at once.
    pub max_outstanding_calls: u32,
    /// Capabilities the sender accepts from its peer.
    pub max_exports: u32,
    /// Deepest nesting the sender decodes.
    pub max_depth: u32,
    /// Largest decoded size of one message the sender accepts.
    pub max_decoded_size: u64,
    /// Largest sequence window the sender keeps, in items.
    pub max_stream_window: u32,
    /// Largest stream window the sender keeps, in bytes.
    pub max_stream_window_bytes: u32,
}

impl From<Limits> for WireLimits {
    fn from(l: Limits) -> Self {
        WireLimits {
            max_frame_size: l.max_frame_size,
            max_outstanding_calls: l.max_outstanding_calls,
            max_exports: l.max_exports,
            max_depth: l.max_depth,
            max_decoded_size: l.max_decoded_size,
            max_stream_window: l.max_stream_window,
            max_stream_window_bytes: l.max_stream_window_bytes,
        }
    }
}

/// Mirror of the Hello, the first frame each way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHello {
    /// Always [`MAGIC`] from a real peer.
    pub magic: [u8; 4],
    /// The protocol version; peers must match exactly.
    pub version: u32,
    /// What the sender accepts.
    pub limits: WireLimits,
    /// Whether the sender serves a bootstrap object.
    pub offers_bootstrap: bool,
    /// Random per connection; decides which side's stream ids are odd.
    pub nonce: u64,
}

/// Mirror of a call's target, named from the receiver's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// An object the receiver exported under this id (0 is the bootstrap).
    Export(u32),
    /// Capability `cap` of the receiver's answer to `question` (pipelining).
    Answer {
        /// The question whose answer holds the capability.
        question: u32,
        /// The capability's index in that answer.
        cap: u32,
    },
}

/// Mirror of `CapDescriptor`, in declaration order (the byte streams are 5 and 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapDesc {
    /// The sender exports it under this id.
    SenderHosted(u32),
    /// The receiver's own export with this id.
    ReceiverHosted(u32),
    /// Capability `cap` of the receiver's answer to `question`.
    ReceiverAnswer {
        /// The question whose answer holds the capability.
        question: u32,
        /// The capability's index in that answer.
        cap: u32,
    },
    /// A sequence the sender produces on `stream`; the receiver consumes it with `window`.
    SequenceReader {
        /// The stream id.
        stream: u32,
        /// The receiver's window.
        window: WireWindow,
    },
    /// A sequence the receiver produces on `stream`; the sender consumes it with `window`.
    SequenceWriter {
        /// The stream id.
        stream: u32,
        /// The sender's window.
        window: WireWindow,
    },
    /// A byte stream the sender produces on `stream`; the receiver consumes it with `window`.
    BytesReader {
        /// The stream id.
        stream: u32,
        /// The receiver's window (in bytes; `batch` is the largest read).
        window: WireWindow,
    },
    /// A byte stream the receiver produces on `stream`; the sender consumes it with `window`.
    BytesWriter {
        /// The stream id.
        stream: u32,
        /// The sender's window (in bytes; `batch` is the largest read).
        window: WireWindow,
    },
}

/// Mirror of a consumer's window (for a byte stream: bytes, and the largest read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWindow {
    /// Items (or bytes) that may be unread at once.
    pub capacity: u32,
    /// Items per network message (or largest read), at most.
    pub batch: u32,
}

/// Mirror of [`rpc_core::ErrorKind`], in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// See [`rpc_core::ErrorKind::Disconnected`].
    Disconnected,
    /// See [`rpc_core::ErrorKind::Cancelled`].
    Cancelled,
    /// See [`rpc_core::ErrorKind::Aborted`].
    Aborted,
    /// See [`rpc_core::ErrorKind::Protocol`].
    Protocol,
    /// See [`rpc_core::ErrorKind::LimitExceeded`].
    LimitExceeded,
    /// See [`rpc_core::ErrorKind::Unimplemented`].
    Unimplemented,
    /// See [`rpc_core::ErrorKind::Timeout`].
    Timeout,
    /// See [`rpc_core::ErrorKind::Application`].
    Application,
    /// See [`rpc_core::ErrorKind::Serialization`].
    Serialization,
    /// See [`rpc_core::ErrorKind::HandlerPanicked`].
    HandlerPanicked,
}

/// Mirror of [`rpc_core::RpcError`] as it is serialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// The error's kind.
    pub kind: Kind,
    /// The human-readable reason.
    pub message: String,
    /// Postcard bytes of the application error value, for [`Kind::Application`].
    pub payload: Option<Vec<u8>>,
}

/// Mirror of `Message`, every frame after the handshake, in declaration order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// A method call; the payload follows the header.
    Call {
        /// The caller's id for this call.
        question: u32,
        /// The object called.
        target: Target,
        /// The interface id of the method.
        interface: u64,
        /// The method's index in the interface.
        method: u16,
        /// Capabilities the payload refers to by index.
        caps: Vec<CapDesc>,
    },
    /// The answer to a call: `Ok(caps)` with the payload following, or an error.
    Return {
        /// The question answered.
        question: u32,
        /// The capabilities of the value, or the error.
        result: Result<Vec<CapDesc>, WireError>,
    },
    /// The caller no longer needs the answer.
    Finish {
        /// The question finished.
        question: u32,
    },
    /// The sender dropped `count` references to the receiver's export `export`.
    Release {
        /// The export released.
        export: u32,
        /// How many references.
        count: u32,
    },
    /// Echo `id` back once every call sent earlier to `target` has been forwarded.
    Disembargo {
        /// The target whose earlier calls must be forwarded first.
        target: Target,
        /// The id to echo.
        id: u32,
    },
    /// The echo of a [`Msg::Disembargo`].
    DisembargoReply {
        /// The echoed id.
        id: u32,
    },
    /// Keepalive probe.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// The sender is closing the connection, with a reason.
    Abort(WireError),
    /// Items (or bytes) of a stream the sender produces; they follow the header.
    StreamData {
        /// The stream id.
        stream: u32,
        /// Items (or bytes) that follow.
        count: u32,
        /// How many of `caps` each item holds (empty when none holds any).
        item_caps: Vec<u32>,
        /// Capabilities the items refer to by index.
        caps: Vec<CapDesc>,
        /// The encoded length of each item (empty for a byte stream), packed
        /// on the wire as one byte string of varints.
        #[serde(with = "packed_lens")]
        item_lens: Vec<u32>,
    },
    /// The consumer has read `read` items in all; its window is now `window`.
    StreamWindow {
        /// The stream id.
        stream: u32,
        /// Items (or bytes) read in all.
        read: u64,
        /// The consumer's window from now on.
        window: WireWindow,
    },
    /// The producer closed the stream, maybe with an error.
    StreamEnd {
        /// The stream id.
        stream: u32,
        /// Why, if it failed.
        error: Option<WireError>,
    },
    /// The producer aborted the stream.
    StreamAbort {
        /// The stream id.
        stream: u32,
    },
    /// The consumer cancelled the stream, maybe saying why.
    StreamCancel {
        /// The stream id.
        stream: u32,
        /// Why, if it said.
        reason: Option<String>,
    },
    /// The next bytes of an item too large for one message; the item ends in
    /// the stream's next `StreamData`.
    StreamPart {
        /// The stream id.
        stream: u32,
    },
}

/// A call without capabilities.
pub fn call(question: u32, target: Target, interface: u64, method: u16) -> Msg {
    Msg::Call { question, target, interface, method, caps: Vec::new() }
}

/// The postcard bytes of `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encode")
}

/// Mirror of the packed item lengths of `StreamData`: one byte string of
/// LEB128 varints.
mod packed_lens {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lens: &[u32], serializer: S) -> Result<S::Ok, S::Error> {
        let mut packed = Vec::new();
        for &len in lens {
            let mut n = len;
            while n >= 0x80 {
                packed.push((n as u8) | 0x80);
                n >>= 7;
            }
            packed.push(n as u8);
        }
        serializer.serialize_bytes(&packed)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
        let packed: &[u8] = Deserialize::deserialize(deserializer)?;
        let (mut lens, mut value, mut shift) = (Vec::new(), 0u64, 0u32);
        for &byte in packed {
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                lens.push(value as u32);
                (value, shift) = (0, 0);
            } else {
                shift += 7;
            }
        }
        Ok(lens)
    }
}
