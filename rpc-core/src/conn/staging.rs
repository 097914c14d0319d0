//! Stream items staged without the connection's lock.
//!
//! Every item a sequence writer wrote used to take the connection's lock to
//! be queued (a lock, a table lookup and the bookkeeping of the lock, about
//! a third of what a small item cost its producer). An item that holds no
//! capability is staged here instead, under a lock of its own that only
//! writers and the taker share, and whoever next locks the connection takes
//! everything staged into the protocol first (`ConnShared::lock`). So the
//! protocol as seen under the lock always holds every item staged before,
//! and a writer's later commands (close, abort, a flush that must wait)
//! come after its items. A writer that finds the staging empty wakes the
//! connection's writer task, which locks the connection to emit.
//!
//! Lock order: the connection, then the staging; a writer takes the staging
//! alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;

/// Items staged, per stream, in the order written.
#[derive(Default)]
pub(crate) struct Staging {
    /// Set while `runs` holds anything: checked without the mutex.
    any: AtomicBool,
    runs: Mutex<Vec<Run>>,
}

/// Consecutive items of one stream: their bytes back to back, and lengths.
pub(crate) struct Run {
    pub(crate) id: u32,
    pub(crate) bytes: BytesMut,
    pub(crate) lens: Vec<u32>,
}

impl Staging {
    /// Stages one item of stream `id`; returns whether the staging was empty
    /// (so the connection's writer task must be woken to take it).
    pub(crate) fn stage(&self, id: u32, item: &[u8]) -> bool {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = runs.is_empty();
        match runs.last_mut() {
            Some(run) if run.id == id => {
                run.bytes.extend_from_slice(item);
                run.lens.push(item.len() as u32);
            }
            _ => {
                let mut bytes = BytesMut::with_capacity(item.len().max(4 << 10));
                bytes.extend_from_slice(item);
                runs.push(Run { id, bytes, lens: vec![item.len() as u32] });
            }
        }
        if was_empty {
            self.any.store(true, Ordering::Release);
        }
        was_empty
    }

    /// Whether anything is staged (a hint: `take` decides).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Everything staged, in order; the staging is empty afterwards.
    pub(crate) fn take(&self) -> Vec<Run> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *runs)
    }
}
