//! HTTP calls to the relay's accounts API: sign-in, refresh, the signed-in
//! user, TOTP enrolment and administration. The routes and bodies are those
//! of [`sealcast_protocol::auth`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sealcast_protocol::auth::{
    CreateUserRequest, DeviceSummary, LoginPollRequest, LoginPollResponse, LoginRequest,
    LoginStarted, LoginTotpRequest, RefreshRequest, TokenResponse, TotpActivateRequest,
    TotpActivated, TotpEnrolment, UserInfo, UserSummary,
};
use sealcast_protocol::dpop::DeviceKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use super::{Authorizer, DeviceProof};
use crate::api::{header_map, http_client, request_error, status_error};
use crate::endpoint;
use crate::error::ClientError;
use crate::secret::SecretString;
use crate::tls::TlsSettings;

const LOGIN: &str = "/v1/auth/login";
const LOGIN_POLL: &str = "/v1/auth/login/poll";
const LOGIN_TOTP: &str = "/v1/auth/login/totp";
const REFRESH: &str = "/v1/auth/refresh";
const LOGOUT: &str = "/v1/auth/logout";
const ME: &str = "/v1/me";
const TOTP_ENROL: &str = "/v1/auth/totp/enrol";
const TOTP_ACTIVATE: &str = "/v1/auth/totp/activate";
const ADMIN_USERS: &str = "/v1/admin/users";
const ADMIN_DEVICES: &str = "/v1/admin/devices";

/// The result of one poll of a pending sign-in.
#[derive(Debug)]
pub enum PollOutcome {
    /// The sign-in's state as the relay returned it.
    Status(LoginPollResponse),
    /// The relay asked this device to poll less often (HTTP 429), waiting at
    /// least this long.
    SlowDown(Duration),
}

/// A client for the accounts routes of one relay.
#[derive(Debug, Clone)]
pub struct AccountsApi {
    client: reqwest::Client,
    relay: Url,
}

impl AccountsApi {
    /// Creates a client for the relay at `relay`, trusting the roots in `tls`.
    pub fn new(relay: &Url, tls: &TlsSettings) -> Result<Self, ClientError> {
        Ok(AccountsApi {
            client: http_client(tls)?,
            relay: relay.clone(),
        })
    }

    /// Returns the relay's base URL.
    pub fn relay(&self) -> &Url {
        &self.relay
    }

    /// Starts a device sign-in with `POST /v1/auth/login`: the relay mails a
    /// magic link to `email` and binds the pending sign-in to `key`.
    pub async fn start_login(
        &self,
        key: &Arc<DeviceKey>,
        email: &str,
        device_name: Option<&str>,
    ) -> Result<LoginStarted, ClientError> {
        let body = LoginRequest {
            email: email.to_string(),
            device_name: device_name.map(str::to_string),
        };
        let auth = DeviceProof::new(key.clone());
        let response = self.send(Method::POST, LOGIN, &auth, Some(&body)).await?;
        read_json(response, "the sign-in request", login_hint).await
    }

    /// Polls a pending sign-in once with `POST /v1/auth/login/poll`.
    /// HTTP 410 becomes [`ClientError::SignInExpired`].
    pub async fn poll(
        &self,
        key: &Arc<DeviceKey>,
        login_id: &SecretString,
    ) -> Result<PollOutcome, ClientError> {
        let body = LoginPollRequest {
            login_id: login_id.expose().to_string(),
        };
        let auth = DeviceProof::new(key.clone());
        let response = self
            .send(Method::POST, LOGIN_POLL, &auth, Some(&body))
            .await?;
        match response.status() {
            StatusCode::GONE => Err(ClientError::SignInExpired),
            StatusCode::TOO_MANY_REQUESTS => Ok(PollOutcome::SlowDown(retry_after(&response))),
            _ => read_json(response, "the sign-in poll", poll_hint)
                .await
                .map(PollOutcome::Status),
        }
    }

