//! `sealcast completions SHELL` and `sealcast man`: a shell completion script
//! and a roff man page, generated from the command-line definition so that
//! they list every command and option of this build. The relay's command line
//! uses the same generators.

use std::io::{self, Write};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::error::ClientError;

/// Arguments of `sealcast completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to write the completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script for `shell` to standard output.
pub fn completions(args: &CompletionsArgs) -> Result<(), ClientError> {
    let mut out = io::stdout().lock();
    write_completions(args.shell, &mut Cli::command(), &mut out).map_err(output_error)
}

/// Writes the man page to standard output.
pub fn man() -> Result<(), ClientError> {
    let mut out = io::stdout().lock();
    write_man(Cli::command(), &mut out).map_err(output_error)
}

/// Writes the completion script of `command` for `shell` to `out`.
pub fn write_completions(
    shell: Shell,
    command: &mut clap::Command,
    out: &mut impl Write,
) -> io::Result<()> {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, command, name, out);
    out.flush()
}

/// Writes the man page of `command` to `out`.
pub fn write_man(command: clap::Command, out: &mut impl Write) -> io::Result<()> {
    clap_mangen::Man::new(command).render(out)?;
    out.flush()
}

fn output_error(err: io::Error) -> ClientError {
    ClientError::Internal(format!("failed to write to standard output: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completions_cover_commands() {
        let mut script = Vec::new();
        write_completions(Shell::Bash, &mut Cli::command(), &mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("_sealcast()"), "{script}");
        for command in ["login", "publish", "follow", "session", "completions"] {
            assert!(script.contains(command), "missing {command}");
        }
    }

    #[test]
    fn man_page_has_title_and_commands() {
        let mut page = Vec::new();
        write_man(Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH sealcast"), "{page}");
        assert!(page.contains("follow"), "{page}");
    }
}
