//! Calls both ways: the questions we ask and the answers we owe, pipelining
//! and embargoes.

use std::sync::Arc;

use bytes::Bytes;

use super::Ending;
use super::{Answer, Effect, Embargo, Protocol, Question, Shell, Violation};
use crate::cap::{Canceller, Client, OutgoingCall, PeerRef, QueuedClient, Reply};
use crate::payload::{CapEntry, Payload};
use crate::wire::{CapDescriptor, Message, Target};
use crate::RpcError;

impl Protocol {
    // ----- calls we make -------------------------------------------------

    /// Sends `call` to the peer's capability `target`. A call too large for
    /// the peer's frame limit fails alone, before anything is sent.
    pub(crate) fn send_call(&mut self, shell: &dyn Shell, target: PeerRef, mut call: OutgoingCall) {
        let args = std::mem::take(&mut call.payload.bytes);
        self.send_call_with(shell, target, call, &args);
    }

    /// [`Self::send_call`] with the argument bytes apart from the call
    /// (whose payload holds only its capabilities).
    pub(crate) fn send_call_with(&mut self, shell: &dyn Shell, target: PeerRef, call: OutgoingCall, args: &[u8]) {
        if let Err(err) = self.check_can_call() {
            return self.fail_call(call, err);
        }
        let caps = match self.export_caps(shell, &call.payload.caps) {
            Ok(caps) => caps,
            Err(err) => return self.fail_call(call, err),
        };
        let max = self.peer_limits.max_frame_size as usize;
        if args.len() >= max {
            // Too large whatever the header. Exporting first (and taking it
            // back now) ends the payload's stream ends with this error.
            let err = too_large("call", "arguments", args.len(), max);
            self.unexport(&caps, &err);
            return self.fail_call(call, err);
        }
        let question =
            Question { sink: Some(call.reply.clone()), returned: None, released: false, pipes: Default::default() };
        let id = self.questions.insert(question);
        self.awaiting_returns += 1;
        let wire_target = match target {
            PeerRef::Export(id) => Target::Export(id),
            PeerRef::Answer { question, cap } => Target::Answer { question, cap },
        };
        let header =
            Message::Call { question: id, target: wire_target, interface: call.interface, method: call.method, caps };
        if let Some(len) = self.oversized(&header, args.len()) {
            self.awaiting_returns -= 1;
            let q = self.questions.remove(id);
            self.defer_drop_question(q);
            let err = too_large("call", "frame", len, max);
            if let Message::Call { caps, .. } = &header {
                self.unexport(caps, &err);
            }
            return self.fail_call(call, err);
        }
        self.trace_question(id, call.interface, call.method);
        if let PeerRef::Answer { question, cap } = target {
            if let Some(q) = self.questions.get_mut(question) {
                q.pipes.entry(cap).or_default().sent = true;
            }
        }
        self.send(&header, args);
        self.effects.push(Effect::SetCanceller(call.reply, shell.question_canceller(id)));
        self.defer_drop(call.payload);
    }

