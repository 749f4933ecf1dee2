//! Invite challenges: random values the relay hands out for one redemption.
//!
//! A challenge is bound to the invite token it was issued for, is used at
//! most once (taking it removes it, whatever the outcome) and expires after
//! [`CHALLENGE_LIFETIME`]. The book is in memory only: after a restart the
//! page simply asks for a new challenge. Memory stays bounded because each
//! token keeps at most [`MAX_PER_TOKEN`] live challenges, its oldest being
//! dropped for a new one, and the book at most [`MAX_TOTAL`].
//!
//! NOTE: with several relay nodes each node has its own book, so a
//! challenge works only on the node that issued it. A load balancer must
//! send a client's challenge and redemption to the same node.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::RngCore;
use sealcast_protocol::api::CHALLENGE_LEN;
use sealcast_protocol::SessionId;

use crate::credentials::CredentialHash;

/// How long a challenge stays valid.
pub(crate) const CHALLENGE_LIFETIME: Duration = Duration::from_secs(120);

/// Live challenges per invite token. A page needs one at a time and retries
/// a rejected proof twice, so a few leave room for several tabs.
pub(crate) const MAX_PER_TOKEN: usize = 4;

/// Live challenges in the whole relay.
pub(crate) const MAX_TOTAL: usize = 50_000;

/// A challenge's bytes.
pub(crate) type Challenge = [u8; CHALLENGE_LEN];

/// Reason a presented challenge was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChallengeRejected {
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

/// The book already contains [`MAX_TOTAL`] live challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BookFull;

/// Live challenges, by value and by the invite token they were issued for.
#[derive(Default)]
pub(crate) struct ChallengeBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    by_challenge: HashMap<Challenge, Pending>,
    by_token: HashMap<CredentialHash, VecDeque<Challenge>>,
}

struct Pending {
    token_hash: CredentialHash,
    session_id: SessionId,
    expires_at: Instant,
}

