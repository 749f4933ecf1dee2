//! Checks the test vectors and tables of `docs/protocol.md` against this
//! crate, so the document and the code cannot drift apart.
//!
//! The document's vector blocks are fenced with the info string `vectors` and
//! hold `name: value` lines, where a line starting with two spaces continues
//! the value above it. Where a value can be computed independently of this
//! crate (HKDF, HMAC, AES-GCM, SHA-256 from the document's own labels and
//! inputs), the tests compute it both ways.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use url::Url;

use sealcast_protocol::api::{
    close, decode_delivery, encode_delivery, CreateSessionRequest, CreateSessionResponse,
    ErrorBody, FollowerEvent, InviteChallengeRequest, InviteChallengeResponse, InviteRedeemRequest,
    InviteRedeemResponse, PublisherEvent, CHALLENGE_LEN,
};
use sealcast_protocol::authorship::{
    AuthoredStream, AuthorshipVerifier, Endorsement, Problem, PublisherKey, Verdict,
};
use sealcast_protocol::padding::{bucket_for, pad, padded_len, MAX_BUCKET};
use sealcast_protocol::pairing::{
    self, ClinicianPairing, Commitment, DeviceGrant, JoinerPairing, KeyGrant, PairedClinician,
    PairedJoiner, PairingCode, PairingKeyPair, WRAPPED_KEY_LEN,
};
use sealcast_protocol::{
    frame_hash, nonce_for_seq, EndOfSession, Fingerprint, FollowInvite, FrameHeader, FrameKind,
    InviteLink, SessionId, SessionKey, StreamId, StreamOpener, StreamSealer, TranscriptSegment,
    HEADER_LEN, TAG_LEN,
};

/// Every vector name the document must contain, and the only ones it may contain.
const NAMES: &[&str] = &[
    "session_key",
    "session_id",
    "stream_id",
    "challenge",
    "invite_token_bytes",
    "relay_url",
    "delivery_offset",
    "segment_0",
    "segment_1",
    "end_2",
    "stream_key_label",
    "fingerprint_label",
    "invite_auth_label",
    "invite_proof_label",
    "stream_key",
    "fingerprint",
    "fingerprint_base64url",
    "fingerprint_words",
    "invite_auth_key",
    "invite_auth_key_base64url",
    "invite_proof",
    "nonce_0",
    "header_0",
    "padded_0",
    "padded_0_sha256",
    "frame_0",
    "frame_0_hash",
    "nonce_1",
    "header_1",
    "padded_1_sha256",
    "frame_1",
    "frame_1_hash",
    "nonce_2",
    "header_2",
    "padded_2_sha256",
    "frame_2",
    "frame_2_hash",
    "receive_0_1_2",
    "receive_0_2",
    "receive_1_2",
    "receive_2",
    "receive_0_0",
    "receive_1_0",
    "receive_0_2_1",
    "invite_token",
    "session_key_base64url",
    "invite_link",
    "create_session_request",
    "create_session_response",
    "publisher_welcome",
    "publisher_ack",
    "follower_welcome",
    "follower_committed",
    "follower_ended",
    "error_body",
    "delivery_0_head",
    "challenge_base64url",
    "invite_proof_base64url",
    "invite_challenge_request",
    "invite_challenge_response",
    "invite_redeem_request",
    "invite_redeem_response",
    "joiner_secret",
    "clinician_secret",
    "publisher_secret",
    "rotated_session_key",
    "pairing_commit_label",
    "pairing_code_label",
    "wrap_label",
    "joiner_public",
    "clinician_public",
    "pairing_commitment",
    "pairing_shared_secret",
    "pairing_code",
    "pairing_code_words",
    "pairing_code_digits",
    "wrap_key_0",
    "wrap_nonce_0",
    "wrapped_key_0",
    "wrap_key_1",
    "wrap_nonce_1",
    "wrapped_key_1",
    "checkpoint_label",
    "publisher_key",
    "publisher_key_base64url",
    "checkpoint_statement_1",
    "checkpoint_signature_1",
    "checkpoint_content_1",
    "checkpoint_frame_1",
    "signed_end_statement_2",
    "signed_end_signature_2",
    "signed_end_content_2",
    "signed_end_frame_2",
    "authorship_0_1_2",
    "authorship_0_2",
    "authorship_0_1",
    "authorship_1_2",
    "authorship_2",
    "rotated_session_key_base64url",
    "invite_link_publisher",
    "invite_link_epoch_1",
    "second_device_secret",
    "device_grant_history_epoch",
    "device_commit_label",
    "device_code_label",
    "device_wrap_label",
    "endorsement_label",
    "second_device_key",
    "second_device_key_base64url",
    "device_pairing_commitment",
    "device_pairing_code",
    "device_pairing_code_words",
    "device_pairing_code_digits",
    "endorsement_statement",
    "endorsement_signature",
    "device_wrap_key_0",
    "device_wrap_nonce_0",
    "device_grant_payload",
    "wrapped_device_grant_0",
    "endorsed_end_content_1",
    "endorsed_end_frame_1",
    "endorsed_verdict_0_1",
];

/// Plaintext vector of each frame of the vector stream, by sequence number.
const PLAINTEXTS: [&str; 3] = ["segment_0", "segment_1", "end_2"];

fn doc_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// Lines of every fenced block whose info string is `info`.
fn fenced_blocks(text: &str, info: &str) -> Vec<Vec<String>> {
    let opening = format!("```{info}");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.trim_end() == opening => current = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(lines) => lines.push(line.to_string()),
        }
    }
    assert!(current.is_none(), "a {opening} block is not closed");
    blocks
}

/// Lines from the heading that starts with `heading` up to the next heading.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|line| !line.starts_with(heading))
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .collect()
}

/// Cells of a markdown table row, trimmed, or `None` for other lines.
fn table_cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split(" | ").map(str::trim).collect())
}

struct Vectors(BTreeMap<String, String>);

impl Vectors {
    fn load() -> Self {
        Vectors(parse_vectors(&doc_text()))
    }

