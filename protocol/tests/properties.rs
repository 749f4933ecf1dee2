//! Property tests of sealing, opening and invite links: round trips for
//! arbitrary input, and rejection of every altered, truncated, extended,
//! replayed, reordered or foreign frame and of malformed links.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use proptest::sample::Index;
use url::Url;

use sealcast_protocol::padding::{MAX_BUCKET, MAX_CONTENT_LEN};
use sealcast_protocol::{
    FrameHeader, FrameKind, InviteError, InviteLink, ProtocolError, SessionId, SessionKey,
    StreamId, StreamOpener, StreamSealer, TranscriptSegment, HEADER_LEN,
};

const SESSION: SessionId = SessionId([0x5e; 16]);
const STREAM: StreamId = StreamId([0xa5; 16]);

fn key() -> SessionKey {
    SessionKey::from_bytes([0x42; 32])
}

fn opener() -> StreamOpener {
    StreamOpener::new(key(), SESSION)
}

fn sealer() -> StreamSealer {
    StreamSealer::with_stream_id(&key(), SESSION, STREAM)
}

/// Transcript text: mostly short, sometimes long enough to reach or pass the
/// largest padding bucket, drawn from all of Unicode.
fn transcript_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => prop::collection::vec(any::<char>(), 0..40_000)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
    ]
}

fn segment() -> impl Strategy<Value = TranscriptSegment> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<String>(),
        any::<u64>(),
        any::<u64>(),
        transcript_text(),
        any::<bool>(),
    )
        .prop_map(
            |(segment_id, revision, speaker, start_ms, end_ms, text, is_final)| TranscriptSegment {
                segment_id,
                revision,
                speaker,
                start_ms,
                end_ms,
                text,
                is_final,
            },
        )
}

fn small_segment() -> impl Strategy<Value = TranscriptSegment> {
    (any::<u64>(), "\\PC{0,80}", any::<bool>()).prop_map(|(segment_id, text, is_final)| {
        TranscriptSegment {
            segment_id,
            revision: 0,
            speaker: "doctor".into(),
            start_ms: 0,
            end_ms: 1_000,
            text,
            is_final,
        }
    })
}

fn sealed_small_frame() -> impl Strategy<Value = Vec<u8>> {
    small_segment().prop_map(|segment| sealer().seal_segment(&segment).unwrap())
}

/// Builds a segment whose JSON text is `prefix` padded with ASCII to exactly `len` bytes.
fn segment_of_json_len(prefix: &str, len: usize) -> Option<TranscriptSegment> {
    let mut segment = TranscriptSegment {
        segment_id: 1,
        revision: 1,
        speaker: "patient".into(),
        start_ms: 0,
        end_ms: 0,
        text: prefix.to_string(),
        is_final: true,
    };
    let filler = len.checked_sub(segment.to_plaintext().len())?;
    segment.text.push_str(&"x".repeat(filler));
    Some(segment)
}

/// Seals one frame per kind in `kinds`, as a single stream.
fn seal_stream(kinds: &[FrameKind]) -> Vec<Vec<u8>> {
    let mut sealer = sealer();
    kinds
        .iter()
        .enumerate()
        .map(|(index, kind)| sealer.seal(*kind, index.to_string().as_bytes()).unwrap())
        .collect()
}

