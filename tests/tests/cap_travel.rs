//! Capabilities as values: passed as arguments and results, inside structs,
//! enums, `Vec`s and `Option`s, in both directions; handed back to their
//! origin (the original object, also when pipelined); used concurrently from
//! many tasks; forwarded through a middle party.
//!
//! Most tests run against a local object and through a connection
//! ([`Via::BOTH`]), on the current-thread and the multi-thread runtime.
//! Every wait is bounded (`DropCounter::wait_for`, `timeout`). The interfaces
//! and their implementations are in `rpc_tests::cap_lab`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{Capability, Config, Connection};
use rpc_tests::cap_lab::*;
use rpc_tests::on_both_runtimes;
use rpc_tests::{connect_pair, DropCounter, Via};
use tokio::task::JoinHandle;

// ----- 6a: static properties -------------------------------------------------

#[test]
fn proxies_and_promises_are_send_sync_static_and_clone() {
    assert_send_sync_static::<CounterProxy>();
    assert_send_sync_static::<HubProxy>();
    assert_send_sync_static::<ListenerProxy>();
    assert_send_sync_static::<rpc_core::Promise<u64>>();
    assert_send_sync_static::<rpc_core::Promise<u64, HubError>>();
    assert_send_sync_static::<rpc_core::Client>();
    assert_send_sync_static::<Connection>();
    assert_clone::<CounterProxy>();
    assert_clone::<HubProxy>();
    assert_clone::<ListenerProxy>();
    assert_clone::<Holder>();
    assert_capability::<CounterProxy>();
    assert_capability::<HubProxy>();
    assert_capability::<ListenerProxy>();
}

// ----- 1: capabilities travel everywhere a value goes ----------------------

on_both_runtimes!(
    capabilities_travel_from_server_to_client,
    capabilities_travel_from_client_to_server,
    the_server_calls_back_a_client_listener,
    a_capability_passed_back_to_its_origin_is_the_original_object,
    proxies_work_concurrently_from_many_tasks,
    a_capability_forwarded_through_a_middle_party_works,
    callbacks_travel_through_a_middle_party,
);

async fn capabilities_travel_from_server_to_client() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;

        // A return value (pipelined proxy), and a proxy inside a returned struct.
        let made = hub.make("made".into(), 5);
        assert_eq!(within("make", made.add(1)).await.unwrap(), 6, "{via:?}");
        assert_eq!(within("make", made.name()).await.unwrap(), "made", "{via:?}");
        let boxed = within("make_boxed", hub.make_boxed("boxed".into(), 9)).await.unwrap();
        assert_eq!(within("boxed", boxed.counter.get()).await.unwrap(), 9, "{via:?}");

        // Struct fields and a Vec field.
        let holder = within("holder", hub.holder()).await.unwrap();
        assert_eq!(holder.label, "abc");
        assert_eq!(names(&holder_counters(&holder)).await, ["a", "b", "c"], "{via:?}");
        assert_eq!(values(&holder_counters(&holder)).await, [1, 2, 3], "{via:?}");

        // Nested structs, Option, tuples, a recursive box.
        let nested = within("nested", hub.nested()).await.unwrap();
        assert_eq!(values(&nested_counters(&nested)).await, [1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60], "{via:?}");
        assert_eq!(nested.pairs[1].0, "p2");

        // Enum variants.
        assert!(matches!(within("slot", hub.slot(0)).await.unwrap(), Slot::Empty));
        let Slot::One(one) = within("slot", hub.slot(1)).await.unwrap() else { panic!("{via:?}: not One") };
        assert_eq!(within("one", one.get()).await.unwrap(), 1, "{via:?}");
        let Slot::Named { name, counter } = within("slot", hub.slot(2)).await.unwrap() else {
            panic!("{via:?}: not Named")
        };
        assert_eq!(name, "named");
        assert_eq!(within("named", counter.get()).await.unwrap(), 2, "{via:?}");
        let Slot::Many(many) = within("slot", hub.slot(3)).await.unwrap() else { panic!("{via:?}: not Many") };
        assert_eq!(values(&many).await, [3, 4], "{via:?}");

        // Vec elements.
        let list = within("list", hub.list(20)).await.unwrap();
        assert_eq!(values(&list).await, (0..20).collect::<Vec<u64>>(), "{via:?}");

        // Option.
        let some = within("maybe", hub.maybe(true)).await.unwrap().expect("Some");
        assert_eq!(within("maybe", some.get()).await.unwrap(), 42, "{via:?}");
        assert!(within("maybe", hub.maybe(false)).await.unwrap().is_none(), "{via:?}");
    }
}

