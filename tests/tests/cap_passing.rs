//! Capabilities as values: passed as arguments and results, inside structs,
//! enums, `Vec`s and `Option`s, in both directions; handed back to their
//! origin; reference counted across connections (and three parties); released
//! on disconnect; and used concurrently from many tasks.
//!
//! Most tests run against a local object and through a connection
//! ([`Via::BOTH`]), on the current-thread and the multi-thread runtime.
//! Every wait is bounded (`DropCounter::wait_for`, `timeout`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Capability, Config, Connection, ErrorKind, RpcError};
use rpc_tests::{connect_pair, DropCounter, DropToken, Via};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bound on any single wait for a reply in this file.
const LIMIT: Duration = Duration::from_secs(60);

// ----- interfaces -----------------------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct HubError(pub String);

impl From<RpcError> for HubError {
    fn from(err: RpcError) -> Self {
        HubError(err.to_string())
    }
}

#[eventual]
pub trait Counter {
    fn name(&self) -> String;
    fn get(&self) -> u64;
    fn add(&self, n: u64) -> u64;
    fn double(&self, x: u64) -> u64;
}

#[eventual]
pub trait Listener {
    /// Records `event`; returns how many events this listener has seen.
    async fn notify(&self, event: String) -> u64;
}

/// A capability in a struct field, and in a `Vec` field.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Holder {
    pub label: String,
    pub counter: CounterProxy,
    pub extra: Vec<CounterProxy>,
}

/// Nested structs, an `Option`, tuples and a recursive box.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Nested {
    pub holder: Holder,
    pub maybe: Option<CounterProxy>,
    pub pairs: Vec<(String, CounterProxy)>,
    pub deeper: Option<Box<Nested>>,
}

/// Capabilities in enum variants.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Slot {
    Empty,
    One(CounterProxy),
    Named { name: String, counter: CounterProxy },
    Many(Vec<CounterProxy>),
}

/// A capability returned inside a value (so not as a pipelined proxy).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Boxed {
    pub counter: CounterProxy,
}

#[eventual]
pub trait Hub {
    // --- server -> client ---
    /// A fresh counter, returned as a pipelined proxy.
    fn make(&self, name: String, value: u64) -> CounterProxy;
    /// A fresh counter inside a struct.
    async fn make_boxed(&self, name: String, value: u64) -> Boxed;
    /// `a`=1 in `counter`, `b`=2 and `c`=3 in `extra`.
    async fn holder(&self) -> Holder;
    /// A two-level `Nested` with values 1..=6 and 10..=60.
    async fn nested(&self) -> Nested;
    /// Slot variant `which` (0..=3).
    async fn slot(&self, which: u8) -> Slot;
    /// Counters valued `0..n`.
    async fn list(&self, n: u32) -> Vec<CounterProxy>;
    /// A counter valued 42, or none.
    async fn maybe(&self, some: bool) -> Option<CounterProxy>;
    /// A fresh tracked counter the hub does not keep.
    async fn fresh(&self) -> Boxed;
    /// The same, returned as a pipelined proxy.
    fn fresh_piped(&self) -> CounterProxy;
    /// How many tracked counters `fresh` and `fresh_piped` made.
    fn created(&self) -> u64;
    /// Never returns; the handler holds a token (of the hub's counter) while it runs.
    async fn never(&self) -> CounterProxy;
    /// The hub's shared tracked counter (created on first use), pipelined.
    fn share(&self) -> CounterProxy;
    /// The shared counter inside a struct.
    async fn share_boxed(&self) -> Boxed;
    /// The shared counter `n` times in one `Vec`.
    async fn share_many(&self, n: u32) -> Vec<CounterProxy>;
    /// The hub forgets its shared counter (the next `share` makes a new one).
    async fn unshare(&self);
    /// For each candidate (and each counter of `holder`): is it the shared counter?
    async fn is_shared(&self, candidates: Vec<CounterProxy>, holder: Option<Holder>) -> Vec<bool>;
    // --- client -> server: the server calls back what it gets ---
    async fn sum_one(&self, counter: CounterProxy) -> Result<u64, HubError>;
    async fn sum_holder(&self, holder: Holder) -> Result<u64, HubError>;
    async fn sum_nested(&self, nested: Nested) -> Result<u64, HubError>;
    async fn sum_slot(&self, slot: Slot) -> Result<u64, HubError>;
    async fn sum_list(&self, list: Vec<CounterProxy>) -> Result<u64, HubError>;
    async fn sum_maybe(&self, maybe: Option<CounterProxy>) -> Result<Option<u64>, HubError>;
    /// Keeps `listener`; returns how many listeners are kept.
    async fn subscribe(&self, listener: ListenerProxy) -> usize;
    /// Notifies every listener; returns the sum of their answers.
    async fn publish(&self, event: String) -> Result<u64, HubError>;
    /// Drops every listener; returns how many there were.
    async fn unsubscribe_all(&self) -> usize;
    // --- round trips ---
    async fn echo(&self, counter: CounterProxy) -> Option<CounterProxy>;
    async fn echo_holder(&self, holder: Holder) -> Holder;
    async fn echo_list(&self, list: Vec<CounterProxy>) -> Vec<CounterProxy>;
    async fn echo_nested(&self, nested: Nested) -> Nested;
    /// The hub it is given, as a pipelined proxy.
    fn echo_hub(&self, hub: HubProxy) -> HubProxy;
    // --- the server keeps client objects ---
    async fn keep(&self, counter: CounterProxy) -> usize;
    async fn keep_many(&self, counters: Vec<CounterProxy>) -> usize;
    /// Sum of `get` over every kept counter.
    async fn kept_sum(&self) -> Result<u64, HubError>;
    /// Drops every kept counter; returns how many there were.
    async fn forget(&self) -> usize;
}

