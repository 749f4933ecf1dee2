//! Every staff route and WebSocket endpoint against every kind of
//! credential, valid and forged, with the status each must get. Every
//! mismatch is collected and reported with its row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{
    claims_of, enrol_totp, sign_in_device, start_relay, unix_now, Staff, TestRelay, CLINICIAN_EMAIL,
};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rusqlite::Connection;
use sealcast_protocol::api::CreateSessionRequest;
use sealcast_protocol::auth::{AccessClaims, Role, DPOP_HEADER};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::SessionKey;
use sealcast_relay::accounts::admin::AdminStore;
use sealcast_relay::at_rest;
use sealcast_relay::Limits;
use tokio_tungstenite::tungstenite;

/// The credentials of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    None,
    ClinicianOwn,
    ClinicianOther,
    AdminMfa,
    AdminNoMfa,
    Invite,
    Expired,
    WrongKey,
    AlgNone,
    Tampered,
    NoProof,
    OtherKeyProof,
    ReplayedProof,
    RevokedDevice,
    DisabledUser,
}

const CREDENTIALS: [Cred; 15] = [
    Cred::None,
    Cred::ClinicianOwn,
    Cred::ClinicianOther,
    Cred::AdminMfa,
    Cred::AdminNoMfa,
    Cred::Invite,
    Cred::Expired,
    Cred::WrongKey,
    Cred::AlgNone,
    Cred::Tampered,
    Cred::NoProof,
    Cred::OtherKeyProof,
    Cred::ReplayedProof,
    Cred::RevokedDevice,
    Cred::DisabledUser,
];

/// The routes. Logout comes last because it ends the sign-ins it succeeds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CreateSession,
    EndSession,
    Publish,
    StaffFollow,
    PatientFollow,
    Me,
    TotpEnrol,
    ListUsers,
    CreateUser,
    DisableUser,
    ListDevices,
    RevokeDevice,
    Logout,
}

const ROUTES: [Route; 13] = [
    Route::CreateSession,
    Route::EndSession,
    Route::Publish,
    Route::StaffFollow,
    Route::PatientFollow,
    Route::Me,
    Route::TotpEnrol,
    Route::ListUsers,
    Route::CreateUser,
    Route::DisableUser,
    Route::ListDevices,
    Route::RevokeDevice,
    Route::Logout,
];

/// Returns the status a credential must get on a route.
fn expected(route: Route, cred: Cred) -> u16 {
    use Cred::*;
    use Route::*;
    let forged_or_missing = !matches!(
        cred,
        ClinicianOwn | ClinicianOther | AdminMfa | AdminNoMfa | Invite
    );
    if route == PatientFollow {
        return if cred == Invite { 101 } else { 401 };
    }
    if forged_or_missing || cred == Invite {
        return 401;
    }
    match route {
        CreateSession => match cred {
            ClinicianOwn | ClinicianOther => 201,
            _ => 403,
        },
        EndSession | Publish | StaffFollow => match cred {
            ClinicianOwn => {
                if route == EndSession {
                    204
                } else {
                    101
                }
            }
            _ => 403,
        },
        Me => 200,
        // The administrator with TOTP has it active already.
        TotpEnrol => {
            if cred == AdminMfa {
                409
            } else {
                200
            }
        }
        Logout => 204,
        ListUsers | ListDevices => admin_only(cred, 200),
        CreateUser => admin_only(cred, 201),
        DisableUser | RevokeDevice => admin_only(cred, 204),
        PatientFollow => unreachable!(),
    }
}

fn admin_only(cred: Cred, allowed: u16) -> u16 {
    if cred == Cred::AdminMfa {
        allowed
    } else {
        403
    }
}

/// Everything the rows need.
struct Fixture {
    relay: TestRelay,
    clinician_other: Staff,
    admin_mfa: Staff,
    admin_no_mfa: Staff,
    replay: Staff,
    revoked: Staff,
    disabled: Staff,
    other_key: DeviceKey,
    signing_kid: String,
    signing_key: EncodingKey,
    invite_token: String,
    admin: AdminStore,
    counter: std::sync::atomic::AtomicUsize,
}

