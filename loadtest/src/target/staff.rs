//! The clinician device the simulated clinics create, publish and end their
//! sessions with. The relay has no bypass for load tests: the harness signs a
//! device in as real devices do and refreshes its token while the run lasts.
//!
//! For a relay the harness starts, or a running one whose data directory
//! `--relay-data-dir` names, it makes an organization and a clinician in the
//! relay's data directory and signs in through the magic link the relay
//! writes to its outbox folder. For another running relay it uses the
//! sign-in that `sealcast login` stored in a key store.

use std::path::Path;
use std::sync::Arc;

use sealcast_client::auth::outbox::sign_in_from_outbox;
use sealcast_client::auth::{Authorizer, Refresher, SignedInDevice};
use sealcast_client::KeyStore;
use sealcast_protocol::auth::Role;
use sealcast_relay::accounts::admin::AdminStore;
use sealcast_relay::at_rest::KeySource;
use tempfile::TempDir;
use url::Url;

use super::{start_error, SystemKind};
use crate::error::LoadtestError;

/// Address of the clinician the harness signs in on a relay it started.
const LOADTEST_EMAIL: &str = "loadtest-clinician@clinic.example";

/// A signed-in clinician device and the task that keeps its token fresh.
pub struct StaffSignIn {
    device: SignedInDevice,
    _refresher: Refresher,
    _key_store: Option<TempDir>,
}

impl StaffSignIn {
    /// Returns the request credentials of the device.
    pub fn authorizer(&self) -> Arc<dyn Authorizer> {
        self.device.authorizer()
    }
}

/// Makes an organization and a clinician in the store of a relay on this
/// machine at `base_url`, and signs a device in. The store is the SQLite file
/// in `data_dir`, or the PostgreSQL database at `SEALCAST_DATABASE_URL` when
/// `SEALCAST_STORE` is `postgres`, as for the relay itself.
pub(super) async fn sign_in_local(
    data_dir: &Path,
    base_url: &Url,
    ca_cert: &Path,
) -> Result<StaffSignIn, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let admin_dir = data_dir.to_path_buf();
    // The relay's own at-rest key settings, so that a relay started with a
    // key of its own opens here too.
    let key_file = std::env::var_os("SEALCAST_AT_REST_KEY_FILE").map(std::path::PathBuf::from);
    let key_source = KeySource::from_flag_and_env(key_file)
        .map_err(|err| fail(format!("invalid at-rest key settings: {err}")))?;
    tokio::task::spawn_blocking(move || {
        let postgres = std::env::var("SEALCAST_STORE").is_ok_and(|store| store == "postgres");
        let database_url = std::env::var("SEALCAST_DATABASE_URL")
            .ok()
            .filter(|_| postgres);
        let admin = AdminStore::open_at(&admin_dir, database_url.as_deref(), &key_source)?;
        let organization = admin.create_organization("Load test clinic")?;
        admin.create_user(&organization, LOADTEST_EMAIL, Role::Clinician)
    })
    .await
    .map_err(|err| fail(format!("the account set-up task failed: {err}")))?
    .map_err(|err| fail(format!("failed to create the load-test clinician: {err}")))?;

    let key_store_dir =
        TempDir::new().map_err(|err| fail(format!("failed to make a key store folder: {err}")))?;
    let key_store = KeyStore::open(key_store_dir.path()).map_err(|err| fail(err.to_string()))?;
    let device = sign_in_from_outbox(
        &key_store,
        base_url,
        Some(ca_cert),
        &data_dir.join("outbox"),
        LOADTEST_EMAIL,
        "sealcast-loadtest",
    )
    .await
    .map_err(|err| fail(format!("the load-test clinician failed to sign in: {err}")))?;
    Ok(StaffSignIn {
        _refresher: device.spawn_refresher(),
        device,
        _key_store: Some(key_store_dir),
    })
}

/// Loads the sign-in that `sealcast login` stored in `key_store` for the
/// running relay at `base_url`.
pub(super) fn load_external(
    key_store: &Path,
    base_url: &Url,
    ca_cert: Option<&Path>,
) -> Result<StaffSignIn, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let store = KeyStore::open(key_store).map_err(|err| fail(err.to_string()))?;
    let device = SignedInDevice::load(&store, base_url, ca_cert).map_err(|err| {
        fail(format!(
            "{err}: sign a clinician device in with `sealcast login --relay {base_url} --email ADDRESS --key-store {}`",
            key_store.display()
        ))
    })?;
    Ok(StaffSignIn {
        _refresher: device.spawn_refresher(),
        device,
        _key_store: None,
    })
}