fn segment_kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![Just(FrameKind::Interim), Just(FrameKind::Final)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn segment_round_trips(segment in segment()) {
        let plaintext_len = segment.to_plaintext().len();
        let sealed = sealer().seal_segment(&segment);
        if plaintext_len > MAX_CONTENT_LEN {
            let expected = ProtocolError::PlaintextTooLarge { len: plaintext_len, max: MAX_CONTENT_LEN };
            prop_assert_eq!(sealed.unwrap_err(), expected);
            return Ok(());
        }

        let frame = sealed.unwrap();
        let opened = opener().open(&frame).unwrap();
        let expected_kind = if segment.is_final { FrameKind::Final } else { FrameKind::Interim };
        prop_assert_eq!(opened.header.kind, expected_kind);
        prop_assert_eq!(opened.segment().unwrap(), segment);
        prop_assert_eq!(opened.skipped_frames, 0);
        prop_assert_eq!(opened.skipped_final, 0);
        prop_assert_eq!(opened.chain_verified, Some(true));
    }

    #[test]
    fn segment_at_maximum_size_round_trips(prefix in "\\PC{0,400}") {
        let segment = segment_of_json_len(&prefix, MAX_CONTENT_LEN).unwrap();
        let frame = sealer().seal_segment(&segment).unwrap();
        prop_assert_eq!(FrameHeader::decode(&frame).unwrap().bucket, MAX_BUCKET);
        prop_assert_eq!(opener().open(&frame).unwrap().segment().unwrap(), segment);

        let too_long = segment_of_json_len(&prefix, MAX_CONTENT_LEN + 1).unwrap();
        let err = sealer().seal_segment(&too_long).unwrap_err();
        let expected = ProtocolError::PlaintextTooLarge { len: MAX_CONTENT_LEN + 1, max: MAX_CONTENT_LEN };
        prop_assert_eq!(err, expected);
    }
}

proptest! {
    #[test]
    fn bit_flip_anywhere_fails(frame in sealed_small_frame(), position in any::<Index>()) {
        let bit = position.index(frame.len() * 8);
        let mut altered = frame.clone();
        altered[bit / 8] ^= 1 << (bit % 8);
        let result = opener().open(&altered);

        let byte = bit / 8;
        match byte {
            8..=23 => prop_assert!(
                matches!(result, Err(ProtocolError::WrongSession { .. })),
                "byte {byte}: {result:?}"
            ),
            4..=7 | 24.. => prop_assert!(
                matches!(result, Err(ProtocolError::Decrypt)),
                "byte {byte}: {result:?}"
            ),
            _ => prop_assert!(result.is_err(), "byte {byte} flipped but the frame opened"),
        }
    }

    #[test]
    fn truncated_frame_fails(frame in sealed_small_frame(), cut in any::<Index>()) {
        let len = cut.index(frame.len());
        let err = opener().open(&frame[..len]).unwrap_err();
        if len < HEADER_LEN {
            prop_assert_eq!(err, ProtocolError::Truncated { len, min: HEADER_LEN });
        } else {
            let expected = ProtocolError::LengthMismatch { expected: frame.len(), actual: len };
            prop_assert_eq!(err, expected);
        }
    }

    #[test]
    fn extended_frame_fails(
        frame in sealed_small_frame(),
        extra in prop::collection::vec(any::<u8>(), 1..300),
    ) {
        let mut extended = frame.clone();
        extended.extend_from_slice(&extra);
        let err = opener().open(&extended).unwrap_err();
        let expected = ProtocolError::LengthMismatch { expected: frame.len(), actual: extended.len() };
        prop_assert_eq!(err, expected);
    }

    #[test]
    fn other_session_frame_rejected(segment in small_segment(), other in any::<[u8; 16]>()) {
        prop_assume!(other != SESSION.0);
        let other = SessionId(other);
        let frame = StreamSealer::new(&key(), other).seal_segment(&segment).unwrap();
        let err = opener().open(&frame).unwrap_err();
        let expected = ProtocolError::WrongSession {
            expected: SESSION.to_string(),
            found: other.to_string(),
        };
        prop_assert_eq!(err, expected);
    }

    #[test]
    fn open_order_follows_sequence_model(
        kinds in prop::collection::vec(segment_kind(), 1..12),
        order in prop::collection::vec(any::<Index>(), 1..24),
    ) {
        let frames = seal_stream(&kinds);
        let mut opener = opener();
        let mut latest: Option<usize> = None;
        for pick in order {
            let seq = pick.index(frames.len());
            let header = FrameHeader::decode(&frames[seq]).unwrap();
            prop_assert_eq!(opener.already_seen(&header), latest.is_some_and(|l| seq <= l));

            let result = opener.open(&frames[seq]);
            let stream = STREAM.to_string();
            let seq_u64 = seq as u64;
            match latest {
                Some(l) if seq == l => {
                    prop_assert_eq!(result.unwrap_err(), ProtocolError::Replay { stream, seq: seq_u64 });
                }
                Some(l) if seq < l => {
                    let expected = ProtocolError::Reordered { stream, seq: seq_u64, latest: l as u64 };
                    prop_assert_eq!(result.unwrap_err(), expected);
                }
                _ => {
                    prop_assert!(result.is_ok(), "frame {} failed: {:?}", seq, result);
                    latest = Some(seq);
                }
            }
        }
    }

    #[test]
    fn skipped_counts_follow_delivery_model(
        kinds in prop::collection::vec(segment_kind(), 1..16),
        delivered in prop::collection::vec(any::<bool>(), 16),
    ) {
        let frames = seal_stream(&kinds);
        let mut opener = opener();
        let mut previous: Option<usize> = None;
        for seq in (0..frames.len()).filter(|&seq| delivered[seq]) {
            let opened = opener.open(&frames[seq]).unwrap();
            let first_skipped = previous.map_or(0, |p| p + 1);
            let skipped = &kinds[first_skipped..seq];
            let skipped_final = skipped.iter().filter(|kind| kind.counts_as_final()).count();
            prop_assert_eq!(opened.skipped_frames, skipped.len() as u64);
            prop_assert_eq!(opened.skipped_final, skipped_final as u64);
            let chain_checked = skipped.is_empty();
            prop_assert_eq!(opened.chain_verified, chain_checked.then_some(true));
            previous = Some(seq);
        }
    }
}