// ----- implementations ------------------------------------------------------

struct CounterImpl {
    name: String,
    value: AtomicU64,
    _token: Option<DropToken>,
}

impl Counter for CounterImpl {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn get(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }
    fn add(&self, n: u64) -> u64 {
        self.value.fetch_add(n, Ordering::SeqCst) + n
    }
    fn double(&self, x: u64) -> u64 {
        2 * x
    }
}

fn counter(name: &str, value: u64) -> CounterProxy {
    CounterProxy::new(CounterImpl { name: name.into(), value: AtomicU64::new(value), _token: None })
}

fn tracked(name: &str, value: u64, drops: &DropCounter) -> CounterProxy {
    CounterProxy::new(CounterImpl { name: name.into(), value: AtomicU64::new(value), _token: Some(drops.token()) })
}

struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
    _token: Option<DropToken>,
}

impl Listener for Recorder {
    async fn notify(&self, event: String) -> u64 {
        let mut events = self.events.lock().unwrap();
        events.push(event);
        events.len() as u64
    }
}

struct HubImpl {
    /// Tokens of the tracked counters this hub makes.
    drops: DropCounter,
    _token: Option<DropToken>,
    shared: Mutex<Option<CounterProxy>>,
    kept: Mutex<Vec<CounterProxy>>,
    listeners: Mutex<Vec<ListenerProxy>>,
    created: AtomicU64,
}

impl HubImpl {
    fn new(drops: &DropCounter) -> Self {
        HubImpl {
            drops: drops.clone(),
            _token: None,
            shared: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        }
    }

    fn shared(&self) -> CounterProxy {
        self.shared.lock().unwrap().get_or_insert_with(|| tracked("shared", 7, &self.drops)).clone()
    }
}

async fn sum(counters: impl IntoIterator<Item = CounterProxy>) -> Result<u64, HubError> {
    let mut total = 0;
    for counter in counters {
        total += counter.get().await?;
    }
    Ok(total)
}

fn holder_counters(holder: &Holder) -> Vec<CounterProxy> {
    std::iter::once(holder.counter.clone()).chain(holder.extra.iter().cloned()).collect()
}

