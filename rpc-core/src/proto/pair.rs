//! A deterministic two-endpoint harness for [`Protocol`] (tests and fuzzing).
//!
//! Two protocols, A and B, are wired to each other with simulated time: a
//! base `Instant` plus an offset only the harness advances, and a fixed
//! one-way latency. No runtime, no sockets, no sleeping. [`Pair::drive`]
//! runs until nothing is left to do: each side's output is split into
//! frames, each frame is delivered to the other side `latency` after it was
//! written, in order, and effects run after every step, never while a
//! protocol is borrowed. Time jumps to the next delivery, so a round trip
//! costs exactly `2 * latency` of simulated time.
//!
//! Handles are minted by a [`TestShell`] per side. They never borrow the
//! protocol: what they ask of it (a call on an import, an answer's reply,
//! a released question) is queued as a [`Command`], which
//! the harness applies in its loop, right after the effect that queued it
//! (depth first, as a connection's nested locking would).
//!
//! Local test objects ([`ObjectLog::object`]) record the calls they get and
//! answer them by a [`Rule`].
//!
//! Streams (`pair/streams.rs`): the shell mints stream handles bound to no
//! connection and keeps a clone of each; once its clone is the last, the
//! harness tells the protocol the handle is gone. Tests drive streams by id
//! ([`Pair::write`], [`Pair::read`], ...). The harness relays no stream
//! ends (that needs a pump task): an end in a payload being sent on is
//! dropped. The fuzz script (`pair/script.rs`) drives all of this.
//!
//! Like the protocol, the harness takes no lock and names no weak
//! reference: handles reach it over channels, and it notices handles let
//! go of by polling reference counts (pipelined capabilities, imports,
//! stream halves, the test's calls) at every step.

#![cfg_attr(not(test), allow(dead_code))]

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::{PingPolicy, Protocol, Shell};
use crate::cap::{Client, OutgoingCall, PeerRef, Reply};
use crate::payload::{CapEntry, Payload};
use crate::wire::{depth, frame, Message};
use crate::{Limits, RpcError};

mod calls;
mod objects;
mod script;
mod shell;
mod streams;

pub(crate) use calls::TestCall;
use calls::Tracked;
pub(crate) use objects::{ObjectLog, Rule};
pub(crate) use script::{run_script, seed_scripts};
pub(crate) use shell::TestShell;
use shell::{Command, TestPipeline};
pub(crate) use streams::TestStream;

/// The interface id the harness's calls carry (test objects ignore it).
pub(crate) const TEST_INTERFACE: u64 = 0x7e57;
/// Unread stream bytes a side buffers at most (`Config::stream_buffer_budget`).
const STREAM_BUFFER_BUDGET: u64 = 16 << 20;
/// Steps [`Pair::drive`] takes at most before it declares a livelock.
const MAX_STEPS: usize = 100_000;

/// One end of a [`Pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    /// The other end.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

// ----- the pair -----------------------------------------------------------

/// One side: its protocol, its shell and the commands its handles queued.
pub(crate) struct Endpoint {
    pub(crate) proto: Protocol,
    pub(crate) shell: TestShell,
    commands: Receiver<Command>,
    /// Why this side closed, if a message from the peer closed it.
    pub(crate) violation: Option<RpcError>,
    pings: PingPolicy,
    /// The calls the test made from this side, watched for being given up.
    calls: Vec<Tracked>,
}

/// A frame on its way.
struct Delivery {
    at: Duration,
    to: Side,
    frame: Bytes,
}

/// Two protocols wired to each other with simulated time; see the module docs.
pub(crate) struct Pair {
    sides: [Endpoint; 2],
    in_flight: VecDeque<Delivery>,
    start: Instant,
    elapsed: Duration,
    latency: Duration,
    /// Every frame sent, by its sender (when `record` is on).
    pub(crate) sent: Vec<(Side, Message)>,
    pub(crate) record: bool,
    /// Frames delivered so far.
    pub(crate) delivered: usize,
    /// Whether a message was injected (the sides may disagree since).
    pub(crate) injected: bool,
}

impl Pair {
    /// A pair with default limits; `bootstrap_a`/`bootstrap_b` are what
    /// each side serves as its bootstrap.
    pub(crate) fn new(latency: Duration, bootstrap_a: Option<Client>, bootstrap_b: Option<Client>) -> Pair {
        Pair::with_limits(latency, Limits::default(), bootstrap_a, bootstrap_b)
    }

