//! A whole connection end to end: the fuzz input is what a client writes
//! after a valid Hello to a real server (see `rpc_fuzz::harness`). Crashes
//! are panics; hangs are a final Ping left unanswered on an open connection
//! (a panic in the harness) or a blocked thread (libFuzzer's `-timeout`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rpc_fuzz::harness::run_connection(data);
});
