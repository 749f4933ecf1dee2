//! `GET /v1/follow?epoch=E&from=N`: a patient device's socket.
//!
//! The follower gets a welcome, then every frame from offset N in order: first
//! from the store, then from the hub's ring and its live queue, switching
//! under the hub's lock so that no frame is missed or repeated. A follower
//! whose queue overflows goes back to the store from its cursor. One that
//! still cannot keep up is closed with `LAGGED` and resumes on reconnect.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Extension;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use sealcast_protocol::api::{close, FollowerEvent};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::follow_audit::FollowerAudit;
use super::socket::{
    event_message, protocol_violation, Closing, Inbound, SendFailure, WsConnection,
};
use super::{configure, not_an_upgrade};
use crate::accounts::live::{LiveSocket, SocketOwner};
use crate::http::audited::peer_ip;
use crate::http::auth::PairedFollower;
use crate::http::{auth, staff, ApiError, AppState};
use crate::hub::{HubLease, Lifecycle, PairedSocket, Popped, Progress, Subscribe, Subscription};
use crate::listener::{ConnectionTicket, PeerAddr};
use crate::metrics::{frame_metrics, ActiveConnection, AUTH_FAILURES, FOLLOWERS_LAGGED};
use crate::store::{now_millis, SessionRecord, Store, StoreFault, StoredFrame};
use tracing::Instrument;

const ROLE: &str = "follower";

/// Most frames read from the store at once.
const STORE_BATCH_FRAMES: usize = 256;

/// Most messages written to a follower before one flush. It bounds how long
/// the socket loop goes without checking for shutdown or incoming messages.
const MAX_BATCH_MESSAGES: usize = 64;

/// Longest time between a frame's delivery and the `committed` event that
/// covers it, once the frame is committed. Until then the event goes out only
/// with the next frame, in the same flush, which saves a TLS record and a
/// system call per frame. A follower that reconnects resumes from its last
/// announced offset, so a later announcement costs it only duplicates, which
/// it drops.
const COMMITTED_INTERVAL: Duration = Duration::from_millis(500);

/// Detachments from live fan-out, without an empty queue in between, after
/// which a follower is closed as lagged.
const MAX_DETACHMENTS: u32 = 3;

/// Catch-up rounds in a row after which a follower is closed as lagged. A
/// round reads the store up to where the ring started; it repeats when the
/// ring moved on meanwhile.
const MAX_CATCH_UP_ROUNDS: u32 = 8;

/// How long after a session ends a follower that was already following may
/// reconnect to fetch the frames it missed, in milliseconds.
const RESUME_AFTER_END_MS: i64 = 10 * 60 * 1000;

/// Query parameters of the follow endpoint.
#[derive(Debug, Deserialize)]
pub(crate) struct FollowQuery {
    /// History epoch the follower last saw.
    epoch: Option<u64>,
    /// First offset to deliver.
    from: Option<u64>,
}

