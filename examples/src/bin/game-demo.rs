//! The one-command demo: `cargo run -p rpc-examples --bin game-demo`.
//!
//! A server and three bots on loopback play one round to 5. On a terminal
//! the arena is drawn live; otherwise events are printed as lines.

use std::io::IsTerminal;
use std::process::ExitCode;

use rpc_examples::game::client::Outcome;
use rpc_examples::game::demo::{self, DemoError, DemoOptions};
use rpc_examples::game::ui::Spectator;
use rpc_examples::game::view::board_text;

#[tokio::main]
async fn main() -> ExitCode {
    let options = DemoOptions::default();
    println!("{} bots play to {} on loopback...", options.names.len(), options.target_score);
    let played = if std::io::stdout().is_terminal() { live(&options).await } else { plain(&options).await };
    match played {
        Ok(outcome) => {
            if let Ok(log) = &outcome.replay {
                println!("replay of round {}: {} bytes, {} lines", outcome.scores.round, log.len(), lines(log));
            }
            println!("{}", outcome.scores);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("demo failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Draws the arena in place as the first bot sees it.
async fn live(options: &DemoOptions) -> Result<Outcome, DemoError> {
    let mut spectator = Spectator::new()?;
    let outcome = demo::run(options, |_, view| {
        let _ = spectator.show(view);
    })
    .await;
    spectator.finish()?;
    outcome
}

/// Prints events as lines, and the final board.
async fn plain(options: &DemoOptions) -> Result<Outcome, DemoError> {
    let mut printer = demo::line_printer(20);
    let mut board = String::new();
    let outcome = demo::run(options, |event, view| {
        printer(event, view);
        if let Some(round) = &view.round {
            board = board_text(round);
        }
    })
    .await?;
    print!("{board}");
    Ok(outcome)
}

fn lines(log: &[u8]) -> usize {
    log.iter().filter(|b| **b == b'\n').count()
}