async fn capabilities_travel_from_client_to_server() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;

        // An argument.
        assert_eq!(within("sum_one", hub.sum_one(counter("one", 11))).await, Ok(11), "{via:?}");
        // Struct fields and a Vec field.
        let holder =
            Holder { label: "h".into(), counter: counter("a", 1), extra: vec![counter("b", 2), counter("c", 3)] };
        assert_eq!(within("sum_holder", hub.sum_holder(holder)).await, Ok(6), "{via:?}");
        // Nested structs, Option, tuples, a recursive box: 21 + 210.
        assert_eq!(within("sum_nested", hub.sum_nested(make_nested(1))).await, Ok(231), "{via:?}");
        // Enum variants.
        assert_eq!(within("sum_slot", hub.sum_slot(Slot::Empty)).await, Ok(0), "{via:?}");
        assert_eq!(within("sum_slot", hub.sum_slot(Slot::One(counter("o", 4)))).await, Ok(4), "{via:?}");
        let named = Slot::Named { name: "n".into(), counter: counter("n", 5) };
        assert_eq!(within("sum_slot", hub.sum_slot(named)).await, Ok(5), "{via:?}");
        let many = Slot::Many(vec![counter("x", 6), counter("y", 7)]);
        assert_eq!(within("sum_slot", hub.sum_slot(many)).await, Ok(13), "{via:?}");
        // Vec elements.
        let list: Vec<CounterProxy> = (1..=10).map(|i| counter("l", i)).collect();
        assert_eq!(within("sum_list", hub.sum_list(list)).await, Ok(55), "{via:?}");
        // Option.
        assert_eq!(within("sum_maybe", hub.sum_maybe(Some(counter("m", 8)))).await, Ok(Some(8)), "{via:?}");
        assert_eq!(within("sum_maybe", hub.sum_maybe(None)).await, Ok(None), "{via:?}");
        // A capability the client got from the server goes back as an argument.
        let made = hub.make("made".into(), 12);
        assert_eq!(within("sum_one", hub.sum_one(made.clone())).await, Ok(12), "{via:?}");
        let boxed = within("make_boxed", hub.make_boxed("b".into(), 13)).await.unwrap();
        assert_eq!(within("sum_one", hub.sum_one(boxed.counter)).await, Ok(13), "{via:?}");
    }
}

async fn the_server_calls_back_a_client_listener() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let client_drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let first = Arc::new(Mutex::new(Vec::new()));
        let second = Arc::new(Mutex::new(Vec::new()));
        let listener = |events: &Arc<Mutex<Vec<String>>>| {
            ListenerProxy::new(Recorder { events: events.clone(), _token: Some(client_drops.token()) })
        };
        assert_eq!(within("subscribe", hub.subscribe(listener(&first))).await.unwrap(), 1, "{via:?}");
        assert_eq!(within("subscribe", hub.subscribe(listener(&second))).await.unwrap(), 2, "{via:?}");
        // Each listener answers with its event count: 1 + 1, then 2 + 2.
        assert_eq!(within("publish", hub.publish("one".into())).await, Ok(2), "{via:?}");
        assert_eq!(within("publish", hub.publish("two".into())).await, Ok(4), "{via:?}");
        assert_eq!(*first.lock().unwrap(), ["one", "two"], "{via:?}");
        assert_eq!(*second.lock().unwrap(), ["one", "two"], "{via:?}");
        // The client dropped its own handles at once: the server's copies keep them alive...
        settle(&hub).await;
        assert_eq!(client_drops.count(), 0, "{via:?}: a listener the server holds was dropped");
        // ...until the server drops them.
        assert_eq!(within("unsubscribe_all", hub.unsubscribe_all()).await.unwrap(), 2, "{via:?}");
        assert!(client_drops.wait_for(2).await, "{via:?}: listeners not dropped ({})", client_drops.count());
        assert_eq!(within("publish", hub.publish("three".into())).await, Ok(0), "{via:?}");
    }
}

