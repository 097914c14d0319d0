//! The tasks that own the socket: handshake, reader, writer, keepalive.
//!
//! The reader decodes frames and hands them to the protocol state; its buffer
//! grows as bytes arrive (never on a frame's announced length), a frame must
//! finish within `Config::frame_timeout`, and growth for frames larger than a
//! read chunk comes from a process-wide budget. The writer
//! sleeps until the state's outgoing buffer is non-empty, then swaps it out
//! and writes it whole, so everything queued while a write was in progress
//! leaves in the next single write (calls coalesce under load by themselves).
//!
//! Output the peer asks for (replies, pongs, embargo echoes) is bounded: while
//! more than `Config::max_unsent_output` of it waits unsent, the reader takes
//! no more calls, pings or disembargos off the wire (the peer's own writes
//! then block), and if that lasts `Config::write_stall_timeout` the
//! connection closes. Pings closer together than `Config::ping_min_interval`
//! are strikes; too many close the connection with "too many pings".

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tracing::Instrument;

use super::{ConnShared, Protocol, StateGuard, UserRef};
use crate::cap::local::{self as local_calls, Collecting};
use crate::cap::Client;
use crate::proto::PingPolicy;
use crate::wire::{depth, frame, Hello, Message, MAGIC, PROTOCOL_VERSION};
use crate::{Config, RpcError};

/// Exchanges `Hello`s, then starts the reader and writer tasks.
pub(crate) async fn open<IO>(io: IO, config: Config, bootstrap: Option<Client>) -> Result<UserRef, RpcError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let ours = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: config.limits,
        offers_bootstrap: bootstrap.is_some(),
        nonce: random_nonce(),
    };
    let mut buf = BytesMut::new();
    frame::encode(&mut buf, &ours, &[])?;
    let mut incoming = BytesMut::with_capacity(8 << 10);
    let exchange = async {
        writer.write_all(&buf).await?;
        writer.flush().await?;
        read_hello(&mut reader, &mut incoming).await
    };
    let theirs = match timeout(config.handshake_timeout, exchange).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(RpcError::new(crate::ErrorKind::Timeout, "the peer did not complete the handshake in time"))
        }
    };
    check_hello(&theirs)?;
    if theirs.nonce == ours.nonce {
        return Err(RpcError::protocol("bad handshake: the peer echoed our own nonce (connected to itself?)"));
    }
    let stream_parity = u32::from(ours.nonce > theirs.nonce);
    let (closed, _) = watch::channel(None);
    // A child of whatever span opens the connection (a server's accept loop
    // may carry the peer's address).
    let span = tracing::info_span!("rpc.connection", id = super::metrics::next_connection_id());
    tracing::debug!(parent: &span, peer_offers_bootstrap = theirs.offers_bootstrap, "connection open");
    let io = super::metrics::IoCounters::default();
    io.wrote(buf.len());
    io.read(hello_len(&theirs));
    let state = Protocol::new(
        config.limits,
        theirs.limits,
        bootstrap,
        stream_parity,
        config.stream_buffer_budget,
        span.clone(),
    );
    let shared = Arc::new_cyclic(|me| ConnShared {
        state: Mutex::new(state),
        me: me.clone(),
        wake_writer: Default::default(),
        write_slot: super::writer::WriteSlot::new(Box::new(writer)),
        wake_reader_on_close: Default::default(),
        staging: Default::default(),
        owed_in_flight: AtomicUsize::new(0),
        output_drained: Notify::new(),
        write_failed: AtomicBool::new(false),
        abandon_output: AtomicBool::new(false),
        closed,
        released: Default::default(),
        cancellations: Default::default(),
        any_released: AtomicBool::new(false),
        users: AtomicUsize::new(0),
        writer_done: watch::channel(false).0,
        config,
        reader_starts_calls: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread,
        peer_limits: theirs.limits,
        span,
        io,
    });
    // Taken before the tasks start, so the writer never sees a new connection as idle.
    let user = shared.user_ref();
    let span = shared.span.clone();
    let reader_task = read_loop(shared.clone(), reader, incoming);
    let writer_task = async move {
        super::writer::write_loop(shared.clone()).await;
        shared.writer_done.send_replace(true);
    };
    if span.is_disabled() {
        // Nothing records the connection's span: entering and leaving it at
        // every poll of both tasks would only cost time (about 90
        // instructions a poll when a dependency turns on tracing's `log`
        // feature).
        tokio::spawn(reader_task);
        tokio::spawn(writer_task);
    } else {
        tokio::spawn(reader_task.instrument(span.clone()));
        tokio::spawn(writer_task.instrument(span));
    }
    Ok(user)
}

