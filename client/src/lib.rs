//! The sealcast device side: the clinician device that starts a session,
//! keeps its key and publishes the sealed transcript, and the patient device
//! that follows it from an invite link.
//!
//! The relay only ever sees ciphertext: this crate makes the session key,
//! keeps it in a local key store, seals every segment with
//! [`sealcast_protocol`] before it leaves the device and opens frames only
//! after checking the key's fingerprint. It is not the relay and holds no
//! server state. The `sealcast` binary is a thin layer over it in [`cli`].
//!
//! Entry points: [`Publisher`] publishes segments of a session,
//! [`Follower`] follows one and reports [`FollowEvent`]s, [`Transcript`]
//! keeps the latest revision of each segment, [`KeyStore`] stores
//! sessions and device credentials on the device, and
//! [`auth::SignedInDevice`] authorizes requests with a device-bound access
//! token that it refreshes.
//!
//! | module | job |
//! | --- | --- |
//! | [`input`] | TextGrid and JSON Lines inputs, merging, interim revisions |
//! | [`pace`] | publishing as fast as possible or at the timestamps' pace |
//! | [`auth`] | device sign-in, DPoP proofs, device credentials, token refresh |
//! | [`keystore`] | session files with the key, mode 0600, shredding |
//! | [`tls`] | rustls settings from `--ca-cert` or the Mozilla roots |
//! | [`endpoint`] | relay base URL checks and API URLs |
//! | [`api`] | HTTP calls: create and end a session (accounts calls are in [`auth`]) |
//! | [`publish`] | the publisher: window, acknowledgements, reconnect and resend |
//! | [`follow`] | the follower: fingerprint check, opening, resume, events |
//! | [`pairing`] | HTTP calls of the pairing mailbox, for both devices |
//! | [`transcript`] | the follower's view of the transcript |
//! | [`backoff`] | jittered exponential reconnect delays |
//! | [`secret`] | credentials that zeroize and never print |
//! | [`cli`] | the `sealcast` commands |
//! | [`error`] | the crate's error type and exit codes |

pub mod api;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod endpoint;
pub mod error;
pub mod follow;
pub mod input;
pub mod keystore;
pub mod pace;
pub mod pairing;
pub mod publish;
pub mod secret;
pub mod tls;
pub mod transcript;
mod ws;

pub use api::{EndOutcome, RelayApi};
pub use backoff::Backoff;
pub use error::ClientError;
pub use follow::{FollowEvent, FollowReport, Follower, FollowerConfig};
pub use keystore::{KeyStore, StoredSession};
pub use pace::{Pace, Pacer};
pub use publish::{PublishReport, Publisher, PublisherConfig};
pub use secret::SecretString;
pub use tls::TlsSettings;
pub use transcript::{Change, Transcript};
