//! `sealcast-relay audit` and `sealcast-relay retention`: verifying and
//! exporting the audit trail, and running retention once, on a data
//! directory. They work while a relay runs on it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::entry::Stream;
use super::event::ACTOR_ADMIN_CLI;
use super::export::{export, verify_export, ExportRequest};
use super::key::{parse_public_key, read_public_key, AuditKey};
use super::retention::{run_once, RetentionPolicy};
use super::verify::{verify_database, Report};
use super::AuditError;
use crate::config::parse_duration;
use crate::store::{now_millis, open_migrated_writer};
use crate::store_args::StoreArgs;

/// Arguments of `sealcast-relay audit`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum AuditCommand {
    /// Verify both audit chains, their checkpoints and retention anchors, in
    /// the data directory's database or in an export file. Names the first
    /// bad entry of each stream and exits with status 1 on any failure.
    Verify {
        /// Directory with relay.db, as given to serve [default: ./sealcast-data].
        #[arg(long, env = "SEALCAST_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// An export file to verify offline, without a database. Takes
        /// precedence over --data-dir.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Expected audit public key as hex, from a copy kept elsewhere
        /// [default: DATA_DIR/audit-signing.pub, or the export's header].
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Export audit entries as JSON Lines, with the checkpoints that cover
    /// them and the public key. Records the export in the admin stream.
    Export {
        /// Directory with relay.db, as given to serve.
        #[arg(long, env = "SEALCAST_DATA_DIR", default_value = "./sealcast-data")]
        data_dir: PathBuf,
        /// Stream to export: application or admin [default: both].
        #[arg(long)]
        stream: Option<Stream>,
        /// First time to include, RFC 3339, for example 2026-01-31T00:00:00Z.
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Last time to include, RFC 3339.
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
        /// File to write, mode 0600. An existing file is replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the audit public key as hex, creating the key pair if needed.
    PublicKey {
        /// Directory with relay.db, as given to serve.
        #[arg(long, env = "SEALCAST_DATA_DIR", default_value = "./sealcast-data")]
        data_dir: PathBuf,
    },
}

/// Arguments of `sealcast-relay retention`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RetentionArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: RetentionCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum RetentionCommand {
    /// Delete expired sessions and audit entries once, and record the run
    /// in the admin audit stream.
    Run {
        /// Directory with relay.db, as given to serve.
        #[arg(long, env = "SEALCAST_DATA_DIR", default_value = "./sealcast-data")]
        data_dir: PathBuf,
        /// Age after which an ended or idle session is deleted, for example 7d.
        #[arg(long, env = "SEALCAST_CONTENT_RETENTION", default_value = "7d", value_parser = parse_duration)]
        content_retention: Duration,
        /// Age after which audit entries are removed, for example 6y.
        #[arg(long, env = "SEALCAST_AUDIT_RETENTION", default_value = "6y", value_parser = parse_duration)]
        audit_retention: Duration,
    },
}

/// Runs one `audit` command. Returns whether verification passed; other
/// commands return `true` when they succeed.
pub(crate) fn run_audit(args: AuditArgs) -> Result<bool, AuditError> {
    let mut out = io::stdout().lock();
    match args.command {
        AuditCommand::Verify {
            data_dir,
            file,
            public_key,
        } => {
            let pinned = public_key
                .as_deref()
                .map(parse_public_key)
                .transpose()
                .map_err(AuditError::Invalid)?;
            let report = match (&data_dir, &file) {
                (_, Some(file)) => verify_export(file, pinned)?,
                (Some(dir), None) => verify_database(dir, &args.store.backend(dir)?, pinned)?,
                (None, None) => {
                    let dir = Path::new("./sealcast-data");
                    verify_database(dir, &args.store.backend(dir)?, pinned)?
                }
            };
            print_report(&mut out, &report).map_err(AuditError::Output)?;
            Ok(report.is_ok())
        }
        AuditCommand::Export {
            data_dir,
            stream,
            from,
            to,
            out: path,
        } => {
            if let (Some(from), Some(to)) = (from, to) {
                if from > to {
                    return Err(AuditError::Invalid(
                        "--from is after --to: swap them".into(),
                    ));
                }
            }
            let request = ExportRequest {
                streams: stream.map_or(Stream::ALL.to_vec(), |stream| vec![stream]),
                from,
                to,
                out: path.clone(),
            };
            let counts = export(&data_dir, &args.store.backend(&data_dir)?, &request)?;
            for (stream, count) in counts {
                writeln!(out, "{stream}: {count} entries").map_err(AuditError::Output)?;
            }
            writeln!(out, "written to {}", path.display()).map_err(AuditError::Output)?;
            Ok(true)
        }
        AuditCommand::PublicKey { data_dir } => {
            let key = match read_public_key(&data_dir) {
                Ok(key) => key,
                Err(_) => AuditKey::load_or_create(&data_dir)?.verifying_key(),
            };
            print_key(&mut out, &key).map_err(AuditError::Output)?;
            Ok(true)
        }
    }
}

