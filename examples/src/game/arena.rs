//! The rules of the game, with no networking: a grid with walls, players who
//! step one cell per tick, items that respawn, and a target score.
//!
//! The server owns one [`Arena`] per round and feeds it each tick's moves;
//! the same rules could run a single-player game or a test without a socket.

use std::collections::BTreeMap;

use super::protocol::{ArenaMap, Direction, GameEvent, PlayerState, Pos, Snapshot};

/// Columns of the standard arena.
pub const WIDTH: u16 = 20;
/// Rows of the standard arena.
pub const HEIGHT: u16 = 10;

/// Identifies a player inside an arena (the server uses its seat number).
pub type PlayerKey = u64;

/// One player on the grid.
#[derive(Clone, Debug)]
struct Runner {
    key: PlayerKey,
    name: String,
    pos: Pos,
    score: u32,
}

/// A round in progress: the board, the players and the items.
#[derive(Debug)]
pub struct Arena {
    map: ArenaMap,
    wall: Vec<bool>,
    runners: Vec<Runner>,
    items: Vec<Pos>,
    target: u32,
    tick: u64,
    winner: Option<String>,
    rng: fastrand::Rng,
}

impl Arena {
    /// A standard 20 × 10 arena with `players` placed in the corners first,
    /// then on free cells, and items scattered; `seed` drives the item spawns.
    pub fn new(players: &[(PlayerKey, String)], target: u32, seed: u64) -> Arena {
        let map = standard_map();
        let mut wall = vec![false; usize::from(map.width) * usize::from(map.height)];
        for pos in &map.walls {
            wall[usize::from(pos.y) * usize::from(map.width) + usize::from(pos.x)] = true;
        }
        let mut arena = Arena {
            map,
            wall,
            runners: Vec::new(),
            items: Vec::new(),
            target: target.max(1),
            tick: 0,
            winner: None,
            rng: fastrand::Rng::with_seed(seed),
        };
        for (key, name) in players {
            let pos = arena.start_position(arena.runners.len());
            arena.runners.push(Runner { key: *key, name: name.clone(), pos, score: 0 });
        }
        arena.refill_items();
        arena
    }

    /// The layout, as sent to clients when the round starts.
    pub fn map(&self) -> &ArenaMap {
        &self.map
    }

    /// The score that wins.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Names of the players still in, in starting order.
    pub fn names(&self) -> Vec<String> {
        self.runners.iter().map(|r| r.name.clone()).collect()
    }

    /// Keys of the players still in, in starting order.
    pub fn keys(&self) -> Vec<PlayerKey> {
        self.runners.iter().map(|r| r.key).collect()
    }

