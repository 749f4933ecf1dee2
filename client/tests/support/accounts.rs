//! The accounts side of the test relay: users, magic-link sign-in with
//! polling, TOTP, DPoP-bound access tokens, refresh rotation with reuse
//! detection, logout and device revocation.
//!
//! Proofs are checked with `sealcast_protocol::dpop::verify_proof`, each
//! proof `jti` is accepted once, and every token is bound to the JWK
//! thumbprint of the key that started the sign-in. Tokens are random strings
//! looked up in memory rather than JWTs, which is enough for a test relay.

use std::collections::{HashMap, HashSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::auth::{
    CreateUserRequest, DeviceSummary, LoginPollRequest, LoginPollResponse, LoginRequest,
    LoginStarted, LoginTotpRequest, RefreshRequest, Role, TokenResponse, TotpActivateRequest,
    TotpActivated, TotpEnrolment, UserInfo, UserSummary,
};
use sealcast_protocol::dpop::verify_proof;

use super::{error_body, unix_now, Request};

/// The TOTP code the test relay accepts for every enrolled user.
pub const TOTP_CODE: &str = "123456";
/// The recovery code the test relay accepts once per user.
pub const RECOVERY_CODE: &str = "recovery-code-1";

/// An HTTP response: status and JSON body.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: String,
}

impl Reply {
    fn json<T: serde::Serialize>(status: u16, value: &T) -> Reply {
        Reply {
            status,
            body: serde_json::to_string(value).unwrap(),
        }
    }

    pub(super) fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply {
            status,
            body: error_body(kind, message),
        }
    }
}

/// A user account.
#[derive(Clone)]
pub struct TestUser {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub organization_id: String,
    pub totp_enabled: bool,
    pub recovery_used: bool,
    pub created_at: i64,
}

impl TestUser {
    fn info(&self) -> UserInfo {
        UserInfo {
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            role: self.role,
            organization_id: self.organization_id.clone(),
            totp_enabled: self.totp_enabled,
        }
    }
}

struct PendingLogin {
    email: String,
    jkt: String,
    device_name: Option<String>,
    confirmed: bool,
    expired: bool,
    used: bool,
}

/// An access token's grant.
#[derive(Clone)]
pub struct Grant {
    pub email: String,
    pub device_id: String,
    pub sign_in: u64,
    pub mfa: bool,
    jkt: String,
    exp: u64,
}

struct RefreshGrant {
    email: String,
    device_id: String,
    sign_in: u64,
    mfa: bool,
    jkt: String,
}

pub(super) struct Device {
    pub(super) user_id: String,
    pub(super) name: String,
    pub(super) jkt: String,
    pub(super) revoked: bool,
}

/// Counters of the accounts routes.
#[derive(Debug, Default, Clone)]
pub struct AuthStats {
    /// Successful refreshes.
    pub refreshes: u64,
    /// Refresh tokens presented again after rotation.
    pub refresh_reuses: u64,
    /// Polls of pending sign-ins.
    pub polls: u64,
    /// Requests rejected for a missing or bad credential or proof.
    pub rejected: u64,
}

/// Accounts state of the test relay.
pub(super) struct Accounts {
    pub(super) users: HashMap<String, TestUser>,
    logins: HashMap<String, PendingLogin>,
    access: HashMap<String, Grant>,
    refresh: HashMap<String, RefreshGrant>,
    /// Rotated refresh tokens and the sign-in each belonged to.
    rotated: HashMap<String, u64>,
    revoked_sign_ins: HashSet<u64>,
    jtis: HashSet<String>,
    pub(super) devices: HashMap<String, Device>,
    next_sign_in: u64,
    /// Lifetime of new access tokens, in seconds.
    pub(super) access_ttl: u64,
    pub(super) stats: AuthStats,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts {
            users: HashMap::new(),
            logins: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            rotated: HashMap::new(),
            revoked_sign_ins: HashSet::new(),
            jtis: HashSet::new(),
            devices: HashMap::new(),
            next_sign_in: 1,
            access_ttl: 900,
            stats: AuthStats::default(),
        }
    }
}

fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
    )
}

impl Accounts {
    pub(super) fn add_user(&mut self, email: &str, role: Role, organization_id: &str) {
        let user = TestUser {
            user_id: random_token("user"),
            email: email.to_string(),
            role,
            organization_id: organization_id.to_string(),
            totp_enabled: false,
            recovery_used: false,
            created_at: 1_700_000_000_000,
        };
        self.users.insert(email.to_string(), user);
    }

    /// Confirms the unconfirmed sign-in of `email`, as a click on the
    /// magic link does. Returns whether there was one.
    pub(super) fn confirm(&mut self, email: &str) -> bool {
        let pending = self
            .logins
            .values_mut()
            .find(|login| login.email == email && !login.confirmed && !login.expired);
        match pending {
            Some(login) => {
                login.confirmed = true;
                true
            }
            None => false,
        }
    }

    pub(super) fn expire_logins(&mut self) {
        for login in self.logins.values_mut() {
            login.expired = true;
        }
    }

    pub(super) fn expire_access_tokens(&mut self) {
        for grant in self.access.values_mut() {
            grant.exp = 0;
        }
    }

    pub(super) fn revoke_device(&mut self, device_id: &str) {
        if let Some(device) = self.devices.get_mut(device_id) {
            device.revoked = true;
        }
    }

    /// Handles an accounts route, or returns `None` for other routes.
    pub(super) fn route(
        &mut self,
        request: &Request,
        url: &str,
        segments: &[&str],
    ) -> Option<Reply> {
        let reply = match (request.method.as_str(), segments) {
            ("POST", ["v1", "auth", "login"]) => self.login(request, url),
            ("POST", ["v1", "auth", "login", "poll"]) => self.poll(request, url),
            ("POST", ["v1", "auth", "login", "totp"]) => self.totp(request, url),
            ("POST", ["v1", "auth", "refresh"]) => self.refresh(request, url),
            ("POST", ["v1", "auth", "logout"]) => self.logout(request, url),
            ("GET", ["v1", "me"]) => self.me(request, url),
            ("POST", ["v1", "auth", "totp", "enrol"]) => self.totp_enrol(request, url),
            ("POST", ["v1", "auth", "totp", "activate"]) => self.totp_activate(request, url),
            ("GET", ["v1", "admin", "users"]) => self.list_users(request, url),
            ("POST", ["v1", "admin", "users"]) => self.create_user(request, url),
            ("GET", ["v1", "admin", "devices"]) => self.list_devices(request, url),
            ("POST", ["v1", "admin", "devices", id, "revoke"]) => {
                self.admin_revoke(request, url, id)
            }
            _ => return None,
        };
        Some(match reply {
            Ok(reply) | Err(reply) => reply,
        })
    }

    /// Checks a DPoP proof sent without an access token and returns the
    /// key's thumbprint.
    fn check_proof(&mut self, request: &Request, url: &str) -> Result<String, Reply> {
        let Some(proof) = request.headers.get("dpop") else {
            self.stats.rejected += 1;
            return Err(Reply::error(401, "unauthorized", "missing DPoP proof"));
        };
        if request.headers.contains_key("authorization") {
            self.stats.rejected += 1;
            return Err(Reply::error(400, "bad_request", "unexpected access token"));
        }
        match verify_proof(proof, &request.method, url, None, unix_now()) {
            Ok(verified) => {
                self.use_jti(&verified.jti)?;
                Ok(verified.thumbprint)
            }
            Err(err) => {
                self.stats.rejected += 1;
                Err(Reply::error(401, "invalid_dpop_proof", &err.to_string()))
            }
        }
    }

    fn use_jti(&mut self, jti: &str) -> Result<(), Reply> {
        if !self.jtis.insert(jti.to_string()) {
            self.stats.rejected += 1;
            return Err(Reply::error(401, "invalid_dpop_proof", "proof replayed"));
        }
        Ok(())
    }