    /// The frame size of `message` with `trailer` bytes after it, if that is
    /// over the peer's frame limit. Exact; cheap unless close to the limit.
    pub(super) fn oversized(&self, message: &Message, trailer: usize) -> Option<usize> {
        let max = self.peer_limits.max_frame_size as usize;
        // Generous bounds on the header (varints at their longest).
        const DESCRIPTOR: usize = 32;
        let bound = match message {
            Message::Call { caps, .. } => 48 + DESCRIPTOR * caps.len(),
            Message::Return { result: Ok(caps), .. } => 24 + DESCRIPTOR * caps.len(),
            _ => usize::MAX,
        };
        if bound.saturating_add(trailer) <= max {
            return None;
        }
        let header =
            postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX);
        let len = header.saturating_add(trailer);
        (len > max).then_some(len)
    }

    /// Takes back what [`Self::export_caps`] did for `descriptors`, which the
    /// peer will never see: export references, and stream halves opened for
    /// the ends (whose other ends, still ours, then end with `err`).
    pub(super) fn unexport(&mut self, descriptors: &[CapDescriptor], err: &RpcError) {
        for descriptor in descriptors {
            match *descriptor {
                CapDescriptor::SenderHosted(id) => self.release_export(id, 1),
                CapDescriptor::SequenceReader { stream, .. }
                | CapDescriptor::SequenceWriter { stream, .. }
                | CapDescriptor::BytesReader { stream, .. }
                | CapDescriptor::BytesWriter { stream, .. } => {
                    self.ready.retain(|&ready| ready != stream);
                    if self.streams.get(&stream).is_some_and(|e| e.live) {
                        self.trace_stream_end(stream, "not sent: its call failed");
                        self.end_stream_locally(stream, Ending::Disconnected(err.clone()));
                    }
                }
                CapDescriptor::ReceiverHosted(_) | CapDescriptor::ReceiverAnswer { .. } => {}
            }
        }
    }

    /// Opens the caller's `rpc.question` span of call `id` (kept only if
    /// tracing wants it); its `Return` closes it.
    pub(super) fn trace_question(&mut self, id: u32, interface: u64, method: u16) {
        if !super::debug_spans() {
            return;
        }
        let span = tracing::debug_span!(parent: &self.span, "rpc.question", question = id, interface_id = interface, method_id = method);
        if !span.is_disabled() {
            tracing::trace!(parent: &span, "call sent");
            self.question_spans.insert(id, span);
        }
    }

    pub(super) fn check_can_call(&self) -> Result<(), RpcError> {
        if let Some(reason) = &self.closed {
            return Err(reason.clone());
        }
        let max = self.peer_limits.max_outstanding_calls as usize;
        let kept = max + self.peer_limits.max_exports as usize;
        if self.questions.len() >= kept {
            return Err(RpcError::limit(format!(
                "{kept} questions held on this connection (the peer's max_outstanding_calls + max_exports): \
                 drop pipelined proxies and promises no longer needed"
            )));
        }
        if self.awaiting_returns >= max {
            return Err(RpcError::limit(format!(
                "{max} calls already in flight on this connection (the peer's limit)"
            )));
        }
        Ok(())
    }

    /// Routes a call made through a pipelined capability (our question's answer).
    pub(crate) fn pipeline_call(&mut self, shell: &dyn Shell, question: u32, cap: u32, call: OutgoingCall) {
        let Some(q) = self.questions.get_mut(question) else {
            let err = self.closed.clone().unwrap_or_else(|| RpcError::cancelled("the promise was dropped"));
            return self.fail_call(call, err);
        };
        if let Some(redirect) = q.pipes.get(&cap).and_then(|p| p.redirect.clone()) {
            return self.effects.push(Effect::Call(redirect, call));
        }
        let target = match &q.returned {
            None => return self.send_call(shell, PeerRef::Answer { question, cap }, call),
            Some(Err(err)) => Err(err.clone()),
            Some(Ok(caps)) => cap_at(caps, cap),
        };
        let target = match target {
            Ok(target) => target,
            Err(err) => return self.fail_call(call, err),
        };
        match shell.peer_ref(&target) {
            Some(peer_ref) => self.send_call(shell, peer_ref, call),
            None => self.redirect_locally(question, cap, target, call),
        }
    }

    /// The promise resolved to an object on our side. If calls already went
    /// through the peer, hold new ones until those come back (an embargo).
    pub(super) fn redirect_locally(&mut self, question: u32, cap: u32, target: Client, call: OutgoingCall) {
        let sent = self.questions.get(question).and_then(|q| q.pipes.get(&cap)).is_some_and(|p| p.sent);
        let redirect = if sent {
            let queue = Arc::new(QueuedClient::new());
            let id = self.embargoes.insert(Embargo { queue: queue.clone(), target });
            self.send(&Message::Disembargo { target: Target::Answer { question, cap }, id }, &[]);
            Client { hook: queue }
        } else {
            target
        };
        if let Some(q) = self.questions.get_mut(question) {
            q.pipes.entry(cap).or_default().redirect = Some(redirect.clone());
        }
        self.effects.push(Effect::Call(redirect, call));
    }

    /// The caller dropped its last hold on `id`.
    pub(crate) fn release_question(&mut self, id: u32) {
        let Some(q) = self.questions.get_mut(id) else { return };
        q.released = true;
        let finish = match &q.returned {
            None => true,
            Some(result) => needs_finish(result),
        };
        let awaiting = q.returned.is_none();
        if self.closed.is_none() && finish {
            self.send(&Message::Finish { question: id }, &[]);
        }
        if !awaiting || self.closed.is_some() {
            let q = self.questions.remove(id);
            self.defer_drop_question(q);
        }
    }

    pub(crate) fn handle_return(
        &mut self,
        shell: &dyn Shell,
        id: u32,
        result: Result<Vec<CapDescriptor>, RpcError>,
        trailer: Bytes,
    ) -> Result<(), Violation> {
        if self.questions.get(id).is_none_or(|q| q.returned.is_some()) {
            return Err(RpcError::protocol(format!("Return for question {id}, which is not awaiting an answer")));
        }
        self.awaiting_returns = self.awaiting_returns.saturating_sub(1);
        if let Some(span) = self.question_spans.remove(&id) {
            match &result {
                Ok(_) => tracing::debug!(parent: &span, "reply received"),
                Err(err) => tracing::debug!(parent: &span, kind = ?err.kind(), error = %err, "call failed"),
            }
        }
        let reply = match result {
            Ok(descriptors) => {
                let caps = self.import_caps(shell, &descriptors)?;
                Ok(Payload::received(trailer, caps, &self.limits))
            }
            Err(err) => Err(err),
        };
        let q = self.questions.get_mut(id).expect("checked above");
        q.returned = Some(reply.as_ref().map(|p| p.caps.clone()).map_err(Clone::clone));
        let sink = q.sink.take();
        if q.released {
            if needs_finish(q.returned.as_ref().expect("just set")) {
                self.send(&Message::Finish { question: id }, &[]);
            }
            let q = self.questions.remove(id);
            self.defer_drop_question(q);
        }
        match sink {
            Some(sink) => self.effects.push(Effect::Complete(sink, reply)),
            None => self.defer_drop(reply),
        }
        Ok(())
    }

    pub(crate) fn handle_disembargo_reply(&mut self, id: u32) -> Result<(), Violation> {
        let embargo = self
            .embargoes
            .remove(id)
            .ok_or_else(|| RpcError::protocol(format!("DisembargoReply for unknown embargo {id}")))?;
        self.effects.push(Effect::Resolve(embargo.queue, Ok(embargo.target)));
        Ok(())
    }

    // ----- calls the peer makes ------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_call(
        &mut self,
        shell: &dyn Shell,
        id: u32,
        target: Target,
        interface: u64,
        method: u16,
        descriptors: &[CapDescriptor],
        trailer: Bytes,
    ) -> Result<(), Violation> {
        let caps = self.import_caps(shell, descriptors)?;
        let payload = Payload::received(trailer, caps, &self.limits);
        if self.answers.contains_key(&id) {
            self.defer_drop(payload);
            return Err(RpcError::protocol(format!("question id {id} reused while its call is still active")));
        }
        self.max_peer_question = Some(self.max_peer_question.map_or(id, |m| m.max(id)));
        if let Some(reason) = self.refuse_calls.clone() {
            self.defer_drop(payload);
            self.send_owed(&Message::Return { question: id, result: Err(reason) }, &[]);
            return Ok(());
        }
        let max = self.limits.max_outstanding_calls as usize;
        // Answers kept after returning (for pipelining, or an error not yet
        // finished) are bounded too, like exports: a peer that never sends
        // `Finish` cannot grow the table.
        let kept = max + self.limits.max_exports as usize;
        if self.running_answers >= max || self.answers.len() >= kept {
            let err = if self.running_answers >= max {
                RpcError::limit(format!("more than {max} calls in flight on this connection"))
            } else {
                RpcError::limit(format!(
                    "more than {kept} answers held on this connection (max_outstanding_calls + max_exports): \
                     the peer must release (Finish) answers it no longer needs"
                ))
            };
            self.defer_drop(payload);
            self.send_owed(&Message::Return { question: id, result: Err(err) }, &[]);
            return Ok(());
        }
        let target = match self.resolve_target(target) {
            Ok(target) => target,
            Err(err) => {
                self.defer_drop(payload);
                self.send_owed(&Message::Return { question: id, result: Err(err) }, &[]);
                return Ok(());
            }
        };
        let answer =
            Answer { canceller: None, finished: false, returned: None, pipes: Default::default(), passed_back: false };
        self.answers.insert(id, answer);
        self.running_answers += 1;
        let reply = shell.answer_sink(id, interface, method);
        self.effects.push(Effect::Call(target, OutgoingCall { interface, method, payload, reply }));
        Ok(())
    }

    /// The object a call or descriptor from the peer names.
    pub(super) fn resolve_target(&mut self, target: Target) -> Result<Client, RpcError> {
        match target {
            Target::Export(id) => self
                .exports
                .get(id)
                .map(|e| e.client.clone())
                .ok_or_else(|| RpcError::unimplemented(format!("no capability with id {id} on this connection"))),
            Target::Answer { question, cap } => self.answer_target(question, cap),
        }
    }

    pub(super) fn answer_target(&mut self, question: u32, cap: u32) -> Result<Client, RpcError> {
        let answer = self.answers.get_mut(&question).ok_or_else(|| {
            RpcError::unimplemented(format!(
                "no answer {question} to pipeline on (it returned no capabilities, or never existed)"
            ))
        })?;
        if let Some((queue, _)) = answer.pipes.get(&cap) {
            return Ok(Client { hook: queue.clone() });
        }
        match &answer.returned {
            Some(Ok(caps)) => cap_at(caps, cap),
            Some(Err(err)) => Err(err.clone()),
            None => {
                let queue = Arc::new(QueuedClient::new());
                answer.pipes.insert(cap, (queue.clone(), false));
                Ok(Client { hook: queue })
            }
        }
    }

    /// Whether the peer no longer wants answer `id` (a canceller set now
    /// would run at once).
    pub(crate) fn answer_cancelled(&self, id: u32) -> bool {
        !self.answers.get(&id).is_some_and(Answer::wants_canceller)
    }

    pub(crate) fn set_answer_canceller(&mut self, id: u32, canceller: Canceller) {
        match self.answers.get_mut(&id) {
            Some(answer) if answer.wants_canceller() => {
                if let Some(previous) = answer.canceller.replace(canceller) {
                    self.defer_drop(previous);
                }
            }
            _ => self.effects.push(Effect::Cancel(canceller)),
        }
    }

    /// Resolves the pipelined queues of answer `id` not yet resolved, each
    /// to `target(cap)` (effects: the queues forward their calls once the
    /// lock is released). Returns whether there were any; the caller runs
    /// those effects before calling [`Self::finish_answer`].
    pub(crate) fn resolve_pipes(&mut self, id: u32, target: impl Fn(u32) -> Result<Client, RpcError>) -> bool {
        let Some(answer) = self.answers.get_mut(&id) else { return false };
        let mut any = false;
        for (&cap, (queue, resolved)) in answer.pipes.iter_mut() {
            if !*resolved {
                *resolved = true;
                any = true;
                self.effects.push(Effect::Resolve(queue.clone(), target(cap)));
            }
        }
        any
    }

    /// Writes the `Return` for answer `id` and keeps what pipelining needs.
    pub(crate) fn finish_answer(&mut self, shell: &dyn Shell, id: u32, reply: Reply) {
        let Some(answer) = self.answers.get_mut(&id) else { return self.defer_drop(reply) };
        // Answered (or given up): it no longer counts as running.
        self.running_answers = self.running_answers.saturating_sub(1);
        if answer.finished || self.closed.is_some() {
            let answer = self.answers.remove(&id);
            self.defer_drop_answer(answer);
            self.send_owed(
                &Message::Return { question: id, result: Err(RpcError::cancelled("the caller cancelled the call")) },
                &[],
            );
            return self.defer_drop(reply);
        }
        let result = match reply {
            Ok(payload) => self.send_reply(shell, id, payload),
            Err(err) => {
                let err = self.fit_error(err);
                self.send_owed(&Message::Return { question: id, result: Err(err.clone()) }, &[]);
                Err(err)
            }
        };
        if needs_finish(&result) {
            if let Some(answer) = self.answers.get_mut(&id) {
                answer.returned = Some(result);
                // May be a question on this very connection: drop it unlocked.
                let canceller = answer.canceller.take();
                self.defer_drop(canceller);
            }
        } else {
            let answer = self.answers.remove(&id);
            self.defer_drop_answer(answer);
        }
    }

    /// Writes the `Return` of a value; a value too large for the peer's frame
    /// limit becomes a `LimitExceeded` error instead (the connection stays).
    pub(super) fn send_reply(
        &mut self,
        shell: &dyn Shell,
        id: u32,
        payload: Payload,
    ) -> Result<Vec<CapEntry>, RpcError> {
        let max = self.peer_limits.max_frame_size as usize;
        let err = match self.export_caps(shell, &payload.caps) {
            Ok(descriptors) => {
                let len = payload.bytes.len();
                let oversized = if len >= max { Some(len) } else { None };
                let header = Message::Return { question: id, result: Ok(descriptors) };
                match oversized.or_else(|| self.oversized(&header, len)) {
                    None => {
                        self.send_owed(&header, &payload.bytes);
                        return Ok(payload.caps);
                    }
                    Some(size) => {
                        let part = if size == len { "value" } else { "frame" };
                        let err = too_large("reply", part, size, max);
                        if let Message::Return { result: Ok(descriptors), .. } = &header {
                            self.unexport(descriptors, &err);
                        }
                        err
                    }
                }
            }
            Err(err) => err,
        };
        self.send_owed(&Message::Return { question: id, result: Err(err.clone()) }, &[]);
        self.defer_drop(payload);
        Err(err)
    }

    /// `err`, or if its `Return` would exceed the peer's frame limit (a huge
    /// application error value), a `LimitExceeded` error saying so.
    pub(super) fn fit_error(&self, err: RpcError) -> RpcError {
        let size = err.message().len() + err.payload().map_or(0, <[u8]>::len);
        if size + 64 < self.peer_limits.max_frame_size as usize {
            return err;
        }
        let message = Message::Return { question: u32::MAX, result: Err(err) };
        match self.oversized(&message, 0) {
            None => match message {
                Message::Return { result: Err(err), .. } => err,
                _ => unreachable!("built above"),
            },
            Some(len) => too_large("error reply", "frame", len, self.peer_limits.max_frame_size as usize),
        }
    }

    pub(crate) fn handle_finish(&mut self, id: u32) -> Result<(), Violation> {
        match self.answers.get_mut(&id) {
            Some(answer) if answer.returned.is_none() => {
                // The caller finishes a question only once nothing it pipelined
                // on it is still wanted (see `ReplySink::depend_on`); but a
                // capability of it the caller passed back to us is still wanted
                // by whoever holds it here.
                answer.finished = true;
                if !answer.passed_back {
                    if let Some(canceller) = answer.canceller.take() {
                        self.effects.push(Effect::Cancel(canceller));
                    }
                }
            }
            Some(_) => {
                let answer = self.answers.remove(&id);
                self.defer_drop_answer(answer);
            }
            // An answer that returned without capabilities is gone already: a
            // Finish sent before the caller saw the Return is a harmless race.
            None if self.max_peer_question.is_some_and(|max| id <= max) => {}
            None => return Err(RpcError::protocol(format!("Finish for question {id}, which the peer never asked"))),
        }
        Ok(())
    }

    pub(crate) fn handle_release(&mut self, id: u32, count: u32) -> Result<(), Violation> {
        let export = self
            .exports
            .get_mut(id)
            .ok_or_else(|| RpcError::protocol(format!("Release of export {id}, which does not exist")))?;
        if count > export.refs {
            let held = export.refs;
            return Err(RpcError::protocol(format!(
                "Release of {count} references to export {id}, which the peer holds {held} of"
            )));
        }
        self.release_export(id, count);
        Ok(())
    }

    /// Drops `count` of the peer's references to export `id` (at most what it
    /// holds); the last one unexports the object (never the bootstrap).
    pub(super) fn release_export(&mut self, id: u32, count: u32) {
        let Some(export) = self.exports.get_mut(id) else { return };
        export.refs = export.refs.saturating_sub(count);
        if export.refs == 0 && !export.permanent {
            let export = self.exports.remove(id).expect("present");
            self.export_ids.remove(&export.client.identity());
            self.effects.push(Effect::DropClient(export.client));
        }
    }

    pub(crate) fn handle_disembargo(&mut self, target: Target, id: u32) -> Result<(), Violation> {
        let Target::Answer { question, .. } = target else {
            return Err(RpcError::protocol("Disembargo must aim at a promised answer"));
        };
        if self.answers.get(&question).is_none_or(|a| a.returned.is_none()) {
            return Err(RpcError::protocol(format!("Disembargo for answer {question}, which has not returned")));
        }
        // Every call the peer pipelined on that answer was forwarded before this
        // frame was read, so the echo travels behind them.
        self.send_owed(&Message::DisembargoReply { id }, &[]);
        Ok(())
    }
}

