//! How a byte stream ends, and the standard I/O traits: `tokio::io::copy`
//! in and out, close, close with an error, abort, a dropped writer, writes
//! after close, cancel with a reason, a dropped reader, and the reader as a
//! `Stream` and the writer as a `Sink`.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact. Every
//! wait is bounded, and so is every loop. The `Depot` interface, the byte
//! pattern and the pairs of ends are in `rpc_tests::bytes_lab`.

use futures::{SinkExt, StreamExt};
use rpc_core::{Bytes, BytesWriter, ErrorKind, RpcError};
use rpc_tests::bytes_lab::*;
use rpc_tests::stream_support::*;
use rpc_tests::Via;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

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
