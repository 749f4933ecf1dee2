//! The pairing mailbox: short-lived slots in memory that carry the five
//! pairing messages between a joining device and the clinician device of a
//! session. The HTTP handlers live in `http::pairing`.
//!
//! A slot holds only public values: a commitment, two X25519 public keys and
//! a wrapped key that only the joining device can open. The slots are not
//! stored, because both devices keep their ephemeral X25519 secrets in memory
//! too. After a relay restart the devices start a new pairing.
//!
//! Each step is accepted only in its state, once: a second commitment, a key
//! sent out of turn or anything sent to an expired or cancelled slot is
//! rejected. Every method takes the current time, so tests need no clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use sealcast_protocol::pairing_api::{PairingId, PairingPurpose, PairingState, PAIRING_ID_RANGE};
use sealcast_protocol::SessionId;
use tokio::sync::watch;

use crate::credentials::{hashes_match, random_token, CredentialHash, Secret};

/// How long a slot accepts steps after it was opened, by default.
pub const DEFAULT_PAIRING_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Open slots one session may have at once.
pub(crate) const MAX_SLOTS_PER_SESSION: usize = 4;

/// Slots the relay keeps at once, expired ones included until they are swept.
pub(crate) const MAX_SLOTS: usize = 1024;

/// A refused pairing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairingRejected {
    /// No slot has this id, or it belongs to another session.
    Unknown,
    /// The slot expired.
    Expired,
    /// The slot was cancelled by one of the devices.
    Cancelled,
    /// A second device sent a commitment to a slot that already has one.
    AlreadyJoined,
    /// The step does not follow from the slot's state.
    OutOfOrder {
        /// The slot's state.
        state: PairingState,
        /// The state the step needs.
        expected: PairingState,
    },
    /// The joiner token does not belong to the slot.
    WrongJoiner,
    /// The session already has [`MAX_SLOTS_PER_SESSION`] open slots.
    SessionFull,
    /// The relay already keeps [`MAX_SLOTS`] slots.
    RelayFull,
    /// A joiner without a staff sign-in sent a commitment to a slot for a
    /// clinician's second device.
    SignInRequired,
    /// A signed-in joiner of another user or organization than the slot's
    /// opener sent a commitment to a slot for a clinician's second device.
    OtherClinician,
    /// A commitment with a device key reached a slot for a patient's device.
    NotDeviceSlot,
    /// The slot's session has ended.
    SessionEnded,
}

/// The staff account that opened a slot for its own second device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlotOwner {
    pub(crate) user_id: String,
    pub(crate) organization_id: String,
}

impl PairingRejected {
    /// Returns the `reason` label of the failure metric.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            PairingRejected::Unknown => "unknown",
            PairingRejected::Expired => "expired",
            PairingRejected::Cancelled => "cancelled",
            PairingRejected::AlreadyJoined => "already_joined",
            PairingRejected::OutOfOrder { .. } => "out_of_order",
            PairingRejected::WrongJoiner => "wrong_joiner",
            PairingRejected::SessionFull => "session_full",
            PairingRejected::RelayFull => "relay_full",
            PairingRejected::SignInRequired => "joiner_not_signed_in",
            PairingRejected::OtherClinician => "joiner_other_clinician",
            PairingRejected::NotDeviceSlot => "not_device_slot",
            PairingRejected::SessionEnded => "session_ended",
        }
    }
}

/// A slot's fields for one device, and a receiver that changes when the slot does.
pub(crate) struct SlotView {
    pub(crate) state: PairingState,
    pub(crate) expires_in: Duration,
    pub(crate) session_id: SessionId,
    pub(crate) purpose: PairingPurpose,
    pub(crate) commitment: Option<[u8; 32]>,
    pub(crate) device_key: Option<[u8; 32]>,
    pub(crate) clinician_public: Option<[u8; 32]>,
    pub(crate) joiner_public: Option<[u8; 32]>,
    pub(crate) wrapped_key: Option<Vec<u8>>,
    pub(crate) follow_token: Option<Secret>,
    pub(crate) changes: watch::Receiver<()>,
}

/// The device that sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Clinician,
    Joiner,
}

struct Slot {
    session_id: SessionId,
    expires_at: Instant,
    state: PairingState,
    /// Set when the session ended: every step and view is then rejected.
    session_ended: bool,
    /// The opener, for a slot that hands the session to its second device.
    owner: Option<SlotOwner>,
    joiner_token_hash: Option<CredentialHash>,
    commitment: Option<[u8; 32]>,
    device_key: Option<[u8; 32]>,
    clinician_public: Option<[u8; 32]>,
    joiner_public: Option<[u8; 32]>,
    wrapped_key: Option<Vec<u8>>,
    follow_token: Option<Secret>,
    changed: watch::Sender<()>,
}

