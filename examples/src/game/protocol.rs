//! The wire contract between the game server and its clients: two
//! `#[eventual]` traits and the plain serde types they carry.
//!
//! Everything a client and a server must agree on lives here, and nothing
//! else does. The shape:
//!
//! * [`Game`] is the server's bootstrap object. [`Game::join`] returns a
//!   [`PlayerProxy`], a capability for *your* seat; the client calls it at
//!   once, pipelined on the unfinished `join`.
//! * [`Player::events`] returns a [`Sequence`] of [`GameEvent`]s: the server
//!   pushes, the client reads at its own pace, with the window it chose.
//! * [`Player::play`] takes a [`Sequence`] of [`Input`]s: the client pushes
//!   its moves up while the call is running.
//! * [`Game::replay`] returns [`Bytes`], a byte stream with the text log of a
//!   finished round.

use std::collections::BTreeMap;
use std::fmt;

use rpc_core::{eventual, Bytes, RpcError, Sequence};
use serde::{Deserialize, Serialize};

/// The game server's front door, offered to every connection.
#[eventual]
pub trait Game {
    /// Takes a seat under `name` for the next round and returns the seat as a
    /// capability. Use it at once: calls on the returned proxy are pipelined
    /// on this call.
    ///
    /// Fails with [`GameError::NameTaken`], [`GameError::BadName`],
    /// [`GameError::Full`] or, once the server is done with its rounds,
    /// [`GameError::Closed`].
    async fn join(&self, name: String) -> Result<PlayerProxy, GameError>;

    /// The text log of a finished round, as a byte stream. A round that is
    /// unknown or not finished yet ends the stream with an error.
    fn replay(&self, round: u32) -> Bytes;
}

/// One player's seat, handed out by [`Game::join`].
///
/// Dropping every proxy of a seat (or losing the connection) gives the seat up.
#[eventual]
pub trait Player {
    /// What happens, from the lobby to the end of the round, for this seat.
    ///
    /// The server writes every event that changes the score or the roster;
    /// while the reader lags behind (its window is full) the server skips
    /// [`GameEvent::Snapshot`]s, since the next one supersedes them anyway.
    /// The sequence closes after [`GameEvent::EndGame`]. Cancelling it leaves
    /// the game. Calling `events` again replaces the previous sequence.
    fn events(&self) -> Sequence<GameEvent>;

    /// Plays the moves read from `inputs`, one per tick at most, until the
    /// client closes the sequence (returns how many moves were taken) or the
    /// round ends. A sequence that ends with an error (the client aborted or
    /// vanished) leaves the game.
    async fn play(&self, inputs: Sequence<Input>) -> Result<u64, GameError>;
}

/// Errors of the game itself, as the client sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GameError {
    /// Someone else is using this name.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// Names are 1 to [`MAX_NAME_LEN`] letters, digits, `-` or `_`.
    #[error("a name must be 1 to {MAX_NAME_LEN} letters, digits, '-' or '_'")]
    BadName,
    /// Every seat is taken (see [`MAX_SEATS`]); try again after a round.
    #[error("the server is full ({MAX_SEATS} seats)")]
    Full,
    /// The server has played all its rounds and takes no more players.
    #[error("the server is not starting any more rounds")]
    Closed,
    /// The framework failed (connection lost, call cancelled, ...).
    #[error("{0}")]
    Rpc(String),
}

impl From<RpcError> for GameError {
    fn from(err: RpcError) -> Self {
        GameError::Rpc(err.to_string())
    }
}

/// The most seats (waiting and playing) a server hands out at once.
pub const MAX_SEATS: usize = 64;

/// The longest name a player may take, in bytes.
pub const MAX_NAME_LEN: usize = 16;

/// Whether `name` is acceptable as a player name (see [`GameError::BadName`]).
pub fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(allowed)
}

/// A cell of the arena: `x` grows to the right, `y` grows downwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    /// Column, from 0.
    pub x: u16,
    /// Row, from 0.
    pub y: u16,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.x, self.y)
    }
}

