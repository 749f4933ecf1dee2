//! `sealcast pair offer` and `sealcast pair join`: give a device the session
//! key without an invite link. `pair offer --device` and `pair adopt` hand
//! the whole session to another device of the same clinician, see
//! [`super::pair_device`].
//!
//! The clinician device runs `offer` for a session it started, which opens
//! a pairing slot on the relay and shows its id. The joining device runs
//! `join` with that id. Both show a pairing code, and each side goes on only
//! when its user confirms that the two codes match, because a relay that
//! substituted a public key makes them differ. The clinician device then
//! sends the session key wrapped for the joining device, which follows the
//! session as `sealcast follow` does. Messages go to standard error, so
//! that standard output of `join` carries only the transcript.
//!
//! The clinician device keeps each pairing in its key store, so that
//! `sealcast publish` wraps the key of every later key epoch for the joined
//! device. The joined device keeps its side of the pairing in memory and
//! long-polls the relay for those keys, so it reads on across rotations.
//! `list` shows the stored pairings, and `remove` ends one: the relay
//! revokes the device's follow token, and later keys are no longer wrapped
//! for it.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use sealcast_protocol::paired_keys::{DeviceId, InvalidDeviceId};
use sealcast_protocol::pairing::{
    ClinicianPairing, Commitment, JoinerPairing, KeyGrant, PairedClinician, PairingCode,
};
use sealcast_protocol::pairing_api::{PairingId, PairingPurpose, PairingState, PairingStatus};
use sealcast_protocol::{FollowInvite, InviteLink, SessionId};
use tokio::sync::mpsc;

use super::follow::{follow_link, LaterKeys, OutputFormat};
use super::pair_keys::{receive_later_keys, LaterKeyPoll};
use super::{open_key_store, parse_session_id};
use crate::auth::{BearerToken, SignedInDevice};
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;
use crate::keystore::{now_unix_s, KeyStore, StoredSession};
use crate::pairing::PairingApi;
use crate::secret::SecretString;
use crate::tls::TlsSettings;

/// A `sealcast pair` command.
#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// On the clinician device: open a pairing for a stored session, show its
    /// id and code, and send the session key once the codes match
    Offer(OfferArgs),
    /// On the joining device: join a pairing by its id, show the code, and
    /// follow the session once the codes match, with the keys of later key
    /// epochs that the clinician device sends
    Join(JoinArgs),
    /// On another device of the same clinician, signed in with `sealcast
    /// login`: join a pairing that `pair offer --device` opened, and store the
    /// session so that this device can publish to it, end it and pair patients
    Adopt(super::pair_device::AdoptArgs),
    /// On the clinician device: list the devices paired with a stored session
    List(ListArgs),
    /// On the clinician device: remove a paired device. The relay revokes its
    /// follow token, and it gets no key of a later key epoch. Rotate the key
    /// afterwards (`sealcast session rotate`) so that it reads nothing new
    Remove(RemoveArgs),
}

/// Arguments of `sealcast pair list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Session whose paired devices to list [default: the session started last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,
}

/// Arguments of `sealcast pair remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The device id that `sealcast pair list` shows: 16 hex digits
    #[arg(value_name = "DEVICE_ID")]
    pub device_id: String,

    /// Session the device is paired with [default: the session started last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,
}

/// Arguments of `sealcast pair offer`.
#[derive(Debug, Args)]
pub struct OfferArgs {
    /// Session to pair a device with [default: the session started last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,

    /// Confirm without a prompt when the pairing code equals CODE (four words
    /// or six digits), and refuse otherwise. - reads CODE from stdin once the
    /// code is shown
    #[arg(long, value_name = "CODE")]
    pub confirm_code: Option<String>,

    /// Hand the whole session to another device of the same clinician, which
    /// runs `sealcast pair adopt`, in place of a patient's device. That
    /// device can then publish to the session and end it
    #[arg(long)]
    pub device: bool,
}

