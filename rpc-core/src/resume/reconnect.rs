//! A client link that comes back: redials with bounded backoff after a loss
//! and hands out the new connection's bootstrap.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Capability, Config, Connection, ErrorKind, RpcError};

/// How a [`Reconnecting`] link redials: exponential backoff with jitter,
/// bounded in delay and in attempts.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rpc_core::resume::Backoff;
///
/// let backoff = Backoff { initial: Duration::from_millis(10), max_attempts: Some(5), ..Backoff::default() };
/// assert!(backoff.delay(1) <= Duration::from_millis(10));
/// assert!(backoff.delay(30) <= backoff.max);
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The delay before the second attempt (the first redial is immediate).
    pub initial: Duration,
    /// The longest delay between attempts.
    pub max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    /// Spread delays over `[delay / 2, delay]` so that many clients that lost
    /// the same server do not redial in lockstep.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            max_attempts: Some(40),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doubled = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let delay = doubled.min(self.max);
        if !self.jitter {
            return delay;
        }
        let random = RandomState::new().build_hasher().finish();
        let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
        delay.mul_f64(fraction)
    }
}

/// Where a [`Reconnecting`] link is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling; `attempt` counts the attempts since the last loss (0 before the first).
    Connecting {
        /// Attempts made so far since the last loss.
        attempt: u32,
    },
    /// Connected; `generation` counts connections made, starting at 1.
    Connected {
        /// Which connection this is (1 for the first).
        generation: u64,
    },
    /// Gave up (attempts exhausted) or closed on purpose; no more dialling.
    Failed(RpcError),
}

/// Makes one connection: how a [`Reconnecting`] link dials.
pub type Dialer = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Connection, RpcError>> + Send>> + Send + Sync>;

/// How long [`tcp_dialer`] waits for one dial (TCP connect and the
/// connection's opening) before it counts as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A dialer for TCP to `addr` with `config` (keepalive, limits); each dial
/// gives up after [`DEFAULT_CONNECT_TIMEOUT`] (see [`tcp_dialer_with_timeout`]).
///
/// # Examples
///
/// ```
/// let dialer = rpc_core::resume::tcp_dialer("127.0.0.1:7000".parse().unwrap(), rpc_core::Config::default());
/// # let _ = dialer;
/// ```
pub fn tcp_dialer(addr: SocketAddr, config: Config) -> Dialer {
    tcp_dialer_with_timeout(addr, config, DEFAULT_CONNECT_TIMEOUT)
}

/// A dialer for TCP to `addr` whose every dial (TCP connect and the
/// connection's opening) fails with [`ErrorKind::Timeout`] after
/// `timeout`, so a black-holed address costs `timeout`, not the operating
/// system's SYN timeout.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let addr = "127.0.0.1:7000".parse().unwrap();
/// let dialer = rpc_core::resume::tcp_dialer_with_timeout(addr, rpc_core::Config::default(), Duration::from_secs(1));
/// # let _ = dialer;
/// ```
pub fn tcp_dialer_with_timeout(addr: SocketAddr, config: Config, timeout: Duration) -> Dialer {
    Arc::new(move || {
        let config = config.clone();
        Box::pin(async move {
            let dial = async {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Connection::builder().config(config).open(stream).await
            };
            match tokio::time::timeout(timeout, dial).await {
                Ok(result) => result,
                Err(_) => {
                    Err(RpcError::new(ErrorKind::Timeout, format!("dialling {addr} timed out after {timeout:?}")))
                }
            }
        })
    })
}

#[derive(Clone)]
struct Current<C> {
    state: LinkState,
    link: Option<(Connection, C)>,
}

struct Shared<C> {
    current: watch::Receiver<Current<C>>,
    supervisor: JoinHandle<()>,
}

impl<C> Drop for Shared<C> {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Some((connection, _)) = &self.current.borrow().link {
            connection.close();
        }
    }
}

/// A client connection that comes back after a loss.
///
/// It dials at once, and after every loss redials with [`Backoff`] and takes
/// the new connection's bootstrap capability `C`. Capabilities obtained from
/// an earlier connection stay dead (they fail with `Disconnected`, as
/// always); take fresh ones from [`Reconnecting::connected`]. State changes
/// are traced (`tracing`, target `rpc_core::resume`) and can be awaited via
/// [`Reconnecting::watch`]. Dropping every clone stops redialling and closes
/// the connection.
///
/// # Examples
///
/// ```
/// use rpc_core::{eventual, resume::{Backoff, Reconnecting}};
///
/// #[eventual]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
/// struct Parrot;
/// impl Echo for Parrot {
///     async fn echo(&self, text: String) -> String { text }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(rpc_core::serve(listener, || EchoProxy::new(Parrot)));
///
/// let link: Reconnecting<EchoProxy> = Reconnecting::tcp(addr, Backoff::default());
/// let echo = link.connected().await?;
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// # Ok(())
/// # }
/// ```
pub struct Reconnecting<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Reconnecting<C> {
    fn clone(&self) -> Self {
        Reconnecting { shared: self.shared.clone() }
    }
}

impl<C: Capability> Reconnecting<C> {
    /// A link over TCP to `addr` with the default [`Config`].
    pub fn tcp(addr: SocketAddr, backoff: Backoff) -> Self {
        Self::with_dialer(tcp_dialer(addr, Config::default()), backoff)
    }

