//! Device sign-in and token refresh through the library against the
//! loopback test relay: polling until approval, the TOTP step, expired
//! links, refresh rotation and persistence, refresh after a 401, the
//! background refresher and revocation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::accounts::PollOutcome;
use sealcast_client::auth::login::{wait_for_approval, Approval};
use sealcast_client::auth::{AccountsApi, SignedInDevice};
use sealcast_client::{
    Backoff, ClientError, KeyStore, Publisher, PublisherConfig, SecretString, TlsSettings,
};
use sealcast_protocol::auth::{LoginPollResponse, Role};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::{SessionKey, TranscriptSegment};
use support::accounts::{RECOVERY_CODE, TOTP_CODE};
use support::{TestRelay, CLINICIAN, ORGANIZATION};

fn store() -> (tempfile::TempDir, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(dir.path()).unwrap();
    (dir, store)
}

fn accounts(relay: &TestRelay) -> AccountsApi {
    let tls = TlsSettings::new(Some(&relay.ca_cert)).unwrap();
    AccountsApi::new(&relay.url, &tls).unwrap()
}

async fn me(device: &SignedInDevice) -> Result<String, ClientError> {
    device
        .call(|auth| {
            let api = device.accounts();
            async move { api.me(auth.as_ref()).await }
        })
        .await
        .map(|user| user.email)
}

fn stored_refresh_token(store: &KeyStore, relay: &TestRelay) -> String {
    let credentials = store.load_device(&relay.url).unwrap().unwrap();
    credentials
        .sign_in
        .unwrap()
        .refresh_token
        .expose()
        .to_string()
}

#[tokio::test]
async fn sign_in_polls_until_approved() {
    let relay = TestRelay::start().await;
    let api = accounts(&relay);
    let key = Arc::new(DeviceKey::generate().unwrap());
    let started = api
        .start_login(&key, CLINICIAN, Some("laptop"))
        .await
        .unwrap();
    let login_id = SecretString::new(started.login_id.clone());

    let first = api.poll(&key, &login_id).await.unwrap();
    assert!(
        matches!(first, PollOutcome::Status(LoginPollResponse::Pending)),
        "{first:?}"
    );

    let confirm = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(relay.confirm_login(CLINICIAN).await);
    };
    let (approval, ()) = tokio::join!(wait_for_approval(&api, &key, &started), confirm);
    let Approval::Approved(tokens) = approval.unwrap() else {
        panic!("expected tokens");
    };
    assert_eq!(tokens.user.email, CLINICIAN);
    assert_eq!(tokens.user.role, Role::Clinician);
    assert!(relay.auth_stats().polls >= 2);

    // The link is spent, so polling again fails.
    let again = api.poll(&key, &login_id).await.unwrap_err();
    assert!(matches!(again, ClientError::SignInExpired), "{again}");
}

