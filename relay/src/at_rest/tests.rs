//! The at-rest layer against real database files: migration of a database
//! with plaintext rows, rows whose sealed values were swapped, and wrong,
//! missing and rotated keys.

use std::path::Path;

use rusqlite::{params, Connection};
use sealcast_protocol::SessionId;

use super::*;
use crate::accounts::login::{self, LoginKey};
use crate::accounts::{devices, store as accounts};
use crate::credentials::CredentialHash;
use crate::store::{migrate_to, open_keyed_writer, StoreError, AT_REST_VERSION, DATABASE_FILE};

const EMAIL: &str = "nurse.okafor@clinic.example";
const ORGANIZATION: &str = "Riverside Paediatrics";
const DEVICE_NAME: &str = "Ward 3 Tablet";
const PENDING_DEVICE_NAME: &str = "Night Shift Phone";
const TOTP_SECRET: &[u8] = b"totp secret twenty bytes";
const SIGNING_KEY: [u8; 32] = [0x5a; 32];
const FRAME: &[u8] = b"frame bytes exactly as the device sealed them";
const LOGIN_ID_HASH: CredentialHash = [4; 32];

/// Wraps a SQLite connection for the account queries, which seal and open
/// values with the data keys themselves.
/// Opens an extra SQLite write connection to `relay.db` in `dir`, as the
/// accounts code opens one.
fn sqlite_writer(dir: &Path, keys: &DatabaseKeys) -> Connection {
    let backend = crate::db::Backend::Sqlite(dir.join(DATABASE_FILE));
    match crate::store::open_extra_writer(&backend, keys).unwrap() {
        crate::db::Db::Sqlite(conn) => conn,
        crate::db::Db::Postgres(_) => unreachable!("a SQLite backend opens SQLite"),
    }
}

fn account_connection(conn: Connection, keys: &DatabaseKeys) -> accounts::AccountConnection {
    accounts::AccountConnection::new(crate::db::Db::from(conn), keys.data_keys().clone())
}

fn key_source() -> KeySource {
    KeySource::Environment(KeyEncryptionKey::generate())
}

/// Builds a database as the last relay without at-rest encryption left it,
/// with one row in every table that the migration seals.
fn write_plaintext_database(dir: &Path, session_id: SessionId) {
    let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    migrate_to(&conn, AT_REST_VERSION - 1).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO organizations VALUES ('org_1', '{ORGANIZATION}', 1);
         INSERT INTO users (user_id, organization_id, email, role, created_at)
             VALUES ('usr_1', 'org_1', '{EMAIL}', 'clinician', 1);
         INSERT INTO users (user_id, organization_id, email, role, created_at)
             VALUES ('usr_2', 'org_1', 'second@clinic.example', 'admin', 1);
         INSERT INTO devices (device_id, user_id, name, public_key, thumbprint, created_at)
             VALUES ('dev_1', 'usr_1', '{DEVICE_NAME}', 'pk', 'tp', 1);"
    ))
    .unwrap();

    conn.execute(
        "UPDATE users SET totp_secret = ?1 WHERE user_id = 'usr_1'",
        params![TOTP_SECRET],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO signing_keys (kid, private_key, created_at) VALUES ('key_1', ?1, 1)",
        params![SIGNING_KEY.as_slice()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO pending_logins (login_id_hash, token_hash, user_id, kind,
             device_public_key, device_thumbprint, device_name, created_at, expires_at)
         VALUES (?1, ?2, 'usr_1', 'device', 'pk2', 'tp2', ?3, 1, 9999999999999)",
        params![
            LOGIN_ID_HASH.as_slice(),
            [5u8; 32].as_slice(),
            PENDING_DEVICE_NAME
        ],
    )
    .unwrap();

    conn.execute(
        "INSERT INTO sessions (session_id, epoch, fingerprint, invite_token_hash, created_at)
         VALUES (?1, 1, ?2, ?3, 1)",
        params![
            session_id.as_bytes().as_slice(),
            [9u8; 16].as_slice(),
            [2u8; 32].as_slice()
        ],
    )
    .unwrap();
    for offset in 0..2i64 {
        conn.execute(
            "INSERT INTO frames VALUES (?1, ?2, ?3, ?2, 2, 1, 1, ?4)",
            params![
                session_id.as_bytes().as_slice(),
                offset,
                [7u8; 16].as_slice(),
                FRAME
            ],
        )
        .unwrap();
    }
}

