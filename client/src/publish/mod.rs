//! Publishing sealed transcript frames to the relay.
//!
//! A [`Publisher`] seals each segment on one stream (one sealer, so the
//! stream id and sequence numbers stay the same across reconnects) and
//! hands the frame to a background task. With a device identity key
//! ([`PublisherConfig::identity`]) the stream is signed. A checkpoint frame
//! follows every 16 frames, [`Publisher::end`] seals a signed end, and
//! [`Publisher::finish`] closes the stream with a last checkpoint. A
//! follower with the device's public key can then check that every frame
//! came from this device and that none is missing. That task keeps every frame until
//! the relay acknowledges it, and waits for acknowledgements once
//! [`PublisherConfig::window`] frames are outstanding. When the connection
//! drops, or the relay closes it with a code worth retrying, the task
//! reconnects with jittered exponential backoff and resends every
//! unacknowledged frame in order. The relay drops the frames it already has
//! and acknowledges them again.
//!
//! [`Publisher::rotate_key`] replaces the session key during the session
//! (docs/protocol.md, section 14). It closes the current stream with a
//! signed checkpoint and seals the following frames on a new stream under
//! the next key epoch. It returns the invite link of the new key. Frames of the
//! closed stream that the relay has not acknowledged stay in the outbox and
//! are resent, still sealed under the old key, after a reconnect.
//!
//! Final errors, which stop publishing: HTTP 401, 403, 404 and 410 on the
//! upgrade, close codes 4000-4003 (the relay rejected a frame), 4004 (the
//! session ended), 4007 (another publisher connection replaced this one) and
//! 4009 (the device's sign-in was revoked).

mod link;
mod outbox;
mod sealing;

use std::sync::Arc;

use sealcast_protocol::authorship::{Endorsement, PublisherKey};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::rotation::next_epoch_key;
use sealcast_protocol::{
    FollowInvite, InviteLink, SessionId, SessionKey, StreamId, TranscriptSegment,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use url::Url;

use self::link::{Command, Link};
use self::outbox::Outbox;
use self::sealing::{SealedFrame, StreamSealing};
use crate::auth::Authorizer;
use crate::backoff::Backoff;
use crate::endpoint;
use crate::error::ClientError;
use crate::keepalive::Keepalive;
use crate::keystore::StoredSession;
use crate::secret::SecretString;
use crate::tls::TlsSettings;

/// Default limit of unacknowledged frames.
pub const DEFAULT_WINDOW: usize = 1024;

/// Publisher settings: relay, session, credential, signing key, window and backoff.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Relay base URL, `https://HOST:PORT/`.
    pub relay: Url,
    /// Session to publish to.
    pub session_id: SessionId,
    /// Credential of the publish socket.
    pub auth: Arc<dyn Authorizer>,
    /// Trusted roots for the relay's certificate.
    pub tls: TlsSettings,
    /// Most frames sent but not yet acknowledged; publishing waits beyond it.
    pub window: usize,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Pings and the idle limit that detect a silent connection.
    pub keepalive: Keepalive,
    /// The device identity key that signs the stream, or `None` to seal
    /// frames that followers cannot attribute to a device.
    pub identity: Option<Arc<DeviceKey>>,
    /// Key epoch of the session key given to [`Publisher::connect`], 0
    /// until the first rotation.
    pub key_epoch: u32,
    /// The session's invite token, which [`Publisher::rotate_key`] puts into
    /// the new invite link. Without it the publisher cannot rotate.
    pub invite_token: Option<SecretString>,
    /// The endorsement of `identity` by the device that started the session,
    /// on a device that took the session over. Every checkpoint carries it.
    pub endorsement: Option<Endorsement>,
}

impl PublisherConfig {
    /// Creates a configuration with the default window and backoff.
    pub fn new(
        relay: Url,
        session_id: SessionId,
        auth: Arc<dyn Authorizer>,
        tls: TlsSettings,
    ) -> Self {
        PublisherConfig {
            relay,
            session_id,
            auth,
            tls,
            window: DEFAULT_WINDOW,
            backoff: Backoff::default(),
            keepalive: Keepalive::default(),
            identity: None,
            key_epoch: 0,
            invite_token: None,
            endorsement: None,
        }
    }

