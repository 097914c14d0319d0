//! The protocol of one connection as plain data: no I/O, no locks, no runtime.
//!
//! A [`Protocol`] holds everything one connection knows: the four tables
//! (questions, answers, exports, imports), embargoes, and the state of every
//! stream half. Its owner feeds it decoded frames ([`Protocol::handle_message`])
//! and local commands (`send_call`, `release_question`, stream writes, …) with
//! `&mut self`, and pulls two kinds of output:
//!
//! - **bytes to transmit**: frames appended to `out` (and producers queued in
//!   `ready`, which [`Protocol::emit_streams`] turns into frames);
//! - **effects**: work that may re-enter a connection (deliver a call,
//!   complete a promise, resolve a queue, drop a capability), pushed onto
//!   `effects` in the order they must run. The owner runs them only after it
//!   stops borrowing the protocol (for `conn/`, after unlocking).
//!
//! Handles the protocol hands out (imports, answers' reply sinks, question
//! cancellers, stream halves) are minted by the owner through [`Shell`]:
//! the protocol names things by id, the shell turns ids into handles. The
//! stream halves' handles are defined here (`producer.rs`, `consumer.rs`)
//! and reach their connection only through [`Host`].
//! Nothing here may lock, wake, call a capability or complete a promise; a CI
//! check (`scripts/check-layers.sh`) keeps tokio, `Mutex`, `Weak<` and the
//! connection's shared state out of this module.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::cap::{Canceller, Client, ClientHook, OutgoingCall, PeerRef, QueuedClient, ReplySink};
use crate::payload::{CapEntry, StreamEnd};
use crate::wire::{frame, Message};
use crate::{Limits, RpcError};

mod calls;
pub(crate) use calls::{cap_at, reply_cap};
mod caps;
mod consume;
mod consumer;
mod dispatch;
mod effects;
mod ending;
mod keepalive;
mod lane;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod pair;
#[cfg(test)]
mod pair_tests;
mod produce;
mod producer;
mod streams;
mod tables;

pub(crate) use consume::{RawBatch, RawItem, Signals};
pub(crate) use consumer::{ReadCache, RemoteConsumer};
pub(crate) use dispatch::PingPolicy;
pub(crate) use effects::{Effect, MayReenter};
pub(crate) use ending::Ending;
pub(crate) use lane::{LaneWriter, TakeOnce};
pub(crate) use produce::MAX_BYTES_PER_MESSAGE;
pub(crate) use producer::{RemoteProducer, WriterLane};
pub(crate) use streams::stream_descriptor;
use tables::{FastMap, IdMap, IdTable};

/// The connection as stream handles see it: where they take the lock.
///
/// `conn/` implements it for its shared state; a handle of the test
/// harness has none (its commands fail).
pub(crate) trait Host: Send + Sync {
    /// Runs `work` on the locked protocol, then runs the effects it left.
    /// Never called by a thread that holds this protocol already.
    fn with_protocol(&self, work: &mut dyn FnMut(&mut Protocol));
    /// Runs `work` on the locked protocol now, or, if this thread holds it
    /// (a handle ended from a drop under the lock), once it is released.
    fn later(&self, work: Box<dyn FnOnce(&mut Protocol) + Send>);
    /// The handle of stream `id` is gone ([`Protocol::stream_handle_dropped`],
    /// as `later` would run it, without a box).
    fn handle_dropped(&self, id: u32);
    /// Our decoded-size limit for one item (`Limits::max_decoded_size`).
    fn max_decoded(&self) -> u64;
    /// [`Protocol::producer_push_item`] under the lock: the one command
    /// every item of a sequence takes, so it gets no closure.
    fn push_item(&self, id: u32, item: &[u8], caps: Vec<CapEntry>) -> Result<(), RpcError>;
    /// [`Protocol::producer_push_slice`] under the lock (every small byte write).
    fn push_slice(&self, id: u32, data: &[u8]) -> Result<(), RpcError>;
    /// Producer `id`'s lane holds items and was not listed: the host must
    /// take them in ([`Protocol::producer_absorb`]) the next time anything
    /// locks the protocol, before anything else, and make sure something
    /// does soon.
    fn lane_listed(&self, id: u32);
}

/// What a handle bound to no connection answers.
fn no_connection() -> RpcError {
    RpcError::disconnected("the stream has no connection")
}

