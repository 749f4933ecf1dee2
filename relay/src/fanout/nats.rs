//! The NATS side of fan-out: one connection per node, an outbox that
//! publishes in commit order, and the feed that applies other nodes'
//! messages to this node's hubs.
//!
//! Every node subscribes to all sessions' subjects at once and drops the
//! messages of sessions it has no hub for: a node with no follower of a
//! session reads the session from the store when a follower arrives. One
//! subscription avoids a subscribe and unsubscribe per session and the
//! window in which a new hub would miss a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event};
use futures_util::StreamExt;
use metrics::{counter, gauge};
use rand::RngCore;
use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::SessionId;
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

use super::message::{self, Dropped, Incoming, MessageKey, Outgoing};
use crate::error::RelayError;
use crate::hub::{Applied, CatchUpTrigger, HubFrame, Registry};
use crate::metrics::{
    FANOUT_CONNECTED, FANOUT_CONNECTIONS, FANOUT_PUBLISHED, FANOUT_PUBLISH_FAILURES,
    FANOUT_RECEIVED, FANOUT_REJECTED, PAIRED_SOCKETS_CLOSED,
};
use crate::shutdown::Shutdown;

/// Messages that may wait for the NATS connection. When it is full, new
/// messages are dropped and counted: the other nodes then read those frames
/// from the store when they see the gap, reconnect or find a session idle.
const OUTBOX_CAPACITY: usize = 16 * 1024;

/// Maximum wait between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Time after which a hub that received nothing reads the store for frames
/// whose NATS message was lost.
const IDLE_RESYNC: Duration = Duration::from_secs(5);

/// Time given to queued messages to leave at shutdown.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Publish failures and dropped messages logged in full. Later publish
/// failures are only counted, and later dropped messages logged once in
/// [`LOG_EVERY_REJECTED`].
const LOGGED_FAILURES: u64 = 10;

/// Interval, in dropped messages, between two log lines about them.
const LOG_EVERY_REJECTED: u64 = 10_000;

/// The node's NATS connection and outbox.
pub(crate) struct NatsFanout {
    client: async_nats::Client,
    node_id: String,
    key: Arc<MessageKey>,
    outbox: mpsc::Sender<Outgoing>,
    /// Counts the events after which hubs must read the store because NATS
    /// messages may have been lost: connections and slow-consumer drops.
    resyncs: watch::Receiver<u64>,
    dropped: AtomicU64,
}

impl NatsFanout {
    /// Starts connecting to `url` in the background and starts the outbox.
    /// Messages are authenticated with `key`, which every node sharing the
    /// store derives alike.
    pub(crate) async fn start(
        url: &str,
        key: Zeroizing<[u8; 32]>,
        shutdown: &Shutdown,
    ) -> Result<Arc<Self>, RelayError> {
        let key = Arc::new(MessageKey::new(key));
        let node_id = new_node_id();
        let (resync, resyncs) = watch::channel(0u64);
        gauge!(FANOUT_CONNECTED).set(0.0);

        let events_node = node_id.clone();
        let (url, credentials) = split_credentials(url)?;
        let mut options = ConnectOptions::new();
        if let Some((user, password)) = credentials {
            options = options.user_and_password(user, password.to_string());
        }
        let options = options
            .name(format!("sealcast-relay {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let resync = resync.clone();
                let node_id = events_node.clone();
                async move { on_event(&event, &resync, &node_id) }
            });
        let client = options.connect(url.as_str()).await.map_err(|error| {
            // The error names the failure, never the URL and its password.
            RelayError::Fanout(format!("{:?}: {error}", error.kind()))
        })?;
        tracing::info!(node_id = %node_id, "NATS fan-out started: connecting in the background");

        let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
        let fanout = Arc::new(NatsFanout {
            client: client.clone(),
            node_id: node_id.clone(),
            key: Arc::clone(&key),
            outbox,
            resyncs,
            dropped: AtomicU64::new(0),
        });
        let sender = Sender {
            client,
            node_id,
            key,
            failures: 0,
        };
        shutdown.spawn(run_outbox(sender, queue, shutdown.clone()));
        Ok(fanout)
    }