    fn text(&self, name: &str) -> &str {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("docs/protocol.md has no vector {name}"))
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(self.text(name)).unwrap_or_else(|err| panic!("vector {name}: {err}"))
    }

    fn array<const N: usize>(&self, name: &str) -> [u8; N] {
        let bytes = self.bytes(name);
        bytes
            .try_into()
            .unwrap_or_else(|bytes: Vec<u8>| panic!("vector {name} is {} bytes", bytes.len()))
    }

    fn number(&self, name: &str) -> u64 {
        self.text(name).parse().unwrap()
    }

    fn session_key(&self) -> SessionKey {
        SessionKey::from_bytes(self.array("session_key"))
    }

    fn session_id(&self) -> SessionId {
        SessionId(self.array("session_id"))
    }

    fn stream_id(&self) -> StreamId {
        StreamId(self.array("stream_id"))
    }

    /// Seals the three plaintexts of the vectors as one stream, as a sender does.
    fn sealed_frames(&self) -> Vec<Vec<u8>> {
        let mut sealer =
            StreamSealer::with_stream_id(&self.session_key(), self.session_id(), self.stream_id());
        let first = TranscriptSegment::from_plaintext(self.text("segment_0").as_bytes()).unwrap();
        let second = TranscriptSegment::from_plaintext(self.text("segment_1").as_bytes()).unwrap();
        let end = EndOfSession::from_plaintext(self.text("end_2").as_bytes()).unwrap();
        vec![
            sealer.seal_segment(&first).unwrap(),
            sealer.seal_segment(&second).unwrap(),
            sealer.seal_end(&end).unwrap(),
        ]
    }
}

fn parse_vectors(text: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for block in fenced_blocks(text, "vectors") {
        let mut last_name: Option<String> = None;
        for line in block {
            if let Some(rest) = line.strip_prefix("  ") {
                let name = last_name
                    .as_ref()
                    .expect("continuation line before any name");
                let value: &mut String = values.get_mut(name).unwrap();
                value.push_str(rest.trim());
            } else if let Some((name, value)) = line.split_once(':') {
                let valid = name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                assert!(valid, "invalid vector name {name:?}");
                let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                let previous = values.insert(name.to_string(), value);
                assert!(previous.is_none(), "vector {name} appears twice");
                last_name = Some(name.to_string());
            } else {
                assert!(line.trim().is_empty(), "malformed vector line {line:?}");
            }
        }
    }
    values
}

fn hkdf(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, &mut out)
        .unwrap();
    out
}

#[test]
fn doc_lists_exactly_checked_vectors() {
    let vectors = Vectors::load();
    let found: BTreeSet<&str> = vectors.0.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = NAMES.iter().copied().collect();
    let unknown: Vec<_> = found.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    assert!(unknown.is_empty(), "vectors no test checks: {unknown:?}");
    assert!(
        missing.is_empty(),
        "vectors missing from the document: {missing:?}"
    );
}

#[test]
fn labels_give_documented_keys() {
    let vectors = Vectors::load();
    let key = vectors.session_key();
    let session_key = vectors.bytes("session_key");
    let session_id = vectors.bytes("session_id");
    let stream_id = vectors.bytes("stream_id");

    let mut info = vectors.text("stream_key_label").as_bytes().to_vec();
    info.extend_from_slice(&stream_id);
    let stream_key = hkdf(Some(&session_id), &session_key, &info, 32);
    assert_eq!(stream_key, vectors.bytes("stream_key"));
    let derived = key.derive_stream_key(&vectors.session_id(), &vectors.stream_id());
    assert_eq!(derived.expose_bytes().to_vec(), stream_key);

    let label = vectors.text("fingerprint_label").as_bytes();
    let fingerprint = hkdf(None, &session_key, label, 16);
    assert_eq!(fingerprint, vectors.bytes("fingerprint"));
    assert_eq!(key.fingerprint().0.to_vec(), fingerprint);

    let label = vectors.text("invite_auth_label").as_bytes();
    let auth_key = hkdf(None, &session_key, label, 32);
    assert_eq!(auth_key, vectors.bytes("invite_auth_key"));
    assert_eq!(
        key.derive_invite_auth_key().expose_bytes().to_vec(),
        auth_key
    );
}

#[test]
fn empty_salt_equals_no_salt() {
    let vectors = Vectors::load();
    let label = vectors.text("fingerprint_label").as_bytes();
    let with_empty = hkdf(Some(&[]), &vectors.bytes("session_key"), label, 16);
    assert_eq!(with_empty, vectors.bytes("fingerprint"));
}

#[test]
fn labels_appear_in_derivation_text() {
    let vectors = Vectors::load();
    let text = doc_text();
    for name in [
        "stream_key_label",
        "fingerprint_label",
        "invite_auth_label",
        "invite_proof_label",
    ] {
        let label = vectors.text(name);
        let described = format!("`{label}` ({} bytes)", label.len());
        assert!(
            text.contains(&described),
            "the document never states {described}"
        );
    }
}

#[test]
fn invite_proof_matches_vector() {
    let vectors = Vectors::load();
    let challenge = vectors.bytes("challenge");
    let auth_key = vectors.session_key().derive_invite_auth_key();
    let proof = auth_key.prove(&challenge);
    assert_eq!(proof.to_vec(), vectors.bytes("invite_proof"));
    assert!(auth_key.verify(&challenge, &vectors.bytes("invite_proof")));

    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&vectors.bytes("invite_auth_key")).unwrap();
    mac.update(vectors.text("invite_proof_label").as_bytes());
    mac.update(&challenge);
    assert_eq!(
        mac.finalize().into_bytes().to_vec(),
        vectors.bytes("invite_proof")
    );
}

#[test]
fn fingerprint_forms_match_vectors() {
    let vectors = Vectors::load();
    let key = vectors.session_key();
    let fingerprint = key.fingerprint();
    assert_eq!(
        fingerprint.to_base64url(),
        vectors.text("fingerprint_base64url")
    );
    assert_eq!(
        fingerprint.words().join(" "),
        vectors.text("fingerprint_words")
    );
    let parsed = Fingerprint::from_base64url(vectors.text("fingerprint_base64url")).unwrap();
    assert_eq!(parsed, fingerprint);

    let verifier = URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes());
    assert_eq!(verifier, vectors.text("invite_auth_key_base64url"));
}

#[test]
fn segment_json_is_crate_form() {
    let vectors = Vectors::load();
    for name in ["segment_0", "segment_1"] {
        let text = vectors.text(name);
        let segment = TranscriptSegment::from_plaintext(text.as_bytes()).unwrap();
        assert_eq!(segment.to_plaintext(), text.as_bytes(), "{name}");
    }
    let end = EndOfSession::from_plaintext(vectors.text("end_2").as_bytes()).unwrap();
    assert_eq!(end.to_plaintext(), vectors.text("end_2").as_bytes());
    assert!(vectors.text("segment_0").contains('\u{b0}'));
}

#[test]
fn sealed_frames_match_vectors() {
    let vectors = Vectors::load();
    let frames = vectors.sealed_frames();
    for (seq, frame) in frames.iter().enumerate() {
        let seq_u64 = seq as u64;
        assert_eq!(
            nonce_for_seq(seq_u64).to_vec(),
            vectors.bytes(&format!("nonce_{seq}"))
        );
        assert_eq!(
            frame[..HEADER_LEN],
            vectors.bytes(&format!("header_{seq}")),
            "header {seq}"
        );
        assert_eq!(
            *frame,
            vectors.bytes(&format!("frame_{seq}")),
            "frame {seq}"
        );
        let hash = frame_hash(frame).to_vec();
        assert_eq!(
            hash,
            vectors.bytes(&format!("frame_{seq}_hash")),
            "hash {seq}"
        );
    }
}

