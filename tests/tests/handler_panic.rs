//! A panicking handler fails its own call, nothing more (issue 9, point 3).
//!
//! The caller gets a `HandlerPanicked` error carrying the panic message, the
//! same object keeps serving later calls, and other objects and connections
//! never notice. Each body runs against a local object and through a
//! connection (`Via::BOTH`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{eventual, Bytes, ErrorKind, RpcError, Sequence, SequenceWriter};
use rpc_tests::Via;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The application error of `result_boom`: framework failures convert into it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum FragileError {
    Rpc(ErrorKind, String),
}

impl From<RpcError> for FragileError {
    fn from(err: RpcError) -> Self {
        FragileError::Rpc(err.kind(), err.message().to_owned())
    }
}

#[eventual]
pub trait Fragile {
    /// Panics at once (a plain `fn`).
    fn sync_boom(&self, why: String) -> u32;
    /// Panics at its first poll.
    async fn async_boom_now(&self, why: String) -> u32;
    /// Panics after an await point that really yields.
    async fn async_boom_later(&self, why: String) -> u32;
    /// A `Result` method that panics with a formatted (`String`) payload.
    async fn result_boom(&self, code: u32) -> Result<u32, FragileError>;
    /// Works: counts the calls that reached the object.
    async fn ok(&self) -> u32;
    /// Works after awaiting `ms` of tokio time.
    async fn slow_ok(&self, ms: u64) -> u32;
    /// Returns a sequence; panics before returning it.
    fn sync_items_boom(&self) -> Sequence<u32>;
    /// Returns a sequence; panics after an await, before returning it.
    async fn async_items_boom(&self) -> Sequence<u32>;
    /// Returns a working sequence of `0..n`.
    fn items(&self, n: u32) -> Sequence<u32>;
    /// Returns bytes; panics before returning them.
    fn sync_bytes_boom(&self) -> Bytes;
    /// Returns bytes; panics after an await, before returning them.
    async fn async_bytes_boom(&self) -> Bytes;
    /// The argument's `Deserialize` panics: user code run while dispatching.
    fn touchy_arg(&self, arg: Touchy) -> u32;
    /// The result's `Serialize` panics: user code run while replying.
    fn hot_result(&self) -> Hot;
}

/// Serializes its flag; deserializing `true` panics (on the receiving side).
#[derive(Debug, Serialize)]
pub struct Touchy(bool);

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if bool::deserialize(deserializer)? {
            panic!("Touchy refuses to be deserialized");
        }
        Ok(Touchy(false))
    }
}

/// Serializing it panics (on the replying side).
#[derive(Debug, Deserialize)]
pub struct Hot;

impl Serialize for Hot {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("Hot refuses to be serialized")
    }
}

#[derive(Default)]
struct Object {
    served: AtomicUsize,
}

fn boom(why: &str) -> ! {
    // A `&'static str` payload for the literal case, a `String` otherwise.
    if why == "static" {
        panic!("static panic message");
    }
    panic!("{}", why.to_owned())
}

impl Fragile for Object {
    fn sync_boom(&self, why: String) -> u32 {
        boom(&why)
    }
    async fn async_boom_now(&self, why: String) -> u32 {
        boom(&why)
    }
    async fn async_boom_later(&self, why: String) -> u32 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        boom(&why)
    }
    async fn result_boom(&self, code: u32) -> Result<u32, FragileError> {
        tokio::task::yield_now().await;
        panic!("result handler gave up with code {code}")
    }
    async fn ok(&self) -> u32 {
        self.served.fetch_add(1, Ordering::SeqCst) as u32 + 1
    }
    async fn slow_ok(&self, ms: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.served.fetch_add(1, Ordering::SeqCst) as u32 + 1
    }
    fn sync_items_boom(&self) -> Sequence<u32> {
        panic!("no items today")
    }
    async fn async_items_boom(&self) -> Sequence<u32> {
        tokio::task::yield_now().await;
        panic!("no items after all")
    }
    fn items(&self, n: u32) -> Sequence<u32> {
        let (mut writer, reader): (SequenceWriter<u32>, Sequence<u32>) = Sequence::channel();
        tokio::spawn(async move {
            for i in 0..n {
                writer.write(i).unwrap();
            }
            writer.close(None).await.unwrap();
        });
        reader
    }
    fn sync_bytes_boom(&self) -> Bytes {
        panic!("no bytes today")
    }
    async fn async_bytes_boom(&self) -> Bytes {
        tokio::task::yield_now().await;
        panic!("no bytes after all")
    }
    fn touchy_arg(&self, _arg: Touchy) -> u32 {
        self.served.fetch_add(1, Ordering::SeqCst) as u32 + 1
    }
    fn hot_result(&self) -> Hot {
        Hot
    }
}

