//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`).
//!
//! Not an API: the wire types stay private, so the fuzzers reach the frame
//! and payload decoders through these few functions. Nothing here is stable.

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::payload::{self, CapEntry, Payload};
use crate::wire::{depth, frame, Hello, Message};
use crate::RpcError;

/// The decoded-size budget the fuzz entry points decode under (the default limit).
const BUDGET: u64 = 4 * (16 << 20);

/// Runs `input` through the reader task's decoding: the frame decoder fed
/// `chunk` bytes at a time (as socket reads deliver them, `max_frame` checked),
/// the first frame also decoded as a `Hello`, every frame's header decoded as
/// a `Message` (depth-limited by `max_depth`). Every decoded message must
/// re-encode into a frame that decodes to the same message and trailer:
/// a mismatch panics.
///
/// # Errors
///
/// The first error the connection would close with (oversized or malformed
/// frame); `Ok(n)` counts the frames decoded before the input ran out.
#[doc(hidden)]
pub fn decode_frames(input: &[u8], chunk: usize, max_frame: u32, max_depth: u32) -> Result<usize, RpcError> {
    let mut buf = BytesMut::new();
    let mut decoded = 0;
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(frame) = frame::decode(&mut buf, max_frame)? {
            assert!(frame.len() <= max_frame as usize, "a frame of {} bytes passed the limit", frame.len());
            if decoded == 0 {
                // The handshake reads its Hello with plain postcard.
                let _ = postcard::from_bytes::<Hello>(&frame);
            }
            let (message, rest) = depth::from_postcard_bytes::<Message>(&frame, max_depth, BUDGET)
                .map_err(|e| RpcError::protocol(format!("malformed frame ({e})")))?;
            let trailer = &frame[frame.len() - rest.len()..];
            let mut again = BytesMut::new();
            frame::encode(&mut again, &message, trailer).expect("a decoded message re-encodes");
            let reframed = frame::decode(&mut again, u32::MAX).expect("re-encoded frame").expect("a whole frame");
            assert!(again.is_empty(), "re-encoding left {} bytes over", again.len());
            let (message2, rest2) = depth::from_postcard_bytes::<Message>(&reframed, max_depth, BUDGET)
                .expect("a re-encoded message decodes");
            assert_eq!(message, message2, "message changed in a round trip");
            assert_eq!(rest, rest2, "trailer changed in a round trip");
            decoded += 1;
        }
    }
    Ok(decoded)
}

/// Encodes `table` and returns its capability table (its proxies and stream
/// ends, in the order it holds them).
fn caps_of(table: impl Serialize) -> Result<Vec<CapEntry>, RpcError> {
    Ok(Payload::encode(&table)?.caps)
}

/// Decodes `bytes` as a call's payload of type `T`, whose capability table is
/// the one `table` encodes to (the indexes in `bytes` name its entries).
///
/// # Errors
///
/// The decode error a handler's caller would get.
#[doc(hidden)]
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8], table: impl Serialize, max_depth: u32) -> Result<T, RpcError> {
    let payload =
        Payload { bytes: bytes::Bytes::copy_from_slice(bytes), caps: caps_of(table)?, max_depth, max_decoded: BUDGET };
    payload.decode()
}

/// Decodes items of type `T` from `bytes` as a received sequence batch is
/// read: item `i` is the next `item_lens[i]` bytes and takes the next
/// `item_caps[i]` entries of the table `table` encodes to (none when
/// `item_caps` is shorter); an item that decodes from fewer bytes than its
/// length is an error, as in the reader. Lengths that do not cover `bytes`
/// exactly are the protocol error the connection would close with. Stops at
/// the first error, as the reader would.
///
/// # Errors
///
/// The error the sequence's reader would get (or the connection would close
/// with), with the items decoded before it.
#[doc(hidden)]
pub fn decode_items<T: DeserializeOwned>(
    bytes: &[u8],
    item_caps: &[u32],
    item_lens: &[u32],
    table: impl Serialize,
    max_depth: u32,
) -> Result<Vec<T>, (Vec<T>, RpcError)> {
    let total: u64 = item_lens.iter().map(|&len| u64::from(len)).sum();
    if total != bytes.len() as u64 || !item_caps.is_empty() && item_caps.len() != item_lens.len() {
        return Err((Vec::new(), RpcError::protocol("item lengths or capability counts do not match the items")));
    }
    let mut caps = caps_of(table).map_err(|e| (Vec::new(), e))?;
    let mut items = Vec::new();
    let mut at = 0;
    for (i, &len) in item_lens.iter().enumerate() {
        let count = item_caps.get(i).copied().unwrap_or(0) as usize;
        let mine: Vec<CapEntry> = caps.drain(..count.min(caps.len())).collect();
        let len = len as usize;
        match payload::decode_from::<T>(&bytes[at..at + len], &mine, max_depth, BUDGET) {
            Ok((item, used)) if used == len => items.push(item),
            Ok((_, used)) => {
                let e = RpcError::serialization(format!("an item of {len} bytes decoded from only {used} of them"));
                return Err((items, e));
            }
            Err(e) => return Err((items, e)),
        }
        at += len;
    }
    Ok(items)
}

/// Encodes `value` as a payload and decodes it again, capabilities and
/// stream ends staying local.
///
/// # Errors
///
/// An encode or decode error.
#[doc(hidden)]
pub fn round_trip<T: Serialize + DeserializeOwned>(value: &T, max_depth: u32) -> Result<T, RpcError> {
    let mut payload = Payload::encode(value)?;
    payload.max_depth = max_depth;
    payload.decode()
}

/// The postcard bytes a payload of `value` carries (capabilities as indexes).
///
/// # Errors
///
/// An encode error.
#[doc(hidden)]
pub fn payload_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    Ok(Payload::encode(value)?.bytes.to_vec())
}

/// Runs `input` on two protocol state machines wired to each other in
/// simulated time (the `proto::pair` harness, no I/O): a script of hostile
/// messages (postcard `Message`s with arbitrary ids and trailers, handed to
/// either side as if its peer sent them) and local actions (calls,
/// pipelining, dropping calls and capabilities, answering held calls,
/// letting time pass). The format is in `rpc-core/src/proto/pair/script.rs`.
///
/// # Panics
///
/// If a protocol panics, a table invariant breaks after a step, the pair
/// never becomes quiet, or a question has no outcome once both sides closed.
#[doc(hidden)]
pub fn protocol_messages(input: &[u8]) {
    crate::proto::pair::run_script(input);
}

/// Named seed inputs for [`protocol_messages`]: a pipelined chain, a
/// cancelled call, reference counting, an embargo, hostile messages.
#[doc(hidden)]
pub fn protocol_seeds() -> Vec<(&'static str, Vec<u8>)> {
    crate::proto::pair::seed_scripts()
}
