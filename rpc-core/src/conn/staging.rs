//! The lanes with items the protocol has not taken in yet.
//!
//! A sequence writer puts small items into its producer's lane
//! (`proto/lane.rs`) without any lock. The first item after the protocol
//! last took the lane in lists the lane's stream here, under a small lock of
//! its own, and whoever next locks the connection takes every listed lane in
//! first (`ConnShared::guard`). So the protocol as seen under the lock always
//! holds every item written before, and a writer's later commands (close,
//! abort, a flush that must wait) come after its items. A writer that finds
//! the list empty wakes the connection's writer task, which locks the
//! connection to emit.
//!
//! Lock order: the connection, then this list; a writer takes the list alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Streams whose lanes were listed, in the order listed.
#[derive(Default)]
pub(crate) struct Staging {
    /// Set while `listed` holds anything: checked without the mutex.
    any: AtomicBool,
    listed: Mutex<Vec<u32>>,
}

impl Staging {
    /// Lists stream `id`'s lane; returns whether the list was empty (so the
    /// connection's writer task must be woken to take it in).
    pub(crate) fn list(&self, id: u32) -> bool {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = listed.is_empty();
        listed.push(id);
        if was_empty {
            self.any.store(true, Ordering::Release);
        }
        was_empty
    }

    /// Whether anything is listed (a hint: `take` decides).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Every listed stream, in order; the list is empty afterwards.
    pub(crate) fn take(&self) -> Vec<u32> {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *listed)
    }
}