/// Runs one `retention` command.
pub(crate) fn run_retention(args: RetentionArgs) -> Result<(), AuditError> {
    let RetentionCommand::Run {
        data_dir,
        content_retention,
        audit_retention,
    } = args.command;
    let key = AuditKey::load_or_create(&data_dir)?;
    let conn = open_migrated_writer(&args.store.backend(&data_dir)?)?;
    let policy = RetentionPolicy {
        content: content_retention,
        audit: audit_retention,
    };
    let outcome = run_once(&conn, &key, policy, now_millis(), ACTOR_ADMIN_CLI)?;
    let mut out = io::stdout().lock();
    let audit: Vec<String> = outcome
        .audit_entries
        .iter()
        .map(|(stream, count)| format!("{count} {stream}"))
        .collect();
    writeln!(
        out,
        "deleted {} sessions, {} frames, {} browser credentials; removed audit entries: {}",
        outcome.sessions,
        outcome.frames,
        outcome.browser_credentials,
        audit.join(", ")
    )
    .map_err(AuditError::Output)
}

fn print_report(out: &mut impl Write, report: &Report) -> io::Result<()> {
    for (stream, summary) in &report.streams {
        match summary.range {
            None => writeln!(out, "{stream}: no entries")?,
            Some((first, last)) => writeln!(
                out,
                "{stream}: entries {first} to {last} verified, {} checkpoints",
                summary.checkpoints
            )?,
        }
        if let Some(anchor) = summary.anchored_at {
            writeln!(
                out,
                "{stream}: entries up to {anchor} were removed by retention behind a signed anchor"
            )?;
        }
        if let Some((_, last)) = summary.range {
            let covered = summary.covered_through.unwrap_or(0);
            if covered < last {
                writeln!(
                    out,
                    "{stream}: entries after {covered} are not yet covered by a signed checkpoint"
                )?;
            }
        }
    }
    for failure in &report.failures {
        writeln!(out, "FAILED: {failure}")?;
    }
    for problem in &report.problems {
        writeln!(out, "FAILED: {problem}")?;
    }
    if report.is_ok() {
        writeln!(out, "audit verify: OK")
    } else {
        writeln!(out, "audit verify: FAILED")
    }
}

fn print_key(out: &mut impl Write, key: &VerifyingKey) -> io::Result<()> {
    writeln!(out, "{}", hex::encode(key.as_bytes()))
}

/// Parses an RFC 3339 time into Unix milliseconds.
fn parse_time(text: &str) -> Result<i64, String> {
    let time = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        format!("invalid time {text:?}: use RFC 3339, for example 2026-01-31T00:00:00Z")
    })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("time {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_public_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for key in ["abc", &"zz".repeat(32)] {
            let args = AuditArgs {
                store: StoreArgs::sqlite(),
                command: AuditCommand::Verify {
                    data_dir: Some(dir.path().to_path_buf()),
                    file: None,
                    public_key: Some(key.to_owned()),
                },
            };
            let error = run_audit(args).unwrap_err();
            assert!(
                error.to_string().contains("invalid audit public key"),
                "{error}"
            );
        }
    }

    #[test]
    fn reversed_export_range_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let args = AuditArgs {
            store: StoreArgs::sqlite(),
            command: AuditCommand::Export {
                data_dir: dir.path().to_path_buf(),
                stream: None,
                from: Some(2000),
                to: Some(1000),
                out: dir.path().join("out.jsonl"),
            },
        };
        let error = run_audit(args).unwrap_err();
        assert!(
            error.to_string().contains("--from is after --to"),
            "{error}"
        );
        assert!(!dir.path().join("out.jsonl").exists());
    }

    #[test]
    fn rfc3339_times_parse_to_millis() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(
            parse_time("2026-01-31T01:00:00+01:00").unwrap(),
            parse_time("2026-01-31T00:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }
}
