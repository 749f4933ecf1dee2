//! The configuration file of `sealcast-relay serve` and how it merges with
//! environment variables and flags.
//!
//! [`Settings`] mirrors the TOML file: top-level keys for addresses, paths
//! and the at-rest key, and one table per group (`[tls]`, `[mail]`,
//! `[limits]`, `[tokens]`, `[retention]`, `[audit]`). [`load`] merges, from
//! lowest to highest precedence: the defaults, the file, environment
//! variables `SEALCAST_<KEY>` with `__` between a table and its key (such as
//! `SEALCAST_LIMITS__MAX_CONNECTIONS`), the flags' own environment variables
//! (such as `SEALCAST_MAX_CONNECTIONS`) and the flags. It then checks every
//! value and turns the result into a [`Config`].
//!
//! | module | job |
//! | --- | --- |
//! | `values` | addresses, periods and secrets as they are written in the file |
//! | `load` | merging the sources and naming the key, value and source of each error |
//! | `check` | range checks, file checks and the conversion into a [`Config`] |
//! | `example` | the documented list of keys and the commented example file |

mod check;
mod example;
mod load;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::audit::{CheckpointPolicy, RetentionPolicy};
use crate::config::{AccountsConfig, AuditConfig, Config, FanoutConfig, Limits, StoreConfig};
pub use example::{example_file, KeyDoc, KEYS};
pub use load::{load, Layer, Loaded, SettingsError};
pub use values::{format_duration, Address, Period, Secret, REDACTED};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The fan-out to other relay nodes, as the file names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FanoutKind {
    /// One relay node.
    #[default]
    Local,
    /// Several relay nodes sharing a store, connected through NATS.
    Nats,
}

/// The store's database, as the file names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded SQLite file `relay.db` in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL database that several relay nodes share.
    Postgres,
}

/// Every setting of `serve`, as written in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address of the public HTTPS listener.
    pub listen: Address,
    /// Address of the plain-HTTP listener for `/healthz`, `/readyz` and
    /// `/metrics`. When set, those routes leave the public listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_listen: Option<Address>,
    /// Directory of `relay.db`, the audit key and the development files.
    pub data_dir: PathBuf,
    /// Base URL of invite links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Format of log lines on standard error.
    pub log_format: LogFormat,
    /// File with the at-rest key-encryption key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_rest_key_file: Option<PathBuf>,
    /// The at-rest key-encryption key itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_rest_key: Option<Secret>,
    /// The store's database.
    pub store: StoreKind,
    /// PostgreSQL connection URL, used when `store` is `postgres`. It may
    /// contain a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    /// The fan-out of frames to followers on other relay nodes.
    pub fanout: FanoutKind,
    /// NATS server URL, used when `fanout` is `nats`. It may contain a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<Secret>,
    /// Certificate and key files.
    pub tls: TlsSettings,
    /// Sign-in mail.
    pub mail: MailSettings,
    /// Limits on connections, messages, queues and timeouts.
    pub limits: LimitSettings,
    /// Lifetimes of staff credentials.
    pub tokens: TokenSettings,
    /// How long content and audit entries are kept.
    pub retention: RetentionSettings,
    /// Signed checkpoints of the audit streams.
    pub audit: AuditSettings,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// The `[mail]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// SMTP server URL, which may contain a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<Secret>,
    /// `From` address of sign-in mail.
    pub from: String,
    /// Extra PEM root certificate for the SMTP server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_ca_file: Option<PathBuf>,
}

/// The `[limits]` table; see [`Limits`] for what each value bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct LimitSettings {
    pub max_connections: usize,
    pub max_message_size: usize,
    pub read_buffer_size: usize,
    pub write_buffer_size: usize,
    /// `None` means twice `max_message_size` plus `write_buffer_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_write_buffer_size: Option<usize>,
    pub follower_queue_bytes: usize,
    pub write_timeout: Period,
    pub ping_interval: Period,
    pub idle_timeout: Period,
    pub handshake_timeout: Period,
    pub max_handshakes: usize,
    pub failed_credentials_per_minute: u32,
    pub pairing_lifetime: Period,
}

/// The `[tokens]` table; see [`AccountsConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct TokenSettings {
    pub access_token_lifetime: Period,
    pub refresh_token_lifetime: Period,
    pub signing_key_max_age: Period,
    pub magic_link_lifetime: Period,
}

/// The `[retention]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Age after which ended or idle sessions are deleted.
    pub content: Period,
    /// Age after which audit entries are removed behind a signed anchor.
    pub audit: Period,
    /// Time between two retention runs.
    pub interval: Period,
}

/// The `[audit]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Entries after which the relay signs the head of a stream.
    pub checkpoint_entries: u64,
    /// Time after which the relay signs heads with unsigned entries.
    pub checkpoint_interval: Period,
}

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./sealcast-data";

impl Default for Settings {
    fn default() -> Self {
        let config = Config::default();
        Settings {
            listen: Address(config.listen),
            ops_listen: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            public_url: None,
            log_format: LogFormat::Text,
            at_rest_key_file: None,
            at_rest_key: None,
            store: StoreKind::Sqlite,
            database_url: None,
            fanout: FanoutKind::Local,
            nats_url: None,
            tls: TlsSettings::default(),
            mail: MailSettings::default(),
            limits: LimitSettings::default(),
            tokens: TokenSettings::default(),
            retention: RetentionSettings::default(),
            audit: AuditSettings::default(),
        }
    }
}

