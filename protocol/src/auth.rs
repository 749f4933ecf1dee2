//! The accounts API: magic-link sign-in, device-bound tokens, TOTP and
//! administration.
//!
//! | method and path | credential | purpose |
//! | --- | --- | --- |
//! | `POST /v1/auth/login` | none; a [`DPOP_HEADER`] proof when a device signs in | mail a magic link: 202 |
//! | `POST /v1/auth/login/confirm` | the magic-link token in the body | approve the sign-in from the link's page |
//! | `POST /v1/auth/login/poll` | [`DPOP_HEADER`] proof of the device key | a device waits for approval |
//! | `POST /v1/auth/login/totp` | login id, TOTP or recovery code | second factor of a pending sign-in |
//! | `POST /v1/auth/refresh` | refresh token (device: body and proof; browser: cookie and CSRF header) | rotate the tokens |
//! | `POST /v1/auth/logout` | access credential | revoke this sign-in's refresh tokens |
//! | `GET /v1/me` | access credential | the signed-in user |
//! | `POST /v1/auth/totp/enrol` | access credential | start TOTP enrolment |
//! | `POST /v1/auth/totp/activate` | access credential, a TOTP code | finish enrolment, get recovery codes |
//! | `GET /v1/admin/users`, `POST /v1/admin/users` | admin with TOTP | list and invite users of the organization |
//! | `POST /v1/admin/users/{id}/disable` | admin with TOTP | disable a user and cut off their devices |
//! | `GET /v1/admin/devices` | admin with TOTP | list the organization's devices |
//! | `POST /v1/admin/devices/{id}/revoke` | admin with TOTP | revoke a device, closing its sockets |
//! | `GET /login` | none | the page a magic link opens; the token is in the fragment |
//!
//! A native device has an Ed25519 key pair. It signs in by sending a
//! [`DPOP_HEADER`] proof (RFC 9449) with `POST /v1/auth/login`, so the pending
//! sign-in is bound to the key's JWK thumbprint. After the user confirms the
//! link, the device polls with proofs by the same key and receives an access
//! token whose `cnf.jkt` claim names the key. Every later request carries
//! `Authorization: DPoP <access token>` and a fresh proof over its method and
//! URL, so a copied token is useless without the device key.
//!
//! A browser that confirms a sign-in it started itself gets the tokens as the
//! cookies [`ACCESS_COOKIE`] and [`REFRESH_COOKIE`] (HttpOnly, Secure,
//! SameSite=Strict) and a readable [`CSRF_COOKIE`], whose value it must echo
//! in [`CSRF_HEADER`] on every state-changing request.
//!
//! Access tokens are JWTs signed with EdDSA, see [`AccessClaims`]. Failures are
//! answered with [`crate::api::ErrorBody`] and these statuses: 400 malformed
//! request, 401 missing, invalid or expired credential or proof, 403 wrong role
//! or organization, or second factor missing, 404 unknown resource, 410
//! sign-in expired or already used, 429 too many attempts (see
//! `Retry-After`).

use serde::{Deserialize, Serialize};

use crate::redact::Redacted;

/// Request header that carries a DPoP proof.
pub const DPOP_HEADER: &str = "DPoP";
/// `Authorization` scheme of device-bound access tokens.
pub const DPOP_SCHEME: &str = "DPoP";
/// Cookie with a browser's access token.
pub const ACCESS_COOKIE: &str = "__Host-sealcast_access";
/// Cookie with a browser's refresh token.
pub const REFRESH_COOKIE: &str = "__Host-sealcast_refresh";
/// Cookie with a browser's CSRF token, readable by the page's script.
pub const CSRF_COOKIE: &str = "__Host-sealcast_csrf";
/// Header in which a browser echoes [`CSRF_COOKIE`] on state-changing requests.
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// `aud` claim of every access token.
pub const ACCESS_AUDIENCE: &str = "sealcast-relay";

/// A user's role in their organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages users, devices and settings; reads audit metadata. Needs TOTP.
    Admin,
    /// Starts, publishes and ends sessions.
    Clinician,
}

impl Role {
    /// Returns the role's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Role::Admin),
            "clinician" => Ok(Role::Clinician),
            other => Err(format!(
                "invalid role {other:?}: expected admin or clinician"
            )),
        }
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the relay's public origin.
    pub iss: String,
    /// Audience: [`ACCESS_AUDIENCE`].
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Organization id.
    pub org: String,
    /// The user's role.
    pub role: Role,
    /// Device id, for device-bound tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Key confirmation of a device-bound token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Whether the sign-in passed a TOTP check.
    pub mfa: bool,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// The `cnf` claim: the JWK SHA-256 thumbprint (RFC 7638) of the device key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Unpadded base64url thumbprint.
    pub jkt: String,
}