/// Arguments of `sealcast pair join`.
// The field docs are the --help text, so they stay plain text, not rustdoc markup.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The pairing id the clinician device shows, such as 0421-8810-3377
    #[arg(value_name = "PAIRING_ID")]
    pub pairing_id: String,

    /// Relay base URL, for example https://relay.example:8443
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: String,

    /// PEM file with the CA certificate that signs the relay's certificate
    /// [default: the bundled Mozilla roots]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Confirm without a prompt when the pairing code equals CODE (four words
    /// or six digits), and refuse otherwise. - reads CODE from stdin once the
    /// code is shown
    #[arg(long, value_name = "CODE")]
    pub confirm_code: Option<String>,

    /// Output format of the transcript, as for `sealcast follow`
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

/// Runs a pair command.
pub async fn run(command: PairCommand, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    match command {
        PairCommand::Offer(args) if args.device => super::pair_device::offer(args, state_dir).await,
        PairCommand::Offer(args) => offer(args, state_dir).await,
        PairCommand::Join(args) => join(args).await,
        PairCommand::Adopt(args) => super::pair_device::adopt(args, state_dir).await,
        PairCommand::List(args) => list(args, state_dir),
        PairCommand::Remove(args) => remove(args, state_dir).await,
    }
}

fn list(args: ListArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    let devices = store.paired_devices(&session.session_id)?;
    if devices.is_empty() {
        stderr_line!("No device is paired with session {}.", session.session_id);
        return Ok(());
    }
    let now = now_unix_s();
    println!("DEVICE ID         ADDED HERE         SOURCE");
    for device in devices {
        let added = format!("{} ago", format_age(device.paired_unix_s, now));
        let source = match device.handed_over_unix_s {
            None => "paired on this device",
            Some(_) => "handed over with the session",
        };
        println!("{}  {added:<17}  {source}", device.device_id);
    }
    Ok(())
}

async fn remove(args: RemoveArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let device_id: DeviceId =
        args.device_id
            .parse()
            .map_err(|err: InvalidDeviceId| ClientError::InvalidArgument {
                option: "DEVICE_ID",
                reason: err.to_string(),
            })?;
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    let session_id = session.session_id;
    let known = store
        .paired_devices(&session_id)?
        .iter()
        .any(|device| device.device_id == device_id);
    if !known {
        return Err(ClientError::InvalidArgument {
            option: "DEVICE_ID",
            reason: format!(
                "no device {device_id} is paired with session {session_id} on this device: see `sealcast pair list`"
            ),
        });
    }
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let api = PairingApi::new(&session.relay, device.tls())?;
    match api
        .remove_paired_device(&device, &session_id, &device_id)
        .await
    {
        Ok(()) => {}
        // The relay has no record of the device any more, so only the local record is left.
        Err(ClientError::RelayStatus { status: 404, .. }) => {
            stderr_line!("The relay had already removed device {device_id}.");
        }
        Err(err) => return Err(err),
    }
    store.remove_paired_device(&session_id, &device_id)?;
    stderr_line!(
        "Removed device {device_id}: its follow token is revoked and it gets no later key. Rotate the key now (`sealcast session rotate` while `sealcast publish` runs) so that it cannot read what follows."
    );
    Ok(())
}

/// Formats the time since `paired_unix_s` as `42 s`, `7 min` or `3 h 05 min`.
fn format_age(paired_unix_s: u64, now_unix_s: u64) -> String {
    let seconds = now_unix_s.saturating_sub(paired_unix_s);
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min", seconds / 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

async fn offer(args: OfferArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let api = PairingApi::new(&session.relay, device.tls())?;
    let opened = api
        .open(&device, &session.session_id, PairingPurpose::Patient)
        .await?;
    let id = parse_opened_id(&opened.pairing_id)?;
    print_offer(&session, id, opened.expires_in);

    let confirmation = Confirmation::from_flag(args.confirm_code.as_deref());
    let offered = tokio::select! {
        result = offer_steps(&api, &device, &store, &session, id, &confirmation) => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::Interrupted),
    };
    let device_id = match offered {
        Ok(device_id) => device_id,
        Err(err) => {
            // The slot would expire anyway, but cancelling stops the joining device's wait now.
            let _ = api.clinician_cancel(&device, &session.session_id, id).await;
            return Err(err);
        }
    };
    stderr_line!(
        "Device {device_id} paired: it can now follow session {}, and `sealcast publish` sends it the key of each later key epoch.",
        session.session_id
    );
    Ok(())
}