#[test]
fn dropped_interim_frames_are_no_gap() {
    use FrameKind::{Final, Interim};
    let frames = seal_stream(&[Final, Interim, Interim, Final]);
    let mut opener = opener();
    opener.open(&frames[0]).unwrap();

    let opened = opener.open(&frames[3]).unwrap();
    assert_eq!(opened.skipped_frames, 2);
    assert_eq!(opened.skipped_final, 0);
    assert_eq!(opened.chain_verified, None);
}

#[test]
fn dropped_final_frame_is_gap() {
    use FrameKind::{Final, Interim};
    let frames = seal_stream(&[Final, Interim, Final, Interim, Final]);
    let mut opener = opener();
    opener.open(&frames[0]).unwrap();
    opener.open(&frames[1]).unwrap();

    let opened = opener.open(&frames[4]).unwrap();
    assert_eq!(opened.skipped_frames, 2);
    assert_eq!(opened.skipped_final, 1);
}

#[test]
fn late_first_frame_counts_earlier_finals() {
    use FrameKind::{Final, Interim};
    let frames = seal_stream(&[Final, Final, Interim, Interim]);
    let opened = opener().open(&frames[3]).unwrap();
    assert_eq!(opened.skipped_frames, 3);
    assert_eq!(opened.skipped_final, 2);
}

#[test]
fn dropped_end_frame_is_gap() {
    let mut sealer = sealer();
    let first = sealer.seal(FrameKind::Final, b"first").unwrap();
    let _end = sealer.seal(FrameKind::EndOfSession, b"{}").unwrap();
    let late = sealer.seal(FrameKind::Interim, b"late").unwrap();
    let mut opener = opener();
    opener.open(&first).unwrap();

    let opened = opener.open(&late).unwrap();
    assert_eq!(opened.skipped_final, 1);
}

#[test]
fn streams_are_tracked_separately() {
    let mut first = StreamSealer::with_stream_id(&key(), SESSION, StreamId([1; 16]));
    let mut second = StreamSealer::with_stream_id(&key(), SESSION, StreamId([2; 16]));
    let a0 = first.seal(FrameKind::Final, b"a0").unwrap();
    let b0 = second.seal(FrameKind::Final, b"b0").unwrap();
    let a1 = first.seal(FrameKind::Final, b"a1").unwrap();
    let mut opener = opener();

    assert_eq!(opener.open(&a0).unwrap().chain_verified, Some(true));
    assert_eq!(opener.open(&b0).unwrap().chain_verified, Some(true));
    assert_eq!(opener.open(&a1).unwrap().chain_verified, Some(true));
    assert!(matches!(
        opener.open(&b0),
        Err(ProtocolError::Replay { seq: 0, .. })
    ));
}

