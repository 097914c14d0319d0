//! Sequence semantics beyond the basics of `sequence_flow.rs`: nesting in
//! every position and both directions, exact flow-control counts, how writers
//! and readers end a sequence, connection loss, a producer dying mid-stream,
//! and when the first item of a returned sequence arrives.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact and the
//! elapsed virtual time shows whether anything waited for a timer. Every wait
//! is bounded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rpc_core::{eventual, Config, Connection, ErrorKind, RpcError, Sequence, SequenceWriter};
use rpc_tests::{connect_pair, latency_pipe, Via};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// Bound on any single wait.
const LIMIT: Duration = Duration::from_secs(60);
/// How long to let everything run before checking that something is stuck.
const SETTLE: Duration = Duration::from_millis(250);
/// Nested sequences must not wait for anything timed: far below the 5 s keepalive interval.
const QUICK: Duration = Duration::from_secs(2);
/// Items the `produce` handler writes at most (it stalls on the window long before).
const PRODUCE_MAX: u64 = 1_000_000;

// ----- the interface ----------------------------------------------------------

#[eventual]
pub trait Counter {
    fn value(&self) -> u64;
}

struct Fixed(u64);

impl Counter for Fixed {
    fn value(&self) -> u64 {
        self.0
    }
}

/// A struct holding a writer: the receiver writes into it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Target {
    pub label: String,
    pub start: u64,
    pub into: SequenceWriter<u64>,
}

/// A struct holding a writer, returned by the server.
#[derive(Debug, Serialize, Deserialize)]
pub struct Inbox {
    pub label: String,
    pub into: SequenceWriter<u64>,
}

/// An enum with sequences in its variants.
#[derive(Debug, Serialize, Deserialize)]
pub enum Wrapped {
    Nothing,
    Numbers(Sequence<u64>),
    Labeled { label: String, numbers: Sequence<u64> },
}

#[eventual]
pub trait Lab {
    /// `count` inner sequences; inner `i` has capacity `i + 1` and carries `10 * (i + 1)` items `i * 1000 + j`.
    fn nested(&self, count: u32) -> Sequence<Sequence<u32>>;
    /// Reads an uploaded sequence of sequences to its end, then each inner one, last first: their sums.
    async fn sum_nested(&self, outer: Sequence<Sequence<u32>>) -> Result<Vec<u64>, RpcError>;
    /// One counter capability per value, as items.
    fn counters(&self, values: Vec<u64>) -> Sequence<CounterProxy>;
    /// Calls every counter of an uploaded sequence: the sum of their values.
    async fn total(&self, counters: Sequence<CounterProxy>) -> Result<u64, RpcError>;
    /// Writes `count` numbers from `target.start` into `target.into`, closes it, returns the label.
    async fn fill_target(&self, count: u64, target: Target) -> Result<String, RpcError>;
    /// Returns a writer in a struct; what the caller writes is summed into the probe.
    async fn open_inbox(&self, label: String) -> Inbox;
    /// `0..count` in a sequence inside an enum (`Nothing` for 0).
    async fn wrapped(&self, count: u64, label: Option<String>) -> Wrapped;
    /// Sums the sequence inside an uploaded enum: (label, sum).
    async fn sum_wrapped(&self, wrapped: Wrapped) -> Result<(String, u64), RpcError>;
    /// `parts` sequences; part `p` has capacity `p + 1` and carries `p * 1000 + n` for `n` in `0..each`.
    async fn split(&self, parts: u32, each: u64) -> Vec<Sequence<u64>>;
    /// Sums each uploaded sequence, reading the last first.
    async fn sum_each(&self, inputs: Vec<Sequence<u64>>) -> Result<Vec<u64>, RpcError>;
    /// Full duplex with three independent streams: sums `a` (cancelling it at a 0) and `b`,
    /// and returns a counter 1, 2, 3, ... that runs until cancelled.
    fn juggle(&self, a: Sequence<u64>, b: Sequence<u64>) -> Sequence<u64>;
    /// Keeps a reader in the probe, for the test to take.
    async fn park(&self, reader: Sequence<u64>);
    /// Keeps a writer in the probe, for the test to take.
    async fn park_writer(&self, writer: SequenceWriter<u64>);
    /// 0, 1, 2, ... written by a spawned task (`write` then `flush`), which records its progress.
    fn produce(&self) -> Sequence<u64>;
    fn ping(&self, x: u32) -> u32;
}

