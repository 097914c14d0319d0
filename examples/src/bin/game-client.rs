//! A player: `game-client --connect 127.0.0.1:7000 --name ann` opens the
//! terminal UI; with `--bot` it plays by itself and prints events as lines.
//! The bot is one a person can beat (it starts 3 s late and moves four times
//! a second); `--bot-pace 1` makes it as fast as the server allows.
//!
//! At the end of the round it prints `final scores: NAME=SCORE ...` and
//! exits 0. If the server is lost it prints the error and exits 1.

use std::process::ExitCode;

use clap::Parser;
use rpc_examples::game::bot::{self, BotOptions};
use rpc_examples::game::client::Outcome;
use rpc_examples::game::{demo, ui};

/// Plays the arena game.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    connect: String,
    /// Your name: 1 to 16 letters, digits, '-' or '_'.
    #[arg(long)]
    name: String,
    /// Let a bot play, printing events as lines.
    #[arg(long)]
    bot: bool,
    /// With --bot: ticks between the bot's moves (1 is fastest; 5 at 20 Hz
    /// is four moves a second).
    #[arg(long, default_value_t = BotOptions::against_people().pace)]
    bot_pace: u64,
    /// With --bot: ticks the bot waits before its first move.
    #[arg(long, default_value_t = BotOptions::against_people().warmup)]
    bot_warmup: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let played = if args.bot {
        let options = BotOptions { pace: args.bot_pace, warmup: args.bot_warmup, ..BotOptions::against_people() };
        bot::play_with(&args.connect, &args.name, &options, demo::line_printer(0)).await.map(Some)
    } else {
        ui::play(&args.connect, &args.name).await
    };
    match played {
        Ok(Some(outcome)) => {
            report(&outcome);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("you left the game");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn report(outcome: &Outcome) {
    match &outcome.moves_taken {
        Ok(moves) => println!("the server took {moves} of our moves"),
        Err(err) => println!("the server did not answer for our moves: {err}"),
    }
    match &outcome.replay {
        Ok(log) => println!("replay of round {}: {} bytes", outcome.scores.round, log.len()),
        Err(err) => println!("replay of round {} unavailable: {err}", outcome.scores.round),
    }
    println!("{}", outcome.scores);
}
