//! Sign-in against a development relay, which writes its mail as `.eml`
//! files into an outbox folder instead of sending it.
//!
//! The steps are the ones a person takes: the device requests a link, the
//! link is read from the mail, confirmed as the sign-in page does after its
//! button is pressed, and the device polls until it has its tokens. Test
//! suites and the load-test harness use this to sign devices in without a
//! mail server; it reaches the relay only through its public routes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sealcast_protocol::auth::{LoginConfirmRequest, LoginConfirmed};
use url::Url;

use super::login::{wait_for_approval, Approval};
use super::{AccountsApi, DeviceCredentials, SignedInDevice};
use crate::error::ClientError;
use crate::keystore::KeyStore;
use crate::tls::TlsSettings;

/// How long [`sign_in_from_outbox`] waits for the relay to write the mail.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Allowance for file modification times that lag the system clock.
const MTIME_SLACK: Duration = Duration::from_secs(1);

/// Signs a new device of `key_store` in to `relay` as `email`, reading the
/// magic link from the relay's `outbox` folder. Fails with
/// [`ClientError::Internal`] when no mail arrives within [`MAIL_TIMEOUT`]
/// or the user needs a TOTP code, which this function cannot enter.
pub async fn sign_in_from_outbox(
    key_store: &KeyStore,
    relay: &Url,
    ca_cert: Option<&Path>,
    outbox: &Path,
    email: &str,
    device_name: &str,
) -> Result<SignedInDevice, ClientError> {
    let tls = TlsSettings::new(ca_cert)?;
    let api = AccountsApi::new(relay, &tls)?;
    let mut credentials =
        DeviceCredentials::generate(relay.clone(), ca_cert.map(Path::to_path_buf))?;

    let requested_at = SystemTime::now();
    let started = api
        .start_login(&credentials.key, email, Some(device_name))
        .await?;
    let link = wait_for_link(outbox, email, requested_at).await?;
    confirm_link(relay, &tls, &link).await?;

    let tokens = match wait_for_approval(&api, &credentials.key, &started).await? {
        Approval::Approved(tokens) => tokens,
        Approval::TotpRequired => {
            return Err(ClientError::Internal(format!(
                "{email} must enter a TOTP code to sign in: use sealcast login"
            )))
        }
    };
    key_store.store_tokens(&mut credentials, tokens)?;
    SignedInDevice::new(
        key_store.clone(),
        credentials,
        ca_cert.map(Path::to_path_buf),
    )
}

/// Waits for a mail to `email` written into `outbox` at or after `since`
/// and returns the first `https://` link in it.
pub async fn wait_for_link(
    outbox: &Path,
    email: &str,
    since: SystemTime,
) -> Result<String, ClientError> {
    let deadline = Instant::now() + MAIL_TIMEOUT;
    loop {
        if let Some(link) = find_link(outbox, email, since) {
            return Ok(link);
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Internal(format!(
                "no sign-in mail to {email} in {} within {} s",
                outbox.display(),
                MAIL_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Confirms a sign-in link as the sign-in page does after its button is
/// pressed: `POST /v1/auth/login/confirm` with the token from the fragment.
pub async fn confirm_link(
    relay: &Url,
    tls: &TlsSettings,
    link: &str,
) -> Result<LoginConfirmed, ClientError> {
    let token = link
        .split_once("#token=")
        .map(|(_, token)| token.trim().to_string())
        .ok_or_else(|| ClientError::Internal("the sign-in link has no #token= fragment".into()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.http_config()?)
        .build()
        .map_err(|err| ClientError::Tls(err.to_string()))?;
    let url = relay
        .join("v1/auth/login/confirm")
        .map_err(|err| ClientError::Internal(format!("invalid relay URL: {err}")))?;
    let response = client
        .post(url.clone())
        .json(&LoginConfirmRequest { token })
        .send()
        .await
        .map_err(|err| ClientError::Request {
            url: url.to_string(),
            reason: err.to_string(),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(ClientError::Internal(format!(
            "confirming the sign-in link failed with HTTP {status}"
        )));
    }
    response.json().await.map_err(|err| {
        ClientError::ProtocolViolation(format!("the confirm response is not valid: {err}"))
    })
}

/// Returns the link of the newest mail to `email` in `outbox` written at or
/// after `since`.
fn find_link(outbox: &Path, email: &str, since: SystemTime) -> Option<String> {
    // File times come from a coarser clock than `SystemTime::now`, so a mail
    // written just after `since` can carry a time a little before it.
    let since = since - MTIME_SLACK;
    let mut mails: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(outbox)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
        .filter_map(|entry| {
            let modified = entry.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| (modified, entry.path()))
        })
        .collect();
    mails.sort();
    let recipient = email.to_ascii_lowercase();
    mails.into_iter().rev().find_map(|(_, path)| {
        let text = std::fs::read_to_string(&path).ok()?;
        addressed_to(&text, &recipient).then(|| first_https_link(&text))?
    })
}

/// Returns whether the message's `To` header names `email` (lower case).
/// The relay writes plain 7-bit mail, so headers need no decoding.
fn addressed_to(message: &str, email: &str) -> bool {
    message
        .lines()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.strip_prefix("To:"))
        .any(|value| value.to_ascii_lowercase().contains(email))
}

/// Returns the first `https://` link in the message body.
fn first_https_link(message: &str) -> Option<String> {
    let body = message
        .split_once("\r\n\r\n")
        .or_else(|| message.split_once("\n\n"))?
        .1;
    body.split_whitespace()
        .find(|word| word.starts_with("https://"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str = "From: relay@clinic.example\r\nTo: Ana@Clinic.example\r\n\
        Subject: Your sealcast sign-in link\r\n\r\nOpen this link to sign in:\r\n\r\n\
        https://relay.example:8443/login#token=abc_DEF-123\r\n\r\nIt expires in 15 minutes.\r\n";

    #[test]
    fn link_is_read_from_the_body() {
        assert_eq!(
            first_https_link(MAIL).as_deref(),
            Some("https://relay.example:8443/login#token=abc_DEF-123")
        );
    }

    #[test]
    fn recipient_matches_without_case() {
        assert!(addressed_to(MAIL, "ana@clinic.example"));
        assert!(!addressed_to(MAIL, "bo@clinic.example"));
    }

    #[test]
    fn newest_matching_mail_wins() {
        let dir = tempfile::tempdir().unwrap();
        let since = SystemTime::now() - Duration::from_secs(1);
        std::fs::write(dir.path().join("1-a.eml"), MAIL).unwrap();
        let other = MAIL.replace("Ana@Clinic.example", "bo@clinic.example");
        std::fs::write(dir.path().join("2-b.eml"), other).unwrap();
        std::fs::write(dir.path().join("notes.txt"), MAIL).unwrap();

        let link = find_link(dir.path(), "ana@clinic.example", since).unwrap();
        assert!(link.ends_with("#token=abc_DEF-123"), "{link}");
        assert!(find_link(dir.path(), "cy@clinic.example", since).is_none());
    }
}