// ----- 2: back at its origin, a capability is the original object ----------

async fn a_capability_passed_back_to_its_origin_is_the_original_object() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;

        // The client's objects, sent to the server and back.
        let mine = counter("mine", 1);
        let other = counter("other", 2);
        let echoed = within("echo", hub.echo(mine.clone())).await.unwrap().expect("Some");
        assert!(echoed.client().same_as(mine.client()), "{via:?}: echo gave {echoed:?}, not {mine:?}");
        let holder = Holder { label: "x".into(), counter: mine.clone(), extra: vec![other.clone(), mine.clone()] };
        let back = within("echo_holder", hub.echo_holder(holder)).await.unwrap();
        assert!(back.counter.client().same_as(mine.client()), "{via:?}: struct field");
        assert!(back.extra[0].client().same_as(other.client()), "{via:?}: Vec field");
        assert!(back.extra[1].client().same_as(mine.client()), "{via:?}: Vec field");
        assert!(!back.extra[0].client().same_as(mine.client()), "{via:?}: distinct objects merged");
        let list = within("echo_list", hub.echo_list(vec![mine.clone(), other.clone(), mine.clone()])).await.unwrap();
        let same: Vec<bool> = list.iter().map(|c| c.client().same_as(mine.client())).collect();
        assert_eq!(same, [true, false, true], "{via:?}: Vec elements");
        let nested = make_nested(1);
        let back = within("echo_nested", hub.echo_nested(nested.clone())).await.unwrap();
        let before = nested_counters(&nested);
        let after = nested_counters(&back);
        assert_eq!(before.len(), after.len());
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert!(b.client().same_as(a.client()), "{via:?}: nested capability {i} came back as another handle");
        }

        // The server's object, sent to the client and back.
        let shared = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
        let holder = Holder { label: "s".into(), counter: shared.clone(), extra: vec![mine.clone(), shared.clone()] };
        let verdicts = within("is_shared", hub.is_shared(vec![shared.clone(), other.clone()], Some(holder))).await;
        assert_eq!(verdicts.unwrap(), [true, false, true, false, true], "{via:?}");
        // A fresh object of the server's is not the shared one.
        let fresh = within("fresh", hub.fresh()).await.unwrap().counter;
        assert_eq!(within("is_shared", hub.is_shared(vec![fresh], None)).await.unwrap(), [false], "{via:?}");
    }
}

/// A pipelined proxy whose call has returned names the returned object: sent
/// back to the object's origin, it must arrive as that object.
async fn resolved_pipelined_proxy_comes_home(via: Via) {
    let drops = DropCounter::default();
    let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
    let piped = hub.share();
    assert_eq!(within("share", piped.get()).await.unwrap(), 7);
    // It works as an argument either way.
    assert_eq!(within("sum_one", hub.sum_one(piped.clone())).await, Ok(7), "{via:?}");
    let verdicts = within("is_shared", hub.is_shared(vec![piped.clone()], None)).await.unwrap();
    assert_eq!(verdicts, [true], "{via:?}: a resolved pipelined proxy did not come home as the original");
}