#[test]
fn header_vectors_decode_and_encode() {
    let vectors = Vectors::load();
    let kinds = [
        FrameKind::Final,
        FrameKind::Interim,
        FrameKind::EndOfSession,
    ];
    let final_counts = [1, 1, 2];
    for (seq, kind) in kinds.into_iter().enumerate() {
        let bytes = vectors.bytes(&format!("header_{seq}"));
        let header = FrameHeader::decode(&bytes).unwrap();
        assert_eq!(header.encode().to_vec(), bytes);
        assert_eq!(header.kind, kind);
        assert_eq!(header.seq, seq as u64);
        assert_eq!(header.final_count, final_counts[seq]);
        assert_eq!(header.session_id, vectors.session_id());
        assert_eq!(header.stream_id, vectors.stream_id());
        assert_eq!(header.key_epoch, 0);
    }
}

#[test]
fn padded_plaintexts_match_vectors() {
    let vectors = Vectors::load();
    for (seq, name) in PLAINTEXTS.iter().enumerate() {
        let content = vectors.text(name).as_bytes();
        let padded = pad(content, bucket_for(content.len()).unwrap()).unwrap();
        let digest = Sha256::digest(&padded).to_vec();
        assert_eq!(
            digest,
            vectors.bytes(&format!("padded_{seq}_sha256")),
            "{name}"
        );
    }
    let content = vectors.text("segment_0").as_bytes();
    let padded = pad(content, bucket_for(content.len()).unwrap()).unwrap();
    assert_eq!(padded, vectors.bytes("padded_0"));
}

#[test]
fn frame_vectors_open_with_plain_aes_gcm() {
    let vectors = Vectors::load();
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&vectors.bytes("stream_key")));
    let mut prev_hash = [0u8; 32].to_vec();
    for (seq, plaintext) in PLAINTEXTS.iter().enumerate() {
        let frame = vectors.bytes(&format!("frame_{seq}"));
        let header = vectors.bytes(&format!("header_{seq}"));
        let nonce = vectors.bytes(&format!("nonce_{seq}"));
        assert_eq!(frame[..HEADER_LEN], header);
        assert_eq!(header[56..], prev_hash, "prev hash of frame {seq}");

        let payload = Payload {
            msg: &frame[HEADER_LEN..],
            aad: &header,
        };
        let padded = cipher.decrypt(Nonce::from_slice(&nonce), payload).unwrap();
        let digest = Sha256::digest(&padded).to_vec();
        assert_eq!(digest, vectors.bytes(&format!("padded_{seq}_sha256")));
        let length = u32::from_be_bytes(padded[..4].try_into().unwrap()) as usize;
        assert_eq!(&padded[4..4 + length], vectors.text(plaintext).as_bytes());

        prev_hash = Sha256::digest(&frame).to_vec();
        assert_eq!(prev_hash, vectors.bytes(&format!("frame_{seq}_hash")));
    }
}

#[test]
fn frame_vectors_open_to_plaintexts() {
    let vectors = Vectors::load();
    let mut opener = StreamOpener::new(vectors.session_key(), vectors.session_id());
    for (seq, name) in PLAINTEXTS.iter().enumerate() {
        let opened = opener
            .open(&vectors.bytes(&format!("frame_{seq}")))
            .unwrap();
        assert_eq!(opened.content, vectors.text(name).as_bytes(), "{name}");
    }
}

/// Describes the outcome of opening one frame in the notation of the receiver vectors.
fn describe_open(opener: &mut StreamOpener, frame: &[u8]) -> String {
    match opener.open(frame) {
        Ok(opened) => {
            let chain = match opened.chain_verified {
                Some(true) => "verified",
                Some(false) => "broken",
                None => "unchecked",
            };
            format!("{}/{}/{chain}", opened.skipped_frames, opened.skipped_final)
        }
        Err(err) => {
            let debug = format!("{err:?}");
            let end = debug.find([' ', '(', '{']).unwrap_or(debug.len());
            debug[..end].to_string()
        }
    }
}

#[test]
fn receiver_vectors_match_opener() {
    let vectors = Vectors::load();
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|seq| vectors.bytes(&format!("frame_{seq}")))
        .collect();
    let cases = vectors
        .0
        .iter()
        .filter(|(name, _)| name.starts_with("receive_"));
    for (name, expected) in cases {
        let mut opener = StreamOpener::new(vectors.session_key(), vectors.session_id());
        let order = name.trim_start_matches("receive_").split('_');
        let outcomes: Vec<String> = order
            .map(|seq| describe_open(&mut opener, &frames[seq.parse::<usize>().unwrap()]))
            .collect();
        assert_eq!(outcomes.join(" "), *expected, "{name}");
    }
}

#[test]
fn invite_link_matches_vector() {
    let vectors = Vectors::load();
    let token = URL_SAFE_NO_PAD.encode(vectors.bytes("invite_token_bytes"));
    assert_eq!(token, vectors.text("invite_token"));
    let key = vectors.session_key();
    assert_eq!(key.to_base64url(), vectors.text("session_key_base64url"));

    let relay = Url::parse(vectors.text("relay_url")).unwrap();
    let link = InviteLink { relay, token, key };
    assert_eq!(link.to_url(), vectors.text("invite_link"));
}

#[test]
fn invite_cases_match_parser() {
    let vectors = Vectors::load();
    let blocks = fenced_blocks(&doc_text(), "invite-cases");
    assert_eq!(blocks.len(), 1, "expected one invite-cases block");
    let mut variants = BTreeSet::new();
    for line in &blocks[0] {
        let (expected, link) = line.split_once(" | ").expect("line without ' | '");
        let expected = expected.trim();
        match InviteLink::parse(link) {
            Ok(parsed) => {
                assert_eq!(expected, "ok", "{link} parsed");
                assert_eq!(parsed.relay.as_str(), vectors.text("relay_url"), "{link}");
                assert_eq!(parsed.token, vectors.text("invite_token"), "{link}");
                assert_eq!(
                    parsed.key.expose_bytes(),
                    vectors.session_key().expose_bytes()
                );
            }
            Err(err) => {
                let debug = format!("{err:?}");
                let matches = debug == expected || debug.starts_with(&format!("{expected}("));
                assert!(matches, "{link}: expected {expected}, got {debug}");
                variants.insert(debug.split('(').next().unwrap_or_default().to_string());
            }
        }
    }
    let every_variant = [
        "InvalidUrl",
        "InvalidScheme",
        "InvalidPath",
        "MissingToken",
        "InvalidToken",
        "MissingSecret",
        "InvalidSecretEncoding",
        "InvalidSecretLength",
    ];
    for variant in every_variant {
        assert!(variants.contains(variant), "no invite case for {variant}");
    }
}

