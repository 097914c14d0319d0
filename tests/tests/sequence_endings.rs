//! How a sequence ends: the writer closes, fails or aborts; the reader
//! cancels or is dropped; the connection is lost; the producer task dies
//! mid-stream.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact and the
//! elapsed virtual time shows whether anything waited for a timer. Every wait
//! is bounded. The `Lab` interface and the pairs of ends are in
//! `rpc_tests::sequence_lab`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rpc_core::{ErrorKind, RpcError, Sequence, SequenceWriter};
use rpc_tests::sequence_lab::*;
use rpc_tests::stream_support::*;
use rpc_tests::Via;
use tokio::time::{sleep, Instant};

// ----- 3. the writer ------------------------------------------------------------

async fn close_delivers_everything(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 16).await;
    for n in 0..10 {
        writer.write(n).expect("write");
    }
    within("close", writer.close(None)).await.expect("close");
    expect_items_then_end(&format!("{route:?}"), &mut reader, 0..10).await;
    assert_eq!(within("end", reader.read()).await.expect("end"), None, "{route:?}: the end repeats");
}

#[tokio::test(start_paused = true)]
async fn close_delivers_every_buffered_item_then_the_end() {
    for route in ROUTES {
        close_delivers_everything(route).await;
    }
}

async fn close_with_error(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 16).await;
    for n in 0..5 {
        writer.write(n).expect("write");
    }
    let error = RpcError::new(ErrorKind::Timeout, "the feed went stale");
    within("close", writer.close(Some(error))).await.expect("close");
    for n in 0..5 {
        assert_eq!(within("read", reader.read()).await.expect("read"), Some(n), "{route:?}");
    }
    let err = expect_kind(&format!("{route:?}"), within("read", reader.read()).await, ErrorKind::Timeout);
    assert_eq!(err.message(), "the feed went stale", "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn close_with_an_error_delivers_the_items_then_that_error() {
    for route in ROUTES {
        close_with_error(route).await;
    }
}

async fn abort_at_once(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 16).await;
    for n in 0..5 {
        writer.write(n).expect("write");
    }
    within("flush", writer.flush()).await.expect("flush");
    assert_eq!(within("read", reader.read()).await.expect("read"), Some(0), "{route:?}");
    settle().await; // items 1..5 now wait in the consumer's buffer
    let start = Instant::now();
    writer.abort();
    settle().await;
    expect_kind(&format!("{route:?}: after abort"), within("read", reader.read()).await, ErrorKind::Aborted);
    assert!(start.elapsed() <= SETTLE, "{route:?}: the abort took {:?}", start.elapsed());
    // The buffered items are gone for good.
    expect_kind(&format!("{route:?}: again"), within("read", reader.read()).await, ErrorKind::Aborted);
}

#[tokio::test(start_paused = true)]
async fn abort_ends_at_once_and_drops_unread_items() {
    for route in ROUTES {
        abort_at_once(route).await;
    }
}

async fn dropped_writer(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 16).await;
    for n in 0..3 {
        writer.write(n).expect("write");
    }
    within("flush", writer.flush()).await.expect("flush");
    drop(writer);
    settle().await;
    // Never a graceful end: items (if any survive) and then Aborted.
    for _ in 0..4 {
        match within("read", reader.read()).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{route:?}: a dropped writer ended the sequence gracefully"),
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
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 16).await;
    writer.write(1).expect("write");
    within("sink close", SinkExt::close(&mut writer)).await.expect("sink close");
    expect_kind(&format!("{route:?}: write after close"), writer.write(2), ErrorKind::Aborted);
    expect_kind(&format!("{route:?}: flush after close"), within("flush", writer.flush()).await, ErrorKind::Aborted);
    within("close again", SinkExt::close(&mut writer)).await.expect("closing twice is harmless");
    expect_items_then_end(&format!("{route:?}"), &mut reader, [1]).await;
}

#[tokio::test(start_paused = true)]
async fn writes_after_close_fail() {
    for route in ROUTES {
        writes_after_close(route).await;
    }
}

