//! A model of the capability tables, checked by proptest.
//!
//! A client talks to a server over an in-memory transport (paused clock,
//! current-thread runtime). A random sequence of operations — make objects,
//! clone and drop proxies, pipeline calls through unresolved proxies, pass
//! proxies back home, send client-side objects to the server, cancel slow
//! calls — runs against the real connection and against a small model of
//! who holds what. After every operation the connection is settled (run until
//! idle; no timer fires that early) and the tables of both sides, read with
//! `Connection::debug_counts`, must equal what the model says; so must the
//! number of live objects on each side (drop counters). At the end the
//! connection is cut (client close, server close, or the transport vanishing)
//! and every table on both sides must be empty and every object the test no
//! longer holds dropped.
//!
//! What the model says about questions: a proxy returned *pipelined* (a
//! method returning `ThingProxy`) keeps its question, and so the server's
//! answer, for as long as any clone of it lives, even after the answer came
//! back (`conn/pipeline.rs`: the hook holds the call handle). The model counts
//! one question (client) and one answer (server) per such live lineage.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use proptest::prelude::*;
use rpc_core::__private::TableCounts;
use rpc_core::{eventual, Capability, Config, Connection, ErrorKind, Limits, RpcError};
use rpc_tests::{connect_pair, DropCounter, DropToken};
use serde::{Deserialize, Serialize};

// ----- interfaces -------------------------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelError(pub String);

impl From<RpcError> for ModelError {
    fn from(err: RpcError) -> Self {
        ModelError(err.to_string())
    }
}

/// A capability returned inside a value: the client gets an import, not a
/// pipelined promise.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Boxed {
    pub thing: ThingProxy,
}

#[eventual]
pub trait Thing {
    fn id(&self) -> u64;
    /// A new object on the same side, returned pipelined.
    fn child(&self) -> ThingProxy;
}

#[eventual]
pub trait Factory {
    /// A new object, returned pipelined.
    fn make(&self) -> ThingProxy;
    /// The object it is given, inside a struct.
    async fn echo(&self, thing: ThingProxy) -> Boxed;
    /// Whether `thing` arrived as a local object of this side, and its id.
    async fn identify(&self, thing: ThingProxy) -> (bool, u64);
    /// Calls `thing.id()` and keeps `thing` if asked.
    async fn take(&self, thing: ThingProxy, keep: bool) -> Result<u64, ModelError>;
    /// Drops every kept object; returns how many there were.
    async fn forget(&self) -> usize;
    /// Never returns; holds `arg` while it runs.
    async fn slow(&self, arg: Option<ThingProxy>) -> u32;
    /// The object it is given, returned pipelined.
    fn bounce(&self, thing: ThingProxy) -> ThingProxy;
}

// ----- implementations -----------------------------------------------------------

/// The objects of one side: ids, and a drop counter for live counts.
#[derive(Clone)]
struct Side {
    next_id: Arc<AtomicU64>,
    created: Arc<AtomicUsize>,
    drops: DropCounter,
}

impl Side {
    fn new(first_id: u64) -> Self {
        Side { next_id: Arc::new(AtomicU64::new(first_id)), created: Arc::default(), drops: DropCounter::default() }
    }

    fn thing(&self) -> ThingProxy {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.created.fetch_add(1, Ordering::SeqCst);
        ThingProxy::new(ThingImpl { id, side: self.clone(), _token: self.drops.token() })
    }

    fn live(&self) -> usize {
        self.created.load(Ordering::SeqCst) - self.drops.count()
    }
}

struct ThingImpl {
    id: u64,
    side: Side,
    _token: DropToken,
}

impl Thing for ThingImpl {
    fn id(&self) -> u64 {
        self.id
    }
    fn child(&self) -> ThingProxy {
        self.side.thing()
    }
}

struct FactoryImpl {
    side: Side,
    kept: Mutex<Vec<ThingProxy>>,
    slow_started: Arc<AtomicUsize>,
    slow_ended: DropCounter,
}

