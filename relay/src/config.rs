//! Relay configuration: addresses, files and the limits that bound memory and time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::at_rest::KeySource;
use crate::audit::{CheckpointPolicy, RetentionPolicy};
use crate::error::RelayError;

/// Everything [`crate::start`] needs to run a relay.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port, see [`crate::RelayHandle::local_addr`].
    pub listen: SocketAddr,
    /// Address of the plain-HTTP listener for `/healthz`, `/readyz` and
    /// `/metrics`. When set, those routes are served there and not on
    /// [`Config::listen`]; when `None`, the public listener serves them.
    pub ops_listen: Option<SocketAddr>,
    /// Directory holding `relay.db` and, without configured certificates, the
    /// development certificate. Created with mode 0700 when missing.
    pub data_dir: PathBuf,
    /// Base URL of invite links, for example `https://relay.example.org`.
    /// `None` means `https://localhost:<bound port>`.
    pub public_url: Option<String>,
    /// PEM certificate chain, leaf first. Without it and [`Config::tls_key`],
    /// the relay makes or reuses a self-signed development certificate.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching [`Config::tls_cert`].
    pub tls_key: Option<PathBuf>,
    /// Limits on connections, messages, queues and timeouts.
    pub limits: Limits,
    /// Token lifetimes and mail settings of staff sign-in.
    pub accounts: AccountsConfig,
    /// Source of the at-rest layer's key-encryption key.
    pub at_rest_key: KeySource,
    /// Audit checkpoints and retention.
    pub audit: AuditConfig,
    /// The database of sessions, frames, accounts and audit entries.
    pub store: StoreConfig,
    /// The fan-out of frames to followers connected to other relay nodes.
    pub fanout: FanoutConfig,
}

/// The database the relay keeps everything in.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite file `relay.db` in [`Config::data_dir`].
    #[default]
    Sqlite,
    /// A PostgreSQL database, which several relay nodes may share.
    Postgres {
        /// Connection URL such as `postgres://sealcast@db.internal/sealcast`,
        /// or a key-value string. It may contain a password, so `Debug`
        /// leaves it out.
        url: String,
    },
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Sqlite => f.write_str("Sqlite"),
            StoreConfig::Postgres { .. } => f.write_str("Postgres { url: [redacted] }"),
        }
    }
}

/// Fan-out of frames accepted on one relay node to followers on the others.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum FanoutConfig {
    /// A single node: frames reach the followers of this process only.
    #[default]
    Local,
    /// Several nodes sharing one data directory: each node publishes the
    /// frames it commits to NATS and delivers those of the others.
    Nats {
        /// NATS server URL such as `nats://127.0.0.1:4222`. It may contain a
        /// user and password, so `Debug` leaves it out.
        url: String,
    },
}

impl std::fmt::Debug for FanoutConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FanoutConfig::Local => f.write_str("Local"),
            FanoutConfig::Nats { .. } => f.write_str("Nats { url: [redacted] }"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            ops_listen: None,
            data_dir: PathBuf::from("sealcast-data"),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            limits: Limits::default(),
            accounts: AccountsConfig::default(),
            at_rest_key: KeySource::Development,
            audit: AuditConfig::default(),
            store: StoreConfig::Sqlite,
            fanout: FanoutConfig::Local,
        }
    }
}

/// Audit trail and retention settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// How long content and audit entries are kept.
    pub retention: RetentionPolicy,
    /// Time between two retention runs of a running relay.
    pub retention_interval: Duration,
    /// When an append signs the head of its stream.
    pub checkpoints: CheckpointPolicy,
    /// Time after which the relay signs heads with entries after their
    /// last checkpoint.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: RetentionPolicy::default(),
            retention_interval: Duration::from_secs(60 * 60),
            checkpoints: CheckpointPolicy::default(),
            checkpoint_interval: Duration::from_secs(5 * 60),
        }
    }
}

impl AuditConfig {
    /// Checks that every period is usable.
    pub fn validate(&self) -> Result<(), RelayError> {
        let invalid = |name, reason: &str| {
            Err(RelayError::InvalidLimit {
                name,
                reason: reason.into(),
            })
        };
        for (name, value) in [
            ("retention.content", self.retention.content),
            ("retention.audit", self.retention.audit),
            ("retention.interval", self.retention_interval),
            ("audit.checkpoint_interval", self.checkpoint_interval),
        ] {
            if value.is_zero() {
                return invalid(name, "must be longer than zero");
            }
        }
        if self.checkpoints.every_entries == 0 {
            return invalid("audit.checkpoint_entries", "must be at least 1");
        }
        Ok(())
    }
}

