//! The background task that carries a publisher's frames to the relay,
//! reconnecting and resending until every frame is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use sealcast_protocol::api::{close, PublisherEvent};
use sealcast_protocol::{SessionId, StreamId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use super::outbox::{AckOutcome, Outbox};
use super::PublishReport;
use crate::api::error_chain;
use crate::auth::Authorizer;
use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::keepalive::Keepalive;
use crate::ws::{self, Credential, Failure, RelaySocket};

/// Maximum wait for the relay to reply to our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request from the [`super::Publisher`] handle.
pub(crate) enum Command {
    /// Send a sealed frame of `stream_id`.
    Frame {
        stream_id: StreamId,
        seq: u64,
        frame: Vec<u8>,
    },
    /// Close once every frame is acknowledged.
    Finish,
}

/// The outcome of a connection that ended without failure.
enum Done {
    Finished,
    HandleDropped,
}

/// The publish connection driver.
pub(crate) struct Link {
    pub(crate) relay: Url,
    pub(crate) url: Url,
    pub(crate) session_id: SessionId,
    /// The stream of the frame sent last, or the first stream before any frame.
    pub(crate) stream_id: StreamId,
    pub(crate) auth: Arc<dyn Authorizer>,
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) backoff: Backoff,
    pub(crate) keepalive: Keepalive,
    pub(crate) outbox: Outbox,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) connected: Option<oneshot::Sender<()>>,
    pub(crate) finishing: bool,
    pub(crate) frames: u64,
    pub(crate) reconnects: u32,
    /// The highest acknowledged sequence number, for [`super::Publisher::acknowledged_seq`].
    pub(crate) acknowledged: watch::Sender<Option<u64>>,
}