/// Runs steps 2 to 5 on the clinician device, storing the pairing in the
/// key store before the wrapped key goes out. Returns the joined device's id.
async fn offer_steps(
    api: &PairingApi,
    device: &SignedInDevice,
    store: &KeyStore,
    session: &StoredSession,
    id: PairingId,
    confirmation: &Confirmation,
) -> Result<DeviceId, ClientError> {
    let session_id = &session.session_id;
    let status = api
        .clinician_wait(device, session_id, id, &[PairingState::Committed])
        .await?;
    let commitment = Commitment(decode_key(status.commitment.as_deref(), "commitment")?);
    let (pairing, public_key) = ClinicianPairing::respond(commitment);
    api.send_clinician_key(device, session_id, id, &public_key)
        .await?;

    let status = api
        .clinician_wait(device, session_id, id, &[PairingState::Revealed])
        .await?;
    let joiner_public = decode_key(status.joiner_public.as_deref(), "joiner_public")?;
    let unconfirmed = pairing.receive_joiner_key(joiner_public)?;
    confirmation
        .confirm(&unconfirmed.code(), "joining device")
        .await?;

    // On a device that took the session over, followers still check
    // streams with the key of the device that started the session.
    let grant = KeyGrant {
        key_epoch: session.key_epoch,
        session_id: *session_id,
        session_key: session.key.clone(),
        publisher: session.publisher_key(device.token().key()),
    };
    let paired = unconfirmed.confirm();
    let wrapped = paired.wrap_key(&grant);
    // Stored first, so that no device is paired without a record that
    // later rotations wrap keys for.
    let device_id = store.add_paired_device(session_id, &paired)?;
    if let Err(err) = api.send_wrapped_key(device, session_id, id, &wrapped).await {
        if let Err(removal) = store.remove_paired_device(session_id, &device_id) {
            stderr_line!(
                "warning: the record of the failed pairing stays in the key store: {removal}"
            );
        }
        return Err(err);
    }
    Ok(device_id)
}

/// Parses the pairing id the relay returned when it opened a slot.
pub(super) fn parse_opened_id(text: &str) -> Result<PairingId, ClientError> {
    text.parse().map_err(|_| {
        ClientError::ProtocolViolation(format!(
            "the relay returned the invalid pairing id {text:?}"
        ))
    })
}

fn print_offer(session: &StoredSession, id: PairingId, expires_in: u64) {
    println!("Pairing id: {id}");
    println!("It expires in {expires_in} s. On the joining device run:");
    let ca_cert = session
        .ca_cert
        .as_ref()
        .map(|path| format!(" --ca-cert '{}'", path.display()))
        .unwrap_or_default();
    println!(
        "  sealcast pair join --relay {}{ca_cert} {id}",
        session.relay
    );
    // The patient page pairs when it is opened without an invite link.
    let mut page = session.relay.clone();
    page.set_path("/join");
    println!("or open {page} in its browser and type the pairing id.");
    println!();
}

