//! Messages between the coordinator and a worker process: one JSON object
//! per line, from the coordinator on the worker's standard input and from
//! the worker on its standard output.
//!
//! The exchange of one step:
//!
//! 1. coordinator: [`ToWorker::Assignment`] with the followers to open;
//! 2. worker: [`FromWorker::Connected`] once every attempt has finished;
//! 3. coordinator: [`ToWorker::Start`] with the step's time line;
//! 4. worker: [`FromWorker::Report`] after its followers have ended, then it exits.
//!
//! A worker that cannot go on sends [`FromWorker::Failed`] instead and exits.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use sealcast_client::SecretString;
use sealcast_protocol::{SessionId, SessionKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::client::follower::FollowerOutcome;
use crate::client::Timeline;
use crate::stats::summary::new_histogram;
use crate::stats::{Counts, Histograms};

/// A message to a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The relay to connect to and the followers to open.
    Assignment(Assignment),
    /// The step's time line; the followers start reading.
    Start {
        /// Start, window, send stop and drain deadline on `CLOCK_MONOTONIC`.
        timeline: Timeline,
    },
}

/// A message from a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// Every connection attempt has finished.
    Connected {
        /// Followers whose socket opened and whose welcome matched the key.
        opened: u64,
        /// Followers the worker tried to open.
        attempted: u64,
    },
    /// The worker's statistics after its followers ended.
    Report(Box<WorkerReport>),
    /// The worker stopped before its report.
    Failed {
        /// The failure, for the coordinator's error message.
        reason: String,
    },
}

/// The followers one worker opens and runs, and the relay they connect to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// Worker number, from 1, for logs and errors.
    pub worker: usize,
    /// The relay under test.
    pub relay: RelayAddress,
    /// Loopback source addresses to spread connections over, as `--source-addrs`.
    pub source_addrs: u8,
    /// Connection attempts at the same time.
    pub connect_concurrency: usize,
    /// Followers per clinic in the step, for the statistics shard keys.
    pub followers_per_clinic: usize,
    /// The clinics this worker follows.
    pub clinics: Vec<FollowedClinic>,
}

/// Address and TLS settings of the relay under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAddress {
    /// Base URL, which names the host for TLS.
    pub base_url: String,
    /// Socket address to connect to.
    pub addr: SocketAddr,
    /// The other nodes of a cluster, which the followers take in turn.
    /// Empty when they connect to `addr`.
    pub follower_nodes: Vec<NodeAddress>,
    /// TLS settings, `None` for plain TCP.
    pub tls: Option<RelayTls>,
}

/// One relay node that followers connect to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    /// Base URL, which names the host for TLS.
    pub base_url: String,
    /// Socket address to connect to.
    pub addr: SocketAddr,
}

/// Trust roots for the relay's certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTls {
    /// PEM file with the CA certificate; `None` trusts the bundled Mozilla roots.
    pub ca_cert: Option<PathBuf>,
}

/// One clinic as its follower devices know it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowedClinic {
    /// Clinic index, from 0.
    pub index: usize,
    /// The relay's session id.
    pub session_id: SessionId,
    /// The session key, unpadded base64url.
    pub session_key: WireSecret,
    /// The invite token the follow sockets present.
    pub invite_token: WireSecret,
    /// Numbers of the followers to open, each below the step's followers per clinic.
    pub followers: Vec<usize>,
}

impl FollowedClinic {
    /// Builds the entry of clinic `index` from its session id, key and invite token.
    pub fn new(
        index: usize,
        session_id: SessionId,
        key: &SessionKey,
        invite_token: &SecretString,
        followers: Vec<usize>,
    ) -> FollowedClinic {
        FollowedClinic {
            index,
            session_id,
            session_key: WireSecret(key.to_base64url()),
            invite_token: WireSecret(invite_token.expose().to_string()),
            followers,
        }
    }

