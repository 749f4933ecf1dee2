//! Following a session from an invite link.
//!
//! A [`Follower`] connects to the relay's follow socket with the invite
//! token, checks the relay's key fingerprint against the key in the link
//! before it opens any frame, and opens each delivered frame with a
//! [`sealcast_protocol::rotation::EpochOpener`]. It reports what happens as
//! [`FollowEvent`]s on a channel, which a [`crate::transcript::Transcript`]
//! turns into the current text.
//!
//! A frame that fails to open, or that replays or reorders a stream outside
//! a resume overlap, becomes [`FollowEvent::FrameRejected`] and is not
//! applied; following continues. Missing final frames become
//! [`FollowEvent::Gap`]. When the connection drops, the follower reconnects
//! with jittered backoff and resumes from
//! `min(last received + 1, last committed + 1)` with the session's epoch.
//! Frames already opened that the relay sends again in that overlap are
//! skipped without an event. Close code 4004 (session ended) ends following
//! normally. Close codes 4006 (cannot recover) and 4009 (invite revoked or
//! paired device removed), a wrong key and rejected credentials are final
//! errors.
//!
//! When the link carries the publisher's key, every opened frame also goes
//! to an [`sealcast_protocol::authorship::AuthorshipVerifier`]. A checkpoint
//! whose signature fails becomes [`FollowEvent::SignatureRejected`]. Once
//! the session ends, each stream's verdict arrives as a
//! [`FollowEvent::StreamVerdict`] before [`FollowEvent::Ended`], and
//! [`verdict::describe`] words it.
//!
//! After the clinician device rotates the session key, frames carry a later
//! key epoch. [`Follower::add_key`] hands the follower that epoch's key
//! while it runs. Frames of an epoch whose key it lacks become
//! [`FollowEvent::FrameUnreadable`] and are held, up to 16 MiB, and opened
//! in order once the key arrives. The grace window of docs/protocol.md,
//! section 14.3 applies: frames of the previous epoch open only until 64
//! frames of the newest epoch have been opened. The relay stores the
//! fingerprint of the epoch 0 key only, so a link of a later epoch skips the
//! fingerprint check.

mod event;
mod state;
pub mod verdict;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use sealcast_protocol::api::{close, decode_delivery, FollowerEvent};
use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::{FollowInvite, InviteLink, SessionKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

pub use self::event::{FollowEvent, FollowReport};

use self::state::FollowState;
use crate::api::error_chain;
use crate::auth::BearerToken;
use crate::backoff::Backoff;
use crate::endpoint;
use crate::error::ClientError;
use crate::keepalive::Keepalive;
use crate::secret::SecretString;
use crate::tls::TlsSettings;
use crate::ws::{self, Credential, Failure, RelaySocket};

/// Follower settings: invite link, publisher key, trusted roots, backoff and event buffer.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// The parsed invite link: relay, invite token and key.
    pub link: InviteLink,
    /// Key epoch of the link's key, 0 until the first rotation.
    pub key_epoch: u32,
    /// The publishing device's key that streams are checked against, or
    /// `None` to check no stream and report no verdict.
    pub publisher: Option<PublisherKey>,
    /// Trusted roots for the relay's certificate.
    pub tls: TlsSettings,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Events buffered before the follower stops reading from the relay.
    pub event_capacity: usize,
    /// Pings and the idle limit that detect a silent connection.
    pub keepalive: Keepalive,
}

impl FollowerConfig {
    /// Creates a configuration with the default backoff and a 256-event buffer.
    pub fn new(link: InviteLink, tls: TlsSettings) -> Self {
        FollowerConfig {
            link,
            key_epoch: 0,
            publisher: None,
            tls,
            backoff: Backoff::default(),
            event_capacity: 256,
            keepalive: Keepalive::default(),
        }
    }

    /// Creates a configuration from a link that may carry the publisher key
    /// and a key epoch, with the defaults of [`FollowerConfig::new`].
    pub fn from_invite(invite: FollowInvite, tls: TlsSettings) -> Self {
        let mut config = Self::new(invite.link, tls);
        config.publisher = invite.publisher;
        config.key_epoch = invite.key_epoch;
        config
    }
}