/// What the server side saw; shared with the test.
#[derive(Default)]
struct Probe {
    readers: Mutex<Vec<Sequence<u64>>>,
    writers: Mutex<Vec<SequenceWriter<u64>>>,
    /// Items written (write returned Ok) by `produce`'s task or `juggle`'s output.
    written: AtomicU64,
    /// Flushes completed by `produce`'s task.
    flushed: AtomicU64,
    /// The error that stopped `produce`'s task or `juggle`'s output.
    error: Mutex<Option<RpcError>>,
    /// When `produce`'s task wrote its first item.
    first_write: Mutex<Option<Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
    inbox: Mutex<Option<Result<u64, RpcError>>>,
    sum_a: AtomicU64,
    sum_b: AtomicU64,
    /// How `juggle`'s `a` and `b` ended.
    a_end: Mutex<Option<String>>,
    b_end: Mutex<Option<String>>,
    b_ended: AtomicBool,
}

impl Probe {
    fn take_reader(&self) -> Sequence<u64> {
        self.readers.lock().unwrap().pop().expect("a parked reader")
    }

    fn take_writer(&self) -> SequenceWriter<u64> {
        self.writers.lock().unwrap().pop().expect("a parked writer")
    }

    /// (items written, flushes completed) by `produce`'s task.
    fn progress(&self) -> (u64, u64) {
        (self.written.load(Ordering::SeqCst), self.flushed.load(Ordering::SeqCst))
    }

    fn error(&self) -> Option<RpcError> {
        self.error.lock().unwrap().clone()
    }
}

struct LabImpl {
    probe: Arc<Probe>,
}

/// How a spawned reader ended, for the probe.
fn describe_end(end: Result<Option<u64>, RpcError>) -> String {
    match end {
        Ok(Some(n)) => format!("item {n}"),
        Ok(None) => "end".into(),
        Err(err) => format!("error: {err}"),
    }
}

