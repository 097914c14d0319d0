//! Connection settings. The limits each side advertises in its handshake
//! ([`Limits`]) are part of the wire format and live in `wire/`.

use std::time::Duration;

pub use crate::wire::Limits;

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