/// A running follower. Dropping it stops following.
#[derive(Debug)]
pub struct Follower {
    events: mpsc::Receiver<FollowEvent>,
    keys: FollowerKeys,
    task: Option<JoinHandle<Result<FollowReport, ClientError>>>,
}

impl Follower {
    /// Starts following in a background task.
    pub fn start(config: FollowerConfig) -> Result<Self, ClientError> {
        if config.link.relay.scheme() != "https" {
            return Err(ClientError::InvalidRelayUrl {
                url: config.link.relay.to_string(),
                reason:
                    "the invite link must start with https://, because the relay only accepts TLS"
                        .into(),
            });
        }
        let (sender, events) = mpsc::channel(config.event_capacity.max(1));
        let (keys, key_receiver) = mpsc::unbounded_channel();
        let session = FollowSession {
            relay: config.link.relay.clone(),
            auth: BearerToken::new(SecretString::new(config.link.token.clone())),
            tls: config.tls.websocket_config()?,
            backoff: config.backoff,
            keepalive: config.keepalive,
            state: FollowState::new(config.link.key.clone(), config.key_epoch, config.publisher),
            events: sender,
            keys: key_receiver,
            keys_open: true,
        };
        Ok(Follower {
            events,
            keys: FollowerKeys { sender: keys },
            task: Some(tokio::spawn(session.run())),
        })
    }

    /// Gives the follower the key of another key epoch, from a new invite
    /// link after a rotation. The follower then emits [`FollowEvent::KeyAdded`] or
    /// [`FollowEvent::KeyRejected`].
    pub fn add_key(&self, key_epoch: u32, key: SessionKey) -> Result<(), ClientError> {
        self.keys.add_key(key_epoch, key)
    }

    /// Returns a handle that adds keys while another task waits for events.
    pub fn keys(&self) -> FollowerKeys {
        self.keys.clone()
    }

    /// Waits for the next event. Returns `None` once following has stopped,
    /// and [`Follower::finish`] then returns the reason.
    pub async fn next_event(&mut self) -> Option<FollowEvent> {
        self.events.recv().await
    }

    /// Waits until following stops, discarding events not yet read, and
    /// returns how it ended. To stop following early, drop the follower.
    pub async fn finish(mut self) -> Result<FollowReport, ClientError> {
        while self.events.recv().await.is_some() {}
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|err| ClientError::Internal(format!("the follow task failed: {err}")))?,
            None => Err(ClientError::Internal(
                "the follower already finished".into(),
            )),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A handle that gives a running [`Follower`] the keys of later key epochs.
#[derive(Clone)]
pub struct FollowerKeys {
    sender: mpsc::UnboundedSender<(u32, SessionKey)>,
}

impl FollowerKeys {
    /// Sends the key of `key_epoch` to the follower, which adds it before
    /// it handles the next message from the relay. Fails once following has
    /// stopped.
    pub fn add_key(&self, key_epoch: u32, key: SessionKey) -> Result<(), ClientError> {
        self.sender
            .send((key_epoch, key))
            .map_err(|_| ClientError::Internal("the follower already stopped".into()))
    }
}

impl std::fmt::Debug for FollowerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowerKeys").finish_non_exhaustive()
    }
}

/// The outcome of a connection that ended without failure.
enum Done {
    Ended,
    ConsumerGone,
}

/// The follow connection driver.
struct FollowSession {
    relay: url::Url,
    auth: BearerToken,
    tls: Arc<ClientConfig>,
    backoff: Backoff,
    keepalive: Keepalive,
    state: FollowState,
    events: mpsc::Sender<FollowEvent>,
    keys: mpsc::UnboundedReceiver<(u32, SessionKey)>,
    /// Whether every [`FollowerKeys`] handle may still send.
    keys_open: bool,
}

