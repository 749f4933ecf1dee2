//! `sealcast pair offer --device` and `sealcast pair adopt`: hand a session
//! to another device of the same clinician.
//!
//! The device that started the session runs `offer --device`. The other
//! device, signed in as the same clinician, runs `adopt` with the pairing id.
//! Both show a pairing code that also covers the adopting device's identity
//! key, and each side goes on only when its user confirms that the codes
//! match. The first device then wraps everything it stores about the session
//! together with its signed endorsement of the other device's key, so that
//! followers accept the streams the other device signs. The grant also
//! carries the pairings of the patient devices paired on the first device, at
//! most [`MAX_GRANT_PAIRED_DEVICES`], so that keys the adopting device rotates
//! reach them. The adopting device stores the session and those pairings, and
//! becomes able to publish, end the session, make links and pair patients.
//! Patients paired later on either device are known to that device only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use sealcast_protocol::authorship::{Endorsement, PublisherKey};
use sealcast_protocol::pairing::{
    ClinicianPairing, Commitment, DeviceGrant, JoinerPairing, PairedJoiner,
    MAX_GRANT_PAIRED_DEVICES,
};
use sealcast_protocol::pairing_api::{PairingId, PairingPurpose, PairingState};
use sealcast_protocol::SessionId;
use zeroize::Zeroizing;

use super::pair::{decode_key, joiner_exchange, parse_opened_id, Confirmation, OfferArgs};
use super::{absolute_path, open_key_store};
use crate::auth::{BearerToken, SignedInDevice};
use crate::control::{self, PublisherState, RequestKind};
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;
use crate::keystore::{now_unix_s, KeyStore, StoredSession};
use crate::pairing::PairingApi;
use crate::secret::SecretString;

/// Maximum wait for a running `sealcast publish` on this device to sign its
/// stream and stop after a hand-over.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `sealcast pair adopt`.
// The field docs are the --help text, so they stay plain text, not rustdoc markup.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The pairing id that `sealcast pair offer --device` shows, such as 0421-8810-3377
    #[arg(value_name = "PAIRING_ID")]
    pub pairing_id: String,

    /// Relay base URL, for example https://relay.example:8443. This device
    /// must be signed in to it as the clinician who offers the session
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: String,

    /// PEM file with the CA certificate that signs the relay's certificate
    /// [default: the one given to `sealcast login`, else the bundled Mozilla roots]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Confirm without a prompt when the pairing code equals CODE (four words
    /// or six digits), and reject the pairing otherwise. - reads CODE from
    /// stdin once the code is shown
    #[arg(long, value_name = "CODE")]
    pub confirm_code: Option<String>,
}

/// Runs `sealcast pair offer --device` on the device that started the session.
pub(super) async fn offer(args: OfferArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    if session.endorsement.is_some() {
        return Err(ClientError::InvalidArgument {
            option: "--device",
            reason: "this device took the session over from the device that started it, and only that device can hand the session to another device".into(),
        });
    }
    // Checked before the slot opens, so that the other device waits for nothing.
    let paired_devices: Vec<PairedJoiner> = store
        .paired_devices(&session.session_id)?
        .into_iter()
        .map(|paired| paired.pairing)
        .collect();
    if paired_devices.len() > MAX_GRANT_PAIRED_DEVICES {
        return Err(ClientError::InvalidArgument {
            option: "--device",
            reason: format!(
                "session {} has {} paired patient devices, more than the {MAX_GRANT_PAIRED_DEVICES} a hand-over carries: remove some with `sealcast pair remove`, then offer again",
                session.session_id,
                paired_devices.len()
            ),
        });
    }
    let paired_count = paired_devices.len();
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let api = PairingApi::new(&session.relay, device.tls())?;
    let opened = api
        .open(
            &device,
            &session.session_id,
            PairingPurpose::ClinicianDevice,
        )
        .await?;
    let id = parse_opened_id(&opened.pairing_id)?;
    print_device_offer(&session, id, opened.expires_in);

    let confirmation = Confirmation::from_flag(args.confirm_code.as_deref());
    let offered = tokio::select! {
        result = offer_steps(&api, &device, &session, id, &confirmation, paired_devices) => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::Interrupted),
    };
    if offered.is_err() {
        // The slot would expire anyway, but cancelling stops the other device's wait now.
        let _ = api.clinician_cancel(&device, &session.session_id, id).await;
    }
    let device_key = offered?;
    tracing::info!(
        session_id = %session.session_id, device = %device_key.to_base64url(), paired_devices = paired_count,
        "session handed to another device"
    );
    stderr_line!(
        "Session {} handed to device {}: it can now publish to the session and end it.",
        session.session_id,
        device_key.to_base64url()
    );
    stderr_line!(
        "Handed over {paired_count} paired patient device(s). Patients paired from now on are known only to the device that pairs them."
    );
    stop_local_publisher(&store, &session.session_id).await
}

