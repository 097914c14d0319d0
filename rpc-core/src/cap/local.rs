//! A local object and its ordered dispatch queue.
//!
//! Every call to a local object, whether made in-process or arriving from
//! any connection, goes through one unbounded queue served by one task. The
//! task starts handlers in queue order (E-order), polling each once as it
//! starts (most finish there, with no more bookkeeping), then polls the rest together,
//! so handlers interleave at their await points but never start out of order.
//! When the last handle to the object is dropped the queue closes, the task
//! finishes the handlers still running, and the object is dropped.
//!
//! A handler that panics fails its own call and nothing more: the panic is
//! caught where the task runs user code (the synchronous part of dispatch,
//! every poll of a handler, and dropping a finished handler), the caller gets
//! an [`ErrorKind::HandlerPanicked`](crate::ErrorKind::HandlerPanicked) error,
//! and the task goes on serving the object's other calls.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
    object: Arc<dyn Dispatch>,
    queue: Arc<Queue>,
    /// The serving task was spawned (checked without the lock below).
    serving: AtomicBool,
    spawning: Mutex<()>,
}

/// An object's calls in order: its handles push, its serving task takes.
/// (A mutex and a deque rather than a tokio channel: a channel allocates a
/// block of 32 calls up front, per object, and costs more per call.)
struct Queue {
    state: Mutex<QueueState>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct QueueState {
    calls: VecDeque<OutgoingCall>,
    /// The object's last handle is gone: no more calls will come.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `call`, or gives it back if the object is shutting down.
    fn push(&self, call: OutgoingCall) -> Result<(), OutgoingCall> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(call);
            }
            state.calls.push_back(call);
        }
        self.waker.wake();
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }

    /// The next call; `None` once closed and empty.
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<OutgoingCall>> {
        if let Some(call) = self.lock().calls.pop_front() {
            return Poll::Ready(Some(call));
        }
        // Listen first, then look again: a call pushed in between is seen.
        self.waker.register(cx.waker());
        let mut state = self.lock();
        match state.calls.pop_front() {
            Some(call) => Poll::Ready(Some(call)),
            None if state.closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl LocalServer {
    pub(crate) fn new(object: Arc<dyn Dispatch>) -> Self {
        let queue = Arc::new(Queue { state: Mutex::default(), waker: AtomicWaker::new() });
        LocalServer { object, queue, serving: AtomicBool::new(false), spawning: Mutex::new(()) }
    }

    /// Spawns the serving task if this is the first call.
    #[inline]
    fn ensure_serving(&self) -> Result<(), RpcError> {
        if self.serving.load(Ordering::Acquire) {
            return Ok(());
        }
        let _spawning = self.spawning.lock().unwrap_or_else(|e| e.into_inner());
        if self.serving.load(Ordering::Acquire) {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RpcError::new(crate::ErrorKind::Unimplemented, "calls need a Tokio runtime"))?;
        runtime.spawn(Serve {
            object: self.object.clone(),
            queue: self.queue.clone(),
            running: FuturesUnordered::new(),
            closed: false,
        });
        self.serving.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // The serving task finishes what runs, then ends (dropping the object).
        self.queue.close();
    }
}

impl ClientHook for LocalServer {
    fn call(&self, call: OutgoingCall) {
        if let Err(err) = self.ensure_serving() {
            return call.reply.complete(Err(err));
        }
        if let Err(call) = self.queue.push(call) {
            call.reply.complete(Err(RpcError::disconnected("the object is shutting down")));
        }
    }

    fn describe(&self) -> String {
        format!("local {}", self.object.interface().name)
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
    let _ = catch_unwind(AssertUnwindSafe(move || drop(handler)));
    reply.complete(outcome);
}

/// The serving task of one object.
struct Serve {
    object: Arc<dyn Dispatch>,
    queue: Arc<Queue>,
    running: FuturesUnordered<Running>,
    closed: bool,
}

impl Serve {
    /// Starts a queued call: dispatches it and polls its handler once right
    /// here. A handler that finishes at once replies and is done (no abort
    /// handle, no place among the running ones, no canceller to set: most
    /// calls); one that waits is wired for cancellation and returned to run
    /// with the others. `None` when the call is over already.
    fn start(&self, call: OutgoingCall, cx: &mut Context<'_>) -> Option<Running> {
        let interface = self.object.interface();
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
        let object = self.object.clone();
        let future = match catch_unwind(AssertUnwindSafe(move || object.dispatch(incoming))) {
            Ok(future) => future,
            Err(panic) => {
                reply.complete(Err(panic_error(interface, method, &*panic)));
                return None;
            }
        };
        let mut handler = AssertUnwindSafe(future).catch_unwind();
        let outcome = match poll_in_span(&mut handler, &*reply, cx) {
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
}

impl Future for Serve {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Start every queued call, in order: each handler runs until it
        // first waits before the next one starts, so handlers start in call order.
        while !self.closed {
            match self.queue.poll_next(cx) {
                Poll::Ready(Some(call)) => {
                    if let Some(handler) = self.start(call, cx) {
                        self.running.push(handler);
                    }
                }
                Poll::Ready(None) => self.closed = true,
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
        if self.closed && self.running.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
