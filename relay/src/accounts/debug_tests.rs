//! `Debug` output of the account types that hold an email address, a
//! device name, a token or a secret: each shows a redaction in its place.

use sealcast_protocol::auth::{Role, UserInfo};
use zeroize::Zeroizing;

use super::admin::AdminError;
use super::devices::{DeviceRecord, NewDevice};
use super::login::PendingDevice;
use super::store::UserRecord;
use super::Issued;
use crate::config::AccountsConfig;
use crate::credentials::Secret;

const EMAIL: &str = "a.person@clinic.example";
const DEVICE_NAME: &str = "Dr Quill's tablet";

#[test]
fn user_record_debug_is_redacted() {
    let user = UserRecord {
        user_id: "usr_1".into(),
        organization_id: "org_1".into(),
        email: EMAIL.into(),
        role: Role::Admin,
        created_at: 1,
        disabled_at: None,
        totp_secret: Some(Zeroizing::new(b"secret".to_vec())),
        totp_pending_secret: None,
        totp_last_step: Some(5),
    };
    assert_eq!(
        format!("{user:?}"),
        "UserRecord { user_id: \"usr_1\", organization_id: \"org_1\", role: Admin, \
         disabled_at: None, totp_enabled: true, .. }"
    );
}

#[test]
fn device_records_debug_is_redacted() {
    let record = DeviceRecord {
        device_id: "dev_1".into(),
        user_id: "usr_1".into(),
        name: DEVICE_NAME.into(),
        thumbprint: "tp".into(),
        created_at: 1,
        last_seen_at: None,
        revoked_at: Some(2),
    };
    assert_eq!(
        format!("{record:?}"),
        "DeviceRecord { device_id: \"dev_1\", user_id: \"usr_1\", name: [redacted], \
         thumbprint: \"tp\", created_at: 1, last_seen_at: None, revoked_at: Some(2) }"
    );
    let new = NewDevice {
        user_id: "usr_1",
        name: DEVICE_NAME,
        public_key: "pk",
        thumbprint: "tp",
    };
    assert_eq!(
        format!("{new:?}"),
        "NewDevice { user_id: \"usr_1\", name: [redacted], thumbprint: \"tp\", .. }"
    );
    let pending = PendingDevice {
        public_key: "pk".into(),
        thumbprint: "tp".into(),
        name: DEVICE_NAME.into(),
    };
    assert_eq!(
        format!("{pending:?}"),
        "PendingDevice { thumbprint: \"tp\", name: [redacted], .. }"
    );
}

#[test]
fn issued_tokens_debug_is_redacted() {
    let issued = Issued {
        access_token: "access-token-text".into(),
        refresh_token: Secret::new("refresh-token-text".into()),
        expires_in: 300,
        device_id: Some("dev_1".into()),
        user: UserInfo {
            user_id: "usr_1".into(),
            email: EMAIL.into(),
            role: Role::Clinician,
            organization_id: "org_1".into(),
            totp_enabled: false,
        },
    };
    assert_eq!(
        format!("{issued:?}"),
        "Issued { device_id: Some(\"dev_1\"), user: UserInfo { user_id: \"usr_1\", \
         email: [redacted], role: Clinician, organization_id: \"org_1\", \
         totp_enabled: false }, .. }"
    );
}

#[test]
fn taken_email_error_omits_address() {
    assert_eq!(
        AdminError::EmailTaken.to_string(),
        "this email address is already used by another user"
    );
}

#[test]
fn accounts_config_debug_hides_smtp_password() {
    let config = AccountsConfig {
        smtp_url: Some("smtps://user:hunter2@mail.example:465".into()),
        ..AccountsConfig::default()
    };
    let printed = format!("{config:?}");
    assert!(
        printed.contains("smtp_url: Some(\"[redacted]\")"),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");
}
