//! The writer task, and the transport's write half it shares with a
//! connection's reader, so that the replies of the calls the reader starts
//! go out at once, written by the reader, without a turn of the writer task.
//!
//! When the reader runs on a current-thread runtime it starts the calls it
//! delivered to local objects itself, once nothing more is readable (see
//! `cap/local.rs`); their replies are held back from the writer
//! ([`ConnShared::holding_output`]) and, once they have run (a large batch:
//! every 12 of them, see `driver.rs`), written by the reader in one write,
//! in place, if the writer task is idle (it holds the parts otherwise, and
//! is woken as before). The write is one non-blocking attempt: whatever the
//! socket does not take at once (or an error) goes back to the writer task,
//! which writes it before anything newer; until it has, no write in place
//! starts. Whoever holds the parts is the only writer, so output stays in
//! order.
//!
//! Calls we make are not written in place: what a caller does right after a
//! call (a pipelined call on its result, a window set on a stream it
//! returns) must reach the peer with it, and the writer task, woken by the
//! call, runs only once the caller yields.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use super::driver::poll_when_due;
use super::vectored::{write_some, Remaining};
use super::ConnShared;
use crate::proto::Protocol;
use crate::RpcError;

/// The transport's write half, boxed so the shared state need not be generic.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// What the one writer at a time holds.
pub(crate) struct WriterParts {
    pub(crate) io: BoxWrite,
    /// An empty buffer to swap in for the protocol's output.
    pub(crate) spare: BytesMut,
    /// Output a write in place could not finish: written first, by the
    /// writer task, before anything newer.
    pub(crate) unsent: Option<Unsent>,
}

/// The rest of a batch written in place only in part.
pub(crate) struct Unsent {
    pub(crate) batch: BytesMut,
    /// Bytes of `batch` already written.
    pub(crate) at: usize,
    /// Of what is left, bytes we owe the peer (see `Protocol::owed`).
    pub(crate) owed: usize,
}

/// The parts, when nobody is writing.
pub(crate) struct WriteSlot {
    /// Boxed: taken and put back around every batch, a pointer moves.
    parts: Mutex<Option<Box<WriterParts>>>,
    /// The writer task found the parts taken by a write in place: that
    /// writer wakes it when it puts them back.
    missed: AtomicBool,
}

impl WriteSlot {
    pub(crate) fn new(io: BoxWrite) -> WriteSlot {
        let parts = Box::new(WriterParts { io, spare: BytesMut::with_capacity(8 << 10), unsent: None });
        WriteSlot { parts: Mutex::new(Some(parts)), missed: AtomicBool::new(false) }
    }

    /// For the writer task: the parts, or `None` (noted, so the write in
    /// place that has them wakes the writer when it is done).
    pub(crate) fn take_for_writer(&self) -> Option<Box<WriterParts>> {
        if let Some(parts) = self.lock().take() {
            return Some(parts);
        }
        self.missed.store(true, Ordering::SeqCst);
        // Look again: parts put back before the flag was set were not seen
        // missing by whoever put them back.
        self.lock().take()
    }