async fn join(args: JoinArgs) -> Result<(), ClientError> {
    let id: PairingId = args
        .pairing_id
        .parse()
        .map_err(|err| ClientError::InvalidArgument {
            option: "PAIRING_ID",
            reason: format!("{err}"),
        })?;
    let relay = parse_relay_url(&args.relay)?;
    let tls = TlsSettings::new(args.ca_cert.as_deref())?;
    let api = PairingApi::new(&relay, &tls)?;
    let confirmation = Confirmation::from_flag(args.confirm_code.as_deref());

    let (joiner, commitment) = JoinerPairing::start();
    let (token, _) = api.commit(id, &commitment.0).await?;
    stderr_line!("Joined pairing {id}: waiting for the clinician device.");
    let joined = tokio::select! {
        result = join_steps(&api, &token, id, joiner, &confirmation) => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::Interrupted),
    };
    let (status, grant, paired) = match joined {
        Ok(joined) => joined,
        Err(err) => {
            let _ = api.joiner_cancel(&token, id).await;
            return Err(err);
        }
    };

    let follow_token = status.follow_token.ok_or_else(|| {
        ClientError::ProtocolViolation("the completed pairing carries no follow token".into())
    })?;
    if status.session_id != Some(grant.session_id) {
        return Err(ClientError::ProtocolViolation(
            "the relay named another session than the wrapped key".into(),
        ));
    }
    stderr_line!("Paired. Following session {}.", grant.session_id);
    // The publisher key came wrapped with the session key, so the relay
    // could not replace it.
    let (grants, receiver) = mpsc::channel(4);
    let poller = tokio::spawn(receive_later_keys(LaterKeyPoll {
        api,
        follow_token: BearerToken::new(SecretString::new(follow_token.clone())),
        pairing: paired,
        session_id: grant.session_id,
        publisher: grant.publisher,
        newest_epoch: grant.key_epoch,
        grants,
    }));
    let invite = FollowInvite {
        link: InviteLink {
            relay,
            token: follow_token,
            key: grant.session_key,
        },
        publisher: Some(grant.publisher),
        key_epoch: grant.key_epoch,
    };
    let followed = follow_link(invite, tls, args.format, LaterKeys::Grants(receiver)).await;
    poller.abort();
    followed
}

/// Runs steps 2 to 5 on the joining device and returns the completed
/// status with the unwrapped grant and the pairing, which opens later keys.
async fn join_steps(
    api: &PairingApi,
    token: &BearerToken,
    id: PairingId,
    joiner: JoinerPairing,
    confirmation: &Confirmation,
) -> Result<(PairingStatus, KeyGrant, PairedClinician), ClientError> {
    let (status, paired, wrapped) = joiner_exchange(
        api,
        token,
        id,
        joiner,
        confirmation,
        "clinician device",
        "key",
    )
    .await?;
    let grant = paired.unwrap_key(&wrapped)?;
    Ok((status, grant, paired))
}

/// Runs steps 2 to 5 of a joining device up to the wrapped value: sends its
/// public key, has the user confirm the code shown beside `peer`'s, and waits
/// for the completed slot. Returns the completed status, the confirmed
/// pairing and the wrapped `what`, still sealed.
pub(super) async fn joiner_exchange(
    api: &PairingApi,
    token: &BearerToken,
    id: PairingId,
    joiner: JoinerPairing,
    confirmation: &Confirmation,
    peer: &str,
    what: &str,
) -> Result<(PairingStatus, PairedClinician, Vec<u8>), ClientError> {
    let status = api
        .joiner_wait(token, id, &[PairingState::Responded])
        .await?;
    let clinician_public = decode_key(status.clinician_public.as_deref(), "clinician_public")?;
    let (unconfirmed, public_key) = joiner.receive_clinician_key(clinician_public)?;
    api.send_joiner_key(token, id, &public_key).await?;

    confirmation.confirm(&unconfirmed.code(), peer).await?;
    let paired = unconfirmed.confirm();
    stderr_line!("Code confirmed: waiting for the {peer} to confirm it too.");
    let status = api
        .joiner_wait(token, id, &[PairingState::Completed])
        .await?;
    let wrapped = status
        .wrapped_key
        .as_deref()
        .and_then(sealcast_protocol::invite::decode_base64url)
        .ok_or_else(|| {
            ClientError::ProtocolViolation(format!(
                "the completed pairing carries no valid wrapped {what}"
            ))
        })?;
    Ok((status, paired, wrapped))
}

