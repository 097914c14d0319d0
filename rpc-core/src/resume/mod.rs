//! Resumable sequences across reconnects, with session state in a store.
//!
//! A sequence that opts into resumption lives in a log: the producer's
//! [`ResumableWriter`] appends every item under the next id to a
//! [`SessionStore`] (in memory by default; Redis with the `redis` feature),
//! and keeps at most a window of unacknowledged items there. The consumer's
//! [`ResumableSequence`] reads the log through a server offering the
//! [`Resume`] interface ([`ResumeServer`]), acknowledges as it reads
//! (batched, and whenever it has caught up), and after a connection loss
//! asks the next server its [`Reconnecting`] link reaches to resume after
//! the last id it returned. Every item arrives exactly once, in order; an
//! item that is gone is an explicit [`ResumeGap`] error naming the ids.
//! Ends (close, close with an error, abort) are entries of the log, so they
//! survive a reconnect too.
//!
//! Servers hold no session state: with a shared store, any server process
//! can resume a session another one served.
//!
//! It is a layer over the public API: the wire protocol is unchanged, and
//! ordinary capabilities of a lost connection still fail with
//! `Disconnected`.

mod memory;
mod reconnect;
#[cfg(feature = "redis")]
mod redis;
mod sequence;
mod server;
mod store;

pub use memory::MemoryStore;
pub use reconnect::{
    tcp_dialer, tcp_dialer_with_timeout, Backoff, Dialer, LinkState, Reconnecting, DEFAULT_CONNECT_TIMEOUT,
};
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use sequence::{ResumableSequence, ResumableWriter, ResumeOptions, DEFAULT_RESUME_WINDOW};
pub use server::{Delivery, Resume, ResumeGap, ResumeProxy, ResumeServer};
pub use store::{store_error, Entry, LogRead, LogState, SessionStore, StoreFuture, MAX_CANCEL_REASON};
