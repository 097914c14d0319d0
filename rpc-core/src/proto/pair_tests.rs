//! The protocol's semantics on a [`Pair`]: two protocols, simulated time,
//! no I/O. Every test fails if the semantics it names broke.

use std::time::Duration;

use super::pair::{ObjectLog, Pair, Rule, Side, TestCall};
use crate::payload::Payload;
use crate::wire::{Message, Target};
use crate::{ErrorKind, RpcError};

pub(super) const LATENCY: Duration = Duration::from_millis(10);
const ROUND_TRIP: Duration = Duration::from_millis(20);

/// A pair whose B serves an object answering by `rule`, recording in the log.
pub(super) fn serving(rule: Rule) -> (Pair, ObjectLog) {
    let log = ObjectLog::new();
    let pair = Pair::new(LATENCY, None, Some(log.object(rule)));
    (pair, log)
}

pub(super) fn sent_by(pair: &Pair, side: Side) -> Vec<Message> {
    pair.sent.iter().filter(|(from, _)| *from == side).map(|(_, message)| message.clone()).collect()
}

fn assert_empty(pair: &Pair) {
    for side in [Side::A, Side::B] {
        let counts = pair.side(side).proto.counts();
        assert_eq!(
            (counts.questions, counts.answers, counts.exports, counts.imports, counts.embargoes),
            (0, 0, 0, 0, 0),
            "{side:?} still holds {counts:?}"
        );
    }
    pair.check_consistent().unwrap();
}

// ----- pipelining ----------------------------------------------------------------

#[test]
fn a_pipelined_chain_of_ten_calls_takes_one_round_trip() {
    let (mut pair, log) = serving(Rule::NewObject);
    let mut target = pair.bootstrap(Side::A);
    let mut calls = Vec::new();
    for i in 0..10u32 {
        let call = pair.call(Side::A, &target, 0, &i);
        target = pair.pipeline(&call, 0);
        calls.push(call);
    }
    let last = calls.last().expect("ten calls");
    assert!(pair.run_until(|| last.is_done()));
    assert_eq!(pair.elapsed(), ROUND_TRIP);
    assert_eq!(pair.round_trips(), 1);
    assert!(calls.iter().all(|c| c.is_done() && c.error().is_none()));
    // Each call reached the object the one before it returned.
    let objects: Vec<u32> = log.received().iter().map(|r| r.object).collect();
    assert_eq!(objects, (1..=10).collect::<Vec<_>>());
    assert_eq!(log.args(), (0..10).collect::<Vec<_>>());
    drop((calls, target));
    pair.drive();
    assert_empty(&pair);
}

#[test]
fn the_same_chain_awaited_call_by_call_takes_ten_round_trips() {
    let (mut pair, log) = serving(Rule::NewObject);
    let mut target = pair.bootstrap(Side::A);
    let mut calls = Vec::new();
    for i in 0..10u32 {
        let call = pair.call(Side::A, &target, 0, &i);
        assert!(pair.run_until(|| call.is_done()));
        target = call.cap(0).expect("the call returned an object");
        calls.push(call);
    }
    assert_eq!(pair.elapsed(), 10 * ROUND_TRIP);
    assert_eq!(pair.round_trips(), 10);
    let objects: Vec<u32> = log.received().iter().map(|r| r.object).collect();
    assert_eq!(objects, (1..=10).collect::<Vec<_>>());
    drop((calls, target));
    pair.drive();
    assert_empty(&pair);
}

