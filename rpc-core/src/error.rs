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

    /// An [`ErrorKind::Application`] error carrying a serialized application value.
    pub(crate) fn application(message: String, payload: Vec<u8>) -> Self {
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
