//! Local test objects: they record the calls they get and answer by a rule.
//! Every object keeps the stream ends a call brings (in its log) rather
//! than answering with them: sending one on needs a pump task.

use std::sync::{Arc, Mutex};

use super::shell::lock;
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

#[derive(Default)]
struct LogState {
    received: Vec<Received>,
    held: Vec<Arc<dyn ReplySink>>,
    kept: Vec<CapEntry>,
    /// Stream ends received (by any object): kept, never sent on.
    ends: Vec<CapEntry>,
    /// Objects (by number) whose held calls were cancelled, in order.
    cancelled: Vec<u32>,
    objects: u32,
}

/// What a family of test objects saw and holds.
#[derive(Default)]
pub(crate) struct ObjectLog {
    state: Mutex<LogState>,
}

impl ObjectLog {
    pub(crate) fn new() -> Arc<ObjectLog> {
        Arc::default()
    }

    /// A new local object answering by `rule`, recording here.
    pub(crate) fn object(self: &Arc<Self>, rule: Rule) -> Client {
        let label = {
            let mut state = lock(&self.state);
            state.objects += 1;
            state.objects
        };
        Client::from_hook(TestObject { label, rule, log: self.clone() })
    }

    /// Every call received so far, in order.
    pub(crate) fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// The leading `u32` argument of every call received, in order.
    pub(crate) fn args(&self) -> Vec<u32> {
        lock(&self.state).received.iter().filter_map(|r| r.arg).collect()
    }

    /// Objects whose held calls were cancelled, in order.
    pub(crate) fn cancelled(&self) -> Vec<u32> {
        lock(&self.state).cancelled.clone()
    }

    /// Calls held and not answered yet.
    pub(crate) fn held(&self) -> usize {
        lock(&self.state).held.len()
    }

    /// Capabilities kept by `Keep` objects.
    pub(crate) fn kept(&self) -> usize {
        lock(&self.state).kept.len()
    }

    /// Answers every held call with `reply()`.
    pub(crate) fn answer_held(&self, reply: impl Fn() -> Reply) {
        let held = std::mem::take(&mut lock(&self.state).held);
        for sink in held {
            sink.complete(reply());
        }
    }

    /// Stream ends the objects received.
    pub(crate) fn ends(&self) -> usize {
        lock(&self.state).ends.len()
    }

    /// Drops the capabilities `Keep` objects kept, and the stream ends
    /// every object received.
    pub(crate) fn drop_kept(&self) {
        let kept = {
            let mut state = lock(&self.state);
            (std::mem::take(&mut state.kept), std::mem::take(&mut state.ends))
        };
        drop(kept);
    }
}

/// A local object: records each call, answers it by its rule.
struct TestObject {
    label: u32,
    rule: Rule,
    log: Arc<ObjectLog>,
}

impl ClientHook for TestObject {
    fn call(&self, mut call: OutgoingCall) {
        // Stream ends stay here: sending one on needs a pump (a runtime).
        let (ends, objects) = std::mem::take(&mut call.payload.caps)
            .into_iter()
            .partition::<Vec<_>, _>(|cap| matches!(cap, CapEntry::Stream(_)));
        call.payload.caps = objects;
        lock(&self.log.state).ends.extend(ends);
        let arg = call.payload.decode::<u32>().ok();
        let received = Received { object: self.label, method: call.method, arg, caps: call.payload.caps.len() };
        lock(&self.log.state).received.push(received);
        let reply = match self.rule.for_method(call.method) {
            Rule::Echo => Ok(call.payload),
            Rule::NewObject => Payload::encode(&(self.log.object(self.rule),)),
            Rule::Hold => {
                let (log, label) = (self.log.clone(), self.label);
                call.reply.set_canceller(Canceller::Callback(Box::new(move || lock(&log.state).cancelled.push(label))));
                lock(&self.log.state).held.push(call.reply);
                return drop(call.payload);
            }
            Rule::Keep | Rule::ByMethod => {
                lock(&self.log.state).kept.extend(call.payload.caps);
                Ok(Payload::default())
            }
        };
        call.reply.complete(reply);
    }

    fn describe(&self) -> String {
        format!("pair test object {} ({:?})", self.label, self.rule)
    }
}