fn nested_counters(nested: &Nested) -> Vec<CounterProxy> {
    let mut out = Vec::new();
    let mut at = Some(nested);
    while let Some(level) = at {
        out.extend(holder_counters(&level.holder));
        out.extend(level.maybe.iter().cloned());
        out.extend(level.pairs.iter().map(|(_, c)| c.clone()));
        at = level.deeper.as_deref();
    }
    out
}

fn make_nested(base: u64) -> Nested {
    let level = |base: u64, deeper: Option<Box<Nested>>| Nested {
        holder: Holder {
            label: format!("level {base}"),
            counter: counter("h", base),
            extra: vec![counter("e1", 2 * base), counter("e2", 3 * base)],
        },
        maybe: Some(counter("m", 4 * base)),
        pairs: vec![("p1".into(), counter("p1", 5 * base)), ("p2".into(), counter("p2", 6 * base))],
        deeper,
    };
    level(base, Some(Box::new(level(10 * base, None))))
}

impl Hub for HubImpl {
    fn make(&self, name: String, value: u64) -> CounterProxy {
        counter(&name, value)
    }
    async fn make_boxed(&self, name: String, value: u64) -> Boxed {
        Boxed { counter: counter(&name, value) }
    }
    async fn holder(&self) -> Holder {
        Holder { label: "abc".into(), counter: counter("a", 1), extra: vec![counter("b", 2), counter("c", 3)] }
    }
    async fn nested(&self) -> Nested {
        make_nested(1)
    }
    async fn slot(&self, which: u8) -> Slot {
        match which {
            0 => Slot::Empty,
            1 => Slot::One(counter("one", 1)),
            2 => Slot::Named { name: "named".into(), counter: counter("named", 2) },
            _ => Slot::Many(vec![counter("x", 3), counter("y", 4)]),
        }
    }
    async fn list(&self, n: u32) -> Vec<CounterProxy> {
        (0..n).map(|i| counter(&format!("item {i}"), u64::from(i))).collect()
    }
    async fn maybe(&self, some: bool) -> Option<CounterProxy> {
        some.then(|| counter("maybe", 42))
    }
    async fn fresh(&self) -> Boxed {
        self.created.fetch_add(1, Ordering::SeqCst);
        Boxed { counter: tracked("fresh", 1, &self.drops) }
    }
    fn fresh_piped(&self) -> CounterProxy {
        self.created.fetch_add(1, Ordering::SeqCst);
        tracked("fresh", 1, &self.drops)
    }
    fn created(&self) -> u64 {
        self.created.load(Ordering::SeqCst)
    }
    async fn never(&self) -> CounterProxy {
        let _token = self.drops.token();
        std::future::pending::<()>().await;
        counter("never", 0)
    }
    fn share(&self) -> CounterProxy {
        self.shared()
    }
    async fn share_boxed(&self) -> Boxed {
        Boxed { counter: self.shared() }
    }
    async fn share_many(&self, n: u32) -> Vec<CounterProxy> {
        let shared = self.shared();
        vec![shared; n as usize]
    }
    async fn unshare(&self) {
        let old = self.shared.lock().unwrap().take();
        drop(old);
    }
    async fn is_shared(&self, candidates: Vec<CounterProxy>, holder: Option<Holder>) -> Vec<bool> {
        let shared = self.shared.lock().unwrap().clone();
        let all = candidates.into_iter().chain(holder.iter().flat_map(holder_counters));
        all.map(|c| shared.as_ref().is_some_and(|s| s.client().same_as(c.client()))).collect()
    }
    async fn sum_one(&self, counter: CounterProxy) -> Result<u64, HubError> {
        Ok(counter.get().await?)
    }
    async fn sum_holder(&self, holder: Holder) -> Result<u64, HubError> {
        sum(holder_counters(&holder)).await
    }
    async fn sum_nested(&self, nested: Nested) -> Result<u64, HubError> {
        sum(nested_counters(&nested)).await
    }
    async fn sum_slot(&self, slot: Slot) -> Result<u64, HubError> {
        match slot {
            Slot::Empty => Ok(0),
            Slot::One(c) | Slot::Named { counter: c, .. } => sum([c]).await,
            Slot::Many(list) => sum(list).await,
        }
    }
    async fn sum_list(&self, list: Vec<CounterProxy>) -> Result<u64, HubError> {
        sum(list).await
    }
    async fn sum_maybe(&self, maybe: Option<CounterProxy>) -> Result<Option<u64>, HubError> {
        match maybe {
            Some(c) => Ok(Some(c.get().await?)),
            None => Ok(None),
        }
    }
    async fn subscribe(&self, listener: ListenerProxy) -> usize {
        let mut listeners = self.listeners.lock().unwrap();
        listeners.push(listener);
        listeners.len()
    }
    async fn publish(&self, event: String) -> Result<u64, HubError> {
        let listeners = self.listeners.lock().unwrap().clone();
        let mut total = 0;
        for listener in listeners {
            total += listener.notify(event.clone()).await?;
        }
        Ok(total)
    }
    async fn unsubscribe_all(&self) -> usize {
        let old = std::mem::take(&mut *self.listeners.lock().unwrap());
        old.len()
    }
    async fn echo(&self, counter: CounterProxy) -> Option<CounterProxy> {
        Some(counter)
    }
    async fn echo_holder(&self, holder: Holder) -> Holder {
        holder
    }
    async fn echo_list(&self, list: Vec<CounterProxy>) -> Vec<CounterProxy> {
        list
    }
    async fn echo_nested(&self, nested: Nested) -> Nested {
        nested
    }
    fn echo_hub(&self, hub: HubProxy) -> HubProxy {
        hub
    }
    async fn keep(&self, counter: CounterProxy) -> usize {
        let mut kept = self.kept.lock().unwrap();
        kept.push(counter);
        kept.len()
    }
    async fn keep_many(&self, counters: Vec<CounterProxy>) -> usize {
        let mut kept = self.kept.lock().unwrap();
        kept.extend(counters);
        kept.len()
    }
    async fn kept_sum(&self) -> Result<u64, HubError> {
        let kept = self.kept.lock().unwrap().clone();
        sum(kept).await
    }
    async fn forget(&self) -> usize {
        let old = std::mem::take(&mut *self.kept.lock().unwrap());
        old.len()
    }
}