/// Runs `f` on the protocol `host` locks (a stream handle's commands).
#[inline]
fn on_host<R>(host: &Option<Arc<dyn Host>>, f: impl FnOnce(&mut Protocol) -> R) -> Result<R, RpcError> {
    let host = host.as_ref().ok_or_else(no_connection)?;
    let (mut f, mut out) = (Some(f), None);
    host.with_protocol(&mut |proto| out = f.take().map(|f| f(proto)));
    out.ok_or_else(no_connection)
}

/// [`Host::later`] for a handle's ending commands (nothing without a host).
fn later_on(host: &Option<Arc<dyn Host>>, work: impl FnOnce(&mut Protocol) + Send + 'static) {
    if let Some(host) = host {
        host.later(Box::new(work));
    }
}

/// How the shell finds an import's hook again without keeping it alive.
pub(crate) trait ImportSlot: Send {
    /// The hook, if some handle still holds it.
    fn upgrade(&self) -> Option<Arc<dyn ClientHook>>;
    /// The hook's address, as [`Protocol::drop_import`] is told it.
    fn addr(&self) -> usize;
}

/// What a [`Protocol`] asks of its owner: handles for the ids it names.
///
/// `conn/` implements it with handles that lock the connection; the test
/// harness implements it with handles that record what is asked of them.
pub(crate) trait Shell {
    /// The hook for the peer's export `id`, and a slot that finds it again
    /// while it lives (without keeping it alive). Its last drop must reach
    /// [`Protocol::drop_import`] with the hook's address.
    fn import_hook(&self, id: u32) -> (Arc<dyn ClientHook>, Box<dyn ImportSlot>);
    /// Where the outcome of the peer's call `id` goes.
    fn answer_sink(&self, id: u32, interface: u64, method: u16) -> Arc<dyn ReplySink>;
    /// The caller's hold on our question `id`: cancelling it must reach
    /// [`Protocol::release_question`].
    fn question_canceller(&self, id: u32) -> Canceller;
    /// How the peer names `client`, if it lives at the far end of this connection.
    fn peer_ref(&self, client: &Client) -> Option<PeerRef>;
    /// The handle of our producer half of stream `id` (its state stays
    /// here); its last drop must reach [`Protocol::stream_handle_dropped`].
    fn producer(&self, id: u32, bytes: bool, signals: Arc<Signals>) -> Arc<RemoteProducer>;
    /// The handle of our consumer half of stream `id`, sharing `signals`
    /// with its state; its last drop must reach [`Protocol::stream_handle_dropped`].
    fn consumer(&self, id: u32, bytes: bool, max_depth: u32, signals: Arc<Signals>) -> Arc<RemoteConsumer>;
    /// A consumer end the peer sent us (it produces), before anyone decodes it.
    fn received_reader(&self, consumer: Arc<RemoteConsumer>) -> Box<dyn StreamEnd>;
    /// A producer end the peer sent us (it consumes), before anyone decodes it.
    fn received_writer(&self, producer: Arc<RemoteProducer>) -> Box<dyn StreamEnd>;
}

/// A call we made, awaiting or holding its answer.
pub(crate) struct Question {
    sink: Option<Arc<dyn crate::cap::ReplySink>>,
    /// The result's capabilities (or error), kept for pipelined calls.
    returned: Option<Result<Vec<CapEntry>, RpcError>>,
    /// The caller no longer holds the question.
    released: bool,
    /// Per result-capability index: how pipelined calls are routed.
    pipes: IdMap<Pipe>,
}

#[derive(Default)]
struct Pipe {
    /// Calls went to the peer aimed at the promised answer.
    sent: bool,
    /// Once resolved to a local object: where calls go now (an embargo queue).
    redirect: Option<Client>,
}

/// A call the peer made, running or holding its result for pipelining.
pub(crate) struct Answer {
    canceller: Option<Canceller>,
    /// The peer sent `Finish` while the handler was running.
    finished: bool,
    returned: Option<Result<Vec<CapEntry>, RpcError>>,
    /// Pipelined calls that arrived before the result, per capability index.
    pipes: IdMap<(Arc<QueuedClient>, bool)>,
    /// The peer passed a capability of this answer back to us in a payload
    /// (perhaps its only reference): a `Finish` must not cancel the call.
    passed_back: bool,
}

impl Answer {
    /// Still wanted and running: a canceller is kept, not run at once.
    fn wants_canceller(&self) -> bool {
        self.returned.is_none() && (!self.finished || self.passed_back)
    }
}

