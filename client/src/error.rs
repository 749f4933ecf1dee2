//! The crate's error type, with the exit code the `sealcast` binary maps each
//! error to.
//!
//! Every message names the value that failed and what to do next. No message
//! contains key material, tokens or transcript text.

use std::path::PathBuf;

use sealcast_protocol::invite::FollowInviteError;
use sealcast_protocol::{InviteError, ProtocolError};
use thiserror::Error;

use crate::input::InputError;

/// Exit codes from BSD `sysexits.h`, the convention most Unix tools follow.
pub mod exit_code {
    /// The command line was wrong.
    pub const USAGE: u8 = 64;
    /// The input data (a transcript, an invite link) was invalid.
    pub const DATA: u8 = 65;
    /// An input file did not exist or could not be read.
    pub const NO_INPUT: u8 = 66;
    /// The relay could not be reached or refused service for now.
    pub const UNAVAILABLE: u8 = 69;
    /// An internal error.
    pub const SOFTWARE: u8 = 70;
    /// Reading or writing a local file failed.
    pub const IO: u8 = 74;
    /// The relay broke the protocol.
    pub const PROTOCOL: u8 = 76;
    /// The relay rejected a credential.
    pub const NO_PERMISSION: u8 = 77;
    /// The configuration (relay URL, CA certificate, state directory) was wrong.
    pub const CONFIG: u8 = 78;
    /// The user interrupted the command with Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// An error of the sealcast client library or CLI.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A transcript input could not be read or parsed.
    #[error(transparent)]
    Input(#[from] InputError),

    /// An invite link could not be parsed. The message already names the fix.
    #[error(transparent)]
    Invite(#[from] InviteError),

    /// An invite link's publisher key or key epoch could not be parsed.
    #[error(transparent)]
    FollowInvite(#[from] FollowInviteError),

    /// Sealing a frame failed.
    #[error("failed to seal a frame: {0}")]
    Seal(#[from] ProtocolError),

    /// A command-line value is invalid.
    #[error("invalid {option}: {reason}")]
    InvalidArgument {
        /// Option or argument name, for example `--speed`.
        option: &'static str,
        /// The problem and the value to pass instead.
        reason: String,
    },

    /// A local file operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// The operation, for example `write`.
        action: &'static str,
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },

    /// No key store directory was given and none could be found.
    #[error("no data directory found for the key store: pass --state-dir or set SEALCAST_HOME")]
    NoStateDir,

    /// A command needs a session but none was named and none is current.
    #[error("no current session: run `sealcast session start` first or pass --session ID")]
    NoCurrentSession,

    /// The named session is not in the key store.
    #[error(
        "session {session_id} is not in the key store {}: check the id, or pass the \
         --state-dir the session was started with",
        dir.display()
    )]
    SessionNotStored {
        /// Session id asked for.
        session_id: String,
        /// Key store directory searched.
        dir: PathBuf,
    },

    /// A stored session file is unreadable or damaged.
    #[error("stored session file {} is invalid: {reason}", path.display())]
    InvalidSessionFile {
        /// The session file.
        path: PathBuf,
        /// The problem found.
        reason: String,
    },

    /// A stored device credentials file is unreadable or damaged.
    #[error(
        "stored device credentials {} are invalid: {reason}: delete the file and run \
         `sealcast login` again",
        path.display()
    )]
    InvalidDeviceFile {
        /// The credentials file.
        path: PathBuf,
        /// The problem found.
        reason: String,
    },

    /// The device has no sign-in for the relay.
    #[error("not signed in to {relay}: run `sealcast login --relay {relay} --email ADDRESS`")]
    NotSignedIn {
        /// The relay's base URL.
        relay: String,
    },

    /// The relay rejected the refresh token, so the sign-in was revoked,
    /// ended or has expired.
    #[error(
        "the sign-in to {relay} was revoked or has expired: run \
         `sealcast login --relay {relay} --email ADDRESS` again"
    )]
    SignInRevoked {
        /// The relay's base URL.
        relay: String,
    },

    /// The magic link expired, or was used, before this device's sign-in
    /// was approved (HTTP 410).
    #[error(
        "the sign-in link expired or was already used: run `sealcast login` again and \
         open the new link before it expires"
    )]
    SignInExpired,

    /// The relay closed a connection because this device or user was
    /// revoked, or the sign-in ended (close code 4009).
    #[error(
        "the relay revoked this device's sign-in (close code 4009): run \
         `sealcast login --relay {relay} --email ADDRESS` to sign in again"
    )]
    Revoked {
        /// The relay's base URL.
        relay: String,
    },

    /// Another process held the refresh lock of a sign-in for too long.
    #[error(
        "another sealcast process is refreshing the sign-in (lock file {}): try again, or \
         delete the file if no other sealcast process is running",
        path.display()
    )]
    RefreshLocked {
        /// The lock file.
        path: PathBuf,
    },

    /// The relay URL is not usable.
    #[error("invalid relay URL {url}: {reason}")]
    InvalidRelayUrl {
        /// The URL as given.
        url: String,
        /// The problem and how to write the URL.
        reason: String,
    },

    /// The CA certificate file is not usable.
    #[error("cannot use CA certificate {}: {reason}", path.display())]
    CaCertificate {
        /// The PEM file.
        path: PathBuf,
        /// The problem found.
        reason: String,
    },

    /// Building the TLS configuration failed.
    #[error("failed to set up TLS: {0}")]
    Tls(String),

    /// The relay's certificate failed verification.
    #[error(
        "the relay's TLS certificate is not trusted ({reason}): pass --ca-cert with the \
         relay's certificate, for example dev-cert.pem from the relay data directory"
    )]
    UntrustedCertificate {
        /// The verification failure.
        reason: String,
    },

    /// An HTTP request could not be sent or its response not read.
    #[error("request to {url} failed: {reason}: check that the relay is running and reachable")]
    Request {
        /// Request URL (it never contains a credential).
        url: String,
        /// Transport failure.
        reason: String,
    },

    /// The relay rejected an HTTP request or WebSocket upgrade with an error status.
    #[error("relay rejected {what} with HTTP {status}: {message}: {hint}")]
    RelayStatus {
        /// The request, for example `the new session`.
        what: &'static str,
        /// HTTP status code.
        status: u16,
        /// The relay's explanation, or the status text.
        message: String,
        /// The next step for the user.
        hint: &'static str,
    },

    /// The relay's response did not follow the API.
    #[error(
        "relay broke the protocol: {0}: check that the URL names a sealcast relay of this version"
    )]
    ProtocolViolation(String),

    /// The relay closed a WebSocket with a code that must not be retried.
    #[error("relay closed the connection with code {code} ({reason}): {hint}")]
    Closed {
        /// WebSocket close code.
        code: u16,
        /// The relay's close reason, or a description of the code.
        reason: String,
        /// The next step for the user.
        hint: &'static str,
    },

    /// The session has ended on the relay.
    #[error("the session has ended: start a new session with `sealcast session start`")]
    SessionEnded,

    /// Another publisher connection for the session replaced this one.
    #[error(
        "another publisher connection took the session over (close code 4007), for example \
         the clinician's other device or `sealcast session end` run on another device: this \
         publish stops. Start it again only if the session should be published from here"
    )]
    Replaced,

    /// Another process publishes to or ends the session on this device: it
    /// holds the session's control lock.
    #[error(
        "{process} is already publishing to or ending session {session_id} on this device: \
         wait for it to exit, or end the session with `sealcast session end`"
    )]
    PublisherRunning {
        /// The session.
        session_id: String,
        /// The process holding the lock, for example `process 1234`.
        process: String,
    },

    /// A request needs a running `sealcast publish` of the session, and none runs.
    #[error(
        "no `sealcast publish` of session {session_id} runs on this device: the key is \
         rotated while publishing, so start `sealcast publish` first"
    )]
    NoRunningPublisher {
        /// The session.
        session_id: String,
    },

    /// The running publisher did not carry out a request in time.
    #[error(
        "{process} did not {action} session {session_id} within {waited_s} s: check its \
         output, or pass a longer --timeout"
    )]
    ControlTimedOut {
        /// The requested action, for example `end`.
        action: &'static str,
        /// The session.
        session_id: String,
        /// The publishing process, for example `process 1234`.
        process: String,
        /// Seconds waited.
        waited_s: u64,
    },

    /// The running publisher exited before it carried out a request.
    #[error(
        "{process} exited before it could {action} session {session_id}: its output names the \
         reason"
    )]
    PublisherExited {
        /// The requested action, for example `rotate the key of`.
        action: &'static str,
        /// The session.
        session_id: String,
        /// The publishing process, for example `process 1234`.
        process: String,
    },

    /// The session ended, but not every stream was complete and signed by
    /// the publisher key of the invite link.
    #[error(
        "the transcript is not verified complete and authored by the clinician's device: \
         the warnings above name each stream and frame range"
    )]
    StreamsNotVerified,

    /// The relay's fingerprint differs from the fingerprint of the key in the invite link.
    #[error("key does not match this session")]
    KeyMismatch,

    /// The relay cannot deliver the history the follower asked for.
    #[error(
        "relay cannot deliver the requested history (close code 4006): follow the invite \
         link again to start from the beginning"
    )]
    CannotRecover,

    /// Connecting kept failing until the retry limit.
    #[error("gave up after {attempts} failed connection attempts, the last: {last}: check the network and that the relay is running")]
    RetriesExhausted {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last failure.
        last: String,
    },

    /// A pairing failed its cryptographic checks, for example a public key
    /// that does not match its commitment or a wrapped key that fails to open.
    #[error("pairing failed: {0}")]
    Pairing(#[from] sealcast_protocol::pairing::PairingError),

    /// A pairing was refused: the codes differ, a user declined, or the other
    /// device cancelled. No key was sent or used.
    #[error(
        "pairing refused: {reason}: no key was sent or used, start a new pairing to try again"
    )]
    PairingRefused {
        /// The reason the pairing was refused.
        reason: String,
    },

    /// The session key could not be rotated.
    #[error("failed to rotate the session key: {0}")]
    KeyEpoch(#[from] sealcast_protocol::rotation::EpochError),

    /// A background task stopped without reporting why.
    #[error("internal error: {0}")]
    Internal(String),

    /// The user pressed Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl ClientError {
    /// Returns the process exit code for this error, from [`exit_code`].
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Input(err) if err.is_missing_file() => exit_code::NO_INPUT,
            ClientError::Input(_)
            | ClientError::Invite(_)
            | ClientError::FollowInvite(_)
            | ClientError::StreamsNotVerified
            | ClientError::KeyMismatch
            | ClientError::Pairing(_)
            | ClientError::KeyEpoch(_)
            | ClientError::PairingRefused { .. } => exit_code::DATA,
            ClientError::InvalidArgument { .. } => exit_code::USAGE,
            ClientError::Io { .. }
            | ClientError::InvalidSessionFile { .. }
            | ClientError::InvalidDeviceFile { .. } => exit_code::IO,
            ClientError::NoStateDir
            | ClientError::NoCurrentSession
            | ClientError::SessionNotStored { .. }
            | ClientError::InvalidRelayUrl { .. }
            | ClientError::CaCertificate { .. }
            | ClientError::Tls(_)
            | ClientError::UntrustedCertificate { .. } => exit_code::CONFIG,
            ClientError::RelayStatus { status: 401, .. }
            | ClientError::RelayStatus { status: 403, .. }
            | ClientError::NotSignedIn { .. }
            | ClientError::SignInRevoked { .. }
            | ClientError::SignInExpired
            | ClientError::Revoked { .. } => exit_code::NO_PERMISSION,
            ClientError::Request { .. }
            | ClientError::RelayStatus { .. }
            | ClientError::RetriesExhausted { .. }
            | ClientError::RefreshLocked { .. }
            | ClientError::SessionEnded
            | ClientError::Replaced
            | ClientError::PublisherRunning { .. }
            | ClientError::NoRunningPublisher { .. }
            | ClientError::ControlTimedOut { .. }
            | ClientError::PublisherExited { .. }
            | ClientError::CannotRecover => exit_code::UNAVAILABLE,
            ClientError::ProtocolViolation(_) | ClientError::Closed { .. } => exit_code::PROTOCOL,
            ClientError::Seal(_) | ClientError::Internal(_) => exit_code::SOFTWARE,
            ClientError::Interrupted => exit_code::INTERRUPTED,
        }
    }

    /// Wraps an I/O error with the action and the path it concerned.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ClientError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mismatch_message_is_exact() {
        assert_eq!(
            ClientError::KeyMismatch.to_string(),
            "key does not match this session"
        );
    }

    #[test]
    fn credential_rejection_maps_to_no_permission() {
        let err = ClientError::RelayStatus {
            what: "the new session",
            status: 401,
            message: "unauthorized".into(),
            hint: "run sealcast login again",
        };
        assert_eq!(err.exit_code(), exit_code::NO_PERMISSION);
    }

    #[test]
    fn sign_in_errors_name_the_login_command() {
        let relay = "https://relay.example:8443/".to_string();
        for err in [
            ClientError::NotSignedIn {
                relay: relay.clone(),
            },
            ClientError::SignInRevoked {
                relay: relay.clone(),
            },
            ClientError::Revoked {
                relay: relay.clone(),
            },
        ] {
            let message = err.to_string();
            assert!(
                message.contains("sealcast login --relay https://relay.example:8443/ --email"),
                "{message}"
            );
            assert_eq!(err.exit_code(), exit_code::NO_PERMISSION, "{message}");
        }
    }

    #[test]
    fn server_failure_maps_to_unavailable() {
        let err = ClientError::RelayStatus {
            what: "the new session",
            status: 503,
            message: "busy".into(),
            hint: "try again later",
        };
        assert_eq!(err.exit_code(), exit_code::UNAVAILABLE);
    }
}
