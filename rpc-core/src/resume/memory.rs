//! The embedded session store: logs in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::store::{check_continues, Entry, LogRead, LogState, SessionStore, StoreFuture};
use crate::RpcError;

/// The longest a waiter sleeps without a notification (a wake-up that raced
/// with the waiter's registration costs at most this).
const MAX_WAIT: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Log {
    state: LogState,
    /// Entries after `state.acked`, oldest first; the first has id `first_id`.
    entries: VecDeque<Entry>,
    first_id: u64,
    changed: Arc<Notify>,
}

impl Log {
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
/// window) plus a few words.
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
    logs: Arc<Mutex<HashMap<String, Log>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many logs the store holds (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no log.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Entries held across all logs, not yet acknowledged.
    pub fn held_entries(&self) -> usize {
        self.lock().values().map(|log| log.entries.len()).sum()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Log>> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<R>(&self, key: &str, create: bool, f: impl FnOnce(&mut Log) -> R) -> Option<R> {
        let mut logs = self.lock();
        if create && !logs.contains_key(key) {
            logs.insert(key.to_owned(), Log { first_id: 1, ..Log::default() });
        }
        let log = logs.get_mut(key)?;
        let result = f(log);
        log.changed.notify_waiters();
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
        let read = logs.get(key).map(|log| {
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
        let state = self.lock().get(key).map(|log| log.state.clone());
        Box::pin(std::future::ready(Ok(state)))
    }

    fn cancel<'a>(&'a self, key: &'a str, reason: String) -> StoreFuture<'a, ()> {
        self.update(key, true, |log| log.state.cancelled = Some(reason));
        Box::pin(std::future::ready(Ok(())))
    }

    fn discard<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.update(key, false, |log| {
            log.entries.clear();
            log.first_id = log.state.last + 1;
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        if let Some(log) = self.lock().remove(key) {
            log.changed.notify_waiters();
        }
        Box::pin(std::future::ready(Ok::<(), RpcError>(())))
    }

    fn changed<'a>(&'a self, key: &'a str, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let notify = self.lock().get(key).map(|log| log.changed.clone());
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
}
