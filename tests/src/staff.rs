//! Staff accounts on a relay child process: organizations and users made
//! with `sealcast-relay admin`, and device sign-in through the magic link
//! that the relay writes to its outbox folder in development mode.
//!
//! The sign-in takes the same steps as a person with `sealcast login`, see
//! [`sealcast_client::auth::outbox`].

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sealcast_client::auth::outbox::sign_in_from_outbox;
use sealcast_client::auth::{Authorizer, SignedInDevice};
use sealcast_client::KeyStore;
use sealcast_protocol::auth::Role;
use tempfile::TempDir;
use url::Url;

use crate::process::RelayProcess;

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

    /// Creates a new organization with one clinician and signs a device
    /// in, trusting the certificates in `ca_cert` in place of the relay's
    /// development certificate.
    pub async fn clinician_trusting(relay: &RelayProcess, ca_cert: &Path) -> Self {
        let org_id = create_organization(&relay.data_dir);
        Self::sign_in_trusting(relay, &org_id, Role::Clinician, ca_cert).await
    }

    /// Creates a user of `org_id` with `role` and signs a device in.
    pub async fn sign_in_new_user(relay: &RelayProcess, org_id: &str, role: Role) -> Self {
        Self::sign_in_trusting(relay, org_id, role, &relay.ca_cert()).await
    }

    async fn sign_in_trusting(
        relay: &RelayProcess,
        org_id: &str,
        role: Role,
        ca_cert: &Path,
    ) -> Self {
        let url = Url::parse(&relay.base_url()).expect("relay URL parses");
        Self::sign_in_at(&relay.data_dir, &url, org_id, role, ca_cert).await
    }

    /// Creates a new organization with one clinician in the store in
    /// `data_dir`, and signs a device in through the relay at `relay`, which
    /// writes its mail to `data_dir`'s outbox folder. Relay nodes that share
    /// one data directory behind one public URL take this form.
    pub async fn clinician_at(data_dir: &Path, relay: &Url, ca_cert: &Path) -> Self {
        let org_id = create_organization(data_dir);
        Self::sign_in_at(data_dir, relay, &org_id, Role::Clinician, ca_cert).await
    }

    async fn sign_in_at(
        data_dir: &Path,
        relay: &Url,
        org_id: &str,
        role: Role,
        ca_cert: &Path,
    ) -> Self {
        let number = NEXT_ACCOUNT.fetch_add(1, Ordering::Relaxed);
        let email = format!("staff-{}-{number}@clinic.example", std::process::id());
        let user_id = admin(
            data_dir,
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
        let device = sign_in(relay, ca_cert, &data_dir.join("outbox"), &email).await;
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

/// Computes the RFC 6238 code (SHA-1, six digits, 30 s steps) of a base32
/// secret at `unix_time`, as an authenticator app would.
pub fn totp_code(secret_base32: &str, unix_time: u64) -> String {
    let secret = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret_base32)
        .expect("the enrolment secret is base32");
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .expect("the TOTP parameters are valid")
        .generate(unix_time)
        .to_string()
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
    let output = crate::database::relay_command(data_dir)
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
    let device = sign_in_from_outbox(&store, relay, Some(ca_cert), outbox, email, "test device")
        .await
        .unwrap_or_else(|err| panic!("{email} failed to sign in: {err}"));
    (device, key_store_dir)
}
