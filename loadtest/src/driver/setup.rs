//! Setting up clinics the way devices do: a session created with the clinic
//! API key and a fresh session key, then the publisher and follower sockets
//! opened with the publisher and invite tokens the relay returned.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::stream::{self, StreamExt};
use sealcast_client::auth::Authorizer;
use sealcast_client::{endpoint, RelayApi, SecretString, TlsSettings};
use sealcast_protocol::api::CreateSessionRequest;
use sealcast_protocol::{SessionId, SessionKey};
use tokio::sync::Semaphore;

use crate::client::socket::{Dialer, NodeDialers, Socket};
use crate::client::{connect_follower, connect_publisher};
use crate::error::LoadtestError;
use crate::stats::Recorder;
use crate::target::Target;
use crate::worker::split::FollowerSplit;

/// A session created for one clinic, with what its devices hold.
pub struct Clinic {
    /// Clinic index, from 0.
    pub index: usize,
    /// The session key, made here as a clinician device makes it.
    pub key: SessionKey,
    /// The relay's session id.
    pub session_id: SessionId,
    /// Credentials of the clinician device that publishes and ends the session.
    pub staff: Arc<dyn Authorizer>,
    /// Credential of the follow sockets.
    pub invite_token: SecretString,
}

/// A clinic with its sockets open.
pub struct ConnectedClinic {
    /// The clinic.
    pub clinic: Clinic,
    /// The publisher's socket, `None` when it failed to open.
    pub publisher: Option<Socket>,
    /// The followers' sockets that opened, each with its follower number in the clinic.
    pub followers: Vec<(usize, Socket)>,
}

/// Returns a client for the relay's HTTP API.
pub fn relay_api(target: &Target) -> Result<RelayApi, LoadtestError> {
    let tls = target.tls.clone().unwrap_or_else(TlsSettings::public_roots);
    RelayApi::new(&target.base_url, &tls).map_err(|err| LoadtestError::TargetStart {
        system: target.name().to_string(),
        reason: err.to_string(),
    })
}

/// Creates `count` sessions, `concurrency` requests at a time.
pub async fn create_clinics(
    target: &Target,
    api: &RelayApi,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Clinic>, LoadtestError> {
    let requests = (0..count).map(|index| create_clinic(target, api, index, count));
    let mut clinics: Vec<Clinic> = stream::iter(requests)
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    clinics.sort_by_key(|clinic| clinic.index);
    Ok(clinics)
}

async fn create_clinic(
    target: &Target,
    api: &RelayApi,
    index: usize,
    total: usize,
) -> Result<Clinic, LoadtestError> {
    // The relay gets only the fingerprint and the invite verifier, both
    // one-way derivations of the key, as from a real clinician device.
    let key = SessionKey::generate();
    let request = CreateSessionRequest {
        fingerprint: key.fingerprint().to_base64url(),
        invite_verifier: Some(URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes())),
        // Followers here present the invite token as a bearer credential, as
        // native devices do, so no browser redemption is needed.
        max_browsers: None,
    };
    let created = api
        .create_session(target.staff.as_ref(), &request)
        .await
        .map_err(|err| LoadtestError::SessionSetup {
            system: target.name().to_string(),
            index,
            total,
            reason: err.to_string(),
        })?;
    Ok(Clinic {
        index,
        key,
        session_id: created.session_id,
        staff: Arc::clone(&target.staff),
        invite_token: SecretString::new(created.invite_token.clone()),
    })
}

/// Opens the followers of every clinic that `followers` assigns to this
/// process, then the clinic's publisher, at most `concurrency` connection
/// attempts at a time. Publishers connect with `dialer`, and followers with
/// the node of their turn in `follower_nodes`.
pub async fn connect_clinics(
    target: &Target,
    dialer: Arc<Dialer>,
    follower_nodes: Arc<NodeDialers>,
    clinics: Vec<Clinic>,
    followers: &FollowerSplit,
    concurrency: usize,
    recorder: Arc<Recorder>,
) -> Vec<ConnectedClinic> {
    let mut own = vec![Vec::new(); clinics.len()];
    for (index, numbers) in followers.clinics_of(0) {
        if let Some(slot) = own.get_mut(index) {
            *slot = numbers;
        }
    }
    let per_clinic = followers.followers_per_clinic();
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(clinics.len());
    for clinic in clinics {
        let dialer = Arc::clone(&dialer);
        let follower_nodes = Arc::clone(&follower_nodes);
        let slots = Arc::clone(&slots);
        let recorder = Arc::clone(&recorder);
        let base = target.base_url.clone();
        let numbers = own
            .get_mut(clinic.index)
            .map(std::mem::take)
            .unwrap_or_default();
        let followers = FollowerNumbers {
            numbers,
            per_clinic,
        };
        tasks.push(tokio::spawn(async move {
            let dialers = ClinicDialers {
                publisher: &dialer,
                followers: &follower_nodes,
            };
            connect_clinic(&base, dialers, clinic, followers, &slots, &recorder).await
        }));
    }

    let mut connected = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(clinic) => connected.push(clinic),
            Err(err) => tracing::error!(error = %err, "a connect task failed"),
        }
    }
    connected
}

/// The followers of one clinic that this process opens.
struct FollowerNumbers {
    /// Follower numbers, each below `per_clinic`.
    numbers: Vec<usize>,
    /// Followers per clinic over all processes.
    per_clinic: usize,
}

/// The dialers of one clinic's devices.
struct ClinicDialers<'a> {
    publisher: &'a Dialer,
    followers: &'a NodeDialers,
}

async fn connect_clinic(
    base: &url::Url,
    dialers: ClinicDialers<'_>,
    clinic: Clinic,
    followers: FollowerNumbers,
    slots: &Semaphore,
    recorder: &Recorder,
) -> ConnectedClinic {
    let mut sockets = Vec::with_capacity(followers.numbers.len());
    for number in followers.numbers {
        let Ok(_slot) = slots.acquire().await else {
            break;
        };
        let shard = clinic.index * (followers.per_clinic + 1) + number;
        let turn = NodeDialers::turn(clinic.index, number, followers.per_clinic);
        let (node_url, dialer) = dialers.followers.node(turn);
        let follow_url = endpoint::follow_url(node_url, None, 0);
        let socket = connect_follower(
            dialer,
            &follow_url,
            &clinic.invite_token,
            &clinic.key,
            recorder,
            shard,
        )
        .await;
        sockets.extend(socket.map(|socket| (number, socket)));
    }

    let publish_url = endpoint::publish_url(base, &clinic.session_id);
    let publisher = match slots.acquire().await {
        Ok(_slot) => {
            connect_publisher(
                dialers.publisher,
                &publish_url,
                clinic.staff.as_ref(),
                recorder,
                clinic.index,
            )
            .await
        }
        Err(_) => None,
    };
    ConnectedClinic {
        clinic,
        publisher,
        followers: sockets,
    }
}
