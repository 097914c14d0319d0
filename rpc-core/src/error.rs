//! The one error type of the framework.
//!
//! Every failure a caller can see is an [`RpcError`] with an [`ErrorKind`] and a
//! message written for a human. Application errors (the `E` of a method that
//! returns `Result<T, E>`) travel as their own serialized value and come back
//! out as `E` itself; they only appear as an `RpcError` of kind
//! [`ErrorKind::Application`] where no `E` is in scope (for example on a call
//! pipelined on a promise that failed with an application error).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, in a form code can match on.
///
/// # Examples
///
/// ```
/// use rpc_core::{ErrorKind, RpcError};
///
/// let err = RpcError::disconnected("peer closed the socket");
/// assert_eq!(err.kind(), ErrorKind::Disconnected);
/// assert!(err.to_string().contains("peer closed the socket"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection is gone (closed, reset, keepalive timeout).
    Disconnected,
    /// The caller stopped waiting (promise dropped) or the callee gave up.
    Cancelled,
    /// The other end aborted a stream or an operation at once.
    Aborted,
    /// A peer broke the protocol (malformed frame, unknown id, bad version).
    Protocol,
    /// A configured limit (frame size, calls in flight, exports, depth) was hit.
    LimitExceeded,
    /// The target does not implement the method (or the capability is unknown).
    Unimplemented,
    /// An operation did not finish within its configured time.
    Timeout,
    /// The remote method returned an application error.
    Application,
    /// A value could not be serialized or deserialized.
    Serialization,
    /// The handler serving the call panicked; the message carries the
    /// method and the panic's message. Only that call fails: the object,
    /// its connection and the server keep serving (see
    /// [`eventual`](crate::eventual#panics-in-handlers)).
    ///
    /// ```
    /// use rpc_core::{eventual, ErrorKind};
    ///
    /// #[eventual]
    /// pub trait Fragile {
    ///     fn divide(&self, a: u32, b: u32) -> u32;
    /// }
    ///
    /// struct Unchecked;
    ///
    /// impl Fragile for Unchecked {
    ///     fn divide(&self, a: u32, b: u32) -> u32 {
    ///         a / b // panics when b == 0
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// let fragile = FragileProxy::new(Unchecked);
    /// let err = fragile.divide(1, 0).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::HandlerPanicked);
    /// assert!(err.message().contains("Fragile.divide panicked: attempt to divide by zero"));
    /// // The same object keeps serving.
    /// assert_eq!(fragile.divide(6, 3).await.unwrap(), 2);
    /// # }
    /// ```
    HandlerPanicked,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Protocol => "protocol violation",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Application => "application error",
            ErrorKind::Serialization => "serialization error",
            ErrorKind::HandlerPanicked => "handler panicked",
        }
    }
}

/// The framework's error: a kind, a readable message, and for application
/// errors the serialized application value.
///
/// # Examples
///
/// ```
/// use rpc_core::{ErrorKind, RpcError};
///
/// let err = RpcError::new(ErrorKind::LimitExceeded, "too many calls in flight (max 4)");
/// assert_eq!(err.to_string(), "limit exceeded: too many calls in flight (max 4)");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    kind: ErrorKind,
    message: String,
    /// Postcard bytes of the application error value, for kind `Application`.
    payload: Option<Vec<u8>>,
}

impl RpcError {
    /// Creates an error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RpcError { kind, message: message.into(), payload: None }
    }

    /// A [`ErrorKind::Disconnected`] error.
    pub fn disconnected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Disconnected, message)
    }

    /// A [`ErrorKind::Cancelled`] error.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }

    /// A [`ErrorKind::Protocol`] error.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    /// A [`ErrorKind::LimitExceeded`] error.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::LimitExceeded, message)
    }

    /// A [`ErrorKind::Unimplemented`] error.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, message)
    }

    /// A [`ErrorKind::Serialization`] error.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Serialization, message)
    }

    /// A [`ErrorKind::Aborted`] error.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{ErrorKind, RpcError};
    ///
    /// assert_eq!(RpcError::aborted("upload given up").kind(), ErrorKind::Aborted);
    /// ```
    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Aborted, message)
    }

    /// A [`ErrorKind::Timeout`] error.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{ErrorKind, RpcError};
    ///
    /// assert_eq!(RpcError::timeout("no answer within 2 s").kind(), ErrorKind::Timeout);
    /// ```
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// An [`ErrorKind::Application`] error carrying `value`, your own
    /// application error: exactly what a handler's `Err(value)` becomes on
    /// its way to the caller. Use it to end a stream with an application
    /// error (`writer.close(Some(RpcError::application(&value)))`): the
    /// consumer reads an error whose [`application_value`](Self::application_value)
    /// is `value` again. The message is `value`'s `Debug` form.
    ///
    /// If `value` cannot be serialized, the result is a
    /// [`ErrorKind::Serialization`] error saying so.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{ErrorKind, RpcError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// enum FsError {
    ///     NoSuchFile(String),
    /// }
    ///
    /// let err = RpcError::application(&FsError::NoSuchFile("a.txt".into()));
    /// assert_eq!(err.kind(), ErrorKind::Application);
    /// assert_eq!(err.application_value::<FsError>(), Some(FsError::NoSuchFile("a.txt".into())));
    /// ```
    pub fn application<E: Serialize + fmt::Debug + ?Sized>(value: &E) -> Self {
        match postcard::to_stdvec(value) {
            Ok(bytes) => Self::application_encoded(format!("{value:?}"), bytes),
            Err(e) => Self::serialization(format!("cannot encode application error {value:?}: {e}")),
        }
    }

    /// An [`ErrorKind::Application`] error carrying a serialized application value.
    pub(crate) fn application_encoded(message: String, payload: Vec<u8>) -> Self {
        RpcError { kind: ErrorKind::Application, message, payload: Some(payload) }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message (without the kind prefix).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For an [`ErrorKind::Application`] error, decodes the application value.
    ///
    /// Returns `None` for other kinds or when the value is not an `E`.
    ///
    /// # Examples
    ///
    /// A call pipelined on a promise that failed with an application error
    /// fails with that same error; this recovers the typed value.
    ///
    /// ```
    /// # use rpc_core::RpcError;
    /// fn name_taken(err: &RpcError) -> bool {
    ///     err.application_value::<String>().as_deref() == Some("name taken")
    /// }
    /// # assert!(!name_taken(&RpcError::cancelled("x")));
    /// ```
    pub fn application_value<E: serde::de::DeserializeOwned>(&self) -> Option<E> {
        let bytes = self.payload.as_deref()?;
        postcard::from_bytes(bytes).ok()
    }

    pub(crate) fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.describe(), self.message)
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcError").field("kind", &self.kind).field("message", &self.message).finish()
    }
}

