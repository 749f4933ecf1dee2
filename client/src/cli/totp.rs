//! `sealcast totp enrol`: set up the TOTP second factor of the signed-in user.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use zeroize::Zeroize;

use super::session::render_qr;
use super::{open_key_store, read_code};
use crate::auth::SignedInDevice;
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;

/// A `sealcast totp` command.
#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Enrol an authenticator app: show its QR code, check a code from it
    /// and print the recovery codes once
    Enrol(EnrolArgs),
}

/// Arguments of `sealcast totp enrol`.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct EnrolArgs {
    /// Relay base URL, for example https://relay.example:8443
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: String,

    /// Do not print the QR code, only the otpauth:// URI and the secret
    #[arg(long)]
    pub no_qr: bool,
}

/// Runs a `sealcast totp` command.
pub async fn run(command: TotpCommand, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    match command {
        TotpCommand::Enrol(args) => enrol(args, state_dir).await,
    }
}

async fn enrol(args: EnrolArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let relay = parse_relay_url(&args.relay)?;
    let store = open_key_store(state_dir)?;
    let device = SignedInDevice::load(&store, &relay, None)?;

    let mut enrolment = device
        .call(|auth| {
            let api = device.accounts();
            async move { api.totp_enrol(auth.as_ref()).await }
        })
        .await?;

    // The secret goes to the terminal only: it is what the authenticator
    // app needs, and the relay shows it just this once.
    if args.no_qr {
        println!(
            "Add this URI to your authenticator app: {}",
            enrolment.otpauth_uri
        );
    } else {
        println!("Scan this QR code with your authenticator app:");
        match render_qr(&enrolment.otpauth_uri) {
            Some(qr) => println!("\n{qr}"),
            None => stderr_line!("warning: the URI is too long for a QR code"),
        }
        println!("or add this URI: {}", enrolment.otpauth_uri);
    }
    println!("or type this secret: {}", enrolment.secret_base32);
    println!();
    enrolment.otpauth_uri.zeroize();
    enrolment.secret_base32.zeroize();

    let code = read_code("Enter the 6-digit code the app shows now: ").await?;
    let mut activated = device
        .call(|auth| {
            let (api, code) = (device.accounts(), &code);
            async move { api.totp_activate(auth.as_ref(), code).await }
        })
        .await?;
    let signed_in_again = activated.tokens.is_some();
    if let Some(tokens) = activated.tokens.take() {
        device.replace_tokens(tokens).await?;
    }

    println!();
    println!("TOTP is enrolled. Recovery codes, each usable once in place of a code:");
    for code in &activated.recovery_codes {
        println!("  {code}");
    }
    println!("Store them somewhere safe now: they are not shown again.");
    activated.recovery_codes.zeroize();
    if !signed_in_again {
        println!(
            "Run `sealcast login --relay {relay} --email ADDRESS` again for a sign-in with TOTP."
        );
    }
    Ok(())
}
