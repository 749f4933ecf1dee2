//! The scenario of the store fault tests: a real consultation streams to a
//! follower while the test makes the relay's store fail, then lets it
//! recover. The relay must acknowledge no frame it did not store, report
//! the fault in its metrics, its log and its close reasons, keep running,
//! and deliver the whole transcript once the fault clears.

use std::time::Duration;

use sealcast_client::{ClientError, RelayApi};
use sealcast_protocol::api::CreateSessionRequest;
use sealcast_protocol::SessionKey;
use tokio::task::JoinHandle;

use crate::faults::{
    assert_acknowledged_stored, assert_follower_complete, assert_no_text_in_output,
    BackgroundPublish, Consultation,
};
use crate::metrics::scrape;
use crate::process::RelayProcess;
use crate::session::{follow_until_end, wait_until_connected, FollowOutcome, LiveSession};
use crate::staff::StaffDevice;

/// Pause between two published segments.
const SEGMENT_PAUSE: Duration = Duration::from_millis(8);

/// Maximum wait for the store to report the fault once it is caused.
const FAULT_LIMIT: Duration = Duration::from_secs(30);

/// Time the fault lasts after the relay first reports it, while the test
/// checks that acknowledgements match the store.
const FAULT_HOLD: Duration = Duration::from_secs(2);

/// Maximum time a follower may take to see the session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(90);

/// A consultation streaming through a relay, up to the moment of the fault.
pub struct FaultRun {
    /// The signed-in clinician device.
    pub staff: StaffDevice,
    /// The session being published.
    pub session: LiveSession,
    /// The publisher on its own task.
    pub publishing: BackgroundPublish,
    follower: JoinHandle<FollowOutcome>,
}

impl FaultRun {
    /// Signs in, creates a session, connects a follower and starts
    /// publishing, and returns once the first frames are acknowledged.
    pub async fn start(relay: &RelayProcess, consultation: &Consultation) -> Self {
        let staff = StaffDevice::clinician(relay).await;
        let session = LiveSession::create(relay, &staff).await;
        let mut follower = session.follower();
        wait_until_connected(&mut follower, FOLLOW_LIMIT).await;
        let follower = tokio::spawn(follow_until_end(follower, FOLLOW_LIMIT));
        let publishing = BackgroundPublish::start(
            session.publisher().await,
            consultation.published.clone(),
            SEGMENT_PAUSE,
        );
        let deadline = tokio::time::Instant::now() + FAULT_LIMIT;
        while publishing.acknowledged().is_none_or(|seq| seq < 20) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first 20 frames were not acknowledged in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        FaultRun {
            staff,
            session,
            publishing,
            follower,
        }
    }

    /// Waits until the relay counts a failed commit with `reason`, then
    /// checks for [`FAULT_HOLD`] that every acknowledged frame is stored
    /// and that the relay keeps running, and that a new session is refused
    /// with 503 naming `described`.
    pub async fn observe_fault(&self, relay: &mut RelayProcess, reason: &str, described: &str) {
        let deadline = tokio::time::Instant::now() + FAULT_LIMIT;
        while commit_failures(relay, reason).await == 0.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay counted no commit failure with reason {reason} within {FAULT_LIMIT:?}"
            );
            assert!(
                !self.publishing.is_done(),
                "the publisher finished before the store failed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let held = tokio::time::Instant::now() + FAULT_HOLD;
        while tokio::time::Instant::now() < held {
            let acknowledged = self.publishing.acknowledged();
            assert_acknowledged_stored(
                &relay.data_dir,
                self.session.created.session_id,
                self.publishing.stream_id,
                acknowledged,
                "while the store fails",
            );
            assert!(
                relay.is_running(),
                "the relay exited while the store failed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        match try_create_session(&self.session, &self.staff).await {
            Err(ClientError::RelayStatus {
                status, message, ..
            }) => {
                assert_eq!(status, 503, "a new session got {status}: {message}");
                assert!(
                    message.contains(described),
                    "the 503 does not name {described:?}: {message}"
                );
            }
            other => panic!("creating a session while the store fails returned {other:?}"),
        }
    }

    /// Lets the publisher finish, ends the session and checks that nothing
    /// acknowledged was lost and that the follower has the whole transcript.
    /// Also checks that a close sent to the follower named `described` and the relay logged
    /// the fault under `reason` without transcript text.
    pub async fn finish(
        self,
        relay: &mut RelayProcess,
        consultation: &Consultation,
        reason: &str,
        described: &str,
    ) {
        let stream_id = self.publishing.stream_id;
        let report = self.publishing.join().await.end().await.unwrap();
        let frames = consultation.published.len() as u64;
        assert!(report.reconnects >= 1, "the publisher never had to resend");
        assert_eq!(report.acknowledged_seq, Some(frames));
        self.session.end().await;

        let outcome = self.follower.await.unwrap();
        assert_follower_complete("follower", &outcome, &consultation.finals);
        let told = outcome
            .disconnect_reasons
            .iter()
            .any(|text| text.contains("1011") && text.contains(described));
        assert!(
            told,
            "no close told the follower {described:?}: {:?}",
            outcome.disconnect_reasons
        );
        assert_acknowledged_stored(
            &relay.data_dir,
            self.session.created.session_id,
            stream_id,
            Some(frames),
            "after recovery",
        );
        let writes = write_failures(relay, reason).await;
        assert!(
            writes >= 1.0,
            "no write failure counted with reason {reason}"
        );

        let status = relay.terminate();
        assert!(status.success(), "relay exited with {status}");
        let output = relay.output();
        let log = String::from_utf8_lossy(&output);
        let logged = log
            .lines()
            .any(|line| line.contains("store commit failed") && line.contains(reason));
        assert!(
            logged,
            "no 'store commit failed' log line with reason {reason}"
        );
        assert_no_text_in_output(&output, consultation);
    }
}

async fn commit_failures(relay: &RelayProcess, reason: &str) -> f64 {
    let session_tls = crate::session::relay_tls(relay);
    let url = url::Url::parse(&relay.base_url()).expect("relay URL parses");
    scrape(&url, &session_tls).await.value(
        "sealcast_store_commit_failures_total",
        &[("reason", reason)],
    )
}

async fn write_failures(relay: &RelayProcess, reason: &str) -> f64 {
    let session_tls = crate::session::relay_tls(relay);
    let url = url::Url::parse(&relay.base_url()).expect("relay URL parses");
    scrape(&url, &session_tls)
        .await
        .value("sealcast_store_write_failures_total", &[("reason", reason)])
}

async fn try_create_session(session: &LiveSession, staff: &StaffDevice) -> Result<(), ClientError> {
    let key = SessionKey::generate();
    let request = CreateSessionRequest {
        fingerprint: key.fingerprint().to_base64url(),
        invite_verifier: None,
        max_browsers: None,
    };
    let api = RelayApi::new(&session.relay, &session.tls)?;
    api.create_session(staff.authorizer().as_ref(), &request)
        .await
        .map(|_| ())
}
