//! A hostile peer's streams, frame by frame: items past the window, data for
//! a stream that never existed, a window acknowledging more than was sent, a
//! stream opened with the server's parity; and a well-behaved raw upload.
//!
//! Every frame here is built by the tests (the mirror types of
//! `rpc_tests::wire_mirror` encoded with postcard, or raw bytes), never by
//! rpc-core; the raw client is `rpc_tests::raw_peer`, the server and its
//! interfaces are in `rpc_tests::hostile_server`. Each test ends by checking
//! that a normal framework client can still use the same server, so one
//! hostile connection never takes down the others. Every read is bounded by a
//! timeout and every loop by a count.

use rpc_tests::hostile_server::*;
use rpc_tests::{raw_peer::*, wire_mirror::*};

// ----- streams -----------------------------------------------------------------

/// Uploads a sequence to `count` with the given window, returning nothing.
async fn open_upload(peer: &mut RawPeer, question: u32, capacity: u32) {
    let window = WireWindow { capacity, batch: capacity };
    let caps = vec![CapDesc::SequenceReader { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question, target: BOOTSTRAP, interface: HOSTILE, method: COUNT, caps };
    // The argument tuple holds one capability: index 0 of the table.
    peer.send(&msg, &encode(&(0u32,))).await;
}

fn numbers(n: u64) -> Vec<u8> {
    (0..n).flat_map(|i| encode(&i)).collect()
}

/// The encoded length of each of [`numbers`]' items.
fn number_lens(n: u64) -> Vec<u32> {
    (0..n).map(|i| encode(&i).len() as u32).collect()
}

#[tokio::test]
async fn a_producer_sending_past_the_window_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    open_upload(&mut peer, 0, 4).await;
    // Nothing read or acknowledged yet: five items in one message is past a window of four,
    // however fast the consumer reads. The first such frame closes the connection, so
    // nothing past the window is ever buffered (the frame itself is bounded by the limit).
    peer.send(
        &Msg::StreamData { stream: OUR_STREAM, count: 5, item_caps: vec![], caps: vec![], item_lens: number_lens(5) },
        &numbers(5),
    )
    .await;
    let reason = peer.expect_close_with("past the consumer's window").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn data_for_a_stream_that_never_existed_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(
        &Msg::StreamData { stream: 1000, count: 1, item_caps: vec![], caps: vec![], item_lens: number_lens(1) },
        &numbers(1),
    )
    .await;
    let reason = peer.expect_close_with("does not exist").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_window_acknowledging_more_than_was_sent_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // We consume: the server fills our writer.
    let window = WireWindow { capacity: 2, batch: 1 };
    let caps = vec![CapDesc::SequenceWriter { stream: OUR_STREAM, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOSTILE, method: FILL, caps };
    peer.send(&msg, &encode(&(10u64, 0u32))).await;
    // Two items arrive (the window), then the server waits for us.
    let mut seen = 0;
    while seen < 2 {
        match peer.next_message().await {
            Some((Msg::StreamData { stream, count, .. }, _)) if stream == OUR_STREAM => seen += count,
            other => panic!("expected stream data, got {other:?}"),
        }
    }
    peer.send(&Msg::StreamWindow { stream: OUR_STREAM, read: u64::MAX, window }, &[]).await;
    let reason = peer.expect_close_with("acknowledged").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_stream_opened_with_the_servers_parity_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let window = WireWindow { capacity: 4, batch: 4 };
    let caps = vec![CapDesc::SequenceReader { stream: OUR_STREAM + 1, window }];
    let msg = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOSTILE, method: COUNT, caps };
    peer.send(&msg, &encode(&(0u32,))).await;
    let reason = peer.expect_close_with("not").await;
    assert_eq!(reason.kind, Kind::Protocol);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_well_behaved_raw_upload_is_counted() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    open_upload(&mut peer, 0, 4).await;
    peer.send(
        &Msg::StreamData { stream: OUR_STREAM, count: 3, item_caps: vec![], caps: vec![], item_lens: number_lens(3) },
        &numbers(3),
    )
    .await;
    peer.send(&Msg::StreamEnd { stream: OUR_STREAM, error: None }, &[]).await;
    // Window updates may come first; then the answer.
    for _ in 0..MAX_FRAMES {
        match peer.next_message().await {
            Some((Msg::StreamWindow { .. }, _)) => continue,
            Some((Msg::Return { question: 0, result: Ok(_) }, payload)) => {
                assert_eq!(postcard::from_bytes::<u64>(&payload).unwrap(), 3);
                return server.assert_healthy().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no answer");
}