    /// Sends the second factor of a pending sign-in with
    /// `POST /v1/auth/login/totp`: six TOTP digits or a recovery code.
    /// The relay either returns the tokens or, with 204, completes the
    /// sign-in for the device's next poll, which this function then makes.
    pub async fn submit_totp(
        &self,
        key: &Arc<DeviceKey>,
        login_id: &SecretString,
        code: &SecretString,
    ) -> Result<TokenResponse, ClientError> {
        let body = LoginTotpRequest {
            login_id: login_id.expose().to_string(),
            code: code.expose().trim().to_string(),
        };
        let auth = DeviceProof::new(key.clone());
        let response = self
            .send(Method::POST, LOGIN_TOTP, &auth, Some(&body))
            .await?;
        if response.status() == StatusCode::GONE {
            return Err(ClientError::SignInExpired);
        }
        if response.status() == StatusCode::NO_CONTENT {
            return match self.poll(key, login_id).await? {
                PollOutcome::Status(LoginPollResponse::Approved(tokens)) => Ok(tokens),
                other => Err(ClientError::ProtocolViolation(format!(
                    "the relay accepted the TOTP code but did not approve the sign-in: {other:?}"
                ))),
            };
        }
        read_json(response, "the TOTP code", totp_hint).await
    }

    /// Rotates the tokens with `POST /v1/auth/refresh`. HTTP 401 becomes
    /// [`ClientError::SignInRevoked`], because it means the refresh token
    /// was revoked, used before or has expired.
    pub async fn refresh(
        &self,
        key: &Arc<DeviceKey>,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, ClientError> {
        let body = RefreshRequest {
            refresh_token: refresh_token.expose().to_string(),
        };
        let auth = DeviceProof::new(key.clone());
        let response = self.send(Method::POST, REFRESH, &auth, Some(&body)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(ClientError::SignInRevoked {
                relay: self.relay.to_string(),
            });
        }
        read_json(response, "the token refresh", signed_in_hint).await
    }

    /// Ends this sign-in on the relay with `POST /v1/auth/logout`.
    pub async fn logout(&self, auth: &dyn Authorizer) -> Result<(), ClientError> {
        let response = self.send(Method::POST, LOGOUT, auth, None::<&()>).await?;
        if !response.status().is_success() {
            return Err(status_error(response, "the sign-out", signed_in_hint(401)).await);
        }
        Ok(())
    }

    /// Returns the signed-in user, from `GET /v1/me`.
    pub async fn me(&self, auth: &dyn Authorizer) -> Result<UserInfo, ClientError> {
        let response = self.send(Method::GET, ME, auth, None::<&()>).await?;
        read_json(response, "the user request", signed_in_hint).await
    }

    /// Starts TOTP enrolment with `POST /v1/auth/totp/enrol`.
    pub async fn totp_enrol(&self, auth: &dyn Authorizer) -> Result<TotpEnrolment, ClientError> {
        let response = self
            .send(Method::POST, TOTP_ENROL, auth, None::<&()>)
            .await?;
        read_json(response, "the TOTP enrolment", enrol_hint).await
    }

    /// Activates the enrolled secret with a current code, with
    /// `POST /v1/auth/totp/activate`.
    pub async fn totp_activate(
        &self,
        auth: &dyn Authorizer,
        code: &SecretString,
    ) -> Result<TotpActivated, ClientError> {
        let body = TotpActivateRequest {
            code: code.expose().trim().to_string(),
        };
        let response = self
            .send(Method::POST, TOTP_ACTIVATE, auth, Some(&body))
            .await?;
        read_json(response, "the TOTP code", activate_hint).await
    }

    /// Lists the users of the admin's organization, from `GET /v1/admin/users`.
    pub async fn list_users(&self, auth: &dyn Authorizer) -> Result<Vec<UserSummary>, ClientError> {
        let response = self
            .send(Method::GET, ADMIN_USERS, auth, None::<&()>)
            .await?;
        read_json(response, "the user list", admin_hint).await
    }

    /// Invites a user to the admin's organization with `POST /v1/admin/users`.
    pub async fn create_user(
        &self,
        auth: &dyn Authorizer,
        request: &CreateUserRequest,
    ) -> Result<UserSummary, ClientError> {
        let response = self
            .send(Method::POST, ADMIN_USERS, auth, Some(request))
            .await?;
        read_json(response, "the new user", admin_hint).await
    }

    /// Lists the devices of the admin's organization, from `GET /v1/admin/devices`.
    pub async fn list_devices(
        &self,
        auth: &dyn Authorizer,
    ) -> Result<Vec<DeviceSummary>, ClientError> {
        let response = self
            .send(Method::GET, ADMIN_DEVICES, auth, None::<&()>)
            .await?;
        read_json(response, "the device list", admin_hint).await
    }

    /// Revokes a device with `POST /v1/admin/devices/{id}/revoke`, which
    /// also closes its sockets.
    pub async fn revoke_device(
        &self,
        auth: &dyn Authorizer,
        device_id: &str,
    ) -> Result<(), ClientError> {
        let path = format!("{ADMIN_DEVICES}/{device_id}/revoke");
        let response = self.send(Method::POST, &path, auth, None::<&()>).await?;
        if !response.status().is_success() {
            let hint = admin_hint(response.status().as_u16());
            return Err(status_error(response, "the device revocation", hint).await);
        }
        Ok(())
    }

    /// Sends one request with the headers of `auth` and an optional JSON body.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        auth: &dyn Authorizer,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = endpoint::route_url(&self.relay, path);
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .headers(header_map(auth.headers(method.as_str(), url.as_str())?));
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .map_err(|err| request_error(&url, &err))
    }
}

