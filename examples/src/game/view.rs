//! What a client knows about the game, rebuilt from the events it reads.
//!
//! The terminal UI draws a [`View`], the bot plans on one, and the plain
//! line output prints [`describe`] of each event. No networking here.

use std::collections::VecDeque;

use super::protocol::{ArenaMap, FinalScores, GameEvent, Pos, Snapshot};

/// How many recent event lines a [`View`] keeps.
pub const LOG_LINES: usize = 6;

/// A client's picture of the game.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Names waiting in the lobby.
    pub lobby: Vec<String>,
    /// Players a round needs.
    pub needed: u32,
    /// The round being played, once it started.
    pub round: Option<RoundView>,
    /// The most recent event lines, oldest first.
    pub log: VecDeque<String>,
    /// The result, once the round ended.
    pub finished: Option<FinalScores>,
}

/// The round part of a [`View`].
#[derive(Clone, Debug)]
pub struct RoundView {
    /// Round number.
    pub number: u32,
    /// The score that wins.
    pub target: u32,
    /// The layout.
    pub map: ArenaMap,
    /// The latest state seen.
    pub snapshot: Snapshot,
    /// Snapshots the server skipped for us so far (we were behind).
    pub skipped: u64,
}

impl View {
    /// A view of nothing yet.
    pub fn new() -> Self {
        View::default()
    }

    /// Updates the view with the next event.
    pub fn apply(&mut self, event: &GameEvent) {
        match event {
            GameEvent::Lobby { waiting, needed } => {
                self.lobby = waiting.clone();
                self.needed = *needed;
            }
            GameEvent::RoundStarted { round, target, map, players: _ } => {
                let snapshot = Snapshot { tick: 0, players: Vec::new(), items: Vec::new() };
                let map = map.clone();
                self.round = Some(RoundView { number: *round, target: *target, map, snapshot, skipped: 0 });
            }
            GameEvent::Snapshot(snapshot) => self.apply_snapshot(snapshot),
            GameEvent::EndGame(scores) => self.finish(scores),
            GameEvent::Scored { .. } | GameEvent::PlayerLeft { .. } => {}
        }
        if !matches!(event, GameEvent::Snapshot(_)) {
            self.push_log(describe(event));
        }
    }

    /// The round is over: keep its last picture (with the final scores,
    /// in case the last snapshot was skipped for us) and the result.
    fn finish(&mut self, scores: &FinalScores) {
        if let Some(round) = &mut self.round {
            for player in &mut round.snapshot.players {
                if let Some(score) = scores.scores.get(&player.name) {
                    player.score = *score;
                }
            }
        }
        self.finished = Some(scores.clone());
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        if let Some(round) = &mut self.round {
            round.skipped += snapshot.tick.saturating_sub(round.snapshot.tick + 1);
            round.snapshot = snapshot.clone();
        }
    }

    fn push_log(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// Where the player called `name` stands, if the round shows them.
    pub fn position_of(&self, name: &str) -> Option<Pos> {
        let round = self.round.as_ref()?;
        round.snapshot.players.iter().find(|p| p.name == name).map(|p| p.pos)
    }
}

/// One human-readable line for an event.
pub fn describe(event: &GameEvent) -> String {
    match event {
        GameEvent::Lobby { waiting, needed } => {
            format!("lobby: {} waiting, {needed} needed to start", list(waiting))
        }
        GameEvent::RoundStarted { round, target, players, .. } => {
            format!("round {round} started: first to {target} wins; players {}", list(players))
        }
        GameEvent::Snapshot(snapshot) => format!("tick {}", snapshot.tick),
        GameEvent::Scored { name, at, score } => format!("{name} scored at {at} (now {score})"),
        GameEvent::PlayerLeft { name, reason } => format!("{name} left: {reason}"),
        GameEvent::EndGame(scores) => match &scores.winner {
            Some(winner) => format!("round {} over: {winner} won; {scores}", scores.round),
            None => format!("round {} over: nobody won; {scores}", scores.round),
        },
    }
}

/// Who won, as `me` sees it: `round 1: you won` for the winner,
/// `round 1: bot won` for the others (and for a spectator, `me = None`), or
/// `round 1: nobody won`.
pub fn result_line(scores: &FinalScores, me: Option<&str>) -> String {
    match &scores.winner {
        Some(winner) if Some(winner.as_str()) == me => format!("round {}: you won", scores.round),
        Some(winner) => format!("round {}: {winner} won", scores.round),
        None => format!("round {}: nobody won", scores.round),
    }
}

/// The last picture of a finished round as plain text, to leave on the
/// screen once the UI is gone: the arena as it ended ([`board_text`]) and
/// the result as `me` sees it ([`result_line`]). `None` before the round
/// has ended.
pub fn final_text(view: &View, me: Option<&str>) -> Option<String> {
    let scores = view.finished.as_ref()?;
    let board = view.round.as_ref().map(board_text).unwrap_or_default();
    Some(format!("{board}{}\n", result_line(scores, me)))
}

/// The last `rows` rows of `lines` wrapped to `width` columns (at spaces
/// where possible, mid-word when a word is longer than a row), so that the
/// newest lines stay visible whole in a pane of that size.
pub fn wrap_tail<'a>(lines: impl IntoIterator<Item = &'a str>, width: usize, rows: usize) -> Vec<String> {
    let mut wrapped: Vec<String> = lines.into_iter().flat_map(|line| wrap(line, width.max(1))).collect();
    let excess = wrapped.len().saturating_sub(rows);
    wrapped.drain(..excess);
    wrapped
}

/// One line as rows of at most `width` characters.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut rows = Vec::new();
    let mut row = String::new();
    for word in line.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = row.chars().count();
        if used > 0 && used + 1 + word.len() > width {
            rows.push(std::mem::take(&mut row));
        } else if used > 0 {
            row.push(' ');
        }
        while row.chars().count() + word.len() > width {
            let room = width - row.chars().count();
            row.extend(word.drain(..room));
            rows.push(std::mem::take(&mut row));
        }
        row.extend(word);
    }
    rows.push(row);
    rows
}

/// The arena as plain text, one row per line: `#` walls, `*` items, a
/// player's initial, `.` empty cells.
pub fn board_text(round: &RoundView) -> String {
    let mut text = String::new();
    for y in 0..round.map.height {
        for x in 0..round.map.width {
            let pos = Pos { x, y };
            let player = round.snapshot.players.iter().find(|p| p.pos == pos);
            let glyph = match player.and_then(|p| p.name.chars().next()) {
                Some(initial) => initial,
                None if round.map.walls.contains(&pos) => '#',
                None if round.snapshot.items.contains(&pos) => '*',
                None => '.',
            };
            text.push(glyph);
        }
        text.push('\n');
    }
    text
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "nobody".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::arena::standard_map;
    use crate::game::protocol::PlayerState;

    #[test]
    fn a_view_follows_the_round_and_counts_skipped_snapshots() {
        let mut view = View::new();
        view.apply(&GameEvent::RoundStarted { round: 1, target: 3, map: standard_map(), players: vec!["a".into()] });
        let at = |tick, x| {
            let players = vec![PlayerState { name: "a".into(), pos: Pos { x, y: 0 }, score: 0 }];
            GameEvent::Snapshot(Snapshot { tick, players, items: vec![] })
        };
        view.apply(&at(1, 1));
        view.apply(&at(4, 2));
        assert_eq!(view.position_of("a"), Some(Pos { x: 2, y: 0 }));
        assert_eq!(view.round.as_ref().map(|r| r.skipped), Some(2));
        assert_eq!(view.log.len(), 1, "snapshots are not logged");
    }
}