impl Factory for FactoryImpl {
    fn make(&self) -> ThingProxy {
        self.side.thing()
    }
    async fn echo(&self, thing: ThingProxy) -> Boxed {
        Boxed { thing }
    }
    async fn identify(&self, thing: ThingProxy) -> (bool, u64) {
        let local = format!("{:?}", thing.client()).starts_with("Client(local");
        (local, thing.id().await.unwrap_or(u64::MAX))
    }
    async fn take(&self, thing: ThingProxy, keep: bool) -> Result<u64, ModelError> {
        let id = thing.id().await?;
        if keep {
            self.kept.lock().unwrap().push(thing);
        }
        Ok(id)
    }
    async fn forget(&self) -> usize {
        let kept = std::mem::take(&mut *self.kept.lock().unwrap());
        kept.len()
    }
    async fn slow(&self, arg: Option<ThingProxy>) -> u32 {
        self.slow_started.fetch_add(1, Ordering::SeqCst);
        let _token = self.slow_ended.token();
        let _arg = arg;
        std::future::pending::<()>().await;
        0
    }
    fn bounce(&self, thing: ThingProxy) -> ThingProxy {
        thing
    }
}

// ----- operations ------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// `factory.make()`: a new server object, pipelined.
    MakeObject,
    CloneProxy(Pick),
    DropProxy(Pick),
    /// `parent.child().id()` with both calls sent before anything resolves.
    /// The parent is a held proxy, or (None) a fresh `factory.make()`, kept
    /// or dropped at once (before its answer arrives).
    PipelineCall {
        parent: Option<Pick>,
        keep_parent: bool,
    },
    /// A held proxy sent home: the server must see its own local object.
    PassBack(Pick),
    /// A held proxy sent home and returned inside a struct (an import).
    Echo(Pick),
    /// A new client-side object sent to the server, which calls it and
    /// keeps it or drops it; the client keeps its own proxy or drops it.
    SendLocal {
        keep_on_server: bool,
        keep_here: bool,
    },
    /// A client-side object the client kept, sent again.
    ResendLocal {
        which: Pick,
        keep_on_server: bool,
    },
    DropLocal(Pick),
    /// The server drops every client object it kept.
    Forget,
    /// A call that never returns, its promise dropped at once or once the
    /// handler runs; optionally carrying a new client-side object.
    CancelCall {
        with_local: bool,
        after_start: bool,
    },
    /// A client-side object (new, or one the client kept) sent to the server
    /// and returned pipelined; called once before the answer arrives
    /// (through the server) and once after (locally, behind an embargo).
    /// The client keeps the returned proxy, whose question holds the
    /// server's answer, which holds an import of the client's object.
    Bounce(Option<Pick>),
    DropBounced(Pick),
    Settle,
}

/// Which of the held proxies (or local objects) an operation uses: the
/// index modulo how many there are; an operation on an empty list is a no-op.
#[derive(Clone, Copy, Debug)]
struct Pick(u16);

impl Pick {
    fn at(self, len: usize) -> usize {
        self.0 as usize % len
    }
}

impl Arbitrary for Pick {
    type Parameters = ();
    type Strategy = BoxedStrategy<Pick>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<u16>().prop_map(Pick).boxed()
    }
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    ClientClose,
    ServerClose,
    Transport,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::MakeObject),
        2 => any::<Pick>().prop_map(Op::CloneProxy),
        3 => any::<Pick>().prop_map(Op::DropProxy),
        2 => (proptest::option::of(any::<Pick>()), any::<bool>())
            .prop_map(|(parent, keep_parent)| Op::PipelineCall { parent, keep_parent }),
        2 => any::<Pick>().prop_map(Op::PassBack),
        1 => any::<Pick>().prop_map(Op::Echo),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(keep_on_server, keep_here)| Op::SendLocal { keep_on_server, keep_here }),
        1 => (any::<Pick>(), any::<bool>())
            .prop_map(|(which, keep_on_server)| Op::ResendLocal { which, keep_on_server }),
        1 => any::<Pick>().prop_map(Op::DropLocal),
        1 => Just(Op::Forget),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(with_local, after_start)| Op::CancelCall { with_local, after_start }),
        2 => proptest::option::of(any::<Pick>()).prop_map(Op::Bounce),
        1 => any::<Pick>().prop_map(Op::DropBounced),
        1 => Just(Op::Settle),
    ]
}

