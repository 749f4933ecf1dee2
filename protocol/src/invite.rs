//! The invite link: `https://HOST/join?token=TOKEN#secret=KEY`.
//!
//! The token names the invite on the relay. The key sits in the fragment,
//! which browsers never send to a server. Both are base64url. The parser is
//! tolerant of what mail and chat clients do to links (surrounding
//! whitespace, line breaks inside the link, `#` escaped as `%23`, `=`
//! padding) and rejects anything else with a message a patient can act on.

use std::fmt;

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use thiserror::Error;
use url::Url;

use crate::authorship::PublisherKey;
use crate::error::InviteError;
use crate::keys::SessionKey;

/// Length in bytes of an invite token.
pub const TOKEN_LEN: usize = 32;

/// A parsed invite link.
#[derive(Clone)]
pub struct InviteLink {
    /// Base URL of the relay, for example `https://relay.example:8443/`.
    pub relay: Url,
    /// The invite token, unpadded base64url.
    pub token: String,
    /// The session key from the fragment.
    pub key: SessionKey,
}

impl InviteLink {
    /// Builds the link text.
    pub fn to_url(&self) -> String {
        let mut url = self.relay.clone();
        url.set_path("/join");
        url.set_query(Some(&format!("token={}", self.token)));
        url.set_fragment(Some(&format!("secret={}", self.key.to_base64url())));
        url.to_string()
    }

    /// Parses a link, tolerating the mangling mail and chat clients do.
    pub fn parse(text: &str) -> Result<Self, InviteError> {
        let url = Url::parse(&clean_link_text(text))
            .map_err(|err| InviteError::InvalidUrl(err.to_string()))?;

        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(InviteError::InvalidScheme(url.scheme().to_string()));
        }
        if url.path().trim_end_matches('/') != "/join" {
            return Err(InviteError::InvalidPath(url.path().to_string()));
        }

        let token = url
            .query_pairs()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
            .filter(|value| !value.is_empty())
            .ok_or(InviteError::MissingToken)?;
        let token = normalize_token(&token)?;

        let secret = url
            .fragment()
            .and_then(|fragment| {
                fragment
                    .split('&')
                    .find_map(|part| part.strip_prefix("secret="))
            })
            .filter(|secret| !secret.is_empty())
            .ok_or(InviteError::MissingSecret)?;
        let key = decode_key(secret)?;

        let mut relay = url.clone();
        relay.set_path("/");
        relay.set_query(None);
        relay.set_fragment(None);
        Ok(InviteLink { relay, token, key })
    }
}

impl fmt::Debug for InviteLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteLink")
            .field("relay", &self.relay.as_str())
            .field("token", &"[redacted]")
            .field("key", &self.key)
            .finish()
    }
}

/// An invite link with the optional fragment parameters that later versions
/// add: `publisher=` (the publishing device's Ed25519 key, unpadded
/// base64url) and `epoch=` (the key epoch of the secret, decimal). A link
/// without them parses with no publisher and epoch 0, and parsers that know
/// only [`InviteLink`] still read the token and key of a link that has them.
///
/// Producers write `#publisher=P&secret=K` (and `&epoch=N` when it is not 0):
/// with the publisher key first, a link cut short loses part of the secret
/// and fails to parse, instead of silently losing the publisher key.
#[derive(Debug, Clone)]
pub struct FollowInvite {
    /// The token, relay and key.
    pub link: InviteLink,
    /// The key followers check authorship with, when the link carries one.
    pub publisher: Option<PublisherKey>,
    /// The key epoch of `link.key`.
    pub key_epoch: u32,
}

/// An error parsing a [`FollowInvite`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FollowInviteError {
    /// The part every invite link has is invalid.
    #[error(transparent)]
    Invite(#[from] InviteError),
    /// `publisher=` is not unpadded base64url of a valid Ed25519 public key.
    #[error(
        "invite link publisher key is malformed: the link is damaged, ask the clinic for a new one"
    )]
    InvalidPublisherKey,
    /// `epoch=` is not a decimal number from 0 to 4294967295.
    #[error("invite link epoch is malformed: the link is damaged, ask the clinic for a new one")]
    InvalidEpoch,
}

impl FollowInvite {
    /// Builds the link text.
    pub fn to_url(&self) -> String {
        let mut fragment = String::new();
        if let Some(publisher) = &self.publisher {
            fragment.push_str(&format!("publisher={}&", publisher.to_base64url()));
        }
        fragment.push_str(&format!("secret={}", self.link.key.to_base64url()));
        if self.key_epoch != 0 {
            fragment.push_str(&format!("&epoch={}", self.key_epoch));
        }
        let mut url = self.link.relay.clone();
        url.set_path("/join");
        url.set_query(Some(&format!("token={}", self.link.token)));
        url.set_fragment(Some(&fragment));
        url.to_string()
    }

