//! `sealcast session start`, `session end`, `session link`, `session rotate`
//! and `session list`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::{Args, Subcommand};
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use sealcast_protocol::api::{CreateSessionRequest, EndSessionRequest};
use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::{FollowInvite, SessionId, SessionKey};
use url::Url;

use super::{absolute_path, open_key_store, parse_session_id};
use crate::api::{EndOutcome, RelayApi};
use crate::auth::SignedInDevice;
use crate::control::{self, ControlLock, LockAttempt, PublisherState, RequestKind};
use crate::endpoint::parse_relay_url;
use crate::error::ClientError;
use crate::keystore::{now_unix_s, KeyStore, StoredSession};
use crate::publish::{Publisher, PublisherConfig, DEFAULT_WINDOW};
use crate::secret::SecretString;

/// A `sealcast session` command.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Make a session key, create the session on the relay and print the invite link
    Start(StartArgs),
    /// Publish the sealed end-of-session frame, end the session on the relay
    /// and delete its key from this device. A `sealcast publish` of the
    /// session running on this device is asked to do it, so that it signs
    /// the end of its stream
    End(EndArgs),
    /// Print the invite link of a stored session again, with the key of its
    /// newest key epoch, for example on a device that took the session over
    Link(LinkArgs),
    /// Rotate the session key of the `sealcast publish` of the session running
    /// on this device, as SIGUSR1 does. It hands out the new invite link
    Rotate(RotateArgs),
    /// List the sessions stored on this device
    List,
}

/// Arguments of `sealcast session link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Session to print the link of [default: the session started or adopted last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,

    /// Do not print the invite link as a QR code
    #[arg(long)]
    pub no_qr: bool,
}

/// Arguments of `sealcast session start`.
// The field docs are the --help text, so they stay plain text, not rustdoc markup.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Relay base URL, for example https://relay.example:8443 [default: the
    /// relay this device is signed in to, when it is only one]
    #[arg(long, env = "SEALCAST_RELAY", value_name = "URL")]
    pub relay: Option<String>,

    /// PEM file with the CA certificate that signs the relay's certificate,
    /// for example the relay's dev-cert.pem [default: the one given to
    /// `sealcast login`, else the bundled Mozilla roots]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Do not print the invite link as a QR code
    #[arg(long)]
    pub no_qr: bool,
}

/// Arguments of `sealcast session end`.
#[derive(Debug, Args)]
pub struct EndArgs {
    /// Session to end [default: the session started last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,

    /// Maximum wait, in seconds, for a running `sealcast publish` of the
    /// session to end it
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CONTROL_TIMEOUT_S, value_parser = parse_timeout)]
    pub timeout: u64,
}

/// Arguments of `sealcast session rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Session whose key to rotate [default: the session started last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,

    /// Maximum wait, in seconds, for the running `sealcast publish` to
    /// rotate the key
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CONTROL_TIMEOUT_S, value_parser = parse_timeout)]
    pub timeout: u64,
}

/// Default of `--timeout`. Ending waits for the acknowledgement of every
/// frame in flight and for the end endpoint, whose HTTP timeout is 30 s.
const DEFAULT_CONTROL_TIMEOUT_S: u64 = 60;

/// Parses a `--timeout` value: whole seconds, at least 1.
fn parse_timeout(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a timeout: expected whole seconds, at least 1"
        )),
    }
}

/// Runs a session command.
pub async fn run(command: SessionCommand, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    match command {
        SessionCommand::Start(args) => start(args, state_dir).await,
        SessionCommand::End(args) => end(args, state_dir).await,
        SessionCommand::Link(args) => link(args, state_dir),
        SessionCommand::Rotate(args) => rotate(args, state_dir).await,
        SessionCommand::List => list(state_dir),
    }
}

