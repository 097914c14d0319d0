//! An in-memory, full-duplex byte stream with a fixed one-way delay on tokio's
//! clock (with a paused clock, latencies come out exact), counting writes.
//! Copied from the integration tests' `latency_pipe` (tests/src/lib.rs).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

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
}

/// A pair of connected [`LatencyStream`]s; a round trip costs `2 * one_way`.
pub fn latency_pipe(one_way: Duration) -> (LatencyStream, LatencyStream) {
    let a = Arc::new(Mutex::new(Lane::default()));
    let b = Arc::new(Mutex::new(Lane::default()));
    let end = |incoming: &Arc<Mutex<Lane>>, outgoing: &Arc<Mutex<Lane>>| LatencyStream {
        incoming: incoming.clone(),
        outgoing: outgoing.clone(),
        delay: one_way,
        sleep: None,
        writes: Arc::new(AtomicUsize::new(0)),
    };
    (end(&a, &b), end(&b, &a))
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
                    Some((at, _)) => *at,
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
                // Also wake if an earlier chunk arrives (it cannot: FIFO with a fixed delay).
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for LatencyStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut lane = self.outgoing.lock().unwrap();
        if lane.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Not counted: a socket would not allocate in this process.
        let due = Instant::now() + self.delay;
        crate::alloc::uncounted(|| lane.chunks.push_back((due, data.to_vec())));
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
