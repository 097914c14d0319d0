//! A local object and its ordered dispatch queue.
//!
//! Every call to a local object, whether made in-process or arriving from
//! any connection, goes through one unbounded queue. Calls are started in
//! queue order (E-order) by whoever holds the queue's starting token, each
//! handler polled once as it starts (most finish there, with no more
//! bookkeeping); handlers that wait are polled together by the object's
//! serving task, so they interleave at their await points but never start
//! out of order.
//!
//! Who starts a call depends on where it came from. A call made by a task
//! wakes the object's serving task (spawned by the first such call). A call
//! that a connection's reader on a current-thread runtime delivers (a
//! frame, or a reply that releases pipelined calls) is started by that
//! reader just before it next waits for the socket: no task hop for the
//! common call that finishes at once, and a pipelined chain resolves in one
//! pass, its replies leaving in one write. On a multi-thread runtime the
//! reader leaves them to the serving task, so a handler that computes or
//! blocks runs beside the reader, not in its way
//! (`ConnShared::reader_starts_calls`). User code (handlers, destructors)
//! runs with collecting switched off, so the calls it makes always take the
//! serving-task path.
//!
//! When the last handle to the object is dropped the queue closes, the
//! serving task finishes the handlers still running, and the object is
//! dropped (an object that never needed its serving task goes with its last
//! handle; either way its destructor runs with collecting off, as user code).
//!
//! A handler that panics fails its own call and nothing more: the panic is
//! caught wherever user code runs, in the serving task or in a reader (the
//! synchronous part of dispatch, every poll of a handler, dropping a
//! finished handler, and the object's destructor), the caller gets
//! an [`ErrorKind::HandlerPanicked`](crate::ErrorKind::HandlerPanicked) error,
//! and the task goes on serving the object's other calls.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::{AbortHandle, Abortable, CatchUnwind};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::AtomicWaker;
use futures::FutureExt;

use super::dispatch::{panic_error, Dispatch, DispatchFuture, IncomingCall, InterfaceInfo, Reply};
use super::{Canceller, ClientHook, OutgoingCall, ReplySink};
use crate::RpcError;

/// The hook for an object implemented in this process.
pub(crate) struct LocalServer {
    shared: Arc<Shared>,
}

/// An object and its calls in order: its handles push, whoever holds the
/// starting token (the serving task, or a connection's reader between two
/// reads) takes them off and starts them.
/// (A mutex and a deque rather than a tokio channel: a channel allocates a
/// block of 32 calls up front, per object, and costs more per call.)
struct Shared {
    /// Dropped by hand (see `Drop for Shared`).
    object: ManuallyDrop<Arc<dyn Dispatch>>,
    state: Mutex<QueueState>,
    /// The serving task's waker.
    waker: AtomicWaker,
}

#[derive(Default)]
struct QueueState {
    calls: VecDeque<OutgoingCall>,
    /// The object's last handle is gone: no more calls will come.
    closed: bool,
    /// The serving task was spawned.
    serving: bool,
    /// Someone is starting calls (the token that keeps starts in queue
    /// order): it takes every call queued until it finds the queue empty.
    starting: bool,
    /// Listed in this thread's [`COLLECTED`], not yet started.
    listed: bool,
    /// Handlers started by a reader that wait: the serving task adopts them.
    handed: Vec<Running>,
}

