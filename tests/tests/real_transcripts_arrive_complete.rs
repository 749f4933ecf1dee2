//! Every real consultation, published through a relay over TLS, reaches two
//! followers complete, in order and exactly once. Afterwards neither the
//! relay's database nor its logs hold transcript text, keys or tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::Authorizer;
use sealcast_client::input::{interim, load_files};
use sealcast_protocol::TranscriptSegment;
use sealcast_tests::leaks::{find_leaks, secret_needles, text_needle, Needle};
use sealcast_tests::process::RelayProcess;
use sealcast_tests::session::{follow_until_end, FollowOutcome, LiveSession};
use sealcast_tests::staff::StaffDevice;
use sealcast_tests::transcripts::{consultations, transcripts_dir, Consultation};
use url::Url;

/// Consultations published at once.
const PARALLEL: usize = 5;

/// Maximum time a follower may take to see one consultation end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consultations_arrive_complete_and_leave_no_trace() {
    let Some(dir) = transcripts_dir("consultations_arrive_complete_and_leave_no_trace") else {
        return;
    };
    let all = consultations(&dir);
    assert_eq!(
        all.len(),
        30,
        "expected 30 consultations in {}",
        dir.display()
    );

    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let url = Url::parse(&relay.base_url()).unwrap();
    let ca_cert = relay.ca_cert();

    let mut needles = Vec::new();
    for (batch_index, batch) in all.chunks(PARALLEL).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, consultation) in batch.iter().enumerate() {
            // Every other consultation also carries interim revisions.
            let with_interim = (batch_index * PARALLEL + index) % 2 == 1;
            tasks.spawn(run_consultation(
                url.clone(),
                ca_cert.clone(),
                staff.authorizer(),
                consultation.clone(),
                with_interim,
            ));
        }
        while let Some(result) = tasks.join_next().await {
            needles.extend(result.expect("consultation task panicked"));
        }
    }

    needles.extend(staff_needles(&staff, &relay.outbox_dir()));
    let status = relay.terminate();
    assert!(status.success(), "relay exited with {status}");
    assert_no_leaks(data.path(), &relay.output(), &needles);
}

async fn run_consultation(
    url: Url,
    ca_cert: PathBuf,
    auth: Arc<dyn Authorizer>,
    consultation: Consultation,
    with_interim: bool,
) -> Vec<Needle> {
    let finals = load_files(&consultation.files, None).expect("transcript parses");
    let published = if with_interim {
        interim::expand_all(finals.clone()).expect("interim revisions")
    } else {
        finals.clone()
    };

    let session = LiveSession::create_at(&url, &ca_cert, auth).await;
    let first = tokio::spawn(follow_until_end(session.follower(), FOLLOW_LIMIT));
    let second = tokio::spawn(follow_until_end(session.follower(), FOLLOW_LIMIT));

    let mut publisher = session.publisher().await;
    for segment in &published {
        publisher
            .publish(segment)
            .await
            .expect("segment is published");
    }
    publisher.end().await.expect("publisher ends");
    session.end().await;

    for follower in [first.await.unwrap(), second.await.unwrap()] {
        assert_complete(&consultation.name, &follower, &finals);
    }
    consultation_needles(&consultation.name, &session, &finals)
}

fn assert_complete(name: &str, outcome: &FollowOutcome, expected: &[TranscriptSegment]) {
    assert!(
        outcome.ended,
        "{name}: follower did not see the session end"
    );
    assert!(outcome.end_of_session, "{name}: no end-of-session frame");
    assert!(
        outcome.rejected.is_empty(),
        "{name}: rejected {:?}",
        outcome.rejected
    );
    assert_eq!(outcome.gaps, 0, "{name}: follower reported gaps");
    assert_eq!(
        outcome.finals.len(),
        expected.len(),
        "{name}: final segment count differs"
    );
    for ((_, _, received), sent) in outcome.finals.iter().zip(expected) {
        assert_eq!(
            received.segment_id, sent.segment_id,
            "{name}: order differs"
        );
        assert_eq!(received.speaker, sent.speaker, "{name}: speaker differs");
        assert_eq!(received.text, sent.text, "{name}: text differs");
    }
    let offsets: Vec<u64> = outcome
        .finals
        .iter()
        .map(|(offset, _, _)| *offset)
        .collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] < pair[1]),
        "{name}: offsets not strictly increasing"
    );
}

/// The values of one consultation that must never reach the store or a log:
/// its key, its invite token, and its three longest utterances.
fn consultation_needles(
    name: &str,
    session: &LiveSession,
    finals: &[TranscriptSegment],
) -> Vec<Needle> {
    let mut needles = secret_needles(&format!("{name} session key"), session.key.expose_bytes());
    needles.push(text_needle(
        &format!("{name} invite token"),
        &session.created.invite_token,
    ));
    let mut longest: Vec<&TranscriptSegment> = finals.iter().collect();
    longest.sort_by_key(|segment| std::cmp::Reverse(segment.text.len()));
    for segment in longest.iter().take(3) {
        let phrase: String = segment.text.chars().take(60).collect();
        needles.push(text_needle(&format!("{name} phrase {phrase:?}"), &phrase));
    }
    needles
}

/// The clinician device's secrets that must never reach the store or a log:
/// its access token, its device key and the token of every sign-in link.
fn staff_needles(staff: &StaffDevice, outbox: &Path) -> Vec<Needle> {
    let token = staff.device.token();
    let mut needles = secret_needles("device key", token.key().secret_bytes().as_slice());
    needles.push(text_needle("access token", token.access_token().expose()));
    let mut links = 0;
    for entry in std::fs::read_dir(outbox).unwrap() {
        let mail = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (_, rest) in mail
            .match_indices("#token=")
            .map(|(at, _)| mail.split_at(at + 7))
        {
            let magic_token: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            needles.push(text_needle("magic link token", &magic_token));
            links += 1;
        }
    }
    assert!(links > 0, "no sign-in mail in {}", outbox.display());
    needles
}

fn assert_no_leaks(data_dir: &Path, output: &[u8], needles: &[Needle]) {
    let leaks = find_leaks(output, needles);
    assert!(leaks.is_empty(), "relay output contains {leaks:?}");
    assert!(
        !output.is_empty(),
        "relay wrote no log lines, so the log check proves nothing"
    );

    let stored = sealcast_tests::database::stored_contents(data_dir);
    for (name, bytes) in &stored {
        let leaks = find_leaks(bytes, needles);
        assert!(leaks.is_empty(), "{name} contains {leaks:?}");
    }
    assert!(
        !stored.is_empty(),
        "no stored data for {}",
        data_dir.display()
    );
}
