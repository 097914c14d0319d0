//! Issue 10, finding 6: 100k calls, each cancelled at once (the promise
//! dropped right after the call), start no handler and leave memory flat,
//! on a local object and through a connection.
//!
//! Memory is measured with a counting global allocator (alone in this test
//! binary, one test, so nothing else allocates meanwhile): the bytes live
//! after a warm-up against the bytes live after the 100k calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::eventual;
use rpc_tests::Via;

struct Counting;

/// Bytes allocated and not yet freed, by everything in the process.
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; counting
// touches only an atomic, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

#[eventual]
pub trait Work {
    /// Would take an hour; counts its starts.
    async fn work(&self, payload: Vec<u8>) -> u64;
    /// Answers at once: a barrier behind earlier calls (E-order).
    fn ping(&self) -> u32;
}

struct Worker {
    starts: Arc<AtomicUsize>,
}

impl Work for Worker {
    async fn work(&self, payload: Vec<u8>) -> u64 {
        self.starts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        payload.len() as u64
    }
    fn ping(&self) -> u32 {
        7
    }
}

/// Calls `work` `n` times, dropping each promise at once, `batch` at a time
/// with a round trip between batches (so a connection's calls in flight stay
/// within its limit).
async fn cancelled_calls(worker: &WorkProxy, n: usize) {
    const BATCH: usize = 1000;
    for _ in 0..n / BATCH {
        for _ in 0..BATCH {
            drop(worker.work(vec![0xAB; 100]));
        }
        assert_eq!(worker.ping().await.unwrap(), 7);
    }
}

/// Waits (bounded) until live bytes come back within `slack` of `baseline`; returns them.
async fn settled(baseline: i64, slack: i64) -> i64 {
    for _ in 0..200 {
        if live() <= baseline + slack {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live()
}

#[tokio::test]
async fn cancelled_calls_start_no_handler_and_leave_memory_flat() {
    const N: usize = 100_000;
    const SLACK: i64 = 64 << 10;
    for via in Via::BOTH {
        let starts = Arc::new(AtomicUsize::new(0));
        let (worker, conns) = via.reach(WorkProxy::new(Worker { starts: starts.clone() })).await;
        // Warm up: tables, buffers and queues reach their working size.
        cancelled_calls(&worker, 20_000).await;
        let baseline = settled(live(), 0).await;

        cancelled_calls(&worker, N).await;
        let after = settled(baseline, SLACK).await;
        let grown = after - baseline;
        println!(
            "{via:?}: {N} cancelled calls; live bytes {baseline} -> {after} ({grown:+}); handlers started: {}",
            starts.load(Ordering::SeqCst)
        );
        assert_eq!(starts.load(Ordering::SeqCst), 0, "{via:?}: a cancelled call started its handler");
        assert!(grown <= SLACK, "{via:?}: {N} cancelled calls left {grown} bytes more live (slack {SLACK})");
        drop((worker, conns));
    }
}
