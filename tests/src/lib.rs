//! Test support for the integration tests: transports with injected latency
//! (for exact round-trip counts under tokio's paused clock), connection pairs,
//! and small helpers.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rpc_core::{Capability, Config, Connection, RpcError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// One direction of a [`latency_pipe`]: bytes written become readable
/// `delay` later (by tokio's clock, so paused time makes it exact).
#[derive(Default)]
struct Lane {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    reader: Option<Waker>,
    closed: bool,
}

/// An in-memory, full-duplex byte stream whose every write arrives after `delay`.
pub struct LatencyStream {
    incoming: Arc<Mutex<Lane>>,
    outgoing: Arc<Mutex<Lane>>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    writes: Arc<AtomicUsize>,
    partitioned: Arc<AtomicBool>,
}

/// A pair of connected [`LatencyStream`]s; a round trip costs `2 * one_way`.
pub fn latency_pipe(one_way: Duration) -> (LatencyStream, LatencyStream) {
    let (_, a, b) = partitionable_pipe(one_way);
    (a, b)
}

/// A [`latency_pipe`] with a switch that cuts it: see [`Partition`].
pub fn partitionable_pipe(one_way: Duration) -> (Partition, LatencyStream, LatencyStream) {
    let a = Arc::new(Mutex::new(Lane::default()));
    let b = Arc::new(Mutex::new(Lane::default()));
    let partitioned = Arc::new(AtomicBool::new(false));
    let end = |incoming: &Arc<Mutex<Lane>>, outgoing: &Arc<Mutex<Lane>>| LatencyStream {
        incoming: incoming.clone(),
        outgoing: outgoing.clone(),
        delay: one_way,
        sleep: None,
        writes: Arc::new(AtomicUsize::new(0)),
        partitioned: partitioned.clone(),
    };
    let switch = Partition { partitioned: partitioned.clone(), lanes: [a.clone(), b.clone()] };
    (switch, end(&a, &b), end(&b, &a))
}

/// The switch of a [`partitionable_pipe`]. While partitioned, writes are
/// accepted and held (like a TCP send buffer) and nothing is delivered
/// either way, not even an end of stream; on repair everything held arrives,
/// in order.
#[derive(Clone)]
pub struct Partition {
    partitioned: Arc<AtomicBool>,
    lanes: [Arc<Mutex<Lane>>; 2],
}

impl Partition {
    /// Stops delivery both ways.
    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
    }

    /// Resumes delivery: what was held arrives, in order.
    pub fn repair(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
        for lane in &self.lanes {
            if let Some(waker) = lane.lock().unwrap().reader.take() {
                waker.wake();
            }
        }
    }
}

impl LatencyStream {
    /// A counter of `poll_write` calls that delivered bytes (socket writes).
    pub fn write_counter(&self) -> Arc<AtomicUsize> {
        self.writes.clone()
    }
}

impl AsyncRead for LatencyStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let due = {
                let mut lane = self.incoming.lock().unwrap();
                if self.partitioned.load(Ordering::SeqCst) {
                    // `Partition::repair` wakes us.
                    lane.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let now = Instant::now();
                let closed = lane.closed;
                match lane.chunks.front_mut() {
                    Some((at, bytes)) if *at <= now => {
                        let n = bytes.len().min(buf.remaining());
                        buf.put_slice(&bytes[..n]);
                        bytes.drain(..n);
                        if bytes.is_empty() {
                            lane.chunks.pop_front();
                        }
                        return Poll::Ready(Ok(()));
                    }
                    Some((at, _)) => {
                        let at = *at;
                        // Also woken by a repair (the sleep may then be stale).
                        lane.reader = Some(cx.waker().clone());
                        at
                    }
                    None if closed => return Poll::Ready(Ok(())),
                    None => {
                        lane.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for LatencyStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut lane = self.outgoing.lock().unwrap();
        // Across a partition nobody can tell us the peer is gone.
        if lane.closed && !self.partitioned.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        lane.chunks.push_back((Instant::now() + self.delay, data.to_vec()));
        if let Some(waker) = lane.reader.take() {
            waker.wake();
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut lane = self.outgoing.lock().unwrap();
        lane.closed = true;
        if let Some(waker) = lane.reader.take() {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LatencyStream {
    fn drop(&mut self) {
        for lane in [&self.outgoing, &self.incoming] {
            let mut lane = lane.lock().unwrap();
            lane.closed = true;
            if let Some(waker) = lane.reader.take() {
                waker.wake();
            }
        }
    }
}

/// Opens a connection pair over `a`/`b`; the first side serves `bootstrap`.
pub async fn connect_pair<IO, C>(
    a: IO,
    b: IO,
    bootstrap: C,
    config: Config,
) -> Result<(Connection, Connection, C), RpcError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    C: Capability,
{
    let server = Connection::builder().config(config.clone()).bootstrap(bootstrap).open(a);
    let client = Connection::builder().config(config).open(b);
    let (server, client) = tokio::try_join!(server, client)?;
    let cap = client.bootstrap();
    Ok((server, client, cap))
}

/// How a capability test reaches its object: directly, or through a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The proxy wraps the local object.
    Local,
    /// The proxy is a bootstrap import over an in-memory connection.
    Remote,
}

impl Via {
    /// Both ways, for running one test body against each.
    pub const BOTH: [Via; 2] = [Via::Local, Via::Remote];

    /// Returns `cap` as seen through this path, plus the connections to keep alive.
    pub async fn reach<C: Capability>(self, cap: C) -> (C, Option<(Connection, Connection)>) {
        match self {
            Via::Local => (cap, None),
            Via::Remote => {
                let (a, b) = tokio::io::duplex(1 << 20);
                let (server, client, remote) = connect_pair(a, b, cap, Config::default()).await.expect("connect");
                (remote, Some((server, client)))
            }
        }
    }
}

/// Counts drops of a value: put one in an object and watch the counter.
#[derive(Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    /// A token that bumps the counter when dropped.
    pub fn token(&self) -> DropToken {
        DropToken(self.0.clone())
    }

    /// How many tokens were dropped.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits (bounded, 60 s of tokio time: only a hang trips it) until `n` tokens were dropped.
    pub async fn wait_for(&self, n: usize) -> bool {
        for _ in 0..6000 {
            if self.count() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.count() >= n
    }
}

/// See [`DropCounter`].
pub struct DropToken(Arc<AtomicUsize>);

impl Drop for DropToken {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Mirror of the wire format, for tests that build frames by hand.
pub mod wire_mirror;

/// A raw TCP client that speaks the protocol by hand, for hostile-peer tests.
pub mod raw_peer;

pub mod peak_alloc;
pub mod thread_alloc;
pub mod trace_capture;

/// Resumption test support: Redis on a free port, child guards, a cutting relay.
pub mod resume_support;

/// Stream test support: bounded waits and the routes a writer/reader pair can take.
pub mod stream_support;

/// The `Lab` interface and pairs of sequence ends, for the `sequence_*` tests.
pub mod sequence_lab;

/// The `Depot` interface, the byte pattern and pairs of byte-stream ends, for the `bytes_*` tests.
pub mod bytes_lab;

/// The server, interfaces and raw client of the `hostile_*` raw-frame tests.
pub mod hostile_server;

/// The interfaces and implementations of the `cap_*` capability-passing tests.
pub mod cap_lab;