/// Checks the credential (the invite token, or a browser's follow cookie with
/// the relay's own `Origin`), then upgrades. Invites and follow cookies stop
/// working for new followers once the session end is committed. A follower
/// connected before then still gets every frame and the end, and may resume
/// with its epoch for [`RESUME_AFTER_END_MS`] to fetch a tail it missed.
#[utoipa::path(
    get, path = "/v1/follow", operation_id = "follow", tag = "sessions",
    description = "Opens a follow WebSocket with an invite credential. The relay sends `FollowerEvent` text messages (`welcome`, `committed`, `ended`) and each frame as a binary message: its 8-byte big-endian session offset, then the frame. The response is `101 Switching Protocols` and the connection becomes a WebSocket. The relay's text messages, the binary frame format and the close codes are described in docs/protocol.md.",
    params(("epoch" = Option<u64>, Query, description = "History epoch the follower last saw; a different epoch closes the socket with 4006"), ("from" = Option<u64>, Query, description = "First session offset to deliver; 0 or absent starts at the beginning")),
    security(("invite_token" = []), ("follow_cookie" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade, or a malformed query", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing or invalid invite token or follow cookie", body = sealcast_protocol::api::ErrorBody),
        (status = 403, description = "Follow cookie sent with another `Origin`, or with none", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "Invite token of an ended session", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    query: Result<Query<FollowQuery>, QueryRejection>,
    ticket: Option<Extension<ConnectionTicket>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (record, paired) = auth::follow_session(&state, &headers).await?;
    let credential = if headers.contains_key(AUTHORIZATION) {
        "invite_token"
    } else {
        "follow_cookie"
    };
    let audit = FollowerAudit::patient(peer_ip(peer.as_ref()), credential);
    let owner = match paired {
        Some(paired) => Owner::PairedDevice(paired),
        None => Owner::Patient,
    };
    follow(state, record, query, ticket, upgrade, owner, audit).await
}

/// `GET /v1/sessions/{id}/follow`: requires a clinician of the session's
/// organization, then upgrades with the same resume rules as an invite.
// Each argument is an axum extractor.
#[allow(clippy::too_many_arguments)]
#[utoipa::path(
    get, path = "/v1/sessions/{id}/follow", operation_id = "staff_follow", tag = "sessions",
    description = "Opens a follow WebSocket from a clinician's device, with the same messages and resume rules as `GET /v1/follow`. The response is `101 Switching Protocols` and the connection becomes a WebSocket. The relay's text messages, the binary frame format and the close codes are described in docs/protocol.md.",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("epoch" = Option<u64>, Query, description = "History epoch the follower last saw; a different epoch closes the socket with 4006"), ("from" = Option<u64>, Query, description = "First session offset to deliver; 0 or absent starts at the beginning")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade, or a malformed session id or query", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "No session with this id in the caller's organization", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session ended too long ago to resume", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn staff_upgrade(
    State(state): State<AppState>,
    Path(session): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<FollowQuery>, QueryRejection>,
    ticket: Option<Extension<ConnectionTicket>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let endpoint = auth::STAFF_FOLLOW;
    // The route serves GET only, the method of every WebSocket upgrade.
    let principal =
        staff::authenticate(&state, &headers, &Method::GET, uri.path(), endpoint).await?;
    let record = staff::clinician_session(&state, &principal, &session, endpoint).await?;
    let live = state.accounts.live.register(SocketOwner::of(&principal));
    let audit = FollowerAudit::staff(&principal, peer_ip(peer.as_ref()));
    follow(
        state,
        record,
        query,
        ticket,
        upgrade,
        Owner::Staff(live),
        audit,
    )
    .await
}

/// Whose follow socket it is, which decides what closes it early.
enum Owner {
    /// A patient with an invite token or a browser's follow cookie.
    Patient,
    /// A paired patient device, whose sockets close when it is removed.
    PairedDevice(PairedFollower),
    /// A clinician's device, whose sockets close when its credential is revoked.
    Staff(LiveSocket),
}

/// A follow socket's registration that closes it early, and the close it gets.
enum Registration {
    None,
    PairedDevice(PairedSocket),
    Staff(LiveSocket),
}

impl Registration {
    /// Returns the token that closes the socket, and the close it gets.
    fn revocation(&self) -> Option<(CancellationToken, Closing)> {
        match self {
            Registration::None => None,
            Registration::PairedDevice(socket) => Some((
                socket.removed().clone(),
                Closing::new(
                    close::REVOKED,
                    "this device was removed from the session: pair it again",
                ),
            )),
            Registration::Staff(live) => Some((
                live.revoked().clone(),
                Closing::new(
                    close::REVOKED,
                    "the device or user was revoked: sign in again",
                ),
            )),
        }
    }
}

async fn follow(
    state: AppState,
    record: SessionRecord,
    query: Result<Query<FollowQuery>, QueryRejection>,
    ticket: Option<Extension<ConnectionTicket>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    owner: Owner,
    audit: FollowerAudit,
) -> Result<Response, ApiError> {
    // The rejection text would repeat the query, so it stays out of the message.
    let Query(query) = query.map_err(|_| {
        ApiError::BadRequest("query parameters epoch and from must be unsigned integers".into())
    })?;
    if let Some(ended_at) = record.ended_at {
        // A follower that was following (it names the epoch) may still come
        // back for the tail it missed; a new follower is refused at once.
        let resuming = query.epoch.is_some();
        if !resuming || now_millis().saturating_sub(ended_at) > RESUME_AFTER_END_MS {
            return Err(ApiError::Gone(format!(
                "session {} has ended, so its invite no longer works",
                record.session_id
            )));
        }
    }
    let upgrade = upgrade.map_err(not_an_upgrade)?;
    let lease = state.hubs.lease(&record).await?;
    let registration = match owner {
        Owner::Patient => Registration::None,
        Owner::PairedDevice(paired) => {
            Registration::PairedDevice(register_paired(&state, &lease, paired).await?)
        }
        Owner::Staff(live) => Registration::Staff(live),
    };

    let hold = state.shutdown.hold();
    let limits = state.limits.clone();
    // axum runs the socket in a task of its own: keep the connection's span.
    let span = tracing::Span::current();
    Ok(configure(upgrade, &limits).on_upgrade(move |socket| {
        async move {
            let revocation = registration.revocation();
            run(state, lease, socket, query, revocation, audit).await;
            drop(registration);
            drop(ticket);
            drop(hold);
        }
        .instrument(span)
    }))
}

