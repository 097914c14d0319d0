//! The byte window and the maximum read: unread bytes never exceed the
//! window, changes take effect mid-stream, reads ignore write boundaries, a
//! returned stream holds its producer to the window, a huge maximum read
//! reserves nothing; randomised write and read sizes over a connection; a
//! one-byte window still makes progress.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact. Every
//! wait is bounded, and so is every loop. The `Depot` interface, the byte
//! pattern and the pairs of ends are in `rpc_tests::bytes_lab`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use rpc_core::{Bytes, ErrorKind};
use rpc_tests::bytes_lab::*;
use rpc_tests::stream_support::*;
use rpc_tests::Via;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

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
