//! Invite challenges: random values the relay hands out for one redemption.
//!
//! A challenge is bound to the invite token it was issued for, is used at
//! most once (taking it removes it, whatever the outcome) and expires after
//! [`CHALLENGE_LIFETIME`]. Challenges live in the store's
//! `invite_challenges` table, so every relay node on the data directory
//! accepts a challenge that any of them issued, also after a restart. The
//! table keeps the SHA-256 hash of each challenge in place of its bytes. It
//! stays bounded because each token keeps at most [`MAX_PER_TOKEN`]
//! live challenges, its oldest being dropped for a new one, and the table at
//! most [`MAX_TOTAL`]. Issuing a challenge deletes every expired one.
//!
//! Expiry uses wall-clock Unix milliseconds, like every stored time, so the
//! nodes sharing the store must agree on the clock. They run on one host.

use std::time::Duration;

use rand::RngCore;
use sealcast_protocol::api::CHALLENGE_LEN;
use sha2::{Digest, Sha256};

use crate::credentials::CredentialHash;

/// How long a challenge stays valid.
pub(crate) const CHALLENGE_LIFETIME: Duration = Duration::from_secs(120);

/// Live challenges per invite token. A page needs one at a time and retries
/// a rejected proof twice, so a few leave room for several tabs.
pub(crate) const MAX_PER_TOKEN: usize = 4;

/// Live challenges in the whole store, shared by every relay node.
pub(crate) const MAX_TOTAL: usize = 50_000;

/// A challenge's bytes.
pub(crate) type Challenge = [u8; CHALLENGE_LEN];

/// Reason a presented challenge was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRejected {
    /// Never issued, already used, or dropped for a newer one.
    Unknown,
    /// Issued more than [`CHALLENGE_LIFETIME`] ago.
    Expired,
    /// Issued for another invite token.
    OtherInvite,
}

impl ChallengeRejected {
    /// Returns the metric label of the rejection.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ChallengeRejected::Unknown => "challenge_unknown",
            ChallengeRejected::Expired => "challenge_expired",
            ChallengeRejected::OtherInvite => "challenge_other_invite",
        }
    }
}

/// Makes a new challenge from the operating system's random number generator.
pub(crate) fn random_challenge() -> Challenge {
    let mut challenge = [0u8; CHALLENGE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    challenge
}

/// Returns the SHA-256 hash that the store keeps in place of a challenge.
pub(crate) fn challenge_hash(challenge: &Challenge) -> CredentialHash {
    Sha256::digest(challenge).into()
}

/// Returns [`CHALLENGE_LIFETIME`] in milliseconds, the unit of stored times.
pub(crate) fn lifetime_millis() -> i64 {
    i64::try_from(CHALLENGE_LIFETIME.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_differ() {
        assert_ne!(random_challenge(), random_challenge());
    }

    #[test]
    fn hash_is_sha256_of_bytes() {
        let challenge = [5u8; CHALLENGE_LEN];
        let expected: CredentialHash = Sha256::digest([5u8; CHALLENGE_LEN]).into();
        assert_eq!(challenge_hash(&challenge), expected);
        assert_ne!(
            challenge_hash(&challenge),
            challenge_hash(&[6u8; CHALLENGE_LEN])
        );
    }
}
