//! Capabilities reference counted across a connection: the last proxy
//! dropped releases the object, dropped promises and pipelines leak nothing,
//! an object sent a hundred times is released once, and a disconnect (either
//! side closing, or the transport lost) releases everything.
//!
//! Most tests run against a local object and through a connection
//! ([`Via::BOTH`]), on the current-thread and the multi-thread runtime.
//! Every wait is bounded (`DropCounter::wait_for`, `timeout`). The interfaces
//! and their implementations are in `rpc_tests::cap_lab`.

use std::sync::{Arc, Mutex};

use rpc_core::{Capability, Config, Connection, ErrorKind};
use rpc_tests::cap_lab::*;
use rpc_tests::on_both_runtimes;
use rpc_tests::{connect_pair, DropCounter, Via};
use tokio::task::JoinHandle;

// ----- the tests below, each on both runtimes ----------------------------------

on_both_runtimes!(
    dropping_the_last_client_proxy_releases_the_server_object,
    dropping_the_servers_copies_releases_a_client_object,
    dropped_promises_leak_no_returned_capability,
    an_object_sent_a_hundred_times_is_released_once,
    an_object_passed_to_the_server_a_hundred_times_is_released_once,
    receiving_and_dropping_the_same_object_repeatedly_keeps_counts_right,
    disconnect_by_server_close_releases_everything,
    disconnect_by_client_close_releases_everything,
    disconnect_by_transport_loss_releases_everything,
);

// ----- 3 and 4: reference counting across the connection --------------------

async fn dropping_the_last_client_proxy_releases_the_server_object() {
    for via in Via::BOTH {
        // A fresh object the server does not keep: one proxy, then gone.
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let fresh = within("fresh", hub.fresh()).await.unwrap().counter;
        assert_eq!(within("get", fresh.get()).await.unwrap(), 1);
        let clone = fresh.clone();
        drop(fresh);
        settle(&hub).await;
        assert_eq!(drops.count(), 0, "{via:?}: dropped while a clone lives");
        assert_eq!(within("get", clone.add(1)).await.unwrap(), 2, "{via:?}");
        drop(clone);
        assert!(drops.wait_for(1).await, "{via:?}: fresh object not dropped after the last proxy went");

        // The shared object, received twice (as a pipelined proxy and in a
        // struct), cloned, and released by the server.
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let piped = hub.share();
        let piped_clone = piped.clone();
        let boxed = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
        let boxed_clone = boxed.clone();
        assert_eq!(within("add", piped.add(1)).await.unwrap(), 8, "{via:?}");
        assert_eq!(within("add", boxed.add(1)).await.unwrap(), 9, "{via:?}");
        within("unshare", hub.unshare()).await.unwrap();
        drop(piped);
        drop(boxed);
        settle(&hub).await;
        assert_eq!(drops.count(), 0, "{via:?}: dropped while clones live");
        assert_eq!(within("get", piped_clone.get()).await.unwrap(), 9, "{via:?}");
        drop(piped_clone);
        settle(&hub).await;
        assert_eq!(drops.count(), 0, "{via:?}: dropped while a copy lives");
        assert_eq!(within("get", boxed_clone.get()).await.unwrap(), 9, "{via:?}");
        drop(boxed_clone);
        assert!(drops.wait_for(1).await, "{via:?}: shared object not dropped after every copy went");
        // The hub hands out a new shared object afterwards, which works.
        let again = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
        assert_eq!(within("get", again.get()).await.unwrap(), 7, "{via:?}");
        assert_eq!(drops.count(), 1, "{via:?}");
    }
}

