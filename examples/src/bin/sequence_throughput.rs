//! Small-item stream throughput over TCP loopback: a hand-rolled
//! length-delimited postcard stream beside `Sequence<Small>`, in one run.
//!
//! Run: `cargo run --release -p rpc-examples --bin sequence_throughput [ITEMS]`

use std::time::{Duration, Instant};

use rpc_core::{eventual, Sequence};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use rpc_examples::small::{item, Small};

#[eventual]
pub trait Source {
    fn items(&self, count: u64) -> Sequence<Small>;
}

struct Producer;

impl Source for Producer {
    fn items(&self, count: u64) -> Sequence<Small> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                writer.write(item(i))?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }
}

/// Raw floor: postcard items, each behind a one-byte length, through buffered I/O.
async fn raw(count: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut out = BufWriter::with_capacity(64 << 10, stream);
        let mut buf = [0u8; 32];
        for i in 0..count {
            let used = postcard::to_slice(&item(i), &mut buf[1..]).unwrap().len();
            buf[0] = used as u8;
            out.write_all(&buf[..used + 1]).await.unwrap();
        }
        out.flush().await.unwrap();
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut input = BufReader::with_capacity(64 << 10, stream);
    let start = Instant::now();
    let mut buf = [0u8; 32];
    for i in 0..count {
        let len = input.read_u8().await.unwrap() as usize;
        input.read_exact(&mut buf[..len]).await.unwrap();
        let small: Small = postcard::from_bytes(&buf[..len]).unwrap();
        debug_assert_eq!(small, item(i));
    }
    start.elapsed()
}

async fn ours(source: &SourceProxy, count: u64, capacity: u32, batch: u32) -> Duration {
    let start = Instant::now();
    let mut items = source.items(count);
    items.set_capacity(capacity);
    items.set_batch_size(batch);
    let mut n = 0;
    while let Some(small) = items.read().await.unwrap() {
        debug_assert_eq!(small, item(n));
        n += 1;
    }
    assert_eq!(n, count);
    start.elapsed()
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64() / 1e6
}

#[tokio::main]
async fn main() {
    let count: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rpc_core::serve(listener, || SourceProxy::new(Producer)));
    let source: SourceProxy = rpc_core::connect(addr).await.unwrap();

    println!("small-struct stream over TCP loopback, {count} items per run, best of 3 interleaved runs");
    let (mut best_raw, mut best_ours) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        best_raw = best_raw.min(raw(count).await);
        best_ours = best_ours.min(ours(&source, count, 8192, 1024).await);
    }
    let (raw_rate, our_rate) = (rate(count, best_raw), rate(count, best_ours));
    println!("raw postcard stream     {raw_rate:>7.2} M items/s");
    println!("Sequence<Small>         {our_rate:>7.2} M items/s  (capacity 8192, batch 1024)");
    println!("ratio                   {:.2}x", our_rate / raw_rate);
}
