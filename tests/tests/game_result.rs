//! The end of a round as a player sees it: who won ("you won" / "bot won"),
//! the last picture of the arena kept on screen, and event lines wrapped to
//! the events pane. The logic, not the terminal.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use rpc_examples::game::arena::standard_map;
use rpc_examples::game::bot::{self, BotOptions};
use rpc_examples::game::client::{ClientOptions, Session};
use rpc_examples::game::protocol::{FinalScores, GameEvent, PlayerState, Pos, Snapshot};
use rpc_examples::game::server::{self, ServerOptions};
use rpc_examples::game::view::{board_text, describe, final_text, result_line, wrap_tail, View};
use tokio::net::TcpListener;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

fn final_scores(winner: Option<&str>, scores: &[(&str, u32)]) -> FinalScores {
    let scores: BTreeMap<String, u32> = scores.iter().map(|(name, score)| (name.to_string(), *score)).collect();
    FinalScores { round: 1, winner: winner.map(String::from), scores, left: vec![] }
}

#[test]
fn the_result_says_who_won_from_each_side() {
    let bot_won = final_scores(Some("bot"), &[("bot", 10), ("you", 4)]);
    assert_eq!(result_line(&bot_won, Some("you")), "round 1: bot won");
    assert_eq!(result_line(&bot_won, Some("bot")), "round 1: you won");
    assert_eq!(result_line(&bot_won, None), "round 1: bot won");
    let you_won = final_scores(Some("you"), &[("bot", 7), ("you", 10)]);
    assert_eq!(result_line(&you_won, Some("you")), "round 1: you won");
    // The loser sees the winner's name, which here happens to be "you".
    assert_eq!(result_line(&you_won, Some("bot")), "round 1: you won");
    let ann_won = final_scores(Some("ann"), &[("ann", 10), ("bot", 3)]);
    assert_eq!(result_line(&ann_won, Some("ann")), "round 1: you won");
    assert_eq!(result_line(&ann_won, Some("bot")), "round 1: ann won");
    let nobody = final_scores(None, &[("you", 0)]);
    assert_eq!(result_line(&nobody, Some("you")), "round 1: nobody won");
}

#[test]
fn the_event_line_of_the_end_reads_as_english() {
    let you_won = final_scores(Some("you"), &[("bot", 7), ("you", 10)]);
    let line = describe(&GameEvent::EndGame(you_won));
    assert_eq!(line, "round 1 over: you won; final scores: bot=7 you=10");
    let bot_won = describe(&GameEvent::EndGame(final_scores(Some("bot"), &[("bot", 10)])));
    assert!(bot_won.starts_with("round 1 over: bot won;"), "{bot_won}");
}

#[test]
fn the_view_keeps_the_last_picture_after_the_round_ends() {
    let mut view = View::new();
    let players = vec!["bot".to_string(), "you".to_string()];
    view.apply(&GameEvent::RoundStarted { round: 1, target: 10, map: standard_map(), players });
    let last = Snapshot {
        tick: 240,
        players: vec![
            PlayerState { name: "bot".into(), pos: Pos { x: 3, y: 2 }, score: 9 },
            PlayerState { name: "you".into(), pos: Pos { x: 17, y: 8 }, score: 4 },
        ],
        items: vec![Pos { x: 0, y: 9 }],
    };
    view.apply(&GameEvent::Snapshot(last.clone()));
    assert_eq!(final_text(&view, Some("you")), None, "no final picture before the end");

    // The snapshot of the winning step was skipped: the end still shows the final scores.
    view.apply(&GameEvent::EndGame(final_scores(Some("bot"), &[("bot", 10), ("you", 4)])));
    let round = view.round.as_ref().expect("the round's picture is kept");
    assert_eq!(round.snapshot.tick, 240);
    assert_eq!(view.position_of("bot"), Some(Pos { x: 3, y: 2 }));
    assert_eq!(view.position_of("you"), Some(Pos { x: 17, y: 8 }));
    assert_eq!(round.snapshot.items, last.items);
    let scores: Vec<u32> = round.snapshot.players.iter().map(|p| p.score).collect();
    assert_eq!(scores, [10, 4]);

    let text = final_text(&view, Some("you")).expect("a final picture");
    let board = board_text(round);
    assert!(text.starts_with(&board), "{text}");
    assert_eq!(&text[board.len()..], "round 1: bot won\n");
    assert_eq!(board.lines().count(), usize::from(standard_map().height));
    assert_eq!(board.lines().nth(2).and_then(|row| row.chars().nth(3)), Some('b'), "{board}");
    assert!(view.log.back().is_some_and(|line| line.contains("bot won")), "{:?}", view.log);
}

#[test]
fn long_event_lines_wrap_and_the_newest_rows_stay_visible() {
    let long = "carol left: its events sequence ended (disconnected: the connection was closed by the peer)";
    let lines = ["ann scored at 2,6 (now 2)", long, "round 1 over: bot won; final scores: ann=2 bot=10 carol=1"];
    let rows = wrap_tail(lines, 20, 100);
    assert!(rows.iter().all(|row| row.chars().count() <= 20), "{rows:#?}");
    assert_eq!(rows.join(" "), lines.join(" "), "nothing is lost when wrapping at spaces");
    assert_eq!(rows.first().map(String::as_str), Some("ann scored at 2,6"));

    // Only the last rows fit: they end with the newest line, whole.
    let tail = wrap_tail(lines, 20, 3);
    assert_eq!(tail, ["round 1 over: bot", "won; final scores:", "ann=2 bot=10 carol=1"]);
    let tail = wrap_tail(lines, 20, 4);
    assert_eq!(tail.first().map(String::as_str), Some("closed by the peer)"));

    // A word longer than a row is cut, not dropped.
    let cut = wrap_tail(["abcdefghijklmnopqrstuvwxyz"], 10, 10);
    assert_eq!(cut, ["abcdefghij", "klmnopqrst", "uvwxyz"]);
}

/// The winning step's snapshot reaches even a reader whose window is full,
/// so the final picture shows the winner at the target score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_still_gets_the_last_snapshot_of_the_round() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServerOptions {
        players: 2,
        target_score: 3,
        rounds: Some(1),
        tick: Duration::from_millis(5),
        linger: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    let server = tokio::spawn(server::run(listener, options));
    let quick = BotOptions { pace: 1, ..BotOptions::default() };
    let bot = tokio::spawn(async move { bot::play_with(addr, "bot", &quick, |_, _| {}).await });
    // A window of one: every Scored event fills it, so the snapshot of the
    // same tick is skipped unless the server always sends the last one.
    let slow = ClientOptions { events_capacity: 1, events_batch: 1, ..ClientOptions::default() };
    let mut session = bounded("join", Session::join(addr, "sloth", &slow)).await.unwrap();
    let mut last_snapshot = None;
    let scores = loop {
        match bounded("event", session.next_event()).await.unwrap() {
            GameEvent::Snapshot(snapshot) => last_snapshot = Some(snapshot),
            GameEvent::EndGame(scores) => break scores,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let winner = scores.winner.clone().expect("someone reached 3");
    let last = last_snapshot.expect("snapshots arrived");
    let shown = last.players.iter().find(|p| p.name == winner).map(|p| p.score);
    assert_eq!(shown, Some(3), "the last snapshot shows the winning score: {last:?}");
    bounded("finish", session.finish(scores)).await;
    bounded("bot", bot).await.unwrap().unwrap();
    assert_eq!(bounded("server", server).await.unwrap().unwrap(), 1);
}
