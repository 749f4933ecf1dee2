//! Pairing a device without an invite link, and wrapping session keys for it.
//!
//! A joining device (a patient's phone, or the clinician's second device) and
//! the clinician device exchange ephemeral X25519 public keys (RFC 7748)
//! through the relay. The joining device first sends only a commitment, a
//! SHA-256 hash of its public key, and reveals the key after it has received
//! the clinician device's key. So a relay that substitutes keys must choose
//! each substitute before it learns the key it is combined with, and the two
//! pairing codes match by chance only (one in 2^32 for words).
//!
//! Message order, all carried by the relay:
//!
//! 1. joiner to clinician: [`Commitment`]
//! 2. clinician to joiner: the clinician device's public key
//! 3. joiner to clinician: the joiner's public key, checked against the commitment
//! 4. both devices show the [`PairingCode`], and both people confirm that it matches
//! 5. clinician to joiner: a wrapped key for key epoch 0, and later one per rotation
//!
//! The wrap is AES-256-GCM under a key derived with HKDF-SHA256 from the
//! X25519 shared secret, with its own label for each purpose and direction.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::authorship::PublisherKey;
use crate::ids::SessionId;
use crate::keys::{hkdf_sha256, SessionKey};
use crate::words;

const COMMIT_LABEL: &[u8] = b"sealcast v1 pairing commit";
const CODE_LABEL: &[u8] = b"sealcast v1 pairing code";
const WRAP_TO_JOINER_LABEL: &[u8] = b"sealcast v1 wrap to joiner";

mod device;

pub use device::{
    DeviceGrant, MAX_DEVICE_WRAPPED_LEN, MAX_GRANT_PAIRED_DEVICES, MAX_INVITE_TOKEN_LEN,
    MIN_DEVICE_WRAPPED_LEN,
};

/// Length of the wrapped payload before encryption: session id, session key, publisher key.
pub const PAYLOAD_LEN: usize = 16 + 32 + 32;

/// Length of a wrapped key: epoch, nonce, encrypted payload and tag.
pub const WRAPPED_KEY_LEN: usize = 4 + 12 + PAYLOAD_LEN + 16;

/// Length of a stored [`PairedJoiner`]: shared secret and both public keys.
pub const PAIRED_STATE_LEN: usize = 32 + 32 + 32;

/// A failure to pair or to unwrap a key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PairingError {
    /// The X25519 result is all zeros: the peer sent a low-order point.
    #[error("the peer's X25519 public key is a low-order point: pairing aborted, start again")]
    NonContributory,
    /// The revealed public key does not hash to the commitment sent first.
    #[error("the joining device's public key does not match its commitment: pairing aborted, start again")]
    CommitmentMismatch,
    /// A wrapped key has the wrong length.
    #[error("wrapped key is {0} bytes, expected {WRAPPED_KEY_LEN}")]
    InvalidLength(usize),
    /// A wrapped key failed authentication: altered, or wrapped for another pairing.
    #[error("wrapped key failed to decrypt: it was altered or wrapped for another device")]
    Decrypt,
    /// The publisher key inside a wrapped payload is not a valid Ed25519 key.
    #[error("wrapped payload holds an invalid publisher key")]
    InvalidPublisherKey,
    /// A device grant's endorsement names another key, another session or
    /// epoch, or is not signed by the first device.
    #[error("the endorsement in the wrapped payload is invalid: {0}")]
    InvalidEndorsement(&'static str),
    /// A device grant's content is malformed.
    #[error("the wrapped payload is malformed: {0}")]
    MalformedPayload(&'static str),
    /// A device grant would carry more paired devices than it may.
    #[error("the session has {0} paired devices, more than the {MAX_GRANT_PAIRED_DEVICES} a device grant carries")]
    TooManyPairedDevices(usize),
    /// A device step was used on a pairing with a patient device, or the reverse.
    #[error("this pairing is not a pairing of two devices of one clinician")]
    NotDevicePairing,
}

/// Computes X25519 (RFC 7748 section 5) of a scalar and a u-coordinate and
/// rejects the all-zero output that every low-order input point gives
/// (RFC 7748 section 6.1).
pub fn x25519(scalar: &[u8; 32], u: &[u8; 32]) -> Result<[u8; 32], PairingError> {
    let output = x25519_dalek::x25519(*scalar, *u);
    if bool::from(output.ct_eq(&[0u8; 32])) {
        return Err(PairingError::NonContributory);
    }
    Ok(output)
}

/// An ephemeral X25519 key pair, made fresh for each pairing. The secret zeroizes on drop.
pub struct PairingKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl PairingKeyPair {
    /// Makes a key pair from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut_slice());
        Self::from_secret_bytes(&secret)
    }

    /// Rebuilds a key pair from a 32-byte secret, for test vectors.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        let secret = StaticSecret::from(*secret);
        let public = PublicKey::from(&secret);
        PairingKeyPair { secret, public }
    }

    /// Returns the public key, the 32-byte u-coordinate sent to the peer.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    fn agree(&self, peer: &[u8; 32]) -> Result<SharedSecret, PairingError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(PairingError::NonContributory);
        }
        Ok(SharedSecret(Box::new(shared.to_bytes())))
    }
}

