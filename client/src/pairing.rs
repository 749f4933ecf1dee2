//! HTTP calls to the relay's pairing mailbox, for both devices of a pairing.
//!
//! The clinician device authorizes its calls with its device token. The
//! joining device has no account: its first call returns a joiner token that
//! authorizes the rest. Status calls long-poll for up to [`WAIT_SECONDS`],
//! and [`PairingApi::clinician_wait`] and [`PairingApi::joiner_wait`] repeat
//! them until the slot reaches a wanted state.
//!
//! After a pairing, the clinician device posts the wrapped key of each
//! later key epoch for a paired device, or removes the device, and the
//! paired device long-polls for those keys with its follow token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::paired_keys::{DeviceId, PairedKeys};
use sealcast_protocol::pairing_api::{
    CommitmentBody, OpenPairingRequest, PairingId, PairingJoined, PairingOpened, PairingPurpose,
    PairingState, PairingStatus, PublicKeyBody, WrappedKeyBody,
};
use sealcast_protocol::SessionId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::api::{header_map, http_client, request_error, status_error};
use crate::auth::{Authorizer, BearerToken, SignedInDevice};
use crate::endpoint::route_url;
use crate::error::ClientError;
use crate::secret::SecretString;
use crate::tls::TlsSettings;

/// Seconds each status request long-polls, below the HTTP client's 30 s timeout.
pub const WAIT_SECONDS: u64 = 20;

/// Hint for pairing errors the relay returns.
const PAIRING_HINT: &str = "start a new pairing with `sealcast pair offer` on the clinician device";

/// Hint for a 401 to a signed-in device's pairing request.
const SIGN_IN_HINT: &str = "run `sealcast login` again on this device";

/// Hint for a 401 to `sealcast pair join`'s first step, which the relay
/// returns only for a slot opened with `sealcast pair offer --device`.
const DEVICE_SLOT_HINT: &str = "this pairing id belongs to a clinician's device hand-over, which needs `sealcast pair adopt` on the clinician's other device, not `sealcast pair join`";

/// The clause with which the relay's pairing errors end when the next step
/// is a new pairing. The client drops it, because [`PAIRING_HINT`] gives the
/// same advice and names the command.
const RELAY_NEW_PAIRING: &str = "start a new pairing";

/// A client for the pairing routes of one relay.
#[derive(Debug, Clone)]
pub struct PairingApi {
    client: reqwest::Client,
    relay: Url,
}

impl PairingApi {
    /// Creates a client for the relay at `relay`, trusting the roots in `tls`.
    pub fn new(relay: &Url, tls: &TlsSettings) -> Result<Self, ClientError> {
        Ok(PairingApi {
            client: http_client(tls)?,
            relay: relay.clone(),
        })
    }

    /// Opens a pairing slot for a session of the signed-in clinician, for a
    /// patient's device or for another device of the same clinician.
    pub async fn open(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        purpose: PairingPurpose,
    ) -> Result<PairingOpened, ClientError> {
        let url = self.clinician_url(session_id, None, "");
        let body = OpenPairingRequest { purpose };
        let response = self
            .clinician_send(device, reqwest::Method::POST, &url, Some(&body))
            .await?;
        let opened: PairingOpened = read_body(response, &url).await?;
        if opened.purpose != purpose {
            return Err(ClientError::ProtocolViolation(format!(
                "the relay opened a pairing for {:?}, not {purpose:?}: update the relay",
                opened.purpose
            )));
        }
        Ok(opened)
    }

    /// Sends the clinician device's public key (step 2).
    pub async fn send_clinician_key(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        id: PairingId,
        public_key: &[u8; 32],
    ) -> Result<(), ClientError> {
        let url = self.clinician_url(session_id, Some(id), "/clinician-key");
        let body = PublicKeyBody {
            public_key: URL_SAFE_NO_PAD.encode(public_key),
        };
        self.clinician_send(device, reqwest::Method::POST, &url, Some(&body))
            .await
            .map(drop)
    }

    /// Sends the wrapped key (step 5).
    pub async fn send_wrapped_key(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        id: PairingId,
        wrapped_key: &[u8],
    ) -> Result<(), ClientError> {
        let url = self.clinician_url(session_id, Some(id), "/wrapped-key");
        let body = WrappedKeyBody {
            wrapped_key: URL_SAFE_NO_PAD.encode(wrapped_key),
        };
        self.clinician_send(device, reqwest::Method::POST, &url, Some(&body))
            .await
            .map(drop)
    }