/// Checks that `text` parses as `T` and serializes back to exactly `text`.
fn json_round_trip<T>(text: &str) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let value: T = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&value).unwrap(), text);
    value
}

#[test]
fn session_bodies_match_vectors() {
    let vectors = Vectors::load();
    let request: CreateSessionRequest = json_round_trip(vectors.text("create_session_request"));
    assert_eq!(request.fingerprint, vectors.text("fingerprint_base64url"));
    let verifier = request.invite_verifier.as_deref();
    assert_eq!(verifier, Some(vectors.text("invite_auth_key_base64url")));

    let response: CreateSessionResponse = json_round_trip(vectors.text("create_session_response"));
    assert_eq!(response.session_id, vectors.session_id());
    assert_eq!(response.invite_token, vectors.text("invite_token"));

    let error: ErrorBody = json_round_trip(vectors.text("error_body"));
    assert_eq!(error.error, "unauthorized");
}

#[test]
fn invite_bodies_match_vectors() {
    let vectors = Vectors::load();
    let challenge = vectors.bytes("challenge");
    assert_eq!(challenge.len(), CHALLENGE_LEN);
    let challenge_text = URL_SAFE_NO_PAD.encode(&challenge);
    assert_eq!(challenge_text, vectors.text("challenge_base64url"));
    let proof = vectors
        .session_key()
        .derive_invite_auth_key()
        .prove(&challenge);
    let proof_text = URL_SAFE_NO_PAD.encode(proof);
    assert_eq!(proof_text, vectors.text("invite_proof_base64url"));

    let request: InviteChallengeRequest = json_round_trip(vectors.text("invite_challenge_request"));
    assert_eq!(request.token, vectors.text("invite_token"));

    let response: InviteChallengeResponse =
        json_round_trip(vectors.text("invite_challenge_response"));
    assert_eq!(response.challenge, challenge_text);
    assert_eq!(response.session_id, vectors.session_id());
    assert_eq!(response.fingerprint, vectors.text("fingerprint_base64url"));

    let redeem: InviteRedeemRequest = json_round_trip(vectors.text("invite_redeem_request"));
    assert_eq!(redeem.token, vectors.text("invite_token"));
    assert_eq!(redeem.challenge, challenge_text);
    assert_eq!(redeem.proof, proof_text);

    let redeemed: InviteRedeemResponse = json_round_trip(vectors.text("invite_redeem_response"));
    assert_eq!(redeemed.session_id, vectors.session_id());
    assert_eq!(redeemed.epoch, 1);
}

#[test]
fn invite_bodies_hide_secrets_in_debug() {
    let vectors = Vectors::load();
    let request: InviteRedeemRequest =
        serde_json::from_str(vectors.text("invite_redeem_request")).unwrap();
    let debug = format!("{request:?}");
    assert!(!debug.contains(&request.token), "{debug}");
    assert!(!debug.contains(&request.challenge), "{debug}");
    assert!(!debug.contains(&request.proof), "{debug}");

    let challenge: InviteChallengeRequest =
        serde_json::from_str(vectors.text("invite_challenge_request")).unwrap();
    assert!(!format!("{challenge:?}").contains(&challenge.token));
    let offered: InviteChallengeResponse =
        serde_json::from_str(vectors.text("invite_challenge_response")).unwrap();
    assert!(!format!("{offered:?}").contains(&offered.challenge));
}

#[test]
fn publisher_events_match_vectors() {
    let vectors = Vectors::load();
    let welcome: PublisherEvent = json_round_trip(vectors.text("publisher_welcome"));
    let expected = PublisherEvent::Welcome {
        session_id: vectors.session_id(),
        epoch: 1,
    };
    assert_eq!(welcome, expected);

    let ack: PublisherEvent = json_round_trip(vectors.text("publisher_ack"));
    let expected = PublisherEvent::Ack {
        stream_id: vectors.stream_id(),
        seq: 1,
        offset: vectors.number("delivery_offset") + 1,
    };
    assert_eq!(ack, expected);
}

#[test]
fn follower_events_match_vectors() {
    let vectors = Vectors::load();
    let welcome: FollowerEvent = json_round_trip(vectors.text("follower_welcome"));
    let expected = FollowerEvent::Welcome {
        session_id: vectors.session_id(),
        epoch: 1,
        fingerprint: vectors.text("fingerprint_base64url").to_string(),
        from_offset: vectors.number("delivery_offset"),
        ended: false,
    };
    assert_eq!(welcome, expected);

    let committed: FollowerEvent = json_round_trip(vectors.text("follower_committed"));
    let offset = vectors.number("delivery_offset") + 1;
    assert_eq!(committed, FollowerEvent::Committed { offset });
    let ended: FollowerEvent = json_round_trip(vectors.text("follower_ended"));
    assert_eq!(ended, FollowerEvent::Ended);
}

#[test]
fn delivery_head_matches_vector() {
    let vectors = Vectors::load();
    let frame = vectors.bytes("frame_0");
    let offset = vectors.number("delivery_offset");
    let message = encode_delivery(offset, &frame);
    let head = vectors.bytes("delivery_0_head");
    assert_eq!(message[..head.len()], head);
    assert_eq!(decode_delivery(&message), Some((offset, frame.as_slice())));
}

#[test]
fn close_code_table_matches_constants() {
    let text = doc_text();
    let documented: BTreeMap<String, u16> = section(&text, "### 9.5")
        .into_iter()
        .filter_map(table_cells)
        .filter_map(|cells| {
            let code = cells.first()?.parse().ok()?;
            let name = cells.get(1)?.trim_matches('`').to_string();
            Some((name, code))
        })
        .collect();
    let constants = [
        ("NORMAL", close::NORMAL),
        ("GOING_AWAY", close::GOING_AWAY),
        ("UNSUPPORTED_DATA", close::UNSUPPORTED_DATA),
        ("POLICY_VIOLATION", close::POLICY_VIOLATION),
        ("MESSAGE_TOO_BIG", close::MESSAGE_TOO_BIG),
        ("INTERNAL_ERROR", close::INTERNAL_ERROR),
        ("MALFORMED_FRAME", close::MALFORMED_FRAME),
        ("UNSUPPORTED_VERSION", close::UNSUPPORTED_VERSION),
        ("WRONG_SESSION", close::WRONG_SESSION),
        ("SEQUENCE_GAP", close::SEQUENCE_GAP),
        ("SESSION_ENDED", close::SESSION_ENDED),
        ("LAGGED", close::LAGGED),
        ("CANNOT_RECOVER", close::CANNOT_RECOVER),
        ("REPLACED", close::REPLACED),
        ("TIMEOUT", close::TIMEOUT),
        ("REVOKED", close::REVOKED),
    ];
    let expected: BTreeMap<String, u16> = constants
        .iter()
        .map(|(name, code)| (name.to_string(), *code))
        .collect();
    assert_eq!(documented, expected);
}

