//! The `sealcast` command line: argument parsing, logging and dispatch.
//!
//! | command | module |
//! | --- | --- |
//! | `sealcast login`, `logout`, `whoami` | [`login`] |
//! | `sealcast session start`, `session end`, `session link`, `session rotate`, `session list` | [`session`] |
//! | `sealcast publish` | [`publish`] |
//! | `sealcast follow` | [`follow`] |
//! | `sealcast pair offer`, `pair join` | [`pair`] |
//! | `sealcast pair offer --device`, `pair adopt` | [`pair_device`] |
//! | `sealcast totp enrol` | [`totp`] |
//! | `sealcast admin users`, `create-user`, `devices`, `revoke-device` | [`admin`] |
//! | `sealcast completions`, `man` | [`shell_docs`] |

/// Writes a line to standard error, ignoring a closed or failing stream:
/// unlike `eprintln!`, it never panics when stderr is a closed pipe.
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod admin;
pub mod follow;
pub mod login;
pub mod pair;
pub mod pair_device;
mod pair_keys;
pub mod publish;
pub mod session;
pub mod shell_docs;
pub mod totp;

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use sealcast_protocol::SessionId;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::error::ClientError;
use crate::keystore::KeyStore;
use crate::secret::SecretString;

/// Command-line arguments of `sealcast`.
#[derive(Debug, Parser)]
#[command(
    name = "sealcast",
    version,
    about = "Relay live clinical transcripts, end-to-end encrypted",
    long_about = "Relay live clinical transcripts, end-to-end encrypted.\n\n\
        The clinician signs this device in to the relay once with `sealcast login`, \
        then starts a session, which makes the session key and keeps it in the key \
        store, and publishes a transcript. The patient follows the session with the \
        invite link. The relay only sees ciphertext."
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
    /// Sign this device in to a relay by a link sent to your email address
    Login(login::LoginArgs),
    /// Sign this device out of a relay
    Logout(login::LogoutArgs),
    /// Show the user this device is signed in as
    Whoami(login::WhoamiArgs),
    /// Start, end or list sessions of this device, or rotate the key of a running publish
    Session {
        /// The session command.
        #[command(subcommand)]
        command: session::SessionCommand,
    },
    /// Publish a transcript to a session
    Publish(publish::PublishArgs),
    /// Follow a session from an invite link and print its transcript
    Follow(follow::FollowArgs),
    /// Pair a device with a session without an invite link, by comparing a code
    Pair {
        /// The pair command.
        #[command(subcommand)]
        command: pair::PairCommand,
    },
    /// Set up the TOTP second factor
    Totp {
        /// The TOTP command.
        #[command(subcommand)]
        command: totp::TotpCommand,
    },
    /// Manage the users and devices of your organization (admins)
    Admin(admin::AdminArgs),
    /// Print a shell completion script for sealcast
    Completions(shell_docs::CompletionsArgs),
    /// Print the sealcast man page (roff)
    Man,
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
        Command::Login(args) => login::login(args, cli.state_dir).await,
        Command::Logout(args) => login::logout(args, cli.state_dir).await,
        Command::Whoami(args) => login::whoami(args, cli.state_dir).await,
        Command::Totp { command } => totp::run(command, cli.state_dir).await,
        Command::Admin(args) => admin::run(args, cli.state_dir).await,
        Command::Session { command } => session::run(command, cli.state_dir).await,
        Command::Publish(args) => publish::run(args, cli.state_dir).await,
        Command::Follow(args) => follow::run(args).await,
        Command::Pair { command } => pair::run(command, cli.state_dir).await,
        Command::Completions(args) => shell_docs::completions(&args),
        Command::Man => shell_docs::man(),
    }
}

/// Opens the key store at `--state-dir`, or the default directory.
pub(crate) fn open_key_store(state_dir: Option<PathBuf>) -> Result<KeyStore, ClientError> {
    let dir = state_dir
        .or_else(KeyStore::default_dir)
        .ok_or(ClientError::NoStateDir)?;
    KeyStore::open(dir)
}

/// Makes a path absolute, so that it stays valid when stored.
pub(crate) fn absolute_path(path: &Path) -> Result<PathBuf, ClientError> {
    std::path::absolute(path).map_err(|err| ClientError::io("resolve", path, err))
}

/// Prints `prompt` on stderr and reads one line from stdin: a TOTP or
/// recovery code. Ctrl-C interrupts the wait.
pub(crate) async fn read_code(prompt: &str) -> Result<SecretString, ClientError> {
    {
        use std::io::Write as _;
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
    }
    let reading = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|read| {
            let code = SecretString::new(line.trim().to_string());
            zeroize::Zeroize::zeroize(&mut line);
            (read, code)
        })
    });
    let (read, code) = tokio::select! {
        result = reading => result
            .map_err(|err| ClientError::Internal(format!("the stdin reader failed: {err}")))?
            .map_err(|err| ClientError::io("read", "stdin", err))?,
        _ = tokio::signal::ctrl_c() => return Err(ClientError::Interrupted),
    };
    if read == 0 || code.expose().is_empty() {
        return Err(ClientError::InvalidArgument {
            option: "code",
            reason: "no code was entered on standard input: run the command in a terminal \
                     and type the code"
                .into(),
        });
    }
    Ok(code)
}

/// Parses a `--session` value.
pub(crate) fn parse_session_id(text: &str) -> Result<SessionId, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a session id: expected 32 hex digits"))
}

/// Log targets of the WebSocket library, whose level is capped.
const WEBSOCKET_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

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
    // The cap is never more verbose than the filter itself.
    let cap = filter
        .max_level_hint()
        .unwrap_or(LevelFilter::WARN)
        .min(LevelFilter::DEBUG);
    let filter = WEBSOCKET_TARGETS.iter().fold(filter, |filter, target| {
        match format!("{target}={cap}").parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    });
    // A second initialisation, as in tests that call `run` twice, keeps the first.
    // Colour codes only on a terminal, so that redirected logs stay plain text.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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
    fn session_start_takes_no_api_key() {
        let parsed = Cli::try_parse_from([
            "sealcast",
            "session",
            "start",
            "--relay",
            "https://relay.example",
            "--api-key",
            "clinic-key",
        ]);
        let err = parsed.unwrap_err().to_string();
        assert!(err.contains("--api-key"), "{err}");
    }

    #[test]
    fn login_requires_email() {
        let parsed = Cli::try_parse_from(["sealcast", "login", "--relay", "https://relay.example"]);
        let err = parsed.unwrap_err().to_string();
        assert!(err.contains("--email"), "{err}");
    }

    #[test]
    fn session_id_parsing() {
        assert!(parse_session_id("00112233445566778899aabbccddeeff").is_ok());
        let err = parse_session_id("abc").unwrap_err();
        assert!(err.contains("32 hex digits"), "{err}");
    }
}
