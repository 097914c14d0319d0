//! Our framework: `#[eventual]` traits from rpc-core.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rpc_core::{eventual, Bytes, RpcError, Sequence};
use serde::{Deserialize, Serialize};

use crate::alloc;
use crate::common::*;
use crate::rt::{listener, tokio_listener, ServerThread};

/// An item of about 100 bytes (104 in memory, 99–100 encoded), for the
/// producer-ahead memory figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blob100 {
    pub id: u64,
    pub a: [u8; 32],
    pub b: [u8; 32],
    pub c: [u8; 32],
}

pub const BLOB100_SIZE: usize = std::mem::size_of::<Blob100>();

fn blob100(i: u64) -> Blob100 {
    Blob100 { id: i, a: [1; 32], b: [2; 32], c: [3; 32] }
}

#[eventual]
pub trait Bench {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// The first node of a chain.
    fn root(&self) -> NodeProxy;
    /// `count` small structs.
    fn items(&self, count: u64) -> Sequence<Small>;
    /// `count` items of ~100 bytes.
    fn blobs(&self, count: u64) -> Sequence<Blob100>;
    /// `bytes` bytes.
    fn download(&self, bytes: u64) -> Bytes;
}

#[eventual]
pub trait Node {
    /// The next node, as a pipelined proxy.
    fn next(&self) -> NodeProxy;
    /// The next node, as a promise to await.
    async fn child(&self) -> Result<NodeProxy, RpcError>;
    async fn depth(&self) -> u32;
}

struct Server;

impl Bench for Server {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    fn root(&self) -> NodeProxy {
        NodeProxy::new(Chain(0))
    }

    fn items(&self, count: u64) -> Sequence<Small> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                writer.write(small(i))?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    fn blobs(&self, count: u64) -> Sequence<Blob100> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                writer.write(blob100(i))?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    fn download(&self, bytes: u64) -> Bytes {
        const CHUNK: usize = 256 << 10;
        let (mut writer, reader) = Bytes::channel();
        tokio::spawn(async move {
            let chunk = bytes::Bytes::from(vec![0x5au8; CHUNK]);
            let mut sent = 0;
            while sent < bytes {
                let n = (CHUNK as u64).min(bytes - sent) as usize;
                writer.write(chunk.slice(..n))?;
                writer.flush().await?;
                sent += n as u64;
            }
            writer.close(None).await
        });
        reader
    }
}

struct Chain(u32);

impl Node for Chain {
    fn next(&self) -> NodeProxy {
        NodeProxy::new(Chain(self.0 + 1))
    }
    async fn child(&self) -> Result<NodeProxy, RpcError> {
        Ok(NodeProxy::new(Chain(self.0 + 1)))
    }
    async fn depth(&self) -> u32 {
        self.0
    }
}

/// Sequence window of the throughput figure (as in `sequence_throughput`).
pub const SEQ_CAPACITY: u32 = 8192;
pub const SEQ_BATCH: u32 = 1024;

pub struct Ours {
    bench: BenchProxy,
    root: NodeProxy,
    /// `None`: the sequence's default window.
    window: Option<(u32, u32)>,
    name: &'static str,
}

impl Ours {
    pub async fn setup(server: &ServerThread) -> Res<Ours> {
        let (l, addr) = listener();
        server.spawn(move || async move {
            let _ = rpc_core::serve(tokio_listener(l), || BenchProxy::new(Server)).await;
        });
        let bench: BenchProxy = rpc_core::connect(addr).await?;
        let root = bench.root();
        if root.depth().await? != 0 {
            return Err(err("root depth"));
        }
        Ok(Ours { bench, root, window: Some((SEQ_CAPACITY, SEQ_BATCH)), name: "ours" })
    }

    /// The same server and connection, streams read with the default window.
    pub fn default_window(&self) -> Ours {
        Ours { bench: self.bench.clone(), root: self.root.clone(), window: None, name: "ours(default window)" }
    }

    fn items(&self, count: u64) -> Sequence<Small> {
        let items = self.bench.items(count);
        if let Some((capacity, batch)) = self.window {
            items.set_capacity(capacity);
            items.set_batch_size(batch);
        }
        items
    }

