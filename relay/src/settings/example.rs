//! The documented list of keys and the commented example file that
//! `sealcast-relay config example` prints.

use std::fmt::Write;

use super::Settings;

/// One key of the configuration file.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// Dotted path: `listen`, or `limits.max_connections` for a key in a table.
    pub path: &'static str,
    /// Help text: the value the key sets, its unit, and the behaviour when it is not set.
    pub help: &'static str,
    /// A TOML value to show, commented out, for a key without a default.
    pub example: Option<&'static str>,
    /// Whether the value is a secret that is never printed.
    pub secret: bool,
}

const fn key(path: &'static str, help: &'static str) -> KeyDoc {
    KeyDoc {
        path,
        help,
        example: None,
        secret: false,
    }
}

const fn optional(path: &'static str, help: &'static str, example: &'static str) -> KeyDoc {
    KeyDoc {
        path,
        help,
        example: Some(example),
        secret: false,
    }
}

const fn secret(path: &'static str, help: &'static str, example: &'static str) -> KeyDoc {
    KeyDoc {
        path,
        help,
        example: Some(example),
        secret: true,
    }
}

/// Every key, top-level keys first, then each table in file order.
pub const KEYS: &[KeyDoc] = &[
    key("listen", "Address of the public HTTPS listener, IP:PORT. Port 0 picks a free port."),
    optional(
        "ops_listen",
        "Address of a plain-HTTP listener for /healthz, /readyz and /metrics, for example \
         for Prometheus. When set, these routes are served only there, not on the public \
         listener. Keep it on loopback or a private network: it has no TLS and no \
         connection limit.",
        "\"127.0.0.1:9090\"",
    ),
    key(
        "data_dir",
        "Directory of relay.db, the audit signing key and the development certificate. \
         Created with mode 0700 when missing.",
    ),
    optional(
        "public_url",
        "Base URL of invite links. Default: https://localhost:PORT.",
        "\"https://relay.example:8443\"",
    ),
    key("log_format", "Format of log lines on standard error: text or json. The level comes from RUST_LOG (default info)."),
    optional(
        "at_rest_key_file",
        "File with the at-rest key-encryption key: 32 bytes as 64 hex digits or base64, \
         made by `sealcast-relay keys generate --out PATH`. Without it or at_rest_key, a \
         development key file is made in data_dir.",
        "\"/etc/sealcast-relay/at-rest.key\"",
    ),
    secret(
        "at_rest_key",
        "The at-rest key itself, instead of at_rest_key_file. Prefer the file, or the \
         environment variable SEALCAST_AT_REST_KEY, to keeping a key in this file.",
        "\"<64 hex digits>\"",
    ),
    key(
        "store",
        "Database of sessions, frames, accounts and audit entries: sqlite for the \
         embedded file relay.db in data_dir, or postgres for a PostgreSQL database at \
         database_url that several relay nodes share.",
    ),
    secret(
        "database_url",
        "PostgreSQL connection URL when store is postgres: \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE, or a key-value string. The URL may \
         contain a password, so consider SEALCAST_DATABASE_URL instead.",
        "\"postgres://sealcast@127.0.0.1:5432/sealcast\"",
    ),
    key(
        "fanout",
        "Fan-out of frames to followers connected to other relay nodes: local for one \
         node, or nats for several nodes that share one database: a PostgreSQL store, \
         or data_dir on one host. With nats, each node passes every committed frame \
         and session end through the NATS server at nats_url.",
    ),
    secret(
        "nats_url",
        "NATS server URL when fanout is nats: nats://HOST:PORT, tls://HOST:PORT or \
         nats://USER:PASSWORD@HOST:PORT. The URL may contain a password, so consider \
         SEALCAST_NATS_URL instead.",
        "\"nats://127.0.0.1:4222\"",
    ),
    optional(
        "tls.cert",
        "PEM certificate chain, leaf first. Without cert and key, the relay makes a \
         self-signed development certificate in data_dir. SIGHUP reloads both files.",
        "\"/etc/sealcast-relay/tls/cert.pem\"",
    ),
    optional(
        "tls.key",
        "PEM private key of the certificate.",
        "\"/etc/sealcast-relay/tls/key.pem\"",
    ),
    secret(
        "mail.smtp_url",
        "SMTP server for sign-in mail: smtp://HOST:PORT, smtp://HOST:PORT?tls=required or \
         smtps://USER:PASSWORD@HOST:PORT. Without it, mail is written to data_dir/outbox/. \
         The URL may contain a password, so consider SEALCAST_MAIL__SMTP_URL instead.",
        "\"smtps://relay:PASSWORD@mail.example:465\"",
    ),
    key("mail.from", "From address of sign-in mail."),
    optional(
        "mail.smtp_ca_file",
        "Extra PEM root certificate for the SMTP server.",
        "\"/etc/sealcast-relay/mail-ca.pem\"",
    ),
    key("limits.max_connections", "Maximum simultaneous connections, WebSockets included."),
    key("limits.max_message_size", "Maximum WebSocket message and frame size, in bytes."),
    key("limits.read_buffer_size", "WebSocket read buffer size, in bytes."),
    key("limits.write_buffer_size", "WebSocket write buffer size, in bytes."),
    optional(
        "limits.max_write_buffer_size",
        "Maximum bytes buffered for writing on one WebSocket. Default: twice \
         max_message_size plus write_buffer_size.",
        "141312",
    ),
    key(
        "limits.follower_queue_bytes",
        "Bytes queued for one follower before it catches up from the store instead.",
    ),
    key("limits.write_timeout", "Maximum time for one WebSocket write."),
    key("limits.ping_interval", "Interval between WebSocket pings."),
    key(
        "limits.idle_timeout",
        "Maximum time a WebSocket may stay silent, pongs included. Must exceed ping_interval.",
    ),
    key(
        "limits.handshake_timeout",
        "Maximum time for a TLS handshake, and for reading a request's headers.",
    ),
    key(
        "limits.max_handshakes",
        "Maximum TLS handshakes in progress past their ClientHello; more wait for a slot in \
         arrival order, within handshake_timeout.",
    ),
    key(
        "limits.failed_credentials_per_minute",
        "Requests answered 401 that one client address may make per minute before all its \
         requests get 429 for a while.",
    ),
    key(
        "limits.pairing_lifetime",
        "How long a pairing slot accepts steps after the clinician device opened it.",
    ),
    key("tokens.access_token_lifetime", "Lifetime of staff access tokens."),
    key(
        "tokens.refresh_token_lifetime",
        "Lifetime of staff refresh tokens. Each refresh makes a new one.",
    ),
    key(
        "tokens.signing_key_max_age",
        "Age after which the access token signing key is replaced.",
    ),
    key("tokens.magic_link_lifetime", "Lifetime of a magic sign-in link."),
    key(
        "retention.content",
        "Age after which an ended session, or an open one without frames for that long, is \
         deleted with its frames, invite and browser credentials.",
    ),
    key(
        "retention.audit",
        "Age after which audit entries are removed behind a signed anchor.",
    ),
    key("retention.interval", "Time between two retention runs."),
    key(
        "audit.checkpoint_entries",
        "Audit entries after the last checkpoint at which the relay signs the head of their \
         stream.",
    ),
    key(
        "audit.checkpoint_interval",
        "Time after which the relay signs stream heads with unsigned entries.",
    ),
];

