//! The keys of later key epochs on a device that joined with `sealcast pair
//! join`: long-polls for the keys the clinician device wraps after each
//! rotation, opens them and hands them to the follower.
//!
//! The fetch names the newest epoch it has seen, opened or not, so that the
//! relay does not return a key this device ignored again, and a round that
//! brings only ignored keys is followed by a growing delay.

use std::future::Future;
use std::time::Duration;

use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::pairing::{KeyGrant, PairedClinician, WRAPPED_KEY_LEN};
use sealcast_protocol::SessionId;
use tokio::sync::mpsc;

use crate::auth::BearerToken;
use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::pairing::PairingApi;

/// Retry policy of the wrapped key fetch: 500 ms doubling up to 30 s,
/// forever, because the follower keeps frames it cannot open yet.
const FETCH_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
    max_attempts: None,
};

/// State and clients with which the joined device fetches and opens the
/// keys of later epochs.
pub(super) struct LaterKeyPoll {
    pub(super) api: PairingApi,
    pub(super) follow_token: BearerToken,
    /// The joined device's side of the pairing, in memory only.
    pub(super) pairing: PairedClinician,
    pub(super) session_id: SessionId,
    pub(super) publisher: PublisherKey,
    /// Newest key epoch the device holds.
    pub(super) newest_epoch: u32,
    pub(super) grants: mpsc::Sender<KeyGrant>,
}

/// Long-polls the relay for wrapped keys of later epochs, unwraps each and
/// sends it to the follower, until the follower stops or the relay revokes
/// the follow token.
pub(super) async fn receive_later_keys(poll: LaterKeyPoll) {
    let LaterKeyPoll {
        api,
        follow_token,
        pairing,
        session_id,
        publisher,
        newest_epoch,
        grants,
    } = poll;
    let mut opener = KeyOpener {
        pairing,
        session_id,
        publisher,
        newest_epoch,
        after: newest_epoch,
        warned_epoch: None,
    };
    let api = &api;
    let follow_token = &follow_token;
    fetch_later_keys(
        &mut opener,
        move |after| api.fetch_paired_keys(follow_token, after),
        &grants,
    )
    .await;
}

/// Checks and opens fetched wrapped keys, and tracks the epoch to fetch after.
struct KeyOpener {
    pairing: PairedClinician,
    session_id: SessionId,
    publisher: PublisherKey,
    /// Newest key epoch the device holds.
    newest_epoch: u32,
    /// Newest key epoch of any fetched wrapped key, including ignored ones:
    /// the `after` of the next fetch. At least `newest_epoch`.
    after: u32,
    /// Newest key epoch whose key was reported as ignored.
    warned_epoch: Option<u32>,
}

impl KeyOpener {
    /// Opens a wrapped key and returns its grant when it names the session
    /// and publisher key of the pairing and an epoch newer than the newest
    /// held. A key that fails is reported on stderr, once per key epoch, and
    /// returns `None`.
    fn open(&mut self, wrapped: &[u8]) -> Option<KeyGrant> {
        let named_epoch = wrapped_key_epoch(wrapped);
        if let Some(key_epoch) = named_epoch {
            self.after = self.after.max(key_epoch);
        }
        let reason = match self.pairing.unwrap_key(wrapped) {
            Err(err) => match named_epoch {
                Some(key_epoch) => format!("ignored the key of key epoch {key_epoch}: {err}"),
                None => format!("ignored a key from the relay: {err}"),
            },
            Ok(grant) if grant.session_id != self.session_id || grant.key_epoch <= self.newest_epoch => format!(
                "ignored the key of key epoch {}: it names another session or an epoch this device already holds",
                grant.key_epoch
            ),
            Ok(grant) if grant.publisher != self.publisher => format!(
                "ignored the key of key epoch {}: it names another publisher key than the pairing",
                grant.key_epoch
            ),
            Ok(grant) => {
                self.newest_epoch = grant.key_epoch;
                return Some(grant);
            }
        };
        if self.should_warn(named_epoch) {
            stderr_line!("warning: {reason}");
        }
        None
    }