    /// A link that dials with `dialer` (any transport, any address choice:
    /// a dialer may pick another server each time, as a load balancer does).
    pub fn with_dialer(dialer: Dialer, backoff: Backoff) -> Self {
        let initial = Current { state: LinkState::Connecting { attempt: 0 }, link: None };
        let (sender, current) = watch::channel(initial);
        let supervisor = tokio::spawn(supervise(dialer, backoff, sender));
        Reconnecting { shared: Arc::new(Shared { current, supervisor }) }
    }

    /// The state now.
    pub fn state(&self) -> LinkState {
        self.shared.current.borrow().state.clone()
    }

    /// A receiver of state changes (`changed().await`, `borrow()`).
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        let mut source = self.shared.current.clone();
        let (sender, receiver) = watch::channel(source.borrow().state.clone());
        tokio::spawn(async move {
            while source.changed().await.is_ok() {
                let state = source.borrow_and_update().state.clone();
                if sender.send(state).is_err() {
                    return;
                }
            }
        });
        receiver
    }

    /// Waits for a live connection and returns its bootstrap capability.
    ///
    /// # Errors
    ///
    /// The link's error once it gave up ([`LinkState::Failed`]).
    pub async fn connected(&self) -> Result<C, RpcError> {
        self.connected_with_generation(0).await.map(|(_, bootstrap)| bootstrap)
    }

    /// Waits for a connection whose generation is above `after` and whose
    /// transport is not already known to be closed; returns it with its generation.
    ///
    /// # Errors
    ///
    /// The link's error once it gave up.
    pub async fn connected_with_generation(&self, after: u64) -> Result<(u64, C), RpcError> {
        let mut current = self.shared.current.clone();
        loop {
            {
                let now = current.borrow_and_update();
                match (&now.state, &now.link) {
                    (LinkState::Failed(err), _) => return Err(err.clone()),
                    (LinkState::Connected { generation }, Some((connection, bootstrap)))
                        if *generation > after && connection.closed().now_or_never().is_none() =>
                    {
                        return Ok((*generation, bootstrap.clone()));
                    }
                    _ => {}
                }
            }
            if current.changed().await.is_err() {
                return Err(RpcError::disconnected("the reconnecting link was dropped"));
            }
        }
    }

    /// The connection of the current generation, if connected.
    pub fn connection(&self) -> Option<Connection> {
        self.shared.current.borrow().link.as_ref().map(|(connection, _)| connection.clone())
    }
}

async fn supervise<C: Capability>(dialer: Dialer, backoff: Backoff, sender: watch::Sender<Current<C>>) {
    let mut generation = 0;
    loop {
        let Some(connection) = dial_with_backoff(&dialer, &backoff, &sender).await else { return };
        generation += 1;
        let bootstrap: C = connection.bootstrap();
        tracing::info!(target: "rpc_core::resume", generation, "connected");
        let link = Some((connection.clone(), bootstrap));
        sender.send_replace(Current { state: LinkState::Connected { generation }, link });
        let reason = tokio::select! {
            reason = connection.closed() => reason,
            () = sender.closed() => return,
        };
        tracing::warn!(target: "rpc_core::resume", generation, "connection lost: {reason}");
        sender.send_replace(Current { state: LinkState::Connecting { attempt: 0 }, link: None });
    }
}

async fn dial_with_backoff<C>(
    dialer: &Dialer,
    backoff: &Backoff,
    sender: &watch::Sender<Current<C>>,
) -> Option<Connection>
where
    C: Clone,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        sender.send_replace(Current { state: LinkState::Connecting { attempt }, link: None });
        match dialer().await {
            Ok(connection) => return Some(connection),
            Err(err) => {
                tracing::debug!(target: "rpc_core::resume", attempt, "dial failed: {err}");
                if backoff.max_attempts.is_some_and(|max| attempt >= max) {
                    let message = format!("gave up reconnecting after {attempt} attempts; last error: {err}");
                    tracing::warn!(target: "rpc_core::resume", "{message}");
                    let failed = RpcError::new(ErrorKind::Disconnected, message);
                    sender.send_replace(Current { state: LinkState::Failed(failed), link: None });
                    return None;
                }
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback address whose accept queue is full, so the kernel drops
    /// new SYNs (a black hole); the listener and the queued streams with it.
    fn black_hole() -> Option<(tokio::net::TcpListener, Vec<std::net::TcpStream>, SocketAddr)> {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind("127.0.0.1:0".parse().ok()?).ok()?;
        let addr = socket.local_addr().ok()?;
        let listener = socket.listen(0).ok()?;
        let mut queued = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(_) => return Some((listener, queued, addr)),
            }
        }
        None
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_to_a_black_holed_address_times_out() {
        let Some((_listener, _queued, addr)) = black_hole() else {
            panic!("could not fill the accept queue of a loopback listener");
        };
        let dial = tcp_dialer(addr, Config::default())();
        let outcome = tokio::time::timeout(Duration::from_secs(60), dial).await;
        let Err(err) = outcome.expect("the dial gives up by itself") else { panic!("nothing answers") };
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.message().contains("dialling"), "{err}");
    }
}