/// Returns whether `key` names a secret, whose value is never printed.
pub(super) fn is_secret(key: &str) -> bool {
    KEYS.iter().any(|doc| doc.secret && doc.path == key)
}

/// Returns whether `name` is a key outside any table, ignoring ASCII case.
pub(super) fn is_top_level_key(name: &str) -> bool {
    KEYS.iter()
        .any(|doc| !doc.path.contains('.') && doc.path.eq_ignore_ascii_case(name))
}

const HEADER: &str = "\
# sealcast-relay configuration file.
#
# `sealcast-relay serve --config FILE` (or SEALCAST_CONFIG=FILE) reads it, and
# `sealcast-relay config check --config FILE` checks it and prints the
# settings in effect. Unknown keys are errors.
#
# An environment variable SEALCAST_<KEY> overrides a key, with __ between a
# table and its key: SEALCAST_LISTEN, SEALCAST_LIMITS__MAX_CONNECTIONS. The
# flags of `serve` and their own variables, such as --max-connections and
# SEALCAST_MAX_CONNECTIONS, override both.
#
# Periods are a number and a unit: ms, s, m, h, d, w or y (a year is 366
# days); a number without a unit is an error. Relative paths are relative
# to the relay's working directory. Keys that are commented out have no
# default; every other line shows the default.
";

