//! Calls a connection's reader delivers to local objects are started by the
//! reader itself when it runs on a current-thread runtime, once it has
//! handled every frame that arrived (see `rpc-core/src/cap/local.rs`). User
//! code still runs as if each object had its own task: the calls a handler
//! (or a destructor) makes go to their objects' tasks, so it may even block
//! its thread on one. On a multi-thread runtime the reader leaves every call
//! to the objects' tasks.
//!
//! The serving side of most pairs here runs on a current-thread runtime of
//! its own thread ([`pair_on_reader_thread`]), the test's multi-thread
//! runtime on the others: so a reader starting calls races the objects'
//! serving tasks for real.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Capability, Config, Connection, RpcError};
use rpc_tests::{connect_pair, DropCounter, DropToken};
use tokio::runtime::Handle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::Notify;
use tokio::time::timeout;

/// The serving side's thread of a [`pair_on_reader_thread`]: stops its
/// runtime (and with it the connection's tasks there) when dropped.
struct ReaderThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A pair over an in-memory pipe whose serving side (bootstrap `cap`) runs
/// on a current-thread runtime of a thread of its own, and whose client side
/// runs on the caller's runtime. Returns the thread, both connections and
/// the client's proxy for `cap`.
async fn pair_on_reader_thread<C: Capability>(cap: C, buffer: usize) -> (ReaderThread, Connection, Connection, C) {
    let (a, b) = tokio::io::duplex(buffer);
    let (opened, server) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let _ = opened.send(Connection::builder().bootstrap(cap).open(a).await);
            let _ = stopped.await;
        });
    });
    let thread = ReaderThread { stop: Some(stop), thread: Some(thread) };
    let client = timeout(LIMIT, Connection::builder().open(b)).await.expect("open timed out").expect("client");
    let server = timeout(LIMIT, server).await.expect("open timed out").expect("server thread").expect("server");
    let remote = client.bootstrap();
    (thread, server, client, remote)
}

/// Runs `promise` to its end on `runtime` while this thread blocks for it
/// (bounded): how a handler or destructor on a reader's thread can wait for
/// a call without that thread's runtime. `None` if it fails or takes too long.
fn block_on_elsewhere<T: Send + 'static>(
    runtime: &Handle,
    promise: impl Future<Output = Result<T, RpcError>> + Send + 'static,
) -> Option<T> {
    let (done, result) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = done.send(promise.await);
    });
    result.recv_timeout(LIMIT).ok()?.ok()
}

#[eventual]
pub trait Front {
    /// Asks `Back` for `2 * n`, blocking this thread until it answers.
    fn relay(&self, n: u32) -> u32;
}

#[eventual]
pub trait Back {
    async fn double(&self, n: u32) -> u32;
}

struct Relay {
    back: BackProxy,
    /// Where `back`'s calls are awaited while the handler blocks.
    elsewhere: Handle,
}

impl Front for Relay {
    fn relay(&self, n: u32) -> u32 {
        // The call is made here, in the handler: it must go to `back`'s own
        // task, not wait for the reader this handler blocks.
        let doubled = self.back.double(n);
        block_on_elsewhere(&self.elsewhere, doubled).unwrap_or(0)
    }
}

struct Doubler;

impl Back for Doubler {
    async fn double(&self, n: u32) -> u32 {
        2 * n
    }
}

/// The reader starts `relay`, whose handler blocks its thread on a call to
/// a local neighbour. Were that call collected for the reader too, it would
/// wait for the blocked handler to return: it must go to the neighbour's own
/// task (here on the test's runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_started_by_the_reader_can_block_on_a_local_call() {
    let back = BackProxy::new(Doubler);
    // Its serving task starts here, away from the reader's thread.
    assert_eq!(back.double(0).await.unwrap(), 0);
    let front = FrontProxy::new(Relay { back, elsewhere: Handle::current() });
    let (_thread, _server, _client, front) = pair_on_reader_thread(front, 1 << 16).await;
    for n in 1..=3 {
        assert_eq!(timeout(LIMIT * 2, front.relay(n)).await.expect("relay timed out").unwrap(), 2 * n, "call {n}");
    }
}

// ----- the serving task ends when the object closes under a reader's start -----------

