//! Effects: what the protocol asks its owner to do once it is no longer
//! borrowed (for a connection, once its lock is released).

use std::sync::Arc;

use super::{Answer, Question};
use crate::cap::{Canceller, Client, OutgoingCall, QueuedClient, Reply, ReplySink};
use crate::payload::{CapEntry, Payload};
use crate::RpcError;

/// Work that may re-enter a connection, run in the order it was pushed.
pub(crate) enum Effect {
    /// Deliver a call to a capability.
    Call(Client, OutgoingCall),
    /// Complete a promise (ours, or an answer the peer awaits).
    Complete(Arc<dyn ReplySink>, Reply),
    SetCanceller(Arc<dyn ReplySink>, Canceller),
    Cancel(Canceller),
    Resolve(Arc<QueuedClient>, Result<Client, RpcError>),
    /// Values whose drop may re-enter a connection.
    Drop(Box<dyn Send>),
    /// The same for the values dropped most often (inline: no box each).
    DropQuestion(Question),
    DropAnswer(Answer),
    DropClient(Client),
    /// A call carrying these failed: its stream ends end with the error.
    FailStreams(Vec<CapEntry>, RpcError),
    /// A task waiting on a stream can go on.
    Wake(std::task::Waker),
}

impl Effect {
    /// Does the work. Never with the protocol's lock held.
    pub(crate) fn run(self) {
        match self {
            Effect::Call(target, call) => target.hook.call(call),
            Effect::Complete(sink, reply) => sink.complete(reply),
            Effect::SetCanceller(sink, canceller) => sink.set_canceller(canceller),
            Effect::Cancel(canceller) => canceller.cancel(),
            Effect::Resolve(queued, target) => queued.resolve(target),
            Effect::Drop(value) => drop(value),
            Effect::DropQuestion(question) => drop(question),
            Effect::DropAnswer(answer) => drop(answer),
            Effect::DropClient(client) => drop(client),
            Effect::FailStreams(caps, err) => crate::payload::fail_streams(caps, &err),
            Effect::Wake(waker) => waker.wake(),
        }
    }
}

/// Whether dropping a value could run code that locks a connection.
pub(crate) trait MayReenter {
    /// Conservative by default: anything not known to be inert is deferred.
    fn may_reenter(&self) -> bool {
        true
    }
}

impl MayReenter for Client {}
impl MayReenter for Canceller {}
impl MayReenter for Box<dyn Send> {}

impl MayReenter for Payload {
    fn may_reenter(&self) -> bool {
        !self.caps.is_empty()
    }
}

impl MayReenter for Vec<CapEntry> {
    fn may_reenter(&self) -> bool {
        !self.is_empty()
    }
}

impl MayReenter for Vec<Client> {
    fn may_reenter(&self) -> bool {
        !self.is_empty()
    }
}

impl<T: MayReenter> MayReenter for Option<T> {
    fn may_reenter(&self) -> bool {
        self.as_ref().is_some_and(T::may_reenter)
    }
}

impl<T: MayReenter> MayReenter for Result<T, RpcError> {
    fn may_reenter(&self) -> bool {
        self.as_ref().is_ok_and(T::may_reenter)
    }
}

impl MayReenter for Question {
    fn may_reenter(&self) -> bool {
        self.sink.is_some() || self.returned.may_reenter() || !self.pipes.is_empty()
    }
}

impl MayReenter for Answer {
    fn may_reenter(&self) -> bool {
        self.canceller.is_some() || self.returned.may_reenter() || !self.pipes.is_empty()
    }
}
