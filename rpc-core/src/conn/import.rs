//! An object the peer exported to us.

use super::UserRef;
use crate::cap::{ClientHook, OutgoingCall, PeerRef};

/// The hook for the peer's export `id`. Dropping the last handle releases
/// every reference we received for it.
pub(crate) struct ImportClient {
    user: UserRef,
    id: u32,
}

impl ImportClient {
    pub(crate) fn new(user: UserRef, id: u32) -> Self {
        ImportClient { user, id }
    }
}

impl ClientHook for ImportClient {
    fn call(&self, call: OutgoingCall) {
        let shared = self.user.shared();
        shared.lock().send_call(shared, PeerRef::Export(self.id), call);
    }

    fn call_encoded(&self, call: OutgoingCall, encoded: &mut bytes::BytesMut) {
        let shared = self.user.shared();
        shared.lock().send_call_with(shared, PeerRef::Export(self.id), call, encoded);
    }

    fn peer_ref(&self, conn: &super::ConnShared) -> Option<PeerRef> {
        std::ptr::eq(&**self.user.shared(), conn).then_some(PeerRef::Export(self.id))
    }

    fn describe(&self) -> String {
        format!("import #{}", self.id)
    }

    fn when_broken(&self) -> futures::future::BoxFuture<'static, crate::RpcError> {
        // Watches the connection only: the future keeps neither the import
        // nor the connection open.
        let mut closed = self.user.shared().closed.subscribe();
        Box::pin(async move {
            let reason = match closed.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            reason.unwrap_or_else(|| crate::RpcError::disconnected("the connection was closed"))
        })
    }
}

impl Drop for ImportClient {
    fn drop(&mut self) {
        let (id, me) = (self.id, self as *const ImportClient as usize);
        self.user.shared().with_state(move |state| state.drop_import(id, me));
    }
}