/// The wire size of the peer's Hello (the same encoding as ours), for the
/// byte count.
fn hello_len(theirs: &Hello) -> usize {
    postcard::to_allocvec(theirs).map_or(0, |body| body.len() + frame::PREFIX)
}

/// A random 64-bit value (std's hash keys are seeded from the OS).
fn random_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

async fn read_hello<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<Hello, RpcError> {
    // A Hello is small; anything claiming more is not our protocol.
    const MAX_HELLO: u32 = 1024;
    loop {
        if let Some(frame) =
            frame::decode(buf, MAX_HELLO).map_err(|e| RpcError::protocol(format!("bad handshake: {}", e.message())))?
        {
            return postcard::from_bytes(&frame).map_err(|e| {
                RpcError::protocol(format!("bad handshake: the peer does not speak this protocol ({e})"))
            });
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(RpcError::disconnected("the peer closed the connection during the handshake"));
        }
    }
}

fn check_hello(theirs: &Hello) -> Result<(), RpcError> {
    if theirs.magic != MAGIC {
        return Err(RpcError::protocol("bad handshake: the peer does not speak this protocol"));
    }
    if theirs.version != PROTOCOL_VERSION {
        return Err(RpcError::protocol(format!(
            "protocol version mismatch: the peer speaks version {}, this side speaks version {PROTOCOL_VERSION}",
            theirs.version
        )));
    }
    Ok(())
}

async fn read_loop<R: AsyncRead>(shared: Arc<ConnShared>, mut reader: ReadHalf<R>, mut buf: BytesMut) {
    let reason = read_frames(&shared, &mut reader, &mut buf).await;
    let tell_peer = reason.kind() != crate::ErrorKind::Disconnected;
    shared.close(reason, tell_peer);
    // Calls the last frames delivered to local objects still start (after
    // the close, as a serving task would: nothing of theirs goes out).
    local_calls::start_collected();
}

/// Room made in the read buffer at a time, normally. Frames handed out are
/// slices of it, so a buffer lives until its last frame is dropped.
const READ_CHUNK: usize = 64 << 10;
/// Room made at a time while reads come back large (bulk transfers): fewer,
/// larger buffers let the allocator reuse pages instead of returning them and
/// faulting them back in. Measured on bulk transfers: 64 KiB chunks give 0.33x
/// raw TCP throughput, 512 KiB about 0.5x, 4 MiB 0.6-1.0x; 512 KiB keeps a
/// slow consumer's connection within its memory bound (window + 1 MiB).
/// The reader yields after reading each such chunk's worth (see
/// `read_frames`), so chunks are reused rather than new ones taken.
const BULK_READ_CHUNK: usize = 512 << 10;

/// Sustained large reads mean bulk traffic: switch to large chunks after this
/// many in a row, so a short burst does not pin a large buffer.
const BULK_AFTER: u32 = 16;

/// The read chunk to use after a read of `n` bytes.
fn next_chunk(large_reads: &mut u32, n: usize) -> usize {
    if n >= READ_CHUNK / 2 {
        *large_reads = large_reads.saturating_add(1);
    } else {
        *large_reads = 0;
    }
    if *large_reads >= BULK_AFTER {
        BULK_READ_CHUNK
    } else {
        READ_CHUNK
    }
}