    /// A pair whose sides both have `limits`.
    pub(crate) fn with_limits(
        latency: Duration,
        limits: Limits,
        bootstrap_a: Option<Client>,
        bootstrap_b: Option<Client>,
    ) -> Pair {
        let endpoint = |bootstrap, parity| {
            let (commands, queue) = channel();
            Endpoint {
                proto: Protocol::new(limits, limits, bootstrap, parity, STREAM_BUFFER_BUDGET, tracing::Span::none()),
                shell: TestShell::new(commands),
                commands: queue,
                violation: None,
                pings: PingPolicy { min_interval: Duration::ZERO, max_strikes: 0 },
                calls: Vec::new(),
            }
        };
        Pair {
            sides: [endpoint(bootstrap_a, 0), endpoint(bootstrap_b, 1)],
            in_flight: VecDeque::new(),
            start: Instant::now(),
            elapsed: Duration::ZERO,
            latency,
            sent: Vec::new(),
            record: true,
            delivered: 0,
            injected: false,
        }
    }

    pub(crate) fn side(&self, side: Side) -> &Endpoint {
        &self.sides[side.index()]
    }

    pub(crate) fn side_mut(&mut self, side: Side) -> &mut Endpoint {
        &mut self.sides[side.index()]
    }

    /// The simulated time now.
    pub(crate) fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    /// Simulated time since the pair was made.
    pub(crate) fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Whole round trips of simulated time so far.
    pub(crate) fn round_trips(&self) -> u128 {
        self.elapsed.as_nanos() / (2 * self.latency).as_nanos().max(1)
    }

    /// `side`'s handle on the peer's bootstrap object (not counted, as a
    /// connection's `bootstrap()`).
    pub(crate) fn bootstrap(&mut self, side: Side) -> Client {
        let end = self.side_mut(side);
        end.proto.import_counted(&end.shell, 0, 0).unwrap_or_else(Client::broken)
    }

    /// Calls `method` of `target` from `side` with `args` at once.
    pub(crate) fn call<A: Serialize>(&mut self, side: Side, target: &Client, method: u16, args: &A) -> TestCall {
        let payload = Payload::encode(args).expect("test arguments encode");
        self.call_payload(side, target, method, payload)
    }

    /// [`Self::call`] with a ready payload.
    pub(crate) fn call_payload(&mut self, side: Side, target: &Client, method: u16, payload: Payload) -> TestCall {
        let end = self.side_mut(side);
        let peer_ref = end.shell.peer_ref(target);
        let parent = end.shell.hold_of(target);
        let (record, mut test_call, tracked) = calls::new_call(side, parent);
        end.calls.push(tracked);
        let call = OutgoingCall { interface: TEST_INTERFACE, method, payload, reply: record };
        end.shell.last_question.set(None);
        match peer_ref {
            Some(PeerRef::Export(id)) => end.proto.send_call(&end.shell, PeerRef::Export(id), call),
            Some(PeerRef::Answer { question, cap }) => end.proto.pipeline_call(&end.shell, question, cap, call),
            None => target.hook.call(call),
        }
        test_call.question = end.shell.last_question.take();
        self.settle();
        test_call
    }

    /// Capability `cap` of `call`'s result, pipelined: usable before it returns.
    pub(crate) fn pipeline(&mut self, call: &TestCall, cap: u32) -> Client {
        let Some(question) = call.question else {
            let missing = || Client::broken(RpcError::unimplemented("no such capability in the result"));
            return call.cap(cap as usize).unwrap_or_else(missing);
        };
        let hold = call.hold.clone();
        let peer_ref = PeerRef::Answer { question, cap };
        self.side(call.side)
            .shell
            .mint(peer_ref, Some(hold.clone()), |handle| Arc::new(TestPipeline { question, cap, handle, _hold: hold }))
    }

    /// Closes `side` with `reason`, telling the peer, and runs the effects.
    pub(crate) fn close(&mut self, side: Side, reason: RpcError) {
        self.side_mut(side).proto.close(reason, true);
        self.settle();
    }

