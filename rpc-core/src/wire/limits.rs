//! The limits each side advertises in its handshake: part of the wire
//! format (they travel in the `Hello`), so they live at the bottom layer.

use serde::{Deserialize, Serialize};

/// Limits a side enforces on what its peer sends; both sides advertise theirs
/// in the handshake so a well-behaved peer stays within them.
///
/// Only the receiving side enforces them: a frame over `max_frame_size` is
/// also refused by the sender before it leaves, but a value over the peer's
/// `max_decoded_size` is sent and fails on arrival (the sender cannot know the
/// receiver's charge without decoding it).
///
/// # Examples
///
/// ```
/// use rpc_core::Limits;
///
/// let limits = Limits { max_outstanding_calls: 64, ..Limits::default() };
/// assert_eq!(limits.max_frame_size, Limits::default().max_frame_size);
/// assert_eq!(limits.max_decoded_size, 4 * u64::from(limits.max_frame_size));
///
/// // The defaults, as each field documents them:
/// let d = Limits::default();
/// assert_eq!(d.max_frame_size, 16 << 20);
/// assert_eq!(d.max_outstanding_calls, 4096);
/// assert_eq!(d.max_exports, 65_536);
/// assert_eq!(d.max_depth, 64);
/// assert_eq!(d.max_decoded_size, 64 << 20);
/// assert_eq!(d.max_stream_window, 65_536);
/// assert_eq!(d.max_stream_window_bytes, 16 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame accepted, in bytes (length prefix excluded).
    ///
    /// A frame over the limit is a protocol violation: the receiver closes
    /// the connection. A well-behaved sender never writes one. A call
    /// whose arguments would exceed the peer's limit fails alone with
    /// [`ErrorKind::LimitExceeded`](crate::ErrorKind::LimitExceeded),
    /// naming the size and the limit, before anything is sent. A reply
    /// that would exceed it reaches the caller as that same error. Either
    /// way the connection stays up. Bulk data belongs in a
    /// [`Bytes`](crate::Bytes) stream or a [`Sequence`](crate::Sequence),
    /// which travel in bounded messages whatever their total size.
    ///
    /// Default: 16 MiB (`16 << 20`).
    pub max_frame_size: u32,
    /// Calls from the peer that may be unanswered at once; more get a
    /// `LimitExceeded` error reply.
    ///
    /// Default: 4096.
    pub max_outstanding_calls: u32,
    /// Capabilities the peer may export to us at once; more close the connection.
    ///
    /// Default: 65 536.
    pub max_exports: u32,
    /// Deepest nesting of compound values accepted in a payload.
    ///
    /// Default: 64.
    pub max_depth: u32,
    /// Largest decoded size of one message, in bytes: a frame header, a
    /// call's arguments, a result, or one sequence item. Charged while
    /// decoding, before memory is allocated for it: every value costs the
    /// `size_of` of its Rust type plus its string or byte contents, every
    /// sequence element or map entry at least one byte more (so zero-sized
    /// elements are paid for too). A value's fields are charged once, with
    /// it, so the charge is close to the real size; memory held may reach
    /// about twice the limit (a vector's spare capacity), briefly three times
    /// (while it reallocates).
    ///
    /// Exceeding it fails the call with `LimitExceeded` (the connection stays
    /// up); an item over it cancels its sequence (the reader sees
    /// `LimitExceeded`); a frame header over it closes the connection.
    ///
    /// Default: 64 MiB, four times the default `max_frame_size`. Raise it
    /// with `max_frame_size` when large values are expected, since a small
    /// wire encoding (varints, `None`s) may decode to several times its size.
    pub max_decoded_size: u64,
    /// Largest sequence window, in items: a capacity a peer declares (in a
    /// stream descriptor or a window update) is capped to this, so a peer
    /// cannot make us queue or buffer more items than we chose to.
    ///
    /// Default: 65 536 items.
    pub max_stream_window: u32,
    /// Largest stream window in bytes: caps a byte stream's window, and
    /// bounds the bytes of sequence items one stream may have unread at the
    /// consumer. A producer keeps the encoded items it has sent and not seen
    /// acknowledged within the peer's value (one item larger than it may
    /// travel alone); a consumer closes the connection when a peer sends
    /// past it.
    ///
    /// Default: 16 MiB.
    pub max_stream_window_bytes: u32,
}

/// Default [`Limits::max_frame_size`]: 16 MiB.
const DEFAULT_MAX_FRAME: u32 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_FRAME,
            max_outstanding_calls: 4096,
            max_exports: 65_536,
            max_depth: 64,
            max_decoded_size: 4 * DEFAULT_MAX_FRAME as u64,
            max_stream_window: 65_536,
            max_stream_window_bytes: 16 << 20,
        }
    }
}