impl FollowSession {
    async fn run(mut self) -> Result<FollowReport, ClientError> {
        let mut failures = 0u32;
        loop {
            let url =
                endpoint::follow_url(&self.relay, self.state.epoch(), self.state.resume_from());
            let outcome =
                match ws::connect(&url, &self.auth, &self.tls, Credential::InviteToken).await {
                    Ok(socket) => self.serve(socket, &mut failures).await,
                    Err(failure) => Err(failure),
                };

            let (reason, retry_after) = match outcome {
                Ok(Done::Ended) | Ok(Done::ConsumerGone) => return Ok(self.state.report()),
                Err(Failure::Fatal(err)) => {
                    tracing::info!(error = %err, "following stopped");
                    return Err(err);
                }
                Err(Failure::Retry(reason)) => (reason, None),
                Err(Failure::RetryAfter { reason, wait }) => (reason, Some(wait)),
            };
            let retry_in = self
                .backoff
                .next_retry(&mut failures, &reason, retry_after)?;
            tracing::debug!(reason = %reason, retry_in_ms = retry_in.as_millis() as u64, "follow connection lost");
            if !self
                .emit(FollowEvent::Disconnected { reason, retry_in })
                .await
            {
                return Ok(self.state.report());
            }
            tokio::time::sleep(retry_in).await;
            self.state.begin_reconnect();
        }
    }

    async fn emit(&self, event: FollowEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    async fn serve(
        &mut self,
        mut socket: RelaySocket,
        failures: &mut u32,
    ) -> Result<Done, Failure> {
        let connected = self.await_welcome(&mut socket).await?;
        *failures = 0;
        if !self.emit(connected).await {
            return Ok(Done::ConsumerGone);
        }

        let mut last_seen = Instant::now();
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.keepalive.ping_interval,
            self.keepalive.ping_interval,
        );
        loop {
            tokio::select! {
                message = socket.next() => {
                    last_seen = Instant::now();
                    let mut events = self.handle_message(message)?;
                    let end_at = events.iter().position(|event| *event == FollowEvent::Ended);
                    let ended = end_at.is_some();
                    if let Some(at) = end_at {
                        // The consumer gets the verdicts before the end.
                        events.splice(at..at, self.state.verdict_events());
                    }
                    for event in events {
                        if !self.emit(event).await {
                            return Ok(Done::ConsumerGone);
                        }
                    }
                    if ended {
                        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                        return Ok(Done::Ended);
                    }
                }
                key = self.keys.recv(), if self.keys_open => {
                    let Some((key_epoch, key)) = key else {
                        self.keys_open = false;
                        continue;
                    };
                    for event in self.state.add_key(key_epoch, key) {
                        if !self.emit(event).await {
                            return Ok(Done::ConsumerGone);
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > self.keepalive.idle_limit {
                        return Err(Failure::Retry(format!(
                            "no message from the relay in {} s",
                            self.keepalive.idle_limit.as_secs_f64()
                        )));
                    }
                    socket
                        .send(Message::Ping(Vec::new().into()))
                        .await
                        .map_err(|err| Failure::Retry(error_chain(&err)))?;
                }
            }
        }
    }

    /// Reads until the welcome, and checks it. No frame is opened before.
    async fn await_welcome(&mut self, socket: &mut RelaySocket) -> Result<FollowEvent, Failure> {
        let deadline = Instant::now() + self.keepalive.welcome_timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, socket.next())
                .await
                .map_err(|_| {
                    Failure::Retry(format!(
                        "no welcome within {} s",
                        self.keepalive.welcome_timeout.as_secs_f64()
                    ))
                })?;
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(match follower_close(frame) {
                        CloseOutcome::Ended => Failure::Fatal(ClientError::SessionEnded),
                        CloseOutcome::Failed(failure) => failure,
                    })
                }
                Some(Ok(Message::Binary(_))) => {
                    return Err(Failure::Fatal(ClientError::ProtocolViolation(
                        "a frame arrived before the welcome".into(),
                    )))
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(Failure::Retry(error_chain(&err))),
                None => {
                    return Err(Failure::Retry(
                        "connection closed before the welcome".into(),
                    ))
                }
            };
            return match serde_json::from_str::<FollowerEvent>(&text) {
                Ok(FollowerEvent::Welcome {
                    session_id,
                    epoch,
                    fingerprint,
                    from_offset,
                    ended,
                }) => self
                    .state
                    .welcome(session_id, epoch, &fingerprint, from_offset, ended)
                    .map_err(Failure::Fatal),
                Ok(other) => Err(Failure::Fatal(ClientError::ProtocolViolation(format!(
                    "{other:?} arrived before the welcome"
                )))),
                Err(err) => Err(Failure::Fatal(ClientError::ProtocolViolation(format!(
                    "invalid follower event: {err}"
                )))),
            };
        }
    }

    fn handle_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Vec<FollowEvent>, Failure> {
        match message {
            Some(Ok(Message::Binary(bytes))) => match decode_delivery(&bytes) {
                Some((offset, frame)) => self.state.delivery(offset, frame).map_err(Failure::Fatal),
                None => {
                    tracing::warn!(
                        len = bytes.len(),
                        "ignoring a delivery shorter than its offset"
                    );
                    Ok(Vec::new())
                }
            },
            Some(Ok(Message::Text(text))) => Ok(self.handle_event(&text)),
            Some(Ok(Message::Close(frame))) => match follower_close(frame) {
                CloseOutcome::Ended => Ok(vec![FollowEvent::Ended]),
                CloseOutcome::Failed(failure) => Err(failure),
            },
            Some(Ok(_)) => Ok(Vec::new()),
            Some(Err(err)) => Err(Failure::Retry(error_chain(&err))),
            None => Err(Failure::Retry("the relay closed the connection".into())),
        }
    }

    fn handle_event(&mut self, text: &str) -> Vec<FollowEvent> {
        match serde_json::from_str::<FollowerEvent>(text) {
            Ok(FollowerEvent::Committed { offset }) => {
                self.state.committed(offset);
                Vec::new()
            }
            Ok(FollowerEvent::Ended) => vec![FollowEvent::Ended],
            Ok(FollowerEvent::Welcome { .. }) => {
                tracing::warn!("ignoring a second welcome");
                Vec::new()
            }
            Err(err) => {
                tracing::warn!(error = %err, "ignoring an invalid follower event");
                Vec::new()
            }
        }
    }
}

