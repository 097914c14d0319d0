//! Shared by the `bytes_*` semantics tests: the byte pattern, the `Depot`
//! interface (`Bytes` and `BytesWriter` in every position, parking readers
//! and writers, a window-bound producer), its probe, and pairs of ends on
//! every route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rpc_core::{eventual, Bytes, BytesWriter, ErrorKind, RpcError, Sequence};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use crate::stream_support::{within, Conns, Route, SETTLE};
use crate::Via;

/// Reads a reader makes at most before the test gives up on its end.
pub const MAX_READS: usize = 4 << 20;
/// Bytes `produce` writes at most (it stalls on the window long before).
pub const PRODUCE_MAX: u64 = 64 << 20;

// ----- data ---------------------------------------------------------------------

/// Byte `i` of the test pattern number `seed`: no short period, so a lost,
/// repeated or reordered piece shows.
pub fn pattern(seed: u64, i: u64) -> u8 {
    let x = (i ^ (i >> 8) ^ (i >> 16)).wrapping_mul(31).wrapping_add(seed.wrapping_mul(101));
    (x ^ (x >> 8)) as u8
}

pub fn expected(seed: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| pattern(seed, i)).collect()
}

/// Asserts `got` is pattern `seed` of length `len`, naming the first difference.
pub fn assert_pattern(what: &str, got: &[u8], seed: u64, len: u64) {
    assert_eq!(got.len() as u64, len, "{what}: length");
    if let Some(i) = got.iter().enumerate().position(|(i, b)| *b != pattern(seed, i as u64)) {
        panic!("{what}: byte {i} differs");
    }
}

/// Writes pattern `seed` of `len` bytes in chunks of 7,777 (`write` then `flush`).
pub async fn write_pattern(writer: &mut BytesWriter, seed: u64, len: u64) -> Result<(), RpcError> {
    let mut at = 0;
    while at < len {
        let end = (at + 7_777).min(len);
        writer.write((at..end).map(|i| pattern(seed, i)).collect::<Vec<u8>>())?;
        writer.flush().await?;
        at = end;
    }
    Ok(())
}

/// Reads to the end; an error instead of a panic if it never ends.
pub async fn read_to_end(reader: &mut Bytes) -> Result<Vec<u8>, RpcError> {
    let mut all = Vec::new();
    for _ in 0..MAX_READS {
        match reader.read_chunk().await? {
            Some(chunk) => all.extend_from_slice(&chunk),
            None => return Ok(all),
        }
    }
    Err(RpcError::new(ErrorKind::LimitExceeded, "the stream never ended"))
}

// ----- the interface ------------------------------------------------------------

/// A struct holding a byte stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct Blob {
    pub name: String,
    pub data: Bytes,
}

/// A struct holding a writer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub into: BytesWriter,
}

/// An enum with either end in its variants.
#[derive(Debug, Serialize, Deserialize)]
pub enum Parcel {
    Empty,
    Data(Bytes),
    Named { name: String, data: Bytes },
    Into(BytesWriter),
}

