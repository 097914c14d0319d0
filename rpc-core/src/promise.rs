//! Promises: the eventual result of a call.
//!
//! A call is on its way as soon as the proxy method returns; the [`Promise`]
//! it returns is only where the answer lands. Awaiting it yields the decoded
//! result. Dropping it (and every capability pipelined on it) tells the callee
//! the answer is no longer wanted, and a handler still running is cancelled.
//! A deadline ([`Promise::with_timeout`]) takes the same path at a set time:
//! a timer task gives the call up (`CallState::give_up`), failing it and the
//! calls pipelined on it with `Timeout` and running its canceller.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::cap::{Canceller, Capability, Client, ClientHook, QueuedClient, Reply, ReplySink};
use crate::conn::ConnShared;
use crate::payload::{CapEntry, DEFAULT_MAX_DEPTH};
use crate::{CallError, RpcError};

/// Shared between the caller's handles and wherever the call runs.
pub(crate) struct CallState {
    inner: Mutex<Inner>,
    /// Live [`CallHandle`]s: when the last goes, the call is abandoned.
    handles: AtomicUsize,
    /// This state, for registering as a dependent of the call it was pipelined on.
    me: Weak<CallState>,
}

#[derive(Default)]
struct Inner {
    /// The outcome, until the promise takes it.
    outcome: Option<Reply>,
    done: bool,
    /// The result's capabilities (or the error), for pipelining after completion.
    result_caps: Option<Result<Vec<CapEntry>, RpcError>>,
    waker: Option<Waker>,
    /// Local pipelines waiting for the outcome.
    waiting_pipes: Vec<(u32, Arc<QueuedClient>)>,
    canceller: Option<Canceller>,
    /// The call whose promised result this call was made on (see `depend_on`).
    parent: Option<CallHandle>,
    /// Every caller handle is gone.
    abandoned: bool,
    /// The caller gave up at a deadline: the call fails where it would start.
    given_up: bool,
    /// The deadline, if one is set, and its timer task.
    deadline: Option<(Instant, tokio::task::AbortHandle)>,
    /// Calls pipelined on this one: if it gives up (a deadline), so do they.
    dependents: Vec<Weak<CallState>>,
    /// Waiting for the outcome (liveness of pipelined capabilities).
    done_waiters: Vec<oneshot::Sender<()>>,
}

