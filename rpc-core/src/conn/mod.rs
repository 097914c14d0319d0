//! Connections: the shell around the protocol, and its one lock.
//!
//! A [`Connection`] runs the protocol over any `AsyncRead + AsyncWrite`. The
//! protocol itself ([`crate::proto::Protocol`]: the tables, calls, streams)
//! is plain data and does no I/O; here it sits behind one mutex in
//! [`ConnShared`], and two tasks in `driver.rs` move bytes: the reader
//! decodes frames and feeds them to the protocol, the writer drains its
//! output in as few socket writes as possible.
//!
//! Locking discipline: the connection, then nothing. Anything that could
//! re-enter a connection (calling a capability, completing a promise,
//! dropping a capability, waking a task) is an effect the protocol returns;
//! the guard runs the effects after the lock is released.

mod answer;
mod config;
mod driver;
mod import;
mod metrics;
mod pipeline;
mod public;
mod received;
mod shell;
mod staging;
mod vectored;
mod writer;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use crate::RpcError;

use crate::proto::Effect;
pub(crate) use crate::proto::Protocol;
pub use config::{Config, Limits};
pub use metrics::ConnectionMetrics;
pub use public::{connect, serve, serve_with, Connection, ConnectionBuilder};
pub(crate) use received::{ReceivedReader, ReceivedWriter};

