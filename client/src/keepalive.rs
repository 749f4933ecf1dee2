//! How a publisher or follower notices a connection that went silent.
//!
//! A connection whose packets are dropped somewhere on the way, by a
//! network that changed under a phone or a middlebox that forgot it, stays
//! open on both ends until something writes to it and waits for an answer.
//! The client pings the relay at an interval and treats the connection as
//! lost when nothing, pongs included, arrived for the idle limit; then it
//! reconnects and resumes as after any other loss.

use std::time::Duration;

/// Ping interval and idle limit of a publish or follow socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between two pings to the relay.
    pub ping_interval: Duration,
    /// Time without any message from the relay after which the connection
    /// counts as lost. Should exceed `ping_interval` several times over, so
    /// that one late pong does not cost a reconnect.
    pub idle_limit: Duration,
    /// Maximum wait for the relay's `welcome` after the upgrade.
    pub welcome_timeout: Duration,
}

impl Default for Keepalive {
    /// Returns a ping every 15 s, a 45 s idle limit and 15 s for the welcome.
    fn default() -> Self {
        Keepalive {
            ping_interval: Duration::from_secs(15),
            idle_limit: Duration::from_secs(45),
            welcome_timeout: Duration::from_secs(15),
        }
    }
}