/// Staff sign-in settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountsConfig {
    /// Lifetime of access tokens.
    pub access_token_lifetime: Duration,
    /// Lifetime of refresh tokens. Each refresh issues a new one.
    pub refresh_token_lifetime: Duration,
    /// Age after which the access token signing key is replaced.
    pub signing_key_max_age: Duration,
    /// Lifetime of a magic sign-in link.
    pub magic_link_lifetime: Duration,
    /// SMTP server URL, for example `smtps://user:password@mail.example:465`.
    /// `None` writes mail into `<data_dir>/outbox/` instead of sending it.
    pub smtp_url: Option<String>,
    /// `From` address of sign-in mail.
    pub mail_from: String,
    /// Extra PEM root certificate for the SMTP server's TLS.
    pub smtp_ca_file: Option<PathBuf>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            access_token_lifetime: Duration::from_secs(5 * 60),
            refresh_token_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
            signing_key_max_age: Duration::from_secs(24 * 60 * 60),
            magic_link_lifetime: Duration::from_secs(15 * 60),
            smtp_url: None,
            mail_from: "sealcast <no-reply@localhost>".into(),
            smtp_ca_file: None,
        }
    }
}

impl std::fmt::Debug for AccountsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SMTP URL may contain a password.
        f.debug_struct("AccountsConfig")
            .field("access_token_lifetime", &self.access_token_lifetime)
            .field("refresh_token_lifetime", &self.refresh_token_lifetime)
            .field("signing_key_max_age", &self.signing_key_max_age)
            .field("magic_link_lifetime", &self.magic_link_lifetime)
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "[redacted]"))
            .field("mail_from", &self.mail_from)
            .field("smtp_ca_file", &self.smtp_ca_file)
            .finish()
    }
}

impl AccountsConfig {
    /// Checks that every lifetime is usable.
    pub fn validate(&self) -> Result<(), RelayError> {
        let invalid = |name, reason: &str| {
            Err(RelayError::InvalidLimit {
                name,
                reason: reason.into(),
            })
        };
        for (name, value) in [
            ("tokens.access_token_lifetime", self.access_token_lifetime),
            ("tokens.refresh_token_lifetime", self.refresh_token_lifetime),
            ("tokens.signing_key_max_age", self.signing_key_max_age),
            ("tokens.magic_link_lifetime", self.magic_link_lifetime),
        ] {
            if value.is_zero() {
                return invalid(name, "must be longer than zero");
            }
        }
        if self.refresh_token_lifetime < self.access_token_lifetime {
            return invalid(
                "tokens.refresh_token_lifetime",
                "must be at least tokens.access_token_lifetime",
            );
        }
        Ok(())
    }
}

/// Limits that keep the relay's memory and time bounded whatever peers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum simultaneous TCP connections, WebSockets included. Connections
    /// over it get an HTTP 503 and are counted.
    pub max_connections: usize,
    /// Maximum WebSocket message and frame size in bytes.
    pub max_message_size: usize,
    /// WebSocket read buffer size in bytes.
    pub read_buffer_size: usize,
    /// WebSocket write buffer size in bytes.
    pub write_buffer_size: usize,
    /// Maximum bytes a WebSocket may buffer for writing before a send fails.
    pub max_write_buffer_size: usize,
    /// Bytes of frames queued for one follower before it is switched to
    /// catch-up from the store. Past half of it, interim frames are skipped.
    // NOTE: this bounds each follower, not the sum: with every follower
    // behind at once, queues, store read-ahead (half this) and session rings
    // (half this) grow with the number of connections.
    pub follower_queue_bytes: usize,
    /// Maximum time for a single WebSocket write before the peer is dropped.
    pub write_timeout: Duration,
    /// Interval between pings on WebSockets.
    pub ping_interval: Duration,
    /// Maximum time a WebSocket may stay silent, pongs included, before it is closed.
    pub idle_timeout: Duration,
    /// Maximum time for a TLS handshake, and for reading a request's headers.
    pub handshake_timeout: Duration,
    /// Maximum TLS handshakes past their ClientHello at once. Connections
    /// beyond it wait for a slot in arrival order, within
    /// `handshake_timeout`. Reading the ClientHello takes no slot.
    pub max_handshakes: usize,
    /// Requests answered `401` that one client address may make per minute,
    /// and at once, before every request from it gets `429` for a while.
    pub failed_credentials_per_minute: u32,
    /// How long a pairing slot accepts steps after the clinician device opened it.
    pub pairing_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let max_message_size = default_max_message_size();
        let write_buffer_size = 8 * 1024;
        Limits {
            max_connections: 10_000,
            max_message_size,
            read_buffer_size: 8 * 1024,
            write_buffer_size,
            max_write_buffer_size: 2 * max_message_size + write_buffer_size,
            follower_queue_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            failed_credentials_per_minute: 20,
            pairing_lifetime: crate::pairing::DEFAULT_PAIRING_LIFETIME,
        }
    }
}

