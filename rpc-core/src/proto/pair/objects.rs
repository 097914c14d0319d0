//! Local test objects: they record the calls they get and answer by a rule.
//! Every object keeps the stream ends a call brings (in its log) rather
//! than answering with them: sending one on needs a pump task.
//!
//! Objects are called from effects, so they must be `Send + Sync`: they
//! send what they see to their log on a channel (no lock), and the log
//! gathers it when the test asks.

use std::cell::{RefCell, RefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::cap::{Canceller, Client, ClientHook, OutgoingCall, Reply, ReplySink};
use crate::payload::{CapEntry, Payload};

/// How a test object answers the calls it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Returns the call's payload as it came, object capabilities included.
    Echo,
    /// Returns a new object (same rule, same log) as capability 0.
    NewObject,
    /// Answers nothing until [`ObjectLog::answer_held`]; its canceller
    /// records the cancellation in the log.
    Hold,
    /// Keeps the capabilities the call carried; returns nothing.
    Keep,
    /// By the method: `method % 4` picks Echo, NewObject, Hold or Keep.
    ByMethod,
}

impl Rule {
    fn for_method(self, method: u16) -> Rule {
        match (self, method % 4) {
            (Rule::ByMethod, 0) => Rule::Echo,
            (Rule::ByMethod, 1) => Rule::NewObject,
            (Rule::ByMethod, 2) => Rule::Hold,
            (Rule::ByMethod, _) => Rule::Keep,
            (rule, _) => rule,
        }
    }
}

/// A call a test object received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    /// Which object of the log (numbered from 1 as they are made).
    pub(crate) object: u32,
    pub(crate) method: u16,
    /// The `u32` the arguments start with, if they do.
    pub(crate) arg: Option<u32>,
    /// Object capabilities the call carried (stream ends not counted).
    pub(crate) caps: usize,
}

/// What an object tells its log.
enum Event {
    Received(Received),
    Held(Arc<dyn ReplySink>),
    Kept(Vec<CapEntry>),
    Ends(Vec<CapEntry>),
    Cancelled(u32),
}

#[derive(Default)]
struct LogState {
    received: Vec<Received>,
    held: Vec<Arc<dyn ReplySink>>,
    kept: Vec<CapEntry>,
    /// Stream ends received (by any object): kept, never sent on.
    ends: Vec<CapEntry>,
    /// Objects (by number) whose held calls were cancelled, in order.
    cancelled: Vec<u32>,
}

/// How objects reach their log (shared by every object of a family).
#[derive(Clone)]
struct LogSender {
    events: Sender<Event>,
    objects: Arc<AtomicU32>,
}

impl LogSender {
    fn send(&self, event: Event) {
        // The log is gone: what the event carries is just dropped.
        let _ = self.events.send(event);
    }

    fn object(&self, rule: Rule) -> Client {
        let label = self.objects.fetch_add(1, Ordering::Relaxed) + 1;
        Client::from_hook(TestObject { label, rule, log: self.clone() })
    }
}

/// What a family of test objects saw and holds.
pub(crate) struct ObjectLog {
    sender: LogSender,
    events: Receiver<Event>,
    state: RefCell<LogState>,
}

impl ObjectLog {
    pub(crate) fn new() -> ObjectLog {
        let (events, arrived) = channel();
        let sender = LogSender { events, objects: Arc::default() };
        ObjectLog { sender, events: arrived, state: RefCell::default() }
    }

    /// A new local object answering by `rule`, recording here; objects
    /// are numbered from 1 in the order they are made.
    pub(crate) fn object(&self, rule: Rule) -> Client {
        self.sender.object(rule)
    }

    /// The state, with every event sent so far applied.
    fn state(&self) -> RefMut<'_, LogState> {
        let mut state = self.state.borrow_mut();
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Received(received) => state.received.push(received),
                Event::Held(sink) => state.held.push(sink),
                Event::Kept(caps) => state.kept.extend(caps),
                Event::Ends(ends) => state.ends.extend(ends),
                Event::Cancelled(label) => state.cancelled.push(label),
            }
        }
        state
    }

    /// Every call received so far, in order.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// The leading `u32` argument of every call received, in order.
    pub(crate) fn args(&self) -> Vec<u32> {
        self.state().received.iter().filter_map(|r| r.arg).collect()
    }

    /// Objects whose held calls were cancelled, in order.
    pub(crate) fn cancelled(&self) -> Vec<u32> {
        self.state().cancelled.clone()
    }

    /// Calls held and not answered yet.
    pub(crate) fn held(&self) -> usize {
        self.state().held.len()
    }

    /// Capabilities kept by `Keep` objects.
    pub(crate) fn kept(&self) -> usize {
        self.state().kept.len()
    }

    /// Stream ends the objects received.
    pub(crate) fn ends(&self) -> usize {
        self.state().ends.len()
    }

    /// Answers every held call with `reply()`.
    pub(crate) fn answer_held(&self, reply: impl Fn() -> Reply) {
        let held = std::mem::take(&mut self.state().held);
        for sink in held {
            sink.complete(reply());
        }
    }

    /// Drops the capabilities `Keep` objects kept, and the stream ends
    /// every object received.
    pub(crate) fn drop_kept(&self) {
        let kept = {
            let mut state = self.state();
            (std::mem::take(&mut state.kept), std::mem::take(&mut state.ends))
        };
        drop(kept);
    }
}

/// A local object: records each call, answers it by its rule.
struct TestObject {
    label: u32,
    rule: Rule,
    log: LogSender,
}

impl ClientHook for TestObject {
    fn call(&self, mut call: OutgoingCall) {
        // Stream ends stay here: sending one on needs a pump (a task).
        let (ends, objects) = std::mem::take(&mut call.payload.caps)
            .into_iter()
            .partition::<Vec<_>, _>(|cap| matches!(cap, CapEntry::Stream(_)));
        call.payload.caps = objects;
        if !ends.is_empty() {
            self.log.send(Event::Ends(ends));
        }
        let arg = call.payload.decode::<u32>().ok();
        let received = Received { object: self.label, method: call.method, arg, caps: call.payload.caps.len() };
        self.log.send(Event::Received(received));
        let reply = match self.rule.for_method(call.method) {
            Rule::Echo => Ok(call.payload),
            Rule::NewObject => Payload::encode(&(self.log.object(self.rule),)),
            Rule::Hold => {
                let (log, label) = (self.log.clone(), self.label);
                call.reply.set_canceller(Canceller::Callback(Box::new(move || log.send(Event::Cancelled(label)))));
                self.log.send(Event::Held(call.reply));
                return drop(call.payload);
            }
            Rule::Keep | Rule::ByMethod => {
                self.log.send(Event::Kept(call.payload.caps));
                Ok(Payload::default())
            }
        };
        call.reply.complete(reply);
    }

    fn describe(&self) -> String {
        format!("pair test object {} ({:?})", self.label, self.rule)
    }
}
