//! A feed that survives a server restart: its history-plus-live sequence
//! lives in Redis, so a client resumes on the restarted server (or on any
//! other server process sharing the Redis) with no gap and no duplicate.
//!
//! * The server ([`serve`]) offers [`Feed`]. [`Feed::session`] starts (or
//!   continues) the session's producer in this process and hands back the
//!   [`ResumeProxy`] that serves the session's log from Redis.
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
    Backoff, LinkState, Reconnecting, RedisStore, ResumableSequence, ResumableWriter, ResumeProxy, ResumeServer,
    SessionStore,
};
use rpc_core::{eventual, RpcError};
use serde::{Deserialize, Serialize};

/// How many history lines a new session starts with.
pub const HISTORY: u64 = 10;

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
}

impl FeedServer {
    /// A server over `store` writing a live line every `tick`.
    pub fn new(store: Arc<dyn SessionStore>, tick: Duration) -> Self {
        FeedServer { store, producing: Arc::default(), tick }
    }
}

impl Feed for FeedServer {
    fn session(&self, session: String) -> ResumeProxy {
        if self.producing.lock().unwrap_or_else(|e| e.into_inner()).insert(session.clone()) {
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
    let store = Arc::new(RedisStore::connect(redis_url, "feed:").await?);
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