#[eventual]
pub trait Gate {
    /// Waits a moment: started by the reader, it is handed to the object's
    /// serving task (which is spawned for it).
    async fn settle(&self);
    /// Tells the test it started, then holds the starting thread for a while.
    fn hold(&self) -> u32;
}

#[eventual]
pub trait Door {
    /// Gives its gate away (once).
    fn gate(&self) -> Option<GateProxy>;
}

struct Held {
    entered: UnboundedSender<()>,
    _drop: DropToken,
}

impl Gate for Held {
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    fn hold(&self) -> u32 {
        let _ = self.entered.send(());
        std::thread::sleep(HOLD);
        1
    }
}

struct Keeper(Mutex<Option<GateProxy>>);

impl Door for Keeper {
    fn gate(&self) -> Option<GateProxy> {
        self.0.lock().unwrap().take()
    }
}

/// How long `Gate::hold` keeps its thread.
const HOLD: Duration = Duration::from_millis(300);

/// Waits, bounded by real time, until `drops` counted `n`.
async fn dropped_within(drops: &DropCounter, n: usize, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while drops.count() < n {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// The object's last handle goes (its connection closes) while the reader is
/// starting one of its calls; its serving task, woken by the close, looks
/// while the reader still holds the starting token. Once the reader lets the
/// token go the task must look again, end, and drop the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn an_object_closed_while_a_reader_starts_its_call_is_still_dropped() {
    let drops = DropCounter::default();
    let (entered, mut entered_rx) = unbounded_channel();
    let gate = GateProxy::new(Held { entered, _drop: drops.token() });
    // Its serving task starts here, away from the reader's thread.
    timeout(LIMIT, gate.settle()).await.expect("settle timed out").expect("settle");
    let door = DoorProxy::new(Keeper(Mutex::new(Some(gate))));
    let (_thread, server, _client, door) = pair_on_reader_thread(door, 1 << 16).await;
    let gate = door.gate().await.expect("gate").expect("the gate, once");
    // Through the reader too, handed to the serving task (idle after).
    timeout(LIMIT, gate.settle()).await.expect("settle timed out").expect("settle");
    let held = tokio::spawn(async move { gate.hold().await });
    timeout(LIMIT, entered_rx.recv()).await.expect("hold never started");
    // The server's export was the gate's last handle.
    server.close();
    assert!(
        dropped_within(&drops, 1, HOLD + LIMIT).await,
        "the gate was never dropped: its serving task missed the close"
    );
    drop(held);
}

const LIMIT: Duration = Duration::from_secs(2);

// ----- one starter at a time ---------------------------------------------------------

type Log = Arc<Mutex<Vec<(u32, &'static str)>>>;

#[eventual]
pub trait Order {
    /// Records its start, holds its thread for `ms`, records its end.
    fn slow(&self, tag: u32, ms: u64);
    /// Records its start.
    fn quick(&self, tag: u32);
}

struct Orderly {
    log: Log,
    entered: UnboundedSender<u32>,
}

impl Order for Orderly {
    fn slow(&self, tag: u32, ms: u64) {
        self.log.lock().unwrap().push((tag, "start"));
        let _ = self.entered.send(tag);
        std::thread::sleep(Duration::from_millis(ms));
        self.log.lock().unwrap().push((tag, "end"));
    }
    fn quick(&self, tag: u32) {
        self.log.lock().unwrap().push((tag, "start"));
    }
}

/// A call starts only once the call before it has been polled once, whoever
/// starts each: a reader holds the starting token while a task's call
/// arrives (the serving task must leave it to the reader), and the serving
/// task holds it while a peer's call arrives (the reader must leave it to
/// the task).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_and_the_serving_task_never_start_calls_at_once() {
    for reader_first in [true, false] {
        let log = Log::default();
        let (entered, mut entered_rx) = unbounded_channel();
        let local = OrderProxy::new(Orderly { log: log.clone(), entered });
        let (_thread, _server, _client, remote) = pair_on_reader_thread(local.clone(), 1 << 16).await;
        // Both paths warm: the serving task exists (on the test's runtime),
        // the peer's calls flow.
        local.quick(0).await.expect("warm local");
        remote.quick(0).await.expect("warm remote");
        log.lock().unwrap().clear();
        let (first, second) =
            if reader_first { (remote.clone(), local.clone()) } else { (local.clone(), remote.clone()) };
        let slow = tokio::spawn(async move { first.slow(1, 200).await });
        assert_eq!(timeout(LIMIT, entered_rx.recv()).await.expect("slow never started"), Some(1));
        timeout(LIMIT, second.quick(2)).await.expect("quick timed out").expect("quick");
        timeout(LIMIT, slow).await.expect("slow timed out").expect("slow task").expect("slow");
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [(1, "start"), (1, "end"), (2, "start")],
            "reader first: {reader_first}: a call started while the one before it ran its first poll"
        );
    }
}

