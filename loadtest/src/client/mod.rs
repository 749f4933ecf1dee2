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
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use self::socket::{Dialer, Socket, CONNECT_TIMEOUT};
use crate::stats::Recorder;

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