    /// Allocations on the consumer's thread per read served from the buffer:
    /// the producer fills the window while we sleep, then reads that complete
    /// without waiting are counted one by one.
    pub async fn allocs_per_buffered_read(&self, count: u64) -> Res<(f64, u64)> {
        let mut items = self.items(count);
        let (mut allocs, mut reads, mut n) = (0u64, 0u64, 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            loop {
                let before = alloc::thread_allocs();
                let read = items.read().now_or_never();
                let after = alloc::thread_allocs();
                match read {
                    Some(Ok(Some(item))) => {
                        debug_assert_eq!(item, small(n));
                        n += 1;
                        allocs += after - before;
                        reads += 1;
                    }
                    Some(Ok(None)) => {
                        if n != count {
                            return Err(err(format!("sequence ended after {n} of {count}")));
                        }
                        return Ok((allocs as f64 / reads.max(1) as f64, reads));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => break,
                }
            }
        }
    }

    /// A producer writing `count` ~100-byte items (write + flush each) ahead of
    /// a consumer with capacity `capacity` that sleeps 1 ms every 1,000 items.
    /// Returns (peak heap bytes allocated during the run and live at once,
    /// peak RSS growth in bytes).
    pub async fn producer_ahead(&self, count: u64, capacity: u32) -> Res<(f64, f64)> {
        let rss_before = proc_status("VmRSS:");
        let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM
        let counting = alloc::Counting::start();
        let mut blobs = self.bench.blobs(count);
        blobs.set_capacity(capacity);
        let mut n = 0u64;
        while let Some(blob) = blobs.read().await? {
            debug_assert_eq!(blob.id, n);
            std::hint::black_box(blob);
            n += 1;
            if n.is_multiple_of(1000) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if n != count {
            return Err(err(format!("got {n} of {count} items")));
        }
        let peak = counting.peak_bytes() as f64;
        drop(counting);
        let rss = match (rss_before, proc_status("VmHWM:")) {
            (Some(before), Some(peak)) => peak.saturating_sub(before) as f64,
            _ => f64::NAN,
        };
        Ok((peak, rss))
    }
}

/// A `/proc/self/status` field in bytes.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

impl Contender for Ours {
    fn name(&self) -> &'static str {
        self.name
    }

    fn unary(&self, calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        self.window?; // the default-window twin only streams
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                let reply = self.bench.echo(payload.clone()).await?;
                samples.push(start.elapsed());
                debug_assert_eq!(reply.len(), PAYLOAD);
            }
            Ok(samples)
        }))
    }

    fn inflight(&self, calls: usize) -> Option<Fut<'_, Duration>> {
        self.window?; // the default-window twin only streams
        Some(Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let start = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            let mut sent = 0;
            while sent < calls.min(IN_FLIGHT) {
                in_flight.push(self.bench.echo(payload.clone()));
                sent += 1;
            }
            while let Some(reply) = in_flight.next().await {
                reply?;
                if sent < calls {
                    in_flight.push(self.bench.echo(payload.clone()));
                    sent += 1;
                }
            }
            Ok(start.elapsed())
        }))
    }

    fn chain(&self, chains: usize, pipelined: bool) -> Option<Fut<'_, Vec<Duration>>> {
        self.window?; // the default-window twin only streams
        Some(Box::pin(async move {
            let mut samples = Vec::with_capacity(chains);
            for _ in 0..chains {
                let start = Instant::now();
                let mut node = self.root.clone();
                for _ in 0..CHAIN - 1 {
                    node = if pipelined { node.next() } else { node.child().await? };
                }
                let depth = node.depth().await?;
                samples.push(start.elapsed());
                if depth as usize != CHAIN - 1 {
                    return Err(err("wrong depth"));
                }
            }
            Ok(samples)
        }))
    }

    fn stream(&self, count: u64) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let start = Instant::now();
            let mut items = self.items(count);
            let mut n = 0;
            while let Some(item) = items.read().await? {
                debug_assert_eq!(item, small(n));
                std::hint::black_box(item);
                n += 1;
            }
            if n != count {
                return Err(err(format!("got {n} of {count} items")));
            }
            Ok(start.elapsed())
        }))
    }

    fn bulk(&self, bytes: u64) -> Option<Fut<'_, Duration>> {
        self.window?; // the default-window twin only streams
        Some(Box::pin(async move {
            let start = Instant::now();
            let mut download = self.bench.download(bytes);
            download.set_window(4 << 20);
            download.set_max_read(256 << 10);
            let mut got = 0;
            while let Some(chunk) = download.read_chunk().await? {
                got += chunk.len() as u64;
            }
            if got != bytes {
                return Err(err(format!("got {got} of {bytes} bytes")));
            }
            Ok(start.elapsed())
        }))
    }
}
