//! Byte-stream semantics beyond the basics of `bytes_flow.rs`: `Bytes` and
//! `BytesWriter` in every position and both directions, the byte window and
//! the maximum read, reads that ignore write boundaries, `tokio::io::copy`,
//! how writers and readers end a stream, randomised sizes over a connection,
//! and a one-byte window.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact. Every
//! wait is bounded, and so is every loop.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rpc_core::{eventual, Bytes, BytesWriter, Connection, ErrorKind, RpcError, Sequence};
use rpc_tests::Via;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

/// Bound on any single wait.
const LIMIT: Duration = Duration::from_secs(60);
/// How long to let everything run before checking that something is stuck.
const SETTLE: Duration = Duration::from_millis(250);
/// Reads a reader makes at most before the test gives up on its end.
const MAX_READS: usize = 4 << 20;
/// Bytes `produce` writes at most (it stalls on the window long before).
const PRODUCE_MAX: u64 = 64 << 20;

// ----- data ---------------------------------------------------------------------

/// Byte `i` of the test pattern number `seed`: no short period, so a lost,
/// repeated or reordered piece shows.
fn pattern(seed: u64, i: u64) -> u8 {
    let x = (i ^ (i >> 8) ^ (i >> 16)).wrapping_mul(31).wrapping_add(seed.wrapping_mul(101));
    (x ^ (x >> 8)) as u8
}

fn expected(seed: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| pattern(seed, i)).collect()
}

/// Asserts `got` is pattern `seed` of length `len`, naming the first difference.
fn assert_pattern(what: &str, got: &[u8], seed: u64, len: u64) {
    assert_eq!(got.len() as u64, len, "{what}: length");
    if let Some(i) = got.iter().enumerate().position(|(i, b)| *b != pattern(seed, i as u64)) {
        panic!("{what}: byte {i} differs");
    }
}