impl ChallengeBook {
    /// Issues a new challenge for the invite token with this hash.
    pub(crate) fn issue(
        &self,
        token_hash: CredentialHash,
        session_id: SessionId,
        now: Instant,
    ) -> Result<Challenge, BookFull> {
        let mut book = self.lock();
        if book.by_challenge.len() >= MAX_TOTAL {
            book.purge_expired(now);
        }
        if book.by_challenge.len() >= MAX_TOTAL {
            return Err(BookFull);
        }
        book.make_room_for(&token_hash, now);

        let mut challenge = [0u8; CHALLENGE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        let pending = Pending {
            token_hash,
            session_id,
            expires_at: now + CHALLENGE_LIFETIME,
        };
        book.by_challenge.insert(challenge, pending);
        book.by_token
            .entry(token_hash)
            .or_default()
            .push_back(challenge);
        Ok(challenge)
    }

    /// Takes a challenge presented with the invite token with this hash and
    /// returns the session it was issued for. The challenge is gone afterwards,
    /// also when it is rejected.
    pub(crate) fn take(
        &self,
        challenge: &Challenge,
        token_hash: &CredentialHash,
        now: Instant,
    ) -> Result<SessionId, ChallengeRejected> {
        let mut book = self.lock();
        let pending = book
            .by_challenge
            .remove(challenge)
            .ok_or(ChallengeRejected::Unknown)?;
        book.forget(&pending.token_hash, challenge);

        if &pending.token_hash != token_hash {
            return Err(ChallengeRejected::OtherInvite);
        }
        if now >= pending.expires_at {
            return Err(ChallengeRejected::Expired);
        }
        Ok(pending.session_id)
    }

    /// Drops every expired challenge and returns how many remain.
    pub(crate) fn purge_expired(&self, now: Instant) -> usize {
        let mut book = self.lock();
        book.purge_expired(now);
        book.by_challenge.len()
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Book {
    /// Drops the token's expired challenges, then its oldest ones until a new one fits.
    fn make_room_for(&mut self, token_hash: &CredentialHash, now: Instant) {
        let Some(queue) = self.by_token.get_mut(token_hash) else {
            return;
        };
        let mut dropped = Vec::new();
        while let Some(oldest) = queue.front().copied() {
            let expired = self
                .by_challenge
                .get(&oldest)
                .is_none_or(|pending| now >= pending.expires_at);
            if !expired && queue.len() < MAX_PER_TOKEN {
                break;
            }
            queue.pop_front();
            dropped.push(oldest);
        }
        for challenge in dropped {
            self.by_challenge.remove(&challenge);
        }
    }

    fn forget(&mut self, token_hash: &CredentialHash, challenge: &Challenge) {
        if let Some(queue) = self.by_token.get_mut(token_hash) {
            queue.retain(|queued| queued != challenge);
            if queue.is_empty() {
                self.by_token.remove(token_hash);
            }
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        self.by_challenge
            .retain(|_, pending| now < pending.expires_at);
        let by_challenge = &self.by_challenge;
        self.by_token.retain(|_, queue| {
            queue.retain(|challenge| by_challenge.contains_key(challenge));
            !queue.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: CredentialHash = [1; 32];
    const OTHER_TOKEN: CredentialHash = [2; 32];

    fn session() -> SessionId {
        SessionId([7; 16])
    }

    #[test]
    fn challenge_is_single_use() {
        let book = ChallengeBook::default();
        let now = Instant::now();
        let challenge = book.issue(TOKEN, session(), now).unwrap();
        assert_eq!(book.take(&challenge, &TOKEN, now), Ok(session()));
        assert_eq!(
            book.take(&challenge, &TOKEN, now),
            Err(ChallengeRejected::Unknown)
        );
    }

    #[test]
    fn challenge_expires() {
        let book = ChallengeBook::default();
        let now = Instant::now();
        let challenge = book.issue(TOKEN, session(), now).unwrap();
        let later = now + CHALLENGE_LIFETIME;
        assert_eq!(
            book.take(&challenge, &TOKEN, later),
            Err(ChallengeRejected::Expired)
        );
    }

    #[test]
    fn challenge_is_bound_to_its_token() {
        let book = ChallengeBook::default();
        let now = Instant::now();
        let challenge = book.issue(TOKEN, session(), now).unwrap();
        assert_eq!(
            book.take(&challenge, &OTHER_TOKEN, now),
            Err(ChallengeRejected::OtherInvite)
        );
        // Presenting it with the wrong token used it up.
        assert_eq!(
            book.take(&challenge, &TOKEN, now),
            Err(ChallengeRejected::Unknown)
        );
    }

    #[test]
    fn token_keeps_its_newest_challenges() {
        let book = ChallengeBook::default();
        let now = Instant::now();
        let issued: Vec<Challenge> = (0..MAX_PER_TOKEN + 2)
            .map(|_| book.issue(TOKEN, session(), now).unwrap())
            .collect();
        assert_eq!(book.purge_expired(now), MAX_PER_TOKEN);
        assert_eq!(
            book.take(&issued[0], &TOKEN, now),
            Err(ChallengeRejected::Unknown)
        );
        assert_eq!(
            book.take(&issued[MAX_PER_TOKEN + 1], &TOKEN, now),
            Ok(session())
        );
    }

    #[test]
    fn purge_drops_expired_challenges() {
        let book = ChallengeBook::default();
        let now = Instant::now();
        book.issue(TOKEN, session(), now).unwrap();
        book.issue(OTHER_TOKEN, session(), now + Duration::from_secs(60))
            .unwrap();
        assert_eq!(book.purge_expired(now + CHALLENGE_LIFETIME), 1);
        assert_eq!(book.lock().by_token.len(), 1);
    }

    #[test]
    fn full_book_rejects_new_challenges() {
        let book = ChallengeBook::default();
        let now = Instant::now();
        {
            let mut inner = book.lock();
            for index in 0..MAX_TOTAL {
                let mut challenge = [0u8; CHALLENGE_LEN];
                challenge[..8].copy_from_slice(&(index as u64).to_be_bytes());
                let pending = Pending {
                    token_hash: TOKEN,
                    session_id: session(),
                    expires_at: now + CHALLENGE_LIFETIME,
                };
                inner.by_challenge.insert(challenge, pending);
            }
        }
        assert_eq!(book.issue(OTHER_TOKEN, session(), now), Err(BookFull));
        // Once they expire, there is room again.
        let later = now + CHALLENGE_LIFETIME;
        assert!(book.issue(OTHER_TOKEN, session(), later).is_ok());
    }
}
