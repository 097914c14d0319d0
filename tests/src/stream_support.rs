//! Shared by the stream tests (`sequence_*` and `bytes_*`): bounded waits,
//! error-kind checks, and the routes a writer/reader pair can take.

use std::future::Future;
use std::time::Duration;

use rpc_core::{Connection, ErrorKind, RpcError};
use tokio::time::{sleep, timeout, Instant};

use crate::Via;

/// Bound on any single wait.
pub const LIMIT: Duration = Duration::from_secs(60);
/// How long to let everything run before checking that something is stuck.
pub const SETTLE: Duration = Duration::from_millis(250);

/// The two connections of a remote server object, kept alive by the test (`None` when local).
pub type Conns = Option<(Connection, Connection)>;

/// Fails the test if `future` takes longer than [`LIMIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"))
}

/// Lets every task run until all are idle (on the paused clock: exactly that).
pub async fn settle() {
    sleep(SETTLE).await;
}

/// Polls `done` every 10 ms, at most `LIMIT` long.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// The error of `result`, which must be of `kind`.
pub fn expect_kind<T: std::fmt::Debug>(what: &str, result: Result<T, RpcError>, kind: ErrorKind) -> RpcError {
    match result {
        Err(err) => {
            assert_eq!(err.kind(), kind, "{what}: {err}");
            err
        }
        Ok(value) => panic!("{what}: expected a {kind:?} error, got {value:?}"),
    }
}

/// Where a test's writer and reader live.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    /// Both here: a `channel()`.
    Channel,
    /// The reader was sent to the server object (in process, or over a connection) and taken back out there.
    ReaderSent(Via),
    /// The writer was sent to the server object and taken back out there.
    WriterSent(Via),
}

/// Every route.
pub const ROUTES: [Route; 5] = [
    Route::Channel,
    Route::ReaderSent(Via::Local),
    Route::ReaderSent(Via::Remote),
    Route::WriterSent(Via::Local),
    Route::WriterSent(Via::Remote),
];
