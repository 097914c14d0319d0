//! The embedded session store: logs in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::store::{bound_reason, check_continues, Entry, LogRead, LogState, SessionStore, StoreFuture};
use crate::RpcError;

/// The longest a waiter sleeps without a notification (a wake-up that raced
/// with the waiter's registration costs at most this).
const MAX_WAIT: Duration = Duration::from_millis(20);

struct Log {
    state: LogState,
    /// Entries after `state.acked`, oldest first; the first has id `first_id`.
    entries: VecDeque<Entry>,
    first_id: u64,
    changed: Arc<Notify>,
    /// The last append, acknowledgement or cancel (for the idle TTL).
    touched: Instant,
}

impl Log {
    fn new() -> Self {
        Log {
            state: LogState::default(),
            entries: VecDeque::new(),
            first_id: 1,
            changed: Arc::default(),
            touched: Instant::now(),
        }
    }

    /// Whether the consumer acknowledged the end: nothing is left to deliver.
    fn is_finished(&self) -> bool {
        self.state.ended && self.state.acked >= self.state.last
    }

    fn trim_to(&mut self, upto: u64) {
        while self.first_id <= upto && !self.entries.is_empty() {
            self.entries.pop_front();
            self.first_id += 1;
        }
        if self.entries.is_empty() {
            self.first_id = self.state.last + 1;
        }
    }
}

/// A [`SessionStore`] in this process's memory: the default, nothing to
/// install. It survives reconnects, not a restart of the process.
///
/// Memory held per log: the unacknowledged entries (bounded by the writer's
/// window) plus a few words. A log is removed once its end entry is
/// acknowledged; with [`with_ttl`](MemoryStore::with_ttl), a log idle (no
/// append, acknowledgement or cancel) for the TTL is removed too.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use rpc_core::resume::{MemoryStore, SessionStore};
///
/// let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
/// # let _ = store;
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    logs: Arc<Mutex<Logs>>,
    ttl: Option<Duration>,
}

#[derive(Default)]
struct Logs {
    by_key: HashMap<String, Log>,
    /// When the next sweep for idle logs is due (with a TTL).
    next_sweep: Option<Instant>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops a log idle (no append, acknowledgement or cancel) for `ttl`,
    /// so abandoned sessions do not stay forever; a consumer that comes
    /// back later gets a [`ResumeGap`](super::ResumeGap) error. Idle logs
    /// are swept at most every quarter of `ttl`, so one may outlive it by
    /// that much.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = rpc_core::resume::MemoryStore::new().with_ttl(Duration::from_secs(600));
    /// assert!(store.is_empty());
    /// ```
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How many logs the store holds (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether the store holds no log.
    pub fn is_empty(&self) -> bool {
        self.lock().by_key.is_empty()
    }

    /// Entries held across all logs, not yet acknowledged.
    pub fn held_entries(&self) -> usize {
        self.lock().by_key.values().map(|log| log.entries.len()).sum()
    }

    /// The logs, after dropping the idle ones if a sweep is due.
    fn lock(&self) -> MutexGuard<'_, Logs> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ttl) = self.ttl {
            let now = Instant::now();
            if logs.next_sweep.is_none_or(|due| now >= due) {
                logs.by_key.retain(|_, log| {
                    let keep = now.duration_since(log.touched) < ttl;
                    if !keep {
                        log.changed.notify_waiters();
                    }
                    keep
                });
                logs.next_sweep = Some(now + ttl / 4);
            }
        }
        logs
    }

    /// Runs `f` on the log under `key` (creating it first if `create`),
    /// renews its idle time, and removes it once its end is acknowledged.
    fn update<R>(&self, key: &str, create: bool, f: impl FnOnce(&mut Log) -> R) -> Option<R> {
        let mut logs = self.lock();
        if create && !logs.by_key.contains_key(key) {
            logs.by_key.insert(key.to_owned(), Log::new());
        }
        let log = logs.by_key.get_mut(key)?;
        let result = f(log);
        log.touched = Instant::now();
        log.changed.notify_waiters();
        if log.is_finished() {
            logs.by_key.remove(key);
        }
        Some(result)
    }
}

impl SessionStore for MemoryStore {
    fn append<'a>(&'a self, key: &'a str, entries: Vec<(u64, Entry)>) -> StoreFuture<'a, ()> {
        let result = self.update(key, true, |log| {
            check_continues(key, &log.state, &entries)?;
            for (id, entry) in entries {
                log.state.ended |= entry.is_end();
                log.state.last = id;
                log.entries.push_back(entry);
            }
            Ok(())
        });
        Box::pin(std::future::ready(result.unwrap_or(Ok(()))))
    }

    fn read_after<'a>(&'a self, key: &'a str, after: u64, max: usize) -> StoreFuture<'a, Option<LogRead>> {
        let logs = self.lock();
        let read = logs.by_key.get(key).map(|log| {
            if after >= log.state.last {
                return LogRead { entries: Vec::new(), first_kept: log.first_id };
            }
            let skip = after.saturating_sub(log.first_id - 1);
            let entries = log
                .entries
                .iter()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(max)
                .zip((log.first_id + skip)..)
                .map(|(entry, id)| (id, entry.clone()))
                .collect();
            LogRead { entries, first_kept: log.first_id }
        });
        Box::pin(std::future::ready(Ok(read)))
    }

