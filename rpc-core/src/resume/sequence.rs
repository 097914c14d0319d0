//! The two ends of a resumable sequence: [`ResumableWriter`] appends to a
//! log in a [`SessionStore`]; [`ResumableSequence`] reads it through any
//! server offering [`Resume`](super::Resume), across reconnects.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::reconnect::Reconnecting;
use super::server::{Delivery, ResumeProxy};
use super::store::{Entry, SessionStore};
use crate::{Capability, ErrorKind, RpcError, Sequence};

/// The default window of a [`ResumableWriter`]: entries kept unacknowledged.
pub const DEFAULT_RESUME_WINDOW: u32 = 1024;
/// How long a writer waiting for room sleeps between looks at the store.
const ROOM_WAIT: Duration = Duration::from_millis(200);
/// How long a reader that read the end waits for its last acknowledgement.
const END_ACK_WAIT: Duration = Duration::from_secs(1);
/// The first pause before a failed acknowledgement is sent again; it doubles
/// up to [`ACK_RETRY_MAX`].
const ACK_RETRY_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between two tries of a failed acknowledgement.
const ACK_RETRY_MAX: Duration = Duration::from_secs(1);

/// The producer's end of a resumable sequence: every item gets the next id
/// and is appended to the log `key` in a [`SessionStore`], where it stays
/// until the consumer acknowledges it. The store holds at most `window`
/// unacknowledged entries: [`flush`](Self::flush) waits for room.
///
/// Opening a writer on a log that exists continues it (a restarted server
/// process picks up where the last one stopped).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use rpc_core::resume::{MemoryStore, ResumableWriter, SessionStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let store = Arc::new(MemoryStore::new());
/// let mut writer = ResumableWriter::<String>::open(store.clone(), "room", 16).await?;
/// assert_eq!(writer.write(&"hello".to_string())?, 1);
/// writer.flush().await?;
/// writer.close(None).await?;
/// assert_eq!(store.state("room").await?.unwrap().last, 2); // the item and the end
/// # Ok(())
/// # }
/// ```
pub struct ResumableWriter<T> {
    store: Arc<dyn SessionStore>,
    key: String,
    window: u32,
    last: u64,
    buffered: Vec<(u64, Entry)>,
    cancelled: Option<String>,
    finished: bool,
    _items: PhantomData<fn(T)>,
}

impl<T: Serialize> ResumableWriter<T> {
    /// Opens (or continues) the log `key`, keeping at most `window`
    /// unacknowledged entries.
    ///
    /// # Errors
    ///
    /// `Aborted` if the log already ended; a store failure.
    pub async fn open(store: Arc<dyn SessionStore>, key: impl Into<String>, window: u32) -> Result<Self, RpcError> {
        let key = key.into();
        let state = store.state(&key).await?.unwrap_or_default();
        if state.ended {
            return Err(RpcError::new(ErrorKind::Aborted, format!("resumable sequence '{key}' has already ended")));
        }
        let writer = ResumableWriter {
            store,
            key,
            window: window.max(1),
            last: state.last,
            buffered: Vec::new(),
            cancelled: state.cancelled,
            finished: false,
            _items: PhantomData,
        };
        Ok(writer)
    }

