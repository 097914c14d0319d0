//! What hostile peers make a server allocate, measured with a counting global
//! allocator (alone in this test binary; the tests take turns, since the
//! count is process-wide and the server runs in this process).
//!
//! - 100,000 `None`s of 4 KiB options in a 100 KB call: without the
//!   decoded-size budget the server allocated about 400 MB (a 1 MB frame
//!   asked for 4.28 GB and aborted the process).
//! - 200 connections that announce 16 MiB frames and stall: without growing
//!   the read buffer as bytes arrive, each reserved 16 MiB (3.2 GB).
//! - Connections that send part of a large frame share a process-wide budget
//!   for partly read frames.
//!
//! Every wait is bounded by a timeout.

use std::time::Duration;

use futures::future::join_all;
use rpc_core::{eventual, Config, Limits};
use tokio::sync::Mutex;
use tokio::time::timeout;

use rpc_tests::peak_alloc::{peak, reset_peak, PeakCounting};
use rpc_tests::{raw_peer::*, wire_mirror::*};

// ----- the counting allocator ------------------------------------------------------

#[global_allocator]
static GLOBAL: PeakCounting = PeakCounting;

/// Bytes allocated now, and the peak since the last call (which resets it).
fn allocated_and_reset_peak() -> usize {
    reset_peak()
}

const MIB: usize = 1 << 20;

/// The tests take turns: the count is process-wide.
static TURN: Mutex<()> = Mutex::const_new(());

// ----- the server ------------------------------------------------------------------

/// 4 KiB inline.
pub type Page = [[[u8; 32]; 32]; 4];

#[eventual]
pub trait Paged {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: how many pages are present.
    fn pages(&self, pages: Vec<Option<Page>>) -> u64;
}

struct Server;

impl Paged for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    fn pages(&self, pages: Vec<Option<Page>>) -> u64 {
        pages.iter().filter(|p| p.is_some()).count() as u64
    }
}

const PAGED: u64 = rpc_core::__private::interface_id("Paged");
const PAGES: u16 = 1;
const SERVER: Bootstrap = Bootstrap { interface: PAGED, add: 0 };

fn start(config: Config) -> LoopbackServer {
    LoopbackServer::start(config, || PagedProxy::new(Server))
}

async fn assert_served(server: &LoopbackServer) {
    server.assert_serving();
    let check = async {
        let client: PagedProxy = rpc_core::connect(server.addr).await?;
        client.add(40, 2).await
    };
    let sum = timeout(READ_TIMEOUT, check).await.expect("a normal client timed out").expect("a normal client failed");
    assert_eq!(sum, 42);
}

// ----- the tests ---------------------------------------------------------------------

#[tokio::test]
async fn nones_of_4_kib_options_do_not_grow_the_servers_memory() {
    let _turn = TURN.lock().await;
    let limits = Limits { max_frame_size: MIB as u32, max_decoded_size: 4 * MIB as u64, ..Limits::default() };
    let server = start(server_config(limits));
    let mut peer = handshake(server.addr, limits, SERVER).await;
    peer.assert_usable(1).await;
    let mut args = encode(&100_000u64);
    args.extend_from_slice(&vec![0u8; 100_000]);

    let before = allocated_and_reset_peak();
    peer.send(&call(2, BOOTSTRAP, PAGED, PAGES), &args).await;
    let err = timeout(Duration::from_secs(10), peer.expect_error(2, Kind::LimitExceeded)).await.expect("no reply");
    let grown = peak().saturating_sub(before);
    eprintln!("peak growth while refusing 100,000 4 KiB Nones: {} KiB ({err:?})", grown >> 10);
    // The budget is 4 MiB; a vector's spare capacity may double it, and while
    // it reallocates the old and new buffers both exist (3x). Without the
    // budget: ~400 MB.
    assert!(grown < 3 * 4 * MIB + 2 * MIB, "the server grew by {grown} bytes");
    peer.assert_usable(3).await;
}

/// Connects `n` raw peers and makes each announce a 16 MiB frame, sending
/// `body` bytes of it.
async fn stalled_peers(server: &LoopbackServer, limits: Limits, n: usize, body: usize) -> Vec<RawPeer> {
    let mut start = (16u32 << 20).to_le_bytes().to_vec();
    start.resize(4 + body, 0);
    let connecting = (0..n).map(|_| async {
        let mut peer = handshake(server.addr, limits, SERVER).await;
        peer.send_bytes(&start).await;
        peer
    });
    join_all(connecting).await
}

#[tokio::test]
async fn two_hundred_stalled_16_mib_frames_reserve_nothing_and_are_closed_by_the_frame_timeout() {
    let _turn = TURN.lock().await;
    let limits = Limits::default();
    let config = Config { frame_timeout: Duration::from_secs(3), ..server_config(limits) };
    let server = start(config);
    assert_served(&server).await;

    let before = allocated_and_reset_peak();
    let mut peers = stalled_peers(&server, limits, 200, 1000).await;
    // Meanwhile a fresh client is served.
    assert_served(&server).await;
    let grown = peak().saturating_sub(before);
    eprintln!("peak growth with 200 stalled 16 MiB frames: {} KiB", grown >> 10);
    // Without growing as bytes arrive: 200 x 16 MiB = 3.2 GB.
    assert!(grown < 64 * MIB, "the server grew by {grown} bytes");

    let closes = peers.iter_mut().map(|peer| peer.expect_close_with("did not arrive within the frame timeout"));
    let reasons = timeout(Duration::from_secs(20), join_all(closes)).await.expect("the stalled peers were not closed");
    assert!(reasons.iter().all(|r| r.kind == Kind::Timeout && r.message.contains("16777216")), "{:?}", reasons[0]);
    assert_served(&server).await;
}

#[tokio::test]
async fn partly_sent_large_frames_share_the_process_wide_budget() {
    let _turn = TURN.lock().await;
    let limits = Limits::default();
    let budget = 4 * MIB;
    let config =
        Config { frame_timeout: Duration::from_secs(3), partial_frames_budget: budget, ..server_config(limits) };
    let server = start(config);
    assert_served(&server).await;

    // 20 peers each send 2 MiB of a 16 MiB frame: 40 MiB if every buffer grew.
    let before = allocated_and_reset_peak();
    let mut peers = stalled_peers(&server, limits, 20, 2 * MIB).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Small calls do not need the budget: a fresh client is served.
    assert_served(&server).await;
    let grown = peak().saturating_sub(before);
    eprintln!("peak growth with 20 peers sending 2 MiB of 16 MiB frames, 4 MiB budget: {} KiB", grown >> 10);
    // The peers' own 2 MiB buffers (20 x 2 MiB, ours) are freed once sent;
    // the server holds the budget plus a read chunk or so per connection.
    assert!(grown < 20 * 2 * MIB + budget + 20 * MIB, "grew by {grown} bytes");
    let held = allocated_and_reset_peak().saturating_sub(before);
    eprintln!("held after the sends: {} KiB", held >> 10);
    assert!(held < budget + 20 * MIB, "the server holds {held} bytes");

    let closes = peers.iter_mut().map(|peer| peer.expect_close_with("did not arrive within the frame timeout"));
    timeout(Duration::from_secs(20), join_all(closes)).await.expect("the stalled peers were not closed");
    assert_served(&server).await;
}
