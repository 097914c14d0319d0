//! What a connection tells its operator: tracing spans per connection, call
//! and stream, close events with their reason, and a metrics snapshot.
//!
//! The tracing tests share one capturing subscriber that keeps what it sees
//! per thread (`rpc_tests::trace_capture`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{eventual, Config, Connection, Sequence};
use rpc_tests::raw_peer::{framed, CLIENT_LIMITS, CLIENT_NONCE};
use rpc_tests::trace_capture::{capture, get};
use rpc_tests::wire_mirror::{encode, WireHello, MAGIC};
use rpc_tests::{connect_pair, latency_pipe};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};
use tracing::Level;

#[eventual]
pub trait Gate {
    /// Reports that it started, then waits for the gate to open.
    async fn wait(&self);
    /// Echoes `data`, logging from inside the handler.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// The numbers `0..n`.
    fn numbers(&self, n: u32) -> Sequence<u32>;
}

#[derive(Clone)]
struct Keeper {
    started: mpsc::UnboundedSender<()>,
    open: Arc<Notify>,
}

impl Gate for Keeper {
    async fn wait(&self) {
        let _ = self.started.send(());
        self.open.notified().await;
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        tracing::info!(len = data.len(), "inside the handler");
        data
    }

    fn numbers(&self, n: u32) -> Sequence<u32> {
        let (mut writer, sequence) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..n {
                writer.write(i)?;
            }
            writer.close(None).await
        });
        sequence
    }
}

fn keeper() -> (Keeper, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (started, rx) = mpsc::unbounded_channel();
    let open = Arc::new(Notify::new());
    (Keeper { started, open: open.clone() }, rx, open)
}

/// A config whose keepalive stays out of the way unless a test wants it.
fn quiet() -> Config {
    Config {
        keepalive_interval: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(120),
        ..Config::default()
    }
}

// ----- tracing ---------------------------------------------------------------

#[tokio::test]
async fn a_handler_runs_in_a_call_span_naming_interface_method_and_question() {
    let capture = capture();
    let (keeper, _, _) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (_server, _client, gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    gate.echo(vec![1, 2, 3]).await.unwrap();
    gate.echo(vec![4]).await.unwrap();

    let inside = capture.with_message("inside the handler");
    assert_eq!(inside.len(), 2, "{inside:?}");
    for event in &inside {
        let call = event.span("rpc.call").unwrap_or_else(|| panic!("no call span around the handler: {event:?}"));
        assert_eq!(get(call, "interface"), Some("Gate"), "{call:?}");
        assert_eq!(get(call, "method"), Some("echo"), "{call:?}");
        // The first call's question id was free again for the second.
        assert_eq!(get(call, "question"), Some("0"), "{call:?}");
        assert!(event.span("rpc.connection").is_some(), "the call span is a child of the connection's: {event:?}");
    }
    let returned = capture.with_message("call returned");
    assert_eq!(returned.len(), 2, "each call's return is an event in its span: {returned:?}");
}

#[tokio::test]
async fn the_caller_sees_each_call_in_a_question_span_until_its_reply() {
    let capture = capture();
    let (keeper, mut started, open) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (_server, client, gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    gate.echo(vec![1]).await.unwrap();
    let waiting = gate.wait();
    started.recv().await.unwrap();
    client.close();
    let err = waiting.await.unwrap_err();
    drop(open);

    let replied = capture.with_message("reply received");
    assert_eq!(replied.len(), 1, "{replied:?}");
    let question = replied[0].span("rpc.question").expect("the reply is an event in the call's span");
    assert_eq!(get(question, "question"), Some("0"), "{question:?}");
    assert_eq!(get(question, "method_id"), Some("1"), "echo is the second method: {question:?}");
    let lost = capture.with_message("call failed: the connection closed");
    assert_eq!(lost.len(), 1, "the pending call's span ends with the close ({err}): {lost:?}");
    assert!(lost[0].span("rpc.question").is_some_and(|q| get(q, "method_id") == Some("0")));
}

#[tokio::test]
async fn a_protocol_violation_closes_with_a_warning_naming_the_reason() {
    let capture = capture();
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let hello = WireHello {
        magic: MAGIC,
        version: rpc_core::PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: CLIENT_NONCE,
    };
    b.write_all(&framed(&encode(&hello))).await.unwrap();
    let server = Connection::builder().config(quiet()).open(a).await.unwrap();
    // A frame whose body is no message at all.
    b.write_all(&framed(&[0xff; 9])).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), server.closed()).await.expect("the server closes");
    assert_eq!(reason.kind(), rpc_core::ErrorKind::Protocol, "{reason}");

    let closes = capture.with_message("connection closed: protocol violation or limit");
    assert_eq!(closes.len(), 1, "{:?}", capture.events());
    let close = &closes[0];
    assert_eq!(close.level, Level::WARN);
    assert!(close.field("reason").is_some_and(|r| r.contains("malformed frame")), "{close:?}");
    assert!(close.span("rpc.connection").is_some(), "{close:?}");
}

