//! Byte streams end to end: download, upload, tokio::io::copy both ways, local and remote.

use std::time::Duration;

use rpc_core::{eventual, Bytes, BytesWriter, RpcError};
use rpc_tests::Via;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[eventual]
pub trait Store {
    /// `len` bytes of a known pattern, written in chunks of `chunk`.
    fn download(&self, len: u64, chunk: u32) -> Bytes;
    /// Reads an upload to its end; returns its length and checksum.
    async fn upload(&self, data: Bytes) -> Result<(u64, u64), RpcError>;
    /// Copies `len` pattern bytes into the caller's writer.
    async fn fill(&self, len: u64, into: BytesWriter) -> Result<(), RpcError>;
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 7)) as u8
}

fn checksum(data: &[u8], offset: u64) -> u64 {
    data.iter()
        .enumerate()
        .fold(0u64, |acc, (i, b)| acc.wrapping_mul(1_000_003).wrapping_add(*b as u64 ^ (offset + i as u64)))
}

struct Shelf;

impl Store for Shelf {
    fn download(&self, len: u64, chunk: u32) -> Bytes {
        let (mut writer, reader) = Bytes::channel();
        tokio::spawn(async move {
            let mut at = 0u64;
            while at < len {
                let n = (chunk as u64).min(len - at);
                let data: Vec<u8> = (at..at + n).map(pattern).collect();
                writer.write_all(&data).await?;
                at += n;
            }
            writer.shutdown().await
        });
        reader
    }

    async fn upload(&self, mut data: Bytes) -> Result<(u64, u64), RpcError> {
        let mut all = Vec::new();
        while let Some(chunk) = data.read_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok((all.len() as u64, checksum(&all, 0)))
    }

    async fn fill(&self, len: u64, mut into: BytesWriter) -> Result<(), RpcError> {
        let data: Vec<u8> = (0..len).map(pattern).collect();
        into.write_all(&data).await.map_err(|e| RpcError::cancelled(e.to_string()))?;
        into.close(None).await
    }
}

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_arrives_whole_through_tokio_io_copy() {
    for via in Via::BOTH {
        let (store, _conns) = via.reach(StoreProxy::new(Shelf)).await;
        let mut download = store.download(1 << 20, 7_777);
        let mut out = Vec::new();
        bounded("copy", tokio::io::copy(&mut download, &mut out)).await.unwrap();
        let expected: Vec<u8> = (0..1u64 << 20).map(pattern).collect();
        assert!(out == expected, "{via:?}: {} bytes differ", out.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_tokio_io_copy_is_read_by_the_server() {
    for via in Via::BOTH {
        let (store, _conns) = via.reach(StoreProxy::new(Shelf)).await;
        let (mut writer, data) = Bytes::channel();
        let answer = store.upload(data);
        let source: Vec<u8> = (0..300_000u64).map(pattern).collect();
        bounded("copy", tokio::io::copy(&mut &source[..], &mut writer)).await.unwrap();
        bounded("shutdown", writer.shutdown()).await.unwrap();
        assert_eq!(bounded("answer", answer).await.unwrap(), (300_000, checksum(&source, 0)), "{via:?}");
    }
}

#[tokio::test]
async fn reads_ignore_write_boundaries_and_respect_the_max_read() {
    for via in Via::BOTH {
        let (store, _conns) = via.reach(StoreProxy::new(Shelf)).await;
        let mut download = store.download(10_000, 3);
        download.set_max_read(1000);
        let mut total = 0;
        let mut largest = 0;
        while let Some(chunk) = bounded("read", download.read_chunk()).await.unwrap() {
            assert!(chunk.len() <= 1000, "{via:?}: a read of {} bytes", chunk.len());
            largest = largest.max(chunk.len());
            total += chunk.len();
        }
        assert_eq!(total, 10_000, "{via:?}");
        assert!(largest > 3, "{via:?}: reads follow the 3-byte writes ({largest})");
    }
}

#[tokio::test]
async fn a_one_byte_window_still_makes_progress() {
    for via in Via::BOTH {
        let (store, _conns) = via.reach(StoreProxy::new(Shelf)).await;
        let (writer, mut data) = Bytes::channel();
        data.set_window(1);
        let done = store.fill(2_000, writer);
        let mut got = Vec::new();
        bounded("read all", data.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, (0..2_000u64).map(pattern).collect::<Vec<_>>(), "{via:?}");
        bounded("fill", done).await.unwrap();
    }
}