impl Lab for LabImpl {
    fn nested(&self, count: u32) -> Sequence<Sequence<u32>> {
        let (mut outer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..count {
                let (mut inner, items) = Sequence::channel();
                items.set_capacity(i + 1);
                outer.write(items)?;
                outer.flush().await?;
                tokio::spawn(async move {
                    for j in 0..10 * (i + 1) {
                        inner.write(i * 1000 + j)?;
                        inner.flush().await?;
                    }
                    inner.close(None).await
                });
            }
            outer.close(None).await
        });
        reader
    }

    async fn sum_nested(&self, mut outer: Sequence<Sequence<u32>>) -> Result<Vec<u64>, RpcError> {
        let mut inners = Vec::new();
        while let Some(inner) = outer.read().await? {
            inners.push(inner);
        }
        let mut sums = vec![0; inners.len()];
        for (i, inner) in inners.iter_mut().enumerate().rev() {
            while let Some(x) = inner.read().await? {
                sums[i] += u64::from(x);
            }
        }
        Ok(sums)
    }

    fn counters(&self, values: Vec<u64>) -> Sequence<CounterProxy> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            for value in values {
                writer.write(CounterProxy::new(Fixed(value)))?;
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }

    async fn total(&self, mut counters: Sequence<CounterProxy>) -> Result<u64, RpcError> {
        let mut total = 0;
        while let Some(counter) = counters.read().await? {
            total += counter.value().await?;
        }
        Ok(total)
    }

    async fn fill_target(&self, count: u64, target: Target) -> Result<String, RpcError> {
        let Target { label, start, mut into } = target;
        for n in start..start + count {
            into.write(n)?;
            into.flush().await?;
        }
        into.close(None).await?;
        Ok(label)
    }

    async fn open_inbox(&self, label: String) -> Inbox {
        let (into, mut reader) = Sequence::channel();
        let probe = self.probe.clone();
        tokio::spawn(async move {
            let mut sum = 0;
            let result = loop {
                match reader.read().await {
                    Ok(Some(n)) => sum += n,
                    Ok(None) => break Ok(sum),
                    Err(err) => break Err(err),
                }
            };
            *probe.inbox.lock().unwrap() = Some(result);
        });
        Inbox { label, into }
    }

    async fn wrapped(&self, count: u64, label: Option<String>) -> Wrapped {
        if count == 0 {
            return Wrapped::Nothing;
        }
        // Written and closed before the sequence leaves: all of it must still arrive.
        let (mut writer, numbers) = Sequence::channel();
        for n in 0..count {
            writer.write(n).expect("write");
        }
        writer.close(None).await.expect("close");
        match label {
            None => Wrapped::Numbers(numbers),
            Some(label) => Wrapped::Labeled { label, numbers },
        }
    }

    async fn sum_wrapped(&self, wrapped: Wrapped) -> Result<(String, u64), RpcError> {
        let (label, mut numbers) = match wrapped {
            Wrapped::Nothing => return Ok(("nothing".into(), 0)),
            Wrapped::Numbers(numbers) => (String::new(), numbers),
            Wrapped::Labeled { label, numbers } => (label, numbers),
        };
        let mut sum = 0;
        while let Some(n) = numbers.read().await? {
            sum += n;
        }
        Ok((label, sum))
    }

    async fn split(&self, parts: u32, each: u64) -> Vec<Sequence<u64>> {
        (0..parts)
            .map(|p| {
                let (mut writer, reader) = Sequence::channel();
                reader.set_capacity(p + 1);
                tokio::spawn(async move {
                    for n in 0..each {
                        writer.write(u64::from(p) * 1000 + n)?;
                        writer.flush().await?;
                    }
                    writer.close(None).await
                });
                reader
            })
            .collect()
    }

    async fn sum_each(&self, mut inputs: Vec<Sequence<u64>>) -> Result<Vec<u64>, RpcError> {
        let mut sums = vec![0; inputs.len()];
        for (i, input) in inputs.iter_mut().enumerate().rev() {
            while let Some(n) = input.read().await? {
                sums[i] += n;
            }
        }
        Ok(sums)
    }

    fn juggle(&self, mut a: Sequence<u64>, mut b: Sequence<u64>) -> Sequence<u64> {
        let probe = self.probe.clone();
        tokio::spawn(async move {
            loop {
                match a.read().await {
                    Ok(Some(0)) => {
                        a.cancel(Some("a had enough".into()));
                        *probe.a_end.lock().unwrap() = Some("cancelled".into());
                        return;
                    }
                    Ok(Some(n)) => {
                        probe.sum_a.fetch_add(n, Ordering::SeqCst);
                    }
                    end => {
                        *probe.a_end.lock().unwrap() = Some(describe_end(end));
                        return;
                    }
                }
            }
        });
        let probe = self.probe.clone();
        tokio::spawn(async move {
            loop {
                match b.read().await {
                    Ok(Some(n)) => {
                        probe.sum_b.fetch_add(n, Ordering::SeqCst);
                    }
                    end => {
                        *probe.b_end.lock().unwrap() = Some(describe_end(end));
                        probe.b_ended.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        let (mut out, reader) = Sequence::channel();
        let probe = self.probe.clone();
        tokio::spawn(async move {
            for n in 1..=PRODUCE_MAX {
                let result = match out.write(n) {
                    Ok(()) => out.flush().await,
                    Err(err) => Err(err),
                };
                match result {
                    Ok(()) => probe.written.store(n, Ordering::SeqCst),
                    Err(err) => {
                        *probe.error.lock().unwrap() = Some(err);
                        return;
                    }
                }
            }
        });
        reader
    }

    async fn park(&self, reader: Sequence<u64>) {
        self.probe.readers.lock().unwrap().push(reader);
    }

    async fn park_writer(&self, writer: SequenceWriter<u64>) {
        self.probe.writers.lock().unwrap().push(writer);
    }

    fn produce(&self) -> Sequence<u64> {
        let (mut writer, reader) = Sequence::channel();
        let probe = self.probe.clone();
        let task = tokio::spawn(async move {
            for n in 0..PRODUCE_MAX {
                if n == 0 {
                    *probe.first_write.lock().unwrap() = Some(Instant::now());
                }
                if let Err(err) = writer.write(n) {
                    *probe.error.lock().unwrap() = Some(err);
                    return;
                }
                probe.written.store(n + 1, Ordering::SeqCst);
                if let Err(err) = writer.flush().await {
                    *probe.error.lock().unwrap() = Some(err);
                    return;
                }
                probe.flushed.store(n + 1, Ordering::SeqCst);
            }
            let _ = writer.close(None).await;
        });
        *self.probe.task.lock().unwrap() = Some(task);
        reader
    }

    fn ping(&self, x: u32) -> u32 {
        x
    }
}

// ----- helpers ------------------------------------------------------------------

type Conns = Option<(Connection, Connection)>;

async fn lab(via: Via) -> (LabProxy, Arc<Probe>, Conns) {
    let probe = Arc::new(Probe::default());
    let (lab, conns) = via.reach(LabProxy::new(LabImpl { probe: probe.clone() })).await;
    (lab, probe, conns)
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

/// Reads `expected` in order, then the graceful end.
async fn expect_items_then_end<T>(what: &str, reader: &mut Sequence<T>, expected: impl IntoIterator<Item = T>)
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for item in expected {
        assert_eq!(within(what, reader.read()).await.unwrap_or_else(|e| panic!("{what}: {e}")), Some(item), "{what}");
    }
    assert_eq!(within(what, reader.read()).await.unwrap_or_else(|e| panic!("{what}: {e}")), None, "{what}: end");
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

/// Flushes, then writes the next number, until a flush stays pending for
/// `SETTLE`; returns how many items this call wrote.
async fn write_until_stalled(writer: &mut SequenceWriter<u64>, next: &mut u64) -> u64 {
    let start = *next;
    for _ in 0..10_000 {
        match timeout(SETTLE, writer.flush()).await {
            Err(_) => return *next - start,
            Ok(result) => result.expect("flush"),
        }
        writer.write(*next).expect("write");
        *next += 1;
    }
    panic!("the producer never stalled: {} items written", *next - start);
}

// ----- routes: where the two ends of a pair live -------------------------------

/// Where a test's writer and reader live.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Both here: `Sequence::channel()`.
    Channel,
    /// The reader was sent to the lab (in process, or over a connection) and taken back out there.
    ReaderSent(Via),
    /// The writer was sent to the lab and taken back out there.
    WriterSent(Via),
}

const ROUTES: [Route; 5] = [
    Route::Channel,
    Route::ReaderSent(Via::Local),
    Route::ReaderSent(Via::Remote),
    Route::WriterSent(Via::Local),
    Route::WriterSent(Via::Remote),
];

struct Pair {
    writer: SequenceWriter<u64>,
    reader: Sequence<u64>,
    /// The lab holding the far end, and the connections: kept alive for the test.
    keep: Option<(LabProxy, Conns)>,
}

/// A pair with the consumer's capacity set before any end moves.
async fn pair(route: Route, capacity: u32) -> Pair {
    let (writer, reader) = Sequence::<u64>::channel();
    reader.set_capacity(capacity);
    match route {
        Route::Channel => Pair { writer, reader, keep: None },
        Route::ReaderSent(via) => {
            let (lab, probe, conns) = lab(via).await;
            within("park", lab.park(reader)).await.expect("park");
            Pair { writer, reader: probe.take_reader(), keep: Some((lab, conns)) }
        }
        Route::WriterSent(via) => {
            let (lab, probe, conns) = lab(via).await;
            within("park_writer", lab.park_writer(writer)).await.expect("park_writer");
            Pair { writer: probe.take_writer(), reader, keep: Some((lab, conns)) }
        }
    }
}

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

// ----- 2. flow control counts ---------------------------------------------------

/// Capacity C: the producer stalls after about C items; reading k lets it write about k more.
async fn stall_counts(route: Route) {
    const C: u64 = 8;
    const K: u64 = 4;
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, C as u32).await;
    assert_eq!(writer.capacity(), C as u32, "{route:?}: the writer sees the consumer's capacity");
    let mut next = 0;
    let written = write_until_stalled(&mut writer, &mut next).await;
    assert!((C..=C + 1).contains(&written), "{route:?}: {written} items written before the stall (capacity {C})");
    // It stays stuck while nobody reads.
    assert!(timeout(SETTLE * 4, writer.flush()).await.is_err(), "{route:?}: flush completed with the window full");
    for n in 0..K {
        assert_eq!(within("read", reader.read()).await.expect("read"), Some(n), "{route:?}");
    }
    let progress = write_until_stalled(&mut writer, &mut next).await;
    assert!((K - 1..=K + 1).contains(&progress), "{route:?}: {progress} more items after reading {K}");
    // Everything written arrives, in order.
    for n in K..next {
        assert_eq!(within("read", reader.read()).await.expect("read"), Some(n), "{route:?}");
    }
    within("close", writer.close(None)).await.expect("close");
    assert_eq!(within("end", reader.read()).await.expect("end"), None, "{route:?}");
}

#[tokio::test(start_paused = true)]
async fn the_producer_stalls_at_the_consumers_capacity_and_resumes_by_what_was_read() {
    for route in ROUTES {
        stall_counts(route).await;
    }
}

/// Raising the capacity mid-stream (4 to 64) lets the producer run further ahead.
async fn raised_capacity(route: Route) {
    let Pair { mut writer, mut reader, keep: _keep } = pair(route, 4).await;
    let mut next = 0;
    let written = write_until_stalled(&mut writer, &mut next).await;
    assert!((4..=5).contains(&written), "{route:?}: {written} items before the stall at capacity 4");
    reader.set_capacity(64);
    assert_eq!(reader.capacity(), 64, "{route:?}");
    write_until_stalled(&mut writer, &mut next).await;
    assert!((64..=65).contains(&next), "{route:?}: {next} items unread after raising the capacity to 64");
    assert_eq!(writer.capacity(), 64, "{route:?}: the writer sees the new capacity");
    for n in 0..next {
        assert_eq!(within("read", reader.read()).await.expect("read"), Some(n), "{route:?}");
    }
    drop(writer);
    let end = within("end", reader.read()).await;
    expect_kind(&format!("{route:?}: dropped writer"), end, ErrorKind::Aborted);
}

#[tokio::test(start_paused = true)]
async fn raising_the_capacity_mid_stream_lets_the_producer_run_ahead() {
    for route in ROUTES {
        raised_capacity(route).await;
    }
}

/// The same counts for a sequence returned by a method, its capacity set
/// right after the call; the handler's task records its progress.
async fn returned_stall_counts(via: Via) {
    const C: u64 = 8;
    const K: u64 = 4;
    let (lab, probe, _conns) = lab(via).await;
    let mut numbers = lab.produce();
    numbers.set_capacity(C as u32);
    settle().await;
    let (written, flushed) = probe.progress();
    assert!((C..=C + 1).contains(&written), "{via:?}: {written} items written before the stall (capacity {C})");
    assert_eq!(flushed, written - 1, "{via:?}: the last flush must be pending");
    settle().await;
    assert_eq!(probe.progress(), (written, flushed), "{via:?}: the stalled producer moved");
    for n in 0..K {
        assert_eq!(within("read", numbers.read()).await.expect("read"), Some(n), "{via:?}");
    }
    settle().await;
    let (after, flushed) = probe.progress();
    assert!((K - 1..=K + 1).contains(&(after - written)), "{via:?}: {} more after reading {K}", after - written);
    assert_eq!(flushed, after - 1, "{via:?}: the last flush must be pending");
    numbers.set_capacity(64);
    settle().await;
    let (raised, _) = probe.progress();
    assert!((64..=65).contains(&(raised - K)), "{via:?}: {} unread after raising the capacity to 64", raised - K);
    for n in K..raised {
        assert_eq!(within("read", numbers.read()).await.expect("read"), Some(n), "{via:?}");
    }
    assert!(probe.error().is_none(), "{via:?}: {:?}", probe.error());
}

#[tokio::test(start_paused = true)]
async fn a_returned_sequence_holds_its_producer_to_the_window_remote() {
    returned_stall_counts(Via::Remote).await;
}

#[tokio::test(start_paused = true)]
async fn a_returned_sequence_holds_its_producer_to_the_window_local() {
    returned_stall_counts(Via::Local).await;
}

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

// ----- 7. first item after RTT/2 ------------------------------------------------

const ONE_WAY: Duration = Duration::from_millis(50);
const RTT: Duration = Duration::from_millis(100);

#[tokio::test(start_paused = true)]
async fn the_first_item_of_a_returned_sequence_arrives_half_a_round_trip_after_it_is_written() {
    let probe = Arc::new(Probe::default());
    let (a, b) = latency_pipe(ONE_WAY);
    let bootstrap = LabProxy::new(LabImpl { probe: probe.clone() });
    let (_server, _client, lab) = connect_pair(a, b, bootstrap, Config::default()).await.expect("connect");
    let t0 = Instant::now();
    let mut numbers = lab.produce();
    // Set before the call has even reached the server.
    numbers.set_capacity(2);
    numbers.set_batch_size(1);
    assert_eq!((numbers.capacity(), numbers.batch_size()), (2, 1));
    let first = within("first item", numbers.read()).await.expect("first item");
    let arrived = Instant::now();
    assert_eq!(first, Some(0));
    let wrote = probe.first_write.lock().unwrap().expect("the server wrote");
    assert_eq!(wrote - t0, ONE_WAY, "the call reaches the server after half a round trip");
    assert_eq!(arrived - wrote, ONE_WAY, "written to arrived: half a round trip");
    assert_eq!(arrived - t0, RTT, "the first item arrives one round trip after the call");

    // Capacity 2 took effect: with one item read, two are unread, and the
    // server's third flush waits for the client.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.progress(), (3, 2), "(written, flushed) with capacity 2 and one item read");
    assert_eq!(within("read", numbers.read()).await.expect("read"), Some(1));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.progress(), (4, 3), "(written, flushed) with capacity 2 and two items read");
    for n in 2..4 {
        assert_eq!(within("read", numbers.read()).await.expect("read"), Some(n));
    }
    sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.progress(), (6, 5), "(written, flushed) with capacity 2 and four items read");
}