#[test]
fn padding_table_matches_code() {
    let text = doc_text();
    let rows: Vec<Vec<usize>> = section(&text, "### 4.4")
        .into_iter()
        .filter_map(table_cells)
        .filter_map(|cells| {
            let numbers: Option<Vec<usize>> = cells
                .iter()
                .map(|cell| cell.replace(',', "").parse().ok())
                .collect();
            numbers
        })
        .collect();
    assert_eq!(rows.len(), usize::from(MAX_BUCKET) + 1);
    for (bucket, row) in rows.iter().enumerate() {
        let bucket_u8 = u8::try_from(bucket).unwrap();
        assert_eq!(row[0], bucket);
        assert_eq!(
            row[1],
            padded_len(bucket_u8),
            "padded size of bucket {bucket}"
        );
        assert_eq!(
            row[2],
            padded_len(bucket_u8) - 4,
            "content of bucket {bucket}"
        );
        assert_eq!(bucket_for(row[2]).unwrap(), bucket_u8);
        assert_eq!(row[3], HEADER_LEN + padded_len(bucket_u8) + TAG_LEN);
    }
}

/// Encodes a header whose fields all differ, and returns each field's expected bytes.
fn distinct_header() -> (Vec<u8>, BTreeMap<&'static str, Vec<u8>>) {
    let header = FrameHeader {
        kind: FrameKind::EndOfSession,
        bucket: 5,
        key_epoch: 0x0102_0304,
        session_id: SessionId([0x11; 16]),
        stream_id: StreamId([0x22; 16]),
        seq: 0x0506_0708_090a_0b0c,
        final_count: 0x0d0e_0f10_1112_1314,
        prev_hash: [0x33; 32],
    };
    let fields = BTreeMap::from([
        ("version", vec![1]),
        ("kind", vec![3]),
        ("bucket", vec![5]),
        ("flags", vec![0]),
        ("key epoch", header.key_epoch.to_be_bytes().to_vec()),
        ("session id", vec![0x11; 16]),
        ("stream id", vec![0x22; 16]),
        ("seq", header.seq.to_be_bytes().to_vec()),
        ("final count", header.final_count.to_be_bytes().to_vec()),
        ("prev hash", vec![0x33; 32]),
    ]);
    (header.encode().to_vec(), fields)
}

#[test]
fn header_table_matches_encoding() {
    let text = doc_text();
    let (encoded, fields) = distinct_header();
    let mut next_offset = 0;
    let mut seen = BTreeSet::new();
    for cells in section(&text, "### 4.2")
        .into_iter()
        .filter_map(table_cells)
    {
        let (Ok(offset), Ok(size)) = (cells[0].parse::<usize>(), cells[1].parse::<usize>()) else {
            continue;
        };
        let name = cells[2];
        assert_eq!(offset, next_offset, "offset of {name}");
        let expected = fields
            .get(name)
            .unwrap_or_else(|| panic!("unknown field {name}"));
        assert_eq!(encoded[offset..offset + size], *expected, "bytes of {name}");
        next_offset = offset + size;
        seen.insert(name);
    }
    assert_eq!(next_offset, HEADER_LEN);
    assert_eq!(seen.len(), fields.len());
}

#[test]
fn word_list_matches_code() {
    let blocks = fenced_blocks(&doc_text(), "words");
    assert_eq!(blocks.len(), 1, "expected one words block");
    let mut words = Vec::new();
    for line in &blocks[0] {
        let (index, rest) = line.split_once(": ").expect("word line without index");
        assert_eq!(
            usize::from_str_radix(index, 16).unwrap(),
            words.len(),
            "{line}"
        );
        words.extend(rest.split(' ').map(str::to_string));
    }
    assert_eq!(words.len(), 256);
    for (byte, word) in words.iter().enumerate() {
        let fingerprint = Fingerprint([u8::try_from(byte).unwrap(); 16]);
        assert_eq!(fingerprint.words()[0], word, "word {byte:#04x}");
    }
    let distinct: BTreeSet<&String> = words.iter().collect();
    assert_eq!(distinct.len(), 256);
}

/// Runs the pairing of the vectors through the crate's state machines.
fn paired_vectors(vectors: &Vectors) -> (PairedJoiner, PairedClinician, [u8; 32], [u8; 32]) {
    let joiner_keys = PairingKeyPair::from_secret_bytes(&vectors.array("joiner_secret"));
    let clinician_keys = PairingKeyPair::from_secret_bytes(&vectors.array("clinician_secret"));
    let (joiner, commitment) = JoinerPairing::with_key_pair(joiner_keys);
    let (clinician, clinician_public) =
        ClinicianPairing::respond_with_key_pair(commitment, clinician_keys);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
    assert_eq!(joiner.code(), clinician.code());
    (
        clinician.confirm(),
        joiner.confirm(),
        joiner_public,
        clinician_public,
    )
}

#[test]
fn pairing_messages_match_vectors() {
    let vectors = Vectors::load();
    let joiner_secret = vectors.array("joiner_secret");
    let clinician_secret = vectors.array("clinician_secret");
    let joiner_public = vectors.array::<32>("joiner_public");
    let clinician_public = vectors.array::<32>("clinician_public");
    let basepoint = x25519_dalek::X25519_BASEPOINT_BYTES;
    assert_eq!(
        x25519_dalek::x25519(joiner_secret, basepoint),
        joiner_public
    );
    assert_eq!(
        x25519_dalek::x25519(clinician_secret, basepoint),
        clinician_public
    );

    let (_, _, flow_joiner, flow_clinician) = paired_vectors(&vectors);
    assert_eq!(flow_joiner, joiner_public);
    assert_eq!(flow_clinician, clinician_public);

    let mut commit = Sha256::new();
    commit.update(vectors.text("pairing_commit_label").as_bytes());
    commit.update(joiner_public);
    let commitment = commit.finalize().to_vec();
    assert_eq!(commitment, vectors.bytes("pairing_commitment"));
    assert_eq!(
        Commitment::to_public_key(&joiner_public).0.to_vec(),
        commitment
    );

    let shared = vectors.bytes("pairing_shared_secret");
    let from_joiner = pairing::x25519(&joiner_secret, &clinician_public).unwrap();
    let from_clinician = pairing::x25519(&clinician_secret, &joiner_public).unwrap();
    assert_eq!(from_joiner.to_vec(), shared);
    assert_eq!(from_clinician.to_vec(), shared);
}