impl Slot {
    fn expect(&self, expected: PairingState) -> Result<(), PairingRejected> {
        if self.state == expected {
            return Ok(());
        }
        Err(match self.state {
            PairingState::Cancelled => PairingRejected::Cancelled,
            state => PairingRejected::OutOfOrder { state, expected },
        })
    }

    fn advance(&mut self, state: PairingState) {
        self.state = state;
        self.changed.send_replace(());
    }
}

/// Every pairing slot of the relay.
pub(crate) struct PairingMailbox {
    slots: Mutex<HashMap<PairingId, Slot>>,
    lifetime: Duration,
}

impl PairingMailbox {
    /// Creates an empty mailbox whose slots live for `lifetime`.
    pub(crate) fn new(lifetime: Duration) -> Self {
        PairingMailbox {
            slots: Mutex::new(HashMap::new()),
            lifetime,
        }
    }

    /// Opens a slot for a patient's device. Returns its id and lifetime.
    #[cfg(test)]
    pub(crate) fn open(
        &self,
        session_id: SessionId,
        now: Instant,
    ) -> Result<(PairingId, Duration), PairingRejected> {
        self.open_for(session_id, None, now)
    }

    /// Opens a slot for a patient's device, or with `owner` for a second
    /// device of that staff account. Returns its id and lifetime.
    pub(crate) fn open_for(
        &self,
        session_id: SessionId,
        owner: Option<SlotOwner>,
        now: Instant,
    ) -> Result<(PairingId, Duration), PairingRejected> {
        let mut slots = self.lock();
        self.sweep(&mut slots, now);
        if slots.len() >= MAX_SLOTS {
            return Err(PairingRejected::RelayFull);
        }
        let open_for_session = slots
            .values()
            .filter(|slot| slot.session_id == session_id && slot.expires_at > now)
            .filter(|slot| slot.state != PairingState::Cancelled)
            .count();
        if open_for_session >= MAX_SLOTS_PER_SESSION {
            return Err(PairingRejected::SessionFull);
        }

        let id = loop {
            let value = rand::rngs::OsRng.gen_range(0..PAIRING_ID_RANGE);
            if let Some(id) = PairingId::new(value).filter(|id| !slots.contains_key(id)) {
                break id;
            }
        };
        let slot = Slot {
            session_id,
            expires_at: now + self.lifetime,
            state: PairingState::Open,
            session_ended: false,
            owner,
            joiner_token_hash: None,
            commitment: None,
            device_key: None,
            clinician_public: None,
            joiner_public: None,
            wrapped_key: None,
            follow_token: None,
            changed: watch::channel(()).0,
        };
        slots.insert(id, slot);
        Ok((id, self.lifetime))
    }

    /// Returns who a live slot hands the session key to, which decides the
    /// credential step 1 needs.
    pub(crate) fn purpose(
        &self,
        id: PairingId,
        now: Instant,
    ) -> Result<PairingPurpose, PairingRejected> {
        self.with_slot(id, now, |slot| Ok(purpose_of(slot)))
    }

    /// Returns who a live slot of `session_id` hands the session key to,
    /// reporting a slot of another session as unknown.
    pub(crate) fn clinician_purpose(
        &self,
        id: PairingId,
        session_id: SessionId,
        now: Instant,
    ) -> Result<PairingPurpose, PairingRejected> {
        self.with_clinician_slot(id, session_id, now, |slot| Ok(purpose_of(slot)))
    }

    /// Step 1: stores the joining device's commitment and returns the token
    /// that authenticates its later requests. `device` is the joiner's staff
    /// account and identity key, which a slot for a second device requires
    /// and a slot for a patient's device rejects.
    pub(crate) fn commit(
        &self,
        id: PairingId,
        commitment: [u8; 32],
        device: Option<(&SlotOwner, [u8; 32])>,
        now: Instant,
    ) -> Result<(Secret, Duration), PairingRejected> {
        self.with_slot(id, now, |slot| {
            match (&slot.owner, device) {
                (None, None) => {}
                (None, Some(_)) => return Err(PairingRejected::NotDeviceSlot),
                (Some(_), None) => return Err(PairingRejected::SignInRequired),
                (Some(owner), Some((joiner, _))) if owner != joiner => {
                    return Err(PairingRejected::OtherClinician)
                }
                (Some(_), Some(_)) => {}
            }
            match slot.state {
                PairingState::Open => {}
                PairingState::Cancelled => return Err(PairingRejected::Cancelled),
                _ => return Err(PairingRejected::AlreadyJoined),
            }
            let token = random_token();
            slot.joiner_token_hash = Some(token.hash());
            slot.commitment = Some(commitment);
            slot.device_key = device.map(|(_, key)| key);
            slot.advance(PairingState::Committed);
            Ok((token, slot.expires_at.saturating_duration_since(now)))
        })
    }