    /// Signs the stream with the device identity key `identity`, whose
    /// public key goes into the invite link.
    pub fn with_identity(mut self, identity: Arc<DeviceKey>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Creates a configuration for a stored session, with its key epoch and
    /// invite token, authorized by `auth`, usually the token of a
    /// [`crate::auth::SignedInDevice`].
    pub fn from_session(
        session: &StoredSession,
        auth: Arc<dyn Authorizer>,
        tls: TlsSettings,
    ) -> Self {
        let mut config = Self::new(session.relay.clone(), session.session_id, auth, tls);
        config.key_epoch = session.key_epoch;
        config.invite_token = Some(session.invite_token.clone());
        config.endorsement = session.endorsement;
        config
    }
}

/// Summary of a finished publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// The stream the last frames were sealed on, the newest after a rotation.
    pub stream_id: StreamId,
    /// Frames sealed and sent, on every stream.
    pub frames: u64,
    /// Highest sequence number of `stream_id` the relay acknowledged.
    pub acknowledged_seq: Option<u64>,
    /// Highest session offset the relay acknowledged.
    pub last_offset: Option<u64>,
    /// Connections made after the first.
    pub reconnects: u32,
    /// The key that signed the stream, or `None` when it was not signed.
    pub publisher: Option<PublisherKey>,
    /// The key of the device that started the session, when it endorsed
    /// `publisher` for this device, which took the session over.
    pub endorsed_by: Option<PublisherKey>,
    /// Key epoch of `stream_id`.
    pub key_epoch: u32,
}

/// The outcome of [`Publisher::rotate_key`]: the new key and its invite link.
pub struct KeyRotation {
    /// The new key epoch.
    pub key_epoch: u32,
    /// The session key of the new epoch, to store and to hand to followers.
    pub key: SessionKey,
    /// The invite link with the new key, `epoch=` and the publisher key.
    pub invite: FollowInvite,
    /// The stream the rotation closed.
    pub closed_stream: StreamId,
    /// The stream that frames of the new epoch are sealed on.
    pub stream_id: StreamId,
}

impl std::fmt::Debug for KeyRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRotation")
            .field("key_epoch", &self.key_epoch)
            .field("closed_stream", &self.closed_stream)
            .field("stream_id", &self.stream_id)
            .finish_non_exhaustive()
    }
}

/// Publishes segments of one session, on one stream per key epoch.
#[derive(Debug)]
pub struct Publisher {
    sealing: StreamSealing,
    relay: Url,
    session_id: SessionId,
    key_epoch: u32,
    identity: Option<Arc<DeviceKey>>,
    endorsement: Option<Endorsement>,
    invite_token: Option<SecretString>,
    commands: mpsc::Sender<Command>,
    link: Option<JoinHandle<Result<PublishReport, ClientError>>>,
    acknowledged: watch::Receiver<Option<u64>>,
}

impl Publisher {
    /// Starts a new stream and returns once the relay has welcomed the first
    /// connection, or with the error that stopped it.
    pub async fn connect(config: PublisherConfig, key: &SessionKey) -> Result<Self, ClientError> {
        let sealing = StreamSealing::new(
            key,
            config.session_id,
            config.key_epoch,
            config.identity.as_deref(),
        )
        .with_endorsement(config.endorsement)?;
        let (commands, command_receiver) = mpsc::channel(1);
        let (connected, connected_receiver) = oneshot::channel();
        let (acknowledged, acknowledged_receiver) = watch::channel(None);

        let link = Link {
            relay: config.relay.clone(),
            url: endpoint::publish_url(&config.relay, &config.session_id),
            session_id: config.session_id,
            stream_id: sealing.stream_id(),
            auth: config.auth,
            tls: config.tls.websocket_config()?,
            backoff: config.backoff,
            keepalive: config.keepalive,
            outbox: Outbox::new(config.window),
            commands: command_receiver,
            connected: Some(connected),
            finishing: false,
            frames: 0,
            reconnects: 0,
            acknowledged,
        };
        let mut link = tokio::spawn(link.run());

        tokio::select! {
            ready = connected_receiver => {
                if ready.is_err() {
                    return Err(link_outcome(link.await));
                }
            }
            result = &mut link => return Err(link_outcome(result)),
        }
        Ok(Publisher {
            sealing,
            relay: config.relay,
            session_id: config.session_id,
            key_epoch: config.key_epoch,
            identity: config.identity,
            endorsement: config.endorsement,
            invite_token: config.invite_token,
            commands,
            link: Some(link),
            acknowledged: acknowledged_receiver,
        })
    }

    /// Returns the highest sequence number of the newest stream that the
    /// relay has acknowledged so far, which it has committed to its store,
    /// or `None` before the first acknowledgement of that stream.
    pub fn acknowledged_seq(&self) -> Option<u64> {
        *self.acknowledged.borrow()
    }

    /// Returns the id of the stream this publisher seals on.
    pub fn stream_id(&self) -> StreamId {
        self.sealing.stream_id()
    }

    /// Returns the key epoch of the stream this publisher seals on.
    pub fn key_epoch(&self) -> u32 {
        self.key_epoch
    }