/// Spare room below which the reader makes more before reading.
const MIN_SPARE: usize = 4096;

/// Bytes held, process-wide, by read buffers growing for frames larger than a
/// read chunk that have not fully arrived; capped by
/// [`Config::partial_frames_budget`].
static PARTIAL_FRAMES: AtomicUsize = AtomicUsize::new(0);

/// Woken whenever some of [`PARTIAL_FRAMES`] is given back.
static PARTIAL_FRAMES_FREED: Notify = Notify::const_new();

/// One reader's share of [`PARTIAL_FRAMES`], given back when its frame is
/// complete and on drop.
#[derive(Default)]
struct PartialCharge {
    held: usize,
}

impl PartialCharge {
    /// Takes `bytes` if the process-wide count stays within `cap`.
    fn try_take(&mut self, bytes: usize, cap: usize) -> bool {
        let mut now = PARTIAL_FRAMES.load(Ordering::Relaxed);
        loop {
            let Some(after) = now.checked_add(bytes).filter(|&after| after <= cap) else {
                return false;
            };
            match PARTIAL_FRAMES.compare_exchange_weak(now, after, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.held += bytes;
                    return true;
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Adjusts what is held from `taken` to what the buffer really grew by.
    fn settle(&mut self, taken: usize, grown: usize) {
        if grown > taken {
            PARTIAL_FRAMES.fetch_add(grown - taken, Ordering::AcqRel);
            self.held += grown - taken;
        } else {
            self.give_back(taken - grown);
        }
    }

    fn give_back(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        if bytes > 0 {
            self.held -= bytes;
            PARTIAL_FRAMES.fetch_sub(bytes, Ordering::AcqRel);
            PARTIAL_FRAMES_FREED.notify_waiters();
        }
    }

    fn release(&mut self) {
        self.give_back(self.held);
    }
}

impl Drop for PartialCharge {
    fn drop(&mut self) {
        self.release();
    }
}

/// Makes room to read into `buf`, which holds no complete frame. Room grows
/// with what has arrived, never with a frame's announced length: a chunk at
/// a time, or for a frame larger than a chunk as much as it already has
/// (doubling, so copies stay linear), taken from the process-wide budget.
/// Returns false, changing nothing, when that budget is spent.
fn make_room(buf: &mut BytesMut, chunk: usize, charge: &mut PartialCharge, cap: usize) -> bool {
    let missing = frame::missing(buf).unwrap_or(0);
    if missing <= chunk {
        buf.reserve(chunk);
        return true;
    }
    let additional = missing.min(buf.len().max(chunk));
    if !charge.try_take(additional, cap) {
        return false;
    }
    let before = buf.capacity();
    buf.reserve(additional);
    charge.settle(additional, buf.capacity().saturating_sub(before));
    true
}

/// Why a connection whose frame did not arrive within `limit` is closed.
fn frame_timeout_reason(buf: &BytesMut, limit: Duration) -> RpcError {
    let message = if buf.len() < frame::PREFIX {
        format!("a frame's length prefix did not arrive within the frame timeout of {limit:?}")
    } else {
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let arrived = buf.len() - frame::PREFIX;
        format!("a frame of {len} bytes did not arrive within the frame timeout of {limit:?} ({arrived} bytes did)")
    };
    RpcError::new(crate::ErrorKind::Timeout, message)
}

/// Reads until the connection must close; returns why.
async fn read_frames<R: AsyncRead>(shared: &Arc<ConnShared>, reader: &mut ReadHalf<R>, buf: &mut BytesMut) -> RpcError {
    let frame_timeout = shared.config.frame_timeout;
    let budget = shared.config.partial_frames_budget;
    let mut closed = shared.closed.subscribe();
    let mut chunk = READ_CHUNK;
    let mut large_reads = 0u32;
    let mut read_since_yield = 0usize;
    let mut charge = PartialCharge::default();
    // When the incomplete frame at the front of `buf` began to arrive.
    let mut frame_started: Option<Instant> = None;
    // Timers live across reads: registering a timer per read (and removing
    // it when the read wins) cost more than the rest of a small call. The
    // silence timer is moved only when it fires before the real deadline;
    // the frame timer only when a new incomplete frame begins.
    let keepalive = shared.config.keepalive_timeout;
    let mut waiting_since = Instant::now();
    let silence = sleep_until(waiting_since + keepalive);
    tokio::pin!(silence);
    let mut silence_unpolled = true;
    let frame_timer = sleep_until(waiting_since + frame_timeout);
    tokio::pin!(frame_timer);
    let mut frame_timer_at = None;
    loop {
        let mut completed = false;
        loop {
            match handle_buffered_frames(shared, buf, &mut completed) {
                Ok(None) => break,
                Ok(Some((message, trailer))) => {
                    // It asks for output while we owe the peer too much:
                    // it waits for room, then goes on its own.
                    if let Err(violation) = handle_after_room(shared, message, trailer, &mut closed).await {
                        return violation;
                    }
                }
                Err(violation) => return violation,
            }
        }
        if completed {
            // The frame that grew the buffer is whole: its memory is the payload's now.
            charge.release();
        }
        if chunk == BULK_READ_CHUNK && read_since_yield >= BULK_READ_CHUNK {
            // A bulk transfer: let the tasks reading what arrived run before
            // reading on, so the chunks they are done with are free again for
            // the next reads (reused in place, instead of new chunks whose
            // pages fault in while the consumer catches up on a window's worth).
            read_since_yield = 0;
            tokio::task::yield_now().await;
        }
        if buf.is_empty() {
            frame_started = None;
        } else if completed || frame_started.is_none() {
            frame_started = Some(Instant::now());
        }
        // Room for the rest of a frame that fits in a chunk, so it arrives in one read.
        let wanted = frame::missing(buf).map_or(MIN_SPARE, |missing| missing.min(chunk).max(MIN_SPARE));
        if buf.capacity() - buf.len() < wanted {
            // Listen before trying, so budget given back in between is not missed.
            let freed = PARTIAL_FRAMES_FREED.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !make_room(buf, chunk, &mut charge, budget) && buf.capacity() - buf.len() < MIN_SPARE {
                // The budget is spent and the room left is too small to read
                // into: read nothing until some is given back or this frame
                // runs out of time.
                local_calls::start_collected();
                let deadline = frame_started.unwrap_or_else(Instant::now) + frame_timeout;
                tokio::select! {
                    _ = freed => continue,
                    _ = sleep_until(deadline) => return frame_timeout_reason(buf, frame_timeout),
                    _ = closed.wait_for(Option::is_some) => {
                        return shared.closed_reason().unwrap_or_else(|| RpcError::disconnected("closed"));
                    }
                }
            }
        }
        // Silence is measured from here: time spent handling frames (or
        // waiting for the peer to read our output) is not the peer's.
        waiting_since = Instant::now();
        let frame_deadline = frame_started.map(|started| started + frame_timeout);
        if let Some(deadline) = frame_deadline.filter(|d| frame_timer_at != Some(*d)) {
            frame_timer.as_mut().reset(deadline);
            frame_timer_at = Some(deadline);
        }
        // One read (the silence timer may fire early, armed for an earlier
        // wait: it is moved to this wait's deadline and the read goes on).
        // Calls these frames delivered to local objects start once the
        // socket has nothing more for now, so a call's `Finish` that came
        // right behind it is seen first (see `cap/local.rs`); the time they
        // take is not the peer's silence.
        loop {
            tokio::select! {
                biased;
                () = &mut frame_timer, if frame_deadline.is_some() => return frame_timeout_reason(buf, frame_timeout),
                read = poll_fn(|cx| {
                    let read = std::pin::pin!(reader.read_buf(&mut *buf)).poll(cx);
                    if read.is_pending() && local_calls::has_collected() {
                        start_collected_writing(shared);
                        waiting_since = Instant::now();
                    }
                    read
                }) => match read {
                    Ok(0) => return RpcError::disconnected("the peer closed the connection"),
                    Ok(n) => {
                        shared.io.read(n);
                        chunk = next_chunk(&mut large_reads, n);
                        read_since_yield += n;
                        break;
                    }
                    Err(err) => return RpcError::disconnected(format!("I/O error: {err}")),
                },
                () = poll_fn(|cx| poll_when_due(silence.as_mut(), &mut silence_unpolled, cx)) => {
                    let deadline = waiting_since + keepalive;
                    if Instant::now() >= deadline {
                        return RpcError::disconnected(format!(
                            "no sign of life from the peer for {keepalive:?} (keepalive)"
                        ));
                    }
                    silence.as_mut().reset(deadline);
                    silence_unpolled = true;
                }
                () = shared.wake_reader_on_close.wait() => {
                    return shared.closed_reason().unwrap_or_else(|| RpcError::disconnected("closed"));
                }
            }
        }
    }
}

/// Polls a timer only when it may have fired: once after each (re)arming
/// (`unpolled`), which leaves the task's waker with it, and after that only
/// once tokio reports it elapsed (the timer wakes the task when it fires).
/// Polling the reader's and the writer's timers in every `select!` cost
/// about 130 instructions each time, two to four times per call.
pub(super) fn poll_when_due(timer: Pin<&mut Sleep>, unpolled: &mut bool, cx: &mut Context<'_>) -> Poll<()> {
    if !*unpolled && !timer.is_elapsed() {
        return Poll::Pending;
    }
    *unpolled = false;
    timer.poll(cx)
}

/// Frames handled under one hold of the lock, at most: the reader holds
/// the state from one frame to the next (a lock, a guard and its effects
/// per frame were a fifth of a call's cost with 64 in flight), but lets
/// go this often so other threads' calls and stream writes get their turn.
const FRAMES_PER_HOLD: usize = 64;

/// Calls the reader starts before it writes their replies (see
/// [`start_collected_writing`]).
const CALLS_PER_WRITE: usize = 12;

/// Starts the calls collected on this thread, writing their replies (by
/// this task, in place) after every [`CALLS_PER_WRITE`]: a peer with many
/// calls in flight gets the first replies, and makes its next calls, while
/// later ones still run, so both ends work at once instead of in turn (64
/// calls in flight: about 0.45x the raw batched echo in one write, 0.65-0.78x
/// in writes of 12, 0.6x of 16, 0.45x of 24, see BENCHMARKS.md). Fewer
/// calls (a pipelined chain of 10) still leave in one write: writes of 8
/// cost the chain a write, about 0.03 round trips.
fn start_collected_writing(shared: &ConnShared) {
    let mut more = true;
    while more {
        shared.holding_output(|| more = local_calls::start_collected_some(CALLS_PER_WRITE));
    }
}

/// Decodes the complete frames at the front of `buf` and applies them to
/// the state, under one lock for up to [`FRAMES_PER_HOLD`] frames. Returns
/// `Some` with a message that asks for output while the output we owe the
/// peer is over the bound: the caller waits for room before handling it.
/// Calls the frames deliver to local objects are collected, to start before
/// the reader next waits (the guard's effects deliver them, so it goes
/// first).
fn handle_buffered_frames(
    shared: &Arc<ConnShared>,
    buf: &mut BytesMut,
    completed: &mut bool,
) -> Result<Option<(Message, Bytes)>, RpcError> {
    let max_frame = shared.config.limits.max_frame_size;
    let mut held = 0;
    let mut collecting = None;
    let mut state = None;
    while let Some(frame) = frame::decode(buf, max_frame)? {
        *completed = true;
        let (message, trailer) = decode_frame(shared, &frame)?;
        let locked = state.get_or_insert_with(|| {
            collecting = shared.reader_starts_calls.then(Collecting::begin);
            shared.lock()
        });
        if Protocol::asks_for_output(&message) && shared.owes_too_much(locked) {
            return Ok(Some((message, trailer)));
        }
        apply(shared, locked, message, trailer)?;
        held += 1;
        if held == FRAMES_PER_HOLD {
            held = 0;
            state = None;
            collecting = None;
        }
    }
    drop(state);
    drop(collecting);
    Ok(None)
}

/// The message in `frame` and the frame's raw bytes after it.
fn decode_frame(shared: &ConnShared, frame: &Bytes) -> Result<(Message, Bytes), RpcError> {
    if let Some((message, header)) = crate::wire::fast::decode(frame) {
        return Ok((message, frame.slice(header..)));
    }
    let limits = &shared.config.limits;
    let (message, rest) = depth::from_postcard_bytes::<Message>(frame, limits.max_depth, limits.max_decoded_size)
        .map_err(|e| RpcError::protocol(format!("malformed frame ({e})")))?;
    let trailer = frame.slice(frame.len() - rest.len()..);
    Ok((message, trailer))
}

/// Applies one message from the peer to the locked state (a `Finish`
/// counted first, see `ConnShared::cancellations`).
fn apply(
    shared: &Arc<ConnShared>,
    state: &mut StateGuard<'_>,
    message: Message,
    trailer: Bytes,
) -> Result<(), RpcError> {
    shared.note_cancellation(&message);
    let pings =
        PingPolicy { min_interval: shared.config.ping_min_interval, max_strikes: shared.config.max_ping_strikes };
    state.handle_message(shared, message, trailer, || Instant::now().into_std(), pings)
}

/// Handles a message that asks for output once the output we owe the peer
/// is back within the bound (calls collected so far start first).
async fn handle_after_room(
    shared: &Arc<ConnShared>,
    message: Message,
    trailer: Bytes,
    closed: &mut watch::Receiver<Option<RpcError>>,
) -> Result<(), RpcError> {
    local_calls::start_collected();
    wait_for_output_room(shared, closed).await?;
    let _collecting = shared.reader_starts_calls.then(Collecting::begin);
    let mut state = shared.lock();
    let handled = apply(shared, &mut state, message, trailer);
    drop(state);
    handled
}

/// Waits until the output we owe the peer is back within the bound. If the
/// peer reads none of it for `write_stall_timeout`, gives up: the connection
/// closes with the returned reason and unsent output is dropped.
async fn wait_for_output_room(
    shared: &Arc<ConnShared>,
    closed: &mut watch::Receiver<Option<RpcError>>,
) -> Result<(), RpcError> {
    let stall = shared.config.write_stall_timeout;
    let deadline = Instant::now() + stall;
    loop {
        tokio::select! {
            _ = shared.output_drained.notified() => {}
            _ = sleep_until(deadline) => break,
            _ = closed.wait_for(Option::is_some) => {
                return Err(shared.closed_reason().unwrap_or_else(|| RpcError::disconnected("closed")));
            }
        }
        let mut state = shared.lock();
        if !shared.owes_too_much(&state) {
            state.forgive_pings();
            return Ok(());
        }
    }
    let unsent = shared.owed_unsent(&shared.lock());
    shared.abandon_output.store(true, Ordering::Release);
    let max = shared.config.max_unsent_output;
    Err(RpcError::new(
        crate::ErrorKind::Timeout,
        format!(
            "the peer is not reading: {unsent} bytes of replies it asked for stayed unsent for {stall:?}, \
             over the limit of {max} bytes (max_unsent_output)"
        ),
    ))
}
