//! A counting global allocator.
//!
//! Always: a per-thread allocation count (a `Cell`, no contention), so a
//! single-threaded section can count its own allocations exactly. Only while
//! [`Counting`] is on: process-wide allocation counts and live/peak bytes
//! (shared atomics, which would otherwise slow every timing run a little).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

pub struct CountingAlloc;

static ENABLED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated minus bytes freed since counting started (negative when
/// blocks from before are freed): the heap's growth since then.
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn on_alloc(size: usize) {
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    if ENABLED.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        let live = LIVE.fetch_add(size as i64, Relaxed) + size as i64;
        PEAK.fetch_max(live, Relaxed);
    }
}

#[inline]
fn on_dealloc(size: usize) {
    if ENABLED.load(Relaxed) {
        LIVE.fetch_sub(size as i64, Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Allocations made by the current thread so far.
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.with(Cell::get)
}

/// Runs `f` without counting its allocations on this thread (for test
/// transports whose allocations a real socket would not make).
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    let before = thread_allocs();
    let out = f();
    let _ = THREAD_ALLOCS.try_with(|c| c.set(before));
    out
}

/// Process-wide counting, on while this guard lives.
pub struct Counting {
    allocs_at_start: u64,
}

impl Counting {
    pub fn start() -> Counting {
        LIVE.store(0, Relaxed);
        PEAK.store(0, Relaxed);
        let allocs_at_start = ALLOCS.load(Relaxed);
        ENABLED.store(true, Relaxed);
        Counting { allocs_at_start }
    }

    /// Allocations (all threads) since `start`.
    pub fn allocs(&self) -> u64 {
        ALLOCS.load(Relaxed) - self.allocs_at_start
    }

    /// The heap's peak growth since `start`, in bytes (all threads).
    pub fn peak_bytes(&self) -> usize {
        PEAK.load(Relaxed).max(0) as usize
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        ENABLED.store(false, Relaxed);
    }
}
