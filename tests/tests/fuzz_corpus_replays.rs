//! Replays the fuzz seed corpus through the fuzz targets on every test run,
//! so the targets' checks hold in CI without cargo-fuzz or a nightly
//! toolchain. The corpus is made by the ignored test `write_seed_corpus`
//! from real frames, links, events, proofs and transcripts.
//!
//! To remake the corpus (with the real transcripts when
//! `SEALCAST_TRANSCRIPTS` names them):
//! `cargo test -p sealcast-tests --test fuzz_corpus_replays -- --ignored`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_client::input::{interim, load_files};
use sealcast_protocol::api::{encode_delivery, ErrorBody, FollowerEvent, PublisherEvent};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::invite::TOKEN_LEN;
use sealcast_protocol::{
    EndOfSession, InviteLink, SessionKey, StreamId, StreamSealer, TranscriptSegment,
};
use sealcast_tests::sample::{sample_path, sample_with_interim};
use sealcast_tests::transcripts::{consultations, TRANSCRIPTS_ENV};

/// A fuzz target's check of one input.
type Target = fn(&[u8]);

/// Each fuzz target by name, as `fuzz/Cargo.toml` names its binaries.
const TARGETS: [(&str, Target); 8] = [
    ("frame_header", fuzz_targets::frame_header),
    ("frame_open", fuzz_targets::frame_open),
    ("delivery", fuzz_targets::delivery),
    ("invite_link", fuzz_targets::invite_link),
    ("events", fuzz_targets::events),
    ("dpop_proof", fuzz_targets::dpop_proof),
    ("textgrid", fuzz_targets::textgrid),
    ("jsonl", fuzz_targets::jsonl),
];

/// Consultation whose TextGrid files seed the input targets: among the
/// shortest of the corpus, to keep the committed seeds small.
const SEED_CONSULTATION: &str = "day3_consultation06";

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_seed_passes_its_target() {
    for (name, target) in TARGETS {
        let inputs = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(
            !inputs.is_empty(),
            "fuzz/corpus/{name} has no seeds: run the ignored test write_seed_corpus"
        );
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            let replay = std::panic::catch_unwind(|| target(&data));
            assert!(replay.is_ok(), "{name} failed on {}", path.display());
        }
    }
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let corpus = fuzz_dir().join("corpus");
    let mut stream = seed_stream();
    write_frame_seeds(&corpus, &mut stream);
    write_text_seeds(&corpus);
    write_input_seeds(&corpus);
}

/// Final and interim segments to seal: the demo sample with interim
/// revisions, then the start of a real consultation when the transcripts are there.
fn seed_stream() -> Vec<TranscriptSegment> {
    let mut segments: Vec<TranscriptSegment> = sample_with_interim().into_iter().take(12).collect();
    if let Some(files) = seed_consultation_files() {
        let real = load_files(&files, None).unwrap();
        segments.extend(interim::expand_all(real).unwrap().into_iter().take(12));
    }
    segments
}

fn write_frame_seeds(corpus: &Path, segments: &mut Vec<TranscriptSegment>) {
    let key = fuzz_targets::fuzz_key();
    let mut sealer =
        StreamSealer::with_stream_id(&key, fuzz_targets::FUZZ_SESSION, StreamId([0x33; 16]));
    let mut frames: Vec<Vec<u8>> = segments
        .drain(..)
        .map(|segment| sealer.seal_segment(&segment).unwrap())
        .collect();
    let end = EndOfSession {
        final_segments: frames.len() as u64,
    };
    frames.push(sealer.seal_end(&end).unwrap());

    for (index, frame) in frames.iter().enumerate().step_by(4) {
        write_seed(corpus, "frame_header", &format!("frame-{index:02}"), frame);
        let delivery = encode_delivery(index as u64, frame);
        write_seed(corpus, "delivery", &format!("frame-{index:02}"), &delivery);
    }
    for (index, run) in frames.chunks(4).enumerate() {
        write_seed(
            corpus,
            "frame_open",
            &format!("stream-{index:02}"),
            &run.concat(),
        );
    }
    // A selector byte and content, for the target's own sealing.
    let content = TranscriptSegment::from_plaintext(&frames_content(&key, &frames[0]))
        .unwrap()
        .to_plaintext();
    for selector in [0u8, 1, 2, 5] {
        let mut seed = vec![selector];
        seed.extend_from_slice(&content);
        write_seed(corpus, "frame_open", &format!("content-{selector}"), &seed);
    }
}