/// The meaning of a close frame on a follow socket.
enum CloseOutcome {
    /// Close code 4004: the session is over, which is how following normally ends.
    Ended,
    /// Any other close.
    Failed(Failure),
}

/// Sorts a close frame on a follow socket.
fn follower_close(frame: Option<CloseFrame>) -> CloseOutcome {
    let Some(frame) = frame else {
        return CloseOutcome::Failed(Failure::Retry(
            "the relay closed the connection without a code".into(),
        ));
    };
    let code = u16::from(frame.code);
    let reason = ws::describe_close(code, &frame.reason);
    let failure = match code {
        close::SESSION_ENDED => return CloseOutcome::Ended,
        close::CANNOT_RECOVER => Failure::Fatal(ClientError::CannotRecover),
        close::REVOKED => Failure::Fatal(ClientError::Closed {
            code,
            reason,
            hint: "the invite was revoked or this device was removed: ask the clinic for a new link or pairing",
        }),
        close::NORMAL
        | close::GOING_AWAY
        | close::INTERNAL_ERROR
        | 1006
        | 1012
        | 1013
        | close::LAGGED
        | close::TIMEOUT => Failure::Retry(format!("relay closed with code {code} ({reason})")),
        _ => Failure::Fatal(ClientError::Closed {
            code,
            reason,
            hint: "check that the relay and this client are the same version",
        }),
    };
    CloseOutcome::Failed(failure)
}

#[cfg(test)]
mod tests {
    use sealcast_protocol::SessionKey;

    use super::*;

    #[test]
    fn config_debug_hides_token_and_key() {
        let key = SessionKey::from_bytes([3; 32]);
        let link = InviteLink {
            relay: url::Url::parse("https://relay.example/").unwrap(),
            token: "invite-token-value".into(),
            key: key.clone(),
        };
        let text = format!(
            "{:?}",
            FollowerConfig::new(link, TlsSettings::public_roots())
        );
        assert!(!text.contains("invite-token-value"), "{text}");
        assert!(!text.contains(&key.to_base64url()), "{text}");
    }

    #[tokio::test]
    async fn plain_http_link_is_rejected() {
        let link = InviteLink {
            relay: url::Url::parse("http://relay.example/").unwrap(),
            token: "token".into(),
            key: SessionKey::from_bytes([3; 32]),
        };
        let err =
            Follower::start(FollowerConfig::new(link, TlsSettings::public_roots())).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }
}