    /// The log's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The id of the last item written (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.last
    }

    /// Buffers `item` under the next id and returns the id; [`flush`](Self::flush)
    /// stores it.
    ///
    /// # Errors
    ///
    /// `Cancelled` once the consumer cancelled; `LimitExceeded` if a whole
    /// window is buffered unflushed; `Serialization` if the item cannot be encoded.
    pub fn write(&mut self, item: &T) -> Result<u64, RpcError> {
        if let Some(reason) = &self.cancelled {
            return Err(RpcError::cancelled(reason.clone()));
        }
        if self.buffered.len() >= self.window as usize {
            return Err(RpcError::limit(format!("{} items written without a flush (the window)", self.window)));
        }
        let bytes = postcard::to_allocvec(item).map_err(|e| RpcError::serialization(e.to_string()))?;
        self.last += 1;
        self.buffered.push((self.last, Entry::Item(bytes)));
        Ok(self.last)
    }

    /// Writes `item` and flushes: returns once it is stored and there is room.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write) and [`flush`](Self::flush).
    pub async fn send(&mut self, item: &T) -> Result<u64, RpcError> {
        let id = self.write(item)?;
        self.flush().await?;
        Ok(id)
    }

    /// Waits for room in the window, then stores the buffered items.
    ///
    /// # Errors
    ///
    /// `Cancelled` with the consumer's reason; `Protocol` if the store lost
    /// the log (a restarted store without persistence); a store failure,
    /// after which the items stay buffered and the next flush stores them.
    pub async fn flush(&mut self) -> Result<(), RpcError> {
        self.wait_for_room().await?;
        self.store_buffered().await
    }

    /// Appends the buffered entries. They stay buffered until the store took
    /// them: after a failed append the next flush tries again (dropping any
    /// the store did record before it reported the failure).
    async fn store_buffered(&mut self) -> Result<(), RpcError> {
        let Some(&(first, _)) = self.buffered.first() else {
            return Ok(());
        };
        match self.store.state(&self.key).await? {
            None if first > 1 => return Err(self.lost()),
            Some(state) if state.last >= first => self.buffered.retain(|(id, _)| *id > state.last),
            _ => {}
        }
        if self.buffered.is_empty() {
            return Ok(());
        }
        self.store.append(&self.key, self.buffered.clone()).await?;
        self.buffered.clear();
        Ok(())
    }

    fn lost(&self) -> RpcError {
        RpcError::protocol(format!(
            "the session store lost the log of '{}' (was it restarted without persistence?)",
            self.key
        ))
    }

    async fn wait_for_room(&mut self) -> Result<(), RpcError> {
        let pending = self.buffered.len() as u64;
        let stored = self.last - pending;
        loop {
            let state = match self.store.state(&self.key).await? {
                Some(state) => state,
                None if stored == 0 => return Ok(()),
                None => return Err(self.lost()),
            };
            if let Some(reason) = state.cancelled {
                self.cancelled = Some(reason.clone());
                return Err(RpcError::cancelled(reason));
            }
            if stored - state.acked.min(stored) + pending <= u64::from(self.window) {
                return Ok(());
            }
            self.store.changed(&self.key, ROOM_WAIT).await;
        }
    }

    /// Stores the buffered items and the end: the consumer reads them, then
    /// the end (`None`) or `error`. Returns once the end is stored, without
    /// waiting for the consumer.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush); the writer is then dropped as an abort, so
    /// the log still ends (with `Aborted`, not the end asked for).
    pub async fn close(mut self, error: Option<RpcError>) -> Result<(), RpcError> {
        self.last += 1;
        self.buffered.push((self.last, Entry::Closed(error)));
        // If the end cannot be stored, dropping the writer aborts the log instead.
        self.store_buffered().await?;
        self.finished = true;
        Ok(())
    }

    /// Ends the sequence at once: unacknowledged items are dropped from the
    /// store and the consumer's next read fails with `Aborted`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn abort(mut self) -> Result<(), RpcError> {
        self.finished = true;
        abort_log(&*self.store, &self.key, self.last - self.buffered.len() as u64).await
    }
}

/// Drops the log's entries and appends the abort after the last id the
/// store holds (not the writer's count, which a failed append may have left
/// ahead of it). A log that already ended is left as it is; a log the store
/// lost (the writer had stored entries, the store has none) is not recreated.
async fn abort_log(store: &dyn SessionStore, key: &str, stored: u64) -> Result<(), RpcError> {
    let last = match store.state(key).await? {
        Some(state) if state.ended => return Ok(()),
        Some(state) => state.last,
        None if stored > 0 => {
            return Err(RpcError::protocol(format!("the session store lost the log of '{key}'; nothing to abort")))
        }
        None => 0,
    };
    // One change in the store: the unacknowledged entries go and the end is written together.
    store.abort(key, last + 1).await
}