/// Registers a paired device's socket on its hub, then checks that the
/// device was not removed since its credential was checked: a removal in
/// between found no socket to close.
async fn register_paired(
    state: &AppState,
    hub: &HubLease,
    paired: PairedFollower,
) -> Result<PairedSocket, ApiError> {
    let socket = hub.hub().register_paired_socket(paired.device_id);
    let still_paired = auth::paired_follower(state, paired.credential_hash)
        .await?
        .is_some();
    if !still_paired {
        metrics::counter!(AUTH_FAILURES, "endpoint" => auth::FOLLOW, "reason" => "device_removed")
            .increment(1);
        return Err(ApiError::Unauthorized(
            "this device was removed from the session: pair it again",
        ));
    }
    Ok(socket)
}

async fn run(
    state: AppState,
    hub: HubLease,
    socket: WebSocket,
    query: FollowQuery,
    revocation: Option<(CancellationToken, Closing)>,
    audit: FollowerAudit,
) {
    let conn = WsConnection::new(socket, ROLE, &state.limits);
    let from = query.from.unwrap_or(0);
    if let Err(closing) = check_resume(&hub, query.epoch, from) {
        tracing::debug!(session_id = %hub.session_id(), reason = %closing.reason, "follower cannot resume");
        conn.close(closing).await;
        return;
    }
    tracing::debug!(session_id = %hub.session_id(), role = ROLE, from, "follower connected");
    let session_id = hub.session_id();
    // Queued without waiting for the commit: joining waits only while the audit queue is full.
    state.audit.record(audit.joined(session_id, from)).await;

    let mut follower = Follower {
        feed: Feed::new(&state, hub, from),
        state,
        conn,
        _active: ActiveConnection::open(ROLE),
    };
    let ending = match revocation {
        Some((revoked, closing)) => tokio::select! {
            ending = follower.serve() => ending,
            () = revoked.cancelled() => Ending::Close(closing),
        },
        None => follower.serve().await,
    };
    let reason = match &ending {
        Ending::Close(closing) => closing.code.to_string(),
        Ending::Ended => "session_ended".to_owned(),
        Ending::PeerGone => "disconnected".to_owned(),
    };
    let audit_log = follower.state.audit.clone();
    follower.finish(ending).await;
    audit_log.record(audit.left(session_id, &reason)).await;
}

fn check_resume(hub: &HubLease, epoch: Option<u64>, from: u64) -> Result<(), Closing> {
    if epoch.is_some_and(|epoch| epoch != hub.epoch()) {
        return Err(Closing::new(
            close::CANNOT_RECOVER,
            "epoch does not match the session's history: start over from offset 0",
        ));
    }
    let next = hub.next_offset();
    if from > next {
        return Err(Closing::new(
            close::CANNOT_RECOVER,
            format!("offset {from} is beyond the session's next offset {next}: start over from offset 0"),
        ));
    }
    Ok(())
}

/// Reason a follow socket stops.
#[derive(Debug)]
enum Ending {
    /// Close with this code.
    Close(Closing),
    /// The session ended and everything was delivered.
    Ended,
    /// The peer closed the socket or it broke.
    PeerGone,
}

struct Follower {
    state: AppState,
    conn: WsConnection,
    feed: Feed,
    _active: ActiveConnection,
}

/// One turn of the socket loop.
enum Step {
    Shutdown,
    Inbound(Inbound),
    Tick,
    Work(Work),
}

impl Follower {
    async fn serve(&mut self) -> Ending {
        if let Err(failure) = self.send_welcome().await {
            return self.on_send_failure(failure);
        }

        loop {
            let step = tokio::select! {
                biased;
                () = self.state.shutdown.triggered() => Step::Shutdown,
                item = self.conn.stream.next() => Step::Inbound(self.conn.classify(item)),
                () = self.conn.keepalive.tick() => Step::Tick,
                work = self.feed.next_work() => Step::Work(work),
            };
            let outcome = match step {
                Step::Shutdown => Err(Ending::Close(Closing::new(
                    close::GOING_AWAY,
                    "relay is shutting down: reconnect and resume",
                ))),
                Step::Inbound(inbound) => self.on_inbound(inbound),
                Step::Tick => self.conn.on_tick().await.map_err(Ending::Close),
                Step::Work(work) => self.on_work(work).await,
            };
            if let Err(ending) = outcome {
                return ending;
            }
        }
    }