/// Wakes one task (the writer when there is output, the reader when the
/// connection closes): a flag and the one waker it needs. (A `Notify` keeps
/// a list of waiters behind a mutex, a `watch` receiver registers in one on
/// every poll; for the writer alone this costs 570 fewer instructions per
/// unary call.) Notifications before the task waits are kept, like a permit.
#[derive(Default)]
pub(crate) struct Signal {
    pending: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Signal {
    #[inline]
    pub(crate) fn notify(&self) {
        // Already pending: the task has been woken, or will look again.
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Resolves once notified since the last time it resolved.
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.pending.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Ready(());
            }
            // Listen, then look again: a notification in between is seen.
            self.waker.register(cx.waker());
            if self.pending.swap(false, Ordering::AcqRel) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

/// What a connection's tasks and handles share.
pub(crate) struct ConnShared {
    state: Mutex<Protocol>,
    /// This very value, for work deferred until its lock is released.
    me: std::sync::Weak<ConnShared>,
    /// Wakes the writer when the outgoing buffer becomes non-empty.
    wake_writer: Signal,
    /// The transport's write half, with whoever writes (see `writer.rs`).
    write_slot: writer::WriteSlot,
    /// Wakes the reader when the connection closes.
    wake_reader_on_close: Signal,
    /// Producers whose lanes hold items written without the lock, taken in
    /// at the next lock.
    staging: staging::Staging,
    /// Output we owe the peer (see `Protocol::owed`) in the write under way,
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
    /// Questions whose callers let go after the answer came back (see
    /// [`QuestionRef::release_returned`]): forgotten at the next lock.
    released: Mutex<Vec<u32>>,
    /// `released` is not empty.
    any_released: AtomicBool,
    /// `Finish`es of the peer's questions handled, plus one when the
    /// connection closes: an answer made when this was n, while it is still
    /// n, has been cancelled by neither (see `RemoteAnswer::is_cancelled`).
    cancellations: AtomicU64,
    /// Handles that keep the connection open (see [`UserRef`]).
    users: AtomicUsize,
    /// Set when the writer task has ended: everything it will write is written.
    writer_done: watch::Sender<bool>,
    pub(crate) config: Config,
    /// The reader runs on a current-thread runtime: calls it delivers to
    /// local objects are started by the reader itself (see `cap/local.rs`).
    /// On a multi-thread runtime they go to the objects' tasks, so a handler
    /// that computes or blocks runs beside the reader, not in its way.
    reader_starts_calls: bool,
    pub(crate) peer_limits: Limits,
    /// `rpc.connection`: calls and streams of this connection are its children.
    pub(crate) span: tracing::Span,
    /// Bytes read from and written to the transport (frames and handshake).
    pub(crate) io: metrics::IoCounters,
}

/// The locked state; deferred work runs when the guard goes.
pub(crate) struct StateGuard<'a> {
    /// Taken only in `drop`.
    guard: std::mem::ManuallyDrop<MutexGuard<'a, Protocol>>,
    shared: &'a ConnShared,
    was_empty: bool,
    /// Registered in the thread's held set (see [`ConnShared::lock_leaf`]).
    tracked: bool,
    /// Write the output in place when the guard goes, if the writer task is
    /// idle (see `writer.rs`), instead of waking it.
    write_in_place: bool,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = Protocol;
    #[inline]
    fn deref(&self) -> &Protocol {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Protocol {
        &mut self.guard
    }
}

thread_local! {
    /// An empty list with capacity, swapped in for the deferred work each
    /// guard takes, so locking does not allocate a new list every time.
    static SPARE_DEFERRED: std::cell::Cell<Vec<Effect>> = const { std::cell::Cell::new(Vec::new()) };
    /// Which connections this thread has locked right now. Only `Cell`s (no
    /// destructor, so no lazy registration check on each access): every lock
    /// and unlock goes through it.
    static HELD: Held = const { Held { first: Cell::new(0), has_more: Cell::new(false), has_late: Cell::new(false) } };
    /// Nested locks of further connections (rare).
    static HELD_MORE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Work that asked for a connection's state while this thread held it (a
    /// handle dropped under the lock): runs once no state is held.
    static LATE: RefCell<Vec<LateWork>> = const { RefCell::new(Vec::new()) };
    /// The connection whose writer is not woken for output made on this
    /// thread right now (see [`ConnShared::holding_output`]), and whether
    /// some was made.
    static OUTPUT_HELD: Cell<(usize, bool)> = const { Cell::new((0, false)) };
}

type LateWork = Box<dyn FnOnce()>;

/// A thread's locked connections: almost always none or one (`first`), so
/// the common case costs a `Cell` read; nested locks of other connections
/// spill into `HELD_MORE`.
struct Held {
    first: Cell<usize>,
    /// `HELD_MORE` is not empty.
    has_more: Cell<bool>,
    /// `LATE` is not empty.
    has_late: Cell<bool>,
}

impl Held {
    #[inline]
    fn contains(&self, key: usize) -> bool {
        self.first.get() == key || (self.has_more.get() && HELD_MORE.with(|more| more.borrow().contains(&key)))
    }

    #[inline]
    fn push(&self, key: usize) {
        if self.first.get() == 0 {
            self.first.set(key);
        } else {
            HELD_MORE.with(|more| more.borrow_mut().push(key));
            self.has_more.set(true);
        }
    }

    /// Forgets `key`; returns whether nothing is held any more.
    #[inline]
    fn remove(&self, key: usize) -> bool {
        if self.first.get() == key && !self.has_more.get() {
            // The common case: one connection locked, now released.
            self.first.set(0);
            return true;
        }
        HELD_MORE.with(|more| {
            let mut more = more.borrow_mut();
            if let Some(at) = more.iter().rposition(|&k| k == key) {
                more.remove(at);
            } else if self.first.get() == key {
                self.first.set(more.pop().unwrap_or(0));
            }
            self.has_more.set(!more.is_empty());
        });
        self.first.get() == 0
    }
}

impl Drop for StateGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: taken once, here; `self.guard` is not used again.
        let mut guard = unsafe { std::mem::ManuallyDrop::take(&mut self.guard) };
        let effects = (!guard.effects.is_empty()).then(|| std::mem::replace(&mut guard.effects, SPARE_DEFERRED.take()));
        let in_place = if self.write_in_place { self.shared.take_in_place(&mut guard) } else { None };
        let wake = in_place.is_none()
            && (self.was_empty || self.write_in_place)
            && !(guard.out.is_empty() && guard.ready.is_empty());
        drop(guard);
        let nothing_held = self.tracked && HELD.with(|held| held.remove(self.shared.key()) && held.has_late.get());
        if let Some(output) = in_place {
            self.shared.write_in_place(output);
        } else if wake {
            self.shared.wake_writer_unless_held();
        }
        if let Some(mut effects) = effects {
            for work in effects.drain(..) {
                work.run();
            }
            if effects.capacity() <= 64 {
                SPARE_DEFERRED.set(effects);
            }
        }
        if nothing_held {
            // Something was asked of a connection while it was locked.
            run_late_work();
        }
    }
}

