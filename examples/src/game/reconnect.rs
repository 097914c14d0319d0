//! Riding out a dropped connection mid-round without losing a score event.
//!
//! A game seat lives as long as its connection, so a client whose link
//! drops would lose its seat. The fix is an *edge* ([`EdgeServer`]) beside
//! the game server: it holds each remote player's [`Session`] on a stable
//! connection and re-publishes the seat's events as a resumable sequence
//! (`rpc_core::resume`). The remote client ([`play_through_edge`]) reaches
//! the edge over a link that may drop; it redials ([`Reconnecting`]),
//! resumes the events after the last id it read, and keeps playing. Moves
//! made while the link is down are simply not made; events are never lost.
//! [`CuttingRelay`] cuts the link on purpose, for the demo and the tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::resume::{
    Backoff, MemoryStore, Reconnecting, ResumableSequence, ResumableWriter, ResumeProxy, ResumeServer,
};
use rpc_core::{eventual, ErrorKind, RpcError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::bot::first_step;
use super::client::{ClientOptions, Session};
use super::protocol::{FinalScores, GameError, GameEvent, Input, Pos};

/// The edge's interface to remote players.
#[eventual]
pub trait Edge {
    /// Takes a seat in the game as `name`, held by the edge; the seat's
    /// events are the resumable sequence `name`, served by [`Edge::events`].
    async fn join(&self, name: String) -> Result<(), GameError>;
    /// The resumable events of `name`'s seat (a capability for that log only).
    fn events(&self, name: String) -> ResumeProxy;
    /// A move for `name`'s seat; false if the seat is gone.
    async fn send(&self, name: String, input: Input) -> bool;
}

/// Holds seats in the game at `game` for remote players.
#[derive(Clone)]
pub struct EdgeServer {
    game: SocketAddr,
    store: MemoryStore,
    seats: Arc<Mutex<HashMap<String, mpsc::Sender<Input>>>>,
}

impl EdgeServer {
    /// An edge in front of the game server at `game`.
    pub fn new(game: SocketAddr) -> Self {
        EdgeServer { game, store: MemoryStore::new(), seats: Arc::default() }
    }
}

impl Edge for EdgeServer {
    async fn join(&self, name: String) -> Result<(), GameError> {
        if self.seats.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&name) {
            return Ok(()); // a join repeated after a drop: the seat is already ours
        }
        let session = Session::join(self.game, &name, &ClientOptions::default())
            .await
            .map_err(|e| GameError::Rpc(e.to_string()))?;
        let writer = ResumableWriter::open(Arc::new(self.store.clone()), name.clone(), 1024).await?;
        let (moves, inputs) = mpsc::channel(4);
        self.seats.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), moves);
        let seats = self.seats.clone();
        tokio::spawn(async move {
            let _ = hold_seat(session, writer, inputs).await;
            seats.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
        });
        Ok(())
    }

    fn events(&self, name: String) -> ResumeProxy {
        ResumeProxy::new(ResumeServer::only(Arc::new(self.store.clone()), &name))
    }

    async fn send(&self, name: String, input: Input) -> bool {
        let seat = self.seats.lock().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
        match seat {
            Some(seat) => seat.send(input).await.is_ok(),
            None => false,
        }
    }
}

/// Copies the seat's events into the resumable log and the remote player's
/// moves into the seat, until the round ends.
async fn hold_seat(
    mut session: Session,
    mut writer: ResumableWriter<GameEvent>,
    mut inputs: mpsc::Receiver<Input>,
) -> Result<(), RpcError> {
    loop {
        tokio::select! {
            event = session.next_event() => {
                let event = event.map_err(|e| RpcError::new(ErrorKind::Aborted, e.to_string()))?;
                writer.send(&event).await?;
                if let GameEvent::EndGame(scores) = event {
                    writer.close(None).await?;
                    session.finish(scores).await;
                    return Ok(());
                }
            }
            Some(input) = inputs.recv() => {
                session.try_send(input);
            }
        }
    }
}

/// A TCP relay that can cut every connection it carries.
pub struct CuttingRelay {
    addr: SocketAddr,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl CuttingRelay {
    /// A relay on loopback to `target`.
    ///
    /// # Errors
    ///
    /// If it cannot listen.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = pipes.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap_or_else(|e| e.into_inner()).push(pipe);
            }
        });
        Ok(CuttingRelay { addr, pipes, acceptor })
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection now.
    pub fn cut(&self) {
        for pipe in self.pipes.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            pipe.abort();
        }
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// How a round played through the edge went.
#[derive(Debug)]
pub struct EdgeOutcome {
    /// The server's final scores.
    pub scores: FinalScores,
    /// Every player's score as the `Scored` events said, in the order read.
    pub scored: BTreeMap<String, u32>,
    /// How many times the events were resumed after a loss.
    pub resumes: u64,
    /// How many events were read.
    pub events: u64,
}

