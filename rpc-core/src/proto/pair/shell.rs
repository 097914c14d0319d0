//! The test shell: handles that queue commands for the harness.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use super::calls::Hold;
use super::streams::StreamHandle;
use crate::cap::{Canceller, Client, ClientHook, OutgoingCall, PeerRef, Reply, ReplySink};
use crate::payload::StreamEnd;
use crate::proto::{ImportSlot, Protocol, RemoteConsumer, RemoteProducer, Shell, Signals};
use crate::wire::CapDescriptor;
use crate::RpcError;

/// Work a handle asks of its side's protocol; the harness applies it.
pub(super) enum Command {
    /// A call on the import of the peer's export `id`.
    Call(u32, OutgoingCall),
    /// A call on capability `cap` of our question's promised answer.
    Pipeline {
        question: u32,
        cap: u32,
        call: OutgoingCall,
    },
    ReleaseQuestion(u32),
    /// The outcome of the peer's call `id`.
    Answer(u32, Reply),
    AnswerCanceller(u32, Canceller),
}

// ----- the shell ---------------------------------------------------------

/// A handle this shell minted, by the hook's address.
struct Minted {
    peer_ref: PeerRef,
    /// For a pipelined capability: the question it keeps alive.
    hold: Option<Arc<Hold>>,
}

/// One side's [`Shell`]: mints handles that queue [`Command`]s.
pub(crate) struct TestShell {
    commands: Sender<Command>,
    /// Serials of minted hooks that were dropped (sent by their `Drop`).
    forgets: Sender<u64>,
    forgotten: Receiver<u64>,
    minted: RefCell<HashMap<usize, Minted>>,
    addresses: RefCell<HashMap<u64, usize>>,
    serials: Cell<u64>,
    /// The question id of the last question canceller minted.
    pub(super) last_question: Cell<Option<u32>>,
    /// The stream handles minted, by stream id (see `streams.rs`).
    pub(super) streams: RefCell<HashMap<u32, StreamHandle>>,
}

impl TestShell {
    pub(super) fn new(commands: Sender<Command>) -> Self {
        let (forgets, forgotten) = channel();
        TestShell {
            commands,
            forgets,
            forgotten,
            minted: RefCell::default(),
            addresses: RefCell::default(),
            serials: Cell::new(0),
            last_question: Cell::new(None),
            streams: RefCell::default(),
        }
    }

    /// Forgets the hooks dropped so far (before their addresses are reused).
    pub(super) fn forget_dropped(&self) {
        while let Ok(serial) = self.forgotten.try_recv() {
            let Some(address) = self.addresses.borrow_mut().remove(&serial) else { continue };
            let forgotten = self.minted.borrow_mut().remove(&address);
            // Its hold may be the question's last: dropped with no borrow held.
            drop(forgotten);
        }
    }

    /// Registers a hook built by `make` from its serial as the peer's `peer_ref`.
    pub(super) fn mint(
        &self,
        peer_ref: PeerRef,
        hold: Option<Arc<Hold>>,
        make: impl FnOnce(Handle) -> Arc<dyn ClientHook>,
    ) -> Client {
        self.forget_dropped();
        let serial = self.serials.get() + 1;
        self.serials.set(serial);
        let hook = make(Handle { serial, commands: self.commands.clone(), forgets: self.forgets.clone() });
        let client = Client { hook };
        self.addresses.borrow_mut().insert(serial, client.identity());
        self.minted.borrow_mut().insert(client.identity(), Minted { peer_ref, hold });
        client
    }

    pub(super) fn hold_of(&self, client: &Client) -> Option<Arc<Hold>> {
        self.forget_dropped();
        self.minted.borrow().get(&client.identity()).and_then(|m| m.hold.clone())
    }
}

impl Shell for TestShell {
    fn import_hook(&self, id: u32) -> (Arc<dyn ClientHook>, Box<dyn ImportSlot>) {
        let mut slot = None;
        let client = self.mint(PeerRef::Export(id), None, |handle| {
            let hook = Arc::new(TestImport { id, handle });
            slot = Some(TestImportSlot(hook.clone()));
            hook
        });
        (client.hook, Box::new(slot.expect("minted")))
    }

    fn answer_sink(&self, id: u32, _interface: u64, _method: u16) -> Arc<dyn ReplySink> {
        Arc::new(TestAnswer { id, commands: self.commands.clone() })
    }

