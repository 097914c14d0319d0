//! A read served from the consumer's buffer neither yields nor allocates:
//! measured with a counting global allocator (alone in this test binary),
//! for a local pair and for consumers fed over a connection.
//!
//! Allocations are counted per thread, and every test runs on a
//! current-thread runtime, so tests running in parallel do not disturb each
//! other's counts.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker_ref;
use rpc_core::{eventual, Config, Connection, Sequence, SequenceWriter};
use rpc_tests::thread_alloc::{allocations, ThreadCounting};
use rpc_tests::{connect_pair, latency_pipe};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout};

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

/// A plain-old-data item.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct P {
    pub a: u64,
    pub b: u32,
}

fn p(n: u64) -> P {
    P { a: n, b: n as u32 * 3 }
}

const ITEMS: u64 = 100;

/// Polls `reader` once with a no-op waker: it must be ready with item `n`.
fn read_now(reader: &mut Sequence<P>, cx: &mut Context<'_>, n: u64) {
    match reader.poll_read(cx) {
        Poll::Ready(Ok(Some(item))) => assert!(item == p(n), "read {n}: wrong item"),
        Poll::Ready(other) => panic!("read {n}: {other:?}"),
        Poll::Pending => panic!("read {n}: pending with the item buffered (a read from the buffer must not yield)"),
    }
}

/// Reads all `ITEMS` buffered items without ever being pending; returns the
/// allocations made by reads `measured` (1-based, inclusive) and by the rest.
fn read_buffered(reader: &mut Sequence<P>, measured: std::ops::RangeInclusive<u64>) -> (u64, u64) {
    let mut cx = Context::from_waker(noop_waker_ref());
    let (mut inside, mut outside) = (0, 0);
    for n in 0..ITEMS {
        let before = allocations();
        read_now(reader, &mut cx, n);
        let made = allocations() - before;
        if measured.contains(&(n + 1)) {
            inside += made;
        } else {
            outside += made;
        }
    }
    (inside, outside)
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let boxed = std::hint::black_box(Box::new(7u64));
    assert!(allocations() > before, "the counting allocator saw no allocation");
    drop(boxed);
}

#[test]
fn reads_from_a_local_buffer_neither_yield_nor_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (mut writer, mut reader) = Sequence::<P>::channel();
        reader.set_capacity(1024);
        for n in 0..ITEMS {
            writer.write(p(n)).expect("write");
        }
        let (measured, rest) = read_buffered(&mut reader, 2..=ITEMS);
        assert_eq!(measured, 0, "allocations in reads 2..={ITEMS} of a local pair");
        println!("local pair: {measured} allocations in reads 2..={ITEMS}, {rest} in the first read");
    });
}

// ----- over a connection --------------------------------------------------------

#[eventual]
pub trait Park {
    async fn park(&self, reader: Sequence<P>);
    async fn park_writer(&self, writer: SequenceWriter<P>);
}

#[derive(Default)]
struct Lot {
    readers: Mutex<Vec<Sequence<P>>>,
    writers: Mutex<Vec<SequenceWriter<P>>>,
}

struct Parking(Arc<Lot>);

impl Park for Parking {
    async fn park(&self, reader: Sequence<P>) {
        self.0.readers.lock().unwrap().push(reader);
    }

    async fn park_writer(&self, writer: SequenceWriter<P>) {
        self.0.writers.lock().unwrap().push(writer);
    }
}

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `body` on a current-thread runtime with the paused clock.
fn paused(body: impl std::future::Future<Output = ()>) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
    runtime.block_on(body);
}

async fn connected() -> (ParkProxy, Arc<Lot>, (Connection, Connection)) {
    let lot = Arc::new(Lot::default());
    let (a, b) = latency_pipe(Duration::from_millis(1));
    let (server, client, park) =
        connect_pair(a, b, ParkProxy::new(Parking(lot.clone())), Config::default()).await.expect("connect");
    (park, lot, (server, client))
}

#[test]
fn reads_from_a_remote_consumers_buffer_neither_yield_nor_allocate() {
    paused(async {
        let (park, lot, _conns) = connected().await;
        // The reader crosses the connection; its window (1,024) travels with it.
        let (mut writer, reader) = Sequence::<P>::channel();
        reader.set_capacity(1024);
        timeout(LIMIT, park.park(reader)).await.expect("park in time").expect("park");
        let mut reader = lot.readers.lock().unwrap().pop().expect("parked reader");
        for n in 0..ITEMS {
            writer.write(p(n)).expect("write");
        }
        timeout(LIMIT, writer.flush()).await.expect("flush in time").expect("flush");
        sleep(Duration::from_secs(1)).await; // every item has arrived
                                             // Read 100 drains the buffer, which is when the consumer reports its
                                             // progress to the producer: measured apart.
        let (measured, rest) = read_buffered(&mut reader, 2..=ITEMS - 1);
        assert_eq!(measured, 0, "allocations in reads 2..={} of a remote consumer", ITEMS - 1);
        println!("remote consumer: {measured} allocations in reads 2..={}, {rest} in reads 1 and {ITEMS}", ITEMS - 1);
    });
}

#[test]
fn reads_from_a_sequence_whose_writer_was_sent_away_neither_yield_nor_allocate() {
    paused(async {
        let (park, lot, _conns) = connected().await;
        // The writer crosses the connection; the reader stays here, fed by the peer.
        let (writer, mut reader) = Sequence::<P>::channel();
        reader.set_capacity(1024);
        timeout(LIMIT, park.park_writer(writer)).await.expect("park in time").expect("park");
        let mut writer = lot.writers.lock().unwrap().pop().expect("parked writer");
        for n in 0..ITEMS {
            writer.write(p(n)).expect("write");
        }
        timeout(LIMIT, writer.flush()).await.expect("flush in time").expect("flush");
        sleep(Duration::from_secs(1)).await;
        let (measured, rest) = read_buffered(&mut reader, 2..=ITEMS - 1);
        assert_eq!(measured, 0, "allocations in reads 2..={} of a reader fed over a connection", ITEMS - 1);
        println!("sent writer: {measured} allocations in reads 2..={}, {rest} in reads 1 and {ITEMS}", ITEMS - 1);
    });
}