    /// Returns this node's random id, which its messages carry.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Returns whether the connection to NATS is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub(super) fn frame_committed(&self, session_id: SessionId, frame: &Arc<HubFrame>) {
        self.send(Outgoing::Frame {
            session_id,
            delivery: frame.delivery.clone(),
        });
    }

    pub(super) fn session_ended(&self, session_id: SessionId, end_offset: u64) {
        self.send(Outgoing::End {
            session_id,
            end_offset,
        });
    }

    pub(super) fn publisher_attached(&self, session_id: SessionId, attached_at: i64) {
        self.send(Outgoing::Publisher {
            session_id,
            attached_at,
        });
    }

    pub(super) fn paired_device_removed(&self, session_id: SessionId, device_id: DeviceId) {
        self.send(Outgoing::DeviceRemoved {
            session_id,
            device_id,
        });
    }

    /// Queues a message without waiting, counting it when the outbox is full.
    fn send(&self, message: Outgoing) {
        let event = message.event();
        if let Err(error) = self.outbox.try_send(message) {
            counter!(FANOUT_PUBLISH_FAILURES, "reason" => "outbox_full").increment(1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped < LOGGED_FAILURES {
                let session_id = match &error {
                    mpsc::error::TrySendError::Full(message)
                    | mpsc::error::TrySendError::Closed(message) => message.session_id(),
                };
                tracing::warn!(
                    %session_id, event,
                    "NATS outbox is full: other nodes will read this from the store"
                );
            }
        }
    }

    /// Subscribes to every session's messages and applies them to the hubs
    /// of `registry`, and resynchronizes hubs from the store after a
    /// reconnection and when they stay idle. Runs until shutdown.
    pub(crate) fn spawn_feed(self: &Arc<Self>, registry: Registry, shutdown: &Shutdown) {
        let feed = RemoteFeed {
            fanout: Arc::clone(self),
            registry,
            rejected: AtomicU64::new(0),
        };
        shutdown.spawn(feed.run(shutdown.clone()));
    }
}

/// Applies other nodes' messages to this node's hubs.
pub(crate) struct RemoteFeed {
    fanout: Arc<NatsFanout>,
    registry: Registry,
    /// Messages dropped so far, for rate-limiting their log lines.
    rejected: AtomicU64,
}