/// Bounds a step that must not hang; generous, so a busy machine never trips it.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within 60 s (the caller was left hanging)"),
    }
}

fn assert_panicked(err: &RpcError, method: &str, text: &str) {
    assert_eq!(err.kind(), ErrorKind::HandlerPanicked, "{err}");
    assert!(err.message().contains(text), "the panic message is missing: {err}");
    assert!(err.message().contains(method), "the method name is missing: {err}");
    assert!(err.to_string().starts_with("handler panicked: "), "{err}");
}

async fn read_all(mut seq: Sequence<u32>) -> (Vec<u32>, Option<RpcError>) {
    let mut items = Vec::new();
    while let Some(item) = seq.next().await {
        match item {
            Ok(item) => items.push(item),
            Err(err) => return (items, Some(err)),
        }
    }
    (items, None)
}

#[tokio::test]
async fn a_panic_in_a_sync_handler_fails_only_that_call() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        let err = within("sync_boom", obj.sync_boom("sync handler exploded".into())).await.unwrap_err();
        assert_panicked(&err, "Fragile.sync_boom", "sync handler exploded");
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 1, "{via:?}: the object stopped serving");
        let err = within("sync_boom static", obj.sync_boom("static".into())).await.unwrap_err();
        assert_panicked(&err, "Fragile.sync_boom", "static panic message");
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 2, "{via:?}");
    }
}

#[tokio::test]
async fn a_panic_at_the_first_poll_of_an_async_handler_fails_only_that_call() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        let err = within("async_boom_now", obj.async_boom_now("first poll".into())).await.unwrap_err();
        assert_panicked(&err, "Fragile.async_boom_now", "first poll");
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 1, "{via:?}: the object stopped serving");
    }
}

#[tokio::test]
async fn a_panic_after_an_await_fails_only_that_call() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        let err = within("async_boom_later", obj.async_boom_later("after await".into())).await.unwrap_err();
        assert_panicked(&err, "Fragile.async_boom_later", "after await");
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 1, "{via:?}: the object stopped serving");
        // A `Result` method's caller gets the failure through `From<RpcError>`.
        let err = within("result_boom", obj.result_boom(7)).await.unwrap_err();
        let FragileError::Rpc(kind, message) = err;
        assert_eq!(kind, ErrorKind::HandlerPanicked, "{via:?}: {message}");
        assert!(message.contains("Fragile.result_boom") && message.contains("gave up with code 7"), "{message}");
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 2, "{via:?}");
    }
}

#[tokio::test]
async fn handlers_running_beside_a_panic_finish_normally() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        // Started before the panicking call, still awaiting when it panics.
        let slow = obj.slow_ok(50);
        let bad = obj.async_boom_later("neighbour".into());
        let after = obj.ok();
        let err = within("async_boom_later", bad).await.unwrap_err();
        assert_panicked(&err, "Fragile.async_boom_later", "neighbour");
        let (slow, after) = within("neighbours", futures::future::join(slow, after)).await;
        let mut got = [slow.unwrap(), after.unwrap()];
        got.sort();
        assert_eq!(got, [1, 2], "{via:?}");
    }
}

