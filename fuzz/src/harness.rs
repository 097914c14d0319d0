//! One connection end to end, on a current-thread runtime with a paused clock.
//!
//! The server is [`crate::service::Server`] behind a real `rpc_core`
//! connection on one end of an in-memory pipe. The "client" end writes a
//! valid Hello, then the fuzz input as it is, then (if the input ends on a
//! frame boundary) a final `Ping`; then it waits for that `Pong` and closes
//! its writing half, and the server must close too. Everything the server
//! writes is drained and must be well-formed frames.
//!
//! The client writes one frame at a time and lets the server settle (go a
//! few rounds without writing) before the next, so replayed sessions meet
//! the server in the state they were recorded against (answers returned,
//! windows granted). Time moves only by the harness's ticks, so a run is
//! bounded in virtual time and in scheduler rounds. If the server neither answers the final
//! Ping nor closes within [`BOUND`], or does not close after the client's
//! end of stream, the harness panics: libFuzzer reports it as a crash. A
//! server thread that blocks outright (a self-deadlock on a mutex) stops the
//! harness too; libFuzzer's `-timeout` reports that one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{Config, Connection, Limits, PROTOCOL_VERSION};
use rpc_tests::wire_mirror::{Msg, WireHello, WireLimits, MAGIC};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::service::{FuzzedProxy, Server};

/// Virtual time a run may take before it counts as a hang.
pub const BOUND: Duration = Duration::from_secs(60);
/// Virtual time per scheduler round of the harness.
pub const TICK: Duration = Duration::from_millis(1);
/// Scheduler rounds a run may take in all.
pub const MAX_ROUNDS: u64 = 2_000_000;
/// Rounds without server output after which a frame's effects count as done.
pub const QUIET: u32 = 4;
/// Most rounds the client waits after a frame before writing the next.
pub const SETTLE: u32 = 100;
/// The nonce of the harness's final Ping.
pub const FINAL_PING: u64 = 0xF1A1_F1A1_F1A1_F1A1;
/// The client's Hello nonce: 0, so the server (random nonce) numbers its
/// streams odd and the client's are even, as in the recorded seeds.
pub const CLIENT_NONCE: u64 = 0;
/// Capacity of each direction of the in-memory pipe.
pub const PIPE: usize = 64 << 10;

/// The server's limits: small enough that the fuzzer reaches them.
pub fn server_limits() -> Limits {
    Limits {
        max_frame_size: 1 << 20,
        max_outstanding_calls: 64,
        max_exports: 256,
        max_depth: 64,
        max_decoded_size: 1 << 20,
        max_stream_window: 1024,
        max_stream_window_bytes: 1 << 20,
    }
}

/// The client's limits (what its Hello advertises): the defaults, as a real client's.
pub fn client_limits() -> Limits {
    Limits::default()
}

/// The server's configuration. Keepalive is slower than [`BOUND`], so a
/// silent server is a hang, not a keepalive close. Ping strikes are off
/// (`ping_min_interval` zero): the harness writes a frame every few
/// milliseconds of virtual time, so with the default 100 ms interval any
/// input with a dozen Pings would be closed with "too many pings" and the
/// fuzzer would explore nothing past it. The frame timeout (a frame that
/// stalls half-written) stays the default 5 s, well within [`BOUND`]: an
/// input that ends inside a frame is closed by it. Unsent output is bounded
/// low enough that a flood of calls reaches the bound; the harness drains
/// everything, so it never stalls for `write_stall_timeout`.
pub fn server_config() -> Config {
    Config {
        limits: server_limits(),
        keepalive_interval: Duration::from_secs(20),
        keepalive_timeout: Duration::from_secs(600),
        handshake_timeout: Duration::from_secs(10),
        stream_nagle: None,
        frame_timeout: Duration::from_secs(5),
        partial_frames_budget: 16 << 20,
        max_unsent_output: 256 << 10,
        write_stall_timeout: Duration::from_secs(30),
        ping_min_interval: Duration::ZERO,
        max_ping_strikes: 10,
        stream_buffer_budget: 8 << 20,
    }
}

/// The configuration of the real client used to record seeds.
pub fn client_config() -> Config {
    Config { limits: client_limits(), ..server_config() }
}

/// `body` with its little-endian `u32` length prefix.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// The client's Hello, framed.
pub fn client_hello() -> Vec<u8> {
    let hello = WireHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        limits: WireLimits::from(client_limits()),
        offers_bootstrap: false,
        nonce: CLIENT_NONCE,
    };
    framed(&postcard::to_stdvec(&hello).expect("hello encodes"))
}

