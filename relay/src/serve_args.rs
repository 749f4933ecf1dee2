//! The flags of `serve`, and how they become the top layers of the settings.
//!
//! Each flag keeps the environment variable it always had, such as
//! `SEALCAST_MAX_CONNECTIONS`. A flag given on the command line overrides
//! the same flag's variable, which overrides `SEALCAST_<TABLE>__<KEY>`, the
//! file and the default, in that order. Flag defaults only document the
//! default: the settings' own defaults apply whatever clap fills in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use figment::value::Value;

use crate::audit::CheckpointPolicy;
use crate::config::{default_max_message_size, parse_duration, Limits};
use crate::settings::{
    self, Address, FanoutKind, Layer, Loaded, LogFormat, Period, SettingsError, StoreKind,
    DEFAULT_DATA_DIR,
};

/// The flags of `serve` and `demo`; `config check` takes them too.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML). `sealcast-relay config example` prints one
    /// with every key. Flags and environment variables override its keys.
    #[arg(long, env = "SEALCAST_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, env = "SEALCAST_LISTEN", default_value = "127.0.0.1:8443")]
    pub(crate) listen: SocketAddr,
    /// Address of a plain-HTTP listener for /healthz, /readyz and /metrics.
    /// When set, those routes are served only there.
    #[arg(long, env = "SEALCAST_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// Directory for relay.db and the development certificate.
    #[arg(long, env = "SEALCAST_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// File with the at-rest key-encryption key: 32 bytes as 64 hex digits or
    /// base64. SEALCAST_AT_REST_KEY may hold the key itself instead. Without
    /// either, a development key file is made in the data directory.
    #[arg(long, env = "SEALCAST_AT_REST_KEY_FILE")]
    at_rest_key_file: Option<PathBuf>,
    /// Database: sqlite for relay.db in --data-dir, or postgres for a
    /// database at --database-url that several relay nodes share.
    #[arg(long, env = "SEALCAST_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// PostgreSQL connection URL for --store postgres, such as
    /// postgres://sealcast@127.0.0.1:5432/sealcast.
    #[arg(long, env = "SEALCAST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Fan-out between relay nodes: local for a single node, or nats for
    /// nodes that share a database and a NATS server at --nats-url.
    #[arg(long, env = "SEALCAST_FANOUT", value_enum, default_value_t = FanoutKind::Local)]
    fanout: FanoutKind,
    /// NATS server URL for --fanout nats, such as nats://127.0.0.1:4222.
    #[arg(long, env = "SEALCAST_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Base URL of invite links [default: https://localhost:PORT].
    #[arg(long, env = "SEALCAST_PUBLIC_URL")]
    public_url: Option<String>,
    /// PEM certificate chain. Without it and --tls-key, a development certificate is used.
    #[arg(long, env = "SEALCAST_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SEALCAST_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log format. The level comes from RUST_LOG (default info).
    #[arg(long, env = "SEALCAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Maximum simultaneous connections, WebSockets included.
    #[arg(long, env = "SEALCAST_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Maximum WebSocket message and frame size, in bytes.
    #[arg(long, env = "SEALCAST_MAX_MESSAGE_SIZE", default_value_t = default_max_message_size())]
    max_message_size: usize,
    /// WebSocket read buffer size, in bytes.
    #[arg(long, env = "SEALCAST_READ_BUFFER_SIZE", default_value_t = Limits::default().read_buffer_size)]
    read_buffer_size: usize,
    /// WebSocket write buffer size, in bytes.
    #[arg(long, env = "SEALCAST_WRITE_BUFFER_SIZE", default_value_t = Limits::default().write_buffer_size)]
    write_buffer_size: usize,
    /// Maximum bytes buffered for writing on one WebSocket [default: twice the message size plus the write buffer].
    #[arg(long, env = "SEALCAST_MAX_WRITE_BUFFER_SIZE")]
    max_write_buffer_size: Option<usize>,
    /// Bytes queued for one follower before it catches up from the store instead.
    #[arg(long, env = "SEALCAST_FOLLOWER_QUEUE_BYTES", default_value_t = Limits::default().follower_queue_bytes)]
    follower_queue_bytes: usize,
    /// Maximum time for one WebSocket write, for example 30s or 500ms.
    #[arg(long, env = "SEALCAST_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Interval between WebSocket pings.
    #[arg(long, env = "SEALCAST_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Maximum time a WebSocket may stay silent, pongs included.
    #[arg(long, env = "SEALCAST_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Maximum time for a TLS handshake, and for reading a request's headers.
    #[arg(long, env = "SEALCAST_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Maximum TLS handshakes in progress past their ClientHello; more wait for a slot.
    #[arg(long, env = "SEALCAST_MAX_HANDSHAKES", default_value_t = Limits::default().max_handshakes)]
    max_handshakes: usize,
    /// Requests answered 401 that one client address may make per minute before
    /// all its requests get 429 for a while.
    #[arg(
        long,
        env = "SEALCAST_FAILED_CREDENTIALS_PER_MINUTE",
        default_value_t = 20
    )]
    failed_credentials_per_minute: u32,
    /// How long a pairing slot accepts steps after the clinician device
    /// opened it, for example 5m or 90s.
    #[arg(long, env = "SEALCAST_PAIRING_LIFETIME", default_value = "5m", value_parser = parse_duration)]
    pairing_lifetime: Duration,
    /// Lifetime of staff access tokens, for example 5m.
    #[arg(long, env = "SEALCAST_ACCESS_TOKEN_LIFETIME", default_value = "5m", value_parser = parse_duration)]
    access_token_lifetime: Duration,
    /// Lifetime of staff refresh tokens. Each refresh makes a new one.
    #[arg(long, env = "SEALCAST_REFRESH_TOKEN_LIFETIME", default_value = "30d", value_parser = parse_duration)]
    refresh_token_lifetime: Duration,
    /// Age after which the access token signing key is replaced.
    #[arg(long, env = "SEALCAST_SIGNING_KEY_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    signing_key_max_age: Duration,
    /// Lifetime of a magic sign-in link.
    #[arg(long, env = "SEALCAST_MAGIC_LINK_LIFETIME", default_value = "15m", value_parser = parse_duration)]
    magic_link_lifetime: Duration,
    /// SMTP server for sign-in mail: smtp://host:port, smtp://host:port?tls=required
    /// or smtps://user:password@host:port. Without it, mail is written to DATA_DIR/outbox/.
    #[arg(long, env = "SEALCAST_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// From address of sign-in mail.
    #[arg(
        long,
        env = "SEALCAST_MAIL_FROM",
        default_value = "sealcast <no-reply@localhost>"
    )]
    mail_from: String,
    /// Extra PEM root certificate for the SMTP server.
    #[arg(long, env = "SEALCAST_SMTP_CA_FILE")]
    smtp_ca_file: Option<PathBuf>,
    /// Age after which an ended session, or an open one without frames for
    /// that long, is deleted with its frames, invite and browser credentials.
    #[arg(long, env = "SEALCAST_CONTENT_RETENTION", default_value = "7d", value_parser = parse_duration)]
    content_retention: Duration,
    /// Age after which audit entries are removed behind a signed anchor. A
    /// year counts as 366 days.
    #[arg(long, env = "SEALCAST_AUDIT_RETENTION", default_value = "6y", value_parser = parse_duration)]
    audit_retention: Duration,
    /// Time between two retention runs.
    #[arg(long, env = "SEALCAST_RETENTION_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    retention_interval: Duration,
    /// Audit entries after the last checkpoint at which the relay signs the
    /// head of their stream.
    #[arg(long, env = "SEALCAST_AUDIT_CHECKPOINT_ENTRIES", default_value_t = CheckpointPolicy::default().every_entries)]
    audit_checkpoint_entries: u64,
    /// Time after which the relay signs stream heads with unsigned entries.
    #[arg(long, env = "SEALCAST_AUDIT_CHECKPOINT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    audit_checkpoint_interval: Duration,
}