/// Promises dropped at every stage (before the call ran, while it ran, after
/// it returned, pipelined or not, awaited or not) leak none of the
/// capabilities their calls returned.
async fn dropped_promises_leak_no_returned_capability() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        for round in 0..20 {
            // Dropped at once.
            drop(hub.fresh());
            drop(hub.fresh_piped());
            // Dropped after a yield (the call may have run, or returned).
            let boxed = hub.fresh();
            let piped = hub.fresh_piped();
            let pipelined_call = piped.get();
            for _ in 0..round % 4 {
                tokio::task::yield_now().await;
            }
            drop((boxed, piped, pipelined_call));
            // Dropped after it returned.
            let piped = hub.fresh_piped();
            assert_eq!(within("get", piped.get()).await.unwrap(), 1);
            drop(piped);
            let boxed = within("fresh", hub.fresh()).await.unwrap();
            drop(boxed);
        }
        settle(&hub).await;
        let created = within("created", hub.created()).await.unwrap() as usize;
        assert!(created >= 40, "{via:?}: only {created} made");
        assert!(drops.wait_for(created).await, "{via:?}: {created} made, {} dropped", drops.count());
    }
}

/// A pipelined proxy whose call never returns: dropping it (and, with
/// `with_call`, a call made on it) tells the callee, whose handler is
/// cancelled, so nothing it holds leaks.
async fn dropped_pipeline_cancels_a_call_that_never_returns(via: Via, with_call: bool) {
    let drops = DropCounter::default();
    let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
    let never = hub.never();
    let pipelined_call = with_call.then(|| never.get());
    settle(&hub).await; // E-order: the handler has started.
    assert_eq!(drops.count(), 0);
    drop(pipelined_call);
    drop(never);
    assert!(
        drops.wait_for(1).await,
        "{via:?}: the handler still runs after every handle on its result was dropped (call on it: {with_call})"
    );
}

async fn dropping_the_servers_copies_releases_a_client_object() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let client_drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let mine = tracked("mine", 3, &client_drops);
        assert_eq!(within("keep", hub.keep(mine.clone())).await.unwrap(), 1);
        assert_eq!(within("keep", hub.keep(mine.clone())).await.unwrap(), 2);
        let holder = Holder { label: "k".into(), counter: mine.clone(), extra: vec![mine.clone()] };
        assert_eq!(within("keep_many", hub.keep_many(holder_counters(&holder))).await.unwrap(), 4);
        drop(holder);
        drop(mine);
        settle(&hub).await;
        assert_eq!(client_drops.count(), 0, "{via:?}: dropped while the server holds copies");
        assert_eq!(within("kept_sum", hub.kept_sum()).await, Ok(12), "{via:?}");
        assert_eq!(within("forget", hub.forget()).await.unwrap(), 4);
        assert!(client_drops.wait_for(1).await, "{via:?}: client object not dropped after the server's copies went");
    }
}

async fn an_object_sent_a_hundred_times_is_released_once() {
    for via in Via::BOTH {
        // 100 times in one Vec.
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let mut copies = within("share_many", hub.share_many(100)).await.unwrap();
        assert_eq!(copies.len(), 100);
        within("unshare", hub.unshare()).await.unwrap();
        assert_eq!(within("add", copies[17].add(1)).await.unwrap(), 8, "{via:?}");
        let last = copies.pop().unwrap();
        drop(copies);
        settle(&hub).await;
        assert_eq!(drops.count(), 0, "{via:?}: released while one of 100 copies lives");
        assert_eq!(within("get", last.get()).await.unwrap(), 8, "{via:?}");
        drop(last);
        assert!(drops.wait_for(1).await, "{via:?}: not released after all 100 copies went");

        // 100 separate calls, each result kept.
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let mut copies = Vec::new();
        for _ in 0..100 {
            copies.push(within("share_boxed", hub.share_boxed()).await.unwrap().counter);
        }
        // And 100 pipelined ones, alive at the same time.
        let piped: Vec<CounterProxy> = (0..100).map(|_| hub.share()).collect();
        within("unshare", hub.unshare()).await.unwrap();
        assert_eq!(within("add", piped[99].add(2)).await.unwrap(), 9, "{via:?}");
        drop(piped);
        let last = copies.pop().unwrap();
        drop(copies);
        settle(&hub).await;
        assert_eq!(drops.count(), 0, "{via:?}: released while one of 200 copies lives");
        assert_eq!(within("get", last.get()).await.unwrap(), 9, "{via:?}");
        drop(last);
        assert!(drops.wait_for(1).await, "{via:?}: not released after all 200 copies went");
        settle(&hub).await;
        assert_eq!(drops.count(), 1, "{via:?}");
    }
}