impl CallState {
    pub(crate) fn new() -> Arc<CallState> {
        Arc::new_cyclic(|me| CallState {
            inner: Mutex::new(Inner::default()),
            handles: AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection and question the call went out as, if it did.
    fn route(&self) -> Option<(Arc<ConnShared>, u32)> {
        match &self.lock().canceller {
            Some(Canceller::Question(q)) => Some((q.conn().clone(), q.id)),
            _ => None,
        }
    }

    /// A client for capability `cap` of the result.
    fn pipeline(self: &Arc<Self>, handle: &CallHandle, cap: u32) -> Client {
        if let Some((_, question)) = self.route() {
            return Client::from_hook(crate::conn::pipeline_client(handle.clone(), question, cap));
        }
        let mut inner = self.lock();
        match &inner.result_caps {
            Some(caps) => pipe_target(caps, cap).unwrap_or_else(Client::broken),
            None => {
                let queue = Arc::new(QueuedClient::new());
                inner.waiting_pipes.push((cap, queue.clone()));
                Client::from_hook(LocalPipeline { queue, handle: handle.clone() })
            }
        }
    }

    /// Every caller handle is gone: cancel the call where it runs.
    fn abandon(&self) {
        let (canceller, outcome, parent, returned) = {
            let mut inner = self.lock();
            inner.abandoned = true;
            // Came back with no capabilities: the question holds nothing
            // whose release the peer waits for.
            let returned =
                inner.done && !inner.given_up && matches!(&inner.result_caps, Some(Ok(caps)) if caps.is_empty());
            (inner.canceller.take(), inner.outcome.take(), inner.parent.take(), returned)
        };
        drop((outcome, parent));
        match canceller {
            // Nothing to cancel: the connection forgets the question when next locked.
            Some(Canceller::Question(question)) if returned => question.release_returned(),
            Some(canceller) => canceller.cancel(),
            None => {}
        }
    }

    /// Fails the call with `err` now if it has no outcome yet, cancels it
    /// where it runs, and fails the calls pipelined on it the same way.
    fn give_up(&self, err: RpcError) {
        let (canceller, dependents) = {
            let mut inner = self.lock();
            if inner.done {
                return;
            }
            inner.given_up = true;
            (inner.canceller.take(), std::mem::take(&mut inner.dependents))
        };
        self.complete(Err(err.clone()));
        if let Some(canceller) = canceller {
            canceller.cancel();
        }
        for dependent in dependents.iter().filter_map(Weak::upgrade) {
            dependent.give_up(err.clone());
        }
    }

    /// Arms a deadline (the earlier one wins if one is set already).
    fn set_deadline(self: &Arc<Self>, deadline: Instant, err: RpcError) {
        let earlier = |inner: &Inner| inner.deadline.as_ref().is_some_and(|(at, _)| *at <= deadline);
        {
            let inner = self.lock();
            if inner.done || earlier(&inner) {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.give_up(RpcError::unimplemented("a deadline needs a Tokio runtime"));
        };
        let state = Arc::downgrade(self);
        let timer = runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(state) = state.upgrade() {
                state.give_up(err);
            }
        });
        let mut inner = self.lock();
        if inner.done || earlier(&inner) {
            return timer.abort();
        }
        if let Some((_, previous)) = inner.deadline.replace((deadline, timer.abort_handle())) {
            previous.abort();
        }
    }

    /// `child` was pipelined on this call: if this call gives up (a deadline,
    /// set now or later), the child fails with it too. Recorded whether or
    /// not a deadline is set yet, since `with_timeout` may come after the
    /// pipelined calls were made.
    fn add_dependent(&self, child: Weak<CallState>) {
        let mut inner = self.lock();
        if !inner.done {
            push_pruned(&mut inner.dependents, child, |d| d.strong_count() > 0);
        }
    }

    /// Resolves once the call has an outcome.
    fn when_done(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if !inner.done {
            push_pruned(&mut inner.done_waiters, tx, |w| !w.is_canceled());
        }
        rx
    }

    /// Capability `cap` of the outcome, once there is one.
    fn settled_cap(&self, cap: u32) -> Option<Result<Client, RpcError>> {
        self.lock().result_caps.as_ref().map(|caps| pipe_target(caps, cap))
    }

    /// Resolves when capability `cap` of the result is broken: at once with
    /// the call's error if it fails, else when the capability breaks.
    /// The future holds this state only until the call has an outcome, so
    /// it does not keep the result's capabilities alive.
    fn cap_broken(self: Arc<Self>, cap: u32) -> BoxFuture<'static, RpcError> {
        fn follow(settled: Option<Result<Client, RpcError>>) -> BoxFuture<'static, RpcError> {
            match settled {
                Some(Ok(client)) => client.hook.when_broken(),
                Some(Err(err)) => std::future::ready(err).boxed(),
                None => std::future::ready(RpcError::cancelled("the call was dropped before it returned")).boxed(),
            }
        }
        if let Some(settled) = self.settled_cap(cap) {
            return follow(Some(settled));
        }
        let done = self.when_done();
        async move {
            let _ = done.await;
            let target = follow(self.settled_cap(cap));
            drop(self);
            target.await
        }
        .boxed()
    }
}

/// A capability promised by a call to a local object: calls queue until the
/// call returns. Holding the caller's handle keeps the call from being
/// cancelled while calls depend on its result.
struct LocalPipeline {
    queue: Arc<QueuedClient>,
    handle: CallHandle,
}

