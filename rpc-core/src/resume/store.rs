//! The session store: where a resumable sequence's item log and its
//! acknowledgement position live, so that any server process holding the
//! same store can serve a consumer that comes back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ErrorKind, RpcError};

/// A boxed future, as the store's methods return (the trait stays object safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RpcError>> + Send + 'a>>;

/// One entry of a resumable sequence's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// An item: the postcard bytes of the producer's value.
    Item(Vec<u8>),
    /// The producer closed the sequence, with `Some(error)` for `close(Some(err))`.
    Closed(Option<RpcError>),
    /// The producer aborted (or dropped its writer without closing).
    Aborted,
}

impl Entry {
    /// Whether this entry ends the sequence.
    pub fn is_end(&self) -> bool {
        !matches!(self, Entry::Item(_))
    }
}

/// What a store knows of one sequence, besides its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The id of the last entry appended (0: none yet; ids start at 1).
    pub last: u64,
    /// Every entry up to and including this id was acknowledged (and may be trimmed).
    pub acked: u64,
    /// Set once the consumer cancelled, with its reason.
    pub cancelled: Option<String>,
    /// Whether an end (closed, closed with error, aborted) was appended.
    pub ended: bool,
}

/// Entries read from a store after some id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRead {
    /// `(id, entry)` in id order, each id one more than the one before.
    pub entries: Vec<(u64, Entry)>,
    /// The smallest id the store still holds, or `last + 1` when it holds none.
    pub first_kept: u64,
}

/// Where resumable sequences keep their state between connections.
///
/// A log is identified by a key (a string the application chooses, e.g. a
/// session or room id). Ids start at 1 and grow by one per entry; an entry
/// is kept until it is acknowledged. Implementations: [`MemoryStore`]
/// (in this process) and, with the `redis` feature, `RedisStore` (shared by
/// every process that points at the same Redis).
///
/// [`MemoryStore`]: crate::resume::MemoryStore
///
/// # Examples
///
/// ```
/// use rpc_core::resume::{Entry, MemoryStore, SessionStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let store = MemoryStore::new();
/// store.append("room", vec![(1, Entry::Item(vec![7])), (2, Entry::Item(vec![8]))]).await?;
/// store.ack("room", 1).await?;
/// let read = store.read_after("room", 1, 10).await?.expect("the log exists");
/// assert_eq!(read.entries, vec![(2, Entry::Item(vec![8]))]);
/// assert_eq!(read.first_kept, 2);
/// # Ok(())
/// # }
/// ```
pub trait SessionStore: Send + Sync + 'static {
    /// Appends entries; their ids must continue the log (`last + 1`, ...).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] if an id does not continue the log or the log
    /// has ended; a store failure otherwise (see [`store_error`]).
    fn append<'a>(&'a self, key: &'a str, entries: Vec<(u64, Entry)>) -> StoreFuture<'a, ()>;

    /// Up to `max` entries with ids greater than `after`, or `None` if the
    /// store has no log under `key`.
    ///
    /// # Errors
    ///
    /// A store failure.
    fn read_after<'a>(&'a self, key: &'a str, after: u64, max: usize) -> StoreFuture<'a, Option<LogRead>>;

    /// Records that the consumer has every entry up to `upto`; those
    /// entries may be dropped. Acknowledgements never move backwards.
    /// Once the end entry is acknowledged the whole log is removed: the
    /// sequence is delivered, and the key may start a new log.
    ///
    /// # Errors
    ///
    /// A store failure.
    fn ack<'a>(&'a self, key: &'a str, upto: u64) -> StoreFuture<'a, ()>;

    /// The log's positions, or `None` if there is no log under `key`.
    ///
    /// # Errors
    ///
    /// A store failure.
    fn state<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<LogState>>;

    /// Records the consumer's cancel; the producer sees it on its next flush.
    /// On a key with no log it does nothing (a peer cannot create logs by
    /// cancelling); the reason is cut to [`MAX_CANCEL_REASON`] bytes.
    ///
    /// # Errors
    ///
    /// A store failure.
    fn cancel<'a>(&'a self, key: &'a str, reason: String) -> StoreFuture<'a, ()>;

    /// Drops every entry but keeps nothing else: used by abort.
    ///
    /// # Errors
    ///
    /// A store failure.
    fn discard<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// Drops every entry and appends `Entry::Aborted` under `id`, as one
    /// change. The default calls [`discard`](Self::discard) then
    /// [`append`](Self::append); a store shared between processes should
    /// override it to do both atomically.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    fn abort<'a>(&'a self, key: &'a str, id: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.discard(key).await?;
            self.append(key, vec![(id, Entry::Aborted)]).await
        })
    }

    /// Removes the log and its state entirely.
    ///
    /// # Errors
    ///
    /// A store failure.
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// Waits until the log may have changed (an append, an ack, a cancel)
    /// or `timeout` passes, whichever is first. The default just sleeps a
    /// little (polling); a store that can be notified does better.
    fn changed<'a>(&'a self, key: &'a str, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = key;
        Box::pin(tokio::time::sleep(timeout.min(Duration::from_millis(5))))
    }
}

/// The longest cancel reason a store keeps, in bytes; longer ones are cut
/// (at a character boundary).
pub const MAX_CANCEL_REASON: usize = 1024;

/// `reason` cut to at most [`MAX_CANCEL_REASON`] bytes.
pub(crate) fn bound_reason(mut reason: String) -> String {
    if reason.len() > MAX_CANCEL_REASON {
        let mut end = MAX_CANCEL_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// The error a store reports when it cannot do its job (unreachable,
/// refused): kind [`ErrorKind::Aborted`], message starting with
/// `session store:`. It is not `Disconnected`, so a consumer does not
/// mistake it for a dropped connection and retry forever.
///
/// # Examples
///
/// ```
/// let err = rpc_core::resume::store_error("connection refused");
/// assert!(err.message().starts_with("session store:"));
/// ```
pub fn store_error(detail: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorKind::Aborted, format!("session store: {detail}"))
}

/// Checks that `entries` continue a log whose last id is `last` and that
/// nothing follows an end. Shared by the store implementations.
pub(crate) fn check_continues(key: &str, state: &LogState, entries: &[(u64, Entry)]) -> Result<(), RpcError> {
    let mut ended = state.ended;
    for (expected, (id, entry)) in (state.last + 1..).zip(entries) {
        if ended {
            return Err(RpcError::protocol(format!("resumable sequence '{key}' has ended; nothing may follow")));
        }
        if *id != expected {
            return Err(RpcError::protocol(format!(
                "resumable sequence '{key}': id {id} appended where {expected} was due"
            )));
        }
        ended = entry.is_end();
    }
    Ok(())
}