async fn an_object_passed_to_the_server_a_hundred_times_is_released_once() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let client_drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        let mine = tracked("mine", 1, &client_drops);
        assert_eq!(within("keep_many", hub.keep_many(vec![mine.clone(); 100])).await.unwrap(), 100);
        for i in 0..100 {
            assert_eq!(within("keep", hub.keep(mine.clone())).await.unwrap(), 101 + i);
        }
        drop(mine);
        settle(&hub).await;
        assert_eq!(client_drops.count(), 0, "{via:?}");
        assert_eq!(within("kept_sum", hub.kept_sum()).await, Ok(200), "{via:?}");
        assert_eq!(within("forget", hub.forget()).await.unwrap(), 200);
        assert!(client_drops.wait_for(1).await, "{via:?}: not released after the server dropped 200 copies");
    }
}

/// Receive, use and drop the same export over and over: each drop's Release
/// races the next send of the same object.
async fn receiving_and_dropping_the_same_object_repeatedly_keeps_counts_right() {
    for via in Via::BOTH {
        let drops = DropCounter::default();
        let (hub, _conns) = via.reach(HubProxy::new(HubImpl::new(&drops))).await;
        for i in 0..100u64 {
            let copy = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
            // Dropped without waiting for anything: the Release and the next call cross.
            let next = hub.share_boxed();
            assert_eq!(within("add", copy.add(1)).await.unwrap(), 8 + i, "{via:?} round {i}");
            drop(copy);
            let next = within("share_boxed", next).await.unwrap().counter;
            drop(next);
        }
        // Concurrent receivers on clones of the hub.
        let tasks: Vec<JoinHandle<()>> = (0..4)
            .map(|_| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let copy = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
                        within("add", copy.add(1)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            within("task", task).await.unwrap();
        }
        assert_eq!(drops.count(), 0, "{via:?}: released while the hub keeps it");
        let last = within("share_boxed", hub.share_boxed()).await.unwrap().counter;
        assert_eq!(within("get", last.get()).await.unwrap(), 207, "{via:?}");
        within("unshare", hub.unshare()).await.unwrap();
        settle(&hub).await;
        assert_eq!(drops.count(), 0, "{via:?}: released while the client holds it");
        drop(last);
        assert!(drops.wait_for(1).await, "{via:?}: not released after the hub and the client let go");
    }
}

// Dropping a pipelined proxy cancels its call: both runtimes, both paths.

macro_rules! dropped_pipeline_cases {
    ($($(#[$attr:meta])* $name:ident: $via:expr, $with_call:expr;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            $(#[$attr])*
            async fn current_thread() {
                dropped_pipeline_cancels_a_call_that_never_returns($via, $with_call).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn multi_thread() {
                dropped_pipeline_cancels_a_call_that_never_returns($via, $with_call).await
            }
        }
    )*};
}

dropped_pipeline_cases! {
    dropping_a_remote_pipelined_proxy_cancels_its_call: Via::Remote, false;
    dropping_a_remote_pipelined_proxy_and_its_calls_cancels_its_call: Via::Remote, true;
    dropping_a_local_pipelined_proxy_cancels_its_call: Via::Local, false;
    dropping_a_local_pipelined_proxy_and_its_calls_cancels_its_call: Via::Local, true;
}

// ----- 5: disconnect releases everything -------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kill {
    ServerClose,
    ClientClose,
    Transport,
}

/// A connection pair over two duplex pipes joined by a relay task; aborting
/// the task drops the relay's ends (the transport goes away under both sides).
async fn relayed_pair<C: Capability>(bootstrap: C) -> (Connection, Connection, C, JoinHandle<()>) {
    let (server_io, mut relay_a) = tokio::io::duplex(1 << 16);
    let (mut relay_b, client_io) = tokio::io::duplex(1 << 16);
    let relay = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut relay_a, &mut relay_b).await;
    });
    let (server, client, cap) =
        connect_pair(server_io, client_io, bootstrap, Config::default()).await.expect("connect");
    (server, client, cap, relay)
}

