//! The sealcast wire format, version 1, with no I/O.
//!
//! This crate defines everything two sealcast endpoints must agree on: the
//! binary frame header, how a transcript segment is padded and sealed with
//! AES-256-GCM, how keys are derived with HKDF-SHA256, the invite link format
//! and the JSON messages of the relay's HTTP and WebSocket API. It performs no
//! network or file access and reads no clock, so the relay, the client, the
//! browser page and fuzzers share one definition. `docs/protocol.md` in the
//! repository is the normative description, with test vectors.
//!
//! Entry points: [`SessionKey`] for the key a clinician device makes,
//! [`StreamSealer`] and [`StreamOpener`] to seal and open frames, and
//! [`InviteLink`] to build and parse the patient link. Devices pair with
//! [`pairing::JoinerPairing`] and [`pairing::ClinicianPairing`], publishers
//! sign streams with [`authorship::AuthoredStream`], followers check them with
//! [`authorship::AuthorshipVerifier`], and [`rotation::EpochOpener`] opens
//! frames across key rotations.
//!
//! | module | job |
//! | --- | --- |
//! | [`header`] | the 88-byte frame header and its encoding |
//! | [`keys`] | session, stream and invite keys, fingerprint |
//! | [`frame`] | sealing and opening frames, nonces, frame hashes |
//! | [`padding`] | plaintext size buckets |
//! | [`segment`] | the transcript segment carried in a frame |
//! | [`invite`] | the invite link and its tolerant parser |
//! | [`ids`] | session and stream identifiers |
//! | [`api`] | JSON messages and close codes of the relay API |
//! | [`pairing`] | X25519 pairing, pairing codes and wrapped session keys |
//! | [`pairing_api`] | JSON bodies of the relay's pairing mailbox |
//! | [`paired_keys`] | device ids and the delivery of later wrapped keys to paired devices |
//! | [`authorship`] | signed checkpoints and the authorship verifier |
//! | [`rotation`] | key epochs and the opener's grace window |

pub mod api;
pub mod auth;
pub mod authorship;
pub mod dpop;
pub mod error;
pub mod frame;
pub mod header;
pub mod ids;
pub mod invite;
pub mod keys;
pub mod padding;
pub mod paired_keys;
pub mod pairing;
pub mod pairing_api;
pub mod redact;
pub mod rotation;
pub mod segment;
mod words;

pub use error::{InviteError, ProtocolError};
pub use frame::{frame_hash, nonce_for_seq, OpenedFrame, StreamOpener, StreamSealer};
pub use header::{FrameHeader, FrameKind, HEADER_LEN, PROTOCOL_VERSION};
pub use ids::{SessionId, StreamId};
pub use invite::{FollowInvite, InviteLink};
pub use keys::{Fingerprint, InviteAuthKey, SessionKey, StreamKey};
pub use segment::{EndOfSession, TranscriptSegment};

/// Length of the AES-GCM authentication tag appended to every frame.
pub const TAG_LEN: usize = 16;

/// Largest frame this version allows: header, the largest padding bucket and the tag.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + padding::MAX_PADDED_LEN + TAG_LEN;