#[test]
fn embargoed_calls_arrive_after_the_calls_sent_through_the_peer() {
    let (mut pair, _) = serving(Rule::Echo);
    let here = ObjectLog::new();
    let local = here.object(Rule::Echo);
    let boot = pair.bootstrap(Side::A);
    // B echoes our own object back: the promise resolves to an object on our side.
    let echo = pair.call(Side::A, &boot, 0, &(local.clone(),));
    let promised = pair.pipeline(&echo, 0);
    pair.advance(LATENCY / 10);
    let early: Vec<TestCall> = (0..3u32).map(|i| pair.call(Side::A, &promised, 0, &i)).collect();
    assert!(pair.run_until(|| echo.is_done()));
    assert_eq!(pair.elapsed(), ROUND_TRIP);
    assert!(here.args().is_empty(), "the early calls are still on their way back through B");
    let late: Vec<TestCall> = (3..6u32).map(|i| pair.call(Side::A, &promised, 0, &i)).collect();
    assert!(here.args().is_empty(), "the later calls must wait for the earlier ones");
    pair.drive();
    assert_eq!(here.args(), [0, 1, 2, 3, 4, 5]);
    for (i, call) in early.iter().chain(&late).enumerate() {
        assert_eq!(call.value::<u32>().expect("answered").expect("echoed"), i as u32);
    }
    let disembargoes = sent_by(&pair, Side::A).into_iter().filter(|m| matches!(m, Message::Disembargo { .. }));
    assert_eq!(disembargoes.count(), 1);
    assert_eq!(pair.side(Side::A).proto.counts().embargoes, 0);
    drop((early, late, promised, echo, boot, local));
    pair.drive();
    assert_empty(&pair);
}

// ----- references --------------------------------------------------------------

/// B keeps what A sends it; A sends its object `times` times. Returns the
/// pair, B's log and the object's export id on A.
fn sent_times(times: u32) -> (Pair, ObjectLog, u32, crate::Client) {
    let (mut pair, kept) = serving(Rule::Keep);
    let local = ObjectLog::new().object(Rule::Echo);
    let boot = pair.bootstrap(Side::A);
    for _ in 0..times {
        let call = pair.call(Side::A, &boot, 0, &(local.clone(),));
        assert!(pair.run_until(|| call.is_done()));
        assert!(call.error().is_none());
    }
    pair.drive();
    let id = pair.side(Side::A).proto.export_ids[&local.identity()];
    (pair, kept, id, local)
}

#[test]
fn a_capability_received_n_times_is_released_once_with_count_n() {
    let (mut pair, kept, id, _local) = sent_times(5);
    assert_eq!(kept.kept(), 5);
    assert_eq!(pair.side(Side::A).proto.exports.get(id).map(|e| e.refs), Some(5));
    assert_eq!(pair.side(Side::B).proto.imports.get(&id).map(|i| i.count), Some(5));
    pair.check_consistent().unwrap();
    kept.drop_kept();
    pair.drive();
    let releases: Vec<Message> =
        pair.sent.iter().filter(|(_, m)| matches!(m, Message::Release { .. })).map(|(_, m)| m.clone()).collect();
    assert_eq!(releases, [Message::Release { export: id, count: 5 }]);
    assert_eq!(sent_by(&pair, Side::B).iter().filter(|m| matches!(m, Message::Release { .. })).count(), 1);
    assert_empty(&pair);
}

#[test]
fn a_release_over_the_count_is_a_violation() {
    let (mut pair, _kept, id, _local) = sent_times(2);
    let err = pair.inject(Side::A, Message::Release { export: id, count: 3 }, &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.message().contains("which the peer holds 2"), "{err}");
    pair.drive();
    assert!(pair.side(Side::B).proto.is_closed().is_some(), "the peer is told (Abort)");
    for side in [Side::A, Side::B] {
        pair.side(side).proto.check_invariants().unwrap();
    }
}

// ----- Finish and close -------------------------------------------------------