impl Link {
    /// Connects, publishes and reconnects until finished or failed.
    pub(crate) async fn run(mut self) -> Result<PublishReport, ClientError> {
        let mut failures = 0u32;
        loop {
            let failure = match ws::connect(
                &self.url,
                self.auth.as_ref(),
                &self.tls,
                Credential::DeviceToken,
            )
            .await
            {
                Ok(socket) => match self.serve(socket, &mut failures).await {
                    Ok(Done::Finished) => return Ok(self.report()),
                    Ok(Done::HandleDropped) => {
                        return Err(ClientError::Internal(
                            "the publisher was dropped before finish()".into(),
                        ))
                    }
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };

            let (reason, retry_after) = match failure {
                // The caller gets the error and reports it, so it is logged
                // here only for debugging.
                Failure::Fatal(err) => {
                    tracing::debug!(session_id = %self.session_id, error = %err, "publishing stopped");
                    return Err(err);
                }
                Failure::Retry(reason) => (reason, None),
                Failure::RetryAfter { reason, wait } => (reason, Some(wait)),
            };
            let delay = self
                .backoff
                .next_retry(&mut failures, &reason, retry_after)?;
            tracing::warn!(
                session_id = %self.session_id,
                reason = %reason,
                unacknowledged = self.outbox.len(),
                retry_in_ms = delay.as_millis() as u64,
                "publish connection lost, reconnecting"
            );
            if self.wait_accepting_frames(delay).await {
                return Err(ClientError::Internal(
                    "the publisher was dropped before finish()".into(),
                ));
            }
            self.reconnects += 1;
        }
    }

    /// Sleeps for `delay` while still taking frames from the handle into the
    /// outbox (up to the window), so sealing never stalls on a lost
    /// connection: the frames go out with the resend after the reconnect.
    /// Returns whether the handle was dropped.
    async fn wait_accepting_frames(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return false,
                command = self.commands.recv(), if !self.finishing && self.outbox.has_room() => {
                    match command {
                        Some(Command::Frame { stream_id, seq, frame }) => {
                            self.keep(stream_id, seq, frame);
                        }
                        Some(Command::Finish) => self.finishing = true,
                        None => return true,
                    }
                }
            }
        }
    }

    /// Puts a frame into the outbox before it is sent.
    fn keep(&mut self, stream_id: StreamId, seq: u64, frame: Vec<u8>) {
        if stream_id != self.stream_id {
            tracing::info!(session_id = %self.session_id, previous = %self.stream_id, %stream_id, "publishing on a new stream");
            self.stream_id = stream_id;
        }
        self.outbox.push(stream_id, seq, frame);
        self.frames += 1;
    }

    fn report(&self) -> PublishReport {
        PublishReport {
            stream_id: self.stream_id,
            frames: self.frames,
            acknowledged_seq: self.outbox.acknowledged(),
            last_offset: self.outbox.last_offset(),
            reconnects: self.reconnects,
            publisher: None,
            endorsed_by: None,
            key_epoch: 0,
        }
    }

    /// Runs one connection: welcome, resend, then send and receive until it ends.
    async fn serve(
        &mut self,
        mut socket: RelaySocket,
        failures: &mut u32,
    ) -> Result<Done, Failure> {
        self.await_welcome(&mut socket).await?;
        // A welcome alone does not reset the backoff while frames wait: a
        // relay whose store fails welcomes every reconnect and then closes
        // it, and retrying at once would only repeat that. The first
        // acknowledgement on this connection resets it.
        let acknowledged_at_welcome = self.outbox.acknowledged();
        if self.outbox.is_empty() {
            *failures = 0;
        }
        if let Some(connected) = self.connected.take() {
            let _ = connected.send(());
        }

        self.resend(&mut socket).await?;

        let mut last_seen = Instant::now();
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.keepalive.ping_interval,
            self.keepalive.ping_interval,
        );
        loop {
            if self.finishing && self.outbox.is_empty() {
                close_politely(&mut socket).await;
                return Ok(Done::Finished);
            }

            tokio::select! {
                message = socket.next() => {
                    last_seen = Instant::now();
                    self.handle_message(message)?;
                    if *failures > 0 && self.outbox.acknowledged() != acknowledged_at_welcome {
                        *failures = 0;
                    }
                }
                command = self.commands.recv(), if !self.finishing && self.outbox.has_room() => {
                    match command {
                        Some(Command::Frame { stream_id, seq, frame }) => {
                            self.keep(stream_id, seq, frame.clone());
                            socket.send(Message::binary(frame)).await.map_err(lost)?;
                        }
                        Some(Command::Finish) => self.finishing = true,
                        None => return Ok(Done::HandleDropped),
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > self.keepalive.idle_limit {
                        return Err(Failure::Retry(format!(
                            "no message from the relay in {} s",
                            self.keepalive.idle_limit.as_secs_f64()
                        )));
                    }
                    socket.send(Message::Ping(Vec::new().into())).await.map_err(lost)?;
                }
            }
        }
    }

    async fn await_welcome(&self, socket: &mut RelaySocket) -> Result<(), Failure> {
        let deadline = Instant::now() + self.keepalive.welcome_timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, socket.next())
                .await
                .map_err(|_| {
                    Failure::Retry(format!(
                        "no welcome from the relay within {} s",
                        self.keepalive.welcome_timeout.as_secs_f64()
                    ))
                })?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str::<PublisherEvent>(&text) {
                        Ok(PublisherEvent::Welcome { session_id, .. })
                            if session_id == self.session_id =>
                        {
                            tracing::info!(session_id = %self.session_id, stream_id = %self.stream_id, "publish connection ready");
                            Ok(())
                        }
                        Ok(PublisherEvent::Welcome { session_id, .. }) => Err(violation(format!(
                            "welcome names session {session_id}, not {}",
                            self.session_id
                        ))),
                        Ok(other) => Err(violation(format!("{other:?} arrived before welcome"))),
                        Err(err) => Err(violation(format!("invalid publisher event: {err}"))),
                    };
                }
                Some(Ok(Message::Close(frame))) => return Err(close_failure(frame, &self.relay)),
                Some(Ok(Message::Binary(_))) => {
                    return Err(violation("binary message on a publish socket".into()))
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(lost(err)),
                None => return Err(Failure::Retry("connection closed before welcome".into())),
            }
        }
    }

    async fn resend(&self, socket: &mut RelaySocket) -> Result<(), Failure> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        tracing::info!(
            session_id = %self.session_id,
            frames = self.outbox.len(),
            "resending unacknowledged frames"
        );
        for frame in self.outbox.frames() {
            socket
                .feed(Message::binary(frame.to_vec()))
                .await
                .map_err(lost)?;
        }
        socket.flush().await.map_err(lost)
    }

    fn handle_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Failure> {
        match message {
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<PublisherEvent>(&text) {
                    Ok(PublisherEvent::Ack {
                        stream_id,
                        seq,
                        offset,
                    }) => self.handle_ack(stream_id, seq, offset),
                    Ok(PublisherEvent::Welcome { .. }) => {
                        tracing::warn!(session_id = %self.session_id, "relay sent a second welcome");
                    }
                    Err(err) => {
                        tracing::warn!(session_id = %self.session_id, error = %err, "ignoring an invalid publisher event");
                    }
                }
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => Err(close_failure(frame, &self.relay)),
            Some(Ok(Message::Binary(_))) => {
                tracing::warn!(session_id = %self.session_id, "ignoring a binary message on the publish socket");
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(err)) => Err(lost(err)),
            None => Err(Failure::Retry("the relay closed the connection".into())),
        }
    }

    fn handle_ack(&mut self, stream_id: StreamId, seq: u64, offset: u64) {
        match self.outbox.acknowledge(stream_id, seq, offset) {
            AckOutcome::Advanced(count) => {
                tracing::trace!(session_id = %self.session_id, seq, offset, count, "frames acknowledged");
                self.acknowledged.send_replace(self.outbox.acknowledged());
            }
            AckOutcome::Stale => {}
            AckOutcome::OtherStream => {
                tracing::warn!(session_id = %self.session_id, %stream_id, "ignoring an ack for another stream");
            }
            AckOutcome::BeyondSent => {
                tracing::warn!(session_id = %self.session_id, seq, "ignoring an ack for a frame never sent");
            }
        }
    }
}

