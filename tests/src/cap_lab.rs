//! Shared by the `cap_*` tests: the `Counter`, `Listener` and `Hub`
//! interfaces (capabilities inside structs, enums, `Vec`s and `Option`s),
//! their implementations with drop tracking, and bounded helpers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Capability, RpcError};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

use crate::{DropCounter, DropToken};

/// Bound on any single wait for a reply in the `cap_*` tests.
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

pub struct CounterImpl {
    pub name: String,
    pub value: AtomicU64,
    pub _token: Option<DropToken>,
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

pub fn counter(name: &str, value: u64) -> CounterProxy {
    CounterProxy::new(CounterImpl { name: name.into(), value: AtomicU64::new(value), _token: None })
}

pub fn tracked(name: &str, value: u64, drops: &DropCounter) -> CounterProxy {
    CounterProxy::new(CounterImpl { name: name.into(), value: AtomicU64::new(value), _token: Some(drops.token()) })
}

pub struct Recorder {
    pub events: Arc<Mutex<Vec<String>>>,
    pub _token: Option<DropToken>,
}

impl Listener for Recorder {
    async fn notify(&self, event: String) -> u64 {
        let mut events = self.events.lock().unwrap();
        events.push(event);
        events.len() as u64
    }
}

pub struct HubImpl {
    /// Tokens of the tracked counters this hub makes.
    pub drops: DropCounter,
    pub _token: Option<DropToken>,
    pub shared: Mutex<Option<CounterProxy>>,
    pub kept: Mutex<Vec<CounterProxy>>,
    pub listeners: Mutex<Vec<ListenerProxy>>,
    pub created: AtomicU64,
}

impl HubImpl {
    pub fn new(drops: &DropCounter) -> Self {
        HubImpl {
            drops: drops.clone(),
            _token: None,
            shared: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        }
    }

    pub fn shared(&self) -> CounterProxy {
        self.shared.lock().unwrap().get_or_insert_with(|| tracked("shared", 7, &self.drops)).clone()
    }
}

pub async fn sum(counters: impl IntoIterator<Item = CounterProxy>) -> Result<u64, HubError> {
    let mut total = 0;
    for counter in counters {
        total += counter.get().await?;
    }
    Ok(total)
}

pub fn holder_counters(holder: &Holder) -> Vec<CounterProxy> {
    std::iter::once(holder.counter.clone()).chain(holder.extra.iter().cloned()).collect()
}

pub fn nested_counters(nested: &Nested) -> Vec<CounterProxy> {
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

pub fn make_nested(base: u64) -> Nested {
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
#[macro_export]
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
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// Gives a release that should NOT happen a fair chance to happen: a round
/// trip on `probe` (frames are ordered, so any Release sent before it has
/// been processed when it returns) plus a short bounded sleep for the
/// object's serving task to wind down.
pub async fn settle(probe: &HubProxy) {
    within("settle probe", probe.maybe(false)).await.expect("probe call");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

pub async fn names(counters: &[CounterProxy]) -> Vec<String> {
    let mut out = Vec::new();
    for c in counters {
        out.push(within("name", c.name()).await.expect("name"));
    }
    out
}

pub async fn values(counters: &[CounterProxy]) -> Vec<u64> {
    let mut out = Vec::new();
    for c in counters {
        out.push(within("get", c.get()).await.expect("get"));
    }
    out
}

pub fn assert_send_sync_static<T: Send + Sync + 'static>() {}
pub fn assert_clone<T: Clone>() {}
pub fn assert_capability<T: Capability>() {}
