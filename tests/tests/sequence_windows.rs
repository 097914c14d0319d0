//! Sequence flow control, counted exactly: the producer stalls at the
//! consumer's capacity and resumes by what was read, a raised capacity lets it
//! run ahead, a returned sequence holds its producer to the window, and the
//! first item of a returned sequence arrives half a round trip after it is
//! written.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact and the
//! elapsed virtual time shows whether anything waited for a timer. Every wait
//! is bounded. The `Lab` interface and the pairs of ends are in
//! `rpc_tests::sequence_lab`.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::{Config, ErrorKind};
use rpc_tests::sequence_lab::*;
use rpc_tests::stream_support::*;
use rpc_tests::{connect_pair, latency_pipe, Via};
use tokio::time::{sleep, timeout, Instant};

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
