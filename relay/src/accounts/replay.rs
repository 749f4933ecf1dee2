//! The DPoP proof replay check: every accepted proof's `jti` is remembered
//! until the proof is too old to be accepted anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use sealcast_protocol::dpop::{PROOF_MAX_AGE_SECS, PROOF_MAX_FUTURE_SECS};

/// Proof ids remembered at once. A proof arriving while the table is full
/// of unexpired ids is rejected, so memory stays bounded under a flood.
pub(crate) const MAX_REMEMBERED_PROOFS: usize = 200_000;

/// A reason to reject a proof id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayRejection {
    /// The id was seen before.
    Replayed,
    /// The table is full.
    Full,
}

/// Remembered proof ids with the time each stops mattering.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    forget_at: HashMap<String, u64>,
    /// Ids in arrival order, so expired ones are dropped from the front.
    order: VecDeque<(u64, String)>,
}

impl ReplayCache {
    /// Records a proof id with its `iat`, or rejects it when it was seen.
    pub(crate) fn check_and_remember(
        &self,
        jti: &str,
        iat: u64,
        now_unix: u64,
    ) -> Result<(), ReplayRejection> {
        let mut remembered = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        remembered.forget_expired(now_unix);
        if remembered.forget_at.contains_key(jti) {
            return Err(ReplayRejection::Replayed);
        }
        if remembered.forget_at.len() >= MAX_REMEMBERED_PROOFS {
            return Err(ReplayRejection::Full);
        }
        // A proof is accepted while `iat` is at most PROOF_MAX_AGE_SECS old,
        // and `iat` may lie PROOF_MAX_FUTURE_SECS ahead of the clock.
        let forget_at = iat.max(now_unix) + PROOF_MAX_AGE_SECS + PROOF_MAX_FUTURE_SECS;
        remembered.forget_at.insert(jti.to_owned(), forget_at);
        remembered.order.push_back((forget_at, jti.to_owned()));
        Ok(())
    }
}

impl Remembered {
    fn forget_expired(&mut self, now_unix: u64) {
        // Entries are nearly sorted by expiry: an id with a later `iat` can
        // precede one with an earlier `iat` by a few seconds at most, so it
        // waits at most that long behind it.
        while let Some((forget_at, _)) = self.order.front() {
            if *forget_at > now_unix {
                break;
            }
            if let Some((_, jti)) = self.order.pop_front() {
                self.forget_at.remove(&jti);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_id_is_rejected_until_expiry() {
        let cache = ReplayCache::default();
        assert_eq!(cache.check_and_remember("a", 100, 100), Ok(()));
        assert_eq!(
            cache.check_and_remember("a", 100, 101),
            Err(ReplayRejection::Replayed)
        );
        assert_eq!(cache.check_and_remember("b", 100, 101), Ok(()));
        let later = 100 + PROOF_MAX_AGE_SECS + PROOF_MAX_FUTURE_SECS;
        assert_eq!(cache.check_and_remember("a", later, later), Ok(()));
    }
}