/// `msg` framed, with `payload` after its header.
pub fn frame_of(msg: &Msg, payload: &[u8]) -> Vec<u8> {
    let mut body = postcard::to_stdvec(msg).expect("message encodes");
    body.extend_from_slice(payload);
    framed(&body)
}

/// Whether `input` is a whole number of frames (length prefixes followed by
/// that many bytes), so a frame appended to it is read as a frame.
pub fn ends_on_frame_boundary(input: &[u8]) -> bool {
    let mut at = 0usize;
    while at < input.len() {
        if input.len() - at < 4 {
            return false;
        }
        let len = u32::from_le_bytes(input[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        if input.len() - at < len {
            return false;
        }
        at += len;
    }
    true
}

/// `FUZZ_DEBUG=1` prints every message the server writes (for reading a reproducer).
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

/// What one run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The server answered the final Ping.
    pub ponged: bool,
    /// Frames the server wrote (its Hello included).
    pub frames: usize,
    /// Bytes the server wrote.
    pub bytes: usize,
    /// Scheduler rounds the harness took.
    pub rounds: u64,
}

#[derive(Default)]
struct Seen {
    ponged: AtomicBool,
    eof: AtomicBool,
    frames: AtomicUsize,
    bytes: AtomicUsize,
    /// Pieces the client has written (Hello, frames, Ping, end of stream).
    written: AtomicUsize,
}

/// Runs one connection with `input` as the client's bytes after its Hello.
///
/// # Panics
///
/// On a hang (see the module docs), on a malformed frame from the server, and
/// wherever rpc-core panics.
pub fn run_connection(input: &[u8]) -> Outcome {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    let outcome = runtime.block_on(session(input));
    // Dropping the runtime drops every task still alive: their Drop paths run too.
    drop(runtime);
    outcome
}

async fn session(input: &[u8]) -> Outcome {
    let (server_io, client_io) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        let builder = Connection::builder().config(server_config()).bootstrap(FuzzedProxy::new(Server));
        // As `rpc_core::serve` does: hold the connection until it closes.
        if let Ok(connection) = builder.open(server_io).await {
            connection.closed().await;
        }
    });
    let (reader, mut writer) = tokio::io::split(client_io);
    let seen = Arc::new(Seen::default());
    tokio::spawn(drain(reader, seen.clone()));

    let whole = ends_on_frame_boundary(input);
    let mut pieces = vec![client_hello()];
    pieces.extend(split_frames(input).into_iter().map(<[u8]>::to_vec));
    if whole {
        pieces.push(frame_of(&Msg::Ping(FINAL_PING), &[]));
    }
    let writing = {
        let seen = seen.clone();
        tokio::spawn(async move {
            for piece in &pieces {
                // The server may close (and stop reading) early: a failed write is fine.
                if writer.write_all(piece).await.is_err() {
                    break;
                }
                seen.written.fetch_add(1, Ordering::Release);
                settle(&seen).await;
            }
            if whole {
                while !seen.ponged.load(Ordering::Acquire) && !seen.eof.load(Ordering::Acquire) {
                    tokio::task::yield_now().await;
                }
            }
            let _ = writer.shutdown().await;
            seen.written.fetch_add(1, Ordering::Release);
            // Keep the half alive until the server has closed.
            while !seen.eof.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
        })
    };

    // Time moves only here: one tick per round. A hang is BOUND of virtual
    // time without the client writing anything new and without the end of
    // the server's stream.
    let mut last_written = 0;
    let mut since = tokio::time::Instant::now();
    let mut rounds = 0u64;
    while !seen.eof.load(Ordering::Acquire) {
        let written = seen.written.load(Ordering::Acquire);
        if written != last_written {
            last_written = written;
            since = tokio::time::Instant::now();
        }
        if since.elapsed() >= BOUND || rounds >= MAX_ROUNDS {
            let ponged = seen.ponged.load(Ordering::Acquire);
            let pieces = split_frames(input).len() + 1 + usize::from(whole);
            if written < pieces {
                panic!(
                    "hang: the server stopped reading: {written} of {pieces} frames written within {BOUND:?} \
                     of virtual time ({rounds} rounds), and it did not close the connection"
                );
            }
            if whole && !ponged {
                panic!(
                    "hang: no Pong for the final Ping within {BOUND:?} of virtual time ({rounds} rounds), \
                     and the server did not close the connection"
                );
            }
            panic!(
                "hang: the server did not close the connection within {BOUND:?} of virtual time ({rounds} rounds) \
                 after the client's end of stream (final Ping answered: {ponged})"
            );
        }
        tokio::time::advance(TICK).await;
        rounds += 1;
    }
    writing.abort();
    Outcome {
        ponged: seen.ponged.load(Ordering::Acquire),
        frames: seen.frames.load(Ordering::Acquire),
        bytes: seen.bytes.load(Ordering::Acquire),
        rounds,
    }
}

