//! Replies of the calls a reader starts are written by the reader itself,
//! in place, when the writer task is idle (`rpc-core/src/conn/writer.rs`).
//! The socket may take only part of that write: the rest goes to the writer
//! task, which must write it before anything newer. These tests squeeze the
//! replies through a pipe far smaller than one batch of them, so almost
//! every write in place stops part way. A large batch of calls is written
//! in parts, the first replies leaving before the last calls start.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rpc_core::{eventual, Connection};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

#[eventual]
pub trait Blobs {
    /// `len` bytes that only this `seed` makes.
    async fn blob(&self, seed: u32, len: u32) -> Vec<u8>;
    /// Waits (blocking the serving thread) until the caller has `replies`
    /// replies, for at most `WAIT`; whether it had them.
    fn after_replies(&self, replies: u32) -> bool;
}

/// Replies the caller of `batch_replies_leave_in_parts` has received.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
const WAIT: Duration = Duration::from_secs(10);

struct Maker;

impl Blobs for Maker {
    async fn blob(&self, seed: u32, len: u32) -> Vec<u8> {
        pattern(seed, len)
    }

    fn after_replies(&self, replies: u32) -> bool {
        let deadline = Instant::now() + WAIT;
        while RECEIVED.load(Ordering::Acquire) < replies {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

fn pattern(seed: u32, len: u32) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i) % 251) as u8).collect()
}

/// The serving side on a current-thread runtime of its own thread (so its
/// reader starts the calls and writes their replies), over a pipe of
/// `buffer` bytes; the client on the test's runtime.
async fn served_through(buffer: usize) -> (std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>, Connection) {
    served_over(buffer, |io| io).await
}

/// [`served_through`], the serving side's end of the pipe wrapped by `wrap`.
async fn served_over<IO>(
    buffer: usize,
    wrap: impl FnOnce(DuplexStream) -> IO + Send + 'static,
) -> (std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>, Connection)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (a, b) = tokio::io::duplex(buffer);
    let a = wrap(a);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let _server = Connection::builder().bootstrap(BlobsProxy::new(Maker)).open(a).await.expect("server");
            let _ = stopped.await;
        });
    });
    let client = timeout(LIMIT, Connection::builder().open(b)).await.expect("open timed out").expect("client");
    (thread, stop, client)
}

/// Many calls in flight, replies of many sizes, through a 97-byte pipe:
/// every reply arrives whole, with its own bytes (a lost or reordered rest
/// of a write in place would corrupt the frames and close the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_the_socket_takes_in_part_arrive_whole_and_in_order() {
    let (thread, stop, client) = served_through(97).await;
    let blobs: BlobsProxy = client.bootstrap();
    for round in 0..8u32 {
        let mut calls = FuturesUnordered::new();
        for i in 0..64u32 {
            let (seed, len) = (round * 1000 + i, (i * 37 + round * 11) % 2000);
            let call = blobs.blob(seed, len);
            calls.push(async move { (seed, len, call.await) });
        }
        let mut replies = 0;
        while let Some((seed, len, reply)) = timeout(LIMIT, calls.next()).await.expect("a reply is missing") {
            let reply = reply.expect("a call failed");
            assert_eq!(reply, pattern(seed, len), "the reply to call {seed} came back wrong");
            replies += 1;
        }
        assert_eq!(replies, 64);
    }
    // One call at a time, too: each reply written in place alone.
    for seed in 0..32u32 {
        let reply = timeout(LIMIT, blobs.blob(seed, 300 + seed)).await.expect("no reply").expect("a call failed");
        assert_eq!(reply, pattern(seed, 300 + seed));
    }
    drop(stop);
    thread.join().expect("the serving thread");
}

/// 64 calls arriving together are started and answered in parts: the
/// replies of the first calls reach the caller while the last has not
/// started yet, so the caller can go on with them (64 calls in flight:
/// both ends work at once, not in turn). Were the replies held until all 64
/// had run, the last call (which waits for a reply to have arrived) would
/// give up after `WAIT`.
// The caller on a current-thread runtime: its 64 calls leave in one write.
#[tokio::test]
async fn batch_replies_leave_in_parts() {
    let (thread, stop, client) = served_through(1 << 20).await;
    let blobs: BlobsProxy = client.bootstrap();
    // The connection is up and idle: the batch arrives in one piece.
    assert!(timeout(LIMIT, blobs.after_replies(0)).await.expect("no reply").expect("a call failed"));
    let mut calls = FuturesUnordered::new();
    for i in 0..64u32 {
        let call = if i == 63 { blobs.after_replies(1) } else { blobs.after_replies(0) };
        calls.push(async move {
            let reply = call.await;
            RECEIVED.fetch_add(1, Ordering::AcqRel);
            (i, reply)
        });
    }
    let mut replies = 0;
    while let Some((i, reply)) = timeout(LIMIT, calls.next()).await.expect("a reply is missing") {
        assert!(reply.expect("a call failed"), "call {i}: no reply had reached the caller when it started");
        replies += 1;
    }
    assert_eq!(replies, 64);
    drop(stop);
    thread.join().expect("the serving thread");
}

/// A stream that takes at most 7 bytes a write and says "not now" to every
/// other write (waking the writer at once, so it gets on): a write in place
/// always stops part way, and the next one would be taken.
struct Stingy {
    io: DuplexStream,
    refuse: bool,
}

impl AsyncRead for Stingy {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stingy {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.refuse = !self.refuse;
        if self.refuse {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.len().min(7);
        Pin::new(&mut self.io).poll_write(cx, &buf[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A batch written in parts through a stream that takes a few bytes at a
/// time: every part written in place stops part way, and its rest waits for
/// the writer task. The next part must wait behind that rest, not be
/// written before it (the replies would arrive cut and mixed, and the
/// connection close on a garbled frame).
// The caller on a current-thread runtime: its 64 calls leave in one write.
#[tokio::test]
async fn a_part_written_in_place_waits_behind_the_rest_of_the_last() {
    let (thread, stop, client) = served_over(1 << 20, |io| Stingy { io, refuse: false }).await;
    let blobs: BlobsProxy = client.bootstrap();
    for round in 0..2u32 {
        let mut calls = FuturesUnordered::new();
        for i in 0..64u32 {
            let (seed, len) = (round * 1000 + i, 20 + i);
            let call = blobs.blob(seed, len);
            calls.push(async move { (seed, len, call.await) });
        }
        let mut replies = 0;
        while let Some((seed, len, reply)) = timeout(LIMIT, calls.next()).await.expect("a reply is missing") {
            assert_eq!(reply.expect("a call failed"), pattern(seed, len), "the reply to call {seed} came back wrong");
            replies += 1;
        }
        assert_eq!(replies, 64);
    }
    drop(stop);
    thread.join().expect("the serving thread");
}
