//! A follower that connects and then never reads does not make the relay
//! buffer the session. While 10,000 frames of real transcript text pass
//! through, the relay's resident memory stays within a fixed bound and the
//! publisher gets every acknowledgement. A follower that does read receives
//! every frame in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_client::auth::BearerToken;
use sealcast_client::endpoint::follow_url;
use sealcast_client::SecretString;
use sealcast_protocol::TranscriptSegment;
use sealcast_tests::memory::{peak_resident_bytes, resident_bytes, PeakSampler};
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::raw_socket;
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::{follow_until_end, wait_until_connected, LiveSession};
use sealcast_tests::staff::StaffDevice;

/// Frames published.
const FRAMES: usize = 10_000;

/// Characters of transcript text per frame. With the segment's other JSON
/// fields this fills padding bucket 5, so each frame is 8,296 bytes and the
/// session about 79 MiB.
const TEXT_CHARS: usize = 7_900;

/// Memory the relay may add to its resident size at rest while the session
/// streams.
///
/// With default limits the relay keeps at most these per follower: a 1 MiB
/// live queue, a 512 KiB catch-up batch and a WebSocket write buffer of
/// 2 × 65 KiB + 8 KiB. Each session adds a 512 KiB ring of recent frames, and
/// SQLite adds its page caches. That is a few MiB. 64 MiB leaves
/// room for allocator slack and thread stacks, and it is less than the 79 MiB
/// of frames, so a relay that kept the stalled follower's frames in memory
/// would exceed it.
const MEMORY_HEADROOM: u64 = 64 * 1024 * 1024;

/// How often resident memory is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// Maximum time the publishing and following may take together. The run
/// takes about 25 s on two cores in a debug build, most of it sealing and
/// opening 79 MiB in this process.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_follower_leaves_memory_bounded() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;

    // Completes the upgrade, then is never polled again, so the relay's
    // writes pile up in the TCP buffers and then on the relay's side.
    let stalled_url = follow_url(&session.relay, None, 0);
    let invite = BearerToken::new(SecretString::from(session.created.invite_token.as_str()));
    let stalled = raw_socket::connect(&stalled_url, &session.tls, &invite)
        .await
        .expect("the stalled follower connects");
    let mut reader = session.follower();
    wait_until_connected(&mut reader, RUN_LIMIT).await;
    let reading = tokio::spawn(follow_until_end(reader, RUN_LIMIT));

    let baseline = resident_bytes(relay.pid());
    let sampler = PeakSampler::start(relay.pid(), SAMPLE_INTERVAL);
    let segments = long_segments();
    let mut publisher = session.publisher().await;
    for segment in &segments {
        publisher.publish(segment).await.unwrap();
    }
    let report = publisher.end().await.unwrap();
    session.end().await;
    let outcome = reading.await.unwrap();
    let sampled_peak = sampler.finish();
    let lifetime_peak = peak_resident_bytes(relay.pid());

    assert_eq!(
        report.frames,
        FRAMES as u64 + 1,
        "frames sent, end frame included"
    );
    assert_eq!(
        report.acknowledged_seq,
        Some(FRAMES as u64),
        "the publisher is missing acknowledgements"
    );

    assert!(
        outcome.ended,
        "the reading follower did not see the session end"
    );
    assert!(
        outcome.rejected.is_empty(),
        "rejected {:?}",
        outcome.rejected
    );
    assert_eq!(outcome.gaps, 0, "the reading follower reported gaps");
    let ids: Vec<u64> = outcome
        .finals
        .iter()
        .map(|(_, _, segment)| segment.segment_id)
        .collect();
    let expected: Vec<u64> = (0..FRAMES as u64).collect();
    assert!(
        ids == expected,
        "the reading follower received {} frames, or out of order",
        ids.len()
    );
    let offsets: Vec<u64> = outcome
        .finals
        .iter()
        .map(|(offset, _, _)| *offset)
        .collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] < pair[1]),
        "offsets are not strictly increasing"
    );

    let bound = baseline + MEMORY_HEADROOM;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "relay resident memory: baseline {:.1} MiB, sampled peak {:.1} MiB, VmHWM {:.1} MiB, bound {:.1} MiB",
        mib(baseline),
        mib(sampled_peak),
        mib(lifetime_peak),
        mib(bound)
    );
    assert!(
        sampled_peak < bound,
        "relay resident memory reached {:.1} MiB, over the bound of {:.1} MiB (baseline {:.1} MiB)",
        mib(sampled_peak),
        mib(bound),
        mib(baseline)
    );
    assert!(
        lifetime_peak < bound,
        "relay peak resident memory (VmHWM) reached {:.1} MiB, over the bound of {:.1} MiB",
        mib(lifetime_peak),
        mib(bound)
    );

    // The stalled follower must have hit the relay's queue limit, or it
    // never held back more than the TCP buffers and proved nothing.
    let metrics = scrape(&session.relay, &session.tls).await;
    let detached = metrics.value("sealcast_followers_detached_total", &[]);
    assert!(
        detached >= 1.0,
        "the stalled follower was never detached from live fan-out"
    );
    drop(stalled);
}

/// `FRAMES` final segments, each carrying `TEXT_CHARS` characters of the
/// sample consultation's text, starting at a different utterance each.
fn long_segments() -> Vec<TranscriptSegment> {
    let sample = sample_finals();
    (0..FRAMES)
        .map(|index| {
            let mut text = String::new();
            for turn in sample.iter().cycle().skip(index % sample.len()) {
                if text.len() >= TEXT_CHARS {
                    break;
                }
                text.push_str(&turn.text);
                text.push(' ');
            }
            let text: String = text.chars().take(TEXT_CHARS).collect();
            let turn = &sample[index % sample.len()];
            TranscriptSegment {
                segment_id: index as u64,
                revision: 0,
                speaker: turn.speaker.clone(),
                start_ms: index as u64 * 1_000,
                end_ms: index as u64 * 1_000 + 900,
                text,
                is_final: true,
            }
        })
        .collect()
}
