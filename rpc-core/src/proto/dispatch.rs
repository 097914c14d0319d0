//! Frame dispatch: one decoded message from the peer, applied.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Ending;
use super::{Protocol, Shell, Violation};
use crate::wire::Message;
use crate::RpcError;

/// How this side polices the peer's pings (from `Config`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PingPolicy {
    pub(crate) min_interval: Duration,
    pub(crate) max_strikes: u32,
}

impl Protocol {
    /// Whether `message` asks for output (a reply, a pong, an echo): the
    /// owner holds such frames back while it owes the peer too much.
    pub(crate) fn asks_for_output(message: &Message) -> bool {
        matches!(message, Message::Call { .. } | Message::Ping(_) | Message::Disembargo { .. })
    }

    /// Applies one message from the peer, read at `now()` (asked only by
    /// the messages that need the time: reading the clock costs more than
    /// handling most frames); `trailer` is the frame's raw bytes after the
    /// header. An error is a protocol violation
    /// (or a broken limit): the owner closes the connection with it.
    pub(crate) fn handle_message(
        &mut self,
        shell: &dyn Shell,
        message: Message,
        trailer: Bytes,
        now: impl FnOnce() -> Instant,
        pings: PingPolicy,
    ) -> Result<(), Violation> {
        if self.is_closed().is_some() {
            return Ok(());
        }
        match message {
            Message::Call { question, target, interface, method, caps } => {
                self.handle_call(shell, question, target, interface, method, &caps, trailer)
            }
            Message::Return { question, result } => self.handle_return(shell, question, result, trailer),
            Message::Finish { question } => self.handle_finish(question),
            Message::Release { export, count } => self.handle_release(export, count),
            Message::Disembargo { target, id } => self.handle_disembargo(target, id),
            Message::DisembargoReply { id } => self.handle_disembargo_reply(id),
            Message::Ping(nonce) => self.handle_ping(nonce, now(), pings.min_interval, pings.max_strikes),
            Message::Pong(nonce) => {
                self.handle_pong(nonce, now());
                Ok(())
            }
            Message::Abort(reason) => {
                Err(RpcError::disconnected(format!("the peer closed the connection ({})", reason.message())))
            }
            Message::StreamData { stream, count, item_caps, caps, item_lens } => {
                self.handle_stream_data(shell, stream, count, (item_caps, item_lens), &caps, trailer)
            }
            Message::StreamWindow { stream, read, window } => self.handle_stream_window(stream, read, window),
            Message::StreamEnd { stream, error } => {
                self.handle_stream_end(stream, error.map_or(Ending::Closed, Ending::Failed))
            }
            Message::StreamAbort { stream } => self.handle_stream_end(stream, Ending::Aborted),
            Message::StreamCancel { stream, reason } => self.handle_stream_cancel(stream, reason),
            Message::StreamPart { stream } => self.handle_stream_part(stream, &trailer),
        }
    }
}
