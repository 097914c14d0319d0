//! The game client rides out dropped connections mid-round: every score
//! the server counted arrives as an event, through an edge that holds the
//! seat while a relay keeps cutting the client's link.

use std::time::Duration;

use rpc_examples::game::reconnect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_game_round_through_dropped_connections_loses_no_score() {
    let report = reconnect::demo(Duration::from_millis(10), 5, Duration::from_millis(120), false).await.unwrap();
    assert!(report.cuts >= 1, "the relay cut the link");
    assert!(report.outcome.resumes >= 1, "the client resumed after a cut");
    assert!(report.no_score_lost(), "{:?} vs {:?}", report.outcome.scored, report.outcome.scores);
    assert!(report.outcome.scores.scores.values().any(|&score| score == 5));
}
