//! A whole connection end to end: the fuzz input is what a client writes
//! after a valid Hello to a real server (see `rpc_fuzz::harness`). Crashes
//! are panics; hangs are a final Ping left unanswered on an open connection
//! (a panic in the harness) or a blocked thread (libFuzzer's `-timeout`).
//!
//! The mutator keeps the input a sequence of frames most of the time:
//! libFuzzer's byte mutations inside one frame with its length prefix fixed
//! up, whole frames duplicated, dropped, swapped, or inserted from
//! `frame_dictionary()`; sometimes plain byte mutations of everything, so
//! broken framing is still explored.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use rpc_fuzz::harness::{frame_dictionary, framed, run_connection, split_frames};

fuzz_target!(|data: &[u8]| {
    run_connection(data);
});

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn dictionary() -> &'static [Vec<u8>] {
    static DICT: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    DICT.get_or_init(frame_dictionary)
}

fn mutate(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> usize {
    let mut rng = Rng(u64::from(seed) | 1 << 40);
    let mut frames: Vec<Vec<u8>> = split_frames(&data[..size]).into_iter().map(<[u8]>::to_vec).collect();
    let op = rng.below(10);
    if op == 0 || frames.is_empty() && op > 5 {
        return fuzzer_mutate(data, size, max_size);
    }
    let at = rng.below(frames.len());
    match op {
        // Mutate inside one frame's body, then fix its length prefix.
        1..=4 if !frames.is_empty() => {
            let frame = &mut frames[at];
            if frame.len() >= 4 {
                let mut body = frame[4..].to_vec();
                let len = body.len();
                body.resize(len + 64, 0);
                let new = fuzzer_mutate(&mut body, len, len + 64);
                body.truncate(new);
                *frame = framed(&body);
            }
        }
        5 if !frames.is_empty() => {
            let copy = frames[at].clone();
            frames.insert(rng.below(frames.len() + 1), copy);
        }
        6 if !frames.is_empty() => {
            frames.remove(at);
        }
        7 if frames.len() > 1 => {
            let other = rng.below(frames.len());
            frames.swap(at, other);
        }
        _ => {
            let dict = dictionary();
            let frame = dict[rng.below(dict.len())].clone();
            frames.insert(rng.below(frames.len() + 1), frame);
        }
    }
    let out: Vec<u8> = frames.concat();
    if out.len() > max_size {
        return fuzzer_mutate(data, size, max_size);
    }
    data[..out.len()].copy_from_slice(&out);
    out.len()
}

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| { mutate(data, size, max_size, seed) });