#[tokio::test]
async fn a_resolved_pipelined_proxy_passed_back_is_the_original_object_remote() {
    resolved_pipelined_proxy_comes_home(Via::Remote).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_pipelined_proxy_passed_back_is_the_original_object_remote_mt() {
    resolved_pipelined_proxy_comes_home(Via::Remote).await
}

#[tokio::test]
async fn a_resolved_pipelined_proxy_passed_back_is_the_original_object_local() {
    resolved_pipelined_proxy_comes_home(Via::Local).await
}

/// The client's own object comes back to it as a pipelined proxy, and the
/// client pipelines calls on it before the answer arrives: the server
/// forwards those calls back to the client over the same connection, and
/// relays their answers (with and without capabilities).
async fn calls_pipelined_on_an_object_returned_to_its_origin(via: Via) {
    let drops = DropCounter::default();
    let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
    let mine = HubProxy::new(HubImpl::new(&drops));
    for round in 0..10u64 {
        let back = hub.echo_hub(mine.clone());
        // Pipelined before the answer: one result with a capability, one without.
        let boxed = back.make_boxed("mine".into(), round);
        let list = back.list(2);
        let created = back.created();
        let piped = back.make("piped".into(), round + 1);
        let boxed = within("make_boxed", boxed).await.unwrap();
        assert_eq!(within("get", boxed.counter.get()).await.unwrap(), round, "{via:?}");
        assert_eq!(within("list", list).await.unwrap().len(), 2, "{via:?}");
        assert_eq!(within("created", created).await.unwrap(), 0, "{via:?}");
        assert_eq!(within("piped", piped.get()).await.unwrap(), round + 1, "{via:?}");
        // Once resolved, the returned proxy calls the client's object.
        assert!(within("maybe", back.maybe(true)).await.unwrap().is_some(), "{via:?}");
    }
}

/// Runs `body` on a runtime of its own in a thread of its own, so that a
/// deadlock (a blocked runtime thread, which no tokio timeout can catch)
/// fails the test after a bound instead of hanging the whole suite.
fn run_isolated<F, Fut>(multi_thread: bool, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    const BOUND: Duration = Duration::from_secs(30);
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        .expect("runtime");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(body())));
        let _ = done.send(result.map_err(|panic| {
            panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        }));
        // A deadlocked worker would make a plain drop wait forever.
        runtime.shutdown_background();
    });
    match outcome.recv_timeout(BOUND) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => panic!("{}", message.unwrap_or_else(|| "the test body panicked".into())),
        Err(_) => panic!("no outcome within {BOUND:?}: a runtime thread is blocked (deadlock)"),
    }
}

#[test]
fn calls_pipelined_on_an_object_returned_to_its_origin_local() {
    run_isolated(false, || calls_pipelined_on_an_object_returned_to_its_origin(Via::Local));
    run_isolated(true, || calls_pipelined_on_an_object_returned_to_its_origin(Via::Local));
}

#[test]
fn calls_pipelined_on_an_object_returned_to_its_origin_remote() {
    run_isolated(false, || calls_pipelined_on_an_object_returned_to_its_origin(Via::Remote));
}

#[test]
fn calls_pipelined_on_an_object_returned_to_its_origin_remote_multi_thread() {
    run_isolated(true, || calls_pipelined_on_an_object_returned_to_its_origin(Via::Remote));
}

// ----- 6: concurrency --------------------------------------------------------

async fn proxies_work_concurrently_from_many_tasks() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let shared = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
        let start = within("get", shared.get()).await.unwrap();
        let tasks: Vec<JoinHandle<u64>> = (0..8u64)
            .map(|task| {
                let counter = shared.clone();
                let hub = hub.clone();
                tokio::spawn(async move {
                    let mut added = 0;
                    for i in 0..100u64 {
                        let x = task * 1000 + i;
                        // Several calls in flight at once, then awaited.
                        let doubled = counter.double(x);
                        let sum = hub.sum_one(counter.clone());
                        let after = counter.add(1);
                        assert_eq!(within("double", doubled).await.unwrap(), 2 * x);
                        assert!(within("sum_one", sum).await.is_ok());
                        assert!(within("add", after).await.unwrap() > start);
                        added += 1;
                    }
                    added
                })
            })
            .collect();
        let mut added = 0;
        for task in tasks {
            added += within("task", task).await.unwrap();
        }
        assert_eq!(added, 800);
        assert_eq!(within("get", shared.get()).await.unwrap(), start + 800, "{via:?}");
    }
}

// ----- 7: three parties ------------------------------------------------------

/// S serves a hub to M; M offers S's hub (an import) as its own bootstrap to C.
struct ThreeParties {
    /// M's handle on S's hub.
    m_hub: HubProxy,
    /// C's handle on S's hub, through M.
    c_hub: HubProxy,
    _conns: [Connection; 4],
}

