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
//! | [`control`] | requests to a running `sealcast publish`: end, rotate |
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
//!
//! # Sealing and opening a segment
//!
//! A publisher seals each segment on a stream of its own, and a follower
//! opens it with the same session key. Both come from [`sealcast_protocol`];
//! [`Publisher`] and [`Follower`] do this for you over the network.
//!
//! ```
//! use sealcast_protocol::{SessionId, SessionKey, StreamOpener, StreamSealer, TranscriptSegment};
//!
//! let key = SessionKey::generate();
//! let session_id = SessionId::random();
//! let segment = TranscriptSegment {
//!     segment_id: 1,
//!     revision: 0,
//!     speaker: "doctor".into(),
//!     start_ms: 0,
//!     end_ms: 2_400,
//!     text: "How have you been sleeping?".into(),
//!     is_final: true,
//! };
//!
//! let mut sealer = StreamSealer::new(&key, session_id);
//! let frame = sealer.seal_segment(&segment)?;
//!
//! let mut opener = StreamOpener::new(key, session_id);
//! let opened = opener.open(&frame)?;
//! assert_eq!(opened.segment()?, segment);
//!
//! // A frame changed by anyone without the key is rejected.
//! let mut tampered = frame.clone();
//! let last = tampered.len() - 1;
//! tampered[last] ^= 1;
//! let mut fresh = StreamOpener::new(SessionKey::generate(), session_id);
//! assert!(fresh.open(&tampered).is_err());
//! # Ok::<(), sealcast_protocol::ProtocolError>(())
//! ```
//!
//! # Parsing an invite link
//!
//! The key travels in the link's fragment, which browsers never send to the
//! relay. [`sealcast_protocol::InviteLink::parse`] accepts padded and
//! unpadded base64url and rejects anything else with an error that says what
//! is wrong.
//!
//! ```
//! use sealcast_protocol::InviteLink;
//!
//! // Both the token and the key are 32 bytes in unpadded base64url.
//! let text = "https://relay.example:8443/join?token=ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM\
//!             #secret=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
//! let link = InviteLink::parse(text)?;
//! assert_eq!(link.relay.host_str(), Some("relay.example"));
//! assert_eq!(link.token, "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM");
//! assert_eq!(InviteLink::parse(&link.to_url())?.token, link.token);
//!
//! // A link cut off before its fragment has no key.
//! let cut = "https://relay.example:8443/join?token=ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM";
//! assert!(InviteLink::parse(cut).is_err());
//! # Ok::<(), sealcast_protocol::InviteError>(())
//! ```
//!
//! # Streaming speech recognition output into a session
//!
//! A recording app that signed in with `sealcast login` and started a
//! session with `sealcast session start` publishes each result of its speech
//! recognizer as a segment. Interim results are sent again with a higher
//! `revision` until the recognizer marks one final. This needs a running
//! relay, so it is only compiled here.
//!
//! ```no_run
//! use sealcast_client::auth::SignedInDevice;
//! use sealcast_client::{ClientError, KeyStore, Publisher, PublisherConfig};
//! use sealcast_protocol::TranscriptSegment;
//!
//! /// One result of the speech recognizer.
//! struct Recognized {
//!     utterance: u64,
//!     revision: u32,
//!     speaker: String,
//!     start_ms: u64,
//!     end_ms: u64,
//!     text: String,
//!     is_final: bool,
//! }
//!
//! async fn publish(
//!     mut results: tokio::sync::mpsc::Receiver<Recognized>,
//! ) -> Result<(), ClientError> {
//!     let dir = KeyStore::default_dir().ok_or(ClientError::NoStateDir)?;
//!     let store = KeyStore::open(dir)?;
//!     let session = store.resolve(None)?;
//!     let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
//!     let _refresher = device.spawn_refresher();
//!
//!     let config = PublisherConfig::new(
//!         session.relay.clone(),
//!         session.session_id,
//!         device.authorizer(),
//!         device.tls().clone(),
//!     );
//!     let mut publisher = Publisher::connect(config, &session.key).await?;
//!     while let Some(result) = results.recv().await {
//!         let segment = TranscriptSegment {
//!             segment_id: result.utterance,
//!             revision: result.revision,
//!             speaker: result.speaker,
//!             start_ms: result.start_ms,
//!             end_ms: result.end_ms,
//!             text: result.text,
//!             is_final: result.is_final,
//!         };
//!         publisher.publish(&segment).await?;
//!     }
//!     // Waits for the relay to acknowledge every frame, then seals the end.
//!     publisher.end().await?;
//!     Ok(())
//! }
//! ```

pub mod api;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod control;
pub mod endpoint;
pub mod error;
pub mod follow;
pub mod input;
pub mod keepalive;
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
pub use follow::{FollowEvent, FollowReport, Follower, FollowerConfig, FollowerKeys};
pub use keepalive::Keepalive;
pub use keystore::{KeyStore, StoredSession};
pub use pace::{Pace, Pacer};
pub use publish::{KeyRotation, PublishReport, Publisher, PublisherConfig};
pub use secret::SecretString;
pub use tls::TlsSettings;
pub use transcript::{Change, Transcript};