async fn disconnect_releases_everything(kill: Kill) {
    let server_drops = DropCounter::default();
    let hub_drops = DropCounter::default();
    let client_drops = DropCounter::default();
    // The hub counts its own drop in `hub_drops`, its counters in `server_drops`.
    let hub = HubImpl { _token: Some(hub_drops.token()), ..HubImpl::new(&server_drops) };
    let (server, client, hub, relay) = relayed_pair(HubProxy::new(hub)).await;

    // Objects of the server held only by the client: a struct-borne import,
    // a pipelined proxy, and the formerly shared counter.
    let fresh = within("fresh", hub.fresh()).await.unwrap().counter;
    let piped = hub.share();
    assert_eq!(within("get", piped.get()).await.unwrap(), 7);
    within("unshare", hub.unshare()).await.unwrap();
    assert_eq!(within("get", fresh.get()).await.unwrap(), 1);
    // An object of the client held only by the server.
    assert_eq!(within("keep", hub.keep(tracked("mine", 5, &client_drops))).await.unwrap(), 1);
    // A listener held only by the server.
    let events = Arc::new(Mutex::new(Vec::new()));
    let listener = ListenerProxy::new(Recorder { events: events.clone(), _token: Some(client_drops.token()) });
    within("subscribe", hub.subscribe(listener)).await.unwrap();
    assert_eq!(within("publish", hub.publish("e".into())).await, Ok(1));
    settle(&hub).await;
    assert_eq!(server_drops.count(), 0, "{kill:?}");
    assert_eq!(client_drops.count(), 0, "{kill:?}");

    match kill {
        Kill::ServerClose => server.close(),
        Kill::ClientClose => client.close(),
        Kill::Transport => relay.abort(),
    }

    for (side, conn) in [("server", &server), ("client", &client)] {
        let reason = within("closed", conn.closed()).await;
        assert_eq!(reason.kind(), ErrorKind::Disconnected, "{kill:?}: {side} closed with {reason}");
    }
    // Objects held only by the peer are dropped on both sides.
    assert!(server_drops.wait_for(2).await, "{kill:?}: server objects not released ({})", server_drops.count());
    assert!(hub_drops.wait_for(1).await, "{kill:?}: the bootstrap hub was not released on disconnect");
    assert!(client_drops.wait_for(2).await, "{kill:?}: client objects not released ({})", client_drops.count());
    // Calls on imported and pipelined proxies fail with Disconnected.
    for (what, result) in [
        ("hub", within("hub", hub.kept_sum()).await.map_err(|e| e.0)),
        ("fresh", within("fresh", fresh.get()).await.map_err(|e| e.to_string())),
        ("piped", within("piped", piped.get()).await.map_err(|e| e.to_string())),
    ] {
        let err = result.expect_err(what);
        assert!(err.starts_with("disconnected"), "{kill:?}: {what} failed with {err}");
    }
    let err = within("fresh", fresh.add(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{kill:?}: {err}");
    let err = within("make", hub.make("late".into(), 1).get()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{kill:?}: pipelined after close: {err}");
    assert!(events.lock().unwrap().len() == 1);
}

async fn disconnect_by_server_close_releases_everything() {
    disconnect_releases_everything(Kill::ServerClose).await
}

async fn disconnect_by_client_close_releases_everything() {
    disconnect_releases_everything(Kill::ClientClose).await
}

async fn disconnect_by_transport_loss_releases_everything() {
    disconnect_releases_everything(Kill::Transport).await
}
