//! Sequences nested in every position and both directions: sequences of
//! sequences, capabilities as items, writers in structs, sequences in enums
//! and vectors, and several independent sequences in one call.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact and the
//! elapsed virtual time shows whether anything waited for a timer. Every wait
//! is bounded. The `Lab` interface and the pairs of ends are in
//! `rpc_tests::sequence_lab`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rpc_core::{ErrorKind, Sequence};
use rpc_tests::sequence_lab::*;
use rpc_tests::stream_support::*;
use rpc_tests::Via;
use tokio::time::{sleep, Instant};

// ----- 1. nesting ---------------------------------------------------------------

/// A returned sequence of sequences, each inner one with its own items and
/// window. With `quick`, also checks that nothing waited for a timer.
async fn sequence_of_sequences_returned(via: Via, quick: bool) {
    let (lab, _probe, _conns) = lab(via).await;
    let start = Instant::now();
    let mut outer = lab.nested(4);
    outer.set_capacity(2);
    let mut inners = Vec::new();
    while let Some(inner) = within("outer read", outer.read()).await.expect("outer read") {
        inners.push(inner);
        assert!(inners.len() <= 4, "{via:?}: too many inner sequences");
    }
    assert_eq!(inners.len(), 4, "{via:?}");
    for (i, inner) in inners.iter().enumerate() {
        assert_eq!(inner.capacity(), i as u32 + 1, "{via:?}: inner {i} keeps the window its producer's consumer set");
    }
    // The last first: the others wait on their own windows without holding it up.
    for (i, inner) in inners.iter_mut().enumerate().rev() {
        let i = i as u32;
        expect_items_then_end(&format!("{via:?}: inner {i}"), inner, (0..10 * (i + 1)).map(|j| i * 1000 + j)).await;
    }
    assert!(!quick || start.elapsed() < QUICK, "{via:?}: nested sequences took {:?}", start.elapsed());
    // The connection is still responsive.
    let start = Instant::now();
    assert_eq!(within("ping", lab.ping(7)).await.unwrap(), 7, "{via:?}");
    assert!(!quick || start.elapsed() < QUICK, "{via:?}: a call after nested sequences took {:?}", start.elapsed());
}

