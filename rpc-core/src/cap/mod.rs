//! Capabilities: untyped handles to objects, wherever they live.
//!
//! A [`Client`] is a reference-counted handle to an object behind one
//! [`ClientHook`]. There is one hook per kind of capability, each in its own file:
//!
//! | kind | file | calls go |
//! |---|---|---|
//! | local object | `local.rs` | into the object's ordered dispatch queue |
//! | queued (local promise) | `queued.rs` | into a queue until the promise resolves |
//! | broken | `broken.rs` | nowhere: they fail with the stored error |
//! | import | `../conn/import.rs` | over a connection to the peer's export |
//! | remote promise | `../conn/pipeline.rs` | over a connection, aimed at a promised answer |
//!
//! Generated proxies wrap a `Client`; the [`Capability`] trait converts.

mod broken;
pub(crate) mod dispatch;
pub(crate) mod local;
mod queued;

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::conn::ConnShared;
use crate::payload::{self, CapEntry, Payload};
use crate::promise::{CallState, Promise};
use crate::RpcError;

pub(crate) use broken::BrokenClient;
pub(crate) use dispatch::{Dispatch, MethodId, Reply};
pub(crate) use local::LocalServer;
pub(crate) use queued::QueuedClient;

/// A typed capability: what `#[eventual]` generates for each trait (`GameProxy`).
///
/// It is `Clone`, `Send`, `Sync` and serializable: it can travel as an
/// argument, a return value, a struct field or an element of a collection.
/// Holding one is the right to call the object behind it, wherever it lives.
///
/// You rarely name this trait: use it to reach the untyped [`Client`] of a
/// proxy (to compare two proxies, say) or to build a proxy from one, such as
/// a proxy whose calls all fail with a given error.
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, Capability, Client, ErrorKind, RpcError};
///
/// #[eventual]
/// pub trait Greeter {
///     async fn greet(&self, name: String) -> String;
/// }
///
/// struct English;
/// impl Greeter for English {
///     async fn greet(&self, name: String) -> String {
///         format!("hello, {name}")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), RpcError> {
/// let greeter = GreeterProxy::new(English);
///
/// // Two proxies built on the same client reach the same object.
/// let same = GreeterProxy::from_client(greeter.client().clone());
/// assert!(same.client().same_as(greeter.client()));
/// assert_eq!(same.greet("ada".into()).await?, "hello, ada");
///
/// // A proxy whose every call fails, for a service that is not available.
/// let down = GreeterProxy::from_client(Client::broken(RpcError::disconnected("maintenance")));
/// let err = down.greet("ada".into()).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Disconnected);
/// # Ok(())
/// # }
/// ```
pub trait Capability: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// Wraps an untyped handle. The handle is assumed to implement the interface;
    /// if it does not, calls fail with [`crate::ErrorKind::Unimplemented`].
    fn from_client(client: Client) -> Self;
    /// The untyped handle.
    fn client(&self) -> &Client;
}

/// An untyped capability: a handle to an object that may be local, remote, or
/// the promised result of a call that has not returned yet.
///
/// Cloning is cheap (a reference count). When the last handle to an object
/// exported over a connection is dropped, the exporter is told and drops its
/// reference in turn.
///
/// Every generated proxy wraps one ([`Capability::client`]); code that does
/// not know the interface (a registry, a router) can hold, compare and pass
/// on `Client`s, which serialize like the proxies they came from.
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, Capability, Client, RpcError};
///
/// #[eventual]
/// pub trait Clock {
///     fn now(&self) -> u64;
/// }
///
/// struct Frozen;
/// impl Clock for Frozen {
///     fn now(&self) -> u64 {
///         42
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), RpcError> {
/// let clock = ClockProxy::new(Frozen);
/// let untyped: Client = clock.client().clone(); // keep it without the type
/// let typed = ClockProxy::from_client(untyped.clone()); // and type it again
/// assert!(untyped.same_as(typed.client()));
/// assert_eq!(typed.now().await?, 42);
///
/// // A client whose calls fail with the error it was given.
/// let broken = ClockProxy::from_client(Client::broken(RpcError::cancelled("no clock here")));
/// assert_eq!(broken.now().await.unwrap_err().message(), "no clock here");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) hook: Arc<dyn ClientHook>,
}

impl Client {
    /// Wraps a local object served by `dispatcher` (used by generated `new`).
    pub fn from_dispatch<D: Dispatch>(dispatcher: D) -> Client {
        Client::from_hook(LocalServer::new(Arc::new(dispatcher)))
    }

    /// A capability whose every call fails with `error`.
    pub fn broken(error: RpcError) -> Client {
        Client::from_hook(BrokenClient::new(error))
    }

    pub(crate) fn from_hook<H: ClientHook>(hook: H) -> Client {
        Client { hook: Arc::new(hook) }
    }

    /// Calls `method` with `args` (a tuple). The call is queued on its way at
    /// once, before the returned promise is polled.
    pub fn call<A, T, E>(&self, method: MethodId, args: &A) -> Promise<T, E>
    where
        A: Serialize,
        T: DeserializeOwned + Send + 'static,
        E: Send + 'static,
    {
        let state = CallState::new();
        let sent = Payload::encode_then(args, |payload, encoded| {
            let call =
                OutgoingCall { interface: method.interface.id, method: method.index, payload, reply: state.clone() };
            self.hook.call_encoded(call, encoded);
        });
        if let Err(err) = sent {
            state.complete(Err(err));
        }
        Promise::new(state)
    }

