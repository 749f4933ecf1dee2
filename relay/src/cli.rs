//! The `sealcast-relay` command line.
//!
//! `sealcast-relay serve` is also what runs without a subcommand. It reads
//! its settings from a TOML file (`--config`), environment variables and
//! flags; [`crate::settings`] describes how they combine. Every flag can
//! also be set through an environment variable named `SEALCAST_` and the
//! flag in upper case, for example `SEALCAST_DATA_DIR`.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::admin_cli::{self, AdminArgs};
use crate::audit::cli::{self as audit_cli, AuditArgs, RetentionArgs};
use crate::audit::AuditError;
use crate::config::Config;
use crate::config_cli::{self, ConfigArgs};
use crate::demo::{DemoError, DemoSession};
use crate::error::RelayError;
use crate::keys_cli::{self, KeysArgs};
use crate::serve_args::ServeArgs;
use crate::server::{start, RelayHandle};
pub use crate::settings::LogFormat;
use sealcast_client::cli::shell_docs;

#[derive(Debug, Parser)]
#[command(
    name = "sealcast-relay",
    version,
    about = "Relay for end-to-end encrypted live transcripts: TLS WebSockets, fan-out and a ciphertext-only store",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the relay until SIGINT or SIGTERM (the default). SIGHUP reloads the certificate.
    Serve(ServeArgs),
    /// Serve the relay and stream a sample consultation into a demo session
    /// in a loop, printing the patient's link. Takes the same flags as serve.
    Demo(ServeArgs),
    /// Check a configuration file or print an example of one.
    Config(ConfigArgs),
    /// Manage organizations, users and devices in the data directory. Works
    /// while a relay runs, which closes revoked sockets within 5 seconds.
    Admin(AdminArgs),
    /// Make at-rest key files and rotate the key that wraps the database's data key.
    Keys(KeysArgs),
    /// Verify and export the audit trail in the data directory. Works while a
    /// relay runs.
    Audit(AuditArgs),
    /// Delete expired sessions and audit entries in the data directory.
    Retention(RetentionArgs),
    /// Print a shell completion script for sealcast-relay.
    Completions {
        /// Shell to write the completion script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the sealcast-relay man page (roff).
    Man,
}

/// Runs the command line: parses arguments, loads the settings, sets up
/// logging and serves.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let (args, args_matches, demo) = match cli.command {
        Some(Command::Serve(args)) => (args, subcommand(&matches, &["serve"]), false),
        Some(Command::Demo(args)) => (args, subcommand(&matches, &["demo"]), true),
        Some(Command::Config(args)) => return config_cli::run(args, &matches),
        Some(Command::Admin(args)) => return run_admin(args),
        Some(Command::Keys(args)) => return run_keys(args),
        Some(Command::Audit(args)) => {
            return run_command(|| audit_cli::run_audit(args));
        }
        Some(Command::Retention(args)) => {
            return run_command(|| audit_cli::run_retention(args).map(|()| true));
        }
        Some(Command::Completions { shell }) => {
            let mut command = Cli::command();
            return print_document(|out| shell_docs::write_completions(shell, &mut command, out));
        }
        Some(Command::Man) => {
            return print_document(|out| shell_docs::write_man(Cli::command(), out))
        }
        None => (cli.serve, &matches, false),
    };
    let loaded = match args.load(args_matches) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = init_logging(loaded.settings.log_format) {
        eprintln!("error: failed to set up logging: {error}");
        return ExitCode::FAILURE;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if demo {
        runtime.block_on(serve_demo(loaded.config))
    } else {
        runtime
            .block_on(serve(loaded.config))
            .map_err(DemoError::from)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "relay failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns the matches of the nested subcommand at `path`, such as
/// `["config", "check"]`, or the top-level matches if it is absent.
pub(crate) fn subcommand<'a>(matches: &'a ArgMatches, path: &[&str]) -> &'a ArgMatches {
    path.iter()
        .try_fold(matches, |matches, name| matches.subcommand_matches(name))
        .unwrap_or(matches)
}

