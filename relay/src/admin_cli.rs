//! `sealcast-relay admin`: organizations, users and devices, edited in the
//! data directory's database directly, so it works while a relay runs.
//!
//! A running relay closes the sockets of a device revoked or a user
//! disabled here within [`crate::accounts::live::RECHECK_INTERVAL`]. Each
//! change is recorded in the admin audit stream with the actor `admin-cli`.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use sealcast_protocol::auth::Role;
use serde::Serialize;

use crate::accounts::admin::{AdminError, AdminStore};
use crate::accounts::store::normalize_email;
use crate::at_rest::KeySource;
use crate::audit::event::ACTOR_ADMIN_CLI;
use crate::audit::{record_direct, Action, Event};
use crate::store::StoreError;
use crate::store_args::StoreArgs;

/// Arguments of `sealcast-relay admin`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminArgs {
    /// Directory with relay.db, as given to serve.
    #[arg(long, env = "SEALCAST_DATA_DIR", default_value = "./sealcast-data")]
    data_dir: PathBuf,
    /// File with the at-rest key, as given to serve. SEALCAST_AT_REST_KEY may
    /// hold the key itself instead. Without either, the development key file
    /// in the data directory is used.
    #[arg(long, env = "SEALCAST_AT_REST_KEY_FILE")]
    at_rest_key_file: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum AdminCommand {
    /// Create an organization (a clinic) and print its id.
    CreateOrg {
        /// Name shown to administrators.
        #[arg(long)]
        name: String,
    },
    /// Create a user of an organization and print its id.
    CreateUser {
        /// Organization id, as create-org printed it.
        #[arg(long)]
        org: String,
        /// Email address the user signs in with.
        #[arg(long)]
        email: String,
        /// Role: admin, who manages users and devices and needs TOTP, or
        /// clinician, who runs sessions.
        #[arg(long)]
        role: Role,
    },
    /// List users, of one organization or of all.
    ListUsers {
        /// Organization id.
        #[arg(long)]
        org: Option<String>,
    },
    /// List devices, of one organization or of all.
    ListDevices {
        /// Organization id.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a device: its tokens stop working and its sockets close.
    RevokeDevice {
        /// Device id.
        id: String,
    },
    /// Disable a user: their tokens stop working and their sockets close.
    DisableUser {
        /// User id.
        id: String,
    },
}

#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
}

/// Runs one admin command and prints its result to stdout.
pub(crate) fn run(args: AdminArgs) -> Result<(), AdminError> {
    let source = KeySource::from_flag_and_env(args.at_rest_key_file)
        .map_err(|error| AdminError::Store(StoreError::at_rest(error)))?;
    if !args.data_dir.is_dir() {
        return Err(AdminError::Invalid(format!(
            "data directory {} does not exist: pass --data-dir with the relay's data directory, or start the relay once to create it",
            args.data_dir.display()
        )));
    }
    let backend = args.store.backend(&args.data_dir)?;
    let admin = AdminStore::open_in(&args.data_dir, &backend, &source)?;
    let mut out = io::stdout().lock();
    let printed = match args.command {
        AdminCommand::CreateOrg { name } => {
            let id = admin.create_organization(&name)?;
            let event = Event::new(Action::OrganizationCreated, ACTOR_ADMIN_CLI)
                .subject(&id)
                .digest_of(name.trim().as_bytes());
            record_direct(&args.data_dir, &backend, event)?;
            print_id(&mut out, args.json, &id)
        }
        AdminCommand::CreateUser { org, email, role } => {
            let id = admin.create_user(&org, &email, role)?;
            let event = Event::new(Action::UserCreated, ACTOR_ADMIN_CLI)
                .subject(&id)
                .detail("organization_id", &org)
                .detail("role", role.as_str())
                .digest_of(normalize_email(&email).as_bytes());
            record_direct(&args.data_dir, &backend, event)?;
            print_id(&mut out, args.json, &id)
        }
        AdminCommand::ListUsers { org } => {
            let users = admin.list_users(org.as_deref())?;
            if args.json {
                print_json(&mut out, &users)
            } else {
                users.iter().try_for_each(|user| {
                    let state = if user.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    };
                    let totp = if user.totp_enabled { "totp" } else { "no-totp" };
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{state}\t{totp}",
                        user.user_id,
                        user.email,
                        user.role.as_str()
                    )
                })
            }
        }
        AdminCommand::ListDevices { org } => {
            let devices = admin.list_devices(org.as_deref())?;
            if args.json {
                print_json(&mut out, &devices)
            } else {
                devices.iter().try_for_each(|device| {
                    let state = if device.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{state}",
                        device.device_id, device.user_id, device.name
                    )
                })
            }
        }
        AdminCommand::RevokeDevice { id } => {
            admin.revoke_device(&id)?;
            let event = Event::new(Action::DeviceRevoked, ACTOR_ADMIN_CLI).subject(&id);
            record_direct(&args.data_dir, &backend, event)?;
            print_id(&mut out, args.json, &id)
        }
        AdminCommand::DisableUser { id } => {
            admin.disable_user(&id)?;
            let event = Event::new(Action::UserDisabled, ACTOR_ADMIN_CLI).subject(&id);
            record_direct(&args.data_dir, &backend, event)?;
            print_id(&mut out, args.json, &id)
        }
    };
    printed
        .and_then(|()| out.flush())
        .map_err(AdminError::Output)
}

fn print_id(out: &mut impl Write, json: bool, id: &str) -> io::Result<()> {
    if json {
        print_json(out, &Created { id })
    } else {
        writeln!(out, "{id}")
    }
}

fn print_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}
