//! A player who leaves mid-round: its cancelled sequences tell the server,
//! which removes the seat and tells the others; the round goes on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::Sequence;
use rpc_examples::game::bot::{self, BotOptions};
use rpc_examples::game::client::{connect, ClientError, ClientOptions, Outcome, Session};
use rpc_examples::game::protocol::GameEvent;
use rpc_examples::game::server::{self, keepalive_config, ServerOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

type Departures = Arc<Mutex<Vec<(String, String)>>>;
type Stayer = JoinHandle<Result<Outcome, ClientError>>;

/// Starts a three-seat server and two bots that record every `PlayerLeft`.
async fn start_with_two_stayers() -> (SocketAddr, JoinHandle<std::io::Result<u32>>, [Stayer; 2], Departures) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServerOptions {
        players: 3,
        target_score: 8,
        rounds: Some(1),
        tick: Duration::from_millis(10),
        linger: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    let server = tokio::spawn(server::run(listener, options));
    let departures = Departures::default();
    let stayer = |name: &'static str| {
        let departures = departures.clone();
        let options = BotOptions { pace: 1, ..BotOptions::default() };
        tokio::spawn(async move {
            bot::play_with(addr, name, &options, |event, _| {
                if let GameEvent::PlayerLeft { name, reason } = event {
                    departures.lock().unwrap().push((name.clone(), reason.clone()));
                }
            })
            .await
        })
    };
    (addr, server, [stayer("ann"), stayer("bo")], departures)
}

/// The stayers finish without "cy"; each saw "cy" leave; returns the reasons.
async fn finish_without_cy(stayers: [Stayer; 2], departures: Departures) -> Vec<String> {
    for handle in stayers {
        let outcome = bounded("bot", handle).await.unwrap().unwrap();
        assert_eq!(outcome.scores.left, ["cy"], "the server recorded the departure");
        assert_eq!(outcome.scores.scores.keys().collect::<Vec<_>>(), ["ann", "bo"]);
        assert_eq!(outcome.scores.winner.as_ref().map(|w| outcome.scores.scores[w]), Some(8));
    }
    let departures = departures.lock().unwrap().clone();
    assert_eq!(departures.len(), 2, "each of the others saw one PlayerLeft: {departures:?}");
    assert!(departures.iter().all(|(who, _)| who == "cy"), "{departures:?}");
    departures.into_iter().map(|(_, reason)| reason).collect()
}

/// Whether it is time to leave (tick 3 of the round); the round must not be over yet.
fn time_to_leave(event: &GameEvent) -> bool {
    match event {
        GameEvent::EndGame(scores) => panic!("the round ended before cy could leave: {scores}"),
        GameEvent::Snapshot(snapshot) => snapshot.tick >= 3,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_leaving_mid_round_is_removed_and_the_others_finish() {
    let (addr, server, stayers, departures) = start_with_two_stayers().await;
    let mut quitter = bounded("join", Session::join(addr, "cy", &ClientOptions::default())).await.unwrap();
    while !time_to_leave(&bounded("event", quitter.next_event()).await.unwrap()) {}
    // Cancels the events and aborts the inputs; the server notices whichever first.
    bounded("leave", quitter.leave("cy has to go")).await;
    for reason in finish_without_cy(stayers, departures).await {
        assert!(reason.contains("cy has to go") || reason.contains("aborted"), "{reason}");
    }
    assert_eq!(bounded("server", server).await.unwrap().unwrap(), 1);
}

/// Seed 003's promise: the producer sees the consumer's cancellation on its
/// next write. Here only the events are cancelled; the seat, the inputs
/// and the connection all stay, so the write is what gives it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_notices_a_cancelled_events_sequence_on_its_next_write() {
    let (addr, server, stayers, departures) = start_with_two_stayers().await;
    let (connection, game) = connect(addr, keepalive_config()).await.unwrap();
    let player = game.join("cy".into()).pipeline();
    let (_inputs, upload) = Sequence::channel();
    let _playing = player.play(upload);
    let mut events = player.events();
    while !time_to_leave(&bounded("event", events.read()).await.unwrap().expect("an event")) {}
    events.cancel(Some("cy closed the window".into()));
    let reasons = finish_without_cy(stayers, departures).await;
    assert!(reasons.iter().all(|r| r.contains("cy closed the window")), "{reasons:?}");
    connection.close(); // so that the server need not linger for us
    assert_eq!(bounded("server", server).await.unwrap().unwrap(), 1);
}
