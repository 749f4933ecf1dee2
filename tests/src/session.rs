//! Creating sessions on a running relay and driving publishers and
//! followers through the client library, as the devices would.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::Authorizer;
use sealcast_client::{
    FollowEvent, Follower, FollowerConfig, Publisher, PublisherConfig, RelayApi, TlsSettings,
};
use sealcast_protocol::api::{CreateSessionRequest, CreateSessionResponse, EndSessionRequest};
use sealcast_protocol::{InviteLink, SessionKey, StreamId, TranscriptSegment};
use url::Url;

use crate::process::RelayProcess;
use crate::staff::StaffDevice;

/// A session created on a relay, with the key the clinician device made.
pub struct LiveSession {
    /// The relay's response: id, epoch and tokens.
    pub created: CreateSessionResponse,
    /// The session key, which the relay never saw.
    pub key: SessionKey,
    /// The relay's base URL.
    pub relay: Url,
    /// Trust settings for the relay's development certificate.
    pub tls: TlsSettings,
    /// Credentials of the clinician device that created the session.
    pub auth: Arc<dyn Authorizer>,
}

impl LiveSession {
    /// Makes a key and creates a session on `relay` as the signed-in
    /// clinician device `staff`.
    pub async fn create(relay: &RelayProcess, staff: &StaffDevice) -> Self {
        let url = Url::parse(&relay.base_url()).expect("relay URL parses");
        Self::create_at(&url, &relay.ca_cert(), staff.authorizer()).await
    }

    /// Makes a key and creates a session on the relay at `url`, trusting `ca_cert`.
    pub async fn create_at(url: &Url, ca_cert: &Path, auth: Arc<dyn Authorizer>) -> Self {
        let tls = TlsSettings::from_ca_file(ca_cert).expect("dev certificate loads");
        let url = url.clone();
        let key = SessionKey::generate();
        let request = CreateSessionRequest {
            fingerprint: key.fingerprint().to_base64url(),
            invite_verifier: Some(encode(key.derive_invite_auth_key().expose_bytes())),
            max_browsers: None,
        };
        let api = RelayApi::new(&url, &tls).expect("HTTP client builds");
        let created = api
            .create_session(auth.as_ref(), &request)
            .await
            .expect("session is created");
        LiveSession {
            created,
            key,
            relay: url,
            tls,
            auth,
        }
    }

    /// Returns the invite link a patient would receive.
    pub fn link(&self) -> InviteLink {
        self.link_with_key(self.key.clone())
    }

    /// Returns an invite link for this session that carries another key.
    pub fn link_with_key(&self, key: SessionKey) -> InviteLink {
        InviteLink {
            relay: self.relay.clone(),
            token: self.created.invite_token.clone(),
            key,
        }
    }

    /// Connects a publisher on a new stream.
    pub async fn publisher(&self) -> Publisher {
        self.publisher_at(&self.relay, self.auth.clone()).await
    }

    /// Connects a publisher on a new stream to the relay at `relay`, with
    /// the credentials `auth`.
    pub async fn publisher_at(&self, relay: &Url, auth: Arc<dyn Authorizer>) -> Publisher {
        let config = PublisherConfig::new(
            relay.clone(),
            self.created.session_id,
            auth,
            self.tls.clone(),
        );
        Publisher::connect(config, &self.key)
            .await
            .unwrap_or_else(|err| panic!("publisher failed to connect to {relay}: {err}"))
    }

    /// Returns the clinician's credential headers for the publish upgrade as
    /// raw HTTP/1.1 header lines, each ending in CRLF, for hand-built requests.
    pub fn publish_credential_lines(&self) -> String {
        let url = sealcast_client::endpoint::publish_url(&self.relay, &self.created.session_id);
        self.auth
            .headers("GET", url.as_str())
            .expect("the credential headers are made")
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().expect("credential headers are ASCII");
                format!("{name}: {value}\r\n")
            })
            .collect()
    }

    /// Starts a follower from the invite link.
    pub fn follower(&self) -> Follower {
        self.follower_with_link(self.link())
    }

    /// Starts a follower from the invite link with its relay replaced by
    /// `relay`, as a device that reaches the relay under another address would.
    pub fn follower_at(&self, relay: &Url) -> Follower {
        let mut link = self.link();
        link.relay = relay.clone();
        self.follower_with_link(link)
    }

    /// Starts a follower from a given link.
    pub fn follower_with_link(&self, link: InviteLink) -> Follower {
        Follower::start(FollowerConfig::new(link, self.tls.clone())).expect("follower starts")
    }

    /// Ends the session on the relay, reporting that the clinician device
    /// destroyed its copy of the key, as `sealcast session end` does.
    pub async fn end_destroying_key(&self) {
        let api = RelayApi::new(&self.relay, &self.tls).expect("HTTP client builds");
        let request = EndSessionRequest {
            key_destroyed: true,
        };
        api.end_session_with(&self.created.session_id, self.auth.as_ref(), Some(&request))
            .await
            .expect("session ends");
    }

    /// Ends the session on the relay.
    pub async fn end(&self) {
        let api = RelayApi::new(&self.relay, &self.tls).expect("HTTP client builds");
        api.end_session(&self.created.session_id, self.auth.as_ref())
            .await
            .expect("session ends");
    }
}

