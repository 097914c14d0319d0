//! rpc-core: the runtime of a capability-based eventual RPC framework.
//!
//! You write a plain Rust trait and annotate it with [`eventual`]. The macro
//! generates a *proxy* (`{Trait}Proxy`, the capability) and a server stub.
//! Calls on a proxy return at once with an eventual value; the call is already
//! on its way. Proxies are ordinary serde values, so object references travel
//! as arguments, results, struct fields and collection elements, in both
//! directions over one connection.
//!
//! # A tour
//!
//! ## The interface
//!
//! ```
//! use rpc_core::{eventual, RpcError};
//! use serde::{Deserialize, Serialize};
//!
//! /// Errors are plain serde types; they come back to the caller as themselves.
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub enum BankError {
//!     Insufficient { balance: u64 },
//!     Rpc(String),
//! }
//!
//! // Framework failures (disconnection, limits, ...) convert into your error.
//! impl From<RpcError> for BankError {
//!     fn from(err: RpcError) -> Self {
//!         BankError::Rpc(err.to_string())
//!     }
//! }
//!
//! #[eventual]
//! pub trait Bank {
//!     /// Opens an account: the result is a capability.
//!     fn open(&self, owner: String) -> AccountProxy;
//!     /// Moves money between two accounts the caller holds.
//!     async fn transfer(&self, from: AccountProxy, to: AccountProxy, amount: u64) -> Result<(), BankError>;
//! }
//!
//! #[eventual]
//! pub trait Account {
//!     async fn deposit(&self, amount: u64) -> u64;
//!     async fn withdraw(&self, amount: u64) -> Result<u64, BankError>;
//!     fn balance(&self) -> u64;
//! }
//! # fn main() {}
//! ```
//!
//! ## The server
//!
//! Implement the trait (methods may be `async fn` or plain `fn`) and serve it.
//! `serve` hands every TCP connection its own bootstrap object:
//!
//! ```
//! # use rpc_core::{eventual, RpcError};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! # pub enum BankError { Insufficient { balance: u64 }, Rpc(String) }
//! # impl From<RpcError> for BankError { fn from(e: RpcError) -> Self { BankError::Rpc(e.to_string()) } }
//! # #[eventual]
//! # pub trait Bank {
//! #     fn open(&self, owner: String) -> AccountProxy;
//! #     async fn transfer(&self, from: AccountProxy, to: AccountProxy, amount: u64) -> Result<(), BankError>;
//! # }
//! # #[eventual]
//! # pub trait Account {
//! #     async fn deposit(&self, amount: u64) -> u64;
//! #     async fn withdraw(&self, amount: u64) -> Result<u64, BankError>;
//! #     fn balance(&self) -> u64;
//! # }
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! struct Teller;
//!
//! impl Bank for Teller {
//!     fn open(&self, _owner: String) -> AccountProxy {
//!         AccountProxy::new(Ledger(AtomicU64::new(0)))
//!     }
//!     async fn transfer(&self, from: AccountProxy, to: AccountProxy, amount: u64) -> Result<(), BankError> {
//!         from.withdraw(amount).await?;
//!         to.deposit(amount).await?;
//!         Ok(())
//!     }
//! }
//!
//! struct Ledger(AtomicU64);
//!
//! impl Account for Ledger {
//!     async fn deposit(&self, amount: u64) -> u64 {
//!         self.0.fetch_add(amount, Ordering::SeqCst) + amount
//!     }
//!     async fn withdraw(&self, amount: u64) -> Result<u64, BankError> {
//!         let balance = self.0.load(Ordering::SeqCst);
//!         if balance < amount {
//!             return Err(BankError::Insufficient { balance });
//!         }
//!         Ok(self.0.fetch_sub(amount, Ordering::SeqCst) - amount)
//!     }
//!     fn balance(&self) -> u64 {
//!         self.0.load(Ordering::SeqCst)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn(rpc_core::serve(listener, || BankProxy::new(Teller)));
//! # Ok(())
//! # }
//! ```
//!
//! ## The client, pipelining, and passing capabilities
//!
//! `connect` returns the server's bootstrap capability. `open` returns an
//! `AccountProxy` at once, before the server has answered: calls on it are
//! sent immediately, aimed at the promised answer (*promise pipelining*), so
//! the whole sequence below costs one round trip until the first `await`.
//! The accounts are then passed back to the server as arguments, and the
//! server calls them.
//!
//! ```
//! # use rpc_core::{eventual, RpcError};
//! # use serde::{Deserialize, Serialize};
//! # use std::sync::atomic::{AtomicU64, Ordering};
//! # #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! # pub enum BankError { Insufficient { balance: u64 }, Rpc(String) }
//! # impl From<RpcError> for BankError { fn from(e: RpcError) -> Self { BankError::Rpc(e.to_string()) } }
//! # #[eventual]
//! # pub trait Bank {
//! #     fn open(&self, owner: String) -> AccountProxy;
//! #     async fn transfer(&self, from: AccountProxy, to: AccountProxy, amount: u64) -> Result<(), BankError>;
//! # }
//! # #[eventual]
//! # pub trait Account {
//! #     async fn deposit(&self, amount: u64) -> u64;
//! #     async fn withdraw(&self, amount: u64) -> Result<u64, BankError>;
//! #     fn balance(&self) -> u64;
//! # }
//! # struct Teller;
//! # impl Bank for Teller {
//! #     fn open(&self, _owner: String) -> AccountProxy { AccountProxy::new(Ledger(AtomicU64::new(0))) }
//! #     async fn transfer(&self, from: AccountProxy, to: AccountProxy, amount: u64) -> Result<(), BankError> {
//! #         from.withdraw(amount).await?; to.deposit(amount).await?; Ok(())
//! #     }
//! # }
//! # struct Ledger(AtomicU64);
//! # impl Account for Ledger {
//! #     async fn deposit(&self, amount: u64) -> u64 { self.0.fetch_add(amount, Ordering::SeqCst) + amount }
//! #     async fn withdraw(&self, amount: u64) -> Result<u64, BankError> {
//! #         let balance = self.0.load(Ordering::SeqCst);
//! #         if balance < amount { return Err(BankError::Insufficient { balance }); }
//! #         Ok(self.0.fetch_sub(amount, Ordering::SeqCst) - amount)
//! #     }
//! #     fn balance(&self) -> u64 { self.0.load(Ordering::SeqCst) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # tokio::spawn(rpc_core::serve(listener, || BankProxy::new(Teller)));
//! let bank: BankProxy = rpc_core::connect(addr).await?;
//!
//! let alice = bank.open("alice".into()); // a capability, usable at once
//! let bob = bank.open("bob".into());
//! let deposited = alice.deposit(100); // pipelined on the unresolved `open`
//! assert_eq!(deposited.await?, 100);
//!
//! // Capabilities as arguments: the server calls both accounts.
//! bank.transfer(alice.clone(), bob.clone(), 30).await.map_err(|e| format!("{e:?}"))?;
//! assert_eq!(bob.balance().await?, 30);
//!
//! // Application errors come back as their own type.
//! let refused = bank.transfer(bob.clone(), alice.clone(), 1_000).await;
//! assert_eq!(refused, Err(BankError::Insufficient { balance: 30 }));
//! # Ok(())
//! # }
//! ```
//!
//! ## Local objects behave the same
//!
//! A proxy may wrap a local object; calls go through the same ordered queue
//! and the same serialization, so code does not care where an object lives:
//!
//! ```
//! # use rpc_core::{eventual, RpcError};
//! #[eventual]
//! pub trait Counter {
//!     async fn add(&self, n: u64) -> u64;
//! }
//! struct Tally(std::sync::atomic::AtomicU64);
//! impl Counter for Tally {
//!     async fn add(&self, n: u64) -> u64 {
//!         self.0.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), RpcError> {
//! let counter = CounterProxy::new(Tally(Default::default()));
//! let first = counter.add(1); // calls start in the order they are made
//! let second = counter.add(2);
//! assert_eq!((first.await?, second.await?), (1, 3));
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! * A call is sent when it is made, not when its promise is polled.
//! * Calls on one capability start in the order they were made (E-order),
//!   through pipelined proxies too, before and after they resolve.
//! * Dropping a promise (and everything pipelined on it) cancels the call on
//!   the callee.
//! * Capabilities are reference counted across connections; an object is
//!   dropped when the last remote reference goes, or when the connection does.
//! * Connection loss fails every pending call with [`ErrorKind::Disconnected`];
//!   a silent peer is detected by keepalive ([`Config`]).
//! * Hostile input gets an error reply or closes the connection with a reason;
//!   [`Limits`] bound frame size, calls in flight, exports and nesting depth.
//!   Every limit and timing has a documented default (see [`Limits`] and
//!   [`Config`]).
//! * A call or reply larger than the frame limit
//!   ([`Limits::max_frame_size`], 16 MiB by default) fails alone with
//!   [`ErrorKind::LimitExceeded`] before it is sent; the connection and other
//!   calls carry on. Send bulk data as a [`Bytes`] stream or a [`Sequence`].
//! * A handler that panics (a plain `fn` or an `async fn`, before or after an
//!   await) fails its own call with [`ErrorKind::HandlerPanicked`], whose
//!   message names the method and carries the panic message; a sequence or
//!   byte stream it was about to return ends with the same error. The object
//!   keeps serving its later calls, and its connection (a bootstrap object
//!   included), other objects and other connections are unaffected. The
//!   panic hook still runs, so the panic is logged as usual.
//! * A handler starts where its call lands. On a current-thread runtime, a
//!   call that arrives over a connection starts on that connection's reader
//!   task, once the frames that had arrived are handled (so a call whose
//!   caller already gave up never starts), and runs there until it first
//!   waits: everything shares the one thread anyway, and this saves a task
//!   switch per call. On a multi-thread runtime, and for calls made by
//!   tasks, the object's own task starts it, so a handler that computes or
//!   blocks runs beside the connection's reader (which keeps answering
//!   pings and other calls). After its first await, a handler always runs
//!   on its object's task.
#![warn(missing_docs, unreachable_pub)]

extern crate self as rpc_core;

mod byte_vec;
mod cap;
mod conn;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod payload;
mod promise;
mod proto;
pub mod resume;
mod server;
mod stream;
pub mod transport;
mod wire;

pub use cap::{Capability, Client};
pub use conn::{connect, serve, serve_with, Config, Connection, ConnectionBuilder, ConnectionMetrics, Limits};
pub use error::CallError;
pub use error::{ErrorKind, RpcError};
pub use payload::Payload;
pub use promise::Promise;
pub use promise::PromiseError;
pub use rpc_macros::eventual;
pub use server::{Incoming, Server, ServerHandle, DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
pub use stream::{
    Bytes, BytesWriter, Sequence, SequenceWriter, DEFAULT_BATCH, DEFAULT_BYTE_WINDOW, DEFAULT_CAPACITY,
    DEFAULT_MAX_READ,
};
pub use transport::Listener;
pub use wire::PROTOCOL_VERSION;

/// Items used by code that `#[eventual]` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::byte_vec::ByteVec;
    pub use crate::cap::dispatch::{
        catch_panic, fail_bytes, fail_sequence, interface_id, ready_err, reply_result, reply_value, unimplemented,
        Dispatch, DispatchFuture, IncomingCall, InterfaceInfo, MethodId, Reply,
    };
    pub use crate::stream::{bytes_result, sequence_result, splice, splice_bytes};
    pub use serde;

    /// Sizes of a connection's tables, for tests (`Connection::debug_counts`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TableCounts {
        /// Calls we made that still hold a table entry.
        pub questions: usize,
        /// Calls the peer made that we still hold an answer for.
        pub answers: usize,
        /// Exports, not counting the permanent bootstrap entry.
        pub exports: usize,
        /// Capabilities of the peer we hold.
        pub imports: usize,
        /// Calls held back behind a disembargo.
        pub embargoes: usize,
        /// Open stream halves.
        pub streams: usize,
        /// Whether the connection is closed.
        pub closed: bool,
    }
}