impl ClientHook for LocalPipeline {
    fn call(&self, call: crate::cap::OutgoingCall) {
        call.reply.depend_on(self.handle.clone());
        self.queue.call(call);
    }

    fn resolved(&self) -> Option<Client> {
        self.queue.resolved()
    }

    fn when_broken(&self) -> BoxFuture<'static, RpcError> {
        self.queue.when_broken()
    }

    fn describe(&self) -> String {
        self.queue.describe()
    }
}

/// Pushes `item`, first dropping entries no longer `live` when the list is
/// full: a list of waiters whose receivers come and go (a `when_broken` in a
/// `select!` loop) stays bounded by the live ones, at amortized O(1) a push.
pub(crate) fn push_pruned<T>(list: &mut Vec<T>, item: T, live: impl FnMut(&T) -> bool) {
    if list.len() == list.capacity() {
        list.retain(live);
    }
    list.push(item);
}

/// Capability `cap` of a call's result (its capabilities, or its error).
fn pipe_target(caps: &Result<Vec<CapEntry>, RpcError>, cap: u32) -> Result<Client, RpcError> {
    match caps {
        Ok(caps) => crate::proto::cap_at(caps, cap),
        Err(err) => Err(err.clone()),
    }
}

impl ReplySink for CallState {
    fn complete(&self, reply: Reply) {
        let mut inner = self.lock();
        if inner.done {
            return;
        }
        inner.done = true;
        let caps = reply.as_ref().map(|p| p.caps.clone()).map_err(Clone::clone);
        // Where each waiting local pipeline goes, looked up before the caps
        // are kept for later pipelining (so the list is not copied again).
        let waiting = std::mem::take(&mut inner.waiting_pipes);
        // (Not through an iterator when none wait, the common case: that
        // cost 80 instructions a call.)
        let pipes: Vec<_> = if waiting.is_empty() {
            Vec::new()
        } else {
            waiting.into_iter().map(|(cap, queue)| (queue, pipe_target(&caps, cap))).collect()
        };
        inner.result_caps = Some(caps);
        let waker = inner.waker.take();
        let abandoned = inner.abandoned;
        let leftover = if abandoned { Some(reply) } else { inner.outcome.replace(reply) };
        let parent = inner.parent.take();
        let timer = inner.deadline.take();
        let waiters = std::mem::take(&mut inner.done_waiters);
        inner.dependents = Vec::new();
        drop(inner);
        drop((leftover, parent));
        if let Some((_, timer)) = timer {
            timer.abort();
        }
        for waiter in waiters {
            let _ = waiter.send(());
        }
        for (queue, target) in pipes {
            queue.resolve(target);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn set_canceller(&self, canceller: Canceller) {
        let mut inner = self.lock();
        if inner.abandoned || inner.given_up {
            drop(inner);
            canceller.cancel();
        } else {
            inner.canceller = Some(canceller);
        }
    }

    fn is_cancelled(&self) -> bool {
        let inner = self.lock();
        inner.abandoned || inner.given_up
    }

    fn depend_on(&self, parent: CallHandle) {
        let mut inner = self.lock();
        if !inner.done && !inner.abandoned {
            let state = parent.state().clone();
            inner.parent = Some(parent);
            drop(inner);
            state.add_dependent(self.me.clone());
        }
    }
}

/// The caller's hold on a call; when the last one drops, the call is
/// cancelled. (Counted in the state itself, so a call costs one allocation
/// for both.)
pub(crate) struct CallHandle(Arc<CallState>);

impl Clone for CallHandle {
    fn clone(&self) -> Self {
        self.0.handles.fetch_add(1, Ordering::Relaxed);
        CallHandle(self.0.clone())
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        if self.0.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.abandon();
        }
    }
}

impl CallHandle {
    fn new(state: Arc<CallState>) -> CallHandle {
        state.handles.fetch_add(1, Ordering::Relaxed);
        CallHandle(state)
    }

