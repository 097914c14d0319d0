//! Capabilities in payloads: exporting what we send, importing what we get,
//! and the peer's references to our exports.

use super::{calls::cap_at, Export, Import, Protocol, Shell, Violation};
use crate::cap::{Client, PeerRef};
use crate::payload::CapEntry;
use crate::wire::{CapDescriptor, Message};
use crate::RpcError;

impl Protocol {
    // ----- capabilities in payloads --------------------------------------

    /// Names each capability of an outgoing payload for the peer, exporting as
    /// needed. On failure, what was exported for the payload is taken back.
    pub(super) fn export_caps(&mut self, shell: &dyn Shell, caps: &[CapEntry]) -> Result<Vec<CapDescriptor>, RpcError> {
        let mut descriptors = Vec::with_capacity(caps.len());
        for entry in caps {
            let descriptor = match entry {
                CapEntry::Object(client) => self.describe(shell, client),
                CapEntry::Stream(slot) => match slot.take() {
                    Some(end) => end.bind(self, shell),
                    None => Err(RpcError::serialization("a stream end in this payload was already taken")),
                },
            };
            match descriptor {
                Ok(descriptor) => descriptors.push(descriptor),
                Err(err) => {
                    self.unexport(&descriptors, &err);
                    return Err(err);
                }
            }
        }
        Ok(descriptors)
    }

    pub(super) fn describe(&mut self, shell: &dyn Shell, client: &Client) -> Result<CapDescriptor, RpcError> {
        match shell.peer_ref(client) {
            Some(PeerRef::Export(id)) => return Ok(CapDescriptor::ReceiverHosted(id)),
            Some(PeerRef::Answer { question, cap }) => match self.questions.get(question).map(|q| &q.returned) {
                Some(None) => return Ok(CapDescriptor::ReceiverAnswer { question, cap }),
                Some(Some(Ok(caps))) => {
                    if let Ok(resolved) = cap_at(caps, cap) {
                        return self.describe(shell, &resolved);
                    }
                }
                _ => {}
            },
            None => {}
        }
        Ok(CapDescriptor::SenderHosted(self.export(client)?))
    }

    pub(super) fn export(&mut self, client: &Client) -> Result<u32, RpcError> {
        if let Some(&id) = self.export_ids.get(&client.identity()) {
            self.exports.get_mut(id).expect("indexed export exists").refs += 1;
            return Ok(id);
        }
        let max = self.peer_limits.max_exports as usize;
        if self.exports.len() >= max {
            return Err(RpcError::limit(format!("cannot export more than {max} capabilities to this peer")));
        }
        let id = self.exports.insert(Export { client: client.clone(), refs: 1, permanent: false });
        self.export_ids.insert(client.identity(), id);
        Ok(id)
    }

    /// Turns the descriptors of an incoming payload into live capabilities.
    pub(super) fn import_caps(
        &mut self,
        shell: &dyn Shell,
        descriptors: &[CapDescriptor],
    ) -> Result<Vec<CapEntry>, Violation> {
        let mut caps = Vec::with_capacity(descriptors.len());
        for descriptor in descriptors {
            match self.import_one(shell, descriptor) {
                Ok(entry) => caps.push(entry),
                Err(violation) => {
                    // Imports made so far must not drop under the lock.
                    self.defer_drop(caps);
                    return Err(violation);
                }
            }
        }
        Ok(caps)
    }

    pub(super) fn import_one(&mut self, shell: &dyn Shell, descriptor: &CapDescriptor) -> Result<CapEntry, Violation> {
        Ok(CapEntry::Object(match *descriptor {
            CapDescriptor::SequenceReader { .. }
            | CapDescriptor::SequenceWriter { .. }
            | CapDescriptor::BytesReader { .. }
            | CapDescriptor::BytesWriter { .. } => return self.import_stream_end(shell, descriptor),
            CapDescriptor::SenderHosted(id) => self.import(shell, id)?,
            CapDescriptor::ReceiverHosted(id) => {
                self.exports.get(id).map(|e| e.client.clone()).ok_or_else(|| {
                    RpcError::protocol(format!("the peer named our export {id}, which does not exist"))
                })?
            }
            CapDescriptor::ReceiverAnswer { question, cap } => {
                let target = self.answer_target(question, cap).map_err(|e| {
                    RpcError::protocol(format!("the peer named a capability in answer {question}: {}", e.message()))
                })?;
                if let Some(answer) = self.answers.get_mut(&question) {
                    answer.passed_back = true;
                }
                target
            }
        }))
    }

    /// The import for the peer's export `id`, counting one more reference.
    pub(crate) fn import(&mut self, shell: &dyn Shell, id: u32) -> Result<Client, Violation> {
        self.import_counted(shell, id, 1)
    }

    pub(crate) fn import_counted(&mut self, shell: &dyn Shell, id: u32, count: u32) -> Result<Client, Violation> {
        if let Some(entry) = self.imports.get_mut(&id) {
            if let Some(hook) = entry.slot.upgrade() {
                entry.count = entry.count.saturating_add(count);
                return Ok(Client { hook });
            }
            // The old import is being dropped: release its references now.
            let stale = entry.count;
            if stale > 0 {
                self.send(&Message::Release { export: id, count: stale }, &[]);
            }
            self.imports.remove(&id);
        }
        let max = self.limits.max_exports as usize;
        if self.imports.len() >= max {
            return Err(RpcError::limit(format!("the peer exported more than {max} capabilities to us")));
        }
        let (hook, slot) = shell.import_hook(id);
        self.imports.insert(id, Import { slot, count });
        Ok(Client { hook })
    }

    /// An import was dropped: release every reference we got for it.
    /// `hook` is the address of the import's hook: a newer import of the same
    /// id (made while the old one was dropping) is not released by the old one.
    pub(crate) fn drop_import(&mut self, id: u32, hook: usize) {
        let Some(entry) = self.imports.get(&id) else { return };
        if entry.slot.addr() != hook {
            return;
        }
        let count = entry.count;
        self.imports.remove(&id);
        if count > 0 && self.closed.is_none() {
            self.send(&Message::Release { export: id, count }, &[]);
        }
    }
}