    async fn send_welcome(&mut self) -> Result<(), SendFailure> {
        let hub = &self.feed.hub;
        let welcome = FollowerEvent::Welcome {
            session_id: hub.session_id(),
            epoch: hub.epoch(),
            fingerprint: URL_SAFE_NO_PAD.encode(hub.fingerprint()),
            from_offset: self.feed.cursor,
            ended: hub.is_ending(),
        };
        self.conn.send_event(&welcome).await
    }

    fn on_inbound(&mut self, inbound: Inbound) -> Result<(), Ending> {
        match inbound {
            Inbound::Control => Ok(()),
            Inbound::Binary(_) | Inbound::Text => Err(Ending::Close(Closing::new(
                close::POLICY_VIOLATION,
                "follow sockets accept no data messages",
            ))),
            Inbound::TooBig => Err(Ending::Close(Closing::new(
                close::MESSAGE_TOO_BIG,
                "message exceeds the maximum size",
            ))),
            Inbound::Closed => Err(Ending::PeerGone),
            Inbound::Failed(error) => match protocol_violation(&error, ROLE) {
                Some(closing) => Err(Ending::Close(closing)),
                None => {
                    tracing::debug!(session_id = %self.feed.hub.session_id(), %error, "follow socket failed");
                    Err(Ending::PeerGone)
                }
            },
        }
    }

    /// Sends `first` and the work that is ready after it, up to
    /// [`MAX_BATCH_MESSAGES`] messages, with one flush.
    async fn on_work(&mut self, first: Work) -> Result<(), Ending> {
        let mut batch = Batch::default();
        let mut next = Some(first);
        while let Some(work) = next.take() {
            if let Some(ending) = batch.add(work) {
                self.send_batch(batch).await?;
                return Err(ending);
            }
            if batch.messages.len() < MAX_BATCH_MESSAGES {
                next = self.feed.ready_work();
            }
        }
        if batch.frames > 0 {
            if let Some(committed) = self.feed.announce_committed() {
                batch.add(committed);
            }
        }
        self.send_batch(batch).await
    }

    async fn send_batch(&mut self, batch: Batch) -> Result<(), Ending> {
        if batch.messages.is_empty() {
            return Ok(());
        }
        self.conn
            .send_all(batch.messages)
            .await
            .map_err(|failure| self.on_send_failure(failure))?;
        if batch.frames > 0 {
            let metrics = frame_metrics();
            metrics.delivered.increment(batch.frames);
            metrics.bytes_delivered.increment(batch.bytes);
        }
        Ok(())
    }

    fn on_send_failure(&self, failure: SendFailure) -> Ending {
        match failure {
            SendFailure::TimedOut => {
                metrics::counter!(FOLLOWERS_LAGGED).increment(1);
                Ending::Close(Closing::new(
                    close::LAGGED,
                    "write timed out: reconnect and resume",
                ))
            }
            SendFailure::Closed => Ending::PeerGone,
        }
    }

    async fn finish(mut self, ending: Ending) {
        let session_id = self.feed.hub.session_id();
        let closing = match ending {
            Ending::Close(closing) if closing.code == close::GOING_AWAY => {
                if let Some(offset) = self.feed.committed_to_announce() {
                    let _ = self
                        .conn
                        .send_event(&FollowerEvent::Committed { offset })
                        .await;
                }
                Some(closing)
            }
            Ending::Close(closing) => Some(closing),
            Ending::Ended => Some(Closing::new(close::SESSION_ENDED, "session ended")),
            Ending::PeerGone => None,
        };
        // Leave fan-out before the hub lease goes.
        self.feed.subscription = None;
        match closing {
            Some(closing) => {
                tracing::debug!(%session_id, role = ROLE, code = closing.code, "follower closed");
                self.conn.close(closing).await;
            }
            None => {
                self.conn.answer_peer_close().await;
                tracing::debug!(%session_id, role = ROLE, "follower disconnected");
            }
        }
    }
}