/// Sorts a close frame from the relay. Retrying is right when the relay is
/// restarting or failed, and wrong when retrying cannot change the outcome.
/// Close code 4007 is final, because reconnecting would replace the
/// publisher that replaced this one, and the two would take turns. Close
/// code 4009 is final, because the revoked sign-in cannot connect again.
pub(crate) fn close_failure(frame: Option<CloseFrame>, relay: &Url) -> Failure {
    let Some(frame) = frame else {
        return Failure::Retry("the relay closed the connection without a code".into());
    };
    let code = u16::from(frame.code);
    let reason = ws::describe_close(code, &frame.reason);
    match code {
        close::NORMAL
        | close::GOING_AWAY
        | close::INTERNAL_ERROR
        | 1006
        | 1012
        | 1013
        | close::LAGGED
        | close::TIMEOUT => Failure::Retry(format!("relay closed with code {code} ({reason})")),
        close::SESSION_ENDED => Failure::Fatal(ClientError::SessionEnded),
        close::REPLACED => Failure::Fatal(ClientError::Replaced),
        close::REVOKED => Failure::Fatal(ClientError::Revoked {
            relay: relay.to_string(),
        }),
        close::MALFORMED_FRAME..=close::SEQUENCE_GAP => Failure::Fatal(ClientError::Closed {
            code,
            reason,
            hint: "the relay rejected a frame: check that the relay and this client speak the same protocol version",
        }),
        _ => Failure::Fatal(ClientError::Closed {
            code,
            reason,
            hint: "check that the relay and this client are the same version",
        }),
    }
}

async fn close_politely(socket: &mut RelaySocket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "publisher finished".into(),
    };
    let _ = socket.close(Some(frame)).await;
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
}

fn lost(err: tokio_tungstenite::tungstenite::Error) -> Failure {
    Failure::Retry(error_chain(&err))
}

fn violation(reason: String) -> Failure {
    Failure::Fatal(ClientError::ProtocolViolation(reason))
}
