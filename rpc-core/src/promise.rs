//! Promises: the eventual result of a call.
//!
//! A call is on its way as soon as the proxy method returns; the [`Promise`]
//! it returns is only where the answer lands. Awaiting it yields the decoded
//! result. Dropping it (and every capability pipelined on it) tells the callee
//! the answer is no longer wanted, and a handler still running is cancelled.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use serde::de::DeserializeOwned;

use crate::cap::{Canceller, Capability, Client, ClientHook, QueuedClient, Reply, ReplySink};
use crate::conn::ConnShared;
use crate::payload::{CapEntry, DEFAULT_MAX_DEPTH};
use crate::RpcError;

/// Shared between the caller's handles and wherever the call runs.
pub(crate) struct CallState {
    inner: Mutex<Inner>,
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
}

impl CallState {
    pub(crate) fn new() -> Arc<CallState> {
        Arc::new(CallState { inner: Mutex::new(Inner::default()) })
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
            Some(Ok(caps)) => match caps.get(cap as usize) {
                Some(CapEntry::Object(client)) => client.clone(),
                Some(CapEntry::Stream(_)) | None => Client::broken(no_cap(cap)),
            },
            Some(Err(err)) => Client::broken(err.clone()),
            None => {
                let queue = Arc::new(QueuedClient::new());
                inner.waiting_pipes.push((cap, queue.clone()));
                Client::from_hook(LocalPipeline { queue, handle: handle.clone() })
            }
        }
    }

    /// Every caller handle is gone: cancel the call where it runs.
    fn abandon(&self) {
        let (canceller, outcome, parent) = {
            let mut inner = self.lock();
            inner.abandoned = true;
            (inner.canceller.take(), inner.outcome.take(), inner.parent.take())
        };
        drop((outcome, parent));
        if let Some(canceller) = canceller {
            canceller.cancel();
        }
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

    fn describe(&self) -> String {
        self.queue.describe()
    }
}

fn no_cap(cap: u32) -> RpcError {
    RpcError::unimplemented(format!("the result holds no capability at index {cap}"))
}

impl ReplySink for CallState {
    fn complete(&self, reply: Reply) {
        let mut inner = self.lock();
        if inner.done {
            return;
        }
        inner.done = true;
        let caps = reply.as_ref().map(|p| p.caps.clone()).map_err(Clone::clone);
        let pipes = std::mem::take(&mut inner.waiting_pipes);
        let waker = inner.waker.take();
        let abandoned = inner.abandoned;
        inner.result_caps = Some(caps.clone());
        let leftover = if abandoned { Some(reply) } else { inner.outcome.replace(reply) };
        let parent = inner.parent.take();
        drop(inner);
        drop((leftover, parent));
        for (cap, queue) in pipes {
            let target = match &caps {
                Ok(caps) => match caps.get(cap as usize) {
                    Some(CapEntry::Object(client)) => Ok(client.clone()),
                    Some(CapEntry::Stream(_)) | None => Err(no_cap(cap)),
                },
                Err(err) => Err(err.clone()),
            };
            queue.resolve(target);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn set_canceller(&self, canceller: Canceller) {
        let mut inner = self.lock();
        if inner.abandoned {
            drop(inner);
            canceller.cancel();
        } else {
            inner.canceller = Some(canceller);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.lock().abandoned
    }

    fn depend_on(&self, parent: CallHandle) {
        let mut inner = self.lock();
        if !inner.done && !inner.abandoned {
            inner.parent = Some(parent);
        }
    }
}

/// The caller's hold on a call; when the last one drops, the call is cancelled.
#[derive(Clone)]
pub(crate) struct CallHandle(Arc<HandleInner>);

struct HandleInner(Arc<CallState>);

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl CallHandle {
    /// The connection the call went out on, if it went out on one.
    pub(crate) fn conn(&self) -> Option<Arc<ConnShared>> {
        self.0 .0.route().map(|(conn, _)| conn)
    }
}

/// The eventual result of a call: `T`, or an error `E`.
///
/// A `Promise` is a [`Future`]; awaiting it gives `Result<T, E>`. For methods
/// declared as returning `Result<T, E>` the application error comes back as
/// `E` itself; framework failures (disconnection, cancellation, limits) are
/// turned into `E` through `From<RpcError>`.
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
        Promise { handle: CallHandle(Arc::new(HandleInner(state))), _result: PhantomData }
    }

    fn state(&self) -> &Arc<CallState> {
        &self.handle.0 .0
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

impl<T, E> Future for Promise<T, E>
where
    T: DeserializeOwned,
    E: From<RpcError> + DeserializeOwned + 'static,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let mut inner = self.state().lock();
        let Some(outcome) = inner.outcome.take() else {
            if inner.done {
                drop(inner);
                return Poll::Ready(Err(E::from(RpcError::cancelled("the result was already taken"))));
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

fn decode_outcome<T: DeserializeOwned, E: From<RpcError> + DeserializeOwned + 'static>(outcome: Reply) -> Result<T, E> {
    match outcome {
        Ok(payload) => payload.decode().map_err(E::from),
        Err(err) => Err(application_or(err)),
    }
}

/// An application error decodes as `E` when it is one; anything else converts.
fn application_or<E: From<RpcError> + DeserializeOwned + 'static>(err: RpcError) -> E {
    // With `E = RpcError` there is no application type to decode into.
    let wants_value = std::any::TypeId::of::<E>() != std::any::TypeId::of::<RpcError>();
    if wants_value && err.kind() == crate::ErrorKind::Application {
        // It may come from a peer, and no connection's limit is at hand here: the default one.
        let max_size = crate::Limits::default().max_decoded_size;
        let decoded =
            err.payload().map(|bytes| crate::wire::depth::from_postcard_bytes::<E>(bytes, DEFAULT_MAX_DEPTH, max_size));
        if let Some(Ok((value, _))) = decoded {
            return value;
        }
    }
    E::from(err)
}