/// Plays a round as `name` through the edge at `edge`, over a link that may
/// drop; `watch` sees every event with its id.
///
/// # Errors
///
/// The game's refusal, a gap in the events (never expected), or the link giving up.
pub async fn play_through_edge(
    edge: SocketAddr,
    name: &str,
    mut watch: impl FnMut(u64, &GameEvent),
) -> Result<EdgeOutcome, RpcError> {
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(500),
        max_attempts: Some(60),
        jitter: true,
    };
    let link = Reconnecting::<EdgeProxy>::tcp(edge, backoff);
    join(&link, name).await?;
    let mut events = ResumableSequence::<GameEvent, EdgeProxy>::new(&link, name, {
        let name = name.to_owned();
        move |edge: &EdgeProxy| edge.events(name.clone())
    });
    let (mut scored, mut walls, mut size) = (BTreeMap::new(), HashSet::new(), (0, 0));
    while let Some(event) = events.read().await? {
        watch(events.last_id(), &event);
        match &event {
            GameEvent::RoundStarted { map, .. } => {
                walls = map.walls.iter().copied().collect();
                size = (map.width, map.height);
            }
            GameEvent::Scored { name, score, .. } => {
                scored.insert(name.clone(), *score);
            }
            GameEvent::Snapshot(snapshot) => {
                let me = snapshot.players.iter().find(|p| p.name == name).map(|p| p.pos);
                let goals: HashSet<Pos> = snapshot.items.iter().copied().collect();
                if let Some(step) = me.and_then(|at| first_step(at, &goals, &walls, size)) {
                    if let Some(Ok(edge)) = futures::FutureExt::now_or_never(link.connected()) {
                        drop(tokio::spawn(edge.send(name.to_owned(), Input::Move(step))));
                    }
                }
            }
            GameEvent::EndGame(scores) => {
                let outcome = EdgeOutcome {
                    scores: scores.clone(),
                    scored,
                    resumes: events.reconnects(),
                    events: events.last_id(),
                };
                return Ok(outcome);
            }
            _ => {}
        }
    }
    Err(RpcError::protocol("the events ended without EndGame"))
}

async fn join(link: &Reconnecting<EdgeProxy>, name: &str) -> Result<(), RpcError> {
    for _ in 0..50 {
        let edge = link.connected().await?;
        match edge.join(name.to_owned()).await {
            Ok(()) => return Ok(()),
            Err(GameError::Rpc(message)) if message.contains("disconnected") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => return Err(RpcError::new(ErrorKind::Application, err.to_string())),
        }
    }
    Err(RpcError::disconnected("could not join through the edge"))
}

/// What [`demo`] saw.
#[derive(Debug)]
pub struct DemoReport {
    /// The remote player's round.
    pub outcome: EdgeOutcome,
    /// How many times the relay cut the link.
    pub cuts: u32,
}

impl DemoReport {
    /// Whether every score the server counted arrived as a `Scored` event.
    pub fn no_score_lost(&self) -> bool {
        let scores = &self.outcome.scores.scores;
        scores.iter().filter(|(_, score)| **score > 0).all(|(name, score)| self.outcome.scored.get(name) == Some(score))
    }
}

/// A round on loopback: a game server, an edge, a bot playing directly and
/// `you` playing through the edge over a relay that cuts the link every
/// `cut_every`. With `print`, events and cuts are printed as lines.
///
/// # Errors
///
/// If a server cannot listen, the bot fails, or the remote player's round fails.
pub async fn demo(
    tick: Duration,
    target_score: u32,
    cut_every: Duration,
    print: bool,
) -> Result<DemoReport, Box<dyn std::error::Error + Send + Sync>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let game = listener.local_addr()?;
    let options =
        super::server::ServerOptions { players: 2, target_score, rounds: Some(1), tick, ..Default::default() };
    let server = tokio::spawn(super::server::run(listener, options));
    let edge_listener = TcpListener::bind("127.0.0.1:0").await?;
    let edge = EdgeServer::new(game);
    let edge_addr = edge_listener.local_addr()?;
    tokio::spawn(rpc_core::serve(edge_listener, move || EdgeProxy::new(edge.clone())));
    let relay = Arc::new(CuttingRelay::start(edge_addr).await?);
    let bot = tokio::spawn(super::bot::play(game, "bo"));
    let cuts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let cutter = tokio::spawn({
        let (relay, cuts) = (relay.clone(), cuts.clone());
        async move {
            loop {
                tokio::time::sleep(cut_every).await;
                relay.cut();
                let cut = cuts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if print {
                    println!("  ✂  the relay cuts the connection (cut {cut})");
                }
            }
        }
    });
    let show = |id: u64, event: &GameEvent| {
        if !print {
            return;
        }
        match event {
            GameEvent::Snapshot(_) => {}
            GameEvent::Scored { name, score, .. } => println!("{id:>5}  {name} scores: {score}"),
            other => println!("{id:>5}  {other:?}"),
        }
    };
    let played = tokio::time::timeout(Duration::from_secs(120), play_through_edge(relay.addr(), "you", show)).await;
    cutter.abort();
    let outcome = played.map_err(|_| "the round did not finish in two minutes")??;
    bot.await??;
    server.await??;
    Ok(DemoReport { outcome, cuts: cuts.load(std::sync::atomic::Ordering::Relaxed) })
}