/// Waits until the server has gone [`QUIET`] rounds without writing (at most
/// [`SETTLE`] rounds), so each frame meets the server in the state the
/// previous ones left, as in the recorded sessions.
async fn settle(seen: &Seen) {
    let mut quiet = 0;
    let mut last = seen.bytes.load(Ordering::Acquire);
    for _ in 0..SETTLE {
        if quiet >= QUIET || seen.eof.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(TICK).await;
        let now = seen.bytes.load(Ordering::Acquire);
        if now == last {
            quiet += 1;
        } else {
            quiet = 0;
            last = now;
        }
    }
}

/// `input` cut into its frames; a last incomplete frame is a piece of its own.
pub fn split_frames(input: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut at = 0usize;
    while at < input.len() {
        let rest = &input[at..];
        let len = if rest.len() >= 4 { u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize } else { usize::MAX };
        let take = len.saturating_add(4).min(rest.len());
        pieces.push(&rest[..take]);
        at += take;
    }
    pieces
}

/// Reads every frame the server writes until its end of stream; checks that
/// each is within the client's limit and decodes (Hello first, then messages).
async fn drain<R: AsyncRead + Unpin>(mut reader: R, seen: Arc<Seen>) {
    let max = client_limits().max_frame_size as usize;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; PIPE];
    let mut first = true;
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.bytes.fetch_add(n, Ordering::Relaxed);
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() - at >= 4 {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            assert!(len <= max, "the server wrote a frame of {len} bytes, over the client's limit of {max}");
            if buf.len() - at - 4 < len {
                break;
            }
            let body = &buf[at + 4..at + 4 + len];
            at += 4 + len;
            seen.frames.fetch_add(1, Ordering::Relaxed);
            if first {
                first = false;
                let hello: WireHello = postcard::from_bytes(body).expect("the server's Hello decodes");
                assert_eq!(hello.magic, MAGIC);
                continue;
            }
            let (msg, _payload) = postcard::take_from_bytes::<Msg>(body)
                .unwrap_or_else(|e| panic!("the server wrote an undecodable frame {body:?}: {e}"));
            if debug() {
                eprintln!("server: {msg:?} + {} payload bytes", _payload.len());
            }
            if msg == Msg::Pong(FINAL_PING) {
                seen.ponged.store(true, Ordering::Release);
            }
        }
        buf.drain(..at);
    }
    seen.eof.store(true, Ordering::Release);
}