/// Writes pattern `seed` of `len` bytes in chunks of 7,777 (`write` then `flush`).
async fn write_pattern(writer: &mut BytesWriter, seed: u64, len: u64) -> Result<(), RpcError> {
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
async fn read_to_end(reader: &mut Bytes) -> Result<Vec<u8>, RpcError> {
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
type Outcome = Result<Vec<u8>, RpcError>;

/// What the server side saw; shared with the test.
#[derive(Default)]
struct Probe {
    readers: Mutex<Vec<Bytes>>,
    writers: Mutex<Vec<BytesWriter>>,
    /// What readers spawned by the server received, by name.
    received: Mutex<Vec<(String, Outcome)>>,
    /// Bytes `produce`'s writer accepted.
    accepted: AtomicU64,
    /// The error that stopped `produce`'s writer.
    error: Mutex<Option<RpcError>>,
}

impl Probe {
    fn take_reader(&self) -> Bytes {
        self.readers.lock().unwrap().pop().expect("a parked reader")
    }

    fn take_writer(&self) -> BytesWriter {
        self.writers.lock().unwrap().pop().expect("a parked writer")
    }

    fn received(&self, name: &str) -> Option<Outcome> {
        self.received.lock().unwrap().iter().find(|(n, _)| n == name).map(|(_, r)| r.clone())
    }

    fn error(&self) -> Option<RpcError> {
        self.error.lock().unwrap().clone()
    }
}

/// Reads `reader` to its end in a task; the outcome lands in the probe under `name`.
fn collect_into(probe: &Arc<Probe>, name: String, mut reader: Bytes) {
    let probe = probe.clone();
    tokio::spawn(async move {
        let result = read_to_end(&mut reader).await;
        probe.received.lock().unwrap().push((name, result));
    });
}

struct DepotImpl {
    probe: Arc<Probe>,
}

/// A stream carrying pattern `seed` of `len` bytes, written by a task.
fn pattern_stream(seed: u64, len: u64) -> Bytes {
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

type Conns = Option<(Connection, Connection)>;

async fn depot(via: Via) -> (DepotProxy, Arc<Probe>, Conns) {
    let probe = Arc::new(Probe::default());
    let (depot, conns) = via.reach(DepotProxy::new(DepotImpl { probe: probe.clone() })).await;
    (depot, probe, conns)
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"))
}

/// Lets every task run until all are idle (on the paused clock: exactly that).
async fn settle() {
    sleep(SETTLE).await;
}

/// Polls `done` every 10 ms, at most `LIMIT` long.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

fn expect_kind<T: std::fmt::Debug>(what: &str, result: Result<T, RpcError>, kind: ErrorKind) -> RpcError {
    match result {
        Err(err) => {
            assert_eq!(err.kind(), kind, "{what}: {err}");
            err
        }
        Ok(value) => panic!("{what}: expected a {kind:?} error, got {value:?}"),
    }
}

/// The `RpcError` inside an `io::Error` from `AsyncRead`/`AsyncWrite`.
fn rpc_error_of(err: &std::io::Error) -> RpcError {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<RpcError>())
        .cloned()
        .unwrap_or_else(|| panic!("an io::Error without an RpcError inside: {err}"))
}

/// Writes `source[*sent..]` through `AsyncWrite` until a write stays pending
/// for `SETTLE`; returns how many bytes this call got accepted.
async fn write_until_stalled(writer: &mut BytesWriter, source: &[u8], sent: &mut usize) -> usize {
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

// ----- routes: where the two ends of a pair live -------------------------------

/// Where a test's writer and reader live.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Both here: `Bytes::channel()`.
    Channel,
    /// The reader was sent to the depot (in process, or over a connection) and taken back out there.
    ReaderSent(Via),
    /// The writer was sent to the depot and taken back out there.
    WriterSent(Via),
}

const ROUTES: [Route; 5] = [
    Route::Channel,
    Route::ReaderSent(Via::Local),
    Route::ReaderSent(Via::Remote),
    Route::WriterSent(Via::Local),
    Route::WriterSent(Via::Remote),
];

/// The routes where bytes cross a connection.
const REMOTE_ROUTES: [Route; 2] = [Route::ReaderSent(Via::Remote), Route::WriterSent(Via::Remote)];

struct Pair {
    writer: BytesWriter,
    reader: Bytes,
    /// The depot holding the far end, and the connections: kept alive for the test.
    keep: Option<(DepotProxy, Conns)>,
}

/// A pair with the consumer's window and maximum read set before any end moves.
async fn pair(route: Route, window: u32, max_read: u32) -> Pair {
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

// ----- 1. first-class: every position, both directions ----------------------------

/// Streams and writers the depot hands out: direct results, struct and enum results.
async fn ends_as_results(via: Via) {
    let (depot, probe, _conns) = depot(via).await;
    // A byte stream as the direct result: returned at once.
    let mut download = depot.download(1, 50_000);
    assert_pattern(
        &format!("{via:?}: download"),
        &within("download", read_to_end(&mut download)).await.unwrap(),
        1,
        50_000,
    );

    // In a struct result.
    let Blob { name, mut data } = within("blob", depot.blob("b".into(), 2, 40_000)).await.expect("blob");
    assert_eq!(name, "b", "{via:?}");
    assert_pattern(&format!("{via:?}: blob"), &within("blob data", read_to_end(&mut data)).await.unwrap(), 2, 40_000);

    // A writer in a struct result: the depot reads what we write.
    let Slot { name, mut into } = within("slot", depot.slot("s".into())).await.expect("slot");
    assert_eq!(name, "s", "{via:?}");
    within("write", write_pattern(&mut into, 3, 30_000)).await.expect("write");
    within("close", into.close(None)).await.expect("close");
    wait_until("slot received", || probe.received("s").is_some()).await;
    assert_pattern(&format!("{via:?}: slot"), &probe.received("s").unwrap().expect("slot read"), 3, 30_000);

    // In enum results.
    match within("parcel", depot.parcel(1, 4, 20_000)).await.expect("parcel") {
        Parcel::Data(mut data) => {
            let got = within("parcel data", read_to_end(&mut data)).await.unwrap();
            assert_pattern(&format!("{via:?}: Data"), &got, 4, 20_000);
        }
        other => panic!("{via:?}: expected Data, got {other:?}"),
    }
    match within("parcel", depot.parcel(2, 5, 10_000)).await.expect("parcel") {
        Parcel::Named { name, mut data } => {
            assert_eq!(name, "named 5", "{via:?}");
            let got = within("parcel data", read_to_end(&mut data)).await.unwrap();
            assert_pattern(&format!("{via:?}: Named"), &got, 5, 10_000);
        }
        other => panic!("{via:?}: expected Named, got {other:?}"),
    }
    match within("parcel", depot.parcel(3, 0, 0)).await.expect("parcel") {
        Parcel::Into(mut into) => {
            within("write", write_pattern(&mut into, 6, 12_345)).await.expect("write");
            within("close", into.close(None)).await.expect("close");
            wait_until("into received", || probe.received("into").is_some()).await;
            assert_pattern(&format!("{via:?}: Into"), &probe.received("into").unwrap().expect("into read"), 6, 12_345);
        }
        other => panic!("{via:?}: expected Into, got {other:?}"),
    }
    assert!(matches!(within("parcel", depot.parcel(0, 0, 0)).await.expect("parcel"), Parcel::Empty), "{via:?}");
}

/// Streams and writers we hand to the depot: direct arguments, struct and enum arguments.
async fn ends_as_arguments(via: Via) {
    let (depot, _probe, _conns) = depot(via).await;
    // A byte stream argument: the depot reads what we write.
    let (mut writer, data) = Bytes::channel();
    let uploaded = depot.upload(data);
    within("write", write_pattern(&mut writer, 11, 60_000)).await.expect("write");
    within("close", writer.close(None)).await.expect("close");
    assert_pattern(&format!("{via:?}: upload"), &within("upload", uploaded).await.expect("upload"), 11, 60_000);

    // A writer argument: the depot writes, we read.
    let (into, mut data) = Bytes::channel();
    let filled = depot.fill(12, 45_000, into);
    assert_pattern(&format!("{via:?}: fill"), &within("fill data", read_to_end(&mut data)).await.unwrap(), 12, 45_000);
    within("fill", filled).await.expect("fill");

    // In a struct argument, both ends.
    let blob = Blob { name: "mine".into(), data: pattern_stream(13, 33_333) };
    let (name, got) = within("read_blob", depot.read_blob(blob)).await.expect("read_blob");
    assert_eq!(name, "mine", "{via:?}");
    assert_pattern(&format!("{via:?}: read_blob"), &got, 13, 33_333);
    let (into, mut data) = Bytes::channel();
    let filled = depot.fill_slot(14, 22_222, Slot { name: "box".into(), into });
    let got = within("slot data", read_to_end(&mut data)).await.unwrap();
    assert_pattern(&format!("{via:?}: fill_slot"), &got, 14, 22_222);
    assert_eq!(within("fill_slot", filled).await.expect("fill_slot"), "box", "{via:?}");

    // In enum arguments, every variant.
    let (what, got) = within("open_parcel", depot.open_parcel(0, 0, Parcel::Data(pattern_stream(15, 11_111))))
        .await
        .expect("open_parcel");
    assert_eq!(what, "data", "{via:?}");
    assert_pattern(&format!("{via:?}: Data argument"), &got, 15, 11_111);
    let named = Parcel::Named { name: "n".into(), data: pattern_stream(16, 9_999) };
    let (what, got) = within("open_parcel", depot.open_parcel(0, 0, named)).await.expect("open_parcel");
    assert_eq!(what, "n", "{via:?}");
    assert_pattern(&format!("{via:?}: Named argument"), &got, 16, 9_999);
    let (into, mut data) = Bytes::channel();
    let opened = depot.open_parcel(17, 8_888, Parcel::Into(into));
    let got = within("into data", read_to_end(&mut data)).await.unwrap();
    assert_pattern(&format!("{via:?}: Into argument"), &got, 17, 8_888);
    assert_eq!(within("open_parcel", opened).await.expect("open_parcel"), ("into".to_string(), Vec::new()));
    let empty = within("open_parcel", depot.open_parcel(0, 0, Parcel::Empty)).await.expect("open_parcel");
    assert_eq!(empty, ("empty".to_string(), Vec::new()), "{via:?}");
}

/// `Sequence<Bytes>` and `Sequence<BytesWriter>`, returned and uploaded.
async fn ends_as_sequence_items(via: Via) {
    let (depot, probe, _conns) = depot(via).await;
    // Returned: three streams, each with its own window; read the last first,
    // the others wait on their own windows without holding it up.
    let specs = vec![(21, 5_000), (22, 30_000), (23, 12_000)];
    let mut outer = depot.streams(specs.clone());
    let mut inners = Vec::new();
    while let Some(inner) = within("outer read", outer.read()).await.expect("outer read") {
        inners.push(inner);
        assert!(inners.len() <= 3, "{via:?}: too many streams");
    }
    assert_eq!(inners.len(), 3, "{via:?}");
    for (i, inner) in inners.iter().enumerate() {
        assert_eq!(inner.window_size(), (i as u32 + 1) * 1000, "{via:?}: stream {i} keeps its window");
    }
    for (i, inner) in inners.iter_mut().enumerate().rev() {
        let got = within("inner read", read_to_end(inner)).await.unwrap_or_else(|e| panic!("{via:?}: {e}"));
        assert_pattern(&format!("{via:?}: stream {i}"), &got, specs[i].0, specs[i].1);
    }

    // Uploaded: three streams with windows of 2,000, each written in full
    // before the depot reads any; it reads the last first.
    let (mut outer, streams) = Sequence::<Bytes>::channel();
    let read = depot.read_streams(streams);
    let mut writers = Vec::new();
    for _ in 0..3 {
        let (writer, inner) = Bytes::channel();
        inner.set_window(2_000);
        outer.write(inner).expect("outer write");
        writers.push(writer);
    }
    within("outer close", outer.close(None)).await.expect("outer close");
    let writes = writers.into_iter().enumerate().map(|(i, mut writer)| async move {
        write_pattern(&mut writer, 30 + i as u64, 10_000 * (i as u64 + 1)).await?;
        writer.close(None).await
    });
    let (written, read) = within("read_streams", futures::future::join(futures::future::join_all(writes), read)).await;
    assert!(written.iter().all(Result::is_ok), "{via:?}: {written:?}");
    let read = read.expect("read_streams");
    assert_eq!(read.len(), 3, "{via:?}");
    for (i, got) in read.iter().enumerate() {
        assert_pattern(&format!("{via:?}: uploaded stream {i}"), got, 30 + i as u64, 10_000 * (i as u64 + 1));
    }

    // Writers as items, returned: we write into each, the depot reads.
    let mut writers = depot.writers(3);
    let mut held = Vec::new();
    while let Some(writer) = within("writers read", writers.read()).await.expect("writers read") {
        held.push(writer);
        assert!(held.len() <= 3, "{via:?}: too many writers");
    }
    assert_eq!(held.len(), 3, "{via:?}");
    for (i, mut writer) in held.into_iter().enumerate().rev() {
        within("write", write_pattern(&mut writer, 40 + i as u64, 7_000)).await.expect("write");
        within("close", writer.close(None)).await.expect("close");
    }
    for i in 0..3u64 {
        let name = format!("writer {i}");
        wait_until("writer received", || probe.received(&name).is_some()).await;
        assert_pattern(&format!("{via:?}: {name}"), &probe.received(&name).unwrap().expect("read"), 40 + i, 7_000);
    }

    // Writers as items, uploaded: the depot writes into each, we read.
    let (mut outer, sent) = Sequence::<BytesWriter>::channel();
    let filled = depot.fill_writers(50, 6_000, sent);
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (writer, reader) = Bytes::channel();
        outer.write(writer).expect("outer write");
        readers.push(reader);
    }
    within("outer close", outer.close(None)).await.expect("outer close");
    for (i, reader) in readers.iter_mut().enumerate() {
        let got = within("read", read_to_end(reader)).await.expect("read");
        assert_pattern(&format!("{via:?}: filled writer {i}"), &got, 50 + i as u64, 6_000);
    }
    assert_eq!(within("fill_writers", filled).await.expect("fill_writers"), 3, "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writers_travel_as_results() {
    for via in Via::BOTH {
        ends_as_results(via).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writers_travel_as_arguments() {
    for via in Via::BOTH {
        ends_as_arguments(via).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writers_travel_as_sequence_items() {
    for via in Via::BOTH {
        ends_as_sequence_items(via).await;
    }
}

#[tokio::test(start_paused = true)]
async fn streams_and_writers_travel_everywhere_on_a_current_thread_runtime() {
    for via in Via::BOTH {
        ends_as_results(via).await;
        ends_as_arguments(via).await;
        ends_as_sequence_items(via).await;
    }
}

// ----- 2. the window and the maximum read ------------------------------------------

/// With window W and max read M, against a consumer that stops reading:
/// `AsyncWrite` takes at most W unread bytes, reads return at most M, and
/// reading lets the producer write about as much again.
async fn window_and_max_read(route: Route) {
    const W: usize = 10_000;
    const M: usize = 3_000;
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, W as u32, M as u32).await;
    assert_eq!((reader.window_size(), reader.max_read()), (W as u32, M as u32), "{route:?}");
    assert_eq!(writer.window_size(), W as u32, "{route:?}: the writer sees the consumer's window");
    let source = expected(1, 200_000);
    let mut sent = 0;
    let mut got = Vec::new();

    let accepted = write_until_stalled(&mut writer, &source, &mut sent).await;
    assert!(accepted <= W, "{route:?}: {accepted} bytes accepted with a window of {W}");
    assert!(accepted >= W / 2, "{route:?}: only {accepted} bytes accepted with a window of {W}");
    // It stays stuck while nobody reads.
    let stuck = timeout(SETTLE * 4, AsyncWriteExt::write(&mut writer, &source[sent..sent + 1])).await;
    assert!(stuck.is_err(), "{route:?}: a write went through with the window full");
    assert!(timeout(SETTLE, writer.flush()).await.is_err(), "{route:?}: flush completed with the window full");

    for round in 0..5 {
        // Read a bit more than half a window, in reads of at most M.
        let target = got.len() + W / 2 + 1;
        while got.len() < target {
            let chunk = within("read", reader.read_chunk()).await.expect("read").expect("not the end");
            assert!(!chunk.is_empty() && chunk.len() <= M, "{route:?}: a read of {} bytes (max {M})", chunk.len());
            got.extend_from_slice(&chunk);
        }
        let more = write_until_stalled(&mut writer, &source, &mut sent).await;
        assert!(more > 0, "{route:?}, round {round}: reading {} bytes let the producer write nothing", got.len());
        let unread = sent - got.len();
        assert!(unread <= W, "{route:?}, round {round}: {unread} bytes unread with a window of {W}");
    }
    within("close", writer.close(None)).await.expect("close");
    for _ in 0..MAX_READS {
        match within("read", reader.read_chunk()).await.expect("read") {
            Some(chunk) => {
                assert!(chunk.len() <= M, "{route:?}: a read of {} bytes (max {M})", chunk.len());
                got.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    assert_pattern(&format!("{route:?}"), &got, 1, sent as u64);
}

#[tokio::test(start_paused = true)]
async fn unread_bytes_never_exceed_the_window_and_reads_the_max_read() {
    for route in ROUTES {
        window_and_max_read(route).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_bytes_never_exceed_the_window_multi_thread() {
    for route in REMOTE_ROUTES {
        window_and_max_read(route).await;
    }
}

/// Raising the window mid-stream lets the producer run further ahead; lowering
/// the max read shortens the reads at once.
async fn changed_window(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 1_000, 1_000).await;
    let source = expected(2, 100_000);
    let mut sent = 0;
    let accepted = write_until_stalled(&mut writer, &source, &mut sent).await;
    assert!(accepted <= 1_000, "{route:?}: {accepted} bytes before the stall at a window of 1,000");
    reader.set_window(20_000);
    assert_eq!(reader.window_size(), 20_000, "{route:?}");
    write_until_stalled(&mut writer, &source, &mut sent).await;
    assert!((10_000..=20_000).contains(&sent), "{route:?}: {sent} bytes unread after raising the window to 20,000");
    assert_eq!(writer.window_size(), 20_000, "{route:?}: the writer sees the new window");
    reader.set_max_read(10);
    let mut got = Vec::new();
    while got.len() < sent {
        let chunk = within("read", reader.read_chunk()).await.expect("read").expect("not the end");
        assert!(chunk.len() <= 10, "{route:?}: a read of {} bytes after lowering the max read to 10", chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_pattern(&format!("{route:?}"), &got, 2, sent as u64);
}

#[tokio::test(start_paused = true)]
async fn changing_the_window_and_max_read_mid_stream_takes_effect() {
    for route in ROUTES {
        changed_window(route).await;
    }
}

/// Many 1-byte writes come back in larger reads; one 1 MiB write comes back
/// in reads of at most the max read.
async fn reads_ignore_writes(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 4_096, 500).await;
    let source = expected(3, 1_000);
    for b in &source {
        writer.write(vec![*b]).expect("write");
    }
    within("close", writer.close(None)).await.expect("close");
    let mut got = Vec::new();
    let mut reads = 0;
    while let Some(chunk) = within("read", reader.read_chunk()).await.expect("read") {
        assert!(chunk.len() <= 500, "{route:?}: a read of {} bytes (max 500)", chunk.len());
        got.extend_from_slice(&chunk);
        reads += 1;
        assert!(reads <= 1_000, "{route:?}: too many reads");
    }
    assert_pattern(&format!("{route:?}: 1-byte writes"), &got, 3, 1_000);
    assert!(reads <= 10, "{route:?}: 1,000 one-byte writes came back in {reads} reads");

    const MIB: usize = 1 << 20;
    const M: usize = 10_000;
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 256 << 10, M as u32).await;
    let source = expected(4, MIB as u64);
    let reading = async {
        let mut got = Vec::with_capacity(MIB);
        let mut reads = 0;
        while let Some(chunk) = reader.read_chunk().await.expect("read") {
            assert!(chunk.len() <= M, "{route:?}: a read of {} bytes (max {M})", chunk.len());
            got.extend_from_slice(&chunk);
            reads += 1;
            assert!(reads <= MIB, "{route:?}: too many reads");
        }
        (got, reads)
    };
    // One write of 1 MiB: queued at once, whatever the window.
    writer.write(source.clone()).expect("write");
    let ((got, reads), closed) = within("1 MiB", futures::future::join(reading, writer.close(None))).await;
    closed.expect("close");
    assert_pattern(&format!("{route:?}: one 1 MiB write"), &got, 4, MIB as u64);
    assert!(reads >= MIB.div_ceil(M), "{route:?}: {reads} reads");
}

#[tokio::test(start_paused = true)]
async fn reads_are_not_aligned_to_writes() {
    for route in ROUTES {
        reads_ignore_writes(route).await;
    }
}

/// A returned byte stream, its window set right after the call: the
/// handler's `AsyncWrite` gets at most that many bytes ahead of the reader.
async fn returned_window(via: Via) {
    const W: u64 = 5_000;
    let (depot, probe, _conns) = depot(via).await;
    let mut data = depot.produce();
    data.set_window(W as u32);
    settle().await;
    let accepted = probe.accepted.load(Ordering::SeqCst);
    assert!(accepted <= W, "{via:?}: the handler wrote {accepted} bytes ahead with a window of {W}");
    assert!(accepted > 0, "{via:?}: the handler wrote nothing");
    settle().await;
    assert_eq!(probe.accepted.load(Ordering::SeqCst), accepted, "{via:?}: the stalled producer moved");
    let mut read = 0;
    while read < 3_000 {
        read += within("read", data.read_chunk()).await.expect("read").expect("not the end").len() as u64;
    }
    settle().await;
    let after = probe.accepted.load(Ordering::SeqCst);
    assert!(after > accepted, "{via:?}: reading did not let the handler write more");
    assert!(after - read <= W, "{via:?}: {} bytes unread with a window of {W}", after - read);
    data.cancel(Some("enough".into()));
    wait_until("producer error", || probe.error().is_some()).await;
    let err = probe.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{via:?}: {err}");
    assert!(err.message().contains("enough"), "{via:?}: the consumer's reason is lost: {err}");
}

#[tokio::test(start_paused = true)]
async fn a_returned_byte_stream_holds_its_producer_to_the_window() {
    for via in Via::BOTH {
        returned_window(via).await;
    }
}

/// A read reserves memory for what it returns, not for the max read: a
/// max read of u32::MAX with several chunks buffered.
async fn huge_max_read(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 1 << 20, u32::MAX).await;
    for i in 0..4u64 {
        writer.write(expected(i, 1_000)).expect("write");
        within("flush", writer.flush()).await.expect("flush");
        settle().await; // separate chunks (and messages) on the consumer's side
    }
    within("close", writer.close(None)).await.expect("close");
    settle().await;
    let before = vm_peak_kib();
    let got = within("read", read_to_end(&mut reader)).await.expect("read");
    assert_eq!(got.len(), 4_000, "{route:?}");
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        assert!(after < before + (1 << 20), "{route:?}: reading 4,000 bytes took VmPeak from {before} to {after} KiB");
    }
}

/// VmPeak of this process in KiB, where /proc exists.
fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(start_paused = true)]
async fn a_huge_max_read_does_not_reserve_memory() {
    for route in ROUTES {
        huge_max_read(route).await;
    }
}

// ----- 3. copy, close, abort, cancel --------------------------------------------------

/// `tokio::io::copy` into the writer and out of the reader at once, with a small window.
async fn copy_through(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 10_000, 3_000).await;
    let source = expected(5, 300_000);
    let into = async {
        let copied = tokio::io::copy(&mut &source[..], &mut writer).await.expect("copy into the writer");
        writer.shutdown().await.expect("shutdown");
        copied
    };
    let out = async {
        let mut out = Vec::new();
        let copied = tokio::io::copy(&mut reader, &mut out).await.expect("copy out of the reader");
        (copied, out)
    };
    let (copied_in, (copied_out, out)) = within("copy", futures::future::join(into, out)).await;
    assert_eq!((copied_in, copied_out), (300_000, 300_000), "{route:?}");
    assert_pattern(&format!("{route:?}: copy"), &out, 5, 300_000);
    // The end repeats for AsyncRead.
    let mut rest = Vec::new();
    assert_eq!(within("read", reader.read_to_end(&mut rest)).await.expect("read"), 0, "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn tokio_io_copy_into_the_writer_and_out_of_the_reader() {
    for route in ROUTES {
        copy_through(route).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_io_copy_both_directions_through_method_calls() {
    for via in Via::BOTH {
        let (depot, _probe, _conns) = depot(via).await;
        // Download: a returned stream, copied out.
        let mut download = depot.download(6, 500_000);
        download.set_max_read(5_000);
        let mut out = Vec::new();
        within("copy", tokio::io::copy(&mut download, &mut out)).await.expect("copy");
        assert_pattern(&format!("{via:?}: download"), &out, 6, 500_000);
        // Upload: an argument stream, copied into.
        let (mut writer, data) = Bytes::channel();
        data.set_window(7_000);
        let uploaded = depot.upload(data);
        let source = expected(7, 400_000);
        within("copy", tokio::io::copy(&mut &source[..], &mut writer)).await.expect("copy");
        within("shutdown", writer.shutdown()).await.expect("shutdown");
        assert_pattern(&format!("{via:?}: upload"), &within("upload", uploaded).await.expect("upload"), 7, 400_000);
    }
}

async fn close_delivers_everything(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 100_000, 64 << 10).await;
    for piece in expected(8, 30_000).chunks(7_000) {
        writer.write(piece.to_vec()).expect("write");
    }
    within("close", writer.close(None)).await.expect("close");
    let got = within("read", read_to_end(&mut reader)).await.expect("read");
    assert_pattern(&format!("{route:?}"), &got, 8, 30_000);
    assert_eq!(within("end", reader.read_chunk()).await.expect("end"), None, "{route:?}: the end repeats");
}

#[tokio::test(start_paused = true)]
async fn close_delivers_every_buffered_byte_then_the_end() {
    for route in ROUTES {
        close_delivers_everything(route).await;
    }
}

async fn close_with_error(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 100_000, 64 << 10).await;
    writer.write(expected(9, 20_000)).expect("write");
    let error = RpcError::new(ErrorKind::Timeout, "the feed went stale");
    within("close", writer.close(Some(error))).await.expect("close");
    let mut got = Vec::new();
    let err = loop {
        match within("read", reader.read_chunk()).await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => panic!("{route:?}: a graceful end instead of the error"),
            Err(err) => break err,
        }
        assert!(got.len() <= 20_000, "{route:?}: too many bytes");
    };
    assert_pattern(&format!("{route:?}: before the error"), &got, 9, 20_000);
    assert_eq!(err.kind(), ErrorKind::Timeout, "{route:?}: {err}");
    assert_eq!(err.message(), "the feed went stale", "{route:?}");

    // Through AsyncRead: the bytes, then an io::Error holding the same error.
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 100_000, 64 << 10).await;
    writer.write(expected(9, 5_000)).expect("write");
    within("close", writer.close(Some(RpcError::new(ErrorKind::Application, "boom")))).await.expect("close");
    let mut got = vec![0; 5_000];
    within("read_exact", reader.read_exact(&mut got)).await.expect("the bytes before the error");
    assert_pattern(&format!("{route:?}: AsyncRead"), &got, 9, 5_000);
    let err =
        within("read", AsyncReadExt::read(&mut reader, &mut [0; 10])).await.expect_err("the error after the bytes");
    let err = rpc_error_of(&err);
    assert_eq!((err.kind(), err.message()), (ErrorKind::Application, "boom"), "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn close_with_an_error_delivers_the_bytes_then_that_error() {
    for route in ROUTES {
        close_with_error(route).await;
    }
}

async fn abort_at_once(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 100_000, 1_000).await;
    writer.write(expected(10, 50_000)).expect("write");
    within("flush", writer.flush()).await.expect("flush");
    assert_eq!(within("read", reader.read_chunk()).await.expect("read").map(|c| c.len()), Some(1_000), "{route:?}");
    settle().await; // the rest now waits in the consumer's buffer
    let start = Instant::now();
    writer.abort();
    settle().await;
    expect_kind(&format!("{route:?}: after abort"), within("read", reader.read_chunk()).await, ErrorKind::Aborted);
    assert!(start.elapsed() <= SETTLE, "{route:?}: the abort took {:?}", start.elapsed());
    // The buffered bytes are gone for good.
    expect_kind(&format!("{route:?}: again"), within("read", reader.read_chunk()).await, ErrorKind::Aborted);
    let err =
        within("AsyncRead", AsyncReadExt::read(&mut reader, &mut [0; 10])).await.expect_err("AsyncRead after abort");
    assert_eq!(rpc_error_of(&err).kind(), ErrorKind::Aborted, "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn abort_ends_at_once_and_drops_unread_bytes() {
    for route in ROUTES {
        abort_at_once(route).await;
    }
}

/// An abort wakes a reader already waiting for bytes.
async fn abort_wakes_a_waiting_read(route: Route) {
    let Pair { writer, mut reader, keep: _keep } = pair(route, 1_000, 1_000).await;
    let read = async {
        let result = reader.read_chunk().await;
        (result, Instant::now())
    };
    let abort = async {
        settle().await;
        writer.abort();
        Instant::now()
    };
    let ((result, woke), aborted) = within("read", futures::future::join(read, abort)).await;
    expect_kind(&format!("{route:?}"), result, ErrorKind::Aborted);
    assert!(woke - aborted <= SETTLE, "{route:?}: the read woke {:?} after the abort", woke - aborted);
}

#[tokio::test(start_paused = true)]
async fn abort_wakes_a_read_waiting_for_bytes() {
    for route in ROUTES {
        abort_wakes_a_waiting_read(route).await;
    }
}

async fn dropped_writer(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 100_000, 1_000).await;
    writer.write(expected(11, 3_000)).expect("write");
    within("flush", writer.flush()).await.expect("flush");
    drop(writer);
    settle().await;
    // Never a graceful end: bytes (if any survive), then Aborted.
    for _ in 0..10 {
        match within("read", reader.read_chunk()).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{route:?}: a dropped writer ended the stream gracefully"),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Aborted, "{route:?}: {err}");
                return;
            }
        }
    }
    panic!("{route:?}: no error after the writer was dropped");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_writer_without_close_aborts() {
    for route in ROUTES {
        dropped_writer(route).await;
    }
}

async fn writes_after_close(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 1_000, 1_000).await;
    writer.write(vec![1, 2, 3]).expect("write");
    within("shutdown", writer.shutdown()).await.expect("shutdown");
    expect_kind(&format!("{route:?}: write after close"), writer.write(vec![4]), ErrorKind::Aborted);
    expect_kind(&format!("{route:?}: flush after close"), within("flush", writer.flush()).await, ErrorKind::Aborted);
    let err = within("AsyncWrite", AsyncWriteExt::write(&mut writer, &[5])).await.expect_err("poll_write after close");
    assert_eq!(rpc_error_of(&err).kind(), ErrorKind::Aborted, "{route:?}");
    within("shutdown again", writer.shutdown()).await.expect("shutting down twice is harmless");
    assert_eq!(within("read", read_to_end(&mut reader)).await.expect("read"), [1, 2, 3], "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn writes_after_close_fail() {
    for route in ROUTES {
        writes_after_close(route).await;
    }
}

/// The producer's next write or flush after the cancel has arrived.
async fn next_write_error(writer: &mut BytesWriter) -> RpcError {
    match writer.write(vec![9; 10]) {
        Err(err) => err,
        Ok(()) => within("flush", writer.flush()).await.expect_err("flush after the consumer went"),
    }
}

async fn cancel_with_reason(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 1_000, 1_000).await;
    writer.write(vec![0; 100]).expect("write");
    within("flush", writer.flush()).await.expect("flush");
    reader.cancel(Some("bored".into()));
    settle().await;
    let err = next_write_error(&mut writer).await;
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{route:?}: {err}");
    assert!(err.message().contains("bored"), "{route:?}: {err}");
    // And it stays so, for every way of writing.
    let again = expect_kind(&format!("{route:?}: again"), writer.write(vec![1]), ErrorKind::Cancelled);
    assert!(again.message().contains("bored"), "{route:?}: {again}");
    let flushed =
        expect_kind(&format!("{route:?}: flush"), within("flush", writer.flush()).await, ErrorKind::Cancelled);
    assert!(flushed.message().contains("bored"), "{route:?}: {flushed}");
    let err = within("AsyncWrite", AsyncWriteExt::write(&mut writer, &[5])).await.expect_err("poll_write");
    let err = rpc_error_of(&err);
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{route:?}: {err}");
    assert!(err.message().contains("bored"), "{route:?}: {err}");
    let sent = within("Sink::send", SinkExt::send(&mut writer, bytes::Bytes::from_static(b"x"))).await;
    let err = expect_kind(&format!("{route:?}: Sink::send"), sent, ErrorKind::Cancelled);
    assert!(err.message().contains("bored"), "{route:?}: {err}");
}

#[tokio::test(start_paused = true)]
async fn cancel_reaches_the_producer_with_the_reason() {
    for route in ROUTES {
        cancel_with_reason(route).await;
    }
}

/// As for a sequence, `close` after a cancel reports the cancel (its errors
/// are documented as those of `flush`).
async fn close_after_cancel(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 1_000, 1_000).await;
    writer.write(vec![0; 100]).expect("write");
    reader.cancel(Some("bored".into()));
    settle().await;
    let closed =
        expect_kind(&format!("{route:?}: close"), within("close", writer.close(None)).await, ErrorKind::Cancelled);
    assert!(closed.message().contains("bored"), "{route:?}: {closed}");
}

#[tokio::test(start_paused = true)]
async fn close_after_a_cancel_reports_it() {
    for route in ROUTES {
        close_after_cancel(route).await;
    }
}

async fn dropped_reader(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 1_000, 1_000).await;
    writer.write(vec![0; 100]).expect("write");
    within("flush", writer.flush()).await.expect("flush");
    drop(reader);
    settle().await;
    let err = next_write_error(&mut writer).await;
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{route:?}: {err}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_reader_cancels() {
    for route in ROUTES {
        dropped_reader(route).await;
    }
}

/// A flush (and an `AsyncWrite`) already waiting on a full window is woken by the cancel.
async fn cancel_wakes_a_waiting_flush(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 2_000, 1_000).await;
    let source = expected(12, 100_000);
    let mut sent = 0;
    write_until_stalled(&mut writer, &source, &mut sent).await;
    let flush = async {
        let result = writer.flush().await;
        (result, Instant::now())
    };
    let cancel = async {
        settle().await;
        reader.cancel(Some("bored".into()));
        Instant::now()
    };
    let ((result, woke), cancelled) = within("flush", futures::future::join(flush, cancel)).await;
    let err = expect_kind(&format!("{route:?}"), result, ErrorKind::Cancelled);
    assert!(err.message().contains("bored"), "{route:?}: {err}");
    assert!(woke - cancelled <= SETTLE, "{route:?}: the flush woke {:?} after the cancel", woke - cancelled);
}

#[tokio::test(start_paused = true)]
async fn cancel_wakes_a_flush_waiting_on_a_full_window() {
    for route in ROUTES {
        cancel_wakes_a_waiting_flush(route).await;
    }
}

async fn returned_cancel(via: Via) {
    let (depot, probe, _conns) = depot(via).await;
    let mut data = depot.produce();
    data.set_window(4_000);
    assert!(!within("read", data.read_chunk()).await.expect("read").expect("not the end").is_empty(), "{via:?}");
    data.cancel(Some("bored".into()));
    wait_until("producer error", || probe.error().is_some()).await;
    let err = probe.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{via:?}: {err}");
    assert!(err.message().contains("bored"), "{via:?}: the consumer's reason is lost: {err}");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_returned_byte_stream_reaches_the_handler_with_the_reason() {
    for via in Via::BOTH {
        returned_cancel(via).await;
    }
}

/// The reader is a `Stream` of chunks, then `None`; an error ends it too.
/// The writer is a `Sink` of chunks: a forwarded stream arrives whole.
async fn stream_and_sink(route: Route) {
    let Pair { writer, mut reader, keep: _keep } = pair(route, 5_000, 2_000).await;
    let source = expected(13, 100_000);
    let chunks: Vec<bytes::Bytes> = source.chunks(3_333).map(bytes::Bytes::copy_from_slice).collect();
    let forward = futures::stream::iter(chunks).map(Ok::<_, RpcError>).forward(writer);
    let collect = async {
        let mut got = Vec::new();
        for _ in 0..MAX_READS {
            match reader.next().await {
                Some(chunk) => {
                    let chunk = chunk.expect("chunk");
                    assert!(chunk.len() <= 2_000, "{route:?}: a chunk of {} bytes", chunk.len());
                    got.extend_from_slice(&chunk);
                }
                None => break,
            }
        }
        got
    };
    let (forwarded, got) = within("forward", futures::future::join(forward, collect)).await;
    forwarded.expect("forward");
    assert_pattern(&format!("{route:?}: forwarded"), &got, 13, 100_000);
    assert!(within("next", reader.next()).await.is_none(), "{route:?}: the stream is over");

    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 5_000, 2_000).await;
    writer.write(vec![7; 10]).expect("write");
    within("close", writer.close(Some(RpcError::new(ErrorKind::Protocol, "bad feed")))).await.expect("close");
    assert_eq!(within("next", reader.next()).await.map(|r| r.expect("chunk").to_vec()), Some(vec![7; 10]));
    let err = within("next", reader.next()).await.expect("an error item");
    expect_kind(&format!("{route:?}"), err, ErrorKind::Protocol);
    assert!(within("next", reader.next()).await.is_none(), "{route:?}: the stream is over after the error");
}

#[tokio::test(start_paused = true)]
async fn the_reader_is_a_stream_and_the_writer_a_sink() {
    for route in ROUTES {
        stream_and_sink(route).await;
    }
}

// ----- 4. randomised sizes over a connection ------------------------------------------

/// xorshift64*: a small seeded generator, so every case is reproducible.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// In `lo..=hi`, log-uniform: tiny and huge values are both common.
    fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let bits = self.range(lo.ilog2() as u64, hi.ilog2() as u64);
        self.range(1 << bits, (2 << bits) - 1).clamp(lo, hi)
    }
}

