//! The account flows on both engines, each through the relay's own schema
//! and opening code, PostgreSQL in a fresh database that the test creates
//! and drops. PostgreSQL cases use the server named by
//! `SEALCAST_TEST_POSTGRES`; without it they are skipped, except under CI,
//! where they fail.

use std::time::Duration;

use sealcast_protocol::auth::Role;

use super::devices::{self, NewDevice};
use super::login::{self, LoginKey, NewLogin, PendingDevice};
use super::recovery;
use super::refresh::{self, Family, RefreshRejection};
use super::store::{self, AccountDb};
use super::tokens::{TokenError, TokenSigner, TokenSubject};
use crate::at_rest::{KeyEncryptionKey, KeySource};
use crate::credentials::random_token;
use crate::db::db_params;
use crate::db::test_database::TestDatabase;
use crate::store::StoreError;

/// Milliseconds that the flows use as the current time.
const NOW: i64 = 1_900_000_000_000;

/// An account database on one engine, with what it needs to stay open.
struct Engine {
    name: &'static str,
    db: AccountDb,
    _database: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

/// Opens a SQLite account database, and a PostgreSQL one when
/// `SEALCAST_TEST_POSTGRES` names a server.
fn engines() -> Vec<Engine> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = AccountDb::open_with_key(
        dir.path(),
        &crate::db::Backend::Sqlite(dir.path().join(crate::store::DATABASE_FILE)),
        &KeySource::Development,
    )
    .unwrap();
    let mut engines = vec![Engine {
        name: "SQLite",
        db: sqlite,
        _database: None,
        _dir: dir,
    }];
    if let Some(engine) = postgres_engine() {
        engines.push(engine);
    }
    engines
}

/// Opens an account database in a fresh PostgreSQL database with the
/// relay's own schema and opening code.
fn postgres_engine() -> Option<Engine> {
    let database = TestDatabase::create()?;
    let dir = tempfile::tempdir().unwrap();
    let source = KeySource::Environment(KeyEncryptionKey::generate());
    let db = AccountDb::open_with_key(dir.path(), database.backend(), &source).unwrap();
    Some(Engine {
        name: "PostgreSQL",
        db,
        _database: Some(database),
        _dir: dir,
    })
}

/// Stores an organization and a clinician, and returns their ids.
fn organization_and_user(db: &AccountDb, email: &str) -> (String, String) {
    db.run_blocking(|conn| {
        let org = store::insert_organization(conn, "Riverside Clinic", NOW)?;
        let user =
            store::insert_user(conn, &org, email, Role::Clinician, NOW)?.expect("a new address");
        Ok::<_, StoreError>((org, user))
    })
    .unwrap()
}

fn new_device<'a>(user_id: &'a str, thumbprint: &'a str) -> NewDevice<'a> {
    NewDevice {
        user_id,
        name: "Ward 3 Tablet",
        public_key: "public key",
        thumbprint,
    }
}

