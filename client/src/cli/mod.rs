//! The `sealcast` command line: argument parsing, logging and dispatch.
//!
//! | command | module |
//! | --- | --- |
//! | `sealcast session start`, `session end`, `session list` | [`session`] |
//! | `sealcast publish` | [`publish`] |
//! | `sealcast follow` | [`follow`] |

/// Writes a line to standard error, ignoring a closed or failing stream:
/// unlike `eprintln!`, it never panics when stderr is a closed pipe.
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod follow;
pub mod publish;
pub mod session;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sealcast_protocol::SessionId;
use tracing_subscriber::EnvFilter;

use crate::error::ClientError;
use crate::keystore::KeyStore;

/// Command-line arguments of `sealcast`.
#[derive(Debug, Parser)]
#[command(
    name = "sealcast",
    version,
    about = "Relay live clinical transcripts, end-to-end encrypted",
    long_about = "Relay live clinical transcripts, end-to-end encrypted.\n\n\
        The clinician device starts a session, which makes the session key and \
        keeps it in the key store, then publishes a transcript. The patient \
        follows the session with the invite link. The relay only sees ciphertext."
)]
pub struct Cli {
    /// Key store directory [default: the platform data directory joined with sealcast]
    #[arg(long, env = "SEALCAST_HOME", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Log more on stderr: -v for lifecycle events, -vv for each state change.
    /// SEALCAST_LOG (a tracing filter such as "debug") overrides it
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// A `sealcast` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, end or list sessions of this device
    Session {
        /// The session command.
        #[command(subcommand)]
        command: session::SessionCommand,
    },
    /// Publish a transcript to a session
    Publish(publish::PublishArgs),
    /// Follow a session from an invite link and print its transcript
    Follow(follow::FollowArgs),
}

/// Parses the command line, runs the command and returns its outcome.
pub fn main() -> Result<(), ClientError> {
    let cli = Cli::parse();
    init_logging(cli.verbose);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            ClientError::Internal(format!("failed to start the async runtime: {err}"))
        })?;
    runtime.block_on(run(cli))
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    match cli.command {
        Command::Session { command } => session::run(command, cli.state_dir).await,
        Command::Publish(args) => publish::run(args, cli.state_dir).await,
        Command::Follow(args) => follow::run(args).await,
    }
}

/// Opens the key store at `--state-dir`, or the default directory.
pub(crate) fn open_key_store(state_dir: Option<PathBuf>) -> Result<KeyStore, ClientError> {
    let dir = state_dir
        .or_else(KeyStore::default_dir)
        .ok_or(ClientError::NoStateDir)?;
    KeyStore::open(dir)
}

/// Parses a `--session` value.
pub(crate) fn parse_session_id(text: &str) -> Result<SessionId, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a session id: expected 32 hex digits"))
}

const TUNGSTENITE_CAP: &str = "tungstenite=debug";
const TOKIO_TUNGSTENITE_CAP: &str = "tokio_tungstenite=debug";

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("SEALCAST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // tungstenite's trace output prints whole upgrade requests, bearer
    // tokens included, so it is capped at debug whatever the filter sets.
    let filter = filter
        .add_directive(TUNGSTENITE_CAP.parse().unwrap_or_default())
        .add_directive(TOKIO_TUNGSTENITE_CAP.parse().unwrap_or_default());
    // A second initialisation, as in tests that call `run` twice, keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_hides_the_api_key_value() {
        std::env::set_var("SEALCAST_API_KEY", "clinic-key-that-must-not-show");
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("session")
            .unwrap()
            .find_subcommand_mut("start")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("SEALCAST_API_KEY"), "{help}");
        assert!(!help.contains("clinic-key-that-must-not-show"), "{help}");
    }

    #[test]
    fn session_id_parsing() {
        assert!(parse_session_id("00112233445566778899aabbccddeeff").is_ok());
        let err = parse_session_id("abc").unwrap_err();
        assert!(err.contains("32 hex digits"), "{err}");
    }
}