struct Export {
    client: Client,
    /// References the peer holds (descriptors sent minus released).
    refs: u32,
    /// The bootstrap object stays exported for the connection's lifetime.
    permanent: bool,
}

struct Import {
    /// The shell's weak hold on the hook: several descriptors for one id
    /// become one capability while it lives.
    slot: Box<dyn ImportSlot>,
    /// Descriptors received for this id: what we release when we drop it.
    count: u32,
}

/// Calls held back until earlier calls, travelling through the peer, arrived.
struct Embargo {
    queue: Arc<QueuedClient>,
    target: Client,
}

/// Everything one connection knows; see the module docs.
pub(crate) struct Protocol {
    pub(crate) out: BytesMut,
    /// Large byte-stream chunks that belong in `out` but are not copied
    /// there: each goes right after the first `offset` bytes of `out`
    /// (offsets in order). The writer sends them with one vectored write.
    pub(crate) out_chunks: Vec<(usize, bytes::Bytes)>,
    /// Bytes in `out` that we owe the peer because it asked: replies to its
    /// calls, pongs, embargo echoes. Bounded by `Config::max_unsent_output`
    /// (the reader waits before taking more requests off the wire).
    pub(crate) owed: usize,
    /// When the peer's last ping arrived, and how many in a row came too soon.
    last_ping: Option<Instant>,
    ping_strikes: u32,
    /// Our last ping not yet answered: its nonce and when it was queued.
    ping_sent: Option<(u64, Instant)>,
    /// The round trip of our last answered ping.
    last_rtt: Option<std::time::Duration>,
    /// Effects for the shell to run once the lock is released, in order.
    pub(crate) effects: Vec<Effect>,
    /// Questions still waiting for their `Return` (not those kept after it
    /// for pipelining): what the peer's `max_outstanding_calls` limits.
    awaiting_returns: usize,
    /// Answers whose handler has not finished: what our limit counts.
    running_answers: usize,
    questions: IdTable<Question>,
    answers: IdMap<Answer>,
    /// Highest question id the peer has used: a `Finish` above it is bogus.
    max_peer_question: Option<u32>,
    exports: IdTable<Export>,
    export_ids: FastMap<usize, u32>,
    imports: IdMap<Import>,
    embargoes: IdTable<Embargo>,
    streams: IdMap<streams::StreamEntry>,
    /// Streams the protocol is not done with (what the limits count).
    live_streams: usize,
    /// Bytes of received stream data held unread, over all streams, and
    /// their bound (`Config::stream_buffer_budget`).
    stream_buffered: u64,
    stream_buffer_budget: u64,
    /// `rpc.stream` spans of open streams, kept only while tracing wants them.
    stream_spans: IdMap<tracing::Span>,
    /// `rpc.question` spans of our calls awaiting their `Return`, likewise.
    question_spans: IdMap<tracing::Span>,
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

/// Whether a tracing subscriber may want the per-call and per-stream debug
/// spans: one atomic load. Making a span nobody records still cost 90 to
/// 300 instructions a call wherever a dependency turns on tracing's `log`
/// feature (the benchmark's peers do).
#[inline]
pub(crate) fn debug_spans() -> bool {
    tracing::level_enabled!(tracing::Level::DEBUG)
}

impl Protocol {
    pub(crate) fn new(
        limits: Limits,
        peer_limits: Limits,
        bootstrap: Option<Client>,
        stream_parity: u32,
        stream_buffer_budget: u64,
        span: tracing::Span,
    ) -> Self {
        let mut state = Protocol {
            out: BytesMut::with_capacity(8 << 10),
            out_chunks: Vec::new(),
            owed: 0,
            last_ping: None,
            ping_strikes: 0,
            ping_sent: None,
            last_rtt: None,
            effects: Vec::new(),
            awaiting_returns: 0,
            running_answers: 0,
            questions: IdTable::default(),
            answers: Default::default(),
            max_peer_question: None,
            exports: IdTable::default(),
            export_ids: Default::default(),
            imports: Default::default(),
            embargoes: IdTable::default(),
            streams: IdMap::default(),
            live_streams: 0,
            stream_buffered: 0,
            stream_buffer_budget,
            stream_spans: Default::default(),
            question_spans: Default::default(),
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
        self.running_answers > 0 || self.live_streams > 0
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
            streams: self.live_streams,
            closed: self.closed.is_some(),
        }
    }