thread_local! {
    /// Set while a connection's reader handles frames on this thread: a
    /// call that reaches a local object then waits in its queue, and the
    /// object is listed in [`COLLECTED`], for the reader to start before it
    /// next waits for the socket, with no serving task woken (and, for an
    /// object whose handlers finish at once, none ever spawned).
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
    static COLLECTED: RefCell<VecDeque<Arc<Shared>>> = const { RefCell::new(VecDeque::new()) };
    /// How many more collected calls this thread starts before it stops
    /// (see [`start_collected_some`]).
    static START_BUDGET: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// While alive, calls that reach local objects on this thread are collected
/// (see [`start_collected`]). Only a connection's reader takes this, around
/// work that does not wait; no user code runs while it is set.
pub(crate) struct Collecting {
    was: bool,
}

impl Collecting {
    #[inline]
    pub(crate) fn begin() -> Collecting {
        Collecting { was: COLLECTING.replace(true) }
    }

    /// User code runs with collecting off: the calls it makes go to their
    /// serving tasks as always, so a reader never starts one in the middle
    /// of another handler.
    #[inline]
    fn pause() -> Collecting {
        Collecting { was: COLLECTING.replace(false) }
    }
}

impl Drop for Collecting {
    #[inline]
    fn drop(&mut self) {
        COLLECTING.set(self.was);
    }
}

/// Whether calls collected on this thread wait to be started.
#[inline]
pub(crate) fn has_collected() -> bool {
    COLLECTED.with(|list| !list.borrow().is_empty())
}

/// Starts the calls collected on this thread, in each object's queue order,
/// and those their replies deliver in turn (a pipelined chain resolves here
/// in one go). A connection's reader calls this before it waits: by then it
/// has handled every frame that had arrived, so a call whose `Finish` came
/// with it never starts.
pub(crate) fn start_collected() {
    start_collected_some(usize::MAX);
}

/// [`start_collected`], stopping once `budget` calls have started (the
/// rest stay collected, in order); returns whether any are left. A reader
/// starts a large batch this way, writing each part's replies before it
/// starts the next (`conn/driver.rs`).
pub(crate) fn start_collected_some(budget: usize) -> bool {
    let outer = START_BUDGET.replace(budget);
    while START_BUDGET.get() > 0 {
        let Some(object) = COLLECTED.with(|list| list.borrow_mut().pop_front()) else { break };
        object.start_listed();
    }
    START_BUDGET.set(outer);
    has_collected()
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts this listed object's queued calls here, unless someone else
    /// holds the starting token (then it takes them: it empties the queue
    /// before it lets the token go). Handlers that wait go to the serving
    /// task, spawned now if need be, to be polled with its waker.
    fn start_listed(self: &Arc<Self>) {
        let mut state = self.lock();
        state.listed = false;
        if state.starting {
            return;
        }
        state.starting = true;
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut handed = false;
        let mut relist = false;
        loop {
            let budget = START_BUDGET.get();
            if budget == 0 {
                // This thread's budget is spent: the rest start in its next
                // turn, this object first (listed again at the front).
                relist = !state.calls.is_empty() && !std::mem::replace(&mut state.listed, true);
                break;
            }
            let Some(call) = state.calls.pop_front() else { break };
            START_BUDGET.set(budget - 1);
            drop(state);
            let running = {
                // A reply may deliver pipelined calls to local objects: they join the list.
                let _collecting = Collecting::begin();
                start(&self.object, call, &mut cx)
            };
            state = self.lock();
            if let Some(running) = running {
                state.handed.push(running);
                handed = true;
            }
        }
        state.starting = false;
        if relist {
            COLLECTED.with(|list| list.borrow_mut().push_front(self.clone()));
        }
        if !handed {
            // A serving task that found the object closed while this held
            // the token did not end (it ends only once no one starts calls):
            // it looks again.
            let wake = state.closed && state.serving;
            drop(state);
            if wake {
                self.waker.wake();
            }
            return;
        }
        let spawn = !std::mem::replace(&mut state.serving, true);
        drop(state);
        if !spawn {
            return self.waker.wake();
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(Serve { shared: self.clone(), running: FuturesUnordered::new() })),
            Err(_) => {
                // Unreachable from a reader (it runs on a runtime); fail rather than hang.
                let handed = std::mem::take(&mut self.lock().handed);
                for running in handed {
                    running.reply.complete(Err(no_runtime()));
                }
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The object is the user's, and its destructor user code: it runs
        // with collecting off (an object whose calls all finished where a
        // reader started them has no serving task, and goes wherever its
        // last handle does: often in a reader, as the peer releases it).
        // A destructor that panics takes nothing else down (a handle may go
        // in a connection's reader), as with a handler's panic.
        let _user_code = Collecting::pause();
        let object = &mut self.object;
        // SAFETY: dropped once, here; `self.object` is not used again.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(object) }));
    }
}

fn no_runtime() -> RpcError {
    RpcError::new(crate::ErrorKind::Unimplemented, "calls need a Tokio runtime")
}

impl LocalServer {
    pub(crate) fn new(object: Arc<dyn Dispatch>) -> Self {
        let object = ManuallyDrop::new(object);
        LocalServer { shared: Arc::new(Shared { object, state: Mutex::default(), waker: AtomicWaker::new() }) }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // The serving task finishes what runs, then ends (dropping the object).
        self.shared.lock().closed = true;
        self.shared.waker.wake();
    }
}

impl ClientHook for LocalServer {
    fn call(&self, call: OutgoingCall) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.closed {
            drop(state);
            return call.reply.complete(Err(RpcError::disconnected("the object is shutting down")));
        }
        if COLLECTING.get() {
            state.calls.push_back(call);
            if !std::mem::replace(&mut state.listed, true) {
                drop(state);
                COLLECTED.with(|list| list.borrow_mut().push_back(shared.clone()));
            }
            return;
        }
        if state.serving {
            state.calls.push_back(call);
            drop(state);
            return shared.waker.wake();
        }
        // The first call that needs the serving task spawns it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(state);
            return call.reply.complete(Err(no_runtime()));
        };
        state.calls.push_back(call);
        state.serving = true;
        drop(state);
        drop(runtime.spawn(Serve { shared: shared.clone(), running: FuturesUnordered::new() }));
    }

    fn describe(&self) -> String {
        format!("local {}", self.shared.object.interface().name)
    }
}

/// A started handler: the user's future, abortable, with its panics caught,
/// and where its reply goes. A concrete type, so a running call costs no
/// second box.
struct Running {
    /// `None` once finished (dropped early, so a panicking destructor is caught too).
    handler: Option<Abortable<CatchUnwind<AssertUnwindSafe<DispatchFuture>>>>,
    reply: Arc<dyn ReplySink>,
    interface: &'static InterfaceInfo,
    method: u16,
}