fn cut_strategy() -> impl Strategy<Value = Cut> {
    prop_oneof![Just(Cut::ClientClose), Just(Cut::ServerClose), Just(Cut::Transport)]
}

// ----- the model ---------------------------------------------------------------------

/// How a held proxy reaches its server object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Path {
    /// Returned pipelined by call number n: holds that question.
    Lineage(u64),
    /// An import (returned inside a value).
    Import,
}

struct Held {
    proxy: ThingProxy,
    /// The server object's id.
    object: u64,
    path: Path,
}

/// Client-side object ids start here (server ones at 0).
const LOCAL_BASE: u64 = 1 << 32;

#[derive(Default)]
struct Model {
    held: Vec<Held>,
    /// Client-side objects the client holds: (proxy, id).
    locals: Vec<(ThingProxy, u64)>,
    /// Ids of client-side objects the server keeps (with repeats).
    kept_by_server: Vec<u64>,
    /// Proxies returned by `bounce`: (proxy, client-side id).
    bounced: Vec<(ThingProxy, u64)>,
    next_server_id: u64,
    next_local_id: u64,
    next_lineage: u64,
}

impl Model {
    fn server_objects_held(&self) -> usize {
        self.held.iter().map(|h| h.object).collect::<HashSet<_>>().len()
    }

    fn lineages(&self) -> usize {
        self.held.iter().filter(|h| matches!(h.path, Path::Lineage(_))).map(|h| h.path).collect::<BTreeSet<_>>().len()
    }

    /// Client-side objects the server holds an import of: kept, or held by
    /// the answer of a live `bounce`.
    fn locals_held_by_server(&self) -> HashSet<u64> {
        self.kept_by_server.iter().copied().chain(self.bounced.iter().map(|(_, id)| *id)).collect()
    }

    fn locals_alive(&self) -> usize {
        let mut alive = self.locals_held_by_server();
        alive.extend(self.locals.iter().map(|(_, id)| *id));
        alive.len()
    }

    fn server_id(&mut self) -> u64 {
        self.next_server_id += 1;
        self.next_server_id - 1
    }

    fn lineage(&mut self) -> Path {
        self.next_lineage += 1;
        Path::Lineage(self.next_lineage)
    }
}

struct World {
    server: Connection,
    client: Connection,
    factory: FactoryProxy,
    relay: tokio::task::JoinHandle<()>,
    server_side: Side,
    client_side: Side,
    slow_started: Arc<AtomicUsize>,
    slow_ended: DropCounter,
}

/// Runs everything runnable: on the paused clock the sleep fires only once
/// every task is idle (the runtime advances time only then), and nothing
/// else is timed this early (keepalive is seconds away).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// A promise that must be complete once settled.
fn done<F: Future + Unpin>(what: &str, mut future: F) -> F::Output {
    (&mut future).now_or_never().unwrap_or_else(|| panic!("{what}: not complete once settled"))
}

async fn open_world() -> World {
    let server_side = Side::new(0);
    let client_side = Side::new(LOCAL_BASE);
    let slow_started = Arc::new(AtomicUsize::new(0));
    let slow_ended = DropCounter::default();
    let factory = FactoryProxy::new(FactoryImpl {
        side: server_side.clone(),
        kept: Mutex::new(Vec::new()),
        slow_started: slow_started.clone(),
        slow_ended: slow_ended.clone(),
    });
    let (server_io, mut relay_a) = tokio::io::duplex(1 << 16);
    let (mut relay_b, client_io) = tokio::io::duplex(1 << 16);
    let relay = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut relay_a, &mut relay_b).await;
    });
    let (server, client, factory) =
        connect_pair(server_io, client_io, factory, Config::default()).await.expect("connect");
    World { server, client, factory, relay, server_side, client_side, slow_started, slow_ended }
}

