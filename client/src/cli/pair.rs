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

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use sealcast_protocol::pairing::{
    ClinicianPairing, Commitment, JoinerPairing, KeyGrant, PairingCode,
};
use sealcast_protocol::pairing_api::{PairingId, PairingPurpose, PairingState, PairingStatus};
use sealcast_protocol::{FollowInvite, InviteLink, SessionId};

use super::follow::{follow_link, OutputFormat};
use super::{open_key_store, parse_session_id};
use crate::auth::SignedInDevice;
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;
use crate::keystore::StoredSession;
use crate::pairing::PairingApi;
use crate::tls::TlsSettings;

/// A `sealcast pair` command.
#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// On the clinician device: open a pairing for a stored session, show its
    /// id and code, and send the session key once the codes match
    Offer(OfferArgs),
    /// On the joining device: join a pairing by its id, show the code, and
    /// follow the session once the codes match
    Join(JoinArgs),
    /// On another device of the same clinician, signed in with `sealcast
    /// login`: join a pairing that `pair offer --device` opened, and store the
    /// session so that this device can publish to it, end it and pair patients
    Adopt(super::pair_device::AdoptArgs),
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
        result = offer_steps(&api, &device, &session, id, &confirmation) => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::Interrupted),
    };
    if offered.is_err() {
        // The slot would expire anyway, but cancelling stops the joining device's wait now.
        let _ = api.clinician_cancel(&device, &session.session_id, id).await;
    }
    offered?;
    stderr_line!(
        "Device paired: it can now follow session {}.",
        session.session_id
    );
    Ok(())
}

/// Runs steps 2 to 5 on the clinician device.
async fn offer_steps(
    api: &PairingApi,
    device: &SignedInDevice,
    session: &StoredSession,
    id: PairingId,
    confirmation: &Confirmation,
) -> Result<(), ClientError> {
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
    let wrapped = unconfirmed.confirm().wrap_key(&grant);
    api.send_wrapped_key(device, session_id, id, &wrapped).await
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
    let (status, grant) = match joined {
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
    let invite = FollowInvite {
        link: InviteLink {
            relay,
            token: follow_token,
            key: grant.session_key,
        },
        publisher: Some(grant.publisher),
        key_epoch: grant.key_epoch,
    };
    follow_link(invite, tls, args.format, None).await
}

/// Runs steps 2 to 5 on the joining device and returns the completed
/// status with the unwrapped grant.
async fn join_steps(
    api: &PairingApi,
    token: &crate::auth::BearerToken,
    id: PairingId,
    joiner: JoinerPairing,
    confirmation: &Confirmation,
) -> Result<(PairingStatus, KeyGrant), ClientError> {
    let status = api
        .joiner_wait(token, id, &[PairingState::Responded])
        .await?;
    let clinician_public = decode_key(status.clinician_public.as_deref(), "clinician_public")?;
    let (unconfirmed, public_key) = joiner.receive_clinician_key(clinician_public)?;
    api.send_joiner_key(token, id, &public_key).await?;

    confirmation
        .confirm(&unconfirmed.code(), "clinician device")
        .await?;
    let paired = unconfirmed.confirm();
    stderr_line!("Code confirmed: waiting for the clinician device to confirm it too.");
    let status = api
        .joiner_wait(token, id, &[PairingState::Completed])
        .await?;
    let wrapped = status
        .wrapped_key
        .as_deref()
        .and_then(sealcast_protocol::invite::decode_base64url)
        .ok_or_else(|| {
            ClientError::ProtocolViolation(
                "the completed pairing carries no valid wrapped key".into(),
            )
        })?;
    let grant = paired.unwrap_key(&wrapped)?;
    Ok((status, grant))
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