impl fmt::Debug for PairingKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingKeyPair")
            .field("public", &self.public.as_bytes())
            .finish_non_exhaustive()
    }
}

/// The X25519 shared secret of one pairing.
#[derive(Zeroize, ZeroizeOnDrop)]
struct SharedSecret(Box<[u8; 32]>);

/// SHA-256 of the label `sealcast v1 pairing commit` and the joiner's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commitment(pub [u8; 32]);

impl Commitment {
    /// Computes the commitment to a joiner public key.
    pub fn to_public_key(joiner_public: &[u8; 32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(COMMIT_LABEL);
        hash.update(joiner_public);
        Commitment(hash.finalize().into())
    }

    /// Computes the commitment of a clinician's second device, which also
    /// binds its Ed25519 identity key: `SHA256(label || A || identity key)`.
    pub fn to_device_keys(joiner_public: &[u8; 32], device_key: &[u8; 32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(device::DEVICE_COMMIT_LABEL);
        hash.update(joiner_public);
        hash.update(device_key);
        Commitment(hash.finalize().into())
    }
}

/// The short authentication code both devices show: four words, or six digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairingCode(pub [u8; 4]);

impl PairingCode {
    /// Derives the code: `HKDF(no salt, joiner public || clinician public, label, 4)`.
    pub fn derive(joiner_public: &[u8; 32], clinician_public: &[u8; 32]) -> Self {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(joiner_public);
        ikm[32..].copy_from_slice(clinician_public);
        let mut code = [0u8; 4];
        expand_fixed(None, &ikm, CODE_LABEL, &mut code);
        PairingCode(code)
    }

    /// Returns the code as four words of the fingerprint word list, 32 bits.
    pub fn words(&self) -> [&'static str; 4] {
        self.0.map(|byte| words::WORDS[usize::from(byte)])
    }

    /// Returns the code as six decimal digits, for screens without words: the
    /// big-endian `u32` of the code modulo 1,000,000 with leading zeros, about 20 bits.
    pub fn digits(&self) -> String {
        format!("{:06}", u32::from_be_bytes(self.0) % 1_000_000)
    }
}

/// The joining device's side of a pairing, before the clinician device's key arrives.
#[derive(Debug)]
pub struct JoinerPairing {
    keys: PairingKeyPair,
    device_key: Option<PublisherKey>,
}

impl JoinerPairing {
    /// Starts a pairing with a fresh key pair, returning the commitment to send first.
    pub fn start() -> (Self, Commitment) {
        Self::with_key_pair(PairingKeyPair::generate())
    }

    /// Starts a pairing with a given key pair, for test vectors.
    pub fn with_key_pair(keys: PairingKeyPair) -> (Self, Commitment) {
        let commitment = Commitment::to_public_key(&keys.public_key());
        let joiner = JoinerPairing {
            keys,
            device_key: None,
        };
        (joiner, commitment)
    }

    /// Starts the pairing of a clinician's second device, whose identity key
    /// `device_key` the commitment and the code bind.
    pub fn start_for_device(device_key: PublisherKey) -> (Self, Commitment) {
        Self::with_key_pair_for_device(PairingKeyPair::generate(), device_key)
    }

    /// Starts a second device's pairing with a given key pair, for test vectors.
    pub fn with_key_pair_for_device(
        keys: PairingKeyPair,
        device_key: PublisherKey,
    ) -> (Self, Commitment) {
        let commitment = Commitment::to_device_keys(&keys.public_key(), &device_key.to_bytes());
        let joiner = JoinerPairing {
            keys,
            device_key: Some(device_key),
        };
        (joiner, commitment)
    }

    /// Takes the clinician device's public key and returns the joiner's public
    /// key to reveal, with the state that shows the code.
    pub fn receive_clinician_key(
        self,
        clinician_public: [u8; 32],
    ) -> Result<(UnconfirmedJoiner, [u8; 32]), PairingError> {
        let shared = self.keys.agree(&clinician_public)?;
        let joiner_public = self.keys.public_key();
        let state = UnconfirmedJoiner {
            link: PairedLink {
                shared,
                joiner_public,
                clinician_public,
                device_key: self.device_key,
            },
        };
        Ok((state, joiner_public))
    }
}

/// The joining device after the key exchange, until its user confirms the code.
#[derive(Debug)]
pub struct UnconfirmedJoiner {
    link: PairedLink,
}

impl UnconfirmedJoiner {
    /// Returns the code to show.
    pub fn code(&self) -> PairingCode {
        self.link.code()
    }

    /// Records that the user confirmed that both screens show the same code.
    pub fn confirm(self) -> PairedClinician {
        PairedClinician { link: self.link }
    }
}

/// The joining device's lasting view of a confirmed pairing: it unwraps the
/// keys the clinician device sends, now and after each rotation.
#[derive(Debug)]
pub struct PairedClinician {
    link: PairedLink,
}

impl PairedClinician {
    /// Checks and decrypts a wrapped key.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<KeyGrant, PairingError> {
        self.link.unwrap_key(wrapped)
    }

    /// Checks and decrypts the session a first device handed to this second
    /// device, and checks that its endorsement names this device's key.
    pub fn unwrap_device_grant(&self, wrapped: &[u8]) -> Result<DeviceGrant, PairingError> {
        let own_key = self.link.device_key.ok_or(PairingError::NotDevicePairing)?;
        device::unwrap(&self.link, wrapped, &own_key)
    }
}

/// The clinician device's side of a pairing, after a joiner's commitment arrived.
#[derive(Debug)]
pub struct ClinicianPairing {
    keys: PairingKeyPair,
    commitment: Commitment,
    device_key: Option<PublisherKey>,
}

impl ClinicianPairing {
    /// Responds to a commitment with a fresh key pair, returning the public key to send.
    pub fn respond(commitment: Commitment) -> (Self, [u8; 32]) {
        Self::respond_with_key_pair(commitment, PairingKeyPair::generate())
    }

