//! The payload decoder: postcard values with capability indexes, depth
//! limited (rpc-core/src/payload.rs, wire/depth.rs), decoded into types the
//! framework carries: plain structs and enums, and values holding proxies,
//! sequences and byte streams.
//!
//! Input: a kind byte (which type, whole payload or stream items), an
//! item-caps byte (how many capabilities each stream item takes, and for
//! stream items how many items), then the payload bytes; for stream items,
//! the item lengths (one byte each, all but the last item's) come first. The capability table is a fixed set of fresh proxies and
//! stream ends, so indexes in the input name real entries of every kind.
//! Checks: no panic; a plain value that decodes re-encodes to an equal
//! value; a value with capabilities that decodes can be sent again.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use rpc_core::fuzzing::{decode_items, decode_payload, payload_bytes, round_trip};
use rpc_core::{Bytes, Sequence, SequenceWriter};
use rpc_fuzz::service::{ChildProxy, Kid};
use rpc_fuzz::values::{CapItem, Item, Record, Shape, Tree, WithCaps};
use serde::de::DeserializeOwned;
use serde::Serialize;

const MAX_DEPTH: u32 = 64;

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap(),
    );
}

/// A capability table with one entry of every kind (ends whose other halves are gone).
fn table() -> impl Serialize {
    let child = || ChildProxy::new(Kid { name: "t".into(), generation: 0 });
    (
        child(),
        Sequence::<u64>::channel().1,
        Sequence::<Item>::channel().0,
        Bytes::channel().1,
        Some(child()),
        Sequence::<Sequence<u32>>::channel().1,
        Bytes::channel().0,
        Sequence::<Item>::channel().1,
        Sequence::<CapItem>::channel().1,
        Bytes::channel().0,
        Sequence::<u64>::channel().0,
    )
}

fn plain<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(value) = decode_payload::<T>(bytes, table(), MAX_DEPTH) {
        let again = round_trip(&value, MAX_DEPTH).expect("a decoded plain value round-trips");
        assert_eq!(value, again, "a plain value changed in a round trip");
        let encoded = payload_bytes(&value).expect("a decoded plain value encodes");
        let third = decode_payload::<T>(&encoded, (), MAX_DEPTH).expect("a re-encoded plain value decodes");
        assert_eq!(value, third);
    }
}

fn with_caps<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    if let Ok(value) = decode_payload::<T>(bytes, table(), MAX_DEPTH) {
        round_trip(&value, MAX_DEPTH)
            .unwrap_or_else(|e| panic!("a decoded value with capabilities cannot be sent on: {e}"));
    }
}

fn items<T: Serialize + DeserializeOwned>(data: &[u8], pattern: u8) {
    // Up to 8 items, taking 0..=3 capabilities each; the first count - 1
    // bytes are the lengths of all items but the last (cut to what is
    // left), which takes the rest, so the lengths cover the bytes as the
    // connection requires of a StreamData.
    let count = 1 + (pattern >> 5) as usize;
    let item_caps: Vec<u32> = (0..count).map(|i| u32::from((pattern >> (i % 4)) & 3)).collect();
    let Some((lens, bytes)) = data.split_at_checked(count - 1) else { return };
    let mut left = bytes.len() as u32;
    let mut item_lens: Vec<u32> = lens
        .iter()
        .map(|&len| {
            let len = u32::from(len).min(left);
            left -= len;
            len
        })
        .collect();
    item_lens.push(left);
    if let Ok(values) = decode_items::<T>(bytes, &item_caps, &item_lens, table(), MAX_DEPTH) {
        for value in &values {
            round_trip(value, MAX_DEPTH).unwrap_or_else(|e| panic!("a decoded item cannot be sent on: {e}"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [kind, pattern, bytes @ ..] = data else { return };
    RUNTIME.with(|rt| {
        let rt = rt.borrow();
        let _guard = rt.enter();
        match kind % 14 {
            0 => plain::<Record>(bytes),
            1 => plain::<Shape>(bytes),
            2 => plain::<Tree>(bytes),
            3 => plain::<Vec<Item>>(bytes),
            4 => plain::<(i64, i64)>(bytes),
            5 => plain::<(String, Option<Vec<u32>>)>(bytes),
            6 => with_caps::<WithCaps>(bytes),
            7 => with_caps::<CapItem>(bytes),
            8 => with_caps::<Vec<CapItem>>(bytes),
            9 => with_caps::<(Option<ChildProxy>, Sequence<Item>)>(bytes),
            10 => with_caps::<(u32, SequenceWriter<Item>)>(bytes),
            11 => items::<CapItem>(bytes, *pattern),
            12 => items::<Sequence<u32>>(bytes, *pattern),
            _ => items::<Item>(bytes, *pattern),
        }
        // Let whatever the drops scheduled run, so nothing piles up across inputs.
        rt.block_on(tokio::task::yield_now());
    });
});
