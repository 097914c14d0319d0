//! The host: one task that owns every seat, the lobby and the round, and
//! runs the clock.
//!
//! RPC handlers never touch game state; they send a `Command` and the host
//! applies it between ticks. That keeps the rules single-threaded and the
//! locks out of the example. The host is also where the streams show their
//! manners:
//!
//! * **Fan-out with backpressure.** Each seat's events go into its own
//!   [`SequenceWriter`]. Score and roster events are always written;
//!   snapshots only when the reader's window has room (`flush` would not
//!   wait), so a slow client gets fewer snapshots instead of a growing queue.
//! * **Noticing who left.** A write to a cancelled sequence fails; the seat
//!   is removed and the others get [`GameEvent::PlayerLeft`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::FutureExt;
use rpc_core::{ErrorKind, RpcError, SequenceWriter};
use tokio::sync::{mpsc, oneshot};

use super::arena::{Arena, PlayerKey};
use super::protocol::{valid_name, Direction, FinalScores, GameError, GameEvent, MAX_SEATS};
use super::replay::Recording;

/// Moves a seat may have queued on the server (one is played per tick).
pub(crate) const MOVE_QUEUE: usize = 2;
/// Replays kept: the most recent rounds'.
const REPLAYS_KEPT: u32 = 16;

/// What the RPC handlers ask of the host.
pub(crate) enum Command {
    /// Take a seat; the reply carries the key and the seat's move queue.
    Join { name: String, reply: oneshot::Sender<Result<Ticket, GameError>> },
    /// Send this seat's events into `events` from now on.
    Attach { key: PlayerKey, events: SequenceWriter<GameEvent> },
    /// The seat is gone, for `reason`.
    Leave { key: PlayerKey, reason: String },
    /// The log of a finished round, if there is one.
    Replay { round: u32, reply: oneshot::Sender<Option<bytes::Bytes>> },
}

/// A seat, as handed to the `join` handler.
pub(crate) struct Ticket {
    pub(crate) key: PlayerKey,
    pub(crate) moves: mpsc::Sender<Direction>,
}

/// The rules a host plays by.
#[derive(Clone, Debug)]
pub(crate) struct HostRules {
    pub(crate) players: u32,
    pub(crate) target: u32,
    pub(crate) rounds: Option<u32>,
    pub(crate) verbose: bool,
}

/// A player known to the host, waiting or playing.
struct Seat {
    name: String,
    events: Option<SequenceWriter<GameEvent>>,
    moves: mpsc::Receiver<Direction>,
    playing: bool,
}

/// The round being played.
struct Round {
    number: u32,
    arena: Arena,
    recording: Recording,
    left: Vec<String>,
}

/// The state machine behind the server; see the module docs.
pub(crate) struct Host {
    rules: HostRules,
    seats: BTreeMap<PlayerKey, Seat>,
    next_key: PlayerKey,
    round: Option<Round>,
    played: u32,
    archive: HashMap<u32, bytes::Bytes>,
    gone: Vec<(PlayerKey, String)>,
    all_played: Option<oneshot::Sender<u32>>,
}

impl Host {
    /// A host with no players; `all_played` fires when the last round ends.
    pub(crate) fn new(rules: HostRules, all_played: oneshot::Sender<u32>) -> Self {
        let (seats, archive, gone) = (BTreeMap::new(), HashMap::new(), Vec::new());
        Host { rules, seats, next_key: 1, round: None, played: 0, archive, gone, all_played: Some(all_played) }
    }

