//! HTTP calls to the relay: creating and ending sessions.

use std::time::Duration;

use sealcast_protocol::api::{
    CreateSessionRequest, CreateSessionResponse, EndSessionRequest, ErrorBody,
};
use sealcast_protocol::SessionId;
use url::Url;

use crate::auth::{AuthHeaders, Authorizer};
use crate::endpoint;
use crate::error::ClientError;
use crate::tls::TlsSettings;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum part of an error response body quoted in an error message.
const MAX_QUOTED_BODY: usize = 300;

/// The result of `POST /v1/sessions/{id}/end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOutcome {
    /// The relay ended the session now.
    Ended,
    /// The session had already ended (HTTP 410).
    AlreadyEnded,
}

/// A client for the relay's HTTP API.
#[derive(Debug, Clone)]
pub struct RelayApi {
    client: reqwest::Client,
    relay: Url,
}

impl RelayApi {
    /// Creates a client for the relay at `relay`, trusting the roots in `tls`.
    pub fn new(relay: &Url, tls: &TlsSettings) -> Result<Self, ClientError> {
        Ok(RelayApi {
            client: http_client(tls)?,
            relay: relay.clone(),
        })
    }

    /// Creates a session with `POST /v1/sessions`.
    pub async fn create_session(
        &self,
        auth: &dyn Authorizer,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, ClientError> {
        let url = endpoint::sessions_url(&self.relay);
        let response = self
            .client
            .post(url.clone())
            .headers(header_map(auth.headers("POST", url.as_str())?))
            .json(request)
            .send()
            .await
            .map_err(|err| request_error(&url, &err))?;

        let status = response.status();
        if !status.is_success() {
            return Err(status_error(response, "the new session", create_hint(status)).await);
        }
        response
            .json::<CreateSessionResponse>()
            .await
            .map_err(|err| {
                ClientError::ProtocolViolation(format!(
                    "the response to POST {url} is not a session: {err}"
                ))
            })
    }

    /// Ends a session with `POST /v1/sessions/{id}/end` and an empty body.
    pub async fn end_session(
        &self,
        session_id: &SessionId,
        auth: &dyn Authorizer,
    ) -> Result<EndOutcome, ClientError> {
        self.end_session_with(session_id, auth, None).await
    }

    /// Ends a session with `POST /v1/sessions/{id}/end`, sending `request`
    /// as the body when there is one, for example to report that this device
    /// destroyed its copy of the session key.
    pub async fn end_session_with(
        &self,
        session_id: &SessionId,
        auth: &dyn Authorizer,
        request: Option<&EndSessionRequest>,
    ) -> Result<EndOutcome, ClientError> {
        let url = endpoint::end_url(&self.relay, session_id);
        let mut builder = self
            .client
            .post(url.clone())
            .headers(header_map(auth.headers("POST", url.as_str())?));
        if let Some(request) = request {
            builder = builder.json(request);
        }
        let response = builder
            .send()
            .await
            .map_err(|err| request_error(&url, &err))?;

        let status = response.status();
        if status == reqwest::StatusCode::GONE {
            return Ok(EndOutcome::AlreadyEnded);
        }
        if !status.is_success() {
            return Err(status_error(response, "ending the session", end_hint(status)).await);
        }
        Ok(EndOutcome::Ended)
    }
}

/// Builds the HTTP client for a relay, trusting the roots in `tls`.
pub(crate) fn http_client(tls: &TlsSettings) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.http_config()?)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("sealcast/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| ClientError::Tls(err.to_string()))
}

/// Collects authentication headers into a map for `reqwest`.
pub(crate) fn header_map(headers: AuthHeaders) -> reqwest::header::HeaderMap {
    headers.into_iter().collect()
}

fn create_hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "the relay rejected this device's sign-in: run `sealcast login` again",
        403 => "the signed-in user may not create sessions: that takes a clinician account",
        429 => "wait a minute and try again",
        500..=599 => "the relay failed: try again later",
        _ => "check that --relay names a sealcast relay of this version",
    }
}

fn end_hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "the relay rejected this device's sign-in: run `sealcast login` again",
        403 => "the signed-in user may not end this session: it belongs to another organization or needs a clinician account",
        404 => "the relay has no such session: check --session",
        429 => "wait a minute and try again",
        500..=599 => "the relay failed: try again later",
        _ => "check that the stored relay URL names a sealcast relay of this version",
    }
}

pub(crate) fn request_error(url: &Url, err: &reqwest::Error) -> ClientError {
    if let Some(reason) = find_certificate_error(err) {
        return ClientError::UntrustedCertificate { reason };
    }
    ClientError::Request {
        url: url.to_string(),
        reason: error_chain(err),
    }
}

/// Turns an error response into an error that quotes the relay's explanation.
pub(crate) async fn status_error(
    response: reqwest::Response,
    what: &'static str,
    hint: &'static str,
) -> ClientError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(error) => error.message,
        Err(_) if body.trim().is_empty() => status
            .canonical_reason()
            .unwrap_or("no explanation")
            .to_string(),
        Err(_) => body.trim().chars().take(MAX_QUOTED_BODY).collect(),
    };
    ClientError::RelayStatus {
        what,
        status: status.as_u16(),
        message,
        hint,
    }
}

/// Joins an error and its sources into one line, for messages.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

fn find_certificate_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(reason) = crate::tls::certificate_error(io) {
                return Some(reason);
            }
        }
        if let Some(rustls::Error::InvalidCertificate(reason)) = current.downcast_ref() {
            return Some(format!("{reason:?}"));
        }
        source = current.source();
    }
    None
}
