//! The simulated devices: connection set-up with the same credentials real
//! devices use, the open-loop publisher and the decrypting follower.
//!
//! | module | job |
//! | --- | --- |
//! | [`socket`] | TCP from several source addresses, TLS, WebSocket upgrade |
//! | [`publisher`] | sealing and sending frames at intended times, acknowledgements |
//! | [`follower`] | opening frames, latency, gaps, duplicates, decryption errors |

pub mod follower;
pub mod publisher;
pub mod socket;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sealcast_client::auth::{Authorizer, BearerToken};
use sealcast_client::SecretString;
use sealcast_protocol::api::{close, FollowerEvent, PublisherEvent};
use sealcast_protocol::{Fingerprint, SessionKey};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use self::socket::{Dialer, Socket, CONNECT_TIMEOUT};
use crate::stats::Recorder;
use crate::workload::{instant_at, monotonic_micros};

/// The time line of one step, fixed before any frame is sent.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When publishers start; warm-up begins.
    pub start: Instant,
    /// End of warm-up, start of the measurement window.
    pub measure_start: Instant,
    /// End of the measurement window.
    pub stop: Instant,
    /// When publishers stop sending. Frames between `stop` and this are not
    /// measured: they keep the load on while the window's last frames are in
    /// flight, so the burst of session ends that follows cannot delay them.
    pub send_stop: Instant,
    /// Latest time for acknowledgements and deliveries after `send_stop`.
    pub drain_deadline: Instant,
}

/// Time publishers keep sending after the measurement window.
pub const COOL_DOWN: Duration = Duration::from_secs(2);

impl Timing {
    /// Lays out a step that starts after `lead`.
    pub fn new(lead: Duration, warmup: Duration, duration: Duration, drain: Duration) -> Timing {
        let start = Instant::now() + lead;
        let measure_start = start + warmup;
        let stop = measure_start + duration;
        let send_stop = stop + COOL_DOWN;
        Timing {
            start,
            measure_start,
            stop,
            send_stop,
            drain_deadline: send_stop + drain,
        }
    }

    /// Returns the time line on `CLOCK_MONOTONIC`, the form sent to worker processes.
    pub fn to_timeline(self) -> Timeline {
        Timeline {
            start_us: monotonic_micros(self.start),
            measure_start_us: monotonic_micros(self.measure_start),
            stop_us: monotonic_micros(self.stop),
            send_stop_us: monotonic_micros(self.send_stop),
            drain_deadline_us: monotonic_micros(self.drain_deadline),
        }
    }

    /// Rebuilds the time line in this process's instants.
    pub fn from_timeline(timeline: &Timeline) -> Timing {
        Timing {
            start: instant_at(timeline.start_us),
            measure_start: instant_at(timeline.measure_start_us),
            stop: instant_at(timeline.stop_us),
            send_stop: instant_at(timeline.send_stop_us),
            drain_deadline: instant_at(timeline.drain_deadline_us),
        }
    }
}

/// The time line of one step in microseconds on `CLOCK_MONOTONIC`, which
/// every process on the machine reads alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    /// [`Timing::start`].
    pub start_us: u64,
    /// [`Timing::measure_start`].
    pub measure_start_us: u64,
    /// [`Timing::stop`].
    pub stop_us: u64,
    /// [`Timing::send_stop`].
    pub send_stop_us: u64,
    /// [`Timing::drain_deadline`].
    pub drain_deadline_us: u64,
}

/// Opens a publish socket and waits for the relay's welcome. Records the
/// set-up time, or the failure by kind.
pub async fn connect_publisher(
    dialer: &Dialer,
    url: &Url,
    auth: &dyn Authorizer,
    recorder: &Recorder,
    key: usize,
) -> Option<Socket> {
    let started = Instant::now();
    let mut socket = open(dialer, url, auth, recorder, "publisher").await?;
    match first_text(&mut socket).await {
        Some(text)
            if matches!(
                serde_json::from_str(&text),
                Ok(PublisherEvent::Welcome { .. })
            ) =>
        {
            recorder.record_connect(key, elapsed_micros(started));
            Some(socket)
        }
        _ => {
            recorder.count_error("publisher connect: no welcome");
            None
        }
    }
}