/// Asks a `sealcast publish` of the session running on this device to close
/// its stream with a signed checkpoint and stop, because the other device
/// publishes from now on. Without it, the other device's publisher would
/// take the publish socket over and cut the stream before its signature.
async fn stop_local_publisher(store: &KeyStore, session_id: &SessionId) -> Result<(), ClientError> {
    let PublisherState::Running { pid } = control::publisher_state(store, session_id)? else {
        return Ok(());
    };
    let process = control::describe_process(pid);
    let request = control::send_request(store, session_id, RequestKind::Stop)?;
    stderr_line!("Asking the running `sealcast publish` ({process}) to sign its stream and stop.");
    let stopped = super::session::wait_until_released(
        store,
        session_id,
        &request,
        &process,
        "stop publishing to",
        STOP_TIMEOUT,
    )
    .await;
    match stopped {
        Ok(()) => stderr_line!("{process} signed its stream and stopped publishing."),
        // The hand-over itself is done, so this is a warning, not a failure.
        Err(ClientError::ControlTimedOut { waited_s, .. }) => stderr_line!(
            "warning: {process} did not stop publishing within {waited_s} s: stop it with Ctrl-C before the other device publishes, or its stream ends unsigned."
        ),
        Err(err) => return Err(err),
    }
    Ok(())
}

fn print_device_offer(session: &StoredSession, id: PairingId, expires_in: u64) {
    println!("Pairing id: {id}");
    println!(
        "It expires in {expires_in} s. On your other device, signed in to the relay as the same clinician, run:"
    );
    let ca_cert = session
        .ca_cert
        .as_ref()
        .map(|path| format!(" --ca-cert '{}'", path.display()))
        .unwrap_or_default();
    println!(
        "  sealcast pair adopt --relay {}{ca_cert} {id}",
        session.relay
    );
    println!();
}

/// Runs steps 2 to 5 on the first device, handing over `paired_devices`
/// with the session, and returns the key it endorsed.
async fn offer_steps(
    api: &PairingApi,
    device: &SignedInDevice,
    session: &StoredSession,
    id: PairingId,
    confirmation: &Confirmation,
    paired_devices: Vec<PairedJoiner>,
) -> Result<PublisherKey, ClientError> {
    let session_id = &session.session_id;
    let status = api
        .clinician_wait(device, session_id, id, &[PairingState::Committed])
        .await?;
    let commitment = Commitment(decode_key(status.commitment.as_deref(), "commitment")?);
    let device_key = decode_key(status.device_key.as_deref(), "device_key")?;
    let device_key = PublisherKey::from_bytes(&device_key).map_err(|_| {
        ClientError::ProtocolViolation(
            "the relay sent a device_key that is not a valid Ed25519 public key".into(),
        )
    })?;
    let own_key = PublisherKey::of_device(device.token().key());
    if device_key == own_key {
        return Err(ClientError::PairingRefused {
            reason: "the other device has this device's own key: run `sealcast pair adopt` on another device".into(),
        });
    }

    let (pairing, public_key) = ClinicianPairing::respond_to_device(commitment, device_key);
    api.send_clinician_key(device, session_id, id, &public_key)
        .await?;
    let status = api
        .clinician_wait(device, session_id, id, &[PairingState::Revealed])
        .await?;
    let joiner_public = decode_key(status.joiner_public.as_deref(), "joiner_public")?;
    let unconfirmed = pairing.receive_joiner_key(joiner_public)?;
    confirmation
        .confirm(&unconfirmed.code(), "other device")
        .await?;

    let grant = DeviceGrant {
        key_epoch: session.key_epoch,
        session_id: *session_id,
        session_key: session.key.clone(),
        publisher: own_key,
        endorsement: Endorsement::sign(
            device.token().key(),
            session_id,
            session.key_epoch,
            device_key,
        ),
        history_epoch: session.epoch,
        invite_token: Zeroizing::new(session.invite_token.expose().to_owned()),
        paired_devices,
    };
    let wrapped = unconfirmed.confirm().wrap_device_grant(&grant)?;
    api.send_wrapped_key(device, session_id, id, &wrapped)
        .await?;
    Ok(device_key)
}