async fn start(args: StartArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let ca_cert = args.ca_cert.as_deref().map(absolute_path).transpose()?;
    let store = open_key_store(state_dir)?;
    let relay = match args.relay.as_deref() {
        Some(relay) => parse_relay_url(relay)?,
        None => only_signed_in_relay(&store)?,
    };
    let device = SignedInDevice::load(&store, &relay, ca_cert.as_deref())?;

    // The key never leaves this device: the relay gets its fingerprint and
    // the invite verifier, both one-way derivations.
    let key = SessionKey::generate();
    let request = CreateSessionRequest {
        fingerprint: key.fingerprint().to_base64url(),
        invite_verifier: Some(URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes())),
        max_browsers: None,
    };
    let api = RelayApi::new(&relay, device.tls())?;
    let created = device
        .call(|auth| {
            let (api, request) = (&api, &request);
            async move { api.create_session(auth.as_ref(), request).await }
        })
        .await?;

    let session = StoredSession {
        session_id: created.session_id,
        relay,
        ca_cert: device.ca_cert().map(Path::to_path_buf),
        epoch: created.epoch,
        invite_token: SecretString::new(created.invite_token.clone()),
        key,
        key_epoch: 0,
        created_unix_s: now_unix_s(),
        endorsement: None,
    };
    let path = store.save(&session)?;
    store.set_current(&session.session_id)?;
    tracing::info!(session_id = %session.session_id, "session started");

    let publisher = PublisherKey::of_device(device.token().key());
    println!(
        "Session {} started on {}",
        session.session_id, session.relay
    );
    println!("Key stored in {}", path.display());
    println!();
    print_invitation(&session, publisher, args.no_qr);
    Ok(())
}

/// Prints the invite link of a stored session. On a device that took the
/// session over, the link carries the key of the device that started it,
/// which endorsed this device's key.
fn link(args: LinkArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let publisher = session.publisher_key(device.token().key());
    println!(
        "Session {} on {}, key epoch {}",
        session.session_id, session.relay, session.key_epoch
    );
    println!();
    print_invitation(&session, publisher, args.no_qr);
    Ok(())
}

/// Prints the invite link, which carries this device's public key so that
/// followers can check that the streams they receive were signed by it.
fn print_invitation(session: &StoredSession, publisher: PublisherKey, no_qr: bool) {
    let invite = FollowInvite {
        link: session.invite_link(),
        publisher: Some(publisher),
        key_epoch: session.key_epoch,
    };
    let link = invite.to_url();
    let words = session.key.fingerprint().words().join(" ");

    println!("Invite link (it contains the session key: give it only to the patient):");
    println!("{link}");
    if !no_qr {
        match render_qr(&link) {
            Some(qr) => println!("\n{qr}"),
            None => stderr_line!("warning: the link is too long for a QR code"),
        }
    }
    println!();
    println!("Fingerprint words, to compare with the patient's screen: {words}");
    println!();
    // The link goes in on standard input: echo is a shell builtin, so the
    // key stays out of the process list.
    println!("To follow from a terminal:");
    match &session.ca_cert {
        Some(ca_cert) => println!(
            "  echo '{link}' | sealcast follow --ca-cert '{}' -",
            ca_cert.display()
        ),
        None => println!("  echo '{link}' | sealcast follow -"),
    }
}

/// Renders text as a QR code of Unicode half blocks, light modules drawn
/// dark so that it scans on a dark terminal.
pub(crate) fn render_qr(text: &str) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Ends a session. A running `sealcast publish` of the session is asked to
/// end it. Otherwise this process ends it while holding the session's
/// control lock, so that no publisher starts meanwhile.
async fn end(args: EndArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let session_id = session.session_id;
    let relay = session.relay.clone();
    let timeout = Duration::from_secs(args.timeout);

    let lock = match ControlLock::try_acquire(&store, &session_id)? {
        LockAttempt::Acquired(lock) => lock,
        LockAttempt::Held { pid } => {
            let process = control::describe_process(pid);
            stderr_line!(
                "Asking the running `sealcast publish` ({process}) to end session {session_id}."
            );
            let request = control::send_request(&store, &session_id, RequestKind::End)?;
            wait_until_released(&store, &session_id, &request, &process, "end", timeout).await?;
            if !store.session_path(&session_id).exists() {
                // The publisher shredded the key and reported the end. The
                // relay returns "already ended" for this second report, and
                // it replaces the publisher's report if that one failed.
                drop(session);
                report_end(&relay, &session_id, &device).await?;
                println!("Session {session_id} ended by {process}. Its key was deleted from this device.");
                return Ok(());
            }
            stderr_line!(
                "{process} exited without ending session {session_id}: ending it from here."
            );
            match ControlLock::try_acquire(&store, &session_id)? {
                LockAttempt::Acquired(lock) => lock,
                LockAttempt::Held { pid } => {
                    return Err(ClientError::PublisherRunning {
                        session_id: session_id.to_string(),
                        process: control::describe_process(pid),
                    })
                }
            }
        }
    };

    if !store.session_path(&session_id).exists() {
        // Another process ended the session after it was loaded.
        drop(session);
        lock.remove_dir();
        println!("Session {session_id} had already ended. Its key was deleted from this device.");
        return Ok(());
    }
    publish_end_frame(&session, &device).await?;

    shred_session(&store, session)?;
    let reported = report_end(&relay, &session_id, &device).await;
    lock.remove_dir();
    if reported? {
        println!("Session {session_id} had already ended. Its key was deleted from this device.");
    } else {
        println!("Session {session_id} ended. Its key was deleted from this device.");
    }
    Ok(())
}