#[test]
fn pairing_code_matches_vectors() {
    let vectors = Vectors::load();
    let joiner_public = vectors.array::<32>("joiner_public");
    let clinician_public = vectors.array::<32>("clinician_public");
    let ikm = [joiner_public, clinician_public].concat();
    let label = vectors.text("pairing_code_label").as_bytes();
    let code = hkdf(None, &ikm, label, 4);
    assert_eq!(code, vectors.bytes("pairing_code"));

    let derived = PairingCode::derive(&joiner_public, &clinician_public);
    assert_eq!(derived.0.to_vec(), code);
    assert_eq!(
        derived.words().join(" "),
        vectors.text("pairing_code_words")
    );
    assert_eq!(derived.digits(), vectors.text("pairing_code_digits"));
    let number = u32::from_be_bytes(derived.0) % 1_000_000;
    assert_eq!(format!("{number:06}"), vectors.text("pairing_code_digits"));
}

#[test]
fn wrapped_keys_match_vectors() {
    let vectors = Vectors::load();
    let (paired_joiner, paired_clinician, joiner_public, clinician_public) =
        paired_vectors(&vectors);
    let salt = [joiner_public, clinician_public].concat();
    let shared = vectors.bytes("pairing_shared_secret");
    let publisher = PublisherKey::from_bytes(&vectors.array("publisher_key")).unwrap();
    let keys = [
        vectors.session_key(),
        SessionKey::from_bytes(vectors.array("rotated_session_key")),
    ];

    for (epoch, key) in keys.into_iter().enumerate() {
        let epoch_u32 = u32::try_from(epoch).unwrap();
        let mut info = vectors.text("wrap_label").as_bytes().to_vec();
        info.extend_from_slice(&epoch_u32.to_be_bytes());
        let wrap_key = hkdf(Some(&salt), &shared, &info, 32);
        assert_eq!(wrap_key, vectors.bytes(&format!("wrap_key_{epoch}")));

        let wrapped = vectors.bytes(&format!("wrapped_key_{epoch}"));
        let nonce = vectors.array::<12>(&format!("wrap_nonce_{epoch}"));
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        assert_eq!(wrapped[..4], epoch_u32.to_be_bytes());
        assert_eq!(wrapped[4..16], nonce);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&wrap_key));
        let payload = Payload {
            msg: &wrapped[16..],
            aad: &wrapped[..4],
        };
        let plaintext = cipher.decrypt(Nonce::from_slice(&nonce), payload).unwrap();
        let expected = [
            vectors.bytes("session_id"),
            key.expose_bytes().to_vec(),
            vectors.bytes("publisher_key"),
        ]
        .concat();
        assert_eq!(plaintext, expected, "payload of epoch {epoch}");

        let grant = KeyGrant {
            key_epoch: epoch_u32,
            session_id: vectors.session_id(),
            session_key: key,
            publisher,
        };
        assert_eq!(paired_joiner.wrap_key_with_nonce(&grant, nonce), wrapped);
        let unwrapped = paired_clinician.unwrap_key(&wrapped).unwrap();
        assert_eq!(unwrapped.key_epoch, epoch_u32);
        assert_eq!(unwrapped.session_id, vectors.session_id());
        assert_eq!(
            unwrapped.session_key.expose_bytes(),
            grant.session_key.expose_bytes()
        );
        assert_eq!(unwrapped.publisher, publisher);
    }
}

/// Seals the stream of the authorship vectors with the crate's signed sealer.
fn authored_frames(vectors: &Vectors) -> Vec<Vec<u8>> {
    let mut stream = AuthoredStream::with_stream_id(
        &vectors.session_key(),
        vectors.session_id(),
        vectors.stream_id(),
        0,
        &vectors.array("publisher_secret"),
    );
    let segment = TranscriptSegment::from_plaintext(vectors.text("segment_0").as_bytes()).unwrap();
    let mut frames = stream.seal_segment(&segment).unwrap();
    frames.push(stream.seal_checkpoint(false).unwrap());
    frames.push(stream.seal_end(1).unwrap());
    frames
}

#[test]
fn authored_frames_match_vectors() {
    let vectors = Vectors::load();
    let secret = vectors.array::<32>("publisher_secret");
    let publisher = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
    assert_eq!(
        publisher.to_bytes().to_vec(),
        vectors.bytes("publisher_key")
    );
    let encoded = URL_SAFE_NO_PAD.encode(publisher.to_bytes());
    assert_eq!(encoded, vectors.text("publisher_key_base64url"));

    let frames = authored_frames(&vectors);
    assert_eq!(frames[0], vectors.bytes("frame_0"));
    assert_eq!(frames[1], vectors.bytes("checkpoint_frame_1"));
    assert_eq!(frames[2], vectors.bytes("signed_end_frame_2"));
}

/// Builds the statement of section 13.2 from a frame's header and the listed hashes.
fn statement_of(
    vectors: &Vectors,
    frame: &[u8],
    first_seq: u64,
    closes: u8,
    listed: &[&[u8]],
) -> Vec<u8> {
    let header = &frame[..HEADER_LEN];
    let mut statement = vectors.text("checkpoint_label").as_bytes().to_vec();
    statement.extend_from_slice(&header[8..40]);
    statement.extend_from_slice(&header[4..8]);
    statement.extend_from_slice(&header[40..48]);
    statement.push(header[1]);
    statement.extend_from_slice(&header[48..88]);
    statement.extend_from_slice(&first_seq.to_be_bytes());
    statement.push(closes);
    let mut digest = Sha256::new();
    for hash in listed {
        digest.update(hash);
    }
    statement.extend_from_slice(&digest.finalize());
    statement
}

#[test]
fn checkpoint_signatures_match_vectors() {
    let vectors = Vectors::load();
    let publisher =
        ed25519_dalek::VerifyingKey::from_bytes(&vectors.array("publisher_key")).unwrap();
    let frame_0_hash = vectors.bytes("frame_0_hash");
    let checkpoint = vectors.bytes("checkpoint_frame_1");
    let end = vectors.bytes("signed_end_frame_2");
    let cases = [
        (
            "checkpoint",
            1,
            &checkpoint,
            0,
            vec![frame_0_hash.as_slice()],
            0,
        ),
        ("signed_end", 2, &end, 2, vec![], 1),
    ];

    for (name, seq, frame, first_seq, listed, closes) in cases {
        let statement = statement_of(&vectors, frame, first_seq, closes, &listed);
        assert_eq!(statement, vectors.bytes(&format!("{name}_statement_{seq}")));

        let signature = vectors.array::<64>(&format!("{name}_signature_{seq}"));
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        publisher.verify_strict(&statement, &signature).unwrap();

        let stream_key = vectors.bytes("stream_key");
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&stream_key));
        let payload = Payload {
            msg: &frame[HEADER_LEN..],
            aad: &frame[..HEADER_LEN],
        };
        let padded = cipher
            .decrypt(Nonce::from_slice(&nonce_for_seq(seq)), payload)
            .unwrap();
        let length = u32::from_be_bytes(padded[..4].try_into().unwrap()) as usize;
        let content = std::str::from_utf8(&padded[4..4 + length]).unwrap();
        assert_eq!(content, vectors.text(&format!("{name}_content_{seq}")));
        let json: serde_json::Value = serde_json::from_str(content).unwrap();
        let frames = URL_SAFE_NO_PAD.encode(listed.concat());
        assert_eq!(json["frames"], frames.as_str(), "{name}");
        let encoded = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        assert_eq!(json["signature"], encoded.as_str(), "{name}");
    }
}