    /// Hands `message` to `side` now, as if the peer had sent it; a
    /// violation closes `side` as a connection would, and is returned.
    ///
    /// # Errors
    ///
    /// The violation, if `message` is one.
    pub(crate) fn inject(&mut self, side: Side, message: Message, trailer: &[u8]) -> Result<(), RpcError> {
        let mut out = BytesMut::new();
        frame::encode(&mut out, &message, trailer).expect("an injected message encodes");
        let frame = frame::decode(&mut out, u32::MAX).expect("framed").expect("a whole frame");
        self.injected = true;
        self.deliver(side, frame);
        self.settle();
        match &self.side(side).violation {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    // ----- the loop --------------------------------------------------------

    /// Runs until quiescent: no command, effect or frame left anywhere.
    ///
    /// # Panics
    ///
    /// If it is still busy after a bounded number of steps (a livelock).
    pub(crate) fn drive(&mut self) {
        assert!(self.try_drive(), "the pair is still busy after {MAX_STEPS} steps");
    }

    /// [`Self::drive`]; false instead of a panic on a livelock.
    pub(crate) fn try_drive(&mut self) -> bool {
        self.run_until(|| false);
        let idle = |end: &Endpoint| end.proto.effects.is_empty() && end.proto.ready.is_empty();
        self.in_flight.is_empty() && self.sides.iter().all(idle)
    }

    /// Runs until `done()` holds after a step (true), or until quiescent
    /// or livelocked (false). Time stops at the step that made it hold.
    pub(crate) fn run_until(&mut self, mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..MAX_STEPS {
            self.settle();
            self.flush();
            if done() {
                return true;
            }
            let Some(next) = self.in_flight.front().map(|d| d.at) else { return false };
            self.deliver_due(next);
        }
        false
    }

    /// Delivers everything due within `by` from now, then moves time to then.
    pub(crate) fn advance(&mut self, by: Duration) {
        let until = self.elapsed + by;
        for _ in 0..MAX_STEPS {
            self.settle();
            self.flush();
            match self.in_flight.front().map(|d| d.at) {
                Some(next) if next <= until => self.deliver_due(next),
                _ => break,
            }
        }
        self.elapsed = until;
    }

    /// Applies every queued command and runs every effect, on both sides.
    pub(crate) fn settle(&mut self) {
        for end in &mut self.sides {
            end.apply_commands();
            end.run_effects();
        }
    }

    /// Moves both sides' output onto the wire (streams' data included).
    ///
    /// # Panics
    ///
    /// If a side wrote a frame over its peer's frame limit.
    fn flush(&mut self) {
        for side in [Side::A, Side::B] {
            let at = self.elapsed + self.latency;
            let max_frame = self.side(side.other()).proto.limits.max_frame_size as usize;
            let end = self.side_mut(side);
            end.proto.emit_streams(&end.shell);
            // Emitting exports the capabilities items hold: their effects run now.
            end.apply_commands();
            end.run_effects();
            end.proto.owed = 0;
            let mut out = end.proto.take_output();
            while let Some(frame) = frame::decode(&mut out, u32::MAX).expect("our own output is framed") {
                assert!(
                    frame.len() <= max_frame,
                    "{side:?} wrote a frame of {} bytes, over its peer's limit",
                    frame.len()
                );
                if self.record {
                    self.sent.push((side, decode_message(&frame).expect("our own frames decode").0));
                }
                self.in_flight.push_back(Delivery { at, to: side.other(), frame });
            }
            assert!(out.is_empty(), "a partial frame in the output");
        }
    }

    /// Delivers every frame due at `at` (in order), `at` becoming now.
    fn deliver_due(&mut self, at: Duration) {
        self.elapsed = self.elapsed.max(at);
        while self.in_flight.front().is_some_and(|d| d.at <= at) {
            let delivery = self.in_flight.pop_front().expect("checked");
            self.delivered += 1;
            self.deliver(delivery.to, delivery.frame);
            self.settle();
        }
    }

    /// Applies one frame to `side`, closing it on a violation.
    fn deliver(&mut self, side: Side, frame: Bytes) {
        let now = self.now();
        let end = self.side_mut(side);
        let limits = end.proto.limits;
        let applied = match depth::from_postcard_bytes::<Message>(&frame, limits.max_depth, limits.max_decoded_size) {
            Ok((message, rest)) => {
                let trailer = frame.slice(frame.len() - rest.len()..);
                end.proto.handle_message(&end.shell, message, trailer, || now, end.pings)
            }
            Err(e) => Err(RpcError::protocol(format!("malformed frame ({e})"))),
        };
        if let Err(violation) = applied {
            let tell_peer = violation.kind() != crate::ErrorKind::Disconnected;
            end.proto.close(violation.clone(), tell_peer);
            end.violation.get_or_insert(violation);
        }
        end.run_effects();
    }

    /// Checks that the sides agree: what each imports is what the other
    /// exports (with the same counts), each awaits as many Returns as the
    /// other runs calls, the streams each produces are those the other
    /// consumes, and no embargo is left. Only meaningful when quiet,
    /// with both sides open and no message injected.
    pub(crate) fn check_consistent(&self) -> Result<(), String> {
        for side in [Side::A, Side::B] {
            self.side(side).proto.check_invariants()?;
            let (importer, exporter) = (&self.side(side).proto, &self.side(side.other()).proto);
            let exported = table_entries(&exporter.exports).iter().filter(|(_, e)| !e.permanent).count();
            let imported = importer.imports.iter().filter(|(_, i)| i.count > 0).count();
            if exported != imported {
                return Err(format!("{side:?} imports {imported} objects but its peer exports {exported}"));
            }
            if importer.awaiting_returns != exporter.running_answers {
                return Err(format!(
                    "{side:?} awaits {} Returns but its peer runs {} calls",
                    importer.awaiting_returns, exporter.running_answers
                ));
            }
            if importer.embargoes.len() > 0 {
                return Err(format!("{side:?} holds {} embargoes when quiet", importer.embargoes.len()));
            }
            let (produced, consumed) = (live_streams(importer, true), live_streams(exporter, false));
            if produced != consumed {
                return Err(format!("{side:?} produces streams {produced:?}, its peer consumes {consumed:?}"));
            }
            for (&id, import) in importer.imports.iter().filter(|(_, i)| i.count > 0) {
                let refs = exporter.exports.get(id).map(|e| e.refs);
                if refs != Some(import.count) {
                    return Err(format!(
                        "{side:?} holds {} references to export {id}, its peer counts {refs:?}",
                        import.count
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The ids of `proto`'s live producers (or consumers), in order.
fn live_streams(proto: &Protocol, producers: bool) -> Vec<u32> {
    let mut ids: Vec<u32> = proto
        .streams
        .iter()
        .filter(|(_, entry)| entry.live && matches!(entry.half, super::streams::StreamHalf::Producer(_)) == producers)
        .map(|(&id, _)| id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Decodes a frame's header as a [`Message`]; returns it and the trailer.
pub(crate) fn decode_message(frame: &Bytes) -> Result<(Message, Bytes), RpcError> {
    let limits = Limits::default();
    let (message, rest) = depth::from_postcard_bytes::<Message>(frame, limits.max_depth, limits.max_decoded_size)
        .map_err(|e| RpcError::protocol(format!("malformed frame ({e})")))?;
    let trailer = frame.slice(frame.len() - rest.len()..);
    Ok((message, trailer))
}

impl Endpoint {
    /// Applies the queued commands, each followed by its effects.
    fn apply_commands(&mut self) {
        loop {
            // Handles the test or the effects let go of since the last look:
            // pipelined capabilities (which hold their question), imports,
            // stream halves, calls.
            self.shell.forget_dropped();
            self.drop_unheld_imports();
            for id in self.shell.dropped_streams() {
                self.proto.stream_handle_dropped(id);
                self.run_effects();
            }
            self.give_up_calls();
            let Ok(command) = self.commands.try_recv() else { return };
            self.apply(command);
            self.run_effects();
        }
    }

    /// Runs the effects in order; the commands each queues are applied
    /// (with their own effects) before the next runs.
    fn run_effects(&mut self) {
        while !self.proto.effects.is_empty() {
            for effect in std::mem::take(&mut self.proto.effects) {
                effect.run();
                self.apply_commands();
            }
        }
    }

    /// Imports no handle holds any more are dropped (their references
    /// released), as a connection's last handle of an import does.
    fn drop_unheld_imports(&mut self) {
        let unheld: Vec<(u32, usize)> = (self.proto.imports.iter())
            .filter(|(_, import)| import.slot.upgrade().is_none())
            .map(|(&id, import)| (id, import.slot.addr()))
            .collect();
        for (id, address) in unheld {
            self.proto.drop_import(id, address);
        }
    }

    /// Runs the cancellers of the calls the test gave up.
    fn give_up_calls(&mut self) {
        let mut cancel = Vec::new();
        self.calls.retain_mut(|call| !call.poll(&mut cancel));
        for canceller in cancel {
            canceller.cancel();
        }
    }

    fn apply(&mut self, command: Command) {
        let (proto, shell) = (&mut self.proto, &self.shell);
        match command {
            Command::Call(id, mut call) => {
                drop_stream_ends(&mut call.payload);
                proto.send_call(shell, PeerRef::Export(id), call);
            }
            Command::Pipeline { question, cap, mut call } => {
                drop_stream_ends(&mut call.payload);
                proto.pipeline_call(shell, question, cap, call);
            }
            Command::ReleaseQuestion(id) => proto.release_question(id),
            Command::AnswerCanceller(id, canceller) => proto.set_answer_canceller(id, canceller),
            Command::Answer(id, mut reply) => {
                if let Ok(payload) = &mut reply {
                    drop_stream_ends(payload);
                }
                self.complete_answer(id, reply);
            }
        }
    }

    /// What a connection's answer sink does: forward the calls pipelined on
    /// the answer first, then write its `Return`.
    fn complete_answer(&mut self, id: u32, reply: Reply) {
        while self.proto.resolve_pipes(id, |cap| super::reply_cap(&reply, cap)) {
            self.run_effects();
        }
        self.proto.finish_answer(&self.shell, id, reply);
    }
}

/// Drops the stream ends in a payload about to be sent on (a forwarded call
/// or answer): relaying a stream needs a pump task, and the harness runs
/// none. Dropped, a reader end cancels its stream and a writer end aborts it.
fn drop_stream_ends(payload: &mut Payload) {
    if payload.caps.iter().any(|cap| matches!(cap, CapEntry::Stream(_))) {
        payload.caps.retain(|cap| matches!(cap, CapEntry::Object(_)));
    }
}

// ----- invariants -----------------------------------------------------------

impl Protocol {
    /// The tables' invariants; a message naming the first one broken.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let questions = table_entries(&self.questions);
        let exports = table_entries(&self.exports);
        if self.closed.is_some() {
            let counts = self.counts();
            let empty = questions.is_empty()
                && exports.is_empty()
                && counts.answers + counts.imports + counts.embargoes + counts.streams == 0
                && self.awaiting_returns + self.running_answers == 0;
            return if empty { Ok(()) } else { Err(format!("closed but not empty: {counts:?}")) };
        }
        let awaiting = questions.iter().filter(|(_, q)| q.returned.is_none()).count();
        if awaiting != self.awaiting_returns {
            return Err(format!("{awaiting} questions await a Return, counted {}", self.awaiting_returns));
        }
        let running = self.answers.values().filter(|a| a.returned.is_none()).count();
        if running != self.running_answers {
            return Err(format!("{running} answers have not returned, counted {}", self.running_answers));
        }
        let live = self.streams.values().filter(|entry| entry.live).count();
        if live != self.live_streams {
            return Err(format!("{live} live streams, counted {}", self.live_streams));
        }
        if exports.len() != self.export_ids.len() {
            return Err(format!("{} exports but {} indexed", exports.len(), self.export_ids.len()));
        }
        for (id, export) in &exports {
            if self.export_ids.get(&export.client.identity()) != Some(id) {
                return Err(format!("export {id} is not indexed under its object"));
            }
            if export.refs == 0 && !export.permanent {
                return Err(format!("export {id} is held with no references"));
            }
        }
        Ok(())
    }
}

/// The entries of an id table with their ids. Ids are dense (lowest free
/// first), so the scan stops after the table's `len` entries.
fn table_entries<T>(table: &super::IdTable<T>) -> Vec<(u32, &T)> {
    let mut entries = Vec::with_capacity(table.len());
    let mut id = 0u32;
    while entries.len() < table.len() && id < 1 << 24 {
        if let Some(entry) = table.get(id) {
            entries.push((id, entry));
        }
        id += 1;
    }
    entries
}
