//! The one-command demo: a server and a few bots on loopback, in one
//! process, over real TCP connections.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::bot::{self, BotOptions};
use super::client::{ClientError, Outcome};
use super::protocol::GameEvent;
use super::server::{self, ServerOptions};
use super::view::{describe, View};

/// What the demo plays.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The bots' names; the first one is the one watched.
    pub names: Vec<String>,
    /// The score that wins.
    pub target_score: u32,
    /// Time between ticks.
    pub tick: Duration,
    /// How the bots play.
    pub bot: BotOptions,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            names: ["alice", "bob", "carol"].map(String::from).to_vec(),
            target_score: 5,
            tick: Duration::from_millis(50),
            // A little slower than the default bot, to be watchable.
            bot: BotOptions { pace: 3, ..BotOptions::default() },
        }
    }
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Binding the loopback listener failed.
    #[error("cannot start the server: {0}")]
    Io(#[from] std::io::Error),
    /// A bot failed.
    #[error("a bot failed: {0}")]
    Client(#[from] ClientError),
    /// Two bots saw different results: a bug.
    #[error("the bots disagree: {0} vs {1}")]
    Disagree(String, String),
    /// The server did not finish after the round.
    #[error("the server did not finish: {0}")]
    Server(String),
}

/// Runs one round: starts a server on `127.0.0.1:0`, lets the bots play it,
/// and checks that every bot saw the same final scores. `watch` sees the
/// events of the first bot. Returns the first bot's outcome.
///
/// # Errors
///
/// See [`DemoError`].
pub async fn run<W>(options: &DemoOptions, watch: W) -> Result<Outcome, DemoError>
where
    W: FnMut(&GameEvent, &View),
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut server = JoinSet::new(); // aborts the server if we return early
    server.spawn(server::run(listener, server_options(options)));
    let mut others = JoinSet::new();
    for name in options.names.iter().skip(1) {
        others.spawn(silent_bot(addr, name.clone(), options.bot.clone()));
    }
    let first = options.names.first().map_or("alice", String::as_str);
    let watched = bot::play_with(addr, first, &options.bot, watch).await?;
    while let Some(joined) = others.join_next().await {
        let outcome = joined.map_err(|err| DemoError::Server(err.to_string()))??;
        if outcome.scores != watched.scores {
            return Err(DemoError::Disagree(watched.scores.to_string(), outcome.scores.to_string()));
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), server.join_next()).await {
        Ok(Some(Ok(Ok(_rounds)))) => Ok(watched),
        other => Err(DemoError::Server(format!("{other:?}"))),
    }
}

fn server_options(options: &DemoOptions) -> ServerOptions {
    ServerOptions {
        players: options.names.len().max(1) as u32,
        target_score: options.target_score,
        rounds: Some(1),
        tick: options.tick,
        linger: Duration::from_secs(2),
        ..ServerOptions::default()
    }
}

async fn silent_bot(addr: SocketAddr, name: String, options: BotOptions) -> Result<Outcome, ClientError> {
    bot::play_with(addr, &name, &options, |_, _| {}).await
}

/// A `watch` function for plain output: one line per event that matters,
/// and a score line every `every` ticks.
pub fn line_printer(every: u64) -> impl FnMut(&GameEvent, &View) {
    move |event, _view| match event {
        GameEvent::Snapshot(snapshot) if every > 0 && snapshot.tick % every == 0 => {
            let scores: Vec<String> = snapshot.players.iter().map(|p| format!("{}={}", p.name, p.score)).collect();
            println!("tick {}: {}", snapshot.tick, scores.join(" "));
        }
        GameEvent::Snapshot(_) => {}
        other => println!("{}", describe(other)),
    }
}