/// Body of `POST /v1/auth/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// The user's email address.
    pub email: String,
    /// Name of the signing-in device, shown to admins. Only with a proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &Redacted)
            .field("device_name", &self.device_name.as_ref().map(|_| Redacted))
            .finish()
    }
}

/// Response to `POST /v1/auth/login`, the same whether or not the address
/// belongs to a user, so it cannot be used to find users.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginStarted {
    /// Handle of the pending sign-in, for polling and the second factor.
    pub login_id: String,
    /// Seconds until the magic link expires.
    pub expires_in: u64,
    /// Seconds a device waits between polls.
    pub poll_interval: u64,
}

impl std::fmt::Debug for LoginStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginStarted")
            .field("expires_in", &self.expires_in)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /v1/auth/login/confirm`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginConfirmRequest {
    /// The token from the magic link's fragment.
    pub token: String,
}

impl std::fmt::Debug for LoginConfirmRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginConfirmRequest { .. }")
    }
}

/// The kind of client that started a sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LoginKind {
    /// A device with a key pair; it receives the tokens when it polls.
    Device,
    /// A browser; it receives the tokens as cookies.
    Browser,
}

/// Response to `POST /v1/auth/login/confirm`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginConfirmed {
    /// The kind of client that started the sign-in.
    pub kind: LoginKind,
    /// Whether a TOTP or recovery code must follow, with
    /// `POST /v1/auth/login/totp`.
    pub totp_required: bool,
    /// The pending sign-in, for that second step.
    pub login_id: String,
}

impl std::fmt::Debug for LoginConfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginConfirmed")
            .field("kind", &self.kind)
            .field("totp_required", &self.totp_required)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /v1/auth/login/poll`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginPollRequest {
    /// The pending sign-in.
    pub login_id: String,
}

impl std::fmt::Debug for LoginPollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginPollRequest { .. }")
    }
}

/// Response to `POST /v1/auth/login/poll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LoginPollResponse {
    /// The link has not been confirmed yet.
    Pending,
    /// The link was confirmed and a TOTP or recovery code is required.
    TotpRequired,
    /// Signed in.
    Approved(TokenResponse),
}

/// Body of `POST /v1/auth/login/totp`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginTotpRequest {
    /// The pending sign-in.
    pub login_id: String,
    /// Six TOTP digits, or a recovery code.
    pub code: String,
}

impl std::fmt::Debug for LoginTotpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginTotpRequest { .. }")
    }
}

/// Tokens of a device sign-in: the response to a successful poll, TOTP step
/// or refresh.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// JWT access token, sent as `Authorization: DPoP <token>`.
    pub access_token: String,
    /// Always `DPoP`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single-use refresh token. Using a rotated one again revokes the
    /// whole sign-in.
    pub refresh_token: String,
    /// The device the tokens are bound to.
    pub device_id: String,
    /// The signed-in user.
    pub user: UserInfo,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("device_id", &self.device_id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /v1/auth/refresh` from a device. Browsers send no body: the
/// refresh token is in [`REFRESH_COOKIE`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    /// The current refresh token.
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest { .. }")
    }
}

/// A user as `GET /v1/me` and the token responses show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    /// User id.
    pub user_id: String,
    /// Email address.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Organization id.
    pub organization_id: String,
    /// Whether TOTP is enrolled.
    pub totp_enabled: bool,
}

/// Response to `POST /v1/auth/totp/enrol`. The secret is shown only here
/// and stays inactive until a code from it is sent to activate it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpEnrolment {
    /// The `otpauth://` URI that authenticator apps read.
    pub otpauth_uri: String,
    /// The secret in base32, for manual entry.
    pub secret_base32: String,
    /// The URI as a QR code in SVG.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment { .. }")
    }
}

/// Body of `POST /v1/auth/totp/activate`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpActivateRequest {
    /// A current code from the enrolled secret.
    pub code: String,
}

impl std::fmt::Debug for TotpActivateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpActivateRequest { .. }")
    }
}

/// Response to `POST /v1/auth/totp/activate`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpActivated {
    /// Single-use recovery codes, shown only here.
    pub recovery_codes: Vec<String>,
    /// New tokens that carry `mfa: true`, for a device. Browsers get cookies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenResponse>,
}

impl std::fmt::Debug for TotpActivated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpActivated")
            .field("recovery_codes", &self.recovery_codes.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserInfo")
            .field("user_id", &self.user_id)
            .field("email", &Redacted)
            .field("role", &self.role)
            .field("organization_id", &self.organization_id)
            .field("totp_enabled", &self.totp_enabled)
            .finish()
    }
}

