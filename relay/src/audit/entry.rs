//! Audit entries, checkpoints and retention anchors, and the canonical byte
//! encodings that are hashed and signed.
//!
//! Every encoding is a sequence of fields without separators:
//!
//! - `str(s)`: the length of the UTF-8 bytes of `s` as a 4-byte big-endian
//!   unsigned integer, then the bytes;
//! - `opt(s)`: the byte `0x00` when absent, else `0x01` and `str(s)`;
//! - `u64(n)` and `i64(n)`: 8 bytes, big-endian, two's complement for `i64`;
//! - `hash`: the 32 bytes of a SHA-256 digest.
//!
//! An entry's hash is SHA-256 over [`Entry::canonical_bytes`], which encodes,
//! in this order: `str("sealcast-audit-entry-v1")`, `str(stream)`, `u64(seq)`,
//! `i64(created_at)`, `str(actor)`, `str(action)`, `opt(source)`,
//! `opt(session_id)`, `opt(subject)`, `opt(digest)`, the number of details
//! as a 4-byte big-endian integer, then `str(key) str(value)` for each
//! detail in ascending byte order of the keys, and last the previous
//! entry's hash. The first entry of a stream has sequence number 1 and a
//! previous hash of 32 zero bytes.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of an entry hash.
pub(crate) const HASH_LEN: usize = 32;

/// The previous hash of a stream's first entry.
pub(crate) const GENESIS_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

const ENTRY_TAG: &str = "sealcast-audit-entry-v1";
const CHECKPOINT_TAG: &str = "sealcast-audit-checkpoint-v1";
const ANCHOR_TAG: &str = "sealcast-audit-anchor-v1";

/// One of the two independent hash chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Events of devices and patients: sign-in, sessions, invites, followers.
    Application,
    /// Events of administrators and the relay's operator: users, devices,
    /// settings, exports and retention runs.
    Admin,
}

impl Stream {
    /// Both streams, in the order they are verified and exported.
    pub const ALL: [Stream; 2] = [Stream::Application, Stream::Admin];

    /// Returns the name stored in the database and in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Application => "application",
            Stream::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "application" => Ok(Stream::Application),
            "admin" => Ok(Stream::Admin),
            other => Err(format!(
                "unknown audit stream {other:?}: use application or admin"
            )),
        }
    }
}

/// A stored audit entry: the event, its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The chain the entry belongs to.
    pub stream: Stream,
    /// Position in the stream, from 1, without gaps.
    pub seq: u64,
    /// Unix milliseconds when the relay recorded the event.
    pub created_at: i64,
    /// Actor: a user or device id, `relay` or `admin-cli`.
    pub actor: String,
    /// Action name, such as `session.started`.
    pub action: String,
    /// Network address the request came from, when there was one.
    pub source: Option<String>,
    /// The session concerned, when there is one.
    pub session_id: Option<String>,
    /// The id of the user, device or organization acted on.
    pub subject: Option<String>,
    /// Hex SHA-256 digest that refers to a value without revealing it.
    pub digest: Option<String>,
    /// Further ids, counts and settings. Never content, emails, tokens or keys.
    pub details: BTreeMap<String, String>,
    /// Hash of the previous entry of the stream.
    #[serde(with = "hex_hash")]
    pub prev_hash: [u8; HASH_LEN],
    /// SHA-256 of this entry's canonical encoding.
    #[serde(with = "hex_hash")]
    pub hash: [u8; HASH_LEN],
}

impl Entry {
    /// Encodes every field but `hash` as the module documentation describes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_str(&mut out, ENTRY_TAG);
        put_str(&mut out, self.stream.as_str());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        put_str(&mut out, &self.actor);
        put_str(&mut out, &self.action);
        for field in [&self.source, &self.session_id, &self.subject, &self.digest] {
            put_opt(&mut out, field.as_deref());
        }
        put_len(&mut out, self.details.len());
        // BTreeMap iterates in ascending byte order of its String keys.
        for (key, value) in &self.details {
            put_str(&mut out, key);
            put_str(&mut out, value);
        }
        out.extend_from_slice(&self.prev_hash);
        out
    }

    /// Computes the hash this entry must carry.
    pub fn compute_hash(&self) -> [u8; HASH_LEN] {
        Sha256::digest(self.canonical_bytes()).into()
    }
}

/// A signature by the relay's audit key over a stream's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream signed.
    pub stream: Stream,
    /// Sequence number of the entry signed.
    pub seq: u64,
    /// Hash of that entry.
    #[serde(with = "hex_hash")]
    pub hash: [u8; HASH_LEN],
    /// Unix milliseconds of signing.
    pub created_at: i64,
    /// Ed25519 public key that signed.
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
    /// Ed25519 signature over [`Checkpoint::signed_bytes`].
    #[serde(with = "hex_signature")]
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Encodes `str("sealcast-audit-checkpoint-v1") str(stream) u64(seq)
    /// hash i64(created_at)`, the message the audit key signs.
    pub fn signed_bytes(
        stream: Stream,
        seq: u64,
        hash: &[u8; HASH_LEN],
        created_at: i64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        put_str(&mut out, CHECKPOINT_TAG);
        put_str(&mut out, stream.as_str());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(hash);
        out.extend_from_slice(&created_at.to_be_bytes());
        out
    }

    /// Checks the signature with `key`, which must also be the key the
    /// checkpoint names.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let message = Self::signed_bytes(self.stream, self.seq, &self.hash, self.created_at);
        self.public_key == key.to_bytes()
            && key
                .verify(&message, &Signature::from_bytes(&self.signature))
                .is_ok()
    }
}