    pub(super) fn send(&mut self, message: &Message, trailer: &[u8]) {
        let mut header = crate::wire::fast::Header::new();
        if crate::wire::fast::encode(message, &mut header).is_some() {
            return frame::encode_raw(&mut self.out, header.as_slice(), trailer);
        }
        if let Err(err) = frame::encode(&mut self.out, message, trailer) {
            tracing::error!("dropping unencodable frame: {err}");
        }
    }

    /// The output as one buffer, large chunks copied in (`out` and
    /// `out_chunks` are empty afterwards): for the test harness, which reads
    /// frames back.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn take_output(&mut self) -> BytesMut {
        let out = self.out.split();
        if self.out_chunks.is_empty() {
            return out;
        }
        let mut whole =
            BytesMut::with_capacity(out.len() + self.out_chunks.iter().map(|(_, c)| c.len()).sum::<usize>());
        let mut at = 0;
        for (offset, chunk) in self.out_chunks.drain(..) {
            whole.extend_from_slice(&out[at..offset]);
            whole.extend_from_slice(&chunk);
            at = offset;
        }
        whole.extend_from_slice(&out[at..]);
        whole
    }

    /// [`Self::send`] for output the peer asked for (counted in `owed`).
    pub(super) fn send_owed(&mut self, message: &Message, trailer: &[u8]) {
        let before = self.out.len();
        self.send(message, trailer);
        self.owed += self.out.len() - before;
    }

    /// Fails `call` once the lock is released (its payload may hold imports).
    pub(super) fn fail_call(&mut self, call: OutgoingCall, err: RpcError) {
        if !call.payload.caps.is_empty() {
            // Stream ends it carried end with the call's error.
            self.effects.push(Effect::FailStreams(call.payload.caps, err.clone()));
        }
        self.effects.push(Effect::Complete(call.reply, Err(err)));
    }

    /// Drops `value` after the lock is released if it could re-enter a
    /// connection (it holds capabilities or cancellers), at once otherwise.
    pub(super) fn defer_boxed(&mut self, value: Box<dyn Send>) {
        self.effects.push(Effect::Drop(value));
    }

    /// Drops `value` after the lock is released if it could re-enter a
    /// connection (it holds capabilities or cancellers), at once otherwise.
    pub(super) fn defer_drop<T: MayReenter + Send + 'static>(&mut self, value: T) {
        if !value.may_reenter() {
            return;
        }
        self.effects.push(Effect::Drop(Box::new(value)));
    }

    /// [`Self::defer_drop`] for a question, unboxed.
    pub(super) fn defer_drop_question(&mut self, question: Option<Question>) {
        if let Some(question) = question.filter(Question::may_reenter) {
            self.effects.push(Effect::DropQuestion(question));
        }
    }

    /// [`Self::defer_drop`] for an answer, unboxed.
    pub(super) fn defer_drop_answer(&mut self, answer: Option<Answer>) {
        if let Some(answer) = answer.filter(Answer::may_reenter) {
            self.effects.push(Effect::DropAnswer(answer));
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
                self.effects.push(Effect::Complete(sink, Err(reason.clone())));
            }
            self.defer_drop(question);
        }
        for (_, mut answer) in self.answers.drain().collect::<Vec<_>>() {
            if let Some(canceller) = answer.canceller.take() {
                self.effects.push(Effect::Cancel(canceller));
            }
            for (_, (queue, _)) in answer.pipes.drain() {
                self.effects.push(Effect::Resolve(queue, Err(reason.clone())));
            }
            self.defer_drop_answer(Some(answer));
        }
        for (_, span) in self.question_spans.drain() {
            tracing::debug!(parent: &span, "call failed: the connection closed");
        }
        for (_, span) in self.stream_spans.drain() {
            tracing::debug!(parent: &span, "stream ended: the connection closed");
        }
        let live: Vec<u32> = self.streams.iter().filter(|(_, e)| e.live).map(|(&id, _)| id).collect();
        for id in live {
            self.end_stream_locally(id, Ending::Disconnected(reason.clone()));
        }
        self.ready.clear();
        for embargo in self.embargoes.drain() {
            self.effects.push(Effect::Resolve(embargo.queue, Err(reason.clone())));
        }
        let exports: Vec<Client> = self.exports.drain().into_iter().map(|e| e.client).collect();
        self.export_ids.clear();
        self.imports.clear();
        self.defer_drop(exports);
        true
    }
}