async fn forwarded_stream(route: Route) {
    let Pair { writer, mut reader, keep: _keep } = pair(route, 8).await;
    // Capacity 8: `forward` must wait for the reader as it goes.
    let forward = futures::stream::iter(0..100u64).map(Ok::<u64, RpcError>).forward(writer);
    let collect = async {
        let mut seen = Vec::new();
        for _ in 0..=100 {
            match reader.read().await.expect("read") {
                Some(n) => seen.push(n),
                None => break,
            }
        }
        seen
    };
    let (forwarded, seen) = within("forward", futures::future::join(forward, collect)).await;
    forwarded.expect("forward");
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_forwarded_into_the_writer_arrives_whole_then_ends() {
    for route in ROUTES {
        forwarded_stream(route).await;
    }
}

// ----- 4. the reader ------------------------------------------------------------

/// The producer's next write or flush after the cancel has arrived.
async fn next_write_error(writer: &mut SequenceWriter<u64>) -> RpcError {
    match writer.write(99) {
        Err(err) => err,
        Ok(()) => within("flush", writer.flush()).await.expect_err("flush after the consumer went"),
    }
}

async fn cancel_with_reason(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 16).await;
    writer.write(0).expect("write");
    within("flush", writer.flush()).await.expect("flush");
    reader.cancel(Some("bored".into()));
    settle().await;
    let err = next_write_error(&mut writer).await;
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{route:?}: {err}");
    assert!(err.message().contains("bored"), "{route:?}: {err}");
    // And it stays so.
    let again = expect_kind(&format!("{route:?}: again"), writer.write(100), ErrorKind::Cancelled);
    assert!(again.message().contains("bored"), "{route:?}: {again}");
    let flushed =
        expect_kind(&format!("{route:?}: flush"), within("flush", writer.flush()).await, ErrorKind::Cancelled);
    assert!(flushed.message().contains("bored"), "{route:?}: {flushed}");
}

#[tokio::test(start_paused = true)]
async fn cancel_reaches_the_producer_with_the_reason() {
    for route in ROUTES {
        cancel_with_reason(route).await;
    }
}

/// `close` after the consumer cancelled reports it (its errors are documented
/// as those of `flush`); `write_first`: a write between the ends moving and
/// the cancel.
async fn close_after_cancel(route: Route, write_first: bool) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 16).await;
    if write_first {
        writer.write(0).expect("write");
    }
    reader.cancel(Some("bored".into()));
    settle().await;
    let closed = within("close", writer.close(None)).await;
    let what = format!("{route:?} (written first: {write_first}): close after cancel");
    let err = expect_kind(&what, closed, ErrorKind::Cancelled);
    assert!(err.message().contains("bored"), "{what}: {err}");
}

#[tokio::test(start_paused = true)]
async fn close_after_the_consumer_cancelled_reports_it_remote() {
    for route in [Route::ReaderSent(Via::Remote), Route::WriterSent(Via::Remote)] {
        close_after_cancel(route, true).await;
    }
    close_after_cancel(Route::WriterSent(Via::Remote), false).await;
}

#[tokio::test(start_paused = true)]
async fn close_after_the_consumer_cancelled_reports_it_remote_without_a_write() {
    close_after_cancel(Route::ReaderSent(Via::Remote), false).await;
}

#[tokio::test(start_paused = true)]
async fn close_after_the_consumer_cancelled_reports_it_local() {
    for route in [Route::Channel, Route::ReaderSent(Via::Local), Route::WriterSent(Via::Local)] {
        for write_first in [true, false] {
            close_after_cancel(route, write_first).await;
        }
    }
}

async fn dropped_reader(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 16).await;
    writer.write(0).expect("write");
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

