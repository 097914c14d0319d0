//! A script of hostile messages and local actions run on a [`Pair`]: what
//! the `protocol` fuzz target feeds (through `crate::fuzzing`).
//!
//! The input is a sequence of steps. Each starts with an op byte: bit 7
//! picks the side (A or B), the low four bits the action:
//!
//! | op & 15 | action | then reads |
//! |---|---|---|
//! | 0, 1 | a message "from the peer", handed to the side | a postcard `Message`, a length byte, that many trailer bytes |
//! | 2 | a call from the side to a capability it holds | target byte, method byte, argument byte |
//! | 3 | a capability of one of the side's calls, pipelined | call byte, cap byte |
//! | 4 | drop one of the side's calls | index byte |
//! | 5 | drop one of the side's capabilities | index byte |
//! | 6 | the side's objects answer their held calls | byte: 0 fails them, else a new object |
//! | 7, 15 | drop what the side's objects kept, then let time pass | milliseconds byte (0: run until quiet) |
//! | 8 | a call carrying a sequence end (reader or writer) | target byte, window byte |
//! | 9 | write an item to one of the side's producers | index byte, item byte |
//! | 10 | read what arrived on one of the side's consumers | index byte |
//! | 11 | end one of the side's producers | index byte, how byte (close, with an error, abort) |
//! | 12 | cancel one of the side's consumers | index byte |
//! | 13 | drop one of the stream halves the side sent an end of | index byte |
//! | 14 | set a consumer's window | index byte, window byte |
//!
//! Both sides serve a [`Rule::ByMethod`] object. After every step each
//! side's table invariants must hold; at the end the pair must become quiet
//! (no livelock), and once both sides close, every question must have its
//! outcome and every table must be empty.

use std::time::Duration;

use super::{ObjectLog, Pair, Rule, Side, TestCall, TestStream};
use crate::cap::Client;
use crate::payload::Payload;
use crate::wire::Window;
use crate::wire::{depth, CapDescriptor, Message};
use crate::{Limits, RpcError};

const LATENCY: Duration = Duration::from_millis(5);

/// Small limits, so a short input reaches them.
fn limits() -> Limits {
    Limits {
        max_frame_size: 1 << 16,
        max_outstanding_calls: 16,
        max_exports: 32,
        max_depth: 16,
        max_decoded_size: 1 << 18,
        ..Limits::default()
    }
}

/// What one side's test code holds.
#[derive(Default)]
struct Held {
    calls: Vec<TestCall>,
    caps: Vec<Client>,
    streams: Vec<TestStream>,
    /// Stream items read.
    items_read: usize,
}

/// Reads the next byte of the script.
fn byte(input: &mut &[u8]) -> u8 {
    let Some((&first, rest)) = input.split_first() else { return 0 };
    *input = rest;
    first
}

/// What a script did (for tests of the script itself).
#[derive(Debug, Default)]
pub(crate) struct ScriptRun {
    /// Frames that travelled between the sides.
    pub(crate) delivered: usize,
    /// Calls the script made, and how many of them completed without error.
    pub(crate) calls: usize,
    pub(crate) succeeded: usize,
    /// Sides that closed on a violation before the end.
    pub(crate) violations: usize,
    /// Stream items read, on both sides.
    pub(crate) items_read: usize,
}

/// Runs `input` as a script (see the module docs).
///
/// # Panics
///
/// If an invariant breaks, the pair livelocks or a question is left
/// without an outcome: what the fuzzer reports.
pub(crate) fn run_script(input: &[u8]) -> ScriptRun {
    let logs = [ObjectLog::new(), ObjectLog::new()];
    let (a, b) = (logs[0].object(Rule::ByMethod), logs[1].object(Rule::ByMethod));
    let mut pair = Pair::with_limits(LATENCY, limits(), Some(a), Some(b));
    pair.record = false;
    let mut held = [Held::default(), Held::default()];
    for side in [Side::A, Side::B] {
        let boot = pair.bootstrap(side);
        held[index(side)].caps.push(boot);
    }
    let mut input = input;
    while !input.is_empty() {
        let op = byte(&mut input);
        let side = if op & 0x80 == 0 { Side::A } else { Side::B };
        let stepped = match op & 15 {
            op @ 8..=14 => stream_step(&mut pair, &mut held[index(side)], side, op, &mut input),
            op => step(&mut pair, &logs, &mut held, side, op & 7, &mut input),
        };
        if !stepped {
            break;
        }
        check(&pair, "after a step");
    }
    finish(pair, &logs, held)
}

fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// One step; false when the input ran out inside it.
fn step(pair: &mut Pair, logs: &[ObjectLog; 2], held: &mut [Held; 2], side: Side, op: u8, input: &mut &[u8]) -> bool {
    let mine = &mut held[index(side)];
    let log = &logs[index(side)];
    match op {
        0 | 1 => {
            let Ok((message, rest)) = depth::from_postcard_bytes::<Message>(input, 16, 1 << 16) else { return false };
            let len = usize::from(rest.first().copied().unwrap_or(0));
            let trailer = rest.get(1..).unwrap_or_default();
            let (trailer, rest) = trailer.split_at(len.min(trailer.len()));
            *input = rest;
            let _ = pair.inject(side, message, trailer);
        }
        2 => {
            let target = mine.caps.get(usize::from(byte(input)) % mine.caps.len().max(1)).cloned();
            let (method, arg) = (u16::from(byte(input)), byte(input));
            let Some(target) = target else { return true };
            let call = if arg & 1 == 0 {
                pair.call(side, &target, method, &u32::from(arg))
            } else {
                pair.call(side, &target, method, &(log.object(Rule::ByMethod), u32::from(arg)))
            };
            mine.calls.push(call);
        }
        3 => {
            let (at, cap) = (usize::from(byte(input)), u32::from(byte(input) % 2));
            if let Some(call) = mine.calls.get(at % mine.calls.len().max(1)) {
                let client = pair.pipeline(call, cap);
                mine.caps.push(client);
            }
        }
        4 | 5 => {
            let at = usize::from(byte(input));
            if op == 4 && !mine.calls.is_empty() {
                drop(mine.calls.swap_remove(at % mine.calls.len()));
            } else if op == 5 && !mine.caps.is_empty() {
                drop(mine.caps.swap_remove(at % mine.caps.len()));
            }
            pair.settle();
        }
        6 => {
            let fail = byte(input) == 0;
            log.answer_held(|| match fail {
                true => Err(RpcError::aborted("the script failed it")),
                false => Payload::encode(&(log.object(Rule::ByMethod),)),
            });
            pair.settle();
        }
        _ => {
            log.drop_kept();
            match byte(input) {
                0 => {
                    assert!(pair.try_drive(), "livelock: the pair never became quiet");
                    check_agreement(pair);
                }
                ms => pair.advance(Duration::from_millis(u64::from(ms))),
            }
        }
    }
    true
}

/// A window from one byte: capacity 1 to 16, batch 1 to 16.
fn window(byte: u8) -> Window {
    Window { capacity: u32::from(byte & 15) + 1, batch: u32::from(byte >> 4) + 1 }
}

/// Picks one of `ids` by the next byte.
fn pick(ids: &[u32], input: &mut &[u8]) -> Option<u32> {
    let at = usize::from(byte(input));
    ids.get(at % ids.len().max(1)).copied()
}

/// One stream step (ops 8 to 14).
fn stream_step(pair: &mut Pair, mine: &mut Held, side: Side, op: u8, input: &mut &[u8]) -> bool {
    let (producers, consumers) = pair.stream_ids(side);
    match op {
        8 => {
            let target = mine.caps.get(usize::from(byte(input)) % mine.caps.len().max(1)).cloned();
            let flags = byte(input);
            let Some(target) = target else { return true };
            let (call, stream) =
                pair.call_with_stream(side, &target, u16::from(flags & 3), flags & 4 == 0, window(flags));
            mine.calls.push(call);
            mine.streams.push(stream);
        }
        9 => {
            let (id, item) = (pick(&producers, input), byte(input));
            if let Some(id) = id {
                let _ = pair.write(side, id, u32::from(item));
            }
        }
        10 => {
            if let Some(id) = pick(&consumers, input) {
                mine.items_read += pair.read_available(side, id).0.len();
            }
        }
        11 => match (pick(&producers, input), byte(input) % 3) {
            (Some(id), 0) => pair.close_stream(side, id, None),
            (Some(id), 1) => pair.close_stream(side, id, Some(RpcError::aborted("the script failed it"))),
            (Some(id), _) => pair.abort_stream(side, id),
            (None, _) => {}
        },
        12 => {
            if let Some(id) = pick(&consumers, input) {
                pair.cancel_stream(side, id, Some("the script cancelled it".into()));
            }
        }
        13 => {
            let at = usize::from(byte(input));
            if !mine.streams.is_empty() {
                drop(mine.streams.swap_remove(at % mine.streams.len()));
                pair.settle();
            }
        }
        _ => {
            let (id, window) = (pick(&consumers, input), window(byte(input)));
            if let Some(id) = id {
                pair.side_mut(side).proto.consumer_set_window(id, window);
                pair.settle();
            }
        }
    }
    true
}

/// When quiet, with both sides open and nothing injected, the sides must agree.
fn check_agreement(pair: &Pair) {
    let open = [Side::A, Side::B].iter().all(|&side| pair.side(side).proto.is_closed().is_none());
    if open && !pair.injected {
        if let Err(disagreement) = pair.check_consistent() {
            panic!("quiet, but {disagreement}");
        }
    }
}

fn check(pair: &Pair, when: &str) {
    for side in [Side::A, Side::B] {
        if let Err(broken) = pair.side(side).proto.check_invariants() {
            panic!("{side:?} {when}: {broken}");
        }
    }
}

