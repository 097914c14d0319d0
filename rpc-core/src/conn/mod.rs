//! Connections: one peer, one socket, four tables.
//!
//! A [`Connection`] runs the protocol over any `AsyncRead + AsyncWrite`. Its
//! state ([`state::ConnState`]) holds the four capability tables (questions we
//! asked, answers we owe, objects we export, objects we import) and the
//! outgoing byte buffer; it does no I/O. Two tasks in `driver.rs` move bytes:
//! the reader decodes frames and feeds them to the state, the writer drains
//! the buffer in as few socket writes as possible.
//!
//! Locking discipline: the state sits behind one mutex. Anything that could
//! re-enter a connection (calling a capability, completing a promise, dropping
//! a capability) is pushed onto the guard's deferred list and runs after the
//! lock is released.

mod answer;
mod config;
mod driver;
mod import;
mod pipeline;
mod public;
mod state;
mod tables;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use crate::cap::{Canceller, Client, OutgoingCall, QueuedClient, Reply, ReplySink};
use crate::RpcError;

pub use config::{Config, Limits};
pub use public::{connect, serve, serve_with, Connection, ConnectionBuilder};
pub(crate) use state::ConnState;

/// What a connection's tasks and handles share.
pub(crate) struct ConnShared {
    state: Mutex<ConnState>,
    /// Wakes the writer when the outgoing buffer becomes non-empty.
    wake_writer: Notify,
    /// Output we owe the peer (see `ConnState::owed`) in the write under way,
    /// not yet written.
    owed_in_flight: AtomicUsize,
    /// The writer made progress (or gave up): a reader waiting for room in
    /// the unsent output looks again.
    output_drained: Notify,
    /// The writer's last write failed; nothing more will be written.
    write_failed: AtomicBool,
    /// The peer stopped reading: on close, drop unsent output at once
    /// instead of trying to write it.
    abandon_output: AtomicBool,
    /// Set once, with the reason, when the connection closes.
    closed: watch::Sender<Option<RpcError>>,
    /// Handles that keep the connection open (see [`UserRef`]).
    users: AtomicUsize,
    pub(crate) config: Config,
    pub(crate) peer_limits: Limits,
}

/// Work that must run after the state lock is released.
pub(crate) enum Deferred {
    Call(Client, OutgoingCall),
    Complete(Arc<dyn ReplySink>, Reply),
    SetCanceller(Arc<dyn ReplySink>, Canceller),
    Cancel(Canceller),
    Resolve(Arc<QueuedClient>, Result<Client, RpcError>),
    /// Values whose drop may re-enter a connection.
    Drop(Box<dyn Send>),
}

impl Deferred {
    fn run(self) {
        match self {
            Deferred::Call(target, call) => target.hook.call(call),
            Deferred::Complete(sink, reply) => sink.complete(reply),
            Deferred::SetCanceller(sink, canceller) => sink.set_canceller(canceller),
            Deferred::Cancel(canceller) => canceller.cancel(),
            Deferred::Resolve(queued, target) => queued.resolve(target),
            Deferred::Drop(value) => drop(value),
        }
    }
}

/// The locked state; deferred work runs when the guard goes.
pub(crate) struct StateGuard<'a> {
    guard: Option<MutexGuard<'a, ConnState>>,
    shared: &'a ConnShared,
    was_empty: bool,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = ConnState;
    fn deref(&self) -> &ConnState {
        self.guard.as_ref().expect("guard is present until drop")
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut ConnState {
        self.guard.as_mut().expect("guard is present until drop")
    }
}

thread_local! {
    /// An empty list with capacity, swapped in for the deferred work each
    /// guard takes, so locking does not allocate a new list every time.
    static SPARE_DEFERRED: std::cell::Cell<Vec<Deferred>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else { return };
        let mut deferred = if guard.deferred.is_empty() {
            Vec::new()
        } else {
            std::mem::replace(&mut guard.deferred, SPARE_DEFERRED.take())
        };
        let wake = self.was_empty && !(guard.out.is_empty() && guard.ready.is_empty());
        drop(guard);
        if wake {
            self.shared.wake_writer.notify_one();
        }
        for work in deferred.drain(..) {
            work.run();
        }
        if deferred.capacity() > 0 && deferred.capacity() <= 64 {
            SPARE_DEFERRED.set(deferred);
        }
    }
}

impl ConnShared {
    pub(crate) fn lock(&self) -> StateGuard<'_> {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = guard.out.is_empty() && guard.ready.is_empty();
        StateGuard { guard: Some(guard), shared: self, was_empty }
    }

    /// Closes the connection with `reason`, failing everything pending.
    pub(crate) fn close(&self, reason: RpcError, tell_peer: bool) {
        let mut state = self.lock();
        if state.close(reason.clone(), tell_peer) {
            drop(state);
            self.closed.send_replace(Some(reason));
            self.wake_writer.notify_one();
        }
    }

    pub(crate) fn closed_reason(&self) -> Option<RpcError> {
        self.closed.borrow().clone()
    }

    /// Bytes of output we owe the peer and have not written yet.
    fn owed_unsent(&self, state: &ConnState) -> usize {
        state.owed + self.owed_in_flight.load(Ordering::Acquire)
    }

    /// Whether the output we owe the peer is over the bound, so frames that
    /// ask for more must wait (moot once writing has failed).
    fn owes_too_much(&self, state: &ConnState) -> bool {
        self.owed_unsent(state) > self.config.max_unsent_output && !self.write_failed.load(Ordering::Acquire)
    }

    fn user_ref(self: &Arc<Self>) -> UserRef {
        self.users.fetch_add(1, Ordering::AcqRel);
        UserRef { shared: self.clone() }
    }
}

/// A handle that keeps the connection open: the [`Connection`] itself, every
/// import and every question in flight. When the last one goes and nothing is
/// exported, the connection closes gracefully.
pub(crate) struct UserRef {
    shared: Arc<ConnShared>,
}

impl UserRef {
    pub(crate) fn shared(&self) -> &Arc<ConnShared> {
        &self.shared
    }
}

impl Clone for UserRef {
    fn clone(&self) -> Self {
        self.shared.user_ref()
    }
}

impl Drop for UserRef {
    fn drop(&mut self) {
        if self.shared.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The writer checks whether the connection is now idle.
            self.shared.wake_writer.notify_one();
        }
    }
}

/// The caller's hold on a question: dropping it tells the connection the
/// answer is no longer wanted (a `Finish`).
pub(crate) struct QuestionRef {
    user: UserRef,
    pub(crate) id: u32,
}

impl QuestionRef {
    pub(crate) fn conn(&self) -> &Arc<ConnShared> {
        self.user.shared()
    }
}

impl Drop for QuestionRef {
    fn drop(&mut self) {
        self.user.shared().lock().release_question(self.id);
    }
}

/// A client for capability `cap` of the answer to `question` (pipelining).
pub(crate) fn pipeline_client(handle: crate::promise::CallHandle, question: u32, cap: u32) -> pipeline::PipelineClient {
    pipeline::PipelineClient::new(handle, question, cap)
}
