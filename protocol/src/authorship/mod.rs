//! Stream authorship: the publishing device signs what it sealed.
//!
//! Every holder of the session key can seal frames, so the AES-GCM tag alone
//! does not say which device wrote a stream. The publishing device therefore
//! seals, every [`CHECKPOINT_INTERVAL`] frames, a checkpoint frame (kind 4)
//! that carries an Ed25519 signature (RFC 8032) of its identity key over the
//! frame hashes of every frame since the previous checkpoint. The end frame
//! (kind 3) carries the same signature, and a checkpoint can close a stream
//! that ends without ending the session. A follower learns the publisher key
//! from the invite link or the pairing payload, never from the relay alone.
//!
//! A signature lists the hash of each covered frame, so frames the relay
//! dropped do not stop the others from being checked. [`AuthoredStream`]
//! seals, and [`AuthorshipVerifier`] checks the frames a follower opened.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::dpop::DeviceKey;
use crate::error::ProtocolError;
use crate::frame::OpenedFrame;
use crate::header::{FrameHeader, FrameKind};

mod endorsement;
mod sealer;
mod verifier;

pub use endorsement::{Endorsement, EndorsementContent, ENDORSEMENT_LEN};
pub use sealer::AuthoredStream;
pub use verifier::{AuthorshipVerifier, Observed, Problem, Verdict};

const STATEMENT_LABEL: &[u8] = b"sealcast v1 checkpoint";

/// Frames sealed between two checkpoints. A checkpoint then lists at most 16
/// hashes (a 1,128-byte frame), and while the stream is live at most 16 of
/// the frames a follower opened wait for a signature.
pub const CHECKPOINT_INTERVAL: usize = 16;

/// A problem sealing a signed stream or checking a signature.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthorshipError {
    /// Sealing failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The stream was closed by a signed end, so it takes no more frames.
    #[error("stream is closed: start a new stream to publish more")]
    StreamClosed,
    /// A publisher key is not a valid Ed25519 public key.
    #[error("publisher key is not a valid Ed25519 public key")]
    InvalidPublisherKey,
    /// The signed content of a checkpoint or end frame is malformed.
    #[error("checkpoint content is malformed: {0}")]
    MalformedCheckpoint(&'static str),
    /// The signature does not verify under the publisher key, or under the
    /// endorsed key the frame names.
    #[error("checkpoint signature does not verify under the publisher key")]
    BadSignature,
    /// The endorsement a frame carries is malformed or not signed by the publisher key.
    #[error("device endorsement is invalid: {0}")]
    InvalidEndorsement(&'static str),
    /// A signature of another key than the earlier ones of the same stream.
    #[error("checkpoint is signed by another device than the earlier checkpoints of its stream")]
    SignerChanged,
}

/// The publishing device's Ed25519 identity public key. It keeps the 32
/// checked key bytes, not the decompressed point, so that verdicts and
/// events that name two keys stay small.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublisherKey([u8; 32]);

impl PublisherKey {
    /// Parses 32 key bytes, rejecting invalid and low-order (weak) keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, AuthorshipError> {
        let key =
            VerifyingKey::from_bytes(bytes).map_err(|_| AuthorshipError::InvalidPublisherKey)?;
        if key.is_weak() {
            return Err(AuthorshipError::InvalidPublisherKey);
        }
        Ok(PublisherKey::of_verifying_key(&key))
    }

    /// Returns the public key of a device identity key.
    pub fn of_device(device: &DeviceKey) -> Self {
        Self::of_verifying_key(&SigningKey::from_bytes(&device.secret_bytes()).verifying_key())
    }

    fn of_verifying_key(key: &VerifyingKey) -> Self {
        PublisherKey(key.to_bytes())
    }

    /// Returns the 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Encodes the key as unpadded base64url, its form in links.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Checks a signature over a statement, rejecting non-canonical signatures.
    fn verify(&self, statement: &[u8], signature: &[u8; 64]) -> Result<(), AuthorshipError> {
        // The bytes were checked when the key was made, so they decompress.
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| AuthorshipError::BadSignature)?;
        let signature = Signature::from_bytes(signature);
        key.verify_strict(statement, &signature)
            .map_err(|_| AuthorshipError::BadSignature)
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublisherKey({})", self.to_base64url())
    }
}

