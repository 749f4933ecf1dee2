//! Staff accounts on a relay child process: organizations and users made
//! with `sealcast-relay admin`, and device sign-in through the magic link
//! that the relay writes to its outbox folder in development mode.
//!
//! The sign-in takes the same steps as a person with `sealcast login`: the
//! device asks for a link, the test reads the mail, confirms the link as the
//! sign-in page would, and the device polls until it gets its tokens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealcast_client::auth::login::{wait_for_approval, Approval};
use sealcast_client::auth::{AccountsApi, Authorizer, DeviceCredentials, SignedInDevice};
use sealcast_client::{KeyStore, TlsSettings};
use sealcast_protocol::auth::{LoginConfirmRequest, LoginConfirmed, Role};
use tempfile::TempDir;
use url::Url;

use crate::process::{binary_path, RelayProcess};
use crate::smtp_sink::{first_https_url, header_value};

/// How long a test waits for the relay to write a sign-in mail.
const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Counter that keeps organization names and addresses unique per process.
static NEXT_ACCOUNT: AtomicUsize = AtomicUsize::new(0);

/// A signed-in staff device and the account behind it.
pub struct StaffDevice {
    /// The sign-in, which refreshes its own tokens.
    pub device: SignedInDevice,
    /// Organization id.
    pub org_id: String,
    /// User id.
    pub user_id: String,
    /// Email address of the user.
    pub email: String,
    _key_store: TempDir,
}

impl StaffDevice {
    /// Creates a new organization with one clinician and signs a device in.
    pub async fn clinician(relay: &RelayProcess) -> Self {
        let org_id = create_organization(&relay.data_dir);
        Self::sign_in_new_user(relay, &org_id, Role::Clinician).await
    }

    /// Creates a user of `org_id` with `role` and signs a device in.
    pub async fn sign_in_new_user(relay: &RelayProcess, org_id: &str, role: Role) -> Self {
        let number = NEXT_ACCOUNT.fetch_add(1, Ordering::Relaxed);
        let email = format!("staff-{}-{number}@clinic.example", std::process::id());
        let user_id = admin(
            &relay.data_dir,
            &[
                "create-user",
                "--org",
                org_id,
                "--email",
                &email,
                "--role",
                role.as_str(),
            ],
        );
        let url = Url::parse(&relay.base_url()).expect("relay URL parses");
        let device = sign_in(&url, &relay.ca_cert(), &relay.outbox_dir(), &email).await;
        StaffDevice {
            device: device.0,
            org_id: org_id.to_string(),
            user_id,
            email,
            _key_store: device.1,
        }
    }

    /// Returns the device's request credentials.
    pub fn authorizer(&self) -> Arc<dyn Authorizer> {
        self.device.authorizer()
    }
}

/// Creates an organization with `sealcast-relay admin` and returns its id.
pub fn create_organization(data_dir: &Path) -> String {
    let number = NEXT_ACCOUNT.fetch_add(1, Ordering::Relaxed);
    admin(
        data_dir,
        &["create-org", "--name", &format!("Test clinic {number}")],
    )
}

/// Runs `sealcast-relay admin --data-dir DIR ARGS...` and returns its
/// standard output, trimmed. Panics with the output when it fails.
pub fn admin(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(binary_path("sealcast-relay"))
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("failed to run sealcast-relay admin");
    assert!(
        output.status.success(),
        "sealcast-relay admin {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Signs a new device in to the relay at `relay` as `email`, reading the
/// magic link from `outbox`. Returns the sign-in and the folder of its key
/// store, which must live as long as the sign-in.
pub async fn sign_in(
    relay: &Url,
    ca_cert: &Path,
    outbox: &Path,
    email: &str,
) -> (SignedInDevice, TempDir) {
    let key_store_dir = TempDir::new().expect("temporary key store");
    let store = KeyStore::open(key_store_dir.path()).expect("key store opens");
    let tls = TlsSettings::new(Some(ca_cert)).expect("dev certificate loads");
    let api = AccountsApi::new(relay, &tls).expect("accounts client builds");
    let mut credentials = DeviceCredentials::generate(relay.clone(), Some(ca_cert.to_path_buf()))
        .expect("device key is made");

    let asked_at = std::time::SystemTime::now();
    let started = api
        .start_login(&credentials.key, email, Some("test device"))
        .await
        .expect("sign-in starts");
    let link = wait_for_link(outbox, email, asked_at);
    confirm_link(relay, &tls, &link).await;

    let tokens = match wait_for_approval(&api, &credentials.key, &started)
        .await
        .expect("sign-in is approved")
    {
        Approval::Approved(tokens) => tokens,
        Approval::TotpRequired => panic!("{email} needs TOTP, which this helper does not enter"),
    };
    store
        .store_tokens(&mut credentials, tokens)
        .expect("tokens are stored");
    let device = SignedInDevice::new(store, credentials, Some(ca_cert.to_path_buf()))
        .expect("signed-in device builds");
    (device, key_store_dir)
}

/// Waits for a mail to `email` written to `outbox` after `since` and returns
/// the sign-in link in it.
pub fn wait_for_link(outbox: &Path, email: &str, since: std::time::SystemTime) -> String {
    let deadline = Instant::now() + MAIL_TIMEOUT;
    loop {
        if let Some(link) = find_link(outbox, email, since) {
            return link;
        }
        assert!(
            Instant::now() < deadline,
            "no sign-in mail to {email} in {} within {MAIL_TIMEOUT:?}",
            outbox.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find_link(outbox: &Path, email: &str, since: std::time::SystemTime) -> Option<String> {
    let entries = std::fs::read_dir(outbox).ok()?;
    let mut mails: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let modified = entry.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| (modified, entry.path()))
        })
        .collect();
    mails.sort();
    mails.into_iter().rev().find_map(|(_, path)| {
        let raw = std::fs::read(&path).ok()?;
        let to = header_value(&raw, "To")?;
        if !to
            .to_ascii_lowercase()
            .contains(&email.to_ascii_lowercase())
        {
            return None;
        }
        first_https_url(&raw)
    })
}

/// Confirms a sign-in link as the sign-in page does after its button is
/// pressed: `POST /v1/auth/login/confirm` with the token from the fragment.
pub async fn confirm_link(relay: &Url, tls: &TlsSettings, link: &str) -> LoginConfirmed {
    let token = link
        .split_once("#token=")
        .map(|(_, token)| token.to_string())
        .unwrap_or_else(|| panic!("sign-in link has no #token= fragment: {link}"));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.http_config().expect("TLS settings build"))
        .build()
        .expect("HTTP client builds");
    let url = relay.join("v1/auth/login/confirm").expect("URL joins");
    let response = client
        .post(url)
        .json(&LoginConfirmRequest { token })
        .send()
        .await
        .expect("confirm request is sent");
    let status = response.status();
    assert!(
        status.is_success(),
        "confirming the sign-in link failed with {status}: {}",
        response.text().await.unwrap_or_default()
    );
    response.json().await.expect("confirm response parses")
}