    /// Puts the parts back (the writer task, between batches).
    pub(crate) fn put(&self, parts: Box<WriterParts>) {
        *self.lock() = Some(parts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<WriterParts>>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Output taken out of the locked state to be written in place.
pub(crate) struct InPlace {
    parts: Box<WriterParts>,
    batch: BytesMut,
    owed: usize,
}

impl ConnShared {
    /// Under the lock: takes the state's output to write in place, if the
    /// writer task is idle, no rest of an earlier write in place waits for
    /// it, and the output is plain frames (no stream to emit, no chunk to
    /// write beside them) on an open connection.
    pub(super) fn take_in_place(&self, state: &mut Protocol) -> Option<InPlace> {
        if state.out.is_empty()
            || !state.out_chunks.is_empty()
            || !state.ready.is_empty()
            || state.is_closed().is_some()
            || self.write_failed.load(Ordering::Acquire)
            || self.abandon_output.load(Ordering::Acquire)
        {
            return None;
        }
        // A leaf lock, held for a moment: never wait for it under the state.
        let mut slot = self.write_slot.parts.try_lock().ok()?;
        if slot.as_ref()?.unsent.is_some() {
            // The rest of an earlier write in place goes first, by the
            // writer task (woken for it): this output waits behind it.
            return None;
        }
        let mut parts = slot.take()?;
        drop(slot);
        let batch = std::mem::replace(&mut state.out, std::mem::take(&mut parts.spare));
        let owed = std::mem::take(&mut state.owed);
        self.owed_in_flight.store(owed, Ordering::Release);
        Some(InPlace { parts, batch, owed })
    }

    /// Writes output taken by [`Self::take_in_place`] (with no lock held):
    /// what the socket does not take at once goes to the writer task.
    pub(super) fn write_in_place(&self, InPlace { mut parts, mut batch, owed }: InPlace) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut at = 0;
        while at < batch.len() {
            match Pin::new(&mut *parts.io).poll_write(&mut cx, &batch[at..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    at += n;
                    self.io.wrote(n);
                }
                // Not now, or an error: the writer task takes it from here
                // (and meets the error itself).
                _ => break,
            }
        }
        let finished = at == batch.len();
        if finished {
            self.owed_in_flight.store(0, Ordering::Release);
            batch.clear();
            parts.spare = batch;
        } else {
            let owed = owed.min(batch.len() - at);
            self.owed_in_flight.store(owed, Ordering::Release);
            parts.unsent = Some(Unsent { batch, at, owed });
        }
        self.write_slot.put(parts);
        if owed > 0 && finished {
            // A reader waiting for room in the unsent output looks again.
            self.output_drained.notify_one();
        }
        if !finished || self.write_slot.missed.swap(false, Ordering::SeqCst) {
            self.wake_writer.notify();
        }
    }
}

/// How writing one batch ended.
enum Written {
    All,
    /// The connection closed and the rest of the output is dropped.
    Abandoned,
    Failed(std::io::Error),
}

/// Writes `parts` (one batch, in order), of which up to `owed` bytes are
/// output we owe the peer, keeping `owed_in_flight` current. Once the
/// connection is closed, the rest gets until `linger` (set here on first
/// sight of the close), or nothing if the peer stopped reading.
async fn write_batch(
    shared: &ConnShared,
    writer: &mut BoxWrite,
    parts: &[&[u8]],
    owed: usize,
    closed: &mut watch::Receiver<Option<RpcError>>,
    linger: &mut Option<Instant>,
) -> Written {
    let total = parts.iter().map(|part| part.len()).sum::<usize>();
    let mut left = Remaining::new(parts);
    let mut written = 0;
    shared.owed_in_flight.store(owed.min(total), Ordering::Release);
    let result = loop {
        if written == total {
            break Written::All;
        }
        if shared.abandon_output.load(Ordering::Acquire) {
            break Written::Abandoned;
        }
        // The socket usually takes the batch at once: try it first, with
        // no close watch and no timer made (a `select!` makes every branch's
        // future, enabled or not, each time round).
        let attempt = if linger.is_none() { write_some(writer, &left).now_or_never() } else { None };
        let attempt = match attempt {
            Some(result) => result,
            None => {
                let until = linger.unwrap_or_else(Instant::now);
                tokio::select! {
                    biased;
                    result = write_some(writer, &left) => result,
                    _ = closed.wait_for(Option::is_some), if linger.is_none() => {
                        *linger = Some(Instant::now() + shared.config.write_stall_timeout);
                        continue;
                    }
                    _ = sleep_until(until), if linger.is_some() => break Written::Abandoned,
                }
            }
        };
        match attempt {
            Ok(0) => break Written::Failed(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                left.advance(n);
                shared.io.wrote(n);
                if written < total {
                    shared.owed_in_flight.store(owed.min(total - written), Ordering::Release);
                    shared.output_drained.notify_one();
                }
            }
            Err(err) => break Written::Failed(err),
        }
    };
    shared.owed_in_flight.store(0, Ordering::Release);
    if owed > 0 || !matches!(result, Written::All) {
        // A reader waiting for room in the unsent output looks again.
        shared.output_drained.notify_one();
    }
    result
}

pub(super) async fn write_loop(shared: Arc<ConnShared>) {
    let mut chunks = Vec::new();
    let interval = shared.config.keepalive_interval;
    // Pings go out after `interval` without a write. The timer is armed once
    // per interval, not per batch: when it fires early it moves to the real time.
    let mut last_write = Instant::now();
    let ping_timer = sleep_until(last_write + interval);
    tokio::pin!(ping_timer);
    let mut ping_timer_unpolled = true;
    let mut nonce = 0u64;
    let mut closed = shared.closed.subscribe();
    // Set once the connection is closed: the last moment to finish writing.
    let mut linger = None;
    // Streams still had data to emit after the last round: go again at once.
    let mut more = false;
    loop {
        if !more {
            tokio::select! {
                biased;
                () = shared.wake_writer.wait() => {}
                () = poll_fn(|cx| poll_when_due(ping_timer.as_mut(), &mut ping_timer_unpolled, cx)) => {
                    let due = last_write + interval;
                    let now = Instant::now();
                    if now >= due {
                        nonce += 1;
                        shared.lock().send_ping(nonce, now.into_std());
                        last_write = now;
                    }
                    ping_timer.as_mut().reset(last_write + interval);
                    ping_timer_unpolled = true;
                }
            }
        }
        // The write half, unless a write in place has it: that one wakes
        // this task again when it is done.
        let Some(mut parts) = shared.write_slot.take_for_writer() else {
            more = false;
            continue;
        };
        if let Some(unsent) = parts.unsent.take() {
            // The rest of a write in place goes before anything newer.
            let mut batch = unsent.batch;
            let written =
                write_batch(&shared, &mut parts.io, &[&batch[unsent.at..]], unsent.owed, &mut closed, &mut linger)
                    .await;
            match written {
                Written::All => {}
                Written::Abandoned => break,
                Written::Failed(err) => return write_failed(&shared, err, &mut closed).await,
            }
            batch.clear();
            parts.spare = batch;
        }
        if let Some(delay) = shared.config.stream_nagle {
            let only_streams = {
                let state = shared.lock();
                state.out.is_empty() && !state.ready.is_empty()
            };
            if only_streams {
                tokio::time::sleep(delay).await;
            }
        }
        let (batch, owed, closing) = {
            let mut state = shared.lock();
            state.emit_streams(&shared);
            more = !state.ready.is_empty();
            let batch = std::mem::replace(&mut state.out, std::mem::take(&mut parts.spare));
            std::mem::swap(&mut state.out_chunks, &mut chunks);
            let owed = std::mem::take(&mut state.owed);
            let idle = shared.users.load(Ordering::Acquire) == 0 && state.is_idle();
            (batch, owed, state.is_closed().is_some() || idle)
        };
        if !batch.is_empty() {
            last_write = Instant::now();
            let written = if chunks.is_empty() {
                write_batch(&shared, &mut parts.io, &[&batch], owed, &mut closed, &mut linger).await
            } else {
                // Large stream chunks go in place, between the frames around them.
                let mut parts_of_batch = Vec::with_capacity(2 * chunks.len() + 1);
                let mut at = 0;
                for (offset, chunk) in &chunks {
                    parts_of_batch.push(&batch[at..*offset]);
                    parts_of_batch.push(&chunk[..]);
                    at = *offset;
                }
                parts_of_batch.push(&batch[at..]);
                write_batch(&shared, &mut parts.io, &parts_of_batch, owed, &mut closed, &mut linger).await
            };
            chunks.clear();
            match written {
                Written::All => {}
                Written::Abandoned => break,
                Written::Failed(err) => return write_failed(&shared, err, &mut closed).await,
            }
        }
        parts.spare = batch;
        parts.spare.clear();
        if closing {
            // The parts are not put back: nothing is written in place after this.
            let until = linger.unwrap_or_else(|| Instant::now() + shared.config.write_stall_timeout);
            let _ = tokio::time::timeout_at(until, async {
                let _ = parts.io.flush().await;
                let _ = parts.io.shutdown().await;
            })
            .await;
            shared.close(RpcError::disconnected("the connection was closed"), false);
            break;
        }
        shared.write_slot.put(parts);
    }
}

/// Our write failed, most likely because the peer closed the connection. If
/// it said why (an `Abort`), that frame is already on its way to our reader,
/// which closes the connection with the peer's reason: give it the time to
/// read it, and close with the I/O error only if it does not.
async fn write_failed(shared: &ConnShared, err: std::io::Error, closed: &mut watch::Receiver<Option<RpcError>>) {
    let err = RpcError::disconnected(format!("I/O error: {err}"));
    shared.write_failed.store(true, Ordering::Release);
    shared.output_drained.notify_one();
    let grace = shared.config.keepalive_timeout;
    let _ = timeout(grace, closed.wait_for(Option::is_some)).await;
    shared.close(err, false);
}
