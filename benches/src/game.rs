//! Seed 003's comparison: game events delivered by `GetNext` polling, by
//! server-push callbacks (the server calls a client capability per event),
//! and by a `Sequence`, over an in-memory transport with an injected RTT and
//! tokio's paused clock (so latencies are exact multiples of the one-way
//! delay, independent of CPU speed).
//!
//! The game emits bursts of `BURST` events every `TICK` (5 RTTs apart, so a
//! poller catches up between bursts). Figures per event: mean latency from
//! emission to the client's handler, in RTTs; socket writes by the server,
//! and by both sides; allocations (both sides run on this one thread; the
//! test transport's own buffers are not counted).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{eventual, Config, Connection, Sequence};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::alloc;
use crate::common::{err, Res};
use crate::latency::latency_pipe;

pub const ONE_WAY: Duration = Duration::from_millis(5);
pub const RTT: Duration = Duration::from_millis(10);
pub const TICK: Duration = Duration::from_millis(50);
pub const BURST: u64 = 4;
const WARMUP: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GameEvent {
    pub seq: u64,
    /// Microseconds since the game started, when emitted.
    pub at_us: u64,
    pub player: u32,
    pub kind: u8,
    pub x: f32,
    pub y: f32,
}

#[eventual]
pub trait PollGame {
    /// The next event, once there is one.
    async fn get_next(&self) -> GameEvent;
}

#[eventual]
pub trait PushGame {
    /// The server calls `callback` once per event.
    async fn set_event_callback(&self, callback: EventHandlerProxy);
}

#[eventual]
pub trait EventHandler {
    async fn handle_event(&self, event: GameEvent);
}

#[eventual]
pub trait SeqGame {
    fn get_events(&self) -> Sequence<GameEvent>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    Poll,
    Push,
    Sequence,
}

impl Design {
    pub const ALL: [Design; 3] = [Design::Poll, Design::Push, Design::Sequence];
    pub fn name(self) -> &'static str {
        match self {
            Design::Poll => "GetNext polling",
            Design::Push => "server-push callbacks",
            Design::Sequence => "Sequence",
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Design::Poll => "poll",
            Design::Push => "push",
            Design::Sequence => "sequence",
        }
    }
}

pub struct GameFigures {
    pub latency_rtts: f64,
    pub server_writes: f64,
    pub all_writes: f64,
    pub allocs: f64,
}

/// The game clock: when each event is due, from `start`.
struct Clock {
    start: Instant,
    ticks: u64,
}

impl Clock {
    fn total(&self) -> u64 {
        self.ticks * BURST
    }
    /// Waits for tick `tick`, then returns its burst of events.
    async fn burst(&self, tick: u64) -> impl Iterator<Item = GameEvent> {
        tokio::time::sleep_until(self.start + WARMUP + TICK * tick as u32).await;
        let at_us = self.start.elapsed().as_micros() as u64;
        (tick * BURST..(tick + 1) * BURST).map(move |seq| GameEvent {
            seq,
            at_us,
            player: (seq % BURST) as u32,
            kind: (seq % 5) as u8,
            x: seq as f32,
            y: 1.5,
        })
    }
}

struct Poller {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<GameEvent>>,
}

impl PollGame for Poller {
    async fn get_next(&self) -> GameEvent {
        let mut events = self.events.lock().await;
        events.recv().await.expect("the game ended early")
    }
}

struct Pusher {
    clock: Arc<Clock>,
}

impl PushGame for Pusher {
    async fn set_event_callback(&self, callback: EventHandlerProxy) {
        let clock = self.clock.clone();
        tokio::spawn(async move {
            // Calls go out at once; their promises are kept (dropping one
            // would cancel the call) and awaited in order by another task.
            let (pending, mut rx) = mpsc::unbounded_channel::<rpc_core::Promise<()>>();
            tokio::spawn(async move {
                while let Some(call) = rx.recv().await {
                    let _ = call.await;
                }
            });
            for tick in 0..clock.ticks {
                for event in clock.burst(tick).await {
                    let _ = pending.send(callback.handle_event(event));
                }
            }
        });
    }
}

struct Handler {
    record: Arc<Recorder>,
}

impl EventHandler for Handler {
    async fn handle_event(&self, event: GameEvent) {
        self.record.event(&event);
    }
}

struct Sequencer {
    clock: Arc<Clock>,
}

impl SeqGame for Sequencer {
    fn get_events(&self) -> Sequence<GameEvent> {
        let (writer, reader) = Sequence::channel();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut writer = writer;
            for tick in 0..clock.ticks {
                for event in clock.burst(tick).await {
                    writer.write(event)?;
                }
                writer.flush().await?;
            }
            writer.close(None).await
        });
        reader
    }
}