impl RemoteFeed {
    async fn run(self, shutdown: Shutdown) {
        let mut resyncs = self.fanout.resyncs.clone();
        let mut idle_check = tokio::time::interval(IDLE_RESYNC);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With `retry_on_initial_connect`, the subscription is registered
        // now and sent to the server once the connection is up.
        let mut subscription = loop {
            match self.fanout.client.subscribe(message::ALL_SESSIONS).await {
                Ok(subscription) => break subscription,
                Err(error) => {
                    tracing::error!(%error, "failed to subscribe to NATS: retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.triggered() => return,
                    }
                }
            }
        };

        loop {
            tokio::select! {
                received = subscription.next() => match received {
                    Some(received) => self.apply(&received),
                    None => {
                        tracing::error!("NATS subscription ended: other nodes' frames now arrive only from the store");
                        break;
                    }
                },
                changed = resyncs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Messages sent while this node was away, or dropped
                    // while it was slow, are gone: every hub reads what it
                    // missed from the store.
                    for hub in self.registry.hubs() {
                        self.registry.schedule_catch_up(&hub, CatchUpTrigger::Reconnect);
                    }
                }
                _ = idle_check.tick() => {
                    for hub in self.registry.hubs() {
                        if hub.needs_idle_resync(IDLE_RESYNC, Instant::now()) {
                            self.registry.schedule_catch_up(&hub, CatchUpTrigger::Idle);
                        }
                    }
                }
                () = shutdown.triggered() => break,
            }
        }
    }

    /// Applies one received message.
    fn apply(&self, received: &async_nats::Message) {
        let Some(session_id) = message::session_of(received.subject.as_str()) else {
            counter!(FANOUT_REJECTED, "reason" => "unknown_subject").increment(1);
            return;
        };
        let incoming = match message::decode(
            received.subject.as_str(),
            received.headers.as_ref(),
            &received.payload,
            &self.fanout.node_id,
            &self.fanout.key,
        ) {
            Ok(incoming) => incoming,
            Err(Dropped::Own) => return,
            Err(dropped) => {
                counter!(FANOUT_REJECTED, "reason" => dropped.label()).increment(1);
                let rejected = self.rejected.fetch_add(1, Ordering::Relaxed);
                if rejected < LOGGED_FAILURES || rejected.is_multiple_of(LOG_EVERY_REJECTED) {
                    tracing::warn!(
                        %session_id, reason = dropped.label(), rejected = rejected + 1,
                        "dropped an invalid NATS message; later ones are logged only now and then"
                    );
                }
                return;
            }
        };
        let event = match incoming {
            Incoming::Frame { .. } => "frame",
            Incoming::End { .. } => "end",
            Incoming::Publisher { .. } => "publisher",
            Incoming::DeviceRemoved { .. } => "device_removed",
        };
        counter!(FANOUT_RECEIVED, "event" => event).increment(1);

        // Without a hub, no follower of the session is on this node.
        let Some(hub) = self.registry.hub(&session_id) else {
            return;
        };
        let applied = match incoming {
            Incoming::Frame {
                offset,
                header,
                delivery,
            } => hub.apply_remote_frame(offset, &header, delivery),
            Incoming::End { end_offset } => hub.apply_remote_end(end_offset),
            Incoming::Publisher { attached_at } => {
                hub.evict_publisher_attached_before(attached_at);
                Applied::Known
            }
            Incoming::DeviceRemoved { device_id } => {
                let closed = hub.close_paired_device(device_id);
                if closed > 0 {
                    counter!(PAIRED_SOCKETS_CLOSED, "trigger" => "fanout").increment(closed as u64);
                    tracing::info!(
                        %session_id, %device_id, closed,
                        "paired device removed on another node: closed its follow sockets"
                    );
                }
                Applied::Known
            }
        };
        if let Applied::Gap { expected } = applied {
            tracing::debug!(%session_id, expected, "gap in NATS messages: reading the store");
            self.registry.schedule_catch_up(&hub, CatchUpTrigger::Gap);
        }
    }
}

/// Publishes queued messages in order until shutdown, then gives what is
/// still queued a short time to leave.
async fn run_outbox(mut sender: Sender, mut queue: mpsc::Receiver<Outgoing>, shutdown: Shutdown) {
    loop {
        let message = tokio::select! {
            message = queue.recv() => message,
            () = shutdown.triggered() => break,
        };
        let Some(message) = message else { return };
        sender.publish(message).await;
    }

    let drain = async {
        while let Ok(message) = queue.try_recv() {
            sender.publish(message).await;
        }
        let _ = sender.client.flush().await;
    };
    if tokio::time::timeout(DRAIN_TIME, drain).await.is_err() {
        tracing::warn!(
            "NATS outbox did not drain before shutdown: other nodes read the rest from the store"
        );
    }
}

/// The outbox task's side of the connection.
struct Sender {
    client: async_nats::Client,
    node_id: String,
    key: Arc<MessageKey>,
    failures: u64,
}

impl Sender {
    async fn publish(&mut self, message: Outgoing) {
        let subject = message::subject(message.session_id());
        let event = message.event();
        let payload = message.payload();
        let headers = message.headers(&subject, &payload, &self.node_id, &self.key);
        let result = self
            .client
            .publish_with_headers(subject, headers, payload)
            .await;
        match result {
            Ok(()) => counter!(FANOUT_PUBLISHED, "event" => event).increment(1),
            Err(error) => {
                counter!(FANOUT_PUBLISH_FAILURES, "reason" => "nats").increment(1);
                self.failures += 1;
                if self.failures <= LOGGED_FAILURES {
                    tracing::warn!(
                        session_id = %message.session_id(), event, %error,
                        "failed to publish to NATS: other nodes will read this from the store"
                    );
                }
            }
        }
    }
}

