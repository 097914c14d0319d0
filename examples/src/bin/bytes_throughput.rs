//! Bulk byte-stream throughput over TCP loopback: a raw tokio TCP copy beside
//! a `Bytes` download, in one run.
//!
//! Run: `cargo run --release -p rpc-examples --bin bytes_throughput [MIB]`

use std::time::{Duration, Instant};

use rpc_core::{eventual, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 << 10;

#[eventual]
pub trait Blob {
    fn download(&self, bytes: u64) -> Bytes;
}

struct Zeros;

impl Blob for Zeros {
    fn download(&self, bytes: u64) -> Bytes {
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

async fn raw(bytes: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let chunk = vec![0x5au8; CHUNK];
        let mut sent = 0;
        while sent < bytes {
            let n = (CHUNK as u64).min(bytes - sent) as usize;
            stream.write_all(&chunk[..n]).await.unwrap();
            sent += n as u64;
        }
    });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    while got < bytes {
        got += stream.read(&mut buf).await.unwrap() as u64;
    }
    start.elapsed()
}

async fn ours(blob: &BlobProxy, bytes: u64) -> Duration {
    let start = Instant::now();
    let mut download = blob.download(bytes);
    download.set_window(4 << 20);
    download.set_max_read(256 << 10);
    let mut got = 0;
    while let Some(chunk) = download.read_chunk().await.unwrap() {
        got += chunk.len() as u64;
    }
    assert_eq!(got, bytes);
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1024);
    let bytes = mib << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rpc_core::serve(listener, || BlobProxy::new(Zeros)));
    let blob: BlobProxy = rpc_core::connect(addr).await.unwrap();
    println!("bulk transfer over TCP loopback, {mib} MiB per run, best of 3 interleaved runs");
    let (mut best_raw, mut best_ours) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        best_raw = best_raw.min(raw(bytes).await);
        best_ours = best_ours.min(ours(&blob, bytes).await);
    }
    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!("raw tokio TCP copy   {:>6.2} GB/s", gbps(best_raw));
    println!("Bytes download       {:>6.2} GB/s  (window 4 MiB, reads up to 256 KiB)", gbps(best_ours));
    println!("ratio                {:.2}x", gbps(best_ours) / gbps(best_raw));
}