impl Limits {
    /// Checks that every limit is usable and consistent with the others.
    pub fn validate(&self) -> Result<(), RelayError> {
        let invalid = |name, reason: String| Err(RelayError::InvalidLimit { name, reason });
        let smallest_message = sealcast_protocol::HEADER_LEN + 8;
        if self.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1".into());
        }
        if self.max_handshakes == 0 {
            return invalid("limits.max_handshakes", "must be at least 1".into());
        }
        if self.pairing_lifetime.is_zero() {
            return invalid("limits.pairing_lifetime", "must be longer than zero".into());
        }
        if self.failed_credentials_per_minute == 0 {
            return invalid(
                "limits.failed_credentials_per_minute",
                "must be at least 1".into(),
            );
        }
        if self.max_message_size < smallest_message {
            return invalid(
                "limits.max_message_size",
                format!("{} bytes cannot hold a frame header", self.max_message_size),
            );
        }
        if self.max_write_buffer_size <= self.write_buffer_size + self.max_message_size {
            return invalid(
                "limits.max_write_buffer_size",
                "must exceed write_buffer_size plus max_message_size".into(),
            );
        }
        if self.follower_queue_bytes < self.max_message_size {
            return invalid(
                "limits.follower_queue_bytes",
                "must hold at least one message of max_message_size".into(),
            );
        }
        for (name, value) in [
            ("limits.write_timeout", self.write_timeout),
            ("limits.ping_interval", self.ping_interval),
            ("limits.handshake_timeout", self.handshake_timeout),
        ] {
            if value.is_zero() {
                return invalid(name, "must be longer than zero".into());
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return invalid(
                "limits.idle_timeout",
                "must be longer than ping_interval, or peers time out between pings".into(),
            );
        }
        Ok(())
    }
}

/// The largest frame of protocol version 1 rounded up to the next KiB, which
/// also leaves room for the 8-byte offset prefix of a delivery.
pub fn default_max_message_size() -> usize {
    sealcast_protocol::MAX_FRAME_LEN.div_ceil(1024) * 1024
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `24h`, `30d`, `2w`, `6y`
/// or a bare number of seconds. A year counts as 366 days, so that a period
/// in years is never shorter than that many calendar years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number such as 30s or 500ms")
    })?;

    match unit {
        // A bare number could mean seconds to one reader and days to
        // another, and a retention period read the wrong way deletes data.
        "" => Err(format!(
            "invalid duration {text:?}: the unit is missing; add one of ms, s, m, h, d, w or y"
        )),
        "s" => Ok(Duration::from_secs(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(value.saturating_mul(60 * 60))),
        "d" => Ok(Duration::from_secs(value.saturating_mul(24 * 60 * 60))),
        "w" => Ok(Duration::from_secs(value.saturating_mul(7 * 24 * 60 * 60))),
        "y" => Ok(Duration::from_secs(
            value.saturating_mul(366 * 24 * 60 * 60),
        )),
        other => Err(format!(
            "invalid duration unit {other:?} in {text:?}: use ms, s, m, h, d, w or y"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_units_parse() {
        assert!(parse_duration("30").is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(
            parse_duration("6y").unwrap(),
            Duration::from_secs(6 * 366 * 86_400)
        );
    }

    #[test]
    fn duration_rejects_garbage() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10x").is_err());
    }

    #[test]
    fn default_limits_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn inconsistent_limits_rejected() {
        let cases = [
            Limits {
                max_connections: 0,
                ..Limits::default()
            },
            Limits {
                max_handshakes: 0,
                ..Limits::default()
            },
            Limits {
                max_write_buffer_size: 8 * 1024,
                ..Limits::default()
            },
            Limits {
                follower_queue_bytes: 1024,
                ..Limits::default()
            },
            Limits {
                ping_interval: Duration::ZERO,
                ..Limits::default()
            },
            Limits {
                idle_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
        ];
        for limits in cases {
            assert!(limits.validate().is_err(), "{limits:?} was accepted");
        }
    }

    #[test]
    fn message_limit_fits_largest_delivery() {
        let limit = default_max_message_size();
        assert_eq!(limit % 1024, 0);
        assert!(limit >= sealcast_protocol::MAX_FRAME_LEN + 8);
    }
}
