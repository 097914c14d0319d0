//! A counting global allocator for allocation-count tests: allocations made
//! on the current thread. A test binary opts in with
//! `#[global_allocator] static A: ThreadCounting = ThreadCounting;` and runs
//! its measured code on a current-thread runtime, so tests running in
//! parallel on other threads do not disturb its count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator, counting allocations per thread.
pub struct ThreadCounting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LARGE_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations of at least this many bytes are also counted apart.
pub const LARGE: usize = 256 << 10;

fn note_allocation(size: usize) {
    // `try_with`: never panic inside the allocator (for example during thread teardown).
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    if size >= LARGE {
        let _ = LARGE_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

/// Allocations (including reallocations) made on this thread so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations (including reallocations) of at least [`LARGE`] bytes made
/// on this thread so far.
pub fn large_allocations() -> u64 {
    LARGE_ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting
// touches only a const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}