/// Width that help comments are wrapped to.
const WRAP: usize = 78;

/// Writes the example file: every key with its help and its default, or a
/// commented-out example for keys without a default.
pub fn example_file() -> String {
    let defaults = toml::Value::try_from(Settings::default()).ok();
    let mut out = String::from(HEADER);
    let mut table = "";
    for doc in KEYS {
        let (doc_table, name) = doc.path.rsplit_once('.').unwrap_or(("", doc.path));
        if doc_table != table {
            table = doc_table;
            let _ = write!(out, "\n[{table}]\n");
        }
        out.push('\n');
        for line in wrap(doc.help) {
            let _ = writeln!(out, "# {line}");
        }
        let default = defaults
            .as_ref()
            .and_then(|values| lookup(values, doc.path));
        match (default, doc.example) {
            (Some(value), _) => {
                let _ = writeln!(out, "{name} = {value}");
            }
            (None, Some(example)) => {
                let _ = writeln!(out, "# {name} = {example}");
            }
            (None, None) => {}
        }
    }
    out
}

fn lookup<'a>(values: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.')
        .try_fold(values, |value, part| value.get(part))
}

/// Splits `text` into lines of at most [`WRAP`] characters at spaces.
fn wrap(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > WRAP - 2 {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;
    use crate::settings::{Address, Secret};

    /// Collects the dotted paths of every value in `table`.
    fn leaf_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => leaf_paths(inner, &path, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn every_key_is_documented_once() {
        let secret: Secret = toml::Value::from("x").try_into().unwrap();
        let mut settings = Settings {
            ops_listen: Some(Address(([127, 0, 0, 1], 9090).into())),
            public_url: Some("https://relay.example".into()),
            at_rest_key_file: Some(PathBuf::from("key")),
            at_rest_key: Some(secret.clone()),
            nats_url: Some(secret.clone()),
            database_url: Some(secret.clone()),
            ..Settings::default()
        };
        settings.tls.cert = Some(PathBuf::from("cert.pem"));
        settings.tls.key = Some(PathBuf::from("key.pem"));
        settings.mail.smtp_url = Some(secret);
        settings.mail.smtp_ca_file = Some(PathBuf::from("ca.pem"));
        settings.limits.max_write_buffer_size = Some(1);
        let table = toml::Table::try_from(&settings).unwrap();
        let mut fields = BTreeSet::new();
        leaf_paths(&table, "", &mut fields);

        let documented: BTreeSet<String> = KEYS.iter().map(|doc| doc.path.to_owned()).collect();
        assert_eq!(documented.len(), KEYS.len(), "a key is listed twice");
        assert_eq!(fields, documented);
    }

    #[test]
    fn every_key_has_a_default_or_an_example() {
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        for doc in KEYS {
            let has_default = lookup(&defaults, doc.path).is_some();
            assert!(
                has_default != doc.example.is_some(),
                "{} needs exactly one of a default and an example",
                doc.path
            );
        }
    }

    #[test]
    fn example_with_every_key_uncommented_parses() {
        let mut text = example_file();
        for doc in KEYS {
            if let Some(example) = doc.example {
                let name = doc.path.rsplit('.').next().unwrap();
                let commented = format!("# {name} = {example}\n");
                assert!(text.contains(&commented), "{commented:?} is missing");
                text = text.replace(&commented, &format!("{name} = {example}\n"));
            }
        }
        let settings: Settings = toml::from_str(&text).unwrap();
        assert_eq!(settings.ops_listen().map(|a| a.port()), Some(9090));
        assert_eq!(
            settings.tls.key,
            Some(PathBuf::from("/etc/sealcast-relay/tls/key.pem"))
        );

        // The example of max_write_buffer_size is its computed default.
        let limits = &settings.limits;
        assert_eq!(
            limits.max_write_buffer_size,
            Some(2 * limits.max_message_size + limits.write_buffer_size)
        );
    }

    #[test]
    fn help_lines_fit_the_wrap_width() {
        for line in example_file().lines() {
            assert!(line.len() <= WRAP, "{line:?} is longer than {WRAP}");
        }
    }
}
