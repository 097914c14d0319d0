//! A bot player: it walks the shortest path to the nearest item, with a
//! little randomness so that bots do not tie forever.
//!
//! The loop is the usual event loop: read the next event, handle it, and
//! only then read again. Reading is what paces the server: if the bot falls
//! behind, its window fills and the server skips snapshots for it.

use std::collections::{HashSet, VecDeque};

use tokio::net::ToSocketAddrs;

use super::client::{ClientError, ClientOptions, Outcome, Session};
use super::protocol::{Direction, FinalScores, GameEvent, Input, Pos};
use super::view::View;

/// How a bot plays.
#[derive(Clone, Debug)]
pub struct BotOptions {
    /// Connection and window settings.
    pub client: ClientOptions,
    /// Move at most once every `pace` ticks (1 is as fast as the server allows).
    pub pace: u64,
    /// Chance, from 0 to 1, of a random step instead of the best one.
    pub wander: f64,
    /// Ticks of the round to wait before the first move (a head start for
    /// the other players).
    pub warmup: u64,
}

impl Default for BotOptions {
    /// A quick bot, for bot-only games (the demo, the tests): a move every
    /// other tick, 15% of them random, from the first tick.
    fn default() -> Self {
        BotOptions { client: ClientOptions::default(), pace: 2, wander: 0.15, warmup: 0 }
    }
}

impl BotOptions {
    /// A bot a person at the keyboard can beat: at the default 20 Hz it
    /// waits 3 s before its first move, then moves four times a second
    /// (every 5th tick) with 30% of its steps random. A person pressing
    /// keys steadily moves faster than that; the bot never hesitates.
    pub fn against_people() -> Self {
        BotOptions { pace: 5, wander: 0.3, warmup: 60, ..BotOptions::default() }
    }
}

/// Joins `addr` as `name`, plays one round with the default options, and
/// returns the final scores.
///
/// # Errors
///
/// See [`play_with`].
pub async fn play(addr: impl ToSocketAddrs, name: &str) -> Result<FinalScores, ClientError> {
    let outcome = play_with(addr, name, &BotOptions::default(), |_, _| {}).await?;
    Ok(outcome.scores)
}

/// Joins `addr` as `name` and plays until the round ends; `watch` sees every
/// event together with the updated view (to print or draw it).
///
/// # Errors
///
/// A refused join, a lost connection (the events sequence ends with
/// `Disconnected`), or the server closing the events early.
pub async fn play_with<W>(
    addr: impl ToSocketAddrs,
    name: &str,
    options: &BotOptions,
    mut watch: W,
) -> Result<Outcome, ClientError>
where
    W: FnMut(&GameEvent, &View),
{
    let mut session = Session::join(addr, name, &options.client).await?;
    let mut view = View::new();
    let mut brain = Brain::new(name, options);
    loop {
        let event = session.next_event().await?;
        view.apply(&event);
        watch(&event, &view);
        match event {
            GameEvent::EndGame(scores) => return Ok(session.finish(scores).await),
            GameEvent::Snapshot(snapshot) => {
                if let Some(direction) = brain.decide(snapshot.tick, &view) {
                    // A move that cannot go out means the round is over for
                    // us or the server is gone; the next event will say which.
                    session.send(Input::Move(direction)).await;
                }
            }
            _ => {}
        }
    }
}

/// The bot's decisions.
struct Brain {
    name: String,
    pace: u64,
    wander: f64,
    warmup: u64,
    next_tick: u64,
    rng: fastrand::Rng,
}

impl Brain {
    fn new(name: &str, options: &BotOptions) -> Self {
        let (pace, wander) = (options.pace.max(1), options.wander.clamp(0.0, 1.0));
        let warmup = options.warmup;
        Brain { name: name.to_string(), pace, wander, warmup, next_tick: 0, rng: fastrand::Rng::new() }
    }

    /// The next step, if it is time to move.
    fn decide(&mut self, tick: u64, view: &View) -> Option<Direction> {
        if tick < self.next_tick || tick < self.warmup {
            return None;
        }
        self.next_tick = tick + self.pace;
        let round = view.round.as_ref()?;
        let me = view.position_of(&self.name)?;
        if self.rng.f64() < self.wander {
            return Some(Direction::ALL[self.rng.usize(..4)]);
        }
        let mut blocked: HashSet<Pos> = round.map.walls.iter().copied().collect();
        blocked.extend(round.snapshot.players.iter().filter(|p| p.name != self.name).map(|p| p.pos));
        let items: HashSet<Pos> = round.snapshot.items.iter().copied().collect();
        first_step(me, &items, &blocked, (round.map.width, round.map.height))
            .or_else(|| Some(Direction::ALL[self.rng.usize(..4)]))
    }
}

/// The first step of a shortest path from `from` to any of `goals`,
/// avoiding `blocked` cells (breadth-first search on the grid).
pub fn first_step(from: Pos, goals: &HashSet<Pos>, blocked: &HashSet<Pos>, size: (u16, u16)) -> Option<Direction> {
    let mut seen = HashSet::from([from]);
    let mut queue: VecDeque<(Pos, Direction)> = VecDeque::new();
    for direction in Direction::ALL {
        if let Some(next) = direction.step(from, size.0, size.1) {
            if !blocked.contains(&next) && seen.insert(next) {
                queue.push_back((next, direction));
            }
        }
    }
    while let Some((pos, first)) = queue.pop_front() {
        if goals.contains(&pos) {
            return Some(first);
        }
        for direction in Direction::ALL {
            let Some(next) = direction.step(pos, size.0, size.1) else { continue };
            if !blocked.contains(&next) && seen.insert(next) {
                queue.push_back((next, first));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_goes_around_a_wall() {
        // . # G
        // . # .
        // S . .
        let blocked = HashSet::from([Pos { x: 1, y: 0 }, Pos { x: 1, y: 1 }]);
        let goals = HashSet::from([Pos { x: 2, y: 0 }]);
        assert_eq!(first_step(Pos { x: 0, y: 2 }, &goals, &blocked, (3, 3)), Some(Direction::Right));
        assert_eq!(first_step(Pos { x: 0, y: 0 }, &goals, &blocked, (3, 3)), Some(Direction::Down));
    }

    #[test]
    fn a_bot_waits_out_its_warmup_then_keeps_its_pace() {
        use crate::game::arena::standard_map;
        use crate::game::protocol::{PlayerState, Snapshot};
        let options = BotOptions { pace: 5, wander: 0.0, warmup: 60, ..BotOptions::default() };
        let mut brain = Brain::new("bo", &options);
        let mut view = View::new();
        view.apply(&GameEvent::RoundStarted { round: 1, target: 3, map: standard_map(), players: vec!["bo".into()] });
        let mut moved = Vec::new();
        for tick in 1..=80 {
            let players = vec![PlayerState { name: "bo".into(), pos: Pos { x: 0, y: 0 }, score: 0 }];
            view.apply(&GameEvent::Snapshot(Snapshot { tick, players, items: vec![Pos { x: 19, y: 9 }] }));
            if brain.decide(tick, &view).is_some() {
                moved.push(tick);
            }
        }
        assert_eq!(moved, [60, 65, 70, 75, 80]);
    }

    #[test]
    fn an_unreachable_goal_gives_no_step() {
        let blocked = HashSet::from([Pos { x: 1, y: 0 }, Pos { x: 0, y: 1 }]);
        let goals = HashSet::from([Pos { x: 2, y: 2 }]);
        assert_eq!(first_step(Pos { x: 0, y: 0 }, &goals, &blocked, (3, 3)), None);
    }
}
