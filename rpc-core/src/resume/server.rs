//! The server side of resumption: the `Resume` interface any server can
//! offer, served from a [`SessionStore`] so that it holds no session state
//! of its own.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{Entry, SessionStore};
use crate::{eventual, RpcError, SequenceWriter};

/// Entries read from the store per round.
const READ_BATCH: usize = 256;
/// How long an idle pump waits for the log to change before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// One entry of a resumable sequence on its way to the consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The entry's id in its log (1, 2, ...).
    pub id: u64,
    /// The item or the end.
    pub entry: Entry,
}

/// The interface a server offers for resumable sequences. Serve it with
/// [`ResumeServer`]; reach it from the application's bootstrap (a method
/// returning `ResumeProxy`) or as a bootstrap of its own.
#[eventual]
pub trait Resume {
    /// Writes into `into` the entries of the log `key` with ids above
    /// `after`, then new ones as they are appended, until the end entry;
    /// returns when done. Resuming after `after` also acknowledges every
    /// entry up to it. A log that no longer holds the entry after `after`
    /// (or no longer exists) ends the sequence with a [`ResumeGap`] error,
    /// unless its first kept entry is an abort, which is delivered as it is.
    /// An `after` beyond the log's last id is refused with `Protocol` and
    /// acknowledges nothing. The consumer passes the
    /// writer (rather than taking a returned sequence) so that its window is
    /// set before the first item flows; dropping the call stops the pump.
    async fn resume(&self, key: String, after: u64, into: SequenceWriter<Delivery>) -> Result<(), RpcError>;

    /// Acknowledges every entry of `key` up to `upto`: the store may drop them
    /// and the producer may write that many more.
    async fn ack(&self, key: String, upto: u64) -> Result<(), RpcError>;

    /// Cancels the sequence `key` from the consumer's side; its producer sees
    /// the reason on its next flush.
    async fn cancel(&self, key: String, reason: String) -> Result<(), RpcError>;
}

/// Serves [`Resume`] from a [`SessionStore`]. Holds nothing per session:
/// any number of processes sharing one store serve the same sessions.
///
/// Keys are names, not capabilities: a peer holding a [`ResumeServer::new`]
/// capability can name any log in the store. Hand each client a capability
/// scoped to its own session with [`ResumeServer::only`], or use
/// unguessable keys.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use rpc_core::resume::{MemoryStore, ResumeProxy, ResumeServer};
///
/// let store = Arc::new(MemoryStore::new());
/// let service = ResumeProxy::new(ResumeServer::new(store));
/// # let _ = service;
/// ```
#[derive(Clone)]
pub struct ResumeServer {
    store: Arc<dyn SessionStore>,
    only: Option<Arc<str>>,
}

impl ResumeServer {
    /// A server over `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        ResumeServer { store, only: None }
    }

    /// A server over `store` that serves the log `key` and refuses every
    /// other key with `Unimplemented`: a capability for one session.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rpc_core::{resume::{MemoryStore, ResumeProxy, ResumeServer}, ErrorKind};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let alice = ResumeProxy::new(ResumeServer::only(Arc::new(MemoryStore::new()), "alice"));
    /// assert!(alice.ack("alice".into(), 0).await.is_ok());
    /// let refused = alice.ack("bob".into(), 0).await.unwrap_err();
    /// // The handler's own error comes back as the application value.
    /// let refused: rpc_core::RpcError = refused.application_value().expect("the handler's error");
    /// assert_eq!(refused.kind(), ErrorKind::Unimplemented);
    /// # }
    /// ```
    pub fn only(store: Arc<dyn SessionStore>, key: &str) -> Self {
        ResumeServer { store, only: Some(key.into()) }
    }

    fn check(&self, key: &str) -> Result<(), RpcError> {
        match &self.only {
            Some(only) if **only != *key => Err(RpcError::unimplemented(format!(
                "this Resume capability serves the sequence '{only}', not '{key}'"
            ))),
            _ => Ok(()),
        }
    }
}

impl Resume for ResumeServer {
    async fn resume(&self, key: String, after: u64, mut into: SequenceWriter<Delivery>) -> Result<(), RpcError> {
        if let Err(err) = self.check(&key) {
            let _ = into.close(Some(err.clone())).await;
            return Err(err);
        }
        match pump(&*self.store, &key, after, &mut into).await {
            Ok(()) => into.close(None).await,
            Err(err) if err.kind() == crate::ErrorKind::Disconnected => {
                into.abort();
                Err(err)
            }
            Err(err) => {
                tracing::debug!(target: "rpc_core::resume", key, "resume ends: {err}");
                let _ = into.close(Some(err.clone())).await;
                Err(err)
            }
        }
    }

    async fn ack(&self, key: String, upto: u64) -> Result<(), RpcError> {
        self.check(&key)?;
        self.store.ack(&key, upto).await
    }