/// Runs `sealcast pair adopt` on the device that takes the session over.
pub(super) async fn adopt(args: AdoptArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let id: PairingId = args
        .pairing_id
        .parse()
        .map_err(|err| ClientError::InvalidArgument {
            option: "PAIRING_ID",
            reason: format!("{err}"),
        })?;
    let relay = parse_relay_url(&args.relay)?;
    let ca_cert = args.ca_cert.as_deref().map(absolute_path).transpose()?;
    let store = open_key_store(state_dir)?;
    let device = SignedInDevice::load(&store, &relay, ca_cert.as_deref())?;
    let api = PairingApi::new(&relay, device.tls())?;
    let confirmation = Confirmation::from_flag(args.confirm_code.as_deref());

    let own_key = PublisherKey::of_device(device.token().key());
    let (joiner, commitment) = JoinerPairing::start_for_device(own_key);
    let (token, _) = api
        .commit_as_device(&device, id, &commitment.0, &own_key)
        .await?;
    stderr_line!("Joined pairing {id}: waiting for the clinician's other device.");
    let adopted = tokio::select! {
        result = adopt_steps(&api, &token, id, joiner, &confirmation) => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::Interrupted),
    };
    let grant = match adopted {
        Ok(grant) => grant,
        Err(err) => {
            let _ = api.joiner_cancel(&token, id).await;
            return Err(err);
        }
    };

    let session = StoredSession {
        session_id: grant.session_id,
        relay,
        ca_cert: device.ca_cert().map(Path::to_path_buf),
        epoch: grant.history_epoch,
        invite_token: SecretString::new(grant.invite_token.as_str().to_owned()),
        key: grant.session_key.clone(),
        key_epoch: grant.key_epoch,
        created_unix_s: now_unix_s(),
        endorsement: Some(grant.endorsement),
    };
    let path = store.save(&session)?;
    store.set_current(&session.session_id)?;
    let added = store.add_handed_over_devices(&session.session_id, &grant.paired_devices)?;
    tracing::info!(
        session_id = %session.session_id, paired_devices = added.len(),
        "session adopted from another device"
    );
    println!(
        "Session {} adopted, key stored in {}",
        session.session_id,
        path.display()
    );
    if !grant.paired_devices.is_empty() {
        println!(
            "Stored {} paired patient device(s) from the other device: keys rotated here are sent to them too. See `sealcast pair list`.",
            grant.paired_devices.len()
        );
    }
    println!(
        "This device can now publish to it with `sealcast publish`, end it with `sealcast session end`, and pair patients with `sealcast pair offer`."
    );
    Ok(())
}

/// Runs steps 2 to 5 on the adopting device and returns the unwrapped grant.
async fn adopt_steps(
    api: &PairingApi,
    token: &BearerToken,
    id: PairingId,
    joiner: JoinerPairing,
    confirmation: &Confirmation,
) -> Result<DeviceGrant, ClientError> {
    let (status, paired, wrapped) = joiner_exchange(
        api,
        token,
        id,
        joiner,
        confirmation,
        "other device",
        "session",
    )
    .await?;
    let grant = paired.unwrap_device_grant(&wrapped)?;
    if status.session_id != Some(grant.session_id) {
        return Err(ClientError::ProtocolViolation(
            "the relay named another session than the wrapped session".into(),
        ));
    }
    Ok(grant)
}
