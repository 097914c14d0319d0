//! The client side of a seat: connect, join with one round trip, read
//! events, send moves, and finish or leave cleanly.
//!
//! A [`Session`] is what both the terminal UI and the bot drive. Joining
//! shows promise pipelining: `join`, `events` and `play` all leave before
//! the server has answered `join`, aimed at the seat it is about to return.

use std::time::Duration;

use futures::FutureExt;
use rpc_core::{Config, Connection, ErrorKind, Promise, RpcError, Sequence, SequenceWriter};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::protocol::{FinalScores, GameError, GameEvent, GameProxy, Input, PlayerProxy};
use super::replay;
use super::server::keepalive_config;

/// Everything that can stop a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The framework failed: connection lost or refused, stream ended with an error.
    #[error("{0}")]
    Rpc(#[from] RpcError),
    /// The game refused us (name taken, server closed, ...).
    #[error("{0}")]
    Game(#[from] GameError),
    /// The server could not be reached.
    #[error("cannot connect to the server: {0}")]
    Connect(std::io::Error),
    /// A local I/O error (the terminal, a socket).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server closed our events without ending the round.
    #[error("the server closed the game before the round was over")]
    Ended,
}

impl ClientError {
    /// The framework error kind, for errors that come from the framework.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Rpc(err) => Some(err.kind()),
            _ => None,
        }
    }
}

/// How long [`Session::finish`] waits for each of its steps.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How a client connects and reads.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Connection settings; keepalive is what makes a dead server noticed.
    pub config: Config,
    /// The window of the events sequence: events the server may have sent
    /// and we have not read yet. A small window means the server starts
    /// skipping snapshots sooner when we fall behind.
    pub events_capacity: u32,
    /// Events per network message, at most.
    pub events_batch: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { config: keepalive_config(), events_capacity: 32, events_batch: 8 }
    }
}

/// How a finished round went for this client.
#[derive(Debug)]
pub struct Outcome {
    /// The final scores, as the server announced them.
    pub scores: FinalScores,
    /// How many of our moves the server took, as it answered `play`.
    pub moves_taken: Result<u64, GameError>,
    /// The round's replay log, downloaded as a byte stream.
    pub replay: std::io::Result<Vec<u8>>,
}

/// Opens a connection with `config` and returns it with the server's [`GameProxy`].
///
/// # Errors
///
/// When the server cannot be reached or the handshake fails.
pub async fn connect(addr: impl ToSocketAddrs, config: Config) -> Result<(Connection, GameProxy), ClientError> {
    let stream = TcpStream::connect(addr).await.map_err(ClientError::Connect)?;
    stream.set_nodelay(true)?;
    let connection = Connection::builder().config(config).open(stream).await?;
    let game = connection.bootstrap::<GameProxy>();
    Ok((connection, game))
}

/// A seat in a game, from the client's side.
pub struct Session {
    connection: Connection,
    game: GameProxy,
    name: String,
    events: Sequence<GameEvent>,
    inputs: SequenceWriter<Input>,
    played: Promise<u64, GameError>,
    _player: PlayerProxy,
}

impl Session {
    /// Connects to `addr` and joins as `name`.
    ///
    /// # Errors
    ///
    /// Connection failures, or the server's refusal ([`GameError`]).
    pub async fn join(addr: impl ToSocketAddrs, name: &str, options: &ClientOptions) -> Result<Session, ClientError> {
        let (connection, game) = connect(addr, options.config.clone()).await?;
        // Three calls, one round trip: `events` and `play` are pipelined on
        // the seat that `join` has not returned yet.
        let joining = game.join(name.to_string());
        let player = joining.pipeline();
        let events = player.events();
        // We consume the events, so we choose the window: set it now, before
        // the call has even reached the server.
        events.set_capacity(options.events_capacity);
        events.set_batch_size(options.events_batch);
        let (inputs, upload) = Sequence::channel();
        let played = player.play(upload);
        joining.await?; // a refusal comes back as our own `GameError`
        Ok(Session { connection, game, name: name.to_string(), events, inputs, played, _player: player })
    }

    /// The name we joined as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next event.
    ///
    /// # Errors
    ///
    /// The events sequence's error: `Disconnected` when the server died or
    /// went silent past the keepalive timeout; [`ClientError::Ended`] when it
    /// closed without an [`GameEvent::EndGame`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like [`Sequence::read`]: usable in `tokio::select!`.
    pub async fn next_event(&mut self) -> Result<GameEvent, ClientError> {
        self.events.read().await?.ok_or(ClientError::Ended)
    }

    /// Sends a move, then waits while the server's window for our moves is
    /// full (it takes one per tick). Returns whether the move went out.
    ///
    /// A move can fail to go out only when the server stopped taking moves
    /// (it dropped our inputs once the round was over for us) or the
    /// connection is gone. That is not an error here: the events say what
    /// happened, [`Session::next_event`] returns the `EndGame` or the error.
    pub async fn send(&mut self, input: Input) -> bool {
        self.inputs.write(input).is_ok() && self.inputs.flush().await.is_ok()
    }

    /// Sends a move only if the server has room for it at once; returns
    /// whether it did. For a keyboard: a key pressed while moves are still
    /// queued is dropped instead of lagging behind. See [`Session::send`].
    pub fn try_send(&mut self, input: Input) -> bool {
        matches!(self.inputs.flush().now_or_never(), Some(Ok(()))) && self.inputs.write(input).is_ok()
    }

    /// After [`GameEvent::EndGame`]: stops sending moves, collects the
    /// server's answer to `play`, downloads the replay, and hangs up. Each
    /// step gives up after [`FINISH_TIMEOUT`].
    pub async fn finish(self, scores: FinalScores) -> Outcome {
        let Session { connection, game, events, inputs, played, .. } = self;
        drop(events);
        let answer = async {
            let _ = inputs.close(None).await; // the server may have dropped them already
            played.await
        };
        let late = || format!("no answer within {FINISH_TIMEOUT:?}");
        let moves_taken =
            tokio::time::timeout(FINISH_TIMEOUT, answer).await.unwrap_or_else(|_| Err(GameError::Rpc(late())));
        let download = tokio::time::timeout(FINISH_TIMEOUT, replay::download(&game, scores.round)).await;
        let replay = download.unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, late())));
        connection.close();
        Outcome { scores, moves_taken, replay }
    }

    /// Leaves mid-game: cancels the events sequence with `reason` and aborts
    /// the inputs. The server notices on its next write or read and tells
    /// the others. Waits (briefly) for the server's answer to `play`, which
    /// comes once it has seen the inputs end, then hangs up.
    pub async fn leave(self, reason: &str) {
        let Session { connection, events, inputs, played, .. } = self;
        events.cancel(Some(reason.to_string()));
        inputs.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), played).await;
        connection.close();
    }
}