fn run_admin(args: AdminArgs) -> ExitCode {
    // Only warnings and errors, so the output stays machine-readable.
    if let Err(error) = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(io::stderr)
        .try_init()
    {
        eprintln!("error: failed to set up logging: {error}");
        return ExitCode::FAILURE;
    }
    match admin_cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_keys(args: KeysArgs) -> ExitCode {
    if let Err(code) = init_command_logging() {
        return code;
    }
    match keys_cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an audit or retention command with the admin command's logging:
/// success when it returns `Ok(true)`.
fn run_command(command: impl FnOnce() -> Result<bool, AuditError>) -> ExitCode {
    if let Err(code) = init_command_logging() {
        return code;
    }
    match command() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a generated document to standard output.
fn print_document(write: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) -> ExitCode {
    match write(&mut io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: failed to write to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sends warnings and errors of a one-off command to standard error.
fn init_command_logging() -> Result<(), ExitCode> {
    if let Err(error) = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(io::stderr)
        .try_init()
    {
        eprintln!("error: failed to set up logging: {error}");
        return Err(ExitCode::FAILURE);
    }
    Ok(())
}

async fn serve(config: Config) -> Result<(), RelayError> {
    let handle = start(config).await?;
    let mut signals = StopSignals::register();
    if let Err(error) = announce(&handle) {
        tracing::error!(%error, "failed to write the startup lines to stdout");
    }
    if let Err(error) = wait_for_stop(&handle, &mut signals).await {
        tracing::error!(%error, "failed to listen for signals: stopping");
    }
    handle.shutdown().await;
    Ok(())
}

async fn serve_demo(config: Config) -> Result<(), DemoError> {
    let tls_cert = config.tls_cert.clone();
    let handle = start(config).await?;
    let mut signals = StopSignals::register();
    if let Err(error) = announce(&handle) {
        tracing::error!(%error, "failed to write the startup lines to stdout");
    }
    let session = match DemoSession::create(&handle, tls_cert.as_deref()).await {
        Ok(session) => session,
        Err(error) => {
            handle.shutdown().await;
            return Err(error);
        }
    };
    session.print_invitation();

    let stop_result = {
        let stopped = wait_for_stop(&handle, &mut signals);
        tokio::pin!(stopped);
        match session.stream_until(&mut stopped).await {
            Ok(stop_result) => stop_result,
            Err(error) => {
                tracing::error!(%error, "demo streaming stopped: the relay keeps running");
                stopped.await
            }
        }
    };
    if let Err(error) = stop_result {
        tracing::error!(%error, "failed to listen for signals: stopping");
    }
    if let Err(error) = session.end().await {
        tracing::error!(%error, "failed to end the demo session");
    }
    handle.shutdown().await;
    Ok(())
}

/// Prints the listening address, where sign-in mail goes and where the
/// at-rest key comes from to stdout.
fn announce(handle: &RelayHandle) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "sealcast-relay listening on https://{}",
        handle.local_addr()
    )?;
    if let Some(ops_addr) = handle.ops_addr() {
        writeln!(out, "/healthz, /readyz and /metrics on http://{ops_addr}")?;
    }
    let mail = handle.mail_destination();
    if handle.mail_is_sent() {
        writeln!(out, "sign-in mail goes to {mail}")?;
    } else {
        writeln!(
            out,
            "development mode: sign-in mail is not sent but written to {mail} (set --smtp-url to send it)"
        )?;
    }
    if handle.at_rest_key_is_development() {
        writeln!(
            out,
            "development mode: stored data is encrypted at rest with the {}, which lies beside the database (pass --at-rest-key-file or set SEALCAST_AT_REST_KEY to keep the key elsewhere)",
            handle.at_rest_key_source()
        )?;
    } else {
        writeln!(
            out,
            "stored data is encrypted at rest with the key from {} (fingerprint {})",
            handle.at_rest_key_source(),
            handle.at_rest_key_fingerprint()
        )?;
    }
    out.flush()
}

/// The signal handlers of a serving relay, installed before it announces
/// its address, so that a signal sent right after the listening line is
/// handled instead of ending the process with the default action.
struct StopSignals(io::Result<(Signal, Signal, Signal)>);

impl StopSignals {
    fn register() -> Self {
        StopSignals((|| {
            Ok((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })())
    }
}

/// Waits for SIGINT or SIGTERM, reloading the certificate on SIGHUP meanwhile.
async fn wait_for_stop(handle: &RelayHandle, signals: &mut StopSignals) -> io::Result<()> {
    let (interrupt, terminate, hangup) = match &mut signals.0 {
        Ok(signals) => signals,
        Err(error) => return Err(io::Error::new(error.kind(), error.to_string())),
    };
    loop {
        tokio::select! {
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received");
                return Ok(());
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM received");
                return Ok(());
            }
            _ = hangup.recv() => match handle.reload_tls() {
                Ok(()) => tracing::info!("SIGHUP received: TLS certificate reloaded"),
                Err(error) => tracing::error!(%error, "SIGHUP received: failed to reload the TLS certificate, keeping the current one"),
            },
        }
    }
}

fn init_logging(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;
    use crate::config::Limits;
    use crate::settings::{Loaded, SettingsError};

    /// Parses `args` as the binary would and loads the settings of `serve`.
    fn load(args: &[&str]) -> Result<Loaded, SettingsError> {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        match cli.command {
            Some(Command::Serve(serve)) => serve.load(subcommand(&matches, &["serve"])),
            None => cli.serve.load(&matches),
            Some(other) => panic!("not a serve command: {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_without_subcommand_serve() {
        let cli = Cli::try_parse_from(["sealcast-relay", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen.port(), 0);
    }

    #[test]
    fn serve_flags_map_to_config() {
        let config = load(&[
            "sealcast-relay",
            "serve",
            "--write-timeout",
            "500ms",
            "--follower-queue-bytes",
            "200000",
            "--max-handshakes",
            "32",
        ])
        .unwrap()
        .config;
        assert_eq!(config.limits.write_timeout, Duration::from_millis(500));
        assert_eq!(config.limits.follower_queue_bytes, 200_000);
        assert_eq!(
            config.limits,
            Limits {
                write_timeout: Duration::from_millis(500),
                follower_queue_bytes: 200_000,
                max_handshakes: 32,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn bash_completions_cover_commands() {
        let mut script = Vec::new();
        shell_docs::write_completions(clap_complete::Shell::Bash, &mut Cli::command(), &mut script)
            .unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("_sealcast__relay()"), "{script}");
        for command in ["serve", "demo", "admin", "audit", "completions"] {
            assert!(script.contains(command), "missing {command}");
        }
    }

    #[test]
    fn man_page_has_title_and_flags() {
        let mut page = Vec::new();
        shell_docs::write_man(Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH sealcast-relay"), "{page}");
        assert!(page.contains("max\\-connections"), "{page}");
    }

    #[test]
    fn retention_flags_map_to_config() {
        let config = load(&[
            "sealcast-relay",
            "--content-retention",
            "30d",
            "--audit-checkpoint-entries",
            "10",
        ])
        .unwrap()
        .config;
        assert_eq!(
            config.audit.retention.content,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            config.audit.retention.audit,
            Duration::from_secs(6 * 366 * 86_400)
        );
        assert_eq!(config.audit.checkpoints.every_entries, 10);
    }

    #[test]
    fn invalid_audit_arguments_are_rejected() {
        let cases: [&[&str]; 5] = [
            &["audit", "export", "--stream", "billing", "--out", "x.jsonl"],
            &["audit", "export", "--from", "yesterday", "--out", "x.jsonl"],
            &[
                "audit",
                "export",
                "--to",
                "2026-13-01T00:00:00Z",
                "--out",
                "x.jsonl",
            ],
            &["audit", "export"],
            &["retention", "run", "--audit-retention", "6x"],
        ];
        for args in cases {
            let full = std::iter::once("sealcast-relay").chain(args.iter().copied());
            assert!(Cli::try_parse_from(full).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn lone_certificate_flag_is_rejected() {
        let error = load(&["sealcast-relay", "--tls-cert", "cert.pem"]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("tls.cert"), "{message}");
        assert!(message.contains("tls.key is not set"), "{message}");
        assert!(message.contains("from the command line"), "{message}");
    }
}