    /// Responds to a commitment with a given key pair, for test vectors.
    pub fn respond_with_key_pair(commitment: Commitment, keys: PairingKeyPair) -> (Self, [u8; 32]) {
        let public = keys.public_key();
        let pairing = ClinicianPairing {
            keys,
            commitment,
            device_key: None,
        };
        (pairing, public)
    }

    /// Responds to the commitment of a clinician's second device, which
    /// named its identity key `device_key` next to the commitment. The
    /// commitment check then covers that key too.
    pub fn respond_to_device(commitment: Commitment, device_key: PublisherKey) -> (Self, [u8; 32]) {
        Self::respond_to_device_with_key_pair(commitment, device_key, PairingKeyPair::generate())
    }

    /// Responds to a second device with a given key pair, for test vectors.
    pub fn respond_to_device_with_key_pair(
        commitment: Commitment,
        device_key: PublisherKey,
        keys: PairingKeyPair,
    ) -> (Self, [u8; 32]) {
        let public = keys.public_key();
        let pairing = ClinicianPairing {
            keys,
            commitment,
            device_key: Some(device_key),
        };
        (pairing, public)
    }

    /// Checks the revealed joiner key against the commitment and agrees on the shared secret.
    pub fn receive_joiner_key(
        self,
        joiner_public: [u8; 32],
    ) -> Result<UnconfirmedClinician, PairingError> {
        let expected = match &self.device_key {
            Some(device_key) => Commitment::to_device_keys(&joiner_public, &device_key.to_bytes()),
            None => Commitment::to_public_key(&joiner_public),
        };
        if !bool::from(expected.0.ct_eq(&self.commitment.0)) {
            return Err(PairingError::CommitmentMismatch);
        }
        let shared = self.keys.agree(&joiner_public)?;
        let link = PairedLink {
            shared,
            joiner_public,
            clinician_public: self.keys.public_key(),
            device_key: self.device_key,
        };
        Ok(UnconfirmedClinician { link })
    }
}

/// The clinician device after the key exchange, until its user confirms the code.
#[derive(Debug)]
pub struct UnconfirmedClinician {
    link: PairedLink,
}

impl UnconfirmedClinician {
    /// Returns the code to show.
    pub fn code(&self) -> PairingCode {
        self.link.code()
    }