/// Reads a successful JSON response, or turns an error status into an error.
async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    what: &'static str,
    hint: fn(u16) -> &'static str,
) -> Result<T, ClientError> {
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(response, what, hint(status.as_u16())).await);
    }
    let url = response.url().clone();
    response.json::<T>().await.map_err(|err| {
        ClientError::ProtocolViolation(format!("the response to {url} is invalid: {err}"))
    })
}

/// Returns the wait in a `Retry-After` header given in seconds, else 5 s.
fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs)
}

fn common_hint(status: u16) -> &'static str {
    match status {
        429 => "too many attempts: wait a minute and try again",
        500..=599 => "the relay failed: try again later",
        _ => "check that --relay names a sealcast relay of this version",
    }
}

fn login_hint(status: u16) -> &'static str {
    match status {
        400 => "check the email address",
        401 => "the relay rejected the device's proof: check that --relay is the relay's public URL (the one in its invite links, such as https://localhost:PORT) and that this computer's clock is right",
        _ => common_hint(status),
    }
}

fn poll_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "the relay rejected the device's proof: run `sealcast login` again",
        _ => common_hint(status),
    }
}

fn totp_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "the code is wrong or expired: enter the current code from the authenticator app, or a recovery code",
        _ => common_hint(status),
    }
}

fn signed_in_hint(status: u16) -> &'static str {
    match status {
        401 => "the relay rejected this device's sign-in: run `sealcast login` again",
        403 => "the signed-in user may not do this",
        _ => common_hint(status),
    }
}

fn enrol_hint(status: u16) -> &'static str {
    match status {
        403 => "the signed-in user may not enrol TOTP",
        409 => "TOTP is already enrolled for this user",
        _ => signed_in_hint(status),
    }
}

fn activate_hint(status: u16) -> &'static str {
    match status {
        400 | 401 | 403 => "the code is wrong or expired: run `sealcast totp enrol` again and enter the current code",
        _ => signed_in_hint(status),
    }
}

fn admin_hint(status: u16) -> &'static str {
    match status {
        403 => "administration needs an admin account signed in with TOTP: run `sealcast totp enrol`, then `sealcast login` again",
        404 => "no such user or device in this organization: check the id with `sealcast admin users` or `sealcast admin devices`",
        409 => "a user with this email address already exists",
        _ => signed_in_hint(status),
    }
}
