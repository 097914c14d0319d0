//! Hostile peers cannot make a server decode a small frame into a huge value,
//! nor hold it with frames they announce and never finish.
//!
//! - The decoded-size budget (`Limits::max_decoded_size`): values whose wire
//!   form is tiny but whose decoded form is not (`None`s of 4 KiB options,
//!   `Vec<()>` declared `u64::MAX` long) fail their call with `LimitExceeded`
//!   at once, and the connection keeps serving; a sequence item over budget
//!   cancels its sequence; legitimate values within budget still decode.
//! - The frame reader (`Config::frame_timeout`): a frame announced and not
//!   finished closes its connection with a stated reason, while other clients
//!   are served. Memory is measured in `hostile_budget_memory.rs`.
//!
//! Every wait is bounded by a timeout.

use std::time::Duration;

use rpc_core::{eventual, Config, ErrorKind, Limits, RpcError, Sequence};
use tokio::time::timeout;

use rpc_tests::{raw_peer::*, wire_mirror::*};

/// 4 KiB inline (serde derives arrays of up to 32 elements, hence the nesting).
pub type Page = [[[u8; 32]; 32]; 4];

#[eventual]
pub trait Budgeted {
    /// Method 0.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Method 1: how many pages are present.
    fn pages(&self, pages: Vec<Option<Page>>) -> u64;
    /// Method 2: how many units.
    fn units(&self, units: Vec<()>) -> u64;
    /// Method 3: the sum.
    fn sum(&self, numbers: Vec<u32>) -> u64;
    /// Method 4: reads an uploaded sequence of unit vectors; their total length.
    async fn count_units(&self, items: Sequence<Vec<()>>) -> Result<u64, RpcError>;
}

struct Server;

impl Budgeted for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    fn pages(&self, pages: Vec<Option<Page>>) -> u64 {
        pages.iter().filter(|p| p.is_some()).count() as u64
    }

    fn units(&self, units: Vec<()>) -> u64 {
        units.len() as u64
    }

    fn sum(&self, numbers: Vec<u32>) -> u64 {
        numbers.iter().map(|&n| u64::from(n)).sum()
    }

    async fn count_units(&self, mut items: Sequence<Vec<()>>) -> Result<u64, RpcError> {
        let mut n = 0;
        while let Some(item) = items.read().await? {
            n += item.len() as u64;
        }
        Ok(n)
    }
}

const BUDGETED: u64 = rpc_core::__private::interface_id("Budgeted");
const ADD: u16 = 0;
const PAGES: u16 = 1;
const UNITS: u16 = 2;
const SERVER: Bootstrap = Bootstrap { interface: BUDGETED, add: ADD };

/// A 1 MiB frame limit and a 4 MiB decoded-size budget.
const LIMITS: Limits = Limits {
    max_frame_size: 1 << 20,
    max_outstanding_calls: 64,
    max_exports: 64,
    max_depth: 64,
    max_decoded_size: 4 << 20,
    max_stream_window: 65_536,
    max_stream_window_bytes: 16 << 20,
};

/// Upper bound for a hostile call to be answered: generous for a debug build
/// on a shared machine; without the budget these calls take minutes or abort.
const PROMPTLY: Duration = Duration::from_secs(10);

fn start(config: Config) -> LoopbackServer {
    LoopbackServer::start(config, || BudgetedProxy::new(Server))
}

/// postcard bytes of a one-argument call's arguments: a sequence declared
/// `len` long followed by `body`.
fn seq_args(len: u64, body: &[u8]) -> Vec<u8> {
    let mut bytes = encode(&len);
    bytes.extend_from_slice(body);
    bytes
}

