//! Connection settings and the limits each side advertises in its handshake.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits a side enforces on what its peer sends; both sides advertise theirs
/// in the handshake so a well-behaved peer stays within them.
///
/// # Examples
///
/// ```
/// use rpc_core::Limits;
///
/// let limits = Limits { max_outstanding_calls: 64, ..Limits::default() };
/// assert_eq!(limits.max_frame_size, Limits::default().max_frame_size);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame accepted, in bytes (length prefix excluded).
    pub max_frame_size: u32,
    /// Calls from the peer that may be unanswered at once; more get a
    /// `LimitExceeded` error reply.
    pub max_outstanding_calls: u32,
    /// Capabilities the peer may export to us at once; more close the connection.
    pub max_exports: u32,
    /// Deepest nesting of compound values accepted in a payload.
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame_size: 16 << 20, max_outstanding_calls: 4096, max_exports: 65_536, max_depth: 64 }
    }
}

/// Settings of one connection.
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
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// What we accept from the peer.
    pub limits: Limits,
    /// Send a ping when nothing was sent for this long.
    pub keepalive_interval: Duration,
    /// Close with `Disconnected` when nothing was received for this long.
    pub keepalive_timeout: Duration,
    /// How long the opening handshake may take.
    pub handshake_timeout: Duration,
    /// Nagle delay for sequences: wait this long before sending stream data
    /// that has no call frames to ride along with, so items written across
    /// several turns share a message. `None` (the default) sends at once.
    pub stream_nagle: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            stream_nagle: None,
        }
    }
}