async fn fixture() -> Fixture {
    // Every row with a bad credential is a failure from 127.0.0.1, so the
    // limit on failed credentials must not cut the table short.
    let relay = start_relay(Limits {
        failed_credentials_per_minute: 100_000,
        ..Limits::default()
    })
    .await;
    let admin = AdminStore::open(relay.data_dir()).unwrap();

    let other_org = admin.create_organization("Other clinic").unwrap();
    let other_email = "other@clinic.example";
    admin
        .create_user(&other_org, other_email, Role::Clinician)
        .unwrap();
    let clinician_other =
        sign_in_device(&relay.http, &relay.handle, relay.data_dir(), other_email).await;

    let admin_mfa_device = relay
        .sign_in_new_user("admin@clinic.example", Role::Admin)
        .await;
    let admin_mfa = enrol_totp(&relay, &admin_mfa_device).await.staff;
    assert!(claims_of(&admin_mfa.tokens.access_token).mfa);
    let admin_no_mfa = relay
        .sign_in_new_user("admin2@clinic.example", Role::Admin)
        .await;
    assert!(!claims_of(&admin_no_mfa.tokens.access_token).mfa);

    let replay = sign_in_device(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        CLINICIAN_EMAIL,
    )
    .await;
    let revoked = sign_in_device(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        CLINICIAN_EMAIL,
    )
    .await;
    admin.revoke_device(&revoked.tokens.device_id).unwrap();
    let disabled = relay
        .sign_in_new_user("leaver@clinic.example", Role::Clinician)
        .await;
    admin.disable_user(&disabled.tokens.user.user_id).unwrap();

    let (signing_kid, signing_key) = relay_signing_key(&relay);
    let (session, _) = relay.create_session().await;
    Fixture {
        clinician_other,
        admin_mfa,
        admin_no_mfa,
        replay,
        revoked,
        disabled,
        other_key: DeviceKey::generate().unwrap(),
        signing_kid,
        signing_key,
        invite_token: session.invite_token,
        admin,
        relay,
        counter: std::sync::atomic::AtomicUsize::new(0),
    }
}