/// A signed record that a retention run removed a stream's entries up to
/// and including `seq`. The chain continues from `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The stream shortened.
    pub stream: Stream,
    /// Sequence number of the last removed entry.
    pub seq: u64,
    /// Hash of the last removed entry.
    #[serde(with = "hex_hash")]
    pub hash: [u8; HASH_LEN],
    /// Entries this run removed.
    pub removed: u64,
    /// Unix milliseconds of the removal.
    pub created_at: i64,
    /// Ed25519 public key that signed.
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
    /// Ed25519 signature over [`Anchor::signed_bytes`].
    #[serde(with = "hex_signature")]
    pub signature: [u8; 64],
}

impl Anchor {
    /// Encodes `str("sealcast-audit-anchor-v1") str(stream) u64(seq) hash
    /// u64(removed) i64(created_at)`, the message the audit key signs.
    pub fn signed_bytes(
        stream: Stream,
        seq: u64,
        hash: &[u8; HASH_LEN],
        removed: u64,
        created_at: i64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(104);
        put_str(&mut out, ANCHOR_TAG);
        put_str(&mut out, stream.as_str());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(hash);
        out.extend_from_slice(&removed.to_be_bytes());
        out.extend_from_slice(&created_at.to_be_bytes());
        out
    }

    /// Checks the signature with `key`, which must also be the key the
    /// anchor names.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let message = Self::signed_bytes(
            self.stream,
            self.seq,
            &self.hash,
            self.removed,
            self.created_at,
        );
        self.public_key == key.to_bytes()
            && key
                .verify(&message, &Signature::from_bytes(&self.signature))
                .is_ok()
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Fields are far below 4 GiB: the relay builds them from ids and counts.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

/// Serde of fixed-size byte arrays as lower-case hex.
macro_rules! hex_array {
    ($name:ident, $len:expr) => {
        mod $name {
            use serde::{Deserialize, Deserializer, Serializer};

            pub(super) fn serialize<S: Serializer>(
                bytes: &[u8; $len],
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&hex::encode(bytes))
            }

            pub(super) fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<[u8; $len], D::Error> {
                let text = String::deserialize(deserializer)?;
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(&text, &mut bytes).map_err(|_| {
                    serde::de::Error::custom(concat!(
                        "expected ",
                        stringify!($len),
                        " bytes as hex"
                    ))
                })?;
                Ok(bytes)
            }
        }
    };
}

hex_array!(hex_hash, 32);
hex_array!(hex_key, 32);
hex_array!(hex_signature, 64);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut details = BTreeMap::new();
        details.insert("max_browsers".to_owned(), "1".to_owned());
        let mut entry = Entry {
            stream: Stream::Application,
            seq: 1,
            created_at: 1_700_000_000_000,
            actor: "dev_abc".into(),
            action: "session.started".into(),
            source: Some("127.0.0.1".into()),
            session_id: Some("s1".into()),
            subject: None,
            digest: None,
            details,
            prev_hash: GENESIS_HASH,
            hash: [0; 32],
        };
        entry.hash = entry.compute_hash();
        entry
    }

    #[test]
    fn canonical_encoding_is_pinned() {
        let bytes = entry().canonical_bytes();
        let mut expected = Vec::new();
        expected.extend_from_slice(&23u32.to_be_bytes());
        expected.extend_from_slice(b"sealcast-audit-entry-v1");
        expected.extend_from_slice(&11u32.to_be_bytes());
        expected.extend_from_slice(b"application");
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        expected.extend_from_slice(&7u32.to_be_bytes());
        expected.extend_from_slice(b"dev_abc");
        expected.extend_from_slice(&15u32.to_be_bytes());
        expected.extend_from_slice(b"session.started");
        expected.push(1);
        expected.extend_from_slice(&9u32.to_be_bytes());
        expected.extend_from_slice(b"127.0.0.1");
        expected.push(1);
        expected.extend_from_slice(&2u32.to_be_bytes());
        expected.extend_from_slice(b"s1");
        expected.push(0);
        expected.push(0);
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.extend_from_slice(&12u32.to_be_bytes());
        expected.extend_from_slice(b"max_browsers");
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.extend_from_slice(b"1");
        expected.extend_from_slice(&[0; 32]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn absent_and_empty_fields_differ() {
        let absent = entry();
        let mut empty = entry();
        empty.subject = Some(String::new());
        assert_ne!(absent.compute_hash(), empty.compute_hash());
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut first = entry();
        first.actor = "ab".into();
        first.action = "c".into();
        let mut second = entry();
        second.actor = "a".into();
        second.action = "bc".into();
        assert_ne!(first.compute_hash(), second.compute_hash());
    }

    #[test]
    fn entry_round_trips_through_json() {
        let entry = entry();
        let text = serde_json::to_string(&entry).unwrap();
        let back: Entry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.compute_hash(), entry.hash);
    }
}