#[eventual]
pub trait Depot {
    /// Pattern `seed` of `len` bytes, returned at once.
    fn download(&self, seed: u64, len: u64) -> Bytes;
    /// Reads an upload to its end and returns it.
    async fn upload(&self, data: Bytes) -> Result<Vec<u8>, RpcError>;
    /// Writes pattern `seed` of `len` bytes into the caller's writer and closes it.
    async fn fill(&self, seed: u64, len: u64, into: BytesWriter) -> Result<(), RpcError>;
    /// A struct result holding pattern `seed` of `len` bytes.
    async fn blob(&self, name: String, seed: u64, len: u64) -> Blob;
    /// Reads the stream of a struct argument: (its name, its bytes).
    async fn read_blob(&self, blob: Blob) -> Result<(String, Vec<u8>), RpcError>;
    /// A struct result holding a writer: what the caller writes lands in the probe under `name`.
    async fn slot(&self, name: String) -> Slot;
    /// Writes pattern `seed` of `len` bytes into the writer of a struct argument; returns its name.
    async fn fill_slot(&self, seed: u64, len: u64, slot: Slot) -> Result<String, RpcError>;
    /// `kind` 0: `Empty`, 1: `Data`, 2: `Named` (pattern `seed`, `len` bytes), 3: `Into` (lands in the probe as "into").
    async fn parcel(&self, kind: u8, seed: u64, len: u64) -> Parcel;
    /// Reads a parcel's stream, or writes pattern `seed` of `len` bytes into its writer: (what it was, bytes read).
    async fn open_parcel(&self, seed: u64, len: u64, parcel: Parcel) -> Result<(String, Vec<u8>), RpcError>;
    /// One byte stream per `(seed, len)`: stream `i` has window `(i + 1) * 1000` and carries pattern `seed`.
    fn streams(&self, specs: Vec<(u64, u64)>) -> Sequence<Bytes>;
    /// Reads every stream of an uploaded sequence, the last first.
    async fn read_streams(&self, streams: Sequence<Bytes>) -> Result<Vec<Vec<u8>>, RpcError>;
    /// `count` writers; what the caller writes into writer `i` lands in the probe as "writer i".
    fn writers(&self, count: u32) -> Sequence<BytesWriter>;
    /// Writes pattern `seed + i` of `len` bytes into the `i`th writer of the sequence: how many.
    async fn fill_writers(&self, seed: u64, len: u64, writers: Sequence<BytesWriter>) -> Result<u32, RpcError>;
    /// Keeps a reader in the probe, for the test to take.
    async fn park(&self, reader: Bytes);
    /// Keeps a writer in the probe, for the test to take.
    async fn park_writer(&self, writer: BytesWriter);
    /// Writes 1000-byte pieces through `AsyncWrite` until stopped, counting what it accepted.
    fn produce(&self) -> Bytes;
    fn ping(&self, x: u32) -> u32;
}

/// How a reader spawned by the server ended: all it read, or why it stopped.
pub type Outcome = Result<Vec<u8>, RpcError>;

/// What the server side saw; shared with the test.
#[derive(Default)]
pub struct Probe {
    pub readers: Mutex<Vec<Bytes>>,
    pub writers: Mutex<Vec<BytesWriter>>,
    /// What readers spawned by the server received, by name.
    pub received: Mutex<Vec<(String, Outcome)>>,
    /// Bytes `produce`'s writer accepted.
    pub accepted: AtomicU64,
    /// The error that stopped `produce`'s writer.
    pub error: Mutex<Option<RpcError>>,
}

impl Probe {
    pub fn take_reader(&self) -> Bytes {
        self.readers.lock().unwrap().pop().expect("a parked reader")
    }

    pub fn take_writer(&self) -> BytesWriter {
        self.writers.lock().unwrap().pop().expect("a parked writer")
    }

    pub fn received(&self, name: &str) -> Option<Outcome> {
        self.received.lock().unwrap().iter().find(|(n, _)| n == name).map(|(_, r)| r.clone())
    }

    pub fn error(&self) -> Option<RpcError> {
        self.error.lock().unwrap().clone()
    }
}

/// Reads `reader` to its end in a task; the outcome lands in the probe under `name`.
pub fn collect_into(probe: &Arc<Probe>, name: String, mut reader: Bytes) {
    let probe = probe.clone();
    tokio::spawn(async move {
        let result = read_to_end(&mut reader).await;
        probe.received.lock().unwrap().push((name, result));
    });
}

pub struct DepotImpl {
    pub probe: Arc<Probe>,
}

/// A stream carrying pattern `seed` of `len` bytes, written by a task.
pub fn pattern_stream(seed: u64, len: u64) -> Bytes {
    let (mut writer, reader) = Bytes::channel();
    tokio::spawn(async move {
        write_pattern(&mut writer, seed, len).await?;
        writer.close(None).await
    });
    reader
}