impl Future for Running {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(handler) = this.handler.as_mut() else { return Poll::Ready(()) };
        let outcome = match poll_in_span(handler, &*this.reply, cx) {
            Poll::Ready(Ok(Ok(outcome))) => outcome,
            Poll::Ready(Ok(Err(panic))) => Err(panic_error(self.interface, self.method, &*panic)),
            Poll::Ready(Err(_aborted)) => Err(RpcError::cancelled("the caller cancelled the call")),
            Poll::Pending => return Poll::Pending,
        };
        finish(self.handler.take(), &*self.reply, outcome);
        Poll::Ready(())
    }
}

/// Polls a handler inside its call's span.
fn poll_in_span<F: Future + Unpin>(handler: &mut F, reply: &dyn ReplySink, cx: &mut Context<'_>) -> Poll<F::Output> {
    let _entered = reply.span().map(|span| span.enter());
    Pin::new(handler).poll(cx)
}

/// Ends a call whose handler finished: what the handler still owns is the
/// user's, dropped where a panic cannot take the serving task down; then
/// the reply goes.
fn finish<H>(handler: H, reply: &dyn ReplySink, outcome: Reply) {
    {
        let _user_code = Collecting::pause();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(handler)));
    }
    reply.complete(outcome);
}

/// Starts a queued call: dispatches it and polls its handler once right
/// here. A handler that finishes at once replies and is done (no abort
/// handle, no place among the running ones, no canceller to set: most
/// calls); one that waits is wired for cancellation and returned to run
/// with the others. `None` when the call is over already.
fn start(object: &Arc<dyn Dispatch>, call: OutgoingCall, cx: &mut Context<'_>) -> Option<Running> {
    let interface = object.interface();
    let reply = call.reply;
    if call.interface != interface.id {
        let err = RpcError::unimplemented(format!(
            "the target implements {}, not the interface the call names (id {:#x})",
            interface.name, call.interface
        ));
        reply.complete(Err(err));
        return None;
    }
    if let Some(span) = reply.span() {
        span.record("interface", interface.name);
        span.record("method", interface.methods.get(call.method as usize).copied().unwrap_or("?"));
    }
    let method = call.method;
    // Given up before it started (the caller dropped the promise): the
    // handler never runs.
    if reply.is_cancelled() {
        reply.complete(Err(RpcError::cancelled("the caller cancelled the call")));
        return None;
    }
    let incoming = IncomingCall { method, args: call.payload };
    // Dispatching runs user code too (argument decoding, a sync method's
    // setup in a hand-written `Dispatch`).
    let object = object.clone();
    let user_code = Collecting::pause();
    let future = match catch_unwind(AssertUnwindSafe(move || object.dispatch(incoming))) {
        Ok(future) => future,
        Err(panic) => {
            drop(user_code);
            reply.complete(Err(panic_error(interface, method, &*panic)));
            return None;
        }
    };
    let mut handler = AssertUnwindSafe(future).catch_unwind();
    let polled = poll_in_span(&mut handler, &*reply, cx);
    drop(user_code);
    let outcome = match polled {
        Poll::Ready(Ok(outcome)) => outcome,
        Poll::Ready(Err(panic)) => Err(panic_error(interface, method, &*panic)),
        Poll::Pending => {
            // Still running: a cancel from the caller (even one that came
            // already) aborts it from here on.
            let (abort, registration) = AbortHandle::new_pair();
            reply.set_canceller(Canceller::Abort(abort));
            let handler = Some(Abortable::new(handler, registration));
            return Some(Running { handler, reply, interface, method });
        }
    };
    finish(handler, &*reply, outcome);
    None
}

/// The serving task of one object: starts queued calls when no reader has,
/// and polls the handlers that wait.
struct Serve {
    shared: Arc<Shared>,
    running: FuturesUnordered<Running>,
}

impl Future for Serve {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.shared.waker.register(cx.waker());
        let mut state = this.shared.lock();
        if !state.handed.is_empty() {
            let handed = std::mem::take(&mut state.handed);
            drop(state);
            for running in handed {
                this.running.push(running);
            }
            state = this.shared.lock();
        }
        // Start every queued call, in order: each handler runs until it
        // first waits before the next one starts, so handlers start in call order.
        if !state.starting {
            state.starting = true;
            while let Some(call) = state.calls.pop_front() {
                drop(state);
                if let Some(running) = start(&this.shared.object, call, cx) {
                    this.running.push(running);
                }
                state = this.shared.lock();
            }
            state.starting = false;
        }
        // Nothing more will come: closed, nothing queued, no reader starting
        // calls or handing handlers over.
        let done = state.closed && state.calls.is_empty() && !state.starting && state.handed.is_empty();
        drop(state);
        while let Poll::Ready(Some(())) = this.running.poll_next_unpin(cx) {}
        if done && this.running.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