#[test]
fn dropping_a_question_before_its_return_sends_finish_and_cancels_the_callee() {
    let (mut pair, log) = serving(Rule::Hold);
    let boot = pair.bootstrap(Side::A);
    let call = pair.call(Side::A, &boot, 0, &7u32);
    let question = call.question().expect("sent as a question");
    pair.drive();
    assert_eq!(log.held(), 1);
    assert!(log.cancelled().is_empty());
    drop(call);
    pair.drive();
    assert!(sent_by(&pair, Side::A).contains(&Message::Finish { question }));
    assert_eq!(log.cancelled(), [1], "the callee's canceller ran");
    // The handler's late answer goes back as cancelled; every table empties.
    log.answer_held(|| Ok(Payload::default()));
    pair.drive();
    let returned = sent_by(&pair, Side::B).into_iter().find(|m| matches!(m, Message::Return { .. }));
    assert!(matches!(returned, Some(Message::Return { result: Err(ref e), .. }) if e.kind() == ErrorKind::Cancelled));
    drop(boot);
    pair.drive();
    assert_empty(&pair);
}

#[test]
fn close_fails_every_pending_question_and_the_peer_cancels_its_answers() {
    let (mut pair, log) = serving(Rule::Hold);
    let boot = pair.bootstrap(Side::A);
    let calls: Vec<TestCall> = (0..3u32).map(|i| pair.call(Side::A, &boot, 0, &i)).collect();
    pair.drive();
    assert_eq!(log.held(), 3);
    let reason = RpcError::disconnected("the test hung up");
    pair.close(Side::A, reason.clone());
    for call in &calls {
        assert_eq!(call.error().as_ref(), Some(&reason));
    }
    pair.drive();
    assert_eq!(log.cancelled(), [1, 1, 1]);
    let seen = pair.side(Side::B).violation.clone().expect("B read the Abort");
    assert_eq!(seen.kind(), ErrorKind::Disconnected);
    assert!(seen.message().contains("the test hung up"), "{seen}");
    for side in [Side::A, Side::B] {
        pair.side(side).proto.check_invariants().unwrap();
    }
}

#[test]
fn closing_the_callee_runs_its_answers_cancellers_and_fails_the_callers() {
    let (mut pair, log) = serving(Rule::Hold);
    let boot = pair.bootstrap(Side::A);
    let calls: Vec<TestCall> = (0..2u32).map(|i| pair.call(Side::A, &boot, 0, &i)).collect();
    pair.drive();
    pair.close(Side::B, RpcError::protocol("B gives up"));
    assert_eq!(log.cancelled(), [1, 1], "at once, before anything travels");
    assert!(calls.iter().all(|c| !c.is_done()));
    pair.drive();
    assert_eq!(pair.elapsed(), ROUND_TRIP, "the calls arrived at B after one latency, the Abort at A one later");
    for call in &calls {
        let err = call.error().expect("failed");
        assert_eq!(err.kind(), ErrorKind::Disconnected);
        assert!(err.message().contains("B gives up"), "{err}");
    }
}

// ----- hostile messages -------------------------------------------------------

fn call_to(question: u32, target: Target) -> Message {
    Message::Call { question, target, interface: 1, method: 2, caps: Vec::new() }
}

/// Injects `messages` into `side` of a pair whose B serves `rule`: all but
/// the last must pass, the last must be a violation saying `says`.
fn assert_violation(rule: Rule, side: Side, messages: Vec<Message>, says: &str) {
    let (mut pair, _log) = serving(rule);
    let count = messages.len();
    for (i, message) in messages.into_iter().enumerate() {
        let applied = pair.inject(side, message.clone(), &[]);
        if i + 1 < count {
            applied.unwrap_or_else(|e| panic!("{message:?} should pass: {e}"));
            continue;
        }
        let err = applied.expect_err("a violation");
        assert_eq!(err.kind(), ErrorKind::Protocol, "{message:?}: {err}");
        assert!(err.message().contains(says), "{message:?}: {err}");
    }
    pair.drive();
    assert!(sent_by(&pair, side).iter().any(|m| matches!(m, Message::Abort(_))), "the peer is told");
    for side in [Side::A, Side::B] {
        let end = pair.side(side);
        assert!(end.proto.is_closed().is_some());
        end.proto.check_invariants().unwrap();
    }
}

