//! The stream item of the throughput and cost probes: a small struct, 14
//! bytes of fields, the same in every probe so their figures compare.

use serde::{Deserialize, Serialize};

/// A small struct, as a stream item.
///
/// ```
/// let first = rpc_examples::small::item(0);
/// assert_eq!(first.id, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Small {
    /// The item's index.
    pub id: u64,
    /// Derived from the index.
    pub x: u32,
    /// Derived from the index.
    pub flags: u16,
}

/// Item `i` of a probe's stream.
pub fn item(i: u64) -> Small {
    Small { id: i, x: i as u32 ^ 0x5a5a, flags: (i % 7) as u16 }
}