#[tokio::test]
async fn an_ordinary_close_is_an_info_event_with_its_reason() {
    let capture = capture();
    let (keeper, _, _) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (server, client, _gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    client.close();
    tokio::time::timeout(Duration::from_secs(10), server.closed()).await.expect("the server sees the close");
    let closes = capture.with_message("connection closed");
    assert_eq!(closes.len(), 2, "one per side: {closes:?}");
    assert!(closes.iter().all(|c| c.level == Level::INFO));
    assert!(closes.iter().any(|c| c.field("reason").is_some_and(|r| r.contains("closed on purpose"))), "{closes:?}");
}

#[tokio::test]
async fn streams_have_spans_that_say_how_they_ended() {
    let capture = capture();
    let (keeper, _, _) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (_server, client, gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    let numbers: Vec<u32> = gate.numbers(5).collect::<Vec<_>>().await.into_iter().map(Result::unwrap).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
    wait_until(|| client.metrics().streams_open == 0).await;

    let opened = capture.with_message("stream opened");
    assert_eq!(opened.len(), 2, "one half per side: {opened:?}");
    let roles: Vec<_> = opened.iter().filter_map(|e| e.span("rpc.stream").and_then(|s| get(s, "role"))).collect();
    assert!(roles.contains(&"producer") && roles.contains(&"consumer"), "{roles:?}");
    let ended = capture.with_message("stream ended");
    let hows: Vec<_> = ended.iter().filter_map(|e| e.field("how")).collect();
    assert!(hows.contains(&"ended here: its end was sent"), "the producer's side: {hows:?}");
    assert!(hows.contains(&"ended by the peer"), "the consumer's side: {hows:?}");
    assert!(ended.iter().all(|e| e.span("rpc.stream").is_some_and(|s| get(s, "kind") == Some("sequence"))));
}

// ----- metrics -----------------------------------------------------------------

/// Yields (on tokio's clock) until `done` holds, at most 1,000 times.
async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_calls_in_flight_and_running() {
    let (keeper, mut started, open) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (server, client, gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    assert_eq!((client.metrics().calls_in_flight, server.metrics().calls_running), (0, 0));

    let waiting = gate.wait();
    started.recv().await.unwrap();
    assert_eq!(client.metrics().calls_in_flight, 1);
    assert_eq!(server.metrics().calls_running, 1);
    assert_eq!(server.metrics().calls_in_flight, 0, "the server asked nothing");

    open.notify_one();
    waiting.await.unwrap();
    assert_eq!(client.metrics().calls_in_flight, 0);
    wait_until(|| server.metrics().calls_running == 0).await;
    assert!(!client.metrics().closed);
    client.close();
    assert!(client.metrics().closed);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_bytes_both_ways() {
    let (keeper, _, _) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (server, client, gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    let (out_before, in_before) = (client.metrics().bytes_out, client.metrics().bytes_in);
    assert!(out_before > 0 && in_before > 0, "the handshake counts");

    let reply = gate.echo(vec![7; 10_000]).await.unwrap();
    assert_eq!(reply.len(), 10_000);
    let client_now = client.metrics();
    assert!(client_now.bytes_out >= out_before + 10_000, "{client_now:?}");
    assert!(client_now.bytes_in >= in_before + 10_000, "{client_now:?}");
    let server_now = server.metrics();
    assert!(server_now.bytes_in >= 10_000 && server_now.bytes_in <= client_now.bytes_out, "{server_now:?}");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_open_streams_until_they_end() {
    let (keeper, _, _) = keeper();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (server, client, gate) = connect_pair(a, b, GateProxy::new(keeper), quiet()).await.unwrap();
    let numbers = gate.numbers(3);
    assert_eq!(client.metrics().streams_open, 1, "the returned sequence's half opens with the call");
    let read: Vec<_> = numbers.collect().await;
    assert_eq!(read.len(), 3);
    wait_until(|| client.metrics().streams_open == 0 && server.metrics().streams_open == 0).await;
}

#[tokio::test(start_paused = true)]
async fn the_last_keepalive_round_trip_is_measured() {
    let config = Config {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let (keeper, _, _) = keeper();
    let (a, b) = latency_pipe(Duration::from_millis(25));
    let (server, client, _gate) = connect_pair(a, b, GateProxy::new(keeper), config).await.unwrap();
    assert_eq!(client.metrics().last_keepalive_rtt, None, "no ping answered yet");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.metrics().last_keepalive_rtt, Some(Duration::from_millis(50)));
    assert_eq!(server.metrics().last_keepalive_rtt, Some(Duration::from_millis(50)));
}

#[tokio::test]
async fn a_served_connection_is_traced_under_its_peer_address() {
    let capture = capture();
    let (keeper, _, _) = keeper();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rpc_core::Server::new(listener).config(quiet()).spawn(move |_| Ok(GateProxy::new(keeper.clone())));
    let client = Connection::connect(addr).await.unwrap();
    let gate: GateProxy = client.bootstrap();
    gate.echo(vec![1]).await.unwrap();
    server.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), client.closed()).await.expect("the client sees the shutdown");

    let inside = capture.with_message("inside the handler");
    let served = inside[0].span("rpc.server.connection").expect("the handler runs under the server's span");
    let peer = get(served, "peer").expect("the span names the peer");
    assert!(peer.starts_with("127.0.0.1:") && *peer != addr.to_string(), "the client's address: {peer}");
    assert!(inside[0].span("rpc.connection").is_some(), "{:?}", inside[0]);
}