    /// Cancels the slot for the clinician device.
    pub async fn clinician_cancel(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        id: PairingId,
    ) -> Result<(), ClientError> {
        let url = self.clinician_url(session_id, Some(id), "");
        self.clinician_send(device, reqwest::Method::DELETE, &url, None::<&()>)
            .await
            .map(drop)
    }

    /// Long-polls the clinician device's view until the slot is in one of
    /// `wanted`. A cancelled slot is an error.
    pub async fn clinician_wait(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        id: PairingId,
        wanted: &[PairingState],
    ) -> Result<PairingStatus, ClientError> {
        let url = self.clinician_url(session_id, Some(id), "");
        loop {
            let mut polled = url.clone();
            polled.set_query(Some(&format!("wait={WAIT_SECONDS}")));
            let response = self
                .clinician_send_to(device, reqwest::Method::GET, &url, &polled, None::<&()>)
                .await?;
            let status: PairingStatus = read_body(response, &url).await?;
            if let Some(status) = settled(status, wanted)? {
                return Ok(status);
            }
        }
    }

    /// Sends the joining device's commitment (step 1) and returns the joiner token.
    pub async fn commit(
        &self,
        id: PairingId,
        commitment: &[u8; 32],
    ) -> Result<(BearerToken, PairingJoined), ClientError> {
        let url = self.joiner_url(id, "/commitment");
        let body = CommitmentBody {
            commitment: URL_SAFE_NO_PAD.encode(commitment),
            device_key: None,
        };
        let response = self
            .joiner_send(None, reqwest::Method::POST, &url, Some(&body))
            .await?;
        joined(response, &url).await
    }

    /// Sends the commitment of a second device of the clinician (step 1),
    /// authorized by its own sign-in and naming its identity key, and
    /// returns the joiner token.
    pub async fn commit_as_device(
        &self,
        device: &SignedInDevice,
        id: PairingId,
        commitment: &[u8; 32],
        device_key: &PublisherKey,
    ) -> Result<(BearerToken, PairingJoined), ClientError> {
        let url = self.joiner_url(id, "/commitment");
        let body = CommitmentBody {
            commitment: URL_SAFE_NO_PAD.encode(commitment),
            device_key: Some(device_key.to_base64url()),
        };
        let response = self
            .clinician_send(device, reqwest::Method::POST, &url, Some(&body))
            .await?;
        joined(response, &url).await
    }

    /// Sends the joining device's public key (step 3).
    pub async fn send_joiner_key(
        &self,
        token: &BearerToken,
        id: PairingId,
        public_key: &[u8; 32],
    ) -> Result<(), ClientError> {
        let url = self.joiner_url(id, "/joiner-key");
        let body = PublicKeyBody {
            public_key: URL_SAFE_NO_PAD.encode(public_key),
        };
        self.joiner_send(Some(token), reqwest::Method::POST, &url, Some(&body))
            .await
            .map(drop)
    }

    /// Cancels the slot for the joining device.
    pub async fn joiner_cancel(
        &self,
        token: &BearerToken,
        id: PairingId,
    ) -> Result<(), ClientError> {
        let url = self.joiner_url(id, "");
        self.joiner_send(Some(token), reqwest::Method::DELETE, &url, None::<&()>)
            .await
            .map(drop)
    }

    /// Long-polls the joining device's view until the slot is in one of
    /// `wanted`. A cancelled slot is an error.
    pub async fn joiner_wait(
        &self,
        token: &BearerToken,
        id: PairingId,
        wanted: &[PairingState],
    ) -> Result<PairingStatus, ClientError> {
        let mut url = self.joiner_url(id, "");
        url.set_query(Some(&format!("wait={WAIT_SECONDS}")));
        loop {
            let response = self
                .joiner_send(Some(token), reqwest::Method::GET, &url, None::<&()>)
                .await?;
            let status: PairingStatus = read_body(response, &url).await?;
            if let Some(status) = settled(status, wanted)? {
                return Ok(status);
            }
        }
    }

    /// Posts the wrapped key of a later key epoch for a paired device.
    pub async fn post_paired_key(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        device_id: &DeviceId,
        wrapped_key: &[u8],
    ) -> Result<(), ClientError> {
        let url = self.device_url(session_id, device_id, "/keys");
        let body = WrappedKeyBody {
            wrapped_key: URL_SAFE_NO_PAD.encode(wrapped_key),
        };
        self.device_request(device, reqwest::Method::POST, &url, Some(&body))
            .await
            .map(drop)
    }