/// Reads the relay's active signing key from its database, opening it with
/// the development at-rest key in the data directory.
fn relay_signing_key(relay: &TestRelay) -> (String, EncodingKey) {
    let conn = Connection::open(relay.data_dir().join("relay.db")).unwrap();
    let (kid, sealed): (String, Vec<u8>) = conn
        .query_row(
            "SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let keys =
        at_rest::unlock_existing(relay.data_dir(), &at_rest::KeySource::Development).unwrap();
    let secret = keys
        .data_keys()
        .open_value("signing_keys", "private_key", kid.as_bytes(), &sealed)
        .unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(secret.as_slice().try_into().unwrap());
    let der = signing.to_pkcs8_der().unwrap();
    (kid, EncodingKey::from_ed_der(der.as_bytes()))
}

/// A request of one row.
struct Request {
    method: &'static str,
    path: String,
    body: Option<serde_json::Value>,
    websocket: bool,
}

impl Fixture {
    fn unique(&self) -> usize {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Builds the request of a route, with fresh resources where the route
    /// changes them.
    async fn request(&self, route: Route, cred: Cred) -> Request {
        let relay = &self.relay;
        let session = || async { relay.create_session().await.0 };
        let (method, path, body, websocket) = match route {
            Route::CreateSession => {
                let body = CreateSessionRequest {
                    fingerprint: SessionKey::generate().fingerprint().to_base64url(),
                    invite_verifier: None,
                    max_browsers: None,
                };
                (
                    "POST",
                    "/v1/sessions".to_owned(),
                    Some(serde_json::to_value(body).unwrap()),
                    false,
                )
            }
            Route::EndSession => {
                let id = session().await.session_id;
                ("POST", format!("/v1/sessions/{id}/end"), None, false)
            }
            Route::Publish => {
                let id = session().await.session_id;
                ("GET", format!("/v1/sessions/{id}/publish"), None, true)
            }
            Route::StaffFollow => {
                let id = session().await.session_id;
                ("GET", format!("/v1/sessions/{id}/follow"), None, true)
            }
            Route::PatientFollow => ("GET", "/v1/follow".to_owned(), None, true),
            Route::Me => ("GET", "/v1/me".to_owned(), None, false),
            Route::TotpEnrol => ("POST", "/v1/auth/totp/enrol".to_owned(), None, false),
            Route::Logout => ("POST", "/v1/auth/logout".to_owned(), None, false),
            Route::ListUsers => ("GET", "/v1/admin/users".to_owned(), None, false),
            Route::CreateUser => {
                let email = format!("new{}@clinic.example", self.unique());
                let body = serde_json::json!({"email": email, "role": "clinician"});
                ("POST", "/v1/admin/users".to_owned(), Some(body), false)
            }
            Route::DisableUser => {
                let email = format!("target{}@clinic.example", self.unique());
                let id = self
                    .admin
                    .create_user(&relay.organization_id, &email, Role::Clinician)
                    .unwrap();
                ("POST", format!("/v1/admin/users/{id}/disable"), None, false)
            }
            Route::ListDevices => ("GET", "/v1/admin/devices".to_owned(), None, false),
            Route::RevokeDevice => {
                // Rows that must fail name any device, and the row that
                // succeeds revokes a new one.
                let id = if expected(route, cred) == 204 {
                    let email = format!("device{}@clinic.example", self.unique());
                    relay
                        .sign_in_new_user(&email, Role::Clinician)
                        .await
                        .tokens
                        .device_id
                } else {
                    self.revoked.tokens.device_id.clone()
                };
                (
                    "POST",
                    format!("/v1/admin/devices/{id}/revoke"),
                    None,
                    false,
                )
            }
        };
        Request {
            method,
            path,
            body,
            websocket,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.relay.handle.public_url())
    }

    /// Returns the credential headers of a row.
    fn headers(&self, cred: Cred, method: &str, path: &str) -> Vec<(String, String)> {
        let own = &self.relay.staff;
        let staff_headers = |staff: &Staff| {
            staff
                .headers(method, path)
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        };
        let with_token = |token: &str, key: &DeviceKey| {
            let proof = key
                .proof(method, &self.url(path), Some(token), unix_now())
                .unwrap();
            vec![
                ("authorization".to_owned(), format!("DPoP {token}")),
                (DPOP_HEADER.to_owned(), proof),
            ]
        };
        let own_claims = || claims_of(&own.tokens.access_token);
        match cred {
            Cred::None => Vec::new(),
            Cred::ClinicianOwn => staff_headers(own),
            Cred::ClinicianOther => staff_headers(&self.clinician_other),
            Cred::AdminMfa => staff_headers(&self.admin_mfa),
            Cred::AdminNoMfa => staff_headers(&self.admin_no_mfa),
            Cred::Invite => vec![(
                "authorization".to_owned(),
                format!("Bearer {}", self.invite_token),
            )],
            Cred::Expired => {
                let mut claims = own_claims();
                claims.iat = unix_now() - 3600;
                claims.exp = unix_now() - 600;
                with_token(&self.sign(&claims, &self.signing_key), &own.key)
            }
            Cred::WrongKey => {
                let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
                let der = stranger.to_pkcs8_der().unwrap();
                let key = EncodingKey::from_ed_der(der.as_bytes());
                with_token(&self.sign(&own_claims(), &key), &own.key)
            }
            Cred::AlgNone => {
                let header = URL_SAFE_NO_PAD.encode(
                    serde_json::json!({"alg": "none", "typ": "JWT", "kid": self.signing_kid})
                        .to_string(),
                );
                let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&own_claims()).unwrap());
                with_token(&format!("{header}.{body}."), &own.key)
            }
            Cred::Tampered => {
                let mut claims = self.admin_no_mfa_claims();
                claims.mfa = true;
                claims.org = "org_elsewhere".into();
                let token = &self.admin_no_mfa.tokens.access_token;
                let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
                parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
                with_token(&parts.join("."), &self.admin_no_mfa.key)
            }
            Cred::NoProof => vec![(
                "authorization".to_owned(),
                format!("DPoP {}", own.tokens.access_token),
            )],
            Cred::OtherKeyProof => with_token(&own.tokens.access_token, &self.other_key),
            Cred::ReplayedProof => staff_headers(&self.replay),
            Cred::RevokedDevice => staff_headers(&self.revoked),
            Cred::DisabledUser => staff_headers(&self.disabled),
        }
    }

    fn admin_no_mfa_claims(&self) -> AccessClaims {
        claims_of(&self.admin_no_mfa.tokens.access_token)
    }

    fn sign(&self, claims: &AccessClaims, key: &EncodingKey) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// Sends a request with headers and returns its status (101 for an upgrade).
    async fn send(&self, request: &Request, headers: &[(String, String)]) -> u16 {
        if request.websocket {
            let pairs: Vec<(&'static str, &str)> = headers
                .iter()
                .map(|(name, value)| {
                    let name: &'static str = if name.eq_ignore_ascii_case("authorization") {
                        "authorization"
                    } else {
                        "dpop"
                    };
                    (name, value.as_str())
                })
                .collect();
            return match self
                .relay
                .connect_with_headers(&request.path, &pairs, None)
                .await
            {
                Ok(mut ws) => {
                    ws.inner.close(None).await.ok();
                    101
                }
                Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
                Err(other) => panic!("{} failed: {other}", request.path),
            };
        }
        let url = self.relay.url(&request.path);
        let mut builder = match request.method {
            "GET" => self.relay.http.get(url),
            _ => self.relay.http.post(url),
        };
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        builder.send().await.unwrap().status().as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_every_credential() {
    let fixture = fixture().await;
    let mut mismatches = Vec::new();
    let mut rows = 0;
    for route in ROUTES {
        for cred in CREDENTIALS {
            let request = fixture.request(route, cred).await;
            let headers = fixture.headers(cred, request.method, &request.path);
            if cred == Cred::ReplayedProof {
                // The first use of the proof may succeed, but the second must not.
                fixture.send(&request, &headers).await;
            }
            let status = fixture.send(&request, &headers).await;
            let want = expected(route, cred);
            rows += 1;
            if status != want {
                mismatches.push(format!(
                    "{route:?} {} {} with {cred:?}: got {status}, expected {want}",
                    request.method, request.path
                ));
            }
        }
    }
    assert_eq!(rows, ROUTES.len() * CREDENTIALS.len());
    assert!(
        mismatches.is_empty(),
        "{} of {rows} rows failed:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    let metrics = fixture.relay.metrics().await;
    for reason in [
        "missing_credential",
        "expired_token",
        "invalid_token",
        "missing_proof",
        "proof_key_mismatch",
        "replayed_proof",
        "device_revoked",
        "user_disabled",
        "wrong_role",
        "wrong_organization",
        "mfa_required",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "no auth failure counted with reason {reason}"
        );
    }
    fixture.relay.handle.shutdown().await;
}