    /// Checks `Authorization: DPoP <token>` with its proof and returns the grant.
    pub(super) fn authenticate(&mut self, request: &Request, url: &str) -> Result<Grant, Reply> {
        let reject = |stats: &mut AuthStats, message: &str| {
            stats.rejected += 1;
            Err(Reply::error(401, "unauthorized", message))
        };
        let Some(token) = request
            .headers
            .get("authorization")
            .and_then(|value| value.strip_prefix("DPoP "))
        else {
            return reject(&mut self.stats, "missing DPoP access token");
        };
        let Some(proof) = request.headers.get("dpop") else {
            return reject(&mut self.stats, "missing DPoP proof");
        };
        let verified = match verify_proof(proof, &request.method, url, Some(token), unix_now()) {
            Ok(verified) => verified,
            Err(err) => return reject(&mut self.stats, &err.to_string()),
        };
        self.use_jti(&verified.jti)?;
        let Some(grant) = self.access.get(token).cloned() else {
            return reject(&mut self.stats, "unknown access token");
        };
        if grant.jkt != verified.thumbprint {
            return reject(&mut self.stats, "proof key does not match the token");
        }
        if grant.exp <= unix_now() {
            return reject(&mut self.stats, "access token expired");
        }
        if self.revoked_sign_ins.contains(&grant.sign_in) || self.device_revoked(&grant.device_id) {
            return reject(&mut self.stats, "sign-in revoked");
        }
        Ok(grant)
    }

    pub(super) fn device_revoked(&self, device_id: &str) -> bool {
        self.devices
            .get(device_id)
            .is_none_or(|device| device.revoked)
    }

    pub(super) fn user_of(&self, grant: &Grant) -> Option<&TestUser> {
        self.users.get(&grant.email)
    }

    fn login(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let jkt = self.check_proof(request, url)?;
        let body: LoginRequest = parse(request)?;
        let login_id = random_token("login");
        self.logins.insert(
            login_id.clone(),
            PendingLogin {
                email: body.email,
                jkt,
                device_name: body.device_name,
                confirmed: false,
                expired: false,
                used: false,
            },
        );
        let started = LoginStarted {
            login_id,
            expires_in: 600,
            poll_interval: 1,
        };
        Ok(Reply::json(202, &started))
    }

    fn pending(&mut self, login_id: &str, jkt: &str) -> Result<&mut PendingLogin, Reply> {
        match self.logins.get_mut(login_id) {
            None => Err(Reply::error(404, "not_found", "unknown sign-in")),
            Some(login) if login.jkt != jkt => {
                Err(Reply::error(401, "unauthorized", "proof key differs"))
            }
            Some(login) if login.expired || login.used => {
                Err(Reply::error(410, "gone", "sign-in expired or used"))
            }
            Some(login) => Ok(login),
        }
    }

    fn poll(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let jkt = self.check_proof(request, url)?;
        let body: LoginPollRequest = parse(request)?;
        self.stats.polls += 1;
        let login = self.pending(&body.login_id, &jkt)?;
        if !login.confirmed {
            return Ok(Reply::json(200, &LoginPollResponse::Pending));
        }
        let email = login.email.clone();
        let totp = self.users.get(&email).is_some_and(|user| user.totp_enabled);
        if totp {
            return Ok(Reply::json(200, &LoginPollResponse::TotpRequired));
        }
        let tokens = self.finish_login(&body.login_id, false)?;
        Ok(Reply::json(200, &LoginPollResponse::Approved(tokens)))
    }

    fn totp(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let jkt = self.check_proof(request, url)?;
        let body: LoginTotpRequest = parse(request)?;
        let login = self.pending(&body.login_id, &jkt)?;
        if !login.confirmed {
            return Err(Reply::error(403, "forbidden", "sign-in not confirmed"));
        }
        let email = login.email.clone();
        let user = self.users.get_mut(&email).unwrap();
        let accepted = match body.code.as_str() {
            TOTP_CODE => true,
            RECOVERY_CODE if !user.recovery_used => {
                user.recovery_used = true;
                true
            }
            _ => false,
        };
        if !accepted {
            self.stats.rejected += 1;
            return Err(Reply::error(401, "unauthorized", "wrong code"));
        }
        let tokens = self.finish_login(&body.login_id, true)?;
        Ok(Reply::json(200, &tokens))
    }

