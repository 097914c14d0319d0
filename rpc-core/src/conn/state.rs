//! The protocol state of one connection, free of I/O.
//!
//! Input: decoded frames (`handle_*`) and local requests (`send_call`,
//! `release_question`, …). Output: bytes appended to `out`, and deferred work
//! (calls to deliver, promises to complete) that the lock guard runs once the
//! state is unlocked. Time and sockets live in `driver.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};

use super::import::ImportClient;
use super::tables::IdTable;
use super::{ConnShared, Deferred, QuestionRef};
use crate::cap::{Canceller, Client, OutgoingCall, PeerRef, QueuedClient, Reply};
use crate::payload::{CapEntry, Payload};
use crate::stream::{Ending, RemoteConsumer, RemoteProducer};
use crate::wire::{frame, CapDescriptor, Message, Target};
use crate::{Limits, RpcError};

/// A call we made, awaiting or holding its answer.
struct Question {
    sink: Option<Arc<dyn crate::cap::ReplySink>>,
    /// The result's capabilities (or error), kept for pipelined calls.
    returned: Option<Result<Vec<CapEntry>, RpcError>>,
    /// The caller no longer holds the question.
    released: bool,
    /// Per result-capability index: how pipelined calls are routed.
    pipes: HashMap<u32, Pipe>,
}

#[derive(Default)]
struct Pipe {
    /// Calls went to the peer aimed at the promised answer.
    sent: bool,
    /// Once resolved to a local object: where calls go now (an embargo queue).
    redirect: Option<Client>,
}

/// A call the peer made, running or holding its result for pipelining.
struct Answer {
    canceller: Option<Canceller>,
    /// The peer sent `Finish` while the handler was running.
    finished: bool,
    returned: Option<Result<Vec<CapEntry>, RpcError>>,
    /// Pipelined calls that arrived before the result, per capability index.
    pipes: HashMap<u32, (Arc<QueuedClient>, bool)>,
    /// The peer passed a capability of this answer back to us in a payload
    /// (perhaps its only reference): a `Finish` must not cancel the call.
    passed_back: bool,
}

struct Export {
    client: Client,
    /// References the peer holds (descriptors sent minus released).
    refs: u32,
    /// The bootstrap object stays exported for the connection's lifetime.
    permanent: bool,
}

struct Import {
    hook: Weak<ImportClient>,
    /// Descriptors received for this id: what we release when we drop it.
    count: u32,
}

/// Calls held back until earlier calls, travelling through the peer, arrived.
struct Embargo {
    queue: Arc<QueuedClient>,
    target: Client,
}

mod streams;

/// Our half of a stream on this connection.
#[derive(Clone)]
enum StreamHalf {
    Producer(Arc<RemoteProducer>),
    Consumer(Arc<RemoteConsumer>),
}

/// Everything one connection knows; see the module docs.
pub(crate) struct ConnState {
    pub(crate) out: BytesMut,
    /// Bytes in `out` that we owe the peer because it asked: replies to its
    /// calls, pongs, embargo echoes. Bounded by `Config::max_unsent_output`
    /// (the reader waits before taking more requests off the wire).
    pub(crate) owed: usize,
    /// When the peer's last ping arrived, and how many in a row came too soon.
    last_ping: Option<tokio::time::Instant>,
    ping_strikes: u32,
    /// Our last ping not yet answered: its nonce and when it was queued.
    ping_sent: Option<(u64, tokio::time::Instant)>,
    /// The round trip of our last answered ping.
    last_rtt: Option<std::time::Duration>,
    pub(crate) deferred: Vec<Deferred>,
    /// Questions still waiting for their `Return` (not those kept after it
    /// for pipelining): what the peer's `max_outstanding_calls` limits.
    awaiting_returns: usize,
    /// Answers whose handler has not finished: what our limit counts.
    running_answers: usize,
    questions: IdTable<Question>,
    answers: HashMap<u32, Answer>,
    /// Highest question id the peer has used: a `Finish` above it is bogus.
    max_peer_question: Option<u32>,
    exports: IdTable<Export>,
    export_ids: HashMap<usize, u32>,
    imports: HashMap<u32, Import>,
    embargoes: IdTable<Embargo>,
    streams: HashMap<u32, StreamHalf>,
    /// `rpc.stream` spans of open streams, kept only while tracing wants them.
    stream_spans: HashMap<u32, tracing::Span>,
    /// `rpc.question` spans of our calls awaiting their `Return`, likewise.
    question_spans: HashMap<u32, tracing::Span>,
    /// The connection's `rpc.connection` span, parent of the stream spans.
    span: tracing::Span,
    /// Streams we have numbered so far (our ids are `n << 1 | parity`).
    streams_opened: u32,
    /// The low bit of stream ids we allocate (from the handshake nonces).
    stream_parity: u32,
    /// Highest stream id the peer has allocated.
    max_peer_stream: Option<u32>,
    /// Producers with something to emit.
    pub(crate) ready: Vec<u32>,
    closed: Option<RpcError>,
    /// Set while a server drains this connection: new calls from the peer
    /// are answered with this error at once (calls already running go on).
    refuse_calls: Option<RpcError>,
    serves_bootstrap: bool,
    limits: Limits,
    peer_limits: Limits,
}

