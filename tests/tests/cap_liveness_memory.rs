//! Watching a pending capability in a `select!` loop (each turn drops its
//! `when_broken` future) holds no more memory after 100,000 turns than after
//! a few: the waiters of dropped watches are pruned. Measured with a
//! counting allocator, alone in this test binary.

use rpc_core::{eventual, Config, RpcError};
use rpc_tests::connect_pair;
use rpc_tests::peak_alloc::{reset_peak, PeakCounting};

#[global_allocator]
static GLOBAL: PeakCounting = PeakCounting;

#[eventual]
pub trait Parent {
    /// Never returns a child: capabilities pipelined on it stay pending.
    async fn never(&self) -> Result<ParentProxy, RpcError>;
}

struct Waits;

impl Parent for Waits {
    async fn never(&self) -> Result<ParentProxy, RpcError> {
        std::future::pending().await
    }
}

/// Live heap bytes gained over `turns` dropped watches of `child`.
async fn growth(child: &ParentProxy, turns: usize) -> isize {
    let before = reset_peak();
    for _ in 0..turns {
        tokio::select! {
            biased;
            _ = tokio::task::yield_now() => {}
            _ = child.when_broken() => panic!("it is not broken"),
        }
    }
    reset_peak() as isize - before as isize
}

#[tokio::test]
async fn dropped_watches_of_a_pending_capability_do_not_pile_up() {
    for remote in [false, true] {
        let local = ParentProxy::new(Waits);
        let (_conns, parent) = if remote {
            let (a, b) = tokio::io::duplex(1 << 16);
            let (server, client, proxy) = connect_pair(a, b, local, Config::default()).await.unwrap();
            (Some((server, client)), proxy)
        } else {
            (None, local)
        };
        let promise = parent.never();
        let child = promise.pipeline();
        // Warm up: the waiter list reaches its steady size.
        growth(&child, 1_000).await;
        let grown = growth(&child, 100_000).await;
        // Each kept waiter would hold ~100 bytes: 100,000 of them ~10 MB.
        assert!(grown < 256 << 10, "remote {remote}: {grown} bytes kept for 100,000 dropped watches");
        drop(promise);
    }
}
