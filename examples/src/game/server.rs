//! The game server: accepts connections, hands each a [`GameProxy`], and
//! runs rounds until it has played as many as it was asked to.
//!
//! The RPC objects here are thin: `Lobby` (the [`Game`] every connection
//! gets) and `Seat` (the [`Player`] capability `join` returns) turn calls
//! into commands for the [`Host`](super::host), which owns the game.

use std::net::SocketAddr;
use std::time::Duration;

use rpc_core::{Bytes, Config, Connection, Sequence};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::arena::PlayerKey;
use super::host::{Command, Host, HostRules, MOVE_QUEUE};
use super::protocol::{Direction, Game, GameError, GameEvent, GameProxy, Input, Player, PlayerProxy};
use super::replay;

/// How a server plays.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Players needed to start a round.
    pub players: u32,
    /// The score that wins a round.
    pub target_score: u32,
    /// Rounds to play before [`run`] returns; `None` plays forever.
    pub rounds: Option<u32>,
    /// Time between ticks (50 ms is 20 Hz).
    pub tick: Duration,
    /// Connection settings, keepalive included.
    pub config: Config,
    /// After the last round, how long to wait for players to download the
    /// replay and hang up before closing their connections.
    pub linger: Duration,
    /// Print what happens (joins, rounds, leavers) on stderr.
    pub verbose: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            players: 2,
            target_score: 10,
            rounds: None,
            tick: Duration::from_millis(50),
            config: keepalive_config(),
            linger: Duration::from_secs(5),
            verbose: false,
        }
    }
}

/// The connection settings the game uses on both sides: a ping every 500 ms
/// when idle, and a peer silent for 2 s counts as gone.
pub fn keepalive_config() -> Config {
    Config {
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Serves the game on `listener` until `options.rounds` rounds are played,
/// then returns how many were.
///
/// # Errors
///
/// None in practice: failed accepts are logged and retried. The `Result`
/// leaves room for setup that can fail.
pub async fn run(listener: TcpListener, options: ServerOptions) -> std::io::Result<u32> {
    if options.rounds == Some(0) {
        return Ok(0);
    }
    let (commands, inbox) = mpsc::unbounded_channel();
    let (all_played, mut finished) = oneshot::channel();
    let rules = HostRules {
        players: options.players.max(1),
        target: options.target_score.max(1),
        rounds: options.rounds,
        verbose: options.verbose,
    };
    let tick = options.tick.max(Duration::from_millis(1)); // a zero interval would panic
    let host = tokio::spawn(Host::new(rules, all_played).run(inbox, tick));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let played = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let game = GameProxy::new(Lobby { commands: commands.clone() });
                    connections.spawn(serve_connection(stream, peer, options.clone(), game, stopped.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            played = &mut finished => break played.unwrap_or(0),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    drop(listener);
    linger(&mut connections, options.linger, &stop).await;
    host.abort();
    Ok(played)
}

/// Gives the last players `grace` to hang up by themselves, then closes the
/// connections still open.
async fn linger(connections: &mut JoinSet<()>, grace: Duration, stop: &watch::Sender<bool>) {
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_closed).await.is_err() {
        let _ = stop.send(true);
        let _ =
            tokio::time::timeout(Duration::from_secs(1), async { while connections.join_next().await.is_some() {} })
                .await;
    }
}

async fn accept_failed(err: std::io::Error) {
    eprintln!("accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Runs one connection until the peer goes or the server stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    options: ServerOptions,
    game: GameProxy,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let opened = Connection::builder().config(options.config).bootstrap(game).open(stream).await;
    let connection = match opened {
        Ok(connection) => connection,
        Err(err) => return eprintln!("{peer}: handshake failed: {err}"),
    };
    tokio::select! {
        reason = connection.closed() => {
            if options.verbose {
                eprintln!("{peer}: connection closed ({reason})");
            }
        }
        _ = stop.wait_for(|stop| *stop) => connection.close(),
    }
}

/// The [`Game`] object each connection gets: it forwards to the host.
struct Lobby {
    commands: mpsc::UnboundedSender<Command>,
}

impl Game for Lobby {
    async fn join(&self, name: String) -> Result<PlayerProxy, GameError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Join { name, reply }).map_err(|_| GameError::Closed)?;
        let ticket = answer.await.map_err(|_| GameError::Closed)??;
        let seat = Seat { key: ticket.key, moves: ticket.moves, commands: self.commands.clone() };
        Ok(PlayerProxy::new(seat))
    }

    fn replay(&self, round: u32) -> Bytes {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Replay { round, reply });
        replay::serve(round, async move { answer.await.ok().flatten() })
    }
}

/// A player's seat: the capability `join` hands out.
struct Seat {
    key: PlayerKey,
    moves: mpsc::Sender<Direction>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Seat {
    fn leave(&self, reason: String) {
        let _ = self.commands.send(Command::Leave { key: self.key, reason });
    }
}

impl Player for Seat {
    fn events(&self) -> Sequence<GameEvent> {
        let (writer, events) = Sequence::channel();
        // If the host is gone the writer is dropped, which ends the sequence.
        let _ = self.commands.send(Command::Attach { key: self.key, events: writer });
        events
    }

    async fn play(&self, mut inputs: Sequence<Input>) -> Result<u64, GameError> {
        // We are the consumer, so we choose the window: a few moves in
        // flight, on top of the short queue the host drains one per tick.
        inputs.set_capacity(MOVE_QUEUE as u32 + 2);
        let mut taken = 0;
        loop {
            match inputs.read().await {
                Ok(Some(Input::Move(direction))) => {
                    // Waits while the queue is full: backpressure up to the client.
                    if self.moves.send(direction).await.is_err() {
                        return Ok(taken); // the round is over for this seat
                    }
                    taken += 1;
                }
                Ok(None) => return Ok(taken),
                Err(err) => {
                    self.leave(format!("its inputs ended ({err})"));
                    return Err(err.into());
                }
            }
        }
    }
}

/// The client released its last reference to the seat (or its connection
/// went away): the seat is free again.
impl Drop for Seat {
    fn drop(&mut self) {
        self.leave("it released its seat".to_string());
    }
}