/// A flush already waiting on a full window is woken by the cancel.
async fn cancel_wakes_a_waiting_flush(route: Route) {
    let Pair { mut writer, reader, keep: _keep } = pair(route, 2).await;
    let mut next = 0;
    write_until_stalled(&mut writer, &mut next).await;
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
    let (lab, probe, _conns) = lab(via).await;
    let mut numbers = lab.produce();
    numbers.set_capacity(4);
    assert_eq!(within("read", numbers.read()).await.expect("read"), Some(0), "{via:?}");
    numbers.cancel(Some("bored".into()));
    wait_until("producer error", || probe.error().is_some()).await;
    let err = probe.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{via:?}: {err}");
    assert!(err.message().contains("bored"), "{via:?}: the consumer's reason is lost: {err}");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_returned_sequence_reaches_the_handler_with_the_reason_remote() {
    returned_cancel(Via::Remote).await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_returned_sequence_reaches_the_handler_with_the_reason_local() {
    returned_cancel(Via::Local).await;
}

/// The handler's task dies with items unread at the client: they are dropped,
/// the consumer's next read is the abort.
async fn returned_abort(via: Via) {
    let (lab, probe, _conns) = lab(via).await;
    let mut numbers = lab.produce();
    numbers.set_capacity(8);
    assert_eq!(within("read", numbers.read()).await.expect("read"), Some(0), "{via:?}");
    settle().await; // the window is full again: items 1..=8 unread
    probe.task.lock().unwrap().take().expect("the handler's task").abort();
    settle().await;
    expect_kind(&format!("{via:?}: after the abort"), within("read", numbers.read()).await, ErrorKind::Aborted);
}

#[tokio::test(start_paused = true)]
async fn a_returned_sequence_whose_producer_aborts_drops_unread_items_remote() {
    returned_abort(Via::Remote).await;
}

#[tokio::test(start_paused = true)]
async fn a_returned_sequence_whose_producer_aborts_drops_unread_items_local() {
    returned_abort(Via::Local).await;
}

async fn reader_as_stream(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 32).await;
    for n in 0..20 {
        writer.write(n).expect("write");
    }
    within("close", writer.close(None)).await.expect("close");
    let mut seen = Vec::new();
    while let Some(item) = within("next", reader.next()).await {
        seen.push(item.expect("item"));
        assert!(seen.len() <= 20, "{route:?}: too many items");
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "{route:?}");
    assert!(within("next", reader.next()).await.is_none(), "{route:?}: the stream is over");

    // An error ends the stream too: items, the error, then None.
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 32).await;
    writer.write(7).expect("write");
    within("close", writer.close(Some(RpcError::new(ErrorKind::Protocol, "bad feed")))).await.expect("close");
    assert_eq!(within("next", reader.next()).await.map(|r| r.expect("item")), Some(7), "{route:?}");
    let err = within("next", reader.next()).await.expect("an error item");
    expect_kind(&format!("{route:?}"), err, ErrorKind::Protocol);
    assert!(within("next", reader.next()).await.is_none(), "{route:?}: the stream is over after the error");
}

#[tokio::test(start_paused = true)]
async fn the_reader_is_a_stream_of_items_then_none() {
    for route in ROUTES {
        reader_as_stream(route).await;
    }
}

// ----- 5. connection loss -------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Severed {
    ClientClosed,
    ServerClosed,
}

async fn connection_loss(severed: Severed) {
    let (lab, probe, conns) = lab(Via::Remote).await;
    let (server, client) = conns.expect("a remote lab has connections");
    // Upload: the test writes, the server reads.
    let (mut up, up_reader) = Sequence::<u64>::channel();
    up_reader.set_capacity(8);
    within("park", lab.park(up_reader)).await.expect("park");
    let mut up_reader = probe.take_reader();
    // Download: the server writes, the test reads.
    let (down_writer, mut down) = Sequence::<u64>::channel();
    down.set_capacity(8);
    within("park_writer", lab.park_writer(down_writer)).await.expect("park_writer");
    let mut down_writer = probe.take_writer();
    // A returned sequence whose producer stalls on a full window.
    let mut produced = lab.produce();
    produced.set_capacity(4);
    for n in 0..3 {
        up.write(n).expect("write up");
        down_writer.write(n).expect("write down");
    }
    settle().await;
    assert_eq!(probe.progress(), (4, 3), "{severed:?}: the producer stalls at the window");

    let start = Instant::now();
    match severed {
        Severed::ClientClosed => client.close(),
        Severed::ServerClosed => server.close(),
    }
    // Consumers on both sides: what had arrived, then Disconnected.
    for (name, reader) in [("upload (server side)", &mut up_reader), ("download (client side)", &mut down)] {
        for n in 0..3 {
            let item = within(name, reader.read()).await;
            assert_eq!(item.expect("buffered item"), Some(n), "{severed:?}: {name}");
        }
        expect_kind(&format!("{severed:?}: {name}"), within(name, reader.read()).await, ErrorKind::Disconnected);
    }
    for n in 0..4 {
        let item = within("produced", produced.read()).await;
        assert_eq!(item.expect("buffered item"), Some(n), "{severed:?}: produced");
    }
    expect_kind(&format!("{severed:?}: produced"), within("produced", produced.read()).await, ErrorKind::Disconnected);
    // Producers on both sides.
    expect_kind(&format!("{severed:?}: client write"), up.write(9), ErrorKind::Disconnected);
    expect_kind(&format!("{severed:?}: client flush"), within("flush", up.flush()).await, ErrorKind::Disconnected);
    expect_kind(&format!("{severed:?}: server write"), down_writer.write(9), ErrorKind::Disconnected);
    let flushed = within("flush", down_writer.flush()).await;
    expect_kind(&format!("{severed:?}: server flush"), flushed, ErrorKind::Disconnected);
    wait_until("producer error", || probe.error().is_some()).await;
    expect_kind(&format!("{severed:?}: stalled producer"), probe.error().map_or(Ok(()), Err), ErrorKind::Disconnected);
    // Promptly: nothing waited for a timer.
    assert!(start.elapsed() < Duration::from_millis(20), "{severed:?}: took {:?}", start.elapsed());
    // Closing a writer on a dead connection fails instead of hanging.
    let closed = within("close", up.close(None)).await;
    expect_kind(&format!("{severed:?}: client close"), closed, ErrorKind::Disconnected);
    let closed = within("close", down_writer.close(None)).await;
    expect_kind(&format!("{severed:?}: server close"), closed, ErrorKind::Disconnected);
}

