//! The `config` command: check a configuration file, or print an example.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{ArgMatches, Args, Subcommand};

use crate::cli::subcommand;
use crate::serve_args::ServeArgs;
use crate::settings::{example_file, REDACTED};

/// Arguments of `sealcast-relay config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check the settings serve would use (the file, environment variables and
    /// flags) and print them as TOML, with inline secrets redacted. Exits with
    /// status 1 and names each invalid key otherwise. Takes the same flags as
    /// serve.
    Check(Box<ServeArgs>),
    /// Print a commented configuration file with every key and its default.
    Example,
}

/// Runs `config check` or `config example`; `matches` are the top-level ones.
pub(crate) fn run(args: ConfigArgs, matches: &ArgMatches) -> ExitCode {
    match args.command {
        ConfigCommand::Check(serve) => check(&serve, subcommand(matches, &["config", "check"])),
        ConfigCommand::Example => print(&example_file()),
    }
}

fn check(serve: &ServeArgs, matches: &ArgMatches) -> ExitCode {
    let loaded = match serve.load(matches) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match loaded.settings.to_redacted_toml() {
        Ok(text) => print(&format!(
            "# Settings in effect. Inline secrets are shown as {REDACTED}.\n{text}"
        )),
        Err(error) => {
            eprintln!("error: failed to write the settings as TOML: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: failed to write to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}
