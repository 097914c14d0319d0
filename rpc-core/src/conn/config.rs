//! Connection settings and the limits each side advertises in its handshake.

use std::time::Duration;

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

/// Settings of one connection. Every field documents its default; start
/// from [`Config::default()`] and change what you need.
///
/// A side pings when it has sent nothing for `keepalive_interval` and
/// closes the connection when it has received nothing for
/// `keepalive_timeout`: with the defaults a dead peer is noticed within
/// 15 s. Use a shorter timeout for interactive programs (the game example
/// pings every 500 ms and gives up after 2 s); keep it a few intervals long
/// so one delayed ping does not close a healthy connection.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rpc_core::Config;
///
/// let config = Config {
///     keepalive_interval: Duration::from_secs(1),
///     keepalive_timeout: Duration::from_secs(3),
///     ..Config::default()
/// };
/// assert_eq!(config.limits, rpc_core::Limits::default());
///
/// // The defaults, as each field documents them:
/// let d = Config::default();
/// assert_eq!(d.keepalive_interval, Duration::from_secs(5));
/// assert_eq!(d.keepalive_timeout, Duration::from_secs(15));
/// assert_eq!(d.handshake_timeout, Duration::from_secs(10));
/// assert_eq!(d.stream_nagle, None);
/// assert_eq!(d.frame_timeout, Duration::from_secs(5));
/// assert_eq!(d.partial_frames_budget, 256 << 20);
/// assert_eq!(d.max_unsent_output, 4 << 20);
/// assert_eq!(d.write_stall_timeout, Duration::from_secs(30));
/// assert_eq!(d.ping_min_interval, Duration::from_millis(100));
/// assert_eq!(d.max_ping_strikes, 10);
/// assert_eq!(d.stream_buffer_budget, 256 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// What we accept from the peer, advertised in the handshake.
    ///
    /// Default: [`Limits::default()`] (each field of [`Limits`] gives its
    /// default).
    pub limits: Limits,
    /// Send a ping when nothing was sent for this long.
    ///
    /// Default: 5 s.
    pub keepalive_interval: Duration,
    /// Close with `Disconnected` when nothing was received for this long,
    /// so a peer that went silent (a dead host, a cut cable) is noticed
    /// within this time even when no call is waiting.
    ///
    /// Default: 15 s (three keepalive intervals).
    pub keepalive_timeout: Duration,
    /// How long the opening handshake may take.
    ///
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// Nagle delay for sequences: wait this long before sending stream data
    /// that has no call frames to ride along with, so items written across
    /// several turns share a message.
    ///
    /// Default: `None`, send at once.
    pub stream_nagle: Option<Duration>,
    /// How long a frame may take to arrive once its first byte has: a peer
    /// that announces a frame and stalls is closed with a `Timeout` reason
    /// after this long, whatever keepalive says. A frame of
    /// `max_frame_size` bytes must arrive at `max_frame_size / frame_timeout`
    /// bytes per second or faster.
    ///
    /// Default: 5 s.
    pub frame_timeout: Duration,
    /// Process-wide cap, in bytes, on read-buffer memory held for frames that
    /// have not fully arrived. A frame's buffer grows as its
    /// bytes arrive, never on its announced length; frames no larger than a
    /// read chunk (64 KiB) need nothing from this budget, larger ones take
    /// their growth from it and give it back when complete. A connection that
    /// finds the budget spent stops reading until some is given back or its
    /// `frame_timeout` closes it. The count is shared by every connection in
    /// the process; each compares it with the cap of its own `Config`.
    ///
    /// Default: 256 MiB.
    pub partial_frames_budget: usize,
    /// Most bytes of output we owe the peer (replies to its calls, pongs,
    /// embargo echoes) that may wait unsent because the peer is not reading.
    /// Over this bound we stop taking calls, pings and embargo requests off
    /// the wire until the peer reads. Returns, stream data and the like are
    /// still read. Our own calls and stream data do not count: the
    /// application decides how much of those it queues.
    ///
    /// Default: 4 MiB.
    pub max_unsent_output: usize,
    /// How long output we owe may stay over [`Config::max_unsent_output`]
    /// (the peer not reading while it asks for more) before we close the
    /// connection with a `Timeout` error that says why. After a close, this
    /// is also the longest we keep trying to write the rest of our output.
    ///
    /// Default: 30 s.
    pub write_stall_timeout: Duration,
    /// Pings from the peer closer together than this count as strikes. A
    /// framework peer pings only after it has sent nothing for its
    /// `keepalive_interval`, so set this below the shortest keepalive
    /// interval your peers use. `Duration::ZERO` turns strikes off.
    ///
    /// Default: 100 ms.
    pub ping_min_interval: Duration,
    /// Strikes (see [`Config::ping_min_interval`]) allowed in a row. One
    /// more closes the connection with `LimitExceeded`, "too many pings".
    /// A ping that keeps the interval clears the strikes.
    ///
    /// Default: 10.
    pub max_ping_strikes: u32,
    /// Most bytes of received stream data all the streams of this
    /// connection may hold unread at once. Each stream is
    /// held to its window; this bounds their sum: a peer that sends past it
    /// is cut off with `LimitExceeded`.
    ///
    /// Default: 256 MiB.
    pub stream_buffer_budget: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            stream_nagle: None,
            frame_timeout: Duration::from_secs(5),
            partial_frames_budget: 256 << 20,
            max_unsent_output: 4 << 20,
            write_stall_timeout: Duration::from_secs(30),
            ping_min_interval: Duration::from_millis(100),
            max_ping_strikes: 10,
            stream_buffer_budget: 256 << 20,
        }
    }
}
