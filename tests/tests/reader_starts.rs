//! Calls a connection's reader delivers to local objects are started by the
//! reader itself, once it has handled every frame that arrived (see
//! `rpc-core/src/cap/local.rs`). User code still runs as if each object had
//! its own task: the calls a handler makes go to their objects' tasks, so a
//! handler may even block its thread on one.

use std::sync::Mutex;
use std::time::Duration;

use rpc_core::{eventual, Config};
use rpc_tests::{connect_pair, DropCounter, DropToken};
use tokio::time::timeout;

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
}

impl Front for Relay {
    fn relay(&self, n: u32) -> u32 {
        let back = self.back.clone();
        // Bounded, so a broken build fails here instead of hanging the runtime.
        let answer = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(tokio::time::timeout(Duration::from_secs(2), back.double(n)))
        });
        match answer {
            Ok(Ok(doubled)) => doubled,
            _ => 0,
        }
    }
}

struct Doubler;

impl Back for Doubler {
    async fn double(&self, n: u32) -> u32 {
        2 * n
    }
}

/// The reader starts `relay`, whose handler blocks on a call to a local
/// neighbour. Were that call collected for the reader too, it would wait for
/// the blocked handler to return: it must go to the neighbour's own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_started_by_the_reader_can_block_on_a_local_call() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let front = FrontProxy::new(Relay { back: BackProxy::new(Doubler) });
    let (_server, _client, front) = connect_pair(a, b, front, Config::default()).await.expect("connect");
    for n in 1..=3 {
        assert_eq!(front.relay(n).await.unwrap(), 2 * n, "call {n}");
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
    entered: tokio::sync::mpsc::UnboundedSender<()>,
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
    let (entered, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let gate = GateProxy::new(Held { entered, _drop: drops.token() });
    let door = DoorProxy::new(Keeper(Mutex::new(Some(gate))));
    let (a, b) = tokio::io::duplex(1 << 16);
    let (server, _client, door) = connect_pair(a, b, door, Config::default()).await.expect("connect");
    let gate = door.gate().await.expect("gate").expect("the gate, once");
    // The gate's serving task exists from here on (idle).
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
