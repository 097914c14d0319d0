//! The caller's side of the calls a test makes: where their outcomes go,
//! and how the harness notices that a call was given up. No lock: outcomes
//! and cancellers travel on channels, and the harness polls a hold's
//! reference count to see that the test let go of the call.

use std::cell::{Ref, RefCell};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::Side;
use crate::cap::{Canceller, Client, Reply, ReplySink};
use crate::payload::CapEntry;
use crate::RpcError;

/// Where a call the test made delivers its outcome and its cancellers.
pub(super) struct CallRecord {
    outcome: Sender<Reply>,
    cancellers: Sender<Canceller>,
}

impl ReplySink for CallRecord {
    fn complete(&self, reply: Reply) {
        // The test is gone: the outcome is just dropped.
        let _ = self.outcome.send(reply);
    }

    fn set_canceller(&self, canceller: Canceller) {
        if let Err(unsent) = self.cancellers.send(canceller) {
            unsent.0.cancel();
        }
    }
}

/// The test's hold on a call: a [`TestCall`] and the capabilities
/// pipelined on it share it; once only the harness's clone is left, the
/// call is given up (its cancellers run), as when a promise is dropped.
pub(super) struct Hold;

/// What the harness keeps of a call to notice it was given up.
pub(super) struct Tracked {
    hold: Arc<Hold>,
    cancellers: Receiver<Canceller>,
    held: Vec<Canceller>,
    given_up: bool,
}

impl Tracked {
    /// Takes the cancellers that arrived; once the call is given up, moves
    /// them to `cancel`. True when nothing more can happen (drop it).
    pub(super) fn poll(&mut self, cancel: &mut Vec<Canceller>) -> bool {
        let record_gone = loop {
            match self.cancellers.try_recv() {
                Ok(canceller) => self.held.push(canceller),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        self.given_up |= Arc::strong_count(&self.hold) == 1;
        if self.given_up {
            cancel.append(&mut self.held);
        }
        self.given_up && record_gone
    }
}

/// A new call's record (its reply sink), the test's hold, and what the
/// harness tracks of it.
pub(super) fn new_call(side: Side, parent: Option<Arc<Hold>>) -> (Arc<CallRecord>, TestCall, Tracked) {
    let (outcome, outcomes) = channel();
    let (cancellers, arrived) = channel();
    let hold = Arc::new(Hold);
    let tracked = Tracked { hold: hold.clone(), cancellers: arrived, held: Vec::new(), given_up: false };
    let call = TestCall { hold, outcomes, outcome: RefCell::new(None), question: None, side, _parent: parent };
    (Arc::new(CallRecord { outcome, cancellers }), call, tracked)
}

/// A call the test made. Dropping it (and every capability pipelined on
/// it) gives it up, as dropping a promise does.
pub(crate) struct TestCall {
    pub(super) hold: Arc<Hold>,
    outcomes: Receiver<Reply>,
    outcome: RefCell<Option<Reply>>,
    pub(super) question: Option<u32>,
    pub(super) side: Side,
    /// The question this call was pipelined on, kept until this one is dropped.
    _parent: Option<Arc<Hold>>,
}

impl TestCall {
    /// The question id it went out as, if it went to the peer as a question.
    pub(crate) fn question(&self) -> Option<u32> {
        self.question
    }

    /// Its outcome, if it arrived.
    fn outcome(&self) -> Ref<'_, Option<Reply>> {
        if self.outcome.borrow().is_none() {
            if let Ok(reply) = self.outcomes.try_recv() {
                *self.outcome.borrow_mut() = Some(reply);
            }
        }
        self.outcome.borrow()
    }

    /// Whether its outcome has arrived.
    pub(crate) fn is_done(&self) -> bool {
        self.outcome().is_some()
    }

    /// Its error, if it failed.
    pub(crate) fn error(&self) -> Option<RpcError> {
        match &*self.outcome() {
            Some(Err(err)) => Some(err.clone()),
            _ => None,
        }
    }

    /// Its result decoded as a `T`, once it arrived.
    pub(crate) fn value<T: DeserializeOwned>(&self) -> Option<Result<T, RpcError>> {
        self.outcome().as_ref().map(|outcome| match outcome {
            Ok(payload) => payload.decode(),
            Err(err) => Err(err.clone()),
        })
    }

    /// Capability `index` of its result, once it arrived.
    pub(crate) fn cap(&self, index: usize) -> Option<Client> {
        match &*self.outcome() {
            Some(Ok(payload)) => match payload.caps.get(index) {
                Some(CapEntry::Object(client)) => Some(client.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}
