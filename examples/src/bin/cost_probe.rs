//! One workload, one side, N operations: the program `scripts/costs.sh` runs
//! under callgrind to count instructions per operation (a count, unlike a
//! time, is the same from run to run on a busy machine).
//!
//! Everything runs on one current-thread runtime (client and server in one
//! thread over TCP loopback), so scheduling, and with it the count, is
//! repeatable. The script runs each workload at two sizes and divides the
//! difference, which cancels start-up and connection set-up.
//!
//! Run: `cargo run --release -p rpc-examples --bin cost_probe -- WORKLOAD SIDE N`
//! with WORKLOAD one of `unary`, `inflight64`, `sequence`, `bytes` (N in KiB),
//! `chain` (N pipelined chains of ten calls; not in the script's figures)
//! and SIDE `ours` or `raw`.

use futures::future::join_all;
use futures::StreamExt;
use rpc_core::{eventual, Bytes, Sequence};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use rpc_examples::small::{item, Small};

#[eventual]
pub trait Probe {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    fn items(&self, count: u64) -> Sequence<Small>;
    fn download(&self, kib: u64) -> Bytes;
    /// Another probe, as a pipelined proxy (a hop of a chain).
    fn next(&self) -> ProbeProxy;
}

struct Server;

impl Probe for Server {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

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

    fn download(&self, kib: u64) -> Bytes {
        let (mut writer, reader) = Bytes::channel();
        tokio::spawn(async move {
            let chunk = bytes::Bytes::from(vec![0x5au8; 1024]);
            for _ in 0..kib {
                writer.write_all(&chunk).await.map_err(|e| rpc_core::RpcError::disconnected(e.to_string()))?;
            }
            writer.close(None).await
        });
        reader
    }

    fn next(&self) -> ProbeProxy {
        ProbeProxy::new(Server)
    }
}

async fn connect_ours() -> ProbeProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rpc_core::serve(listener, || ProbeProxy::new(Server)));
    rpc_core::connect(addr).await.unwrap()
}

/// A raw TCP pair on loopback, Nagle off.
async fn raw_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// Echoes 64-byte messages until the peer goes.
async fn raw_echo(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&buf).await.is_err() {
            break;
        }
    }
}

async fn unary(side: &str, n: u64) {
    let payload = vec![7u8; 64];
    if side == "raw" {
        let (mut client, server) = raw_pair().await;
        tokio::spawn(raw_echo(server));
        let mut reply = [0u8; 64];
        for _ in 0..n {
            client.write_all(&payload).await.unwrap();
            client.read_exact(&mut reply).await.unwrap();
        }
    } else {
        let probe = connect_ours().await;
        for _ in 0..n {
            assert_eq!(probe.echo(payload.clone()).await.unwrap().len(), 64);
        }
    }
}

/// `n` pipelined chains of ten calls (nine hops and an echo), each awaited;
/// raw does `n` round trips, for scale.
async fn chain(side: &str, n: u64) {
    if side == "raw" {
        return unary(side, n).await;
    }
    let probe = connect_ours().await;
    for _ in 0..n {
        let mut node = probe.clone();
        for _ in 0..9 {
            node = node.next();
        }
        assert_eq!(node.echo(vec![7u8; 64]).await.unwrap().len(), 64);
    }
}

/// `n` rounds of 64 calls in flight at once.
async fn inflight64(side: &str, n: u64) {
    let payload = vec![7u8; 64];
    if side == "raw" {
        let (client, server) = raw_pair().await;
        tokio::spawn(raw_echo(server));
        let (mut read, mut write) = client.into_split();
        let batch: Vec<u8> = payload.iter().copied().cycle().take(64 * 64).collect();
        let mut replies = vec![0u8; 64 * 64];
        for _ in 0..n {
            write.write_all(&batch).await.unwrap();
            read.read_exact(&mut replies).await.unwrap();
        }
    } else {
        let probe = connect_ours().await;
        for _ in 0..n {
            let calls = (0..64).map(|_| probe.echo(payload.clone()));
            for reply in join_all(calls).await {
                assert_eq!(reply.unwrap().len(), 64);
            }
        }
    }
}

async fn sequence(side: &str, n: u64) {
    if side == "raw" {
        let (client, server) = raw_pair().await;
        tokio::spawn(async move {
            let mut out = BufWriter::with_capacity(64 << 10, server);
            let mut buf = [0u8; 32];
            for i in 0..n {
                let used = postcard::to_slice(&item(i), &mut buf[1..]).unwrap().len();
                buf[0] = used as u8;
                out.write_all(&buf[..used + 1]).await.unwrap();
            }
            out.flush().await.unwrap();
        });
        let mut input = BufReader::with_capacity(64 << 10, client);
        let mut buf = [0u8; 32];
        for i in 0..n {
            let len = input.read_u8().await.unwrap() as usize;
            input.read_exact(&mut buf[..len]).await.unwrap();
            let small: Small = postcard::from_bytes(&buf[..len]).unwrap();
            assert_eq!(small, item(i));
        }
    } else {
        let probe = connect_ours().await;
        let mut items = probe.items(n);
        items.set_capacity(4096);
        items.set_batch_size(256);
        let mut i = 0;
        while let Some(small) = items.next().await {
            assert_eq!(small.unwrap(), item(i));
            i += 1;
        }
        assert_eq!(i, n);
    }
}

async fn bytes(side: &str, kib: u64) {
    let total = kib * 1024;
    if side == "raw" {
        let (mut client, mut server) = raw_pair().await;
        tokio::spawn(async move {
            let chunk = vec![0x5au8; 1024];
            for _ in 0..kib {
                server.write_all(&chunk).await.unwrap();
            }
        });
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < total {
            got += client.read(&mut buf).await.unwrap() as u64;
        }
    } else {
        let probe = connect_ours().await;
        let mut download = probe.download(kib);
        download.set_window(4 << 20);
        download.set_max_read(256 << 10);
        let mut got = 0;
        while let Some(chunk) = download.next().await {
            got += chunk.unwrap().len() as u64;
        }
        assert_eq!(got, total);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: cost_probe unary|inflight64|sequence|bytes|chain ours|raw N";
    let [workload, side, n] = args.as_slice() else { panic!("{usage}") };
    assert!(side == "ours" || side == "raw", "{usage}");
    let n: u64 = n.parse().expect(usage);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        match workload.as_str() {
            "unary" => unary(side, n).await,
            "inflight64" => inflight64(side, n).await,
            "sequence" => sequence(side, n).await,
            "bytes" => bytes(side, n).await,
            "chain" => chain(side, n).await,
            _ => panic!("{usage}"),
        }
    });
}
