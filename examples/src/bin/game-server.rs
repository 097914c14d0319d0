//! The game server: `game-server --listen 127.0.0.1:7000 --players 2`.
//!
//! Prints `listening on ADDR` once bound (so `--listen 127.0.0.1:0` works),
//! then serves rounds until `--rounds` are played (exits 0) or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rpc_examples::game::server::{self, ServerOptions};

/// Serves the arena game.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    /// Players needed to start a round.
    #[arg(long, default_value_t = 2)]
    players: u32,
    /// The score that wins a round.
    #[arg(long, default_value_t = 10)]
    target_score: u32,
    /// Rounds to play before exiting (default: play forever).
    #[arg(long)]
    rounds: Option<u32>,
    /// Milliseconds between ticks.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Print nothing but the `listening on` line.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(err) => eprintln!("listening (address unknown: {err})"),
    }
    tokio::select! {
        played = server::run(listener, options(&args)) => match played {
            Ok(rounds) => eprintln!("played {rounds} round(s); bye"),
            Err(err) => {
                eprintln!("server failed: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ = tokio::signal::ctrl_c() => eprintln!("stopped"),
    }
    ExitCode::SUCCESS
}

fn options(args: &Args) -> ServerOptions {
    ServerOptions {
        players: args.players,
        target_score: args.target_score,
        rounds: args.rounds,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        verbose: !args.quiet,
        ..ServerOptions::default()
    }
}