fn check(world: &World, model: &Model, step: usize, op: &Op) {
    let objects = model.server_objects_held();
    let lineages = model.lineages() + model.bounced.len();
    let kept = model.locals_held_by_server().len();
    let client = world.client.debug_counts();
    let server = world.server.debug_counts();
    let expect_client = TableCounts {
        questions: lineages,
        answers: 0,
        exports: kept,
        // The bootstrap import (the factory) is counted too.
        imports: 1 + objects,
        embargoes: 0,
        streams: 0,
        closed: false,
    };
    let expect_server = TableCounts {
        questions: 0,
        answers: lineages,
        exports: objects,
        imports: kept,
        embargoes: 0,
        streams: 0,
        closed: false,
    };
    assert_eq!(client, expect_client, "step {step} ({op:?}): client tables");
    assert_eq!(server, expect_server, "step {step} ({op:?}): server tables");
    assert_eq!(world.server_side.live(), objects, "step {step} ({op:?}): live server objects");
    assert_eq!(world.client_side.live(), model.locals_alive(), "step {step} ({op:?}): live client objects");
    let started = world.slow_started.load(Ordering::SeqCst);
    assert_eq!(world.slow_ended.count(), started, "step {step} ({op:?}): slow handlers still running");
}

async fn apply(world: &World, model: &mut Model, op: &Op) {
    let factory = &world.factory;
    match op {
        Op::MakeObject => {
            let proxy = factory.make();
            let object = model.server_id();
            let path = model.lineage();
            model.held.push(Held { proxy, object, path });
        }
        Op::CloneProxy(i) => {
            if !model.held.is_empty() {
                let h = &model.held[i.at(model.held.len())];
                let clone = Held { proxy: h.proxy.clone(), object: h.object, path: h.path };
                model.held.push(clone);
            }
        }
        Op::DropProxy(i) => {
            if !model.held.is_empty() {
                let at = i.at(model.held.len());
                model.held.remove(at);
            }
        }
        Op::PipelineCall { parent, keep_parent } => {
            let (parent, parent_id, fresh) = match parent {
                Some(i) if !model.held.is_empty() => {
                    let h = &model.held[i.at(model.held.len())];
                    (h.proxy.clone(), h.object, false)
                }
                _ => (factory.make(), model.server_id(), true),
            };
            let child = parent.child();
            let child_id = model.server_id();
            let id = child.id();
            let parent_seen = parent.id();
            if fresh {
                if *keep_parent {
                    let path = model.lineage();
                    model.held.push(Held { proxy: parent.clone(), object: parent_id, path });
                }
                drop(parent);
            }
            settle().await;
            assert_eq!(done("child.id()", id).expect("child.id()"), child_id);
            assert_eq!(done("parent.id()", parent_seen).expect("parent.id()"), parent_id);
            let path = model.lineage();
            model.held.push(Held { proxy: child, object: child_id, path });
        }
        Op::PassBack(i) => {
            if !model.held.is_empty() {
                let h = &model.held[i.at(model.held.len())];
                let reply = factory.identify(h.proxy.clone());
                settle().await;
                let (local, id) = done("identify", reply).expect("identify");
                assert!(local, "a proxy sent home did not arrive as the server's own object");
                assert_eq!(id, h.object);
            }
        }
        Op::Echo(i) => {
            if !model.held.is_empty() {
                let object = model.held[i.at(model.held.len())].object;
                let reply = factory.echo(model.held[i.at(model.held.len())].proxy.clone());
                settle().await;
                let boxed = done("echo", reply).expect("echo");
                model.held.push(Held { proxy: boxed.thing, object, path: Path::Import });
            }
        }
        Op::SendLocal { keep_on_server, keep_here } => {
            let local = world.client_side.thing();
            let id = model.next_local_id + LOCAL_BASE;
            model.next_local_id += 1;
            let reply = factory.take(local.clone(), *keep_on_server);
            if *keep_here {
                model.locals.push((local, id));
            } else {
                drop(local);
            }
            settle().await;
            assert_eq!(done("take", reply).expect("take"), id);
            if *keep_on_server {
                model.kept_by_server.push(id);
            }
        }
        Op::ResendLocal { which, keep_on_server } => {
            if !model.locals.is_empty() {
                let (local, id) = &model.locals[which.at(model.locals.len())];
                let id = *id;
                let reply = factory.take(local.clone(), *keep_on_server);
                settle().await;
                assert_eq!(done("take", reply).expect("take"), id);
                if *keep_on_server {
                    model.kept_by_server.push(id);
                }
            }
        }
        Op::DropLocal(i) => {
            if !model.locals.is_empty() {
                let at = i.at(model.locals.len());
                model.locals.remove(at);
            }
        }
        Op::Forget => {
            let reply = factory.forget();
            settle().await;
            assert_eq!(done("forget", reply).expect("forget"), model.kept_by_server.len());
            model.kept_by_server.clear();
        }
        Op::CancelCall { with_local, after_start } => {
            let arg = with_local.then(|| world.client_side.thing());
            model.next_local_id += u64::from(*with_local);
            let reply = factory.slow(arg);
            if *after_start {
                settle().await;
                assert!(world.slow_started.load(Ordering::SeqCst) > world.slow_ended.count(), "slow did not start");
            }
            drop(reply);
        }
        Op::Bounce(which) => {
            let (local, id) = match which {
                Some(i) if !model.locals.is_empty() => model.locals[i.at(model.locals.len())].clone(),
                _ => {
                    model.next_local_id += 1;
                    (world.client_side.thing(), model.next_local_id - 1 + LOCAL_BASE)
                }
            };
            let bounced = factory.bounce(local);
            let early = bounced.id();
            settle().await;
            let late = bounced.id();
            settle().await;
            assert_eq!(done("early id", early).expect("early id"), id);
            assert_eq!(done("late id", late).expect("late id"), id);
            model.bounced.push((bounced, id));
        }
        Op::DropBounced(i) => {
            if !model.bounced.is_empty() {
                let at = i.at(model.bounced.len());
                model.bounced.remove(at);
            }
        }
        Op::Settle => {}
    }
    settle().await;
}