    /// Whether anyone is left.
    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }

    /// The first player who reached the target, once someone has.
    pub fn winner(&self) -> Option<&str> {
        self.winner.as_deref()
    }

    /// Takes a player off the board; their items stay collected.
    pub fn remove(&mut self, key: PlayerKey) {
        self.runners.retain(|r| r.key != key);
    }

    /// Plays one tick: each player with a move steps (in an order that
    /// rotates every tick, for fairness), picking up any item where they
    /// land. Returns the [`GameEvent::Scored`] events. Once someone reaches
    /// the target, the remaining moves are ignored.
    pub fn step(&mut self, moves: &BTreeMap<PlayerKey, Direction>) -> Vec<GameEvent> {
        self.tick += 1;
        let mut events = Vec::new();
        let count = self.runners.len();
        for turn in 0..count {
            if self.winner.is_some() {
                break;
            }
            let index = (turn + self.tick as usize) % count;
            if let Some(direction) = moves.get(&self.runners[index].key) {
                events.extend(self.move_runner(index, *direction));
            }
        }
        self.refill_items();
        events
    }

    /// Everyone's position and score, and the items, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let players =
            self.runners.iter().map(|r| PlayerState { name: r.name.clone(), pos: r.pos, score: r.score }).collect();
        Snapshot { tick: self.tick, players, items: self.items.clone() }
    }

    /// Scores of the players still in, by name.
    pub fn scores(&self) -> BTreeMap<String, u32> {
        self.runners.iter().map(|r| (r.name.clone(), r.score)).collect()
    }

    fn move_runner(&mut self, index: usize, direction: Direction) -> Option<GameEvent> {
        let next = direction.step(self.runners[index].pos, self.map.width, self.map.height)?;
        if self.is_wall(next) || self.runners.iter().any(|r| r.pos == next) {
            return None;
        }
        let runner = &mut self.runners[index];
        runner.pos = next;
        let item = self.items.iter().position(|item| *item == next)?;
        self.items.swap_remove(item);
        runner.score += 1;
        if runner.score >= self.target {
            self.winner = Some(runner.name.clone());
        }
        Some(GameEvent::Scored { name: runner.name.clone(), at: next, score: runner.score })
    }

    fn is_wall(&self, pos: Pos) -> bool {
        self.wall[usize::from(pos.y) * usize::from(self.map.width) + usize::from(pos.x)]
    }

    fn is_free(&self, pos: Pos) -> bool {
        !self.is_wall(pos) && !self.runners.iter().any(|r| r.pos == pos) && !self.items.contains(&pos)
    }

    /// Corners first, then any free cell.
    fn start_position(&mut self, index: usize) -> Pos {
        let (w, h) = (self.map.width - 1, self.map.height - 1);
        let corners = [Pos { x: 0, y: 0 }, Pos { x: w, y: h }, Pos { x: w, y: 0 }, Pos { x: 0, y: h }];
        match corners.get(index) {
            Some(corner) if self.is_free(*corner) => *corner,
            _ => self.random_free_cell().unwrap_or(corners[0]),
        }
    }

    /// Keeps one more item on the board than there are players.
    fn refill_items(&mut self) {
        while self.items.len() < self.runners.len() + 1 {
            match self.random_free_cell() {
                Some(pos) => self.items.push(pos),
                None => break,
            }
        }
    }

    /// A random free cell: a few random tries, then the first free one.
    fn random_free_cell(&mut self) -> Option<Pos> {
        let (width, height) = (self.map.width, self.map.height);
        for _ in 0..64 {
            let pos = Pos { x: self.rng.u16(..width), y: self.rng.u16(..height) };
            if self.is_free(pos) {
                return Some(pos);
            }
        }
        (0..height).flat_map(|y| (0..width).map(move |x| Pos { x, y })).find(|pos| self.is_free(*pos))
    }
}

/// The standard layout: three short walls to run around.
pub fn standard_map() -> ArenaMap {
    let vertical = |x: u16, ys: std::ops::RangeInclusive<u16>| ys.map(move |y| Pos { x, y });
    let horizontal = |y: u16, xs: std::ops::RangeInclusive<u16>| xs.map(move |x| Pos { x, y });
    let walls = vertical(5, 2..=6).chain(vertical(14, 3..=7)).chain(horizontal(5, 8..=11)).collect();
    ArenaMap { width: WIDTH, height: HEIGHT, walls }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_players() -> Arena {
        Arena::new(&[(1, "ann".into()), (2, "bo".into())], 2, 7)
    }

    #[test]
    fn players_start_in_opposite_corners_with_items_on_the_board() {
        let arena = two_players();
        let snapshot = arena.snapshot();
        assert_eq!(snapshot.players[0].pos, Pos { x: 0, y: 0 });
        assert_eq!(snapshot.players[1].pos, Pos { x: WIDTH - 1, y: HEIGHT - 1 });
        assert_eq!(snapshot.items.len(), 3);
    }

    #[test]
    fn walls_edges_and_players_block_moves() {
        let mut arena = two_players();
        arena.step(&BTreeMap::from([(1, Direction::Up), (2, Direction::Right)]));
        let snapshot = arena.snapshot();
        assert_eq!(snapshot.players[0].pos, Pos { x: 0, y: 0 });
        assert_eq!(snapshot.players[1].pos, Pos { x: WIDTH - 1, y: HEIGHT - 1 });
        arena.runners[0].pos = Pos { x: 4, y: 3 };
        arena.step(&BTreeMap::from([(1, Direction::Right)]));
        assert_eq!(arena.snapshot().players[0].pos, Pos { x: 4, y: 3 }, "a wall stands at 5,3");
    }

    #[test]
    fn collecting_items_scores_and_the_target_wins() {
        let mut arena = two_players();
        for _ in 0..2 {
            arena.items[0] = Pos { x: 1, y: 0 };
            arena.runners[0].pos = Pos { x: 0, y: 0 };
            let events = arena.step(&BTreeMap::from([(1, Direction::Right)]));
            assert!(matches!(&events[..], [GameEvent::Scored { name, .. }] if name == "ann"), "{events:?}");
        }
        assert_eq!(arena.winner(), Some("ann"));
        assert_eq!(arena.scores()["ann"], 2);
        assert_eq!(arena.snapshot().items.len(), 3, "items respawn");
    }
}