/// Lets the pair become quiet, closes both sides and checks what is left.
fn finish(mut pair: Pair, logs: &[ObjectLog; 2], held: [Held; 2]) -> ScriptRun {
    assert!(pair.try_drive(), "livelock: the pair never became quiet");
    check(&pair, "when quiet");
    check_agreement(&pair);
    let calls = held.iter().flat_map(|h| &h.calls);
    let mut run = ScriptRun {
        delivered: pair.delivered,
        calls: calls.clone().count(),
        succeeded: calls.filter(|c| c.is_done() && c.error().is_none()).count(),
        violations: [Side::A, Side::B].iter().filter(|&&s| pair.side(s).violation.is_some()).count(),
        items_read: held.iter().map(|h| h.items_read).sum(),
    };
    for side in [Side::A, Side::B] {
        pair.close(side, RpcError::disconnected("the script ended"));
    }
    pair.settle();
    check(&pair, "after closing");
    for (side, mine) in [Side::A, Side::B].into_iter().zip(&held) {
        for call in mine.calls.iter().filter(|c| c.question().is_some()) {
            assert!(call.is_done(), "{side:?}: question {:?} has no outcome after close", call.question());
        }
    }
    // Objects holding calls or capabilities hold their own log: let go.
    for log in logs {
        log.answer_held(|| Err(RpcError::disconnected("the script ended")));
        log.drop_kept();
    }
    drop(held);
    pair.settle();
    check(&pair, "at the end");
    run.delivered = pair.delivered;
    run
}

/// Scripts that reach the interesting paths: the fuzzer's seed corpus and
/// a unit test's inputs.
pub(crate) fn seed_scripts() -> Vec<(&'static str, Vec<u8>)> {
    use crate::wire::Target;
    const B: u8 = 0x80;
    let call = |question, target, method| Message::Call { question, target, interface: 1, method, caps: Vec::new() };
    let hostile = |side: u8, messages: &[Message]| {
        let mut script = Vec::new();
        for message in messages {
            script.push(side);
            script.extend(postcard::to_stdvec(message).expect("a message encodes"));
            script.extend([1, 7]);
        }
        script.extend([side | 7, 0]);
        script
    };
    // Six writes to A's first producer.
    let writes: Vec<u8> = (1..=6).flat_map(|item| [9, 0, item]).collect();
    vec![
        // A pipelined chain of three NewObject calls, then quiet.
        ("pipelined_chain", vec![2, 0, 1, 0, 3, 0, 0, 2, 1, 1, 2, 3, 1, 0, 2, 2, 1, 4, 7, 0]),
        // A held call dropped before it returns (Finish, cancel), answered late.
        ("finish_cancels", vec![2, 0, 2, 4, 7, 0, 4, 0, 7, 0, B | 6, 1, B | 7, 0]),
        // An object sent three times and kept, then released.
        ("release_count", vec![2, 0, 3, 1, 2, 0, 3, 3, 2, 0, 3, 5, 7, 0, B | 7, 0, 7, 0]),
        // Calls on a promise that resolves to an object back home (embargo).
        ("embargo", vec![2, 0, 0, 1, 3, 0, 0, 7, 1, 2, 1, 0, 2, 7, 10, 2, 1, 0, 4, 7, 0]),
        // Calls both ways, a capability dropped, everything answered.
        ("both_ways", vec![2, 0, 1, 0, B | 2, 0, 2, 1, 3, 0, 0, 5, 1, B | 6, 0, 7, 0, 6, 1, 7, 0]),
        ("reused_question", hostile(B, &[call(5, Target::Export(0), 2), call(5, Target::Export(0), 2)])),
        (
            "finish_unknown",
            hostile(
                B,
                &[call(0, Target::Export(0), 0), Message::Finish { question: 0 }, Message::Finish { question: 9 }],
            ),
        ),
        (
            "early_disembargo",
            hostile(
                B,
                &[
                    call(0, Target::Export(0), 2),
                    Message::Disembargo { target: Target::Answer { question: 0, cap: 0 }, id: 0 },
                ],
            ),
        ),
        (
            "unknown_return",
            hostile(0, &[Message::Return { question: 3, result: Ok(vec![CapDescriptor::SenderHosted(4)]) }]),
        ),
        (
            "bad_release",
            hostile(B, &[Message::Release { export: 0, count: u32::MAX }, Message::DisembargoReply { id: 1 }]),
        ),
        (
            "pings_and_streams",
            hostile(0, &[Message::Ping(1), Message::Pong(2), Message::StreamEnd { stream: 3, error: None }]),
        ),
        // A stream A produces, B keeps: a window of 4 in batches of 2; reads, a close.
        (
            "stream_window",
            [&[8, 0, 0x13, 7, 0], &writes[..], &[7, 0, B | 10, 0, 7, 0, 11, 0, 0, 7, 0, B | 10, 0, 7, 0]].concat(),
        ),
        // A writer end sent to B: B writes, A reads, B aborts.
        ("stream_writer", vec![8, 0, 0x17, 7, 0, B | 9, 0, 5, B | 9, 0, 6, 7, 0, 10, 0, B | 11, 0, 2, 7, 0, 10, 0]),
        // B cancels a stream A produces; A writes again, then lets go of it.
        ("stream_cancel", vec![8, 0, 0x13, 7, 0, 9, 0, 1, 7, 0, B | 12, 0, 7, 0, 9, 0, 2, 13, 0, 7, 0]),
    ]
}
