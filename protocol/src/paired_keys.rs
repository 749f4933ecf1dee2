//! Delivery of later wrapped keys to paired devices, after a key rotation.
//!
//! A device that joined by pairing got the key of one epoch in the pairing
//! slot. When the clinician device rotates the key, it wraps the new key for
//! each paired device it still trusts ([`crate::pairing::PairedJoiner`]) and
//! posts it to the relay. The paired device long-polls for wrapped keys with
//! its follow token. The relay names a paired device by a [`DeviceId`] that
//! both it and the clinician device derive from the joiner's pairing public
//! key, so the relay needs no other identifier from the clinician device.
//!
//! | method and path | credential | purpose |
//! | --- | --- | --- |
//! | `POST /v1/sessions/{id}/devices/{device}/keys` | clinician of the session | store a wrapped key: [`crate::pairing_api::WrappedKeyBody`] |
//! | `DELETE /v1/sessions/{id}/devices/{device}` | clinician of the session | remove the device: revoke its follow token and delete its wrapped keys |
//! | `GET /v1/paired/keys?after=E&wait=S` | the paired device's follow token | [`PairedKeys`] of epochs after `E` |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const DEVICE_ID_LABEL: &[u8] = b"sealcast v1 paired device id";

/// Bytes of a [`DeviceId`].
pub const DEVICE_ID_LEN: usize = 8;

/// Wrapped keys the relay keeps per paired device. Posting a newer one drops
/// the oldest, because a follower opens only the newest epoch and the one
/// before it (protocol section 14.3).
pub const MAX_STORED_KEYS_PER_DEVICE: usize = 4;

/// Longest `wait` of a wrapped key fetch, in seconds.
pub const MAX_KEYS_WAIT_SECONDS: u64 = 30;

/// The id of a paired device within its session: the first 8 bytes of
/// `SHA256("sealcast v1 paired device id" || joiner public key)`, written as
/// 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; DEVICE_ID_LEN]);

impl DeviceId {
    /// Derives the id of the device whose pairing public key is `joiner_public`.
    pub fn of_joiner(joiner_public: &[u8; 32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(DEVICE_ID_LABEL);
        hash.update(joiner_public);
        let digest = hash.finalize();
        let mut id = [0u8; DEVICE_ID_LEN];
        id.copy_from_slice(&digest[..DEVICE_ID_LEN]);
        DeviceId(id)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// A text that is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device id must be {} hex digits, as `sealcast pair list` shows it", DEVICE_ID_LEN * 2)]
pub struct InvalidDeviceId;

impl FromStr for DeviceId {
    type Err = InvalidDeviceId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != DEVICE_ID_LEN * 2 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(InvalidDeviceId);
        }
        let mut id = [0u8; DEVICE_ID_LEN];
        for (index, byte) in id.iter_mut().enumerate() {
            let pair = &text[index * 2..index * 2 + 2];
            *byte = u8::from_str_radix(pair, 16).map_err(|_| InvalidDeviceId)?;
        }
        Ok(DeviceId(id))
    }
}

/// Response to a wrapped key fetch: the stored wrapped keys of epochs after
/// the requested one, oldest epoch first, each 112 bytes as unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairedKeys {
    /// Wrapped keys as in protocol section 12.3, each naming its epoch in its first 4 bytes.
    pub wrapped_keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_round_trips_as_hex() {
        let id = DeviceId::of_joiner(&[7; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<DeviceId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<DeviceId>().unwrap(), id);
    }

    #[test]
    fn device_id_depends_on_the_key() {
        assert_ne!(DeviceId::of_joiner(&[7; 32]), DeviceId::of_joiner(&[8; 32]));
    }

    #[test]
    fn malformed_device_ids_are_rejected() {
        for text in ["", "0123", "0123456789abcdeg", "0123456789abcdef0"] {
            assert!(text.parse::<DeviceId>().is_err(), "{text}");
        }
    }
}
