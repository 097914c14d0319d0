//! The logic behind `game-demo` completes a round and returns the scores.

use std::time::Duration;

use rpc_examples::game::bot::BotOptions;
use rpc_examples::game::demo::{self, DemoOptions};
use rpc_examples::game::protocol::GameEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_a_round_and_returns_the_final_scores() {
    let options = DemoOptions {
        target_score: 3,
        tick: Duration::from_millis(5),
        bot: BotOptions { pace: 1, ..BotOptions::default() },
        ..DemoOptions::default()
    };
    let mut events = 0;
    let run = demo::run(&options, |event, _| {
        if !matches!(event, GameEvent::Snapshot(_)) {
            events += 1;
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the demo timed out").unwrap();
    assert_eq!(outcome.scores.scores.keys().collect::<Vec<_>>(), ["alice", "bob", "carol"]);
    assert_eq!(outcome.scores.scores.values().max(), Some(&3));
    assert!(outcome.scores.to_string().starts_with("final scores: alice="));
    assert!(outcome.replay.is_ok_and(|log| !log.is_empty()));
    assert!(events >= 3, "the watcher saw the lobby, the start and the end");
}