#[test]
fn a_return_for_an_unknown_question_is_a_violation() {
    let ret = Message::Return { question: 7, result: Ok(Vec::new()) };
    assert_violation(Rule::Echo, Side::A, vec![ret], "question 7, which is not awaiting");
}

#[test]
fn a_finish_above_the_highest_question_is_a_violation() {
    let finish = Message::Finish { question: 3 };
    assert_violation(Rule::Echo, Side::B, vec![call_to(0, Target::Export(0)), finish], "never asked");
}

#[test]
fn a_late_finish_for_an_answer_already_gone_is_harmless() {
    let (mut pair, _log) = serving(Rule::Echo);
    pair.inject(Side::B, call_to(4, Target::Export(0)), &[]).unwrap();
    pair.inject(Side::B, Message::Finish { question: 4 }, &[]).unwrap();
    pair.inject(Side::B, Message::Finish { question: 2 }, &[]).unwrap();
    assert!(pair.side(Side::B).proto.is_closed().is_none());
}

#[test]
fn a_disembargo_not_at_an_answer_is_a_violation() {
    let disembargo = Message::Disembargo { target: Target::Export(0), id: 0 };
    assert_violation(Rule::Echo, Side::B, vec![disembargo], "must aim at a promised answer");
}

#[test]
fn a_disembargo_at_an_answer_still_running_is_a_violation() {
    let disembargo = Message::Disembargo { target: Target::Answer { question: 0, cap: 0 }, id: 1 };
    let messages = vec![call_to(0, Target::Export(0)), disembargo];
    assert_violation(Rule::Hold, Side::B, messages, "which has not returned");
}

#[test]
fn a_reused_question_id_is_a_violation() {
    let messages = vec![call_to(5, Target::Export(0)), call_to(5, Target::Export(0))];
    assert_violation(Rule::Hold, Side::B, messages, "question id 5 reused");
}

#[test]
fn unknown_embargoes_and_exports_are_violations() {
    assert_violation(Rule::Echo, Side::A, vec![Message::DisembargoReply { id: 3 }], "unknown embargo 3");
    let release = Message::Release { export: 9, count: 1 };
    assert_violation(Rule::Echo, Side::B, vec![release], "export 9, which does not exist");
}

// ----- the harness itself ----------------------------------------------------

#[test]
fn a_ping_measures_one_round_trip_of_simulated_time() {
    let mut pair = Pair::new(LATENCY, None, None);
    let now = pair.now();
    pair.side_mut(Side::A).proto.send_ping(1, now);
    pair.drive();
    assert_eq!(pair.side(Side::A).proto.last_rtt, Some(ROUND_TRIP));
    assert_eq!(pair.elapsed(), ROUND_TRIP);
}

#[test]
fn the_fuzz_script_runs_clean_on_its_seeds_and_on_noise() {
    let runs: Vec<_> = super::pair::seed_scripts().iter().map(|(_, s)| super::pair::run_script(s)).collect();
    // The friendly seeds complete their calls; the hostile ones close.
    let succeeded: Vec<usize> = runs.iter().map(|r| r.succeeded).collect();
    assert_eq!(succeeded[..5], [3, 0, 3, 3, 2], "{runs:?}");
    assert!(runs[..5].iter().all(|r| r.violations == 0 && r.delivered > 0), "{runs:?}");
    assert!(runs[5..11].iter().all(|r| r.violations > 0 && r.calls == 0), "{runs:?}");
    assert!(runs[11..].iter().all(|r| r.violations == 0 && r.succeeded == 1), "{runs:?}");
    let items: Vec<usize> = runs[11..].iter().map(|r| r.items_read).collect();
    assert_eq!(items, [6, 2, 0], "{runs:?}");
    // A fixed pseudo-random stream (xorshift): the same inputs every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = 8 + (next() % 120) as usize;
        let script: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        super::pair::run_script(&script);
    }
}

mod streams;