    fn ack<'a>(&'a self, key: &'a str, upto: u64) -> StoreFuture<'a, ()> {
        self.update(key, false, |log| {
            let upto = upto.min(log.state.last);
            if upto > log.state.acked {
                log.state.acked = upto;
                log.trim_to(upto);
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn state<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<LogState>> {
        let state = self.lock().by_key.get(key).map(|log| log.state.clone());
        Box::pin(std::future::ready(Ok(state)))
    }

    fn cancel<'a>(&'a self, key: &'a str, reason: String) -> StoreFuture<'a, ()> {
        let reason = bound_reason(reason);
        self.update(key, false, |log| log.state.cancelled = Some(reason));
        Box::pin(std::future::ready(Ok(())))
    }

    fn discard<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.update(key, false, |log| {
            log.entries.clear();
            log.first_id = log.state.last + 1;
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn abort<'a>(&'a self, key: &'a str, id: u64) -> StoreFuture<'a, ()> {
        let result = self.update(key, true, |log| {
            check_continues(key, &log.state, &[(id, Entry::Aborted)])?;
            log.entries.clear();
            log.entries.push_back(Entry::Aborted);
            log.first_id = id;
            log.state.last = id;
            log.state.ended = true;
            Ok(())
        });
        Box::pin(std::future::ready(result.unwrap_or(Ok(()))))
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        if let Some(log) = self.lock().by_key.remove(key) {
            log.changed.notify_waiters();
        }
        Box::pin(std::future::ready(Ok::<(), RpcError>(())))
    }

    fn changed<'a>(&'a self, key: &'a str, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let notify = self.lock().by_key.get(key).map(|log| log.changed.clone());
        let timeout = timeout.min(MAX_WAIT);
        Box::pin(async move {
            match notify {
                Some(notify) => {
                    let _ = tokio::time::timeout(timeout, notify.notified()).await;
                }
                None => tokio::time::sleep(timeout).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> Entry {
        Entry::Item(vec![n])
    }

    #[tokio::test]
    async fn appends_must_continue_the_log_and_stop_at_its_end() {
        let store = MemoryStore::new();
        store.append("k", vec![(1, item(1)), (2, item(2))]).await.unwrap();
        let err = store.append("k", vec![(4, item(4))]).await.unwrap_err();
        assert!(err.message().contains("id 4 appended where 3 was due"), "{err}");
        store.append("k", vec![(3, Entry::Closed(None))]).await.unwrap();
        let err = store.append("k", vec![(4, item(4))]).await.unwrap_err();
        assert!(err.message().contains("has ended"), "{err}");
        assert!(store.state("k").await.unwrap().unwrap().ended);
    }

    #[tokio::test]
    async fn acks_trim_and_never_move_back() {
        let store = MemoryStore::new();
        store.append("k", (1..=5).map(|n| (u64::from(n), item(n))).collect()).await.unwrap();
        store.ack("k", 3).await.unwrap();
        store.ack("k", 1).await.unwrap();
        let state = store.state("k").await.unwrap().unwrap();
        assert_eq!((state.last, state.acked), (5, 3));
        assert_eq!(store.held_entries(), 2);
        let read = store.read_after("k", 0, 10).await.unwrap().unwrap();
        assert_eq!(read.first_kept, 4, "the reader can tell items 1..=3 are gone");
        assert_eq!(read.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 5]);
        store.ack("k", u64::MAX).await.unwrap();
        assert_eq!(store.state("k").await.unwrap().unwrap().acked, 5, "capped at the last id");
    }

    #[tokio::test]
    async fn reads_after_any_id_never_panic() {
        let store = MemoryStore::new();
        store.append("k", vec![(1, item(1)), (2, item(2))]).await.unwrap();
        for after in [0, 1, 2, 3, u64::MAX - 1, u64::MAX] {
            let read = store.read_after("k", after, 10).await.unwrap().unwrap();
            assert!(read.entries.iter().all(|(id, _)| *id > after));
        }
        assert_eq!(store.read_after("k", 1, 1).await.unwrap().unwrap().entries, vec![(2, item(2))]);
        assert!(store.read_after("missing", 0, 10).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn discard_drops_entries_but_keeps_positions() {
        let store = MemoryStore::new();
        store.append("k", vec![(1, item(1)), (2, item(2))]).await.unwrap();
        store.discard("k").await.unwrap();
        store.append("k", vec![(3, Entry::Aborted)]).await.unwrap();
        let read = store.read_after("k", 0, 10).await.unwrap().unwrap();
        assert_eq!(read.entries, vec![(3, Entry::Aborted)]);
        assert_eq!(read.first_kept, 3);
        store.remove("k").await.unwrap();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn abort_drops_entries_and_ends_in_one_change() {
        let store = MemoryStore::new();
        store.append("k", vec![(1, item(1)), (2, item(2))]).await.unwrap();
        store.ack("k", 1).await.unwrap();
        store.abort("k", 3).await.unwrap();
        let read = store.read_after("k", 1, 10).await.unwrap().unwrap();
        assert_eq!((read.entries, read.first_kept), (vec![(3, Entry::Aborted)], 3));
        assert!(store.state("k").await.unwrap().unwrap().ended);
        assert!(store.abort("k", 4).await.unwrap_err().message().contains("has ended"));
        store.ack("k", 3).await.unwrap();
        assert!(store.is_empty(), "the delivered abort removes the log");
    }
}
