//! The frame decoder: length-prefixed frames and `Message` headers, as the
//! connection's reader task decodes them (rpc-core/src/wire/frame.rs).
//!
//! Input: one selector byte, then the bytes a peer sends (its Hello first).
//! The selector picks how reads are chunked and which frame limit applies.
//! Checks: no panic, decoded headers round-trip (inside the hook), and the
//! outcome does not depend on how the bytes were split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_core::fuzzing::decode_frames;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let chunk = 1 + (selector & 0x3f) as usize;
    let max_frame = if selector & 0x40 != 0 { 64 } else { 1 << 20 };
    let max_depth = if selector & 0x80 != 0 { 4 } else { 64 };
    let whole = decode_frames(input, input.len().max(1), max_frame, max_depth);
    let split = decode_frames(input, chunk, max_frame, max_depth);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "frames decoded depend on read chunking"),
        (Err(a), Err(b)) => assert_eq!(a, b, "errors depend on read chunking"),
        _ => panic!("outcome depends on read chunking: whole {whole:?}, in chunks of {chunk}: {split:?}"),
    }
});