// ----- handlers a reader hands over ---------------------------------------------------

#[eventual]
pub trait Waiter {
    /// Waits a moment (so the serving task is spawned for it).
    async fn settle(&self);
    /// Tells the test it started, then waits for `go`.
    async fn wait(&self) -> u32;
    /// Tells the test it started, then waits forever; its future holds a drop token.
    async fn park(&self) -> u32;
}

struct Patient {
    entered: UnboundedSender<()>,
    go: Arc<Notify>,
    drops: DropCounter,
}

impl Waiter for Patient {
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    async fn wait(&self) -> u32 {
        let _ = self.entered.send(());
        self.go.notified().await;
        5
    }
    async fn park(&self) -> u32 {
        let _token = self.drops.token();
        let _ = self.entered.send(());
        std::future::pending::<()>().await;
        0
    }
}

/// A handler the reader started waits, its first poll made with a waker
/// that wakes nothing: the object's serving task (idle, spawned earlier)
/// must adopt it and poll it again, or what it waits for never wakes it.
/// And once it runs there, the caller dropping its promise aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_a_reader_starts_that_wait_are_adopted_and_can_be_cancelled() {
    let (entered, mut entered_rx) = unbounded_channel();
    let go = Arc::new(Notify::new());
    let drops = DropCounter::default();
    let local = WaiterProxy::new(Patient { entered, go: go.clone(), drops: drops.clone() });
    let (_thread, _server, _client, remote) = pair_on_reader_thread(local, 1 << 16).await;
    timeout(LIMIT, remote.settle()).await.expect("settle timed out").expect("settle");
    // The serving task is idle now.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let waiting = remote.wait();
    timeout(LIMIT, entered_rx.recv()).await.expect("wait never started");
    // Well after the reader handed it over.
    tokio::time::sleep(Duration::from_millis(20)).await;
    go.notify_one();
    assert_eq!(timeout(LIMIT, waiting).await.expect("a handed-over handler was never polled again").unwrap(), 5);

    let parked = remote.park();
    timeout(LIMIT, entered_rx.recv()).await.expect("park never started");
    drop(parked);
    assert!(dropped_within(&drops, 1, LIMIT).await, "a cancelled handler the reader started was not aborted");
}

// ----- a handler that blocks on its own connection ------------------------------------

#[eventual]
pub trait Asker {
    /// Asks `answerer` (the caller's object, across the same connection),
    /// blocking this thread until it answers; 0 if it does not in time.
    fn ask(&self, answerer: AnswererProxy) -> u32;
}

#[eventual]
pub trait Answerer {
    fn answer(&self) -> u32;
}

struct Blocking;

impl Asker for Blocking {
    fn ask(&self, answerer: AnswererProxy) -> u32 {
        let answer = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(timeout(LIMIT, answerer.answer()))
        });
        match answer {
            Ok(Ok(n)) => n,
            _ => 0,
        }
    }
}

struct Seven;

impl Answerer for Seven {
    fn answer(&self) -> u32 {
        7
    }
}

/// On a multi-thread runtime a handler may block its thread on a call back
/// to its caller over the same connection: the answer comes in through that
/// connection's reader, so the reader must not be the thread it blocks. It
/// is not: there the reader leaves every call to the objects' tasks. (Were
/// the reader to start this call, it would wait for itself until the
/// handler's timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime_a_handler_can_block_on_a_call_over_its_connection() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (_server, _client, asker) =
        connect_pair(a, b, AskerProxy::new(Blocking), Config::default()).await.expect("connect");
    let answered = timeout(LIMIT * 2, asker.ask(AnswererProxy::new(Seven))).await.expect("ask timed out").expect("ask");
    assert_eq!(answered, 7, "the callback's answer never reached the blocked handler");
}

