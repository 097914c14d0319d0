//! What a connection reports about itself: a metrics snapshot, and the
//! tracing events for its close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{ErrorKind, RpcError};

/// A snapshot of one connection's activity, from [`Connection::metrics`].
///
/// Counts are read under the connection's lock, so they are consistent with
/// each other; byte counts are running totals since the handshake began.
///
/// [`Connection::metrics`]: crate::Connection::metrics
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, Connection};
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
///
/// struct Parrot;
/// impl Echo for Parrot {
///     async fn echo(&self, text: String) -> String { text }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let (a, b) = tokio::io::duplex(64 << 10);
/// let server = Connection::builder().bootstrap(EchoProxy::new(Parrot)).open(a);
/// let client = Connection::builder().open(b);
/// let (_server, client) = tokio::try_join!(server, client)?;
/// let echo: EchoProxy = client.bootstrap();
/// echo.echo("hi".into()).await?;
///
/// let metrics = client.metrics();
/// assert_eq!(metrics.calls_in_flight, 0);
/// assert!(metrics.bytes_out > 0 && metrics.bytes_in > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionMetrics {
    /// Our calls sent and still waiting for their reply.
    pub calls_in_flight: usize,
    /// The peer's calls whose handlers are running here.
    pub calls_running: usize,
    /// Stream halves (`Sequence`, `Bytes` and their writers) open on this
    /// connection, either direction.
    pub streams_open: usize,
    /// Objects we export to the peer (not counting the bootstrap).
    pub exports: usize,
    /// Capabilities we hold from the peer.
    pub imports: usize,
    /// Bytes read from the transport.
    pub bytes_in: u64,
    /// Bytes written to the transport.
    pub bytes_out: u64,
    /// The round trip of the last keepalive ping the peer answered. Pings
    /// go out only when the connection has been quiet for
    /// [`Config::keepalive_interval`](crate::Config::keepalive_interval), so
    /// this is `None` on a connection that was never idle that long.
    pub last_keepalive_rtt: Option<Duration>,
    /// Whether the connection is closed.
    pub closed: bool,
}

/// Running byte totals, updated by the reader and writer tasks.
#[derive(Default)]
pub(crate) struct IoCounters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl IoCounters {
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn wrote(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn fill(&self, metrics: &mut ConnectionMetrics) {
        metrics.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        metrics.bytes_out = self.bytes_out.load(Ordering::Relaxed);
    }
}

/// A process-wide number for each connection's span, so log lines of one
/// connection can be told from another's.
pub(crate) fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The event for a connection's close: a warning for a protocol violation
/// or a broken limit (ours or the peer's), info for an ordinary end.
pub(crate) fn trace_close(span: &tracing::Span, reason: &RpcError, told_peer: bool) {
    let kind = reason.kind();
    match kind {
        ErrorKind::Protocol | ErrorKind::LimitExceeded => {
            tracing::warn!(parent: span, ?kind, reason = %reason, told_peer, "connection closed: protocol violation or limit")
        }
        _ => tracing::info!(parent: span, ?kind, reason = %reason, told_peer, "connection closed"),
    }
}
