//! Where the outcome of a call from the peer goes: back over the connection.

use std::sync::Arc;

use super::ConnShared;
use crate::cap::{Canceller, Reply, ReplySink};
use crate::proto::reply_cap;

/// The reply sink of the peer's question `id`.
pub(crate) struct RemoteAnswer {
    conn: Arc<ConnShared>,
    id: u32,
    /// `rpc.call`, a child of the connection's span: the handler runs in it.
    span: tracing::Span,
    /// The connection's `cancellations` when the call came.
    cancellations_before: u64,
}

impl RemoteAnswer {
    pub(crate) fn new(conn: Arc<ConnShared>, id: u32, interface: u64, method: u16) -> Self {
        let span = if crate::proto::debug_spans() {
            tracing::debug_span!(
                parent: &conn.span,
                "rpc.call",
                question = id,
                interface_id = interface,
                method_id = method,
                interface = tracing::field::Empty,
                method = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let cancellations_before = conn.cancellations.load(std::sync::atomic::Ordering::Acquire);
        RemoteAnswer { conn, id, span, cancellations_before }
    }
}

impl ReplySink for RemoteAnswer {
    fn complete(&self, reply: Reply) {
        match &reply {
            Ok(_) => tracing::debug!(parent: &self.span, "call returned"),
            Err(err) => tracing::debug!(parent: &self.span, kind = ?err.kind(), error = %err, "call failed"),
        }
        // Forward calls pipelined on this answer before the Return can reach
        // the caller, so the caller's later direct calls cannot overtake them.
        // The queues forward their calls when the guard goes; calls they
        // forward may pipeline on this answer again, so look once more.
        loop {
            let mut state = self.conn.lock();
            if !state.resolve_pipes(self.id, |cap| reply_cap(&reply, cap)) {
                return state.finish_answer(&self.conn, self.id, reply);
            }
        }
    }

    fn set_canceller(&self, canceller: Canceller) {
        self.conn.lock().set_answer_canceller(self.id, canceller);
    }

    fn is_cancelled(&self) -> bool {
        // No `Finish` and no close since the call came: not cancelled,
        // known without a lock (most calls).
        if self.conn.cancellations.load(std::sync::atomic::Ordering::Acquire) == self.cancellations_before {
            return false;
        }
        // Reads only: nothing can ask for the connection while it is held.
        self.conn.lock_leaf().answer_cancelled(self.id)
    }

    fn span(&self) -> Option<&tracing::Span> {
        Some(&self.span)
    }
}
