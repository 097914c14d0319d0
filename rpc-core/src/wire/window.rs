//! The consumer's flow-control settings, as they travel in stream
//! descriptors and window updates.

use serde::{Deserialize, Serialize};

use super::Limits;

/// The consumer's flow-control settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// Items that may be unread at once.
    pub capacity: u32,
    /// Items per network message, at most.
    pub batch: u32,
}

impl Window {
    /// A window with both settings at least 1.
    pub(crate) fn sane(self) -> Window {
        Window { capacity: self.capacity.max(1), batch: self.batch.max(1) }
    }

    /// This window within `limits`, whoever declared it: the capacity at
    /// most the largest window (in items, or bytes for a byte stream), the
    /// batch at most the capacity.
    pub(crate) fn capped(self, limits: &Limits, bytes: bool) -> Window {
        let max = if bytes { limits.max_stream_window_bytes } else { limits.max_stream_window }.max(1);
        let capacity = self.capacity.clamp(1, max);
        Window { capacity, batch: self.batch.clamp(1, capacity) }
    }
}
