//! Clients notice a server that dies (its runtime shut down mid-round) or
//! goes silent (a network partition), and return an error in time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpc_core::ErrorKind;
use rpc_examples::game::bot::{self, BotOptions};
use rpc_examples::game::client::{ClientError, Outcome};
use rpc_examples::game::protocol::GameEvent;
use rpc_examples::game::server::{self, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A round nobody will win before the server goes away.
fn endless(players: u32) -> ServerOptions {
    ServerOptions { players, target_score: 1_000, tick: Duration::from_millis(10), ..ServerOptions::default() }
}

/// Starts a server on its own runtime, so that the test can kill it whole.
fn server_runtime(options: ServerOptions) -> (Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(server::run(listener, options));
    (runtime, addr)
}

type Bot = JoinHandle<Result<Outcome, ClientError>>;

/// Starts one bot per name; `playing` gets a message once each sees tick 5.
fn start_bots(addr: SocketAddr, names: &[&'static str], playing: mpsc::UnboundedSender<()>) -> Vec<Bot> {
    let spawn = |name: &'static str| {
        let playing = playing.clone();
        tokio::spawn(async move {
            bot::play_with(addr, name, &BotOptions::default(), move |event, _| {
                if matches!(event, GameEvent::Snapshot(s) if s.tick == 5) {
                    let _ = playing.send(());
                }
            })
            .await
        })
    };
    names.iter().map(|name| spawn(name)).collect()
}

async fn wait_until_playing(playing: &mut mpsc::UnboundedReceiver<()>, bots: usize) {
    for _ in 0..bots {
        tokio::time::timeout(Duration::from_secs(60), playing.recv()).await.expect("the round did not start");
    }
}

/// Every bot must fail with `Disconnected` within `limit` of `since`.
async fn expect_disconnected(bots: Vec<Bot>, since: Instant, limit: Duration) {
    for handle in bots {
        let result = tokio::time::timeout(limit + Duration::from_secs(1), handle).await;
        let result = result.expect("a client hangs after losing its server").unwrap();
        let err = result.expect_err("a client finished a round whose server is gone");
        assert_eq!(err.kind(), Some(ErrorKind::Disconnected), "{err}");
        assert!(since.elapsed() < limit, "noticed only after {:?}: {err}", since.elapsed());
    }
}

#[test]
fn every_client_notices_a_server_killed_mid_round() {
    let (server, addr) = server_runtime(endless(3));
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    clients.block_on(async move {
        let (tx, mut playing) = mpsc::unbounded_channel();
        let bots = start_bots(addr, &["ann", "bo", "cy"], tx);
        wait_until_playing(&mut playing, 3).await;
        let killed = Instant::now();
        server.shutdown_background(); // every task and socket of the server goes at once
                                      // Bounded for hangs, not speed: the sockets close at once, keepalive (2 s) is the fallback.
        expect_disconnected(bots, killed, Duration::from_secs(10)).await;
    });
}

#[test]
fn every_client_notices_a_silent_server_within_the_keepalive_timeout() {
    let (_server, upstream) = server_runtime(endless(2));
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    clients.block_on(async move {
        let (cut, partitioned) = watch::channel(false);
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = relay.local_addr().unwrap();
        tokio::spawn(run_relay(relay, upstream, partitioned));
        let (tx, mut playing) = mpsc::unbounded_channel();
        let bots = start_bots(addr, &["ann", "bo"], tx);
        wait_until_playing(&mut playing, 2).await;
        let silenced = Instant::now();
        cut.send(true).unwrap(); // sockets stay open, nothing gets through
        let timeout = server::keepalive_config().keepalive_timeout;
        // Keepalive is the only way to notice; the slack absorbs a busy machine's late timers.
        expect_disconnected(bots, silenced, timeout * 5).await;
    });
}

/// A TCP relay to `upstream` that, once `partitioned` turns true, stops
/// forwarding in both directions but keeps every socket open.
async fn run_relay(listener: TcpListener, upstream: SocketAddr, partitioned: watch::Receiver<bool>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(upstream).await else { return };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(forward(client_read, server_write, partitioned.clone()));
        tokio::spawn(forward(server_read, client_write, partitioned.clone()));
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = partitioned.wait_for(|cut| *cut) => break,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) if to.write_all(&buf[..n]).await.is_err() => return,
            Ok(_) => {}
        }
    }
    // Hold both halves open and silent until the test ends.
    std::future::pending::<()>().await;
}
