//! The protocol state machine (rpc-core/src/proto/) without I/O: two
//! `Protocol`s wired to each other in simulated time (proto/pair.rs).
//!
//! Input: a script (proto/pair/script.rs): op bytes picking a side and an
//! action; hostile postcard `Message`s with arbitrary ids and trailers,
//! handed to a side as if its peer sent them; local calls, pipelining,
//! drops and answers; time passing. Checks (inside the hook): no panic,
//! the tables' invariants after every step, no livelock, and once both
//! sides close every question has an outcome and every table is empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_core::fuzzing::protocol_messages;

fuzz_target!(|data: &[u8]| {
    protocol_messages(data);
});