    /// Step 2: stores the clinician device's public key.
    pub(crate) fn respond(
        &self,
        id: PairingId,
        session_id: SessionId,
        clinician_public: [u8; 32],
        now: Instant,
    ) -> Result<(), PairingRejected> {
        self.with_clinician_slot(id, session_id, now, |slot| {
            slot.expect(PairingState::Committed)?;
            slot.clinician_public = Some(clinician_public);
            slot.advance(PairingState::Responded);
            Ok(())
        })
    }

    /// Step 3: stores the joining device's public key.
    pub(crate) fn reveal(
        &self,
        id: PairingId,
        joiner_token: &Secret,
        joiner_public: [u8; 32],
        now: Instant,
    ) -> Result<(), PairingRejected> {
        self.with_joiner_slot(id, joiner_token, now, |slot| {
            slot.expect(PairingState::Responded)?;
            slot.joiner_public = Some(joiner_public);
            slot.advance(PairingState::Revealed);
            Ok(())
        })
    }

    /// Checks that the slot waits for the wrapped key, before the caller
    /// stores the joined device's follow credential. Returns the joining
    /// device's public key, from which the caller derives its device id.
    pub(crate) fn expect_wrapped_key(
        &self,
        id: PairingId,
        session_id: SessionId,
        now: Instant,
    ) -> Result<[u8; 32], PairingRejected> {
        self.with_clinician_slot(id, session_id, now, |slot| {
            slot.expect(PairingState::Revealed)?;
            // Step 3 sets the key before the slot reaches `Revealed`.
            slot.joiner_public.ok_or(PairingRejected::OutOfOrder {
                state: slot.state,
                expected: PairingState::Revealed,
            })
        })
    }

    /// Step 5: stores the wrapped key and the joined device's follow
    /// credential, which a clinician's second device does not get.
    pub(crate) fn complete(
        &self,
        id: PairingId,
        session_id: SessionId,
        wrapped_key: Vec<u8>,
        follow_token: Option<Secret>,
        now: Instant,
    ) -> Result<(), PairingRejected> {
        self.with_clinician_slot(id, session_id, now, |slot| {
            slot.expect(PairingState::Revealed)?;
            slot.wrapped_key = Some(wrapped_key);
            slot.follow_token = follow_token;
            slot.advance(PairingState::Completed);
            Ok(())
        })
    }

    /// Cancels a slot for the clinician device. A completed slot can no
    /// longer be cancelled, because the wrapped key is out of its hands.
    pub(crate) fn cancel_by_clinician(
        &self,
        id: PairingId,
        session_id: SessionId,
        now: Instant,
    ) -> Result<(), PairingRejected> {
        self.with_clinician_slot(id, session_id, now, cancel)
    }

    /// Cancels a slot for the joining device.
    pub(crate) fn cancel_by_joiner(
        &self,
        id: PairingId,
        joiner_token: &Secret,
        now: Instant,
    ) -> Result<(), PairingRejected> {
        self.with_joiner_slot(id, joiner_token, now, cancel)
    }

    /// Returns the clinician device's view of its session's slot.
    pub(crate) fn clinician_view(
        &self,
        id: PairingId,
        session_id: SessionId,
        now: Instant,
    ) -> Result<SlotView, PairingRejected> {
        self.with_clinician_slot(id, session_id, now, |slot| {
            Ok(view(slot, Side::Clinician, now))
        })
    }

    /// Returns the joining device's view of its slot. Once the slot is
    /// completed the view carries the wrapped key and the follow token, and
    /// the slot is removed, so the relay hands the token out once.
    pub(crate) fn joiner_view(
        &self,
        id: PairingId,
        joiner_token: &Secret,
        now: Instant,
    ) -> Result<SlotView, PairingRejected> {
        let mut slots = self.lock();
        let slot = live_slot(&mut slots, id, now)?;
        check_joiner(slot, joiner_token)?;
        let mut view = view(slot, Side::Joiner, now);
        if slot.state == PairingState::Completed {
            view.follow_token = slot.follow_token.take();
            slots.remove(&id);
        }
        Ok(view)
    }