/// Asks the running `sealcast publish` of a session to rotate the key and
/// waits for its confirmation.
async fn rotate(args: RotateArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let session_id = store.resolve(args.session.as_ref())?.session_id;
    let pid = match control::publisher_state(&store, &session_id)? {
        PublisherState::Running { pid } => pid,
        PublisherState::NotRunning => {
            return Err(ClientError::NoRunningPublisher {
                session_id: session_id.to_string(),
            })
        }
    };
    let process = control::describe_process(pid);
    let request = control::send_request(&store, &session_id, RequestKind::Rotate)?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let key_epoch = loop {
        if let Some(key_epoch) = control::take_rotation_confirmation(&store, &session_id, &request)?
        {
            break key_epoch;
        }
        let running = control::publisher_state(&store, &session_id)? != PublisherState::NotRunning;
        if !running {
            // It may have confirmed just before it exited.
            if let Some(key_epoch) =
                control::take_rotation_confirmation(&store, &session_id, &request)?
            {
                break key_epoch;
            }
            control::withdraw_request(&store, &session_id, &request)?;
            return Err(ClientError::PublisherExited {
                action: "rotate the key of",
                session_id: session_id.to_string(),
                process,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            control::withdraw_request(&store, &session_id, &request)?;
            return Err(ClientError::ControlTimedOut {
                action: "rotate the key of",
                session_id: session_id.to_string(),
                process,
                waited_s: args.timeout,
            });
        }
        tokio::time::sleep(control::POLL_INTERVAL).await;
    };
    println!(
        "Rotated the key of session {session_id} to key epoch {key_epoch}. The running `sealcast publish` ({process}) printed the new invite link on its standard error, or wrote it to the file of its --rotated-link-file option."
    );
    Ok(())
}

/// Waits until no process holds the control lock of a session. On timeout
/// the request is withdrawn, so that a publisher that recovers later does
/// not act on it.
pub(super) async fn wait_until_released(
    store: &KeyStore,
    session_id: &SessionId,
    request: &str,
    process: &str,
    action: &'static str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if control::publisher_state(store, session_id)? == PublisherState::NotRunning {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            control::withdraw_request(store, session_id, request)?;
            return Err(ClientError::ControlTimedOut {
                action,
                session_id: session_id.to_string(),
                process: process.to_string(),
                waited_s: timeout.as_secs(),
            });
        }
        tokio::time::sleep(control::POLL_INTERVAL).await;
    }
}