    /// The connection the call went out on, if it went out on one.
    pub(crate) fn conn(&self) -> Option<Arc<ConnShared>> {
        self.0.route().map(|(conn, _)| conn)
    }

    fn state(&self) -> &Arc<CallState> {
        &self.0
    }

    /// Capability `cap` of the outcome, or why there is none (for a call no
    /// longer routed over its connection: it failed, timed out or returned).
    pub(crate) fn settled_cap(&self, cap: u32) -> Result<Client, RpcError> {
        self.state().settled_cap(cap).unwrap_or_else(|| Err(RpcError::cancelled("the promise was dropped")))
    }

    /// Resolves when capability `cap` of the result is broken.
    pub(crate) fn cap_broken(&self, cap: u32) -> BoxFuture<'static, RpcError> {
        self.state().clone().cap_broken(cap)
    }
}

/// The eventual result of a call: `T`, or an error `E`.
///
/// A `Promise` is a [`Future`]; awaiting it gives `Result<T, E>`. For methods
/// declared as returning `Result<T, E>` the application error comes back as
/// `E` itself; framework failures (disconnection, cancellation, limits) are
/// turned into `E` through `From<RpcError>`. To keep the two apart (and
/// spare `E` that conversion), await [`split_errors`](Self::split_errors)
/// instead, which gives `Result<T, CallError<E>>`.
///
/// A promise waits as long as the call takes, unless given a deadline
/// ([`with_timeout`](Self::with_timeout), [`with_deadline`](Self::with_deadline)):
/// then it fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) and
/// the call is cancelled where it runs.
///
/// Dropping a promise before it resolves tells the callee the answer is no
/// longer wanted; a handler still running there is cancelled.
///
/// If the handler panics, the promise fails with
/// [`ErrorKind::HandlerPanicked`](crate::ErrorKind::HandlerPanicked), whose
/// message names the method and carries the panic message; the object keeps
/// serving later calls (see [`eventual`](crate::eventual)).
///
/// Over a connection, a call whose arguments exceed the frame limit the peer
/// advertised ([`Connection::peer_limits`](crate::Connection::peer_limits))
/// is not sent: its promise fails at once with
/// [`ErrorKind::LimitExceeded`](crate::ErrorKind::LimitExceeded), naming the
/// size and the limit. A reply too large for our own limit fails the same
/// way. Only that call fails; the connection and other calls carry on. Send
/// bulk data as a [`Bytes`](crate::Bytes) stream or a
/// [`Sequence`](crate::Sequence) instead (see
/// [`Limits::max_frame_size`](crate::Limits::max_frame_size)). If the
/// connection closes, pending promises fail with
/// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected), carrying the
/// peer's reason when it gave one.
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, RpcError};
///
/// #[eventual]
/// pub trait Adder {
///     async fn add(&self, a: i64, b: i64) -> i64;
/// }
///
/// struct Calculator;
/// impl Adder for Calculator {
///     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), RpcError> {
/// let adder = AdderProxy::new(Calculator);
/// let sum = adder.add(2, 3); // already on its way
/// assert_eq!(sum.await?, 5);
/// # Ok(())
/// # }
/// ```
#[must_use = "a dropped promise cancels its call"]
pub struct Promise<T, E = RpcError> {
    handle: CallHandle,
    _result: PhantomData<fn() -> (T, E)>,
}

impl<T, E> Promise<T, E> {
    pub(crate) fn new(state: Arc<CallState>) -> Self {
        Promise { handle: CallHandle::new(state), _result: PhantomData }
    }

    fn state(&self) -> &Arc<CallState> {
        &self.handle.0
    }
}

