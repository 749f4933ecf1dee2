//! An admin's device against the real relay process: it signs in, enrols
//! TOTP, and signs in again with a code through the client library, the
//! same calls `sealcast login` makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{SystemTime, UNIX_EPOCH};

use sealcast_client::auth::login::{wait_for_approval, Approval};
use sealcast_client::auth::outbox::{confirm_link, wait_for_link};
use sealcast_client::auth::{AccountsApi, DeviceCredentials};
use sealcast_client::{SecretString, TlsSettings};
use sealcast_protocol::auth::Role;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::staff::{create_organization, totp_code, StaffDevice};
use url::Url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_signs_in_with_totp_code() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let org = create_organization(&relay.data_dir);
    let admin = StaffDevice::sign_in_new_user(&relay, &org, Role::Admin).await;
    let url = Url::parse(&relay.base_url()).unwrap();
    let tls = TlsSettings::new(Some(&relay.ca_cert())).unwrap();
    let api = AccountsApi::new(&url, &tls).unwrap();

    // Without TOTP the admin may not administer.
    let denied = api.list_users(admin.authorizer().as_ref()).await;
    assert!(denied.is_err(), "an admin without TOTP listed users");

    let enrolment = api.totp_enrol(admin.authorizer().as_ref()).await.unwrap();
    let code = totp_code(&enrolment.secret_base32, unix_now());
    let activated = api
        .totp_activate(admin.authorizer().as_ref(), &SecretString::from(code))
        .await
        .unwrap();
    assert_eq!(activated.recovery_codes.len(), 10);

    // A new device of the admin: the link alone is not enough.
    let mut credentials = DeviceCredentials::generate(url.clone(), Some(relay.ca_cert())).unwrap();
    let requested = SystemTime::now();
    let started = api
        .start_login(&credentials.key, &admin.email, Some("second admin device"))
        .await
        .unwrap();
    let link = wait_for_link(&relay.outbox_dir(), &admin.email, requested)
        .await
        .unwrap();
    let confirmed = confirm_link(&url, &tls, &link).await.unwrap();
    assert!(confirmed.totp_required, "the admin's sign-in needs TOTP");
    let approval = wait_for_approval(&api, &credentials.key, &started)
        .await
        .unwrap();
    assert!(matches!(approval, Approval::TotpRequired), "{approval:?}");

    // The code of the next step: the activation used the current one, and
    // a code is accepted once.
    let login_id = SecretString::from(started.login_id.as_str());
    let next_code = totp_code(&enrolment.secret_base32, unix_now() + 30);
    let tokens = api
        .submit_totp(&credentials.key, &login_id, &SecretString::from(next_code))
        .await
        .unwrap();
    assert_eq!(tokens.user.role, Role::Admin);
    assert!(tokens.user.totp_enabled);

    // The new device administers with its tokens.
    credentials.sign_in = None;
    let key_store_dir = tempfile::tempdir().unwrap();
    let key_store = sealcast_client::KeyStore::open(key_store_dir.path()).unwrap();
    key_store.store_tokens(&mut credentials, tokens).unwrap();
    let device =
        sealcast_client::auth::SignedInDevice::new(key_store, credentials, Some(relay.ca_cert()))
            .unwrap();
    let users = api.list_users(device.authorizer().as_ref()).await.unwrap();
    assert!(users.iter().any(|user| user.email == admin.email));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