/// The next thing to send a follower.
#[derive(Debug)]
enum Work {
    /// A frame, as the offset then the frame.
    Deliver(Bytes),
    /// Everything up to this offset is committed and delivered.
    Committed(u64),
    /// The session ended and everything was delivered.
    Ended,
    /// The follower must be closed.
    Close(Closing),
}

/// Messages to write to a follower with one flush.
#[derive(Debug, Default)]
struct Batch {
    messages: Vec<Message>,
    /// Frames among the messages, and their bytes.
    frames: u64,
    bytes: u64,
}

impl Batch {
    /// Adds the message for `work`. Returns how the socket ends after this
    /// batch is sent, for work that ends it.
    fn add(&mut self, work: Work) -> Option<Ending> {
        let event = match work {
            Work::Deliver(delivery) => {
                self.frames += 1;
                self.bytes += delivery.len() as u64;
                self.messages.push(Message::Binary(delivery));
                return None;
            }
            Work::Committed(offset) => FollowerEvent::Committed { offset },
            Work::Ended => FollowerEvent::Ended,
            Work::Close(closing) => return Some(Ending::Close(closing)),
        };
        match event_message(&event) {
            Ok(message) => self.messages.push(message),
            Err(_) => return Some(Ending::PeerGone),
        }
        matches!(event, FollowerEvent::Ended).then_some(Ending::Ended)
    }
}

/// Source of a follower's frames: the store, then its live queue.
struct Feed {
    hub: HubLease,
    store: Store,
    queue_limit: usize,
    /// Commits, end and failure, read without waking for them.
    progress: watch::Receiver<Progress>,
    /// End and failure, which wake the follower.
    lifecycle: watch::Receiver<Lifecycle>,
    /// Next offset to deliver.
    cursor: u64,
    /// Last offset announced as committed.
    announced: Option<u64>,
    /// When to check next for a committed offset to announce, while delivered
    /// frames wait for their announcement.
    next_announcement: Instant,
    /// Frames read from the store, not yet delivered.
    batch: VecDeque<StoredFrame>,
    /// Ring start at the last check. The store contains every frame before it.
    catch_up_until: u64,
    catch_up_rounds: u32,
    detachments: u32,
    subscription: Option<Subscription>,
}

impl Feed {
    fn new(state: &AppState, hub: HubLease, from: u64) -> Feed {
        Feed {
            progress: hub.watch_progress(),
            lifecycle: hub.watch_lifecycle(),
            hub,
            store: state.store.clone(),
            queue_limit: state.limits.follower_queue_bytes,
            cursor: from,
            announced: None,
            next_announcement: Instant::now() + COMMITTED_INTERVAL,
            batch: VecDeque::new(),
            catch_up_until: 0,
            catch_up_rounds: 0,
            detachments: 0,
            subscription: None,
        }
    }

    /// Waits for the next thing to send. Cancel-safe: state changes only in
    /// the poll that returns, or are redone on the next call.
    async fn next_work(&mut self) -> Work {
        loop {
            if let Some(work) = self.ready_work() {
                return work;
            }
            if let Some(subscription) = &self.subscription {
                let announcement = self.awaits_announcement().then_some(self.next_announcement);
                tokio::select! {
                    () = subscription.queue().wait() => {}
                    changed = self.lifecycle.changed() => {
                        if changed.is_err() {
                            return Work::Close(store_failed(None));
                        }
                    }
                    () = sleep_until(announcement) => {}
                }
            } else if let Err(closing) = self.read_store_batch().await {
                return Work::Close(closing);
            }
        }
    }

    /// Returns what can be sent now without waiting. `None` means wait for
    /// the live queue, or read the store when there is no subscription.
    fn ready_work(&mut self) -> Option<Work> {
        let progress = *self.progress.borrow_and_update();
        if let Some(fault) = progress.failed {
            return Some(Work::Close(store_failed(Some(fault))));
        }
        if let Some(frame) = self.batch.pop_front() {
            self.cursor = frame.offset + 1;
            return Some(Work::Deliver(frame.delivery));
        }
        if self.subscription.is_none() {
            if let Err(work) = self.try_subscribe() {
                return work;
            }
        }
        if let Some(work) = self.pop_live() {
            return Some(work);
        }
        // Before `ended`, the last committed offset goes out at once.
        let at_end = progress.end.is_some_and(|end| self.cursor >= end);
        let now = Instant::now();
        if at_end || now >= self.next_announcement {
            if let Some(work) = self.announce_committed() {
                return Some(work);
            }
            // The delivered frames are not committed yet: look again later.
            self.next_announcement = now + COMMITTED_INTERVAL;
        }
        if self.subscription.is_some() && at_end {
            return Some(Work::Ended);
        }
        None
    }

