//! A hostile peer's calls and bookkeeping: calls to capabilities, methods and
//! interfaces that are not there, releases and finishes that do not match,
//! too many outstanding calls, payloads nested too deep, reused question ids,
//! returns never asked for, descriptors naming missing objects, too many
//! imports, unknown disembargoes, and many hostile connections at once.
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

// ----- calls to things that are not there ---------------------------------------

#[tokio::test]
async fn call_to_unknown_capability_gets_unimplemented_and_connection_survives() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(0, Target::Export(77), HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    let err = peer.expect_error(0, Kind::Unimplemented).await;
    assert!(err.message.contains("77"), "{err:?}");
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.assert_usable(1).await;
    // A huge id is just a miss too.
    peer.send(&call(2, Target::Export(u32::MAX), HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    peer.expect_error(2, Kind::Unimplemented).await;
    peer.send(&Msg::Finish { question: 2 }, &[]).await;
    // Pipelining on an answer that never existed.
    peer.send(&call(3, Target::Answer { question: 50, cap: 0 }, HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    let err = peer.expect_error(3, Kind::Unimplemented).await;
    assert!(err.message.contains("50"), "{err:?}");
    peer.send(&Msg::Finish { question: 3 }, &[]).await;
    peer.assert_usable(4).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn call_to_released_capability_gets_error_and_connection_survives() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;

    // Get a capability: the server exports it under some id.
    peer.send(&call(0, BOOTSTRAP, HOSTILE, CHILD_METHOD), &[]).await;
    let (caps, payload) = peer.expect_return(0).await.expect("child() succeeds");
    let [CapDesc::SenderHosted(child)] = caps[..] else { panic!("expected one exported capability, got {caps:?}") };
    assert_eq!(postcard::from_bytes::<u32>(&payload).expect("cap index"), 0);
    assert_ne!(child, 0, "the child must not reuse the bootstrap id");
    peer.send(&Msg::Finish { question: 0 }, &[]).await;

    // It works while held.
    peer.send(&call(1, Target::Export(child), CHILD, PING), &[]).await;
    assert_eq!(peer.expect_value::<u32>(1).await, CHILD_PING);

    // Release exactly the one reference we got; then it is gone.
    peer.send(&Msg::Release { export: child, count: 1 }, &[]).await;
    peer.send(&call(2, Target::Export(child), CHILD, PING), &[]).await;
    let err = peer.expect_error(2, Kind::Unimplemented).await;
    assert!(err.message.contains(&child.to_string()), "{err:?}");
    peer.send(&Msg::Finish { question: 2 }, &[]).await;

    peer.assert_usable(3).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn unknown_method_or_interface_on_bootstrap_gets_error_return() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;

    peer.send(&call(0, BOOTSTRAP, HOSTILE, 99), &[]).await;
    let err = peer.expect_error(0, Kind::Unimplemented).await;
    assert!(err.message.contains("99"), "{err:?}");
    peer.send(&Msg::Finish { question: 0 }, &[]).await;

    peer.send(&call(1, BOOTSTRAP, HOSTILE, u16::MAX), &[]).await;
    peer.expect_error(1, Kind::Unimplemented).await;
    peer.send(&Msg::Finish { question: 1 }, &[]).await;

    let wrong = rpc_core::__private::interface_id("NotHostile");
    peer.send(&call(2, BOOTSTRAP, wrong, ADD), &encode(&(1i64, 2i64))).await;
    let err = peer.expect_error(2, Kind::Unimplemented).await;
    assert!(err.message.contains("Hostile"), "{err:?}");
    peer.send(&Msg::Finish { question: 2 }, &[]).await;

    // Right method, wrong argument bytes: a Serialization error, not a close.
    peer.send(&call(3, BOOTSTRAP, HOSTILE, ADD), &[0xFF]).await;
    peer.expect_error(3, Kind::Serialization).await;
    peer.send(&Msg::Finish { question: 3 }, &[]).await;

    peer.assert_usable(4).await;
    server.assert_healthy().await;
}

// ----- reference counting and question bookkeeping ------------------------------

#[tokio::test]
async fn release_of_more_references_than_held_closes_with_counts() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(0, BOOTSTRAP, HOSTILE, CHILD_METHOD), &[]).await;
    let (caps, _) = peer.expect_return(0).await.expect("child() succeeds");
    let [CapDesc::SenderHosted(child)] = caps[..] else { panic!("expected one exported capability, got {caps:?}") };
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.send(&Msg::Release { export: child, count: 5 }, &[]).await;
    let err = peer.expect_close_with("Release of 5 references").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains("holds 1"), "{err:?}");
    assert!(err.message.contains(&format!("export {child}")), "{err:?}");

    // Releasing the (uncounted) bootstrap, or an id that never existed, closes too.
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Release { export: 0, count: 1 }, &[]).await;
    peer.expect_close_with("Release of 1 references to export 0").await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Release { export: 500, count: 1 }, &[]).await;
    peer.expect_close_with("export 500").await;

    server.assert_healthy().await;
}

