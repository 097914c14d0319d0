//! The game client riding out dropped connections mid-round: `you` plays
//! through an edge over a relay that cuts the link every 700 ms; a bot
//! plays directly. At the end it checks that every score the server counted
//! arrived as an event, and exits 1 if one was lost.

use std::process::ExitCode;
use std::time::Duration;

use rpc_examples::game::reconnect;

#[tokio::main]
async fn main() -> ExitCode {
    match reconnect::demo(Duration::from_millis(50), 8, Duration::from_millis(700), true).await {
        Ok(report) => {
            let outcome = &report.outcome;
            println!("\n{}", outcome.scores);
            println!("scores from the events read: {:?}", outcome.scored);
            println!("{} events read; {} cuts, resumed {} times", outcome.events, report.cuts, outcome.resumes);
            if report.no_score_lost() {
                println!("every score event arrived");
                ExitCode::SUCCESS
            } else {
                println!("a score event was lost");
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("game-reconnect: {err}");
            ExitCode::FAILURE
        }
    }
}