impl<T> Drop for ResumableWriter<T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // A writer dropped without close counts as an abort, as for `SequenceWriter`.
        let (store, key, stored) =
            (self.store.clone(), std::mem::take(&mut self.key), self.last - self.buffered.len() as u64);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { drop(abort_log(&*store, &key, stored).await) });
        }
    }
}

/// How a [`ResumableSequence`] reads.
#[derive(Clone, Debug)]
pub struct ResumeOptions {
    /// Capacity of each underlying [`Sequence`] (items in flight and buffered).
    pub capacity: u32,
    /// Batch size of each underlying [`Sequence`].
    pub batch: u32,
    /// Acknowledge after this many items at most (and whenever caught up).
    pub ack_every: u32,
    /// Give up after this many reopen attempts in a row that delivered nothing.
    pub max_retries: u32,
}

impl Default for ResumeOptions {
    fn default() -> Self {
        ResumeOptions {
            capacity: crate::DEFAULT_CAPACITY,
            batch: crate::DEFAULT_BATCH,
            ack_every: 256,
            max_retries: 50,
        }
    }
}

/// The sequence being read now, with the service and the call feeding it
/// (dropping the call stops the server's pump).
struct Current {
    service: ResumeProxy,
    sequence: Sequence<Delivery>,
    acks: Acks,
    _pump: crate::Promise<(), RpcError>,
}

/// The acknowledgements sent over one opened sequence: at most one call in
/// flight, and a failed one is sent again (with a bounded backoff) until the
/// store recorded it, so that one lost acknowledgement cannot leave the
/// producer waiting for room while the reader waits for items.
struct Acks {
    positions: Arc<Mutex<AckPositions>>,
    task: Option<tokio::task::AbortHandle>,
}

struct AckPositions {
    /// The position the reader asked to acknowledge.
    wanted: u64,
    /// The position the store recorded.
    recorded: u64,
    /// Whether a task is sending acknowledgements.
    sending: bool,
}

impl Acks {
    /// Acknowledgements of a sequence opened after `from` (which the
    /// `resume` call itself acknowledges).
    fn new(from: u64) -> Self {
        let positions = AckPositions { wanted: from, recorded: from, sending: false };
        Acks { positions: Arc::new(Mutex::new(positions)), task: None }
    }

    fn positions(&self) -> MutexGuard<'_, AckPositions> {
        self.positions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last position asked for.
    fn wanted(&self) -> u64 {
        self.positions().wanted
    }