/// A normal framework client can still use the server.
async fn assert_served(server: &LoopbackServer) {
    server.assert_serving();
    let check = async {
        let client: BudgetedProxy = rpc_core::connect(server.addr).await?;
        client.add(40, 2).await
    };
    let sum = timeout(READ_TIMEOUT, check).await.expect("a normal client timed out").expect("a normal client failed");
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn nones_of_4_kib_options_get_a_limit_exceeded_reply_and_the_connection_serves_on() {
    let server = start(server_config(LIMITS));
    let mut peer = handshake(server.addr, LIMITS, SERVER).await;
    // 100,000 `None`s: 100 KB on the wire, 400 MB decoded.
    let args = seq_args(100_000, &vec![0u8; 100_000]);
    peer.send(&call(1, BOOTSTRAP, BUDGETED, PAGES), &args).await;
    let err = timeout(PROMPTLY, peer.expect_error(1, Kind::LimitExceeded)).await.expect("no prompt reply");
    assert!(err.message.contains(&LIMITS.max_decoded_size.to_string()), "{err:?}");
    assert!(err.message.contains("max_decoded_size"), "{err:?}");
    peer.assert_usable(2).await;
    // A handful of pages and `None`s within the budget decode.
    let mut body = vec![0u8; 10];
    body.push(1);
    body.extend_from_slice(&[7u8; 4096]);
    peer.send(&call(3, BOOTSTRAP, BUDGETED, PAGES), &seq_args(11, &body)).await;
    assert_eq!(peer.expect_value::<u64>(3).await, 1);
    assert_served(&server).await;
}

#[tokio::test]
async fn a_unit_vector_declared_u64_max_long_fails_promptly() {
    let server = start(server_config(LIMITS));
    let mut peer = handshake(server.addr, LIMITS, SERVER).await;
    // Ten bytes of arguments; without the budget a worker spins for ever.
    peer.send(&call(1, BOOTSTRAP, BUDGETED, UNITS), &seq_args(u64::MAX, &[])).await;
    let err = timeout(PROMPTLY, peer.expect_error(1, Kind::LimitExceeded)).await.expect("no prompt reply");
    assert!(err.message.contains(&LIMITS.max_decoded_size.to_string()), "{err:?}");
    peer.assert_usable(2).await;
    // Within the budget, units decode.
    peer.send(&call(3, BOOTSTRAP, BUDGETED, UNITS), &seq_args(1000, &[])).await;
    assert_eq!(peer.expect_value::<u64>(3).await, 1000);
    assert_served(&server).await;
}

#[tokio::test]
async fn the_default_budget_also_ends_a_unit_vector_declared_u64_max_long() {
    let server = start(server_config(Limits::default()));
    let mut peer = handshake(server.addr, Limits::default(), SERVER).await;
    peer.send(&call(1, BOOTSTRAP, BUDGETED, UNITS), &seq_args(u64::MAX, &[])).await;
    let err = timeout(PROMPTLY, peer.expect_error(1, Kind::LimitExceeded)).await.expect("no prompt reply");
    assert!(err.message.contains(&Limits::default().max_decoded_size.to_string()), "{err:?}");
    peer.assert_usable(2).await;
}

#[tokio::test]
async fn a_framework_client_sees_the_peers_budget_as_limit_exceeded() {
    let server = start(server_config(LIMITS));
    let client: BudgetedProxy = timeout(READ_TIMEOUT, rpc_core::connect(server.addr)).await.unwrap().unwrap();
    // Ten million units encode in four bytes and cost nothing here; the server refuses them.
    let err = timeout(PROMPTLY, client.units(vec![(); 10_000_000])).await.expect("no prompt reply").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    // A legitimate large value within budget: 200,000 numbers, about 1 MB decoded.
    let numbers: Vec<u32> = (0..200_000).collect();
    let expected: u64 = numbers.iter().map(|&n| u64::from(n)).sum();
    assert_eq!(timeout(PROMPTLY, client.sum(numbers)).await.unwrap().unwrap(), expected);
    // The same connection goes on serving.
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
}

#[tokio::test]
async fn a_sequence_item_over_budget_cancels_its_sequence_and_the_connection_serves_on() {
    let server = start(server_config(LIMITS));
    let client: BudgetedProxy = timeout(READ_TIMEOUT, rpc_core::connect(server.addr)).await.unwrap().unwrap();
    let (mut writer, items) = Sequence::<Vec<()>>::channel();
    let counting = client.count_units(items);
    writer.write(vec![(); 10]).unwrap();
    writer.write(vec![(); 10_000_000]).unwrap();
    let _ = writer.close(None).await;
    // The handler's read failed with LimitExceeded; it returned that error as
    // its own (an application error of type RpcError).
    let err = timeout(PROMPTLY, counting).await.expect("no prompt reply").unwrap_err();
    assert!(err.message().contains("LimitExceeded"), "{err}");
    assert!(err.message().contains(&format!("limit of {} bytes (max_decoded_size", LIMITS.max_decoded_size)), "{err}");
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
}

// ----- frames announced and not finished ---------------------------------------

/// A 16 MiB frame limit (the default), frames must finish within 300 ms.
fn stalling_config() -> Config {
    Config { frame_timeout: Duration::from_millis(300), ..server_config(Limits::default()) }
}

#[tokio::test]
async fn a_frame_announced_and_not_finished_closes_its_connection_with_a_reason() {
    let server = start(stalling_config());
    let mut peer = handshake(server.addr, Limits::default(), SERVER).await;
    let mut partial = (16u32 << 20).to_le_bytes().to_vec();
    partial.extend_from_slice(&[0u8; 1000]);
    peer.send_bytes(&partial).await;
    // Meanwhile a fresh client is served.
    assert_served(&server).await;
    // Keepalive would wait 60 s; the frame timeout closes it (read bounded by READ_TIMEOUT).
    let err = peer.expect_close_with("did not arrive within the frame timeout").await;
    assert_eq!(err.kind, Kind::Timeout, "{err:?}");
    assert!(err.message.contains(&(16u32 << 20).to_string()), "{err:?}");
    assert!(err.message.contains("1000 bytes did"), "{err:?}");
    assert_served(&server).await;
}

#[tokio::test]
async fn a_stalled_length_prefix_closes_its_connection_too() {
    let server = start(stalling_config());
    let mut peer = handshake(server.addr, Limits::default(), SERVER).await;
    peer.send_bytes(&[1, 0]).await;
    let err = peer.expect_close_with("length prefix did not arrive").await;
    assert_eq!(err.kind, Kind::Timeout, "{err:?}");
}

#[tokio::test]
async fn a_large_frame_that_keeps_arriving_is_read_whole() {
    // A 900 KB argument within the 1 MiB frame limit, sent in slices: the
    // buffer grows as they arrive and the call is answered.
    let server = start(server_config(LIMITS));
    let mut peer = handshake(server.addr, LIMITS, SERVER).await;
    let mut body = encode(&call(1, BOOTSTRAP, BUDGETED, PAGES));
    let mut args = vec![0u8; 200];
    for _ in 0..200 {
        args.push(1);
        args.extend_from_slice(&[9u8; 4096]);
    }
    body.extend_from_slice(&seq_args(400, &args));
    let frame = framed(&body);
    for slice in frame.chunks(100_000) {
        peer.send_bytes(slice).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(timeout(PROMPTLY, peer.expect_value::<u64>(1)).await.expect("no reply"), 200);
}