type Violation = RpcError;

impl ConnState {
    pub(crate) fn new(
        limits: Limits,
        peer_limits: Limits,
        bootstrap: Option<Client>,
        stream_parity: u32,
        span: tracing::Span,
    ) -> Self {
        let mut state = ConnState {
            out: BytesMut::with_capacity(8 << 10),
            owed: 0,
            last_ping: None,
            ping_strikes: 0,
            ping_sent: None,
            last_rtt: None,
            deferred: Vec::new(),
            awaiting_returns: 0,
            running_answers: 0,
            questions: IdTable::default(),
            answers: HashMap::new(),
            max_peer_question: None,
            exports: IdTable::default(),
            export_ids: HashMap::new(),
            imports: HashMap::new(),
            embargoes: IdTable::default(),
            streams: HashMap::new(),
            stream_spans: HashMap::new(),
            question_spans: HashMap::new(),
            span,
            streams_opened: 0,
            stream_parity,
            max_peer_stream: None,
            ready: Vec::new(),
            closed: None,
            refuse_calls: None,
            serves_bootstrap: bootstrap.is_some(),
            limits,
            peer_limits,
        };
        let bootstrap = bootstrap
            .unwrap_or_else(|| Client::broken(RpcError::unimplemented("this peer offers no bootstrap capability")));
        state.export_ids.insert(bootstrap.identity(), 0);
        state.exports.insert(Export { client: bootstrap, refs: 0, permanent: true });
        state
    }

    pub(crate) fn is_closed(&self) -> Option<&RpcError> {
        self.closed.as_ref()
    }

    /// Whether nothing but local users could keep this connection open: we
    /// serve no bootstrap, export nothing and owe no answers.
    pub(crate) fn is_idle(&self) -> bool {
        !self.serves_bootstrap && self.exports.len() <= 1 && self.answers.is_empty()
    }

    /// What [`crate::ConnectionMetrics`] reads from the protocol state.
    pub(crate) fn fill_metrics(&self, metrics: &mut crate::ConnectionMetrics) {
        let counts = self.counts();
        metrics.calls_in_flight = self.awaiting_returns;
        metrics.calls_running = self.running_answers;
        metrics.streams_open = counts.streams;
        metrics.exports = counts.exports;
        metrics.imports = counts.imports;
        metrics.last_keepalive_rtt = self.last_rtt;
    }

    /// Whether handlers of the peer's calls are running or streams are open:
    /// what a graceful server shutdown waits for.
    pub(crate) fn is_busy(&self) -> bool {
        self.running_answers > 0 || !self.streams.is_empty()
    }

    /// From now on, answers every new call from the peer with `reason`
    /// instead of running it (a draining server); running calls go on.
    pub(crate) fn refuse_new_calls(&mut self, reason: RpcError) {
        self.refuse_calls = Some(reason);
    }

    /// The size of every table (for `Connection::debug_counts`).
    pub(crate) fn counts(&self) -> crate::__private::TableCounts {
        let bootstrap = self.exports.get(0).is_some_and(|e| e.permanent);
        crate::__private::TableCounts {
            questions: self.questions.len(),
            answers: self.answers.len(),
            exports: self.exports.len() - usize::from(bootstrap),
            imports: self.imports.len(),
            embargoes: self.embargoes.len(),
            streams: self.streams.len(),
            closed: self.closed.is_some(),
        }
    }