async fn run_case(ops: Vec<Op>, cut: Cut) {
    let world = open_world().await;
    let mut model = Model::default();
    settle().await;
    check(&world, &model, 0, &Op::Settle);
    for (step, op) in ops.iter().enumerate() {
        apply(&world, &mut model, op).await;
        check(&world, &model, step + 1, op);
    }

    match cut {
        Cut::ClientClose => world.client.close(),
        Cut::ServerClose => world.server.close(),
        Cut::Transport => world.relay.abort(),
    }
    settle().await;
    let closed = TableCounts { closed: true, ..TableCounts::default() };
    assert_eq!(world.client.debug_counts(), closed, "{cut:?}: client tables after the cut");
    assert_eq!(world.server.debug_counts(), closed, "{cut:?}: server tables after the cut");
    assert_eq!(world.server_side.live(), 0, "{cut:?}: server objects alive after the cut");
    // A bounced proxy's promise state holds what it resolved to, the
    // client-side object itself, until the proxy goes.
    let held_here = model.locals.iter().chain(&model.bounced).map(|(_, id)| *id).collect::<HashSet<_>>().len();
    assert_eq!(world.client_side.live(), held_here, "{cut:?}: client objects alive after the cut");
    assert_eq!(world.slow_ended.count(), world.slow_started.load(Ordering::SeqCst));
    // Every held proxy is now broken, at once.
    for h in &model.held {
        let err = done("call after the cut", h.proxy.id()).expect_err("a call after the cut succeeded");
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    }
    // Calls on a bounced proxy fail too (it names the dead connection's answer),
    // though the object it resolved to is alive here.
    for (proxy, _) in &model.bounced {
        let err = done("bounced after the cut", proxy.id()).expect_err("a call after the cut succeeded");
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    }
    let err = done("factory after the cut", world.factory.make().id()).expect_err("succeeded after the cut");
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    drop(model);
    settle().await;
    assert_eq!(world.client_side.live(), 0, "client objects alive once the test dropped its own");
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime")
}

