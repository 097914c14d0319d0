//! Keepalive: answering pings (with strikes for a flood) and timing ours.

use std::time::{Duration, Instant};

use super::{Protocol, Violation};
use crate::wire::Message;
use crate::RpcError;

impl Protocol {
    /// Answers a ping, counting a strike if it came sooner than
    /// `min_interval` after the last; more than `max_strikes` strikes in a
    /// row close the connection. `now` is when the ping was read.
    pub(crate) fn handle_ping(
        &mut self,
        nonce: u64,
        now: Instant,
        min_interval: Duration,
        max_strikes: u32,
    ) -> Result<(), Violation> {
        if !min_interval.is_zero() {
            let too_soon = self.last_ping.is_some_and(|last| now.saturating_duration_since(last) < min_interval);
            self.last_ping = Some(now);
            if too_soon {
                self.ping_strikes += 1;
                if self.ping_strikes > max_strikes {
                    return Err(RpcError::limit(format!(
                        "too many pings: {} in a row came less than {min_interval:?} apart \
                         (ping_min_interval; {max_strikes} allowed)",
                        self.ping_strikes
                    )));
                }
            } else {
                self.ping_strikes = 0;
            }
        }
        self.send_owed(&Message::Pong(nonce), &[]);
        Ok(())
    }

    /// The reader waited for the peer to read: pings that queued up meanwhile
    /// arrive back to back through no fault of the peer.
    pub(crate) fn forgive_pings(&mut self) {
        self.last_ping = None;
    }

    /// Queues a keepalive ping; `now` is when, for the round trip.
    pub(crate) fn send_ping(&mut self, nonce: u64, now: Instant) {
        self.send(&Message::Ping(nonce), &[]);
        self.ping_sent = Some((nonce, now));
    }

    /// The peer answered a ping: if it is our last one, `now` gives the
    /// round trip. Any other nonce is ignored (a pong is harmless).
    pub(crate) fn handle_pong(&mut self, nonce: u64, now: Instant) {
        if let Some((sent_nonce, sent)) = self.ping_sent {
            if sent_nonce == nonce {
                self.ping_sent = None;
                self.last_rtt = Some(now.saturating_duration_since(sent));
            }
        }
    }
}