/// Runs what handles asked of a connection while its state was locked, in
/// the order they asked (work may queue more: it runs too).
fn run_late_work() {
    loop {
        HELD.with(|held| held.has_late.set(false));
        let batch = LATE.with(|late| std::mem::take(&mut *late.borrow_mut()));
        if batch.is_empty() {
            return;
        }
        for work in batch {
            work();
        }
    }
}

impl ConnShared {
    /// Locks the state. Must not be called while this thread holds the same
    /// connection's state: handles that may be dropped anywhere use
    /// [`ConnShared::with_state`] instead.
    #[inline]
    pub(crate) fn lock(&self) -> StateGuard<'_> {
        let me = self.key();
        HELD.with(|held| {
            // A second lock here would deadlock the thread (and with it every
            // connection its runtime serves): fail loudly instead.
            assert!(!held.contains(me), "a connection's state was locked again by the thread holding it");
            held.push(me);
        });
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.guard(guard, true)
    }

    /// The guard of a freshly locked state, with every listed lane's items
    /// taken in first (after `was_empty`: items taken in count as new
    /// output, so the writer is woken if they are to go).
    #[inline]
    fn guard<'a>(&'a self, guard: MutexGuard<'a, Protocol>, tracked: bool) -> StateGuard<'a> {
        let was_empty = guard.out.is_empty() && guard.ready.is_empty();
        let mut guard = StateGuard {
            guard: std::mem::ManuallyDrop::new(guard),
            shared: self,
            was_empty,
            tracked,
            write_in_place: false,
        };
        if self.staging.any() {
            for id in self.staging.take() {
                guard.producer_absorb(id);
            }
        }
        if self.any_released.load(Ordering::Acquire) {
            // Drained in place, keeping the list's capacity (releasing
            // defers anything that could lock again).
            let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            self.any_released.store(false, Ordering::Release);
            for id in released.drain(..) {
                guard.release_question(id);
            }
        }
        guard
    }

    /// Lists returned question `id` to be released at the next lock;
    /// false, listing nothing, if the list is full.
    fn defer_release(&self, id: u32) -> bool {
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        if released.len() >= MAX_DEFERRED_RELEASES {
            return false;
        }
        released.push(id);
        self.any_released.store(true, Ordering::Release);
        true
    }

    /// Locks the state for a command that runs no code of a handle or a user
    /// and drops nothing while locked (it defers), so nothing can ask for
    /// this connection again on this thread before the guard goes: the
    /// thread's held set is left alone (a stream item's write takes this,
    /// and the bookkeeping was a sixth of its cost). Still refuses, loudly,
    /// a thread that holds the lock already.
    #[inline]
    pub(crate) fn lock_leaf(&self) -> StateGuard<'_> {
        let me = self.key();
        HELD.with(|held| assert!(!held.contains(me), "a connection's state was locked again by the thread holding it"));
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.guard(guard, false)
    }

    /// Wakes the writer for new output, unless this thread is holding this
    /// connection's output back (it then writes it itself, see
    /// [`Self::holding_output`]).
    #[inline]
    fn wake_writer_unless_held(&self) {
        let (held, _) = OUTPUT_HELD.get();
        if held == self.key() {
            OUTPUT_HELD.set((held, true));
        } else {
            self.wake_writer.notify();
        }
    }

    /// Runs `work` (the calls a reader starts) holding back the output it
    /// makes on this connection, then writes that output in place in one
    /// write if the writer task is idle, or wakes it: the replies of a batch
    /// of calls leave together, without a turn of the writer task.
    pub(super) fn holding_output(&self, work: impl FnOnce()) {
        struct Hold<'a> {
            shared: &'a ConnShared,
            outer: (usize, bool),
        }
        impl Drop for Hold<'_> {
            fn drop(&mut self) {
                let (_, made) = OUTPUT_HELD.replace(self.outer);
                if made {
                    let mut state = self.shared.lock();
                    state.write_in_place = true;
                }
            }
        }
        let _hold = Hold { shared: self, outer: OUTPUT_HELD.replace((self.key(), false)) };
        work();
    }

    /// Runs `work` on the locked state: now, or, if this thread holds the
    /// state already (a handle dropped under the lock), once it is released.
    /// Drop implementations that talk to the connection go through here, so
    /// no path can drop a handle into a self-deadlock.
    pub(crate) fn with_state(&self, work: impl FnOnce(&mut StateGuard<'_>) + 'static) {
        let me = self.key();
        if HELD.with(|held| held.contains(me)) {
            // The connection is gone if nothing holds it: nothing to do then.
            let Some(shared) = self.me.upgrade() else { return };
            LATE.with(|late| late.borrow_mut().push(Box::new(move || work(&mut shared.lock()))));
            HELD.with(|held| held.has_late.set(true));
        } else {
            work(&mut self.lock());
        }
    }

    /// Counts a `Finish` about to be handled (see `cancellations`).
    #[inline]
    fn note_cancellation(&self, message: &crate::wire::Message) {
        if let crate::wire::Message::Finish { .. } = message {
            self.cancellations.fetch_add(1, Ordering::Release);
        }
    }

    fn key(&self) -> usize {
        self as *const ConnShared as usize
    }

    /// Closes the connection with `reason`, failing everything pending.
    pub(crate) fn close(&self, reason: RpcError, tell_peer: bool) {
        let mut state = self.lock();
        self.cancellations.fetch_add(1, Ordering::Release);
        if state.close(reason.clone(), tell_peer) {
            drop(state);
            metrics::trace_close(&self.span, &reason, tell_peer);
            self.closed.send_replace(Some(reason));
            self.wake_writer.notify();
            self.wake_reader_on_close.notify();
        }
    }

    pub(crate) fn closed_reason(&self) -> Option<RpcError> {
        self.closed.borrow().clone()
    }

    /// Bytes of output we owe the peer and have not written yet.
    fn owed_unsent(&self, state: &Protocol) -> usize {
        state.owed + self.owed_in_flight.load(Ordering::Acquire)
    }

    /// Whether the output we owe the peer is over the bound, so frames that
    /// ask for more must wait (moot once writing has failed).
    fn owes_too_much(&self, state: &Protocol) -> bool {
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
            self.shared.wake_writer.notify();
        }
    }
}

