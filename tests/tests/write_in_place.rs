//! Replies of the calls a reader starts are written by the reader itself,
//! in place, when the writer task is idle (`rpc-core/src/conn/writer.rs`).
//! The socket may take only part of that write: the rest goes to the writer
//! task, which must write it before anything newer. These tests squeeze the
//! replies through a pipe far smaller than one batch of them, so almost
//! every write in place stops part way.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rpc_core::{eventual, Connection};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

#[eventual]
pub trait Blobs {
    /// `len` bytes that only this `seed` makes.
    async fn blob(&self, seed: u32, len: u32) -> Vec<u8>;
}

struct Maker;

impl Blobs for Maker {
    async fn blob(&self, seed: u32, len: u32) -> Vec<u8> {
        pattern(seed, len)
    }
}

fn pattern(seed: u32, len: u32) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i) % 251) as u8).collect()
}

/// The serving side on a current-thread runtime of its own thread (so its
/// reader starts the calls and writes their replies), over a pipe of
/// `buffer` bytes; the client on the test's runtime.
async fn served_through(buffer: usize) -> (std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>, Connection) {
    let (a, b) = tokio::io::duplex(buffer);
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
    for round in 0..4u32 {
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