const CASES: u64 = 50;
const MAX_TOTAL: u64 = 2 << 20;
const MAX_WRITE: u64 = 70_000;
const MAX_WINDOW: u64 = 256 << 10;
const MAX_MAX_READ: u64 = 100 << 10;
/// Round trips (window refills) a case may need at most: keeps a case with a
/// window of a few bytes from running for minutes in a debug build.
const MAX_REFILLS: u64 = 2_048;

/// One case (a hand-rolled property test: proptest is not a dependency).
///
/// The window (1..=256 KiB), the max read (1..=100 KiB) and the scales of the
/// write and read sizes (1..=70,000) are log-uniform, so a window of 3 bytes
/// is as likely as one of 100 KiB; each write and each read then takes a
/// uniform size up to its scale. The total is uniform up to 2 MiB, capped so a
/// case needs at most `MAX_REFILLS` windows, 4,096 writes and 16,384 reads at
/// full size. Even cases upload (the reader went over the connection), odd
/// cases download (the writer did). Writes alternate at random between
/// `write` + `flush`, `AsyncWrite` and `Sink`; reads between `read` and
/// `AsyncRead` into a buffer of the drawn size. The bytes must arrive exactly.
async fn random_case(case: u64) {
    let mut rng = XorShift::new(case);
    let window = rng.log_range(1, MAX_WINDOW);
    let max_read = rng.log_range(1, MAX_MAX_READ);
    let write_scale = rng.log_range(1, MAX_WRITE);
    let read_scale = rng.log_range(1, MAX_WRITE);
    let cap = MAX_TOTAL.min(window * MAX_REFILLS).min(write_scale * 4_096).min(max_read.min(read_scale) * 16_384);
    let total = rng.range(1, cap);
    let route = REMOTE_ROUTES[(case % 2) as usize];
    let what = format!(
        "case {case} ({route:?}, {total} bytes, window {window}, max read {max_read}, writes ≤ {write_scale}, reads ≤ {read_scale})"
    );
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, window as u32, max_read as u32).await;
    let source = Arc::new(expected(case, total));

    let mut write_rng = XorShift::new(case ^ 0xA5A5);
    let data = source.clone();
    let writing = tokio::spawn(async move {
        let mut at = 0;
        while at < data.len() {
            let n = (write_rng.range(1, write_scale) as usize).min(data.len() - at);
            let piece = &data[at..at + n];
            // Three ways of writing: queue then flush, AsyncWrite, Sink.
            match write_rng.range(0, 2) {
                0 => {
                    writer.write(piece.to_vec())?;
                    writer.flush().await?;
                }
                1 => writer.write_all(piece).await.map_err(|e| rpc_error_of(&e))?,
                _ => SinkExt::send(&mut writer, bytes::Bytes::copy_from_slice(piece)).await?,
            }
            at += n;
        }
        writer.close(None).await
    });

    let mut read_rng = XorShift::new(case ^ 0x5A5A);
    let mut buf = vec![0u8; MAX_WRITE as usize];
    let mut got = 0usize;
    let reading = async {
        for _ in 0..MAX_READS {
            let size = read_rng.range(1, read_scale) as usize;
            // Two ways of reading: a chunk, or AsyncRead into a buffer of a random size.
            let n = if read_rng.range(0, 1) == 0 {
                match reader.read_chunk().await.unwrap_or_else(|e| panic!("{what}: {e}")) {
                    Some(chunk) => {
                        assert!(chunk.len() as u64 <= max_read, "{what}: a read of {}", chunk.len());
                        buf[..chunk.len()].copy_from_slice(&chunk);
                        chunk.len()
                    }
                    None => 0,
                }
            } else {
                let n =
                    AsyncReadExt::read(&mut reader, &mut buf[..size]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(n <= size && n as u64 <= max_read, "{what}: a read of {n} into {size}");
                n
            };
            if n == 0 {
                return;
            }
            assert!(got + n <= source.len(), "{what}: more bytes than written");
            if buf[..n] != source[got..got + n] {
                panic!("{what}: the bytes at {got}..{} differ", got + n);
            }
            got += n;
        }
        panic!("{what}: too many reads");
    };
    within(&what, reading).await;
    assert_eq!(got as u64, total, "{what}: bytes read");
    within(&what, writing).await.expect("writer task").unwrap_or_else(|e| panic!("{what}: writer: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_write_and_read_sizes_arrive_exactly_over_a_connection() {
    for case in 0..CASES {
        random_case(case).await;
    }
}

// ----- 5. a one-byte window -------------------------------------------------------------

/// 10 KiB through a window of one byte: progress, one byte per read.
async fn one_byte_window(route: Route) {
    const LEN: u64 = 10 << 10;
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 1, 64 << 10).await;
    let source = expected(14, LEN);
    let data = source.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&data).await?;
        writer.shutdown().await
    });
    let mut got = Vec::new();
    for _ in 0..=LEN {
        match within("read", reader.read_chunk()).await.expect("read") {
            Some(chunk) => {
                assert_eq!(chunk.len(), 1, "{route:?}: a read of {} bytes through a window of 1", chunk.len());
                got.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    assert_pattern(&format!("{route:?}"), &got, 14, LEN);
    within("writer", writing).await.expect("writer task").expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_byte_window_still_makes_progress_over_a_connection() {
    for route in REMOTE_ROUTES {
        one_byte_window(route).await;
    }
    // A returned stream and a writer argument, each with a window of 1.
    let (depot, _probe, _conns) = depot(Via::Remote).await;
    let mut download = depot.download(15, 10 << 10);
    download.set_window(1);
    let got = within("download", read_to_end(&mut download)).await.expect("download");
    assert_pattern("download", &got, 15, 10 << 10);
    let (into, mut data) = Bytes::channel();
    data.set_window(1);
    let filled = depot.fill(16, 10 << 10, into);
    assert_pattern("fill", &within("fill data", read_to_end(&mut data)).await.expect("read"), 16, 10 << 10);
    within("fill", filled).await.expect("fill");
}

#[tokio::test(start_paused = true)]
async fn a_one_byte_window_still_makes_progress_on_the_paused_clock() {
    let start = Instant::now();
    for route in ROUTES {
        one_byte_window(route).await;
    }
    assert!(start.elapsed() < Duration::from_secs(1), "a one-byte window waited for a timer: {:?}", start.elapsed());
}