// ----- an object dropped by the reader ------------------------------------------------

struct Farewell {
    back: BackProxy,
    said: Arc<Mutex<Option<u32>>>,
    elsewhere: Handle,
}

impl Front for Farewell {
    fn relay(&self, n: u32) -> u32 {
        n
    }
}

impl Drop for Farewell {
    fn drop(&mut self) {
        let doubled = self.back.double(21);
        *self.said.lock().unwrap() = Some(block_on_elsewhere(&self.elsewhere, doubled).unwrap_or(0));
    }
}

#[eventual]
pub trait Shop {
    /// Gives its front away (once).
    fn front(&self) -> Option<FrontProxy>;
}

struct OneFront(Mutex<Option<FrontProxy>>);

impl Shop for OneFront {
    fn front(&self) -> Option<FrontProxy> {
        self.0.lock().unwrap().take()
    }
}

/// An object whose calls all finished where the reader started them has no
/// serving task: the peer's release drops it on the reader's thread. Its
/// destructor is user code and may block on a local call, as a handler may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_reader_drops_can_block_on_a_local_call_as_it_goes() {
    let said = Arc::new(Mutex::new(None));
    let back = BackProxy::new(Doubler);
    // Its serving task starts here, away from the reader's thread.
    assert_eq!(back.double(0).await.unwrap(), 0);
    let front = FrontProxy::new(Farewell { back, said: said.clone(), elsewhere: Handle::current() });
    let shop = ShopProxy::new(OneFront(Mutex::new(Some(front))));
    let (_thread, _server, _client, shop) = pair_on_reader_thread(shop, 1 << 16).await;
    let front = shop.front().await.expect("front").expect("the front, once");
    assert_eq!(front.relay(3).await.expect("relay"), 3);
    drop(front);
    let deadline = std::time::Instant::now() + LIMIT * 2;
    loop {
        if let Some(answer) = *said.lock().unwrap() {
            assert_eq!(answer, 42, "the call the destructor blocked on never answered");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the object's destructor never got its answer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Brittle;

impl Front for Brittle {
    fn relay(&self, n: u32) -> u32 {
        n
    }
}

impl Drop for Brittle {
    fn drop(&mut self) {
        panic!("a destructor that panics (on purpose)");
    }
}

/// An object whose destructor panics, dropped in the reader as the peer
/// releases it (its one call finished where the reader started it): the
/// panic takes down nothing else, so the connection keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_destructor_panics_in_the_reader_leaves_the_connection_up() {
    let shop = ShopProxy::new(OneFront(Mutex::new(Some(FrontProxy::new(Brittle)))));
    let (_thread, _server, _client, shop) = pair_on_reader_thread(shop, 1 << 16).await;
    let front = shop.front().await.expect("front").expect("the front, once");
    assert_eq!(front.relay(3).await.expect("relay"), 3);
    drop(front);
    for round in 0..3 {
        let again = timeout(LIMIT, shop.front()).await;
        assert!(matches!(again, Ok(Ok(None))), "round {round}: the connection stopped answering: {again:?}");
    }
}

// ----- E-order across readers and tasks -----------------------------------------------

#[eventual]
pub trait Journal {
    /// Records `(source, seq)` as it starts, then yields.
    async fn note(&self, source: u32, seq: u32);
}

struct Notes(Arc<Mutex<Vec<(u32, u32)>>>);

impl Journal for Notes {
    async fn note(&self, source: u32, seq: u32) {
        self.0.lock().unwrap().push((source, seq));
        tokio::task::yield_now().await;
    }
}

/// One object, called at once by two peers (two connections, their readers
/// on two threads of their own) and two local tasks: each source's
/// calls start in the order it made them (in rounds: a broken order shows
/// only now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_from_two_connections_and_local_tasks_start_in_each_sources_order() {
    for round in 0..10 {
        journal_round(round).await;
    }
}

