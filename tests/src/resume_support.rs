//! Support for the resumption tests (`tests/tests/resum*.rs`): a Redis
//! server started on a free loopback port with no persistence, child
//! processes killed on drop, and a TCP relay that can cut its connections.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::resume::{
    Backoff, Reconnecting, ResumableSequence, ResumableWriter, ResumeOptions, ResumeProxy, SessionStore,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Waits (at most `limit`) until something accepts on `addr`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        ChildGuard(Some(child))
    }

    /// The child's standard output, if it was piped and not taken yet.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.0.as_mut()?.stdout.take()
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` on a free loopback port, without persistence
/// (`--save "" --appendonly no`), killed on drop.
pub struct RedisServer {
    port: u16,
    child: ChildGuard,
}

impl RedisServer {
    /// Starts one. Panics with a message naming `scripts/install-redis.sh`
    /// if `redis-server` is not installed.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}); the resumption tests need it: \
                     run `scripts/install-redis.sh` (installs the Debian package redis-server)"
                )
            });
        let server = RedisServer { port, child: ChildGuard::new(child) };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(wait_for_port(addr, Duration::from_secs(10)), "redis-server did not start on {addr}");
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills Redis (everything in it is lost: no persistence).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts a fresh, empty Redis on the same port.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(self.port);
    }
}

/// A TCP relay on loopback: forwards each accepted connection to the current
/// target; [`Relay::cut`] drops every connection it carries.
pub struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Relay {
    /// A relay to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let target = Arc::new(Mutex::new(target));
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let (to, held) = (target.clone(), pipes.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                let pipe = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut held = held.lock().unwrap();
                held.retain(|pipe: &JoinHandle<()>| !pipe.is_finished());
                held.push(pipe);
            }
        });
        Relay { addr, target, pipes, acceptor }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends new connections to `target`.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Drops every connection now (both sockets close).
    pub fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Many resumable streams cut at once (`resume_many*.rs`): each client has a
/// producer writing `1..=items` into a store and a consumer reading it back
/// through a relay, which checks every item arrives exactly once, in order,
/// waits at a barrier halfway (so the test can cut every link mid-stream),
/// and counts itself once it has resumed after a loss.
pub struct Storm {
    /// Items each producer writes.
    pub items: u64,
    /// Each producer's window of unacknowledged items.
    pub window: u32,
    /// Every client and the test meet here halfway through.
    pub halfway: Arc<tokio::sync::Barrier>,
    /// Clients that have resumed after a loss.
    pub resumed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Storm {
    /// A storm of `clients` streams of `items` items with `window`.
    pub fn new(clients: usize, items: u64, window: u32) -> Storm {
        Storm { items, window, halfway: Arc::new(tokio::sync::Barrier::new(clients + 1)), resumed: Arc::default() }
    }

    /// Starts client `key`: its producer on `store`, its consumer through
    /// `relay`. The task returns how many times the consumer reconnected.
    pub fn spawn(&self, store: Arc<dyn SessionStore>, relay: SocketAddr, key: String) -> JoinHandle<u64> {
        let (items, window) = (self.items, self.window);
        let writer_key = key.clone();
        tokio::spawn(async move {
            let mut writer = ResumableWriter::<u64>::open(store, writer_key, window).await.unwrap();
            for n in 1..=items {
                writer.send(&n).await.unwrap();
            }
            writer.close(None).await.unwrap();
        });
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(500),
            max_attempts: Some(100),
            jitter: true,
        };
        let link = Reconnecting::<ResumeProxy>::tcp(relay, backoff);
        let (halfway, resumed) = (self.halfway.clone(), self.resumed.clone());
        tokio::spawn(async move {
            let options = ResumeOptions { capacity: 4, batch: 2, ack_every: 4, ..ResumeOptions::default() };
            let mut feed = ResumableSequence::<u64>::new(&link, key, ResumeProxy::clone).with_options(options);
            let (mut expected, mut counted) = (1, false);
            while let Some(n) = feed.read().await.unwrap() {
                assert_eq!(n, expected, "exactly once, in order");
                if n == items / 2 {
                    halfway.wait().await;
                }
                if !counted && feed.reconnects() > 0 {
                    counted = true;
                    resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                expected += 1;
            }
            assert_eq!(expected, items + 1, "every item arrived");
            feed.reconnects()
        })
    }
}
