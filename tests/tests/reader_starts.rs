//! Calls a connection's reader delivers to local objects are started by the
//! reader itself, once it has handled every frame that arrived (see
//! `rpc-core/src/cap/local.rs`). User code still runs as if each object had
//! its own task: the calls a handler makes go to their objects' tasks, so a
//! handler may even block its thread on one.

use std::time::Duration;

use rpc_core::{eventual, Config};
use rpc_tests::connect_pair;

#[eventual]
pub trait Front {
    /// Asks `Back` for `2 * n`, blocking this thread until it answers.
    fn relay(&self, n: u32) -> u32;
}

#[eventual]
pub trait Back {
    async fn double(&self, n: u32) -> u32;
}

struct Relay {
    back: BackProxy,
}

impl Front for Relay {
    fn relay(&self, n: u32) -> u32 {
        let back = self.back.clone();
        // Bounded, so a broken build fails here instead of hanging the runtime.
        let answer = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(tokio::time::timeout(Duration::from_secs(2), back.double(n)))
        });
        match answer {
            Ok(Ok(doubled)) => doubled,
            _ => 0,
        }
    }
}

struct Doubler;

impl Back for Doubler {
    async fn double(&self, n: u32) -> u32 {
        2 * n
    }
}

/// The reader starts `relay`, whose handler blocks on a call to a local
/// neighbour. Were that call collected for the reader too, it would wait for
/// the blocked handler to return: it must go to the neighbour's own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_started_by_the_reader_can_block_on_a_local_call() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let front = FrontProxy::new(Relay { back: BackProxy::new(Doubler) });
    let (_server, _client, front) = connect_pair(a, b, front, Config::default()).await.expect("connect");
    for n in 1..=3 {
        assert_eq!(front.relay(n).await.unwrap(), 2 * n, "call {n}");
    }
}