/// An uploaded sequence of sequences, read by the server. With `quick`,
/// also checks that nothing waited for a timer.
async fn sequence_of_sequences_uploaded(via: Via, quick: bool) {
    let (lab, _probe, _conns) = lab(via).await;
    let start = Instant::now();
    let (mut outer, outer_reader) = Sequence::<Sequence<u32>>::channel();
    let sums = lab.sum_nested(outer_reader);
    let mut closes = Vec::new();
    for i in 0..3u32 {
        let (mut inner, items) = Sequence::channel();
        items.set_capacity(2);
        outer.write(items).expect("outer write");
        // Written without waiting: the producer holds what the window does not allow yet.
        for j in 0..=10 * i {
            inner.write(j).expect("inner write");
        }
        closes.push(inner.close(None));
    }
    // `close` may wait until the items are sent, which the windows allow only as the server reads.
    let all = futures::future::join3(futures::future::join_all(closes), outer.close(None), sums);
    let (closed, outer_closed, sums) = within("sum_nested", all).await;
    assert!(closed.iter().all(Result::is_ok), "{via:?}: {closed:?}");
    outer_closed.expect("outer close");
    assert_eq!(sums.expect("sum_nested"), [0, 55, 210], "{via:?}");
    assert!(!quick || start.elapsed() < QUICK, "{via:?}: uploaded nested sequences took {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_returned_sequence_of_sequences_keeps_each_inner_window() {
    for via in Via::BOTH {
        sequence_of_sequences_returned(via, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_uploaded_sequence_of_sequences_is_read_by_the_server() {
    for via in Via::BOTH {
        sequence_of_sequences_uploaded(via, false).await;
    }
}

// A stream bound while the connection's writer task emits (a sequence inside
// a sequence item) is scheduled after `emit_streams` took the ready list: it
// must still go out at once, not at the next keepalive ping (5 s).
#[tokio::test(start_paused = true)]
async fn nested_sequences_flow_without_waiting_for_a_keepalive() {
    sequence_of_sequences_returned(Via::Remote, true).await;
    sequence_of_sequences_uploaded(Via::Remote, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequences_of_sequences_both_ways_multi_thread() {
    for via in Via::BOTH {
        sequence_of_sequences_returned(via, true).await;
        sequence_of_sequences_uploaded(via, true).await;
    }
}

async fn capabilities_as_items(via: Via) {
    let (lab, _probe, _conns) = lab(via).await;
    let mut counters = lab.counters(vec![3, 5, 8]);
    let mut held = Vec::new();
    while let Some(counter) = within("counters read", counters.read()).await.expect("counters read") {
        held.push(counter);
        assert!(held.len() <= 3, "{via:?}: too many counters");
    }
    let mut values = Vec::new();
    for counter in &held {
        values.push(within("value", counter.value()).await.expect("value"));
    }
    assert_eq!(values, [3, 5, 8], "{via:?}");
    // Capabilities from a sequence outlive it.
    drop(counters);
    assert_eq!(within("value", held[1].value()).await.unwrap(), 5, "{via:?}");

    // The other way: the server calls capabilities the client streams to it.
    let (mut writer, reader) = Sequence::channel();
    let total = lab.total(reader);
    for value in [1, 10, 100] {
        writer.write(CounterProxy::new(Fixed(value))).expect("write");
        within("flush", writer.flush()).await.expect("flush");
    }
    within("close", writer.close(None)).await.expect("close");
    assert_eq!(within("total", total).await.expect("total"), 111, "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_travel_as_sequence_items_both_ways() {
    for via in Via::BOTH {
        capabilities_as_items(via).await;
    }
}

async fn writers_in_structs(via: Via) {
    let (lab, probe, _conns) = lab(via).await;
    // A struct argument holding a writer: the server writes into it.
    let (into, mut numbers) = Sequence::channel();
    numbers.set_capacity(4);
    let done = lab.fill_target(10, Target { label: "tens".into(), start: 10, into });
    expect_items_then_end(&format!("{via:?}: target"), &mut numbers, 10..20).await;
    assert_eq!(within("fill_target", done).await.expect("fill_target"), "tens", "{via:?}");

    // A struct result holding a writer: the client writes, the server reads.
    let Inbox { label, mut into } = within("open_inbox", lab.open_inbox("box".into())).await.expect("open_inbox");
    assert_eq!(label, "box", "{via:?}");
    for n in 1..=10 {
        into.write(n).expect("write");
        within("flush", into.flush()).await.expect("flush");
    }
    within("close", into.close(None)).await.expect("close");
    wait_until("inbox sum", || probe.inbox.lock().unwrap().is_some()).await;
    assert_eq!(*probe.inbox.lock().unwrap(), Some(Ok(55)), "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_inside_structs_work_both_ways() {
    for via in Via::BOTH {
        writers_in_structs(via).await;
    }
}

async fn sequences_in_enums(via: Via) {
    let (lab, _probe, _conns) = lab(via).await;
    match within("wrapped", lab.wrapped(5, None)).await.expect("wrapped") {
        Wrapped::Numbers(mut numbers) => expect_items_then_end(&format!("{via:?}: numbers"), &mut numbers, 0..5).await,
        other => panic!("{via:?}: expected Numbers, got {other:?}"),
    }
    match within("wrapped", lab.wrapped(3, Some("three".into()))).await.expect("wrapped") {
        Wrapped::Labeled { label, mut numbers } => {
            assert_eq!(label, "three", "{via:?}");
            expect_items_then_end(&format!("{via:?}: labeled"), &mut numbers, 0..3).await;
        }
        other => panic!("{via:?}: expected Labeled, got {other:?}"),
    }
    assert!(matches!(within("wrapped", lab.wrapped(0, None)).await.expect("wrapped"), Wrapped::Nothing), "{via:?}");

    // The other way.
    let (mut writer, numbers) = Sequence::channel();
    for n in 1..=4 {
        writer.write(n).expect("write");
    }
    within("close", writer.close(None)).await.expect("close");
    let summed = within("sum_wrapped", lab.sum_wrapped(Wrapped::Labeled { label: "four".into(), numbers })).await;
    assert_eq!(summed.expect("sum_wrapped"), ("four".to_string(), 10), "{via:?}");
    let (mut writer, numbers) = Sequence::channel();
    let summed = lab.sum_wrapped(Wrapped::Numbers(numbers));
    for n in 1..=100 {
        writer.write(n).expect("write");
        within("flush", writer.flush()).await.expect("flush");
    }
    within("close", writer.close(None)).await.expect("close");
    assert_eq!(within("sum_wrapped", summed).await.expect("sum_wrapped"), (String::new(), 5050), "{via:?}");
    let nothing = within("sum_wrapped", lab.sum_wrapped(Wrapped::Nothing)).await.expect("sum_wrapped");
    assert_eq!(nothing, ("nothing".to_string(), 0), "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_inside_enums_work_both_ways() {
    for via in Via::BOTH {
        sequences_in_enums(via).await;
    }
}

async fn vectors_of_sequences(via: Via) {
    let (lab, _probe, _conns) = lab(via).await;
    let mut parts = within("split", lab.split(3, 20)).await.expect("split");
    assert_eq!(parts.len(), 3, "{via:?}");
    for (p, part) in parts.iter().enumerate() {
        assert_eq!(part.capacity(), p as u32 + 1, "{via:?}: part {p} keeps its own window");
    }
    for (p, part) in parts.iter_mut().enumerate().rev() {
        let p = p as u64;
        expect_items_then_end(&format!("{via:?}: part {p}"), part, (0..20).map(|n| p * 1000 + n)).await;
    }

    // The other way: each input with a window of 2, written in full without
    // waiting; the server reads the last first.
    let mut writers = Vec::new();
    let mut inputs = Vec::new();
    for _ in 0..3 {
        let (writer, reader) = Sequence::<u64>::channel();
        reader.set_capacity(2);
        writers.push(writer);
        inputs.push(reader);
    }
    let sums = lab.sum_each(inputs);
    let mut closes = Vec::new();
    for (i, mut writer) in writers.into_iter().enumerate() {
        for n in 0..10 * (i as u64 + 1) {
            writer.write(n).expect("write");
        }
        // `close` may wait until the items are sent, which the window allows
        // only as the server reads: wait for all of them together.
        closes.push(writer.close(None));
    }
    let (closed, sums) = within("sum_each", futures::future::join(futures::future::join_all(closes), sums)).await;
    assert!(closed.iter().all(Result::is_ok), "{via:?}: {closed:?}");
    assert_eq!(sums.expect("sum_each"), [45, 190, 435], "{via:?}");
}

#[tokio::test(start_paused = true)]
async fn vectors_of_sequences_work_both_ways() {
    for via in Via::BOTH {
        vectors_of_sequences(via).await;
    }
}

/// Takes two sequences and returns one; each is independent of the others.
async fn independent_streams_in_one_call(via: Via) {
    let (lab, probe, _conns) = lab(via).await;
    let (mut a, a_reader) = Sequence::channel();
    a_reader.set_capacity(4);
    let (mut b, b_reader) = Sequence::channel();
    b_reader.set_capacity(4);
    let mut out = lab.juggle(a_reader, b_reader);
    out.set_capacity(4);
    for n in [1, 2, 3] {
        a.write(n).expect("write a");
        within("flush a", a.flush()).await.expect("flush a");
    }
    for n in [10, 20] {
        b.write(n).expect("write b");
        within("flush b", b.flush()).await.expect("flush b");
    }
    for n in 1..=3 {
        assert_eq!(within("out", out.read()).await.expect("out"), Some(n), "{via:?}");
    }
    let sums = || (probe.sum_a.load(Ordering::SeqCst), probe.sum_b.load(Ordering::SeqCst));
    wait_until("sums", || sums() == (6, 30)).await;

    // The server cancels `a`: its writer learns why; `b` and the output flow on.
    a.write(0).expect("write a");
    let mut err = None;
    for n in 100..200 {
        let result = match a.write(n) {
            Ok(()) => within("flush a", a.flush()).await,
            Err(err) => Err(err),
        };
        if let Err(e) = result {
            err = Some(e);
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let err = err.unwrap_or_else(|| panic!("{via:?}: the writer of `a` never saw the cancel"));
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{via:?}: {err}");
    assert!(err.message().contains("a had enough"), "{via:?}: {err}");
    assert_eq!(probe.a_end.lock().unwrap().as_deref(), Some("cancelled"), "{via:?}");
    b.write(40).expect("write b");
    within("flush b", b.flush()).await.expect("flush b");
    for n in 4..=6 {
        assert_eq!(within("out", out.read()).await.expect("out"), Some(n), "{via:?}");
    }
    wait_until("sum b", || sums() == (6, 70)).await;

    // The client cancels the output: the server's writer learns why; `b` flows on.
    out.cancel(Some("seen enough".into()));
    wait_until("output error", || probe.error().is_some()).await;
    let err = probe.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{via:?}: {err}");
    assert!(err.message().contains("seen enough"), "{via:?}: the consumer's reason is lost: {err}");
    b.write(50).expect("write b");
    within("flush b", b.flush()).await.expect("flush b");
    within("close b", b.close(None)).await.expect("close b");
    wait_until("b ended", || probe.b_ended.load(Ordering::SeqCst)).await;
    assert_eq!(probe.b_end.lock().unwrap().as_deref(), Some("end"), "{via:?}");
    assert_eq!(sums(), (6, 120), "{via:?}");
}

#[tokio::test(start_paused = true)]
async fn several_sequences_in_one_call_are_independent_remote() {
    independent_streams_in_one_call(Via::Remote).await;
}

#[tokio::test(start_paused = true)]
async fn several_sequences_in_one_call_are_independent_local() {
    independent_streams_in_one_call(Via::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_sequences_in_one_call_are_independent_multi_thread() {
    independent_streams_in_one_call(Via::Remote).await;
}
