//! A capability that is not known yet: calls wait in a queue until it resolves.
//!
//! Used where a promise cannot be pipelined over a wire: the result of a call
//! to a local object, or a pipelined call arriving for an answer whose handler
//! is still running. Resolution forwards the queued calls in order, and calls
//! made after resolution go straight through. No call is forwarded with the
//! lock held (forwarding may lock a connection, and a connection holding its
//! lock may ask a promise whether it has resolved): calls made while the
//! queue is being forwarded join it, so none overtakes another.

use std::sync::Mutex;

use futures::channel::oneshot;
use futures::future::BoxFuture;
use smallvec::SmallVec;

use super::{Client, ClientHook, OutgoingCall};
use crate::RpcError;

/// Queued calls, in order. Most promises get one pipelined call at most
/// (a chain's every hop does): it waits inline, without an allocation.
type Queue = SmallVec<[OutgoingCall; 1]>;

enum State {
    /// Calls to forward, and who waits to learn the target (`when_broken`).
    Waiting(Queue, Vec<oneshot::Sender<Client>>),
    /// The target is known and the queue is being forwarded to it, outside
    /// the lock; calls made meanwhile join the queue, behind the others.
    Forwarding(Client, Queue),
    Resolved(Client),
}

/// A promised capability that queues calls until [`QueuedClient::resolve`].
pub(crate) struct QueuedClient {
    state: Mutex<State>,
}

impl QueuedClient {
    pub(crate) fn new() -> Self {
        QueuedClient { state: Mutex::new(State::Waiting(Queue::new(), Vec::new())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves to `target` (or to a broken capability), forwarding queued calls in order.
    ///
    /// Forwarding may lock a connection, so it happens with this lock
    /// released (a connection holding its own lock may ask this promise
    /// whether it has resolved): the queue is taken out a batch at a time,
    /// and calls made meanwhile queue behind it, so none overtakes another.
    /// Only once the queue is empty do calls go straight to the target.
    pub(crate) fn resolve(&self, target: Result<Client, RpcError>) {
        let target = target.unwrap_or_else(Client::broken);
        let (mut batch, waiters) = {
            let mut state = self.lock();
            let forwarding = State::Forwarding(target.clone(), Queue::new());
            match std::mem::replace(&mut *state, forwarding) {
                State::Waiting(queue, waiters) => (queue, waiters),
                other => return *state = other,
            }
        };
        for waiter in waiters {
            let _ = waiter.send(target.clone());
        }
        loop {
            // A call whose caller gave up while it waited is not worth sending.
            for call in batch.drain(..).filter(|call| !call.reply.is_cancelled()) {
                target.hook.call(call);
            }
            let mut state = self.lock();
            match &mut *state {
                State::Forwarding(_, queue) if !queue.is_empty() => std::mem::swap(queue, &mut batch),
                _ => return *state = State::Resolved(target),
            }
        }
    }
}

impl ClientHook for QueuedClient {
    fn call(&self, call: OutgoingCall) {
        let target = {
            let mut state = self.lock();
            match &mut *state {
                State::Waiting(queue, _) | State::Forwarding(_, queue) => return queue.push(call),
                State::Resolved(target) => target.clone(),
            }
        };
        target.hook.call(call);
    }

    fn when_broken(&self) -> BoxFuture<'static, RpcError> {
        let resolved = {
            let mut state = self.lock();
            match &mut *state {
                State::Resolved(target) | State::Forwarding(target, _) => Ok(target.clone()),
                State::Waiting(_, waiters) => {
                    let (tx, rx) = oneshot::channel();
                    crate::promise::push_pruned(waiters, tx, |w| !w.is_canceled());
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

    /// The target once every queued call has gone to it (while the queue
    /// is still being forwarded, a shortcut to the target would overtake it).
    fn resolved(&self) -> Option<Client> {
        match &*self.lock() {
            State::Resolved(target) => Some(target.clone()),
            State::Waiting(..) | State::Forwarding(..) => None,
        }
    }

    fn describe(&self) -> String {
        let target = match &*self.lock() {
            State::Waiting(queue, _) => return format!("promise ({} calls queued)", queue.len()),
            State::Forwarding(_, queue) => return format!("resolving promise ({} calls queued)", queue.len()),
            State::Resolved(target) => target.clone(),
        };
        format!("resolved to {}", target.hook.describe())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::payload::Payload;
    use crate::promise::CallState;

    /// A target whose `call` asks the promise it was resolved from about
    /// itself, as a connection exporting a payload does (`shortened`).
    struct AsksBack {
        promise: Arc<QueuedClient>,
        seen: Mutex<Vec<(u16, bool)>>,
    }

    impl ClientHook for AsksBack {
        fn call(&self, call: OutgoingCall) {
            let resolved = self.promise.resolved().is_some();
            self.seen.lock().unwrap().push((call.method, resolved));
        }

        fn describe(&self) -> String {
            "asks back".into()
        }
    }

    fn call(method: u16) -> OutgoingCall {
        let payload = Payload::encode(&()).unwrap();
        OutgoingCall { interface: 1, method, payload, reply: CallState::new() }
    }

    #[test]
    fn forwarding_runs_without_the_lock_and_keeps_call_order() {
        let promise = Arc::new(QueuedClient::new());
        for method in 0..3 {
            promise.call(call(method));
        }
        let target = Arc::new(AsksBack { promise: promise.clone(), seen: Mutex::new(Vec::new()) });
        let client = Client { hook: target.clone() };
        // With the lock held while forwarding, `resolved()` inside the
        // target's `call` would deadlock: resolve on a thread, bounded.
        let (done, finished) = std::sync::mpsc::channel();
        let resolving = promise.clone();
        std::thread::spawn(move || {
            resolving.resolve(Ok(client));
            let _ = done.send(());
        });
        let waited = finished.recv_timeout(std::time::Duration::from_secs(10));
        assert!(waited.is_ok(), "resolve deadlocked on its own lock");
        promise.call(call(3));
        let seen = target.seen.lock().unwrap().clone();
        // Queued calls see the promise still forwarding; the later one, resolved.
        assert_eq!(seen, vec![(0, false), (1, false), (2, false), (3, true)]);
    }
}
