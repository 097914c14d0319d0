//! A multiplayer arena game over eventual RPC: the example to copy from.
//!
//! Players move on a 20 × 10 grid and collect items; the server ticks at
//! 20 Hz and the first player to the target score wins the round. Every
//! feature of the framework has its natural place in it:
//!
//! | feature | where |
//! |---|---|
//! | `#[eventual]` traits, proxies as values | [`protocol`]: [`Game`](protocol::Game), [`Player`](protocol::Player) |
//! | a capability as a result, promise pipelining | [`Game::join`](protocol::Game::join) returns a [`PlayerProxy`](protocol::PlayerProxy); [`client::Session::join`] calls it before the answer |
//! | typed application errors | [`GameError`](protocol::GameError) |
//! | a returned `Sequence`, consumer-chosen window | [`Player::events`](protocol::Player::events); the client sets capacity and batch |
//! | backpressure seen by the producer | [`host`]: snapshots are skipped for a reader whose window is full |
//! | an uploaded `Sequence` | [`Player::play`](protocol::Player::play): the client's moves |
//! | `Bytes` download via `AsyncRead` | [`Game::replay`](protocol::Game::replay), [`replay::download`] |
//! | cancellation noticed by the producer | [`client::Session::leave`]; the host removes the seat, others get `PlayerLeft` |
//! | capability release | dropping the seat's last proxy frees it ([`server`]) |
//! | keepalive, loss of the server | [`server::keepalive_config`]; a read fails with `Disconnected` |
//!
//! Start with [`protocol`], then [`server`] and [`host`], then [`client`]
//! and [`bot`]. [`arena`] (the rules) and [`view`] (the client's picture of
//! the game) have no networking at all.
//!
//! # Example
//!
//! A whole round over TCP loopback, with two bots:
//!
//! ```
//! use std::time::Duration;
//! use rpc_examples::game::{bot, server};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let options = server::ServerOptions {
//!     players: 2,
//!     target_score: 2,
//!     rounds: Some(1),
//!     tick: Duration::from_millis(5),
//!     ..Default::default()
//! };
//! let server = tokio::spawn(server::run(listener, options));
//! let (ann, bo) = tokio::join!(bot::play(addr, "ann"), bot::play(addr, "bo"));
//! let (ann, bo) = (ann?, bo?);
//! assert_eq!(ann, bo);
//! assert_eq!(ann.scores.values().max(), Some(&2));
//! assert_eq!(server.await??, 1);
//! # Ok(())
//! # }
//! ```

pub mod arena;
pub mod bot;
pub mod client;
pub mod demo;
pub mod host;
pub mod protocol;
pub mod reconnect;
pub mod replay;
pub mod server;
pub mod ui;
pub mod view;