/// The error of a call or reply whose frame would exceed the peer's limit.
pub(super) fn too_large(what: &str, part: &str, len: usize, max: usize) -> RpcError {
    RpcError::limit(format!(
        "{what} not sent: its {part} of {len} bytes exceeds the peer's frame limit of {max} bytes \
         (Limits::max_frame_size); send bulk data as a `Bytes` stream or a `Sequence`, \
         which travel in bounded messages"
    ))
}

/// Whether the callee keeps an answer (and the caller must `Finish` it).
pub(super) fn needs_finish(result: &Result<Vec<CapEntry>, RpcError>) -> bool {
    match result {
        Ok(caps) => !caps.is_empty(),
        Err(_) => true,
    }
}

/// Capability `cap` of a call's outcome, for the calls pipelined on it.
pub(crate) fn reply_cap(reply: &crate::cap::Reply, cap: u32) -> Result<Client, RpcError> {
    match reply {
        Ok(payload) => cap_at(&payload.caps, cap),
        Err(err) => Err(err.clone()),
    }
}

/// Capability `index` of a result's capabilities, or why it is none.
pub(crate) fn cap_at(caps: &[CapEntry], index: u32) -> Result<Client, RpcError> {
    match caps.get(index as usize) {
        Some(CapEntry::Object(client)) => Ok(client.clone()),
        Some(CapEntry::Stream(_)) | None => {
            Err(RpcError::unimplemented(format!("the result holds no capability at index {index}")))
        }
    }
}