#[tokio::test(start_paused = true)]
async fn closing_the_client_connection_ends_open_sequences_both_ways() {
    connection_loss(Severed::ClientClosed).await;
}

#[tokio::test(start_paused = true)]
async fn closing_the_server_connection_ends_open_sequences_both_ways() {
    connection_loss(Severed::ServerClosed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_ends_a_stalled_flush_and_a_waiting_read_multi_thread() {
    let (lab, probe, conns) = lab(Via::Remote).await;
    let (_server, client) = conns.expect("connections");
    let (mut up, up_reader) = Sequence::<u64>::channel();
    up_reader.set_capacity(2);
    within("park", lab.park(up_reader)).await.expect("park");
    let _up_reader = probe.take_reader();
    let (down_writer, mut down) = Sequence::<u64>::channel();
    within("park_writer", lab.park_writer(down_writer)).await.expect("park_writer");
    let _down_writer = probe.take_writer();
    let mut next = 0;
    write_until_stalled(&mut up, &mut next).await;
    // A flush stuck on the window and a read with nothing to read, when the connection goes.
    let stuck_flush = tokio::spawn(async move { up.flush().await });
    let waiting_read = tokio::spawn(async move { down.read().await });
    sleep(SETTLE).await;
    client.close();
    let flushed = within("stuck flush", stuck_flush).await.expect("join");
    expect_kind("stuck flush", flushed, ErrorKind::Disconnected);
    let read = within("waiting read", waiting_read).await.expect("join");
    expect_kind("waiting read", read, ErrorKind::Disconnected);
}

// ----- 6. the producer dies -----------------------------------------------------

async fn producer_dies(via: Via) {
    let (lab, probe, _conns) = lab(via).await;
    let mut numbers = lab.produce();
    numbers.set_capacity(4);
    for n in 0..5 {
        assert_eq!(within("read", numbers.read()).await.expect("read"), Some(n), "{via:?}");
    }
    let task = probe.task.lock().unwrap().take().expect("the handler's task");
    task.abort();
    // On the multi-thread runtime the task may be running: it dies at its next await.
    let joined = within("the aborted task", task).await;
    assert!(joined.as_ref().is_err_and(|e| e.is_cancelled()), "{via:?}: the task was not cancelled: {joined:?}");
    let mut next = 5;
    // On the multi-thread runtime the server may start writing before the
    // capacity set after the call reaches it: up to the default window (256)
    // can be buffered here, and is readable until the abort arrives.
    for _ in 0..2 * rpc_core::DEFAULT_CAPACITY {
        match within("read after the producer died", numbers.read()).await {
            Ok(Some(n)) => {
                assert_eq!(n, next, "{via:?}");
                next += 1;
            }
            Ok(None) => panic!("{via:?}: a dead producer ended the sequence gracefully"),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Aborted, "{via:?}: {err}");
                return;
            }
        }
    }
    panic!("{via:?}: items kept coming after the producer died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_task_aborted_mid_stream_is_an_error_not_an_end() {
    for via in Via::BOTH {
        producer_dies(via).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_producer_task_aborted_mid_stream_is_an_error_not_an_end_paused() {
    for via in Via::BOTH {
        producer_dies(via).await;
    }
}