impl Depot for DepotImpl {
    fn download(&self, seed: u64, len: u64) -> Bytes {
        pattern_stream(seed, len)
    }

    async fn upload(&self, mut data: Bytes) -> Result<Vec<u8>, RpcError> {
        read_to_end(&mut data).await
    }

    async fn fill(&self, seed: u64, len: u64, mut into: BytesWriter) -> Result<(), RpcError> {
        write_pattern(&mut into, seed, len).await?;
        into.close(None).await
    }

    async fn blob(&self, name: String, seed: u64, len: u64) -> Blob {
        Blob { name, data: pattern_stream(seed, len) }
    }

    async fn read_blob(&self, blob: Blob) -> Result<(String, Vec<u8>), RpcError> {
        let Blob { name, mut data } = blob;
        Ok((name, read_to_end(&mut data).await?))
    }

    async fn slot(&self, name: String) -> Slot {
        let (into, reader) = Bytes::channel();
        collect_into(&self.probe, name.clone(), reader);
        Slot { name, into }
    }

    async fn fill_slot(&self, seed: u64, len: u64, slot: Slot) -> Result<String, RpcError> {
        let Slot { name, mut into } = slot;
        write_pattern(&mut into, seed, len).await?;
        into.close(None).await?;
        Ok(name)
    }

    async fn parcel(&self, kind: u8, seed: u64, len: u64) -> Parcel {
        match kind {
            1 => Parcel::Data(pattern_stream(seed, len)),
            2 => Parcel::Named { name: format!("named {seed}"), data: pattern_stream(seed, len) },
            3 => {
                let (into, reader) = Bytes::channel();
                collect_into(&self.probe, "into".into(), reader);
                Parcel::Into(into)
            }
            _ => Parcel::Empty,
        }
    }

    async fn open_parcel(&self, seed: u64, len: u64, parcel: Parcel) -> Result<(String, Vec<u8>), RpcError> {
        match parcel {
            Parcel::Empty => Ok(("empty".into(), Vec::new())),
            Parcel::Data(mut data) => Ok(("data".into(), read_to_end(&mut data).await?)),
            Parcel::Named { name, mut data } => Ok((name, read_to_end(&mut data).await?)),
            Parcel::Into(mut into) => {
                write_pattern(&mut into, seed, len).await?;
                into.close(None).await?;
                Ok(("into".into(), Vec::new()))
            }
        }
    }

    fn streams(&self, specs: Vec<(u64, u64)>) -> Sequence<Bytes> {
        let (mut outer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for (i, (seed, len)) in specs.into_iter().enumerate() {
                let inner = pattern_stream(seed, len);
                inner.set_window((i as u32 + 1) * 1000);
                outer.write(inner)?;
                outer.flush().await?;
            }
            outer.close(None).await
        });
        reader
    }

    async fn read_streams(&self, mut streams: Sequence<Bytes>) -> Result<Vec<Vec<u8>>, RpcError> {
        let mut all = Vec::new();
        for _ in 0..100 {
            match streams.read().await? {
                Some(stream) => all.push(stream),
                None => break,
            }
        }
        let mut contents = vec![Vec::new(); all.len()];
        for (i, stream) in all.iter_mut().enumerate().rev() {
            contents[i] = read_to_end(stream).await?;
        }
        Ok(contents)
    }

    fn writers(&self, count: u32) -> Sequence<BytesWriter> {
        let (mut outer, reader) = Sequence::channel();
        let probe = self.probe.clone();
        tokio::spawn(async move {
            for i in 0..count {
                let (writer, data) = Bytes::channel();
                collect_into(&probe, format!("writer {i}"), data);
                outer.write(writer)?;
                outer.flush().await?;
            }
            outer.close(None).await
        });
        reader
    }

    async fn fill_writers(&self, seed: u64, len: u64, mut writers: Sequence<BytesWriter>) -> Result<u32, RpcError> {
        let mut n = 0;
        for _ in 0..100 {
            let Some(mut writer) = writers.read().await? else { break };
            write_pattern(&mut writer, seed + u64::from(n), len).await?;
            writer.close(None).await?;
            n += 1;
        }
        Ok(n)
    }

    async fn park(&self, reader: Bytes) {
        self.probe.readers.lock().unwrap().push(reader);
    }

    async fn park_writer(&self, writer: BytesWriter) {
        self.probe.writers.lock().unwrap().push(writer);
    }

    fn produce(&self) -> Bytes {
        let (mut writer, reader) = Bytes::channel();
        let probe = self.probe.clone();
        tokio::spawn(async move {
            let piece = [7u8; 1000];
            while probe.accepted.load(Ordering::SeqCst) < PRODUCE_MAX {
                match AsyncWriteExt::write(&mut writer, &piece).await {
                    Ok(n) => probe.accepted.fetch_add(n as u64, Ordering::SeqCst),
                    Err(err) => {
                        let err = err.get_ref().and_then(|e| e.downcast_ref::<RpcError>()).cloned();
                        *probe.error.lock().unwrap() = err;
                        return;
                    }
                };
            }
        });
        reader
    }

    fn ping(&self, x: u32) -> u32 {
        x
    }
}