impl ServeArgs {
    /// Loads the settings: defaults, the file named by `--config`, the
    /// environment, then these flags, whose sources `matches` records.
    pub(crate) fn load(&self, matches: &ArgMatches) -> Result<Loaded, SettingsError> {
        let layers = self.layers(matches).map_err(SettingsError::Flags)?;
        settings::load(self.config.as_deref(), layers)
    }

    /// Returns the layers of flags given on the command line and of flags
    /// set by their environment variables, lowest precedence first.
    fn layers(&self, matches: &ArgMatches) -> Result<Vec<Layer>, Box<figment::Error>> {
        let mut from_env = Layer::new("environment variable of its flag");
        let mut from_command_line = Layer::new("command line");
        for (id, key, value) in self.values()? {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => from_command_line.set(key, value)?,
                Some(ValueSource::EnvVariable) => from_env.set(key, value)?,
                _ => {}
            }
        }
        Ok(vec![from_env, from_command_line])
    }

    /// Lists each flag's argument id, its key in the file and its value.
    fn values(&self) -> Result<Vec<(&'static str, &'static str, Value)>, Box<figment::Error>> {
        let period = |duration: Duration| to_value(Period(duration));
        let mut values = vec![
            ("listen", "listen", to_value(Address(self.listen))?),
            ("data_dir", "data_dir", to_value(&self.data_dir)?),
            ("log_format", "log_format", to_value(self.log_format)?),
            ("store", "store", to_value(self.store)?),
            ("fanout", "fanout", to_value(self.fanout)?),
            (
                "max_connections",
                "limits.max_connections",
                to_value(self.max_connections)?,
            ),
            (
                "max_message_size",
                "limits.max_message_size",
                to_value(self.max_message_size)?,
            ),
            (
                "read_buffer_size",
                "limits.read_buffer_size",
                to_value(self.read_buffer_size)?,
            ),
            (
                "write_buffer_size",
                "limits.write_buffer_size",
                to_value(self.write_buffer_size)?,
            ),
            (
                "follower_queue_bytes",
                "limits.follower_queue_bytes",
                to_value(self.follower_queue_bytes)?,
            ),
            (
                "write_timeout",
                "limits.write_timeout",
                period(self.write_timeout)?,
            ),
            (
                "ping_interval",
                "limits.ping_interval",
                period(self.ping_interval)?,
            ),
            (
                "idle_timeout",
                "limits.idle_timeout",
                period(self.idle_timeout)?,
            ),
            (
                "handshake_timeout",
                "limits.handshake_timeout",
                period(self.handshake_timeout)?,
            ),
            (
                "max_handshakes",
                "limits.max_handshakes",
                to_value(self.max_handshakes)?,
            ),
            (
                "failed_credentials_per_minute",
                "limits.failed_credentials_per_minute",
                to_value(self.failed_credentials_per_minute)?,
            ),
            (
                "pairing_lifetime",
                "limits.pairing_lifetime",
                period(self.pairing_lifetime)?,
            ),
            (
                "access_token_lifetime",
                "tokens.access_token_lifetime",
                period(self.access_token_lifetime)?,
            ),
            (
                "refresh_token_lifetime",
                "tokens.refresh_token_lifetime",
                period(self.refresh_token_lifetime)?,
            ),
            (
                "signing_key_max_age",
                "tokens.signing_key_max_age",
                period(self.signing_key_max_age)?,
            ),
            (
                "magic_link_lifetime",
                "tokens.magic_link_lifetime",
                period(self.magic_link_lifetime)?,
            ),
            ("mail_from", "mail.from", to_value(&self.mail_from)?),
            (
                "content_retention",
                "retention.content",
                period(self.content_retention)?,
            ),
            (
                "audit_retention",
                "retention.audit",
                period(self.audit_retention)?,
            ),
            (
                "retention_interval",
                "retention.interval",
                period(self.retention_interval)?,
            ),
            (
                "audit_checkpoint_entries",
                "audit.checkpoint_entries",
                to_value(self.audit_checkpoint_entries)?,
            ),
            (
                "audit_checkpoint_interval",
                "audit.checkpoint_interval",
                period(self.audit_checkpoint_interval)?,
            ),
        ];
        // Flags without a default, present only when given.
        let optional = [
            (
                "ops_listen",
                "ops_listen",
                self.ops_listen.map(Address).map(to_value),
            ),
            (
                "at_rest_key_file",
                "at_rest_key_file",
                self.at_rest_key_file.as_ref().map(to_value),
            ),
            (
                "public_url",
                "public_url",
                self.public_url.as_ref().map(to_value),
            ),
            // The plain text, not a Secret, which would serialize redacted.
            ("nats_url", "nats_url", self.nats_url.as_ref().map(to_value)),
            (
                "database_url",
                "database_url",
                self.database_url.as_ref().map(to_value),
            ),
            ("tls_cert", "tls.cert", self.tls_cert.as_ref().map(to_value)),
            ("tls_key", "tls.key", self.tls_key.as_ref().map(to_value)),
            (
                "max_write_buffer_size",
                "limits.max_write_buffer_size",
                self.max_write_buffer_size.map(to_value),
            ),
            // The plain text, not a Secret, which would serialize redacted.
            (
                "smtp_url",
                "mail.smtp_url",
                self.smtp_url.as_ref().map(to_value),
            ),
            (
                "smtp_ca_file",
                "mail.smtp_ca_file",
                self.smtp_ca_file.as_ref().map(to_value),
            ),
        ];
        for (id, key, value) in optional {
            if let Some(value) = value {
                values.push((id, key, value?));
            }
        }
        Ok(values)
    }
}

/// Serializes a flag's value in the form the file uses.
fn to_value(value: impl serde::Serialize) -> Result<Value, Box<figment::Error>> {
    Value::serialize(value).map_err(Box::new)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use figment::providers::Serialized;
    use figment::Figment;

    use super::*;
    use crate::settings::Settings;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flag_defaults_match_settings_defaults() {
        let wrapper = Wrapper::try_parse_from(["sealcast-relay"]).unwrap();
        let defaults = Figment::from(Serialized::defaults(Settings::default()));

        let values = wrapper.serve.values().unwrap();
        assert!(values.len() >= 23, "{values:?}");
        for (id, key, value) in values {
            let default = defaults.find_value(key).unwrap();
            assert_eq!(value, default, "flag {id} and key {key} differ");
        }
    }
}
