//! Unary round trip over TCP loopback: a raw tokio echo beside an
//! `#[eventual]` call, measured in the same run (64-byte request and reply).
//!
//! Run: `cargo run --release -p rpc-examples --bin unary_rtt [ITERATIONS]`

use std::time::{Duration, Instant};

use rpc_core::eventual;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[eventual]
pub trait Echo {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Parrot;

impl Echo for Parrot {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

async fn raw_echo_server(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        stream.set_nodelay(true).ok();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while stream.read_exact(&mut buf).await.is_ok() {
                if stream.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Median and 99th percentile of `samples`.
fn summarize(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);

    let raw_listener = TcpListener::bind("127.0.0.1:0").await?;
    let raw_addr = raw_listener.local_addr()?;
    tokio::spawn(raw_echo_server(raw_listener));
    let rpc_listener = TcpListener::bind("127.0.0.1:0").await?;
    let rpc_addr = rpc_listener.local_addr()?;
    tokio::spawn(rpc_core::serve(rpc_listener, || EchoProxy::new(Parrot)));

    let mut raw = TcpStream::connect(raw_addr).await?;
    raw.set_nodelay(true)?;
    let echo: EchoProxy = rpc_core::connect(rpc_addr).await?;
    let payload = vec![7u8; 64];

    // Interleave the two in rounds so machine noise hits both alike.
    let (mut raw_samples, mut rpc_samples) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 64];
    for round in 0..10 {
        for _ in 0..iterations / 10 {
            let start = Instant::now();
            raw.write_all(&payload).await?;
            raw.read_exact(&mut buf).await?;
            if round > 0 {
                raw_samples.push(start.elapsed());
            }
        }
        for _ in 0..iterations / 10 {
            let start = Instant::now();
            let reply = echo.echo(payload.clone()).await?;
            if round > 0 {
                rpc_samples.push(start.elapsed());
            }
            assert_eq!(reply.len(), 64);
        }
    }
    let (raw_median, raw_p99) = summarize(raw_samples);
    let (rpc_median, rpc_p99) = summarize(rpc_samples);
    println!("unary round trip over TCP loopback, 64-byte payload, {iterations} calls each (first tenth is warm-up)");
    println!("raw tokio echo    median {raw_median:>10.1?}   p99 {raw_p99:>10.1?}");
    println!("#[eventual] call  median {rpc_median:>10.1?}   p99 {rpc_p99:>10.1?}");
    println!("ratio (median)    {:.2}x", rpc_median.as_secs_f64() / raw_median.as_secs_f64());
    Ok(())
}