/// The fields a checkpoint signature covers, taken from the header of the
/// frame that carries it and from its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Header of the signed frame, whose final count and prev hash are signed.
    pub header: FrameHeader,
    /// Sequence number of the first frame the signature lists.
    pub first_seq: u64,
    /// Whether the signature closes the stream.
    pub closes_stream: bool,
    /// Frame hashes of the frames `first_seq` to `header.seq - 1`, in order.
    pub frame_hashes: Vec<[u8; 32]>,
}

impl Statement {
    /// Encodes the bytes that are signed:
    /// `label || session id || stream id || u32 key epoch || u64 seq || u8 kind
    /// || u64 final count || prev hash || u64 first seq || u8 closes
    /// || SHA256(frame hashes)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = &self.header;
        let mut digest = Sha256::new();
        for hash in &self.frame_hashes {
            digest.update(hash);
        }
        let mut out = Vec::with_capacity(STATEMENT_LABEL.len() + 150);
        out.extend_from_slice(STATEMENT_LABEL);
        out.extend_from_slice(header.session_id.as_bytes());
        out.extend_from_slice(header.stream_id.as_bytes());
        out.extend_from_slice(&header.key_epoch.to_be_bytes());
        out.extend_from_slice(&header.seq.to_be_bytes());
        out.push(header.kind.to_byte());
        out.extend_from_slice(&header.final_count.to_be_bytes());
        out.extend_from_slice(&header.prev_hash);
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.push(u8::from(self.closes_stream));
        out.extend_from_slice(&digest.finalize());
        out
    }
}

/// Content of a checkpoint frame, and the signature fields an end frame adds
/// next to `final_segments`. Byte strings are unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedContent {
    /// Number of final segment frames sealed before this frame. Present in
    /// end frames only, and not signed: the signed final count replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_segments: Option<u64>,
    /// Sequence number of the first listed frame.
    pub first_seq: u64,
    /// Concatenated 32-byte frame hashes of frames `first_seq` to `seq - 1`.
    pub frames: String,
    /// Whether this checkpoint closes the stream. Always true for end frames.
    #[serde(default)]
    pub stream_end: bool,
    /// Ed25519 signature over the statement, 64 bytes.
    pub signature: String,
    /// Present when a device other than the one whose key followers hold
    /// signed the frame: that device's key, endorsed by the followers' key.
    /// Not signed by the statement, because the endorsement carries its own
    /// signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<EndorsementContent>,
}

/// A checkpoint or end frame's signed fields, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSignature {
    /// The signed statement.
    pub statement: Statement,
    /// The Ed25519 signature over the statement.
    pub signature: [u8; 64],
    /// The endorsement of the signing device, when it is not the publisher.
    pub endorsement: Option<Endorsement>,
}

impl SignedContent {
    /// Serializes to the plaintext form.
    pub fn to_plaintext(&self) -> Vec<u8> {
        // Serializing a struct of strings, integers and booleans cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the content of an opened checkpoint or end frame into the
    /// statement, signature and endorsement.
    /// An endorsement is decoded as signed by `publisher`, the follower's key.
    pub fn parse(
        opened: &OpenedFrame,
        publisher: PublisherKey,
    ) -> Result<ParsedSignature, AuthorshipError> {
        let content: SignedContent = serde_json::from_slice(&opened.content)
            .map_err(|_| AuthorshipError::MalformedCheckpoint("not a signed content object"))?;
        let frames = URL_SAFE_NO_PAD
            .decode(&content.frames)
            .map_err(|_| AuthorshipError::MalformedCheckpoint("frames is not base64url"))?;
        let listed = opened.header.seq.checked_sub(content.first_seq);
        let expected_len = listed.and_then(|count| usize::try_from(count).ok()?.checked_mul(32));
        if expected_len != Some(frames.len()) {
            return Err(AuthorshipError::MalformedCheckpoint(
                "frames does not list one hash per frame since first_seq",
            ));
        }
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(&content.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(AuthorshipError::MalformedCheckpoint(
                "signature is not 64 bytes of base64url",
            ))?;
        let endorsement = content
            .endorsement
            .as_ref()
            .map(|endorsement| endorsement.decode(publisher))
            .transpose()?;
        let is_end = opened.header.kind == FrameKind::EndOfSession;
        let statement = Statement {
            header: opened.header.clone(),
            first_seq: content.first_seq,
            closes_stream: content.stream_end || is_end,
            frame_hashes: frames
                .chunks_exact(32)
                .map(|chunk| {
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(chunk);
                    hash
                })
                .collect(),
        };
        Ok(ParsedSignature {
            statement,
            signature,
            endorsement,
        })
    }
}