/// Well-formed client frames of every kind, aimed at the ids a session
/// uses (the bootstrap, the first answers, the client's even stream ids and
/// the server's odd ones), with every kind of capability descriptor: what
/// the connection target's mutator inserts between frames.
pub fn frame_dictionary() -> Vec<Vec<u8>> {
    use crate::service::{method, CHILD, FUZZED};
    use rpc_tests::wire_mirror::{CapDesc, Kind, Target, WireError, WireWindow};

    let w = WireWindow { capacity: 2, batch: 1 };
    let caps = [
        CapDesc::SenderHosted(0),
        CapDesc::SenderHosted(1),
        CapDesc::ReceiverHosted(0),
        CapDesc::ReceiverHosted(1),
        CapDesc::ReceiverAnswer { question: 0, cap: 0 },
        CapDesc::SequenceReader { stream: 2, window: w },
        CapDesc::SequenceWriter { stream: 4, window: w },
        CapDesc::BytesReader { stream: 6, window: w },
        CapDesc::BytesWriter { stream: 8, window: w },
    ];
    let error = WireError { kind: Kind::Aborted, message: "e".into(), payload: None };
    let enc = |v: &dyn erased::Encode| v.encode();
    let mut out = Vec::new();
    let mut push = |msg: Msg, payload: Vec<u8>| out.push(frame_of(&msg, &payload));
    // Calls: every method, plain arguments, to the bootstrap and pipelined.
    let args: [(u16, Vec<u8>, Vec<CapDesc>); 14] = [
        (method::ADD, enc(&(1i64, 2i64)), vec![]),
        (method::ECHO, enc(&crate::values::sample_record(1)), vec![]),
        (method::CHILD, enc(&("c".to_string(),)), vec![]),
        (method::NUMBERS, enc(&(3u32, 0u32)), vec![CapDesc::SequenceWriter { stream: 2, window: w }]),
        (method::SUM, enc(&(0u32,)), vec![CapDesc::SequenceReader { stream: 2, window: w }]),
        (method::BLOB, enc(&(100u32, 0u32)), vec![CapDesc::BytesWriter { stream: 2, window: w }]),
        (method::UPLOAD, enc(&(0u32,)), vec![CapDesc::BytesReader { stream: 2, window: w }]),
        (method::FILL, enc(&(5u32, 0u32)), vec![CapDesc::SequenceWriter { stream: 2, window: w }]),
        (method::CALL_BACK, enc(&(0u32,)), vec![CapDesc::SenderHosted(0)]),
        (method::SLOW, enc(&(1000u32,)), vec![]),
        (method::ITEMS, enc(&(0u32,)), vec![CapDesc::SequenceReader { stream: 2, window: w }]),
        (method::NESTED, enc(&(0u32,)), vec![CapDesc::SequenceReader { stream: 2, window: w }]),
        (method::FILL_BYTES, enc(&(100u32, 0u32)), vec![CapDesc::BytesWriter { stream: 2, window: w }]),
        (method::CHECK, enc(&(3u32,)), vec![]),
    ];
    for (question, (m, payload, caps)) in args.into_iter().enumerate() {
        let question = question as u32 % 3;
        let target = Target::Export(0);
        push(Msg::Call { question, target, interface: FUZZED, method: m, caps: caps.clone() }, payload.clone());
        let target = Target::Answer { question: 0, cap: 0 };
        push(Msg::Call { question: question + 1, target, interface: CHILD, method: m % 3, caps }, vec![]);
    }
    for &cap in &caps {
        // A capability where the server expects one, and in answers and stream data.
        push(
            Msg::Call {
                question: 1,
                target: Target::Export(0),
                interface: FUZZED,
                method: method::CALL_BACK,
                caps: vec![cap],
            },
            enc(&(0u32,)),
        );
        push(Msg::Return { question: 0, result: Ok(vec![cap]) }, enc(&(0u32,)));
        for stream in [1u32, 2, 3, 4] {
            let item = enc(&(0u32,));
            let item_lens = vec![item.len() as u32];
            push(Msg::StreamData { stream, count: 1, item_caps: vec![1], caps: vec![cap], item_lens }, item);
            push(Msg::StreamData { stream, count: 0, item_caps: vec![], caps: vec![cap], item_lens: vec![] }, vec![]);
        }
    }
    for stream in [1u32, 2, 3, 4, 5] {
        // Two sequence items of one byte each, two bytes of a byte stream
        // (no lengths), and lengths that do not cover the bytes (a protocol close).
        let data = |count, item_lens| Msg::StreamData { stream, count, item_caps: vec![], caps: vec![], item_lens };
        push(data(2, vec![1, 1]), vec![1, 2]);
        push(data(2, vec![]), vec![1, 2]);
        push(data(2, vec![1, 2]), vec![1, 2]);
        push(data(1, vec![2]), vec![0x81, 0x01]);
        push(Msg::StreamPart { stream }, vec![7; 8]);
        push(Msg::StreamWindow { stream, read: 1, window: w }, vec![]);
        push(Msg::StreamWindow { stream, read: 0, window: WireWindow { capacity: u32::MAX, batch: u32::MAX } }, vec![]);
        push(Msg::StreamEnd { stream, error: None }, vec![]);
        push(Msg::StreamEnd { stream, error: Some(error.clone()) }, vec![]);
        push(Msg::StreamAbort { stream }, vec![]);
        push(Msg::StreamCancel { stream, reason: Some("r".into()) }, vec![]);
    }
    for id in [0u32, 1, 2] {
        push(Msg::Finish { question: id }, vec![]);
        push(Msg::Release { export: id, count: 1 }, vec![]);
        push(Msg::Return { question: id, result: Ok(vec![]) }, enc(&7u32));
        push(Msg::Return { question: id, result: Err(error.clone()) }, vec![]);
        push(Msg::Disembargo { target: Target::Answer { question: id, cap: 0 }, id }, vec![]);
        push(Msg::Disembargo { target: Target::Export(id), id }, vec![]);
        push(Msg::DisembargoReply { id }, vec![]);
    }
    let panicked = WireError { kind: Kind::HandlerPanicked, message: "p".into(), payload: None };
    push(Msg::Return { question: 0, result: Err(panicked.clone()) }, vec![]);
    push(Msg::StreamEnd { stream: 2, error: Some(panicked) }, vec![]);
    push(Msg::Ping(1), vec![]);
    push(Msg::Pong(1), vec![]);
    push(Msg::Abort(error), vec![]);
    out
}

/// Type-erased postcard encoding, for the dictionary's argument lists.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            postcard::to_stdvec(self).expect("encodes")
        }
    }
}
