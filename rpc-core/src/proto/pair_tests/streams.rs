//! Streams on a [`Pair`]: windows and credit, endings each way, late messages.

use std::task::Poll;

use super::{sent_by, serving, LATENCY};
use crate::proto::pair::{Pair, Rule, Side, TestStream};
use crate::wire::Message;
use crate::wire::Window;
use crate::{Client, ErrorKind, RpcError};

const WINDOW: Window = Window { capacity: 4, batch: 2 };

/// Items `side` sent on stream `id` so far (the counts of its data messages).
fn items_sent(pair: &Pair, side: Side, id: u32) -> u64 {
    let counts = sent_by(pair, side).into_iter().filter_map(|m| match m {
        Message::StreamData { stream, count, .. } if stream == id => Some(u64::from(count)),
        _ => None,
    });
    counts.sum()
}

/// How far the consumer of `id` (on the other side of `producer`) said it read.
fn acknowledged(pair: &Pair, producer: Side, id: u32) -> u64 {
    let reads = sent_by(pair, producer.other()).into_iter().filter_map(|m| match m {
        Message::StreamWindow { stream, read, .. } if stream == id => Some(read),
        _ => None,
    });
    reads.max().unwrap_or(0)
}

/// A pair whose B keeps what it gets, and a stream A produces (`reader`:
/// B got the reader) or consumes; returns the stream's id.
fn with_stream(reader: bool) -> (Pair, crate::proto::pair::ObjectLog, TestStream, u32, Client) {
    let (mut pair, log) = serving(Rule::Keep);
    let boot = pair.bootstrap(Side::A);
    let (call, stream) = pair.call_with_stream(Side::A, &boot, 0, reader, WINDOW);
    assert!(pair.run_until(|| call.is_done()));
    assert_eq!(log.ends(), 1);
    let id = stream.id().expect("the end was sent");
    (pair, log, stream, id, boot)
}

#[test]
fn a_producer_never_has_more_than_the_window_unacknowledged() {
    let (mut pair, _log, _stream, id, _boot) = with_stream(true);
    assert_eq!(pair.stream_ids(Side::B).1, [id], "B consumes the stream under the same id");
    for i in 0..10 {
        pair.write(Side::A, id, i).unwrap();
    }
    pair.drive();
    assert_eq!(items_sent(&pair, Side::A, id), 4, "one window's worth");
    assert!(pair.poll_flush(Side::A, id).is_pending(), "the writer waits for room");
    let mut read = Vec::new();
    let expect_sent = |pair: &mut Pair, read: &mut Vec<u32>, reads: usize, sent: u64| {
        for _ in 0..reads {
            match pair.read(Side::B, id) {
                Poll::Ready(Ok(Some(item))) => read.push(item),
                other => panic!("expected an item, got {other:?}"),
            }
        }
        pair.drive();
        assert_eq!(items_sent(pair, Side::A, id), sent, "after {} reads", read.len());
        let unacknowledged = items_sent(pair, Side::A, id) - acknowledged(pair, Side::A, id);
        assert!(unacknowledged <= u64::from(WINDOW.capacity));
    };
    // Half a window read is acknowledged; what is acknowledged is released, exactly.
    expect_sent(&mut pair, &mut read, 1, 4);
    expect_sent(&mut pair, &mut read, 1, 6);
    expect_sent(&mut pair, &mut read, 4, 10);
    pair.close_stream(Side::A, id, None);
    pair.drive();
    let (rest, end) = pair.read_available(Side::B, id);
    read.extend(rest);
    assert_eq!(read, (0..10).collect::<Vec<_>>());
    assert!(matches!(end, Some(Ok(()))), "{end:?}");
    for side in [Side::A, Side::B] {
        assert_eq!(pair.side(side).proto.counts().streams, 0, "{side:?}: the stream is over");
    }
}

#[test]
fn a_stream_closed_with_an_error_ends_with_it_after_its_items() {
    let (mut pair, _log, _stream, id, _boot) = with_stream(true);
    for i in 0..3 {
        pair.write(Side::A, id, i).unwrap();
    }
    pair.close_stream(Side::A, id, Some(RpcError::aborted("out of paper")));
    pair.drive();
    let (items, end) = pair.read_available(Side::B, id);
    assert_eq!(items, [0, 1, 2]);
    let err = end.expect("ended").unwrap_err();
    assert!(err.message().contains("out of paper"), "{err}");
}

#[test]
fn an_abort_drops_what_was_not_read() {
    let (mut pair, _log, _stream, id, _boot) = with_stream(true);
    for i in 0..3 {
        pair.write(Side::A, id, i).unwrap();
    }
    pair.drive();
    pair.abort_stream(Side::A, id);
    pair.drive();
    assert!(sent_by(&pair, Side::A).contains(&Message::StreamAbort { stream: id }));
    let (items, end) = pair.read_available(Side::B, id);
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(end.expect("ended").unwrap_err().kind(), ErrorKind::Aborted);
}