    fn send(&mut self, message: &Message, trailer: &[u8]) {
        if let Err(err) = frame::encode(&mut self.out, message, trailer) {
            tracing::error!("dropping unencodable frame: {err}");
        }
    }

    /// [`Self::send`] for output the peer asked for (counted in `owed`).
    fn send_owed(&mut self, message: &Message, trailer: &[u8]) {
        let before = self.out.len();
        self.send(message, trailer);
        self.owed += self.out.len() - before;
    }

    /// Fails `call` once the lock is released (its payload may hold imports).
    fn fail_call(&mut self, call: OutgoingCall, err: RpcError) {
        if !call.payload.caps.is_empty() {
            // Stream ends it carried end with the call's error.
            self.deferred.push(Deferred::FailStreams(call.payload.caps, err.clone()));
        }
        self.deferred.push(Deferred::Complete(call.reply, Err(err)));
    }

    /// Drops `value` after the lock is released if it could re-enter a
    /// connection (it holds capabilities or cancellers), at once otherwise.
    fn defer_drop<T: MayReenter + Send + 'static>(&mut self, value: T) {
        if !value.may_reenter() {
            return;
        }
        self.deferred.push(Deferred::Drop(Box::new(value)));
    }

    // ----- calls we make -------------------------------------------------

    /// Sends `call` to the peer's capability `target`. A call too large for
    /// the peer's frame limit fails alone, before anything is sent.
    pub(crate) fn send_call(&mut self, shared: &Arc<ConnShared>, target: PeerRef, call: OutgoingCall) {
        if let Err(err) = self.check_can_call() {
            return self.fail_call(call, err);
        }
        let caps = match self.export_caps(shared, &call.payload.caps) {
            Ok(caps) => caps,
            Err(err) => return self.fail_call(call, err),
        };
        let max = self.peer_limits.max_frame_size as usize;
        if call.payload.bytes.len() >= max {
            // Too large whatever the header. Exporting first (and taking it
            // back now) ends the payload's stream ends with this error.
            let err = too_large("call", "arguments", call.payload.bytes.len(), max);
            self.unexport(&caps, &err);
            return self.fail_call(call, err);
        }
        let question =
            Question { sink: Some(call.reply.clone()), returned: None, released: false, pipes: HashMap::new() };
        let id = self.questions.insert(question);
        self.awaiting_returns += 1;
        let wire_target = match target {
            PeerRef::Export(id) => Target::Export(id),
            PeerRef::Answer { question, cap } => Target::Answer { question, cap },
        };
        let header =
            Message::Call { question: id, target: wire_target, interface: call.interface, method: call.method, caps };
        if let Some(len) = self.oversized(&header, call.payload.bytes.len()) {
            self.awaiting_returns -= 1;
            let q = self.questions.remove(id);
            self.defer_drop(q);
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
        self.send(&header, &call.payload.bytes);
        let question_ref = QuestionRef { user: shared.user_ref(), id };
        self.deferred.push(Deferred::SetCanceller(call.reply, Canceller::Question(question_ref)));
        self.defer_drop(call.payload);
    }

    /// The frame size of `message` with `trailer` bytes after it, if that is
    /// over the peer's frame limit. Exact; cheap unless close to the limit.
    fn oversized(&self, message: &Message, trailer: usize) -> Option<usize> {
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
    fn unexport(&mut self, descriptors: &[CapDescriptor], err: &RpcError) {
        for descriptor in descriptors {
            match *descriptor {
                CapDescriptor::SenderHosted(id) => self.release_export(id, 1),
                CapDescriptor::SequenceReader { stream, .. }
                | CapDescriptor::SequenceWriter { stream, .. }
                | CapDescriptor::BytesReader { stream, .. }
                | CapDescriptor::BytesWriter { stream, .. } => {
                    self.ready.retain(|&ready| ready != stream);
                    let Some(half) = self.streams.remove(&stream) else { continue };
                    self.trace_stream_end(stream, "not sent: its call failed");
                    let ending = Ending::Disconnected(err.clone());
                    let dropped = match &half {
                        StreamHalf::Producer(producer) => producer.on_end(ending),
                        StreamHalf::Consumer(consumer) => consumer.on_end(ending),
                    };
                    self.deferred.push(Deferred::Drop(dropped));
                    self.defer_drop(half);
                }
                CapDescriptor::ReceiverHosted(_) | CapDescriptor::ReceiverAnswer { .. } => {}
            }
        }
    }

    /// Opens the caller's `rpc.question` span of call `id` (kept only if
    /// tracing wants it); its `Return` closes it.
    fn trace_question(&mut self, id: u32, interface: u64, method: u16) {
        let span = tracing::debug_span!(parent: &self.span, "rpc.question", question = id, interface_id = interface, method_id = method);
        if !span.is_disabled() {
            tracing::trace!(parent: &span, "call sent");
            self.question_spans.insert(id, span);
        }
    }

    fn check_can_call(&self) -> Result<(), RpcError> {
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
    pub(crate) fn pipeline_call(&mut self, shared: &Arc<ConnShared>, question: u32, cap: u32, call: OutgoingCall) {
        let Some(q) = self.questions.get_mut(question) else {
            let err = self.closed.clone().unwrap_or_else(|| RpcError::cancelled("the promise was dropped"));
            return self.fail_call(call, err);
        };
        if let Some(redirect) = q.pipes.get(&cap).and_then(|p| p.redirect.clone()) {
            return self.deferred.push(Deferred::Call(redirect, call));
        }
        let target = match &q.returned {
            None => return self.send_call(shared, PeerRef::Answer { question, cap }, call),
            Some(Err(err)) => Err(err.clone()),
            Some(Ok(caps)) => cap_at(caps, cap),
        };
        let target = match target {
            Ok(target) => target,
            Err(err) => return self.fail_call(call, err),
        };
        match target.hook.peer_ref(shared) {
            Some(peer_ref) => self.send_call(shared, peer_ref, call),
            None => self.redirect_locally(question, cap, target, call),
        }
    }

    /// The promise resolved to an object on our side. If calls already went
    /// through the peer, hold new ones until those come back (an embargo).
    fn redirect_locally(&mut self, question: u32, cap: u32, target: Client, call: OutgoingCall) {
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
        self.deferred.push(Deferred::Call(redirect, call));
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
            self.defer_drop(q);
        }
    }

    pub(crate) fn handle_return(
        &mut self,
        shared: &Arc<ConnShared>,
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
                let caps = self.import_caps(shared, &descriptors)?;
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
            self.defer_drop(q);
        }
        match sink {
            Some(sink) => self.deferred.push(Deferred::Complete(sink, reply)),
            None => self.defer_drop(reply),
        }
        Ok(())
    }

    pub(crate) fn handle_disembargo_reply(&mut self, id: u32) -> Result<(), Violation> {
        let embargo = self
            .embargoes
            .remove(id)
            .ok_or_else(|| RpcError::protocol(format!("DisembargoReply for unknown embargo {id}")))?;
        self.deferred.push(Deferred::Resolve(embargo.queue, Ok(embargo.target)));
        Ok(())
    }

    // ----- calls the peer makes ------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_call(
        &mut self,
        shared: &Arc<ConnShared>,
        id: u32,
        target: Target,
        interface: u64,
        method: u16,
        descriptors: &[CapDescriptor],
        trailer: Bytes,
    ) -> Result<(), Violation> {
        let caps = self.import_caps(shared, descriptors)?;
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
            Answer { canceller: None, finished: false, returned: None, pipes: HashMap::new(), passed_back: false };
        self.answers.insert(id, answer);
        self.running_answers += 1;
        let reply = Arc::new(super::answer::RemoteAnswer::new(shared.clone(), id, interface, method));
        self.deferred.push(Deferred::Call(target, OutgoingCall { interface, method, payload, reply }));
        Ok(())
    }

    /// The object a call or descriptor from the peer names.
    fn resolve_target(&mut self, target: Target) -> Result<Client, RpcError> {
        match target {
            Target::Export(id) => self
                .exports
                .get(id)
                .map(|e| e.client.clone())
                .ok_or_else(|| RpcError::unimplemented(format!("no capability with id {id} on this connection"))),
            Target::Answer { question, cap } => self.answer_target(question, cap),
        }
    }

    fn answer_target(&mut self, question: u32, cap: u32) -> Result<Client, RpcError> {
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

    pub(crate) fn set_answer_canceller(&mut self, id: u32, canceller: Canceller) {
        match self.answers.get_mut(&id) {
            Some(answer) if answer.returned.is_none() && (!answer.finished || answer.passed_back) => {
                let previous = answer.canceller.replace(canceller);
                self.defer_drop(previous);
            }
            _ => self.deferred.push(Deferred::Cancel(canceller)),
        }
    }

    /// Pipelined queues of answer `id` not yet resolved, marked resolved now.
    /// The caller resolves them before calling [`Self::finish_answer`].
    pub(crate) fn take_unresolved_pipes(&mut self, id: u32) -> Vec<(u32, Arc<QueuedClient>)> {
        let Some(answer) = self.answers.get_mut(&id) else { return Vec::new() };
        let mut pending = Vec::new();
        for (cap, (queue, resolved)) in answer.pipes.iter_mut() {
            if !*resolved {
                *resolved = true;
                pending.push((*cap, queue.clone()));
            }
        }
        pending
    }

    /// Writes the `Return` for answer `id` and keeps what pipelining needs.
    pub(crate) fn finish_answer(&mut self, shared: &Arc<ConnShared>, id: u32, reply: Reply) {
        let Some(answer) = self.answers.get_mut(&id) else { return self.defer_drop(reply) };
        // Answered (or given up): it no longer counts as running.
        self.running_answers = self.running_answers.saturating_sub(1);
        if answer.finished || self.closed.is_some() {
            let answer = self.answers.remove(&id);
            self.defer_drop(answer);
            self.send_owed(
                &Message::Return { question: id, result: Err(RpcError::cancelled("the caller cancelled the call")) },
                &[],
            );
            return self.defer_drop(reply);
        }
        let result = match reply {
            Ok(payload) => self.send_reply(shared, id, payload),
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
            self.defer_drop(answer);
        }
    }

    /// Writes the `Return` of a value; a value too large for the peer's frame
    /// limit becomes a `LimitExceeded` error instead (the connection stays).
    fn send_reply(&mut self, shared: &Arc<ConnShared>, id: u32, payload: Payload) -> Result<Vec<CapEntry>, RpcError> {
        let max = self.peer_limits.max_frame_size as usize;
        let err = match self.export_caps(shared, &payload.caps) {
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
    fn fit_error(&self, err: RpcError) -> RpcError {
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
                        self.deferred.push(Deferred::Cancel(canceller));
                    }
                }
            }
            Some(_) => {
                let answer = self.answers.remove(&id);
                self.defer_drop(answer);
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
    fn release_export(&mut self, id: u32, count: u32) {
        let Some(export) = self.exports.get_mut(id) else { return };
        export.refs = export.refs.saturating_sub(count);
        if export.refs == 0 && !export.permanent {
            let export = self.exports.remove(id).expect("present");
            self.export_ids.remove(&export.client.identity());
            self.defer_drop(export.client);
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

    /// Answers a ping, counting a strike if it came sooner than
    /// `min_interval` after the last; more than `max_strikes` strikes in a
    /// row close the connection. `now` is when the ping was read.
    pub(crate) fn handle_ping(
        &mut self,
        nonce: u64,
        now: tokio::time::Instant,
        min_interval: std::time::Duration,
        max_strikes: u32,
    ) -> Result<(), Violation> {
        if !min_interval.is_zero() {
            let too_soon = self.last_ping.is_some_and(|last| now.saturating_duration_since(last) < min_interval);
            self.last_ping = Some(now);
            if too_soon {
                self.ping_strikes += 1;
                if self.ping_strikes > max_strikes {
                    return Err(RpcError::limit(format!(
                        "too many pings: {} in a row came less than {min_interval:?} apart \
                         (ping_min_interval; {max_strikes} allowed)",
                        self.ping_strikes
                    )));
                }
            } else {
                self.ping_strikes = 0;
            }
        }
        self.send_owed(&Message::Pong(nonce), &[]);
        Ok(())
    }

    /// The reader waited for the peer to read: pings that queued up meanwhile
    /// arrive back to back through no fault of the peer.
    pub(crate) fn forgive_pings(&mut self) {
        self.last_ping = None;
    }

    /// Queues a keepalive ping; `now` is when, for the round trip.
    pub(crate) fn send_ping(&mut self, nonce: u64, now: tokio::time::Instant) {
        self.send(&Message::Ping(nonce), &[]);
        self.ping_sent = Some((nonce, now));
    }

    /// The peer answered a ping: if it is our last one, `now` gives the
    /// round trip. Any other nonce is ignored (a pong is harmless).
    pub(crate) fn handle_pong(&mut self, nonce: u64, now: tokio::time::Instant) {
        if let Some((sent_nonce, sent)) = self.ping_sent {
            if sent_nonce == nonce {
                self.ping_sent = None;
                self.last_rtt = Some(now.saturating_duration_since(sent));
            }
        }
    }

    // ----- capabilities in payloads --------------------------------------

    /// Names each capability of an outgoing payload for the peer, exporting as
    /// needed. On failure, what was exported for the payload is taken back.
    fn export_caps(&mut self, shared: &Arc<ConnShared>, caps: &[CapEntry]) -> Result<Vec<CapDescriptor>, RpcError> {
        let mut descriptors = Vec::with_capacity(caps.len());
        for entry in caps {
            let descriptor = match entry {
                CapEntry::Object(client) => self.describe(shared, client),
                CapEntry::Stream(slot) => match slot.take() {
                    Some(end) => end.bind(self, shared),
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

    fn describe(&mut self, shared: &Arc<ConnShared>, client: &Client) -> Result<CapDescriptor, RpcError> {
        match client.hook.peer_ref(shared) {
            Some(PeerRef::Export(id)) => return Ok(CapDescriptor::ReceiverHosted(id)),
            Some(PeerRef::Answer { question, cap }) => match self.questions.get(question).map(|q| &q.returned) {
                Some(None) => return Ok(CapDescriptor::ReceiverAnswer { question, cap }),
                Some(Some(Ok(caps))) => {
                    if let Ok(resolved) = cap_at(caps, cap) {
                        return self.describe(shared, &resolved);
                    }
                }
                _ => {}
            },
            None => {}
        }
        Ok(CapDescriptor::SenderHosted(self.export(client)?))
    }

    fn export(&mut self, client: &Client) -> Result<u32, RpcError> {
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
    fn import_caps(
        &mut self,
        shared: &Arc<ConnShared>,
        descriptors: &[CapDescriptor],
    ) -> Result<Vec<CapEntry>, Violation> {
        let mut caps = Vec::with_capacity(descriptors.len());
        for descriptor in descriptors {
            match self.import_one(shared, descriptor) {
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

    fn import_one(&mut self, shared: &Arc<ConnShared>, descriptor: &CapDescriptor) -> Result<CapEntry, Violation> {
        Ok(CapEntry::Object(match *descriptor {
            CapDescriptor::SequenceReader { .. }
            | CapDescriptor::SequenceWriter { .. }
            | CapDescriptor::BytesReader { .. }
            | CapDescriptor::BytesWriter { .. } => return self.import_stream_end(shared, descriptor),
            CapDescriptor::SenderHosted(id) => self.import(shared, id)?,
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
    pub(crate) fn import(&mut self, shared: &Arc<ConnShared>, id: u32) -> Result<Client, Violation> {
        self.import_counted(shared, id, 1)
    }

    pub(crate) fn import_counted(
        &mut self,
        shared: &Arc<ConnShared>,
        id: u32,
        count: u32,
    ) -> Result<Client, Violation> {
        if let Some(entry) = self.imports.get_mut(&id) {
            if let Some(hook) = entry.hook.upgrade() {
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
        let hook = Arc::new(ImportClient::new(shared.user_ref(), id));
        self.imports.insert(id, Import { hook: Arc::downgrade(&hook), count });
        Ok(Client { hook })
    }

    /// An import was dropped: release every reference we got for it.
    pub(crate) fn drop_import(&mut self, id: u32, hook: *const ImportClient) {
        let Some(entry) = self.imports.get(&id) else { return };
        if !std::ptr::eq(entry.hook.as_ptr(), hook) {
            return;
        }
        let count = entry.count;
        self.imports.remove(&id);
        if count > 0 && self.closed.is_none() {
            self.send(&Message::Release { export: id, count }, &[]);
        }
    }

    // ----- shutdown ------------------------------------------------------

    /// Fails everything pending. Returns false if already closed.
    pub(crate) fn close(&mut self, reason: RpcError, tell_peer: bool) -> bool {
        if self.closed.is_some() {
            return false;
        }
        if tell_peer {
            self.send(&Message::Abort(reason.clone()), &[]);
        }
        self.closed = Some(reason.clone());
        self.awaiting_returns = 0;
        self.running_answers = 0;
        for mut question in self.questions.drain() {
            if let Some(sink) = question.sink.take() {
                self.deferred.push(Deferred::Complete(sink, Err(reason.clone())));
            }
            self.defer_drop(question);
        }
        for (_, mut answer) in self.answers.drain().collect::<Vec<_>>() {
            if let Some(canceller) = answer.canceller.take() {
                self.deferred.push(Deferred::Cancel(canceller));
            }
            for (_, (queue, _)) in answer.pipes.drain() {
                self.deferred.push(Deferred::Resolve(queue, Err(reason.clone())));
            }
            self.defer_drop(answer);
        }
        for (_, span) in self.question_spans.drain() {
            tracing::debug!(parent: &span, "call failed: the connection closed");
        }
        for (_, span) in self.stream_spans.drain() {
            tracing::debug!(parent: &span, "stream ended: the connection closed");
        }
        for (_, half) in self.streams.drain().collect::<Vec<_>>() {
            let dropped = match &half {
                StreamHalf::Producer(producer) => producer.on_end(Ending::Disconnected(reason.clone())),
                StreamHalf::Consumer(consumer) => consumer.on_end(Ending::Disconnected(reason.clone())),
            };
            self.deferred.push(Deferred::Drop(dropped));
            self.defer_drop(half);
        }
        self.ready.clear();
        for embargo in self.embargoes.drain() {
            self.deferred.push(Deferred::Resolve(embargo.queue, Err(reason.clone())));
        }
        let exports: Vec<Client> = self.exports.drain().into_iter().map(|e| e.client).collect();
        self.export_ids.clear();
        self.imports.clear();
        self.defer_drop(exports);
        true
    }
}

/// The error of a call or reply whose frame would exceed the peer's limit.
fn too_large(what: &str, part: &str, len: usize, max: usize) -> RpcError {
    RpcError::limit(format!(
        "{what} not sent: its {part} of {len} bytes exceeds the peer's frame limit of {max} bytes \
         (Limits::max_frame_size); send bulk data as a `Bytes` stream or a `Sequence`, \
         which travel in bounded messages"
    ))
}

/// Whether the callee keeps an answer (and the caller must `Finish` it).
fn needs_finish(result: &Result<Vec<CapEntry>, RpcError>) -> bool {
    match result {
        Ok(caps) => !caps.is_empty(),
        Err(_) => true,
    }
}

fn cap_at(caps: &[CapEntry], index: u32) -> Result<Client, RpcError> {
    match caps.get(index as usize) {
        Some(CapEntry::Object(client)) => Ok(client.clone()),
        Some(CapEntry::Stream(_)) | None => {
            Err(RpcError::unimplemented(format!("the result holds no capability at index {index}")))
        }
    }
}

/// Whether dropping a value could run code that locks a connection.
pub(crate) trait MayReenter {
    /// Conservative by default: anything not known to be inert is deferred.
    fn may_reenter(&self) -> bool {
        true
    }
}

impl MayReenter for Client {}
impl MayReenter for Canceller {}
impl MayReenter for StreamHalf {}
impl MayReenter for Box<dyn Send> {}

impl MayReenter for Payload {
    fn may_reenter(&self) -> bool {
        !self.caps.is_empty()
    }
}

impl MayReenter for Vec<CapEntry> {
    fn may_reenter(&self) -> bool {
        !self.is_empty()
    }
}

impl MayReenter for Vec<Client> {
    fn may_reenter(&self) -> bool {
        !self.is_empty()
    }
}

impl<T: MayReenter> MayReenter for Option<T> {
    fn may_reenter(&self) -> bool {
        self.as_ref().is_some_and(T::may_reenter)
    }
}

impl<T: MayReenter> MayReenter for Result<T, RpcError> {
    fn may_reenter(&self) -> bool {
        self.as_ref().is_ok_and(T::may_reenter)
    }
}

impl MayReenter for Question {
    fn may_reenter(&self) -> bool {
        self.sink.is_some() || self.returned.may_reenter() || !self.pipes.is_empty()
    }
}

impl MayReenter for Answer {
    fn may_reenter(&self) -> bool {
        self.canceller.is_some() || self.returned.may_reenter() || !self.pipes.is_empty()
    }
}