/// The way the user confirms that both devices show the same code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Confirmation {
    /// Ask yes or no on the terminal.
    Prompt,
    /// Compare with a code given on the command line.
    Code(String),
    /// Read the code to compare from stdin once the code is shown.
    CodeFromStdin,
}

impl Confirmation {
    pub(super) fn from_flag(flag: Option<&str>) -> Self {
        match flag {
            None => Confirmation::Prompt,
            Some("-") => Confirmation::CodeFromStdin,
            Some(code) => Confirmation::Code(code.to_owned()),
        }
    }

    /// Shows the code and returns `Ok` only when the user or the given code
    /// confirms it.
    pub(super) async fn confirm(&self, code: &PairingCode, peer: &str) -> Result<(), ClientError> {
        stderr_line!(
            "Pairing code: {} (digits: {})",
            code.words().join(" "),
            code.digits()
        );
        match self {
            Confirmation::Prompt => {
                let answer =
                    read_line(format!("Does the {peer} show the same code? [y/N] ")).await?;
                if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
                    Ok(())
                } else {
                    Err(ClientError::PairingRefused {
                        reason: "the code was not confirmed".into(),
                    })
                }
            }
            Confirmation::Code(expected) => check_code(code, expected),
            Confirmation::CodeFromStdin => {
                let expected = read_line(format!("Type the code the {peer} shows: ")).await?;
                check_code(code, &expected)
            }
        }
    }
}

/// Accepts `expected` when it is the code's four words or its six digits,
/// ignoring case and separators.
fn check_code(code: &PairingCode, expected: &str) -> Result<(), ClientError> {
    let normalized = expected
        .to_ascii_lowercase()
        .replace(['-', ','], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if normalized == code.words().join(" ") || normalized == code.digits() {
        return Ok(());
    }
    Err(ClientError::PairingRefused {
        reason: "the pairing code differs from the confirmed code, so a key may have been substituted on the way".into(),
    })
}

pub(super) fn decode_key(text: Option<&str>, field: &str) -> Result<[u8; 32], ClientError> {
    text.and_then(sealcast_protocol::invite::decode_base64url)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            ClientError::ProtocolViolation(format!(
                "the relay sent no valid {field}: expected 32 bytes as base64url"
            ))
        })
}

/// Prints `prompt` on stderr and reads one line from stdin. A closed stdin
/// returns an empty line, which confirms nothing.
async fn read_line(prompt: String) -> Result<String, ClientError> {
    {
        use std::io::Write as _;
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
    }
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|err| ClientError::Internal(format!("the stdin reader failed: {err}")))?
    .map_err(|err| ClientError::io("read", "stdin", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_matches_words_or_digits() {
        // The code of the test vectors in docs/protocol.md section 10.7.
        let code = PairingCode([0x26, 0xa6, 0x00, 0x2b]);
        assert!(check_code(&code, "bear kayak acorn berry").is_ok());
        assert!(check_code(&code, " Bear-Kayak-Acorn-Berry\n").is_ok());
        assert!(check_code(&code, "413227").is_ok());
        assert!(check_code(&code, "bear kayak acorn").is_err());
        assert!(check_code(&code, "413228").is_err());
        assert!(check_code(&code, "").is_err());
    }

    #[test]
    fn age_is_seconds_minutes_or_hours() {
        assert_eq!(format_age(100, 142), "42 s");
        assert_eq!(format_age(100, 100 + 7 * 60 + 5), "7 min");
        assert_eq!(format_age(0, 3 * 3600 + 5 * 60), "3 h 05 min");
        assert_eq!(format_age(200, 100), "0 s");
    }

    #[test]
    fn confirm_code_flag_forms() {
        assert_eq!(Confirmation::from_flag(None), Confirmation::Prompt);
        assert_eq!(
            Confirmation::from_flag(Some("-")),
            Confirmation::CodeFromStdin
        );
        assert_eq!(
            Confirmation::from_flag(Some("413227")),
            Confirmation::Code("413227".into())
        );
    }
}