    /// Records that the user confirmed that both screens show the same code.
    pub fn confirm(self) -> PairedJoiner {
        PairedJoiner { link: self.link }
    }
}

/// The clinician device's lasting view of a confirmed pairing: it wraps the
/// session key of each epoch for the joined device.
#[derive(Debug)]
pub struct PairedJoiner {
    link: PairedLink,
}

impl PairedJoiner {
    /// Wraps a grant with a random nonce.
    pub fn wrap_key(&self, grant: &KeyGrant) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.wrap_key_with_nonce(grant, nonce)
    }

    /// Wraps a grant with a given nonce, for test vectors. A nonce must never
    /// be used twice for one pairing and epoch, so use [`Self::wrap_key`].
    pub fn wrap_key_with_nonce(&self, grant: &KeyGrant, nonce: [u8; 12]) -> Vec<u8> {
        self.link.wrap_key(grant, nonce)
    }

    /// Returns the joined device's X25519 public key, which identifies it to the clinician device.
    pub fn joiner_public_key(&self) -> [u8; 32] {
        self.link.joiner_public
    }

    /// Returns the identity key of a second device of the clinician, which
    /// the commitment and the confirmed code bound, or `None` for a patient device.
    pub fn device_key(&self) -> Option<PublisherKey> {
        self.link.device_key
    }