/// Opens a follow socket from offset 0 and checks the welcome's key
/// fingerprint against the session key before any frame is opened.
pub async fn connect_follower(
    dialer: &Dialer,
    url: &Url,
    token: &SecretString,
    key: &SessionKey,
    recorder: &Recorder,
    shard: usize,
) -> Option<Socket> {
    let started = Instant::now();
    let invite = BearerToken::new(token.clone());
    let mut socket = open(dialer, url, &invite, recorder, "follower").await?;
    let welcome = first_text(&mut socket).await;
    let fingerprint = match welcome.map(|text| serde_json::from_str(&text)) {
        Some(Ok(FollowerEvent::Welcome { fingerprint, .. })) => fingerprint,
        _ => {
            recorder.count_error("follower connect: no welcome");
            return None;
        }
    };
    if Fingerprint::from_base64url(&fingerprint) != Some(key.fingerprint()) {
        recorder.count_error("follower connect: key fingerprint mismatch");
        return None;
    }
    recorder.record_connect(shard, elapsed_micros(started));
    Some(socket)
}

async fn open(
    dialer: &Dialer,
    url: &Url,
    auth: &dyn Authorizer,
    recorder: &Recorder,
    role: &str,
) -> Option<Socket> {
    match dialer.open(url, auth).await {
        Ok(socket) => Some(socket),
        Err(failure) => {
            tracing::debug!(role, kind = %failure.kind, detail = %failure.detail, "connection failed");
            recorder.count_error(&format!("{role} connect: {}", failure.kind));
            None
        }
    }
}

/// Reads messages until the first text message, skipping pings.
async fn first_text(socket: &mut Socket) -> Option<String> {
    let read = async {
        while let Some(message) = socket.next().await {
            match message.ok()? {
                Message::Text(text) => return Some(text.to_string()),
                Message::Close(_) | Message::Binary(_) => return None,
                _ => {}
            }
        }
        None
    };
    tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

fn elapsed_micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Names a close for the error counts, for example `close 4005`.
pub fn close_kind(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("close {}", u16::from(frame.code)),
        None => "close without code".to_string(),
    }
}

/// Returns whether a close is the normal 1000 or the end of the session, 4004.
pub fn is_normal_close(frame: Option<&CloseFrame>) -> bool {
    frame.is_some_and(|frame| {
        let code = u16::from(frame.code);
        code == close::NORMAL || code == close::SESSION_ENDED
    })
}

/// Returns whether a close reports the end of the session (4004).
pub fn is_session_ended(frame: Option<&CloseFrame>) -> bool {
    frame.is_some_and(|frame| u16::from(frame.code) == close::SESSION_ENDED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_survives_the_monotonic_timeline() {
        let timing = Timing::new(
            Duration::from_millis(300),
            Duration::from_secs(2),
            Duration::from_secs(10),
            Duration::from_secs(5),
        );
        let timeline = timing.to_timeline();
        assert_eq!(timeline.measure_start_us - timeline.start_us, 2_000_000);
        assert_eq!(
            timeline.drain_deadline_us - timeline.send_stop_us,
            5_000_000
        );

        let rebuilt = Timing::from_timeline(&timeline);
        let pairs = [
            (timing.start, rebuilt.start),
            (timing.measure_start, rebuilt.measure_start),
            (timing.stop, rebuilt.stop),
            (timing.send_stop, rebuilt.send_stop),
            (timing.drain_deadline, rebuilt.drain_deadline),
        ];
        for (original, back) in pairs {
            let error = if back > original {
                back - original
            } else {
                original - back
            };
            assert!(error < Duration::from_micros(1), "{error:?}");
        }
    }
}
