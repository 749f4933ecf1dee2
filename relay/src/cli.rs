//! The `sealcast-relay` command line.
//!
//! `sealcast-relay serve` is also what runs without a subcommand. Every flag
//! can be set through an environment variable named `SEALCAST_` and the flag
//! in upper case, for example `SEALCAST_DATA_DIR`.

use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::admin_cli::{self, AdminArgs};
use crate::at_rest::{AtRestError, KeySource};
use crate::audit::cli::{self as audit_cli, AuditArgs, RetentionArgs};
use crate::audit::{AuditError, CheckpointPolicy, RetentionPolicy};
use crate::config::{
    default_max_message_size, parse_duration, AccountsConfig, AuditConfig, Config, Limits,
};
use crate::demo::{DemoError, DemoSession};
use crate::error::RelayError;
use crate::keys_cli::{self, KeysArgs};
use crate::server::{start, RelayHandle};
use sealcast_client::cli::shell_docs;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

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

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, env = "SEALCAST_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Directory for relay.db and the development certificate.
    #[arg(long, env = "SEALCAST_DATA_DIR", default_value = "./sealcast-data")]
    data_dir: PathBuf,
    /// File with the at-rest key-encryption key: 32 bytes as 64 hex digits or
    /// base64. SEALCAST_AT_REST_KEY may hold the key itself instead. Without
    /// either, a development key file is made in the data directory.
    #[arg(long, env = "SEALCAST_AT_REST_KEY_FILE")]
    at_rest_key_file: Option<PathBuf>,
    /// Base URL of invite links [default: https://localhost:PORT].
    #[arg(long, env = "SEALCAST_PUBLIC_URL")]
    public_url: Option<String>,
    /// PEM certificate chain. Without it and --tls-key, a development certificate is used.
    #[arg(long, env = "SEALCAST_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SEALCAST_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format. The level comes from RUST_LOG (default info).
    #[arg(long, env = "SEALCAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Builds the configuration. Fails when the at-rest key sources conflict
    /// or `SEALCAST_AT_REST_KEY` is not a valid key.
    fn into_config(self) -> Result<Config, AtRestError> {
        let max_write_buffer_size = self
            .max_write_buffer_size
            .unwrap_or(2 * self.max_message_size + self.write_buffer_size);
        let at_rest_key = KeySource::from_flag_and_env(self.at_rest_key_file)?;
        Ok(Config {
            listen: self.listen,
            data_dir: self.data_dir,
            public_url: self.public_url,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            limits: Limits {
                max_connections: self.max_connections,
                max_message_size: self.max_message_size,
                read_buffer_size: self.read_buffer_size,
                write_buffer_size: self.write_buffer_size,
                max_write_buffer_size,
                follower_queue_bytes: self.follower_queue_bytes,
                write_timeout: self.write_timeout,
                ping_interval: self.ping_interval,
                idle_timeout: self.idle_timeout,
                handshake_timeout: self.handshake_timeout,
                failed_credentials_per_minute: self.failed_credentials_per_minute,
                pairing_lifetime: self.pairing_lifetime,
            },
            accounts: AccountsConfig {
                access_token_lifetime: self.access_token_lifetime,
                refresh_token_lifetime: self.refresh_token_lifetime,
                signing_key_max_age: self.signing_key_max_age,
                magic_link_lifetime: self.magic_link_lifetime,
                smtp_url: self.smtp_url,
                mail_from: self.mail_from,
                smtp_ca_file: self.smtp_ca_file,
            },
            at_rest_key,
            audit: AuditConfig {
                retention: RetentionPolicy {
                    content: self.content_retention,
                    audit: self.audit_retention,
                },
                retention_interval: self.retention_interval,
                checkpoints: CheckpointPolicy {
                    every_entries: self.audit_checkpoint_entries,
                },
                checkpoint_interval: self.audit_checkpoint_interval,
            },
        })
    }
}

/// Runs the command line: parses arguments, sets up logging and serves.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, demo) = match cli.command {
        Some(Command::Serve(args)) => (args, false),
        Some(Command::Demo(args)) => (args, true),
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
        None => (cli.serve, false),
    };
    if let Err(error) = init_logging(args.log_format) {
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
        runtime.block_on(serve_demo(args))
    } else {
        match args.into_config() {
            Ok(config) => runtime.block_on(serve(config)).map_err(DemoError::from),
            Err(error) => Err(DemoError::from(RelayError::from(error))),
        }
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

async fn serve_demo(args: ServeArgs) -> Result<(), DemoError> {
    let tls_cert = args.tls_cert.clone();
    let config = args.into_config().map_err(RelayError::from)?;
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

    let streaming = tokio::select! {
        result = session.stream_forever() => Some(result),
        result = wait_for_stop(&handle, &mut signals) => {
            if let Err(error) = result {
                tracing::error!(%error, "failed to listen for signals: stopping");
            }
            None
        }
    };
    if let Some(result) = streaming {
        if let Err(error) = result {
            tracing::error!(%error, "demo streaming stopped: the relay keeps running");
        }
        if let Err(error) = wait_for_stop(&handle, &mut signals).await {
            tracing::error!(%error, "failed to listen for signals: stopping");
        }
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
    use clap::CommandFactory;

    use super::*;

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
        let cli = Cli::try_parse_from([
            "sealcast-relay",
            "serve",
            "--write-timeout",
            "500ms",
            "--follower-queue-bytes",
            "200000",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve subcommand not parsed");
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.limits.write_timeout, Duration::from_millis(500));
        assert_eq!(config.limits.follower_queue_bytes, 200_000);
        assert_eq!(
            config.limits,
            Limits {
                write_timeout: Duration::from_millis(500),
                follower_queue_bytes: 200_000,
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
        let cli = Cli::try_parse_from([
            "sealcast-relay",
            "--content-retention",
            "30d",
            "--audit-checkpoint-entries",
            "10",
        ])
        .unwrap();
        let config = cli.serve.into_config().unwrap();
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
        let result = Cli::try_parse_from(["sealcast-relay", "--tls-cert", "cert.pem"]);
        assert!(result.is_err());
    }
}