/// Returns the bytes of the database file and its WAL, if any.
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(dir.join(DATABASE_FILE)).unwrap();
    if let Ok(wal) = std::fs::read(dir.join(format!("{DATABASE_FILE}-wal"))) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn frame_at(conn: &Connection, session_id: SessionId, offset: i64) -> Vec<u8> {
    conn.query_row(
        "SELECT frame FROM frames WHERE session_id = ?1 AND frame_offset = ?2",
        params![session_id.as_bytes().as_slice(), offset],
        |row| row.get(0),
    )
    .unwrap()
}

#[test]
fn migration_seals_plaintext_rows() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    write_plaintext_database(dir.path(), session_id);
    let before = database_bytes(dir.path());
    assert!(
        contains(&before, EMAIL.as_bytes()),
        "fixture lacks the email"
    );
    assert!(contains(&before, FRAME), "fixture lacks the frame");

    let source = key_source();
    let (conn, keys) = open_keyed_writer(dir.path(), &source).unwrap();
    drop(conn);

    let after = database_bytes(dir.path());
    for (label, plaintext) in [
        ("email", EMAIL.as_bytes()),
        ("organization name", ORGANIZATION.as_bytes()),
        ("device name", DEVICE_NAME.as_bytes()),
        ("pending device name", PENDING_DEVICE_NAME.as_bytes()),
        ("TOTP secret", TOTP_SECRET),
        ("signing key", SIGNING_KEY.as_slice()),
        ("frame", FRAME),
    ] {
        assert!(
            !contains(&after, plaintext),
            "{label} survived the migration"
        );
    }

    // Everything reads back through the relay's own queries.
    let conn = sqlite_writer(dir.path(), &keys);
    let account_conn = account_connection(sqlite_writer(dir.path(), &keys), &keys);
    let user = accounts::user_by_email(&account_conn, EMAIL)
        .unwrap()
        .unwrap();
    assert_eq!(user.user_id, "usr_1");
    assert_eq!(user.email, EMAIL);
    assert_eq!(
        user.totp_secret.as_deref().map(Vec::as_slice),
        Some(TOTP_SECRET)
    );
    assert_eq!(accounts::list_users(&account_conn, None).unwrap().len(), 2);
    let (device, _) = devices::device_by_id(&account_conn, "dev_1")
        .unwrap()
        .unwrap();
    assert_eq!(device.name, DEVICE_NAME);
    let pending = login::find(&account_conn, LoginKey::LoginId(LOGIN_ID_HASH))
        .unwrap()
        .unwrap();
    assert_eq!(pending.device.unwrap().name, PENDING_DEVICE_NAME);
    let sealed_key: Vec<u8> = conn
        .query_row("SELECT private_key FROM signing_keys", [], |row| row.get(0))
        .unwrap();
    let opened = keys
        .data_keys()
        .open_value("signing_keys", "private_key", b"key_1", &sealed_key)
        .unwrap();
    assert_eq!(opened.as_slice(), SIGNING_KEY.as_slice());
    for offset in 0..2 {
        let mut frame = frame_at(&conn, session_id, offset);
        keys.data_keys()
            .frame_cipher(session_id.as_bytes())
            .open_in_place(offset as u64, &mut frame)
            .unwrap();
        assert_eq!(frame, FRAME);
    }

    // A second open unwraps the stored key instead of making one.
    drop(conn);
    let (_, again) = open_keyed_writer(dir.path(), &source).unwrap();
    assert!(!again.is_new());
    assert_eq!(again.kek_fingerprint(), keys.kek_fingerprint());
}

#[test]
fn new_database_looks_up_users_by_email() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, keys) = open_keyed_writer(dir.path(), &key_source()).unwrap();
    let conn = account_connection(conn, &keys);
    let org = accounts::insert_organization(&conn, ORGANIZATION, 1).unwrap();
    let user_id =
        accounts::insert_user(&conn, &org, EMAIL, sealcast_protocol::auth::Role::Admin, 1)
            .unwrap()
            .unwrap();
    let duplicate =
        accounts::insert_user(&conn, &org, EMAIL, sealcast_protocol::auth::Role::Admin, 2).unwrap();
    assert_eq!(duplicate, None, "a second user got the same email");
    let found = accounts::user_by_email(&conn, EMAIL).unwrap().unwrap();
    assert_eq!(found.user_id, user_id);
    assert!(accounts::user_by_email(&conn, "other@clinic.example")
        .unwrap()
        .is_none());
    drop(conn);
    assert!(!contains(&database_bytes(dir.path()), EMAIL.as_bytes()));
}