    /// Decodes the session key.
    pub fn key(&self) -> Result<SessionKey, String> {
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(self.session_key.0.as_bytes())
                .map_err(|err| format!("clinic {}: invalid session key: {err}", self.index))?,
        );
        if bytes.len() != 32 {
            return Err(format!(
                "clinic {}: the session key has {} bytes, expected 32",
                self.index,
                bytes.len()
            ));
        }
        let mut array = [0u8; 32];
        array.copy_from_slice(&bytes);
        let key = SessionKey::from_bytes(array);
        array.zeroize();
        Ok(key)
    }

    /// Returns the invite token.
    pub fn invite_token(&self) -> SecretString {
        SecretString::new(self.invite_token.0.clone())
    }
}

/// A secret on the pipe to a worker: zeroized on drop, redacted by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct WireSecret(String);

impl fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WireSecret([redacted])")
    }
}

/// The statistics of a worker's followers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerReport {
    /// Frame counters.
    pub counts: Counts,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of frames intended inside the window.
    pub latency: EncodedHistogram,
    /// Connection set-up times, one value per follower that opened.
    pub connect: EncodedHistogram,
    /// Outcome of each follower that opened, for loss accounting.
    pub followers: Vec<ReportedFollower>,
    /// Latency of the frames that arrived in each second of the step.
    pub timeline: Vec<TimelineSecond>,
}

/// The latency of the frames that arrived in one second of a step, whatever
/// their intended time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineSecond {
    /// Seconds since the step's start at the end of the interval, from 1.
    pub second: u64,
    /// The latency values.
    pub latency: EncodedHistogram,
}

/// The outcome of one follower in a worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedFollower {
    /// Clinic index.
    pub clinic: usize,
    /// Frames opened and how the stream ended.
    pub outcome: FollowerOutcome,
}

impl WorkerReport {
    /// Decodes the timeline's histograms, by second.
    pub fn timeline(&self) -> Result<Vec<(u64, Histogram<u64>)>, String> {
        self.timeline
            .iter()
            .map(|second| Ok((second.second, second.latency.decode()?)))
            .collect()
    }

    /// Decodes the histograms; the send lag is empty because workers have no publishers.
    pub fn histograms(&self) -> Result<Histograms, String> {
        Ok(Histograms {
            latency: self.latency.decode()?,
            send_lag: new_histogram(),
            connect: self.connect.decode()?,
        })
    }
}

/// An HDR histogram in the V2 serialization format of HdrHistogram, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedHistogram(String);

impl EncodedHistogram {
    /// Serializes a histogram.
    pub fn encode(histogram: &Histogram<u64>) -> Result<EncodedHistogram, String> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(histogram, &mut bytes)
            .map_err(|err| format!("failed to serialize a histogram: {err:?}"))?;
        Ok(EncodedHistogram(STANDARD.encode(bytes)))
    }

    /// Parses a histogram into one with the bounds of [`new_histogram`],
    /// so that it adds to the harness's own histograms without error.
    pub fn decode(&self) -> Result<Histogram<u64>, String> {
        let bytes = STANDARD
            .decode(self.0.as_bytes())
            .map_err(|err| format!("invalid base64 in a histogram: {err}"))?;
        let parsed: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|err| format!("invalid histogram: {err:?}"))?;
        let mut histogram = new_histogram();
        histogram
            .add(&parsed)
            .map_err(|err| format!("histogram values out of range: {err:?}"))?;
        Ok(histogram)
    }
}

