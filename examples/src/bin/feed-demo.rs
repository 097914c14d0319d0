//! A feed whose history-plus-live sequence survives a server restart,
//! through Redis.
//!
//! `feed-demo` alone runs the whole show: a private `redis-server` on a free
//! loopback port (no persistence), a feed server process, and a client that
//! prints the feed. Midway it kills the server process and starts another
//! one against the same Redis; the client resumes after the last line it
//! printed, with no gap and no duplicate, and says so at the end.
//!
//! By hand, with a Redis of your own:
//! `feed-demo serve --listen 127.0.0.1:7100 --redis redis://127.0.0.1:6379`
//! (stop it with Ctrl-C and start it again) and
//! `feed-demo follow --connect 127.0.0.1:7100 --session me`.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use rpc_core::resume::LinkState;
use rpc_examples::feed;

#[derive(Parser)]
#[command(version, about = "A feed that survives a server restart through Redis")]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand)]
enum Mode {
    /// Serves the feed (state in Redis).
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: String,
        /// The Redis holding the sessions.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Milliseconds between live lines.
        #[arg(long, default_value_t = 300)]
        tick_ms: u64,
    },
    /// Follows a session, printing its lines.
    Follow {
        /// The server's address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        connect: SocketAddr,
        /// The session to follow (resumed if it exists).
        #[arg(long, default_value = "me")]
        session: String,
    },
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Args::parse().mode {
        Some(Mode::Serve { listen, redis, tick_ms }) => serve(&listen, &redis, tick_ms).await,
        Some(Mode::Follow { connect, session }) => follow(connect, &session).await,
        None => demo().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("feed-demo: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: &str, redis: &str, tick_ms: u64) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("feed server {} listening on {}", std::process::id(), listener.local_addr()?);
    feed::serve(listener, redis, Duration::from_millis(tick_ms)).await?;
    Ok(())
}

async fn follow(addr: SocketAddr, session: &str) -> Result<(), Box<dyn std::error::Error>> {
    let show = |id: u64, line: &feed::Line| println!("{id:>4}  [server {}] {}", line.server, line.text);
    feed::follow(addr, session, None, show, print_state).await?;
    Ok(())
}

fn print_state(state: &LinkState) {
    match state {
        LinkState::Connected { generation } => println!("      -- connected (connection {generation})"),
        LinkState::Connecting { attempt: 1 } => println!("      -- dialling"),
        LinkState::Connecting { attempt } if attempt % 5 == 0 => {
            println!("      -- still redialling (attempt {attempt})")
        }
        LinkState::Failed(err) => println!("      -- gave up: {err}"),
        LinkState::Connecting { .. } => {}
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for(addr: SocketAddr) -> bool {
    (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        std::net::TcpStream::connect(addr).is_ok()
    })
}

fn start_redis(port: u16) -> Result<Guard, Box<dyn std::error::Error>> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start redis-server ({err}); run scripts/install-redis.sh"))?;
    let guard = Guard(child);
    if !wait_for(SocketAddr::from(([127, 0, 0, 1], port))) {
        return Err("redis-server did not start".into());
    }
    Ok(guard)
}

fn start_server(addr: SocketAddr, redis: &str) -> Result<Guard, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let child = Command::new(me)
        .args(["serve", "--listen", &addr.to_string(), "--redis", redis, "--tick-ms", "150"])
        .spawn()?;
    let guard = Guard(child);
    if !wait_for(addr) {
        return Err("the feed server did not start".into());
    }
    Ok(guard)
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    const KILL_AFTER: u64 = 18;
    const LINES: u64 = 36;
    let redis_port = free_port()?;
    let _redis = start_redis(redis_port)?;
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    println!("redis on {redis}; feed server on {addr}");
    let mut server = Some(start_server(addr, &redis)?);
    let (restart, mut restarted) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut seen = Vec::new();
    let show = |id: u64, line: &feed::Line| {
        println!("{id:>4}  [server {}] {}", line.server, line.text);
        seen.push((id, line.server));
        if id == KILL_AFTER {
            let _ = restart.send(id);
        }
    };
    let reconnects = {
        let following = feed::follow(addr, "demo", Some(LINES), show, print_state);
        tokio::pin!(following);
        loop {
            tokio::select! {
                done = &mut following => break done?,
                Some(_) = restarted.recv() => {
                    println!("      == killing the feed server process; another starts in a second, against the same Redis");
                    drop(server.take());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    server = Some(start_server(addr, &redis)?);
                }
            }
        }
    };
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    let in_order = ids.iter().copied().eq(1..=LINES);
    let mut servers: Vec<u32> = seen.iter().map(|(_, server)| *server).collect();
    servers.dedup();
    println!(
        "\n{} lines, ids 1..={LINES} {}, written by {} server processes, {reconnects} resume(s) after a loss",
        ids.len(),
        if in_order { "each exactly once, in order" } else { "WITH A GAP OR DUPLICATE" },
        servers.len()
    );
    if !in_order {
        return Err("the feed had a gap or a duplicate".into());
    }
    Ok(())
}