proptest! {
    // 64 cases by default (about a second in a debug build); PROPTEST_CASES=n for a longer search.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn capability_tables_match_the_model(ops in prop::collection::vec(op_strategy(), 1..40), cut in cut_strategy()) {
        paused_runtime().block_on(run_case(ops, cut));
    }
}

// ----- fixed cases -------------------------------------------------------------------

/// Every operation once, in an order that exercises them all, then each cut.
#[test]
fn every_operation_once() {
    let i = Pick;
    let ops = vec![
        Op::MakeObject,
        Op::CloneProxy(i(0)),
        Op::PipelineCall { parent: Some(i(0)), keep_parent: true },
        Op::PipelineCall { parent: None, keep_parent: false },
        Op::PipelineCall { parent: None, keep_parent: true },
        Op::PassBack(i(3)),
        Op::Echo(i(2)),
        Op::SendLocal { keep_on_server: true, keep_here: true },
        Op::SendLocal { keep_on_server: true, keep_here: false },
        Op::ResendLocal { which: i(0), keep_on_server: true },
        Op::CancelCall { with_local: true, after_start: true },
        Op::CancelCall { with_local: true, after_start: false },
        Op::DropProxy(i(0)),
        Op::DropLocal(i(0)),
        Op::Forget,
        Op::SendLocal { keep_on_server: true, keep_here: true },
        Op::Bounce(None),
        Op::Bounce(Some(i(0))),
        Op::Bounce(Some(i(0))),
        Op::DropBounced(i(0)),
        Op::Settle,
    ];
    for cut in [Cut::ClientClose, Cut::ServerClose, Cut::Transport] {
        paused_runtime().block_on(run_case(ops.clone(), cut));
    }
}

/// A proxy returned pipelined holds its question after the answer came back
/// (the model counts it), and questions count against the peer's
/// `max_outstanding_calls` ("calls from the peer that may be unanswered at
/// once"). So a client holding that many such proxies can make no call at
/// all, though none is unanswered.
#[test]
fn held_pipelined_proxies_do_not_count_as_outstanding_calls() {
    paused_runtime().block_on(async {
        let side = Side::new(0);
        let factory = FactoryProxy::new(FactoryImpl {
            side: side.clone(),
            kept: Mutex::new(Vec::new()),
            slow_started: Arc::default(),
            slow_ended: DropCounter::default(),
        });
        let config = Config { limits: Limits { max_outstanding_calls: 8, ..Limits::default() }, ..Config::default() };
        let (a, b) = tokio::io::duplex(1 << 16);
        let (_server, client, factory) = connect_pair(a, b, factory, config).await.expect("connect");
        let mut things = Vec::new();
        for _ in 0..8 {
            things.push(factory.make());
            settle().await;
        }
        // Every call was answered; nothing is in flight.
        assert_eq!(client.debug_counts().questions, 8, "questions held by the 8 pipelined proxies");
        let more = factory.forget();
        settle().await;
        let result = done("a ninth call", more);
        assert!(result.is_ok(), "with nothing in flight a call failed: {:?}", result.map_err(|e| e.to_string()));
    });
}