    fn question_canceller(&self, id: u32) -> Canceller {
        self.last_question.set(Some(id));
        let release = ReleaseOnDrop { id, commands: self.commands.clone() };
        Canceller::Callback(Box::new(move || drop(release)))
    }

    fn peer_ref(&self, client: &Client) -> Option<PeerRef> {
        self.forget_dropped();
        self.minted.borrow().get(&client.identity()).map(|m| m.peer_ref)
    }

    fn producer(&self, id: u32, bytes: bool, signals: Arc<Signals>) -> Arc<RemoteProducer> {
        self.mint_producer(id, RemoteProducer::detached(id, bytes, signals))
    }

    fn consumer(&self, id: u32, bytes: bool, max_depth: u32, signals: Arc<Signals>) -> Arc<RemoteConsumer> {
        self.mint_consumer(id, RemoteConsumer::detached(id, bytes, max_depth, signals))
    }

    fn received_reader(&self, consumer: Arc<RemoteConsumer>) -> Box<dyn StreamEnd> {
        Box::new(ReceivedEnd(Box::new(consumer)))
    }

    fn received_writer(&self, producer: Arc<RemoteProducer>) -> Box<dyn StreamEnd> {
        Box::new(ReceivedEnd(Box::new(producer)))
    }
}

/// A stream end received from the peer, held (never decoded: a test object
/// keeps what it gets). Passing it on needs a pump task, which the harness
/// has not: it is refused. Dropping it drops the handle, which the harness
/// notices (the consumer cancels, the producer aborts).
struct ReceivedEnd(#[allow(dead_code)] Box<dyn std::any::Any + Send>);

impl StreamEnd for ReceivedEnd {
    fn bind(self: Box<Self>, _state: &mut Protocol, _shell: &dyn Shell) -> Result<CapDescriptor, RpcError> {
        Err(RpcError::unimplemented("the test harness relays no stream end"))
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// What every minted hook keeps: its serial and its side's queues.
pub(super) struct Handle {
    serial: u64,
    commands: Sender<Command>,
    forgets: Sender<u64>,
}

impl Handle {
    fn send(&self, command: Command) {
        // The harness is gone: what the command carries is just dropped.
        let _ = self.commands.send(command);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.forgets.send(self.serial);
    }
}

/// The import of the peer's export `id`.
struct TestImport {
    id: u32,
    handle: Handle,
}

impl ClientHook for TestImport {
    fn call(&self, call: OutgoingCall) {
        self.handle.send(Command::Call(self.id, call));
    }

    fn describe(&self) -> String {
        format!("pair import #{}", self.id)
    }
}

/// The protocol's hold on an import's hook. It keeps the hook (the
/// harness names no weak reference) but gives it out only while some
/// handle besides itself holds it; the harness polls for hooks nobody else
/// holds and drops those imports (`Endpoint::drop_unheld_imports`), as a
/// connection's import does when its last handle goes.
pub(super) struct TestImportSlot(Arc<TestImport>);

impl TestImportSlot {
    /// Whether a handle besides this slot holds the hook.
    pub(super) fn is_held(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

impl ImportSlot for TestImportSlot {
    fn upgrade(&self) -> Option<Arc<dyn ClientHook>> {
        self.is_held().then(|| self.0.clone() as Arc<dyn ClientHook>)
    }

    fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// Capability `cap` of our question's promised answer.
pub(super) struct TestPipeline {
    pub(super) question: u32,
    pub(super) cap: u32,
    pub(super) handle: Handle,
    /// Keeps the question alive while calls can be made through it.
    pub(super) _hold: Arc<Hold>,
}

impl ClientHook for TestPipeline {
    fn call(&self, call: OutgoingCall) {
        self.handle.send(Command::Pipeline { question: self.question, cap: self.cap, call });
    }

    fn describe(&self) -> String {
        format!("pair promise of capability {} of question {}", self.cap, self.question)
    }
}

/// The reply sink of the peer's call `id`.
struct TestAnswer {
    id: u32,
    commands: Sender<Command>,
}

impl ReplySink for TestAnswer {
    fn complete(&self, reply: Reply) {
        let _ = self.commands.send(Command::Answer(self.id, reply));
    }

    fn set_canceller(&self, canceller: Canceller) {
        let _ = self.commands.send(Command::AnswerCanceller(self.id, canceller));
    }
}

/// A question canceller's payload: dropping it releases the question.
struct ReleaseOnDrop {
    id: u32,
    commands: Sender<Command>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::ReleaseQuestion(self.id));
    }
}