#[test]
fn organizations_and_users_on_both_engines() {
    for engine in engines() {
        let name = engine.name;
        let (org, user_id) = organization_and_user(&engine.db, "doc@clinic.example");
        engine
            .db
            .run_blocking(|conn| {
                assert!(store::organization_exists(conn, &org)?, "{name}");
                assert!(!store::organization_exists(conn, "org_missing")?, "{name}");
                let taken = store::insert_user(conn, &org, "doc@clinic.example", Role::Admin, NOW)?;
                assert_eq!(taken, None, "{name}: a second user got the address");
                let admin =
                    store::insert_user(conn, &org, "admin@clinic.example", Role::Admin, NOW + 1)?;
                assert!(admin.is_some(), "{name}");

                let found = store::user_by_email(conn, "doc@clinic.example")?.expect("the user");
                assert_eq!(found.user_id, user_id, "{name}");
                assert_eq!(found.email, "doc@clinic.example", "{name}");
                assert_eq!(found.role, Role::Clinician, "{name}");
                assert!(found.totp_secret.is_none(), "{name}");
                assert!(
                    store::user_by_email(conn, "other@clinic.example")?.is_none(),
                    "{name}"
                );
                let by_id = store::user_by_id(conn, &user_id)?.expect("the user");
                assert_eq!(by_id.email, "doc@clinic.example", "{name}");
                assert!(store::user_by_id(conn, "usr_missing")?.is_none(), "{name}");

                let listed = store::list_users(conn, Some(&org))?;
                let emails: Vec<&str> = listed.iter().map(|user| user.email.as_str()).collect();
                assert_eq!(
                    emails,
                    ["doc@clinic.example", "admin@clinic.example"],
                    "{name}"
                );
                assert_eq!(store::list_users(conn, None)?.len(), 2, "{name}");
                assert!(
                    store::list_users(conn, Some("org_missing"))?.is_empty(),
                    "{name}"
                );

                assert!(store::disable_user(conn, &user_id, NOW + 2)?, "{name}");
                assert!(!store::disable_user(conn, &user_id, NOW + 3)?, "{name}");
                let disabled = store::user_by_id(conn, &user_id)?.expect("the user");
                assert_eq!(disabled.disabled_at, Some(NOW + 2), "{name}");
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

#[test]
fn devices_on_both_engines() {
    for engine in engines() {
        let name = engine.name;
        let (org, user_id) = organization_and_user(&engine.db, "doc@clinic.example");
        engine
            .db
            .run_blocking(|conn| {
                let device_id = devices::insert_device(conn, &new_device(&user_id, "jkt-1"), NOW)?
                    .expect("a new key");
                let again = devices::insert_device(conn, &new_device(&user_id, "jkt-1"), NOW)?;
                assert_eq!(again, None, "{name}: a second device got the key");

                let (device, organization) =
                    devices::device_by_id(conn, &device_id)?.expect("the device");
                assert_eq!(organization, org, "{name}");
                assert_eq!(device.name, "Ward 3 Tablet", "{name}");
                assert_eq!(device.user_id, user_id, "{name}");
                assert!(
                    devices::device_by_id(conn, "dev_missing")?.is_none(),
                    "{name}"
                );
                let by_key = devices::device_by_thumbprint(conn, "jkt-1")?.expect("the device");
                assert_eq!(by_key.device_id, device_id, "{name}");
                assert!(
                    devices::device_by_thumbprint(conn, "jkt-2")?.is_none(),
                    "{name}"
                );
                assert_eq!(devices::list_devices(conn, Some(&org))?.len(), 1, "{name}");
                assert_eq!(devices::list_devices(conn, None)?.len(), 1, "{name}");
                assert!(
                    devices::list_devices(conn, Some("org_missing"))?.is_empty(),
                    "{name}"
                );

                devices::touch_device(conn, &device_id, NOW + 5)?;
                let (touched, _) = devices::device_by_id(conn, &device_id)?.expect("the device");
                assert_eq!(touched.last_seen_at, Some(NOW + 5), "{name}");

                assert!(devices::revoke_device(conn, &device_id, NOW + 6)?, "{name}");
                assert!(
                    !devices::revoke_device(conn, &device_id, NOW + 7)?,
                    "{name}"
                );
                let (revoked, _) = devices::device_by_id(conn, &device_id)?.expect("the device");
                assert_eq!(revoked.revoked_at, Some(NOW + 6), "{name}");
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

#[test]
fn pending_logins_on_both_engines() {
    for engine in engines() {
        let name = engine.name;
        let (_, user_id) = organization_and_user(&engine.db, "doc@clinic.example");
        engine
            .db
            .run_blocking(|conn| {
                let device_login = NewLogin {
                    login_id_hash: [1; 32],
                    token_hash: [2; 32],
                    user_id: Some(user_id.clone()),
                    device: Some(PendingDevice {
                        public_key: "public key".into(),
                        thumbprint: "jkt-1".into(),
                        name: "Night Shift Phone".into(),
                    }),
                    created_at: NOW,
                    expires_at: NOW + 600_000,
                };
                login::insert(conn, &device_login)?;
                let browser_login = NewLogin {
                    login_id_hash: [3; 32],
                    token_hash: [4; 32],
                    user_id: None,
                    device: None,
                    created_at: NOW,
                    expires_at: NOW + 1,
                };
                login::insert(conn, &browser_login)?;

                let found = login::find(conn, LoginKey::LoginId([1; 32]))?.expect("the sign-in");
                assert_eq!(found.login_id_hash, [1; 32], "{name}");
                assert_eq!(
                    found.user.as_ref().map(|user| user.user_id.as_str()),
                    Some(user_id.as_str()),
                    "{name}"
                );
                let device = found.device.expect("a device sign-in");
                assert_eq!(device.name, "Night Shift Phone", "{name}");
                assert_eq!(device.thumbprint, "jkt-1", "{name}");
                assert!(!found.confirmed, "{name}");
                assert_eq!(found.attempts, 0, "{name}");
                let browser = login::find(conn, LoginKey::Token([4; 32]))?.expect("the sign-in");
                assert!(browser.user.is_none(), "{name}");
                assert!(browser.device.is_none(), "{name}");
                assert!(
                    login::find(conn, LoginKey::Token([9; 32]))?.is_none(),
                    "{name}"
                );

                login::mark_confirmed(conn, &[1; 32], &[5; 32], NOW + 1)?;
                let confirmed =
                    login::find(conn, LoginKey::AnyLoginId([5; 32]))?.expect("the sign-in");
                assert!(confirmed.confirmed, "{name}");
                assert_eq!(login::count_attempt(conn, &[1; 32])?, 1, "{name}");
                assert_eq!(login::count_attempt(conn, &[1; 32])?, 2, "{name}");
                login::mark_second_factor(conn, &[1; 32], NOW + 2)?;
                assert!(login::mark_completed(conn, &[1; 32], NOW + 3)?, "{name}");
                assert!(!login::mark_completed(conn, &[1; 32], NOW + 4)?, "{name}");
                let completed =
                    login::find(conn, LoginKey::LoginId([1; 32]))?.expect("the sign-in");
                assert!(completed.second_factor_passed, "{name}");
                assert!(completed.completed, "{name}");
                assert_eq!(completed.attempts, 2, "{name}");

                // Only the browser sign-in expired more than a day ago.
                let deleted = login::delete_expired(conn, NOW + 2 + 24 * 60 * 60 * 1000)?;
                assert_eq!(deleted, 1, "{name}");
                assert!(
                    login::find(conn, LoginKey::Token([4; 32]))?.is_none(),
                    "{name}"
                );
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

#[test]
fn refresh_tokens_rotate_on_both_engines() {
    for engine in engines() {
        let name = engine.name;
        let (_, user_id) = organization_and_user(&engine.db, "doc@clinic.example");
        engine
            .db
            .run_blocking(|conn| {
                let device_id = devices::insert_device(conn, &new_device(&user_id, "jkt-1"), NOW)?
                    .expect("a new key");
                let family = Family {
                    family_id: "sgn_1".into(),
                    user_id: user_id.clone(),
                    device_id: Some(device_id.clone()),
                    mfa: true,
                };
                let first = refresh::insert(conn, &family, NOW, 60_000)?;

                let wrong_key = refresh::rotate(conn, &first.hash(), None, NOW + 1, 60_000)?;
                assert_eq!(wrong_key.err(), Some(RefreshRejection::WrongKey), "{name}");
                let unknown =
                    refresh::rotate(conn, &random_token().hash(), Some("jkt-1"), NOW, 60_000)?;
                assert_eq!(unknown.err(), Some(RefreshRejection::Unknown), "{name}");

                let (rotated, second) =
                    refresh::rotate(conn, &first.hash(), Some("jkt-1"), NOW + 1, 60_000)?
                        .expect("a rotated token");
                assert_eq!(rotated, family, "{name}");
                let expired =
                    refresh::rotate(conn, &second.hash(), Some("jkt-1"), NOW + 60_001, 60_000)?;
                assert_eq!(expired.err(), Some(RefreshRejection::Expired), "{name}");

                let state = store::credential_state(conn, &user_id, Some(&device_id), "sgn_1")?
                    .expect("the user");
                assert!(!state.user_disabled, "{name}");
                assert!(!state.device_revoked, "{name}");
                assert!(!state.sign_in_revoked, "{name}");
                let no_device =
                    store::credential_state(conn, &user_id, None, "sgn_1")?.expect("the user");
                assert!(!no_device.device_revoked, "{name}");
                let other_device =
                    store::credential_state(conn, &user_id, Some("dev_missing"), "sgn_1")?
                        .expect("the user");
                assert!(other_device.device_revoked, "{name}");
                assert!(
                    store::credential_state(conn, "usr_missing", None, "sgn_1")?.is_none(),
                    "{name}"
                );

                // The used token again revokes the sign-in, and that commits.
                let reused = refresh::rotate(conn, &first.hash(), Some("jkt-1"), NOW + 2, 60_000)?;
                assert_eq!(reused.err(), Some(RefreshRejection::Reused), "{name}");
                let after = refresh::rotate(conn, &second.hash(), Some("jkt-1"), NOW + 3, 60_000)?;
                assert_eq!(after.err(), Some(RefreshRejection::Revoked), "{name}");
                let state = store::credential_state(conn, &user_id, Some(&device_id), "sgn_1")?
                    .expect("the user");
                assert!(state.sign_in_revoked, "{name}");

                // Signing out and disabling revoke the other sign-ins too.
                let browser = Family {
                    family_id: "sgn_2".into(),
                    user_id: user_id.clone(),
                    device_id: None,
                    mfa: false,
                };
                let token = refresh::insert(conn, &browser, NOW, 60_000)?;
                refresh::revoke_family(conn, "sgn_2", NOW + 4)?;
                let signed_out = refresh::rotate(conn, &token.hash(), None, NOW + 5, 60_000)?;
                assert_eq!(signed_out.err(), Some(RefreshRejection::Revoked), "{name}");
                let browser = Family {
                    family_id: "sgn_3".into(),
                    ..browser
                };
                let token = refresh::insert(conn, &browser, NOW, 60_000)?;
                store::disable_user(conn, &user_id, NOW + 6)?;
                let disabled = refresh::rotate(conn, &token.hash(), None, NOW + 7, 60_000)?;
                assert_eq!(disabled.err(), Some(RefreshRejection::Revoked), "{name}");
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

#[test]
fn totp_and_recovery_codes_on_both_engines() {
    for engine in engines() {
        let name = engine.name;
        let (_, user_id) = organization_and_user(&engine.db, "doc@clinic.example");
        let (codes, hashes) = recovery::generate(3);
        engine
            .db
            .run_blocking(|conn| {
                store::set_pending_totp(conn, &user_id, b"first secret")?;
                store::set_pending_totp(conn, &user_id, b"second secret")?;
                let pending = store::user_by_id(conn, &user_id)?.expect("the user");
                assert_eq!(
                    pending.totp_pending_secret.as_deref().map(Vec::as_slice),
                    Some(b"second secret".as_slice()),
                    "{name}"
                );
                assert!(pending.totp_secret.is_none(), "{name}");

                store::activate_totp(conn, &user_id, 100, &hashes, NOW)?;
                let active = store::user_by_id(conn, &user_id)?.expect("the user");
                assert_eq!(
                    active.totp_secret.as_deref().map(Vec::as_slice),
                    Some(b"second secret".as_slice()),
                    "{name}"
                );
                assert!(active.totp_pending_secret.is_none(), "{name}");
                assert_eq!(active.totp_last_step, Some(100), "{name}");

                assert!(!store::use_totp_step(conn, &user_id, 100)?, "{name}");
                assert!(store::use_totp_step(conn, &user_id, 101)?, "{name}");
                assert!(!store::use_totp_step(conn, &user_id, 99)?, "{name}");

                let typed = recovery::normalize_and_hash(codes[1].expose()).expect("a code");
                assert!(
                    store::use_recovery_code(conn, &user_id, &typed, NOW)?,
                    "{name}"
                );
                assert!(
                    !store::use_recovery_code(conn, &user_id, &typed, NOW)?,
                    "{name}"
                );
                assert!(
                    !store::use_recovery_code(conn, "usr_missing", &hashes[0], NOW)?,
                    "{name}"
                );

                // Activating again replaces the codes.
                store::set_pending_totp(conn, &user_id, b"third secret")?;
                let (_, replacements) = recovery::generate(2);
                store::activate_totp(conn, &user_id, 200, &replacements, NOW)?;
                assert!(
                    !store::use_recovery_code(conn, &user_id, &hashes[0], NOW)?,
                    "{name}"
                );
                assert!(
                    store::use_recovery_code(conn, &user_id, &replacements[0], NOW)?,
                    "{name}"
                );
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

#[tokio::test]
async fn signing_keys_rotate_on_both_engines() {
    // The blocking PostgreSQL client runs a runtime of its own, so it is
    // opened and closed outside this one, as the relay does.
    let engines = tokio::task::spawn_blocking(engines).await.unwrap();
    for engine in engines {
        let name = engine.name;
        let start = crate::store::now_millis();
        let unix = u64::try_from(start / 1000).unwrap();
        let load = || {
            TokenSigner::load(
                &engine.db,
                "https://relay.example".into(),
                Duration::from_secs(300),
                Duration::from_secs(60),
                start,
            )
        };
        let node_a = load().await.unwrap();
        let node_b = load().await.unwrap();
        let subject = TokenSubject {
            user_id: "usr_1".into(),
            organization_id: "org_1".into(),
            role: Role::Clinician,
            device_id: None,
            thumbprint: None,
            mfa: false,
            family_id: "sgn_1".into(),
        };
        let old = node_a.issue(&subject, unix).unwrap();
        assert!(
            node_b.verify(&old, unix).is_ok(),
            "{name}: one key for both"
        );

        node_a
            .rotate_if_due(&engine.db, start + 61_000)
            .await
            .unwrap();
        let new = node_a.issue(&subject, unix).unwrap();
        assert!(node_a.verify(&old, unix).is_ok(), "{name}");
        assert_eq!(
            node_b.verify(&new, unix),
            Err(TokenError::UnknownKey),
            "{name}"
        );
        let claims = node_b
            .verify_or_reload(&engine.db, &new, unix)
            .await
            .unwrap();
        assert_eq!(claims.sub, "usr_1", "{name}");

        let later = start + 61_000 + 300_000 + 6_000;
        node_a.rotate_if_due(&engine.db, later).await.unwrap();
        assert_eq!(
            node_a.verify(&old, unix),
            Err(TokenError::UnknownKey),
            "{name}"
        );
        tokio::task::spawn_blocking(move || drop(engine))
            .await
            .unwrap();
    }
}

#[test]
fn sqlite_functions_open_values_sealed_in_rust() {
    let dir = tempfile::tempdir().unwrap();
    let db = AccountDb::open_with_key(
        dir.path(),
        &crate::db::Backend::Sqlite(dir.path().join(crate::store::DATABASE_FILE)),
        &KeySource::Development,
    )
    .unwrap();
    let (org, user_id) = organization_and_user(&db, "doc@clinic.example");
    db.run_blocking(|conn| {
        let sqlite = conn.as_sqlite().expect("a SQLite connection");
        let (email, name): (String, String) = sqlite
            .query_row(
                "SELECT at_rest_open_text('users', 'email', u.user_id, u.email),
                     at_rest_open_text('organizations', 'name', o.organization_id, o.name)
                 FROM users u JOIN organizations o ON o.organization_id = u.organization_id
                 WHERE u.user_id = ?1 AND u.email_hash = at_rest_email_hash(?2)",
                rusqlite::params![user_id, "doc@clinic.example"],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(email, "doc@clinic.example");
        assert_eq!(name, "Riverside Clinic");
        let stored_org: String = conn
            .query_one(
                "SELECT organization_id FROM organizations WHERE organization_id = ?1",
                db_params![org],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored_org, org);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}