/// Opens a seed frame to get its content back.
fn frames_content(key: &SessionKey, frame: &[u8]) -> Vec<u8> {
    let mut opener = sealcast_protocol::StreamOpener::new(key.clone(), fuzz_targets::FUZZ_SESSION);
    opener.open(frame).unwrap().content
}

fn write_text_seeds(corpus: &Path) {
    let link = InviteLink {
        relay: url::Url::parse("https://relay.example:8443/").unwrap(),
        token: URL_SAFE_NO_PAD.encode([0x42; TOKEN_LEN]),
        key: fuzz_targets::fuzz_key(),
    };
    let url = link.to_url();
    let (before_fragment, fragment) = url.split_once('#').unwrap();
    let mangled = [
        ("plain", url.clone()),
        ("angle-brackets", format!("<{url}>")),
        ("line-break", format!("{}\n{}", &url[..30], &url[30..])),
        ("escaped-hash", format!("{before_fragment}%23{fragment}")),
    ];
    for (name, text) in mangled {
        InviteLink::parse(&text).unwrap();
        write_seed(corpus, "invite_link", name, text.as_bytes());
    }

    let session_id = fuzz_targets::FUZZ_SESSION;
    let events = [
        (
            "publisher-welcome",
            json(&PublisherEvent::Welcome {
                session_id,
                epoch: 3,
            }),
        ),
        (
            "publisher-ack",
            json(&PublisherEvent::Ack {
                stream_id: StreamId([0x33; 16]),
                seq: 41,
                offset: 97,
            }),
        ),
        (
            "follower-welcome",
            json(&FollowerEvent::Welcome {
                session_id,
                epoch: 3,
                fingerprint: fuzz_targets::fuzz_key().fingerprint().to_base64url(),
                from_offset: 0,
                ended: false,
            }),
        ),
        (
            "follower-committed",
            json(&FollowerEvent::Committed { offset: 97 }),
        ),
        ("follower-ended", json(&FollowerEvent::Ended)),
        (
            "error-body",
            json(&ErrorBody {
                error: "unauthorized".into(),
                message: "the token is not valid for this session".into(),
            }),
        ),
    ];
    for (name, text) in events {
        write_seed(corpus, "events", name, text.as_bytes());
    }

    let device = DeviceKey::from_secret_bytes(&[0x24; 32]).unwrap();
    let (url, now) = (fuzz_targets::FUZZ_URL, fuzz_targets::FUZZ_NOW);
    let token = fuzz_targets::FUZZ_ACCESS_TOKEN;
    let proofs = [
        ("proof", device.proof("POST", url, None, now).unwrap()),
        (
            "proof-with-token",
            device.proof("POST", url, Some(token), now).unwrap(),
        ),
    ];
    for (name, proof) in proofs {
        write_seed(corpus, "dpop_proof", name, proof.as_bytes());
    }
}

fn write_input_seeds(corpus: &Path) {
    write_seed(
        corpus,
        "jsonl",
        "sample",
        &std::fs::read(sample_path()).unwrap(),
    );
    let Some(files) = seed_consultation_files() else {
        return;
    };
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy();
        write_seed(corpus, "textgrid", &name, &std::fs::read(file).unwrap());
    }
    let segments = interim::expand_all(load_files(&files, None).unwrap()).unwrap();
    let lines: Vec<String> = segments.iter().take(40).map(json).collect();
    write_seed(
        corpus,
        "jsonl",
        SEED_CONSULTATION,
        lines.join("\n").as_bytes(),
    );
}

/// Returns the TextGrid files of the seed consultation, or `None` when the
/// real transcripts are not available.
fn seed_consultation_files() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os(TRANSCRIPTS_ENV).map(PathBuf::from)?;
    let consultation = consultations(&dir)
        .into_iter()
        .find(|consultation| consultation.name == SEED_CONSULTATION)?;
    Some(consultation.files)
}

fn write_seed(corpus: &Path, target: &str, name: &str, data: &[u8]) {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}
