//! A feed that survives a server restart: its history-plus-live sequence
//! lives in Redis, so a client resumes on the restarted server (or on any
//! other server process sharing the Redis) with no gap and no duplicate.
//!
//! * The server ([`serve`]) offers [`Feed`]. [`Feed::session`] starts (or
//!   continues) the session's producer in this process and hands back the
//!   [`ResumeProxy`] that serves the session's log from Redis. A peer
//!   cannot make it run unbounded producers: at most
//!   [`MAX_LIVE_SESSIONS`] run at once (beyond that, and for names longer
//!   than [`MAX_SESSION_NAME`], the proxy refuses every call), and a
//!   session nobody reads stops once its log expires ([`SESSION_TTL`]).
//! * The producer ([`produce`]) writes a backlog of history lines, then a
//!   live line every `tick`, into a [`ResumableWriter`]. Opened on an
//!   existing log it continues after the last id, so a restarted server
//!   carries on where the killed one stopped.
//! * The client ([`follow`]) reads through a [`Reconnecting`] link with a
//!   [`ResumableSequence`]; after a loss it resumes after the last id it
//!   printed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::resume::{
    Backoff, Delivery, LinkState, Reconnecting, RedisStore, ResumableSequence, ResumableWriter, Resume, ResumeProxy,
    ResumeServer, SessionStore,
};
use rpc_core::{eventual, RpcError, SequenceWriter};
use serde::{Deserialize, Serialize};

/// How many history lines a new session starts with.
pub const HISTORY: u64 = 10;

/// How many sessions one server process produces at once by default.
pub const MAX_LIVE_SESSIONS: usize = 256;

/// The longest session name a server accepts, in bytes.
pub const MAX_SESSION_NAME: usize = 128;

/// How long [`serve`]'s store keeps a session nobody reads (no append
/// succeeds once the window is full, no acknowledgement): its producer
/// stops when the log is gone.
pub const SESSION_TTL: Duration = Duration::from_secs(600);

/// One line of the feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Which server process wrote it (its process id).
    pub server: u32,
    /// The text.
    pub text: String,
}

/// The feed server's bootstrap.
#[eventual]
pub trait Feed {
    /// The resumable sequence service for `session`; starts the session's
    /// producer in this process if none runs here. Pipelined: no round trip.
    fn session(&self, session: String) -> ResumeProxy;
}

/// Serves [`Feed`] from one process; many may share one Redis.
#[derive(Clone)]
pub struct FeedServer {
    store: Arc<dyn SessionStore>,
    producing: Arc<Mutex<HashSet<String>>>,
    tick: Duration,
    max_sessions: usize,
}

impl FeedServer {
    /// A server over `store` writing a live line every `tick`, producing
    /// at most [`MAX_LIVE_SESSIONS`] sessions at once.
    pub fn new(store: Arc<dyn SessionStore>, tick: Duration) -> Self {
        FeedServer { store, producing: Arc::default(), tick, max_sessions: MAX_LIVE_SESSIONS }
    }

    /// Produces at most `max` sessions at once; a new session beyond that
    /// is refused.
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// How many producers run in this process now.
    pub fn live_sessions(&self) -> usize {
        self.producing.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Registers `session` as produced here; `Ok(true)` if its producer
    /// must be started, `Ok(false)` if one already runs.
    fn admit(&self, session: &str) -> Result<bool, RpcError> {
        if session.len() > MAX_SESSION_NAME {
            return Err(RpcError::limit(format!("session names are at most {MAX_SESSION_NAME} bytes")));
        }
        let mut producing = self.producing.lock().unwrap_or_else(|e| e.into_inner());
        if producing.contains(session) {
            return Ok(false);
        }
        if producing.len() >= self.max_sessions {
            return Err(RpcError::limit("this server produces too many sessions already"));
        }
        producing.insert(session.to_owned());
        Ok(true)
    }
}

/// The service handed out for a session that was not admitted: every call
/// fails with why.
struct Refused(RpcError);

impl Resume for Refused {
    async fn resume(&self, _key: String, _after: u64, into: SequenceWriter<Delivery>) -> Result<(), RpcError> {
        let _ = into.close(Some(self.0.clone())).await;
        Err(self.0.clone())
    }

    async fn ack(&self, _key: String, _upto: u64) -> Result<(), RpcError> {
        Err(self.0.clone())
    }