/// Serializes a message as one line. The buffer is zeroized on drop because
/// an assignment contains session keys and invite tokens. Fails on a CA
/// certificate path that is not UTF-8, which JSON cannot carry.
pub fn encode_line<T: Serialize>(
    message: &T,
    capacity: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    // NOTE: growing past `capacity` reallocates, and the old allocation is
    // freed without being zeroized.
    let mut line = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *line, message)
        .map_err(|err| format!("failed to encode a message: {err}"))?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::record;

    fn sample_assignment(key: &SessionKey) -> ToWorker {
        let session_id = SessionId::random();
        let token = SecretString::from("inv_secret_token_value");
        ToWorker::Assignment(Assignment {
            worker: 1,
            relay: RelayAddress {
                base_url: "https://localhost:8443/".into(),
                addr: "127.0.0.1:8443".parse().unwrap(),
                follower_nodes: vec![NodeAddress {
                    base_url: "https://localhost:8444/".into(),
                    addr: "127.0.0.1:8444".parse().unwrap(),
                }],
                tls: Some(RelayTls {
                    ca_cert: Some(PathBuf::from("/tmp/dev-cert.pem")),
                }),
            },
            source_addrs: 4,
            connect_concurrency: 64,
            followers_per_clinic: 2,
            clinics: vec![FollowedClinic::new(7, session_id, key, &token, vec![1])],
        })
    }

    #[test]
    fn assignment_round_trips_with_its_secrets() {
        let key = SessionKey::generate();
        let line = encode_line(&sample_assignment(&key), 512).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed: ToWorker = serde_json::from_slice(&line).unwrap();
        let ToWorker::Assignment(assignment) = parsed else {
            panic!("not an assignment");
        };
        let clinic = &assignment.clinics[0];
        assert_eq!(clinic.index, 7);
        assert_eq!(clinic.followers, vec![1]);
        assert_eq!(clinic.key().unwrap().expose_bytes(), key.expose_bytes());
        assert_eq!(clinic.invite_token().expose(), "inv_secret_token_value");
    }

    #[test]
    fn non_utf8_ca_path_cannot_be_sent() {
        use std::os::unix::ffi::OsStrExt;

        let key = SessionKey::generate();
        let mut message = sample_assignment(&key);
        if let ToWorker::Assignment(assignment) = &mut message {
            let path = std::ffi::OsStr::from_bytes(b"/tmp/cert-\xff.pem");
            assignment.relay.tls = Some(RelayTls {
                ca_cert: Some(PathBuf::from(path)),
            });
        }
        let err = encode_line(&message, 512).unwrap_err();
        assert!(err.starts_with("failed to encode a message"), "{err}");
    }

    #[test]
    fn debug_redacts_keys_and_tokens() {
        let key = SessionKey::generate();
        let printed = format!("{:?}", sample_assignment(&key));
        assert!(!printed.contains(&key.to_base64url()), "{printed}");
        assert!(!printed.contains("inv_secret_token_value"), "{printed}");
        assert!(printed.contains("WireSecret([redacted])"), "{printed}");
    }

    #[test]
    fn invalid_session_key_is_rejected() {
        let key = SessionKey::generate();
        let mut clinic = FollowedClinic::new(
            3,
            SessionId::random(),
            &key,
            &SecretString::from("t"),
            vec![0],
        );
        clinic.session_key = WireSecret("c2hvcnQ".into());
        let err = clinic.key().unwrap_err();
        assert!(err.contains("clinic 3"), "{err}");
        assert!(err.contains("expected 32"), "{err}");
        clinic.session_key = WireSecret("not base64!".into());
        assert!(clinic.key().unwrap_err().contains("invalid session key"));
    }

    #[test]
    fn histogram_survives_encoding() {
        let mut histogram = new_histogram();
        for value in [5, 1_200, 48_000, 1_200] {
            record(&mut histogram, value);
        }
        let decoded = EncodedHistogram::encode(&histogram)
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded.max(), histogram.max());
        assert_eq!(
            decoded.value_at_quantile(0.5),
            histogram.value_at_quantile(0.5)
        );
        let mut merged = new_histogram();
        merged.add(&decoded).unwrap();
        assert_eq!(merged.len(), 4);
    }

    #[test]
    fn histogram_beyond_harness_bounds_is_rejected() {
        let mut wide = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).unwrap();
        wide.record(1 << 39).unwrap();
        let err = EncodedHistogram::encode(&wide)
            .unwrap()
            .decode()
            .unwrap_err();
        assert!(err.starts_with("histogram values out of range"), "{err}");
    }

    #[test]
    fn corrupt_histogram_is_an_error() {
        let encoded = EncodedHistogram(STANDARD.encode(b"not a histogram"));
        assert!(encoded.decode().is_err());
        assert!(EncodedHistogram("%%%".into()).decode().is_err());
    }
}
