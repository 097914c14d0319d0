//! The game example end to end over TCP loopback: whole rounds with bots,
//! refused joins, round after round, replays, and a slow reader.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rpc_examples::game::bot::{self, BotOptions};
use rpc_examples::game::client::{connect, ClientError, ClientOptions, Session};
use rpc_examples::game::protocol::{FinalScores, GameError, GameEvent};
use rpc_examples::game::replay;
use rpc_examples::game::server::{self, ServerOptions};
use rpc_examples::game::view::{describe, View};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

fn fast(players: u32, target_score: u32, rounds: Option<u32>) -> ServerOptions {
    let (tick, linger) = (Duration::from_millis(5), Duration::from_secs(2));
    ServerOptions { players, target_score, rounds, tick, linger, ..ServerOptions::default() }
}

async fn start(options: ServerOptions) -> (SocketAddr, JoinHandle<std::io::Result<u32>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(server::run(listener, options)))
}

fn quick_bot() -> BotOptions {
    BotOptions { pace: 1, ..BotOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bots_play_a_round_to_end_game_and_agree_on_the_scores() {
    let (addr, server) = start(fast(3, 5, Some(1))).await;
    let options = quick_bot();
    let play = |name: &'static str| {
        let options = options.clone();
        tokio::spawn(async move { bot::play_with(addr, name, &options, |_, _| {}).await })
    };
    let bots = [play("ann"), play("bo"), play("cy")];
    let mut outcomes = Vec::new();
    for handle in bots {
        outcomes.push(bounded("bot", handle).await.unwrap().unwrap());
    }
    let scores = &outcomes[0].scores;
    for outcome in &outcomes {
        assert_eq!(&outcome.scores, scores, "every client sees the same final scores");
        assert!(outcome.moves_taken.as_ref().is_ok_and(|n| *n > 0), "{:?}", outcome.moves_taken);
    }
    let winner = scores.winner.clone().expect("someone won");
    assert_eq!(scores.scores[&winner], 5, "{scores}");
    assert!(scores.scores.values().all(|s| *s <= 5), "{scores}");
    assert_eq!(scores.scores.len(), 3);
    assert!(scores.left.is_empty());
    let log = String::from_utf8(outcomes[0].replay.as_ref().unwrap().clone()).unwrap();
    assert!(log.starts_with("round 1 started: first to 5 wins"), "{log}");
    assert_eq!(log.lines().last(), Some(describe(&GameEvent::EndGame(scores.clone())).as_str()));
    assert_eq!(bounded("server", server).await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn joins_are_refused_with_typed_errors_even_when_pipelined() {
    let (addr, server) = start(fast(3, 5, None)).await;
    let options = ClientOptions::default();
    let _ann = bounded("join", Session::join(addr, "ann", &options)).await.unwrap();
    let taken = bounded("join", Session::join(addr, "ann", &options)).await.err();
    assert!(matches!(taken, Some(ClientError::Game(GameError::NameTaken(ref n))) if n == "ann"), "{taken:?}");
    let bad = bounded("join", Session::join(addr, "no spaces", &options)).await.err();
    assert!(matches!(bad, Some(ClientError::Game(GameError::BadName))), "{bad:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_plays_round_after_round_then_refuses_new_players() {
    let (addr, server) = start(fast(2, 3, Some(2))).await;
    let (early, game) = connect(addr, server::keepalive_config()).await.unwrap();
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let (a, b) = bounded("round", async { tokio::join!(bot::play(addr, "ann"), bot::play(addr, "bo")) }).await;
        let (a, b): (FinalScores, FinalScores) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        rounds.push(a.round);
    }
    assert_eq!(rounds, [1, 2]);
    // A client connected before the end may still ask: the answer is no.
    let late = bounded("join", game.join("cy".into())).await.err();
    assert_eq!(late, Some(GameError::Closed));
    early.close();
    assert_eq!(bounded("server", server).await.unwrap().unwrap(), 2);
}

#[tokio::test]
async fn a_replay_downloads_as_bytes_and_an_unknown_round_is_an_error() {
    let (addr, server) = start(fast(1, 2, None)).await;
    let outcome = bounded("bot", bot::play_with(addr, "solo", &quick_bot(), |_, _| {})).await.unwrap();
    let (_connection, game) = connect(addr, server::keepalive_config()).await.unwrap();
    let log = bounded("replay", replay::download(&game, 1)).await.unwrap();
    assert_eq!(Ok(&log), outcome.replay.as_ref().map_err(|e| e.to_string()));
    assert!(String::from_utf8(log).unwrap().contains("solo scored at"));
    let missing = bounded("replay", replay::download(&game, 9)).await.unwrap_err();
    assert!(missing.to_string().contains("round 9 has no replay"), "{missing}");
    server.abort();
}

/// A reader that cannot keep up gets fewer snapshots, never fewer scores:
/// the server sees its full window and skips the superseded snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_fewer_snapshots_but_every_score() {
    let (addr, server) = start(fast(3, 8, Some(1))).await;
    let bots = [("ann", quick_bot()), ("bo", quick_bot())]
        .map(|(name, options)| tokio::spawn(async move { bot::play_with(addr, name, &options, |_, _| {}).await }));
    let slow = ClientOptions { events_capacity: 2, events_batch: 1, ..ClientOptions::default() };
    let mut session = bounded("join", Session::join(addr, "sloth", &slow)).await.unwrap();
    let (mut view, mut scored) = (View::new(), std::collections::BTreeMap::<String, u32>::new());
    let scores = loop {
        let event = bounded("event", session.next_event()).await.unwrap();
        view.apply(&event);
        match event {
            GameEvent::Scored { name, .. } => *scored.entry(name).or_default() += 1,
            GameEvent::EndGame(scores) => break scores,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    // A player who never scored (the reader, or a bot beaten to the target) has no event.
    for name in scores.scores.keys() {
        scored.entry(name.clone()).or_default();
    }
    assert_eq!(scored, scores.scores, "every Scored event arrived");
    let skipped = view.round.as_ref().map_or(0, |round| round.skipped);
    assert!(skipped > 0, "the server kept sending every snapshot to a slow reader");
    bounded("finish", session.finish(scores)).await;
    for handle in bots {
        bounded("bot", handle).await.unwrap().unwrap();
    }
    assert_eq!(bounded("server", server).await.unwrap().unwrap(), 1);
}

/// Capabilities are reference counted across the connection: when the
/// client drops its last `PlayerProxy`, the server drops the seat object,
/// which gives the seat up.
#[tokio::test]
async fn dropping_the_last_player_proxy_gives_the_seat_up() {
    let (addr, server) = start(fast(3, 5, None)).await;
    let mut ann = bounded("join", Session::join(addr, "ann", &ClientOptions::default())).await.unwrap();
    let (_connection, game) = connect(addr, server::keepalive_config()).await.unwrap();
    let bo = bounded("join", game.join("bo".into())).await.unwrap();
    wait_for_lobby(&mut ann, &["ann", "bo"]).await;
    drop(bo);
    wait_for_lobby(&mut ann, &["ann"]).await;
    let again = bounded("join", game.join("bo".into())).await;
    assert!(again.is_ok(), "the name is free again: {again:?}");
    server.abort();
}

async fn wait_for_lobby(session: &mut Session, names: &[&str]) {
    loop {
        if let GameEvent::Lobby { waiting, .. } = bounded("lobby", session.next_event()).await.unwrap() {
            if waiting == names {
                return;
            }
        }
    }
}