    /// Removes a paired device on the relay, which revokes its follow token
    /// and deletes the wrapped keys it has not fetched.
    pub async fn remove_paired_device(
        &self,
        device: &SignedInDevice,
        session_id: &SessionId,
        device_id: &DeviceId,
    ) -> Result<(), ClientError> {
        let url = self.device_url(session_id, device_id, "");
        self.device_request(device, reqwest::Method::DELETE, &url, None::<&()>)
            .await
            .map(drop)
    }

    /// Long-polls, for up to [`WAIT_SECONDS`], for the wrapped keys of key
    /// epochs after `after` that the clinician device posted for this
    /// paired device. Returns them oldest first, or none when the wait ends.
    pub async fn fetch_paired_keys(
        &self,
        follow_token: &BearerToken,
        after: u32,
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        let url = route_url(&self.relay, "/v1/paired/keys");
        let mut polled = url.clone();
        polled.set_query(Some(&format!("after={after}&wait={WAIT_SECONDS}")));
        let response = self
            .client
            .get(polled)
            .headers(header_map(follow_token.headers("GET", url.as_str())?))
            .send()
            .await
            .map_err(|err| request_error(&url, &err))?;
        if !response.status().is_success() {
            let hint = match response.status() {
                StatusCode::UNAUTHORIZED => {
                    "the clinician removed this device or ended the session: pair again to keep following"
                }
                _ => PAIRING_HINT,
            };
            return Err(pairing_status_error(response, "the wrapped key fetch", hint).await);
        }
        let keys: PairedKeys = read_body(response, &url).await?;
        keys.wrapped_keys
            .iter()
            .map(|text| {
                sealcast_protocol::invite::decode_base64url(text).ok_or_else(|| {
                    ClientError::ProtocolViolation(
                        "the relay sent a wrapped key that is not base64url".into(),
                    )
                })
            })
            .collect()
    }

    fn device_url(&self, session_id: &SessionId, device_id: &DeviceId, rest: &str) -> Url {
        route_url(
            &self.relay,
            &format!("/v1/sessions/{session_id}/devices/{device_id}{rest}"),
        )
    }