    /// Returns whether to report an ignored key of `key_epoch`: false when
    /// a key of that or a newer epoch was reported before, because the
    /// relay returns keys oldest first. A key without a readable epoch is
    /// always reported.
    fn should_warn(&mut self, key_epoch: Option<u32>) -> bool {
        let Some(key_epoch) = key_epoch else {
            return true;
        };
        if self.warned_epoch.is_some_and(|warned| key_epoch <= warned) {
            return false;
        }
        self.warned_epoch = Some(key_epoch);
        true
    }
}

/// Returns the key epoch that a wrapped key names in its first four bytes,
/// big-endian, or `None` for a key of the wrong length. The epoch is
/// authenticated only once the key opens.
fn wrapped_key_epoch(wrapped: &[u8]) -> Option<u32> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return None;
    }
    let epoch: [u8; 4] = wrapped.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(epoch))
}

/// Fetches wrapped keys with `fetch`, which takes the epoch to fetch after,
/// and sends each opened grant to `grants`, until the receiver is dropped
/// or the relay rejects the follow token with 401. A failed fetch is
/// retried after a delay, and so is a round that brought only ignored keys,
/// in case the relay returns them again.
async fn fetch_later_keys<F, Fetched>(
    opener: &mut KeyOpener,
    mut fetch: F,
    grants: &mpsc::Sender<KeyGrant>,
) where
    F: FnMut(u32) -> Fetched,
    Fetched: Future<Output = Result<Vec<Vec<u8>>, ClientError>>,
{
    let mut failures = 0;
    let mut ignored_rounds = 0;
    loop {
        let wrapped_keys = match fetch(opener.after).await {
            Ok(keys) => {
                failures = 0;
                keys
            }
            Err(ClientError::RelayStatus { status: 401, .. }) => {
                stderr_line!("warning: the relay no longer hands this device the keys of later key epochs: the clinician removed it or ended the session");
                return;
            }
            Err(err) => {
                let delay = FETCH_BACKOFF.delay(failures);
                failures = failures.saturating_add(1);
                stderr_line!(
                    "warning: fetching the keys of later key epochs failed ({err}); retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        if wrapped_keys.is_empty() {
            // The long poll ended without a new key.
            continue;
        }
        let mut opened = false;
        for wrapped in wrapped_keys {
            let Some(grant) = opener.open(&wrapped) else {
                continue;
            };
            opened = true;
            if grants.send(grant).await.is_err() {
                return;
            }
        }
        if opened {
            ignored_rounds = 0;
        } else {
            tokio::time::sleep(FETCH_BACKOFF.delay(ignored_rounds)).await;
            ignored_rounds = ignored_rounds.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sealcast_protocol::pairing::{ClinicianPairing, JoinerPairing, PairedJoiner};
    use sealcast_protocol::SessionKey;

    use super::*;

    const SESSION: SessionId = SessionId([3; 16]);

    /// Runs a pairing in memory and returns the clinician's and the joiner's side.
    fn paired() -> (PairedJoiner, PairedClinician) {
        let (joiner, commitment) = JoinerPairing::start();
        let (clinician, clinician_public) = ClinicianPairing::respond(commitment);
        let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
        let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
        (clinician.confirm(), joiner.confirm())
    }

    fn publisher_key(seed: u8) -> PublisherKey {
        let device = sealcast_protocol::dpop::DeviceKey::from_secret_bytes(&[seed; 32]).unwrap();
        PublisherKey::of_device(&device)
    }

    fn grant(key_epoch: u32, publisher: PublisherKey) -> KeyGrant {
        KeyGrant {
            key_epoch,
            session_id: SESSION,
            session_key: SessionKey::from_bytes([key_epoch as u8; 32]),
            publisher,
        }
    }

    fn opener(pairing: PairedClinician) -> KeyOpener {
        KeyOpener {
            pairing,
            session_id: SESSION,
            publisher: publisher_key(1),
            newest_epoch: 0,
            after: 0,
            warned_epoch: None,
        }
    }

    fn revoked() -> ClientError {
        ClientError::RelayStatus {
            what: "the wrapped key fetch",
            status: 401,
            message: "revoked".into(),
            hint: "",
        }
    }

    /// Runs the fetch loop against a relay whose stored keys are `stored`,
    /// epoch and wrapped key, and which returns those after the requested
    /// epoch, or all of them when `ignore_after` is set. The relay rejects
    /// the token after `max_fetches`. Returns the `after` of each fetch, the
    /// epochs of the grants and the paused-clock time the loop took.
    async fn run_against(
        opener: &mut KeyOpener,
        stored: Vec<(u32, Vec<u8>)>,
        ignore_after: bool,
        max_fetches: usize,
    ) -> (Vec<u32>, Vec<u32>, Duration) {
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&fetches);
        let fetch = move |after: u32| {
            let mut fetches = recorded.lock().unwrap();
            fetches.push(after);
            let result = if fetches.len() > max_fetches {
                Err(revoked())
            } else {
                Ok(stored
                    .iter()
                    .filter(|(epoch, _)| ignore_after || *epoch > after)
                    .map(|(_, wrapped)| wrapped.clone())
                    .collect())
            };
            std::future::ready(result)
        };
        let (sender, mut receiver) = mpsc::channel(8);
        let started = tokio::time::Instant::now();
        fetch_later_keys(opener, fetch, &sender).await;
        let took = started.elapsed();
        drop(sender);
        let mut epochs = Vec::new();
        while let Some(grant) = receiver.recv().await {
            epochs.push(grant.key_epoch);
        }
        let fetches = fetches.lock().unwrap().clone();
        (fetches, epochs, took)
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_key_is_not_fetched_again() {
        let (clinician, joiner) = paired();
        let mut opener = opener(joiner);
        let other_publisher = clinician.wrap_key(&grant(1, publisher_key(2)));
        let mut unopenable = clinician.wrap_key(&grant(2, publisher_key(1)));
        *unopenable.last_mut().unwrap() ^= 1;
        let valid = clinician.wrap_key(&grant(3, publisher_key(1)));
        let stored = vec![(1, other_publisher), (2, unopenable), (3, valid)];

        let (fetches, epochs, _) = run_against(&mut opener, stored, false, 10).await;
        // Everything comes in the first round, and the second fetch requests
        // later epochs only, until the relay rejects the token.
        assert_eq!(fetches.first(), Some(&0));
        assert!(fetches[1..].iter().all(|after| *after == 3), "{fetches:?}");
        assert_eq!(epochs, vec![3]);
        assert_eq!(opener.newest_epoch, 3);
        assert_eq!(opener.after, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cursor_moves_past_ignored_epochs() {
        let (clinician, joiner) = paired();
        let mut opener = opener(joiner);
        let stored = vec![(1, clinician.wrap_key(&grant(1, publisher_key(2))))];

        let (fetches, epochs, _) = run_against(&mut opener, stored, false, 3).await;
        assert_eq!(fetches, vec![0, 1, 1, 1]);
        assert!(epochs.is_empty());
        assert_eq!(opener.newest_epoch, 0);
        assert_eq!(opener.after, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ignored_keys_back_off() {
        let (clinician, joiner) = paired();
        let mut opener = opener(joiner);
        let stored = vec![(1, clinician.wrap_key(&grant(1, publisher_key(2))))];

        // A relay that returns the ignored key on every fetch.
        let (fetches, epochs, took) = run_against(&mut opener, stored, true, 5).await;
        assert_eq!(fetches.len(), 6);
        assert!(epochs.is_empty());
        // The delays after the five rounds are drawn from the upper halves
        // of 0.5, 1, 2, 4 and 8 s, so they add up to at least 7.75 s.
        assert!(took >= Duration::from_millis(7_750), "{took:?}");
        assert_eq!(opener.warned_epoch, Some(1));
    }

    #[test]
    fn ignored_epoch_is_reported_once() {
        let (_, joiner) = paired();
        let mut opener = opener(joiner);
        assert!(opener.should_warn(Some(1)));
        assert!(!opener.should_warn(Some(1)));
        assert!(opener.should_warn(Some(2)));
        assert!(!opener.should_warn(Some(1)));
        // A key of the wrong length names no epoch.
        assert!(opener.should_warn(None));
        assert!(opener.should_warn(None));
    }

    #[test]
    fn epoch_is_read_from_wrapped_key() {
        let (clinician, _) = paired();
        let wrapped = clinician.wrap_key(&grant(7, publisher_key(1)));
        assert_eq!(wrapped_key_epoch(&wrapped), Some(7));
        assert_eq!(wrapped_key_epoch(&wrapped[1..]), None);
    }
}
