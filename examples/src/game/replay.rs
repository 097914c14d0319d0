//! Round replays: the server records every event of a round as a line of
//! text, and serves the finished log as a [`Bytes`] stream.
//!
//! The log is kept as a `bytes::Bytes` *chunk*; [`Bytes`] (from `rpc_core`)
//! is the *stream* capability it is written into. Written once, the chunk is
//! shared by every download without copying.

use std::future::Future;

use rpc_core::{Bytes, ErrorKind, RpcError};
use tokio::io::AsyncReadExt;

use super::protocol::{GameEvent, GameProxy, Snapshot};
use super::view::describe;

/// How long a log may grow before snapshots stop being recorded (a round
/// nobody wins could otherwise grow it forever); other events still are.
pub const MAX_SNAPSHOT_LOG: usize = 1 << 20;

/// The text log of one round, growing as the round goes.
#[derive(Debug, Default)]
pub struct Recording {
    text: String,
}

impl Recording {
    /// An empty log.
    pub fn new() -> Self {
        Recording::default()
    }

    /// Appends one line for `event` (for a snapshot, only while the log is
    /// shorter than [`MAX_SNAPSHOT_LOG`]).
    pub fn record(&mut self, event: &GameEvent) {
        let line = match event {
            GameEvent::Snapshot(_) if self.text.len() >= MAX_SNAPSHOT_LOG => return,
            GameEvent::Snapshot(snapshot) => snapshot_line(snapshot),
            other => describe(other),
        };
        self.text.push_str(&line);
        self.text.push('\n');
    }

    /// The finished log, as a chunk to serve.
    pub fn finish(self) -> bytes::Bytes {
        bytes::Bytes::from(self.text)
    }
}

/// `tick 12: alice@3,4=1 bob@7,0=2 | items 1,1 5,8`
fn snapshot_line(snapshot: &Snapshot) -> String {
    let mut line = format!("tick {}:", snapshot.tick);
    for player in &snapshot.players {
        line.push_str(&format!(" {}@{}={}", player.name, player.pos, player.score));
    }
    line.push_str(" | items");
    for item in &snapshot.items {
        line.push_str(&format!(" {item}"));
    }
    line
}

/// Returns a fresh byte stream at once and fills it, from a task, with the
/// log that `log` resolves to (or, for `None`, ends it with an error saying
/// round `round` has no replay). Must be called within a Tokio runtime.
pub fn serve<F>(round: u32, log: F) -> Bytes
where
    F: Future<Output = Option<bytes::Bytes>> + Send + 'static,
{
    let (mut writer, replay) = Bytes::channel();
    tokio::spawn(async move {
        match log.await {
            Some(log) => {
                // Queues the chunk without copying; `close` waits until the
                // reader has taken it all, window by window.
                writer.write(log)?;
                writer.close(None).await
            }
            None => {
                let missing = RpcError::new(ErrorKind::Application, format!("round {round} has no replay (yet)"));
                writer.close(Some(missing)).await
            }
        }
    });
    replay
}

/// Downloads the replay of `round` through `tokio::io::AsyncRead`.
///
/// # Errors
///
/// The stream's error (unknown round, connection lost) as an `io::Error`.
pub async fn download(game: &GameProxy, round: u32) -> std::io::Result<Vec<u8>> {
    let mut replay = game.replay(round);
    let mut log = Vec::new();
    replay.read_to_end(&mut log).await?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::protocol::{PlayerState, Pos};

    #[test]
    fn snapshots_become_one_compact_line() {
        let mut recording = Recording::new();
        let players = vec![PlayerState { name: "ann".into(), pos: Pos { x: 3, y: 4 }, score: 1 }];
        recording.record(&GameEvent::Snapshot(Snapshot { tick: 12, players, items: vec![Pos { x: 1, y: 1 }] }));
        assert_eq!(&recording.finish()[..], b"tick 12: ann@3,4=1 | items 1,1\n");
    }
}