fn relay_host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
        any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}")),
        Just("[::1]".to_string()),
    ]
}

fn invite_link() -> impl Strategy<Value = InviteLink> {
    (
        prop_oneof![Just("https"), Just("http")],
        relay_host(),
        proptest::option::of(1u16..),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(scheme, host, port, token, key)| {
            let port = port.map(|port| format!(":{port}")).unwrap_or_default();
            InviteLink {
                relay: Url::parse(&format!("{scheme}://{host}{port}/")).unwrap(),
                token: URL_SAFE_NO_PAD.encode(token),
                key: SessionKey::from_bytes(key),
            }
        })
}

fn assert_same_link(parsed: &InviteLink, link: &InviteLink) {
    assert_eq!(parsed.relay, link.relay);
    assert_eq!(parsed.token, link.token);
    assert_eq!(parsed.key.expose_bytes(), link.key.expose_bytes());
}

/// Splits link text at `#secret=` into the part before it and the key.
fn split_secret(text: &str) -> (&str, &str) {
    text.split_once("#secret=").unwrap()
}

proptest! {
    #[test]
    fn invite_link_round_trips(link in invite_link()) {
        let text = link.to_url();
        assert_same_link(&InviteLink::parse(&text).unwrap(), &link);
    }

    #[test]
    fn mangled_invite_link_parses(link in invite_link(), split in any::<Index>()) {
        let text = link.to_url();
        let at = split.index(text.len());
        let mangled = [
            format!("  <{}\r\n {}>\t", &text[..at], &text[at..]),
            format!("\"{}\"", text.replace('#', "%23")),
            format!("{text}="),
            text.replacen("#secret=", "#lang=en&secret=", 1),
        ];
        for candidate in &mangled {
            assert_same_link(&InviteLink::parse(candidate).unwrap(), &link);
        }
    }

    #[test]
    fn bad_invite_links_rejected(link in invite_link()) {
        let text = link.to_url();
        let (head, secret) = split_secret(&text);
        let token = &link.token;
        let query_at = head.find("/join?").unwrap();
        let cases = [
            (head.to_string(), InviteError::MissingSecret),
            (format!("{head}#secret="), InviteError::MissingSecret),
            (format!("{head}#secret={}", &secret[..40]), InviteError::InvalidSecretLength(30)),
            (format!("{head}#secret={secret}AAAA"), InviteError::InvalidSecretLength(35)),
            (format!("{head}#secret=+{}", &secret[1..]), InviteError::InvalidSecretEncoding),
            (format!("{head}#secret=!{}", &secret[1..]), InviteError::InvalidSecretEncoding),
            (text.replacen("/join?", "/joinx?", 1), InviteError::InvalidPath("/joinx".into())),
            (text.replacen("/join?", "/?", 1), InviteError::InvalidPath("/".into())),
            (text.replacen(&format!("token={token}"), "", 1), InviteError::MissingToken),
            (text.replacen(&format!("token={token}"), "tok=1", 1), InviteError::MissingToken),
            (text.replacen(token.as_str(), &token[..20], 1), InviteError::InvalidToken),
        ];
        for (candidate, expected) in cases {
            prop_assert_eq!(InviteLink::parse(&candidate).unwrap_err(), expected, "{}", candidate);
        }

        // The url crate words the reason, so only the variant is checked.
        let without_origin = InviteLink::parse(&text[query_at..]);
        prop_assert!(matches!(without_origin, Err(InviteError::InvalidUrl(_))));
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = InviteLink::parse(&text);
    }
}

#[test]
fn non_links_rejected_as_invalid_url() {
    for text in [
        "",
        "not a link",
        "https://",
        "relay.example/join?token=x#secret=y",
    ] {
        let err = InviteLink::parse(text).unwrap_err();
        assert!(
            matches!(err, InviteError::InvalidUrl(_)),
            "{text:?}: {err:?}"
        );
    }
}

#[test]
fn other_schemes_rejected() {
    let err = InviteLink::parse("ftp://relay.example/join?token=x#secret=y").unwrap_err();
    assert_eq!(err, InviteError::InvalidScheme("ftp".into()));
}