#[tokio::test]
async fn finish_for_question_never_asked_closes_but_after_answer_is_fine() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // Asked, answered (no capabilities), then finished: harmless.
    peer.assert_usable(0).await;
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.assert_usable(1).await;
    // Never asked.
    peer.send(&Msg::Finish { question: 5000 }, &[]).await;
    let err = peer.expect_close_with("5000").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains("never asked"), "{err:?}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn finish_on_a_fresh_connection_closes() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Finish { question: 0 }, &[]).await;
    peer.expect_close_with("never asked").await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn too_many_outstanding_calls_get_limit_exceeded() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    // The limit the server advertised is the one it enforces.
    let max = peer.server_hello.limits.max_outstanding_calls;
    assert_eq!(max, 8);
    for q in 0..max {
        peer.send(&call(q, BOOTSTRAP, HOSTILE, SLOW), &encode(&(100 + q,))).await;
    }
    // One more: refused at once, while the others are still waiting.
    peer.send(&call(max, BOOTSTRAP, HOSTILE, SLOW), &encode(&(100 + max,))).await;
    let err = peer.expect_error(max, Kind::LimitExceeded).await;
    assert!(err.message.contains(&max.to_string()), "{err:?}");
    // The refused question was never recorded: finishing it is harmless.
    peer.send(&Msg::Finish { question: max }, &[]).await;

    server.open_gate();
    let mut seen = Vec::new();
    for _ in 0..max {
        match peer.next_message().await {
            Some((Msg::Return { question, result: Ok(caps) }, payload)) => {
                assert!(caps.is_empty());
                let tag: u32 = postcard::from_bytes(&payload).expect("u32");
                assert_eq!(tag, 100 + question, "question {question} was not released by the gate");
                seen.push(question);
            }
            other => panic!("expected a Return of a slow call, got {other:?}"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..max).collect::<Vec<_>>());
    // All answered (without capabilities), so the table is empty again.
    for q in 0..max {
        peer.assert_usable(20 + q).await;
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn errored_answers_count_until_finished() {
    // An error Return is kept until the caller's Finish; a peer that never
    // finishes fills the kept-answer budget (calls in flight + exports) and
    // gets LimitExceeded.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let max = SERVER_LIMITS.max_outstanding_calls + SERVER_LIMITS.max_exports;
    for q in 0..max {
        peer.send(&call(q, BOOTSTRAP, HOSTILE, 99), &[]).await;
        peer.expect_error(q, Kind::Unimplemented).await;
    }
    peer.send(&call(max, BOOTSTRAP, HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    peer.expect_error(max, Kind::LimitExceeded).await;
    for q in 0..max {
        peer.send(&Msg::Finish { question: q }, &[]).await;
    }
    peer.assert_usable(max + 1).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn payload_nested_deeper_than_max_depth_gets_serialization_error() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;

    // Within the limit: decodes and runs.
    peer.send(&call(0, BOOTSTRAP, HOSTILE, DEPTH), &nested_bytes(5)).await;
    assert_eq!(peer.expect_value::<u32>(0).await, 5);

    // 10,000 levels: refused while decoding, without recursing that deep.
    let deep = nested_bytes(10_000);
    assert!(deep.len() < SERVER_LIMITS.max_frame_size as usize);
    peer.send(&call(1, BOOTSTRAP, HOSTILE, DEPTH), &deep).await;
    let err = peer.expect_error(1, Kind::Serialization).await;
    assert!(err.message.contains("cannot decode"), "{err:?}");
    peer.send(&Msg::Finish { question: 1 }, &[]).await;

    // Just over the limit of 16 (the argument tuple is one level, each enum one).
    peer.send(&call(2, BOOTSTRAP, HOSTILE, DEPTH), &nested_bytes(SERVER_LIMITS.max_depth as usize)).await;
    peer.expect_error(2, Kind::Serialization).await;
    peer.send(&Msg::Finish { question: 2 }, &[]).await;

    peer.assert_usable(3).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn question_id_reused_while_active_closes_with_reason() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(3, BOOTSTRAP, HOSTILE, SLOW), &encode(&(1u32,))).await;
    peer.send(&call(3, BOOTSTRAP, HOSTILE, ADD), &encode(&(1i64, 1i64))).await;
    let err = peer.expect_close_with("reused").await;
    assert_eq!(err.kind, Kind::Protocol);
    assert!(err.message.contains("question id 3"), "{err:?}");
    server.open_gate();
    server.assert_healthy().await;
}

#[tokio::test]

async fn question_id_reused_while_active_with_a_capability_closes_with_reason() {
    // As above, but the offending call also names a capability we export.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&call(3, BOOTSTRAP, HOSTILE, SLOW), &encode(&(1u32,))).await;
    let reuse = Msg::Call {
        question: 3,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::SenderHosted(1)],
    };
    peer.send(&reuse, &encode(&(1i64, 1i64))).await;
    let err = peer.expect_close_with("reused").await;
    assert_eq!(err.kind, Kind::Protocol);
    server.open_gate();
    server.assert_healthy().await;
}

#[tokio::test]
async fn question_id_reused_after_finish_is_fine() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    for _ in 0..3 {
        peer.assert_usable(0).await;
    }
    peer.send(&call(1, BOOTSTRAP, HOSTILE, 99), &[]).await;
    peer.expect_error(1, Kind::Unimplemented).await;
    peer.send(&Msg::Finish { question: 1 }, &[]).await;
    peer.assert_usable(1).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn return_for_question_never_asked_closes_with_reason() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Return { question: 3, result: Ok(Vec::new()) }, &encode(&5i64)).await;
    let err = peer.expect_close_with("Return for question 3").await;
    assert_eq!(err.kind, Kind::Protocol);

    let mut peer = raw_client(server.addr).await;
    let fake = WireError { kind: Kind::Application, message: "forged".into(), payload: None };
    peer.send(&Msg::Return { question: 0, result: Err(fake) }, &[]).await;
    peer.expect_close_with("Return for question 0").await;
    server.assert_healthy().await;
}

