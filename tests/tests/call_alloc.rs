//! A plain call allocates a bounded, small number of times end to end (the
//! caller's and the callee's side together), measured with a per-thread
//! counting allocator on a current-thread runtime over an in-memory duplex.
//! It is 7: the caller's argument `Vec<u8>` (the test's clone), the promise,
//! the answer's sink, the handler's future, the decoded argument, the
//! reply's payload and the decoded result (a call's arguments go into its
//! frame straight from the buffer they were encoded into); tarpc's
//! benchmark figure is 14. This test keeps it from creeping up unnoticed.

use rpc_core::{eventual, Config};
use rpc_tests::connect_pair;
use rpc_tests::thread_alloc::{allocations, ThreadCounting};

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

#[eventual]
pub trait Echo {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Parrot;

impl Echo for Parrot {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// The most allocations one 64-byte echo call may make, both sides counted.
const MAX_PER_CALL: f64 = 7.5;

#[test]
fn a_unary_call_allocates_at_most_fourteen_times_end_to_end() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let per_call = runtime.block_on(async {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (_server, _client, echo) = connect_pair(a, b, EchoProxy::new(Parrot), Config::default()).await.unwrap();
        let payload = vec![7u8; 64];
        // Warm up: buffers, tables and the serving task reach their steady size.
        for _ in 0..200 {
            echo.echo(payload.clone()).await.unwrap();
        }
        const CALLS: u64 = 1000;
        let before = allocations();
        for _ in 0..CALLS {
            let reply = echo.echo(payload.clone()).await.unwrap();
            assert_eq!(reply.len(), 64);
        }
        (allocations() - before) as f64 / CALLS as f64
    });
    println!("{per_call:.2} allocations per call");
    assert!(per_call <= MAX_PER_CALL, "{per_call:.2} allocations per call, over the bound of {MAX_PER_CALL}");
}