#[test]
fn cancelling_the_reader_stops_the_writer() {
    let (mut pair, _log, _stream, id, _boot) = with_stream(true);
    pair.write(Side::A, id, 1).unwrap();
    pair.drive();
    pair.cancel_stream(Side::B, id, Some("enough".into()));
    pair.drive();
    let cancel = Message::StreamCancel { stream: id, reason: Some("enough".into()) };
    assert!(sent_by(&pair, Side::B).contains(&cancel));
    let err = pair.write(Side::A, id, 2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(err.message().contains("enough"), "{err}");
    assert!(matches!(pair.poll_flush(Side::A, id), Poll::Ready(Err(_))));
}

#[test]
fn a_writer_end_sent_the_other_way_is_read_here() {
    let (mut pair, log, _stream, id, _boot) = with_stream(false);
    assert_eq!(pair.stream_ids(Side::B).0, [id], "B produces the stream");
    for i in 0..6 {
        pair.write(Side::B, id, 10 + i).unwrap();
    }
    pair.drive();
    let (items, end) = pair.read_available(Side::A, id);
    assert_eq!(items, [10, 11, 12, 13], "one window");
    assert!(end.is_none());
    pair.drive();
    let (items, _) = pair.read_available(Side::A, id);
    assert_eq!(items, [14, 15]);
    // B lets go of its writer without closing it: the stream is aborted.
    log.drop_kept();
    pair.drive();
    assert!(sent_by(&pair, Side::B).contains(&Message::StreamAbort { stream: id }));
    let (_, end) = pair.read_available(Side::A, id);
    assert_eq!(end.expect("ended").unwrap_err().kind(), ErrorKind::Aborted);
}

#[test]
fn dropping_the_reader_cancels_and_closing_the_connection_ends_streams() {
    let (mut pair, log, stream, id, _boot) = with_stream(true);
    log.drop_kept();
    pair.drive();
    assert!(sent_by(&pair, Side::B).iter().any(|m| matches!(m, Message::StreamCancel { stream, .. } if *stream == id)));
    assert!(pair.write(Side::A, id, 1).is_err());
    drop(stream);
    pair.drive();
    assert_eq!(pair.side(Side::A).proto.counts().streams, 0);
    assert_eq!(pair.side(Side::B).proto.counts().streams, 0);
    // A second stream, ended by the connection closing.
    let boot = pair.bootstrap(Side::A);
    let (_call, _second) = pair.call_with_stream(Side::A, &boot, 0, false, WINDOW);
    pair.drive();
    let second = _second.id().expect("sent");
    pair.close(Side::B, RpcError::disconnected("bye"));
    let (_, end) = pair.read_available(Side::A, second);
    assert!(end.is_none(), "A has not heard yet");
    pair.drive();
    let err = pair.read_available(Side::A, second).1.expect("ended").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected);
    assert!(err.message().contains("bye"), "{err}");
    assert_eq!(pair.elapsed().as_nanos() % LATENCY.as_nanos(), 0);
}

#[test]
fn messages_for_an_ended_stream_are_harmless_but_unknown_streams_are_not() {
    let (mut pair, _log, stream, id, _boot) = with_stream(true);
    pair.write(Side::A, id, 1).unwrap();
    pair.close_stream(Side::A, id, None);
    pair.drive();
    assert_eq!(pair.read_available(Side::B, id).0, [1]);
    drop(stream);
    pair.drive();
    let late = Message::StreamData { stream: id, count: 1, item_caps: vec![], caps: vec![], item_lens: vec![1] };
    pair.inject(Side::B, late, &[7]).unwrap();
    pair.inject(Side::B, Message::StreamEnd { stream: id, error: None }, &[]).unwrap();
    pair.inject(Side::A, Message::StreamWindow { stream: id, read: 99, window: WINDOW }, &[]).unwrap();
    pair.inject(Side::A, Message::StreamCancel { stream: id, reason: None }, &[]).unwrap();
    assert!(pair.side(Side::A).proto.is_closed().is_none() && pair.side(Side::B).proto.is_closed().is_none());
    let unknown = Message::StreamEnd { stream: id + 40, error: None };
    let err = pair.inject(Side::B, unknown, &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.message().contains("does not exist"), "{err}");
}

#[test]
fn a_closed_producer_whose_last_window_is_read_after_its_end_does_not_wait_in_flush() {
    let (mut pair, _log, _stream, id, _boot) = with_stream(true);
    for i in 0..4 {
        pair.write(Side::A, id, i).unwrap();
    }
    pair.close_stream(Side::A, id, None);
    pair.drive();
    assert_eq!(items_sent(&pair, Side::A, id), 4, "a whole window, then the end");
    // The consumer reads after the end arrived: it reports no window any more.
    let (read, end) = pair.read_available(Side::B, id);
    assert_eq!(read, [0, 1, 2, 3]);
    assert!(matches!(end, Some(Ok(()))), "{end:?}");
    pair.drive();
    assert!(pair.poll_flush(Side::A, id).is_ready(), "flush after the end was sent returns at once");
}
