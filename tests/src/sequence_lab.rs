//! Shared by the `sequence_*` semantics tests: the `Lab` interface (nesting
//! in every position, parking readers and writers, a window-bound producer),
//! its probe, and pairs of ends on every route.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, RpcError, Sequence, SequenceWriter};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::stream_support::{within, Conns, Route, SETTLE};
use crate::Via;

/// Nested sequences must not wait for anything timed: far below the 5 s keepalive interval.
pub const QUICK: Duration = Duration::from_secs(2);
/// Items the `produce` handler writes at most (it stalls on the window long before).
pub const PRODUCE_MAX: u64 = 1_000_000;

// ----- the interface ----------------------------------------------------------

#[eventual]
pub trait Counter {
    fn value(&self) -> u64;
}

pub struct Fixed(pub u64);

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
pub struct Probe {
    pub readers: Mutex<Vec<Sequence<u64>>>,
    pub writers: Mutex<Vec<SequenceWriter<u64>>>,
    /// Items written (write returned Ok) by `produce`'s task or `juggle`'s output.
    pub written: AtomicU64,
    /// Flushes completed by `produce`'s task.
    pub flushed: AtomicU64,
    /// The error that stopped `produce`'s task or `juggle`'s output.
    pub error: Mutex<Option<RpcError>>,
    /// When `produce`'s task wrote its first item.
    pub first_write: Mutex<Option<Instant>>,
    pub task: Mutex<Option<JoinHandle<()>>>,
    pub inbox: Mutex<Option<Result<u64, RpcError>>>,
    pub sum_a: AtomicU64,
    pub sum_b: AtomicU64,
    /// How `juggle`'s `a` and `b` ended.
    pub a_end: Mutex<Option<String>>,
    pub b_end: Mutex<Option<String>>,
    pub b_ended: AtomicBool,
}

impl Probe {
    pub fn take_reader(&self) -> Sequence<u64> {
        self.readers.lock().unwrap().pop().expect("a parked reader")
    }

    pub fn take_writer(&self) -> SequenceWriter<u64> {
        self.writers.lock().unwrap().pop().expect("a parked writer")
    }

    /// (items written, flushes completed) by `produce`'s task.
    pub fn progress(&self) -> (u64, u64) {
        (self.written.load(Ordering::SeqCst), self.flushed.load(Ordering::SeqCst))
    }

    pub fn error(&self) -> Option<RpcError> {
        self.error.lock().unwrap().clone()
    }
}

pub struct LabImpl {
    pub probe: Arc<Probe>,
}

/// How a spawned reader ended, for the probe.
pub fn describe_end(end: Result<Option<u64>, RpcError>) -> String {
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

pub async fn lab(via: Via) -> (LabProxy, Arc<Probe>, Conns) {
    let probe = Arc::new(Probe::default());
    let (lab, conns) = via.reach(LabProxy::new(LabImpl { probe: probe.clone() })).await;
    (lab, probe, conns)
}

/// Reads `expected` in order, then the graceful end.
pub async fn expect_items_then_end<T>(what: &str, reader: &mut Sequence<T>, expected: impl IntoIterator<Item = T>)
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for item in expected {
        assert_eq!(within(what, reader.read()).await.unwrap_or_else(|e| panic!("{what}: {e}")), Some(item), "{what}");
    }
    assert_eq!(within(what, reader.read()).await.unwrap_or_else(|e| panic!("{what}: {e}")), None, "{what}: end");
}

/// Flushes, then writes the next number, until a flush stays pending for
/// `SETTLE`; returns how many items this call wrote.
pub async fn write_until_stalled(writer: &mut SequenceWriter<u64>, next: &mut u64) -> u64 {
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

// ----- pairs of ends -----------------------------------------------------------

pub struct Pair {
    pub writer: SequenceWriter<u64>,
    pub reader: Sequence<u64>,
    /// The lab holding the far end, and the connections: kept alive for the test.
    pub keep: Option<(LabProxy, Conns)>,
}

/// A pair with the consumer's capacity set before any end moves.
pub async fn pair(route: Route, capacity: u32) -> Pair {
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
