//! The server side of a capability: what generated stubs implement.
//!
//! `#[eventual]` generates, for each trait, a dispatcher implementing
//! [`Dispatch`]. The runtime hands it one [`IncomingCall`] at a time, in the
//! order calls were made on the capability; the dispatcher decodes the
//! arguments, calls the user's method and returns a [`DispatchFuture`] that
//! resolves to the encoded reply.
//!
//! A handler that panics fails its own call and nothing more: the runtime
//! catches the panic (in the synchronous part of [`Dispatch::dispatch`] and
//! around every poll of the returned future) and replies with an
//! [`ErrorKind::HandlerPanicked`](crate::ErrorKind::HandlerPanicked) error
//! that names the method and carries the panic message.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::payload::Payload;
use crate::RpcError;

/// Static description of an `#[eventual]` interface.
#[derive(Debug)]
pub struct InterfaceInfo {
    /// A stable 64-bit id (FNV-1a of the trait name unless overridden).
    pub id: u64,
    /// The trait name, for error messages.
    pub name: &'static str,
    /// Method names, indexed by method id.
    pub methods: &'static [&'static str],
}

/// One method of an interface, as named in a call.
#[derive(Clone, Copy, Debug)]
pub struct MethodId {
    /// The interface the method belongs to.
    pub interface: &'static InterfaceInfo,
    /// Index of the method in the trait, in declaration order.
    pub index: u16,
}

impl MethodId {
    /// `Trait.method`, for messages.
    pub fn name(&self) -> String {
        let method = self.interface.methods.get(self.index as usize).copied().unwrap_or("?");
        format!("{}.{}", self.interface.name, method)
    }
}

/// The encoded outcome of a call: a payload, or an error (application errors
/// included, as [`crate::ErrorKind::Application`]).
pub type Reply = Result<Payload, RpcError>;

/// The future a dispatcher returns for one call.
pub type DispatchFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// Implemented by generated stubs: routes a call to the user's object.
pub trait Dispatch: Send + Sync + 'static {
    /// The interface this object implements.
    fn interface(&self) -> &'static InterfaceInfo;
    /// Starts serving `call`. Decoding happens here, so a malformed argument
    /// fails the call without running user code.
    fn dispatch(self: Arc<Self>, call: IncomingCall) -> DispatchFuture;
}

/// A call as seen by a [`Dispatch`] implementation.
pub struct IncomingCall {
    pub(crate) method: u16,
    pub(crate) args: Payload,
}

impl IncomingCall {
    /// Index of the called method.
    pub fn method(&self) -> u16 {
        self.method
    }

    /// Decodes the arguments (a tuple of the method's parameters).
    ///
    /// # Errors
    ///
    /// A [`crate::ErrorKind::Serialization`] error when the bytes do not
    /// decode as `A` (or nest deeper than the connection allows).
    pub fn args<A: DeserializeOwned>(&self) -> Result<A, RpcError> {
        self.args.decode()
    }
}

/// Encodes a method's plain return value.
pub fn reply_value<T: Serialize>(value: T) -> Reply {
    Payload::encode(&value)
}

/// Encodes a method's `Result`: `Ok` as the payload, `Err` as an application error.
pub fn reply_result<T: Serialize, E: Serialize + std::fmt::Debug>(result: Result<T, E>) -> Reply {
    match result {
        Ok(value) => Payload::encode(&value),
        Err(err) => Err(application_error(&err)),
    }
}

/// Wraps an application error value into an [`RpcError`].
pub(crate) fn application_error<E: Serialize + std::fmt::Debug>(err: &E) -> RpcError {
    RpcError::application(err)
}

/// The error a caller sees when the handler of `interface`'s method `method`
/// panicked with `payload`.
pub(crate) fn panic_error(interface: &'static InterfaceInfo, method: u16, payload: &(dyn Any + Send)) -> RpcError {
    let name = MethodId { interface, index: method }.name();
    let message = match (payload.downcast_ref::<&'static str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => format!("{name} panicked: {text}"),
        (None, Some(text)) => format!("{name} panicked: {text}"),
        (None, None) => format!("{name} panicked (with a payload that is not a string)"),
    };
    RpcError::new(crate::ErrorKind::HandlerPanicked, message)
}

/// Runs `handler`, turning a panic in any of its polls into `panic_error`.
///
/// Generated stubs use it where a panic must reach more than the reply (a
/// returned stream's writer); every other panic is caught where the handler
/// is polled (`cap/local.rs`).
pub async fn catch_panic<F: Future>(
    interface: &'static InterfaceInfo,
    method: u16,
    handler: F,
) -> Result<F::Output, RpcError> {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(output) => Ok(output),
        Err(payload) => Err(panic_error(interface, method, &*payload)),
    }
}

/// Ends a returned sequence's writer with `err` (its handler failed before
/// returning the sequence), so the caller reads that error rather than an abort.
pub fn fail_sequence<T>(writer: crate::SequenceWriter<T>, err: RpcError) {
    // The end is recorded at the first poll; the rest only waits for delivery.
    drop(writer.close(Some(err)).now_or_never());
}

/// [`fail_sequence`] for a returned byte stream.
pub fn fail_bytes(writer: crate::BytesWriter, err: RpcError) {
    drop(writer.close(Some(err)).now_or_never());
}

/// A dispatch future that fails at once (used when arguments do not decode).
pub fn ready_err(err: RpcError) -> DispatchFuture {
    Box::pin(std::future::ready(Err(err)))
}

/// The reply to a method index the interface does not have.
pub fn unimplemented(interface: &'static InterfaceInfo, call: &IncomingCall) -> DispatchFuture {
    ready_err(RpcError::unimplemented(format!("interface {} has no method #{}", interface.name, call.method)))
}

/// FNV-1a, used by generated code for interface ids (const so ids are fixed at compile time).
pub const fn interface_id(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}