    /// Replaces the session key, so that a follower without the new key
    /// can read no later frame (docs/protocol.md, section 14.1).
    ///
    /// A signed stream is first closed with a checkpoint whose `stream_end`
    /// is true, then the next segments go on a new stream sealed with a new
    /// random key under the next key epoch. A stream without an identity
    /// key has no checkpoint to close it with, so it just stops. Frames of
    /// the closed stream still waiting for an acknowledgement are resent,
    /// unchanged, after a reconnect. Fails without rotating when the
    /// configuration has no invite token or the epoch cannot grow.
    pub async fn rotate_key(&mut self) -> Result<KeyRotation, ClientError> {
        let token = self
            .invite_token
            .as_ref()
            .ok_or_else(|| {
                ClientError::Internal(
                    "rotating the key needs the invite token in PublisherConfig::invite_token"
                        .into(),
                )
            })?
            .expose()
            .to_string();
        let (key_epoch, key) = next_epoch_key(self.key_epoch)?;

        let closed_stream = self.sealing.stream_id();
        if let Some(frame) = self.sealing.seal_close()? {
            self.send_frame(frame).await?;
        }
        self.sealing =
            StreamSealing::new(&key, self.session_id, key_epoch, self.identity.as_deref())
                .with_endorsement(self.endorsement)?;
        self.key_epoch = key_epoch;
        tracing::info!(session_id = %self.session_id, key_epoch, %closed_stream, stream_id = %self.sealing.stream_id(), "session key rotated");

        let invite = FollowInvite {
            link: InviteLink {
                relay: self.relay.clone(),
                token,
                key: key.clone(),
            },
            publisher: self.sealing.publisher_key(),
            key_epoch,
        };
        Ok(KeyRotation {
            key_epoch,
            key,
            invite,
            closed_stream,
            stream_id: self.sealing.stream_id(),
        })
    }

    /// Returns the key that signs this stream, or `None` when the
    /// configuration had no identity key.
    pub fn publisher_key(&self) -> Option<PublisherKey> {
        self.sealing.publisher_key()
    }

    /// Seals a segment and queues it for sending, waiting while the window is
    /// full. Returns the frame's sequence number. In a signed stream a
    /// checkpoint frame follows every 16th frame.
    pub async fn publish(&mut self, segment: &TranscriptSegment) -> Result<u64, ClientError> {
        let frames = self.sealing.seal_segment(segment)?;
        let seq = frames.first().map_or(0, |(seq, _)| *seq);
        for frame in frames {
            self.send_frame(frame).await?;
        }
        Ok(seq)
    }

    /// Closes a signed stream with a checkpoint, then waits until the relay
    /// has acknowledged every frame and closes the connection. The stream
    /// takes no more frames after it.
    pub async fn finish(mut self) -> Result<PublishReport, ClientError> {
        if let Some(frame) = self.sealing.seal_close()? {
            self.send_frame(frame).await?;
        }
        self.send(Command::Finish).await?;
        let publisher = self.sealing.signing_key();
        match self.link.take() {
            Some(link) => {
                let mut report = link.await.map_err(join_error)??;
                report.publisher = publisher;
                report.endorsed_by = self.endorsement.map(|endorsement| endorsement.endorser);
                report.key_epoch = self.key_epoch;
                Ok(report)
            }
            None => Err(ClientError::Internal(
                "the publisher already stopped".into(),
            )),
        }
    }

    /// Seals and sends the end-of-session frame, then finishes. The frame
    /// states how many final segments this stream carried, and in a signed
    /// stream it carries the last signature.
    pub async fn end(mut self) -> Result<PublishReport, ClientError> {
        let frame = self.sealing.seal_end()?;
        self.send_frame(frame).await?;
        self.finish().await
    }

    async fn send_frame(&mut self, (seq, frame): SealedFrame) -> Result<(), ClientError> {
        let stream_id = self.sealing.stream_id();
        self.send(Command::Frame {
            stream_id,
            seq,
            frame,
        })
        .await
    }

    async fn send(&mut self, command: Command) -> Result<(), ClientError> {
        if self.commands.send(command).await.is_ok() {
            return Ok(());
        }
        match self.link.take() {
            Some(link) => Err(link_outcome(link.await)),
            None => Err(ClientError::Internal(
                "the publisher already stopped".into(),
            )),
        }
    }
}

/// Returns the error of a link that stopped early.
fn link_outcome(
    result: Result<Result<PublishReport, ClientError>, tokio::task::JoinError>,
) -> ClientError {
    match result {
        Ok(Err(err)) => err,
        Ok(Ok(_)) => ClientError::Internal("the publish connection stopped early".into()),
        Err(err) => join_error(err),
    }
}

fn join_error(err: tokio::task::JoinError) -> ClientError {
    ClientError::Internal(format!("the publish task failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::BearerToken;

    #[test]
    fn config_debug_hides_the_token() {
        let config = PublisherConfig::new(
            Url::parse("https://relay.example/").unwrap(),
            SessionId([1; 16]),
            Arc::new(BearerToken::new(crate::SecretString::from(
                "publisher-token-value",
            ))),
            TlsSettings::public_roots(),
        );
        let text = format!("{config:?}");
        assert!(!text.contains("publisher-token-value"), "{text}");
        assert!(text.contains("window: 1024"), "{text}");
    }
}
