//! A bulk byte stream reads into large chunks (`rpc-core/src/conn/driver.rs`).
//! The reader lets the stream's reader task run between chunks, so the
//! chunks it has read out are free again and reused in place: a long
//! transfer takes a handful of chunks from the allocator, not one per
//! chunk read (whose pages the system then faults in afresh each time).
//! Counted with a counting global allocator (alone in this test binary), on
//! a current-thread runtime that runs both ends.

use rpc_core::{eventual, Bytes, Config};
use rpc_tests::connect_pair;
use rpc_tests::thread_alloc::{large_allocations, ThreadCounting, LARGE};
use tokio::time::{timeout, Duration};

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

#[eventual]
pub trait Source {
    /// `bytes` bytes, written 256 KiB at a time from one buffer.
    fn download(&self, bytes: u64) -> Bytes;
}

struct Zeros;

impl Source for Zeros {
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

const TOTAL: u64 = 128 << 20;

#[tokio::test]
async fn a_bulk_transfer_reuses_its_read_chunks() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (_server, _client, source): (_, _, SourceProxy) =
        connect_pair(a, b, SourceProxy::new(Zeros), Config::default()).await.expect("connect");
    let before = large_allocations();
    let mut download = source.download(TOTAL);
    download.set_window(4 << 20);
    download.set_max_read(256 << 10);
    let mut got = 0;
    while let Some(chunk) =
        timeout(Duration::from_secs(30), download.read_chunk()).await.expect("stalled").expect("read")
    {
        got += chunk.len() as u64;
    }
    assert_eq!(got, TOTAL);
    let large = large_allocations() - before;
    // 128 MiB read in chunks of 512 KiB is 256 chunks; reused, a few.
    assert!(large <= 16, "{large} allocations of {LARGE} bytes or more for {TOTAL} bytes");
}