async fn journal_round(round: u32) {
    const CALLS: u32 = 300;
    let notes = Arc::new(Mutex::new(Vec::new()));
    let local = JournalProxy::new(Notes(notes.clone()));
    let mut sources = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let (thread, server, client, remote) = pair_on_reader_thread(local.clone(), 1 << 20).await;
        conns.push((thread, server, client));
        sources.push(remote);
    }
    sources.push(local.clone());
    sources.push(local);
    let tasks: Vec<_> = sources
        .into_iter()
        .enumerate()
        .map(|(source, journal)| {
            tokio::spawn(async move {
                // All made before any is awaited: the peer's calls travel together.
                let calls: Vec<_> = (0..CALLS).map(|seq| journal.note(source as u32, seq)).collect();
                for call in calls {
                    call.await.expect("note");
                }
            })
        })
        .collect();
    for task in tasks {
        timeout(LIMIT * 5, task).await.expect("notes timed out").expect("task");
    }
    let notes = notes.lock().unwrap().clone();
    for source in 0..4 {
        let seqs: Vec<u32> = notes.iter().filter(|(s, _)| *s == source).map(|(_, q)| *q).collect();
        assert_eq!(seqs, (0..CALLS).collect::<Vec<_>>(), "round {round}: source {source} started out of order");
    }
}

#[eventual]
pub trait Counted {
    /// Counts that a handler started.
    fn bump(&self) -> u32;
}

struct Counter(Arc<std::sync::atomic::AtomicU32>);

impl Counted for Counter {
    fn bump(&self) -> u32 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }
}

/// A call whose connection closes before it starts never starts: the peer
/// sends the call and an `Abort` in one write, so the reader (which starts
/// calls only once nothing more is readable) closes first. Without a close
/// counting as every waiting call's cancellation, the handler ran after the
/// close.
#[tokio::test]
async fn a_call_whose_connection_closed_before_it_started_runs_no_handler() {
    use rpc_tests::raw_peer::{framed, CLIENT_LIMITS};
    use rpc_tests::wire_mirror::{call, encode, Kind, Msg, WireError, WireHello, BOOTSTRAP, MAGIC};
    use tokio::io::AsyncWriteExt;

    let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (mut peer, server_end) = tokio::io::duplex(1 << 16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let object = CountedProxy::new(Counter(starts.clone()));
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let _server = Connection::builder().bootstrap(object).open(server_end).await;
            let _ = stopped.await;
        });
    });
    let _thread = ReaderThread { stop: Some(stop), thread: Some(thread) };
    let hello = WireHello {
        magic: MAGIC,
        version: rpc_core::PROTOCOL_VERSION,
        limits: CLIENT_LIMITS,
        offers_bootstrap: false,
        nonce: 0x5eed,
    };
    peer.write_all(&framed(&encode(&hello))).await.expect("hello");
    timeout(LIMIT, read_frame(&mut peer)).await.expect("no Hello").expect("the server's Hello");
    let interface = rpc_core::__private::interface_id("Counted");

    // The control: the same call alone starts its handler.
    peer.write_all(&framed(&encode(&call(0, BOOTSTRAP, interface, 0)))).await.expect("call");
    let reply = timeout(LIMIT, read_frame(&mut peer)).await.expect("no Return").expect("a Return");
    let (message, _) = postcard::take_from_bytes::<Msg>(&reply).expect("a message");
    assert!(matches!(message, Msg::Return { question: 0, result: Ok(_) }), "{message:?}");
    assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1);

    let mut both = framed(&encode(&call(1, BOOTSTRAP, interface, 0)));
    let abort = WireError { kind: Kind::Disconnected, message: "bye".into(), payload: None };
    both.extend(framed(&encode(&Msg::Abort(abort))));
    peer.write_all(&both).await.expect("call and abort");
    // The server closes: nothing more comes (its writer shuts down).
    for _ in 0..16 {
        if timeout(LIMIT, read_frame(&mut peer)).await.expect("the server did not close").is_none() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1, "a call started after its connection closed");
}

/// One frame's body from a raw peer's end, or `None` at its end.
async fn read_frame(peer: &mut tokio::io::DuplexStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    peer.read_exact(&mut prefix).await.ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
    peer.read_exact(&mut body).await.ok()?;
    Some(body)
}