    /// Applies commands and ticks every `tick` until every command sender is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return,
                },
                _ = ticker.tick() => self.tick(),
            }
            self.settle();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Join { name, reply } => {
                let _ = reply.send(self.join(name));
            }
            Command::Attach { key, events } => self.attach(key, events),
            Command::Leave { key, reason } => self.gone.push((key, reason)),
            Command::Replay { round, reply } => {
                let _ = reply.send(self.archive.get(&round).cloned());
            }
        }
    }

    fn closed(&self) -> bool {
        self.rules.rounds.is_some_and(|rounds| self.played >= rounds)
    }

    fn join(&mut self, name: String) -> Result<Ticket, GameError> {
        if self.closed() {
            return Err(GameError::Closed);
        }
        if !valid_name(&name) {
            return Err(GameError::BadName);
        }
        if self.seats.values().any(|seat| seat.name == name) {
            return Err(GameError::NameTaken(name));
        }
        if self.seats.len() >= MAX_SEATS {
            return Err(GameError::Full);
        }
        let key = self.next_key;
        self.next_key += 1;
        let (moves, queue) = mpsc::channel(MOVE_QUEUE);
        self.say(format!("{name} joined"));
        self.seats.insert(key, Seat { name, events: None, moves: queue, playing: false });
        self.broadcast_lobby();
        Ok(Ticket { key, moves })
    }

    /// Hooks up a seat's event sequence and tells it where things stand.
    fn attach(&mut self, key: PlayerKey, events: SequenceWriter<GameEvent>) {
        let Some(seat) = self.seats.get_mut(&key) else {
            let gone = RpcError::new(ErrorKind::Cancelled, "this seat is no longer in the game");
            tokio::spawn(events.close(Some(gone)));
            return;
        };
        if let Some(old) = seat.events.replace(events) {
            tokio::spawn(old.close(Some(RpcError::cancelled("replaced by a newer events() call"))));
        }
        let greeting = match &self.round {
            Some(round) if seat.playing => vec![round_started(round), GameEvent::Snapshot(round.arena.snapshot())],
            _ => vec![self.lobby_event()],
        };
        for event in &greeting {
            self.deliver(key, event);
        }
    }

    fn tick(&mut self) {
        if self.round.is_some() {
            self.play_tick();
        } else if !self.closed() {
            self.start_round_if_ready();
        }
    }

    fn start_round_if_ready(&mut self) {
        let waiting: Vec<PlayerKey> = self.seats.keys().copied().take(self.rules.players as usize).collect();
        if waiting.len() < self.rules.players.max(1) as usize {
            return;
        }
        let mut players = Vec::new();
        for key in &waiting {
            let Some(seat) = self.seats.get_mut(key) else { continue };
            seat.playing = true;
            while seat.moves.try_recv().is_ok() {} // moves typed in the lobby are stale
            players.push((*key, seat.name.clone()));
        }
        let arena = Arena::new(&players, self.rules.target, fastrand::u64(..));
        let round = Round { number: self.played + 1, arena, recording: Recording::new(), left: Vec::new() };
        let started = round_started(&round);
        self.say(crate::game::view::describe(&started));
        self.round = Some(round);
        self.broadcast_round(&started);
        self.broadcast_lobby();
    }

    /// One tick of the round: take one queued move per player, step the
    /// arena, tell everyone, and end the round when someone won.
    fn play_tick(&mut self) {
        let Some(round) = &mut self.round else { return };
        let mut moves = BTreeMap::new();
        for key in round.arena.keys() {
            if let Some(direction) = self.seats.get_mut(&key).and_then(|seat| seat.moves.try_recv().ok()) {
                moves.insert(key, direction);
            }
        }
        let scored = round.arena.step(&moves);
        let snapshot = GameEvent::Snapshot(round.arena.snapshot());
        let over = round.arena.winner().is_some() || round.arena.is_empty();
        for event in &scored {
            self.broadcast_round(event);
        }
        if over {
            // The last picture of the round goes to everyone, behind or not.
            self.broadcast_round(&snapshot);
            self.end_round();
        } else {
            self.offer_round(&snapshot);
        }
    }

    fn end_round(&mut self) {
        let Some(mut round) = self.round.take() else { return };
        let winner = round.arena.winner().map(str::to_string);
        let scores = round.arena.scores();
        let end = GameEvent::EndGame(FinalScores { round: round.number, winner, scores, left: round.left.clone() });
        self.say(crate::game::view::describe(&end));
        round.recording.record(&end);
        for key in round.arena.keys() {
            self.deliver(key, &end);
            if let Some(seat) = self.seats.remove(&key) {
                if let Some(events) = seat.events {
                    // Closing (not dropping) lets the reader get `EndGame` and then the end.
                    tokio::spawn(events.close(None));
                }
            }
        }
        self.archive.insert(round.number, round.recording.finish());
        self.archive.retain(|number, _| number + REPLAYS_KEPT > round.number);
        self.played += 1;
        if self.closed() {
            self.close_lobby();
        }
    }

    /// After the last round: nobody waiting will play, so let them go.
    fn close_lobby(&mut self) {
        for (_, seat) in std::mem::take(&mut self.seats) {
            if let Some(events) = seat.events {
                tokio::spawn(events.close(Some(RpcError::cancelled(GameError::Closed.to_string()))));
            }
        }
        if let Some(all_played) = self.all_played.take() {
            let _ = all_played.send(self.played);
        }
    }

    /// Removes the seats that left, telling the others; removals can make
    /// more writes fail, so this repeats until nobody else is gone.
    fn settle(&mut self) {
        while let Some((key, reason)) = self.gone.pop() {
            let Some(seat) = self.seats.remove(&key) else { continue };
            self.say(format!("{} left: {reason}", seat.name));
            if let Some(events) = seat.events {
                tokio::spawn(events.close(Some(RpcError::cancelled(format!("you left the game: {reason}")))));
            }
            match &mut self.round {
                Some(round) if seat.playing => {
                    round.arena.remove(key);
                    round.left.push(seat.name.clone());
                    self.broadcast_round(&GameEvent::PlayerLeft { name: seat.name, reason });
                }
                _ => self.broadcast_lobby(),
            }
        }
    }

    fn lobby_event(&self) -> GameEvent {
        let waiting = self.seats.values().filter(|seat| !seat.playing).map(|seat| seat.name.clone()).collect();
        GameEvent::Lobby { waiting, needed: self.rules.players }
    }

    fn broadcast_lobby(&mut self) {
        let event = self.lobby_event();
        let waiting: Vec<PlayerKey> = self.seats.iter().filter(|(_, seat)| !seat.playing).map(|(k, _)| *k).collect();
        for key in waiting {
            self.deliver(key, &event);
        }
    }

    /// Records `event` and writes it to everyone in the round.
    fn broadcast_round(&mut self, event: &GameEvent) {
        let Some(round) = &mut self.round else { return };
        round.recording.record(event);
        for key in round.arena.keys() {
            self.deliver(key, event);
        }
    }

    /// Like [`Host::broadcast_round`], but only to readers with room in
    /// their window: a reader that is behind skips this (superseded) event.
    fn offer_round(&mut self, event: &GameEvent) {
        let Some(round) = &mut self.round else { return };
        round.recording.record(event);
        for key in round.arena.keys() {
            let Some(events) = self.seats.get_mut(&key).and_then(|seat| seat.events.as_mut()) else { continue };
            match events.flush().now_or_never() {
                Some(Ok(())) => self.deliver(key, event),
                Some(Err(err)) => self.lost(key, err),
                None => {} // the window is full: skip it, the next snapshot supersedes it
            }
        }
    }

    /// Writes `event` to one seat; a failed write means the seat is gone.
    fn deliver(&mut self, key: PlayerKey, event: &GameEvent) {
        let Some(events) = self.seats.get_mut(&key).and_then(|seat| seat.events.as_mut()) else { return };
        if let Err(err) = events.write(event.clone()) {
            self.lost(key, err);
        }
    }

    fn lost(&mut self, key: PlayerKey, err: RpcError) {
        if let Some(seat) = self.seats.get_mut(&key) {
            seat.events = None;
        }
        self.gone.push((key, format!("its events sequence ended ({err})")));
    }

    fn say(&self, line: String) {
        if self.rules.verbose {
            eprintln!("{line}");
        }
    }
}

fn round_started(round: &Round) -> GameEvent {
    GameEvent::RoundStarted {
        round: round.number,
        target: round.arena.target(),
        map: round.arena.map().clone(),
        players: round.arena.names(),
    }
}
