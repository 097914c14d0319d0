//! The wire protocol: message types and framing.
//!
//! A connection is a sequence of frames, each a little-endian `u32` length
//! followed by that many bytes. The first frame each way is a [`Hello`]; every
//! later frame is a postcard-encoded [`Message`] header, followed, for calls
//! and returns, by the postcard bytes of the payload up to the end of the frame.
//!
//! Capabilities inside a payload are written as indexes into the header's
//! `caps` list of [`CapDescriptor`]s, so the payload bytes never hold ids.

mod decode;
pub(crate) mod depth;
pub(crate) mod encode;
pub(crate) mod fast;
pub(crate) mod frame;
mod limits;
mod window;

use serde::{Deserialize, Serialize};

pub use limits::Limits;
pub(crate) use window::Window;

use crate::RpcError;

/// Protocol version spoken by this build; peers must match exactly.
/// Version 2: stream data carries packed item lengths; the Hello's limits
/// carry the decoded-size budget and the stream window caps.
pub const PROTOCOL_VERSION: u32 = 2;

/// Four bytes that open every `Hello`, so garbage is told apart from a peer.
pub(crate) const MAGIC: [u8; 4] = *b"EVRP";

/// The first frame each way: who we are and what we accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub magic: [u8; 4],
    pub version: u32,
    pub limits: Limits,
    pub offers_bootstrap: bool,
    /// Random; the side with the larger nonce allocates odd stream ids.
    pub nonce: u64,
}

/// Which object a call is aimed at, named from the receiver's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Target {
    /// An object the receiver exported under this id (id 0 is the bootstrap).
    Export(u32),
    /// The capability at index `cap` of the (maybe not yet known) result of
    /// the receiver's answer to `question`: promise pipelining.
    Answer { question: u32, cap: u32 },
}

/// How a capability inside a payload is named on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CapDescriptor {
    /// The sender exports it under this id; the receiver imports it.
    SenderHosted(u32),
    /// It is the receiver's own export: hand back the original object.
    ReceiverHosted(u32),
    /// It is a capability in the receiver's answer to `question` (pipelined).
    ReceiverAnswer { question: u32, cap: u32 },
    /// A sequence's consumer end: the sender produces stream `stream`, the
    /// receiver consumes it with `window`.
    SequenceReader { stream: u32, window: Window },
    /// A sequence's producer end: the receiver produces stream `stream`, the
    /// sender consumes it with `window`.
    SequenceWriter { stream: u32, window: Window },
    /// A byte stream's consumer end (window in bytes, batch = largest read).
    BytesReader { stream: u32, window: Window },
    /// A byte stream's producer end.
    BytesWriter { stream: u32, window: Window },
}

/// Every frame after the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// A method call; the payload follows the header.
    Call { question: u32, target: Target, interface: u64, method: u16, caps: Vec<CapDescriptor> },
    /// The answer to a call: `Ok(caps)` with the payload following, or an error.
    Return { question: u32, result: Result<Vec<CapDescriptor>, RpcError> },
    /// The caller no longer needs the answer (cancel it, drop its capabilities).
    Finish { question: u32 },
    /// The sender dropped `count` references to the receiver's export `export`.
    Release { export: u32, count: u32 },
    /// Echo `id` back once every call sent earlier to `target` has been forwarded.
    Disembargo { target: Target, id: u32 },
    /// The echo of a [`Message::Disembargo`].
    DisembargoReply { id: u32 },
    /// Keepalive probe; the peer answers with `Pong` carrying the same value.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// The sender is closing the connection, with a reason.
    Abort(RpcError),
    /// Items of a stream the sender produces: `count` items follow the header,
    /// back to back; `item_caps` says how many of `caps` each holds (empty
    /// when none holds any); `item_lens` gives each item's encoded length (so
    /// a relay can pass items on without knowing their type; empty for a byte
    /// stream, whose `count` is bytes).
    StreamData {
        stream: u32,
        count: u32,
        item_caps: Vec<u32>,
        caps: Vec<CapDescriptor>,
        #[serde(with = "packed_lens")]
        item_lens: Vec<u32>,
    },
    /// The consumer has read `read` items in all; its window is now `window`.
    StreamWindow { stream: u32, read: u64, window: Window },
    /// The producer closed the stream after its last item, maybe with an error.
    StreamEnd { stream: u32, error: Option<RpcError> },
    /// The producer aborted the stream.
    StreamAbort { stream: u32 },
    /// The consumer cancelled the stream, maybe saying why.
    StreamCancel { stream: u32, reason: Option<String> },
    /// The next bytes of an item too large for one message; the item ends in
    /// the stream's next `StreamData`, whose first item it is.
    StreamPart { stream: u32 },
}

/// Item lengths on the wire: one byte string of LEB128 varints, so a batch of
/// hundreds of items costs one copy instead of a serde call per length.
pub(crate) mod packed_lens {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(lens: &[u32], serializer: S) -> Result<S::Ok, S::Error> {
        let mut packed = Vec::with_capacity(lens.len() * 2);
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

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
        deserializer.deserialize_bytes(Unpack)
    }

    struct Unpack;

    impl Visitor<'_> for Unpack {
        type Value = Vec<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("item lengths as packed varints")
        }

        fn visit_bytes<E: de::Error>(self, packed: &[u8]) -> Result<Vec<u32>, E> {
            // At most one length per byte: bounded by what arrived.
            let mut lens = Vec::with_capacity(packed.len().min(4096));
            let (mut value, mut shift) = (0u64, 0u32);
            for &byte in packed {
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    let len = u32::try_from(value).map_err(|_| E::custom("an item length over u32::MAX"))?;
                    lens.push(len);
                    (value, shift) = (0, 0);
                } else {
                    shift += 7;
                    if shift > 28 {
                        return Err(E::custom("an item length over u32::MAX"));
                    }
                }
            }
            if shift != 0 {
                return Err(E::custom("item lengths end inside a varint"));
            }
            Ok(lens)
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn lengths_round_trip_and_bad_ones_are_refused() {
            let lens = vec![0, 1, 127, 128, 300, 65_535, u32::MAX];
            let bytes = postcard::to_stdvec(&Wrapper(lens.clone())).expect("encode");
            let back: Wrapper = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back.0, lens);
            // A varint running past 32 bits, and one cut short.
            assert!(postcard::from_bytes::<Wrapper>(&[5, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
            assert!(postcard::from_bytes::<Wrapper>(&[1, 0x80]).is_err());
        }

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wrapper(#[serde(with = "super")] Vec<u32>);
    }
}