/// Returned questions released without a lock of their own, at most, before
/// a release takes the lock (memory for ids, not more).
const MAX_DEFERRED_RELEASES: usize = 1024;

/// The caller's hold on a question: dropping it tells the connection the
/// answer is no longer wanted (a `Finish`).
pub(crate) struct QuestionRef {
    user: UserRef,
    pub(crate) id: u32,
    /// Released by [`QuestionRef::release_returned`].
    returned: bool,
}

impl QuestionRef {
    pub(crate) fn new(user: UserRef, id: u32) -> QuestionRef {
        QuestionRef { user, id, returned: false }
    }

    /// Lets go of a question whose answer came back holding no
    /// capabilities. Nothing waits on that (no handler to cancel, no
    /// `Finish` to send, no import to release), so the connection forgets
    /// it at its next lock instead of in a lock of its own now (about 300
    /// instructions a call). Every frame read, write and call takes one.
    pub(crate) fn release_returned(mut self) {
        self.returned = true;
    }

    pub(crate) fn conn(&self) -> &Arc<ConnShared> {
        self.user.shared()
    }
}

impl Drop for QuestionRef {
    fn drop(&mut self) {
        let id = self.id;
        if self.returned && self.user.shared().defer_release(id) {
            return;
        }
        self.user.shared().with_state(move |state| state.release_question(id));
    }
}

/// A client for capability `cap` of the answer to `question` (pipelining).
pub(crate) fn pipeline_client(handle: crate::promise::CallHandle, question: u32, cap: u32) -> pipeline::PipelineClient {
    pipeline::PipelineClient::new(handle, question, cap)
}