    /// Asks to acknowledge everything up to `upto`; starts the sending task
    /// unless it is running (it picks the new position up).
    fn send(&mut self, service: &ResumeProxy, key: &str, upto: u64) {
        {
            let mut positions = self.positions();
            if upto <= positions.wanted {
                return;
            }
            positions.wanted = upto;
            if positions.sending {
                return;
            }
            positions.sending = true;
        }
        let task = tokio::spawn(send_acks(service.clone(), key.to_owned(), self.positions.clone()));
        self.task = Some(task.abort_handle());
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Sends acknowledgements until the store recorded the wanted position;
/// stops when the connection is gone (the next `resume` acknowledges).
async fn send_acks(service: ResumeProxy, key: String, positions: Arc<Mutex<AckPositions>>) {
    let lock = || positions.lock().unwrap_or_else(PoisonError::into_inner);
    let mut pause = ACK_RETRY_FIRST;
    loop {
        let upto = {
            let mut positions = lock();
            if positions.recorded >= positions.wanted {
                positions.sending = false;
                return;
            }
            positions.wanted
        };
        match service.ack(key.clone(), upto).await {
            Ok(()) => {
                let mut positions = lock();
                positions.recorded = positions.recorded.max(upto);
                pause = ACK_RETRY_FIRST;
            }
            Err(err) if err.kind() == ErrorKind::Disconnected => {
                lock().sending = false;
                return;
            }
            Err(err) => {
                tracing::debug!(target: "rpc_core::resume", key, upto, "acknowledgement failed, sending it again: {err}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACK_RETRY_MAX);
            }
        }
    }
}

type PickService<C> = Arc<dyn Fn(&C) -> ResumeProxy + Send + Sync>;

/// The consumer's end of a resumable sequence: reads the log `key` through a
/// [`Reconnecting`] link, and after a loss resumes after the last id it
/// returned, on whatever server the link reaches next. Every item comes
/// exactly once, in order; an item that cannot be had any more ends the
/// sequence with a [`ResumeGap`](super::ResumeGap) error naming the ids.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use rpc_core::resume::{Backoff, MemoryStore, Reconnecting, ResumableSequence, ResumableWriter, ResumeProxy, ResumeServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let store = Arc::new(MemoryStore::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let served = store.clone();
/// tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(served.clone()))));
///
/// let mut writer = ResumableWriter::<u32>::open(store.clone(), "feed", 64).await?;
/// for n in 1..=3 {
///     writer.write(&n)?;
/// }
/// writer.close(None).await?;
///
/// let link = Reconnecting::<ResumeProxy>::tcp(addr, Backoff::default());
/// let mut feed = ResumableSequence::<u32>::new(&link, "feed", |service: &ResumeProxy| service.clone());
/// let mut got = Vec::new();
/// while let Some(n) = feed.read().await? {
///     got.push(n);
/// }
/// assert_eq!(got, [1, 2, 3]);
/// # Ok(())
/// # }
/// ```
pub struct ResumableSequence<T, C = ResumeProxy> {
    link: Reconnecting<C>,
    pick: PickService<C>,
    key: String,
    options: ResumeOptions,
    last: u64,
    current: Option<Current>,
    ended: Option<Result<(), RpcError>>,
    reconnects: u64,
    _items: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned, C: Capability> ResumableSequence<T, C> {
    /// Reads the log `key` from the start, through `link`; `pick` finds the
    /// [`Resume`](super::Resume) service on the link's bootstrap.
    pub fn new(
        link: &Reconnecting<C>,
        key: impl Into<String>,
        pick: impl Fn(&C) -> ResumeProxy + Send + Sync + 'static,
    ) -> Self {
        Self::resume_after(link, key, 0, pick)
    }

    /// Like [`new`](Self::new), for a consumer that already has every item up
    /// to `after` (e.g. remembered across a restart of the client).
    pub fn resume_after(
        link: &Reconnecting<C>,
        key: impl Into<String>,
        after: u64,
        pick: impl Fn(&C) -> ResumeProxy + Send + Sync + 'static,
    ) -> Self {
        ResumableSequence {
            link: link.clone(),
            pick: Arc::new(pick),
            key: key.into(),
            options: ResumeOptions::default(),
            last: after,
            current: None,
            ended: None,
            reconnects: 0,
            _items: PhantomData,
        }
    }

    /// Uses `options` (window, batch, acknowledgement batching, retries).
    pub fn with_options(mut self, options: ResumeOptions) -> Self {
        self.options = options;
        self
    }

    /// The id of the last item returned (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.last
    }

    /// How many times the sequence was reopened after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next item; `None` once the producer closed the sequence.
    ///
    /// # Errors
    ///
    /// The producer's error (`close(Some(err))`), `Aborted` if it aborted, a
    /// [`ResumeGap`](super::ResumeGap) if items are gone, the link's error once it gave up
    /// reconnecting, or a store failure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken from the underlying sequence and
    /// returned in one step, so a read dropped in `tokio::select!` loses nothing.
    pub async fn read(&mut self) -> Result<Option<T>, RpcError> {
        let mut failures = 0u32;
        loop {
            if let Some(ended) = &self.ended {
                return ended.clone().map(|()| None);
            }
            if self.current.is_none() {
                self.open().await?;
            }
            let sequence = &mut self.current.as_mut().expect("opened above").sequence;
            let next = match sequence.read().now_or_never() {
                Some(next) => next,
                None => {
                    self.ack_now();
                    let sequence = &mut self.current.as_mut().expect("opened above").sequence;
                    sequence.read().await
                }
            };
            match next {
                Ok(Some(delivery)) => {
                    failures = 0;
                    if let Some(item) = self.deliver(delivery)? {
                        return Ok(Some(item));
                    }
                    if self.ended.is_some() {
                        self.ack_end().await;
                    }
                }
                Ok(None) => return Err(RpcError::protocol("a resumed sequence ended without its end entry")),
                Err(err) if err.kind() == ErrorKind::Disconnected => {
                    failures += 1;
                    self.lost(err, failures).await?;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Cancels the sequence: the producer's next flush fails with `reason`.
    ///
    /// # Errors
    ///
    /// If the cancel could not be recorded (no connection, store failure).
    pub async fn cancel(mut self, reason: &str) -> Result<(), RpcError> {
        self.current = None;
        let mut failures = 0;
        loop {
            let service = (self.pick)(&self.link.connected().await?);
            match service.cancel(self.key.clone(), reason.to_owned()).await {
                Err(err) if err.kind() == ErrorKind::Disconnected => {
                    failures += 1;
                    if failures > self.options.max_retries {
                        return Err(err);
                    }
                    // The link may not have noticed the loss yet.
                    tokio::time::sleep(Duration::from_millis(2) * failures.min(50)).await;
                }
                done => return done,
            }
        }
    }

    async fn open(&mut self) -> Result<(), RpcError> {
        let (_, bootstrap) = self.link.connected_with_generation(0).await?;
        let service = (self.pick)(&bootstrap);
        let (writer, sequence) = Sequence::channel();
        sequence.set_capacity(self.options.capacity);
        sequence.set_batch_size(self.options.batch);
        let pump = service.resume(self.key.clone(), self.last, writer);
        let acks = Acks::new(self.last);
        self.current = Some(Current { service, sequence, acks, _pump: pump });
        Ok(())
    }

    /// Takes one delivery: an item to return, or an end (stored in `ended`).
    fn deliver(&mut self, delivery: Delivery) -> Result<Option<T>, RpcError> {
        if delivery.id <= self.last {
            return Ok(None); // already returned before a reconnect
        }
        // An abort drops every unacknowledged entry: it may skip ids.
        if delivery.id != self.last.saturating_add(1) && delivery.entry != Entry::Aborted {
            let gap = super::ResumeGap { key: self.key.clone(), after: self.last, first_kept: Some(delivery.id) };
            return Err(gap.into_error());
        }
        self.last = delivery.id;
        let item = match delivery.entry {
            Entry::Item(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| RpcError::serialization(format!("resumed item {}: {e}", delivery.id)))?,
            end => {
                self.ended = Some(match end {
                    Entry::Closed(None) => Ok(()),
                    Entry::Closed(Some(err)) => Err(err),
                    _ => Err(RpcError::new(ErrorKind::Aborted, "the producer aborted the sequence")),
                });
                return Ok(None);
            }
        };
        let wanted = self.current.as_ref().map_or(self.last, |current| current.acks.wanted());
        if self.last.saturating_sub(wanted) >= u64::from(self.options.ack_every.max(1)) {
            self.ack_now();
        }
        Ok(Some(item))
    }

    /// Acknowledges the end and waits (briefly) for it to be recorded, so
    /// that the store can let go of the log's last entries even if the
    /// reader is dropped at once.
    async fn ack_end(&mut self) {
        if let Some(Current { service, .. }) = &self.current {
            let ack = service.ack(self.key.clone(), self.last);
            let _ = tokio::time::timeout(END_ACK_WAIT, ack).await;
        }
    }

    /// Acknowledges everything returned so far, if not asked for already.
    fn ack_now(&mut self) {
        if let Some(Current { service, acks, .. }) = &mut self.current {
            acks.send(service, &self.key, self.last);
        }
    }

    async fn lost(&mut self, err: RpcError, failures: u32) -> Result<(), RpcError> {
        tracing::debug!(target: "rpc_core::resume", key = self.key, last = self.last, "sequence lost: {err}");
        if failures > self.options.max_retries {
            return Err(RpcError::disconnected(format!(
                "gave up resuming '{}' after {failures} attempts without progress: {}",
                self.key,
                err.message()
            )));
        }
        self.current = None;
        self.reconnects += 1;
        // The link may not have noticed the loss yet; give it a moment, more each time.
        tokio::time::sleep(Duration::from_millis(2) * failures.min(50)).await;
        Ok(())
    }
}