#[tokio::test]
async fn a_returned_sequence_ends_with_the_panic() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        let (items, end) = within("sync_items_boom", read_all(obj.sync_items_boom())).await;
        assert!(items.is_empty(), "{via:?}");
        assert_panicked(
            &end.expect("the sequence must end with an error"),
            "Fragile.sync_items_boom",
            "no items today",
        );
        let (items, end) = within("async_items_boom", read_all(obj.async_items_boom())).await;
        assert!(items.is_empty(), "{via:?}");
        assert_panicked(&end.expect("the sequence must end with an error"), "Fragile.async_items_boom", "after all");
        // The object still returns working sequences.
        let (items, end) = within("items", read_all(obj.items(5))).await;
        assert_eq!((items, end), (vec![0, 1, 2, 3, 4], None), "{via:?}");
    }
}

#[tokio::test]
async fn a_returned_byte_stream_ends_with_the_panic() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        for (mut bytes, method, text) in [
            (obj.sync_bytes_boom(), "Fragile.sync_bytes_boom", "no bytes today"),
            (obj.async_bytes_boom(), "Fragile.async_bytes_boom", "no bytes after all"),
        ] {
            let err = within(method, bytes.read_chunk()).await.expect_err("the byte stream must end with an error");
            assert_panicked(&err, method, text);
        }
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 1, "{via:?}");
    }
}

#[tokio::test]
async fn a_panic_in_user_serde_code_fails_only_that_call() {
    for via in Via::BOTH {
        let (obj, _conns) = via.reach(FragileProxy::new(Object::default())).await;
        // Decoding the arguments happens in the synchronous part of dispatch.
        let err = within("touchy_arg", obj.touchy_arg(Touchy(true))).await.unwrap_err();
        assert_panicked(&err, "Fragile.touchy_arg", "refuses to be deserialized");
        assert_eq!(within("touchy_arg", obj.touchy_arg(Touchy(false))).await.unwrap(), 1, "{via:?}");
        // Encoding the reply happens in the handler's future.
        let err = within("hot_result", obj.hot_result()).await.unwrap_err();
        assert_panicked(&err, "Fragile.hot_result", "refuses to be serialized");
        assert_eq!(within("ok", obj.ok()).await.unwrap(), 2, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_bootstrap_keeps_serving_and_other_connections_are_unaffected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let server = tokio::spawn(rpc_core::serve(listener, move || {
        counter.fetch_add(1, Ordering::SeqCst);
        FragileProxy::new(Object::default())
    }));
    let first: FragileProxy = within("connect", rpc_core::connect(addr)).await.unwrap();
    let second: FragileProxy = within("connect", rpc_core::connect(addr)).await.unwrap();
    assert_eq!(within("ok", second.ok()).await.unwrap(), 1);

    for round in 1..=3u32 {
        let err = within("sync_boom", first.sync_boom(format!("round {round}"))).await.unwrap_err();
        assert_panicked(&err, "Fragile.sync_boom", &format!("round {round}"));
        let err = within("async_boom_later", first.async_boom_later(format!("later {round}"))).await.unwrap_err();
        assert_panicked(&err, "Fragile.async_boom_later", &format!("later {round}"));
        // The root of the connection still answers...
        assert_eq!(within("ok", first.ok()).await.unwrap(), round);
        // ... and so does the other connection's.
        assert_eq!(within("ok", second.ok()).await.unwrap(), round + 1);
    }
    // A third connection is accepted and served as usual.
    let third: FragileProxy = within("connect", rpc_core::connect(addr)).await.unwrap();
    assert_eq!(within("ok", third.ok()).await.unwrap(), 1);
    assert_eq!(made.load(Ordering::SeqCst), 3);
    server.abort();
}

#[tokio::test]
async fn the_error_travels_as_its_kind_over_the_wire() {
    // Remote only: the kind and message survive serialization unchanged.
    let (obj, _conns) = Via::Remote.reach(FragileProxy::new(Object::default())).await;
    let err = within("async_boom_now", obj.async_boom_now("over the wire".into())).await.unwrap_err();
    let (local, _) = Via::Local.reach(FragileProxy::new(Object::default())).await;
    let expected = within("async_boom_now", local.async_boom_now("over the wire".into())).await.unwrap_err();
    assert_eq!(err, expected);
    assert_eq!(err.to_string(), "handler panicked: Fragile.async_boom_now panicked: over the wire");
}
