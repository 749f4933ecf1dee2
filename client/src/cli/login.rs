//! `sealcast login`, `sealcast logout` and `sealcast whoami`.

use std::path::PathBuf;

use clap::Args;
use sealcast_protocol::auth::{LoginStarted, TokenResponse, UserInfo};
use sealcast_protocol::authorship::PublisherKey;

use super::{absolute_path, open_key_store, read_code};
use crate::auth::login::{wait_for_approval, Approval};
use crate::auth::{AccountsApi, DeviceCredentials, SignedInDevice};
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;
use crate::keystore::KeyStore;
use crate::secret::SecretString;

/// Codes a user may enter for the second factor before the sign-in fails.
const MAX_TOTP_ATTEMPTS: u32 = 3;

/// Arguments of `sealcast login`.
// The field docs are the --help text, so they stay plain text, not rustdoc markup.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Relay base URL, for example https://relay.example:8443
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: String,

    /// Email address of your account on the relay
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,

    /// Name of this device, shown to your organization's admins
    /// [default: the name given at the last sign-in]
    #[arg(long, value_name = "NAME")]
    pub device_name: Option<String>,

    /// PEM file with the CA certificate that signs the relay's certificate,
    /// kept for later commands [default: the bundled Mozilla roots]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// Arguments of `sealcast logout`.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Relay base URL, for example https://relay.example:8443
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: String,

    /// Also delete this device's key for the relay, so the next sign-in
    /// registers a new device
    #[arg(long)]
    pub forget_device: bool,
}

/// Arguments of `sealcast whoami`.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Relay base URL, for example https://relay.example:8443
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: String,
}

/// Runs `sealcast login`.
pub async fn login(args: LoginArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let relay = parse_relay_url(&args.relay)?;
    let ca_cert = args.ca_cert.as_deref().map(absolute_path).transpose()?;
    let store = open_key_store(state_dir)?;
    let mut credentials = store.load_or_generate_device(&relay, ca_cert)?;
    if args.device_name.is_some() {
        credentials.device_name = args.device_name;
    }
    // The key is stored before the relay hears of it, so an interrupted
    // sign-in reuses it on the next attempt.
    store.save_device(&credentials)?;

    let tls = crate::TlsSettings::new(credentials.ca_cert.as_deref())?;
    let api = AccountsApi::new(&relay, &tls)?;
    let started = api
        .start_login(
            &credentials.key,
            &args.email,
            credentials.device_name.as_deref(),
        )
        .await?;
    tracing::info!(relay = %relay, "sign-in started");
    print_instructions(&args.email, &started);

    let tokens = tokio::select! {
        tokens = approve(&api, &credentials, &started) => tokens?,
        _ = tokio::signal::ctrl_c() => return Err(ClientError::Interrupted),
    };
    let sign_in = store.store_tokens(&mut credentials, tokens)?;
    println!(
        "Signed in to {relay} as {} ({}), device {}.",
        sign_in.user.email,
        sign_in.user.role.as_str(),
        sign_in.device_id
    );
    Ok(())
}

fn print_instructions(email: &str, started: &LoginStarted) {
    stderr_line!("A sign-in link was sent to {email} if it belongs to an account on this relay.");
    stderr_line!("Open the link on any device and press \"Sign in\".");
    stderr_line!(
        "Waiting for approval: the link expires in {} minutes (Ctrl-C to cancel).",
        started.expires_in.div_ceil(60)
    );
}

/// Waits for the user to confirm the link and, when asked, for a TOTP or
/// recovery code. Returns the tokens.
async fn approve(
    api: &AccountsApi,
    credentials: &DeviceCredentials,
    started: &LoginStarted,
) -> Result<TokenResponse, ClientError> {
    match wait_for_approval(api, &credentials.key, started).await? {
        Approval::Approved(tokens) => Ok(tokens),
        Approval::TotpRequired => submit_second_factor(api, credentials, started).await,
    }
}

async fn submit_second_factor(
    api: &AccountsApi,
    credentials: &DeviceCredentials,
    started: &LoginStarted,
) -> Result<TokenResponse, ClientError> {
    let login_id = SecretString::new(started.login_id.clone());
    let mut attempt = 1;
    loop {
        let code =
            read_code("Enter the 6-digit code from your authenticator app, or a recovery code: ")
                .await?;
        match api.submit_totp(&credentials.key, &login_id, &code).await {
            Err(ClientError::RelayStatus {
                status: 401 | 403, ..
            }) if attempt < MAX_TOTP_ATTEMPTS => {
                stderr_line!("The code was not accepted: try again.");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Runs `sealcast logout`.
pub async fn logout(args: LogoutArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let relay = parse_relay_url(&args.relay)?;
    let store = open_key_store(state_dir)?;
    match SignedInDevice::load(&store, &relay, None) {
        Ok(device) => match device.sign_out().await {
            Ok(()) => println!("Signed out of {relay}."),
            Err(err) => {
                device.forget_sign_in().await?;
                stderr_line!("warning: {err}");
                println!(
                    "Signed out of {relay} on this device only: the relay did not confirm \
                     the sign-out, so the sign-in stays valid there until it expires."
                );
            }
        },
        Err(ClientError::NotSignedIn { .. }) => println!("Not signed in to {relay}."),
        Err(err) => return Err(err),
    }
    if args.forget_device {
        forget_device(&store, &relay)?;
    }
    Ok(())
}

fn forget_device(store: &KeyStore, relay: &url::Url) -> Result<(), ClientError> {
    if store.delete_device(relay)? {
        println!("Deleted this device's key for {relay}.");
    }
    Ok(())
}

/// Runs `sealcast whoami`.
pub async fn whoami(args: WhoamiArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let relay = parse_relay_url(&args.relay)?;
    let store = open_key_store(state_dir)?;
    let device = SignedInDevice::load(&store, &relay, None)?;
    let user = device
        .call(|auth| {
            let api = device.accounts();
            async move { api.me(auth.as_ref()).await }
        })
        .await?;
    let signing_key = PublisherKey::of_device(device.token().key());
    print_user(&user, &device.device_id().await?, &signing_key);
    Ok(())
}

fn print_user(user: &UserInfo, device_id: &str, signing_key: &PublisherKey) {
    let totp = if user.totp_enabled {
        "enrolled"
    } else {
        "not enrolled"
    };
    println!("email:        {}", user.email);
    println!("role:         {}", user.role.as_str());
    println!("user:         {}", user.user_id);
    println!("organization: {}", user.organization_id);
    println!("TOTP:         {totp}");
    println!("device:       {device_id}");
    // Followers name a publishing device by this key in their stream reports.
    println!("signing key:  {}", signing_key.to_base64url());
}