impl Default for MailSettings {
    fn default() -> Self {
        let accounts = AccountsConfig::default();
        MailSettings {
            smtp_url: None,
            from: accounts.mail_from,
            smtp_ca_file: None,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        let limits = Limits::default();
        LimitSettings {
            max_connections: limits.max_connections,
            max_message_size: limits.max_message_size,
            read_buffer_size: limits.read_buffer_size,
            write_buffer_size: limits.write_buffer_size,
            max_write_buffer_size: None,
            follower_queue_bytes: limits.follower_queue_bytes,
            write_timeout: Period(limits.write_timeout),
            ping_interval: Period(limits.ping_interval),
            idle_timeout: Period(limits.idle_timeout),
            handshake_timeout: Period(limits.handshake_timeout),
            max_handshakes: limits.max_handshakes,
            failed_credentials_per_minute: limits.failed_credentials_per_minute,
            pairing_lifetime: Period(limits.pairing_lifetime),
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        let accounts = AccountsConfig::default();
        TokenSettings {
            access_token_lifetime: Period(accounts.access_token_lifetime),
            refresh_token_lifetime: Period(accounts.refresh_token_lifetime),
            signing_key_max_age: Period(accounts.signing_key_max_age),
            magic_link_lifetime: Period(accounts.magic_link_lifetime),
        }
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let audit = AuditConfig::default();
        RetentionSettings {
            content: Period(audit.retention.content),
            audit: Period(audit.retention.audit),
            interval: Period(audit.retention_interval),
        }
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        let audit = AuditConfig::default();
        AuditSettings {
            checkpoint_entries: audit.checkpoints.every_entries,
            checkpoint_interval: Period(audit.checkpoint_interval),
        }
    }
}

impl Settings {
    /// Returns the address of the ops listener, if one is configured.
    pub fn ops_listen(&self) -> Option<SocketAddr> {
        self.ops_listen.map(|address| address.0)
    }

    /// Builds the relay's [`Config`] with the at-rest key source given,
    /// without checking ranges or files.
    fn to_config(&self, at_rest_key: crate::at_rest::KeySource) -> Config {
        let limits = &self.limits;
        let max_write_buffer_size = limits
            .max_write_buffer_size
            .unwrap_or(2 * limits.max_message_size + limits.write_buffer_size);
        Config {
            listen: self.listen.0,
            ops_listen: self.ops_listen(),
            data_dir: self.data_dir.clone(),
            public_url: self.public_url.clone(),
            tls_cert: self.tls.cert.clone(),
            tls_key: self.tls.key.clone(),
            limits: Limits {
                max_connections: limits.max_connections,
                max_message_size: limits.max_message_size,
                read_buffer_size: limits.read_buffer_size,
                write_buffer_size: limits.write_buffer_size,
                max_write_buffer_size,
                follower_queue_bytes: limits.follower_queue_bytes,
                write_timeout: limits.write_timeout.0,
                ping_interval: limits.ping_interval.0,
                idle_timeout: limits.idle_timeout.0,
                handshake_timeout: limits.handshake_timeout.0,
                max_handshakes: limits.max_handshakes,
                failed_credentials_per_minute: limits.failed_credentials_per_minute,
                pairing_lifetime: limits.pairing_lifetime.0,
            },
            accounts: AccountsConfig {
                access_token_lifetime: self.tokens.access_token_lifetime.0,
                refresh_token_lifetime: self.tokens.refresh_token_lifetime.0,
                signing_key_max_age: self.tokens.signing_key_max_age.0,
                magic_link_lifetime: self.tokens.magic_link_lifetime.0,
                smtp_url: self
                    .mail
                    .smtp_url
                    .as_ref()
                    .map(|url| url.expose().to_owned()),
                mail_from: self.mail.from.clone(),
                smtp_ca_file: self.mail.smtp_ca_file.clone(),
            },
            at_rest_key,
            audit: AuditConfig {
                retention: RetentionPolicy {
                    content: self.retention.content.0,
                    audit: self.retention.audit.0,
                },
                retention_interval: self.retention.interval.0,
                checkpoints: CheckpointPolicy {
                    every_entries: self.audit.checkpoint_entries,
                },
                checkpoint_interval: self.audit.checkpoint_interval.0,
            },
            store: match (self.store, &self.database_url) {
                (StoreKind::Postgres, Some(url)) => StoreConfig::Postgres {
                    url: url.expose().to_owned(),
                },
                // `check` reports postgres without a URL.
                _ => StoreConfig::Sqlite,
            },
            fanout: match (self.fanout, &self.nats_url) {
                (FanoutKind::Nats, Some(url)) => FanoutConfig::Nats {
                    url: url.expose().to_owned(),
                },
                // `check` reports nats without a URL.
                _ => FanoutConfig::Local,
            },
        }
    }

    /// Writes the settings as TOML, with every inline secret replaced by
    /// [`REDACTED`].
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}