async fn three_parties(drops: &DropCounter) -> ThreeParties {
    let (s_io, m_io) = tokio::io::duplex(1 << 16);
    let (s_conn, m_to_s, m_hub) =
        connect_pair(s_io, m_io, HubProxy::new(HubImpl::new(drops)), Config::default()).await.expect("S-M");
    let (m_io, c_io) = tokio::io::duplex(1 << 16);
    let (m_to_c, c_conn, c_hub) = connect_pair(m_io, c_io, m_hub.clone(), Config::default()).await.expect("M-C");
    ThreeParties { m_hub, c_hub, _conns: [s_conn, m_to_s, m_to_c, c_conn] }
}

async fn a_capability_forwarded_through_a_middle_party_works() {
    let drops = DropCounter::default();
    let parties = three_parties(&drops).await;
    // M takes a copy of S's shared counter, and so does C (through M).
    let m_copy = within("M share", parties.m_hub.share_boxed()).await.unwrap().counter;
    let c_copy = within("C share", parties.c_hub.share_boxed()).await.unwrap().counter;
    // C's calls reach S's object (forwarded by M).
    assert_eq!(within("C add", c_copy.add(10)).await.unwrap(), 17);
    assert_eq!(within("M get", m_copy.get()).await.unwrap(), 17);
    assert_eq!(within("C name", c_copy.name()).await.unwrap(), "shared");
    // A pipelined proxy through two connections.
    assert_eq!(within("C make", parties.c_hub.make("piped".into(), 4).add(1)).await.unwrap(), 5);
    // Passed back to S through M, it is S's original object.
    let verdicts = within("is_shared", parties.c_hub.is_shared(vec![c_copy.clone()], None)).await.unwrap();
    assert_eq!(verdicts, [true], "C's copy did not come home to S as the original");
    // C passes its own object through M to S, which calls it back.
    assert_eq!(within("sum_one", parties.c_hub.sum_one(counter("c", 21))).await, Ok(21));

    // Drops propagate: S forgets, C drops (M still holds), then M drops.
    within("unshare", parties.c_hub.unshare()).await.unwrap();
    drop(c_copy);
    settle(&parties.c_hub).await;
    settle(&parties.m_hub).await;
    assert_eq!(drops.count(), 0, "S's object dropped while M still holds it");
    assert_eq!(within("M get", m_copy.get()).await.unwrap(), 17);
    drop(m_copy);
    assert!(drops.wait_for(1).await, "S's object not dropped after C and M dropped it");

    // The other order: M drops first, C's copy (forwarded by M) keeps it alive.
    let m_copy = within("M share", parties.m_hub.share_boxed()).await.unwrap().counter;
    let c_copy = within("C share", parties.c_hub.share_boxed()).await.unwrap().counter;
    within("unshare", parties.m_hub.unshare()).await.unwrap();
    drop(m_copy);
    settle(&parties.m_hub).await;
    assert_eq!(drops.count(), 1, "S's object dropped while C still holds it through M");
    assert_eq!(within("C add", c_copy.add(1)).await.unwrap(), 8);
    drop(c_copy);
    assert!(drops.wait_for(2).await, "S's object not dropped after C (the last holder, through M) dropped it");
}

async fn callbacks_travel_through_a_middle_party() {
    let drops = DropCounter::default();
    let client_drops = DropCounter::default();
    let parties = three_parties(&drops).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let listener = ListenerProxy::new(Recorder { events: events.clone(), _token: Some(client_drops.token()) });
    assert_eq!(within("subscribe", parties.c_hub.subscribe(listener)).await.unwrap(), 1);
    // S calls C's listener through M.
    assert_eq!(within("publish", parties.m_hub.publish("from M".into())).await, Ok(1));
    assert_eq!(within("publish", parties.c_hub.publish("from C".into())).await, Ok(2));
    assert_eq!(*events.lock().unwrap(), ["from M", "from C"]);
    settle(&parties.c_hub).await;
    assert_eq!(client_drops.count(), 0, "C's listener dropped while S holds it");
    // S drops it: the release travels S -> M -> C.
    assert_eq!(within("unsubscribe_all", parties.m_hub.unsubscribe_all()).await.unwrap(), 1);
    assert!(client_drops.wait_for(1).await, "C's listener not dropped after S let go");
}