/// Slow-consumer events so far, for rate-limiting their log lines.
static SLOW_CONSUMER_EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_event(event: &Event, resync: &watch::Sender<u64>, node_id: &str) {
    match event {
        Event::Connected => {
            gauge!(FANOUT_CONNECTED).set(1.0);
            counter!(FANOUT_CONNECTIONS).increment(1);
            resync.send_modify(|count| *count += 1);
            tracing::info!(node_id, "connected to NATS");
        }
        Event::Disconnected => {
            gauge!(FANOUT_CONNECTED).set(0.0);
            tracing::warn!(node_id, "disconnected from NATS: reconnecting with backoff");
        }
        Event::Closed => {
            gauge!(FANOUT_CONNECTED).set(0.0);
            tracing::info!(node_id, "NATS connection closed");
        }
        Event::SlowConsumer(_) => {
            counter!(FANOUT_REJECTED, "reason" => "slow_consumer").increment(1);
            resync.send_modify(|count| *count += 1);
            let events = SLOW_CONSUMER_EVENTS.fetch_add(1, Ordering::Relaxed);
            if events >= LOGGED_FAILURES && !events.is_multiple_of(LOG_EVERY_REJECTED) {
                return;
            }
            tracing::warn!(
                node_id,
                "NATS dropped messages for this slow node: hubs catch up from the store"
            );
        }
        other => tracing::warn!(node_id, event = %other, "NATS connection event"),
    }
}

/// Doubles the wait from 100 ms up to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    let exponent = u32::try_from(attempts.min(16)).unwrap_or(16);
    Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(MAX_RECONNECT_DELAY)
}

fn new_node_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A NATS user and password.
type Credentials = (String, Zeroizing<String>);

/// Takes the user and password out of a NATS URL such as
/// `nats://USER:PASSWORD@HOST:PORT`: the client sends only credentials set
/// on its options, so the URL alone would connect without them.
fn split_credentials(url: &str) -> Result<(url::Url, Option<Credentials>), RelayError> {
    let mut parsed = url::Url::parse(url)
        .map_err(|error| RelayError::Fanout(format!("invalid NATS URL: {error}")))?;
    if parsed.username().is_empty() {
        return Ok((parsed, None));
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| RelayError::Fanout("the NATS URL's user or password is not UTF-8".into()))
    };
    let user = decode(parsed.username())?;
    let password = Zeroizing::new(decode(parsed.password().unwrap_or(""))?);
    let cleared = parsed.set_username("").is_ok() && parsed.set_password(None).is_ok();
    if !cleared {
        return Err(RelayError::Fanout(
            "the NATS URL cannot carry a user and password".into(),
        ));
    }
    Ok((parsed, Some((user, password))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_move_from_the_url_to_the_options() {
        let (url, credentials) = split_credentials("nats://natsu:p%40ss@127.0.0.1:14333").unwrap();
        assert_eq!(url.as_str(), "nats://127.0.0.1:14333");
        let (user, password) = credentials.unwrap();
        assert_eq!(user, "natsu");
        assert_eq!(password.as_str(), "p@ss");

        let (url, credentials) = split_credentials("nats://127.0.0.1:4222").unwrap();
        assert_eq!(url.as_str(), "nats://127.0.0.1:4222");
        assert!(credentials.is_none());
        assert!(split_credentials("not a url").is_err());
    }

    #[test]
    fn reconnect_delay_grows_to_its_cap() {
        assert_eq!(reconnect_delay(0), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(800));
        assert_eq!(reconnect_delay(100), MAX_RECONNECT_DELAY);
    }
}