    /// Returns the session of a live slot.
    pub(crate) fn session_of(
        &self,
        id: PairingId,
        now: Instant,
    ) -> Result<SessionId, PairingRejected> {
        self.with_slot(id, now, |slot| Ok(slot.session_id))
    }

    /// Ends every slot of a session that ended: drops the keys, commitments
    /// and follow token they hold, and wakes their waiting status requests,
    /// which then get [`PairingRejected::SessionEnded`]. The emptied slots
    /// are kept until the sweep, so late requests get that rejection too.
    /// Returns the number of slots ended.
    pub(crate) fn end_session(&self, session_id: SessionId) -> usize {
        let mut slots = self.lock();
        let mut ended = 0;
        for slot in slots.values_mut() {
            if slot.session_id != session_id || slot.session_ended {
                continue;
            }
            slot.session_ended = true;
            slot.joiner_token_hash = None;
            slot.commitment = None;
            slot.device_key = None;
            slot.clinician_public = None;
            slot.joiner_public = None;
            slot.wrapped_key = None;
            slot.follow_token = None;
            slot.changed.send_replace(());
            ended += 1;
        }
        ended
    }

    /// Returns the number of slots kept, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn with_slot<T>(
        &self,
        id: PairingId,
        now: Instant,
        step: impl FnOnce(&mut Slot) -> Result<T, PairingRejected>,
    ) -> Result<T, PairingRejected> {
        let mut slots = self.lock();
        step(live_slot(&mut slots, id, now)?)
    }

    fn with_clinician_slot<T>(
        &self,
        id: PairingId,
        session_id: SessionId,
        now: Instant,
        step: impl FnOnce(&mut Slot) -> Result<T, PairingRejected>,
    ) -> Result<T, PairingRejected> {
        self.with_slot(id, now, |slot| {
            // A slot of another session is reported as unknown, so a
            // clinician learns nothing about other sessions' slots.
            if slot.session_id != session_id {
                return Err(PairingRejected::Unknown);
            }
            step(slot)
        })
    }

    fn with_joiner_slot<T>(
        &self,
        id: PairingId,
        joiner_token: &Secret,
        now: Instant,
        step: impl FnOnce(&mut Slot) -> Result<T, PairingRejected>,
    ) -> Result<T, PairingRejected> {
        self.with_slot(id, now, |slot| {
            check_joiner(slot, joiner_token)?;
            step(slot)
        })
    }

    /// Drops slots that expired more than one lifetime ago. Until then an
    /// expired slot is reported as [`PairingRejected::Expired`] rather than
    /// [`PairingRejected::Unknown`].
    fn sweep(&self, slots: &mut HashMap<PairingId, Slot>, now: Instant) {
        slots.retain(|_, slot| slot.expires_at + self.lifetime > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PairingId, Slot>> {
        // A panic while the lock was held leaves the map consistent, because
        // every step changes a slot only after its checks passed.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn live_slot(
    slots: &mut HashMap<PairingId, Slot>,
    id: PairingId,
    now: Instant,
) -> Result<&mut Slot, PairingRejected> {
    let slot = slots.get_mut(&id).ok_or(PairingRejected::Unknown)?;
    if slot.session_ended {
        return Err(PairingRejected::SessionEnded);
    }
    if slot.expires_at <= now {
        return Err(PairingRejected::Expired);
    }
    Ok(slot)
}

fn check_joiner(slot: &Slot, joiner_token: &Secret) -> Result<(), PairingRejected> {
    match &slot.joiner_token_hash {
        Some(hash) if hashes_match(hash, &joiner_token.hash()) => Ok(()),
        _ => Err(PairingRejected::WrongJoiner),
    }
}

fn cancel(slot: &mut Slot) -> Result<(), PairingRejected> {
    match slot.state {
        PairingState::Cancelled => Ok(()),
        PairingState::Completed => Err(PairingRejected::OutOfOrder {
            state: PairingState::Completed,
            expected: PairingState::Revealed,
        }),
        _ => {
            slot.advance(PairingState::Cancelled);
            Ok(())
        }
    }
}

fn purpose_of(slot: &Slot) -> PairingPurpose {
    match slot.owner {
        Some(_) => PairingPurpose::ClinicianDevice,
        None => PairingPurpose::Patient,
    }
}

fn view(slot: &Slot, side: Side, now: Instant) -> SlotView {
    let for_clinician = side == Side::Clinician;
    SlotView {
        state: slot.state,
        expires_in: slot.expires_at.saturating_duration_since(now),
        session_id: slot.session_id,
        purpose: purpose_of(slot),
        commitment: slot.commitment.filter(|_| for_clinician),
        device_key: slot.device_key.filter(|_| for_clinician),
        clinician_public: slot.clinician_public.filter(|_| !for_clinician),
        joiner_public: slot.joiner_public.filter(|_| for_clinician),
        wrapped_key: slot.wrapped_key.clone().filter(|_| !for_clinician),
        follow_token: None,
        changes: slot.changed.subscribe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(60);

    fn session(byte: u8) -> SessionId {
        SessionId([byte; 16])
    }

    /// Runs steps 1 to 3 and returns the slot id and the joiner token.
    fn exchange_keys(mailbox: &PairingMailbox, now: Instant) -> (PairingId, Secret) {
        let (id, _) = mailbox.open(session(1), now).unwrap();
        let (token, _) = mailbox.commit(id, [1; 32], None, now).unwrap();
        mailbox.respond(id, session(1), [2; 32], now).unwrap();
        mailbox.reveal(id, &token, [3; 32], now).unwrap();
        (id, token)
    }

    #[test]
    fn slot_hands_out_token_once() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (id, token) = exchange_keys(&mailbox, now);

        let clinician = mailbox.clinician_view(id, session(1), now).unwrap();
        assert_eq!(clinician.state, PairingState::Revealed);
        assert_eq!(clinician.commitment, Some([1; 32]));
        assert_eq!(clinician.joiner_public, Some([3; 32]));
        assert_eq!(clinician.clinician_public, None);

        mailbox
            .complete(id, session(1), vec![5; 112], Some(random_token()), now)
            .unwrap();
        let joiner = mailbox.joiner_view(id, &token, now).unwrap();
        assert_eq!(joiner.state, PairingState::Completed);
        assert_eq!(joiner.clinician_public, Some([2; 32]));
        assert_eq!(joiner.wrapped_key, Some(vec![5; 112]));
        assert!(joiner.follow_token.is_some());
        assert_eq!(joiner.commitment, None);
        assert_eq!(
            mailbox.joiner_view(id, &token, now).err(),
            Some(PairingRejected::Unknown)
        );
    }

    #[test]
    fn out_of_order_steps_are_rejected() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (id, _) = mailbox.open(session(1), now).unwrap();
        assert_eq!(
            mailbox.respond(id, session(1), [2; 32], now),
            Err(PairingRejected::OutOfOrder {
                state: PairingState::Open,
                expected: PairingState::Committed
            })
        );
        let (token, _) = mailbox.commit(id, [1; 32], None, now).unwrap();
        assert!(matches!(
            mailbox.reveal(id, &token, [3; 32], now),
            Err(PairingRejected::OutOfOrder { .. })
        ));
        assert!(matches!(
            mailbox.complete(id, session(1), vec![0; 112], Some(random_token()), now),
            Err(PairingRejected::OutOfOrder { .. })
        ));
    }

    #[test]
    fn second_joiner_and_wrong_token_are_rejected() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (id, _) = mailbox.open(session(1), now).unwrap();
        mailbox.commit(id, [1; 32], None, now).unwrap();
        assert_eq!(
            mailbox.commit(id, [9; 32], None, now).err(),
            Some(PairingRejected::AlreadyJoined)
        );
        mailbox.respond(id, session(1), [2; 32], now).unwrap();
        assert_eq!(
            mailbox.reveal(id, &random_token(), [3; 32], now),
            Err(PairingRejected::WrongJoiner)
        );
    }

    #[test]
    fn other_session_sees_unknown_slot() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (id, _) = mailbox.open(session(1), now).unwrap();
        assert_eq!(
            mailbox.clinician_view(id, session(2), now).err(),
            Some(PairingRejected::Unknown)
        );
    }

    #[test]
    fn expired_slot_is_reported_then_swept() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let start = Instant::now();
        let (id, _) = mailbox.open(session(1), start).unwrap();
        let expired = start + LIFETIME;
        assert_eq!(
            mailbox.commit(id, [1; 32], None, expired).err(),
            Some(PairingRejected::Expired)
        );
        mailbox.open(session(2), start + 2 * LIFETIME).unwrap();
        assert_eq!(mailbox.len(), 1);
    }

    #[test]
    fn cancelled_slot_rejects_steps() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (id, token) = exchange_keys(&mailbox, now);
        mailbox.cancel_by_joiner(id, &token, now).unwrap();
        assert_eq!(
            mailbox.complete(id, session(1), vec![0; 112], Some(random_token()), now),
            Err(PairingRejected::Cancelled)
        );
        let view = mailbox.clinician_view(id, session(1), now).unwrap();
        assert_eq!(view.state, PairingState::Cancelled);
    }

    #[test]
    fn ended_session_rejects_its_slots() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (committed, token) = exchange_keys(&mailbox, now);
        let (open, _) = mailbox.open(session(1), now).unwrap();
        let (other, _) = mailbox.open(session(2), now).unwrap();
        let mut changes = mailbox
            .clinician_view(committed, session(1), now)
            .unwrap()
            .changes;
        changes.borrow_and_update();

        assert_eq!(mailbox.end_session(session(1)), 2);
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            mailbox.commit(open, [1; 32], None, now).err(),
            Some(PairingRejected::SessionEnded)
        );
        assert_eq!(
            mailbox.joiner_view(committed, &token, now).err(),
            Some(PairingRejected::SessionEnded)
        );
        assert_eq!(
            mailbox.clinician_view(committed, session(1), now).err(),
            Some(PairingRejected::SessionEnded)
        );
        assert_eq!(mailbox.session_of(other, now), Ok(session(2)));
        assert_eq!(mailbox.end_session(session(1)), 0);
    }

    #[test]
    fn slots_per_session_are_bounded() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        for _ in 0..MAX_SLOTS_PER_SESSION {
            mailbox.open(session(1), now).unwrap();
        }
        assert_eq!(
            mailbox.open(session(1), now).err(),
            Some(PairingRejected::SessionFull)
        );
        mailbox.open(session(2), now).unwrap();
    }

    #[test]
    fn slots_in_total_are_bounded() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        for index in 0..MAX_SLOTS {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(index as u64).to_be_bytes());
            mailbox.open(SessionId(id), now).unwrap();
        }
        assert_eq!(
            mailbox.open(session(0xff), now).err(),
            Some(PairingRejected::RelayFull)
        );
    }

    #[test]
    fn device_slot_admits_only_its_opener() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let owner = SlotOwner {
            user_id: "user-1".into(),
            organization_id: "org-1".into(),
        };
        let (id, _) = mailbox
            .open_for(session(1), Some(owner.clone()), now)
            .unwrap();
        assert_eq!(
            mailbox.purpose(id, now),
            Ok(PairingPurpose::ClinicianDevice)
        );

        let other_user = SlotOwner {
            user_id: "user-2".into(),
            organization_id: "org-1".into(),
        };
        let other_org = SlotOwner {
            user_id: "user-1".into(),
            organization_id: "org-2".into(),
        };
        assert_eq!(
            mailbox.commit(id, [1; 32], None, now).err(),
            Some(PairingRejected::SignInRequired)
        );
        assert_eq!(
            mailbox
                .commit(id, [1; 32], Some((&other_user, [4; 32])), now)
                .err(),
            Some(PairingRejected::OtherClinician)
        );
        assert_eq!(
            mailbox
                .commit(id, [1; 32], Some((&other_org, [4; 32])), now)
                .err(),
            Some(PairingRejected::OtherClinician)
        );
        mailbox
            .commit(id, [1; 32], Some((&owner, [4; 32])), now)
            .unwrap();
        let view = mailbox.clinician_view(id, session(1), now).unwrap();
        assert_eq!(view.device_key, Some([4; 32]));
        assert_eq!(view.purpose, PairingPurpose::ClinicianDevice);
    }

    #[test]
    fn patient_slot_rejects_a_device_key() {
        let mailbox = PairingMailbox::new(LIFETIME);
        let now = Instant::now();
        let (id, _) = mailbox.open(session(1), now).unwrap();
        let owner = SlotOwner {
            user_id: "user-1".into(),
            organization_id: "org-1".into(),
        };
        assert_eq!(
            mailbox
                .commit(id, [1; 32], Some((&owner, [4; 32])), now)
                .err(),
            Some(PairingRejected::NotDeviceSlot)
        );
        assert_eq!(mailbox.purpose(id, now), Ok(PairingPurpose::Patient));
    }
}