impl<T, E> Promise<T, E> {
    /// Gives the call `timeout` from now to return; see [`with_deadline`](Self::with_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::{eventual, ErrorKind, RpcError};
    ///
    /// #[eventual]
    /// pub trait Slow {
    ///     async fn wait(&self);
    /// }
    ///
    /// struct Forever;
    /// impl Slow for Forever {
    ///     async fn wait(&self) {
    ///         std::future::pending::<()>().await // cancelled at the deadline
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slow = SlowProxy::new(Forever);
    /// let err = slow.wait().with_timeout(Duration::from_millis(10)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// # }
    /// ```
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let err = RpcError::timeout(format!("the call did not return within {timeout:?}"));
        self.state().set_deadline(Instant::now() + timeout, err);
        self
    }

    /// Fails the call with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)
    /// if it has not returned by `deadline` (on tokio's clock), and cancels it
    /// where it runs: a local handler is aborted at the deadline, and over a
    /// connection the peer is sent the same `Finish` a dropped promise sends,
    /// which aborts its handler when it arrives (half a round trip later).
    /// The deadline does not travel on the wire: the callee learns of it only
    /// as that cancellation, so its handler needs no clock of its own.
    ///
    /// **Pipelining.** The deadline covers the call and everything pipelined
    /// on its result: at the deadline, calls already made on a capability
    /// pipelined from this promise fail with the same `Timeout` (and are
    /// cancelled where they run), and calls made on it later fail at once
    /// with it, as on any promise that failed. Calls on the result after it
    /// returned in time are not affected. A call pipelined with a deadline of
    /// its own keeps that one too (whichever passes first).
    ///
    /// If a deadline is already set, the earlier one wins. The timer is a
    /// small task on the current Tokio runtime (outside one, the call fails
    /// at once); it goes when the call returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::{eventual, ErrorKind, RpcError};
    ///
    /// #[eventual]
    /// pub trait Echo {
    ///     fn echo(&self, text: String) -> String;
    /// }
    ///
    /// struct Parrot;
    /// impl Echo for Parrot {
    ///     fn echo(&self, text: String) -> String { text }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), RpcError> {
    /// let echo = EchoProxy::new(Parrot);
    /// let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    /// assert_eq!(echo.echo("hi".into()).with_deadline(deadline).await?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_deadline(self, deadline: Instant) -> Self {
        self.state().set_deadline(deadline, RpcError::timeout("the call's deadline passed"));
        self
    }

    /// The same call, resolving to `Result<T, CallError<E>>`: your error
    /// type `E` on its own ([`CallError::App`]) and the framework's failures
    /// as themselves ([`CallError::Rpc`]). With this form `E` needs no
    /// `From<RpcError>` and no variant for framework failures; see
    /// [`CallError`] for when to pick which.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{eventual, CallError, RpcError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// // No `Rpc(String)` variant, no `From<RpcError>`.
    /// #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// pub enum LookupError {
    ///     NotFound,
    /// }
    ///
    /// #[eventual]
    /// pub trait Directory {
    ///     fn lookup(&self, name: String) -> Result<u32, LookupError>;
    /// }
    ///
    /// struct Empty;
    /// impl Directory for Empty {
    ///     fn lookup(&self, _name: String) -> Result<u32, LookupError> {
    ///         Err(LookupError::NotFound)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = DirectoryProxy::new(Empty);
    /// match dir.lookup("ada".into()).split_errors().await {
    ///     Ok(id) => println!("found {id}"),
    ///     Err(CallError::App(LookupError::NotFound)) => println!("no such name"),
    ///     Err(CallError::Rpc(err)) => println!("the call failed: {err}"),
    /// }
    /// # }
    /// ```
    pub fn split_errors(self) -> Promise<T, CallError<E>> {
        Promise { handle: self.handle, _result: PhantomData }
    }
}

impl<T: Capability, E> Promise<T, E> {
    /// The promised capability, usable at once: calls on it are sent
    /// immediately, aimed at the answer (promise pipelining). If the call
    /// fails, calls on the capability fail with the same error.
    pub fn pipeline(&self) -> T {
        T::from_client(self.state().pipeline(&self.handle, 0))
    }
}

