//! A capability promised by a call we made that has not returned yet.
//!
//! Calls on it go to the peer at once, aimed at the promised answer, so a
//! chain of dependent calls costs one round trip. Once the answer is known the
//! connection routes calls to the real target; if that target is on our side
//! and calls already went through the peer, it holds new calls until the
//! earlier ones have come back (see `Protocol::redirect_locally`).

use crate::cap::{ClientHook, OutgoingCall, PeerRef};
use crate::promise::CallHandle;

/// The hook for capability `cap` of the answer to our question.
pub(crate) struct PipelineClient {
    /// Keeps the question (and so the peer's answer) alive.
    handle: CallHandle,
    question: u32,
    cap: u32,
}

impl PipelineClient {
    pub(crate) fn new(handle: CallHandle, question: u32, cap: u32) -> Self {
        PipelineClient { handle, question, cap }
    }
}

impl ClientHook for PipelineClient {
    fn call(&self, call: OutgoingCall) {
        let Some(conn) = self.handle.conn() else {
            // The call no longer goes through the connection (it failed or
            // timed out, and was let go): route by its outcome.
            return match self.handle.settled_cap(self.cap) {
                Ok(target) => target.hook.call(call),
                Err(err) => crate::cap::BrokenClient::new(err).call(call),
            };
        };
        call.reply.depend_on(self.handle.clone());
        conn.lock().pipeline_call(&conn, self.question, self.cap, call);
    }

    fn peer_ref(&self, conn: &super::ConnShared) -> Option<PeerRef> {
        let own = self.handle.conn()?;
        std::ptr::eq(&*own, conn).then_some(PeerRef::Answer { question: self.question, cap: self.cap })
    }

    fn when_broken(&self) -> futures::future::BoxFuture<'static, crate::RpcError> {
        self.handle.cap_broken(self.cap)
    }

    fn describe(&self) -> String {
        format!("promise of capability {} of question {}", self.cap, self.question)
    }
}