// ----- other things a hostile peer can name -------------------------------------

#[tokio::test]
async fn capability_descriptors_naming_missing_objects_close() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let bogus = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::ReceiverHosted(42)],
    };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    peer.expect_close_with("export 42").await;

    let mut peer = raw_client(server.addr).await;
    let bogus = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::ReceiverAnswer { question: 9, cap: 0 }],
    };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    peer.expect_close_with("answer 9").await;
    server.assert_healthy().await;
}

#[tokio::test]

async fn bad_descriptor_after_a_good_one_closes() {
    // The first descriptor is a fine import of ours; the second names nothing.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let bogus = Msg::Call {
        question: 0,
        target: BOOTSTRAP,
        interface: HOSTILE,
        method: ADD,
        caps: vec![CapDesc::SenderHosted(5), CapDesc::ReceiverHosted(42)],
    };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    peer.expect_close_with("export 42").await;
    server.assert_healthy().await;
}

#[tokio::test]

async fn too_many_imports_close_with_the_limit() {
    // The server accepts at most max_exports capabilities from us.
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    let caps = (1..=SERVER_LIMITS.max_exports + 1).map(CapDesc::SenderHosted).collect();
    let bogus = Msg::Call { question: 0, target: BOOTSTRAP, interface: HOSTILE, method: ADD, caps };
    peer.send(&bogus, &encode(&(1i64, 1i64))).await;
    let err = peer.expect_close_with(&SERVER_LIMITS.max_exports.to_string()).await;
    assert_eq!(err.kind, Kind::LimitExceeded);
    server.assert_healthy().await;
}

#[tokio::test]
async fn disembargo_and_reply_for_unknown_ids_close() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::DisembargoReply { id: 4 }, &[]).await;
    peer.expect_close_with("unknown embargo 4").await;

    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Disembargo { target: BOOTSTRAP, id: 1 }, &[]).await;
    peer.expect_close_with("Disembargo").await;

    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Disembargo { target: Target::Answer { question: 6, cap: 0 }, id: 1 }, &[]).await;
    peer.expect_close_with("answer 6").await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn ping_is_answered_and_abort_from_peer_ends_quietly() {
    let server = TestServer::start().await;
    let mut peer = raw_client(server.addr).await;
    peer.send(&Msg::Ping(0xDEAD_BEEF), &[]).await;
    let mut ponged = false;
    for _ in 0..MAX_FRAMES {
        let frame = peer.read_frame().await.expect("connection open");
        match postcard::take_from_bytes::<Msg>(&frame).expect("decodes") {
            (Msg::Pong(0xDEAD_BEEF), rest) => {
                assert!(rest.is_empty());
                ponged = true;
                break;
            }
            (Msg::Ping(_), _) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ponged);
    let reason = WireError { kind: Kind::Aborted, message: "bye".into(), payload: None };
    peer.send(&Msg::Abort(reason), &[]).await;
    // The server closes without answering an Abort with its own.
    peer.expect_eof().await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn many_hostile_connections_leave_the_server_serving() {
    let server = TestServer::start().await;
    let hostile: Vec<Vec<u8>> = vec![
        u32::MAX.to_le_bytes().to_vec(),
        framed(&[0xC8, 0x01]),
        framed(&encode(&Msg::Finish { question: 77 })),
        framed(&encode(&Msg::Return { question: 1, result: Ok(Vec::new()) })),
    ];
    for round in 0..5 {
        for bytes in &hostile {
            let mut peer = raw_client(server.addr).await;
            peer.send_bytes(bytes).await;
            let err = peer.expect_close_with("").await;
            assert_eq!(err.kind, Kind::Protocol, "round {round}: {err:?}");
        }
        server.assert_healthy().await;
    }
}
