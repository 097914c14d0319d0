//! Hostile stream frames that once froze a whole server (issue 10, finding 1):
//! after a valid Hello, a `Call` that passes a `SequenceWriter`, then a
//! `StreamData` for that stream — data sent the wrong way, to a stream the
//! peer should consume — carrying a capability descriptor or a stream end.
//! Handling it imported capabilities and then dropped them under the
//! connection's lock on the error path: a self-deadlock of the server thread.
//!
//! Each case must close the hostile connection with a reason, and the server
//! (its other connections and new ones) must keep serving.

use std::time::Duration;

use rpc_core::{eventual, Limits, RpcError, SequenceWriter};
use tokio::time::timeout;

use rpc_tests::{raw_peer::*, wire_mirror::*};

#[eventual]
pub trait Holder {
    fn add(&self, a: i64, b: i64) -> i64;
    /// Keeps the writer for a while without writing.
    async fn hold(&self, into: SequenceWriter<u64>) -> Result<(), RpcError>;
}

struct Server;

impl Holder for Server {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn hold(&self, into: SequenceWriter<u64>) -> Result<(), RpcError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        into.close(None).await
    }
}

const HOLDER: u64 = rpc_core::__private::interface_id("Holder");
const ADD: u16 = 0;
const HOLD: u16 = 1;

fn limits() -> Limits {
    Limits { max_frame_size: 64 << 10, ..Limits::default() }
}

fn start() -> LoopbackServer {
    LoopbackServer::start(server_config(limits()), || HolderProxy::new(Server))
}

async fn peer(server: &LoopbackServer) -> RawPeer {
    handshake(server.addr, limits(), Bootstrap { interface: HOLDER, add: ADD }).await
}

/// The call that hands the server a writer of our stream.
async fn pass_writer(peer: &mut RawPeer) {
    let window = WireWindow { capacity: 16, batch: 16 };
    let caps = vec![CapDesc::SequenceWriter { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOLDER, method: HOLD, caps };
    peer.send(&msg, &encode(&(0u32,))).await;
}

async fn data_the_wrong_way_is_refused_and_the_server_lives(carried: CapDesc) {
    let server = start();
    // A bystander connection, open before and after.
    let mut bystander = peer(&server).await;
    bystander.assert_usable(0).await;

    let mut hostile = peer(&server).await;
    pass_writer(&mut hostile).await;
    let msg =
        Msg::StreamData { stream: OUR_STREAM, count: 1, item_caps: vec![1], caps: vec![carried], item_lens: vec![1] };
    hostile.send(&msg, &[0]).await;
    let reason = hostile.expect_close_with("which we produce").await;
    assert_eq!(reason.kind, Kind::Protocol, "{reason:?}");

    bystander.assert_usable(1).await;
    server.assert_serving();
    let fresh = async {
        let holder: HolderProxy = rpc_core::connect(server.addr).await?;
        holder.add(40, 2).await
    };
    let sum = timeout(READ_TIMEOUT, fresh).await.expect("a fresh client hung: the server froze").expect("fresh client");
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn stream_data_the_wrong_way_carrying_a_capability_closes_only_that_connection() {
    data_the_wrong_way_is_refused_and_the_server_lives(CapDesc::SenderHosted(7)).await;
}

#[tokio::test]
async fn stream_data_the_wrong_way_carrying_a_stream_writer_closes_only_that_connection() {
    let window = WireWindow { capacity: 4, batch: 4 };
    data_the_wrong_way_is_refused_and_the_server_lives(CapDesc::SequenceWriter { stream: OUR_STREAM + 2, window })
        .await;
}

#[tokio::test]
async fn stream_data_the_wrong_way_carrying_a_stream_reader_closes_only_that_connection() {
    let window = WireWindow { capacity: 4, batch: 4 };
    data_the_wrong_way_is_refused_and_the_server_lives(CapDesc::SequenceReader { stream: OUR_STREAM + 2, window })
        .await;
}

/// The exact 36-byte input the fuzzer found, byte for byte after the Hello.
#[tokio::test]
async fn the_recorded_36_byte_freeze_input_closes_only_that_connection() {
    let server = start();
    let mut hostile = peer(&server).await;
    let window = WireWindow { capacity: 16, batch: 16 };
    let call = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOLDER,
        method: HOLD,
        caps: vec![CapDesc::SequenceWriter { stream: OUR_STREAM, window }],
    };
    let data = Msg::StreamData {
        stream: OUR_STREAM,
        count: 1,
        item_caps: vec![1],
        caps: vec![CapDesc::SenderHosted(0)],
        item_lens: vec![1],
    };
    let mut bytes = framed(&[encode(&call), encode(&(0u32,))].concat());
    bytes.extend(framed(&[encode(&data), vec![0]].concat()));
    assert!(bytes.len() <= 48, "a small input: {} bytes", bytes.len());
    hostile.send_bytes(&bytes).await;
    hostile.expect_close_with("which we produce").await;
    let fresh = async {
        let holder: HolderProxy = rpc_core::connect(server.addr).await?;
        holder.add(1, 2).await
    };
    assert_eq!(timeout(READ_TIMEOUT, fresh).await.expect("the server froze").expect("fresh client"), 3);
}