// ----- helpers --------------------------------------------------------------

/// Runs each named `async fn` body on the current-thread and on the multi-thread runtime.
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn current_thread() {
                super::$name().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                super::$name().await
            }
        }
    )*};
}

/// Awaits a promise, bounded.
async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// Gives a release that should NOT happen a fair chance to happen: a round
/// trip on `probe` (frames are ordered, so any Release sent before it has
/// been processed when it returns) plus a short bounded sleep for the
/// object's serving task to wind down.
async fn settle(probe: &HubProxy) {
    within("settle probe", probe.maybe(false)).await.expect("probe call");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn names(counters: &[CounterProxy]) -> Vec<String> {
    let mut out = Vec::new();
    for c in counters {
        out.push(within("name", c.name()).await.expect("name"));
    }
    out
}

async fn values(counters: &[CounterProxy]) -> Vec<u64> {
    let mut out = Vec::new();
    for c in counters {
        out.push(within("get", c.get()).await.expect("get"));
    }
    out
}

fn assert_send_sync_static<T: Send + Sync + 'static>() {}
fn assert_clone<T: Clone>() {}
fn assert_capability<T: Capability>() {}

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
    dropping_the_last_client_proxy_releases_the_server_object,
    dropping_the_servers_copies_releases_a_client_object,
    dropped_promises_leak_no_returned_capability,
    an_object_sent_a_hundred_times_is_released_once,
    an_object_passed_to_the_server_a_hundred_times_is_released_once,
    receiving_and_dropping_the_same_object_repeatedly_keeps_counts_right,
    disconnect_by_server_close_releases_everything,
    disconnect_by_client_close_releases_everything,
    disconnect_by_transport_loss_releases_everything,
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