#[test]
fn swapped_emails_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    write_plaintext_database(dir.path(), SessionId::random());
    let (conn, keys) = open_keyed_writer(dir.path(), &key_source()).unwrap();
    conn.execute_batch(
        "UPDATE users SET email = (SELECT email FROM users WHERE user_id = 'usr_2')
         WHERE user_id = 'usr_1'",
    )
    .unwrap();
    let conn = account_connection(conn, &keys);
    let error = accounts::user_by_id(&conn, "usr_1").unwrap_err();
    assert!(
        error.to_string().contains("failed to decrypt users.email"),
        "{error}"
    );
    // The other user is untouched.
    assert!(accounts::user_by_id(&conn, "usr_2").unwrap().is_some());
}

#[test]
fn swapped_frames_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    write_plaintext_database(dir.path(), session_id);
    let (conn, keys) = open_keyed_writer(dir.path(), &key_source()).unwrap();
    let first = frame_at(&conn, session_id, 0);
    let second = frame_at(&conn, session_id, 1);
    for (offset, blob) in [(0i64, &second), (1, &first)] {
        conn.execute(
            "UPDATE frames SET frame = ?3 WHERE session_id = ?1 AND frame_offset = ?2",
            params![session_id.as_bytes().as_slice(), offset, blob],
        )
        .unwrap();
    }
    let cipher = keys.data_keys().frame_cipher(session_id.as_bytes());
    for offset in 0..2 {
        let mut frame = frame_at(&conn, session_id, offset);
        let error = cipher.open_in_place(offset as u64, &mut frame).unwrap_err();
        assert!(matches!(error, AtRestError::Decrypt { .. }), "{error}");
    }
}

#[test]
fn wrong_key_is_rejected_with_both_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let right = KeyEncryptionKey::generate();
    let wrong = KeyEncryptionKey::generate();
    open_keyed_writer(dir.path(), &KeySource::Environment(right.clone())).unwrap();

    let Err(StoreError::AtRest(error)) =
        open_keyed_writer(dir.path(), &KeySource::Environment(wrong.clone()))
    else {
        panic!("a wrong key opened the database");
    };
    let message = error.to_string();
    assert!(matches!(*error, AtRestError::WrongKey { .. }), "{message}");
    assert!(
        message.contains(&wrong.fingerprint().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&right.fingerprint().to_string()),
        "{message}"
    );
    assert!(message.contains(KEY_ENV), "{message}");
}

#[test]
fn missing_key_is_rejected_naming_flag_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyEncryptionKey::generate();
    open_keyed_writer(dir.path(), &KeySource::Environment(key.clone())).unwrap();

    let Err(StoreError::AtRest(error)) = open_keyed_writer(dir.path(), &KeySource::Development)
    else {
        panic!("the database opened without a key");
    };
    let message = error.to_string();
    assert!(
        matches!(*error, AtRestError::MissingKey { .. }),
        "{message}"
    );
    assert!(message.contains(KEY_FILE_FLAG), "{message}");
    assert!(message.contains(KEY_ENV), "{message}");
    assert!(
        message.contains(&key.fingerprint().to_string()),
        "{message}"
    );
    assert!(
        !dir.path().join(DEV_KEY_FILE).exists(),
        "a development key was made for an encrypted database"
    );
}

#[test]
fn rotation_rewraps_and_retires_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = KeyEncryptionKey::generate();
    let new = KeyEncryptionKey::generate();
    let session_id = SessionId::random();
    write_plaintext_database(dir.path(), session_id);
    let (conn, before) =
        open_keyed_writer(dir.path(), &KeySource::Environment(old.clone())).unwrap();
    let sealed = frame_at(&conn, session_id, 0);

    let db = crate::db::Db::Sqlite(conn);
    let stranger = KeyEncryptionKey::generate();
    let refused = rotate(&db, &stranger, "test", &new, 2).unwrap_err();
    assert!(matches!(refused, AtRestError::WrongKey { .. }), "{refused}");
    assert_eq!(
        rotate(&db, &old, "test", &new, 2).unwrap(),
        new.fingerprint()
    );
    drop(db);

    assert!(open_keyed_writer(dir.path(), &KeySource::Environment(old)).is_err());
    let (conn, after) = open_keyed_writer(dir.path(), &KeySource::Environment(new)).unwrap();
    // The data was not re-encrypted, and the new key opens it.
    assert_eq!(frame_at(&conn, session_id, 0), sealed);
    let mut frame = sealed;
    after
        .data_keys()
        .frame_cipher(session_id.as_bytes())
        .open_in_place(0, &mut frame)
        .unwrap();
    assert_eq!(frame, FRAME);
    assert_ne!(after.kek_fingerprint(), before.kek_fingerprint());
    let conn = account_connection(conn, &after);
    let user = accounts::user_by_email(&conn, EMAIL).unwrap().unwrap();
    assert_eq!(user.email, EMAIL);
}
