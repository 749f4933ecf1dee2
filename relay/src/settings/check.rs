//! Checks of merged settings that serde cannot make: ranges, pairs of keys
//! that go together, files that must be readable and the mail addresses.

use std::fs::File;
use std::path::Path;

use figment::Figment;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use super::load::InvalidSetting;
use super::{FanoutKind, Settings, StoreKind};
use crate::at_rest::{KeyEncryptionKey, KeySource};
use crate::config::Config;
use crate::error::RelayError;
use crate::server::resolve_public_url;

/// Checks `settings` and builds the relay configuration, or lists every
/// problem found, each naming its key.
pub(super) fn check(settings: &Settings, figment: &Figment) -> Result<Config, Vec<InvalidSetting>> {
    let mut problems = Vec::new();
    let mut report = |key: &str, problem: String| {
        problems.push(InvalidSetting::at(figment, key, problem));
    };

    let at_rest_key = match at_rest_key_source(settings) {
        Ok(source) => source,
        Err((key, problem)) => {
            report(key, problem);
            KeySource::Development
        }
    };
    check_tls(settings, &mut report);
    check_mail(settings, &mut report);
    check_addresses(settings, &mut report);
    check_store(settings, &mut report);
    check_fanout(settings, &mut report);

    let config = settings.to_config(at_rest_key);
    let ranges = [
        config.limits.validate(),
        config.accounts.validate(),
        config.audit.validate(),
    ];
    for result in ranges {
        if let Err(RelayError::InvalidLimit { name, reason }) = result {
            report(name, reason);
        }
    }

    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Reads the at-rest key from the file or the inline key, whichever is set.
fn at_rest_key_source(settings: &Settings) -> Result<KeySource, (&'static str, String)> {
    match (&settings.at_rest_key_file, &settings.at_rest_key) {
        (Some(_), Some(_)) => Err((
            "at_rest_key",
            "at_rest_key_file is set too; set only one of them".into(),
        )),
        (Some(path), None) => match KeyEncryptionKey::read_file(path) {
            Ok(_) => Ok(KeySource::File(path.clone())),
            Err(error) => Err((
                "at_rest_key_file",
                format!("{error}; make a key file with `sealcast-relay keys generate --out PATH`"),
            )),
        },
        (None, Some(text)) => KeyEncryptionKey::parse(text.expose(), "the at_rest_key setting")
            .map(KeySource::Environment)
            .map_err(|error| ("at_rest_key", error.to_string())),
        (None, None) => Ok(KeySource::Development),
    }
}

fn check_tls(settings: &Settings, report: &mut impl FnMut(&str, String)) {
    let tls = &settings.tls;
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            check_readable("tls.cert", cert, report);
            check_readable("tls.key", key, report);
        }
        (Some(_), None) => report(
            "tls.cert",
            "tls.key is not set; set both, or neither for a development certificate".into(),
        ),
        (None, Some(_)) => report(
            "tls.key",
            "tls.cert is not set; set both, or neither for a development certificate".into(),
        ),
        (None, None) => {}
    }
}

fn check_mail(settings: &Settings, report: &mut impl FnMut(&str, String)) {
    let mail = &settings.mail;
    if let Err(error) = mail.from.parse::<Mailbox>() {
        report(
            "mail.from",
            format!("not a mailbox ({error}); write `address` or `Name <address>`"),
        );
    }
    if let Some(url) = &mail.smtp_url {
        // lettre's errors name the problem, never the URL or its password.
        if let Err(error) = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose()) {
            report(
                "mail.smtp_url",
                format!("not an SMTP URL ({error}); write smtp://HOST:PORT, smtp://HOST:PORT?tls=required or smtps://USER:PASSWORD@HOST:PORT"),
            );
        }
    }
    if let Some(path) = &mail.smtp_ca_file {
        check_readable("mail.smtp_ca_file", path, report);
    }
}

fn check_addresses(settings: &Settings, report: &mut impl FnMut(&str, String)) {
    let listen = settings.listen.0;
    if let Some(ops) = settings.ops_listen() {
        if ops == listen && ops.port() != 0 {
            report(
                "ops_listen",
                "is the same address as listen; give the ops listener its own port".into(),
            );
        }
    }
    if let Err(error) = resolve_public_url(settings.public_url.as_deref(), listen.port()) {
        report("public_url", error.to_string());
    }
}

fn check_store(settings: &Settings, report: &mut impl FnMut(&str, String)) {
    match (settings.store, &settings.database_url) {
        (StoreKind::Postgres, None) => report(
            "store",
            "is postgres but database_url is not set; set database_url to \
             postgres://USER@HOST:PORT/DATABASE"
                .into(),
        ),
        (StoreKind::Sqlite, Some(_)) => report(
            "database_url",
            "is set but store is sqlite; set store = \"postgres\" or remove database_url".into(),
        ),
        (StoreKind::Postgres, Some(url)) => {
            if let Err(problem) = check_database_url(url.expose()) {
                report("database_url", problem);
            }
        }
        (StoreKind::Sqlite, None) => {}
    }
}

/// Checks that PostgreSQL accepts the form of a connection URL. The message
/// never repeats the URL, which may contain a password.
fn check_database_url(text: &str) -> Result<(), String> {
    let fix = "write postgres://USER@HOST:PORT/DATABASE or a key-value string such as \
               \"host=HOST user=USER dbname=DATABASE\"";
    let config: postgres::Config = text
        .parse()
        .map_err(|_| format!("is not a PostgreSQL connection string; {fix}"))?;
    if config.get_hosts().is_empty() {
        return Err(format!("names no host; {fix}"));
    }
    Ok(())
}

fn check_fanout(settings: &Settings, report: &mut impl FnMut(&str, String)) {
    match (settings.fanout, &settings.nats_url) {
        (FanoutKind::Nats, None) => report(
            "fanout",
            "is nats but nats_url is not set; set nats_url to nats://HOST:PORT".into(),
        ),
        (FanoutKind::Local, Some(_)) => report(
            "nats_url",
            "is set but fanout is local; set fanout = \"nats\" or remove nats_url".into(),
        ),
        (FanoutKind::Nats, Some(url)) => {
            if let Err(problem) = check_nats_url(url.expose()) {
                report("nats_url", problem);
            }
        }
        (FanoutKind::Local, None) => {}
    }
}

/// Checks the form of a NATS URL. The message never repeats the URL,
/// which may contain a password.
fn check_nats_url(text: &str) -> Result<(), String> {
    let fix = "write nats://HOST:PORT, tls://HOST:PORT or nats://USER:PASSWORD@HOST:PORT";
    let url = url::Url::parse(text).map_err(|error| format!("not a URL ({error}); {fix}"))?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!(
            "has scheme {:?}, not nats or tls; {fix}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host; {fix}"));
    }
    Ok(())
}

fn check_readable(key: &str, path: &Path, report: &mut impl FnMut(&str, String)) {
    if let Err(error) = File::open(path) {
        report(
            key,
            format!("cannot be read ({error}); fix the path or the file's permissions"),
        );
    }
}
