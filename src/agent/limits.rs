//! What the agent allows a peer before it gives up on it: time to finish the TLS
//! handshake, send a request, take the answer; how many peers may wait unknown, how
//! many may be served, how many block streams run and how many sessions are kept.

use std::time::Duration;

/// The agent's limits; [`Limits::default`] is what `failback serve` runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// To send a request head; also how long a kept-alive connection may idle
    /// (hyper's header timer runs from the moment it waits for the next request).
    pub request: Duration,
    /// A write the peer does not take (it stopped reading) is given up after this.
    pub write: Duration,
    /// Connections still without an authenticated request; past this the oldest
    /// are closed.
    pub pending: usize,
    /// Connections that made an authenticated request (a fleet of 100 hosts with
    /// `--connections 4` makes 400).
    pub authenticated: usize,
    /// Block streams under way at once (the same fleet needs 400).
    pub streams: usize,
    /// Sessions whose last event is kept for `GET /v1/sessions`.
    pub sessions: usize,
    /// Bytes of those events, all sessions together.
    pub session_bytes: usize,
    /// Read buffer of a connection, so the largest request head (hyper's minimum
    /// is 8 KiB).
    pub head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(10),
            request: Duration::from_secs(10),
            // Generous: a client flushing a GiB to a slow disk stops reading meanwhile.
            write: Duration::from_secs(60),
            pending: 256,
            authenticated: 1024,
            streams: 512,
            sessions: 10_000,
            session_bytes: 64 << 20,
            head_bytes: 16 << 10,
        }
    }
}