    /// Wraps a session for a second device of the clinician with a random nonce.
    pub fn wrap_device_grant(&self, grant: &DeviceGrant) -> Result<Vec<u8>, PairingError> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.wrap_device_grant_with_nonce(grant, nonce)
    }

    /// Wraps a session for a second device with a given nonce, for test vectors.
    pub fn wrap_device_grant_with_nonce(
        &self,
        grant: &DeviceGrant,
        nonce: [u8; 12],
    ) -> Result<Vec<u8>, PairingError> {
        device::wrap(&self.link, grant, nonce)
    }

    /// Returns the pairing as [`PAIRED_STATE_LEN`] bytes (shared secret,
    /// joiner public key, clinician public key), so that the clinician device
    /// can keep it in its key store and wrap later epochs in another process.
    /// The bytes are secret: they open every key wrapped for this device.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; PAIRED_STATE_LEN]> {
        let mut bytes = Zeroizing::new([0u8; PAIRED_STATE_LEN]);
        bytes[..32].copy_from_slice(self.link.shared.0.as_slice());
        bytes[32..64].copy_from_slice(&self.link.joiner_public);
        bytes[64..].copy_from_slice(&self.link.clinician_public);
        bytes
    }

    /// Rebuilds a pairing from the bytes of [`Self::to_secret_bytes`].
    /// Rejects an all-zero shared secret with [`PairingError::NonContributory`].
    pub fn from_secret_bytes(bytes: &[u8; PAIRED_STATE_LEN]) -> Result<Self, PairingError> {
        let mut shared = Box::new([0u8; 32]);
        shared.copy_from_slice(&bytes[..32]);
        let shared = SharedSecret(shared);
        if bool::from(shared.0.ct_eq(&[0u8; 32])) {
            return Err(PairingError::NonContributory);
        }
        let mut joiner_public = [0u8; 32];
        joiner_public.copy_from_slice(&bytes[32..64]);
        let mut clinician_public = [0u8; 32];
        clinician_public.copy_from_slice(&bytes[64..]);
        Ok(PairedJoiner {
            link: PairedLink {
                shared,
                joiner_public,
                clinician_public,
                device_key: None,
            },
        })
    }
}

/// The content of a wrapped key: everything a joined device needs to follow a session.
pub struct KeyGrant {
    /// The epoch this key belongs to, as in the frame header's key epoch.
    pub key_epoch: u32,
    /// The session the key belongs to.
    pub session_id: SessionId,
    /// The session key of this epoch.
    pub session_key: SessionKey,
    /// The publishing device's Ed25519 identity key, to check authorship.
    pub publisher: PublisherKey,
}

impl fmt::Debug for KeyGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGrant")
            .field("key_epoch", &self.key_epoch)
            .field("session_id", &self.session_id)
            .field("session_key", &self.session_key)
            .field("publisher", &self.publisher)
            .finish()
    }
}

/// The shared secret and both public keys of one confirmed pairing.
struct PairedLink {
    shared: SharedSecret,
    joiner_public: [u8; 32],
    clinician_public: [u8; 32],
    /// The joiner's identity key when it is a second device of the clinician.
    device_key: Option<PublisherKey>,
}

impl fmt::Debug for PairedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairedLink")
            .field("joiner_public", &self.joiner_public)
            .field("clinician_public", &self.clinician_public)
            .field("device_key", &self.device_key)
            .finish_non_exhaustive()
    }
}

impl PairedLink {
    fn code(&self) -> PairingCode {
        match &self.device_key {
            Some(device_key) => {
                device::device_code(&self.joiner_public, &self.clinician_public, device_key)
            }
            None => PairingCode::derive(&self.joiner_public, &self.clinician_public),
        }
    }