/// Body of `POST /v1/admin/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    /// Email address; unique across the relay.
    pub email: String,
    /// Role in the admin's organization.
    pub role: Role,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("email", &Redacted)
            .field("role", &self.role)
            .finish()
    }
}

/// A user in the admin listing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserSummary {
    /// User id.
    pub user_id: String,
    /// Email address.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Whether TOTP is enrolled.
    pub totp_enabled: bool,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// When the user was disabled, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
}

impl std::fmt::Debug for UserSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSummary")
            .field("user_id", &self.user_id)
            .field("email", &Redacted)
            .field("role", &self.role)
            .field("totp_enabled", &self.totp_enabled)
            .field("created_at", &self.created_at)
            .field("disabled_at", &self.disabled_at)
            .finish()
    }
}

/// A device in the admin listing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceSummary {
    /// Device id.
    pub device_id: String,
    /// Owner.
    pub user_id: String,
    /// Name the device gave when it signed in.
    pub name: String,
    /// JWK thumbprint of the device key.
    pub key_thumbprint: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last authenticated request, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<i64>,
    /// Revocation time, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for DeviceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSummary")
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("name", &Redacted)
            .field("key_thumbprint", &self.key_thumbprint)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_request_debug_is_redacted() {
        let request = LoginRequest {
            email: "a.person@clinic.example".into(),
            device_name: Some("Front Desk".into()),
        };
        assert_eq!(
            format!("{request:?}"),
            "LoginRequest { email: [redacted], device_name: Some([redacted]) }"
        );
    }

    #[test]
    fn user_debug_is_redacted() {
        let info = UserInfo {
            user_id: "usr_1".into(),
            email: "a.person@clinic.example".into(),
            role: Role::Admin,
            organization_id: "org_1".into(),
            totp_enabled: true,
        };
        assert_eq!(
            format!("{info:?}"),
            "UserInfo { user_id: \"usr_1\", email: [redacted], role: Admin, \
             organization_id: \"org_1\", totp_enabled: true }"
        );
        let summary = UserSummary {
            user_id: "usr_1".into(),
            email: "a.person@clinic.example".into(),
            role: Role::Clinician,
            totp_enabled: false,
            created_at: 1,
            disabled_at: None,
        };
        assert_eq!(
            format!("{summary:?}"),
            "UserSummary { user_id: \"usr_1\", email: [redacted], role: Clinician, \
             totp_enabled: false, created_at: 1, disabled_at: None }"
        );
        let create = CreateUserRequest {
            email: "a.person@clinic.example".into(),
            role: Role::Clinician,
        };
        assert_eq!(
            format!("{create:?}"),
            "CreateUserRequest { email: [redacted], role: Clinician }"
        );
    }

    #[test]
    fn device_summary_debug_is_redacted() {
        let device = DeviceSummary {
            device_id: "dev_1".into(),
            user_id: "usr_1".into(),
            name: "Dr Quill's tablet".into(),
            key_thumbprint: "tp".into(),
            created_at: 1,
            last_seen_at: Some(2),
            revoked_at: None,
        };
        assert_eq!(
            format!("{device:?}"),
            "DeviceSummary { device_id: \"dev_1\", user_id: \"usr_1\", name: [redacted], \
             key_thumbprint: \"tp\", created_at: 1, last_seen_at: Some(2), revoked_at: None }"
        );
    }

    #[test]
    fn poll_response_is_tagged_by_status() {
        let json = serde_json::to_string(&LoginPollResponse::Pending).unwrap();
        assert_eq!(json, r#"{"status":"pending"}"#);
        let json = serde_json::to_string(&LoginPollResponse::TotpRequired).unwrap();
        assert_eq!(json, r#"{"status":"totp_required"}"#);
    }

    #[test]
    fn role_round_trips_through_text() {
        for role in [Role::Admin, Role::Clinician] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("patient".parse::<Role>().is_err());
    }

    #[test]
    fn token_response_debug_hides_tokens() {
        let response = TokenResponse {
            access_token: "access-secret".into(),
            token_type: "DPoP".into(),
            expires_in: 300,
            refresh_token: "refresh-secret".into(),
            device_id: "dev_1".into(),
            user: UserInfo {
                user_id: "usr_1".into(),
                email: "a@example.org".into(),
                role: Role::Clinician,
                organization_id: "org_1".into(),
                totp_enabled: false,
            },
        };
        let text = format!("{response:?}");
        assert!(!text.contains("access-secret"), "{text}");
        assert!(!text.contains("refresh-secret"), "{text}");
    }
}