    /// Sends a clinician request on a paired device, with hints that fit
    /// those routes.
    async fn device_request(
        &self,
        device: &SignedInDevice,
        method: reqwest::Method,
        url: &Url,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, ClientError> {
        device
            .call(|auth| {
                let method = method.clone();
                async move {
                    let headers = auth.headers(method.as_str(), url.as_str())?;
                    let mut request = self
                        .client
                        .request(method, url.clone())
                        .headers(header_map(headers));
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    let response = request
                        .send()
                        .await
                        .map_err(|err| request_error(url, &err))?;
                    if response.status().is_success() {
                        return Ok(response);
                    }
                    let hint = match response.status() {
                        StatusCode::UNAUTHORIZED => "run `sealcast login` again on this device",
                        StatusCode::NOT_FOUND => {
                            "check the device id with `sealcast pair list`; a removed device stays removed"
                        }
                        StatusCode::GONE => "the session has ended: nothing more to send",
                        _ => "check the relay's message, then retry",
                    };
                    Err(status_error(response, "the paired device request", hint).await)
                }
            })
            .await
    }

    fn clinician_url(&self, session_id: &SessionId, id: Option<PairingId>, rest: &str) -> Url {
        let slot = id.map(|id| format!("/{id}")).unwrap_or_default();
        route_url(
            &self.relay,
            &format!("/v1/sessions/{session_id}/pairings{slot}{rest}"),
        )
    }

    fn joiner_url(&self, id: PairingId, rest: &str) -> Url {
        route_url(&self.relay, &format!("/v1/pairings/{id}{rest}"))
    }

    async fn clinician_send(
        &self,
        device: &SignedInDevice,
        method: reqwest::Method,
        url: &Url,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, ClientError> {
        self.clinician_send_to(device, method, url, url, body).await
    }

    /// Sends a clinician request to `target`, whose DPoP proof names `url`:
    /// the same URL without its query.
    async fn clinician_send_to(
        &self,
        device: &SignedInDevice,
        method: reqwest::Method,
        url: &Url,
        target: &Url,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, ClientError> {
        device
            .call(|auth| {
                let method = method.clone();
                async move {
                    let headers = auth.headers(method.as_str(), url.as_str())?;
                    let mut request = self
                        .client
                        .request(method, target.clone())
                        .headers(header_map(headers));
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    let response = request
                        .send()
                        .await
                        .map_err(|err| request_error(url, &err))?;
                    check_status(response, SIGN_IN_HINT).await
                }
            })
            .await
    }

    /// Sends a joining device's request, authorized by the joiner token from
    /// step 1, or by nothing for step 1 itself.
    async fn joiner_send(
        &self,
        token: Option<&BearerToken>,
        method: reqwest::Method,
        url: &Url,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.client.request(method.clone(), url.clone());
        if let Some(token) = token {
            request = request.headers(header_map(token.headers(method.as_str(), url.as_str())?));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| request_error(url, &err))?;
        let unauthorized_hint = match token {
            Some(_) => PAIRING_HINT,
            None => DEVICE_SLOT_HINT,
        };
        check_status(response, unauthorized_hint).await
    }
}

/// Returns the status when the slot is in one of `wanted`, `None` to poll
/// again, and an error for a cancelled slot.
fn settled(
    status: PairingStatus,
    wanted: &[PairingState],
) -> Result<Option<PairingStatus>, ClientError> {
    if wanted.contains(&status.state) {
        return Ok(Some(status));
    }
    if status.state == PairingState::Cancelled {
        return Err(ClientError::PairingRefused {
            reason: "the other device cancelled the pairing".into(),
        });
    }
    Ok(None)
}

async fn joined(
    response: reqwest::Response,
    url: &Url,
) -> Result<(BearerToken, PairingJoined), ClientError> {
    let joined: PairingJoined = read_body(response, url).await?;
    let token = BearerToken::new(SecretString::new(joined.joiner_token.clone()));
    Ok((token, joined))
}

/// Returns the response when it succeeded, and otherwise an error with a
/// hint by status, where `unauthorized_hint` is the hint for 401.
async fn check_status(
    response: reqwest::Response,
    unauthorized_hint: &'static str,
) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED => unauthorized_hint,
        StatusCode::FORBIDDEN => {
            "sign in on both devices as the same clinician of the same organization"
        }
        StatusCode::TOO_MANY_REQUESTS => "wait a minute and try again",
        _ => PAIRING_HINT,
    };
    Err(pairing_status_error(response, "the pairing step", hint).await)
}

/// Builds the error of a failed pairing request like [`status_error`]. When
/// the hint is [`PAIRING_HINT`], the relay's own advice to start a new
/// pairing is dropped from its message, so that the error gives it once.
async fn pairing_status_error(
    response: reqwest::Response,
    what: &'static str,
    hint: &'static str,
) -> ClientError {
    let mut error = status_error(response, what, hint).await;
    if let ClientError::RelayStatus { message, hint, .. } = &mut error {
        if *hint == PAIRING_HINT {
            *message = without_new_pairing_advice(message).to_string();
        }
    }
    error
}

/// Returns the relay's message without its closing advice to start a new
/// pairing, for example `pairing expired` for `pairing expired: start a new
/// pairing on the clinician device`. A message that has no such advice, or
/// nothing before it, is returned whole.
fn without_new_pairing_advice(message: &str) -> &str {
    let Some(index) = message.find(RELAY_NEW_PAIRING) else {
        return message;
    };
    let before = message[..index].trim_end();
    let before = before
        .strip_suffix(", or")
        .or_else(|| before.strip_suffix(':'))
        .unwrap_or(before)
        .trim_end();
    if before.is_empty() {
        message
    } else {
        before
    }
}

async fn read_body<T: DeserializeOwned>(
    response: reqwest::Response,
    url: &Url,
) -> Result<T, ClientError> {
    response.json::<T>().await.map_err(|err| {
        ClientError::ProtocolViolation(format!(
            "the response from {} is not a pairing message: {err}",
            url.path()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_pairing_advice_is_dropped_once() {
        let cases = [
            (
                "pairing expired: start a new pairing on the clinician device",
                "pairing expired",
            ),
            (
                "pairing 0421-8810-3377 not found: check the id the clinician device shows, or start a new pairing there",
                "pairing 0421-8810-3377 not found: check the id the clinician device shows",
            ),
            (
                "another device already joined pairing 0421-8810-3377: start a new pairing on the clinician device",
                "another device already joined pairing 0421-8810-3377",
            ),
            ("not this step's turn", "not this step's turn"),
            (
                "start a new pairing on the clinician device",
                "start a new pairing on the clinician device",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(without_new_pairing_advice(message), expected, "{message}");
        }
    }

    #[test]
    fn expired_pairing_error_has_one_hint() {
        let error = ClientError::RelayStatus {
            what: "the pairing step",
            status: 410,
            message: without_new_pairing_advice(
                "pairing expired: start a new pairing on the clinician device",
            )
            .to_string(),
            hint: PAIRING_HINT,
        };
        let text = error.to_string();
        assert_eq!(text.matches(RELAY_NEW_PAIRING).count(), 1, "{text}");
        assert!(text.contains("`sealcast pair offer`"), "{text}");
    }
}