    /// Returns the `committed` announcement if the offset moved, and records it.
    fn announce_committed(&mut self) -> Option<Work> {
        let offset = self.committed_to_announce()?;
        self.announced = Some(offset);
        self.next_announcement = Instant::now() + COMMITTED_INTERVAL;
        Some(Work::Committed(offset))
    }

    /// Checks whether frames were delivered that no `committed` event covers yet.
    fn awaits_announcement(&self) -> bool {
        match self.announced {
            Some(announced) => announced + 1 < self.cursor,
            None => self.cursor > 0,
        }
    }

    /// Subscribes at the cursor, or notes how far the store must be read first.
    /// The error is work to return: a close, or `None` to read the store.
    fn try_subscribe(&mut self) -> Result<(), Option<Work>> {
        match self.hub.hub().subscribe(self.cursor, self.queue_limit) {
            Subscribe::Live(subscription) => {
                self.subscription = Some(subscription);
                self.catch_up_rounds = 0;
                Ok(())
            }
            Subscribe::Behind { ring_start } => {
                if self.cursor >= self.catch_up_until {
                    self.catch_up_rounds += 1;
                }
                self.catch_up_until = ring_start;
                if self.catch_up_rounds > MAX_CATCH_UP_ROUNDS {
                    return Err(Some(lagged("cannot catch up with the live frames")));
                }
                Err(self.announce_committed())
            }
            Subscribe::Unavailable => Err(Some(Work::Close(store_failed(None)))),
        }
    }

    /// Takes the next live frame, or handles a detachment.
    fn pop_live(&mut self) -> Option<Work> {
        let subscription = self.subscription.as_ref()?;
        match subscription.queue().pop() {
            Popped::Frame(frame) => {
                self.cursor = frame.offset + 1;
                Some(Work::Deliver(frame.delivery.clone()))
            }
            Popped::Empty => {
                self.detachments = 0;
                None
            }
            Popped::Detached => {
                self.subscription = None;
                self.detachments += 1;
                tracing::debug!(
                    session_id = %self.hub.session_id(), cursor = self.cursor,
                    "follower detached from live fan-out: catching up from the store"
                );
                if self.detachments > MAX_DETACHMENTS {
                    return Some(lagged("fell behind the live frames repeatedly"));
                }
                // Caught up from the ring or the store on the next call.
                self.ready_work()
            }
        }
    }

    /// Returns the committed offset to announce, if it moved. Every frame up
    /// to it is both committed and delivered to this follower.
    fn committed_to_announce(&self) -> Option<u64> {
        let committed = self.progress.borrow().committed;
        let delivered_and_committed = committed.min(self.cursor).checked_sub(1)?;
        match self.announced {
            Some(announced) if announced >= delivered_and_committed => None,
            _ => Some(delivered_and_committed),
        }
    }

    /// Reads the next batch of stored frames before the ring's start.
    async fn read_store_batch(&mut self) -> Result<(), Closing> {
        let session_id = self.hub.session_id();
        let frames = self
            .store
            .frames_between(
                session_id,
                self.cursor,
                self.catch_up_until,
                STORE_BATCH_FRAMES,
                self.queue_limit / 2,
            )
            .await
            .map_err(|error| {
                tracing::error!(%session_id, %error, "failed to read stored frames for a follower");
                store_failed(None)
            })?;

        // Offsets below the ring are committed, so the store must hold them all.
        if frames.first().map(|frame| frame.offset) != Some(self.cursor) {
            tracing::error!(%session_id, cursor = self.cursor, "stored history is missing frames");
            return Err(store_failed(None));
        }
        self.batch.extend(frames);
        Ok(())
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn lagged(reason: &str) -> Work {
    metrics::counter!(FOLLOWERS_LAGGED).increment(1);
    Work::Close(Closing::new(
        close::LAGGED,
        format!("{reason}: reconnect and resume"),
    ))
}

/// Close for a failed store commit or read. The reason names the commit's
/// fault when it is known, such as `disk full`.
fn store_failed(fault: Option<StoreFault>) -> Closing {
    let cause = fault.map_or(String::new(), |fault| format!(" ({})", fault.describe()));
    Closing::new(
        close::INTERNAL_ERROR,
        format!("relay failed to store frames{cause}: reconnect and resume"),
    )
}