impl std::error::Error for RpcError {}

impl From<std::io::Error> for RpcError {
    fn from(err: std::io::Error) -> Self {
        RpcError::disconnected(format!("I/O error: {err}"))
    }
}

/// The error of a call, split in two: the framework's failure or your own
/// application error. A promise resolves to `Result<T, CallError<E>>` after
/// [`Promise::split_errors`](crate::Promise::split_errors).
///
/// # Which form to use
///
/// A method declared `-> Result<T, E>` gives a `Promise<T, E>`. Awaited
/// as it is, the promise resolves to `Result<T, E>`, and every framework
/// failure (disconnection, a deadline, a limit) must become an `E`: the type
/// needs a variant for them and `From<RpcError>`. That keeps `?` simple
/// inside code that already speaks `E`, at the cost of putting transport
/// concerns into a domain type and flattening the [`RpcError`] (its
/// [`ErrorKind`] is lost unless the variant keeps it).
///
/// `split_errors()` keeps the two apart instead: `E` stays a pure domain
/// type (no framework variant, no `From`), and framework failures arrive as
/// the [`RpcError`] itself, kind and message intact, so code can retry on
/// [`ErrorKind::Disconnected`] or report [`ErrorKind::Timeout`] without
/// knowing `E`. Both forms work on the same proxy method, call by call; the
/// macro asks `E` only for `Serialize + DeserializeOwned + Debug`. A type
/// without `From<RpcError>` can only be awaited through `split_errors()`
/// (the compiler says so at the `.await`).
///
/// `CallError` is not a wire type: the callee's `Err(value)` travels as
/// before, so callers may choose either form whatever the server uses.
///
/// # Examples
///
/// ```
/// use rpc_core::{CallError, ErrorKind, RpcError};
///
/// fn describe(err: &CallError<String>) -> String {
///     match err {
///         CallError::App(why) => format!("refused: {why}"),
///         CallError::Rpc(e) if e.kind() == ErrorKind::Timeout => "too slow".to_string(),
///         CallError::Rpc(e) => format!("failed: {e}"),
///     }
/// }
/// assert_eq!(describe(&CallError::App("full".into())), "refused: full");
/// assert_eq!(describe(&CallError::Rpc(RpcError::timeout("2 s"))), "too slow");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError<E> {
    /// The framework failed the call: disconnection, cancellation, a
    /// deadline, a limit, a panicking handler, an undecodable reply.
    Rpc(RpcError),
    /// The method returned `Err(E)`.
    App(E),
}

impl<E> CallError<E> {
    /// The application error, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{CallError, RpcError};
    ///
    /// assert_eq!(CallError::App(7).app(), Some(7));
    /// assert_eq!(CallError::<u8>::Rpc(RpcError::timeout("late")).app(), None);
    /// ```
    pub fn app(self) -> Option<E> {
        match self {
            CallError::App(value) => Some(value),
            CallError::Rpc(_) => None,
        }
    }

    /// The framework's error, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::{CallError, ErrorKind, RpcError};
    ///
    /// let err = CallError::<u8>::Rpc(RpcError::timeout("late"));
    /// assert_eq!(err.rpc().map(RpcError::kind), Some(ErrorKind::Timeout));
    /// ```
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            CallError::Rpc(err) => Some(err),
            CallError::App(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rpc(err) => err.fmt(f),
            CallError::App(err) => err.fmt(f),
        }
    }
}

/// Transparent: `Display` already shows the inner error, so its `source`
/// is the inner error's own (a reporter walking the chain prints each
/// message once).
impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rpc(err) => std::error::Error::source(err),
            CallError::App(err) => err.source(),
        }
    }
}