    /// Parses a link with the tolerance of [`InviteLink::parse`], then reads
    /// the first `publisher=` and `epoch=` parts of the fragment.
    pub fn parse(text: &str) -> Result<Self, FollowInviteError> {
        let mut cleaned = clean_link_text(text);
        if !cleaned.contains('#') {
            cleaned = cleaned.replacen("%23publisher=", "#publisher=", 1);
        }
        let link = InviteLink::parse(&cleaned)?;
        let url = Url::parse(&cleaned).map_err(|err| InviteError::InvalidUrl(err.to_string()))?;
        let fragment = url.fragment().unwrap_or_default();
        let parameter = |name: &str| {
            fragment
                .split('&')
                .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        };

        let publisher = parameter("publisher")
            .map(|text| {
                let bytes = decode_base64url(text).ok_or(FollowInviteError::InvalidPublisherKey)?;
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| FollowInviteError::InvalidPublisherKey)?;
                PublisherKey::from_bytes(&bytes).map_err(|_| FollowInviteError::InvalidPublisherKey)
            })
            .transpose()?;
        let key_epoch = parameter("epoch")
            .map(|text| {
                text.parse::<u32>()
                    .map_err(|_| FollowInviteError::InvalidEpoch)
            })
            .transpose()?
            .unwrap_or(0);
        Ok(FollowInvite {
            link,
            publisher,
            key_epoch,
        })
    }
}

/// Applies the first three parsing steps: removes whitespace, strips quotes
/// and angle brackets at both ends, and restores an escaped `#secret=`.
fn clean_link_text(text: &str) -> String {
    let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let cleaned = cleaned.trim_matches(|c| c == '<' || c == '>' || c == '"' || c == '\'');
    unescape_fragment_marker(cleaned)
}

/// Turns a `%23secret=` that a mail client escaped back into `#secret=`, when the link has no real `#`.
fn unescape_fragment_marker(text: &str) -> String {
    if text.contains('#') {
        return text.to_string();
    }
    for escaped in ["%23secret=", "%23Secret="] {
        if let Some(index) = text.find(escaped) {
            return format!(
                "{}#secret={}",
                &text[..index],
                &text[index + escaped.len()..]
            );
        }
    }
    text.to_string()
}

/// Decodes base64url with or without `=` padding, rejecting the standard alphabet.
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    let text = text.replace("%3D", "=").replace("%3d", "=");
    if text.contains('=') {
        URL_SAFE.decode(&text).ok()
    } else {
        URL_SAFE_NO_PAD.decode(&text).ok()
    }
}

fn decode_key(secret: &str) -> Result<SessionKey, InviteError> {
    let mut bytes = decode_base64url(secret).ok_or(InviteError::InvalidSecretEncoding)?;
    let result = match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(array) => Ok(SessionKey::from_bytes(array)),
        Err(_) => Err(InviteError::InvalidSecretLength(bytes.len())),
    };
    zeroize::Zeroize::zeroize(&mut bytes);
    result
}

fn normalize_token(token: &str) -> Result<String, InviteError> {
    let bytes = decode_base64url(token).ok_or(InviteError::InvalidToken)?;
    if bytes.len() != TOKEN_LEN {
        return Err(InviteError::InvalidToken);
    }
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InviteLink {
        InviteLink {
            relay: Url::parse("https://relay.example:8443/").unwrap(),
            token: URL_SAFE_NO_PAD.encode([5u8; 32]),
            key: SessionKey::from_bytes([6; 32]),
        }
    }

    #[test]
    fn link_round_trip() {
        let link = sample();
        let parsed = InviteLink::parse(&link.to_url()).unwrap();
        assert_eq!(parsed.relay, link.relay);
        assert_eq!(parsed.token, link.token);
        assert_eq!(parsed.key.expose_bytes(), link.key.expose_bytes());
    }

    #[test]
    fn link_tolerates_mail_client_mangling() {
        let text = sample().to_url();
        let escaped = text.replace('#', "%23");
        assert!(InviteLink::parse(&escaped).is_ok());
        let wrapped = format!("  <{}\n{}>  ", &text[..30], &text[30..]);
        assert!(InviteLink::parse(&wrapped).is_ok());
        let padded = format!("{text}=");
        assert!(InviteLink::parse(&padded).is_ok());
    }

    #[test]
    fn link_rejects_missing_and_truncated_secret() {
        let text = sample().to_url();
        let without = text.split('#').next().unwrap();
        assert_eq!(
            InviteLink::parse(without).unwrap_err(),
            InviteError::MissingSecret
        );
        let truncated = &text[..text.len() - 5];
        assert!(matches!(
            InviteLink::parse(truncated).unwrap_err(),
            InviteError::InvalidSecretLength(_) | InviteError::InvalidSecretEncoding
        ));
    }

    #[test]
    fn link_rejects_standard_base64() {
        let text = sample().to_url();
        let (head, _) = text.split_once("#secret=").unwrap();
        let bad = format!("{head}#secret=++++++++++++++++++++++++++++++++++++++++++8");
        assert_eq!(
            InviteLink::parse(&bad).unwrap_err(),
            InviteError::InvalidSecretEncoding
        );
    }

    #[test]
    fn debug_hides_token_and_key() {
        let text = format!("{:?}", sample());
        assert!(!text.contains(&sample().token));
        assert!(!text.contains(&sample().key.to_base64url()));
    }
}
