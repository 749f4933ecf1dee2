//! Errors of the wire format.

use thiserror::Error;

/// An error decoding, sealing or opening a frame.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The message is shorter than a frame header.
    #[error("frame truncated: {len} bytes is shorter than the {min}-byte minimum")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes required.
        min: usize,
    },
    /// The version byte names a protocol version this code does not speak.
    #[error("unsupported protocol version {0}: this build speaks version 1")]
    UnsupportedVersion(u8),
    /// The kind byte is not a known frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The padding bucket is outside the defined range.
    #[error("invalid padding bucket {0}: the maximum is 8")]
    InvalidBucket(u8),
    /// Reserved header bits are set.
    #[error("reserved flags {0:#04x} are set: they must be zero in version 1")]
    ReservedFlags(u8),
    /// The frame length does not match the length implied by its header.
    #[error("frame length {actual} does not match the {expected} bytes its header declares")]
    LengthMismatch {
        /// Length the header implies.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// The plaintext does not fit the largest padding bucket.
    #[error("plaintext of {len} bytes exceeds the {max}-byte maximum")]
    PlaintextTooLarge {
        /// Serialized plaintext length.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// The frame failed authentication. Tampering, truncation, a wrong key or
    /// a wrong nonce all end here on purpose, so an attacker learns nothing.
    #[error("frame failed to decrypt: it was altered or sealed under another key")]
    Decrypt,
    /// The frame belongs to another session.
    #[error("frame belongs to session {found}, not {expected}")]
    WrongSession {
        /// Session this opener serves.
        expected: String,
        /// Session named in the header.
        found: String,
    },
    /// The frame's sequence number was already opened on this stream.
    #[error("frame {seq} of stream {stream} was already received (replay)")]
    Replay {
        /// Stream id.
        stream: String,
        /// Sequence number.
        seq: u64,
    },
    /// The frame's sequence number is below one already opened.
    #[error("frame {seq} of stream {stream} arrived after frame {latest} (reordered)")]
    Reordered {
        /// Stream id.
        stream: String,
        /// Sequence number.
        seq: u64,
        /// Highest sequence number opened so far.
        latest: u64,
    },
    /// The decrypted plaintext is not a valid padded segment.
    #[error("decrypted plaintext is malformed: {0}")]
    MalformedPlaintext(String),
    /// The stream's sequence numbers are exhausted.
    #[error("stream sequence numbers exhausted: start a new stream")]
    SequenceExhausted,
}

/// An error parsing an invite link.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InviteError {
    /// The text is not a URL.
    #[error("invite link is not a valid URL: {0}: copy the whole link")]
    InvalidUrl(String),
    /// The URL uses a scheme other than https or http.
    #[error("invite link must start with https:// (found {0}://)")]
    InvalidScheme(String),
    /// The URL path is not `/join`.
    #[error("invite link path must be /join (found {0})")]
    InvalidPath(String),
    /// The `token` query parameter is missing or empty.
    #[error("invite link has no token= part: copy the whole link")]
    MissingToken,
    /// The token is not base64url of the expected length.
    #[error("invite link token is malformed: ask the clinic for a new link")]
    InvalidToken,
    /// The `#secret=` fragment is missing.
    #[error("invite link has no #secret part: copy the whole link, including everything after #")]
    MissingSecret,
    /// The secret is not base64url.
    #[error("invite link secret is not valid base64url: ask the clinic for a new link")]
    InvalidSecretEncoding,
    /// The secret decodes to the wrong number of bytes.
    #[error(
        "invite link secret is {0} bytes, expected 32: the link is truncated, ask for a new one"
    )]
    InvalidSecretLength(usize),
}