// ----- helpers ------------------------------------------------------------------

pub async fn depot(via: Via) -> (DepotProxy, Arc<Probe>, Conns) {
    let probe = Arc::new(Probe::default());
    let (depot, conns) = via.reach(DepotProxy::new(DepotImpl { probe: probe.clone() })).await;
    (depot, probe, conns)
}

/// The `RpcError` inside an `io::Error` from `AsyncRead`/`AsyncWrite`.
pub fn rpc_error_of(err: &std::io::Error) -> RpcError {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<RpcError>())
        .cloned()
        .unwrap_or_else(|| panic!("an io::Error without an RpcError inside: {err}"))
}

/// Writes `source[*sent..]` through `AsyncWrite` until a write stays pending
/// for `SETTLE`; returns how many bytes this call got accepted.
pub async fn write_until_stalled(writer: &mut BytesWriter, source: &[u8], sent: &mut usize) -> usize {
    let start = *sent;
    for _ in 0..100_000 {
        assert!(*sent < source.len(), "the writer never stalled: {} bytes accepted", *sent - start);
        let end = (*sent + 4096).min(source.len());
        match timeout(SETTLE, AsyncWriteExt::write(writer, &source[*sent..end])).await {
            Err(_) => return *sent - start,
            Ok(n) => {
                let n = n.expect("write");
                assert!(n > 0, "a write accepted nothing");
                *sent += n;
            }
        }
    }
    panic!("the writer never stalled");
}

// ----- pairs of ends -----------------------------------------------------------

/// The routes where bytes cross a connection.
pub const REMOTE_ROUTES: [Route; 2] = [Route::ReaderSent(Via::Remote), Route::WriterSent(Via::Remote)];

pub struct Pair {
    pub writer: BytesWriter,
    pub reader: Bytes,
    /// The depot holding the far end, and the connections: kept alive for the test.
    pub keep: Option<(DepotProxy, Conns)>,
}

/// A pair with the consumer's window and maximum read set before any end moves.
pub async fn pair(route: Route, window: u32, max_read: u32) -> Pair {
    let (writer, reader) = Bytes::channel();
    reader.set_window(window);
    reader.set_max_read(max_read);
    match route {
        Route::Channel => Pair { writer, reader, keep: None },
        Route::ReaderSent(via) => {
            let (depot, probe, conns) = depot(via).await;
            within("park", depot.park(reader)).await.expect("park");
            Pair { writer, reader: probe.take_reader(), keep: Some((depot, conns)) }
        }
        Route::WriterSent(via) => {
            let (depot, probe, conns) = depot(via).await;
            within("park_writer", depot.park_writer(writer)).await.expect("park_writer");
            Pair { writer: probe.take_writer(), reader, keep: Some((depot, conns)) }
        }
    }
}