#[tokio::test]
async fn poll_with_another_key_is_rejected() {
    let relay = TestRelay::start().await;
    let api = accounts(&relay);
    let key = Arc::new(DeviceKey::generate().unwrap());
    let started = api.start_login(&key, CLINICIAN, None).await.unwrap();
    relay.confirm_login(CLINICIAN).await;

    let thief = Arc::new(DeviceKey::generate().unwrap());
    let login_id = SecretString::new(started.login_id.clone());
    let err = api.poll(&thief, &login_id).await.unwrap_err();
    assert!(
        matches!(err, ClientError::RelayStatus { status: 401, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn expired_link_ends_the_wait() {
    let relay = TestRelay::start().await;
    let api = accounts(&relay);
    let key = Arc::new(DeviceKey::generate().unwrap());
    let started = api.start_login(&key, CLINICIAN, None).await.unwrap();
    relay.expire_logins();

    let err = wait_for_approval(&api, &key, &started).await.unwrap_err();
    assert!(matches!(err, ClientError::SignInExpired), "{err}");
    assert!(
        err.to_string().contains("run `sealcast login` again"),
        "{err}"
    );
}

#[tokio::test]
async fn totp_step_returns_tokens() {
    let relay = TestRelay::start().await;
    relay.add_user("admin@clinic.example", Role::Admin, ORGANIZATION);
    relay.enable_totp("admin@clinic.example");
    let api = accounts(&relay);
    let key = Arc::new(DeviceKey::generate().unwrap());
    let started = api
        .start_login(&key, "admin@clinic.example", None)
        .await
        .unwrap();
    relay.confirm_login("admin@clinic.example").await;

    let approval = wait_for_approval(&api, &key, &started).await.unwrap();
    assert!(matches!(approval, Approval::TotpRequired), "{approval:?}");

    let login_id = SecretString::new(started.login_id.clone());
    let wrong = api
        .submit_totp(&key, &login_id, &SecretString::from("000000"))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, ClientError::RelayStatus { status: 401, .. }),
        "{wrong}"
    );
    assert!(wrong.to_string().contains("recovery code"), "{wrong}");

    let tokens = api
        .submit_totp(&key, &login_id, &SecretString::from(TOTP_CODE))
        .await
        .unwrap();
    assert_eq!(tokens.user.role, Role::Admin);
}

#[tokio::test]
async fn recovery_code_works_once() {
    let relay = TestRelay::start().await;
    relay.enable_totp(CLINICIAN);
    let api = accounts(&relay);
    for attempt in 0..2 {
        let key = Arc::new(DeviceKey::generate().unwrap());
        let started = api.start_login(&key, CLINICIAN, None).await.unwrap();
        relay.confirm_login(CLINICIAN).await;
        wait_for_approval(&api, &key, &started).await.unwrap();
        let login_id = SecretString::new(started.login_id.clone());
        let result = api
            .submit_totp(&key, &login_id, &SecretString::from(RECOVERY_CODE))
            .await;
        assert_eq!(result.is_ok(), attempt == 0, "attempt {attempt}");
    }
}

#[tokio::test]
async fn refresh_rotates_and_persists() {
    let relay = TestRelay::start().await;
    let (_dir, store) = store();
    let device = relay.sign_in(&store, CLINICIAN).await;
    let first_refresh = stored_refresh_token(&store, &relay);
    let first_access = device.token().access_token();

    device.refresh().await.unwrap();

    let second_refresh = stored_refresh_token(&store, &relay);
    assert_ne!(first_refresh, second_refresh);
    assert_ne!(device.token().access_token(), first_access);
    assert_eq!(relay.auth_stats().refreshes, 1);

    // A new process reads the rotated token from the key store and uses it.
    let reloaded = SignedInDevice::load(&store, &relay.url, None).unwrap();
    reloaded.refresh().await.unwrap();
    assert_eq!(me(&reloaded).await.unwrap(), CLINICIAN);
    assert_eq!(relay.auth_stats().refresh_reuses, 0);
}

#[tokio::test]
async fn short_lived_token_refreshes_before_use() {
    let relay = TestRelay::start().await;
    relay.set_access_ttl(30);
    let (_dir, store) = store();
    let device = relay.sign_in(&store, CLINICIAN).await;

    // 30 s is under the refresh margin, so the call refreshes first.
    assert_eq!(me(&device).await.unwrap(), CLINICIAN);
    assert_eq!(relay.auth_stats().refreshes, 1);
}

#[tokio::test]
async fn rejected_token_refreshes_and_retries() {
    let relay = TestRelay::start().await;
    let (_dir, store) = store();
    let device = relay.sign_in(&store, CLINICIAN).await;
    relay.expire_access_tokens();

    assert_eq!(me(&device).await.unwrap(), CLINICIAN);
    assert_eq!(relay.auth_stats().refreshes, 1);
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_sign_in() {
    let relay = TestRelay::start().await;
    let (_dir, store) = store();
    let device = relay.sign_in(&store, CLINICIAN).await;
    let stale = store.load_device(&relay.url).unwrap().unwrap();
    device.refresh().await.unwrap();

    // A copy of the old file replays the rotated refresh token.
    let api = device.accounts();
    let old_token = stale.sign_in.as_ref().unwrap().refresh_token.clone();
    let err = api.refresh(&stale.key, &old_token).await.unwrap_err();
    assert!(matches!(err, ClientError::SignInRevoked { .. }), "{err}");
    assert_eq!(relay.auth_stats().refresh_reuses, 1);

    // The whole sign-in ended, the current refresh token included.
    let err = device.refresh().await.unwrap_err();
    assert!(matches!(err, ClientError::SignInRevoked { .. }), "{err}");
    assert!(err.to_string().contains("sealcast login --relay"), "{err}");
    let stored = store.load_device(&relay.url).unwrap().unwrap();
    assert!(
        stored.sign_in.is_none(),
        "the revoked sign-in stayed stored"
    );
    let err = SignedInDevice::load(&store, &relay.url, None).unwrap_err();
    assert!(matches!(err, ClientError::NotSignedIn { .. }), "{err}");
}

#[tokio::test]
async fn background_refresher_updates_the_shared_token() {
    let relay = TestRelay::start().await;
    // 62 s leaves 2 s before the one-minute refresh margin.
    relay.set_access_ttl(62);
    let (_dir, store) = store();
    let device = relay.sign_in(&store, CLINICIAN).await;
    let token = device.token();
    let before = token.access_token();
    let first_refresh = stored_refresh_token(&store, &relay);

    let refresher = device.spawn_refresher();
    tokio::time::timeout(Duration::from_secs(15), async {
        while token.access_token() == before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the refresher did not refresh");
    assert!(!refresher.is_finished());
    assert!(relay.auth_stats().refreshes >= 1);
    assert_ne!(stored_refresh_token(&store, &relay), first_refresh);
}

#[tokio::test]
async fn logout_keeps_device_key() {
    let relay = TestRelay::start().await;
    let (_dir, store) = store();
    let device = relay.sign_in(&store, CLINICIAN).await;
    let thumbprint = device.token().key().thumbprint().to_string();
    let old_token = device.token();

    device.sign_out().await.unwrap();

    let stored = store.load_device(&relay.url).unwrap().unwrap();
    assert!(stored.sign_in.is_none());
    assert_eq!(stored.key.thumbprint(), thumbprint);
    let api = accounts(&relay);
    let err = api.me(old_token.as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::RelayStatus { status: 401, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn not_signed_in_names_the_command() {
    let relay = TestRelay::start().await;
    let (_dir, store) = store();
    let err = SignedInDevice::load(&store, &relay.url, None).unwrap_err();
    assert!(matches!(err, ClientError::NotSignedIn { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("sealcast login --relay {}", relay.url)),
        "{message}"
    );
}

fn segment(id: u64) -> TranscriptSegment {
    TranscriptSegment {
        segment_id: id,
        revision: 0,
        speaker: "doctor".into(),
        start_ms: id * 1000,
        end_ms: id * 1000 + 800,
        text: format!("utterance number {id}"),
        is_final: true,
    }
}

#[tokio::test]
async fn revoked_device_is_closed_and_not_retried() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = relay.create_session(&key).await;
    let mut config = PublisherConfig::new(
        relay.url.clone(),
        created.session_id,
        created.device.authorizer(),
        TlsSettings::new(Some(&relay.ca_cert)).unwrap(),
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_attempts: None,
    };
    let mut publisher = Publisher::connect(config, &key).await.unwrap();
    publisher.publish(&segment(0)).await.unwrap();

    relay.revoke_device(&created.device.device_id().await.unwrap());

    let mut outcome = Ok(0);
    for id in 1..100 {
        outcome = publisher.publish(&segment(id)).await;
        if outcome.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = match outcome {
        Err(err) => err,
        Ok(_) => publisher.finish().await.unwrap_err(),
    };
    assert!(matches!(err, ClientError::Revoked { .. }), "{err}");
    assert!(err.to_string().contains("close code 4009"), "{err}");
    assert!(err.to_string().contains("sealcast login --relay"), "{err}");
    assert_eq!(relay.stats().publish_connections, 1);
}

#[tokio::test]
async fn session_of_another_organization_is_forbidden() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = relay.create_session(&key).await;
    relay.add_user("other@elsewhere.example", Role::Clinician, "org-other");
    let (_dir, store) = store();
    let outsider = relay.sign_in(&store, "other@elsewhere.example").await;

    let config = PublisherConfig::new(
        relay.url.clone(),
        created.session_id,
        outsider.authorizer(),
        TlsSettings::new(Some(&relay.ca_cert)).unwrap(),
    );
    let err = Publisher::connect(config, &key).await.unwrap_err();
    assert!(
        matches!(err, ClientError::RelayStatus { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("another organization"), "{err}");
    assert_eq!(relay.stats().publish_connections, 0);
}

#[tokio::test]
async fn concurrent_refreshes_share_one_rotation() {
    let relay = TestRelay::start().await;
    let (_dir, store) = store();
    relay.sign_in(&store, CLINICIAN).await;
    // Two loads stand for two processes that share the key store.
    let first = SignedInDevice::load(&store, &relay.url, None).unwrap();
    let second = SignedInDevice::load(&store, &relay.url, None).unwrap();

    let (one, two) = tokio::join!(first.refresh(), second.refresh());
    one.unwrap();
    two.unwrap();

    assert_eq!(relay.auth_stats().refresh_reuses, 0);
    assert_eq!(me(&first).await.unwrap(), CLINICIAN);
    assert_eq!(me(&second).await.unwrap(), CLINICIAN);
    let lock = store.device_path(&relay.url).with_extension("lock");
    assert!(!lock.exists());
}