/// The client's tally: latencies, and the done signal after the last event.
struct Recorder {
    start: Instant,
    total: u64,
    inner: Mutex<(u64, Duration, Option<oneshot::Sender<()>>)>,
}

impl Recorder {
    fn event(&self, event: &GameEvent) {
        let latency = self.start.elapsed() - Duration::from_micros(event.at_us);
        let mut inner = self.inner.lock().unwrap();
        inner.0 += 1;
        inner.1 += latency;
        if event.seq + 1 == self.total {
            if let Some(done) = inner.2.take() {
                let _ = done.send(());
            }
        }
    }
}

/// Runs one game on a fresh paused-clock runtime on its own thread.
pub fn run(design: Design, ticks: u64) -> Res<GameFigures> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?;
        rt.block_on(play(design, ticks))
    })
    .join()
    .map_err(|_| err("the game thread panicked"))?
}

async fn play(design: Design, ticks: u64) -> Res<GameFigures> {
    let config = Config {
        keepalive_interval: Duration::from_secs(3600),
        keepalive_timeout: Duration::from_secs(7200),
        ..Config::default()
    };
    let (a, b) = latency_pipe(ONE_WAY);
    let (server_writes, client_writes) = (a.write_counter(), b.write_counter());
    let start = Instant::now();
    let clock = Arc::new(Clock { start, ticks });
    let total = clock.total();
    let (done_tx, done_rx) = oneshot::channel();
    let record = Arc::new(Recorder { start, total, inner: Mutex::new((0, Duration::ZERO, Some(done_tx))) });

    // Counters are read just before the first event and after the last one.
    let snapshot = {
        let (server_writes, client_writes) = (server_writes.clone(), client_writes.clone());
        move || (server_writes.load(Ordering::Relaxed), client_writes.load(Ordering::Relaxed), alloc::thread_allocs())
    };
    let first = Arc::new(Mutex::new(None));
    {
        let (first, snapshot) = (first.clone(), snapshot.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start + WARMUP - ONE_WAY / 2).await;
            *first.lock().unwrap() = Some(snapshot());
        });
    }

    let server = Connection::builder().config(config.clone());
    let client = Connection::builder().config(config);
    let keep: (Connection, Connection);
    match design {
        Design::Poll => {
            let (tx, rx) = mpsc::unbounded_channel();
            let game = PollGameProxy::new(Poller { events: tokio::sync::Mutex::new(rx) });
            let (s, c) = tokio::try_join!(server.bootstrap(game).open(a), client.open(b))?;
            let game: PollGameProxy = c.bootstrap();
            keep = (s, c);
            let clock = clock.clone();
            tokio::spawn(async move {
                for tick in 0..clock.ticks {
                    for event in clock.burst(tick).await {
                        let _ = tx.send(event);
                    }
                }
            });
            let record = record.clone();
            tokio::spawn(async move {
                for _ in 0..total {
                    match game.get_next().await {
                        Ok(event) => record.event(&event),
                        Err(_) => return,
                    }
                }
            });
        }
        Design::Push => {
            let game = PushGameProxy::new(Pusher { clock: clock.clone() });
            let (s, c) = tokio::try_join!(server.bootstrap(game).open(a), client.open(b))?;
            let game: PushGameProxy = c.bootstrap();
            keep = (s, c);
            game.set_event_callback(EventHandlerProxy::new(Handler { record: record.clone() })).await?;
        }
        Design::Sequence => {
            let game = SeqGameProxy::new(Sequencer { clock: clock.clone() });
            let (s, c) = tokio::try_join!(server.bootstrap(game).open(a), client.open(b))?;
            let game: SeqGameProxy = c.bootstrap();
            keep = (s, c);
            let mut events = game.get_events();
            let record = record.clone();
            tokio::spawn(async move {
                while let Ok(Some(event)) = events.read().await {
                    record.event(&event);
                }
            });
        }
    }
    tokio::time::timeout(TICK * (ticks as u32 + 100), done_rx).await.map_err(|_| err("the game timed out"))??;
    let (w1, c1, a1) = snapshot();
    let (w0, c0, a0) = first.lock().unwrap().take().ok_or_else(|| err("no snapshot"))?;
    drop(keep);
    let (events, latency_sum) = {
        let inner = record.inner.lock().unwrap();
        (inner.0, inner.1)
    };
    if events != total {
        return Err(err(format!("{events} of {total} events")));
    }
    let per_event = |x: u64| x as f64 / total as f64;
    Ok(GameFigures {
        latency_rtts: latency_sum.as_secs_f64() / total as f64 / RTT.as_secs_f64(),
        server_writes: per_event((w1 - w0) as u64),
        all_writes: per_event((w1 - w0 + c1 - c0) as u64),
        allocs: per_event(a1 - a0),
    })
}