impl<T, E> std::fmt::Debug for Promise<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.state().lock().done;
        f.debug_struct("Promise").field("resolved", &done).finish()
    }
}

/// An error type a [`Promise`] can resolve to: built from the framework's
/// [`RpcError`] when a call fails.
///
/// Implemented for every `E: From<RpcError> + DeserializeOwned` (an
/// application error of kind [`Application`](crate::ErrorKind::Application)
/// decodes as `E` itself, anything else converts through `From`), and for
/// [`CallError<E>`] with any `E: DeserializeOwned`, which needs no
/// conversion (see [`Promise::split_errors`]). There is no need to
/// implement it yourself.
///
/// # Examples
///
/// ```
/// use rpc_core::{CallError, ErrorKind, PromiseError, RpcError};
///
/// let err = <CallError<String> as PromiseError>::from_failure(RpcError::disconnected("gone"));
/// assert!(matches!(err, CallError::Rpc(e) if e.kind() == ErrorKind::Disconnected));
/// let err = <CallError<String> as PromiseError>::from_failure(RpcError::application(&"full".to_string()));
/// assert_eq!(err, CallError::App("full".to_string()));
/// ```
pub trait PromiseError: Sized + 'static {
    /// The value a promise resolves to when its call fails with `err`.
    fn from_failure(err: RpcError) -> Self;
}

impl<E: From<RpcError> + DeserializeOwned + 'static> PromiseError for E {
    fn from_failure(err: RpcError) -> Self {
        application_or(err)
    }
}

impl<E: DeserializeOwned + 'static> PromiseError for CallError<E> {
    fn from_failure(err: RpcError) -> Self {
        // `CallError<RpcError>` (a method without `Result`): nothing to decode.
        if std::any::TypeId::of::<E>() == std::any::TypeId::of::<RpcError>() {
            return CallError::Rpc(err);
        }
        match decode_application::<E>(&err) {
            Some(value) => CallError::App(value),
            None => CallError::Rpc(err),
        }
    }
}

impl<T, E> Future for Promise<T, E>
where
    T: DeserializeOwned + 'static,
    E: PromiseError,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let mut inner = self.state().lock();
        let Some(outcome) = inner.outcome.take() else {
            if inner.done {
                drop(inner);
                return Poll::Ready(Err(E::from_failure(RpcError::cancelled("the result was already taken"))));
            }
            match &mut inner.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        drop(inner);
        Poll::Ready(decode_outcome(outcome))
    }
}

fn decode_outcome<T: DeserializeOwned + 'static, E: PromiseError>(outcome: Reply) -> Result<T, E> {
    match outcome {
        Ok(payload) => crate::byte_vec::decode_result(&payload).map_err(E::from_failure),
        Err(err) => Err(E::from_failure(err)),
    }
}

/// The application value an error carries, if it carries an `E`.
fn decode_application<E: DeserializeOwned>(err: &RpcError) -> Option<E> {
    if err.kind() != crate::ErrorKind::Application {
        return None;
    }
    // It may come from a peer, and no connection's limit is at hand here: the default one.
    let max_size = crate::Limits::default().max_decoded_size;
    let bytes = err.payload()?;
    crate::wire::depth::from_postcard_bytes::<E>(bytes, DEFAULT_MAX_DEPTH, max_size).ok().map(|(value, _)| value)
}

/// An application error decodes as `E` when it is one; anything else converts.
fn application_or<E: From<RpcError> + DeserializeOwned + 'static>(err: RpcError) -> E {
    // With `E = RpcError` there is no application type to decode into.
    let wants_value = std::any::TypeId::of::<E>() != std::any::TypeId::of::<RpcError>();
    if wants_value {
        if let Some(value) = decode_application::<E>(&err) {
            return value;
        }
    }
    E::from(err)
}