/// A step on the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Towards row 0.
    Up,
    /// Away from row 0.
    Down,
    /// Towards column 0.
    Left,
    /// Away from column 0.
    Right,
}

impl Direction {
    /// All four directions.
    pub const ALL: [Direction; 4] = [Direction::Up, Direction::Down, Direction::Left, Direction::Right];

    /// The neighbour of `pos` in this direction, if it is on a `width` ×
    /// `height` grid.
    pub fn step(self, pos: Pos, width: u16, height: u16) -> Option<Pos> {
        let Pos { x, y } = pos;
        let next = match self {
            Direction::Up => Pos { x, y: y.checked_sub(1)? },
            Direction::Down => Pos { x, y: y + 1 },
            Direction::Left => Pos { x: x.checked_sub(1)?, y },
            Direction::Right => Pos { x: x + 1, y },
        };
        (next.x < width && next.y < height).then_some(next)
    }
}

/// What a client sends up [`Player::play`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Move one cell at the next tick (moves queue up, a few at most).
    Move(Direction),
}

/// The fixed layout of a round's arena.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaMap {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
    /// Cells nobody can enter.
    pub walls: Vec<Pos>,
}

/// One player as of a tick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerState {
    /// The player's name.
    pub name: String,
    /// Where the player stands.
    pub pos: Pos,
    /// Items collected this round.
    pub score: u32,
}

/// The whole visible state of a round after one tick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Ticks since the round started.
    pub tick: u64,
    /// Everyone still in the round.
    pub players: Vec<PlayerState>,
    /// Items waiting to be collected.
    pub items: Vec<Pos>,
}

/// What the server tells a player, in order, through [`Player::events`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GameEvent {
    /// Who is waiting for the next round, and how many players start one.
    Lobby {
        /// Names waiting, in joining order.
        waiting: Vec<String>,
        /// Players needed to start a round.
        needed: u32,
    },
    /// A round begins: the layout, the goal, the players.
    RoundStarted {
        /// Round number, from 1.
        round: u32,
        /// The score that wins.
        target: u32,
        /// The arena.
        map: ArenaMap,
        /// The players, in starting order.
        players: Vec<String>,
    },
    /// The state after a tick. Skipped while the reader lags behind.
    Snapshot(Snapshot),
    /// A player collected an item.
    Scored {
        /// Who.
        name: String,
        /// Where the item was.
        at: Pos,
        /// Their new score.
        score: u32,
    },
    /// A player left the round before its end.
    PlayerLeft {
        /// Who.
        name: String,
        /// How the server noticed.
        reason: String,
    },
    /// The round is over; the sequence closes after this.
    EndGame(FinalScores),
}

/// The result of a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalScores {
    /// Round number, from 1.
    pub round: u32,
    /// The first player to reach the target, if anyone did.
    pub winner: Option<String>,
    /// Scores of the players still in the round at its end, by name.
    pub scores: BTreeMap<String, u32>,
    /// Players who left during the round, in the order they left.
    pub left: Vec<String>,
}

/// `final scores: alice=5 bob=3` (sorted by name).
impl fmt::Display for FinalScores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "final scores:")?;
        for (name, score) in &self.scores {
            write!(f, " {name}={score}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("alice_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn steps_stay_on_the_grid() {
        let corner = Pos { x: 0, y: 0 };
        assert_eq!(Direction::Up.step(corner, 3, 3), None);
        assert_eq!(Direction::Left.step(corner, 3, 3), None);
        assert_eq!(Direction::Right.step(corner, 3, 3), Some(Pos { x: 1, y: 0 }));
        assert_eq!(Direction::Down.step(Pos { x: 2, y: 2 }, 3, 3), None);
    }

    #[test]
    fn final_scores_print_sorted_by_name() {
        let scores = [("carol", 1), ("alice", 5), ("bob", 3)].map(|(n, s)| (n.to_string(), s));
        let fin = FinalScores { round: 1, winner: None, scores: scores.into_iter().collect(), left: vec![] };
        assert_eq!(fin.to_string(), "final scores: alice=5 bob=3 carol=1");
    }
}