    async fn cancel(&self, key: String, reason: String) -> Result<(), RpcError> {
        self.check(&key)?;
        self.store.cancel(&key, reason).await
    }
}

/// The entries a consumer asked for can no longer be had: the error a
/// resumable sequence ends with when it cannot resume without a gap. It
/// travels as an application error: recover it with
/// [`RpcError::application_value`] or [`ResumeGap::from_error`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeGap {
    /// The log's key.
    pub key: String,
    /// The consumer has every entry up to this id.
    pub after: u64,
    /// The first id the store still holds (`None`: the store has no log at
    /// all, e.g. it was restarted without persistence).
    pub first_kept: Option<u64>,
}

impl ResumeGap {
    /// The gap carried by `err`, if `err` is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use rpc_core::resume::ResumeGap;
    ///
    /// let gap = ResumeGap { key: "room".into(), after: 4, first_kept: Some(10) };
    /// let err = gap.clone().into_error();
    /// assert!(err.message().contains("items 5..=9"));
    /// assert_eq!(ResumeGap::from_error(&err), Some(gap));
    /// ```
    pub fn from_error(err: &RpcError) -> Option<ResumeGap> {
        err.application_value()
    }

    /// This gap as an error whose message names the missing ids.
    pub fn into_error(self) -> RpcError {
        let message = match self.first_kept {
            Some(first) => format!(
                "cannot resume '{}' after item {}: items {}..={} are gone (the log now starts at {first})",
                self.key,
                self.after,
                self.after.saturating_add(1),
                first.saturating_sub(1)
            ),
            None => format!(
                "cannot resume '{}' after item {}: the store has no log for it (the producer's state was lost)",
                self.key, self.after
            ),
        };
        let payload = postcard::to_allocvec(&self).unwrap_or_default();
        RpcError::application_encoded(message, payload)
    }
}

/// Feeds `writer` from the log: from `after` to the end entry.
async fn pump(
    store: &dyn SessionStore,
    key: &str,
    after: u64,
    writer: &mut SequenceWriter<Delivery>,
) -> Result<(), RpcError> {
    if after > 0 {
        check_resumable(store, key, after).await?;
        store.ack(key, after).await?;
    }
    let mut next = after;
    loop {
        let Some(read) = store.read_after(key, next, READ_BATCH).await? else {
            if next > 0 {
                // The log was there (the consumer had entries of it) and is gone.
                return Err(ResumeGap { key: key.to_owned(), after: next, first_kept: None }.into_error());
            }
            // The producer has not started the log yet: wait for it.
            idle(store, key, writer).await?;
            continue;
        };
        if read.first_kept > next.saturating_add(1) && !starts_with_abort(&read) {
            return Err(ResumeGap { key: key.to_owned(), after: next, first_kept: Some(read.first_kept) }.into_error());
        }
        if read.entries.is_empty() {
            idle(store, key, writer).await?;
            continue;
        }
        for (id, entry) in read.entries {
            let end = entry.is_end();
            writer.write(Delivery { id, entry })?;
            next = id;
            if end {
                return writer.flush().await;
            }
        }
        writer.flush().await?;
    }
}

/// Checks that the log `key` exists and reaches `after` before anything is
/// acknowledged: a consumer ahead of the log (e.g. of an earlier log under
/// the same key) must not trim the entries it never had.
async fn check_resumable(store: &dyn SessionStore, key: &str, after: u64) -> Result<(), RpcError> {
    match store.state(key).await? {
        None => Err(ResumeGap { key: key.to_owned(), after, first_kept: None }.into_error()),
        Some(state) if after > state.last => Err(RpcError::protocol(format!(
            "cannot resume '{key}' after item {after}: the log ends at item {} (the consumer is ahead of it)",
            state.last
        ))),
        Some(_) => Ok(()),
    }
}

/// Whether the first entry read is an abort: it ends the sequence whatever
/// the consumer missed, since an abort drops every unacknowledged entry.
fn starts_with_abort(read: &super::store::LogRead) -> bool {
    matches!(read.entries.first(), Some((id, Entry::Aborted)) if *id == read.first_kept)
}

/// Waits for the log to change; fails once the consumer is gone.
async fn idle(store: &dyn SessionStore, key: &str, writer: &mut SequenceWriter<Delivery>) -> Result<(), RpcError> {
    if let Some(err) = consumer_gone(writer) {
        return Err(err);
    }
    store.changed(key, IDLE_WAIT).await;
    Ok(())
}

/// The error a write would see now, if the consumer is gone.
fn consumer_gone(writer: &mut SequenceWriter<Delivery>) -> Option<RpcError> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match writer.poll_flush(&mut cx) {
        Poll::Ready(Err(err)) => Some(err),
        _ => None,
    }
}
