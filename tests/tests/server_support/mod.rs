//! Shared by the `server_*` tests: a listener fed by the test (in-memory
//! pipes or scripted accept errors), and a bounded wait.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{Connection, Listener, RpcError};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Bound on any single wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Fails the test if `future` takes longer than [`LIMIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// What the next `accept` yields: a connection, or an error.
pub type Accepted = io::Result<DuplexStream>;

/// A listener whose `accept` yields what the test sends it, in order; it
/// counts the calls. Peers are numbered ("pipe-1", "pipe-2", ...).
pub struct ScriptedListener {
    script: mpsc::UnboundedReceiver<Accepted>,
    accepts: Arc<AtomicUsize>,
    connections: usize,
}

/// The test's end of a [`ScriptedListener`].
#[derive(Clone)]
pub struct Dialer {
    script: mpsc::UnboundedSender<Accepted>,
    accepts: Arc<AtomicUsize>,
}

pub fn scripted_listener() -> (ScriptedListener, Dialer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let accepts = Arc::new(AtomicUsize::new(0));
    (ScriptedListener { script: rx, accepts: accepts.clone(), connections: 0 }, Dialer { script: tx, accepts })
}

impl Listener for ScriptedListener {
    type Conn = DuplexStream;
    type Io = DuplexStream;
    type Addr = String;

    async fn accept(&mut self) -> io::Result<(DuplexStream, String)> {
        let next = self.script.recv().await;
        self.accepts.fetch_add(1, Ordering::SeqCst);
        match next {
            Some(Ok(pipe)) => {
                self.connections += 1;
                Ok((pipe, format!("pipe-{}", self.connections)))
            }
            Some(Err(err)) => Err(err),
            None => std::future::pending().await,
        }
    }

    fn handshake(&self, conn: DuplexStream) -> impl Future<Output = io::Result<DuplexStream>> + Send + 'static {
        std::future::ready(Ok(conn))
    }
}

impl Dialer {
    /// Makes the listener fail its next `accept` with `err`.
    pub fn fail_next(&self, err: io::Error) {
        self.script.send(Err(err)).expect("the listener is alive");
    }

    /// Hands the listener a new in-memory connection and opens our side.
    pub async fn connect(&self) -> Result<Connection, RpcError> {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        self.script.send(Ok(theirs)).map_err(|_| RpcError::disconnected("the listener is gone"))?;
        Connection::builder().open(ours).await
    }

    /// Hands the listener a new in-memory connection and returns our side
    /// without running the handshake (a silent client).
    pub fn dial_silently(&self) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        self.script.send(Ok(theirs)).expect("the listener is alive");
        ours
    }

    /// How many times the server called `accept` so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Whether the server dropped its listener.
    pub fn listener_dropped(&self) -> bool {
        self.script.is_closed()
    }
}
