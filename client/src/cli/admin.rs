//! `sealcast admin`: users and devices of the signed-in admin's organization.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sealcast_protocol::auth::{CreateUserRequest, DeviceSummary, Role, UserSummary};

use super::open_key_store;
use crate::auth::SignedInDevice;
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;

/// Arguments of `sealcast admin`.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Relay base URL, for example https://relay.example:8443
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL", global = true)]
    pub relay: Option<String>,

    /// Print JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,

    /// The admin command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// A `sealcast admin` command.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the organization's users
    Users,
    /// Invite a user to the organization
    CreateUser {
        /// The user's email address
        #[arg(long, value_name = "ADDRESS")]
        email: String,
        /// The user's role: clinician or admin
        #[arg(long, value_name = "ROLE")]
        role: Role,
    },
    /// List the organization's devices
    Devices,
    /// Revoke a device: its tokens stop working and its sockets close
    RevokeDevice {
        /// Device id, from `sealcast admin devices`
        #[arg(value_name = "DEVICE_ID")]
        device_id: String,
    },
}

/// Runs a `sealcast admin` command.
pub async fn run(args: AdminArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let relay_text = args.relay.ok_or(ClientError::InvalidArgument {
        option: "--relay",
        reason: "missing: pass --relay URL or set SEALCAST_RELAY".into(),
    })?;
    let relay = parse_relay_url(&relay_text)?;
    let store = open_key_store(state_dir)?;
    let device = SignedInDevice::load(&store, &relay, None)?;
    let api = device.accounts();

    match args.command {
        AdminCommand::Users => {
            let users = device
                .call(|auth| async move { api.list_users(auth.as_ref()).await })
                .await?;
            print_users(&users, args.json)
        }
        AdminCommand::CreateUser { email, role } => {
            let request = CreateUserRequest { email, role };
            let user = device
                .call(|auth| {
                    let request = &request;
                    async move { api.create_user(auth.as_ref(), request).await }
                })
                .await?;
            print_users(std::slice::from_ref(&user), args.json)
        }
        AdminCommand::Devices => {
            let devices = device
                .call(|auth| async move { api.list_devices(auth.as_ref()).await })
                .await?;
            print_devices(&devices, args.json)
        }
        AdminCommand::RevokeDevice { device_id } => {
            device
                .call(|auth| {
                    let device_id = &device_id;
                    async move { api.revoke_device(auth.as_ref(), device_id).await }
                })
                .await?;
            println!("Device {device_id} revoked.");
            Ok(())
        }
    }
}

fn print_users(users: &[UserSummary], json: bool) -> Result<(), ClientError> {
    if json {
        return print_json(users);
    }
    println!(
        "{:<24} {:<9} {:<5} {:<8} EMAIL",
        "USER", "ROLE", "TOTP", "STATE"
    );
    for user in users {
        let state = if user.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        };
        let totp = if user.totp_enabled { "yes" } else { "no" };
        println!(
            "{:<24} {:<9} {totp:<5} {state:<8} {}",
            user.user_id,
            user.role.as_str(),
            user.email
        );
    }
    Ok(())
}

fn print_devices(devices: &[DeviceSummary], json: bool) -> Result<(), ClientError> {
    if json {
        return print_json(devices);
    }
    println!("{:<24} {:<24} {:<8} NAME", "DEVICE", "USER", "STATE");
    for device in devices {
        let state = if device.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<24} {:<24} {state:<8} {}",
            device.device_id, device.user_id, device.name
        );
    }
    Ok(())
}

fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| ClientError::Internal(format!("failed to encode JSON: {err}")))?;
    println!("{text}");
    Ok(())
}
