//! A capability that is not known yet: calls wait in a queue until it resolves.
//!
//! Used where a promise cannot be pipelined over a wire: the result of a call
//! to a local object, or a pipelined call arriving for an answer whose handler
//! is still running. Resolution forwards the queued calls in order, and calls
//! made after resolution go straight through; the lock keeps the two from
//! overtaking each other.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::channel::oneshot;
use futures::future::BoxFuture;

use super::{Client, ClientHook, OutgoingCall};
use crate::RpcError;

enum State {
    /// Calls to forward, and who waits to learn the target (`when_broken`).
    Waiting(VecDeque<OutgoingCall>, Vec<oneshot::Sender<Client>>),
    Resolved(Client),
}

/// A promised capability that queues calls until [`QueuedClient::resolve`].
pub(crate) struct QueuedClient {
    state: Mutex<State>,
}

impl QueuedClient {
    pub(crate) fn new() -> Self {
        QueuedClient { state: Mutex::new(State::Waiting(VecDeque::new(), Vec::new())) }
    }

    /// Resolves to `target` (or to a broken capability), forwarding queued calls in order.
    ///
    /// The queue is drained while holding the lock so that a concurrent call
    /// cannot overtake a queued one; `target.call` never blocks.
    pub(crate) fn resolve(&self, target: Result<Client, RpcError>) {
        let target = target.unwrap_or_else(Client::broken);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let previous = std::mem::replace(&mut *state, State::Resolved(target.clone()));
        if let State::Waiting(queue, waiters) = previous {
            // A call whose caller gave up while it waited is not worth sending.
            for call in queue.into_iter().filter(|call| !call.reply.is_cancelled()) {
                target.hook.call(call);
            }
            drop(state);
            for waiter in waiters {
                let _ = waiter.send(target.clone());
            }
        }
    }
}

impl ClientHook for QueuedClient {
    fn call(&self, call: OutgoingCall) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Waiting(queue, _) => queue.push_back(call),
            State::Resolved(target) => target.hook.call(call),
        }
    }

    fn when_broken(&self) -> BoxFuture<'static, RpcError> {
        let resolved = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *state {
                State::Resolved(target) => Ok(target.clone()),
                State::Waiting(_, waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Err(rx)
                }
            }
        };
        match resolved {
            Ok(target) => target.hook.when_broken(),
            Err(resolution) => Box::pin(async move {
                let Ok(target) = resolution.await else {
                    return RpcError::cancelled("the promise was dropped before it resolved");
                };
                let broken = target.hook.when_broken();
                drop(target);
                broken.await
            }),
        }
    }

    fn resolved(&self) -> Option<Client> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Resolved(target) => Some(target.clone()),
            State::Waiting(..) => None,
        }
    }

    fn describe(&self) -> String {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Waiting(queue, _) => format!("promise ({} calls queued)", queue.len()),
            State::Resolved(target) => format!("resolved to {}", target.hook.describe()),
        }
    }
}