    async fn cancel(&self, _key: String, _reason: String) -> Result<(), RpcError> {
        Err(self.0.clone())
    }
}

impl Feed for FeedServer {
    fn session(&self, session: String) -> ResumeProxy {
        let start = match self.admit(&session) {
            Ok(start) => start,
            Err(err) => return ResumeProxy::new(Refused(err)),
        };
        if start {
            let (store, producing, tick, session) =
                (self.store.clone(), self.producing.clone(), self.tick, session.clone());
            tokio::spawn(async move {
                if let Err(err) = produce(store, &session, tick).await {
                    eprintln!("producer for {session} stopped: {err}");
                }
                producing.lock().unwrap_or_else(|e| e.into_inner()).remove(&session);
            });
        }
        // A capability for this session's log only.
        ResumeProxy::new(ResumeServer::only(self.store.clone(), &session))
    }
}

/// Writes the session's history, then a live line every `tick`, forever
/// (or until the consumer cancels or the store fails).
///
/// # Errors
///
/// The writer's error (cancelled, store failure).
pub async fn produce(store: Arc<dyn SessionStore>, session: &str, tick: Duration) -> Result<(), RpcError> {
    let mut writer = ResumableWriter::<Line>::open(store, session, 64).await?;
    let server = std::process::id();
    while writer.last_id() < HISTORY {
        let n = writer.last_id() + 1;
        writer.write(&Line { server, text: format!("history line {n}") })?;
    }
    writer.flush().await?;
    let mut ticker = tokio::time::interval(tick);
    loop {
        ticker.tick().await;
        let n = writer.last_id() + 1;
        writer.send(&Line { server, text: format!("live line {n}") }).await?;
    }
}

/// Serves the feed on `listener` with the Redis at `redis_url`.
///
/// # Errors
///
/// If Redis cannot be reached or accepting fails.
pub async fn serve(listener: tokio::net::TcpListener, redis_url: &str, tick: Duration) -> Result<(), RpcError> {
    let store = Arc::new(RedisStore::connect(redis_url, "feed:").await?.with_ttl(SESSION_TTL));
    let server = FeedServer::new(store, tick);
    rpc_core::serve(listener, move || FeedProxy::new(server.clone())).await?;
    Ok(())
}

/// Follows `session` on the server at `addr`, calling `show` with each id
/// and line and `note` on each change of the link, until `limit` lines.
///
/// # Errors
///
/// A gap that cannot be filled, or the link giving up.
pub async fn follow(
    addr: SocketAddr,
    session: &str,
    limit: Option<u64>,
    mut show: impl FnMut(u64, &Line),
    mut note: impl FnMut(&LinkState) + Send + 'static,
) -> Result<u64, RpcError> {
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        max_attempts: Some(120),
        jitter: true,
    };
    let link = Reconnecting::<FeedProxy>::tcp(addr, backoff);
    let mut states = link.watch();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let state = states.borrow_and_update().clone();
            note(&state);
        }
    });
    let name = session.to_owned();
    let mut feed =
        ResumableSequence::<Line, FeedProxy>::new(&link, session, move |feed: &FeedProxy| feed.session(name.clone()));
    while let Some(line) = feed.read().await? {
        show(feed.last_id(), &line);
        if limit.is_some_and(|limit| feed.last_id() >= limit) {
            break;
        }
    }
    Ok(feed.reconnects())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::resume::MemoryStore;

    #[tokio::test]
    async fn invented_sessions_start_a_bounded_number_of_producers() {
        let server = FeedServer::new(Arc::new(MemoryStore::new()), Duration::from_secs(3600)).with_max_sessions(8);
        for n in 0..1000 {
            let _ = server.session(format!("invented-{n}"));
        }
        assert_eq!(server.live_sessions(), 8, "one producer per admitted session, no more");
        let refused = server.session("one-more".into());
        let err = refused.ack("one-more".into(), 0).await.unwrap_err();
        let err: RpcError = err.application_value().expect("the refusal");
        assert_eq!(err.kind(), rpc_core::ErrorKind::LimitExceeded, "{err}");
        let _ = server.session("x".repeat(MAX_SESSION_NAME + 1));
        assert_eq!(server.live_sessions(), 8);
        assert!(
            server.session("invented-3".into()).ack("invented-3".into(), 0).await.is_ok(),
            "admitted ones still work"
        );
    }
}
