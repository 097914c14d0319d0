//! The connection as the protocol's [`Shell`]: handles for the ids the
//! protocol names, each a (connection, id) pair that locks the connection
//! when used and never while it is locked.

use std::sync::Arc;

use super::answer::RemoteAnswer;
use super::import::ImportClient;
use super::{ConnShared, QuestionRef};
use super::{ReceivedReader, ReceivedWriter};
use crate::cap::{Canceller, Client, ClientHook, PeerRef, ReplySink};
use crate::payload::{CapEntry, StreamEnd};
use crate::proto::{Host, ImportSlot, Protocol, RemoteConsumer, RemoteProducer, Shell, Signals};
use crate::RpcError;

impl Shell for Arc<ConnShared> {
    fn import_hook(&self, id: u32) -> (Arc<dyn ClientHook>, Box<dyn ImportSlot>) {
        let hook = Arc::new(ImportClient::new(self.user_ref(), id));
        let slot = Box::new(Arc::downgrade(&hook));
        (hook, slot)
    }

    fn answer_sink(&self, id: u32, interface: u64, method: u16) -> Arc<dyn ReplySink> {
        Arc::new(RemoteAnswer::new(self.clone(), id, interface, method))
    }

    fn question_canceller(&self, id: u32) -> Canceller {
        Canceller::Question(QuestionRef::new(self.user_ref(), id))
    }

    fn peer_ref(&self, client: &Client) -> Option<PeerRef> {
        client.hook.peer_ref(self)
    }

    fn producer(&self, id: u32, bytes: bool, signals: Arc<Signals>) -> Arc<RemoteProducer> {
        RemoteProducer::new(self.clone(), id, bytes, signals)
    }

    fn consumer(&self, id: u32, bytes: bool, max_depth: u32, signals: Arc<Signals>) -> Arc<RemoteConsumer> {
        RemoteConsumer::new(self.clone(), id, bytes, max_depth, signals)
    }

    fn received_reader(&self, consumer: Arc<RemoteConsumer>) -> Box<dyn StreamEnd> {
        Box::new(ReceivedReader(Some(consumer)))
    }

    fn received_writer(&self, producer: Arc<RemoteProducer>) -> Box<dyn StreamEnd> {
        Box::new(ReceivedWriter(Some(producer)))
    }
}

/// Stream handles lock the connection through this.
impl Host for ConnShared {
    #[inline]
    fn with_protocol(&self, work: &mut dyn FnMut(&mut Protocol)) {
        work(&mut self.lock());
    }

    fn later(&self, work: Box<dyn FnOnce(&mut Protocol) + Send>) {
        self.with_state(move |state| work(state));
    }

    fn handle_dropped(&self, id: u32) {
        self.with_state(move |state| state.stream_handle_dropped(id));
    }

    fn max_decoded(&self) -> u64 {
        self.config.limits.max_decoded_size
    }

    fn push_item(&self, id: u32, item: &[u8], caps: Vec<CapEntry>) -> Result<(), RpcError> {
        self.lock_leaf().producer_push_item(id, item, caps)
    }

    fn lane_listed(&self, id: u32) {
        if self.staging.list(id) {
            // The first lane listed: the writer task locks the connection
            // (taking it in) and emits its items.
            self.wake_writer.notify();
        }
    }

    fn push_slice(&self, id: u32, data: &[u8]) -> Result<(), RpcError> {
        self.lock_leaf().producer_push_slice(id, data)
    }
}

/// The connection keeps a weak reference to each import's hook.
impl ImportSlot for std::sync::Weak<ImportClient> {
    fn upgrade(&self) -> Option<Arc<dyn ClientHook>> {
        std::sync::Weak::upgrade(self).map(|hook| hook as Arc<dyn ClientHook>)
    }

    fn addr(&self) -> usize {
        self.as_ptr() as usize
    }
}