    /// Registers the device of a confirmed sign-in and issues its tokens.
    fn finish_login(&mut self, login_id: &str, mfa: bool) -> Result<TokenResponse, Reply> {
        let login = self.logins.get_mut(login_id).unwrap();
        login.used = true;
        let (email, jkt, name) = (
            login.email.clone(),
            login.jkt.clone(),
            login
                .device_name
                .clone()
                .unwrap_or_else(|| "unnamed".into()),
        );
        let user_id = self.users[&email].user_id.clone();
        let device_id = match self
            .devices
            .iter()
            .find(|(_, device)| device.jkt == jkt && !device.revoked)
        {
            Some((id, _)) => id.clone(),
            None => {
                let id = random_token("dev");
                let device = Device {
                    user_id,
                    name,
                    jkt: jkt.clone(),
                    revoked: false,
                };
                self.devices.insert(id.clone(), device);
                id
            }
        };
        let sign_in = self.next_sign_in;
        self.next_sign_in += 1;
        Ok(self.issue(&email, &device_id, &jkt, sign_in, mfa))
    }

    fn issue(
        &mut self,
        email: &str,
        device_id: &str,
        jkt: &str,
        sign_in: u64,
        mfa: bool,
    ) -> TokenResponse {
        let access_token = random_token("at");
        let refresh_token = random_token("rt");
        self.access.insert(
            access_token.clone(),
            Grant {
                email: email.to_string(),
                device_id: device_id.to_string(),
                sign_in,
                mfa,
                jkt: jkt.to_string(),
                exp: unix_now() + self.access_ttl,
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            RefreshGrant {
                email: email.to_string(),
                device_id: device_id.to_string(),
                sign_in,
                mfa,
                jkt: jkt.to_string(),
            },
        );
        TokenResponse {
            access_token,
            token_type: "DPoP".into(),
            expires_in: self.access_ttl,
            refresh_token,
            device_id: device_id.to_string(),
            user: self.users[email].info(),
        }
    }

    fn refresh(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let jkt = self.check_proof(request, url)?;
        let body: RefreshRequest = parse(request)?;
        if let Some(&sign_in) = self.rotated.get(&body.refresh_token) {
            // Reuse of a rotated token: the sign-in may be stolen, so all of it ends.
            self.stats.refresh_reuses += 1;
            self.revoked_sign_ins.insert(sign_in);
            return Err(Reply::error(401, "unauthorized", "refresh token reused"));
        }
        let Some(grant) = self.refresh.get(&body.refresh_token) else {
            return Err(Reply::error(401, "unauthorized", "unknown refresh token"));
        };
        if grant.jkt != jkt {
            return Err(Reply::error(401, "unauthorized", "proof key differs"));
        }
        if self.revoked_sign_ins.contains(&grant.sign_in) || self.device_revoked(&grant.device_id) {
            return Err(Reply::error(401, "unauthorized", "sign-in revoked"));
        }
        let grant = self.refresh.remove(&body.refresh_token).unwrap();
        self.rotated
            .insert(body.refresh_token.clone(), grant.sign_in);
        self.stats.refreshes += 1;
        let tokens = self.issue(
            &grant.email,
            &grant.device_id,
            &grant.jkt,
            grant.sign_in,
            grant.mfa,
        );
        Ok(Reply::json(200, &tokens))
    }

    fn logout(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let grant = self.authenticate(request, url)?;
        self.revoked_sign_ins.insert(grant.sign_in);
        Ok(Reply {
            status: 204,
            body: String::new(),
        })
    }

    fn me(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let grant = self.authenticate(request, url)?;
        Ok(Reply::json(200, &self.users[&grant.email].info()))
    }

    fn totp_enrol(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let grant = self.authenticate(request, url)?;
        if self.users[&grant.email].totp_enabled {
            return Err(Reply::error(409, "conflict", "TOTP already enrolled"));
        }
        let enrolment = TotpEnrolment {
            otpauth_uri: format!(
                "otpauth://totp/sealcast:{}?secret=JBSWY3DPEHPK3PXP&issuer=sealcast",
                grant.email
            ),
            secret_base32: "JBSWY3DPEHPK3PXP".into(),
            qr_svg: "<svg/>".into(),
        };
        Ok(Reply::json(200, &enrolment))
    }

    fn totp_activate(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let grant = self.authenticate(request, url)?;
        let body: TotpActivateRequest = parse(request)?;
        if body.code != TOTP_CODE {
            return Err(Reply::error(400, "bad_request", "wrong code"));
        }
        self.users.get_mut(&grant.email).unwrap().totp_enabled = true;
        let jkt = grant.jkt.clone();
        let tokens = self.issue(&grant.email, &grant.device_id, &jkt, grant.sign_in, true);
        let activated = TotpActivated {
            recovery_codes: vec![RECOVERY_CODE.into(), "recovery-code-2".into()],
            tokens: Some(tokens),
        };
        Ok(Reply::json(200, &activated))
    }

    /// Checks that the caller is an admin who signed in with TOTP.
    fn admin(&mut self, request: &Request, url: &str) -> Result<TestUser, Reply> {
        let grant = self.authenticate(request, url)?;
        let user = self.users[&grant.email].clone();
        if user.role != Role::Admin || !grant.mfa {
            return Err(Reply::error(403, "forbidden", "admin with TOTP required"));
        }
        Ok(user)
    }

    fn list_users(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let admin = self.admin(request, url)?;
        let users: Vec<UserSummary> = self
            .users
            .values()
            .filter(|user| user.organization_id == admin.organization_id)
            .map(summary)
            .collect();
        Ok(Reply::json(200, &users))
    }

    fn create_user(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let admin = self.admin(request, url)?;
        let body: CreateUserRequest = parse(request)?;
        if self.users.contains_key(&body.email) {
            return Err(Reply::error(409, "conflict", "email already used"));
        }
        self.add_user(&body.email, body.role, &admin.organization_id);
        Ok(Reply::json(201, &summary(&self.users[&body.email])))
    }

    fn list_devices(&mut self, request: &Request, url: &str) -> Result<Reply, Reply> {
        let admin = self.admin(request, url)?;
        let members: HashSet<&str> = self
            .users
            .values()
            .filter(|user| user.organization_id == admin.organization_id)
            .map(|user| user.user_id.as_str())
            .collect();
        let devices: Vec<DeviceSummary> = self
            .devices
            .iter()
            .filter(|(_, device)| members.contains(device.user_id.as_str()))
            .map(|(id, device)| DeviceSummary {
                device_id: id.clone(),
                user_id: device.user_id.clone(),
                name: device.name.clone(),
                key_thumbprint: device.jkt.clone(),
                created_at: 1_700_000_000_000,
                last_seen_at: None,
                revoked_at: device.revoked.then_some(1_700_000_000_000),
            })
            .collect();
        Ok(Reply::json(200, &devices))
    }

    fn admin_revoke(&mut self, request: &Request, url: &str, id: &str) -> Result<Reply, Reply> {
        self.admin(request, url)?;
        if !self.devices.contains_key(id) {
            return Err(Reply::error(404, "not_found", "no such device"));
        }
        self.revoke_device(id);
        Ok(Reply {
            status: 204,
            body: String::new(),
        })
    }
}

fn summary(user: &TestUser) -> UserSummary {
    UserSummary {
        user_id: user.user_id.clone(),
        email: user.email.clone(),
        role: user.role,
        totp_enabled: user.totp_enabled,
        created_at: user.created_at,
        disabled_at: None,
    }
}

fn parse<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Reply> {
    serde_json::from_slice(&request.body)
        .map_err(|err| Reply::error(400, "bad_request", &err.to_string()))
}