/// Follows `session` until the relay reports it ended: connects a follower
/// with the session's own link, ends the session once the follower is
/// connected, and collects every event. The relay rejects a follower that
/// connects after the end, which is why the end waits for the connection.
pub async fn follow_then_end(session: &LiveSession, limit: Duration) -> FollowOutcome {
    let mut follower = session.follower();
    wait_until_connected(&mut follower, limit).await;
    session.end().await;
    follow_until_end(follower, limit).await
}

/// Everything one follower saw until the session ended or the time ran out.
#[derive(Debug, Default)]
pub struct FollowOutcome {
    /// Final segments in the order they arrived, with their offsets.
    pub finals: Vec<(u64, StreamId, TranscriptSegment)>,
    /// Offsets of every frame opened and applied: interim, final and end of session.
    pub opened: Vec<u64>,
    /// Frames the follower rejected, with the reason.
    pub rejected: Vec<(u64, String)>,
    /// Gaps reported: missing final frames.
    pub gaps: u64,
    /// Each gap report: the offset of the first frame after the gap, and the
    /// number of final frames missing.
    pub gap_reports: Vec<(u64, u64)>,
    /// Reconnections seen.
    pub disconnects: usize,
    /// The reason of each disconnection, with the relay's close code and reason.
    pub disconnect_reasons: Vec<String>,
    /// Whether the end-of-session frame was opened.
    pub end_of_session: bool,
    /// Whether following ended because the session ended.
    pub ended: bool,
}

impl FollowOutcome {
    /// Describes what arrived, for failure messages: counts, the first and
    /// last offsets, the gaps, rejections and reasons of disconnection.
    pub fn summary(&self) -> String {
        format!(
            "{} frames opened (offsets {:?} to {:?}), {} finals, gaps {:?}, rejected {:?}, \
             {} disconnects {:?}, end of session {}, ended {}",
            self.opened.len(),
            self.opened.first(),
            self.opened.last(),
            self.finals.len(),
            self.gap_reports,
            self.rejected,
            self.disconnects,
            self.disconnect_reasons,
            self.end_of_session,
            self.ended
        )
    }
}

/// Collects a follower's events until it reports `Ended`, or `limit` passes.
pub async fn follow_until_end(follower: Follower, limit: Duration) -> FollowOutcome {
    follow_counting_finals(follower, limit, Arc::new(AtomicUsize::new(0))).await
}

/// Collects a follower's events like [`follow_until_end`], and adds one to
/// `finals_seen` for every final segment as it arrives, so that another task
/// can watch the follower make progress.
pub async fn follow_counting_finals(
    mut follower: Follower,
    limit: Duration,
    finals_seen: Arc<AtomicUsize>,
) -> FollowOutcome {
    let mut outcome = FollowOutcome::default();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = match tokio::time::timeout_at(deadline, follower.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => return outcome,
        };
        if matches!(event, FollowEvent::SegmentFinal { .. }) {
            finals_seen.fetch_add(1, Ordering::Relaxed);
        }
        if record_event(&mut outcome, event) {
            return outcome;
        }
    }
}

/// Adds one event to `outcome`. Returns whether it was the last event, `Ended`.
fn record_event(outcome: &mut FollowOutcome, event: FollowEvent) -> bool {
    match event {
        FollowEvent::SegmentUpdated { offset, .. } => outcome.opened.push(offset),
        FollowEvent::SegmentFinal {
            offset,
            stream_id,
            segment,
        } => {
            outcome.opened.push(offset);
            outcome.finals.push((offset, stream_id, segment));
        }
        FollowEvent::FrameRejected { offset, reason } => outcome.rejected.push((offset, reason)),
        FollowEvent::Gap {
            offset,
            missing_final_frames,
            ..
        } => {
            outcome.gaps += missing_final_frames;
            outcome.gap_reports.push((offset, missing_final_frames));
        }
        FollowEvent::Disconnected { reason, .. } => {
            outcome.disconnects += 1;
            outcome.disconnect_reasons.push(reason);
        }
        FollowEvent::EndOfSession { offset, .. } => {
            outcome.opened.push(offset);
            outcome.end_of_session = true;
        }
        FollowEvent::Ended => {
            outcome.ended = true;
            return true;
        }
        _ => {}
    }
    false
}

/// Waits until `follower` reports `Connected`, which means the relay accepted
/// the invite and the key fingerprint matched. Fails on any event that
/// carries a frame, and when following stops first.
pub async fn wait_until_connected(follower: &mut Follower, limit: Duration) {
    let waiting = async {
        loop {
            match follower.next_event().await {
                Some(FollowEvent::Connected { .. }) => return,
                Some(FollowEvent::Disconnected { .. }) => {}
                Some(other) => panic!("expected the follower to connect first, got {other:?}"),
                None => panic!("the follower stopped before it connected"),
            }
        }
    };
    tokio::time::timeout(limit, waiting)
        .await
        .expect("the follower did not connect in time");
}

/// Returns trust settings for the development certificate of `relay`.
pub fn relay_tls(relay: &RelayProcess) -> TlsSettings {
    TlsSettings::from_ca_file(&relay.ca_cert()).expect("dev certificate loads")
}

fn encode(bytes: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.encode(bytes)
}
