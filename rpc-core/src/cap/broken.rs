//! A capability that fails every call with a stored error.

use super::{ClientHook, OutgoingCall};
use crate::RpcError;

/// Fails every call with `error` (used for disconnected imports, rejected
/// promises and payload slots that hold no capability).
pub(crate) struct BrokenClient {
    error: RpcError,
}

impl BrokenClient {
    pub(crate) fn new(error: RpcError) -> Self {
        BrokenClient { error }
    }
}

impl ClientHook for BrokenClient {
    fn call(&self, call: OutgoingCall) {
        call.reply.complete(Err(self.error.clone()));
        // A stream the call carried (the writer of a returned sequence) ends
        // with the call's error, not as if its producer had aborted.
        crate::payload::fail_streams(call.payload.caps, &self.error);
    }

    fn when_broken(&self) -> futures::future::BoxFuture<'static, RpcError> {
        Box::pin(std::future::ready(self.error.clone()))
    }

    fn describe(&self) -> String {
        format!("broken: {}", self.error)
    }
}