/// Publishes the end-of-session frame on a new stream and waits for its
/// acknowledgement. A session that already ended needs no frame.
async fn publish_end_frame(
    session: &StoredSession,
    device: &SignedInDevice,
) -> Result<(), ClientError> {
    let published = match connect_publisher(session, device, DEFAULT_WINDOW).await {
        Ok(publisher) => publisher.end().await.map(|_| ()),
        Err(err) => Err(err),
    };
    match published {
        Ok(()) | Err(ClientError::SessionEnded) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Returns the relay this device is signed in to, for a `session start`
/// without `--relay`. Fails when it is signed in to none or to several.
fn only_signed_in_relay(store: &KeyStore) -> Result<Url, ClientError> {
    let mut relays = store.signed_in_relays()?;
    match relays.len() {
        1 => Ok(relays.remove(0)),
        0 => Err(ClientError::InvalidArgument {
            option: "--relay",
            reason: "missing, and this device is signed in to no relay: run `sealcast login --relay URL` first, or pass --relay URL".into(),
        }),
        _ => {
            let names: Vec<String> = relays.iter().map(Url::to_string).collect();
            Err(ClientError::InvalidArgument {
                option: "--relay",
                reason: format!(
                    "missing, and this device is signed in to several relays ({}): pass --relay URL",
                    names.join(", ")
                ),
            })
        }
    }
}

/// Deletes the session's file and drops the key from memory, which zeroes
/// it: the device's part of crypto-shredding.
pub(crate) fn shred_session(store: &KeyStore, session: StoredSession) -> Result<(), ClientError> {
    store.shred(&session.session_id)?;
    tracing::info!(session_id = %session.session_id, "session key shredded");
    drop(session);
    Ok(())
}

/// Calls the end endpoint after the key was shredded, telling the relay so.
/// Returns whether the session had already ended. On failure the key is
/// gone all the same, and a message on standard error states it.
pub(crate) async fn report_end(
    relay: &Url,
    session_id: &SessionId,
    device: &SignedInDevice,
) -> Result<bool, ClientError> {
    let outcome = call_end_endpoint(relay, session_id, device, true).await;
    if outcome.is_err() {
        stderr_line!(
            "The key of session {session_id} was deleted from this device, but the relay did not confirm the end: the relay deletes the session once it has been idle for its content retention period."
        );
    }
    outcome
}

/// Connects a publisher to a stored session with the device's token,
/// refreshing it first when it is about to expire or the relay rejects it.
/// The device key signs the stream.
pub(crate) async fn connect_publisher(
    session: &StoredSession,
    device: &SignedInDevice,
    window: usize,
) -> Result<Publisher, ClientError> {
    device
        .call(|auth| {
            let mut config = PublisherConfig::from_session(session, auth, device.tls().clone())
                .with_identity(device.token().key().clone());
            config.window = window;
            Publisher::connect(config, &session.key)
        })
        .await
}

/// Calls the end endpoint, reporting whether this device destroyed its copy
/// of the key. Returns whether the session had already ended.
pub(crate) async fn call_end_endpoint(
    relay: &Url,
    session_id: &SessionId,
    device: &SignedInDevice,
    key_destroyed: bool,
) -> Result<bool, ClientError> {
    let api = RelayApi::new(relay, device.tls())?;
    let request = EndSessionRequest { key_destroyed };
    let outcome = device
        .call(|auth| {
            let api = &api;
            let request = &request;
            async move {
                api.end_session_with(session_id, auth.as_ref(), Some(request))
                    .await
            }
        })
        .await?;
    Ok(outcome == EndOutcome::AlreadyEnded)
}

fn list(state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let store = open_key_store(state_dir)?;
    let current = store.current()?;
    let ids = store.list()?;
    if ids.is_empty() {
        println!("No sessions stored in {}", store.dir().display());
        return Ok(());
    }
    for id in ids {
        let marker = if Some(id) == current { "*" } else { " " };
        match store.load(&id) {
            Ok(session) => println!("{marker} {id}  {}", session.relay),
            Err(err) => println!("{marker} {id}  (unreadable: {err})"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_parsing() {
        assert_eq!(parse_timeout("5"), Ok(5));
        for invalid in ["0", "-1", "1.5", "abc", ""] {
            let err = parse_timeout(invalid).unwrap_err();
            assert!(err.contains("at least 1"), "{invalid}: {err}");
        }
    }

    #[test]
    fn qr_code_renders_a_link() {
        let qr = render_qr("https://relay.example/join?token=abc#secret=def").unwrap();
        assert!(qr.lines().count() > 10);
        assert!(qr.contains('█') || qr.contains('▀') || qr.contains('▄'));
    }
}