    /// Resolves, with the reason, once this capability is broken: calls on
    /// it can no longer succeed. See the table below for when that is.
    ///
    /// | the capability | resolves |
    /// |---|---|
    /// | imported over a connection | when the connection closes (the peer's reason, or `Disconnected`) |
    /// | pipelined on a promise | when the call fails (its error, a deadline's `Timeout` included); if it returns, when the capability it returned breaks |
    /// | broken ([`Client::broken`]) | at once, with its error |
    /// | a local object | never: it lives while any handle to it does |
    ///
    /// The future does not keep the capability alive, and several may wait
    /// at once. Awaiting it is how a client notices that a server object it
    /// holds went away without making a call.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{Client, ErrorKind, RpcError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let gone = Client::broken(RpcError::disconnected("server went away"));
    /// assert_eq!(gone.when_broken().await.kind(), ErrorKind::Disconnected);
    /// # }
    /// ```
    pub fn when_broken(&self) -> impl std::future::Future<Output = RpcError> + Send + 'static {
        self.hook.when_broken()
    }

    /// Whether two handles name the same object through the same path.
    pub fn same_as(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.hook, &other.hook)
    }

    /// The capability with resolved promises replaced by what they resolved to.
    pub(crate) fn shortened(&self) -> Client {
        let mut client = self.clone();
        while let Some(next) = client.hook.resolved() {
            client = next;
        }
        client
    }

    /// A key identifying the hook, for export tables.
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.hook) as *const () as usize
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Client({})", self.hook.describe())
    }
}

impl Serialize for Client {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A resolved promise travels as what it resolved to, so an object sent
        // home comes back as itself.
        let index = payload::push_cap(CapEntry::Object(self.shortened())).map_err(serde::ser::Error::custom)?;
        serializer.serialize_u32(index)
    }
}

impl<'de> Deserialize<'de> for Client {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)?;
        match payload::cap_at(index).map_err(serde::de::Error::custom)? {
            CapEntry::Object(client) => Ok(client),
            CapEntry::Stream(_) => Err(serde::de::Error::custom("expected an object capability, found a stream end")),
        }
    }
}

/// A call on its way to an object.
pub(crate) struct OutgoingCall {
    pub interface: u64,
    pub method: u16,
    pub payload: Payload,
    /// Where the answer goes (a local promise, or a connection's answer entry).
    pub reply: Arc<dyn ReplySink>,
}

/// Where the outcome of a call is delivered.
pub(crate) trait ReplySink: Send + Sync + 'static {
    /// Delivers the outcome. Called at most once.
    fn complete(&self, reply: Reply);
    /// Records how to cancel the call where it now runs; runs it at once if
    /// the caller already gave up.
    fn set_canceller(&self, canceller: Canceller);
    /// Whether the caller has stopped waiting (so forwarding it is pointless).
    fn is_cancelled(&self) -> bool {
        false
    }
    /// This call was made on the promised result of `parent`: keep `parent`
    /// from being cancelled until this call completes or is given up.
    fn depend_on(&self, _parent: crate::promise::CallHandle) {}
    /// The tracing span of this call, if it came over a connection: the
    /// handler runs inside it.
    fn span(&self) -> Option<&tracing::Span> {
        None
    }
}

/// How to stop a call where it runs.
pub(crate) enum Canceller {
    /// A local handler: abort its future.
    Abort(futures::future::AbortHandle),
    /// A question on a connection: tell the connection the caller is gone.
    Question(crate::conn::QuestionRef),
    /// A test harness's hook (`proto::pair`): `cancel` calls it; dropping
    /// it drops what it captured.
    #[cfg(any(test, feature = "fuzzing"))]
    Callback(Box<dyn FnOnce() + Send + Sync>),
}

impl Canceller {
    pub(crate) fn cancel(self) {
        match self {
            Canceller::Abort(handle) => handle.abort(),
            Canceller::Question(question) => drop(question),
            #[cfg(any(test, feature = "fuzzing"))]
            Canceller::Callback(callback) => callback(),
        }
    }
}

/// One kind of capability. Implementations must deliver calls made through
/// the same hook in the order `call` was invoked (E-order).
pub(crate) trait ClientHook: Send + Sync + 'static {
    /// Sends a call. Never blocks; never called with a connection lock held.
    fn call(&self, call: OutgoingCall);
    /// [`ClientHook::call`] for a call whose argument bytes are still in
    /// the buffer they were encoded into (`call.payload` has none): a hook
    /// that copies them out before returning (a connection's) overrides
    /// this and spares the call a buffer of its own.
    fn call_encoded(&self, mut call: OutgoingCall, encoded: &mut bytes::BytesMut) {
        call.payload.bytes = crate::payload::take_encoded(encoded);
        self.call(call);
    }
    /// If this capability lives at the far end of `conn`, how that peer names it.
    fn peer_ref(&self, _conn: &ConnShared) -> Option<PeerRef> {
        None
    }
    /// A short description for `Debug`.
    fn describe(&self) -> String;
    /// What this capability has resolved to, if it was a promise that did.
    fn resolved(&self) -> Option<Client> {
        None
    }
    /// Resolves when calls on this capability can no longer succeed (see
    /// [`Client::when_broken`]); never, by default (a local object).
    fn when_broken(&self) -> futures::future::BoxFuture<'static, RpcError> {
        Box::pin(std::future::pending())
    }
}

/// A capability named from the peer's side of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerRef {
    /// The peer's export with this id.
    Export(u32),
    /// A capability in the peer's answer to one of our questions.
    Answer { question: u32, cap: u32 },
}