/// Describes a verdict in the notation of the authorship vectors.
fn describe_verdict(verdict: &Verdict) -> String {
    match verdict {
        Verdict::NotCheckable => "not_checkable".into(),
        Verdict::Complete { .. } => "complete".into(),
        Verdict::Incomplete(problems) => problems
            .iter()
            .map(|problem| match problem {
                Problem::Unverified { first, last } => format!("unverified:{first}-{last}"),
                Problem::Missing {
                    first,
                    last,
                    finals,
                } => format!("missing:{first}-{last}/{finals}"),
                Problem::BadSignature { seq } => format!("bad_signature:{seq}"),
                Problem::EndNotSeen { last_opened } => format!("end_not_seen:{last_opened}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[test]
fn authorship_vectors_match_verifier() {
    let vectors = Vectors::load();
    let frames = [
        vectors.bytes("frame_0"),
        vectors.bytes("checkpoint_frame_1"),
        vectors.bytes("signed_end_frame_2"),
    ];
    let publisher = PublisherKey::from_bytes(&vectors.array("publisher_key")).unwrap();
    let cases = vectors
        .0
        .iter()
        .filter(|(name, _)| name.starts_with("authorship_"));
    let mut checked = 0;
    for (name, expected) in cases {
        let mut opener = StreamOpener::new(vectors.session_key(), vectors.session_id());
        let mut verifier = AuthorshipVerifier::new(Some(publisher));
        for seq in name.trim_start_matches("authorship_").split('_') {
            let frame = &frames[seq.parse::<usize>().unwrap()];
            let opened = opener.open(frame).unwrap();
            verifier.observe(frame, &opened);
        }
        let verdict = verifier.verdict(&vectors.stream_id()).unwrap();
        assert_eq!(describe_verdict(&verdict), *expected, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn publisher_links_match_vectors() {
    let vectors = Vectors::load();
    let publisher = PublisherKey::from_bytes(&vectors.array("publisher_key")).unwrap();
    let rotated = SessionKey::from_bytes(vectors.array("rotated_session_key"));
    assert_eq!(
        rotated.to_base64url(),
        vectors.text("rotated_session_key_base64url")
    );
    let cases = [
        ("invite_link_publisher", vectors.session_key(), 0),
        ("invite_link_epoch_1", rotated, 1),
    ];

    for (name, key, key_epoch) in cases {
        let link = InviteLink {
            relay: Url::parse(vectors.text("relay_url")).unwrap(),
            token: vectors.text("invite_token").to_string(),
            key,
        };
        let invite = FollowInvite {
            link,
            publisher: Some(publisher),
            key_epoch,
        };
        assert_eq!(invite.to_url(), vectors.text(name));

        let parsed = FollowInvite::parse(vectors.text(name)).unwrap();
        assert_eq!(parsed.publisher, Some(publisher), "{name}");
        assert_eq!(parsed.key_epoch, key_epoch, "{name}");
        let old_parser = InviteLink::parse(vectors.text(name)).unwrap();
        assert_eq!(old_parser.token, vectors.text("invite_token"), "{name}");
        assert_eq!(
            old_parser.key.expose_bytes(),
            invite.link.key.expose_bytes(),
            "{name}"
        );
    }

    let plain = FollowInvite::parse(vectors.text("invite_link")).unwrap();
    assert_eq!(plain.publisher, None);
    assert_eq!(plain.key_epoch, 0);
}

fn second_device_key(vectors: &Vectors) -> PublisherKey {
    let secret = vectors.array::<32>("second_device_secret");
    let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
    PublisherKey::from_bytes(&public.to_bytes()).unwrap()
}

/// Runs the device pairing of the vectors through the crate's state machines.
fn device_paired_vectors(
    vectors: &Vectors,
) -> (
    PairedJoiner,
    PairedClinician,
    PairingCode,
    [u8; 32],
    [u8; 32],
) {
    let device_key = second_device_key(vectors);
    let joiner_keys = PairingKeyPair::from_secret_bytes(&vectors.array("joiner_secret"));
    let clinician_keys = PairingKeyPair::from_secret_bytes(&vectors.array("clinician_secret"));
    let (joiner, commitment) = JoinerPairing::with_key_pair_for_device(joiner_keys, device_key);
    assert_eq!(
        commitment.0.to_vec(),
        vectors.bytes("device_pairing_commitment")
    );
    let (clinician, clinician_public) =
        ClinicianPairing::respond_to_device_with_key_pair(commitment, device_key, clinician_keys);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
    assert_eq!(joiner.code(), clinician.code());
    let code = joiner.code();
    (
        clinician.confirm(),
        joiner.confirm(),
        code,
        joiner_public,
        clinician_public,
    )
}

#[test]
fn device_pairing_matches_vectors() {
    let vectors = Vectors::load();
    let device_key = second_device_key(&vectors);
    assert_eq!(
        device_key.to_bytes().to_vec(),
        vectors.bytes("second_device_key")
    );
    assert_eq!(
        device_key.to_base64url(),
        vectors.text("second_device_key_base64url")
    );
    let joiner_public = vectors.array::<32>("joiner_public");
    let clinician_public = vectors.array::<32>("clinician_public");

    let mut commit = Sha256::new();
    commit.update(vectors.text("device_commit_label").as_bytes());
    commit.update(joiner_public);
    commit.update(device_key.to_bytes());
    let commitment = commit.finalize().to_vec();
    assert_eq!(commitment, vectors.bytes("device_pairing_commitment"));
    assert_eq!(
        Commitment::to_device_keys(&joiner_public, &device_key.to_bytes())
            .0
            .to_vec(),
        commitment
    );

    let ikm = [joiner_public, clinician_public, device_key.to_bytes()].concat();
    let label = vectors.text("device_code_label").as_bytes();
    let code = hkdf(None, &ikm, label, 4);
    assert_eq!(code, vectors.bytes("device_pairing_code"));
    let (_, _, derived, _, _) = device_paired_vectors(&vectors);
    assert_eq!(derived.0.to_vec(), code);
    assert_eq!(
        derived.words().join(" "),
        vectors.text("device_pairing_code_words")
    );
    assert_eq!(derived.digits(), vectors.text("device_pairing_code_digits"));
}

#[test]
fn endorsement_matches_vectors() {
    let vectors = Vectors::load();
    let device_key = second_device_key(&vectors);
    let mut statement = vectors.text("endorsement_label").as_bytes().to_vec();
    statement.extend_from_slice(&vectors.bytes("session_id"));
    statement.extend_from_slice(&0u32.to_be_bytes());
    statement.extend_from_slice(&device_key.to_bytes());
    assert_eq!(statement, vectors.bytes("endorsement_statement"));
    assert_eq!(
        Endorsement::statement(&vectors.session_id(), 0, &device_key),
        statement
    );

    let endorsement = Endorsement::sign_with_secret(
        &vectors.array("publisher_secret"),
        &vectors.session_id(),
        0,
        device_key,
    );
    assert_eq!(
        endorsement.signature.to_vec(),
        vectors.bytes("endorsement_signature")
    );
    let publisher =
        ed25519_dalek::VerifyingKey::from_bytes(&vectors.array("publisher_key")).unwrap();
    let signature = ed25519_dalek::Signature::from_bytes(&endorsement.signature);
    publisher.verify_strict(&statement, &signature).unwrap();
}

#[test]
fn device_grant_matches_vectors() {
    let vectors = Vectors::load();
    let (to_device, at_device, _, joiner_public, clinician_public) =
        device_paired_vectors(&vectors);
    let salt = [joiner_public, clinician_public].concat();
    let mut info = vectors.text("device_wrap_label").as_bytes().to_vec();
    info.extend_from_slice(&0u32.to_be_bytes());
    let wrap_key = hkdf(
        Some(&salt),
        &vectors.bytes("pairing_shared_secret"),
        &info,
        32,
    );
    assert_eq!(wrap_key, vectors.bytes("device_wrap_key_0"));

    let wrapped = vectors.bytes("wrapped_device_grant_0");
    let nonce = vectors.array::<12>("device_wrap_nonce_0");
    assert_eq!(wrapped[..4], 0u32.to_be_bytes());
    assert_eq!(wrapped[4..16], nonce);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&wrap_key));
    let payload = Payload {
        msg: &wrapped[16..],
        aad: &wrapped[..4],
    };
    let plaintext = cipher.decrypt(Nonce::from_slice(&nonce), payload).unwrap();
    let token = vectors.text("invite_token");
    let expected = [
        vectors.bytes("session_id"),
        vectors.bytes("session_key"),
        vectors.bytes("publisher_key"),
        0u32.to_be_bytes().to_vec(),
        vectors.bytes("second_device_key"),
        vectors.bytes("endorsement_signature"),
        vectors
            .number("device_grant_history_epoch")
            .to_be_bytes()
            .to_vec(),
        vec![u8::try_from(token.len()).unwrap()],
        token.as_bytes().to_vec(),
        vec![1],
        vectors.bytes("pairing_shared_secret"),
        vectors.bytes("joiner_public"),
        vectors.bytes("clinician_public"),
    ]
    .concat();
    assert_eq!(plaintext, expected);
    assert_eq!(plaintext, vectors.bytes("device_grant_payload"));

    let endorsement = Endorsement::sign_with_secret(
        &vectors.array("publisher_secret"),
        &vectors.session_id(),
        0,
        second_device_key(&vectors),
    );
    let grant = DeviceGrant {
        key_epoch: 0,
        session_id: vectors.session_id(),
        session_key: vectors.session_key(),
        publisher: endorsement.endorser,
        endorsement,
        history_epoch: vectors.number("device_grant_history_epoch"),
        invite_token: zeroize::Zeroizing::new(token.to_owned()),
        paired_devices: vec![patient_pairing(&vectors)],
    };

    assert_eq!(
        to_device
            .wrap_device_grant_with_nonce(&grant, nonce)
            .unwrap(),
        wrapped
    );
    let unwrapped = at_device.unwrap_device_grant(&wrapped).unwrap();
    assert_eq!(unwrapped.session_id, vectors.session_id());
    assert_eq!(
        unwrapped.session_key.expose_bytes().to_vec(),
        vectors.bytes("session_key")
    );
    assert_eq!(unwrapped.endorsement, endorsement);
    assert_eq!(unwrapped.history_epoch, 7);
    assert_eq!(unwrapped.invite_token.as_str(), token);
    let carried: Vec<Vec<u8>> = unwrapped
        .paired_devices
        .iter()
        .map(|pairing| pairing.to_secret_bytes().to_vec())
        .collect();
    assert_eq!(
        carried,
        [patient_pairing(&vectors).to_secret_bytes().to_vec()]
    );
}

/// Returns the clinician device's side of the patient pairing of section 10.7.
fn patient_pairing(vectors: &Vectors) -> PairedJoiner {
    let state = [
        vectors.bytes("pairing_shared_secret"),
        vectors.bytes("joiner_public"),
        vectors.bytes("clinician_public"),
    ]
    .concat();
    PairedJoiner::from_secret_bytes(&state.try_into().unwrap()).unwrap()
}

#[test]
fn endorsed_stream_matches_vectors() {
    let vectors = Vectors::load();
    let device_key = second_device_key(&vectors);
    let publisher = PublisherKey::from_bytes(&vectors.array("publisher_key")).unwrap();
    let endorsement = Endorsement::sign_with_secret(
        &vectors.array("publisher_secret"),
        &vectors.session_id(),
        0,
        device_key,
    );
    let mut stream = AuthoredStream::with_stream_id(
        &vectors.session_key(),
        vectors.session_id(),
        vectors.stream_id(),
        0,
        &vectors.array("second_device_secret"),
    )
    .with_endorsement(endorsement)
    .unwrap();
    let segment = TranscriptSegment::from_plaintext(vectors.text("segment_0").as_bytes()).unwrap();
    let mut frames = stream.seal_segment(&segment).unwrap();
    frames.push(stream.seal_end(1).unwrap());
    assert_eq!(frames[0], vectors.bytes("frame_0"));
    assert_eq!(frames[1], vectors.bytes("endorsed_end_frame_1"));

    let mut opener = StreamOpener::new(vectors.session_key(), vectors.session_id());
    let mut verifier = AuthorshipVerifier::new(Some(publisher));
    for frame in &frames {
        let opened = opener.open(frame).unwrap();
        if opened.header.seq == 1 {
            let content = std::str::from_utf8(&opened.content).unwrap();
            assert_eq!(content, vectors.text("endorsed_end_content_1"));
        }
        verifier.observe(frame, &opened);
    }
    let verdict = verifier.verdict(&vectors.stream_id()).unwrap();
    assert_eq!(
        describe_verdict(&verdict),
        vectors.text("endorsed_verdict_0_1")
    );
    assert_eq!(
        verdict,
        Verdict::Complete {
            publisher: device_key,
            endorsed_by: Some(publisher),
        }
    );
}