    /// Derives the wrap key of one epoch:
    /// `HKDF(joiner public || clinician public, shared, label || u32(epoch), 32)`,
    /// with the label of the link's purpose.
    fn wrap_cipher(&self, key_epoch: u32) -> Aes256Gcm {
        let label = match self.device_key {
            Some(_) => device::WRAP_TO_DEVICE_LABEL,
            None => WRAP_TO_JOINER_LABEL,
        };
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(&self.joiner_public);
        salt[32..].copy_from_slice(&self.clinician_public);
        let mut info = label.to_vec();
        info.extend_from_slice(&key_epoch.to_be_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        expand_fixed(
            Some(&salt),
            self.shared.0.as_slice(),
            &info,
            key.as_mut_slice(),
        );
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_slice()))
    }

    fn wrap_key(&self, grant: &KeyGrant, nonce: [u8; 12]) -> Vec<u8> {
        let epoch = grant.key_epoch.to_be_bytes();
        let mut payload = Zeroizing::new([0u8; PAYLOAD_LEN]);
        payload[..16].copy_from_slice(grant.session_id.as_bytes());
        payload[16..48].copy_from_slice(grant.session_key.expose_bytes());
        payload[48..].copy_from_slice(&grant.publisher.to_bytes());

        let cipher = self.wrap_cipher(grant.key_epoch);
        let sealed = cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: payload.as_slice(),
                aad: &epoch,
            },
        );
        let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
        out.extend_from_slice(&epoch);
        out.extend_from_slice(&nonce);
        // The aes-gcm crate fails encryption only for plaintexts over 64 GiB,
        // and this one is 80 bytes.
        out.extend_from_slice(&sealed.unwrap_or_default());
        out
    }

    fn unwrap_key(&self, wrapped: &[u8]) -> Result<KeyGrant, PairingError> {
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(PairingError::InvalidLength(wrapped.len()));
        }
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&wrapped[..4]);
        let key_epoch = u32::from_be_bytes(epoch);

        let cipher = self.wrap_cipher(key_epoch);
        let payload = cipher
            .decrypt(
                Nonce::from_slice(&wrapped[4..16]),
                Payload {
                    msg: &wrapped[16..],
                    aad: &epoch,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| PairingError::Decrypt)?;

        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(&payload[..16]);
        let mut session_key = Zeroizing::new([0u8; 32]);
        session_key.copy_from_slice(&payload[16..48]);
        let mut publisher = [0u8; 32];
        publisher.copy_from_slice(&payload[48..]);
        Ok(KeyGrant {
            key_epoch,
            session_id: SessionId(session_id),
            session_key: SessionKey::from_bytes(*session_key),
            publisher: PublisherKey::from_bytes(&publisher)
                .map_err(|_| PairingError::InvalidPublisherKey)?,
        })
    }
}

/// Computes HKDF-SHA256 into `out`, which every caller sizes at 4 or 32 bytes.
fn expand_fixed(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], out: &mut [u8]) {
    // HKDF-SHA256 rejects only outputs over 8,160 bytes; every caller asks for 4 or 32.
    if hkdf_sha256(salt, ikm, info, out).is_err() {
        out.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let keys = PairingKeyPair::from_secret_bytes(&[3; 32]);
        let text = format!("{keys:?}");
        assert!(!text.contains("3, 3, 3"), "{text}");
    }

    #[test]
    fn stored_pairing_wraps_for_the_same_joiner() {
        let (joiner, commitment) =
            JoinerPairing::with_key_pair(PairingKeyPair::from_secret_bytes(&[1; 32]));
        let (clinician, clinician_public) =
            ClinicianPairing::respond_with_key_pair(commitment, PairingKeyPair::generate());
        let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
        let clinician = clinician
            .receive_joiner_key(joiner_public)
            .unwrap()
            .confirm();
        let joiner = joiner.confirm();

        let stored = clinician.to_secret_bytes();
        let restored = PairedJoiner::from_secret_bytes(&stored).unwrap();
        assert_eq!(restored.joiner_public_key(), joiner_public);
        let grant = KeyGrant {
            key_epoch: 3,
            session_id: SessionId([5; 16]),
            session_key: SessionKey::from_bytes([6; 32]),
            publisher: PublisherKey::from_bytes(&[0x11; 32]).unwrap(),
        };
        let opened = joiner.unwrap_key(&restored.wrap_key(&grant)).unwrap();
        assert_eq!(opened.key_epoch, 3);
        assert_eq!(opened.session_key.expose_bytes(), &[6; 32]);
    }

    #[test]
    fn stored_pairing_rejects_zero_secret() {
        let mut bytes = [9u8; PAIRED_STATE_LEN];
        bytes[..32].fill(0);
        assert_eq!(
            PairedJoiner::from_secret_bytes(&bytes).err(),
            Some(PairingError::NonContributory)
        );
    }

    #[test]
    fn digits_are_six_characters() {
        assert_eq!(PairingCode([0, 0, 0, 7]).digits(), "000007");
        assert_eq!(PairingCode([0xff; 4]).digits(), "967295");
    }
}
